//! Glue for the Lambda functions: typed configuration from the environment, the token secret
//! from Secrets Manager, and the analysis function's SQS batch handler. The `functions/*`
//! binaries only call these and the constructors of the crates they wire.

use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use tracing::Instrument;
use worker::AnalysisWorker;

use crate::adapters::{AwsClients, AwsConfig};

#[derive(Debug, thiserror::Error)]
pub enum LambdaConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("{0}")]
    Invalid(String),
    #[error("reading the token secret {name} from Secrets Manager: {cause}")]
    Secret { name: String, cause: String },
}

impl AwsConfig {
    /// `AWS_REGION`, `AWS_ENDPOINT_URL`, `TABLE_NAME`, `BUCKET_NAME` and `QUEUE_URL` (required
    /// with `needs_queue`: the analysis function queues segments and continuations there).
    pub fn from_env(needs_queue: bool) -> Result<Self, LambdaConfigError> {
        let var = |name: &'static str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let required = |name: &'static str| var(name).ok_or(LambdaConfigError::Missing(name));
        Ok(Self {
            region: var("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
            endpoint_url: var("AWS_ENDPOINT_URL"),
            table: required("TABLE_NAME")?,
            bucket: required("BUCKET_NAME")?,
            queue_url: if needs_queue {
                Some(required("QUEUE_URL")?)
            } else {
                None
            },
            credentials: None,
        })
    }
}

/// Where the API function's token secret comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenSecretSource {
    /// The Secrets Manager secret (ARN or name) in `JWT_SECRET_ARN`.
    SecretsManager(String),
    /// The secret itself, in `DEEPEMOTION_JWT_SECRET`, only with `DEEPEMOTION_DEV=1`.
    Dev(String),
}

impl TokenSecretSource {
    /// Refuses to start without a real secret outside explicit dev mode.
    pub fn from_env() -> Result<Self, LambdaConfigError> {
        let var = |name: &'static str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let dev = var("DEEPEMOTION_DEV").is_some_and(|v| v == "1");
        match (
            dev.then(|| var("DEEPEMOTION_JWT_SECRET")).flatten(),
            var("JWT_SECRET_ARN"),
        ) {
            (Some(secret), _) => Ok(Self::Dev(secret)),
            (None, Some(id)) => Ok(Self::SecretsManager(id)),
            (None, None) => Err(LambdaConfigError::Missing("JWT_SECRET_ARN")),
        }
    }

    /// The secret: one GetSecretValue call at cold start. (Secrets Manager's SDK crate rather
    /// than Parameter Store's view of the secret: the SSM crate is the largest in the build.)
    pub async fn read(&self, clients: &AwsClients) -> Result<String, LambdaConfigError> {
        let id = match self {
            Self::Dev(secret) => return Ok(secret.clone()),
            Self::SecretsManager(id) => id,
        };
        let failed = |cause: String| LambdaConfigError::Secret {
            name: id.to_string(),
            cause,
        };
        let out = aws_sdk_secretsmanager::Client::new(&clients.sdk)
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| {
                failed(aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string())
            })?;
        out.secret_string
            .ok_or_else(|| failed("the secret has no string value".into()))
    }
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
            let span = tracing::info_span!("message", message_id = %id, %receives);
            if worker
                .handle(&job, deadline)
                .instrument(span)
                .await
                .is_err()
            {
                tracing::warn!(message_id = %id, key = %job.key, "the message will be retried");
                retry = true;
            }
        }
        if retry {
            response.add_failure(id);
        }
    }
    response
}
