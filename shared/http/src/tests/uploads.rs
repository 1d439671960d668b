//! Starting and finishing an upload: `/videos/upload/initialize` (and its alias) and
//! `/videos/upload/finalize`, and the title rule they share with `PATCH /videos/{id}`.

use axum::response::Response;
use domain::memory::MemoryQueue;

use super::*;
use crate::{ApiError, BodyChunks, ServerFiles, ServerUploads, UploadError};

#[tokio::test]
async fn initialize_signs_a_put_and_creates_a_pending_video() {
    let api = api();
    let token = api.user("ann").await;
    let r = api
        .initialize(
            Some(&token),
            json!({"filename": "Party.MOV", "size_bytes": 1000}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["method"], "PUT");
    assert_eq!(r.body["headers"]["Content-Type"], "video/quicktime");
    let key = r.str("s3_key");
    let user_id = api.user_id(&token).await;
    assert!(
        key.starts_with(&format!("uploads/{user_id}/")) && key.ends_with(".mov"),
        "{key}"
    );
    let expires: chrono::DateTime<chrono::Utc> = r.str("expires_at").parse().unwrap();
    let ttl = expires - chrono::Utc::now();
    assert!(ttl > chrono::Duration::minutes(14) && ttl <= chrono::Duration::minutes(15));
    let video = api.store.video(&r.str("video_id")).await.unwrap().unwrap();
    assert_eq!(
        (video.analysis.status, video.title.as_str()),
        (VideoStatus::Pending, "Party")
    );

    // the alias with a JSON body
    let alias = api
        .post(
            "/api/v2/videos/upload",
            Some(&token),
            json!({"filename": "b.webm"}),
        )
        .await;
    assert_eq!(alias.status, StatusCode::OK, "{}", alias.text);
}

#[tokio::test]
async fn initialize_refuses_other_types_large_files_bad_fields_and_strangers() {
    let api = api();
    let token = api.user("ann").await;
    for (body, status) in [
        (
            json!({"filename": "notes.pdf"}),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            json!({"filename": "a.mp4", "content_type": "text/html"}),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            json!({"filename": "big.mp4", "size_bytes": 1_000_001}),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (json!({"filename": ""}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"filename": "a.mp4", "sample_fps": -1}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        assert_error(&api.initialize(Some(&token), body).await, status);
    }
    let r = api.initialize(None, json!({"filename": "a.mp4"})).await;
    assert_error(&r, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_path_in_the_filename_cannot_steer_the_key() {
    let api = api();
    let token = api.user("ann").await;
    let r = api
        .initialize(Some(&token), json!({"filename": "../../etc/passwd.mp4"}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let key = r.str("s3_key");
    assert!(!key.contains("..") && !key.contains("etc"), "{key}");
    assert!(domain::parse_object_key(&key).is_some());
}

#[tokio::test]
async fn initialize_accepts_only_video_content_types() {
    let api = api();
    let token = api.user("ann").await;
    let initialize = |filename: &str, content_type: Value| {
        api.initialize(
            Some(&token),
            json!({"filename": filename, "content_type": content_type}),
        )
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
    let videos = api
        .store
        .videos_of(&api.user_id(&token).await, 100, None)
        .await
        .unwrap();
    assert_eq!(videos.items.len(), 11, "a refused type creates no video");
}

/// Server files for an API that must never touch them.
struct Untouched;

#[async_trait::async_trait]
impl ServerFiles for Untouched {
    async fn store_new(
        &self,
        key: &str,
        _body: &mut BodyChunks<'_>,
        _max_bytes: u64,
        _declared: Option<u64>,
    ) -> Result<u64, UploadError> {
        panic!("stored {key}")
    }
    async fn serve(
        &self,
        key: &str,
        _content_type: Option<&str>,
        _request: Request<Body>,
    ) -> Result<Response, ApiError> {
        panic!("served {key}")
    }
}

#[tokio::test]
async fn finalize_is_idempotent_and_never_queues() {
    // with a queue at hand (one machine's uploads through the server): finalize still leaves it
    // alone; on AWS the API has no queue at all
    let queue = Arc::new(MemoryQueue::default());
    let api = Api::build(ApiConfig::default(), |state| {
        state.with_server_uploads(ServerUploads {
            files: Arc::new(Untouched),
            jobs: queue.clone(),
        })
    });
    let ann = api.user("ann").await;
    let (id, key) = api.video(&ann).await;
    for _ in 0..2 {
        let r = api
            .finalize(Some(&ann), json!({"s3_key": key, "title": "Renamed"}))
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        assert_eq!(
            (r.str("id"), r.str("title")),
            (id.clone(), "Renamed".into())
        );
    }
    assert!(
        queue.jobs.lock().unwrap().is_empty(),
        "the object-created event starts the analysis, not finalize"
    );
}

#[tokio::test]
async fn finalize_takes_only_the_callers_own_key() {
    let api = api();
    let ann = api.user("ann").await;
    let bob = api.user("bob").await;
    let (_, key) = api.video(&ann).await;
    let r = api.finalize(Some(&bob), json!({"s3_key": key})).await;
    assert_error(&r, StatusCode::NOT_FOUND);
    let r = api
        .finalize(Some(&ann), json!({"s3_key": "uploads/x/../../y.mp4"}))
        .await;
    assert_error(&r, StatusCode::NOT_FOUND);
}

// ---- hardening: titles (issue 11, item 7) ----

/// A title must be at most 200 characters, without control or bidirectional characters.
const BAD_TITLES: [&str; 4] = ["a\u{0}b", "two\nlines", "evil\u{202e}4pm", "\u{7}"];

fn assert_title_refused(r: &Reply, title: &str) {
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body["fields"]["title"].is_array(),
        "{title:?}: {}",
        r.text
    );
}

#[tokio::test]
async fn one_title_rule_refuses_on_initialize_finalize_and_patch() {
    let api = api();
    let token = api.user("ann").await;
    let (id, key) = api.video(&token).await;
    let long = "t".repeat(201);
    for bad in BAD_TITLES.into_iter().chain([long.as_str()]) {
        let r = api
            .initialize(Some(&token), json!({"filename": "clip.mp4", "title": bad}))
            .await;
        assert_title_refused(&r, bad);
        let r = api
            .finalize(Some(&token), json!({"s3_key": key, "title": bad}))
            .await;
        assert_title_refused(&r, bad);
        let r = api
            .patch(
                &format!("/api/v2/videos/{id}"),
                Some(&token),
                json!({"title": bad}),
            )
            .await;
        assert_title_refused(&r, bad);
    }
    assert_eq!(api.store.video(&id).await.unwrap().unwrap().title, "Clip");
    // a 1.9 MB title is one of the refused ones too
    let r = api
        .finalize(
            Some(&token),
            json!({"s3_key": key, "title": "x".repeat(1_900_000)}),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn one_title_rule_normalises_on_initialize_finalize_and_patch() {
    let api = api();
    let token = api.user("ann").await;
    let (id, key) = api.video(&token).await;
    let longest = "t".repeat(200);
    // NFD: 400 scalar values that are 200 characters in NFC
    let decomposed = "e\u{301}".repeat(200);
    assert_eq!(decomposed.chars().count(), 400);
    for good in [
        longest.as_str(),
        decomposed.as_str(),
        "  Holiday \u{1F3D6}\u{FE0F}  ",
    ] {
        let expected = domain::validate_title(good).unwrap();
        let r = api
            .initialize(Some(&token), json!({"filename": "clip.mp4", "title": good}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let created = api.store.video(&r.str("video_id")).await.unwrap().unwrap();
        assert_eq!(created.title, expected);
        let r = api
            .finalize(Some(&token), json!({"s3_key": key, "title": good}))
            .await;
        assert_eq!(
            (r.status, r.body["title"].as_str()),
            (StatusCode::ACCEPTED, Some(expected.as_str())),
            "{}",
            r.text
        );
        let r = api
            .patch(
                &format!("/api/v2/videos/{id}"),
                Some(&token),
                json!({"title": good}),
            )
            .await;
        assert_eq!(
            (r.status, r.body["title"].as_str()),
            (StatusCode::OK, Some(expected.as_str())),
            "{}",
            r.text
        );
    }
}

#[tokio::test]
async fn patch_needs_a_title_and_initialize_names_the_video_after_the_file() {
    let api = api();
    let token = api.user("ann").await;
    let (id, _) = api.video(&token).await;
    // PATCH needs a title; initialize and finalize treat a blank one as none
    let r = api
        .patch(
            &format!("/api/v2/videos/{id}"),
            Some(&token),
            json!({"title": "   "}),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
    let r = api
        .initialize(
            Some(&token),
            json!({"filename": format!("{}.mp4", "n".repeat(300)), "title": " "}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let named = api.store.video(&r.str("video_id")).await.unwrap().unwrap();
    assert_eq!(
        named.title,
        "n".repeat(200),
        "named after the file, cut to 200"
    );
    // a control character in the file name is refused, not carried into the title
    let r = api
        .initialize(Some(&token), json!({"filename": "a\u{0}b.mp4"}))
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body["fields"]["filename"].is_array(), "{}", r.text);
}
