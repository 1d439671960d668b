//! Domain types and rules. No I/O here: everything in this module is plain data and maths.

mod analysis;
mod emotion;
mod library;
mod people;
mod plan;
mod smoothing;
mod summary;
mod tracker;

pub use analysis::*;
pub use emotion::*;
pub use library::*;
pub use people::*;
pub use plan::*;
pub use smoothing::*;
pub use summary::*;
pub use tracker::*;
