//! The analysis Lambda: typed config, clients and the ONNX sessions built once per container,
//! then every SQS batch handed to `shared::lambda::handle_sqs_event` with the invocation's
//! deadline. Everything testable lives in `shared`.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = shared::lambda::AnalysisLambdaConfig::from_env()?;
    let worker = shared::lambda::analysis_worker(&config).await?;
    let worker = &worker;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline = shared::lambda::invocation_deadline(event.context.deadline());
        Ok::<SqsBatchResponse, Error>(
            shared::lambda::handle_sqs_event(worker, event.payload, deadline).await,
        )
    }))
    .await
}
