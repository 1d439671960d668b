//! End-to-end tests against moto, the AWS stand-in `scripts/test` starts: the AWS adapters one
//! by one, then the whole pipeline (API router, S3 event, SQS, the analysis Lambda's handler,
//! DynamoDB) with the real engine, and webhook deliveries through SQS and the deliver Lambda's
//! handler.

#[path = "../common/mod.rs"]
mod common;

mod adapters;
mod ledger;
mod pipeline;
mod webhooks;
