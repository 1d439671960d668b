//! Wiring for the Lambda functions: typed configuration from the environment and the app state
//! over AWS adapters. The `functions/*` binaries only call these.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};

use crate::adapters::aws::{AwsClients, AwsConfig, DynamoStore, S3Blobs, SqsJobs};
use crate::http::{ApiConfig, AppState, TokenKeys};
use crate::worker::{AnalysisWorker, JobOutcome, WorkerConfig};
use crate::{Analyzer, EngineConfig};

#[derive(Debug, thiserror::Error)]
pub enum LambdaConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("{0}")]
    Invalid(String),
    #[error("reading the token secret {name} from Secrets Manager: {cause}")]
    Secret { name: String, cause: String },
}

/// Read once at cold start.
#[derive(Debug, Clone)]
pub struct ApiLambdaConfig {
    pub aws: AwsConfig,
    /// The Secrets Manager secret (ARN or name) holding the token secret (`JWT_SECRET_ARN`).
    pub jwt_secret_id: Option<String>,
    /// The secret itself, only with `DEEPEMOTION_DEV=1` (`DEEPEMOTION_JWT_SECRET`).
    pub dev_jwt_secret: Option<String>,
    pub api: ApiConfig,
}

impl ApiLambdaConfig {
    pub fn from_env() -> Result<Self, LambdaConfigError> {
        let var = |name: &'static str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let required = |name: &'static str| var(name).ok_or(LambdaConfigError::Missing(name));
        let dev = var("DEEPEMOTION_DEV").is_some_and(|v| v == "1");
        let jwt_secret_id = var("JWT_SECRET_ARN");
        let dev_jwt_secret = if dev {
            var("DEEPEMOTION_JWT_SECRET")
        } else {
            None
        };
        if jwt_secret_id.is_none() && dev_jwt_secret.is_none() {
            // refuse to start without a real secret outside explicit dev mode
            return Err(LambdaConfigError::Missing("JWT_SECRET_ARN"));
        }
        let mut api = ApiConfig {
            events_max_duration: Some(std::time::Duration::from_secs(20)),
            ..Default::default()
        };
        if let Some(v) = var("MAX_UPLOAD_BYTES") {
            api.max_upload_bytes = v
                .parse()
                .map_err(|_| LambdaConfigError::Invalid(format!("MAX_UPLOAD_BYTES={v:?}")))?;
        }
        if let Some(v) = var("CORS_ORIGINS") {
            api.cors_origins =
                ApiConfig::parse_cors_origins(&v).map_err(LambdaConfigError::Invalid)?;
        }
        api.rate_limits =
            crate::http::RateLimits::from_env().map_err(LambdaConfigError::Invalid)?;
        if let Some(v) = var("DEFAULT_SAMPLE_FPS") {
            api.default_sample_fps = v
                .parse::<f64>()
                .ok()
                .filter(|f| (0.0..=api.max_sample_fps).contains(f))
                .ok_or_else(|| LambdaConfigError::Invalid(format!("DEFAULT_SAMPLE_FPS={v:?}")))?;
        }
        Ok(Self {
            aws: AwsConfig {
                region: var("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
                endpoint_url: var("AWS_ENDPOINT_URL"),
                table: required("TABLE_NAME")?,
                bucket: required("BUCKET_NAME")?,
                queue_url: var("QUEUE_URL"),
            },
            jwt_secret_id,
            dev_jwt_secret,
            api,
        })
    }
}

/// One GetSecretValue call at cold start. (Secrets Manager's SDK crate rather than Parameter
/// Store's view of the secret: the SSM crate is the largest in the build.)
async fn read_secret(clients: &AwsClients, id: &str) -> Result<String, LambdaConfigError> {
    let failed = |cause: String| LambdaConfigError::Secret {
        name: id.to_string(),
        cause,
    };
    let out = aws_sdk_secretsmanager::Client::new(&clients.sdk)
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|e| failed(aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string()))?;
    out.secret_string
        .ok_or_else(|| failed("the secret has no string value".into()))
}

/// Builds clients once and reads the token secret.
pub async fn app_state(config: &ApiLambdaConfig) -> Result<AppState, LambdaConfigError> {
    let clients = AwsClients::new(&config.aws).await;
    let secret = match (&config.dev_jwt_secret, &config.jwt_secret_id) {
        (Some(s), _) => s.clone(),
        (None, Some(id)) => read_secret(&clients, id).await?,
        (None, None) => return Err(LambdaConfigError::Missing("JWT_SECRET_ARN")),
    };
    if secret.len() < 32 {
        return Err(LambdaConfigError::Invalid(
            "the token secret must be at least 32 characters".into(),
        ));
    }
    let store = Arc::new(DynamoStore::new(&clients, &config.aws.table));
    let blobs = Arc::new(S3Blobs::new(&clients, &config.aws.bucket));
    let queue = Arc::new(SqsJobs::new(
        &clients,
        config.aws.queue_url.clone().unwrap_or_default(),
    ));
    Ok(AppState {
        users: store.clone(),
        videos: store.clone(),
        results: store.clone(),
        blobs,
        jobs: queue,
        limiter: store,
        tokens: TokenKeys::new(secret.as_bytes(), 3600),
        config: config.api.clone(),
        local_files: None,
        events: Default::default(),
    })
}

/// The API function's router: the shared one, told each caller's address as API Gateway saw it
/// (`requestContext.http.sourceIp`), for the per-address rate limits.
pub fn api_router(state: AppState) -> axum::Router {
    crate::http::router(state).layer(axum::middleware::map_request(
        |mut request: axum::extract::Request| async move {
            use lambda_http::RequestExt;
            let source_ip = match request.request_context_ref() {
                Some(lambda_http::request::RequestContext::ApiGatewayV2(context)) => {
                    context.http.source_ip.clone()
                }
                _ => None,
            };
            if let Some(ip) = source_ip.and_then(|ip| ip.parse().ok()) {
                request.extensions_mut().insert(crate::http::ClientAddr(ip));
            }
            request
        },
    ))
}

/// The analysis function's configuration, read once at cold start.
#[derive(Debug, Clone)]
pub struct AnalysisLambdaConfig {
    /// `TABLE_NAME`, `BUCKET_NAME`, `QUEUE_URL` (segments and continuations go there).
    pub aws: AwsConfig,
    pub engine: EngineConfig,
    pub worker: WorkerConfig,
}

impl AnalysisLambdaConfig {
    pub fn from_env() -> Result<Self, LambdaConfigError> {
        let var = |name: &'static str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let required = |name: &'static str| var(name).ok_or(LambdaConfigError::Missing(name));
        Ok(Self {
            aws: AwsConfig {
                region: var("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
                endpoint_url: var("AWS_ENDPOINT_URL"),
                table: required("TABLE_NAME")?,
                bucket: required("BUCKET_NAME")?,
                queue_url: Some(required("QUEUE_URL")?),
            },
            engine: EngineConfig::from_env()
                .map_err(|e| LambdaConfigError::Invalid(e.to_string()))?,
            worker: WorkerConfig::from_env().map_err(LambdaConfigError::Invalid)?,
        })
    }
}

/// Builds the clients and loads the models (once per container).
pub async fn analysis_worker(
    config: &AnalysisLambdaConfig,
) -> Result<AnalysisWorker, LambdaConfigError> {
    let clients = AwsClients::new(&config.aws).await;
    worker_over(&clients, config)
}

/// The worker over already-built clients (tests hand in clients pointed at moto).
pub fn worker_over(
    clients: &AwsClients,
    config: &AnalysisLambdaConfig,
) -> Result<AnalysisWorker, LambdaConfigError> {
    let engine = config.engine.clone();
    let analyzer = Analyzer::new(engine).map_err(|e| LambdaConfigError::Invalid(e.to_string()))?;
    let store = Arc::new(DynamoStore::new(clients, &config.aws.table));
    Ok(AnalysisWorker {
        videos: store.clone(),
        ledger: store.clone(),
        results: store,
        blobs: Arc::new(S3Blobs::new(clients, &config.aws.bucket)),
        jobs: Arc::new(SqsJobs::new(
            clients,
            config.aws.queue_url.clone().unwrap_or_default(),
        )),
        analyzer: Arc::new(analyzer),
        config: config.worker.clone(),
    })
}

/// The invocation's deadline, unless it is not a real one: local emulators (`cargo lambda
/// watch`) send a deadline near the Unix epoch, which would make every run stop at once.
pub fn invocation_deadline(deadline: SystemTime) -> Option<SystemTime> {
    let a_day_ago = SystemTime::now() - Duration::from_secs(24 * 3600);
    if deadline > a_day_ago {
        Some(deadline)
    } else {
        tracing::warn!("the runtime sent no usable deadline; running without one");
        None
    }
}

/// Handles one SQS batch and names the messages that must come back: a busy segment, a
/// throttled or failed store, an error in the analysis service. A malformed body, an unknown
/// key and a rejected video are acknowledged (retrying them could never succeed); so is an
/// `s3:TestEvent`.
pub async fn handle_sqs_event(
    worker: &AnalysisWorker,
    event: SqsEvent,
    deadline: Option<SystemTime>,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    tracing::info!(records = event.records.len(), left_ms = ?deadline.and_then(|d| d.duration_since(SystemTime::now()).ok()).map(|l| l.as_millis()), "SQS batch");
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let receives = record
            .attributes
            .get("ApproximateReceiveCount")
            .cloned()
            .unwrap_or_default();
        let body = record.body.unwrap_or_default();
        let jobs = match crate::events::jobs_from_body(&body) {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!(message_id = %id, error = %e, "dropping a malformed message");
                continue;
            }
        };
        // too little time left to start: hand the message back untouched
        let left = deadline.map(|d| d.duration_since(SystemTime::now()).unwrap_or_default());
        if !jobs.is_empty()
            && left.is_some_and(|l| l < worker.config.deadline_margin + Duration::from_secs(1))
        {
            tracing::warn!(message_id = %id, "no time left in this invocation; message returned");
            response.add_failure(id);
            continue;
        }
        let mut retry = false;
        for job in jobs {
            match worker.handle(&job, deadline).await {
                Ok(JobOutcome::Skipped { reason }) => {
                    tracing::info!(message_id = %id, key = %job.key, segment = ?job.segment, %reason, "job skipped")
                }
                Ok(outcome) => {
                    tracing::info!(message_id = %id, key = %job.key, segment = ?job.segment, ?outcome, "job done")
                }
                Err(e) => {
                    tracing::warn!(message_id = %id, key = %job.key, segment = ?job.segment, %receives, error = %e, "job failed; the message will be retried");
                    retry = true;
                }
            }
        }
        if retry {
            response.add_failure(id);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::{MemoryBlobs, MemoryQueue, MemoryRateLimiter, MemoryStore};
    use crate::http::{RateLimit, RateLimits};
    use tower::ServiceExt;

    /// The source address API Gateway reports is the one the per-address limit counts.
    #[tokio::test]
    async fn the_api_router_limits_by_api_gateways_source_ip() {
        let store = Arc::new(MemoryStore::default());
        let state = AppState {
            users: store.clone(),
            videos: store.clone(),
            results: store,
            blobs: Arc::new(MemoryBlobs::default()),
            jobs: Arc::new(MemoryQueue::default()),
            limiter: Arc::new(MemoryRateLimiter::default()),
            tokens: TokenKeys::new(b"a-test-secret-of-at-least-32-bytes!!", 3600),
            config: ApiConfig {
                rate_limits: RateLimits {
                    logins_per_address: RateLimit::new(1, 60),
                    ..RateLimits::default()
                },
                ..ApiConfig::default()
            },
            local_files: None,
            events: Default::default(),
        };
        let app = api_router(state);
        let fixture = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events/apigw-login.json"),
        )
        .unwrap();
        let login = |json: String| {
            let app = app.clone();
            async move {
                let request = lambda_http::request::from_str(&json).unwrap();
                app.oneshot(request).await.unwrap().status()
            }
        };
        // unknown user: 401, and the address's one login of the minute is spent
        assert_eq!(login(fixture.clone()).await, 401);
        assert_eq!(login(fixture.clone()).await, 429);
        let elsewhere = fixture.replace("203.0.113.10", "198.51.100.20");
        assert_eq!(login(elsewhere).await, 401);
    }
}
