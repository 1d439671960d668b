//! What every [`WebhookStore`] must do, as one suite of checks run against each of them: the
//! in-memory fake (below), SQLite (`local-server`) and DynamoDB (`aws-adapters`, against moto).
//! Delivery at least once, and never twice at the same moment, rests on two rules checked here:
//! a delivery is created once per id, and replaced only over the version it was read at.
//!
//! [`webhook_contract_tests!`](crate::webhook_contract_tests) expands into one `#[tokio::test]`
//! per check, as [`crate::ledger_contract_tests!`] does.

use chrono::{DateTime, Utc};

use crate::webhooks::{
    CALLBACK_LOG, Delivery, DeliveryAttempt, DeliveryStatus, RetrySchedule, WebhookEndpoint,
    WebhookEvent, WebhookStore, delivery_id,
};

#[macro_export]
macro_rules! webhook_contract_tests {
    ($make:expr) => {
        $crate::webhook_contract_tests!(@each $make;
            endpoints_belong_to_their_owner_and_list_oldest_first,
            an_endpoint_is_updated_in_place_and_deleted_with_its_log,
            the_first_signing_secret_stays_unless_replaced,
            a_delivery_is_created_once,
            a_delivery_is_replaced_only_over_the_version_it_was_read_at,
            deliveries_list_per_owner_and_log_newest_first_in_pages,
        );
    };
    (@each $make:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let store = ($make)().await;
                $crate::webhook_contract::$check(&*store).await;
            }
        )*
    };
}

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_790_000_000 + seconds, 0).unwrap()
}

fn endpoint(id: &str, user: &str, created: i64) -> WebhookEndpoint {
    WebhookEndpoint {
        id: id.into(),
        user_id: user.into(),
        url: format!("https://hooks.example.com/{id}"),
        events: vec![WebhookEvent::VideoCompleted],
        description: "CI".into(),
        sealed_secret: format!("v1.sealed-{id}"),
        created_at: at(created),
        updated_at: at(created),
    }
}

fn delivery(video: &str, user: &str, log: &str, created: i64) -> Delivery {
    Delivery {
        id: delivery_id(video, WebhookEvent::VideoCompleted, log),
        user_id: user.into(),
        log: log.into(),
        url: (log == CALLBACK_LOG).then(|| "https://cb.example.com/x".to_string()),
        event: WebhookEvent::VideoCompleted,
        video_id: video.into(),
        payload: format!(r#"{{"type":"video.completed","data":{{"video_id":"{video}"}}}}"#),
        created_at: at(created),
        status: DeliveryStatus::Pending,
        attempts: vec![],
        next_attempt_at: Some(at(created)),
        schedule_start: 0,
        version: 0,
    }
}

pub async fn endpoints_belong_to_their_owner_and_list_oldest_first<S>(store: &S)
where
    S: WebhookStore + ?Sized,
{
    store
        .create_endpoint(&endpoint("wh_b", "ann", 20))
        .await
        .unwrap();
    store
        .create_endpoint(&endpoint("wh_a", "ann", 10))
        .await
        .unwrap();
    store
        .create_endpoint(&endpoint("wh_c", "bob", 5))
        .await
        .unwrap();
    let anns: Vec<String> = store
        .endpoints_of("ann")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(anns, ["wh_a", "wh_b"]);
    assert_eq!(
        store.endpoint("ann", "wh_a").await.unwrap(),
        Some(endpoint("wh_a", "ann", 10))
    );
    assert_eq!(store.endpoint("bob", "wh_a").await.unwrap(), None);
    assert_eq!(store.endpoint("ann", "wh_c").await.unwrap(), None);
    assert!(store.endpoints_of("carl").await.unwrap().is_empty());
}

pub async fn an_endpoint_is_updated_in_place_and_deleted_with_its_log<S>(store: &S)
where
    S: WebhookStore + ?Sized,
{
    store
        .create_endpoint(&endpoint("wh_1", "ann", 0))
        .await
        .unwrap();
    let mut changed = endpoint("wh_1", "ann", 0);
    changed.url = "https://other.example.com/hook".into();
    changed.events = vec![WebhookEvent::VideoFailed, WebhookEvent::VideoCompleted];
    changed.description = String::new();
    changed.updated_at = at(50);
    store.update_endpoint(&changed).await.unwrap();
    assert_eq!(store.endpoint("ann", "wh_1").await.unwrap(), Some(changed));

    // another user's id is not theirs to change or delete
    let mut foreign = endpoint("wh_1", "bob", 0);
    foreign.url = "https://evil.example.com/".into();
    assert!(store.update_endpoint(&foreign).await.is_err());
    assert!(!store.delete_endpoint("bob", "wh_1").await.unwrap());

    let d = delivery("v1", "ann", "wh_1", 1);
    let kept = delivery("v1", "ann", CALLBACK_LOG, 1);
    assert!(store.create_delivery(&d).await.unwrap());
    assert!(store.create_delivery(&kept).await.unwrap());
    assert!(store.delete_endpoint("ann", "wh_1").await.unwrap());
    assert_eq!(store.endpoint("ann", "wh_1").await.unwrap(), None);
    assert!(!store.delete_endpoint("ann", "wh_1").await.unwrap());
    assert!(matches!(
        store.update_endpoint(&endpoint("wh_1", "ann", 0)).await,
        Err(crate::ports::StoreError::NotFound)
    ));
    assert_eq!(store.delivery(&d.id).await.unwrap(), None);
    assert!(
        store
            .deliveries("ann", "wh_1", 10, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(store.delivery(&kept.id).await.unwrap(), Some(kept));
}

pub async fn the_first_signing_secret_stays_unless_replaced<S>(store: &S)
where
    S: WebhookStore + ?Sized,
{
    assert_eq!(store.signing_secret("ann").await.unwrap(), None);
    assert_eq!(
        store
            .put_signing_secret("ann", "v1.first", false)
            .await
            .unwrap(),
        "v1.first"
    );
    assert_eq!(
        store
            .put_signing_secret("ann", "v1.second", false)
            .await
            .unwrap(),
        "v1.first"
    );
    assert_eq!(
        store
            .put_signing_secret("ann", "v1.rotated", true)
            .await
            .unwrap(),
        "v1.rotated"
    );
    assert_eq!(
        store.signing_secret("ann").await.unwrap().as_deref(),
        Some("v1.rotated")
    );
    assert_eq!(store.signing_secret("bob").await.unwrap(), None);
}

pub async fn a_delivery_is_created_once<S>(store: &S)
where
    S: WebhookStore + ?Sized,
{
    let d = delivery("v1", "ann", "wh_1", 0);
    assert!(store.create_delivery(&d).await.unwrap());
    let mut again = d.clone();
    again.payload = "{}".into();
    assert!(!store.create_delivery(&again).await.unwrap());
    assert_eq!(store.delivery(&d.id).await.unwrap(), Some(d));
    assert_eq!(store.delivery("msg_missing").await.unwrap(), None);
}

pub async fn a_delivery_is_replaced_only_over_the_version_it_was_read_at<S>(store: &S)
where
    S: WebhookStore + ?Sized,
{
    let d = delivery("v1", "ann", "wh_1", 0);
    store.create_delivery(&d).await.unwrap();
    // two senders read version 0; the first to write wins
    let mut first = d.clone();
    first.claim(at(1), std::time::Duration::from_secs(60));
    let mut second = d.clone();
    second.claim(at(2), std::time::Duration::from_secs(60));
    assert!(store.replace_delivery(&first, 0).await.unwrap());
    assert!(!store.replace_delivery(&second, 0).await.unwrap());
    first.record_attempt(
        DeliveryAttempt {
            attempt: 0,
            at: at(3),
            status_code: Some(500),
            latency_ms: 120,
            error: Some("the receiver answered 500".into()),
        },
        &RetrySchedule::default(),
        0.5,
    );
    assert!(store.replace_delivery(&first, 1).await.unwrap());
    let stored = store.delivery(&d.id).await.unwrap().unwrap();
    assert_eq!(stored, first);
    assert_eq!(stored.version, 2);
    assert_eq!(stored.attempts.len(), 1);
    let mut gone = delivery("v9", "ann", "wh_1", 0);
    gone.version = 1;
    assert!(!store.replace_delivery(&gone, 0).await.unwrap());
    assert_eq!(store.delivery(&gone.id).await.unwrap(), None);
}

pub async fn deliveries_list_per_owner_and_log_newest_first_in_pages<S>(store: &S)
where
    S: WebhookStore + ?Sized,
{
    for i in 0..5 {
        store
            .create_delivery(&delivery(&format!("v{i}"), "ann", "wh_1", i))
            .await
            .unwrap();
    }
    store
        .create_delivery(&delivery("v9", "ann", CALLBACK_LOG, 9))
        .await
        .unwrap();
    store
        .create_delivery(&delivery("v8", "bob", "wh_1", 8))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store
            .deliveries("ann", "wh_1", 2, cursor.as_deref())
            .await
            .unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|d| d.video_id));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["v4", "v3", "v2", "v1", "v0"]);
    let callbacks = store
        .deliveries("ann", CALLBACK_LOG, 10, None)
        .await
        .unwrap();
    assert_eq!(callbacks.items.len(), 1);
    assert_eq!(callbacks.items[0].video_id, "v9");
    assert!(
        store
            .deliveries("carl", "wh_1", 10, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[cfg(test)]
mod memory {
    async fn fresh() -> Box<crate::memory::MemoryWebhooks> {
        Box::default()
    }

    crate::webhook_contract_tests!(fresh);
}
