//! The API Lambda: typed config, clients and the secret read once at start-up, then the shared
//! router under `lambda_http::run`. Everything testable lives in `shared`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda_http::tracing::init_default_subscriber();
    let config = shared::lambda::ApiLambdaConfig::from_env()?;
    let state = shared::lambda::app_state(&config).await?;
    lambda_http::run(shared::lambda::api_router(state)).await
}
