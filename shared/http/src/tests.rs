//! Router tests over in-memory fakes: every route, every error status, and the security rules.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::adapters::memory::{MemoryBlobs, MemoryQueue, MemoryStore};
use crate::live::VideoEvents;
use crate::ports::{ResultStore, VideoStore};
use crate::{
    AnalysisState, EmotionLabel, EmotionScores, FaceBox, FaceResult, FrameResult, Landmarks,
    VideoStatus,
};

const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";

struct Api {
    app: Router,
    store: Arc<MemoryStore>,
    blobs: Arc<MemoryBlobs>,
    queue: Arc<MemoryQueue>,
    events: VideoEvents,
}

fn api() -> Api {
    api_with(ApiConfig {
        max_upload_bytes: 1_000_000,
        ..Default::default()
    })
}

fn api_with(config: ApiConfig) -> Api {
    let store = Arc::new(MemoryStore::default());
    let blobs = Arc::new(MemoryBlobs::default());
    let queue = Arc::new(MemoryQueue::default());
    let state = AppState {
        users: store.clone(),
        videos: store.clone(),
        results: store.clone(),
        blobs: blobs.clone(),
        jobs: queue.clone(),
        limiter: Arc::new(crate::adapters::memory::MemoryRateLimiter::default()),
        tokens: TokenKeys::new(SECRET, 3600),
        config,
        local_files: None,
        events: VideoEvents::default(),
    };
    Api {
        events: state.events.clone(),
        app: router(state),
        store,
        blobs,
        queue,
    }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
    text: String,
    bytes: Vec<u8>,
}

impl Api {
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

    async fn user(&self, name: &str) -> String {
        let r = self
            .call(Method::POST, "/api/v2/auth/register", None, Some(json!({"username": name, "email": format!("{name}@example.com"), "password": "password123"})))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let r = self
            .call(
                Method::POST,
                "/api/v2/auth/login",
                None,
                Some(json!({"email": format!("{name}@example.com"), "password": "password123"})),
            )
            .await;
        r.body["access_token"].as_str().unwrap().to_string()
    }

    async fn video(&self, token: &str) -> (String, String) {
        let r = self
            .call(
                Method::POST,
                "/api/v2/videos/upload/initialize",
                Some(token),
                Some(json!({"filename": "clip.mp4", "title": "Clip"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        (
            r.body["video_id"].as_str().unwrap().to_string(),
            r.body["s3_key"].as_str().unwrap().to_string(),
        )
    }
}

/// What the worker records at the upload event.
fn uploaded_object() -> crate::StoredObject {
    crate::StoredObject {
        size: 1000,
        etag: Some("etag".into()),
        version_id: Some("v1".into()),
    }
}

fn assert_error(r: &Reply, status: StatusCode) {
    assert_eq!(r.status, status, "{}", r.text);
    assert!(r.body["error"].is_string(), "JSON error body: {}", r.text);
}

#[tokio::test]
async fn register_login_profile() {
    let api = api();
    let r = api
        .call(
            Method::POST,
            "/api/v2/auth/register",
            None,
            Some(json!({"username": "ann", "email": "Ann@Example.com", "password": "password123"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["email"], "ann@example.com");
    for key in ["id", "username", "created_at", "updated_at"] {
        assert!(r.body.get(key).is_some(), "{key}");
    }
    assert!(
        !r.text.contains("argon2") && r.body.get("password_hash").is_none(),
        "never the hash"
    );

    let dup = api
        .call(
            Method::POST,
            "/api/v2/auth/register",
            None,
            Some(
                json!({"username": "ann2", "email": "ANN@example.COM", "password": "password123"}),
            ),
        )
        .await;
    assert_error(&dup, StatusCode::CONFLICT);

    let bad = api
        .call(
            Method::POST,
            "/api/v2/auth/register",
            None,
            Some(json!({"username": "a", "email": "nope", "password": "short"})),
        )
        .await;
    assert_error(&bad, StatusCode::UNPROCESSABLE_ENTITY);
    for field in ["username", "email", "password"] {
        assert!(
            bad.body["fields"][field].is_array(),
            "{field}: {}",
            bad.text
        );
    }

    let login = api
        .call(
            Method::POST,
            "/api/v2/auth/login",
            None,
            Some(json!({"email": "ann@example.com", "password": "password123"})),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK);
    assert_eq!(login.body["token_type"], "Bearer");
    assert_eq!(login.body["expires_in"], 3600);
    let token = login.body["access_token"].as_str().unwrap();

    let wrong_password = api
        .call(
            Method::POST,
            "/api/v2/auth/login",
            None,
            Some(json!({"email": "ann@example.com", "password": "password124"})),
        )
        .await;
    let unknown_email = api
        .call(
            Method::POST,
            "/api/v2/auth/login",
            None,
            Some(json!({"email": "bob@example.com", "password": "password123"})),
        )
        .await;
    assert_error(&wrong_password, StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong_password.body, unknown_email.body,
        "same answer whether the email exists or not"
    );

    let me = api
        .call(Method::GET, "/api/v2/auth/profile", Some(token), None)
        .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["username"], "ann");
    let anonymous = api
        .call(Method::GET, "/api/v2/auth/profile", None, None)
        .await;
    assert_error(&anonymous, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers[header::WWW_AUTHENTICATE], "Bearer");
}

#[tokio::test]
async fn malformed_and_oversized_junk_json_is_400() {
    let api = api();
    let r = api
        .raw(
            Method::POST,
            "/api/v2/auth/register",
            None,
            "application/json",
            b"{\"username\": ".to_vec(),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST);
    let junk: Vec<u8> = (0..1_000_000u32)
        .map(|i| b"{[\"x:,}"[(i % 7) as usize])
        .collect();
    let r = api
        .raw(
            Method::POST,
            "/api/v2/auth/login",
            None,
            "application/json",
            junk,
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST);
    let r = api
        .call(
            Method::POST,
            "/api/v2/auth/login",
            None,
            Some(json!([1, 2, 3])),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn initialize_validates_type_and_size_and_creates_a_pending_video() {
    let api = api();
    let token = api.user("ann").await;
    let r = api
        .call(
            Method::POST,
            "/api/v2/videos/upload/initialize",
            Some(&token),
            Some(json!({"filename": "Party.MOV", "size_bytes": 1000})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["method"], "PUT");
    assert_eq!(r.body["headers"]["Content-Type"], "video/quicktime");
    let key = r.body["s3_key"].as_str().unwrap();
    let me = api
        .call(Method::GET, "/api/v2/auth/profile", Some(&token), None)
        .await;
    assert!(
        key.starts_with(&format!("uploads/{}/", me.body["id"].as_str().unwrap()))
            && key.ends_with(".mov"),
        "{key}"
    );
    let expires: chrono::DateTime<chrono::Utc> =
        r.body["expires_at"].as_str().unwrap().parse().unwrap();
    let ttl = expires - chrono::Utc::now();
    assert!(ttl > chrono::Duration::minutes(14) && ttl <= chrono::Duration::minutes(15));
    let video = api
        .store
        .video(r.body["video_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (video.analysis.status, video.title.as_str()),
        (VideoStatus::Pending, "Party")
    );

    // the alias with a JSON body
    let alias = api
        .call(
            Method::POST,
            "/api/v2/videos/upload",
            Some(&token),
            Some(json!({"filename": "b.webm"})),
        )
        .await;
    assert_eq!(alias.status, StatusCode::OK, "{}", alias.text);

    let r = api
        .call(
            Method::POST,
            "/api/v2/videos/upload/initialize",
            Some(&token),
            Some(json!({"filename": "notes.pdf"})),
        )
        .await;
    assert_error(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = api
        .call(
            Method::POST,
            "/api/v2/videos/upload/initialize",
            Some(&token),
            Some(json!({"filename": "a.mp4", "content_type": "text/html"})),
        )
        .await;
    assert_error(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = api
        .call(
            Method::POST,
            "/api/v2/videos/upload/initialize",
            Some(&token),
            Some(json!({"filename": "big.mp4", "size_bytes": 1_000_001})),
        )
        .await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE);
    let r = api
        .call(
            Method::POST,
            "/api/v2/videos/upload/initialize",
            Some(&token),
            Some(json!({"filename": ""})),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
    let r = api
        .call(
            Method::POST,
            "/api/v2/videos/upload/initialize",
            Some(&token),
            Some(json!({"filename": "a.mp4", "sample_fps": -1})),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
    let r = api
        .call(
            Method::POST,
            "/api/v2/videos/upload/initialize",
            None,
            Some(json!({"filename": "a.mp4"})),
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_path_in_the_filename_cannot_steer_the_key() {
    let api = api();
    let token = api.user("ann").await;
    let r = api
        .call(
            Method::POST,
            "/api/v2/videos/upload/initialize",
            Some(&token),
            Some(json!({"filename": "../../etc/passwd.mp4"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let key = r.body["s3_key"].as_str().unwrap();
    assert!(!key.contains("..") && !key.contains("etc"), "{key}");
    assert!(crate::parse_object_key(key).is_some());
}

#[tokio::test]
async fn finalize_is_idempotent_own_key_only_and_never_queues() {
    let api = api();
    let ann = api.user("ann").await;
    let bob = api.user("bob").await;
    let (id, key) = api.video(&ann).await;
    for _ in 0..2 {
        let r = api
            .call(
                Method::POST,
                "/api/v2/videos/upload/finalize",
                Some(&ann),
                Some(json!({"s3_key": key, "title": "Renamed"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        assert_eq!(
            (
                r.body["id"].as_str().unwrap(),
                r.body["title"].as_str().unwrap()
            ),
            (id.as_str(), "Renamed")
        );
    }
    assert!(
        api.queue.jobs.lock().unwrap().is_empty(),
        "the object-created event starts the analysis, not finalize"
    );
    let r = api
        .call(
            Method::POST,
            "/api/v2/videos/upload/finalize",
            Some(&bob),
            Some(json!({"s3_key": key})),
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND);
    let r = api
        .call(
            Method::POST,
            "/api/v2/videos/upload/finalize",
            Some(&ann),
            Some(json!({"s3_key": "uploads/x/../../y.mp4"})),
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND);
}

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

#[tokio::test]
async fn videos_list_get_frames_csv_patch_delete() {
    let api = api();
    let token = api.user("ann").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(api.video(&token).await.0);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // newest first, two per page, next cursor in the Link header
    let page1 = api
        .call(Method::GET, "/api/v2/videos/?limit=2", Some(&token), None)
        .await;
    assert_eq!(page1.status, StatusCode::OK);
    let got: Vec<&str> = page1
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![ids[2].as_str(), ids[1].as_str()]);
    let link = page1.headers[header::LINK].to_str().unwrap().to_string();
    assert!(link.ends_with("rel=\"next\""), "{link}");
    let next = &link[1..link.find('>').unwrap()];
    let page2 = api.call(Method::GET, next, Some(&token), None).await;
    assert_eq!(page2.body.as_array().unwrap().len(), 1);
    assert!(page2.headers.get(header::LINK).is_none());
    assert_error(
        &api.call(Method::GET, "/api/v2/videos/?limit=0", Some(&token), None)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    let without_slash = api
        .call(Method::GET, "/api/v2/videos", Some(&token), None)
        .await;
    assert_eq!(without_slash.body.as_array().unwrap().len(), 3);

    // a finished analysis with 3 frames
    let id = &ids[0];
    api.store
        .put_frames(
            id,
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
    api.store.set_analysis(id, &done).await.unwrap();
    api.store
        .record_upload(id, &uploaded_object())
        .await
        .unwrap();

    let r = api
        .call(
            Method::GET,
            &format!("/api/v2/videos/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    for key in [
        "id",
        "user_id",
        "title",
        "s3_key",
        "status",
        "progress",
        "error",
        "frame_count",
        "duration_seconds",
        "sample_fps",
        "uploaded_at",
        "processed_at",
        "summary",
        "video_url",
        "frames",
    ] {
        assert!(r.body.get(key).is_some(), "missing {key}");
    }
    assert_eq!(r.body["status"], "COMPLETED");
    assert!(
        r.body["video_url"]
            .as_str()
            .unwrap()
            .contains(r.body["s3_key"].as_str().unwrap())
    );
    let f = &r.body["frames"][1];
    assert_eq!(
        (
            f["frame_number"].as_u64(),
            f["video_timestamp_sec"].as_f64()
        ),
        (Some(5), Some(0.2))
    );
    // the original client's contract: these seven labels in this order, always, and the main
    // face's probabilities in the same order (0 for a label the model lacks)
    assert_eq!(
        f["emotions"],
        json!([
            "angry",
            "disgust",
            "fear",
            "happy",
            "neutral",
            "sad",
            "surprised"
        ])
    );
    assert_eq!(f["confidences"], json!([0.0, 0.0, 0.0, 0.0, 0.2, 0.8, 0.0]));
    assert_eq!(f["id"], f["frame_number"]);
    assert_eq!(f["faces"][0]["track"], 1);

    let p = api
        .call(
            Method::GET,
            &format!("/api/v2/videos/{id}/frames?limit=2"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(p.body.as_array().unwrap().len(), 2);
    let link = p.headers[header::LINK].to_str().unwrap().to_string();
    assert!(link.contains("cursor=5"), "{link}");
    let p2 = api
        .call(
            Method::GET,
            &format!("/api/v2/videos/{id}/frames?limit=2&cursor=5"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(p2.body[0]["frame_number"], 10);
    assert_error(
        &api.call(
            Method::GET,
            &format!("/api/v2/videos/{id}/frames?cursor=abc"),
            Some(&token),
            None,
        )
        .await,
        StatusCode::BAD_REQUEST,
    );

    let csv = api
        .call(
            Method::GET,
            &format!("/api/v2/videos/{id}/export.csv"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let lines: Vec<&str> = csv.text.lines().collect();
    assert_eq!(lines.len(), 4, "header + one row per face per frame");
    assert!(lines[2].starts_with("5,200,1,"));

    let r = api
        .call(
            Method::PATCH,
            &format!("/api/v2/videos/{id}"),
            Some(&token),
            Some(json!({"title": "Birthday"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["title"].as_str()),
        (StatusCode::OK, Some("Birthday"))
    );
    assert_error(
        &api.call(
            Method::PATCH,
            &format!("/api/v2/videos/{id}"),
            Some(&token),
            Some(json!({"title": ""})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );

    let key = r.body["s3_key"].as_str().unwrap().to_string();
    api.blobs
        .objects
        .lock()
        .unwrap()
        .insert(key.clone(), vec![1, 2, 3]);
    let r = api
        .call(
            Method::DELETE,
            &format!("/api/v2/videos/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(api.store.video(id).await.unwrap().is_none());
    assert!(api.store.frames(id, None, 10).await.unwrap().0.is_empty());
    assert!(!api.blobs.objects.lock().unwrap().contains_key(&key));
    assert_error(
        &api.call(
            Method::GET,
            &format!("/api/v2/videos/{id}"),
            Some(&token),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
    );
}

#[tokio::test]
async fn someone_elses_video_is_not_found_for_every_verb() {
    let api = api();
    let ann = api.user("ann").await;
    let bob = api.user("bob").await;
    let (id, _) = api.video(&ann).await;
    for (method, path, body) in [
        (Method::GET, format!("/api/v2/videos/{id}"), None),
        (
            Method::PATCH,
            format!("/api/v2/videos/{id}"),
            Some(json!({"title": "mine now"})),
        ),
        (Method::DELETE, format!("/api/v2/videos/{id}"), None),
        (Method::GET, format!("/api/v2/videos/{id}/frames"), None),
        (Method::GET, format!("/api/v2/videos/{id}/export.csv"), None),
    ] {
        let r = api.call(method.clone(), &path, Some(&bob), body).await;
        assert_error(&r, StatusCode::NOT_FOUND);
        assert_eq!(
            r.body,
            api.call(Method::GET, "/api/v2/videos/no-such-id", Some(&bob), None)
                .await
                .body,
            "{method} {path}"
        );
    }
    assert!(api.store.video(&id).await.unwrap().is_some(), "still there");
    assert_eq!(
        api.call(Method::GET, "/api/v2/videos/", Some(&bob), None)
            .await
            .body,
        json!([])
    );
}

fn forge(header: Value, claims: Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

#[tokio::test]
async fn forged_expired_and_tampered_tokens_are_401() {
    let api = api();
    let token = api.user("ann").await;
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let now = chrono::Utc::now().timestamp();

    let alg_none = forge(json!({"alg": "none", "typ": "JWT"}), claims.clone(), "");
    let other_key = TokenKeys::new(b"another-secret-another-secret-another", 3600)
        .issue(claims["sub"].as_str().unwrap())
        .unwrap();
    let expired = {
        let mut c = claims.clone();
        c["exp"] = json!(now - 60);
        c["iat"] = json!(now - 3660);
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &c,
            &jsonwebtoken::EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    };
    let tampered = {
        let mut c = claims.clone();
        c["sub"] = json!("someone-else");
        let parts: Vec<&str> = token.split('.').collect();
        format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(c.to_string()),
            parts[2]
        )
    };
    let wrong_audience = {
        let mut c = claims.clone();
        c["aud"] = json!("another-service");
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &c,
            &jsonwebtoken::EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    };
    for (what, bad) in [
        ("alg none", alg_none),
        ("other key", other_key),
        ("expired", expired),
        ("tampered", tampered),
        ("audience", wrong_audience),
        ("garbage", "abc".into()),
    ] {
        let r = api
            .call(Method::GET, "/api/v2/auth/profile", Some(&bad), None)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.text);
        assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
    }
    assert_eq!(
        api.call(Method::GET, "/api/v2/auth/profile", Some(&token), None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn errors_are_json_everywhere() {
    let api = api();
    let r = api
        .call(Method::PUT, "/api/v2/auth/login", None, None)
        .await;
    assert_error(&r, StatusCode::METHOD_NOT_ALLOWED);
    let r = api
        .raw(
            Method::POST,
            "/api/v2/auth/login",
            None,
            "application/json",
            vec![b' '; 3_000_000],
        )
        .await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE);
    let r = api
        .call(Method::GET, "/api/v2/nothing-here", None, None)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND);
    let r = api
        .call(Method::GET, "/api/v2/videos/stream/x.mp4", None, None)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND);
}

async fn preflight(api: &Api, origin: &str) -> axum::http::Response<Body> {
    let request = Request::builder()
        .method(Method::OPTIONS)
        .uri("/api/v2/videos/")
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "PATCH")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization,content-type",
        )
        .body(Body::empty())
        .unwrap();
    api.app.clone().oneshot(request).await.unwrap()
}

fn header_of(headers: &axum::http::HeaderMap, name: header::HeaderName) -> &str {
    headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

#[tokio::test]
async fn cors_answers_preflights_and_errors_for_allowed_origins_only() {
    // default: any origin
    let api = api();
    let r = preflight(&api, "http://localhost:3000").await;
    assert!(r.status().is_success(), "{}", r.status());
    let h = r.headers();
    assert_eq!(header_of(h, header::ACCESS_CONTROL_ALLOW_ORIGIN), "*");
    let methods = header_of(h, header::ACCESS_CONTROL_ALLOW_METHODS);
    for m in ["GET", "POST", "PATCH", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }
    let headers = header_of(h, header::ACCESS_CONTROL_ALLOW_HEADERS).to_lowercase();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );
    // errors carry CORS too, or the browser hides the JSON error from the client
    let request = Request::builder()
        .uri("/api/v2/videos/")
        .header(header::ORIGIN, "http://localhost:3000")
        .body(Body::empty())
        .unwrap();
    let r = api.app.clone().oneshot(request).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header_of(r.headers(), header::ACCESS_CONTROL_ALLOW_ORIGIN),
        "*"
    );

    // configured origins: the listed one is echoed, another gets no CORS headers
    let api = api_with(ApiConfig {
        cors_origins: ApiConfig::parse_cors_origins("https://app.example.com, https://b.example")
            .unwrap(),
        ..Default::default()
    });
    let r = preflight(&api, "https://app.example.com").await;
    assert_eq!(
        header_of(r.headers(), header::ACCESS_CONTROL_ALLOW_ORIGIN),
        "https://app.example.com"
    );
    let r = preflight(&api, "https://evil.example").await;
    assert!(
        r.headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
    assert!(ApiConfig::parse_cors_origins("app.example.com").is_err());
    assert_eq!(
        ApiConfig::parse_cors_origins(" * ").unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn the_stream_url_is_a_capability_that_dies_with_the_video() {
    let api = api();
    let token = api.user("ann").await;
    let (id, key) = api.video(&token).await;
    let name = key.rsplit('/').next().unwrap().to_string();
    let stream = format!("/api/v2/videos/stream/{name}");
    // nothing uploaded yet: nothing to play
    assert_error(
        &api.call(Method::GET, &stream, None, None).await,
        StatusCode::NOT_FOUND,
    );
    api.store
        .record_upload(&id, &uploaded_object())
        .await
        .unwrap();
    // no token needed (a <video> element cannot send one); on AWS it redirects to presigned S3
    let r = api
        .call(
            Method::GET,
            &format!("/api/v2/videos/stream/{name}"),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT, "{}", r.text);
    assert_eq!(
        header_of(&r.headers, header::LOCATION),
        format!("https://blobs.example/{key}")
    );
    // only the exact object name works: another extension, another id, or a path do not
    for bad in [
        format!("{id}.mov"),
        format!("{}.mp4", uuid::Uuid::new_v4()),
        "..%2F..%2Fetc%2Fpasswd".to_string(),
        format!("..%2F{name}"),
    ] {
        let r = api
            .call(
                Method::GET,
                &format!("/api/v2/videos/stream/{bad}"),
                None,
                None,
            )
            .await;
        assert_error(&r, StatusCode::NOT_FOUND);
    }
    let r = api
        .call(
            Method::DELETE,
            &format!("/api/v2/videos/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = api
        .call(
            Method::GET,
            &format!("/api/v2/videos/stream/{name}"),
            None,
            None,
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND);
}

/// `(event name, data)` pairs of an SSE body.
fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = Some(v.trim().to_string());
                }
                if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str(v.trim()).ok();
                }
            }
            Some((name?, data?))
        })
        .collect()
}

#[tokio::test]
async fn server_sent_events_follow_the_analysis_and_end_with_it() {
    let api = api();
    let token = api.user("ann").await;
    let other = api.user("bob").await;
    let (id, _) = api.video(&token).await;
    let mut state = AnalysisState::pending();
    state.status = VideoStatus::Processing;
    state.progress = 10;
    api.store.set_analysis(&id, &state).await.unwrap();

    // someone else's video, or no token: refused before any stream starts
    let r = api
        .call(
            Method::GET,
            &format!("/api/v2/videos/{id}/events"),
            Some(&other),
            None,
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND);
    let r = api
        .call(
            Method::GET,
            &format!("/api/v2/videos/{id}/events"),
            None,
            None,
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED);

    // the analysis moves on while the client listens; each announced change is one event
    let (store, events, video_id) = (api.store.clone(), api.events.clone(), id.clone());
    let writer = tokio::spawn(async move {
        for (status, progress) in [(VideoStatus::Processing, 55), (VideoStatus::Completed, 100)] {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let mut state = AnalysisState::pending();
            state.status = status;
            state.progress = progress;
            store.set_analysis(&video_id, &state).await.unwrap();
            events.changed(&video_id);
        }
    });
    let r = api
        .call(
            Method::GET,
            &format!("/api/v2/videos/{id}/events?token={token}"),
            None,
            None,
        )
        .await;
    writer.await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(header_of(&r.headers, header::CONTENT_TYPE).starts_with("text/event-stream"));
    let events = sse_events(&r.text);
    let seen: Vec<(String, String, u64)> = events
        .iter()
        .map(|(name, d)| {
            assert_eq!(d["video_id"], id.as_str());
            (
                name.clone(),
                d["status"].as_str().unwrap().to_string(),
                d["progress"].as_u64().unwrap(),
            )
        })
        .collect();
    let update = |s: &str, p| ("processing_update".to_string(), s.to_string(), p);
    assert_eq!(
        seen,
        [
            update("PROCESSING", 10),
            update("PROCESSING", 55),
            update("COMPLETED", 100)
        ]
    );
    // (polling alone, every 2 s, would have skipped the 55 % state: announcements drove this)
}

#[tokio::test]
async fn an_events_stream_with_a_time_limit_closes_early_for_the_client_to_reconnect() {
    // the API Lambda's setting: a buffered response must end before API Gateway's timeout
    let api = api_with(ApiConfig {
        events_max_duration: Some(std::time::Duration::from_millis(200)),
        ..Default::default()
    });
    let token = api.user("ann").await;
    let (id, _) = api.video(&token).await;
    let r = api
        .call(
            Method::GET,
            &format!("/api/v2/videos/{id}/events"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let events = sse_events(&r.text);
    assert_eq!(events.len(), 1, "{}", r.text);
    assert_eq!(events[0].1["status"], "PENDING");
    assert!(r.text.contains("retry: 1000"), "{}", r.text);
}

#[tokio::test]
async fn every_route_in_the_openapi_document_exists() {
    let api = api();
    let doc = api
        .call(Method::GET, "/api/v2/openapi.json", None, None)
        .await;
    assert_eq!(doc.body["openapi"], "3.1.0");
    let paths = doc.body["paths"].as_object().unwrap();
    assert_eq!(
        paths
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum::<usize>(),
        openapi::ROUTES.len()
    );
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            let concrete = path
                .replace("{id}", "some-id")
                .replace("{filename}", "some-id.mp4");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = api
                .call(
                    method.clone(),
                    &format!("/api/v2{concrete}"),
                    None,
                    Some(json!({})),
                )
                .await;
            // an unknown route is the fallback's 404 or a 405; a protected one answers 401 first
            assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            if op.get("security").is_some() {
                assert_eq!(
                    r.status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} must need a token"
                );
            } else if !path.contains("{filename}") {
                // (a stream name that is no video's is a 404 by design: covered on its own)
                assert_ne!(r.status, StatusCode::NOT_FOUND, "{method} {path}");
            }
        }
    }
}

fn event_fixture(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../events")
            .join(name),
    )
    .unwrap()
}

/// The events/ fixtures (API Gateway HTTP API, payload v2) drive the same router Lambda runs.
#[tokio::test]
async fn api_gateway_events_drive_the_router() {
    let api = api();
    let send = |json: String| {
        let app = api.app.clone();
        async move {
            let request =
                lambda_http::request::from_str(&json).expect("a valid API Gateway v2 event");
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            (
                status,
                serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
            )
        }
    };
    let (status, _) = send(event_fixture("apigw-register.json")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, login) = send(event_fixture("apigw-login.json")).await;
    assert_eq!(status, StatusCode::OK);
    let token = login["access_token"].as_str().unwrap();
    let (status, init) = send(
        event_fixture("apigw-initialize-upload.json").replace("REPLACE_WITH_ACCESS_TOKEN", token),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{init}");
    let (status, list) =
        send(event_fixture("apigw-list-videos.json").replace("REPLACE_WITH_ACCESS_TOKEN", token))
            .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list[0]["id"], init["video_id"]);
    let (status, doc) = send(event_fixture("apigw-openapi.json")).await;
    assert_eq!(
        (status, doc["openapi"].as_str()),
        (StatusCode::OK, Some("3.1.0"))
    );
}

// ---- hardening: accounts, titles, upload types, tokens (issue 11, items 6 and 7) ----

async fn register_as(api: &Api, username: &str, email: &str) -> Reply {
    api.call(
        Method::POST,
        "/api/v2/auth/register",
        None,
        Some(json!({"username": username, "email": email, "password": "password123"})),
    )
    .await
}

async fn login_as(api: &Api, email: &str, password: &str) -> Reply {
    api.call(
        Method::POST,
        "/api/v2/auth/login",
        None,
        Some(json!({"email": email, "password": password})),
    )
    .await
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

#[tokio::test]
async fn every_spelling_of_a_registered_email_is_a_conflict_or_refused() {
    let api = api();
    assert_eq!(
        register_as(&api, "ann", "ann@example.com").await.status,
        StatusCode::CREATED
    );
    // spellings that normalise to the registered address: 409
    for variant in [
        "ANN@EXAMPLE.COM",
        "  Ann@Example.com  ",
        "ａｎｎ@ｅｘａｍｐｌｅ.ｃｏｍ",
        "ａｎｎ＠ｅｘａｍｐｌｅ．ｃｏｍ",
    ] {
        let r = register_as(&api, "ann2", variant).await;
        assert_error(&r, StatusCode::CONFLICT);
    }
    // NFC then NFD of the same address: one account
    let nfc = register_as(&api, "jose", "jos\u{e9}@example.com").await;
    assert_eq!(nfc.status, StatusCode::CREATED, "{}", nfc.text);
    assert_eq!(nfc.body["email"], "jos\u{e9}@example.com");
    let nfd = register_as(&api, "jose2", "jose\u{301}@example.com").await;
    assert_error(&nfd, StatusCode::CONFLICT);
    let upper_nfd = register_as(&api, "jose3", "JOSE\u{301}@EXAMPLE.COM").await;
    assert_error(&upper_nfd, StatusCode::CONFLICT);
    // invisible characters, NUL and quoted local parts: refused, never a second account
    for refused in [
        "ann\u{200b}@example.com",
        "ann@example.com\u{0}",
        "\"ann\"@example.com",
        "\"ann@example.com\"@example.com",
        "ann\u{feff}@example.com",
        "ann\u{2060}@example.com",
        "ann\u{202e}@example.com",
        "ann@exa\r\nmple.com",
    ] {
        let r = register_as(&api, "ann3", refused).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            r.body["fields"]["email"].is_array(),
            "{refused:?}: {}",
            r.text
        );
    }
    let ann = login_as(&api, "ann@example.com", "password123").await;
    assert_eq!(
        ann.status,
        StatusCode::OK,
        "the first account still logs in"
    );
}

#[tokio::test]
async fn login_normalises_the_email_like_registration() {
    let api = api();
    let r = register_as(&api, "ann", "Ann@Example.com").await;
    let id = r.body["id"].as_str().unwrap().to_string();
    for spelling in [
        "ann@example.com",
        "ANN@EXAMPLE.COM",
        " ann@example.com ",
        "ａｎｎ@ｅｘａｍｐｌｅ.ｃｏｍ",
        "ＡＮＮ＠ＥＸＡＭＰＬＥ．ＣＯＭ",
    ] {
        let login = login_as(&api, spelling, "password123").await;
        assert_eq!(login.status, StatusCode::OK, "{spelling:?}: {}", login.text);
        let me = api
            .call(
                Method::GET,
                "/api/v2/auth/profile",
                login.body["access_token"].as_str(),
                None,
            )
            .await;
        assert_eq!(me.body["id"], id.as_str(), "{spelling:?}");
    }
    for other in ["ann\u{200b}@example.com", "ann@example.com\u{0}"] {
        assert_error(
            &login_as(&api, other, "password123").await,
            StatusCode::UNAUTHORIZED,
        );
    }
}

#[tokio::test]
async fn usernames_are_nfc_trimmed_and_free_of_invisible_characters() {
    let api = api();
    let r = register_as(&api, "  Jose\u{301}  ", "jose@example.com").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["username"], "Jos\u{e9}");
    // markup is just text to the API: stored and returned as given (the page renders it as text)
    let markup = "<img src=x onerror=alert(1)>";
    let r = register_as(&api, markup, "markup@example.com").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["username"], markup);
    for refused in [
        "ann\u{200b}",
        "an\u{200d}n",
        "ann\u{0}",
        "ann\u{202e}x",
        "a\nbc",
        "\u{3164}\u{3164}\u{3164}",
        "ab",
        "   ab   ",
    ] {
        let r = register_as(&api, refused, "other@example.com").await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            r.body["fields"]["username"].is_array(),
            "{refused:?}: {}",
            r.text
        );
    }
    let r = register_as(&api, &"x".repeat(51), "other@example.com").await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
    let r = register_as(&api, &"\u{e9}".repeat(50), "other@example.com").await;
    assert_eq!(r.status, StatusCode::CREATED, "50 characters, 100 bytes");
}

#[tokio::test]
async fn one_title_rule_on_initialize_finalize_and_patch() {
    let api = api();
    let token = api.user("ann").await;
    let (id, key) = api.video(&token).await;
    let long = "t".repeat(201);
    let longest = "t".repeat(200);
    // NFD: 400 scalar values that are 200 characters in NFC
    let decomposed = "e\u{301}".repeat(200);
    for bad in [
        long.as_str(),
        "a\u{0}b",
        "two\nlines",
        "evil\u{202e}4pm",
        "\u{7}",
    ] {
        let r = api
            .call(
                Method::POST,
                "/api/v2/videos/upload/initialize",
                Some(&token),
                Some(json!({"filename": "clip.mp4", "title": bad})),
            )
            .await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.body["fields"]["title"].is_array(), "{bad:?}: {}", r.text);
        let r = api
            .call(
                Method::POST,
                "/api/v2/videos/upload/finalize",
                Some(&token),
                Some(json!({"s3_key": key, "title": bad})),
            )
            .await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.body["fields"]["title"].is_array(), "{bad:?}: {}", r.text);
        let r = api
            .call(
                Method::PATCH,
                &format!("/api/v2/videos/{id}"),
                Some(&token),
                Some(json!({"title": bad})),
            )
            .await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.body["fields"]["title"].is_array(), "{bad:?}: {}", r.text);
    }
    assert_eq!(api.store.video(&id).await.unwrap().unwrap().title, "Clip");
    // a 1.9 MB title is one of the refused ones too
    let r = api
        .call(
            Method::POST,
            "/api/v2/videos/upload/finalize",
            Some(&token),
            Some(json!({"s3_key": key, "title": "x".repeat(1_900_000)})),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);

    for good in [
        longest.as_str(),
        decomposed.as_str(),
        "  Holiday \u{1F3D6}\u{FE0F}  ",
    ] {
        let expected = crate::validate_title(good).unwrap();
        let r = api
            .call(
                Method::POST,
                "/api/v2/videos/upload/initialize",
                Some(&token),
                Some(json!({"filename": "clip.mp4", "title": good})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let created = api
            .store
            .video(r.body["video_id"].as_str().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(created.title, expected);
        let r = api
            .call(
                Method::POST,
                "/api/v2/videos/upload/finalize",
                Some(&token),
                Some(json!({"s3_key": key, "title": good})),
            )
            .await;
        assert_eq!(
            (r.status, r.body["title"].as_str()),
            (StatusCode::ACCEPTED, Some(expected.as_str())),
            "{}",
            r.text
        );
        let r = api
            .call(
                Method::PATCH,
                &format!("/api/v2/videos/{id}"),
                Some(&token),
                Some(json!({"title": good})),
            )
            .await;
        assert_eq!(
            (r.status, r.body["title"].as_str()),
            (StatusCode::OK, Some(expected.as_str())),
            "{}",
            r.text
        );
    }
    assert_eq!(decomposed.chars().count(), 400);

    // PATCH needs a title; initialize and finalize treat a blank one as none
    let r = api
        .call(
            Method::PATCH,
            &format!("/api/v2/videos/{id}"),
            Some(&token),
            Some(json!({"title": "   "})),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
    let r = api
        .call(
            Method::POST,
            "/api/v2/videos/upload/initialize",
            Some(&token),
            Some(json!({"filename": format!("{}.mp4", "n".repeat(300)), "title": " "})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let named = api
        .store
        .video(r.body["video_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        named.title,
        "n".repeat(200),
        "named after the file, cut to 200"
    );
    // a control character in the file name is refused, not carried into the title
    let r = api
        .call(
            Method::POST,
            "/api/v2/videos/upload/initialize",
            Some(&token),
            Some(json!({"filename": "a\u{0}b.mp4"})),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body["fields"]["filename"].is_array(), "{}", r.text);
}

#[tokio::test]
async fn initialize_accepts_only_video_content_types() {
    let api = api();
    let token = api.user("ann").await;
    let initialize = |filename: &'static str, content_type: Value| {
        let api = &api;
        let token = token.clone();
        async move {
            api.call(
                Method::POST,
                "/api/v2/videos/upload/initialize",
                Some(&token),
                Some(json!({"filename": filename, "content_type": content_type})),
            )
            .await
        }
    };
    // what the original web client sends (the browser's file.type), and nothing at all
    for (filename, sent, signed) in [
        ("a.mp4", json!("video/mp4"), "video/mp4"),
        ("a.mov", json!("video/quicktime"), "video/quicktime"),
        ("a.m4v", json!("video/x-m4v"), "video/x-m4v"),
        ("a.mkv", json!("video/x-matroska"), "video/x-matroska"),
        ("a.avi", json!("video/x-msvideo"), "video/x-msvideo"),
        ("a.avi", json!("video/avi"), "video/avi"),
        ("a.webm", json!("video/webm"), "video/webm"),
        ("a.mkv", json!(""), "video/x-matroska"),
        ("a.mov", json!(null), "video/quicktime"),
        (
            "a.mp4",
            json!("application/octet-stream"),
            "application/octet-stream",
        ),
        ("a.mp4", json!("Video/MP4"), "Video/MP4"),
    ] {
        let r = initialize(filename, sent.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "{filename} {sent}: {}", r.text);
        assert_eq!(
            r.body["headers"]["Content-Type"], signed,
            "{filename} {sent}"
        );
    }
    for refused in [
        "video/",
        "video",
        "video/mp4\r\nX-Injected: 1",
        "video/mp4\n",
        "video/mp4; codecs=avc1",
        " video/mp4",
        "video/x-flv",
        "video/*",
        "text/html",
        "image/png",
        "audio/mp4",
        "multipart/form-data",
    ] {
        let r = initialize("a.mp4", json!(refused)).await;
        assert_error(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let me = api
        .call(Method::GET, "/api/v2/auth/profile", Some(&token), None)
        .await;
    let videos = api
        .store
        .videos_of(me.body["id"].as_str().unwrap(), 100, None)
        .await
        .unwrap();
    assert_eq!(videos.items.len(), 11, "a refused type creates no video");
}

#[tokio::test]
async fn a_valid_token_of_a_user_that_does_not_exist_is_401_everywhere() {
    let api = api();
    let ann = api.user("ann").await;
    let (id, key) = api.video(&ann).await;
    // correctly signed, unexpired, for a user id that was never registered
    let ghost = TokenKeys::new(SECRET, 3600).issue("no-such-user").unwrap();
    let calls: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/api/v2/auth/profile".into(), None),
        (Method::GET, "/api/v2/videos/".into(), None),
        (Method::GET, "/api/v2/videos".into(), None),
        (
            Method::POST,
            "/api/v2/videos/upload/initialize".into(),
            Some(json!({"filename": "a.mp4"})),
        ),
        (
            Method::POST,
            "/api/v2/videos/upload".into(),
            Some(json!({"filename": "a.mp4"})),
        ),
        (
            Method::POST,
            "/api/v2/videos/upload/finalize".into(),
            Some(json!({"s3_key": key})),
        ),
        (Method::GET, format!("/api/v2/videos/{id}"), None),
        (
            Method::PATCH,
            format!("/api/v2/videos/{id}"),
            Some(json!({"title": "x"})),
        ),
        (Method::DELETE, format!("/api/v2/videos/{id}"), None),
        (Method::GET, format!("/api/v2/videos/{id}/frames"), None),
        (Method::GET, format!("/api/v2/videos/{id}/export.csv"), None),
        (Method::GET, format!("/api/v2/videos/{id}/events"), None),
        (
            Method::GET,
            format!("/api/v2/videos/{id}/events?token={ghost}"),
            None,
        ),
    ];
    for (method, path, body) in calls {
        let token = (!path.contains("?token=")).then_some(ghost.as_str());
        let r = api.call(method.clone(), &path, token, body).await;
        assert_error(&r, StatusCode::UNAUTHORIZED);
        assert_eq!(r.body["error"], "unknown user", "{method} {path}");
        assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
    }
    let created = api
        .store
        .videos_of("no-such-user", 100, None)
        .await
        .unwrap();
    assert!(created.items.is_empty(), "nothing created");
    assert!(
        api.store.video(&id).await.unwrap().is_some(),
        "nothing deleted"
    );
    // the real user is unaffected
    let r = api
        .call(Method::GET, "/api/v2/videos/", Some(&ann), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_on_every_route() {
    let api = api();
    let token = api.user("ann").await;
    let (id, _) = api.video(&token).await;
    for scheme in ["Bearer", "bearer", "BEARER", "BeArEr"] {
        for path in [
            "/api/v2/auth/profile".to_string(),
            "/api/v2/videos/".to_string(),
            format!("/api/v2/videos/{id}"),
        ] {
            let r =
                with_authorization(&api, Method::GET, &path, &format!("{scheme} {token}")).await;
            assert_eq!(r.status, StatusCode::OK, "{scheme} {path}: {}", r.text);
        }
    }
    for value in [
        format!("Bearer{token}"),
        format!("Basic {token}"),
        "Bearer".to_string(),
        "Bearer ".to_string(),
        token.clone(),
    ] {
        let r = with_authorization(&api, Method::GET, "/api/v2/auth/profile", &value).await;
        assert_error(&r, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn argon2_runs_on_the_blocking_pool_never_on_the_async_worker() {
    // a current-thread runtime: this test's thread is the runtime's only worker
    let here = std::thread::current().id();
    let api = api();
    assert_eq!(
        register_as(&api, "ann", "ann@example.com").await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        login_as(&api, "ann@example.com", "password123")
            .await
            .status,
        StatusCode::OK
    );
    for (email, password) in [
        ("ann@example.com", "wrong-password"),
        ("nobody@example.com", "password123"),
    ] {
        assert_error(
            &login_as(&api, email, password).await,
            StatusCode::UNAUTHORIZED,
        );
    }
    // other tests hash at the same time, each from its own thread: keep the hashes asked for here
    let mine: Vec<_> = super::auth::probe::HASHES
        .lock()
        .unwrap()
        .iter()
        .filter(|(caller, _)| *caller == here)
        .map(|(_, ran_on)| *ran_on)
        .collect();
    assert_eq!(
        mine.len(),
        4,
        "register, login, wrong password and unknown email (the dummy hash) all hash on the pool"
    );
    assert!(
        mine.iter().all(|ran_on| *ran_on != here),
        "argon2 ran on the async worker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_hashes_are_bounded_and_other_requests_are_answered() {
    let api = api();
    let token = api.user("ann").await;
    let bound = super::auth::hashing_concurrency();
    // more logins than permits: a few wrong passwords, the rest unknown emails (the dummy hash);
    // few enough per email and in all to stay under the login rate limits
    let emails: Vec<String> = (0..(3 * bound + 2).min(bound + 24))
        .map(|i| match i {
            0..3 => "ann@example.com".to_string(),
            _ => format!("nobody{i}@example.com"),
        })
        .collect();
    let logins = emails
        .iter()
        .map(|email| login_as(&api, email, "wrong-password"));
    let flood = futures_util::future::join_all(logins);
    let profile = api.call(Method::GET, "/api/v2/auth/profile", Some(&token), None);
    let (replies, me) = tokio::join!(flood, profile);
    assert_eq!(me.status, StatusCode::OK);
    assert!(
        replies.iter().all(|r| r.status == StatusCode::UNAUTHORIZED),
        "every login answered"
    );
    let most = super::auth::probe::MOST_AT_ONCE.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (1..=bound).contains(&most),
        "{most} hashes ran at once; the bound is {bound}"
    );
}

// ---- rate limits on password attempts (issue 11, item 6) ----

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
        .insert(super::ClientAddr(addr.parse().unwrap()));
    api.send(request).await
}

#[tokio::test]
async fn wrong_passwords_lock_the_email_for_a_while_even_for_the_right_one() {
    let api = api();
    api.user("ann").await;
    api.user("bob").await;
    for attempt in 0..10 {
        let r = login_as(&api, "ann@example.com", "wrong password").await;
        assert_error(&r, StatusCode::UNAUTHORIZED);
        assert!(
            r.headers.get(header::RETRY_AFTER).is_none(),
            "attempt {attempt}"
        );
    }
    // the budget is spent: refused before any hashing, the right password too
    for password in ["wrong password", "password123"] {
        let r = login_as(&api, "ann@example.com", password).await;
        assert_error(&r, StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = r.headers[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=15 * 60).contains(&retry), "Retry-After: {retry}");
    }
    // another spelling of the same email is the same budget; another account is untouched
    let r = login_as(&api, "ANN@Example.com", "password123").await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS);
    let r = login_as(&api, "bob@example.com", "password123").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // unknown emails count too (no free guessing of which emails exist)
    for _ in 0..10 {
        login_as(&api, "nobody@example.com", "x").await;
    }
    assert_error(
        &login_as(&api, "nobody@example.com", "x").await,
        StatusCode::TOO_MANY_REQUESTS,
    );
}

#[tokio::test]
async fn logins_and_registrations_are_limited_per_client_address() {
    use super::{RateLimit, RateLimits};
    let api = api_with(ApiConfig {
        rate_limits: RateLimits {
            logins_per_address: RateLimit::new(3, 60),
            registrations_per_address: RateLimit::new(2, 60),
            ..RateLimits::default()
        },
        ..ApiConfig::default()
    });
    let register = |n: u32, addr: &'static str| {
        let api = &api;
        async move {
            from_addr(
                api,
                "/api/v2/auth/register",
                addr,
                json!({"username": format!("user{n}"), "email": format!("user{n}@example.com"), "password": "password123"}),
            )
            .await
        }
    };
    assert_eq!(
        register(1, "198.51.100.7").await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        register(2, "198.51.100.7").await.status,
        StatusCode::CREATED
    );
    let r = register(3, "198.51.100.7").await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    assert_eq!(register(3, "2001:db8::1").await.status, StatusCode::CREATED);

    let login = |addr: &'static str| {
        let api = &api;
        async move {
            from_addr(
                api,
                "/api/v2/auth/login",
                addr,
                json!({"email": "user1@example.com", "password": "password123"}),
            )
            .await
        }
    };
    for _ in 0..3 {
        assert_eq!(login("198.51.100.7").await.status, StatusCode::OK);
    }
    assert_error(&login("198.51.100.7").await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(login("203.0.113.5").await.status, StatusCode::OK);
}

// ---- people's thumbnails ----

/// A GET of a thumbnail: status, headers and the bytes (a thumbnail is not text).
async fn get_bytes(
    api: &Api,
    path: &str,
    token: &str,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let r = api.get(path, Some(token)).await;
    (r.status, r.headers, r.bytes)
}

/// A JPEG's first and last bytes around some others: not text.
const THUMBNAIL: [u8; 6] = [0xFF, 0xD8, 0xFF, 0x00, 0xFF, 0xD9];

async fn put_thumbnail(api: &Api, video_id: &str, person: u32, bytes: &[u8]) {
    use crate::ports::BlobStore;
    api.blobs
        .put_object(
            &crate::person_thumbnail_key(video_id, person),
            bytes.to_vec(),
            "image/jpeg",
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_owner_gets_a_persons_thumbnail_as_a_private_jpeg() {
    let api = api();
    let token = api.user("ann").await;
    let (id, _) = api.video(&token).await;
    put_thumbnail(&api, &id, 1, &THUMBNAIL).await;
    put_thumbnail(&api, &id, 2, b"second").await;
    assert_eq!(
        api.blobs
            .objects
            .lock()
            .unwrap()
            .get(&format!("results/{id}/people/1.jpg")),
        Some(&THUMBNAIL.to_vec()),
        "the key the worker and the API share"
    );
    let (status, headers, bytes) =
        get_bytes(&api, &format!("/api/v2/videos/{id}/people/1.jpg"), &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "image/jpeg");
    assert_eq!(headers[header::CACHE_CONTROL], "private, max-age=3600");
    assert_eq!(bytes, THUMBNAIL);
    let (status, _, bytes) =
        get_bytes(&api, &format!("/api/v2/videos/{id}/people/2.jpg"), &token).await;
    assert_eq!((status, bytes.as_slice()), (StatusCode::OK, &b"second"[..]));
    // a token is needed
    let r = api
        .get(&format!("/api/v2/videos/{id}/people/1.jpg"), None)
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_thumbnail_of_someone_elses_video_or_of_nobody_is_not_found() {
    let api = api();
    let ann = api.user("ann").await;
    let bob = api.user("bob").await;
    let (id, _) = api.video(&ann).await;
    put_thumbnail(&api, &id, 1, &THUMBNAIL).await;
    // someone else's video: the same 404 as a video that does not exist
    let r = api
        .get(&format!("/api/v2/videos/{id}/people/1.jpg"), Some(&bob))
        .await;
    assert_error(&r, StatusCode::NOT_FOUND);
    assert!(!r.text.contains("jpeg") && r.headers[header::CONTENT_TYPE] != "image/jpeg");
    let r = api
        .get("/api/v2/videos/no-such-video/people/1.jpg", Some(&ann))
        .await;
    assert_error(&r, StatusCode::NOT_FOUND);
    // a person without a thumbnail
    let r = api
        .get(&format!("/api/v2/videos/{id}/people/2.jpg"), Some(&ann))
        .await;
    assert_error(&r, StatusCode::NOT_FOUND);
    // a video that has none yet
    let (fresh, _) = api.video(&ann).await;
    let r = api
        .get(&format!("/api/v2/videos/{fresh}/people/1.jpg"), Some(&ann))
        .await;
    assert_error(&r, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn only_positive_numbered_jpeg_names_are_thumbnails() {
    let api = api();
    let token = api.user("ann").await;
    let (id, _) = api.video(&token).await;
    put_thumbnail(&api, &id, 1, &THUMBNAIL).await;
    // objects that exist under other names must stay unreachable through this route
    use crate::ports::BlobStore;
    for key in [
        format!("results/{id}/people/0.jpg"),
        format!("results/{id}/people/01.jpg"),
        format!("results/{id}/people/1.png"),
        format!("results/{id}/people/x.jpg"),
        format!("results/{id}/1.jpg"),
    ] {
        api.blobs
            .put_object(&key, THUMBNAIL.to_vec(), "image/jpeg")
            .await
            .unwrap();
    }
    for name in [
        "x.jpg",
        "0.jpg",
        "01.jpg",
        "-1.jpg",
        "+1.jpg",
        "1.png",
        "1.JPG",
        "1",
        ".jpg",
        "1.jpg.jpg",
        "4294967296.jpg",
        "..%2F1.jpg",
        "%2E%2E%2F1.jpg",
        "1.jpg%00",
        "../1.jpg",
        "../people/1.jpg",
        "1.jpg/",
        "1.jpg/x",
    ] {
        let r = api
            .get(&format!("/api/v2/videos/{id}/people/{name}"), Some(&token))
            .await;
        assert_error(&r, StatusCode::NOT_FOUND);
        assert_ne!(
            r.headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(&b"image/jpeg"[..]),
            "{name}"
        );
    }
    let (status, _, bytes) =
        get_bytes(&api, &format!("/api/v2/videos/{id}/people/1.jpg"), &token).await;
    assert_eq!((status, bytes), (StatusCode::OK, THUMBNAIL.to_vec()));
}

#[tokio::test]
async fn deleting_a_video_deletes_its_thumbnails_and_only_its_own() {
    let api = api();
    let token = api.user("ann").await;
    let (id, _) = api.video(&token).await;
    let (other, _) = api.video(&token).await;
    for person in 1..=3 {
        put_thumbnail(&api, &id, person, &THUMBNAIL).await;
    }
    put_thumbnail(&api, &other, 1, &THUMBNAIL).await;
    let r = api
        .call(
            Method::DELETE,
            &format!("/api/v2/videos/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let prefix = crate::results_prefix(&id);
    assert!(
        !api.blobs
            .objects
            .lock()
            .unwrap()
            .keys()
            .any(|k| k.starts_with(&prefix)),
        "no thumbnail of the deleted video is left"
    );
    assert!(
        api.blobs
            .objects
            .lock()
            .unwrap()
            .contains_key(&crate::person_thumbnail_key(&other, 1)),
        "the other video keeps its thumbnail"
    );
    let r = api
        .get(&format!("/api/v2/videos/{id}/people/1.jpg"), Some(&token))
        .await;
    assert_error(&r, StatusCode::NOT_FOUND);
    let (status, _, _) = get_bytes(
        &api,
        &format!("/api/v2/videos/{other}/people/1.jpg"),
        &token,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

/// A finished video whose frames alternate between two tracks of one person: pages of any size
/// carry `person` and the same `smoothed` values the summary was built from, and the original
/// client's `confidences` stay raw.
#[tokio::test]
async fn frames_carry_people_and_smoothed_emotions_on_every_page_and_in_the_csv() {
    let api = api();
    let token = api.user("ann").await;
    let (id, _) = api.video(&token).await;
    // 10 s at 25 fps: sad with a happy flicker every 7th frame; track 1 until 4 s, then track 2
    let frames: Vec<FrameResult> = (0..250)
        .map(|n| {
            let mut f = frame(
                n,
                if n % 7 == 3 {
                    EmotionLabel::Happy
                } else {
                    EmotionLabel::Sad
                },
            );
            f.faces[0].track = if n < 100 { 1 } else { 2 };
            f
        })
        .collect();
    api.store.put_frames(&id, &frames).await.unwrap();
    let profile = |track| crate::TrackProfile {
        track,
        embedding: vec![0.6, 0.8],
        samples: 1,
        quality: 0.5,
        thumbnail: None,
    };
    api.store
        .put_tracks(&id, &[profile(1), profile(2)])
        .await
        .unwrap();
    let summary = crate::assembly::assemble(
        api.store.as_ref(),
        &id,
        false,
        &crate::PeopleConfig::default(),
        crate::SmoothingConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(summary.people.len(), 1);
    assert_eq!(summary.people[0].tracks, vec![1, 2]);
    assert_eq!(summary.people[0].dominant, EmotionLabel::Sad);
    assert_eq!(
        summary.people[0].distribution.get(EmotionLabel::Sad),
        1.0,
        "the smoothed series never flickers"
    );
    let mut done = AnalysisState::pending();
    done.status = VideoStatus::Completed;
    done.summary = Some(summary);
    api.store.set_analysis(&id, &done).await.unwrap();

    let page = |limit: usize, cursor: Option<u64>| {
        let api = &api;
        let token = token.clone();
        let id = id.clone();
        async move {
            let cursor = cursor.map(|c| format!("&cursor={c}")).unwrap_or_default();
            let r = api
                .get(
                    &format!("/api/v2/videos/{id}/frames?limit={limit}{cursor}"),
                    Some(&token),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            r.body.as_array().unwrap().clone()
        }
    };
    let whole = page(1000, None).await;
    assert_eq!(whole.len(), 250);
    for (small, cursor) in [(7, Some(120)), (1, Some(3)), (40, Some(200))] {
        for f in page(small, cursor).await {
            let n = f["frame_number"].as_u64().unwrap() as usize;
            let face = &f["faces"][0];
            assert_eq!(face["person"], 1);
            assert_eq!(
                face["smoothed"], whole[n]["faces"][0]["smoothed"],
                "frame {n}"
            );
            assert_eq!(face["smoothed_dominant"], "sad", "frame {n}");
        }
    }
    let flicker = &whole[3];
    assert_eq!(flicker["faces"][0]["dominant"], "happy", "raw stays raw");
    assert_eq!(
        flicker["confidences"][3], 0.8,
        "the original client's happy is raw"
    );

    let csv = api
        .get(&format!("/api/v2/videos/{id}/export.csv"), Some(&token))
        .await;
    let mut lines = csv.text.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("frame,t_ms,track,person,x,y,w,h,score,dominant,smoothed_dominant,")
    );
    let row: Vec<&str> = lines.nth(3).unwrap().split(',').collect();
    assert_eq!(
        (row[0], row[2], row[3], row[9], row[10]),
        ("3", "1", "1", "happy", "sad")
    );
}
