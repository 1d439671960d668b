//! Webhooks: signed notifications that a video's analysis ended, delivered at least once to the
//! endpoints a user registers (and to a per-video `callback_url`).
//!
//! The rules live here, over two ports: [`WebhookStore`] keeps endpoints, each user's callback
//! signing secret and the deliveries (one record per event and target, with its attempts), and
//! [`DeliveryQueue`] asks for an attempt at a given time (SQS with a delay on AWS, a timer over
//! the SQLite table on one machine). The worker calls [`queue_video_notifications`] after the
//! final state is stored; whoever sends (the `webhooks` crate) claims a delivery, signs and posts
//! it, and records the attempt with [`Delivery::record_attempt`], which applies the
//! [`RetrySchedule`].
//!
//! Signing secrets must be at hand in plain form to sign, so stores only ever hold them sealed
//! by a [`SecretBox`] whose key is kept apart from the data (a key file, Secrets Manager).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::ports::{Page, StoreError, StoreResult};
use crate::{AnalysisState, Video, VideoStatus};

/// What a webhook announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WebhookEvent {
    #[serde(rename = "video.completed")]
    VideoCompleted,
    #[serde(rename = "video.failed")]
    VideoFailed,
    /// The analysis passed another tenth of the video (10 %, 20 %, ... 90 %).
    #[serde(rename = "video.progress")]
    VideoProgress,
}

impl WebhookEvent {
    pub const ALL: [WebhookEvent; 3] = [
        WebhookEvent::VideoCompleted,
        WebhookEvent::VideoFailed,
        WebhookEvent::VideoProgress,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::VideoCompleted => "video.completed",
            WebhookEvent::VideoFailed => "video.failed",
            WebhookEvent::VideoProgress => "video.progress",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// The event a final status announces.
    pub fn ended(status: VideoStatus) -> Option<Self> {
        match status {
            VideoStatus::Completed => Some(WebhookEvent::VideoCompleted),
            VideoStatus::Failed => Some(WebhookEvent::VideoFailed),
            VideoStatus::Pending | VideoStatus::Processing => None,
        }
    }
}

/// An endpoint a user registered: where to post, which events, and the secret deliveries to it
/// are signed with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    /// `wh_` and 32 hex digits.
    pub id: String,
    pub user_id: String,
    pub url: String,
    pub events: Vec<WebhookEvent>,
    #[serde(default)]
    pub description: String,
    /// The signing secret (`whsec_...`), sealed by the deployment's [`SecretBox`].
    pub sealed_secret: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The delivery log of a user's per-video `callback_url`s (endpoints' logs are named by their id).
pub const CALLBACK_LOG: &str = "callback";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (at `next_attempt_at`).
    Pending,
    /// A receiver answered 2xx.
    Delivered,
    /// Every attempt of the schedule failed, or the target is gone.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

/// One try at posting a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    /// 1-based, over the delivery's whole life (resends continue the count).
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// The receiver's status code; `None` when no response came (refused, timed out, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    /// Why the attempt failed, as the owner should read it (never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One event for one target: the same `id` (the `webhook-id` header) and the same body on every
/// attempt, so that a receiver can drop duplicates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// `msg_` and 32 hex digits, derived from the video, the event and the target
    /// ([`delivery_id`]), so that queueing twice makes one delivery.
    pub id: String,
    pub user_id: String,
    /// The endpoint's id, or [`CALLBACK_LOG`].
    pub log: String,
    /// Where a callback delivery goes; `None` for an endpoint's, which go to the endpoint's URL
    /// as it is at each attempt (so that fixing the URL fixes pending deliveries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub event: WebhookEvent,
    pub video_id: String,
    /// The JSON body, fixed when the delivery is made.
    pub payload: String,
    pub created_at: DateTime<Utc>,
    pub status: DeliveryStatus,
    #[serde(default)]
    pub attempts: Vec<DeliveryAttempt>,
    /// When the next attempt is due (pending only). While an attempt runs, the time its claim
    /// runs out, so that an attempt that died is taken up again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Attempts made before the latest resend: the schedule counts from here.
    #[serde(default)]
    pub schedule_start: u32,
    /// Bumped by every write: stores replace a delivery only over the version they were given.
    #[serde(default)]
    pub version: u64,
}

impl Delivery {
    /// A delivery about `video` to the target `log`, due `now`, not yet attempted.
    pub fn new(
        id: String,
        video: &Video,
        log: String,
        url: Option<String>,
        event: WebhookEvent,
        payload: String,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            user_id: video.user_id.clone(),
            log,
            url,
            event,
            video_id: video.id.clone(),
            payload,
            created_at: now,
            status: DeliveryStatus::Pending,
            attempts: Vec::new(),
            next_attempt_at: Some(now),
            schedule_start: 0,
            version: 0,
        }
    }

    /// Attempts made since the schedule (re)started.
    pub fn attempts_in_schedule(&self) -> u32 {
        (self.attempts.len() as u32).saturating_sub(self.schedule_start)
    }

    /// Whether an attempt may start at `now`.
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.status == DeliveryStatus::Pending && self.next_attempt_at.is_none_or(|at| at <= now)
    }

    /// Takes the delivery for one attempt: no other sender starts one until `claim` has passed.
    pub fn claim(&mut self, now: DateTime<Utc>, claim: Duration) {
        self.next_attempt_at = Some(now + claim);
        self.version += 1;
    }

    /// Records an attempt's outcome: delivered on 2xx; otherwise pending again after the
    /// schedule's delay, or failed once the schedule is spent. `jitter` is a number in [0, 1)
    /// (random in production) that spreads retries of many deliveries apart.
    pub fn record_attempt(
        &mut self,
        mut attempt: DeliveryAttempt,
        schedule: &RetrySchedule,
        jitter: f64,
    ) {
        attempt.attempt = self.attempts.len() as u32 + 1;
        let delivered = attempt.status_code.is_some_and(|c| (200..300).contains(&c));
        let at = attempt.at;
        self.attempts.push(attempt);
        self.version += 1;
        if delivered {
            self.status = DeliveryStatus::Delivered;
            self.next_attempt_at = None;
            return;
        }
        match schedule.delay_after(self.attempts_in_schedule(), jitter) {
            Some(delay) => {
                self.status = DeliveryStatus::Pending;
                self.next_attempt_at = Some(at + delay);
            }
            None => {
                self.status = DeliveryStatus::Failed;
                self.next_attempt_at = None;
            }
        }
    }

    /// Gives up without an attempt: the target is gone (an endpoint deleted, an event it no
    /// longer takes).
    pub fn abandon(&mut self, reason: &str, now: DateTime<Utc>) {
        self.attempts.push(DeliveryAttempt {
            attempt: self.attempts.len() as u32 + 1,
            at: now,
            status_code: None,
            latency_ms: 0,
            error: Some(reason.to_string()),
        });
        self.status = DeliveryStatus::Failed;
        self.next_attempt_at = None;
        self.version += 1;
    }

    /// Queues the delivery again with a fresh schedule, whatever became of it (`POST
    /// .../resend`): same id, same body.
    pub fn resend(&mut self, now: DateTime<Utc>) {
        self.status = DeliveryStatus::Pending;
        self.next_attempt_at = Some(now);
        self.schedule_start = self.attempts.len() as u32;
        self.version += 1;
    }
}

/// When failed attempts are retried: after `first`, then each wait `factor` times the last, at
/// most `cap`, for `attempts` attempts in all; each wait is stretched or shrunk by up to
/// `jitter` of itself.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    pub attempts: u32,
    pub first: Duration,
    pub factor: f64,
    pub cap: Duration,
    pub jitter: f64,
}

impl Default for RetrySchedule {
    /// 8 attempts over about 1 h 30 min: at once, then after 5 s, 15 s, 45 s, 2 min 15 s,
    /// 6 min 45 s, 20 min 15 s and 1 h (±20 %).
    fn default() -> Self {
        Self {
            attempts: 8,
            first: Duration::from_secs(5),
            factor: 3.0,
            cap: Duration::from_secs(3600),
            jitter: 0.2,
        }
    }
}

impl RetrySchedule {
    /// The wait before the next attempt after `made` attempts of the schedule, or `None` when
    /// the schedule is spent. `jitter` in [0, 1) picks a point in the ± jitter band.
    pub fn delay_after(&self, made: u32, jitter: f64) -> Option<Duration> {
        if made == 0 {
            return Some(Duration::ZERO);
        }
        if made >= self.attempts {
            return None;
        }
        let base = self.first.as_secs_f64() * self.factor.powi(made as i32 - 1);
        let base = base.min(self.cap.as_secs_f64());
        let spread = 1.0 + self.jitter * (2.0 * jitter.clamp(0.0, 1.0) - 1.0);
        Some(Duration::from_secs_f64((base * spread).max(0.0)))
    }

    /// The waits of a delivery that always fails, without jitter: what the README documents.
    pub fn waits(&self) -> Vec<Duration> {
        let plain = Self {
            jitter: 0.0,
            ..self.clone()
        };
        (1..self.attempts)
            .filter_map(|n| plain.delay_after(n, 0.5))
            .collect()
    }
}

/// The id of the delivery of `event` about `video_id` to the target `log`: the same every time
/// it is computed, so queueing after a crash finds the delivery made before it.
pub fn delivery_id(video_id: &str, event: WebhookEvent, log: &str) -> String {
    message_id(video_id, event.as_str(), log)
}

fn message_id(video_id: &str, topic: &str, log: &str) -> String {
    let digest = Sha256::digest(format!("{video_id}\n{topic}\n{log}"));
    format!("msg_{}", &hex(&digest)[..32])
}

/// The tenth of the video (10, 20, ... 90) that `progress` percent has passed, if any: progress
/// is announced at these steps only, at most nine deliveries per video and endpoint.
pub fn progress_step(progress: u8) -> Option<u8> {
    let step = progress / 10 * 10;
    (10..100).contains(&step).then_some(step)
}

/// Makes and queues the `video.progress` deliveries for `step` (a [`progress_step`]), one to
/// each of the owner's endpoints that takes the event (not to the `callback_url`, which hears
/// of the end only). Each step is delivered once per endpoint, whichever worker or segment
/// reaches it first. Returns how many deliveries it queued.
pub async fn queue_video_progress(
    store: &dyn WebhookStore,
    queue: &dyn DeliveryQueue,
    video: &Video,
    step: u8,
) -> StoreResult<usize> {
    let event = WebhookEvent::VideoProgress;
    let now = Utc::now();
    let payload = json!({"type": event.as_str(), "timestamp": now, "data": {
        "video_id": video.id,
        "title": video.title,
        "filename": video.filename,
        "status": VideoStatus::Processing.as_str(),
        "progress": step,
        "links": {"video": format!("/api/v2/videos/{}", video.id)},
    }})
    .to_string();
    let mut queued = 0;
    for endpoint in store.endpoints_of(&video.user_id).await? {
        if !endpoint.events.contains(&event) {
            continue;
        }
        let id = message_id(
            &video.id,
            &format!("{}/{step}", event.as_str()),
            &endpoint.id,
        );
        let delivery = Delivery::new(id, video, endpoint.id, None, event, payload.clone(), now);
        if store.create_delivery(&delivery).await? {
            queue.enqueue(&delivery.id, now).await?;
            queued += 1;
        }
    }
    Ok(queued)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new id for an endpoint.
pub fn new_endpoint_id() -> String {
    format!("wh_{}", hex(&random_bytes::<16>()))
}

fn random_bytes<const N: usize>() -> [u8; N] {
    use chacha20poly1305::aead::rand_core::RngCore;
    let mut bytes = [0u8; N];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// A new signing secret in the Standard Webhooks form: `whsec_` and 32 random bytes in base64.
pub fn new_signing_secret() -> String {
    format!("whsec_{}", STANDARD.encode(random_bytes::<32>()))
}

/// The body of a video event (Standard Webhooks: `{type, timestamp, data}`).
pub fn video_event_payload(
    event: WebhookEvent,
    video: &Video,
    state: &AnalysisState,
    now: DateTime<Utc>,
) -> String {
    let info = state.video.as_ref();
    let mut data = json!({
        "video_id": video.id,
        "title": video.title,
        "filename": video.filename,
        "status": state.status.as_str(),
        "frame_count": state.frames_analyzed,
        "duration_seconds": info.map(|i| i.duration_ms as f64 / 1000.0),
        "width": info.map(|i| i.width),
        "height": info.map(|i| i.height),
        "uploaded_at": video.uploaded_at,
        "processed_at": state.processed_at,
        "links": {
            "video": format!("/api/v2/videos/{}", video.id),
            "frames": format!("/api/v2/videos/{}/frames", video.id),
        },
    });
    if let Some(error) = &state.error {
        data["error"] = json!(error);
    }
    if let Some(summary) = &state.summary {
        // the per-second timeline and the tracks grow with the video (an hour's timeline is
        // about 600 KB): the payload keeps what stays small, `GET /videos/{id}` has the rest
        let mut summary = json!(summary);
        if let Some(fields) = summary.as_object_mut() {
            fields.remove("timeline");
            fields.remove("tracks");
        }
        data["summary"] = summary;
    }
    json!({"type": event.as_str(), "timestamp": now, "data": data}).to_string()
}

/// Makes and queues the deliveries announcing that `video` ended in `state`: one to each of its
/// owner's endpoints that takes the event and existed when the video ended, and one to the
/// video's `callback_url`. Safe to call again (after a crash, or for a duplicate upload event):
/// deliveries already made are not made twice, and only those never attempted are queued again.
/// Returns how many deliveries it queued.
pub async fn queue_video_notifications(
    store: &dyn WebhookStore,
    queue: &dyn DeliveryQueue,
    video: &Video,
    state: &AnalysisState,
) -> StoreResult<usize> {
    let Some(event) = WebhookEvent::ended(state.status) else {
        return Ok(0);
    };
    let ended_at = state.processed_at.unwrap_or_else(Utc::now);
    let mut targets: Vec<(String, Option<String>)> = store
        .endpoints_of(&video.user_id)
        .await?
        .into_iter()
        .filter(|e| e.events.contains(&event) && e.created_at <= ended_at)
        .map(|e| (e.id, None))
        .collect();
    if let Some(url) = &video.callback_url {
        targets.push((CALLBACK_LOG.to_string(), Some(url.clone())));
    }
    let now = Utc::now();
    let payload = video_event_payload(event, video, state, ended_at);
    let mut queued = 0;
    for (log, url) in targets {
        let id = delivery_id(&video.id, event, &log);
        let delivery = Delivery::new(id, video, log, url, event, payload.clone(), now);
        let fresh = store.create_delivery(&delivery).await?;
        let never_tried = fresh
            || store
                .delivery(&delivery.id)
                .await?
                .is_some_and(|d| d.status == DeliveryStatus::Pending && d.attempts.is_empty());
        if never_tried {
            queue.enqueue(&delivery.id, now).await?;
            queued += 1;
        }
    }
    if queued > 0 {
        tracing::info!(video_id = %video.id, event = event.as_str(), queued, "webhook deliveries queued");
    }
    Ok(queued)
}

/// The user's callback signing secret in plain form, made on its first use (two first uses at
/// once agree on one: the store keeps the first).
pub async fn callback_signing_secret(
    store: &dyn WebhookStore,
    key: &SecretBox,
    user_id: &str,
) -> StoreResult<String> {
    let sealed = match store.signing_secret(user_id).await? {
        Some(sealed) => sealed,
        None => {
            let fresh = key.seal(&new_signing_secret());
            store.put_signing_secret(user_id, &fresh, false).await?
        }
    };
    key.open(&sealed)
}

/// Endpoints, callback signing secrets and deliveries.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    async fn create_endpoint(&self, endpoint: &WebhookEndpoint) -> StoreResult<()>;
    /// The endpoint, if it is `user_id`'s.
    async fn endpoint(&self, user_id: &str, id: &str) -> StoreResult<Option<WebhookEndpoint>>;
    /// A user's endpoints, oldest first.
    async fn endpoints_of(&self, user_id: &str) -> StoreResult<Vec<WebhookEndpoint>>;
    /// Replaces a stored endpoint; `NotFound` when it is gone.
    async fn update_endpoint(&self, endpoint: &WebhookEndpoint) -> StoreResult<()>;
    /// Removes the endpoint and its delivery log; false when there was no such endpoint of
    /// `user_id`'s.
    async fn delete_endpoint(&self, user_id: &str, id: &str) -> StoreResult<bool>;
    /// The user's sealed callback signing secret.
    async fn signing_secret(&self, user_id: &str) -> StoreResult<Option<String>>;
    /// Stores `sealed` as the user's callback signing secret. Without `replace`, a secret
    /// already stored stays (two first uses at once agree on one). Returns the one in force.
    async fn put_signing_secret(
        &self,
        user_id: &str,
        sealed: &str,
        replace: bool,
    ) -> StoreResult<String>;
    /// Stores a new delivery; false (and nothing written) when one with its id exists.
    async fn create_delivery(&self, delivery: &Delivery) -> StoreResult<bool>;
    async fn delivery(&self, id: &str) -> StoreResult<Option<Delivery>>;
    /// Replaces the delivery if the stored one is still at `expected_version`; false otherwise
    /// (another sender got there first) or when it is gone.
    async fn replace_delivery(
        &self,
        delivery: &Delivery,
        expected_version: u64,
    ) -> StoreResult<bool>;
    /// A log's deliveries (an endpoint's id, or [`CALLBACK_LOG`]) of `user_id`, newest first.
    async fn deliveries(
        &self,
        user_id: &str,
        log: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Delivery>>;
}

/// Asks for an attempt at a delivery once `due` has come.
#[async_trait]
pub trait DeliveryQueue: Send + Sync {
    async fn enqueue(&self, delivery_id: &str, due: DateTime<Utc>) -> StoreResult<()>;
}

/// Which URLs deliveries may go to. Outside development only `https` URLs, on ports a web
/// server listens on, naming public addresses: the service must not become a way into the
/// network it runs in. Hostnames are checked again at every attempt, on the addresses they
/// resolve to then (see [`TargetPolicy::address_allowed`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TargetPolicy {
    /// `--dev`: `http` and loopback/private addresses too (a receiver on this machine).
    pub allow_private: bool,
}

/// A checked webhook URL.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetUrl {
    pub url: url::Url,
    /// The host as written, without brackets for IPv6.
    pub host: String,
    pub port: u16,
}

impl TargetPolicy {
    pub fn development() -> Self {
        Self {
            allow_private: true,
        }
    }

    /// Checks what can be checked without resolving names. The error says what is wrong.
    pub fn check_url(&self, raw: &str) -> Result<TargetUrl, String> {
        if raw.len() > 2048 {
            return Err("the URL is longer than 2048 characters".into());
        }
        let url = url::Url::parse(raw.trim()).map_err(|e| format!("not a URL: {e}"))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_private => {}
            "http" => return Err("the URL must use https".into()),
            other => return Err(format!("the URL must use https, not {other}")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("the URL must not carry a user name or password".into());
        }
        if url.fragment().is_some() {
            return Err("the URL must not have a #fragment".into());
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err("the URL has no host".into()),
        };
        let port = url.port_or_known_default().ok_or("the URL has no port")?;
        if !self.allow_private {
            if let Ok(ip) = host.parse::<IpAddr>() {
                if !self.address_allowed(ip) {
                    return Err(format!("{ip} is not a public address"));
                }
            } else if let name = host.trim_end_matches('.')
                && (name == "localhost"
                    || name.ends_with(".localhost")
                    || name.ends_with(".local")
                    || name.ends_with(".internal")
                    || !name.contains('.'))
            {
                return Err(format!("{host} is not a public host name"));
            }
        }
        Ok(TargetUrl { url, host, port })
    }

    /// Whether a delivery may connect to `ip`: never to loopback, private, shared (CGNAT),
    /// link-local (which holds the cloud metadata service, 169.254.169.254 and fd00:ec2::254),
    /// multicast, documentation or reserved ranges, whichever way the address is written
    /// (IPv4-mapped, NAT64, 6to4), unless private targets are allowed.
    pub fn address_allowed(&self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip)
    }
}

/// Whether `ip` is a unicast address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let blocked = a == 0                                  // "this network"
        || a == 10                                        // private
        || a == 127                                       // loopback
        || (a == 100 && (64..128).contains(&b))           // shared address space (CGNAT)
        || (a == 169 && b == 254)                         // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b))            // private
        || (a == 192 && b == 0 && c == 0)                 // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)                 // documentation
        || (a == 192 && b == 88 && c == 99)               // 6to4 relay anycast
        || (a == 192 && b == 168)                         // private
        || (a == 198 && (b == 18 || b == 19))             // benchmarking
        || (a == 198 && b == 51 && c == 100)              // documentation
        || (a == 203 && b == 0 && c == 113)               // documentation
        || a >= 224; // multicast, reserved, broadcast
    !blocked
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // addresses that carry an IPv4 address are judged by it
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let embedded =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return is_public_v4(embedded(s[6], s[7])); // NAT64
    }
    if s[0] == 0x2002 {
        return is_public_v4(embedded(s[1], s[2])); // 6to4
    }
    let blocked = ip.is_unspecified()
        || ip.is_loopback()
        || s[0..6] == [0, 0, 0, 0, 0, 0]                  // IPv4-compatible (deprecated)
        || (s[0] & 0xfe00) == 0xfc00                      // unique local (fd00:ec2::254 too)
        || (s[0] & 0xffc0) == 0xfe80                      // link-local
        || (s[0] & 0xffc0) == 0xfec0                      // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00                      // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8)             // documentation
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0])       // discard
        || (s[0] == 0x2001 && s[1] < 0x0200); // IETF protocol assignments (Teredo, ...)
    !blocked
}

/// Seals secrets for storage with XChaCha20-Poly1305 under a 256-bit key of its own (a key file
/// in the data directory on one machine, a Secrets Manager secret on AWS): stores and logs only
/// ever see the sealed form, and the token secret plays no part, so either can be rotated alone.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

/// The prefix of a sealed secret: the format's version.
const SEALED_PREFIX: &str = "v1.";

impl SecretBox {
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(Key::from_slice(key)),
        }
    }

    /// Fresh key material as it is kept (a key file, a Secrets Manager secret): 32 random
    /// bytes in base64.
    pub fn generate_key() -> String {
        STANDARD.encode(random_bytes::<32>())
    }

    /// A box for kept key material: the key is its SHA-256, so any random string of at least 32
    /// characters will do (Secrets Manager generates one; surrounding whitespace is ignored).
    pub fn from_key_material(material: &str) -> Result<Self, String> {
        let material = material.trim();
        if material.chars().count() < 32 {
            return Err("the webhook key must be at least 32 characters".to_string());
        }
        Ok(Self::new(&Sha256::digest(material.as_bytes()).into()))
    }

    pub fn seal(&self, secret: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(&nonce, secret.as_bytes())
            .expect("sealing a short secret");
        let mut bytes = nonce.to_vec();
        bytes.extend(sealed);
        format!("{SEALED_PREFIX}{}", STANDARD.encode(bytes))
    }

    pub fn open(&self, sealed: &str) -> StoreResult<String> {
        let broken = || StoreError::Backend("a sealed secret could not be opened".into());
        let bytes = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|b| b.len() > 24)
            .ok_or_else(broken)?;
        let (nonce, sealed) = bytes.split_at(24);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), sealed)
            .map_err(|_| broken())?;
        String::from_utf8(plain).map_err(|_| broken())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery() -> Delivery {
        Delivery {
            id: delivery_id("v", WebhookEvent::VideoCompleted, "wh_1"),
            user_id: "u".into(),
            log: "wh_1".into(),
            url: None,
            event: WebhookEvent::VideoCompleted,
            video_id: "v".into(),
            payload: "{}".into(),
            created_at: Utc::now(),
            status: DeliveryStatus::Pending,
            attempts: vec![],
            next_attempt_at: None,
            schedule_start: 0,
            version: 0,
        }
    }

    fn answered(code: Option<u16>) -> DeliveryAttempt {
        DeliveryAttempt {
            attempt: 0,
            at: Utc::now(),
            status_code: code,
            latency_ms: 3,
            error: None,
        }
    }

    #[test]
    fn the_default_schedule_grows_from_5_s_to_1_h_over_8_attempts() {
        let waits: Vec<u64> = RetrySchedule::default()
            .waits()
            .iter()
            .map(Duration::as_secs)
            .collect();
        assert_eq!(waits, [5, 15, 45, 135, 405, 1215, 3600]);
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let schedule = RetrySchedule::default();
        let low = schedule.delay_after(2, 0.0).unwrap().as_secs_f64();
        let high = schedule.delay_after(2, 0.999).unwrap().as_secs_f64();
        assert!((11.9..12.1).contains(&low), "{low}");
        assert!((17.9..18.1).contains(&high), "{high}");
    }

    #[test]
    fn failures_retry_until_the_schedule_is_spent_then_fail() {
        let schedule = RetrySchedule {
            attempts: 3,
            ..RetrySchedule::default()
        };
        let mut d = delivery();
        d.record_attempt(answered(Some(500)), &schedule, 0.5);
        assert_eq!(d.status, DeliveryStatus::Pending);
        let first_wait = d.next_attempt_at.unwrap() - d.attempts[0].at;
        d.record_attempt(answered(None), &schedule, 0.5);
        let second_wait = d.next_attempt_at.unwrap() - d.attempts[1].at;
        assert!(second_wait > first_wait);
        d.record_attempt(answered(Some(503)), &schedule, 0.5);
        assert_eq!(d.status, DeliveryStatus::Failed);
        assert_eq!(d.next_attempt_at, None);
        assert_eq!(
            d.attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        // a resend starts a fresh schedule and keeps counting attempts
        d.resend(Utc::now());
        assert!(d.is_due(Utc::now()));
        d.record_attempt(answered(Some(204)), &schedule, 0.5);
        assert_eq!(d.status, DeliveryStatus::Delivered);
        assert_eq!(d.attempts.last().unwrap().attempt, 4);
        assert_eq!(d.version, 5);
    }

    #[test]
    fn a_redirect_is_a_failed_attempt() {
        let mut d = delivery();
        d.record_attempt(answered(Some(302)), &RetrySchedule::default(), 0.5);
        assert_eq!(d.status, DeliveryStatus::Pending);
    }

    #[test]
    fn progress_is_announced_at_each_tenth_only() {
        assert_eq!(progress_step(0), None);
        assert_eq!(progress_step(9), None);
        assert_eq!(progress_step(10), Some(10));
        assert_eq!(progress_step(57), Some(50));
        assert_eq!(progress_step(99), Some(90));
        assert_eq!(progress_step(100), None);
        assert_eq!(
            WebhookEvent::parse("video.progress"),
            Some(WebhookEvent::VideoProgress)
        );
    }

    #[test]
    fn delivery_ids_are_stable_per_video_event_and_target() {
        let a = delivery_id("v1", WebhookEvent::VideoCompleted, "wh_1");
        assert_eq!(a, delivery_id("v1", WebhookEvent::VideoCompleted, "wh_1"));
        assert_ne!(a, delivery_id("v1", WebhookEvent::VideoFailed, "wh_1"));
        assert_ne!(
            a,
            delivery_id("v1", WebhookEvent::VideoCompleted, CALLBACK_LOG)
        );
        assert_ne!(a, delivery_id("v2", WebhookEvent::VideoCompleted, "wh_1"));
        assert!(a.starts_with("msg_") && a.len() == 36);
    }

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_never_show_the_secret() {
        let secret = new_signing_secret();
        assert!(secret.starts_with("whsec_"));
        let key = SecretBox::from_key_material(&SecretBox::generate_key()).unwrap();
        let sealed = key.seal(&secret);
        assert!(!sealed.contains(&secret[6..]));
        assert_ne!(sealed, key.seal(&secret), "a fresh nonce per seal");
        assert_eq!(key.open(&sealed).unwrap(), secret);
        let other = SecretBox::from_key_material(&SecretBox::generate_key()).unwrap();
        assert!(other.open(&sealed).is_err());
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(key.open(&String::from_utf8(tampered).unwrap()).is_err());
        assert!(SecretBox::from_key_material("too short").is_err());
        assert!(!format!("{key:?}").contains(&secret));
    }

    #[test]
    fn production_refuses_urls_into_private_networks() {
        let policy = TargetPolicy::default();
        for bad in [
            "http://example.com/hook",
            "ftp://example.com/hook",
            "https://127.0.0.1/hook",
            "https://169.254.169.254/latest/meta-data/",
            "https://[::1]/hook",
            "https://[::ffff:10.0.0.1]/hook",
            "https://[fd00:ec2::254]/",
            "https://10.1.2.3/",
            "https://192.168.0.10/",
            "https://172.20.0.1/",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "https://224.0.0.1/",
            "https://localhost/hook",
            "https://metadata.google.internal/",
            "https://intranet/",
            "https://localhost./hook",
            "https://db.internal./",
            "https://user:pw@example.com/",
            "https://2130706433/",
            "https://0x7f.1/",
            "not a url",
        ] {
            assert!(policy.check_url(bad).is_err(), "{bad} was accepted");
        }
        let ok = policy
            .check_url("https://hooks.example.com:8443/a?b=c")
            .unwrap();
        assert_eq!((ok.host.as_str(), ok.port), ("hooks.example.com", 8443));
        assert!(policy.check_url("https://93.184.215.14/").is_ok());
        assert!(policy.check_url("https://[2606:4700::1111]/").is_ok());
    }

    #[test]
    fn development_allows_receivers_on_this_machine() {
        let dev = TargetPolicy::development();
        assert!(dev.check_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(dev.address_allowed("127.0.0.1".parse().unwrap()));
        assert!(dev.check_url("ftp://127.0.0.1/").is_err());
    }

    #[test]
    fn addresses_are_judged_whatever_their_spelling() {
        for blocked in [
            "127.0.0.1",
            "10.0.0.1",
            "169.254.169.254",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "fe80::1",
            "fd00:ec2::254",
            "ff02::1",
            "255.255.255.255",
            "198.18.0.1",
        ] {
            assert!(!is_public(blocked.parse().unwrap()), "{blocked}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
