//! One machine, no AWS: SQLite for users, videos, results and webhooks, files for blobs (with
//! HMAC-signed, expiring URLs served by the server itself, standing in for S3's presigned URLs),
//! an in-process queue, webhook deliveries run from the SQLite table, and `deepemotion serve`'s
//! server around the shared router and worker (hyper's accept loop, socket.io live progress, the
//! built-in web page). The engine is handed in (see [`server::AnalyzerLoader`]): this crate does
//! not depend on it.

mod deliveries;
mod engines;
mod files;
mod queue;
pub mod server;
mod socket;
mod sqlite;
mod uploads;
mod web;

#[cfg(test)]
mod ledger_contract_tests;
#[cfg(test)]
mod live_tests;

pub use deliveries::{DeliveryRunner, LocalDeliveries};
pub use engines::EnginePool;
pub use files::{FileBlobs, SignatureError};
pub use queue::LocalQueue;
pub use server::{
    ConnectionLimits, DEFAULT_ANALYSIS_CONCURRENCY, LocalServerConfig, ServerError, serve,
};
pub use sqlite::SqliteStore;
