//! DeepEmotion on AWS: the ports implemented over DynamoDB, S3 and SQS, the S3 event parsing, and
//! the glue the Lambda functions share (configuration, the token and webhook secrets, the SQS
//! batch handlers). Neither the HTTP API nor the engine is a dependency: each function wires the
//! crates it runs.

pub mod adapters;
pub mod chunks;
pub mod events;
pub mod lambda;
pub mod webhook_store;

pub use adapters::{AwsClients, AwsConfig, DynamoStore, S3Blobs, SqsJobs};
pub use webhook_store::SqsDeliveries;
