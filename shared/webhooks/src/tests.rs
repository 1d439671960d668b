//! The deliverer against receivers on 127.0.0.1 (development policy) and the production policy
//! against addresses it must refuse, over the in-memory store and queue.

use std::sync::Mutex;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use domain::memory::{MemoryDeliveryQueue, MemoryWebhooks};
use domain::webhooks::{WebhookEndpoint, WebhookEvent, delivery_id, new_signing_secret};

use super::*;

/// What a receiver got: the headers and body of each request.
type Received = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// A receiver on 127.0.0.1 that answers each request with the next of `answers` (the last one
/// from then on); `None` never answers.
async fn receiver(answers: Vec<Option<Response>>) -> (String, Received) {
    let received: Received = Arc::default();
    let answers = Arc::new(Mutex::new(answers));
    let log = received.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: String| {
            let (log, answers) = (log.clone(), answers.clone());
            async move {
                log.lock().unwrap().push((headers, body));
                let next = {
                    let mut answers = answers.lock().unwrap();
                    if answers.len() > 1 {
                        answers.remove(0)
                    } else {
                        answers[0].as_ref().map(clone_response)
                    }
                };
                match next {
                    Some(response) => response,
                    None => {
                        std::future::pending::<()>().await;
                        unreachable!()
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), received)
}

fn clone_response(r: &Response) -> Response {
    let mut copy = r.status().into_response();
    *copy.headers_mut() = r.headers().clone();
    copy
}

fn status(code: u16) -> Option<Response> {
    Some(StatusCode::from_u16(code).unwrap().into_response())
}

struct Fixture {
    store: Arc<MemoryWebhooks>,
    queue: Arc<MemoryDeliveryQueue>,
    secrets: SecretBox,
    secret: String,
}

fn fixture() -> Fixture {
    Fixture {
        store: Arc::default(),
        queue: Arc::default(),
        secrets: SecretBox::from_key_material(&SecretBox::generate_key()).unwrap(),
        secret: new_signing_secret(),
    }
}

fn quick(policy: TargetPolicy) -> DeliveryConfig {
    DeliveryConfig {
        policy,
        schedule: RetrySchedule {
            attempts: 3,
            first: Duration::from_millis(20),
            factor: 2.0,
            cap: Duration::from_secs(1),
            jitter: 0.0,
        },
        timeout: Duration::from_secs(5),
        claim: Duration::from_secs(7),
        response_cap: 4096,
    }
}

impl Fixture {
    fn deliverer(&self, config: DeliveryConfig) -> Deliverer {
        Deliverer::new(
            self.store.clone(),
            self.queue.clone(),
            self.secrets.clone(),
            config,
        )
        .unwrap()
    }

    /// An endpoint for `url` and a pending delivery to it.
    async fn delivery_to(&self, url: &str) -> String {
        let now = Utc::now();
        self.store
            .create_endpoint(&WebhookEndpoint {
                id: "wh_1".into(),
                user_id: "ann".into(),
                url: url.into(),
                events: vec![WebhookEvent::VideoCompleted],
                description: String::new(),
                sealed_secret: self.secrets.seal(&self.secret),
                created_at: now,
                updated_at: now,
            })
            .await
            .unwrap();
        let delivery = Delivery {
            id: delivery_id("v1", WebhookEvent::VideoCompleted, "wh_1"),
            user_id: "ann".into(),
            log: "wh_1".into(),
            url: None,
            event: WebhookEvent::VideoCompleted,
            video_id: "v1".into(),
            payload: r#"{"type":"video.completed","timestamp":"2026-12-01T00:00:00Z","data":{"video_id":"v1"}}"#.into(),
            created_at: now,
            status: DeliveryStatus::Pending,
            attempts: vec![],
            next_attempt_at: Some(now),
            schedule_start: 0,
            version: 0,
        };
        self.store.create_delivery(&delivery).await.unwrap();
        delivery.id
    }

    async fn stored(&self, id: &str) -> Delivery {
        self.store.delivery(id).await.unwrap().unwrap()
    }

    /// Attempts the delivery whenever it is due, until it is neither pending nor retrying.
    async fn run(&self, deliverer: &Deliverer, id: &str) -> AttemptOutcome {
        loop {
            match deliverer.attempt(id).await.unwrap() {
                AttemptOutcome::Retrying { at } | AttemptOutcome::NotDue { at } => {
                    let wait = (at - Utc::now()).to_std().unwrap_or_default();
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }
}

#[tokio::test]
async fn a_delivery_is_signed_so_that_the_reference_implementation_verifies_it() {
    let f = fixture();
    let (url, received) = receiver(vec![status(204)]).await;
    let id = f.delivery_to(&url).await;
    let outcome = f
        .run(&f.deliverer(quick(TargetPolicy::development())), &id)
        .await;
    assert_eq!(outcome, AttemptOutcome::Delivered);
    let received = received.lock().unwrap().clone();
    let (headers, body) = &received[0];
    assert_eq!(headers["webhook-id"], id.as_str());
    assert_eq!(headers["content-type"], "application/json");
    let verifier = standardwebhooks::Webhook::new(&f.secret).unwrap();
    verifier.verify(body.as_bytes(), headers).unwrap();
    assert!(verifier.verify(b"{\"tampered\":true}", headers).is_err());
    let other = standardwebhooks::Webhook::new(&new_signing_secret()).unwrap();
    assert!(other.verify(body.as_bytes(), headers).is_err());
    let stored = f.stored(&id).await;
    assert_eq!(stored.status, DeliveryStatus::Delivered);
    assert_eq!(stored.attempts[0].status_code, Some(204));
}

#[tokio::test]
async fn failures_are_retried_with_growing_waits_until_one_succeeds() {
    let f = fixture();
    let (url, received) = receiver(vec![status(500), status(500), status(200)]).await;
    let id = f.delivery_to(&url).await;
    let outcome = f
        .run(&f.deliverer(quick(TargetPolicy::development())), &id)
        .await;
    assert_eq!(outcome, AttemptOutcome::Delivered);
    let stored = f.stored(&id).await;
    let codes: Vec<_> = stored.attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(500), Some(500), Some(200)]);
    let gaps: Vec<_> = stored
        .attempts
        .windows(2)
        .map(|w| w[1].at - w[0].at)
        .collect();
    assert!(gaps[1] > gaps[0], "waits must grow: {gaps:?}");
    // one event, the same id and body every time
    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 3);
    assert!(
        received
            .iter()
            .all(|(h, b)| h["webhook-id"] == id.as_str() && *b == received[0].1)
    );
    // each retry was queued for when it is due
    let queued = f.queue.take();
    assert_eq!(queued.len(), 2);
    assert!(queued.iter().all(|(qid, _)| *qid == id));
}

#[tokio::test]
async fn a_receiver_that_never_answers_exhausts_the_schedule_and_the_delivery_fails() {
    let f = fixture();
    let (url, received) = receiver(vec![None]).await;
    let id = f.delivery_to(&url).await;
    let config = DeliveryConfig {
        timeout: Duration::from_millis(300),
        ..quick(TargetPolicy::development())
    };
    let outcome = f.run(&f.deliverer(config), &id).await;
    assert_eq!(outcome, AttemptOutcome::Failed);
    let stored = f.stored(&id).await;
    assert_eq!(stored.status, DeliveryStatus::Failed);
    assert_eq!(stored.attempts.len(), 3);
    assert!(stored.attempts.iter().all(|a| a.status_code.is_none()
        && a.error.as_deref() == Some("the receiver did not answer in time")));
    assert_eq!(received.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let f = fixture();
    let (elsewhere, reached) = receiver(vec![status(200)]).await;
    let mut redirect = StatusCode::FOUND.into_response();
    redirect
        .headers_mut()
        .insert("location", elsewhere.parse().unwrap());
    let (url, _) = receiver(vec![Some(redirect)]).await;
    let id = f.delivery_to(&url).await;
    let deliverer = f.deliverer(quick(TargetPolicy::development()));
    assert!(matches!(
        deliverer.attempt(&id).await.unwrap(),
        AttemptOutcome::Retrying { .. }
    ));
    let stored = f.stored(&id).await;
    assert_eq!(stored.attempts[0].status_code, Some(302));
    assert!(reached.lock().unwrap().is_empty());
}

#[tokio::test]
async fn production_refuses_private_targets_at_every_attempt() {
    let f = fixture();
    let (url, received) = receiver(vec![status(200)]).await;
    // registered while in development, delivered in production: refused, nothing sent
    let id = f.delivery_to(&url).await;
    let outcome = f
        .deliverer(quick(TargetPolicy::default()))
        .attempt(&id)
        .await
        .unwrap();
    assert_eq!(outcome, AttemptOutcome::Failed);
    let stored = f.stored(&id).await;
    assert!(
        stored.attempts[0]
            .error
            .as_deref()
            .unwrap()
            .contains("https"),
        "{stored:?}"
    );
    assert!(received.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_resolver_refuses_names_of_private_addresses() {
    let resolver = GuardedResolver {
        policy: TargetPolicy::default(),
    };
    let refused = resolver
        .resolve("localhost".parse().unwrap())
        .await
        .err()
        .expect("localhost must be refused");
    assert!(
        refused.to_string().contains("not a public address"),
        "{refused}"
    );
    let dev = GuardedResolver {
        policy: TargetPolicy::development(),
    };
    assert!(dev.resolve("localhost".parse().unwrap()).await.is_ok());
}

#[tokio::test]
async fn a_deleted_endpoint_or_a_dropped_event_ends_its_deliveries_without_sending() {
    let f = fixture();
    let (url, received) = receiver(vec![status(200)]).await;
    let id = f.delivery_to(&url).await;
    let mut endpoint = f.store.endpoint("ann", "wh_1").await.unwrap().unwrap();
    endpoint.events = vec![WebhookEvent::VideoFailed];
    f.store.update_endpoint(&endpoint).await.unwrap();
    let deliverer = f.deliverer(quick(TargetPolicy::development()));
    assert_eq!(
        deliverer.attempt(&id).await.unwrap(),
        AttemptOutcome::Failed
    );
    assert!(received.lock().unwrap().is_empty());
    assert_eq!(
        deliverer.attempt(&id).await.unwrap(),
        AttemptOutcome::Finished
    );
}

#[tokio::test]
async fn a_claimed_delivery_is_not_attempted_twice_at_once() {
    let f = fixture();
    let (url, received) = receiver(vec![status(200)]).await;
    let id = f.delivery_to(&url).await;
    let mut claimed = f.stored(&id).await;
    claimed.claim(Utc::now(), Duration::from_secs(60));
    assert!(f.store.replace_delivery(&claimed, 0).await.unwrap());
    let deliverer = f.deliverer(quick(TargetPolicy::development()));
    assert!(matches!(
        deliverer.attempt(&id).await.unwrap(),
        AttemptOutcome::NotDue { .. }
    ));
    assert!(received.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_callback_is_signed_with_the_owners_secret_made_on_first_use() {
    let f = fixture();
    let (url, received) = receiver(vec![status(200)]).await;
    let now = Utc::now();
    let delivery = Delivery {
        id: delivery_id("v2", WebhookEvent::VideoFailed, CALLBACK_LOG),
        user_id: "bob".into(),
        log: CALLBACK_LOG.into(),
        url: Some(url),
        event: WebhookEvent::VideoFailed,
        video_id: "v2".into(),
        payload: r#"{"type":"video.failed"}"#.into(),
        created_at: now,
        status: DeliveryStatus::Pending,
        attempts: vec![],
        next_attempt_at: None,
        schedule_start: 0,
        version: 0,
    };
    f.store.create_delivery(&delivery).await.unwrap();
    let deliverer = f.deliverer(quick(TargetPolicy::development()));
    assert_eq!(
        deliverer.attempt(&delivery.id).await.unwrap(),
        AttemptOutcome::Delivered
    );
    let sealed = f.store.signing_secret("bob").await.unwrap().unwrap();
    let secret = f.secrets.open(&sealed).unwrap();
    let received = received.lock().unwrap().clone();
    standardwebhooks::Webhook::new(&secret)
        .unwrap()
        .verify(received[0].1.as_bytes(), &received[0].0)
        .unwrap();
}

#[test]
fn the_schedule_and_timeout_come_from_the_environment() {
    let vars = |name: &str| match name {
        "DEEPEMOTION_WEBHOOK_FIRST_RETRY_SECS" => Some("0.5".to_string()),
        "DEEPEMOTION_WEBHOOK_ATTEMPTS" => Some("3".to_string()),
        "DEEPEMOTION_WEBHOOK_TIMEOUT_SECS" => Some("2".to_string()),
        _ => None,
    };
    let config = DeliveryConfig::from_vars(true, vars).unwrap();
    assert_eq!(config.schedule.attempts, 3);
    assert_eq!(config.schedule.first, Duration::from_millis(500));
    assert_eq!(config.timeout, Duration::from_secs(2));
    assert!(config.policy.allow_private);
    assert!(
        !DeliveryConfig::from_vars(false, |_| None)
            .unwrap()
            .policy
            .allow_private
    );
    let bad = |name: &str| (name == "DEEPEMOTION_WEBHOOK_ATTEMPTS").then(|| "0".to_string());
    assert!(DeliveryConfig::from_vars(false, bad).is_err());
}
