//! A video's analysed frames: `/videos/{id}/frames` in pages and `/videos/{id}/export.csv`.

use domain::{PeopleConfig, SmoothingConfig, TrackProfile};

use super::*;

#[tokio::test]
async fn frames_come_in_pages_after_a_frame_number_cursor() {
    let api = api();
    let token = api.user("ann").await;
    let id = api.finished_video(&token).await;
    let p = api
        .get(&format!("/api/v2/videos/{id}/frames?limit=2"), Some(&token))
        .await;
    assert_eq!(p.body.as_array().unwrap().len(), 2);
    let link = p.header(header::LINK);
    assert!(link.contains("cursor=5"), "{link}");
    let p2 = api
        .get(
            &format!("/api/v2/videos/{id}/frames?limit=2&cursor=5"),
            Some(&token),
        )
        .await;
    assert_eq!(p2.body[0]["frame_number"], 10);
    assert_error(
        &api.get(
            &format!("/api/v2/videos/{id}/frames?cursor=abc"),
            Some(&token),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
}

#[tokio::test]
async fn the_csv_export_has_a_row_per_face_per_frame() {
    let api = api();
    let token = api.user("ann").await;
    let id = api.finished_video(&token).await;
    let csv = api
        .get(&format!("/api/v2/videos/{id}/export.csv"), Some(&token))
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.header(header::CONTENT_TYPE).starts_with("text/csv"));
    let lines: Vec<&str> = csv.text.lines().collect();
    assert_eq!(lines.len(), 4, "header + one row per face per frame");
    assert!(lines[2].starts_with("5,200,1,"));
}

/// A finished video of 10 s at 25 fps whose frames alternate between two tracks of one person:
/// sad with a happy flicker every 7th frame; track 1 until 4 s, then track 2.
async fn one_person_on_two_tracks(api: &Api, token: &str) -> String {
    let (id, _) = api.video(token).await;
    let frames: Vec<FrameResult> = (0..250)
        .map(|n| {
            let label = if n % 7 == 3 {
                EmotionLabel::Happy
            } else {
                EmotionLabel::Sad
            };
            let mut f = frame(n, label);
            f.faces[0].track = if n < 100 { 1 } else { 2 };
            f
        })
        .collect();
    api.store.put_frames(&id, &frames).await.unwrap();
    let profile = |track| TrackProfile {
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
    let summary = domain::assembly::assemble(
        api.store.as_ref(),
        &id,
        false,
        &PeopleConfig::default(),
        SmoothingConfig::default(),
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
    id
}

/// One page of frames, as JSON.
async fn page(api: &Api, token: &str, id: &str, limit: usize, cursor: Option<u64>) -> Vec<Value> {
    let cursor = cursor.map(|c| format!("&cursor={c}")).unwrap_or_default();
    let r = api
        .get(
            &format!("/api/v2/videos/{id}/frames?limit={limit}{cursor}"),
            Some(token),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body.as_array().unwrap().clone()
}

/// Pages of any size carry `person` and the same `smoothed` values the summary was built from,
/// and the original client's `confidences` stay raw.
#[tokio::test]
async fn frames_carry_people_and_smoothed_emotions_on_every_page() {
    let api = api();
    let token = api.user("ann").await;
    let id = one_person_on_two_tracks(&api, &token).await;
    let whole = page(&api, &token, &id, 1000, None).await;
    assert_eq!(whole.len(), 250);
    for (small, cursor) in [(7, Some(120)), (1, Some(3)), (40, Some(200))] {
        for f in page(&api, &token, &id, small, cursor).await {
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
}

#[tokio::test]
async fn the_csv_export_carries_people_and_smoothed_emotions() {
    let api = api();
    let token = api.user("ann").await;
    let id = one_person_on_two_tracks(&api, &token).await;
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
