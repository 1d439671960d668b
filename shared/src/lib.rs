//! DeepEmotion's library crate: the domain types, the analysis pipeline (frames → faces → emotions)
//! and, in later layers, the ports, adapters and HTTP router that the Lambda functions and the
//! local server share.

pub mod adapters;
pub mod assembly;
pub mod domain;
pub mod events;
pub mod http;
#[cfg(feature = "aws")]
pub mod lambda;
pub mod live;
#[cfg(feature = "cli")]
pub mod local_server;
pub mod pipeline;
pub mod ports;
pub mod report;
#[cfg(feature = "cli")]
pub mod socket;
pub mod worker;

pub use domain::*;
pub use pipeline::{AnalysisError, AnalysisSink, Analyzer, EngineConfig};
