//! The event pipeline end to end over moto (started by scripts/test; its address is in
//! DEEPEMOTION_MOTO_ENDPOINT): the bucket's ObjectCreated notification (prefix `uploads/`)
//! really configured to the queue, the router on DynamoDB/S3/SQS, a real presigned PUT, the S3
//! event received from SQS and handed to the analysis handler as the Lambda runtime would.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use aws_adapters::adapters::item_bytes;
use aws_adapters::lambda::handle_sqs_event;
use aws_adapters::{AwsClients, AwsConfig, DynamoStore, S3Blobs, SqsDeliveries, SqsJobs};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfigurationFilter, QueueConfiguration,
    S3KeyFilter,
};
use domain::VideoStatus;
use domain::metered::{Metered, WriteMeter};
use domain::webhooks::SecretBox;
use engine::{Analyzer, EngineConfig};
use http_api::{ApiConfig, ApiPorts, AppState};
use serde_json::{Value, json};
use worker::{AnalysisWorker, WorkerConfig, WorkerPorts};

struct Stack {
    clients: AwsClients,
    config: AwsConfig,
    store: Arc<DynamoStore>,
    base: String,
    http: reqwest::Client,
}

/// The engine, loaded once for every test in this binary.
fn engine() -> Arc<Analyzer> {
    static ENGINE: std::sync::OnceLock<Arc<Analyzer>> = std::sync::OnceLock::new();
    ENGINE
        .get_or_init(|| {
            Arc::new(Analyzer::new(EngineConfig::default()).expect("the analysis engine starts"))
        })
        .clone()
}

/// Table, bucket with its notification, queue, and the API served over HTTP.
async fn stack() -> Stack {
    let (clients, mut config) = super::adapters::clients().await;
    let store = Arc::new(DynamoStore::new(&clients, &config.table));
    store.create_table().await.unwrap();
    super::adapters::create_bucket(&clients, &config.bucket, true).await;
    let queue_url = clients
        .sqs
        .create_queue()
        .queue_name(format!("analysis-{}", config.table))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue_arn = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    clients
        .s3
        .put_bucket_notification_configuration()
        .bucket(&config.bucket)
        .notification_configuration(
            aws_sdk_s3::types::NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .id("analysis-uploads")
                        .queue_arn(queue_arn)
                        .events(Event::from("s3:ObjectCreated:*"))
                        .filter(
                            NotificationConfigurationFilter::builder()
                                .key(
                                    S3KeyFilter::builder()
                                        .filter_rules(
                                            FilterRule::builder()
                                                .name(FilterRuleName::Prefix)
                                                .value("uploads/")
                                                .build(),
                                        )
                                        .build(),
                                )
                                .build(),
                        )
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    config.queue_url = Some(queue_url.clone());
    // the webhook delivery queue, as the template declares it beside the analysis queue
    config.delivery_queue_url = clients
        .sqs
        .create_queue()
        .queue_name(format!("deliveries-{}", config.table))
        .send()
        .await
        .unwrap()
        .queue_url;

    let ports = ApiPorts {
        users: store.clone(),
        videos: store.clone(),
        results: store.clone(),
        blobs: Arc::new(S3Blobs::new(&clients, &config.bucket)),
        limiter: store.clone(),
        webhooks: store.clone(),
        deliveries: Arc::new(SqsDeliveries::new(
            &clients,
            config.delivery_queue_url.clone().unwrap(),
        )),
        webhook_key: SecretBox::from_key_material(&SecretBox::generate_key()).unwrap(),
    };
    let state = AppState::new(
        ports,
        "moto-test-secret-moto-test-secret!!",
        ApiConfig::default(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, http_api::router(state))
            .await
            .unwrap()
    });
    Stack {
        clients,
        config,
        store,
        base: format!("http://{addr}/api/v2"),
        http: reqwest::Client::new(),
    }
}

impl Stack {
    /// The analysis function's worker, wired as functions/analyze wires it.
    fn worker(&self, worker: WorkerConfig) -> AnalysisWorker {
        let store = Arc::new(DynamoStore::new(&self.clients, &self.config.table));
        let ports = WorkerPorts {
            videos: store.clone(),
            ledger: store.clone(),
            results: store.clone(),
            webhooks: store,
            blobs: Arc::new(S3Blobs::new(&self.clients, &self.config.bucket)),
            jobs: Arc::new(SqsJobs::new(
                &self.clients,
                self.config.queue_url.clone().unwrap_or_default(),
            )),
            deliveries: Arc::new(SqsDeliveries::new(
                &self.clients,
                self.config.delivery_queue_url.clone().unwrap_or_default(),
            )),
        };
        AnalysisWorker::new(ports, engine(), worker)
    }

    async fn token(&self) -> String {
        let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        let r = self
            .http
            .post(format!("{}/auth/register", self.base))
            .json(&json!({"username": "ann", "email": email, "password": "password123"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let r: Value = self
            .http
            .post(format!("{}/auth/login", self.base))
            .json(&json!({"email": email, "password": "password123"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["access_token"].as_str().unwrap().to_string()
    }

    /// initialize → PUT to the presigned URL; returns the video id.
    async fn upload(&self, token: &str, filename: &str, bytes: Vec<u8>) -> String {
        let init: Value = self
            .http
            .post(format!("{}/videos/upload/initialize", self.base))
            .bearer_auth(token)
            .json(&json!({"filename": filename}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let url = init["upload_url"].as_str().unwrap();
        assert!(
            url.contains("X-Amz-Signature="),
            "a real presigned URL: {url}"
        );
        let put = self
            .http
            .put(url)
            .header(
                "Content-Type",
                init["headers"]["Content-Type"].as_str().unwrap(),
            )
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert!(put.status().is_success(), "PUT {}", put.status());
        init["video_id"].as_str().unwrap().to_string()
    }

    async fn get(&self, token: &str, path: &str) -> (reqwest::header::HeaderMap, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        let headers = r.headers().clone();
        (headers, r.json().await.unwrap())
    }

    /// Invokes the handler as the template's event source mapping does (`BatchSize: 1`): one
    /// record per invocation, each with `budget` before its deadline. A record the handler
    /// acknowledges is deleted; one it hands back becomes visible again at once, as it would
    /// after its visibility timeout. Returns the number of invocations.
    async fn invoke_one_by_one(
        &self,
        worker: &AnalysisWorker,
        event: SqsEvent,
        budget: Duration,
    ) -> usize {
        let queue_url = self.config.queue_url.as_deref().unwrap();
        let count = event.records.len();
        for record in event.records {
            let receipt = record.receipt_handle.clone().unwrap();
            let id = record.message_id.clone().unwrap_or_default();
            let mut single = SqsEvent::default();
            single.records = vec![record];
            let response = handle_sqs_event(worker, single, Some(SystemTime::now() + budget)).await;
            let sqs = &self.clients.sqs;
            if response
                .batch_item_failures
                .iter()
                .any(|f| f.item_identifier == id)
            {
                sqs.change_message_visibility()
                    .queue_url(queue_url)
                    .receipt_handle(receipt)
                    .visibility_timeout(0)
                    .send()
                    .await
                    .unwrap();
            } else {
                sqs.delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .unwrap();
            }
        }
        count
    }

    /// Receives what moto's S3 notification put on the queue, shaped as the Lambda SQS event
    /// source delivers it.
    async fn receive_event(&self, want: usize) -> SqsEvent {
        let queue_url = self.config.queue_url.as_deref().unwrap();
        let mut records = Vec::new();
        for _ in 0..20 {
            let out = self
                .clients
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
                .send()
                .await
                .unwrap();
            for m in out.messages.unwrap_or_default() {
                let attributes: serde_json::Map<String, Value> = m
                    .attributes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_string(), Value::String(v)))
                    .collect();
                records.push(json!({
                    "messageId": m.message_id,
                    "receiptHandle": m.receipt_handle,
                    "body": m.body,
                    "attributes": attributes,
                    "messageAttributes": {},
                    "md5OfBody": m.md5_of_body,
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:analysis",
                    "awsRegion": "us-east-1",
                }));
            }
            let uploads = records
                .iter()
                .filter(|r| r["body"].as_str().unwrap_or("").contains("ObjectCreated"))
                .count();
            if uploads >= want {
                break;
            }
        }
        serde_json::from_value(json!({ "Records": records })).expect("a real-shaped SqsEvent")
    }
}

/// A tiny invocation budget: with a 1 s margin it forces segments, as a multi-hour video would
/// on Lambda.
const BUDGET: Duration = Duration::from_secs(4);

fn deadline() -> Option<SystemTime> {
    Some(SystemTime::now() + Duration::from_secs(900))
}

fn no_failures(r: &SqsBatchResponse) -> bool {
    r.batch_item_failures.is_empty()
}

/// Peak resident memory of this process and of its largest child (ffmpeg), in MB.
fn peak_rss_mb() -> (f64, f64) {
    let peak = |who| {
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut usage) };
        usage.ru_maxrss as f64 / 1024.0
    };
    (peak(libc::RUSAGE_SELF), peak(libc::RUSAGE_CHILDREN))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_to_the_presigned_url_is_analysed_through_the_s3_event() {
    let stack = stack().await;
    let mut worker = stack.worker(WorkerConfig::default());
    let token = stack.token().await;
    let pexels = std::fs::read(common::video("WolfgangLanger_Pexels.mp4")).unwrap();
    let id = stack.upload(&token, "pexels.mp4", pexels).await;
    // count what the analysis writes, at the ports, priced as DynamoDB prices writes
    let video_item = stack
        .clients
        .dynamodb
        .get_item()
        .table_name(&stack.config.table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("VIDEO#{id}")),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("META".into()),
        )
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let meter = Arc::new(WriteMeter::default());
    let metered = Arc::new(Metered {
        // frame items are counted by the store, which alone knows them
        inner: Arc::new(
            DynamoStore::new(&stack.clients, &stack.config.table).with_meter(meter.clone()),
        ),
        meter: meter.clone(),
        // the plan and counters the analysis adds to the video item
        video_item_bytes: item_bytes(&video_item) + 400,
    });
    worker.results = metered.clone();
    worker.ledger = metered;

    let event = stack.receive_event(1).await;
    let bodies: Vec<String> = event
        .records
        .iter()
        .filter_map(|r| r.body.clone())
        .collect();
    assert!(
        bodies
            .iter()
            .any(|b| b.contains(&id) && b.contains("ObjectCreated:Put")),
        "moto delivered the upload's S3 event: {bodies:?}"
    );
    let started = std::time::Instant::now();
    let response = handle_sqs_event(&worker, event.clone(), deadline()).await;
    let seconds = started.elapsed().as_secs_f64();
    assert!(no_failures(&response), "{response:?}");
    let (rss, child_rss) = peak_rss_mb();
    let frame_units = meter.frame_units.load(Ordering::Relaxed);
    let frame_items = meter.frame_items.load(Ordering::Relaxed);
    let video_minutes = 19.69 / 60.0;
    eprintln!(
        "FIGURE analysis invocation on the Pexels clip (19.7 s, 5 fps): {seconds:.2} s, peak RSS {rss:.0} MB (ffmpeg {child_rss:.0} MB)"
    );
    eprintln!(
        "FIGURE DynamoDB writes: {frame_items} frame chunk items ({} bytes) = {frame_units} WCU, {} bookkeeping writes = {} WCU; per minute of video: frames {:.0} WCU, in all {:.0} WCU",
        meter.frame_bytes.load(Ordering::Relaxed),
        meter.ledger_writes.load(Ordering::Relaxed),
        meter.ledger_units.load(Ordering::Relaxed),
        frame_units as f64 / video_minutes,
        meter.total_units() as f64 / video_minutes
    );
    // 472 frames at 23.98 fps: chunks 0..300 and 300..472, each written once
    assert_eq!(frame_items, 2, "each chunk written once");
    assert!(
        frame_units as f64 / video_minutes <= 40.0,
        "{frame_units} WCU"
    );

    let (_, video) = stack.get(&token, &format!("/videos/{id}")).await;
    assert_eq!(video["status"], "COMPLETED", "{video}");
    assert_eq!(video["progress"], 100);
    assert!((19.0..20.0).contains(&video["duration_seconds"].as_f64().unwrap()));
    assert_eq!(video["frame_count"], 99);
    assert!(video["processed_at"].is_string());
    let timeline = video["summary"]["timeline"].as_array().unwrap();
    let dominant_at = |second: u64| {
        let entry = timeline.iter().find(|e| e["second"] == second).unwrap();
        entry["mean"]
            .as_object()
            .unwrap()
            .iter()
            .max_by(|a, b| a.1.as_f64().unwrap().total_cmp(&b.1.as_f64().unwrap()))
            .unwrap()
            .0
            .clone()
    };
    assert_eq!(dominant_at(2), "sad");
    assert_eq!(dominant_at(15), "happy");

    // frames page by time, each once
    let mut seen: Vec<(u64, f64)> = Vec::new();
    let mut path = format!("/videos/{id}/frames?limit=40");
    loop {
        let (headers, page) = stack.get(&token, &path).await;
        for f in page.as_array().unwrap() {
            seen.push((
                f["frame_number"].as_u64().unwrap(),
                f["video_timestamp_sec"].as_f64().unwrap(),
            ));
        }
        match headers.get("link") {
            Some(l) => {
                let l = l.to_str().unwrap();
                path = l[1..l.find('>').unwrap()]
                    .trim_start_matches("/api/v2")
                    .to_string();
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 99);
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));

    // one person; the analysis function stored her thumbnail in the bucket, the API serves it
    let people = video["summary"]["people"].as_array().unwrap();
    assert_eq!(people.len(), 1, "{}", video["summary"]);
    assert_eq!(people[0]["frames"], 99);
    let thumbnail = stack
        .http
        .get(format!("{}/videos/{id}/people/1.jpg", stack.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(thumbnail.status(), 200);
    assert_eq!(&thumbnail.bytes().await.unwrap()[..2], &[0xff, 0xd8]);

    // the same event delivered again: acknowledged, and still one result set
    let again = handle_sqs_event(&worker, event, deadline()).await;
    assert!(no_failures(&again));
    let (frames, _) = domain::ports::ResultStore::frames(&*stack.store, &id, None, 1000)
        .await
        .unwrap();
    assert_eq!(frames.len(), 99);
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_put_to_a_used_upload_url_never_changes_what_is_analysed_or_streamed() {
    let stack = stack().await;
    let worker = stack.worker(WorkerConfig::default());
    let token = stack.token().await;
    let pexels = std::fs::read(common::video("WolfgangLanger_Pexels.mp4")).unwrap();
    let init: Value = stack
        .http
        .post(format!("{}/videos/upload/initialize", stack.base))
        .bearer_auth(&token)
        .json(&json!({"filename": "pexels.mp4"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = init["video_id"].as_str().unwrap().to_string();
    let url = init["upload_url"].as_str().unwrap().to_string();
    let put = |bytes: Vec<u8>| {
        let (http, url) = (stack.http.clone(), url.clone());
        async move {
            http.put(&url)
                .header("Content-Type", "video/mp4")
                .body(bytes)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert!(put(pexels.clone()).await.is_success());
    // the same still-valid URL, again, before the analysis ran: S3 itself cannot refuse it
    let swapped = b"not the video that was uploaded first\n".repeat(1000);
    assert!(put(swapped.clone()).await.is_success());

    let event = stack.receive_event(2).await;
    let response = handle_sqs_event(&worker, event, deadline()).await;
    assert!(
        no_failures(&response),
        "both events acknowledged: {response:?}"
    );
    let (_, video) = stack.get(&token, &format!("/videos/{id}")).await;
    assert_eq!(
        video["status"], "COMPLETED",
        "the first upload was analysed: {video}"
    );
    assert_eq!(video["frame_count"], 99);

    let versions = || async {
        stack
            .clients
            .s3
            .list_object_versions()
            .bucket(&stack.config.bucket)
            .prefix(init["s3_key"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .versions()
            .iter()
            .map(|v| v.size().unwrap_or(0) as usize)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        versions().await,
        vec![pexels.len()],
        "the second version was discarded"
    );

    // after COMPLETED, once more: discarded again, and the player still gets the first upload
    assert!(put(swapped).await.is_success());
    let event = stack.receive_event(1).await;
    assert!(no_failures(
        &handle_sqs_event(&worker, event, deadline()).await
    ));
    assert_eq!(versions().await, vec![pexels.len()]);
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let name = init["s3_key"].as_str().unwrap().rsplit('/').next().unwrap();
    let redirect = no_redirects
        .get(format!("{}/videos/stream/{name}", stack.base))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 307);
    let location = redirect.headers()["location"].to_str().unwrap().to_string();
    assert!(location.contains("versionId="), "{location}");
    let streamed = reqwest::get(&location)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256(&streamed), sha256(&pexels));
    let (_, video) = stack.get(&token, &format!("/videos/{id}")).await;
    assert_eq!(video["status"], "COMPLETED");
    assert_eq!(video["frame_count"], 99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_upload_fails_with_a_reason_and_its_message_is_not_retried() {
    let stack = stack().await;
    let worker = stack.worker(WorkerConfig::default());
    let token = stack.token().await;
    let id = stack
        .upload(
            &token,
            "holiday.mp4",
            b"definitely not an mp4 file".to_vec(),
        )
        .await;
    let event = stack.receive_event(1).await;
    let response = handle_sqs_event(&worker, event, deadline()).await;
    assert!(
        no_failures(&response),
        "a bad video is not retried: {response:?}"
    );
    let (_, video) = stack.get(&token, &format!("/videos/{id}")).await;
    assert_eq!(video["status"], "FAILED");
    let error = video["error"].as_str().unwrap();
    assert!(error.contains("the uploaded file"), "{error}");
    assert!(
        !error.contains("X-Amz"),
        "no presigned URL in the reason: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_video_fans_out_over_the_queue_and_the_last_segment_completes_it() {
    let stack = stack().await;
    let worker = stack.worker(WorkerConfig {
        deadline_margin: Duration::from_secs(1),
        planning_fps: 10.0,
        ..WorkerConfig::default()
    });
    let token = stack.token().await;
    let pexels = std::fs::read(common::video("WolfgangLanger_Pexels.mp4")).unwrap();
    let id = stack.upload(&token, "pexels.mp4", pexels).await;
    let event = stack.receive_event(1).await;
    let mut invocations = stack.invoke_one_by_one(&worker, event, BUDGET).await;
    let (_, video) = stack.get(&token, &format!("/videos/{id}")).await;
    assert_eq!(video["status"], "PROCESSING");
    // the segments and continuations are SQS messages now; deliver them until none are left
    loop {
        let event = stack.receive_event(0).await;
        if event.records.is_empty() {
            break;
        }
        invocations += stack.invoke_one_by_one(&worker, event, BUDGET).await;
        // 4 segments need 4 invocations; a slow machine adds continuations, never unboundedly
        assert!(
            invocations < 40,
            "{invocations} invocations and still not done"
        );
    }
    let video = domain::ports::VideoStore::video(&*stack.store, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(video.analysis.status, VideoStatus::Completed);
    assert_eq!(video.analysis.frames_analyzed, 99);
    // each segment's tracks were linked across segments into one person
    let summary = video.analysis.summary.clone().unwrap();
    assert_eq!(summary.people.len(), 1, "{:#?}", summary.people);
    assert!(
        summary.people[0].tracks.len() >= 4,
        "{:?}",
        summary.people[0]
    );
    let (frames, _) = domain::ports::ResultStore::frames(&*stack.store, &id, None, 1000)
        .await
        .unwrap();
    assert_eq!(frames.len(), 99);
    let plan = domain::ports::AnalysisLedger::plan(&*stack.store, &id)
        .await
        .unwrap()
        .unwrap();
    // 3 s of work at the planned 10 frames/s fits 6 s of video: at least 4 segments of the 19.7 s
    // clip, more when the machine is slow to reach the planning step
    assert!(plan.segments.len() >= 4, "{} segments", plan.segments.len());
}

/// A result store that is down: every write fails, as a persistently throttled table would.
struct UnavailableResults;

#[async_trait::async_trait]
impl domain::ports::ResultStore for UnavailableResults {
    async fn put_frames(
        &self,
        _video_id: &str,
        _frames: &[domain::FrameResult],
    ) -> domain::ports::StoreResult<()> {
        Err(domain::ports::StoreError::Backend(
            "ThrottlingException: Rate of requests exceeds the allowed throughput".into(),
        ))
    }
    async fn frames(
        &self,
        _video_id: &str,
        _after: Option<u64>,
        _limit: usize,
    ) -> domain::ports::StoreResult<(Vec<domain::FrameResult>, Option<u64>)> {
        Ok((vec![], None))
    }
    async fn put_tracks(
        &self,
        _video_id: &str,
        _tracks: &[domain::TrackProfile],
    ) -> domain::ports::StoreResult<()> {
        Err(domain::ports::StoreError::Backend(
            "ThrottlingException: Rate of requests exceeds the allowed throughput".into(),
        ))
    }
    async fn tracks(
        &self,
        _video_id: &str,
    ) -> domain::ports::StoreResult<Vec<domain::TrackProfile>> {
        Ok(vec![])
    }
    async fn delete_frames(&self, _video_id: &str) -> domain::ports::StoreResult<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_keeps_failing_goes_to_the_dlq_and_completes_when_redriven() {
    let stack = stack().await;
    let queue_url = stack.config.queue_url.clone().unwrap();
    let sqs = &stack.clients.sqs;
    let dlq_url = sqs
        .create_queue()
        .queue_name(format!("dlq-{}", uuid::Uuid::new_v4().simple()))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    sqs.set_queue_attributes()
        .queue_url(&queue_url)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}).to_string(),
        )
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "1",
        )
        .send()
        .await
        .unwrap();

    let mut broken = stack.worker(WorkerConfig::default());
    broken.results = Arc::new(UnavailableResults);
    let token = stack.token().await;
    let pexels = std::fs::read(common::video("WolfgangLanger_Pexels.mp4")).unwrap();
    let id = stack.upload(&token, "pexels.mp4", pexels).await;

    // two deliveries, two failures reported back to SQS
    for attempt in 1..=2 {
        let event = stack.receive_event(1).await;
        let upload: Vec<_> = event
            .records
            .iter()
            .filter(|r| r.body.as_deref().unwrap_or("").contains(&id))
            .collect();
        assert_eq!(upload.len(), 1, "delivery {attempt}");
        let response = handle_sqs_event(&broken, event.clone(), deadline()).await;
        assert_eq!(
            response
                .batch_item_failures
                .iter()
                .map(|f| f.item_identifier.clone())
                .collect::<Vec<_>>(),
            vec![upload[0].message_id.clone().unwrap()],
            "delivery {attempt}: only the upload is retried"
        );
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    let (_, video) = stack.get(&token, &format!("/videos/{id}")).await;
    assert_eq!(video["status"], "PROCESSING");

    // past maxReceiveCount the next receive moves the message to the DLQ
    let after = stack.receive_event(0).await;
    assert!(
        after
            .records
            .iter()
            .all(|r| !r.body.as_deref().unwrap_or("").contains(&id)),
        "not delivered a third time"
    );
    // redriven from the DLQ, it completes normally
    // (moto's s3:TestEvent, never deleted here, is in the DLQ too)
    let mut redriven = Vec::new();
    for _ in 0..5 {
        let messages = sqs
            .receive_message()
            .queue_url(&dlq_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default();
        redriven.extend(
            messages
                .into_iter()
                .filter(|m| m.body.as_deref().unwrap_or("").contains(&id)),
        );
        if !redriven.is_empty() {
            break;
        }
    }
    assert_eq!(redriven.len(), 1, "the upload's event is in the DLQ");
    let event: SqsEvent = serde_json::from_value(json!({"Records": [{
        "messageId": redriven[0].message_id,
        "receiptHandle": redriven[0].receipt_handle,
        "body": redriven[0].body,
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:analysis",
        "awsRegion": "us-east-1",
    }]}))
    .unwrap();
    let healthy = stack.worker(WorkerConfig::default());
    let response = handle_sqs_event(&healthy, event, deadline()).await;
    assert!(no_failures(&response), "{response:?}");
    let (_, video) = stack.get(&token, &format!("/videos/{id}")).await;
    assert_eq!(video["status"], "COMPLETED", "{video}");
    assert_eq!(video["frame_count"], 99);
}

#[tokio::test]
async fn test_events_and_malformed_bodies_are_acknowledged() {
    let stack = stack().await;
    let worker = stack.worker(WorkerConfig::default());
    for fixture in [
        "sqs-s3-test-event.json",
        "sqs-malformed.json",
        "sqs-s3-object-created.json",
    ] {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../events")
                .join(fixture),
        )
        .unwrap();
        let event: SqsEvent = serde_json::from_str(&text).unwrap();
        // nothing to retry: a test event, garbage, and an upload nobody initialized
        let response = handle_sqs_event(&worker, event, deadline()).await;
        assert!(no_failures(&response), "{fixture}: {response:?}");
    }
}
