//! `/webhooks`: the endpoints a user registers, their delivery logs and resends, and the signing
//! secret of per-video `callback_url`s. Everything is its owner's only: another user's endpoint
//! or delivery is "not found". Secrets are shown in plain form only in the response that
//! creates or rotates them (and, for the callback secret, to its owner on request); the stores
//! hold them sealed (see `domain::webhooks::SecretBox`).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::request::{PageQuery, link_next, page_limit, parse_body};
use super::{ApiError, AppState, AuthUser};
use domain::is_control_char;
use domain::webhooks::{
    CALLBACK_LOG, Delivery, WebhookEndpoint, WebhookEvent, callback_signing_secret,
    new_endpoint_id, new_signing_secret,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/webhooks", get(list_endpoints).post(create_endpoint))
        .route("/webhooks/signing-secret", get(signing_secret))
        .route(
            "/webhooks/signing-secret/rotate",
            post(rotate_signing_secret),
        )
        .route(
            "/webhooks/{id}",
            get(get_endpoint)
                .patch(patch_endpoint)
                .delete(delete_endpoint),
        )
        .route("/webhooks/{id}/rotate-secret", post(rotate_endpoint_secret))
        .route("/webhooks/{id}/deliveries", get(list_deliveries))
        .route("/webhooks/{id}/deliveries/{delivery_id}", get(get_delivery))
        .route(
            "/webhooks/{id}/deliveries/{delivery_id}/resend",
            post(resend_delivery),
        )
}

const DESCRIPTION_MAX_CHARS: usize = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointBody {
    url: Option<String>,
    events: Option<Vec<String>>,
    description: Option<String>,
}

fn checked_events(events: Vec<String>) -> Result<Vec<WebhookEvent>, ApiError> {
    if events.is_empty() {
        return Err(ApiError::invalid("events", "must name at least one event"));
    }
    let mut checked = BTreeSet::new();
    for name in &events {
        let event = WebhookEvent::parse(name).ok_or_else(|| {
            ApiError::invalid(
                "events",
                format!(
                    "{name:?} is not an event; the events are {}",
                    WebhookEvent::ALL.map(|e| e.as_str()).join(", ")
                ),
            )
        })?;
        checked.insert(event);
    }
    Ok(checked.into_iter().collect())
}

fn checked_description(description: String) -> Result<String, ApiError> {
    let description = description.trim().to_string();
    if description.chars().count() > DESCRIPTION_MAX_CHARS {
        return Err(ApiError::invalid(
            "description",
            format!("must be at most {DESCRIPTION_MAX_CHARS} characters"),
        ));
    }
    if description.chars().any(is_control_char) {
        return Err(ApiError::invalid(
            "description",
            "must not contain control characters",
        ));
    }
    Ok(description)
}

/// How long registering a URL waits for its host to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// A webhook URL as the policy allows it. Outside development a host name is also resolved now,
/// so that one that leads into a private network is refused at once with a clear 422; a name
/// that does not resolve yet is accepted (its DNS may come later). Either way every delivery
/// attempt resolves and checks it again: this check is for the user, not the guard.
async fn checked_url(state: &AppState, field: &str, url: &str) -> Result<String, ApiError> {
    let policy = state.config.webhook_policy;
    let checked = policy
        .check_url(url)
        .map_err(|message| ApiError::invalid(field, message))?;
    if !policy.allow_private && checked.host.parse::<IpAddr>().is_err() {
        let lookup = tokio::net::lookup_host((checked.host.as_str(), checked.port));
        if let Ok(Ok(addrs)) = tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
            for addr in addrs {
                if !policy.address_allowed(addr.ip()) {
                    return Err(ApiError::invalid(
                        field,
                        format!(
                            "{} resolves to {}, which is not a public address",
                            checked.host,
                            addr.ip()
                        ),
                    ));
                }
            }
        }
    }
    Ok(checked.url.to_string())
}

/// A `callback_url` given at `upload/initialize`: checked like an endpoint's URL, and the
/// owner's signing secret made now if this is its first use, so that it can be read before the
/// first delivery.
pub(crate) async fn checked_callback(
    state: &AppState,
    user_id: &str,
    url: &str,
) -> Result<String, ApiError> {
    let url = checked_url(state, "callback_url", url).await?;
    callback_secret(state, user_id).await?;
    Ok(url)
}

/// The endpoint as its owner sees it, with how its latest delivery went.
async fn endpoint_json(state: &AppState, endpoint: &WebhookEndpoint) -> Result<Value, ApiError> {
    let latest = state
        .webhooks
        .deliveries(&endpoint.user_id, &endpoint.id, 1, None)
        .await?;
    let last_delivery = latest.items.first().map(|d| {
        let last = d.attempts.last();
        json!({
            "id": d.id,
            "event": d.event,
            "video_id": d.video_id,
            "status": d.status,
            "attempts": d.attempts.len(),
            "last_attempt_at": last.map(|a| a.at),
            "last_status_code": last.and_then(|a| a.status_code),
            "last_error": last.and_then(|a| a.error.clone()),
            "next_attempt_at": d.next_attempt_at,
        })
    });
    Ok(json!({
        "id": endpoint.id,
        "url": endpoint.url,
        "events": endpoint.events,
        "description": endpoint.description,
        "created_at": endpoint.created_at,
        "updated_at": endpoint.updated_at,
        "last_delivery": last_delivery,
    }))
}

fn delivery_json(delivery: &Delivery) -> Value {
    json!({
        "id": delivery.id,
        "event": delivery.event,
        "video_id": delivery.video_id,
        "status": delivery.status,
        "created_at": delivery.created_at,
        "next_attempt_at": delivery.next_attempt_at,
        "attempts": delivery.attempts,
        "payload": serde_json::from_str::<Value>(&delivery.payload).unwrap_or(Value::Null),
    })
}

async fn owned_endpoint(
    state: &AppState,
    user_id: &str,
    id: &str,
) -> Result<WebhookEndpoint, ApiError> {
    state
        .webhooks
        .endpoint(user_id, id)
        .await?
        .ok_or(ApiError::NotFound)
}

/// The log an `{id}` names: an endpoint of the caller's, or `callback`.
async fn owned_log(state: &AppState, user_id: &str, id: &str) -> Result<String, ApiError> {
    if id == CALLBACK_LOG {
        return Ok(CALLBACK_LOG.to_string());
    }
    Ok(owned_endpoint(state, user_id, id).await?.id)
}

async fn create_endpoint(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: EndpointBody = parse_body(&body)?;
    let url = checked_url(
        &state,
        "url",
        body.url
            .as_deref()
            .ok_or_else(|| ApiError::invalid("url", "is required"))?,
    )
    .await?;
    let events = checked_events(
        body.events
            .ok_or_else(|| ApiError::invalid("events", "is required"))?,
    )?;
    let description = checked_description(body.description.unwrap_or_default())?;
    let existing = state.webhooks.endpoints_of(&user_id).await?;
    if existing.len() >= state.config.max_webhooks_per_user {
        return Err(ApiError::Conflict(format!(
            "at most {} webhook endpoints per user; delete one first",
            state.config.max_webhooks_per_user
        )));
    }
    let secret = new_signing_secret();
    let now = Utc::now();
    let endpoint = WebhookEndpoint {
        id: new_endpoint_id(),
        user_id: user_id.clone(),
        url,
        events,
        description,
        sealed_secret: state.webhook_key.seal(&secret),
        created_at: now,
        updated_at: now,
    };
    state.webhooks.create_endpoint(&endpoint).await?;
    tracing::info!(webhook_id = %endpoint.id, "webhook endpoint created");
    let mut json = endpoint_json(&state, &endpoint).await?;
    json["secret"] = json!(secret);
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

async fn list_endpoints(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
) -> Result<Json<Value>, ApiError> {
    let mut items = Vec::new();
    for endpoint in state.webhooks.endpoints_of(&user_id).await? {
        items.push(endpoint_json(&state, &endpoint).await?);
    }
    Ok(Json(Value::Array(items)))
}

async fn get_endpoint(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let endpoint = owned_endpoint(&state, &user_id, &id).await?;
    Ok(Json(endpoint_json(&state, &endpoint).await?))
}

async fn patch_endpoint(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: EndpointBody = parse_body(&body)?;
    let mut endpoint = owned_endpoint(&state, &user_id, &id).await?;
    if let Some(url) = body.url {
        endpoint.url = checked_url(&state, "url", &url).await?;
    }
    if let Some(events) = body.events {
        endpoint.events = checked_events(events)?;
    }
    if let Some(description) = body.description {
        endpoint.description = checked_description(description)?;
    }
    endpoint.updated_at = Utc::now();
    state.webhooks.update_endpoint(&endpoint).await?;
    Ok(Json(endpoint_json(&state, &endpoint).await?))
}

async fn delete_endpoint(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state.webhooks.delete_endpoint(&user_id, &id).await? {
        return Err(ApiError::NotFound);
    }
    tracing::info!(webhook_id = %id, "webhook endpoint deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate_endpoint_secret(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut endpoint = owned_endpoint(&state, &user_id, &id).await?;
    let secret = new_signing_secret();
    endpoint.sealed_secret = state.webhook_key.seal(&secret);
    endpoint.updated_at = Utc::now();
    state.webhooks.update_endpoint(&endpoint).await?;
    tracing::info!(webhook_id = %endpoint.id, "webhook signing secret rotated");
    Ok(Json(json!({"id": endpoint.id, "secret": secret})))
}

/// The caller's callback signing secret, made on first use.
async fn callback_secret(state: &AppState, user_id: &str) -> Result<String, ApiError> {
    Ok(callback_signing_secret(&*state.webhooks, &state.webhook_key, user_id).await?)
}

async fn signing_secret(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({"secret": callback_secret(&state, &user_id).await?}),
    ))
}

async fn rotate_signing_secret(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
) -> Result<Json<Value>, ApiError> {
    let secret = new_signing_secret();
    let sealed = state.webhook_key.seal(&secret);
    state
        .webhooks
        .put_signing_secret(&user_id, &sealed, true)
        .await?;
    tracing::info!("callback signing secret rotated");
    Ok(Json(json!({"secret": secret})))
}

async fn list_deliveries(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let log = owned_log(&state, &user_id, &id).await?;
    let limit = page_limit(q.limit, 50, 200)?;
    let page = state
        .webhooks
        .deliveries(&user_id, &log, limit, q.cursor.as_deref())
        .await?;
    let mut response =
        Json(page.items.iter().map(delivery_json).collect::<Vec<_>>()).into_response();
    if let Some(next) = &page.next {
        link_next(
            response.headers_mut(),
            &format!("/api/v2/webhooks/{log}/deliveries"),
            limit,
            next,
        );
    }
    Ok(response)
}

/// The delivery, if it is in the caller's log `id`.
async fn owned_delivery(
    state: &AppState,
    user_id: &str,
    id: &str,
    delivery_id: &str,
) -> Result<Delivery, ApiError> {
    let log = owned_log(state, user_id, id).await?;
    state
        .webhooks
        .delivery(delivery_id)
        .await?
        .filter(|d| d.user_id == user_id && d.log == log)
        .ok_or(ApiError::NotFound)
}

async fn get_delivery(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let delivery = owned_delivery(&state, &user_id, &id, &delivery_id).await?;
    Ok(Json(delivery_json(&delivery)))
}

/// Queues the delivery again now with a fresh schedule: same `webhook-id`, same body, so a
/// receiver that already has it can tell.
async fn resend_delivery(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let mut delivery = owned_delivery(&state, &user_id, &id, &delivery_id).await?;
    let read_at = delivery.version;
    let now = Utc::now();
    delivery.resend(now);
    if !state.webhooks.replace_delivery(&delivery, read_at).await? {
        return Err(ApiError::Conflict(
            "the delivery changed meanwhile (an attempt is running); try again".into(),
        ));
    }
    state.deliveries.enqueue(&delivery.id, now).await?;
    tracing::info!(delivery_id = %delivery.id, "webhook delivery resent");
    Ok((StatusCode::ACCEPTED, Json(delivery_json(&delivery))).into_response())
}
