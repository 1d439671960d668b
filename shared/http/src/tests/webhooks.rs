//! `/webhooks`: registering endpoints (checked URLs and events, the secret shown once), changing
//! and deleting them, delivery logs and resends, the callback signing secret, and nobody else's.

use chrono::Utc;
use domain::webhooks::{
    CALLBACK_LOG, DeliveryAttempt, DeliveryStatus, RetrySchedule, TargetPolicy, WebhookStore,
    queue_video_notifications,
};

use super::*;

const HOOK: &str = "https://hooks.example.com/deepemotion";

async fn endpoint(api: &Api, token: &str) -> Reply {
    api.post(
        "/api/v2/webhooks",
        Some(token),
        json!({"url": HOOK, "events": ["video.completed", "video.failed"], "description": "CI"}),
    )
    .await
}

#[tokio::test]
async fn an_endpoint_is_registered_with_a_secret_shown_once() {
    let api = api();
    let token = api.user("ann").await;
    let created = endpoint(&api, &token).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.str("id");
    let secret = created.str("secret");
    assert!(id.starts_with("wh_") && secret.starts_with("whsec_"));
    assert_eq!(
        created.body["events"],
        json!(["video.completed", "video.failed"])
    );
    assert_eq!(created.body["last_delivery"], Value::Null);
    // stored sealed: the plain secret is nowhere in the store, and never shown again
    let stored = api
        .webhooks
        .endpoints_of(&api.user_id(&token).await)
        .await
        .unwrap();
    assert!(!stored[0].sealed_secret.contains(&secret[6..]));
    let shown = api
        .get(&format!("/api/v2/webhooks/{id}"), Some(&token))
        .await;
    assert_eq!(shown.status, StatusCode::OK);
    assert!(!shown.text.contains(&secret[6..]) && shown.body.get("secret").is_none());
    let listed = api.get("/api/v2/webhooks", Some(&token)).await;
    assert_eq!(ids(&listed.body), vec![id.as_str()]);
    assert!(!listed.text.contains(&secret[6..]));
    // rotation shows the new one once
    let rotated = api
        .post(
            &format!("/api/v2/webhooks/{id}/rotate-secret"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK);
    assert_ne!(rotated.str("secret"), secret);
}

#[tokio::test]
async fn bad_endpoints_are_refused_with_the_field_that_is_wrong() {
    let api = api();
    let token = api.user("ann").await;
    for (body, field) in [
        (json!({"events": ["video.completed"]}), "url"),
        (
            json!({"url": "http://hooks.example.com/x", "events": ["video.completed"]}),
            "url",
        ),
        (
            json!({"url": "https://127.0.0.1/x", "events": ["video.completed"]}),
            "url",
        ),
        (
            json!({"url": "https://169.254.169.254/latest", "events": ["video.completed"]}),
            "url",
        ),
        (
            json!({"url": "https://[::1]/x", "events": ["video.completed"]}),
            "url",
        ),
        (
            json!({"url": "https://localhost/x", "events": ["video.completed"]}),
            "url",
        ),
        (
            json!({"url": "https://10.0.0.8/x", "events": ["video.completed"]}),
            "url",
        ),
        (json!({"url": HOOK}), "events"),
        (json!({"url": HOOK, "events": []}), "events"),
        (json!({"url": HOOK, "events": ["video.deleted"]}), "events"),
        (
            json!({"url": HOOK, "events": ["video.failed"], "description": "a\u{0}b"}),
            "description",
        ),
        (
            json!({"url": HOOK, "events": ["video.failed"], "description": "x".repeat(201)}),
            "description",
        ),
    ] {
        let r = api
            .post("/api/v2/webhooks", Some(&token), body.clone())
            .await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.body["fields"].get(field).is_some(), "{body}: {}", r.text);
    }
    let unknown = api
        .post(
            "/api/v2/webhooks",
            Some(&token),
            json!({"url": HOOK, "events": ["video.failed"], "secret": "mine"}),
        )
        .await;
    assert_error(&unknown, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(
        &api.post("/api/v2/webhooks", None, json!({})).await,
        StatusCode::UNAUTHORIZED,
    );
    assert!(
        api.get("/api/v2/webhooks", Some(&token))
            .await
            .body
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn development_accepts_receivers_on_this_machine() {
    let api = api_with(ApiConfig {
        webhook_policy: TargetPolicy::development(),
        ..ApiConfig::default()
    });
    let token = api.user("ann").await;
    let r = api
        .post(
            "/api/v2/webhooks",
            Some(&token),
            json!({"url": "http://127.0.0.1:9000/hook", "events": ["video.completed"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[tokio::test]
async fn an_endpoint_is_changed_and_deleted_by_its_owner_only() {
    let api = api();
    let ann = api.user("ann").await;
    let bob = api.user("bob").await;
    let id = endpoint(&api, &ann).await.str("id");
    let path = format!("/api/v2/webhooks/{id}");
    for r in [
        api.get(&path, Some(&bob)).await,
        api.patch(&path, Some(&bob), json!({"description": "mine now"}))
            .await,
        api.delete(&path, Some(&bob)).await,
        api.get(&format!("{path}/deliveries"), Some(&bob)).await,
        api.post(&format!("{path}/rotate-secret"), Some(&bob), json!({}))
            .await,
    ] {
        assert_error(&r, StatusCode::NOT_FOUND);
    }
    assert!(
        api.get("/api/v2/webhooks", Some(&bob))
            .await
            .body
            .as_array()
            .unwrap()
            .is_empty()
    );

    let patched = api
        .patch(
            &path,
            Some(&ann),
            json!({"events": ["video.failed"], "url": "https://other.example.com/h"}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    assert_eq!(patched.body["events"], json!(["video.failed"]));
    assert_eq!(patched.body["description"], "CI");
    let bad = api
        .patch(&path, Some(&ann), json!({"url": "https://192.168.1.1/"}))
        .await;
    assert_error(&bad, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        api.delete(&path, Some(&ann)).await.status,
        StatusCode::NO_CONTENT
    );
    assert_error(&api.get(&path, Some(&ann)).await, StatusCode::NOT_FOUND);
    assert_error(&api.delete(&path, Some(&ann)).await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_user_has_a_bounded_number_of_endpoints() {
    let api = api_with(ApiConfig {
        max_webhooks_per_user: 2,
        ..ApiConfig::default()
    });
    let token = api.user("ann").await;
    assert_eq!(endpoint(&api, &token).await.status, StatusCode::CREATED);
    assert_eq!(endpoint(&api, &token).await.status, StatusCode::CREATED);
    assert_error(&endpoint(&api, &token).await, StatusCode::CONFLICT);
    let bob = api.user("bob").await;
    assert_eq!(endpoint(&api, &bob).await.status, StatusCode::CREATED);
}

/// Makes the owner's video end and queues its notifications, as the worker does.
async fn ended(api: &Api, token: &str, status: VideoStatus) -> String {
    let (id, _) = api.video(token).await;
    let mut state = AnalysisState::pending();
    state.status = status;
    state.error = (status == VideoStatus::Failed).then(|| "the file is not a video".to_string());
    state.processed_at = Some(Utc::now());
    api.store.set_analysis(&id, &state).await.unwrap();
    let video = api.store.video(&id).await.unwrap().unwrap();
    queue_video_notifications(&*api.webhooks, &*api.deliveries, &video, &video.analysis)
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn the_delivery_log_shows_attempts_and_a_resend_queues_the_same_message_again() {
    let api = api();
    let ann = api.user("ann").await;
    let hook = endpoint(&api, &ann).await.str("id");
    let video = ended(&api, &ann, VideoStatus::Failed).await;
    let queued = api.deliveries.take();
    assert_eq!(queued.len(), 1);
    let delivery_id = queued[0].0.clone();

    let log = api
        .get(&format!("/api/v2/webhooks/{hook}/deliveries"), Some(&ann))
        .await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.text);
    let first = &log.body[0];
    assert_eq!(first["id"], delivery_id.as_str());
    assert_eq!(first["event"], "video.failed");
    assert_eq!(first["status"], "pending");
    assert_eq!(first["payload"]["type"], "video.failed");
    assert_eq!(first["payload"]["data"]["video_id"], video.as_str());
    assert_eq!(first["payload"]["data"]["status"], "FAILED");
    assert_eq!(first["payload"]["data"]["error"], "the file is not a video");

    // the delivery fails for good; the endpoint shows it
    let mut stored = api.webhooks.delivery(&delivery_id).await.unwrap().unwrap();
    let version = stored.version;
    let schedule = RetrySchedule {
        attempts: 1,
        ..RetrySchedule::default()
    };
    stored.record_attempt(
        DeliveryAttempt {
            attempt: 0,
            at: Utc::now(),
            status_code: Some(503),
            latency_ms: 40,
            error: Some("the receiver answered 503".into()),
        },
        &schedule,
        0.5,
    );
    assert!(
        api.webhooks
            .replace_delivery(&stored, version)
            .await
            .unwrap()
    );
    let shown = api
        .get(&format!("/api/v2/webhooks/{hook}"), Some(&ann))
        .await;
    assert_eq!(shown.body["last_delivery"]["status"], "failed");
    assert_eq!(shown.body["last_delivery"]["last_status_code"], 503);
    let one = api
        .get(
            &format!("/api/v2/webhooks/{hook}/deliveries/{delivery_id}"),
            Some(&ann),
        )
        .await;
    assert_eq!(one.body["attempts"][0]["status_code"], 503);
    assert_eq!(one.body["attempts"][0]["latency_ms"], 40);

    // resend: pending again, queued now, same id
    let bob = api.user("bob").await;
    let resend = format!("/api/v2/webhooks/{hook}/deliveries/{delivery_id}/resend");
    assert_error(
        &api.post(&resend, Some(&bob), json!({})).await,
        StatusCode::NOT_FOUND,
    );
    assert_error(
        &api.get(
            &format!("/api/v2/webhooks/{hook}/deliveries/{delivery_id}"),
            Some(&bob),
        )
        .await,
        StatusCode::NOT_FOUND,
    );
    let r = api.post(&resend, Some(&ann), json!({})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["status"], "pending");
    assert_eq!(
        api.deliveries
            .take()
            .iter()
            .map(|(id, _)| id.clone())
            .collect::<Vec<_>>(),
        vec![delivery_id.clone()]
    );
    let stored = api.webhooks.delivery(&delivery_id).await.unwrap().unwrap();
    assert_eq!(stored.status, DeliveryStatus::Pending);
    assert_eq!(stored.attempts_in_schedule(), 0);
    assert_eq!(stored.attempts.len(), 1);
    // a delivery of another log is not found under this one
    assert_error(
        &api.post(
            &format!("/api/v2/webhooks/{CALLBACK_LOG}/deliveries/{delivery_id}/resend"),
            Some(&ann),
            json!({}),
        )
        .await,
        StatusCode::NOT_FOUND,
    );
}

#[tokio::test]
async fn only_endpoints_that_take_the_event_get_a_delivery() {
    let api = api();
    let ann = api.user("ann").await;
    let failed_only = api
        .post(
            "/api/v2/webhooks",
            Some(&ann),
            json!({"url": HOOK, "events": ["video.failed"]}),
        )
        .await
        .str("id");
    let both = endpoint(&api, &ann).await.str("id");
    let bob = api.user("bob").await;
    endpoint(&api, &bob).await;
    ended(&api, &ann, VideoStatus::Completed).await;
    let all = api.webhooks.all_deliveries();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].log, both);
    assert_ne!(all[0].log, failed_only);
    let payload: Value = serde_json::from_str(&all[0].payload).unwrap();
    assert_eq!(payload["type"], "video.completed");
    for key in [
        "video_id",
        "status",
        "frame_count",
        "duration_seconds",
        "processed_at",
    ] {
        assert!(
            payload["data"].get(key).is_some(),
            "{key} missing: {payload}"
        );
    }
    assert!(payload["data"].get("error").is_none());
}

#[tokio::test]
async fn a_callback_url_is_checked_kept_with_the_video_and_signed_with_the_owners_secret() {
    let api = api();
    let ann = api.user("ann").await;
    let bad = api
        .initialize(
            Some(&ann),
            json!({"filename": "a.mp4", "callback_url": "https://169.254.169.254/"}),
        )
        .await;
    assert_error(&bad, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        bad.body["fields"].get("callback_url").is_some(),
        "{}",
        bad.text
    );
    assert!(
        api.store
            .videos_of(&api.user_id(&ann).await, 10, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );

    let r = api
        .initialize(
            Some(&ann),
            json!({"filename": "a.mp4", "callback_url": "https://cb.example.com/done?job=7"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = r.str("video_id");
    let shown = api.get(&format!("/api/v2/videos/{id}"), Some(&ann)).await;
    assert_eq!(
        shown.body["callback_url"],
        "https://cb.example.com/done?job=7"
    );
    // the secret exists from the first use, and reads the same until rotated
    let secret = api
        .get("/api/v2/webhooks/signing-secret", Some(&ann))
        .await
        .str("secret");
    assert!(secret.starts_with("whsec_"));
    assert_eq!(
        api.get("/api/v2/webhooks/signing-secret", Some(&ann))
            .await
            .str("secret"),
        secret
    );
    let bob = api.user("bob").await;
    assert_ne!(
        api.get("/api/v2/webhooks/signing-secret", Some(&bob))
            .await
            .str("secret"),
        secret
    );
    let rotated = api
        .post(
            "/api/v2/webhooks/signing-secret/rotate",
            Some(&ann),
            json!({}),
        )
        .await
        .str("secret");
    assert_ne!(rotated, secret);
    assert_eq!(
        api.get("/api/v2/webhooks/signing-secret", Some(&ann))
            .await
            .str("secret"),
        rotated
    );

    // the end of its analysis goes to the callback, in the owner's callback log
    let mut state = AnalysisState::pending();
    state.status = VideoStatus::Completed;
    state.processed_at = Some(Utc::now());
    api.store.set_analysis(&id, &state).await.unwrap();
    let video = api.store.video(&id).await.unwrap().unwrap();
    queue_video_notifications(&*api.webhooks, &*api.deliveries, &video, &video.analysis)
        .await
        .unwrap();
    let log = api
        .get("/api/v2/webhooks/callback/deliveries", Some(&ann))
        .await;
    assert_eq!(log.body.as_array().unwrap().len(), 1, "{}", log.text);
    assert_eq!(log.body[0]["video_id"], id.as_str());
    assert!(
        api.get("/api/v2/webhooks/callback/deliveries", Some(&bob))
            .await
            .body
            .as_array()
            .unwrap()
            .is_empty()
    );
    // queueing again (a redelivered job) makes no second delivery
    api.deliveries.take();
    queue_video_notifications(&*api.webhooks, &*api.deliveries, &video, &video.analysis)
        .await
        .unwrap();
    assert_eq!(api.webhooks.all_deliveries().len(), 1);
}
