//! Router tests over in-memory fakes: every route, every error status, and the security rules.
//!
//! This module is the harness ([`Api`] and its request helpers); the tests are grouped by
//! resource in the modules below.

mod auth;
mod config;
mod contract;
mod frames;
mod limits;
mod logs;
mod people;
mod streams;
mod tokens;
mod uploads;
mod videos;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use domain::memory::{
    MemoryBlobs, MemoryDeliveryQueue, MemoryRateLimiter, MemoryStore, MemoryWebhooks,
};
use domain::ports::{ResultStore, VideoStore};
use domain::webhooks::SecretBox;
use domain::{
    AnalysisState, EmotionLabel, EmotionScores, FaceBox, FaceResult, FrameResult, Landmarks,
    StoredObject, VideoStatus,
};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::live::VideoEvents;
use crate::{ApiConfig, ApiPorts, AppState, ClientAddr, router};

/// The token secret of every test API (at least 32 characters).
const SECRET: &str = "test-secret-test-secret-test-secret!";

/// The password [`Api::user`] registers with.
const PASSWORD: &str = "password123";

/// The router over fresh fakes, and the fakes, to arrange and inspect what the routes see.
struct Api {
    app: Router,
    store: Arc<MemoryStore>,
    blobs: Arc<MemoryBlobs>,
    webhooks: Arc<MemoryWebhooks>,
    deliveries: Arc<MemoryDeliveryQueue>,
    events: VideoEvents,
}

/// The API as on AWS (no uploads through the server) with a 1 MB upload limit.
fn api() -> Api {
    api_with(ApiConfig {
        max_upload_bytes: 1_000_000,
        ..Default::default()
    })
}

/// The API as on AWS with these settings.
fn api_with(config: ApiConfig) -> Api {
    Api::build(config, |state| state)
}

/// A reply read whole: the body as JSON (`Null` when it is none), as text and as bytes.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
    text: String,
    bytes: Vec<u8>,
}

impl Reply {
    /// The header's value, or "" without it.
    fn header(&self, name: header::HeaderName) -> &str {
        header_of(&self.headers, name)
    }

    /// A string field of the JSON body.
    fn str(&self, field: &str) -> String {
        self.body[field]
            .as_str()
            .unwrap_or_else(|| panic!("no string {field:?} in {}", self.text))
            .to_string()
    }
}

impl Api {
    /// The router over fresh fakes, with the state `setup` makes of the AWS-like one.
    fn build(config: ApiConfig, setup: impl FnOnce(AppState) -> AppState) -> Api {
        let store = Arc::new(MemoryStore::default());
        let blobs = Arc::new(MemoryBlobs::default());
        let webhooks = Arc::new(MemoryWebhooks::default());
        let deliveries = Arc::new(MemoryDeliveryQueue::default());
        let ports = ApiPorts {
            users: store.clone(),
            videos: store.clone(),
            results: store.clone(),
            blobs: blobs.clone(),
            limiter: Arc::new(MemoryRateLimiter::default()),
            webhooks: webhooks.clone(),
            deliveries: deliveries.clone(),
            webhook_key: SecretBox::from_key_material(&SecretBox::generate_key()).unwrap(),
        };
        let state = setup(AppState::new(ports, SECRET, config).unwrap());
        Api {
            events: state.events.clone(),
            app: router(state),
            store,
            blobs,
            webhooks,
            deliveries,
        }
    }

    /// A request with a JSON body (or none) and, with a token, `Authorization: Bearer`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.raw(method, path, token, "application/json", bytes)
            .await
    }

    /// A request with exactly these body bytes.
    async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, content_type);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        self.send(req.body(Body::from(body)).unwrap()).await
    }

    /// Any request, through the router; the reply read whole.
    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Reply {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
            bytes: bytes.to_vec(),
        }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::GET, path, token, None).await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.call(Method::POST, path, token, Some(body)).await
    }

    async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.call(Method::PATCH, path, token, Some(body)).await
    }

    async fn delete(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::DELETE, path, token, None).await
    }

    /// `POST /auth/register` with [`PASSWORD`].
    async fn register(&self, username: &str, email: &str) -> Reply {
        self.post(
            "/api/v2/auth/register",
            None,
            json!({"username": username, "email": email, "password": PASSWORD}),
        )
        .await
    }

    /// `POST /auth/login`.
    async fn login(&self, email: &str, password: &str) -> Reply {
        self.post(
            "/api/v2/auth/login",
            None,
            json!({"email": email, "password": password}),
        )
        .await
    }

    /// `GET /auth/profile`.
    async fn profile(&self, token: Option<&str>) -> Reply {
        self.get("/api/v2/auth/profile", token).await
    }

    /// `POST /videos/upload/initialize`.
    async fn initialize(&self, token: Option<&str>, body: Value) -> Reply {
        self.post("/api/v2/videos/upload/initialize", token, body)
            .await
    }

    /// `POST /videos/upload/finalize`.
    async fn finalize(&self, token: Option<&str>, body: Value) -> Reply {
        self.post("/api/v2/videos/upload/finalize", token, body)
            .await
    }

    /// Registers `name` (as `name@example.com`) and logs in: the access token.
    async fn user(&self, name: &str) -> String {
        let email = format!("{name}@example.com");
        let r = self.register(name, &email).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        self.login(&email, PASSWORD).await.str("access_token")
    }

    /// The id of the user the token is for.
    async fn user_id(&self, token: &str) -> String {
        self.profile(Some(token)).await.str("id")
    }

    /// A new video, "Clip", not uploaded yet: its id and object key.
    async fn video(&self, token: &str) -> (String, String) {
        let r = self
            .initialize(
                Some(token),
                json!({"filename": "clip.mp4", "title": "Clip"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        (r.str("video_id"), r.str("s3_key"))
    }

    /// A video whose analysis is done: uploaded, with frames 0 (sad), 5 (sad) and 10 (happy).
    async fn finished_video(&self, token: &str) -> String {
        let (id, _) = self.video(token).await;
        self.store
            .put_frames(
                &id,
                &[
                    frame(0, EmotionLabel::Sad),
                    frame(5, EmotionLabel::Sad),
                    frame(10, EmotionLabel::Happy),
                ],
            )
            .await
            .unwrap();
        let mut done = AnalysisState::pending();
        done.status = VideoStatus::Completed;
        done.progress = 100;
        done.frames_analyzed = 3;
        self.store.set_analysis(&id, &done).await.unwrap();
        self.store
            .record_upload(&id, &uploaded_object())
            .await
            .unwrap();
        id
    }

    /// Whether the fake object store holds `key`.
    fn has_object(&self, key: &str) -> bool {
        self.blobs.objects.lock().unwrap().contains_key(key)
    }
}

/// A request with exactly this `Authorization` header value.
async fn with_authorization(api: &Api, method: Method, path: &str, value: &str) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, value)
        .body(Body::empty())
        .unwrap();
    api.send(request).await
}

/// A login or registration as it arrives from `addr` (the servers put the address there).
async fn from_addr(api: &Api, path: &str, addr: &str, body: Value) -> Reply {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    request
        .extensions_mut()
        .insert(ClientAddr(addr.parse().unwrap()));
    api.send(request).await
}

/// What the worker records at the upload event.
fn uploaded_object() -> StoredObject {
    StoredObject {
        size: 1000,
        etag: Some("etag".into()),
        version_id: Some("v1".into()),
    }
}

/// Frame `n` (at 25 fps) with one face, track 1: `label` at 0.8, neutral at 0.2.
fn frame(n: u64, label: EmotionLabel) -> FrameResult {
    let mut emotions = EmotionScores::new(false);
    emotions.set(label, 0.8);
    emotions.set(EmotionLabel::Neutral, 0.2);
    FrameResult {
        frame: n,
        t_ms: n * 40,
        faces: vec![FaceResult {
            track: 1,
            bbox: FaceBox {
                x: 1.0,
                y: 2.0,
                w: 30.0,
                h: 40.0,
            },
            score: 0.9,
            landmarks: Landmarks::default(),
            dominant: label,
            emotions,
            person: None,
            smoothed: None,
            smoothed_dominant: None,
        }],
    }
}

fn assert_error(r: &Reply, status: StatusCode) {
    assert_eq!(r.status, status, "{}", r.text);
    assert!(r.body["error"].is_string(), "JSON error body: {}", r.text);
}

fn header_of(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

/// The `id`s of a JSON array of videos.
fn ids(body: &Value) -> Vec<&str> {
    body.as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect()
}
