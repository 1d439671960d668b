//! The AWS adapters against a local server that speaks the AWS wire protocol (moto), started by
//! scripts/test (`scripts/moto.sh start`), whose address is in DEEPEMOTION_MOTO_ENDPOINT.

use std::time::Duration;

use chrono::Utc;
use shared::adapters::aws::{AwsClients, AwsConfig, DynamoStore, S3Blobs, SqsJobs};
use shared::ports::*;
use shared::{AnalysisState, EmotionScores, FrameResult, User, Video, VideoStatus};

async fn clients() -> (AwsClients, AwsConfig) {
    let endpoint = std::env::var("DEEPEMOTION_MOTO_ENDPOINT")
        .expect("DEEPEMOTION_MOTO_ENDPOINT is not set: run these tests through scripts/test, which starts moto");
    // moto accepts any credentials; the SDK still wants some
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    }
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let config = AwsConfig {
        region: "us-east-1".into(),
        endpoint_url: Some(endpoint),
        table: format!("deepemotion-{unique}"),
        bucket: format!("deepemotion-{unique}"),
        queue_url: None,
    };
    (AwsClients::new(&config).await, config)
}

async fn store() -> DynamoStore {
    let (clients, config) = clients().await;
    let store = DynamoStore::new(&clients, &config.table);
    store.create_table().await.expect("table");
    store
}

fn user(id: &str, email: &str) -> User {
    User {
        id: id.into(),
        username: id.into(),
        email: email.into(),
        password_hash: "$argon2id$x".into(),
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

fn video(id: &str, owner: &str, age_ms: i64) -> Video {
    Video {
        id: id.into(),
        user_id: owner.into(),
        title: format!("video {id}"),
        s3_key: shared::object_key(owner, id, "mp4"),
        filename: "a.mp4".into(),
        content_type: "video/mp4".into(),
        size_bytes: Some(10),
        sample_fps: 5.0,
        uploaded_at: Utc::now() - chrono::Duration::milliseconds(age_ms),
        analysis: AnalysisState::pending(),
    }
}

#[tokio::test]
async fn users_are_unique_by_email_case_insensitively() {
    let store = store().await;
    store
        .create_user(&user("u1", "ann@example.com"))
        .await
        .unwrap();
    let dup = store.create_user(&user("u2", "ANN@example.com")).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    assert_eq!(
        store
            .user_by_email("Ann@Example.com")
            .await
            .unwrap()
            .unwrap()
            .id,
        "u1"
    );
    assert_eq!(
        store.user_by_id("u1").await.unwrap().unwrap().email,
        "ann@example.com"
    );
    assert!(
        store.user_by_id("u2").await.unwrap().is_none(),
        "the failed registration left nothing"
    );
    assert!(
        store
            .user_by_email("bob@example.com")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn videos_list_newest_first_in_pages_and_updates_do_not_clobber() {
    let store = store().await;
    for (i, age) in [(1, 3000), (2, 2000), (3, 1000), (4, 500), (5, 100)] {
        store
            .create_video(&video(&format!("v{i}"), "ann", age))
            .await
            .unwrap();
    }
    store
        .create_video(&video("other", "bob", 50))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.videos_of("ann", 2, cursor.as_deref()).await.unwrap();
        seen.extend(page.items.iter().map(|v| v.id.clone()));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, vec!["v5", "v4", "v3", "v2", "v1"]);
    assert!(matches!(
        store.videos_of("ann", 2, Some("garbage!")).await,
        Err(StoreError::BadCursor)
    ));
    // a cursor made for one user does not page another user's list
    let ann_cursor = store.videos_of("ann", 2, None).await.unwrap().next.unwrap();
    assert!(matches!(
        store.videos_of("bob", 2, Some(&ann_cursor)).await,
        Err(StoreError::BadCursor)
    ));

    let state = AnalysisState {
        status: VideoStatus::Completed,
        progress: 100,
        frames_analyzed: 3,
        ..AnalysisState::pending()
    };
    store.set_analysis("v1", &state).await.unwrap();
    store.set_title("v1", "Birthday").await.unwrap();
    let v = store.video("v1").await.unwrap().unwrap();
    assert_eq!(
        (
            v.title.as_str(),
            v.analysis.status,
            v.analysis.frames_analyzed
        ),
        ("Birthday", VideoStatus::Completed, 3)
    );
    assert!(matches!(
        store.set_title("missing", "x").await,
        Err(StoreError::NotFound)
    ));
    store.delete_video("v1").await.unwrap();
    assert!(store.video("v1").await.unwrap().is_none());
}

#[tokio::test]
async fn the_ledger_plans_once_leases_segments_and_counts_them_once() {
    use shared::ports::{AnalysisLedger, PlanDecision, ProgressDelta, SegmentClaim};
    use shared::{AnalysisPlan, Checkpoint};
    use std::time::Duration;

    let store = store().await;
    store.create_video(&video("v9", "ann", 10)).await.unwrap();
    let plan = AnalysisPlan::split(
        5.0,
        0.0,
        20_000,
        10.0,
        &(0..500)
            .map(|i| i as f64 / 25.0 + 0.001)
            .collect::<Vec<_>>(),
    );
    assert_eq!(plan.segments.len(), 2);
    assert_eq!(store.plan("v9").await.unwrap(), None);
    assert_eq!(
        store.start_analysis("v9", &plan).await.unwrap(),
        PlanDecision::Recorded
    );
    // a duplicate event finds the plan in force
    let other = AnalysisPlan::single(5.0, 0.0, 20_000);
    assert_eq!(
        store.start_analysis("v9", &other).await.unwrap(),
        PlanDecision::Existing(plan.clone())
    );
    assert_eq!(store.plan("v9").await.unwrap(), Some(plan.clone()));
    assert_eq!(
        store.start_analysis("missing", &plan).await.unwrap(),
        PlanDecision::Finished
    );

    let lease = Duration::from_secs(60);
    let claim = store
        .claim_segment("v9", 0, "worker-a", lease)
        .await
        .unwrap();
    assert_eq!(
        claim,
        SegmentClaim::Claimed {
            attempt: 1,
            checkpoint: None
        }
    );
    assert_eq!(
        store
            .claim_segment("v9", 0, "worker-b", lease)
            .await
            .unwrap(),
        SegmentClaim::Busy
    );
    let at = Checkpoint {
        frame: 120,
        t_ms: 5005,
    };
    let delta = ProgressDelta {
        covered_ms: 5000,
        frames: 26,
    };
    assert!(
        store
            .checkpoint("v9", 0, "worker-a", &at, delta, lease)
            .await
            .unwrap()
    );
    assert!(
        !store
            .checkpoint("v9", 0, "worker-b", &at, delta, lease)
            .await
            .unwrap()
    );
    let v = store.video("v9").await.unwrap().unwrap();
    assert_eq!(
        (
            v.analysis.status,
            v.analysis.progress,
            v.analysis.frames_analyzed
        ),
        (VideoStatus::Processing, 25, 26)
    );
    // released (or expired): the next claim resumes from the checkpoint
    store.release_segment("v9", 0, "worker-a").await.unwrap();
    assert_eq!(
        store
            .claim_segment("v9", 0, "worker-b", lease)
            .await
            .unwrap(),
        SegmentClaim::Claimed {
            attempt: 2,
            checkpoint: Some(at)
        }
    );
    let statuses = store.segments("v9").await.unwrap();
    assert_eq!(statuses.len(), 1);
    assert!(statuses[0].leased && !statuses[0].done);
    assert!(matches!(
        store.finish_segment("v9", 0, Some("worker-a"), None).await,
        Err(StoreError::Conflict(_))
    ));
    let tally = store
        .finish_segment("v9", 0, Some("worker-b"), None)
        .await
        .unwrap();
    assert_eq!((tally.done, tally.total), (1, 2));
    // counting the same segment again (after a crash between the two writes) counts it once
    let tally = store.finish_segment("v9", 0, None, None).await.unwrap();
    assert_eq!((tally.done, tally.total), (1, 2));
    assert_eq!(
        store
            .claim_segment("v9", 0, "worker-c", lease)
            .await
            .unwrap(),
        SegmentClaim::Done
    );

    store
        .claim_segment("v9", 1, "worker-c", lease)
        .await
        .unwrap();
    let info = shared::VideoInfo {
        duration_ms: 20_000,
        frame_count: 500,
        ..Default::default()
    };
    let tally = store
        .finish_segment("v9", 1, Some("worker-c"), Some(&info))
        .await
        .unwrap();
    assert_eq!((tally.done, tally.total, tally.video), (2, 2, Some(info)));

    let done = AnalysisState {
        status: VideoStatus::Completed,
        progress: 100,
        ..AnalysisState::pending()
    };
    assert!(store.end_analysis("v9", &done).await.unwrap());
    assert!(
        !store.end_analysis("v9", &done).await.unwrap(),
        "only a PROCESSING video can end"
    );
    assert_eq!(
        store.video("v9").await.unwrap().unwrap().analysis.progress,
        100
    );
    // deleting the results also deletes the segment records
    store.delete_frames("v9").await.unwrap();
    assert!(store.segments("v9").await.unwrap().is_empty());
}

#[tokio::test]
async fn frames_are_stored_once_paged_in_order_and_deleted() {
    let store = store().await;
    let frame = |n: u64| FrameResult {
        frame: n,
        t_ms: n * 40,
        faces: vec![],
    };
    let mut frames: Vec<FrameResult> = (0..60).map(|i| frame(i * 2)).collect();
    frames.push(frame(10)); // written twice
    store.put_frames("v1", &frames).await.unwrap();
    store.put_frames("v1", &[frame(10)]).await.unwrap();
    store.put_frames("v2", &[frame(1)]).await.unwrap();
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let (page, next) = store.frames("v1", after, 25).await.unwrap();
        all.extend(page.iter().map(|f| f.frame));
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(all, (0..60).map(|i| i * 2).collect::<Vec<u64>>());
    store.delete_frames("v1").await.unwrap();
    assert!(store.frames("v1", None, 10).await.unwrap().0.is_empty());
    assert_eq!(
        store.frames("v2", None, 10).await.unwrap().0.len(),
        1,
        "other videos untouched"
    );
    let _ = EmotionScores::new(false);
}

#[tokio::test]
async fn blobs_upload_through_presigned_urls() {
    let (clients, config) = clients().await;
    clients
        .s3
        .create_bucket()
        .bucket(&config.bucket)
        .send()
        .await
        .unwrap();
    let blobs = S3Blobs::new(&clients, &config.bucket);
    let key = "uploads/u1/v1.mp4";
    let upload = blobs
        .presign_put(key, "video/mp4", Duration::from_secs(900))
        .await
        .unwrap();
    assert!(
        upload.url.contains("X-Amz-Signature") && upload.url.contains("X-Amz-Expires=900"),
        "{}",
        upload.url
    );
    assert!(
        upload.url.contains("content-type"),
        "the Content-Type is signed: {}",
        upload.url
    );
    let bytes = vec![7u8; 100_000];
    let r = reqwest::Client::new()
        .put(&upload.url)
        .header("Content-Type", "video/mp4")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(blobs.head(key).await.unwrap(), Some(100_000));
    let dir = tempfile::tempdir().unwrap();
    blobs
        .download(key, &dir.path().join("v1.mp4"))
        .await
        .unwrap();
    assert_eq!(std::fs::read(dir.path().join("v1.mp4")).unwrap(), bytes);
    let url = blobs
        .presign_get(key, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        reqwest::get(&url)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .len(),
        100_000
    );
    blobs.delete(key).await.unwrap();
    assert_eq!(blobs.head(key).await.unwrap(), None);
}

#[tokio::test]
async fn jobs_go_onto_the_queue_as_json() {
    let (clients, config) = clients().await;
    let queue_url = clients
        .sqs
        .create_queue()
        .queue_name(&config.table)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    SqsJobs::new(&clients, &queue_url)
        .enqueue(AnalysisJob::upload("uploads/u/v.mp4"))
        .await
        .unwrap();
    let out = clients
        .sqs
        .receive_message()
        .queue_url(&queue_url)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    let body = out.messages.unwrap()[0].body.clone().unwrap();
    let job: AnalysisJob = serde_json::from_str(&body).unwrap();
    assert_eq!(job.key, "uploads/u/v.mp4");
}

#[tokio::test]
async fn the_api_lambda_signs_tokens_with_the_secret_it_reads_from_secrets_manager() {
    use shared::http::TokenKeys;
    use shared::lambda::{ApiLambdaConfig, LambdaConfigError, app_state};
    let (clients, aws) = clients().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&clients.sdk);
    let value = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let created = secrets
        .create_secret()
        .name(format!(
            "deepemotion/{}/jwt-secret",
            uuid::Uuid::new_v4().simple()
        ))
        .secret_string(&value)
        .send()
        .await
        .unwrap();
    let config = |secret: &str| ApiLambdaConfig {
        aws: aws.clone(),
        jwt_secret_id: Some(secret.to_string()),
        dev_jwt_secret: None,
        api: Default::default(),
    };

    // the template passes the secret's ARN
    let state = app_state(&config(created.arn().unwrap())).await.unwrap();
    let theirs = TokenKeys::new(value.as_bytes(), 60)
        .issue("user-1")
        .unwrap();
    assert_eq!(state.tokens.verify(&theirs).unwrap(), "user-1");
    let forged = TokenKeys::new(b"some-other-secret-some-other-secret!", 60)
        .issue("user-1")
        .unwrap();
    assert!(state.tokens.verify(&forged).is_err());

    // a missing secret stops the cold start, naming the secret and not leaking a value
    let missing = app_state(&config("deepemotion/nobody/jwt-secret")).await;
    let Err(LambdaConfigError::Secret { name, cause }) = missing else {
        panic!("expected a secret error");
    };
    assert_eq!(name, "deepemotion/nobody/jwt-secret");
    assert!(cause.contains("ResourceNotFound"), "{cause}");

    // too short a secret is refused rather than used
    let short = secrets
        .create_secret()
        .name(format!(
            "deepemotion/{}/short",
            uuid::Uuid::new_v4().simple()
        ))
        .secret_string("short")
        .send()
        .await
        .unwrap();
    assert!(matches!(
        app_state(&config(short.arn().unwrap())).await,
        Err(LambdaConfigError::Invalid(_))
    ));
}
