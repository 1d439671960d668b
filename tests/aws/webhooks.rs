//! Webhooks over moto: the store contract (`domain::webhook_contract`) on DynamoDB, the delivery
//! queue on SQS, the webhook key from Secrets Manager, and the deliver function's handler fed
//! from the queue as Lambda's event source mapping feeds it: a message it acknowledges is
//! deleted, one it hands back becomes visible again (at once here, after the visibility
//! timeout on AWS).
//!
//! What the adapters ask of SQS (each SendMessage's body and `DelaySeconds`) is read off the SQS
//! client by an interceptor, so the delays are checked as sent, without waiting them out.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_adapters::lambda::{LambdaConfigError, WebhookKeySource, handle_delivery_event};
use aws_adapters::webhook_store::{DeliveryMessage, MAX_DELAY_SECONDS};
use aws_adapters::{AwsClients, DynamoStore, SqsDeliveries};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_sqs::config::{ConfigBag, Intercept};
use aws_sdk_sqs::error::BoxError;
use aws_sdk_sqs::operation::send_message::SendMessageInput;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use domain::webhooks::{
    Delivery, DeliveryQueue, DeliveryStatus, RetrySchedule, SecretBox, TargetPolicy,
    WebhookEndpoint, WebhookEvent, WebhookStore, delivery_id, new_endpoint_id, new_signing_secret,
    queue_video_notifications,
};
use domain::{AnalysisState, VideoStatus};
use serde_json::{Value, json};
use webhooks::{Deliverer, DeliveryConfig};

async fn table() -> Box<DynamoStore> {
    Box::new(super::adapters::store().await)
}

domain::webhook_contract_tests!(table);

/// A SendMessage's body and `DelaySeconds`.
type SentMessage = (String, Option<i32>);

/// Every SendMessage the client makes.
#[derive(Debug, Clone, Default)]
struct Sent(Arc<Mutex<Vec<SentMessage>>>);

impl Sent {
    fn all(&self) -> Vec<(DeliveryMessage, Option<i32>)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(body, delay)| (serde_json::from_str(body).unwrap(), *delay))
            .collect()
    }
}

impl Intercept for Sent {
    fn name(&self) -> &'static str {
        "record SendMessage"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(input) = context.input().downcast_ref::<SendMessageInput>() {
            self.0.lock().unwrap().push((
                input.message_body().unwrap_or_default().to_string(),
                input.delay_seconds(),
            ));
        }
        Ok(())
    }
}

/// A table, a delivery queue and the key, as the deliver function has them.
struct Fixture {
    clients: AwsClients,
    store: Arc<DynamoStore>,
    queue_url: String,
    deliveries: Arc<SqsDeliveries>,
    sent: Sent,
    key: SecretBox,
}

async fn fixture() -> Fixture {
    let (mut clients, config) = super::adapters::clients().await;
    let sent = Sent::default();
    clients.sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&clients.sdk)
            .interceptor(sent.clone())
            .build(),
    );
    let store = Arc::new(DynamoStore::new(&clients, &config.table));
    store.create_table().await.unwrap();
    let queue_url = clients
        .sqs
        .create_queue()
        .queue_name(format!("deliveries-{}", config.table))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    Fixture {
        deliveries: Arc::new(SqsDeliveries::new(&clients, &queue_url)),
        clients,
        store,
        queue_url,
        sent,
        key: SecretBox::from_key_material(&SecretBox::generate_key()).unwrap(),
    }
}

impl Fixture {
    /// A deliverer for receivers on this machine, retrying after 1 s.
    fn deliverer(&self, store: Arc<dyn WebhookStore>) -> Deliverer {
        let config = DeliveryConfig {
            policy: TargetPolicy::development(),
            schedule: RetrySchedule {
                attempts: 5,
                first: Duration::from_secs(1),
                factor: 1.0,
                cap: Duration::from_secs(1),
                jitter: 0.0,
            },
            timeout: Duration::from_secs(10),
            claim: Duration::from_secs(30),
            ..DeliveryConfig::default()
        };
        Deliverer::new(store, self.deliveries.clone(), self.key.clone(), config).unwrap()
    }

    /// The queue's messages now visible, shaped as the Lambda SQS event source delivers them
    /// (waiting up to `wait_seconds` for the first).
    async fn receive(&self, wait_seconds: i32) -> SqsEvent {
        let out = self
            .clients
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait_seconds)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        let records: Vec<Value> = out
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                let attributes: serde_json::Map<String, Value> = m
                    .attributes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_string(), Value::String(v)))
                    .collect();
                json!({
                    "messageId": m.message_id,
                    "receiptHandle": m.receipt_handle,
                    "body": m.body,
                    "attributes": attributes,
                    "messageAttributes": {},
                    "md5OfBody": m.md5_of_body,
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:deliveries",
                    "awsRegion": "us-east-1",
                })
            })
            .collect();
        serde_json::from_value(json!({ "Records": records })).expect("a real-shaped SqsEvent")
    }

    /// Settles a handled batch as the event source mapping does: acknowledged messages are
    /// deleted, those handed back become visible again (at once, not after the timeout).
    async fn settle(&self, event: &SqsEvent, response: &SqsBatchResponse) {
        for record in &event.records {
            let receipt = record.receipt_handle.clone().unwrap();
            let failed = response
                .batch_item_failures
                .iter()
                .any(|f| Some(&f.item_identifier) == record.message_id.as_ref());
            if failed {
                self.clients
                    .sqs
                    .change_message_visibility()
                    .queue_url(&self.queue_url)
                    .receipt_handle(receipt)
                    .visibility_timeout(0)
                    .send()
                    .await
                    .unwrap();
            } else {
                self.clients
                    .sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    async fn delayed_messages(&self) -> u64 {
        let out = self
            .clients
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .unwrap();
        out.attributes.unwrap()[&QueueAttributeName::ApproximateNumberOfMessagesDelayed]
            .parse()
            .unwrap()
    }
}

fn no_failures(response: &SqsBatchResponse) -> bool {
    response.batch_item_failures.is_empty()
}

/// What a receiver got: each request's headers and body.
type Received = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// A receiver on 127.0.0.1 answering the requests with `codes` in turn (the last from then on).
async fn receiver(codes: Vec<u16>) -> (String, Received) {
    let received: Received = Arc::default();
    let log = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let log = log.clone();
            let codes = codes.clone();
            async move {
                let mut log = log.lock().unwrap();
                log.push((headers, body));
                let code = codes[(log.len() - 1).min(codes.len() - 1)];
                StatusCode::from_u16(code).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), received)
}

fn completed() -> AnalysisState {
    AnalysisState {
        status: VideoStatus::Completed,
        progress: 100,
        frames_analyzed: 12,
        processed_at: Some(Utc::now()),
        ..AnalysisState::pending()
    }
}

fn pending_delivery(id_video: &str, due: chrono::DateTime<Utc>) -> Delivery {
    Delivery {
        id: delivery_id(id_video, WebhookEvent::VideoCompleted, "wh_far"),
        user_id: "ann".into(),
        log: "wh_far".into(),
        url: None,
        event: WebhookEvent::VideoCompleted,
        video_id: id_video.into(),
        payload: "{}".into(),
        created_at: Utc::now(),
        status: DeliveryStatus::Pending,
        attempts: vec![],
        next_attempt_at: Some(due),
        schedule_start: 0,
        version: 0,
    }
}

#[tokio::test]
async fn deliveries_go_onto_the_queue_delayed_until_due() {
    let f = fixture().await;
    let now = Utc::now();
    let later = now + chrono::Duration::seconds(600);
    let much_later = now + chrono::Duration::hours(3);
    f.deliveries.enqueue("msg_now", now).await.unwrap();
    f.deliveries.enqueue("msg_later", later).await.unwrap();
    f.deliveries
        .enqueue("msg_much_later", much_later)
        .await
        .unwrap();
    let sent = f.sent.all();
    let delays: Vec<Option<i32>> = sent.iter().map(|(_, d)| *d).collect();
    assert_eq!(delays[0], Some(0));
    // 600 s minus the moments between the two calls, rounded up
    assert!(
        delays[1].is_some_and(|d| (500..=600).contains(&d)),
        "{delays:?}"
    );
    assert_eq!(
        delays[2],
        Some(MAX_DELAY_SECONDS),
        "SQS delays 15 min at most"
    );
    assert_eq!(sent[1].0.due, later);

    // only the message due now can be received; the others wait in the queue
    let event = f.receive(5).await;
    assert_eq!(event.records.len(), 1, "{event:?}");
    let message: DeliveryMessage =
        serde_json::from_str(event.records[0].body.as_deref().unwrap()).unwrap();
    assert_eq!(
        message,
        DeliveryMessage {
            delivery_id: "msg_now".into(),
            due: now
        }
    );
    assert_eq!(f.delayed_messages().await, 2);

    // the handler acknowledges a message about a delivery that does not exist
    let deliverer = f.deliverer(f.store.clone());
    let response = handle_delivery_event(&deliverer, &*f.deliveries, event).await;
    assert!(no_failures(&response), "{response:?}");
}

#[tokio::test]
async fn a_finished_video_is_delivered_through_sqs_after_two_failed_attempts() {
    let f = fixture().await;
    let (url, received) = receiver(vec![500, 500, 200]).await;
    let secret = new_signing_secret();
    let endpoint = WebhookEndpoint {
        id: new_endpoint_id(),
        user_id: "ann".into(),
        url,
        events: vec![WebhookEvent::VideoCompleted],
        description: "CI".into(),
        sealed_secret: f.key.seal(&secret),
        created_at: Utc::now() - chrono::Duration::minutes(1),
        updated_at: Utc::now() - chrono::Duration::minutes(1),
    };
    f.store.create_endpoint(&endpoint).await.unwrap();
    let state = completed();
    let video = domain::Video {
        analysis: state.clone(),
        ..domain::memory::pending_video("v1", "ann")
    };
    let queued = queue_video_notifications(&*f.store, &*f.deliveries, &video, &state)
        .await
        .unwrap();
    assert_eq!(queued, 1);
    let id = delivery_id("v1", WebhookEvent::VideoCompleted, &endpoint.id);

    // the event source mapping: receive, invoke, settle, until the delivery is done
    let deliverer = f.deliverer(f.store.clone());
    let mut handled = 0;
    for _ in 0..60 {
        let event = f.receive(2).await;
        if event.records.is_empty() {
            continue;
        }
        handled += event.records.len();
        let response = handle_delivery_event(&deliverer, &*f.deliveries, event.clone()).await;
        assert!(no_failures(&response), "{response:?}");
        f.settle(&event, &response).await;
        let delivery = f.store.delivery(&id).await.unwrap().unwrap();
        if delivery.status != DeliveryStatus::Pending {
            break;
        }
    }

    let delivery = f.store.delivery(&id).await.unwrap().unwrap();
    assert_eq!(delivery.status, DeliveryStatus::Delivered, "{delivery:?}");
    let codes: Vec<Option<u16>> = delivery.attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(500), Some(500), Some(200)]);
    assert_eq!(handled, 3, "one message per attempt");
    // the first message from queueing, one per retry from the deliverer, each delayed
    let sent = f.sent.all();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(sent.iter().all(|(m, _)| m.delivery_id == id));
    assert_eq!(sent[0].1, Some(0));
    assert!(
        sent[1..].iter().all(|(_, d)| d.is_some_and(|d| d >= 1)),
        "{sent:?}"
    );
    // the same id and body every time, signed with the endpoint's secret
    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 3);
    let verifier = standardwebhooks::Webhook::new(&secret).unwrap();
    for (headers, body) in received.iter() {
        assert_eq!(headers["webhook-id"], id.as_str());
        assert_eq!(body, &delivery.payload);
        verifier.verify(body.as_bytes(), headers).unwrap();
    }
    assert_eq!(f.receive(0).await.records.len(), 0, "nothing left queued");
}

#[tokio::test]
async fn a_delivery_due_in_two_hours_is_sent_on_its_way_again_not_attempted() {
    let f = fixture().await;
    let (url, received) = receiver(vec![200]).await;
    let due = Utc::now() + chrono::Duration::hours(2);
    let delivery = Delivery {
        url: Some(url),
        log: domain::webhooks::CALLBACK_LOG.into(),
        ..pending_delivery("v2", due)
    };
    f.store.create_delivery(&delivery).await.unwrap();
    f.deliveries.enqueue(&delivery.id, due).await.unwrap();
    let (first, delay) = f.sent.all().remove(0);
    assert_eq!(delay, Some(MAX_DELAY_SECONDS));

    // SQS hands it over after its 15 minutes: here at once, as a record of that body
    let event: SqsEvent = serde_json::from_value(json!({"Records": [{
        "messageId": "7c4f8a0e-5d0a-4a8e-9a51-0d3f1b7e2c11",
        "receiptHandle": "handle",
        "body": serde_json::to_string(&first).unwrap(),
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:deliveries",
        "awsRegion": "us-east-1",
    }]}))
    .unwrap();
    let deliverer = f.deliverer(f.store.clone());
    let response = handle_delivery_event(&deliverer, &*f.deliveries, event).await;
    assert!(no_failures(&response), "{response:?}");

    let sent = f.sent.all();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(
        sent[1],
        (
            DeliveryMessage {
                delivery_id: delivery.id.clone(),
                due
            },
            Some(MAX_DELAY_SECONDS)
        )
    );
    assert_eq!(
        f.store.delivery(&delivery.id).await.unwrap(),
        Some(delivery),
        "not attempted, not even claimed"
    );
    assert!(received.lock().unwrap().is_empty());
    assert_eq!(f.delayed_messages().await, 2);
}

#[tokio::test]
async fn a_failing_store_hands_the_message_back_and_garbage_is_dropped() {
    let f = fixture().await;
    let broken = Arc::new(DynamoStore::new(&f.clients, "no-such-table"));
    let deliverer = f.deliverer(broken);
    f.deliveries
        .enqueue("msg_somewhere", Utc::now())
        .await
        .unwrap();
    let mut event = f.receive(5).await;
    assert_eq!(event.records.len(), 1);
    let mut garbage = event.records[0].clone();
    garbage.message_id = Some("garbage".into());
    garbage.body = Some("not a delivery {".into());
    event.records.push(garbage);
    let response = handle_delivery_event(&deliverer, &*f.deliveries, event.clone()).await;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, [event.records[0].message_id.as_deref().unwrap()]);
}

#[tokio::test]
async fn the_delivery_event_fixture_is_acknowledged() {
    let f = fixture().await;
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events/sqs-delivery.json"),
    )
    .unwrap();
    let event: SqsEvent = serde_json::from_str(&text).unwrap();
    let deliverer = f.deliverer(f.store.clone());
    // a delivery this table never had: nothing to do, nothing to retry
    let response = handle_delivery_event(&deliverer, &*f.deliveries, event).await;
    assert!(no_failures(&response), "{response:?}");
    assert!(f.sent.all().is_empty());
}

#[tokio::test]
async fn the_webhook_key_is_read_from_secrets_manager() {
    let f = fixture().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&f.clients.sdk);
    let create = |value: String| {
        let secrets = secrets.clone();
        async move {
            secrets
                .create_secret()
                .name(format!(
                    "deepemotion/{}/webhook-key",
                    uuid::Uuid::new_v4().simple()
                ))
                .secret_string(value)
                .send()
                .await
                .unwrap()
                .arn
                .unwrap()
        }
    };
    // as the template generates it: 64 letters and digits
    let material = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let arn = create(material.clone()).await;
    let key = WebhookKeySource::SecretsManager(arn)
        .read(&f.clients)
        .await
        .unwrap();
    let sealed = key.seal("whsec_c2VjcmV0");
    let same = SecretBox::from_key_material(&material).unwrap();
    assert_eq!(same.open(&sealed).unwrap(), "whsec_c2VjcmV0");

    // too short a key stops the cold start, without showing it
    let arn = create("short-key".into()).await;
    let refused = WebhookKeySource::SecretsManager(arn)
        .read(&f.clients)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, LambdaConfigError::Invalid(_)),
        "{refused}"
    );
    let message = refused.to_string();
    assert!(message.contains("WEBHOOK_KEY_ARN"), "{message}");
    assert!(!message.contains("short-key"), "{message}");
    assert!(!format!("{:?}", WebhookKeySource::Dev(material.clone())).contains(&material));
}

/// DynamoDB's own extra on top of the contract: its delivery cursors travel in query strings
/// as they are, and page only the log they were made for.
#[tokio::test]
async fn delivery_cursors_are_url_safe_and_bound_to_their_log() {
    let f = fixture().await;
    for i in 0..3 {
        let mut d = pending_delivery(&format!("v{i}"), Utc::now());
        d.created_at = Utc::now() + chrono::Duration::seconds(i);
        f.store.create_delivery(&d).await.unwrap();
    }
    let page = f.store.deliveries("ann", "wh_far", 1, None).await.unwrap();
    let cursor = page.next.unwrap();
    assert!(
        cursor
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "{cursor}"
    );
    assert_eq!(
        f.store
            .deliveries("ann", "wh_far", 5, Some(&cursor))
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    for (user, log) in [("bob", "wh_far"), ("ann", "wh_other")] {
        assert!(matches!(
            f.store.deliveries(user, log, 5, Some(&cursor)).await,
            Err(domain::ports::StoreError::BadCursor)
        ));
    }
    assert!(matches!(
        f.store
            .deliveries("ann", "wh_far", 5, Some("garbage!"))
            .await,
        Err(domain::ports::StoreError::BadCursor)
    ));
}
