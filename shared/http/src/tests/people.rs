//! People's thumbnails: `/videos/{id}/people/{n}.jpg`, for the people a finished analysis's
//! summary names.

use domain::ports::BlobStore;
use domain::{PersonSummary, SummaryBuilder};

use super::*;

/// A JPEG's first and last bytes around some others: not text.
const THUMBNAIL: [u8; 6] = [0xFF, 0xD8, 0xFF, 0x00, 0xFF, 0xD9];

async fn put_thumbnail(api: &Api, video_id: &str, person: u32, bytes: &[u8]) {
    api.blobs
        .put_object(
            &domain::person_thumbnail_key(video_id, person),
            bytes.to_vec(),
            "image/jpeg",
        )
        .await
        .unwrap();
}

/// Finishes the video's analysis with a summary that names these people (and nothing else).
async fn name_people(api: &Api, video_id: &str, people: &[u32]) {
    let mut summary = SummaryBuilder::new(false).finish();
    summary.people = people
        .iter()
        .map(|&person| PersonSummary {
            person,
            tracks: vec![person],
            first_ms: 0,
            last_ms: 0,
            frames: 1,
            dominant: EmotionLabel::Neutral,
            distribution: EmotionScores::new(false),
            mean: EmotionScores::new(false),
        })
        .collect();
    let mut done = AnalysisState::pending();
    done.status = VideoStatus::Completed;
    done.summary = Some(summary);
    api.store.set_analysis(video_id, &done).await.unwrap();
}

fn thumbnail(id: &str, name: &str) -> String {
    format!("/api/v2/videos/{id}/people/{name}")
}

#[tokio::test]
async fn the_owner_gets_a_persons_thumbnail_as_a_private_jpeg() {
    let api = api();
    let token = api.user("ann").await;
    let (id, _) = api.video(&token).await;
    name_people(&api, &id, &[1, 2]).await;
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
    let r = api.get(&thumbnail(&id, "1.jpg"), Some(&token)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "image/jpeg");
    assert_eq!(r.headers[header::CACHE_CONTROL], "private, max-age=3600");
    assert_eq!(r.bytes, THUMBNAIL);
    let r = api.get(&thumbnail(&id, "2.jpg"), Some(&token)).await;
    assert_eq!(
        (r.status, r.bytes.as_slice()),
        (StatusCode::OK, &b"second"[..])
    );
    // a token is needed
    let r = api.get(&thumbnail(&id, "1.jpg"), None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_thumbnail_of_someone_elses_video_or_of_nobody_is_not_found() {
    let api = api();
    let ann = api.user("ann").await;
    let bob = api.user("bob").await;
    let (id, _) = api.video(&ann).await;
    name_people(&api, &id, &[1, 2]).await;
    put_thumbnail(&api, &id, 1, &THUMBNAIL).await;
    // someone else's video: the same 404 as a video that does not exist
    let r = api.get(&thumbnail(&id, "1.jpg"), Some(&bob)).await;
    assert_error(&r, StatusCode::NOT_FOUND);
    assert!(!r.text.contains("jpeg") && r.headers[header::CONTENT_TYPE] != "image/jpeg");
    let r = api
        .get(&thumbnail("no-such-video", "1.jpg"), Some(&ann))
        .await;
    assert_error(&r, StatusCode::NOT_FOUND);
    // a person without a thumbnail
    let r = api.get(&thumbnail(&id, "2.jpg"), Some(&ann)).await;
    assert_error(&r, StatusCode::NOT_FOUND);
    // a thumbnail of someone the summary does not name (the store is not even asked)
    put_thumbnail(&api, &id, 3, &THUMBNAIL).await;
    let r = api.get(&thumbnail(&id, "3.jpg"), Some(&ann)).await;
    assert_error(&r, StatusCode::NOT_FOUND);
    // a video that has none yet (its analysis has not named anyone)
    let (fresh, _) = api.video(&ann).await;
    let r = api.get(&thumbnail(&fresh, "1.jpg"), Some(&ann)).await;
    assert_error(&r, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn only_positive_numbered_jpeg_names_are_thumbnails() {
    let api = api();
    let token = api.user("ann").await;
    let (id, _) = api.video(&token).await;
    name_people(&api, &id, &[1]).await;
    put_thumbnail(&api, &id, 1, &THUMBNAIL).await;
    // objects that exist under other names must stay unreachable through this route
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
        let r = api.get(&thumbnail(&id, name), Some(&token)).await;
        assert_error(&r, StatusCode::NOT_FOUND);
        assert_ne!(
            r.headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(&b"image/jpeg"[..]),
            "{name}"
        );
    }
    let r = api.get(&thumbnail(&id, "1.jpg"), Some(&token)).await;
    assert_eq!((r.status, r.bytes), (StatusCode::OK, THUMBNAIL.to_vec()));
}

#[tokio::test]
async fn deleting_a_video_deletes_its_thumbnails_and_only_its_own() {
    let api = api();
    let token = api.user("ann").await;
    let (id, _) = api.video(&token).await;
    let (other, _) = api.video(&token).await;
    name_people(&api, &id, &[1, 2, 3]).await;
    name_people(&api, &other, &[1]).await;
    for person in 1..=3 {
        put_thumbnail(&api, &id, person, &THUMBNAIL).await;
    }
    put_thumbnail(&api, &other, 1, &THUMBNAIL).await;
    let r = api
        .delete(&format!("/api/v2/videos/{id}"), Some(&token))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let prefix = domain::results_prefix(&id);
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
        api.has_object(&domain::person_thumbnail_key(&other, 1)),
        "the other video keeps its thumbnail"
    );
    let r = api.get(&thumbnail(&id, "1.jpg"), Some(&token)).await;
    assert_error(&r, StatusCode::NOT_FOUND);
    let r = api.get(&thumbnail(&other, "1.jpg"), Some(&token)).await;
    assert_eq!(r.status, StatusCode::OK);
}
