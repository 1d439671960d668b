//! The OpenAPI 3.1 description of `/api/v2`, built from one route table that a test walks
//! against the real router, so the document cannot drift from the code.

use serde_json::{Value, json};

/// (method, path, summary, needs a bearer token, success status)
pub(crate) const ROUTES: &[(&str, &str, &str, bool, u16)] = &[
    ("post", "/auth/register", "Create an account", false, 201),
    (
        "post",
        "/auth/login",
        "Exchange email and password for an access token",
        false,
        200,
    ),
    ("get", "/auth/profile", "The caller's account", true, 200),
    (
        "post",
        "/videos/upload/initialize",
        "Create a video and get a presigned upload URL (callback_url: where to announce the end of its analysis)",
        true,
        200,
    ),
    (
        "post",
        "/videos/upload",
        "Alias of initialize (JSON); multipart/form-data upload on one machine",
        true,
        200,
    ),
    (
        "post",
        "/videos/upload/finalize",
        "Confirm an upload (idempotent; never starts a second analysis)",
        true,
        202,
    ),
    (
        "get",
        "/videos/",
        "The caller's videos, newest first (?limit, ?cursor; next page in Link)",
        true,
        200,
    ),
    (
        "get",
        "/videos/{id}",
        "A video with its status, summary, download URL and first frames",
        true,
        200,
    ),
    ("patch", "/videos/{id}", "Rename a video", true, 200),
    (
        "delete",
        "/videos/{id}",
        "Delete a video, its file and its results",
        true,
        204,
    ),
    (
        "get",
        "/videos/{id}/frames",
        "Frame results, page by page (?limit, ?cursor)",
        true,
        200,
    ),
    (
        "get",
        "/videos/{id}/export.csv",
        "One CSV row per face per frame",
        true,
        200,
    ),
    (
        "get",
        "/videos/{id}/people/{filename}",
        "A person's thumbnail, {n}.jpg with n counting from 1: the best crop of their face (image/jpeg)",
        true,
        200,
    ),
    (
        "get",
        "/videos/{id}/events",
        "Server-Sent Events: processing_update {video_id, status, progress} until the analysis ends (token in header or ?token=)",
        true,
        200,
    ),
    (
        "get",
        "/videos/stream/{filename}",
        "The video file for a <video> element, with Range support; no token: the random video id in the name is the capability (on AWS: a redirect to a presigned URL)",
        false,
        200,
    ),
    (
        "post",
        "/webhooks",
        "Register a webhook endpoint {url, events: [video.completed, video.failed, video.progress], description?}; the response shows its signing secret, once",
        true,
        201,
    ),
    (
        "get",
        "/webhooks",
        "The caller's webhook endpoints, each with its latest delivery",
        true,
        200,
    ),
    (
        "get",
        "/webhooks/{id}",
        "A webhook endpoint with its latest delivery",
        true,
        200,
    ),
    (
        "patch",
        "/webhooks/{id}",
        "Change an endpoint's url, events or description",
        true,
        200,
    ),
    (
        "delete",
        "/webhooks/{id}",
        "Delete an endpoint and its delivery log",
        true,
        204,
    ),
    (
        "post",
        "/webhooks/{id}/rotate-secret",
        "A new signing secret for the endpoint, shown once",
        true,
        200,
    ),
    (
        "get",
        "/webhooks/{id}/deliveries",
        "An endpoint's deliveries, newest first, with every attempt ({id} = callback: the per-video callback_url deliveries)",
        true,
        200,
    ),
    (
        "get",
        "/webhooks/{id}/deliveries/{delivery_id}",
        "One delivery with its attempts and payload",
        true,
        200,
    ),
    (
        "post",
        "/webhooks/{id}/deliveries/{delivery_id}/resend",
        "Queue a delivery again now with a fresh retry schedule (same webhook-id and body)",
        true,
        202,
    ),
    (
        "get",
        "/webhooks/signing-secret",
        "The secret that signs deliveries to per-video callback_urls (made on first use)",
        true,
        200,
    ),
    (
        "post",
        "/webhooks/signing-secret/rotate",
        "A new callback signing secret",
        true,
        200,
    ),
    ("get", "/openapi.json", "This document", false, 200),
];

pub fn openapi_document() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, summary, auth, status) in ROUTES {
        let mut responses = serde_json::Map::new();
        responses.insert(status.to_string(), json!({"description": "success"}));
        for (code, why) in [
            ("400", "malformed request"),
            ("404", "not found (or not yours)"),
            ("408", "the request body arrived too slowly (one machine)"),
            ("422", "invalid fields"),
            ("431", "too many or too large request headers"),
        ] {
            responses.insert(code.into(), json!({"description": why, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}));
        }
        if *auth {
            responses.insert("401".into(), json!({"description": "missing or invalid token, or a token of a user that does not exist", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}));
        }
        if *method == "post" && matches!(*path, "/videos/upload/initialize" | "/videos/upload") {
            responses.insert("415".into(), json!({"description": "not a video: the file extension or the declared content_type is not an accepted video type", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}));
        }
        if matches!(*path, "/auth/register" | "/auth/login") {
            responses.insert("429".into(), json!({"description": "too many attempts from this address or for this email; retry after the `Retry-After` seconds", "headers": {"Retry-After": {"schema": {"type": "integer"}}}, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}));
        }
        if *method == "post" && *path == "/webhooks" {
            responses.insert("409".into(), json!({"description": "the caller has the most endpoints allowed", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}));
        }
        if *path == "/auth/register" {
            responses.insert("409".into(), json!({"description": "an account with this email (in any spelling that normalises to it) exists", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}));
        }
        let mut operation = json!({"summary": summary, "responses": responses});
        if *auth {
            operation["security"] = json!([{"bearer": []}]);
        }
        let parameters: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !parameters.is_empty() {
            operation["parameters"] = Value::Array(parameters);
        }
        paths.entry(path.to_string()).or_insert_with(|| json!({}))[*method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "DeepEmotion API", "version": "2.0.0"},
        "servers": [{"url": "/api/v2"}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "string"},
                "fields": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}}
            }}}
        }
    })
}
