//! The caller's videos: the list, one video, renaming and deleting; nobody else's.

use super::*;

#[tokio::test]
async fn the_list_is_newest_first_in_pages_linked_by_a_cursor() {
    let api = api();
    let token = api.user("ann").await;
    let mut created = Vec::new();
    for _ in 0..3 {
        created.push(api.video(&token).await.0);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // newest first, two per page, next cursor in the Link header
    let page1 = api.get("/api/v2/videos/?limit=2", Some(&token)).await;
    assert_eq!(page1.status, StatusCode::OK);
    assert_eq!(ids(&page1.body), vec![&created[2], &created[1]]);
    let link = page1.header(header::LINK).to_string();
    assert!(link.ends_with("rel=\"next\""), "{link}");
    let next = &link[1..link.find('>').unwrap()];
    let page2 = api.get(next, Some(&token)).await;
    assert_eq!(page2.body.as_array().unwrap().len(), 1);
    assert!(page2.headers.get(header::LINK).is_none());
    assert_error(
        &api.get("/api/v2/videos/?limit=0", Some(&token)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    let without_slash = api.get("/api/v2/videos", Some(&token)).await;
    assert_eq!(without_slash.body.as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_finished_video_comes_whole_with_its_frames_in_the_original_shape() {
    let api = api();
    let token = api.user("ann").await;
    let id = api.finished_video(&token).await;
    let r = api.get(&format!("/api/v2/videos/{id}"), Some(&token)).await;
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
    assert!(r.str("video_url").contains(&r.str("s3_key")));
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
}

#[tokio::test]
async fn patch_renames_a_video_and_refuses_an_empty_title() {
    let api = api();
    let token = api.user("ann").await;
    let id = api.finished_video(&token).await;
    let path = format!("/api/v2/videos/{id}");
    let r = api
        .patch(&path, Some(&token), json!({"title": "Birthday"}))
        .await;
    assert_eq!(
        (r.status, r.body["title"].as_str()),
        (StatusCode::OK, Some("Birthday"))
    );
    assert_error(
        &api.patch(&path, Some(&token), json!({"title": ""})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
}

#[tokio::test]
async fn delete_removes_the_video_its_frames_and_its_file() {
    let api = api();
    let token = api.user("ann").await;
    let id = api.finished_video(&token).await;
    let path = format!("/api/v2/videos/{id}");
    let key = api.get(&path, Some(&token)).await.str("s3_key");
    api.blobs
        .objects
        .lock()
        .unwrap()
        .insert(key.clone(), vec![1, 2, 3]);
    let r = api.delete(&path, Some(&token)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(api.store.video(&id).await.unwrap().is_none());
    assert!(api.store.frames(&id, None, 10).await.unwrap().0.is_empty());
    assert!(!api.has_object(&key));
    assert_error(&api.get(&path, Some(&token)).await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn someone_elses_video_is_not_found_for_every_verb() {
    let api = api();
    let ann = api.user("ann").await;
    let bob = api.user("bob").await;
    let (id, _) = api.video(&ann).await;
    let no_such_video = api.get("/api/v2/videos/no-such-id", Some(&bob)).await;
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
        assert_eq!(r.body, no_such_video.body, "{method} {path}");
    }
    assert!(api.store.video(&id).await.unwrap().is_some(), "still there");
    assert_eq!(api.get("/api/v2/videos/", Some(&bob)).await.body, json!([]));
}
