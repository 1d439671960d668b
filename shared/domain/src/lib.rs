//! DeepEmotion's domain: plain data and rules (videos, faces, emotions, tracks, people, plans),
//! the ports every adapter implements (stores, blobs, queue, the analysis engine), and what is
//! built from them alone (the report writers, the assembly of a video's results). Nothing here
//! depends on a database, a cloud SDK, a decoder or a web framework; the crates above this one
//! do, each for its own layer.

mod analysis;
mod analyzer;
mod emotion;
mod error;
mod library;
mod people;
mod plan;
mod smoothing;
mod summary;
mod tracker;

pub mod assembly;
pub mod ledger_contract;
pub mod memory;
pub mod metered;
pub mod ports;
pub mod report;
pub mod result_contract;
pub mod webhook_contract;
pub mod webhooks;

pub use analysis::*;
pub use analyzer::*;
pub use emotion::*;
pub use error::AnalysisError;
pub use library::*;
pub use people::*;
pub use plan::*;
pub use smoothing::*;
pub use summary::*;
pub use tracker::*;
