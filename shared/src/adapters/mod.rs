//! Implementations of the ports: `memory` (in-process fakes for tests), `local` (one machine:
//! SQLite, files, an in-process queue) and `aws` (DynamoDB, S3, SQS).

#[cfg(feature = "aws")]
pub mod aws;
pub mod local;
pub mod memory;
pub mod metered;
