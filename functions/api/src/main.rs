//! The API Lambda: typed config, clients, the token secret and the webhook key read once at
//! start-up, then the shared router under `lambda_http::run`. Everything testable lives under
//! `shared/`.

use std::sync::Arc;

use aws_adapters::lambda::{TokenSecretSource, WebhookKeySource, webhook_policy};
use aws_adapters::{AwsClients, AwsConfig, DynamoStore, S3Blobs, SqsDeliveries};
use http_api::{ApiConfig, ApiPorts, AppState};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda_http::tracing::init_default_subscriber();
    let aws = AwsConfig::from_env(false)?;
    let delivery_queue = aws.delivery_queue()?;
    let api = ApiConfig {
        webhook_policy: webhook_policy(),
        ..ApiConfig::from_env()?
    };
    let secret = TokenSecretSource::from_env()?;
    let webhook_key = WebhookKeySource::from_env()?;
    let clients = AwsClients::new(&aws).await;
    // both secrets at once: each read is a round trip to Secrets Manager at cold start
    let (secret, webhook_key) =
        tokio::try_join!(secret.read(&clients), webhook_key.read(&clients))?;
    let store = Arc::new(DynamoStore::new(&clients, &aws.table));
    let ports = ApiPorts {
        users: store.clone(),
        videos: store.clone(),
        results: store.clone(),
        limiter: store.clone(),
        webhooks: store,
        blobs: Arc::new(S3Blobs::new(&clients, &aws.bucket)),
        deliveries: Arc::new(SqsDeliveries::new(&clients, delivery_queue)),
        webhook_key,
    };
    let state = AppState::new(ports, &secret, api)?;
    lambda_http::run(http_api::lambda::router(state)).await
}
