//! The analysis Lambda: typed config, clients and the ONNX sessions built once per container,
//! then every SQS batch handed to `aws_adapters::lambda::handle_sqs_event` with the invocation's
//! deadline. The end of each analysis is announced on the webhook delivery queue. Everything
//! testable lives under `shared/`.

use std::sync::Arc;

use aws_adapters::lambda::{handle_sqs_event, invocation_deadline};
use aws_adapters::{AwsClients, AwsConfig, DynamoStore, S3Blobs, SqsDeliveries, SqsJobs};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use engine::{Analyzer, EngineConfig};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use worker::{AnalysisWorker, WorkerConfig, WorkerPorts};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let aws = AwsConfig::from_env(true)?;
    let delivery_queue = aws.delivery_queue()?;
    let engine = EngineConfig::from_env()?;
    let config = WorkerConfig::from_env()?;
    let clients = AwsClients::new(&aws).await;
    let store = Arc::new(DynamoStore::new(&clients, &aws.table));
    let ports = WorkerPorts {
        videos: store.clone(),
        ledger: store.clone(),
        results: store.clone(),
        webhooks: store,
        blobs: Arc::new(S3Blobs::new(&clients, &aws.bucket)),
        jobs: Arc::new(SqsJobs::new(&clients, aws.queue_url.unwrap_or_default())),
        deliveries: Arc::new(SqsDeliveries::new(&clients, delivery_queue)),
    };
    let worker = AnalysisWorker::new(ports, Arc::new(Analyzer::new(engine)?), config);
    let worker = &worker;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline = invocation_deadline(event.context.deadline());
        Ok::<SqsBatchResponse, Error>(handle_sqs_event(worker, event.payload, deadline).await)
    }))
    .await
}
