//! Webhook delivery, the same on both backends: [`Deliverer::attempt`] takes one due delivery,
//! claims it, signs it the Standard Webhooks way, posts it and records the attempt (with the next
//! one queued, or the delivery marked delivered or failed). What calls it differs: the deliver
//! Lambda for each SQS message on AWS, a task over the SQLite table on one machine.
//!
//! A delivery never goes where it should not: the URL is checked before every attempt (https
//! outside development, no user info), a hostname is resolved by [`GuardedResolver`], which
//! refuses the attempt when any address it resolves to is not public, and the connection goes
//! to exactly the addresses it checked (no second lookup a rebinding DNS server could answer
//! differently); redirects are not followed, the whole attempt has a deadline, and at most
//! [`DeliveryConfig::response_cap`] bytes of the answer are read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use domain::ports::StoreResult;
use domain::webhooks::{
    CALLBACK_LOG, Delivery, DeliveryAttempt, DeliveryQueue, DeliveryStatus, RetrySchedule,
    SecretBox, TargetPolicy, TargetUrl, WebhookStore, callback_signing_secret,
};

/// How deliveries are made, read once at start-up (the same names on both backends).
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub policy: TargetPolicy,
    pub schedule: RetrySchedule,
    /// The longest one attempt may take, connection and answer included
    /// (`DEEPEMOTION_WEBHOOK_TIMEOUT_SECS`, default 10).
    pub timeout: Duration,
    /// How long a claimed delivery is left to its sender before another may take it up (the
    /// sender died): longer than `timeout`.
    pub claim: Duration,
    /// Bytes of a receiver's answer read at most; the rest is dropped unread.
    pub response_cap: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            policy: TargetPolicy::default(),
            schedule: RetrySchedule::default(),
            timeout: Duration::from_secs(10),
            claim: Duration::from_secs(60),
            response_cap: 4096,
        }
    }
}

impl DeliveryConfig {
    /// The settings from the environment; `dev` (`deepemotion serve --dev`) lets deliveries go
    /// to `http` and to this machine. `DEEPEMOTION_WEBHOOK_TIMEOUT_SECS` bounds an attempt;
    /// `DEEPEMOTION_WEBHOOK_ATTEMPTS` and `DEEPEMOTION_WEBHOOK_FIRST_RETRY_SECS` change the
    /// schedule (tests shrink it to seconds).
    pub fn from_env(dev: bool) -> Result<Self, String> {
        Self::from_vars(dev, |name| std::env::var(name).ok())
    }

    pub fn from_vars(dev: bool, var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut config = Self {
            policy: if dev {
                TargetPolicy::development()
            } else {
                TargetPolicy::default()
            },
            ..Self::default()
        };
        let seconds = |name: &str, max: f64| -> Result<Option<f64>, String> {
            var(name)
                .filter(|v| !v.is_empty())
                .map(|v| {
                    v.parse::<f64>()
                        .ok()
                        .filter(|s| s.is_finite() && *s > 0.0 && *s <= max)
                        .ok_or_else(|| {
                            format!("{name} must be a number of seconds up to {max}, not {v:?}")
                        })
                })
                .transpose()
        };
        if let Some(s) = seconds("DEEPEMOTION_WEBHOOK_TIMEOUT_SECS", 30.0)? {
            config.timeout = Duration::from_secs_f64(s);
        }
        if let Some(s) = seconds("DEEPEMOTION_WEBHOOK_FIRST_RETRY_SECS", 3600.0)? {
            config.schedule.first = Duration::from_secs_f64(s);
        }
        if let Some(v) = var("DEEPEMOTION_WEBHOOK_ATTEMPTS").filter(|v| !v.is_empty()) {
            config.schedule.attempts =
                v.parse()
                    .ok()
                    .filter(|n| (1..=20).contains(n))
                    .ok_or_else(|| {
                        format!("DEEPEMOTION_WEBHOOK_ATTEMPTS must be 1 to 20, not {v:?}")
                    })?;
        }
        config.claim = config.claim.max(config.timeout * 2);
        Ok(config)
    }
}

/// What one call of [`Deliverer::attempt`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// The attempt failed; the next is queued for `at`.
    Retrying { at: DateTime<Utc> },
    /// The attempt failed and the schedule is spent, or the target is gone.
    Failed,
    /// Not due until `at` (a message that came early, or a duplicate).
    NotDue { at: DateTime<Utc> },
    /// Delivered or failed already, or deleted with its endpoint: nothing to do.
    Finished,
    /// Another sender claimed it first; try again after its claim has run out.
    Busy,
}

/// Makes delivery attempts.
pub struct Deliverer {
    store: Arc<dyn WebhookStore>,
    queue: Arc<dyn DeliveryQueue>,
    secrets: SecretBox,
    config: DeliveryConfig,
    client: reqwest::Client,
}

/// Where an attempt goes and what it is signed with.
struct Target {
    url: TargetUrl,
    secret: String,
}

impl Deliverer {
    pub fn new(
        store: Arc<dyn WebhookStore>,
        queue: Arc<dyn DeliveryQueue>,
        secrets: SecretBox,
        config: DeliveryConfig,
    ) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: config.policy,
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("DeepEmotion-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the webhook client: {e}"))?;
        Ok(Self {
            store,
            queue,
            secrets,
            config,
            client,
        })
    }

    pub fn config(&self) -> &DeliveryConfig {
        &self.config
    }

    /// One attempt at the delivery `id`, if it is due and nobody else is making one.
    pub async fn attempt(&self, id: &str) -> StoreResult<AttemptOutcome> {
        let Some(mut delivery) = self.store.delivery(id).await? else {
            return Ok(AttemptOutcome::Finished);
        };
        let now = Utc::now();
        if delivery.status != DeliveryStatus::Pending {
            return Ok(AttemptOutcome::Finished);
        }
        if !delivery.is_due(now) {
            let at = delivery.next_attempt_at.unwrap_or(now);
            return Ok(AttemptOutcome::NotDue { at });
        }
        let read_at = delivery.version;
        let target = match self.target(&delivery).await? {
            Ok(target) => target,
            Err(reason) => {
                tracing::warn!(delivery_id = %delivery.id, log = %delivery.log, %reason, "webhook delivery abandoned");
                delivery.abandon(&reason, now);
                self.store.replace_delivery(&delivery, read_at).await?;
                return Ok(AttemptOutcome::Failed);
            }
        };
        delivery.claim(now, self.config.claim);
        if !self.store.replace_delivery(&delivery, read_at).await? {
            return Ok(AttemptOutcome::Busy);
        }
        let claimed_at = delivery.version;
        let attempt = self.post(&target, &delivery).await;
        tracing::info!(delivery_id = %delivery.id, log = %delivery.log, video_id = %delivery.video_id,
            attempt = delivery.attempts.len() + 1, status_code = ?attempt.status_code,
            latency_ms = attempt.latency_ms, error = ?attempt.error, "webhook attempt");
        delivery.record_attempt(attempt, &self.config.schedule, jitter());
        if !self.store.replace_delivery(&delivery, claimed_at).await? {
            // resent (or deleted) while the attempt ran: the newer state stands
            return Ok(AttemptOutcome::Busy);
        }
        Ok(match (delivery.status, delivery.next_attempt_at) {
            (DeliveryStatus::Delivered, _) => AttemptOutcome::Delivered,
            (DeliveryStatus::Pending, Some(at)) => {
                self.queue.enqueue(&delivery.id, at).await?;
                AttemptOutcome::Retrying { at }
            }
            _ => {
                tracing::warn!(delivery_id = %delivery.id, log = %delivery.log, attempts = delivery.attempts.len(), "webhook delivery failed for good");
                AttemptOutcome::Failed
            }
        })
    }

    /// The URL and plain secret for the delivery, or why it can never be made.
    async fn target(&self, delivery: &Delivery) -> StoreResult<Result<Target, String>> {
        let (url, secret) = if delivery.log == CALLBACK_LOG {
            let Some(url) = delivery.url.clone() else {
                return Ok(Err("the callback delivery has no URL".into()));
            };
            let secret =
                callback_signing_secret(&*self.store, &self.secrets, &delivery.user_id).await?;
            (url, secret)
        } else {
            let Some(endpoint) = self
                .store
                .endpoint(&delivery.user_id, &delivery.log)
                .await?
            else {
                return Ok(Err("the endpoint was deleted".into()));
            };
            if !endpoint.events.contains(&delivery.event) {
                return Ok(Err(format!(
                    "the endpoint no longer takes {}",
                    delivery.event.as_str()
                )));
            }
            let secret = self.secrets.open(&endpoint.sealed_secret)?;
            (endpoint.url, secret)
        };
        // an address written in the URL is judged here; a name, by the resolver at connection
        match self.config.policy.check_url(&url) {
            Ok(url) => Ok(Ok(Target { url, secret })),
            Err(reason) => Ok(Err(format!("the URL is not allowed: {reason}"))),
        }
    }

    /// Posts the delivery once and says what came of it; never fails, never waits longer than
    /// the configured timeout.
    async fn post(&self, target: &Target, delivery: &Delivery) -> DeliveryAttempt {
        let at = Utc::now();
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.config.timeout, self.send(target, delivery))
            .await
            .unwrap_or_else(|_| Err("the receiver did not answer in time".into()));
        let latency_ms = started.elapsed().as_millis() as u64;
        let (status_code, error) = match outcome {
            Ok(code) if (200..300).contains(&code) => (Some(code), None),
            Ok(code) if (300..400).contains(&code) => (
                Some(code),
                Some(format!(
                    "the receiver answered {code}; redirects are not followed"
                )),
            ),
            Ok(code) => (Some(code), Some(format!("the receiver answered {code}"))),
            Err(reason) => (None, Some(reason)),
        };
        DeliveryAttempt {
            attempt: 0,
            at,
            status_code,
            latency_ms,
            error,
        }
    }

    async fn send(&self, target: &Target, delivery: &Delivery) -> Result<u16, String> {
        let timestamp = Utc::now().timestamp();
        let signature = standardwebhooks::Webhook::new(&target.secret)
            .and_then(|w| w.sign(&delivery.id, timestamp, delivery.payload.as_bytes()))
            .map_err(|_| "the signing secret is malformed".to_string())?;
        let mut response = self
            .client
            .post(target.url.url.clone())
            .header("content-type", "application/json")
            .header(standardwebhooks::HEADER_WEBHOOK_ID, &delivery.id)
            .header(
                standardwebhooks::HEADER_WEBHOOK_TIMESTAMP,
                timestamp.to_string(),
            )
            .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature)
            .body(delivery.payload.clone())
            .send()
            .await
            .map_err(describe)?;
        let code = response.status().as_u16();
        // read a little of the answer (so a short one completes cleanly), never all of it
        let mut read = 0;
        while read < self.config.response_cap {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                _ => break,
            }
        }
        Ok(code)
    }
}

/// Why a request failed, for the delivery log: the resolver's refusal when that was the cause.
fn describe(e: reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return refused.0.clone();
        }
        source = cause.source();
    }
    if e.is_timeout() {
        "the receiver did not answer in time".into()
    } else if e.is_connect() {
        "could not connect to the receiver".into()
    } else {
        "the request failed".into()
    }
}

/// A number in [0, 1) for the retry jitter.
fn jitter() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

/// Why the resolver refused a host.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

/// Resolves hosts for the webhook client and refuses any whose addresses are not all allowed
/// by the policy: the client then connects to exactly the addresses checked here.
pub struct GuardedResolver {
    pub policy: TargetPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|_| Refused(format!("{host} could not be resolved")))?
                .collect();
            if addrs.is_empty() {
                return Err(Refused(format!("{host} has no address")).into());
            }
            if let Some(bad) = addrs.iter().find(|a| !policy.address_allowed(a.ip())) {
                return Err(Refused(format!(
                    "{host} resolves to {}, which is not a public address",
                    bad.ip()
                ))
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests;
