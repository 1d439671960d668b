//! Webhooks on AWS: endpoints, callback signing secrets and deliveries in the DynamoDB table
//! (the rows `webhook`, `signing secret` and `delivery` of the table design in
//! `crate::adapters`), and delivery attempts queued as delayed SQS messages.
//!
//! At least once, and never twice at the same moment, rests on two conditional writes: a
//! delivery is created only where none is (`attribute_not_exists(pk)`), and replaced only while
//! its `version` attribute is still the one its sender read.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use domain::ports::{Page, StoreError, StoreResult};
use domain::webhooks::{Delivery, DeliveryQueue, WebhookEndpoint, WebhookStore};

use crate::adapters::{
    AwsClients, DynamoStore, applied, backend, from_json, json_attr, n, number, s, text, time_key,
};

/// SQS delays a message by at most 15 minutes; a delivery due later is sent again with the rest
/// of its wait each time it comes early (see `crate::lambda::handle_delivery_event`).
pub const MAX_DELAY_SECONDS: i32 = 900;

type Item = HashMap<String, AttributeValue>;

fn endpoint_key(user_id: &str, id: &str) -> (String, String) {
    (format!("USER#{user_id}"), format!("WEBHOOK#{id}"))
}

const SIGNING_SECRET: &str = "SIGNING_SECRET";

fn delivery_pk(id: &str) -> String {
    format!("DELIVERY#{id}")
}

/// The index partition of a log's deliveries: one per owner and endpoint (or callback log).
fn delivery_log(user_id: &str, log: &str) -> String {
    format!("DELIVERIES#{user_id}#{log}")
}

/// An endpoint item: the endpoint as JSON in `data`, as a user's profile is kept.
fn endpoint_item(endpoint: &WebhookEndpoint) -> StoreResult<Item> {
    let (pk, sk) = endpoint_key(&endpoint.user_id, &endpoint.id);
    Ok(HashMap::from([
        ("pk".to_string(), s(pk)),
        ("sk".to_string(), s(sk)),
        ("data".to_string(), json_attr(endpoint)?),
    ]))
}

/// A delivery item: the delivery as JSON in `data` but for its `version`, which is a number
/// attribute of its own, the one the conditional writes compare.
fn delivery_item(delivery: &Delivery) -> StoreResult<Item> {
    let mut data =
        serde_json::to_value(delivery).map_err(|e| StoreError::Backend(e.to_string()))?;
    if let Some(fields) = data.as_object_mut() {
        fields.remove("version");
    }
    Ok(HashMap::from([
        ("pk".to_string(), s(delivery_pk(&delivery.id))),
        ("sk".to_string(), s("DELIVERY")),
        (
            "gsi1pk".to_string(),
            s(delivery_log(&delivery.user_id, &delivery.log)),
        ),
        (
            "gsi1sk".to_string(),
            s(format!(
                "{}#{}",
                time_key(&delivery.created_at),
                delivery.id
            )),
        ),
        ("data".to_string(), json_attr(&data)?),
        ("version".to_string(), n(delivery.version)),
    ]))
}

fn delivery_from(item: &Item) -> StoreResult<Delivery> {
    let mut delivery: Delivery = from_json(item, "data")?;
    delivery.version = number(item, "version");
    Ok(delivery)
}

impl DynamoStore {
    /// Puts `item` only where no item with its key is; false when one was.
    async fn put_new(&self, item: Item) -> StoreResult<bool> {
        self.put_if(item, "attribute_not_exists(pk)", None).await
    }

    /// Puts `item` if `condition` holds for the stored one; false when it does not.
    async fn put_if(
        &self,
        item: Item,
        condition: &str,
        values: Option<HashMap<String, AttributeValue>>,
    ) -> StoreResult<bool> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .set_expression_attribute_values(values)
            .send()
            .await;
        applied(result)
    }

    /// Deletes a log's deliveries, found through the index. The index is eventually
    /// consistent, so `delete_endpoint` sweeps twice.
    async fn delete_deliveries(&self, user_id: &str, log: &str) -> StoreResult<()> {
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name("gsi1")
                .key_condition_expression("gsi1pk = :log")
                .expression_attribute_values(":log", s(delivery_log(user_id, log)))
                .projection_expression("pk, sk")
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(backend)?;
            self.delete_items(out.items.unwrap_or_default()).await?;
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(());
            }
        }
    }
}

#[async_trait]
impl WebhookStore for DynamoStore {
    async fn create_endpoint(&self, endpoint: &WebhookEndpoint) -> StoreResult<()> {
        if self.put_new(endpoint_item(endpoint)?).await? {
            Ok(())
        } else {
            Err(StoreError::Conflict("endpoint id taken".into()))
        }
    }

    async fn endpoint(&self, user_id: &str, id: &str) -> StoreResult<Option<WebhookEndpoint>> {
        let (pk, sk) = endpoint_key(user_id, id);
        self.item(pk, &sk)
            .await?
            .map(|item| from_json(&item, "data"))
            .transpose()
    }

    async fn endpoints_of(&self, user_id: &str) -> StoreResult<Vec<WebhookEndpoint>> {
        let mut endpoints = self
            .items_with_prefix(format!("USER#{user_id}"), "WEBHOOK#")
            .await?
            .iter()
            .map(|item| from_json::<WebhookEndpoint>(item, "data"))
            .collect::<StoreResult<Vec<_>>>()?;
        // keys sort by id; a user has a handful of endpoints, sorted here by age
        endpoints.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(endpoints)
    }

    async fn update_endpoint(&self, endpoint: &WebhookEndpoint) -> StoreResult<()> {
        // the key holds the owner: another user's endpoint of that id is not found
        if self
            .put_if(endpoint_item(endpoint)?, "attribute_exists(pk)", None)
            .await?
        {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    /// The deliveries first (the owner can retry if that fails), then the endpoint, then its
    /// deliveries again: those queued meanwhile, and those the index had not shown yet.
    async fn delete_endpoint(&self, user_id: &str, id: &str) -> StoreResult<bool> {
        let (pk, sk) = endpoint_key(user_id, id);
        if self.item(pk.clone(), &sk).await?.is_none() {
            return Ok(false);
        }
        self.delete_deliveries(user_id, id).await?;
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .condition_expression("attribute_exists(pk)")
            .send()
            .await;
        let deleted = applied(result)?;
        self.delete_deliveries(user_id, id).await?;
        Ok(deleted)
    }

    async fn signing_secret(&self, user_id: &str) -> StoreResult<Option<String>> {
        self.item(format!("USER#{user_id}"), SIGNING_SECRET)
            .await?
            .map(|item| text(&item, "sealed"))
            .transpose()
    }

    async fn put_signing_secret(
        &self,
        user_id: &str,
        sealed: &str,
        replace: bool,
    ) -> StoreResult<String> {
        let item = HashMap::from([
            ("pk".to_string(), s(format!("USER#{user_id}"))),
            ("sk".to_string(), s(SIGNING_SECRET)),
            ("sealed".to_string(), s(sealed)),
        ]);
        if replace {
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .send()
                .await
                .map_err(backend)?;
            return Ok(sealed.to_string());
        }
        if self.put_new(item).await? {
            return Ok(sealed.to_string());
        }
        // another first use got there first: its secret is the one in force
        self.signing_secret(user_id).await?.ok_or_else(|| {
            StoreError::Backend("the signing secret vanished while it was stored".into())
        })
    }

    async fn create_delivery(&self, delivery: &Delivery) -> StoreResult<bool> {
        self.put_new(delivery_item(delivery)?).await
    }

    async fn delivery(&self, id: &str) -> StoreResult<Option<Delivery>> {
        self.item(delivery_pk(id), "DELIVERY")
            .await?
            .as_ref()
            .map(delivery_from)
            .transpose()
    }

    async fn replace_delivery(
        &self,
        delivery: &Delivery,
        expected_version: u64,
    ) -> StoreResult<bool> {
        // false too when the item is gone: a missing `version` equals nothing
        self.put_if(
            delivery_item(delivery)?,
            "version = :expected",
            Some(HashMap::from([(
                ":expected".to_string(),
                n(expected_version),
            )])),
        )
        .await
    }

    async fn deliveries(
        &self,
        user_id: &str,
        log: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Delivery>> {
        self.newest_first(delivery_log(user_id, log), limit, cursor, delivery_from)
            .await
    }
}

/// The body of a delivery queue message: which delivery, and when its attempt is due.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryMessage {
    pub delivery_id: String,
    pub due: DateTime<Utc>,
}

/// The SQS delay that brings a message due at `due` no earlier than then, as far as SQS can
/// delay it: whole seconds rounded up, from 0 to [`MAX_DELAY_SECONDS`].
pub fn delay_seconds(due: DateTime<Utc>, now: DateTime<Utc>) -> i32 {
    let ms = (due - now).num_milliseconds().max(0) as u64;
    ms.div_ceil(1000).min(MAX_DELAY_SECONDS as u64) as i32
}

/// Delivery attempts as messages on the delivery queue, each delayed until it is due (or by
/// SQS's 15 minutes at most: the deliver function sends a message that comes early back with
/// the rest of its wait).
pub struct SqsDeliveries {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsDeliveries {
    pub fn new(clients: &AwsClients, queue_url: impl Into<String>) -> Self {
        Self {
            client: clients.sqs.clone(),
            queue_url: queue_url.into(),
        }
    }
}

#[async_trait]
impl DeliveryQueue for SqsDeliveries {
    async fn enqueue(&self, delivery_id: &str, due: DateTime<Utc>) -> StoreResult<()> {
        let message = DeliveryMessage {
            delivery_id: delivery_id.to_string(),
            due,
        };
        let body =
            serde_json::to_string(&message).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .delay_seconds(delay_seconds(due, Utc::now()))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::webhooks::{DeliveryAttempt, DeliveryStatus, WebhookEvent, delivery_id};

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + s, 123_456_789).unwrap()
    }

    #[test]
    fn delays_round_up_and_stop_at_sqs_maximum() {
        let now = at(0);
        assert_eq!(delay_seconds(at(-5), now), 0);
        assert_eq!(delay_seconds(now, now), 0);
        assert_eq!(
            delay_seconds(now + chrono::Duration::milliseconds(1), now),
            1
        );
        assert_eq!(delay_seconds(at(5), now), 5);
        assert_eq!(delay_seconds(at(900), now), 900);
        assert_eq!(delay_seconds(at(7200), now), MAX_DELAY_SECONDS);
    }

    #[test]
    fn a_delivery_item_keeps_its_version_apart_and_reads_back_equal() {
        let mut d = Delivery {
            id: delivery_id("v1", WebhookEvent::VideoFailed, "wh_1"),
            user_id: "ann".into(),
            log: "wh_1".into(),
            url: None,
            event: WebhookEvent::VideoFailed,
            video_id: "v1".into(),
            payload: r#"{"type":"video.failed"}"#.into(),
            created_at: at(0),
            status: DeliveryStatus::Pending,
            attempts: vec![],
            next_attempt_at: Some(at(0)),
            schedule_start: 0,
            version: 0,
        };
        d.claim(at(1), std::time::Duration::from_secs(60));
        d.record_attempt(
            DeliveryAttempt {
                attempt: 0,
                at: at(2),
                status_code: Some(503),
                latency_ms: 40,
                error: Some("the receiver answered 503".into()),
            },
            &Default::default(),
            0.5,
        );
        let item = delivery_item(&d).unwrap();
        let data: serde_json::Value = from_json(&item, "data").unwrap();
        assert!(data.get("version").is_none(), "{data}");
        assert_eq!(number(&item, "version"), 2);
        assert_eq!(text(&item, "gsi1pk").unwrap(), "DELIVERIES#ann#wh_1");
        assert_eq!(delivery_from(&item).unwrap(), d);
    }

    #[test]
    fn messages_read_back_as_written() {
        let m = DeliveryMessage {
            delivery_id: "msg_1".into(),
            due: at(3),
        };
        let body = serde_json::to_string(&m).unwrap();
        assert!(body.contains(r#""delivery_id":"msg_1""#), "{body}");
        assert_eq!(serde_json::from_str::<DeliveryMessage>(&body).unwrap(), m);
    }
}
