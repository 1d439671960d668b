//! The API Lambda: typed config, clients and the token secret read once at start-up, then the
//! shared router under `lambda_http::run`. Everything testable lives under `shared/`.

use std::sync::Arc;

use aws_adapters::lambda::TokenSecretSource;
use aws_adapters::{AwsClients, AwsConfig, DynamoStore, S3Blobs};
use http_api::{ApiConfig, ApiPorts, AppState};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda_http::tracing::init_default_subscriber();
    let aws = AwsConfig::from_env(false)?;
    let api = ApiConfig::from_env()?;
    let secret = TokenSecretSource::from_env()?;
    let clients = AwsClients::new(&aws).await;
    let secret = secret.read(&clients).await?;
    let store = Arc::new(DynamoStore::new(&clients, &aws.table));
    let ports = ApiPorts {
        users: store.clone(),
        videos: store.clone(),
        results: store.clone(),
        limiter: store,
        blobs: Arc::new(S3Blobs::new(&clients, &aws.bucket)),
    };
    let state = AppState::new(ports, &secret, api)?;
    lambda_http::run(http_api::lambda::router(state)).await
}
