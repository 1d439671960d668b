//! The one HTTP API, `/api/v2`: an axum `Router` that `lambda_http::run` serves on AWS (see
//! [`lambda`]) and the local server serves on one machine. Handlers only see ports (`domain`'s,
//! and [`ServerFiles`] for uploads that pass through the server), so tests hand in fakes.
//!
//! Modules import downward only: `routes` → `uploads`, `stream` → `videos` → `webhooks` →
//! `request` → the ports.

mod auth;
mod error;
pub mod lambda;
pub mod limits;
pub mod live;
mod openapi;
mod request;
mod routes;
mod stream;
mod throttle;
mod uploads;
mod videos;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument;

pub use auth::bearer_token;
pub use auth::{AuthUser, TokenKeys, hash_password, verify_password};
pub use error::ApiError;
pub use openapi::openapi_document;
pub use throttle::{ClientAddr, RateLimit, RateLimits};
pub use uploads::{
    BodyChunks, ServerFiles, ServerUploads, UploadError, discard_rest, store_upload,
};

use crate::live::VideoEvents;
use domain::ports::{BlobStore, RateLimiter, ResultStore, UserStore, VideoStore};
use domain::webhooks::{DeliveryQueue, SecretBox, TargetPolicy, WebhookStore};

/// API settings, read once at start-up.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest upload accepted (`DEEPEMOTION_MAX_UPLOAD_BYTES`, default 2 GiB).
    pub max_upload_bytes: u64,
    /// Lifetime of presigned upload URLs (15 minutes).
    pub upload_url_ttl: Duration,
    /// Lifetime of presigned download URLs in video responses.
    pub download_url_ttl: Duration,
    /// Frames analysed per second when the client does not say.
    pub default_sample_fps: f64,
    /// Largest `sample_fps` a client may ask for (0, every frame, is always allowed).
    pub max_sample_fps: f64,
    /// Browser origins allowed by CORS (`DEEPEMOTION_CORS_ORIGINS`, comma-separated); empty
    /// allows any origin, which is safe here because credentials travel in a header, not cookies.
    pub cors_origins: Vec<String>,
    /// Serve the web page from this directory instead of the copy built into the binary
    /// (`DEEPEMOTION_WEB_DIR`; for work on the page).
    pub web_dir: Option<std::path::PathBuf>,
    /// Longest a `/videos/{id}/events` stream stays open; `None` until the analysis ends. The API
    /// Lambda sets 20 s: its response is buffered and API Gateway gives up at 30 s, and an
    /// `EventSource` reconnects by itself, which turns the stream into long polling.
    pub events_max_duration: Option<Duration>,
    /// Limits on password attempts (see [`RateLimits`]).
    pub rate_limits: RateLimits,
    /// Which webhook URLs may be registered (`--dev` allows http and this machine; see
    /// [`TargetPolicy`]).
    pub webhook_policy: TargetPolicy,
    /// Most webhook endpoints one user may register.
    pub max_webhooks_per_user: usize,
}

/// The API's environment variables. The unprefixed names are the ones the first SAM template
/// set on the API function; a stack deployed with it keeps working.
const MAX_UPLOAD_BYTES: (&str, &str) = ("DEEPEMOTION_MAX_UPLOAD_BYTES", "MAX_UPLOAD_BYTES");
const CORS_ORIGINS: (&str, &str) = ("DEEPEMOTION_CORS_ORIGINS", "CORS_ORIGINS");
const DEFAULT_SAMPLE_FPS: (&str, &str) = ("DEEPEMOTION_DEFAULT_SAMPLE_FPS", "DEFAULT_SAMPLE_FPS");

/// How long an access token is valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// The shortest token secret accepted: HS256 wants at least as many bytes as its hash.
pub const MIN_SECRET_LEN: usize = 32;

impl ApiConfig {
    /// Reads the API's settings from the environment, the same names on AWS and on one machine:
    /// `DEEPEMOTION_MAX_UPLOAD_BYTES`, `DEEPEMOTION_CORS_ORIGINS`, `DEEPEMOTION_DEFAULT_SAMPLE_FPS`,
    /// `DEEPEMOTION_WEB_DIR` and the rate limits (see [`RateLimits::from_env`]).
    pub fn from_env() -> Result<Self, String> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`ApiConfig::from_env`] over any source of variables (tests pass a map).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let read = |(name, legacy): (&'static str, &'static str)| {
            [name, legacy]
                .into_iter()
                .find_map(|n| var(n).filter(|v| !v.is_empty()).map(|v| (n, v)))
        };
        let mut config = Self::default();
        if let Some((name, v)) = read(MAX_UPLOAD_BYTES) {
            config.max_upload_bytes = v
                .parse()
                .map_err(|_| format!("{name} must be a number of bytes, not {v:?}"))?;
        }
        if let Some((_, v)) = read(CORS_ORIGINS) {
            config.cors_origins = Self::parse_cors_origins(&v)?;
        }
        if let Some((name, v)) = read(DEFAULT_SAMPLE_FPS) {
            config.default_sample_fps = v
                .parse::<f64>()
                .ok()
                .filter(|f| (0.0..=config.max_sample_fps).contains(f))
                .ok_or_else(|| {
                    format!(
                        "{name} must be between 0 and {}, not {v:?}",
                        config.max_sample_fps
                    )
                })?;
        }
        config.web_dir = var("DEEPEMOTION_WEB_DIR")
            .filter(|v| !v.is_empty())
            .map(Into::into);
        config.rate_limits = RateLimits::from_vars(&var)?;
        Ok(config)
    }

    /// Parses `DEEPEMOTION_CORS_ORIGINS`: comma-separated origins, `*` (or nothing) for any.
    pub fn parse_cors_origins(value: &str) -> Result<Vec<String>, String> {
        let origins: Vec<String> = value
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty() && o != "*")
            .collect();
        for origin in &origins {
            let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
                && HeaderValue::from_str(origin).is_ok();
            if !valid {
                return Err(format!(
                    "CORS origin {origin:?} is not an origin like https://app.example.com"
                ));
            }
        }
        Ok(origins)
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 2 << 30,
            upload_url_ttl: Duration::from_secs(15 * 60),
            download_url_ttl: Duration::from_secs(60 * 60),
            default_sample_fps: 5.0,
            max_sample_fps: 30.0,
            cors_origins: Vec::new(),
            web_dir: None,
            events_max_duration: None,
            rate_limits: RateLimits::default(),
            webhook_policy: TargetPolicy::default(),
            max_webhooks_per_user: 20,
        }
    }
}

/// The stores the API reads and writes, whichever backend implements them.
#[derive(Clone)]
pub struct ApiPorts {
    pub users: Arc<dyn UserStore>,
    pub videos: Arc<dyn VideoStore>,
    pub results: Arc<dyn ResultStore>,
    pub blobs: Arc<dyn BlobStore>,
    /// Counts password attempts for the login and registration limits.
    pub limiter: Arc<dyn RateLimiter>,
    /// Webhook endpoints, callback signing secrets and the delivery logs.
    pub webhooks: Arc<dyn WebhookStore>,
    /// Where resent deliveries are queued.
    pub deliveries: Arc<dyn DeliveryQueue>,
    /// Seals signing secrets for storage and opens them to show their owner (a key of its own,
    /// never the token secret).
    pub webhook_key: SecretBox,
}

#[derive(Debug, thiserror::Error)]
#[error("the token secret must be at least {MIN_SECRET_LEN} characters")]
pub struct WeakSecret;

/// The rule for token secrets, on every backend: at least [`MIN_SECRET_LEN`] characters.
pub fn check_secret(secret: &str) -> Result<(), WeakSecret> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(WeakSecret);
    }
    Ok(())
}

/// Everything a handler needs: the ports, the token keys and the settings.
#[derive(Clone)]
pub struct AppState {
    pub users: Arc<dyn UserStore>,
    pub videos: Arc<dyn VideoStore>,
    pub results: Arc<dyn ResultStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub limiter: Arc<dyn RateLimiter>,
    pub webhooks: Arc<dyn WebhookStore>,
    pub deliveries: Arc<dyn DeliveryQueue>,
    pub webhook_key: SecretBox,
    pub tokens: TokenKeys,
    pub config: ApiConfig,
    /// Uploads through this server (one machine); `None` where clients upload to S3.
    pub server_uploads: Option<ServerUploads>,
    /// "This video changed" announcements for live progress (see [`live`]).
    pub events: VideoEvents,
}

impl AppState {
    /// The one way both backends build the API's state: tokens signed with `secret` (at least
    /// [`MIN_SECRET_LEN`] characters) and valid for [`TOKEN_LIFETIME`].
    pub fn new(ports: ApiPorts, secret: &str, config: ApiConfig) -> Result<Self, WeakSecret> {
        check_secret(secret)?;
        let ApiPorts {
            users,
            videos,
            results,
            blobs,
            limiter,
            webhooks,
            deliveries,
            webhook_key,
        } = ports;
        Ok(Self {
            users,
            videos,
            results,
            blobs,
            limiter,
            webhooks,
            deliveries,
            webhook_key,
            tokens: TokenKeys::new(secret.as_bytes(), TOKEN_LIFETIME.as_secs() as i64),
            config,
            server_uploads: None,
            events: VideoEvents::default(),
        })
    }

    /// Takes uploads through the server too (the multipart form, and the stream route serves the
    /// file itself instead of redirecting to a presigned URL).
    pub fn with_server_uploads(mut self, uploads: ServerUploads) -> Self {
        self.server_uploads = Some(uploads);
        self
    }

    /// Live progress hears of changes from `events` (the local worker announces them) instead
    /// of only polling.
    pub fn with_events(mut self, events: VideoEvents) -> Self {
        self.events = events;
        self
    }
}

/// The `/api/v2` router with CORS: what the API Lambda serves.
pub fn router(state: AppState) -> Router {
    let cors = cors(&state.config.cors_origins);
    routes(state, Router::new()).layer(cors)
}

/// The `/api/v2` routes plus a server's own (`extra`: one machine's signed `/uploads/...` URLs
/// and its web page), with the JSON errors, header limits, request ids and security headers
/// around all of them, but without CORS, for servers that add layers of their own (socket.io)
/// that CORS must wrap too.
pub fn routes(state: AppState, extra: Router<AppState>) -> Router {
    Router::new()
        .nest("/api/v2", routes::routes().merge(webhooks::routes()))
        .merge(extra)
        .fallback(|| async { ApiError::NotFound })
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn(limits::header_limits))
        .layer(middleware::from_fn(request_id))
        .layer(middleware::from_fn(limits::security_headers))
        .with_state(state)
}

/// CORS for browser clients: preflights and every response, errors included (this layer is
/// outermost). The original web client sends `Authorization` and `Content-Type` and uses these
/// methods; PUT is the local upload URL's.
pub fn cors(origins: &[String]) -> CorsLayer {
    use axum::http::{Method, header};
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([
            header::LINK,
            header::CONTENT_DISPOSITION,
            header::HeaderName::from_static("x-request-id"),
        ])
        .max_age(Duration::from_secs(600));
    if origins.is_empty() {
        layer.allow_origin(AllowOrigin::any())
    } else {
        layer.allow_origin(AllowOrigin::list(
            origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()),
        ))
    }
}

/// Errors axum produces itself (405, a body over the 2 MB JSON limit, ...) come as plain text;
/// clients get `{"error": ...}` from every route, whatever failed.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.is_client_error() && !is_json {
        let message = status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase();
        let mut replaced =
            (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
        for name in [
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::header::ALLOW,
        ] {
            if let Some(v) = response.headers().get(&name) {
                replaced.headers_mut().insert(name, v.clone());
            }
        }
        return replaced;
    }
    response
}

/// Gives every request an id (the caller's `x-request-id`, or API Gateway's, or a new one),
/// puts it on the tracing span so 5xx causes can be found, and returns it in the response.
async fn request_id(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .or_else(|| request.headers().get("x-amzn-requestid"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    // user_id and video_id are recorded on it once the handler knows them (auth, owned_video)
    let span = tracing::info_span!("request", request_id = %id, method = %request.method(),
        path = %request.uri().path(), user_id = tracing::field::Empty, video_id = tracing::field::Empty);
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = id.parse() {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

#[cfg(test)]
mod tests;
