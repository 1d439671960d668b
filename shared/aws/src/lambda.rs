//! Glue for the Lambda functions: typed configuration from the environment, the token secret
//! and the webhook key from Secrets Manager, and the SQS batch handlers of the analysis function
//! and (with the `deliver` feature) of the deliver function. The `functions/*` binaries only
//! call these and the constructors of the crates they wire.

use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use domain::webhooks::{SecretBox, TargetPolicy};
use tracing::Instrument;
use worker::AnalysisWorker;

use crate::adapters::{AwsClients, AwsConfig};

#[derive(Debug, thiserror::Error)]
pub enum LambdaConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("{0}")]
    Invalid(String),
    #[error("reading the secret {name} from Secrets Manager: {cause}")]
    Secret { name: String, cause: String },
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `DEEPEMOTION_DEV=1`: tests and local runs only. Secrets may then come from the environment,
/// and webhooks may go to `http` URLs and to this machine. The template never sets it.
pub fn dev_mode() -> bool {
    var("DEEPEMOTION_DEV").is_some_and(|v| v == "1")
}

/// Which webhook URLs may be registered and delivered to: public `https` ones, or any in
/// [`dev_mode`].
pub fn webhook_policy() -> TargetPolicy {
    if dev_mode() {
        TargetPolicy::development()
    } else {
        TargetPolicy::default()
    }
}

/// One GetSecretValue call, at cold start. (Secrets Manager's SDK crate rather than Parameter
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

impl AwsConfig {
    /// `AWS_REGION`, `AWS_ENDPOINT_URL`, `TABLE_NAME`, `BUCKET_NAME`, `QUEUE_URL` (required
    /// with `needs_queue`: the analysis function queues segments and continuations there) and
    /// `DELIVERY_QUEUE_URL` (see [`AwsConfig::delivery_queue`]).
    pub fn from_env(needs_queue: bool) -> Result<Self, LambdaConfigError> {
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
            delivery_queue_url: var("DELIVERY_QUEUE_URL"),
            credentials: None,
        })
    }

    /// The webhook delivery queue, which every function that queues a delivery needs (the API
    /// for resends, the analysis function for announcements, the deliver function for retries).
    pub fn delivery_queue(&self) -> Result<String, LambdaConfigError> {
        self.delivery_queue_url
            .clone()
            .ok_or(LambdaConfigError::Missing("DELIVERY_QUEUE_URL"))
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
        match (
            dev_mode().then(|| var("DEEPEMOTION_JWT_SECRET")).flatten(),
            var("JWT_SECRET_ARN"),
        ) {
            (Some(secret), _) => Ok(Self::Dev(secret)),
            (None, Some(id)) => Ok(Self::SecretsManager(id)),
            (None, None) => Err(LambdaConfigError::Missing("JWT_SECRET_ARN")),
        }
    }

    /// The secret, read once at cold start.
    pub async fn read(&self, clients: &AwsClients) -> Result<String, LambdaConfigError> {
        match self {
            Self::Dev(secret) => Ok(secret.clone()),
            Self::SecretsManager(id) => read_secret(clients, id).await,
        }
    }
}

/// Where the webhook key comes from: the key that seals the signing secrets at rest. A secret
/// of its own, never the token secret: rotating the token secret leaves the signing secrets
/// readable, and neither secret tells anything about the other.
#[derive(Clone, PartialEq)]
pub enum WebhookKeySource {
    /// The Secrets Manager secret (ARN or name) in `WEBHOOK_KEY_ARN`.
    SecretsManager(String),
    /// The key material itself, in `DEEPEMOTION_WEBHOOK_KEY`, only with `DEEPEMOTION_DEV=1`.
    Dev(String),
}

impl std::fmt::Debug for WebhookKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SecretsManager(id) => f.debug_tuple("SecretsManager").field(id).finish(),
            Self::Dev(_) => f.write_str("Dev(..)"),
        }
    }
}

impl WebhookKeySource {
    /// Refuses to start without a real key outside explicit dev mode.
    pub fn from_env() -> Result<Self, LambdaConfigError> {
        match (
            dev_mode().then(|| var("DEEPEMOTION_WEBHOOK_KEY")).flatten(),
            var("WEBHOOK_KEY_ARN"),
        ) {
            (Some(material), _) => Ok(Self::Dev(material)),
            (None, Some(id)) => Ok(Self::SecretsManager(id)),
            (None, None) => Err(LambdaConfigError::Missing("WEBHOOK_KEY_ARN")),
        }
    }

    /// The key, read once at cold start: any random string of 32 characters or more (the
    /// template's secret is 64 generated characters); see [`SecretBox::from_key_material`].
    pub async fn read(&self, clients: &AwsClients) -> Result<SecretBox, LambdaConfigError> {
        let (material, source) = match self {
            Self::Dev(material) => (material.clone(), "DEEPEMOTION_WEBHOOK_KEY"),
            Self::SecretsManager(id) => (read_secret(clients, id).await?, "WEBHOOK_KEY_ARN"),
        };
        SecretBox::from_key_material(&material)
            .map_err(|reason| LambdaConfigError::Invalid(format!("{source}: {reason}")))
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

/// A message due within this long is waited for rather than sent back.
#[cfg(feature = "deliver")]
const EARLY_TOLERANCE: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// Handles one batch of the delivery queue, its messages at once (each attempt is bounded by the
/// webhook timeout, so a batch takes about as long as its slowest receiver), and names the
/// messages that must come back: a delivery another sender has claimed (it is taken up again
/// after the queue's visibility timeout, longer than a claim), or a store or queue that failed.
/// Redelivered too often, a message goes to the dead-letter queue. A message due later than SQS
/// could delay it is sent again with the rest of its wait; a malformed body is dropped.
#[cfg(feature = "deliver")]
pub async fn handle_delivery_event(
    deliverer: &webhooks::Deliverer,
    queue: &dyn domain::webhooks::DeliveryQueue,
    event: SqsEvent,
) -> SqsBatchResponse {
    tracing::info!(records = event.records.len(), "delivery batch");
    let retries = futures_util::future::join_all(
        event
            .records
            .into_iter()
            .map(|record| handle_delivery_record(deliverer, queue, record)),
    )
    .await;
    let mut response = SqsBatchResponse::default();
    for message_id in retries.into_iter().flatten() {
        response.add_failure(message_id);
    }
    response
}

/// One delivery message; the message's id when it must come back.
#[cfg(feature = "deliver")]
async fn handle_delivery_record(
    deliverer: &webhooks::Deliverer,
    queue: &dyn domain::webhooks::DeliveryQueue,
    record: aws_lambda_events::event::sqs::SqsMessage,
) -> Option<String> {
    use crate::webhook_store::DeliveryMessage;
    use webhooks::AttemptOutcome;

    let message_id = record.message_id.unwrap_or_default();
    let receives = record
        .attributes
        .get("ApproximateReceiveCount")
        .cloned()
        .unwrap_or_default();
    let message: DeliveryMessage =
        match serde_json::from_str(record.body.as_deref().unwrap_or_default()) {
            Ok(message) => message,
            Err(e) => {
                tracing::error!(%message_id, error = %e, "dropping a malformed delivery message");
                return None;
            }
        };
    let span =
        tracing::info_span!("delivery", %message_id, delivery_id = %message.delivery_id, %receives);
    async move {
        let id = message.delivery_id.as_str();
        let wait = message.due - chrono::Utc::now();
        if wait > EARLY_TOLERANCE {
            // due later than SQS could delay it: on its way again with the rest of its wait
            return match queue.enqueue(id, message.due).await {
                Ok(()) => {
                    tracing::info!(due = %message.due, "not due yet; queued again");
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not queue it again; the message will be retried");
                    Some(message_id)
                }
            };
        }
        // A little early (SQS's timing is not exact): wait, or the attempt would find the
        // delivery not due, and this message, the one for its next attempt, would be dropped.
        if let Ok(wait) = wait.to_std() {
            tokio::time::sleep(wait).await;
        }
        match deliverer.attempt(id).await {
            Ok(AttemptOutcome::Busy) => {
                tracing::info!("another sender has claimed it; the message will be retried");
                Some(message_id)
            }
            Ok(outcome) => {
                tracing::debug!(?outcome, "delivery message handled");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "the delivery's store failed; the message will be retried");
                Some(message_id)
            }
        }
    }
    .instrument(span)
    .await
}
