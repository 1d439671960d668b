//! Webhook deliveries on one machine: a task over the SQLite table instead of SQS.
//!
//! A delivery is due when its `next_attempt_at` has come, and that time is in the database
//! already (the worker stores the delivery before queueing it, and every attempt stores the
//! next time before queueing the retry), so queueing only has to wake the runner early: a
//! restart loses nothing, and the runner picks up whatever came due while the server was down.
//! Attempts run on tasks of their own, never in the analysis loop, at most [`AT_ONCE`] at a
//! time and never two of one delivery at once; a receiver that never answers holds one slot for
//! at most the deliverer's timeout.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{Notify, Semaphore};

use domain::ports::StoreResult;
use domain::webhooks::DeliveryQueue;
use webhooks::{AttemptOutcome, Deliverer};

use crate::SqliteStore;

/// Attempts made at once: enough that a few receivers that never answer (each holds its slot
/// for the deliverer's timeout) leave room for the others.
const AT_ONCE: usize = 8;
/// The longest the runner sleeps without looking at the table: deliveries made or resent by
/// another process on the same file (none in `deepemotion serve`) wait at most this long.
const MOST_IDLE: Duration = Duration::from_secs(1);
/// Due deliveries read per look at the table.
const BATCH: usize = 64;
/// How long a delivery whose attempt failed in the store (the database, or a secret the key
/// cannot open) is left alone: such errors seldom pass within a second, and each is logged.
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(10);

/// The [`DeliveryQueue`] of one machine: wakes the runner, which finds the delivery due in the
/// table.
#[derive(Clone, Default)]
pub struct LocalDeliveries {
    wake: Arc<Notify>,
}

#[async_trait]
impl DeliveryQueue for LocalDeliveries {
    async fn enqueue(&self, _delivery_id: &str, _due: DateTime<Utc>) -> StoreResult<()> {
        // a permit is kept if the runner is not waiting yet, so no wake is lost
        self.wake.notify_one();
        Ok(())
    }
}

/// Makes the attempts of due deliveries, until the process ends.
pub struct DeliveryRunner {
    store: Arc<SqliteStore>,
    deliverer: Arc<Deliverer>,
    wake: Arc<Notify>,
}

impl DeliveryRunner {
    /// A runner woken by `queue` (the queue the deliverer, the worker and the API were given).
    pub fn new(
        store: Arc<SqliteStore>,
        deliverer: Arc<Deliverer>,
        queue: &LocalDeliveries,
    ) -> Self {
        Self {
            store,
            deliverer,
            wake: queue.wake.clone(),
        }
    }

    /// Runs forever: attempts what is due, then sleeps until the next delivery is due (at most
    /// [`MOST_IDLE`]), or until queued work or a finished attempt wakes it.
    pub async fn run(self) {
        let slots = Arc::new(Semaphore::new(AT_ONCE));
        let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
        loop {
            let mut skipped = false;
            match self.store.due_deliveries(Utc::now(), BATCH) {
                Ok(due) => {
                    for id in due {
                        if !in_flight.lock().unwrap().insert(id.clone()) {
                            // still running; the claim it is about to store moves it on
                            skipped = true;
                            continue;
                        }
                        let Ok(slot) = slots.clone().acquire_owned().await else {
                            return; // the semaphore is never closed
                        };
                        let deliverer = self.deliverer.clone();
                        let in_flight = in_flight.clone();
                        let wake = self.wake.clone();
                        tokio::spawn(async move {
                            attempt(&deliverer, &id).await;
                            in_flight.lock().unwrap().remove(&id);
                            drop(slot);
                            wake.notify_one();
                        });
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the due webhook deliveries");
                }
            }
            let wait = if skipped {
                MOST_IDLE
            } else {
                self.until_next_due()
            };
            if !wait.is_zero() {
                let _ = tokio::time::timeout(wait, self.wake.notified()).await;
            }
        }
    }

    /// How long until the next pending delivery is due, at most [`MOST_IDLE`].
    fn until_next_due(&self) -> Duration {
        match self.store.next_delivery_due() {
            Ok(Some(at)) => (at - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(MOST_IDLE),
            Ok(None) => MOST_IDLE,
            Err(e) => {
                tracing::error!(error = %e, "cannot read when the next webhook delivery is due");
                MOST_IDLE
            }
        }
    }
}

/// One attempt; what came of it is in the delivery (and the deliverer's log).
async fn attempt(deliverer: &Deliverer, id: &str) {
    match deliverer.attempt(id).await {
        Ok(AttemptOutcome::Busy) => {
            tracing::debug!(delivery_id = %id, "webhook delivery claimed by another attempt");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(delivery_id = %id, error = %e, "webhook attempt could not reach the store");
            tokio::time::sleep(STORE_ERROR_PAUSE).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use domain::webhooks::{
        Delivery, DeliveryStatus, RetrySchedule, SecretBox, TargetPolicy, WebhookEndpoint,
        WebhookEvent, WebhookStore, delivery_id, new_signing_secret,
    };
    use webhooks::DeliveryConfig;

    use super::*;

    /// A receiver on 127.0.0.1 that answers requests with `codes` in turn (the last from then
    /// on; 0 never answers) and counts them.
    async fn receiver(codes: Vec<u16>) -> (String, Arc<Mutex<Vec<String>>>) {
        let received: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = received.clone();
        let codes = Arc::new(Mutex::new(codes));
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap| {
                let (log, codes) = (log.clone(), codes.clone());
                async move {
                    let id = headers["webhook-id"].to_str().unwrap().to_string();
                    log.lock().unwrap().push(id);
                    let code = {
                        let mut codes = codes.lock().unwrap();
                        if codes.len() > 1 {
                            codes.remove(0)
                        } else {
                            codes[0]
                        }
                    };
                    if code == 0 {
                        std::future::pending::<()>().await;
                    }
                    StatusCode::from_u16(code).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/hook"), received)
    }

    fn quick() -> DeliveryConfig {
        DeliveryConfig {
            policy: TargetPolicy::development(),
            schedule: RetrySchedule {
                attempts: 3,
                first: Duration::from_millis(50),
                factor: 2.0,
                cap: Duration::from_secs(1),
                jitter: 0.0,
            },
            timeout: Duration::from_secs(30),
            claim: Duration::from_secs(60),
            response_cap: 4096,
        }
    }

    /// An endpoint of `user` for `url`, and a delivery to it due now, stored.
    async fn endpoint_with_delivery(
        store: &SqliteStore,
        key: &SecretBox,
        user: &str,
        url: &str,
    ) -> String {
        let now = Utc::now();
        let endpoint = format!("wh_{user}");
        store
            .create_endpoint(&WebhookEndpoint {
                id: endpoint.clone(),
                user_id: user.into(),
                url: url.into(),
                events: vec![WebhookEvent::VideoCompleted],
                description: String::new(),
                sealed_secret: key.seal(&new_signing_secret()),
                created_at: now,
                updated_at: now,
            })
            .await
            .unwrap();
        let delivery = Delivery {
            id: delivery_id("v1", WebhookEvent::VideoCompleted, &endpoint),
            user_id: user.into(),
            log: endpoint,
            url: None,
            event: WebhookEvent::VideoCompleted,
            video_id: "v1".into(),
            payload: r#"{"type":"video.completed","data":{"video_id":"v1"}}"#.into(),
            created_at: now,
            status: DeliveryStatus::Pending,
            attempts: vec![],
            next_attempt_at: Some(now),
            schedule_start: 0,
            version: 0,
        };
        assert!(store.create_delivery(&delivery).await.unwrap());
        delivery.id
    }

    /// A runner over `store`, running, and the queue that wakes it.
    fn start(
        store: &Arc<SqliteStore>,
        key: &SecretBox,
    ) -> (tokio::task::JoinHandle<()>, LocalDeliveries) {
        let queue = LocalDeliveries::default();
        let deliverer =
            Deliverer::new(store.clone(), Arc::new(queue.clone()), key.clone(), quick()).unwrap();
        let runner = DeliveryRunner::new(store.clone(), Arc::new(deliverer), &queue);
        (tokio::spawn(runner.run()), queue)
    }

    /// Polls until the delivery is no longer pending (generous: the machine may be busy).
    async fn settled(store: &SqliteStore, id: &str) -> Delivery {
        for _ in 0..1200 {
            let d = store.delivery(id).await.unwrap().unwrap();
            if d.status != DeliveryStatus::Pending {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{id} still pending after a minute");
    }

    #[tokio::test]
    async fn a_delivery_stored_before_a_restart_is_delivered_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deepemotion.db");
        let key = SecretBox::from_key_material(&SecretBox::generate_key()).unwrap();
        let (url, received) = receiver(vec![204]).await;
        let id = {
            // queued by a server that stopped before its runner got to it
            let before = SqliteStore::open(&path).unwrap();
            endpoint_with_delivery(&before, &key, "ann", &url).await
        };
        let store = Arc::new(SqliteStore::open(&path).unwrap());
        let (runner, _) = start(&store, &key);
        let done = settled(&store, &id).await;
        runner.abort();
        assert_eq!(done.status, DeliveryStatus::Delivered);
        assert_eq!(done.attempts.len(), 1);
        assert_eq!(*received.lock().unwrap(), [id]);
    }

    #[tokio::test]
    async fn failed_attempts_are_retried_on_schedule_until_one_succeeds() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let key = SecretBox::from_key_material(&SecretBox::generate_key()).unwrap();
        let (runner, queue) = start(&store, &key);
        let (url, received) = receiver(vec![500, 500, 200]).await;
        let id = endpoint_with_delivery(&store, &key, "ann", &url).await;
        // made after the runner started, as the worker makes them: queueing wakes the runner
        queue.enqueue(&id, Utc::now()).await.unwrap();
        let done = settled(&store, &id).await;
        runner.abort();
        assert_eq!(done.status, DeliveryStatus::Delivered);
        let codes: Vec<Option<u16>> = done.attempts.iter().map(|a| a.status_code).collect();
        assert_eq!(codes, [Some(500), Some(500), Some(200)]);
        assert_eq!(received.lock().unwrap().len(), 3, "each attempt once");
        let gaps: Vec<chrono::TimeDelta> = done
            .attempts
            .windows(2)
            .map(|w| w[1].at - w[0].at)
            .collect();
        assert!(
            gaps.iter()
                .all(|g| *g >= chrono::TimeDelta::milliseconds(50)),
            "{gaps:?}"
        );
    }

    #[tokio::test]
    async fn a_receiver_that_never_answers_holds_up_no_other_delivery() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let key = SecretBox::from_key_material(&SecretBox::generate_key()).unwrap();
        let (hung_url, hung) = receiver(vec![0]).await;
        let (ok_url, _) = receiver(vec![200]).await;
        let stuck = endpoint_with_delivery(&store, &key, "ann", &hung_url).await;
        let (runner, _) = start(&store, &key);
        // the hung attempt is under way before the other delivery is even made
        for _ in 0..1200 {
            if !hung.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(hung.lock().unwrap().len(), 1);
        let fine = endpoint_with_delivery(&store, &key, "bob", &ok_url).await;
        let done = settled(&store, &fine).await;
        assert_eq!(done.status, DeliveryStatus::Delivered);
        // the hung one waits for its answer (30 s timeout) with no attempt recorded, and is not
        // attempted a second time meanwhile
        let waiting = store.delivery(&stuck).await.unwrap().unwrap();
        runner.abort();
        assert_eq!(waiting.status, DeliveryStatus::Pending);
        assert!(waiting.attempts.is_empty());
        assert_eq!(hung.lock().unwrap().len(), 1);
    }
}
