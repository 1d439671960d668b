//! The AWS adapters against a local server that speaks the AWS wire protocol (moto), started by
//! scripts/test (`scripts/moto.sh start`), whose address is in DEEPEMOTION_MOTO_ENDPOINT.

use std::time::Duration;

use aws_adapters::{AwsClients, AwsConfig, DynamoStore, S3Blobs, SqsJobs};
use chrono::Utc;
use domain::ports::*;
use domain::{AnalysisState, EmotionScores, FrameResult, User, Video, VideoStatus};

/// Clients for moto, and a table, bucket and queue name of their own.
pub(crate) async fn clients() -> (AwsClients, AwsConfig) {
    let endpoint = std::env::var("DEEPEMOTION_MOTO_ENDPOINT")
        .expect("DEEPEMOTION_MOTO_ENDPOINT is not set: run these tests through scripts/test, which starts moto");
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let config = AwsConfig {
        region: "us-east-1".into(),
        endpoint_url: Some(endpoint),
        table: format!("deepemotion-{unique}"),
        bucket: format!("deepemotion-{unique}"),
        queue_url: None,
        delivery_queue_url: None,
        // moto accepts any credentials; the SDK still wants some
        credentials: Some(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        )),
    };
    (AwsClients::new(&config).await, config)
}

pub(crate) async fn store() -> DynamoStore {
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
        uploaded_at: Utc::now() - chrono::Duration::milliseconds(age_ms),
        ..domain::memory::pending_video(id, owner)
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

/// The ledger's contract runs in `ledger.rs`; this is DynamoDB's own extra: deleting a video's
/// results also deletes its segment records.
#[tokio::test]
async fn deleting_the_results_also_deletes_the_segment_records() {
    use domain::AnalysisPlan;
    use domain::ports::AnalysisLedger;
    let store = store().await;
    store.create_video(&video("v9", "ann", 10)).await.unwrap();
    store
        .start_analysis("v9", &AnalysisPlan::single(5.0, 0.0, 20_000))
        .await
        .unwrap();
    store
        .claim_segment("v9", 0, "worker-a", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(store.segments("v9").await.unwrap().len(), 1);
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
        .presign_put(key, "video/mp4", None, Duration::from_secs(900))
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
    assert_eq!(
        blobs.stat(key, None).await.unwrap().map(|o| o.size),
        Some(100_000)
    );
    assert_eq!(blobs.get_object(key).await.unwrap(), Some(bytes.clone()));
    let url = blobs
        .presign_get(key, None, Duration::from_secs(60))
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
    assert_eq!(blobs.stat(key, None).await.unwrap(), None);
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
    use aws_adapters::lambda::{LambdaConfigError, TokenSecretSource};
    use http_api::{ApiPorts, AppState, TokenKeys};
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
    let secret_of = |id: &str| TokenSecretSource::SecretsManager(id.to_string());
    let store = std::sync::Arc::new(DynamoStore::new(&clients, &aws.table));
    let api_state = |secret: &str| {
        let ports = ApiPorts {
            users: store.clone(),
            videos: store.clone(),
            results: store.clone(),
            limiter: store.clone(),
            webhooks: store.clone(),
            blobs: std::sync::Arc::new(S3Blobs::new(&clients, &aws.bucket)),
            deliveries: std::sync::Arc::new(domain::memory::MemoryDeliveryQueue::default()),
            webhook_key: domain::webhooks::SecretBox::from_key_material(
                &domain::webhooks::SecretBox::generate_key(),
            )
            .unwrap(),
        };
        AppState::new(ports, secret, Default::default())
    };

    // the template passes the secret's ARN
    let secret = secret_of(created.arn().unwrap())
        .read(&clients)
        .await
        .unwrap();
    let state = api_state(&secret).unwrap();
    let theirs = TokenKeys::new(value.as_bytes(), 60)
        .issue("user-1")
        .unwrap();
    assert_eq!(state.tokens.verify(&theirs).unwrap(), "user-1");
    let forged = TokenKeys::new(b"some-other-secret-some-other-secret!", 60)
        .issue("user-1")
        .unwrap();
    assert!(state.tokens.verify(&forged).is_err());

    // a missing secret stops the cold start, naming the secret and not leaking a value
    let missing = secret_of("deepemotion/nobody/jwt-secret")
        .read(&clients)
        .await;
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
    let short = secret_of(short.arn().unwrap())
        .read(&clients)
        .await
        .unwrap();
    assert!(api_state(&short).is_err());
}

#[tokio::test]
async fn the_first_upload_is_recorded_once_and_a_delete_removes_every_item() {
    use domain::StoredObject;
    use domain::ports::{AnalysisLedger, SegmentClaim, UploadRecord};
    let store = store().await;
    store.create_video(&video("v1", "u1", 0)).await.unwrap();
    let first = StoredObject {
        size: 100,
        etag: Some("aaa".into()),
        version_id: Some("ver-1".into()),
    };
    let second = StoredObject {
        size: 120,
        etag: Some("bbb".into()),
        version_id: Some("ver-2".into()),
    };
    assert_eq!(
        store.record_upload("v1", &first).await.unwrap(),
        UploadRecord::Recorded
    );
    assert_eq!(
        store.record_upload("v1", &first).await.unwrap(),
        UploadRecord::Same
    );
    assert_eq!(
        store.record_upload("v1", &second).await.unwrap(),
        UploadRecord::Different(first.clone())
    );
    assert_eq!(
        store.video("v1").await.unwrap().unwrap().upload,
        Some(first.clone())
    );
    // a title change does not clobber it
    store.set_title("v1", "renamed").await.unwrap();
    assert_eq!(
        store.video("v1").await.unwrap().unwrap().upload,
        Some(first)
    );

    store
        .put_frames(
            "v1",
            &[FrameResult {
                frame: 3,
                t_ms: 120,
                faces: vec![],
            }],
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .claim_segment("v1", 0, "w", Duration::from_secs(60))
            .await
            .unwrap(),
        SegmentClaim::Claimed { .. }
    ));
    store.delete_video("v1").await.unwrap();
    assert!(store.video("v1").await.unwrap().is_none());
    assert!(store.frames("v1", None, 10).await.unwrap().0.is_empty());
    assert!(store.segments("v1").await.unwrap().is_empty());
    assert_eq!(
        store.record_upload("v1", &second).await.unwrap(),
        UploadRecord::Gone
    );
}

async fn versioned_bucket() -> S3Blobs {
    bucket(true).await.0
}

async fn put(url: &str, bytes: Vec<u8>) -> reqwest::StatusCode {
    reqwest::Client::new()
        .put(url)
        .header("Content-Type", "video/mp4")
        .body(bytes)
        .send()
        .await
        .unwrap()
        .status()
}

async fn get(url: &str) -> Vec<u8> {
    reqwest::get(url)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn a_second_put_to_the_same_key_never_changes_what_is_read_through_the_recorded_version() {
    let blobs = versioned_bucket().await;
    let key = "uploads/u1/v1.mp4";
    let url = blobs
        .presign_put(key, "video/mp4", None, Duration::from_secs(900))
        .await
        .unwrap()
        .url;
    let original = vec![1u8; 50_000];
    let swapped = vec![2u8; 60_000];
    assert!(put(&url, original.clone()).await.is_success());
    let recorded = blobs.stat(key, None).await.unwrap().unwrap();
    assert_eq!(recorded.size, 50_000);
    let version = recorded.version_id.clone().expect("a versioned bucket");
    // an event that names the object by size and ETag only (moto's) finds the same version
    let described = domain::StoredObject {
        version_id: None,
        ..recorded.clone()
    };
    assert_eq!(
        blobs.locate(key, &described).await.unwrap(),
        Some(recorded.clone())
    );

    // a version that was never stored (a forged or stale event) is simply not there
    assert_eq!(
        blobs
            .stat(key, Some("3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"))
            .await
            .unwrap(),
        None
    );
    // the same URL, again, with other bytes
    assert!(put(&url, swapped.clone()).await.is_success());
    let current = blobs.stat(key, None).await.unwrap().unwrap();
    assert_ne!(current.version_id, recorded.version_id);
    assert!(
        !current.same_as(&recorded),
        "the worker can tell them apart"
    );
    // still the original for the analysis and for the player
    let source = blobs
        .analysis_source(key, Some(&version), Duration::from_secs(60))
        .await
        .unwrap();
    let domain::MediaSource::Url(source) = source else {
        panic!("S3 hands ffmpeg a presigned URL, not {source:?}");
    };
    assert_eq!(get(&source).await, original);
    let stream = blobs
        .presign_get(key, Some(&version), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(get(&stream).await, original);
    assert_eq!(
        blobs.stat(key, Some(&version)).await.unwrap(),
        Some(recorded.clone())
    );
    // the worker discards the second version: the original is current again
    blobs
        .delete_version(key, current.version_id.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(blobs.stat(key, None).await.unwrap(), Some(recorded));
    // a delete removes every version: nothing is left behind a delete marker
    blobs.delete(key).await.unwrap();
    assert_eq!(blobs.stat(key, None).await.unwrap(), None);
    assert_eq!(blobs.stat(key, Some(&version)).await.unwrap(), None);
    assert_eq!(blobs.locate(key, &described).await.unwrap(), None);
}

#[tokio::test]
async fn a_declared_size_is_signed_into_the_presigned_put() {
    let blobs = versioned_bucket().await;
    let signed_headers = |url: &str| -> String {
        let query = url.split_once('?').map_or("", |(_, q)| q);
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("X-Amz-SignedHeaders="))
            .map(|v| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .unwrap_or_default()
    };
    let with_size = blobs
        .presign_put(
            "uploads/u1/v1.mp4",
            "video/mp4",
            Some(1234),
            Duration::from_secs(900),
        )
        .await
        .unwrap();
    let headers = signed_headers(&with_size.url);
    assert!(
        headers.split(';').any(|h| h == "content-length")
            && headers.split(';').any(|h| h == "content-type"),
        "signed headers: {headers}"
    );
    let without = blobs
        .presign_put(
            "uploads/u1/v2.mp4",
            "video/mp4",
            None,
            Duration::from_secs(900),
        )
        .await
        .unwrap();
    assert!(!signed_headers(&without.url).contains("content-length"));
}

#[tokio::test]
async fn rate_limit_counters_are_shared_through_the_table() {
    use domain::ports::{RateDecision, RateLimiter};
    let (clients, config) = clients().await;
    let table = DynamoStore::new(&clients, &config.table);
    table.create_table().await.unwrap();
    // a second client over the same table: another Lambda container
    let other = DynamoStore::new(&clients, &config.table);
    let window = Duration::from_secs(3600);
    for _ in 0..2 {
        assert_eq!(
            table.hit("login#k", 1, 3, window).await.unwrap(),
            RateDecision::Allowed
        );
    }
    assert_eq!(
        other.hit("login#k", 1, 3, window).await.unwrap(),
        RateDecision::Allowed
    );
    // a look at a full budget says no without counting
    assert!(matches!(
        other.hit("login#k", 0, 3, window).await.unwrap(),
        RateDecision::Limited { .. }
    ));
    let RateDecision::Limited { retry_after } = table.hit("login#k", 1, 3, window).await.unwrap()
    else {
        panic!("the fourth attempt is over the limit");
    };
    assert!(retry_after <= window && !retry_after.is_zero());
    assert_eq!(
        table.hit("login#other", 1, 3, window).await.unwrap(),
        RateDecision::Allowed,
        "keys are counted apart"
    );
}

/// A bucket, versioned or not, with the S3 client to look into it directly.
async fn bucket(versioned: bool) -> (S3Blobs, aws_sdk_s3::Client, String) {
    let (clients, config) = clients().await;
    create_bucket(&clients, &config.bucket, versioned).await;
    (
        S3Blobs::new(&clients, &config.bucket),
        clients.s3.clone(),
        config.bucket,
    )
}

/// Creates the bucket; versioned, a second PUT to the same key makes a new version (as
/// template.yaml declares the upload bucket).
pub(crate) async fn create_bucket(clients: &AwsClients, bucket: &str, versioned: bool) {
    clients
        .s3
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    if versioned {
        clients
            .s3
            .put_bucket_versioning()
            .bucket(bucket)
            .versioning_configuration(
                aws_sdk_s3::types::VersioningConfiguration::builder()
                    .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
}

/// Every (key, version id) under `prefix`, delete markers included, all pages.
async fn all_versions(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let (mut key_marker, mut version_marker) = (None, None);
    loop {
        let out = s3
            .list_object_versions()
            .bucket(bucket)
            .prefix(prefix)
            .set_key_marker(key_marker)
            .set_version_id_marker(version_marker)
            .send()
            .await
            .unwrap();
        found.extend(
            out.versions()
                .iter()
                .map(|v| format!("{} {}", v.key().unwrap(), v.version_id().unwrap())),
        );
        found.extend(
            out.delete_markers()
                .iter()
                .map(|m| format!("{} {} (marker)", m.key().unwrap(), m.version_id().unwrap())),
        );
        if out.is_truncated() != Some(true) {
            return found;
        }
        key_marker = out.next_key_marker().map(str::to_string);
        version_marker = out.next_version_id_marker().map(str::to_string);
    }
}

#[tokio::test]
async fn small_objects_are_put_and_read_back_and_a_missing_one_is_none() {
    let (blobs, s3, bucket) = bucket(true).await;
    let key = domain::person_thumbnail_key("v1", 1);
    assert_eq!(blobs.get_object(&key).await.unwrap(), None);
    let jpeg = vec![0xFF, 0xD8, 0xFF, 0x00, 0xFF, 0xD9];
    blobs
        .put_object(&key, jpeg.clone(), "image/jpeg")
        .await
        .unwrap();
    assert_eq!(blobs.get_object(&key).await.unwrap(), Some(jpeg));
    let head = s3
        .head_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("image/jpeg"));
    // a put replaces: the current version is what is read
    let bigger = vec![7u8; 300_000];
    blobs
        .put_object(&key, bigger.clone(), "image/jpeg")
        .await
        .unwrap();
    assert_eq!(blobs.get_object(&key).await.unwrap(), Some(bigger));
    assert_eq!(
        blobs
            .get_object(&domain::person_thumbnail_key("v1", 2))
            .await
            .unwrap(),
        None
    );
    // a key whose current version is a delete marker has no object either
    s3.delete_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(blobs.get_object(&key).await.unwrap(), None);
}

#[tokio::test]
async fn delete_prefix_removes_every_version_under_the_prefix_and_nothing_else() {
    let (blobs, s3, bucket) = bucket(true).await;
    let prefix = domain::results_prefix("v1");
    let one = domain::person_thumbnail_key("v1", 1);
    let two = domain::person_thumbnail_key("v1", 2);
    let three = domain::person_thumbnail_key("v1", 3);
    // a prefix that is a string prefix of the deleted one, but another video's
    let sibling = domain::person_thumbnail_key("v10", 1);
    let upload = domain::object_key("u1", "v1", "mp4");
    for (key, times) in [
        (&one, 3),
        (&two, 1),
        (&three, 2),
        (&sibling, 2),
        (&upload, 1),
    ] {
        for i in 0..times {
            blobs
                .put_object(key, vec![i; 10], "image/jpeg")
                .await
                .unwrap();
        }
    }
    // a delete marker over two's only version
    s3.delete_object()
        .bucket(&bucket)
        .key(&two)
        .send()
        .await
        .unwrap();
    assert_eq!(all_versions(&s3, &bucket, &prefix).await.len(), 3 + 2 + 2);

    blobs.delete_prefix(&prefix).await.unwrap();
    assert_eq!(
        all_versions(&s3, &bucket, &prefix).await,
        Vec::<String>::new(),
        "no version and no delete marker is left"
    );
    for key in [&one, &two, &three] {
        assert_eq!(blobs.get_object(key).await.unwrap(), None, "{key}");
    }
    assert_eq!(
        all_versions(&s3, &bucket, &sibling).await.len(),
        2,
        "results/v10/ is not under results/v1/"
    );
    assert_eq!(blobs.get_object(&sibling).await.unwrap(), Some(vec![1; 10]));
    assert_eq!(all_versions(&s3, &bucket, &upload).await.len(), 1);
    // nothing under the prefix is fine
    blobs.delete_prefix(&prefix).await.unwrap();
    blobs
        .delete_prefix(&domain::results_prefix("never"))
        .await
        .unwrap();
}

#[tokio::test]
async fn delete_prefix_pages_and_batches_past_a_thousand_objects_on_an_unversioned_bucket() {
    use futures_util::StreamExt;
    let (blobs, s3, bucket) = bucket(false).await;
    let prefix = domain::results_prefix("v1");
    let keep = domain::person_thumbnail_key("v2", 1);
    blobs
        .put_object(&keep, vec![1], "image/jpeg")
        .await
        .unwrap();
    let blobs = &blobs;
    futures_util::stream::iter(1..=1005u32)
        .map(|n| async move {
            blobs
                .put_object(
                    &domain::person_thumbnail_key("v1", n),
                    vec![1],
                    "image/jpeg",
                )
                .await
                .unwrap()
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    assert_eq!(all_versions(&s3, &bucket, &prefix).await.len(), 1005);
    blobs.delete_prefix(&prefix).await.unwrap();
    assert_eq!(all_versions(&s3, &bucket, &prefix).await.len(), 0);
    assert_eq!(blobs.get_object(&keep).await.unwrap(), Some(vec![1]));
}
