//! Playing a video (`/videos/stream/{filename}`) and following its analysis live
//! (`/videos/{id}/events`, server-sent events).

use super::*;

/// The stream route of a video's object key: its last segment.
fn stream_path(key: &str) -> String {
    format!("/api/v2/videos/stream/{}", key.rsplit('/').next().unwrap())
}

#[tokio::test]
async fn the_stream_url_redirects_to_the_uploaded_file_without_a_token() {
    let api = api();
    let token = api.user("ann").await;
    let (id, key) = api.video(&token).await;
    let stream = stream_path(&key);
    // nothing uploaded yet: nothing to play
    assert_error(&api.get(&stream, None).await, StatusCode::NOT_FOUND);
    api.store
        .record_upload(&id, &uploaded_object())
        .await
        .unwrap();
    // no token needed (a <video> element cannot send one); on AWS it redirects to presigned S3
    let r = api.get(&stream, None).await;
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT, "{}", r.text);
    assert_eq!(
        r.header(header::LOCATION),
        format!("https://blobs.example/{key}")
    );
}

#[tokio::test]
async fn the_stream_url_is_a_capability_that_dies_with_the_video() {
    let api = api();
    let token = api.user("ann").await;
    let (id, key) = api.video(&token).await;
    let name = key.rsplit('/').next().unwrap().to_string();
    api.store
        .record_upload(&id, &uploaded_object())
        .await
        .unwrap();
    // only the exact object name works: another extension, another id, or a path do not
    for bad in [
        format!("{id}.mov"),
        format!("{}.mp4", uuid::Uuid::new_v4()),
        "..%2F..%2Fetc%2Fpasswd".to_string(),
        format!("..%2F{name}"),
    ] {
        let r = api.get(&format!("/api/v2/videos/stream/{bad}"), None).await;
        assert_error(&r, StatusCode::NOT_FOUND);
    }
    let r = api
        .delete(&format!("/api/v2/videos/{id}"), Some(&token))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = api.get(&stream_path(&key), None).await;
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

/// Sets the video's analysis to `status` at `progress` percent.
async fn set_progress(store: &MemoryStore, id: &str, status: VideoStatus, progress: u8) {
    let mut state = AnalysisState::pending();
    state.status = status;
    state.progress = progress;
    store.set_analysis(id, &state).await.unwrap();
}

#[tokio::test]
async fn events_of_someone_elses_video_or_without_a_token_are_refused_before_any_stream() {
    let api = api();
    let token = api.user("ann").await;
    let other = api.user("bob").await;
    let (id, _) = api.video(&token).await;
    let events = format!("/api/v2/videos/{id}/events");
    assert_error(&api.get(&events, Some(&other)).await, StatusCode::NOT_FOUND);
    assert_error(&api.get(&events, None).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn server_sent_events_follow_the_analysis_and_end_with_it() {
    let api = api();
    let token = api.user("ann").await;
    let (id, _) = api.video(&token).await;
    set_progress(&api.store, &id, VideoStatus::Processing, 10).await;

    // the analysis moves on while the client listens; each announced change is one event
    let (store, events, video_id) = (api.store.clone(), api.events.clone(), id.clone());
    let writer = tokio::spawn(async move {
        for (status, progress) in [(VideoStatus::Processing, 55), (VideoStatus::Completed, 100)] {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            set_progress(&store, &video_id, status, progress).await;
            events.changed(&video_id);
        }
    });
    let r = api
        .get(&format!("/api/v2/videos/{id}/events?token={token}"), None)
        .await;
    writer.await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.header(header::CONTENT_TYPE)
            .starts_with("text/event-stream")
    );
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
        .get(&format!("/api/v2/videos/{id}/events"), Some(&token))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let events = sse_events(&r.text);
    assert_eq!(events.len(), 1, "{}", r.text);
    assert_eq!(events[0].1["status"], "PENDING");
    assert!(r.text.contains("retry: 1000"), "{}", r.text);
}
