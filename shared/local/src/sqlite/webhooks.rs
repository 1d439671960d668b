//! Webhook endpoints, callback signing secrets and deliveries in the same SQLite file.
//!
//! Endpoints and deliveries are kept as JSON, less the fields that queries select or sort on,
//! which have columns of their own instead: each fact is stored once, and the whole record is
//! put back together when it is read (`with_columns`). A delivery's `version` is a column, so
//! that replacing it is one conditional `UPDATE`: the compare-and-swap that keeps two attempts
//! of one delivery from both being recorded.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use domain::ports::{Page, StoreError, StoreResult};
use domain::webhooks::{Delivery, WebhookEndpoint, WebhookStore};

use super::{SqliteStore, backend, json_text, make_cursor, nanos, read_cursor};

/// Run by `prepare` after the main schema, in the same transaction.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    created_at_ns INTEGER NOT NULL,
    data TEXT NOT NULL      -- the rest of the WebhookEndpoint as JSON: url, events, description,
                            -- the sealed secret, updated_at
);
CREATE INDEX IF NOT EXISTS webhook_endpoints_by_user
    ON webhook_endpoints (user_id, created_at_ns, id);
CREATE TABLE IF NOT EXISTS webhook_signing_secrets (
    user_id TEXT PRIMARY KEY,
    sealed_secret TEXT NOT NULL -- sealed by the webhook key (webhook.key), never in plain form
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    log TEXT NOT NULL,              -- the endpoint's id, or 'callback'
    created_at_ns INTEGER NOT NULL,
    status TEXT NOT NULL,           -- pending, delivered, failed
    next_attempt_at_ns INTEGER,     -- NULL unless pending
    version INTEGER NOT NULL,       -- replaced only over the version it was read at
    data TEXT NOT NULL              -- the rest of the Delivery as JSON: event, video, url,
                                    -- payload, attempts, schedule_start
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_log
    ON webhook_deliveries (user_id, log, created_at_ns DESC, id DESC);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due
    ON webhook_deliveries (status, next_attempt_at_ns);
";

/// The endpoint fields with columns of their own (the serde names).
const ENDPOINT_COLUMNS: [&str; 3] = ["id", "user_id", "created_at"];
/// `endpoint_from` reads the columns in this order.
const SELECT_ENDPOINT: &str = "SELECT id, user_id, created_at_ns, data FROM webhook_endpoints";

/// The delivery fields with columns of their own (the serde names).
const DELIVERY_COLUMNS: [&str; 7] = [
    "id",
    "user_id",
    "log",
    "created_at",
    "status",
    "next_attempt_at",
    "version",
];
/// `delivery_from` reads the columns in this order.
const SELECT_DELIVERY: &str = "SELECT id, user_id, log, created_at_ns, status, next_attempt_at_ns,
        version, data
    FROM webhook_deliveries";

/// `value` as JSON without the fields that have columns.
fn json_without<T: Serialize>(value: &T, columns: &[&str]) -> StoreResult<String> {
    let mut json = serde_json::to_value(value).map_err(backend)?;
    if let Some(fields) = json.as_object_mut() {
        for column in columns {
            fields.remove(*column);
        }
    }
    json_text(&json)
}

/// A record from the JSON in column `i` and the values of its other columns.
fn with_columns<T: DeserializeOwned>(
    r: &rusqlite::Row<'_>,
    i: usize,
    columns: impl IntoIterator<Item = (&'static str, Value)>,
) -> rusqlite::Result<T> {
    let unreadable = |e: serde_json::Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    };
    let mut json: Value = serde_json::from_str(&r.get::<_, String>(i)?).map_err(unreadable)?;
    if let Some(fields) = json.as_object_mut() {
        fields.extend(columns.into_iter().map(|(name, v)| (name.to_string(), v)));
    }
    serde_json::from_value(json).map_err(unreadable)
}

/// A time column as its JSON field.
fn time(ns: i64) -> Value {
    json!(DateTime::from_timestamp_nanos(ns))
}

fn endpoint_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<WebhookEndpoint> {
    with_columns(
        r,
        3,
        [
            ("id", Value::String(r.get(0)?)),
            ("user_id", Value::String(r.get(1)?)),
            ("created_at", time(r.get(2)?)),
        ],
    )
}

fn delivery_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    with_columns(
        r,
        7,
        [
            ("id", Value::String(r.get(0)?)),
            ("user_id", Value::String(r.get(1)?)),
            ("log", Value::String(r.get(2)?)),
            ("created_at", time(r.get(3)?)),
            ("status", Value::String(r.get(4)?)),
            (
                "next_attempt_at",
                r.get::<_, Option<i64>>(5)?.map_or(Value::Null, time),
            ),
            ("version", json!(r.get::<_, u64>(6)?)),
        ],
    )
}

/// What a delivery's row holds beside the fields it takes as they are.
struct DeliveryRow {
    created_at_ns: i64,
    next_attempt_at_ns: Option<i64>,
    data: String,
}

impl DeliveryRow {
    fn of(delivery: &Delivery) -> StoreResult<Self> {
        Ok(Self {
            created_at_ns: nanos("created_at", delivery.created_at)?,
            next_attempt_at_ns: delivery
                .next_attempt_at
                .map(|at| nanos("next_attempt_at", at))
                .transpose()?,
            data: json_without(delivery, &DELIVERY_COLUMNS)?,
        })
    }
}

impl SqliteStore {
    /// The ids of pending deliveries due at `now`, the longest due first, at most `limit`: what
    /// the delivery runner attempts next. A delivery whose attempt is running is not due (its
    /// claim moved `next_attempt_at` on), nor are delivered or failed ones.
    pub fn due_deliveries(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<String>> {
        let db = self.db();
        let mut stmt = db
            .prepare_cached(
                "SELECT id FROM webhook_deliveries
                 WHERE status = 'pending' AND (next_attempt_at_ns IS NULL OR next_attempt_at_ns <= ?1)
                 ORDER BY next_attempt_at_ns, id LIMIT ?2",
            )
            .map_err(backend)?;
        stmt.query_map(params![nanos("now", now)?, limit as i64], |r| r.get(0))
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)
    }

    /// When the next pending delivery is due (in the past when one is due already), or `None`
    /// when none is pending: how long the delivery runner may sleep.
    pub fn next_delivery_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let next: Option<Option<i64>> = self
            .db()
            .query_row(
                "SELECT next_attempt_at_ns FROM webhook_deliveries WHERE status = 'pending'
                 ORDER BY next_attempt_at_ns LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        // a pending delivery without a time is due at once
        Ok(next.map(|ns| DateTime::from_timestamp_nanos(ns.unwrap_or(0))))
    }
}

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn create_endpoint(&self, endpoint: &WebhookEndpoint) -> StoreResult<()> {
        let result = self.db().execute(
            "INSERT INTO webhook_endpoints (id, user_id, created_at_ns, data) VALUES (?1, ?2, ?3, ?4)",
            params![
                endpoint.id,
                endpoint.user_id,
                nanos("created_at", endpoint.created_at)?,
                json_without(endpoint, &ENDPOINT_COLUMNS)?,
            ],
        );
        match result {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Conflict("endpoint id taken".into()))
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn endpoint(&self, user_id: &str, id: &str) -> StoreResult<Option<WebhookEndpoint>> {
        self.db()
            .query_row(
                &format!("{SELECT_ENDPOINT} WHERE id = ?1 AND user_id = ?2"),
                [id, user_id],
                endpoint_from,
            )
            .optional()
            .map_err(backend)
    }

    async fn endpoints_of(&self, user_id: &str) -> StoreResult<Vec<WebhookEndpoint>> {
        let db = self.db();
        let mut stmt = db
            .prepare_cached(&format!(
                "{SELECT_ENDPOINT} WHERE user_id = ?1 ORDER BY created_at_ns, id"
            ))
            .map_err(backend)?;
        stmt.query_map([user_id], endpoint_from)
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)
    }

    async fn update_endpoint(&self, endpoint: &WebhookEndpoint) -> StoreResult<()> {
        let changed = self
            .db()
            .execute(
                "UPDATE webhook_endpoints SET created_at_ns = ?3, data = ?4
                 WHERE id = ?1 AND user_id = ?2",
                params![
                    endpoint.id,
                    endpoint.user_id,
                    nanos("created_at", endpoint.created_at)?,
                    json_without(endpoint, &ENDPOINT_COLUMNS)?,
                ],
            )
            .map_err(backend)?;
        if changed == 0 {
            Err(StoreError::NotFound)
        } else {
            Ok(())
        }
    }

    /// One transaction: an attempt that reads the endpoint afterwards finds it gone and
    /// abandons its delivery, and no delivery of it is left behind.
    async fn delete_endpoint(&self, user_id: &str, id: &str) -> StoreResult<bool> {
        let mut db = self.db();
        let tx = db.transaction().map_err(backend)?;
        let deleted = tx
            .execute(
                "DELETE FROM webhook_endpoints WHERE id = ?1 AND user_id = ?2",
                [id, user_id],
            )
            .map_err(backend)?
            > 0;
        if deleted {
            tx.execute(
                "DELETE FROM webhook_deliveries WHERE user_id = ?1 AND log = ?2",
                [user_id, id],
            )
            .map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        Ok(deleted)
    }

    async fn signing_secret(&self, user_id: &str) -> StoreResult<Option<String>> {
        self.db()
            .query_row(
                "SELECT sealed_secret FROM webhook_signing_secrets WHERE user_id = ?1",
                [user_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)
    }

    async fn put_signing_secret(
        &self,
        user_id: &str,
        sealed: &str,
        replace: bool,
    ) -> StoreResult<String> {
        let mut db = self.db();
        // immediate: another store on the same file cannot slip its first secret in between
        let tx = db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let on_conflict = if replace {
            "DO UPDATE SET sealed_secret = excluded.sealed_secret"
        } else {
            "DO NOTHING"
        };
        tx.execute(
            &format!(
                "INSERT INTO webhook_signing_secrets (user_id, sealed_secret) VALUES (?1, ?2)
                 ON CONFLICT (user_id) {on_conflict}"
            ),
            [user_id, sealed],
        )
        .map_err(backend)?;
        let in_force: String = tx
            .query_row(
                "SELECT sealed_secret FROM webhook_signing_secrets WHERE user_id = ?1",
                [user_id],
                |r| r.get(0),
            )
            .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(in_force)
    }

    async fn create_delivery(&self, delivery: &Delivery) -> StoreResult<bool> {
        let row = DeliveryRow::of(delivery)?;
        let inserted = self
            .db()
            .execute(
                "INSERT INTO webhook_deliveries
                     (id, user_id, log, created_at_ns, status, next_attempt_at_ns, version, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (id) DO NOTHING",
                params![
                    delivery.id,
                    delivery.user_id,
                    delivery.log,
                    row.created_at_ns,
                    delivery.status.as_str(),
                    row.next_attempt_at_ns,
                    delivery.version,
                    row.data,
                ],
            )
            .map_err(backend)?;
        Ok(inserted == 1)
    }

    async fn delivery(&self, id: &str) -> StoreResult<Option<Delivery>> {
        self.db()
            .query_row(
                &format!("{SELECT_DELIVERY} WHERE id = ?1"),
                [id],
                delivery_from,
            )
            .optional()
            .map_err(backend)
    }

    /// The compare-and-swap: the `UPDATE` matches only while the stored version is still
    /// `expected_version`.
    async fn replace_delivery(
        &self,
        delivery: &Delivery,
        expected_version: u64,
    ) -> StoreResult<bool> {
        let row = DeliveryRow::of(delivery)?;
        let replaced = self
            .db()
            .execute(
                "UPDATE webhook_deliveries
                 SET user_id = ?2, log = ?3, created_at_ns = ?4, status = ?5,
                     next_attempt_at_ns = ?6, version = ?7, data = ?8
                 WHERE id = ?1 AND version = ?9",
                params![
                    delivery.id,
                    delivery.user_id,
                    delivery.log,
                    row.created_at_ns,
                    delivery.status.as_str(),
                    row.next_attempt_at_ns,
                    delivery.version,
                    row.data,
                    expected_version,
                ],
            )
            .map_err(backend)?;
        Ok(replaced == 1)
    }

    async fn deliveries(
        &self,
        user_id: &str,
        log: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Delivery>> {
        // keyset pagination on (created_at_ns, id), newest first
        let (before_ns, before_id) = cursor.map(read_cursor).transpose()?.unwrap_or_default();
        let db = self.db();
        let mut stmt = db
            .prepare_cached(&format!(
                "{SELECT_DELIVERY}
                 WHERE user_id = ?1 AND log = ?2
                   AND (created_at_ns < ?3 OR (created_at_ns = ?3 AND id < ?4) OR ?5)
                 ORDER BY created_at_ns DESC, id DESC LIMIT ?6"
            ))
            .map_err(backend)?;
        let mut items: Vec<Delivery> = stmt
            .query_map(
                params![
                    user_id,
                    log,
                    before_ns,
                    before_id,
                    cursor.is_none(),
                    limit as i64 + 1
                ],
                delivery_from,
            )
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        let mut next = None;
        if items.len() > limit {
            items.truncate(limit);
            if let Some(last) = items.last() {
                next = Some(make_cursor(nanos("created_at", last.created_at)?, &last.id));
            }
        }
        Ok(Page { items, next })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use domain::webhooks::{
        CALLBACK_LOG, DeliveryAttempt, DeliveryStatus, RetrySchedule, WebhookEvent, delivery_id,
    };

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + seconds, 123_456_789).unwrap()
    }

    fn delivery(video: &str, log: &str, due: Option<i64>) -> Delivery {
        Delivery {
            id: delivery_id(video, WebhookEvent::VideoCompleted, log),
            user_id: "ann".into(),
            log: log.into(),
            url: (log == CALLBACK_LOG).then(|| "https://cb.example.com/x".to_string()),
            event: WebhookEvent::VideoCompleted,
            video_id: video.into(),
            payload: r#"{"type":"video.completed"}"#.into(),
            created_at: at(0),
            status: DeliveryStatus::Pending,
            attempts: vec![],
            next_attempt_at: due.map(at),
            schedule_start: 0,
            version: 0,
        }
    }

    fn columns(store: &SqliteStore, table: &str) -> Vec<String> {
        let db = store.db();
        let mut stmt = db
            .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
            .unwrap();
        stmt.query_map([table], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// What a fact has a column for is not in the JSON beside it, and a record reads back equal.
    #[tokio::test]
    async fn each_fact_is_stored_once_and_read_back_equal() {
        let store = SqliteStore::in_memory().unwrap();
        let mut d = delivery("v1", CALLBACK_LOG, Some(5));
        d.record_attempt(
            DeliveryAttempt {
                attempt: 0,
                at: at(6),
                status_code: Some(503),
                latency_ms: 12,
                error: Some("the receiver answered 503".into()),
            },
            &RetrySchedule::default(),
            0.25,
        );
        assert!(store.create_delivery(&d).await.unwrap());
        assert_eq!(store.delivery(&d.id).await.unwrap(), Some(d.clone()));
        let data: Value = serde_json::from_str(
            &store
                .db()
                .query_row("SELECT data FROM webhook_deliveries", [], |r| {
                    r.get::<_, String>(0)
                })
                .unwrap(),
        )
        .unwrap();
        let mut fields: Vec<&str> = data.as_object().unwrap().keys().map(|k| &**k).collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "attempts",
                "event",
                "payload",
                "schedule_start",
                "url",
                "video_id"
            ]
        );
        for column in DELIVERY_COLUMNS {
            assert!(data.get(column).is_none(), "{column} twice");
        }
        assert_eq!(
            columns(&store, "webhook_deliveries"),
            [
                "id",
                "user_id",
                "log",
                "created_at_ns",
                "status",
                "next_attempt_at_ns",
                "version",
                "data"
            ]
        );

        let endpoint = WebhookEndpoint {
            id: "wh_1".into(),
            user_id: "ann".into(),
            url: "https://hooks.example.com/x".into(),
            events: vec![WebhookEvent::VideoCompleted, WebhookEvent::VideoFailed],
            description: "CI".into(),
            sealed_secret: "v1.sealed".into(),
            created_at: at(1),
            updated_at: at(2),
        };
        store.create_endpoint(&endpoint).await.unwrap();
        assert_eq!(store.endpoint("ann", "wh_1").await.unwrap(), Some(endpoint));
        let data: String = store
            .db()
            .query_row("SELECT data FROM webhook_endpoints", [], |r| r.get(0))
            .unwrap();
        assert!(
            !data.contains("\"id\"")
                && !data.contains("\"user_id\"")
                && !data.contains("created_at"),
            "{data}"
        );
    }

    #[tokio::test]
    async fn due_deliveries_are_the_pending_ones_whose_time_has_come_longest_due_first() {
        let store = SqliteStore::in_memory().unwrap();
        assert_eq!(store.next_delivery_due().unwrap(), None);
        let later = delivery("later", "wh_1", Some(100));
        let soon = delivery("soon", "wh_1", Some(10));
        let sooner = delivery("sooner", "wh_1", Some(5));
        let mut delivered = delivery("delivered", "wh_1", None);
        delivered.status = DeliveryStatus::Delivered;
        let mut failed = delivery("failed", "wh_1", None);
        failed.status = DeliveryStatus::Failed;
        for d in [&later, &soon, &sooner, &delivered, &failed] {
            store.create_delivery(d).await.unwrap();
        }
        assert_eq!(store.next_delivery_due().unwrap(), Some(at(5)));
        assert!(store.due_deliveries(at(4), 10).unwrap().is_empty());
        assert_eq!(
            store.due_deliveries(at(10), 10).unwrap(),
            [sooner.id.as_str(), soon.id.as_str()]
        );
        assert_eq!(
            store.due_deliveries(at(200), 1).unwrap(),
            [sooner.id.as_str()]
        );

        // a claimed delivery is not due until its claim runs out
        let mut claimed = sooner.clone();
        claimed.claim(at(10), Duration::from_secs(60));
        assert!(store.replace_delivery(&claimed, 0).await.unwrap());
        assert_eq!(
            store.due_deliveries(at(10), 10).unwrap(),
            [soon.id.as_str()]
        );
        assert_eq!(store.next_delivery_due().unwrap(), Some(at(10)));

        // the lookups read the index, not every delivery ever made
        let db = store.db();
        let plan = |sql: &str| -> String {
            let mut stmt = db.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            stmt.query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap()
                .join("; ")
        };
        let due = plan(
            "SELECT id FROM webhook_deliveries WHERE status = 'pending'
             AND (next_attempt_at_ns IS NULL OR next_attempt_at_ns <= 0)
             ORDER BY next_attempt_at_ns, id LIMIT 8",
        );
        assert!(due.contains("webhook_deliveries_due"), "{due}");
        let listing = plan(
            "SELECT id FROM webhook_deliveries WHERE user_id = 'ann' AND log = 'wh_1'
             ORDER BY created_at_ns DESC, id DESC LIMIT 8",
        );
        assert!(listing.contains("webhook_deliveries_by_log"), "{listing}");
        assert!(
            !listing.contains("TEMP B-TREE"),
            "sorted by the index: {listing}"
        );
    }

    #[tokio::test]
    async fn cursors_are_url_safe() {
        let store = SqliteStore::in_memory().unwrap();
        for i in 0..3 {
            let mut d = delivery(&format!("v{i}"), "wh_1", Some(0));
            d.created_at = at(i);
            store.create_delivery(&d).await.unwrap();
        }
        let page = store.deliveries("ann", "wh_1", 1, None).await.unwrap();
        let cursor = page.next.unwrap();
        assert!(
            cursor
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{cursor}"
        );
        assert!(matches!(
            store.deliveries("ann", "wh_1", 1, Some("%%")).await,
            Err(StoreError::BadCursor)
        ));
    }
}
