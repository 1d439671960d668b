//! The router as the API Lambda serves it under `lambda_http::run`.

use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;

use crate::{AppState, ClientAddr};

/// The longest a `/videos/{id}/events` stream stays open on Lambda: the response is buffered and
/// API Gateway gives up at 30 s; an `EventSource` reconnects by itself (long polling).
pub const EVENTS_MAX_DURATION: Duration = Duration::from_secs(20);

/// The shared router, told each caller's address as API Gateway saw it
/// (`requestContext.http.sourceIp`), for the per-address rate limits.
pub fn router(mut state: AppState) -> Router {
    state.config.events_max_duration = Some(EVENTS_MAX_DURATION);
    crate::router(state).layer(axum::middleware::map_request(
        |mut request: Request| async move {
            let source_ip = match request.request_context_ref() {
                Some(RequestContext::ApiGatewayV2(context)) => context.http.source_ip.clone(),
                _ => None,
            };
            if let Some(ip) = source_ip.and_then(|ip| ip.parse().ok()) {
                request.extensions_mut().insert(ClientAddr(ip));
            }
            request
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use domain::memory::{
        MemoryBlobs, MemoryDeliveryQueue, MemoryRateLimiter, MemoryStore, MemoryWebhooks,
    };
    use domain::webhooks::SecretBox;
    use tower::ServiceExt;

    use super::*;
    use crate::{ApiConfig, ApiPorts, RateLimit, RateLimits};

    /// The source address API Gateway reports is the one the per-address limit counts.
    #[tokio::test]
    async fn the_api_router_limits_by_api_gateways_source_ip() {
        let store = Arc::new(MemoryStore::default());
        let ports = ApiPorts {
            users: store.clone(),
            videos: store.clone(),
            results: store,
            blobs: Arc::new(MemoryBlobs::default()),
            limiter: Arc::new(MemoryRateLimiter::default()),
            webhooks: Arc::new(MemoryWebhooks::default()),
            deliveries: Arc::new(MemoryDeliveryQueue::default()),
            webhook_key: SecretBox::from_key_material(&SecretBox::generate_key()).unwrap(),
        };
        let config = ApiConfig {
            rate_limits: RateLimits {
                logins_per_address: RateLimit::new(1, 60),
                ..RateLimits::default()
            },
            ..ApiConfig::default()
        };
        let state = AppState::new(ports, "a-test-secret-of-at-least-32-bytes!!", config).unwrap();
        let app = router(state);
        let fixture = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events/apigw-login.json"),
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
