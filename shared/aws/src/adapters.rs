//! AWS adapters: DynamoDB (one table for users, videos, frame results and webhooks), S3 (blobs,
//! presigned URLs) and SQS (jobs; webhook deliveries in `crate::webhooks`). Clients are built
//! once per process; tests point them at moto.
//!
//! Table design (see README "DynamoDB design"):
//! | item           | pk                 | sk                 | gsi1pk                      | gsi1sk                    |
//! |----------------|--------------------|--------------------|-----------------------------|---------------------------|
//! | user           | `USER#{id}`        | `PROFILE`          |                             |                           |
//! | email claim    | `EMAIL#{email}`    | `EMAIL`            |                             |                           |
//! | video          | `VIDEO#{id}`       | `META`             | `USER#{owner}`              | `{uploaded_at, ns}#{id}`  |
//! | frame chunk    | `VIDEO#{id}`       | `FRAMES#{c:010}`   |                             |                           |
//! | track profile  | `VIDEO#{id}`       | `TRACK#{t:010}`    |                             |                           |
//! | segment lease  | `VIDEO#{id}`       | `SEG#{i:05}`       |                             |                           |
//! | webhook        | `USER#{owner}`     | `WEBHOOK#{id}`     |                             |                           |
//! | signing secret | `USER#{owner}`     | `SIGNING_SECRET`   |                             |                           |
//! | delivery       | `DELIVERY#{id}`    | `DELIVERY`         | `DELIVERIES#{owner}#{log}`  | `{created_at, ns}#{id}`   |
//! The video item holds each field of the `Video` once: `id`, the owner and `uploaded_at` in its
//! keys, `title`, `s3_key`, `filename`, `content_type`, `size_bytes` (absent when undeclared),
//! `sample_fps`, `callback_url` (absent when none), `upload` (JSON, set once), `status` (claims
//! are conditional on it) and `analysis` (the rest of the `AnalysisState`, JSON). While a video
//! is analysed it also carries the analysis plan (`analysis_plan`) and its counters
//! (`covered_ms`, `frames_seen`, the `done_segments` number set), so claims and completion are
//! single conditional updates, and the progress of a `PROCESSING` video is read from them (see
//! `DynamoStore::video_from`).
//! Frame results are kept in chunks: one item for the analysed frames among 300 consecutive
//! frame numbers, binary-encoded (see `crate::chunks`), a few KB, so that a minute of video
//! costs a few write units instead of one per frame. A chunk too large for one item (every
//! frame of a crowd) is split into parts `FRAMES#{c:010}.{p:03}`, each under 64 KB. Items of
//! the earlier layout, one JSON item per frame (`FRAME#{n:010}`), are still read.
//! Webhook endpoints live in their owner's partition (a user has few; they are listed with one
//! query), each delivery in a partition of its own (it is read and replaced by id, by whichever
//! sender gets its message), listed per endpoint or callback log through `gsi1`; see
//! `crate::webhooks`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Delete, DeleteRequest, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, Projection, ProjectionType, Put, PutRequest, ScalarAttributeType,
    TransactWriteItem, WriteRequest,
};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_smithy_http_client::tls;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat, Utc};

use domain::metered::{WriteMeter, write_units};
use domain::ports::*;
use domain::{
    AnalysisPlan, AnalysisState, Checkpoint, FrameResult, MediaSource, StoredObject, TrackProfile,
    User, Video, VideoInfo, VideoStatus,
};

use crate::chunks::{self, FRAMES_PER_CHUNK, PART_BYTES, chunk_of};

/// Where the AWS resources are. `endpoint_url` is for moto/LocalStack; unset on AWS.
#[derive(Debug, Clone)]
pub struct AwsConfig {
    pub region: String,
    pub endpoint_url: Option<String>,
    pub table: String,
    pub bucket: String,
    pub queue_url: Option<String>,
    /// The webhook delivery queue (`DELIVERY_QUEUE_URL`): the API queues resends there, the
    /// analysis function the announcements of ended videos, the deliver function retries.
    pub delivery_queue_url: Option<String>,
    /// Static credentials instead of the default chain's (tests against moto pass them here
    /// rather than setting the process environment). Their `Debug` hides the secret.
    pub credentials: Option<aws_sdk_s3::config::Credentials>,
}

/// SDK clients, built once per process.
#[derive(Clone)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub sdk: aws_config::SdkConfig,
}

impl AwsClients {
    pub async fn new(config: &AwsConfig) -> Self {
        // rustls with ring and the system's root certificates, for every client made from `sdk`
        let https = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(https)
            .region(aws_config::Region::new(config.region.clone()));
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(credentials) = &config.credentials {
            loader = loader.credentials_provider(credentials.clone());
        }
        let sdk = loader.load().await;
        // Presigned PUTs must not carry a checksum of an empty body (awslabs/aws-sdk-rust#1240),
        // and a local endpoint only understands path-style bucket addressing.
        let s3_config = aws_sdk_s3::config::Builder::from(&sdk)
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .force_path_style(config.endpoint_url.is_some())
            .build();
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
            s3: aws_sdk_s3::Client::from_conf(s3_config),
            sqs: aws_sdk_sqs::Client::new(&sdk),
            sdk,
        }
    }
}

pub(crate) fn backend<E: std::error::Error + 'static>(e: E) -> StoreError {
    StoreError::Backend(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn text(item: &HashMap<String, AttributeValue>, name: &str) -> StoreResult<String> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .ok_or_else(|| StoreError::Backend(format!("item has no string attribute {name}")))
}

pub(crate) fn json_attr<T: serde::Serialize>(value: &T) -> StoreResult<AttributeValue> {
    serde_json::to_string(value)
        .map(AttributeValue::S)
        .map_err(|e| StoreError::Backend(e.to_string()))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    item: &HashMap<String, AttributeValue>,
    name: &str,
) -> StoreResult<T> {
    serde_json::from_str(&text(item, name)?).map_err(|e| StoreError::Backend(e.to_string()))
}

/// A video's `analysis` attribute: its `AnalysisState` but for the status, which is the
/// `status` attribute.
fn analysis_attr(state: &AnalysisState) -> StoreResult<AttributeValue> {
    let mut value = serde_json::to_value(state).map_err(|e| StoreError::Backend(e.to_string()))?;
    if let Some(fields) = value.as_object_mut() {
        fields.remove("status");
    }
    json_attr(&value)
}

/// The `AnalysisState` of a video item in `status`. (Items written by earlier versions also
/// have a status in `analysis`; the attribute is the one conditional writes kept current.)
fn analysis_from(
    item: &HashMap<String, AttributeValue>,
    status: VideoStatus,
) -> StoreResult<AnalysisState> {
    let mut value: serde_json::Value = from_json(item, "analysis")?;
    value
        .as_object_mut()
        .ok_or_else(|| StoreError::Backend("bad video item: analysis".into()))?
        .insert("status".into(), status.as_str().into());
    serde_json::from_value(value).map_err(|e| StoreError::Backend(e.to_string()))
}

/// The fields of a video that never change, but for those in its keys (`id`, the owner): in
/// attributes of their own, or in the whole-video JSON (`record`) of items written by earlier
/// versions, the rest of which is ignored.
#[derive(serde::Deserialize)]
struct FixedFields {
    s3_key: String,
    filename: String,
    content_type: String,
    size_bytes: Option<u64>,
    sample_fps: f64,
    uploaded_at: DateTime<Utc>,
}

/// `uploaded_at` in a video's `gsi1sk`, where it is stored: RFC 3339 with nine decimals (fixed
/// width, so the index sorts it as time), which `DateTime<Utc>` reads back exactly.
/// (Items written by earlier versions have milliseconds there, and `uploaded_at` in `record`.)
pub(crate) fn time_key(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// The cursor of a page of a `gsi1` listing that ends at `item`: its keys as JSON, in base64url
/// (the cursor travels in a query string).
fn index_cursor(item: &HashMap<String, AttributeValue>) -> StoreResult<String> {
    let keys: HashMap<String, String> = ["pk", "sk", "gsi1pk", "gsi1sk"]
        .iter()
        .map(|k| Ok((k.to_string(), text(item, k)?)))
        .collect::<StoreResult<_>>()?;
    Ok(URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&keys).map_err(|e| StoreError::Backend(e.to_string()))?))
}

/// Where the page after `cursor` of the `gsi1` listing `gsi1pk` starts; `BadCursor` for a
/// cursor that is not one, or that was made for another listing (another user's).
fn index_start_key(
    cursor: Option<&str>,
    gsi1pk: &str,
) -> StoreResult<Option<HashMap<String, AttributeValue>>> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    let raw = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| StoreError::BadCursor)?;
    let keys: HashMap<String, String> =
        serde_json::from_slice(&raw).map_err(|_| StoreError::BadCursor)?;
    let expected = ["pk", "sk", "gsi1pk", "gsi1sk"];
    if keys.len() != expected.len()
        || expected.iter().any(|k| !keys.contains_key(*k))
        || keys["gsi1pk"] != gsi1pk
    {
        return Err(StoreError::BadCursor);
    }
    Ok(Some(keys.into_iter().map(|(k, v)| (k, s(v))).collect()))
}

/// A frame item of the previous layout (one JSON item per frame), still read.
fn frame_sk(n: u64) -> String {
    format!("FRAME#{n:010}")
}

/// The key of part `part` of chunk `chunk` (see `crate::chunks`): `FRAMES#{chunk:010}` for the
/// first part, `FRAMES#{chunk:010}.{part:03}` for the others, which sort right after it.
fn chunk_sk(chunk: u64, part: usize) -> String {
    if part == 0 {
        format!("FRAMES#{chunk:010}")
    } else {
        format!("FRAMES#{chunk:010}.{part:03}")
    }
}

/// Above every chunk's key.
const CHUNKS_END: &str = "FRAMES#~";

/// Chunks beyond this many would need more digits than their keys sort by (3·10^12 frames).
const MAX_CHUNKS: u64 = 10_000_000_000;

/// Writes of one chunk that may find it changed by another writer before one succeeds.
const CHUNK_ATTEMPTS: u32 = 8;

/// The size DynamoDB prices an item at: each attribute's name and value, strings and binaries
/// by their bytes, numbers by one byte per two significant digits plus one.
pub fn item_bytes(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(k, v)| k.len() + value_bytes(v)).sum()
}

fn value_bytes(v: &AttributeValue) -> usize {
    let number = |n: &str| {
        let digits: String = n.chars().filter(char::is_ascii_digit).collect();
        let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
        significant.max(1).div_ceil(2) + 1
    };
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| number(n)).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(v) => 3 + v.iter().map(|x| 1 + value_bytes(x)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, x)| 1 + k.len() + value_bytes(x))
                .sum::<usize>()
        }
        _ => 1,
    }
}

/// A chunk as stored: its revision (0: not stored), the keys of its parts and its frames.
#[derive(Debug, Default)]
struct StoredChunk {
    rev: u64,
    keys: Vec<String>,
    frames: BTreeMap<u64, FrameResult>,
}

fn track_sk(track: u32) -> String {
    format!("TRACK#{track:010}")
}

fn segment_sk(i: u32) -> String {
    format!("SEG#{i:05}")
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn number(item: &HashMap<String, AttributeValue>, name: &str) -> u64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A number attribute read as a `T`, `None` when absent.
fn optional_number<T: std::str::FromStr>(
    item: &HashMap<String, AttributeValue>,
    name: &str,
) -> StoreResult<Option<T>> {
    item.get(name)
        .map(|v| {
            v.as_n()
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| StoreError::Backend(format!("bad number attribute {name}")))
        })
        .transpose()
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

pub(crate) fn condition_failed<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(e: &E) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

/// A conditional write's outcome: true when it was applied, false when its condition did not
/// hold; any other failure is the store's.
pub(crate) fn applied<O, E, R>(
    result: Result<O, aws_sdk_dynamodb::error::SdkError<E, R>>,
) -> StoreResult<bool>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().is_some_and(condition_failed) => Ok(false),
        Err(e) => Err(backend(e)),
    }
}

/// Users, videos, frame results and webhooks in one DynamoDB table.
pub struct DynamoStore {
    pub(crate) client: aws_sdk_dynamodb::Client,
    pub(crate) table: String,
    /// Counts the frame items written, when a bench asks (see `with_meter`).
    meter: Option<Arc<WriteMeter>>,
}

impl DynamoStore {
    pub fn new(clients: &AwsClients, table: impl Into<String>) -> Self {
        Self {
            client: clients.dynamodb.clone(),
            table: table.into(),
            meter: None,
        }
    }

    /// Counts every frame item this store writes into `meter`, priced as DynamoDB prices it.
    pub fn with_meter(mut self, meter: Arc<WriteMeter>) -> Self {
        self.meter = Some(meter);
        self
    }

    fn meter_frame_item(&self, bytes: usize, transactional: bool) {
        if let Some(meter) = &self.meter {
            let units = write_units(bytes) * if transactional { 2 } else { 1 };
            meter.frame_write(bytes, units);
        }
    }

    /// Creates the table with its index (tests and first deployments; SAM declares the same).
    pub async fn create_table(&self) -> StoreResult<()> {
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(backend)
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(backend)
        };
        self.client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("pk")?)
            .attribute_definitions(attr("sk")?)
            .attribute_definitions(attr("gsi1pk")?)
            .attribute_definitions(attr("gsi1sk")?)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name("gsi1")
                    .key_schema(key("gsi1pk", KeyType::Hash)?)
                    .key_schema(key("gsi1sk", KeyType::Range)?)
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::All)
                            .build(),
                    )
                    .build()
                    .map_err(backend)?,
            )
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    pub(crate) async fn item(
        &self,
        pk: String,
        sk: &str,
    ) -> StoreResult<Option<HashMap<String, AttributeValue>>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        Ok(out.item)
    }

    fn user_from(item: &HashMap<String, AttributeValue>) -> StoreResult<User> {
        from_json(item, "data")
    }

    /// A video item: each field of the `Video` in one attribute (see the module's comment).
    fn video_item(video: &Video) -> StoreResult<HashMap<String, AttributeValue>> {
        let mut item = HashMap::from([
            ("pk".to_string(), s(format!("VIDEO#{}", video.id))),
            ("sk".to_string(), s("META")),
            ("gsi1pk".to_string(), s(format!("USER#{}", video.user_id))),
            (
                "gsi1sk".to_string(),
                s(format!("{}#{}", time_key(&video.uploaded_at), video.id)),
            ),
            ("title".to_string(), s(&video.title)),
            ("s3_key".to_string(), s(&video.s3_key)),
            ("filename".to_string(), s(&video.filename)),
            ("content_type".to_string(), s(&video.content_type)),
            ("sample_fps".to_string(), n(video.sample_fps)),
            ("status".to_string(), s(video.analysis.status.as_str())),
            ("analysis".to_string(), analysis_attr(&video.analysis)?),
        ]);
        if let Some(size) = video.size_bytes {
            item.insert("size_bytes".to_string(), n(size));
        }
        if let Some(upload) = &video.upload {
            item.insert("upload".to_string(), json_attr(upload)?);
        }
        if let Some(url) = &video.callback_url {
            item.insert("callback_url".to_string(), s(url));
        }
        Ok(item)
    }

    /// Deletes the items by their keys (`pk`, `sk`; other attributes are ignored), in batches.
    pub(crate) async fn delete_items(
        &self,
        items: Vec<HashMap<String, AttributeValue>>,
    ) -> StoreResult<()> {
        let mut requests = Vec::with_capacity(items.len());
        for item in items {
            let key = item
                .into_iter()
                .filter(|(k, _)| k == "pk" || k == "sk")
                .collect();
            let delete = DeleteRequest::builder()
                .set_key(Some(key))
                .build()
                .map_err(backend)?;
            requests.push(WriteRequest::builder().delete_request(delete).build());
        }
        self.batch_write(requests).await
    }

    /// Every item of partition `pk` whose sort key starts with `prefix`, read consistently,
    /// page after page.
    pub(crate) async fn items_with_prefix(
        &self,
        pk: String,
        prefix: &str,
    ) -> StoreResult<Vec<HashMap<String, AttributeValue>>> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s(&pk))
                .expression_attribute_values(":prefix", s(prefix))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(backend)?;
            items.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    /// A page of one gsi1 partition, newest first (`gsi1sk` starts with a time), each item read
    /// with `read`; the cursor is bound to the partition (see `index_start_key`).
    pub(crate) async fn newest_first<T>(
        &self,
        partition: String,
        limit: usize,
        cursor: Option<&str>,
        read: impl Fn(&HashMap<String, AttributeValue>) -> StoreResult<T>,
    ) -> StoreResult<Page<T>> {
        let start = index_start_key(cursor, &partition)?;
        // one extra item tells whether there is a next page
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :partition")
            .expression_attribute_values(":partition", s(partition))
            .scan_index_forward(false)
            .limit(limit as i32 + 1)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(backend)?;
        let items = out.items.unwrap_or_default();
        let more = items.len() > limit;
        let mut page = Vec::with_capacity(limit.min(items.len()));
        let mut next = None;
        for item in items.iter().take(limit) {
            page.push(read(item)?);
            if more {
                next = Some(index_cursor(item)?);
            }
        }
        Ok(Page { items: page, next })
    }

    /// The `Video` of an item made by `video_item`, or by an earlier version, which also kept
    /// the whole video as JSON in `record`: only the fields that never change are read from it
    /// (`title`, `status`, `analysis` and `upload` were kept up to date in their own attributes).
    fn video_from(item: &HashMap<String, AttributeValue>) -> StoreResult<Video> {
        let bad = |what: &str| StoreError::Backend(format!("bad video item: {what}"));
        let status = VideoStatus::parse(&text(item, "status")?).ok_or_else(|| bad("status"))?;
        let mut analysis = analysis_from(item, status)?;
        // a running analysis has got as far as its counters say (attributes of their own, so
        // that parallel segments can add to them)
        if status == VideoStatus::Processing && item.contains_key("analysis_plan") {
            #[derive(serde::Deserialize)]
            struct PlanDuration {
                duration_ms: u64,
            }
            let plan: PlanDuration = from_json(item, "analysis_plan")?;
            analysis.progress =
                domain::progress_percent(number(item, "covered_ms"), plan.duration_ms);
            analysis.frames_analyzed = number(item, "frames_seen");
        }
        let upload = item
            .contains_key("upload")
            .then(|| from_json::<StoredObject>(item, "upload"))
            .transpose()?;
        let key = |name: &str, prefix: &str| -> StoreResult<String> {
            text(item, name)?
                .strip_prefix(prefix)
                .map(str::to_string)
                .ok_or_else(|| bad(name))
        };
        let fixed = if item.contains_key("record") {
            from_json(item, "record")?
        } else {
            FixedFields {
                s3_key: text(item, "s3_key")?,
                filename: text(item, "filename")?,
                content_type: text(item, "content_type")?,
                size_bytes: optional_number(item, "size_bytes")?,
                sample_fps: optional_number(item, "sample_fps")?
                    .ok_or_else(|| bad("sample_fps"))?,
                uploaded_at: text(item, "gsi1sk")?
                    .split_once('#')
                    .and_then(|(time, _)| DateTime::parse_from_rfc3339(time).ok())
                    .ok_or_else(|| bad("gsi1sk"))?
                    .with_timezone(&Utc),
            }
        };
        Ok(Video {
            id: key("pk", "VIDEO#")?,
            user_id: key("gsi1pk", "USER#")?,
            title: text(item, "title")?,
            s3_key: fixed.s3_key,
            filename: fixed.filename,
            content_type: fixed.content_type,
            size_bytes: fixed.size_bytes,
            sample_fps: fixed.sample_fps,
            uploaded_at: fixed.uploaded_at,
            upload,
            // never in `record`: callbacks came after that layout
            callback_url: item
                .contains_key("callback_url")
                .then(|| text(item, "callback_url"))
                .transpose()?,
            analysis,
        })
    }

    /// Writes items 25 at a time, retrying what DynamoDB hands back as unprocessed.
    async fn batch_write(&self, requests: Vec<WriteRequest>) -> StoreResult<()> {
        for chunk in requests.chunks(25) {
            let mut pending = chunk.to_vec();
            for attempt in 0..8 {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(backend)?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut m| m.remove(&self.table))
                    .unwrap_or_default();
                if pending.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            if !pending.is_empty() {
                return Err(StoreError::Backend(format!(
                    "{} writes still unprocessed after retries",
                    pending.len()
                )));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl UserStore for DynamoStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let email = user.email.to_lowercase();
        let put = |item: HashMap<String, AttributeValue>| -> StoreResult<TransactWriteItem> {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(backend)?;
            Ok(TransactWriteItem::builder().put(put).build())
        };
        let profile = HashMap::from([
            ("pk".to_string(), s(format!("USER#{}", user.id))),
            ("sk".to_string(), s("PROFILE")),
            (
                "data".to_string(),
                json_attr(&User {
                    email: email.clone(),
                    ..user.clone()
                })?,
            ),
        ]);
        let claim = HashMap::from([
            ("pk".to_string(), s(format!("EMAIL#{email}"))),
            ("sk".to_string(), s("EMAIL")),
            ("user_id".to_string(), s(&user.id)),
        ]);
        // both or neither: the email claim makes emails unique
        let result = self
            .client
            .transact_write_items()
            .transact_items(put(claim)?)
            .transact_items(put(profile)?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.into_service_error() {
                aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(_) => {
                    Err(StoreError::Conflict("email already registered".into()))
                }
                other => Err(backend(other)),
            },
        }
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let Some(claim) = self
            .item(format!("EMAIL#{}", email.to_lowercase()), "EMAIL")
            .await?
        else {
            return Ok(None);
        };
        self.user_by_id(&text(&claim, "user_id")?).await
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        self.item(format!("USER#{id}"), "PROFILE")
            .await?
            .as_ref()
            .map(Self::user_from)
            .transpose()
    }
}

#[async_trait]
impl VideoStore for DynamoStore {
    async fn create_video(&self, video: &Video) -> StoreResult<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::video_item(video)?))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn video(&self, id: &str) -> StoreResult<Option<Video>> {
        self.item(format!("VIDEO#{id}"), "META")
            .await?
            .as_ref()
            .map(Self::video_from)
            .transpose()
    }

    async fn videos_of(
        &self,
        user_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Video>> {
        self.newest_first(format!("USER#{user_id}"), limit, cursor, Self::video_from)
            .await
    }

    async fn set_title(&self, id: &str, title: &str) -> StoreResult<()> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("VIDEO#{id}")))
            .key("sk", s("META"))
            .update_expression("SET title = :t")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":t", s(title))
            .send()
            .await
            .map_err(|e| match e.into_service_error() {
                aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(_) => StoreError::NotFound,
                other => backend(other),
            })?;
        Ok(())
    }

    async fn set_analysis(&self, id: &str, state: &AnalysisState) -> StoreResult<()> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("VIDEO#{id}")))
            .key("sk", s("META"))
            .update_expression("SET analysis = :a, #status = :s")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":a", analysis_attr(state)?)
            .expression_attribute_values(":s", s(state.status.as_str()))
            .send()
            .await
            .map_err(|e| match e.into_service_error() {
                aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(_) => StoreError::NotFound,
                other => backend(other),
            })?;
        Ok(())
    }

    async fn record_upload(&self, id: &str, object: &StoredObject) -> StoreResult<UploadRecord> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.meta_key(id).into()))
            .update_expression("SET upload = :u")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(upload)")
            .expression_attribute_values(":u", json_attr(object)?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(UploadRecord::Recorded),
            Err(e) => {
                let e = e.into_service_error();
                if !condition_failed(&e) {
                    return Err(backend(e));
                }
                let Some(item) = self.item(format!("VIDEO#{id}"), "META").await? else {
                    return Ok(UploadRecord::Gone);
                };
                let recorded: StoredObject = from_json(&item, "upload")?;
                Ok(if recorded.same_as(object) {
                    UploadRecord::Same
                } else {
                    UploadRecord::Different(recorded)
                })
            }
        }
    }

    /// The other items first (the user can retry if that fails), then the record, then the
    /// other items again: frames a worker wrote meanwhile. A worker writing after that finds
    /// its segment gone at its next checkpoint and removes its own writes.
    async fn delete_video(&self, id: &str) -> StoreResult<()> {
        self.delete_frames(id).await?;
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(format!("VIDEO#{id}")))
            .key("sk", s("META"))
            .send()
            .await
            .map_err(backend)?;
        self.delete_frames(id).await
    }
}

/// A chunk item's key and frames; a blob that does not decode, or frames outside the chunk its
/// key names, are an error that names the item.
fn chunk_item_frames(
    video_id: &str,
    item: &HashMap<String, AttributeValue>,
) -> StoreResult<(String, Vec<FrameResult>)> {
    let key = text(item, "sk")?;
    let bad = |what: String| {
        StoreError::Backend(format!("stored frames {key} of video {video_id}: {what}"))
    };
    let chunk: u64 = key
        .get(7..17)
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| bad("not a chunk key".into()))?;
    let blob = item
        .get("frames")
        .and_then(|v| v.as_b().ok())
        .ok_or_else(|| bad("no binary attribute frames".into()))?;
    let frames = chunks::decode(blob.as_ref()).map_err(|e| bad(e.to_string()))?;
    if let Some(f) = frames.iter().find(|f| chunk_of(f.frame) != chunk) {
        return Err(bad(format!("frame {} is not in this chunk", f.frame)));
    }
    Ok((key, frames))
}

#[async_trait]
impl ResultStore for DynamoStore {
    /// Each chunk the frames fall in is written once when it is new (the worker writes whole
    /// chunks); a chunk already stored is read and merged with (the new frames win), and put
    /// back only if nobody changed it meanwhile.
    async fn put_frames(&self, video_id: &str, frames: &[FrameResult]) -> StoreResult<()> {
        let mut by_chunk: BTreeMap<u64, BTreeMap<u64, &FrameResult>> = BTreeMap::new();
        for f in frames {
            // the last copy of a frame in the batch wins, as a later write would
            by_chunk
                .entry(chunk_of(f.frame))
                .or_default()
                .insert(f.frame, f);
        }
        for (chunk, frames) in by_chunk {
            self.write_chunk(video_id, chunk, frames).await?;
        }
        Ok(())
    }

    fn frames_per_chunk(&self) -> Option<u64> {
        Some(FRAMES_PER_CHUNK)
    }

    async fn frames(
        &self,
        video_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<(Vec<FrameResult>, Option<u64>)> {
        let Some(first) = after.map_or(Some(0), |a| a.checked_add(1)) else {
            return Ok((Vec::new(), None));
        };
        // one extra frame tells whether there is a next page
        let want = limit + 1;
        let (chunked, legacy) = tokio::join!(
            self.chunk_frames(video_id, first, want),
            self.legacy_frames(video_id, first, want)
        );
        let mut merged: BTreeMap<u64, FrameResult> =
            legacy?.into_iter().map(|f| (f.frame, f)).collect();
        // a frame in both layouts (an analysis resumed across the upgrade): the chunk's is newer
        merged.extend(chunked?.into_iter().map(|f| (f.frame, f)));
        let mut frames: Vec<FrameResult> = merged.into_values().take(want).collect();
        let more = frames.len() > limit;
        frames.truncate(limit);
        let next = if more {
            frames.last().map(|f| f.frame)
        } else {
            None
        };
        Ok((frames, next))
    }

    async fn put_tracks(&self, video_id: &str, tracks: &[TrackProfile]) -> StoreResult<()> {
        self.put_data_items(video_id, tracks.iter().map(|t| (track_sk(t.track), t)))
            .await
    }

    async fn tracks(&self, video_id: &str) -> StoreResult<Vec<TrackProfile>> {
        self.items_with_prefix(format!("VIDEO#{video_id}"), "TRACK#")
            .await?
            .iter()
            .map(|item| from_json::<TrackProfile>(item, "data"))
            .collect()
    }

    async fn delete_frames(&self, video_id: &str) -> StoreResult<()> {
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .filter_expression("sk <> :meta")
                .expression_attribute_values(":pk", s(format!("VIDEO#{video_id}")))
                .expression_attribute_values(":meta", s("META"))
                .projection_expression("pk, sk")
                .consistent_read(true)
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

impl DynamoStore {
    /// Frames `first..` of the video's chunks, in order: at least `want` of them when there are
    /// that many. Reads chunk by chunk from the one `first` is in, asking for as many items as
    /// the frames per item read so far say are needed.
    async fn chunk_frames(
        &self,
        video_id: &str,
        first: u64,
        want: usize,
    ) -> StoreResult<Vec<FrameResult>> {
        let chunk = chunk_of(first);
        if chunk >= MAX_CHUNKS {
            return Ok(Vec::new());
        }
        // by frame: parts read while a writer was replacing them may repeat a frame
        let mut frames = BTreeMap::new();
        let (mut items, mut decoded) = (0usize, 0usize);
        let mut start = None;
        let mut ask = if want <= 1 { 1 } else { 2 };
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(format!("VIDEO#{video_id}")))
                .expression_attribute_values(":from", s(chunk_sk(chunk, 0)))
                .expression_attribute_values(":to", s(CHUNKS_END))
                .limit(ask)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(backend)?;
            for item in out.items.unwrap_or_default() {
                let (_, read) = chunk_item_frames(video_id, &item)?;
                items += 1;
                decoded += read.len();
                frames.extend(
                    read.into_iter()
                        .filter(|f| f.frame >= first)
                        .map(|f| (f.frame, f)),
                );
            }
            start = out.last_evaluated_key;
            if frames.len() >= want || start.is_none() {
                break;
            }
            let per_item = (decoded / items.max(1)).max(1);
            ask = ((want - frames.len()).div_ceil(per_item) + 1).min(100) as i32;
        }
        Ok(frames.into_values().collect())
    }

    /// Frames `first..` stored one item per frame by earlier versions, at most `want`.
    async fn legacy_frames(
        &self,
        video_id: &str,
        first: u64,
        want: usize,
    ) -> StoreResult<Vec<FrameResult>> {
        let mut frames = Vec::new();
        let mut start = None;
        // a page of items may be cut at 1 MB: keep querying until `want` frames or the end
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(format!("VIDEO#{video_id}")))
                .expression_attribute_values(":from", s(frame_sk(first)))
                .expression_attribute_values(":to", s("FRAME#9999999999"))
                .limit((want - frames.len()).min(1000) as i32)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(backend)?;
            for item in out.items.unwrap_or_default() {
                let frame = from_json::<FrameResult>(&item, "data")?;
                if frame.frame >= first {
                    frames.push(frame);
                }
            }
            start = out.last_evaluated_key;
            if frames.len() >= want || start.is_none() {
                return Ok(frames);
            }
        }
    }

    /// Writes `frames` into their chunk: first as a new chunk (the usual case: no read, one
    /// conditional put), and when the chunk turns out to be stored, merged with what is stored
    /// (the new frames win) and put back on condition that its revision is unchanged, so that
    /// two writers of one chunk (two segments meeting in it, a run and the one that took its
    /// lease over) never lose each other's frames.
    async fn write_chunk(
        &self,
        video_id: &str,
        chunk: u64,
        frames: BTreeMap<u64, &FrameResult>,
    ) -> StoreResult<()> {
        if chunk >= MAX_CHUNKS {
            return Err(StoreError::Backend(format!(
                "frame {} is beyond the frames a video can store",
                chunk * FRAMES_PER_CHUNK
            )));
        }
        let mut stored = StoredChunk::default();
        for attempt in 0..CHUNK_ATTEMPTS {
            let mut merged = std::mem::take(&mut stored.frames);
            merged.extend(frames.iter().map(|(n, f)| (*n, (*f).clone())));
            let merged: Vec<FrameResult> = merged.into_values().collect();
            let parts = chunks::encode_parts(&merged, PART_BYTES).map_err(|e| {
                StoreError::Backend(format!(
                    "frames of chunk {chunk} of video {video_id} cannot be stored: {e}"
                ))
            })?;
            let one_part_before = stored.keys.iter().all(|k| *k == chunk_sk(chunk, 0));
            let written = if parts.len() == 1 && one_part_before {
                self.put_chunk(video_id, chunk, &parts[0].blob, stored.rev)
                    .await?
            } else {
                self.transact_chunk(video_id, chunk, &parts, &stored)
                    .await?
            };
            if written {
                if attempt > 0 {
                    tracing::debug!(
                        video_id,
                        chunk,
                        attempt,
                        frames = merged.len(),
                        "stored chunk merged"
                    );
                }
                return Ok(());
            }
            stored = self.read_chunk(video_id, chunk).await?;
        }
        Err(StoreError::Backend(format!(
            "chunk {chunk} of video {video_id} kept changing while it was written"
        )))
    }

    fn chunk_item(
        video_id: &str,
        chunk: u64,
        part: usize,
        rev: u64,
        blob: &[u8],
    ) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("pk".to_string(), s(format!("VIDEO#{video_id}"))),
            ("sk".to_string(), s(chunk_sk(chunk, part))),
            ("rev".to_string(), n(rev)),
            ("frames".to_string(), AttributeValue::B(Blob::new(blob))),
        ])
    }

    /// Puts a one-part chunk if its revision is still `rev` (0: not stored); false when not.
    async fn put_chunk(
        &self,
        video_id: &str,
        chunk: u64,
        blob: &[u8],
        rev: u64,
    ) -> StoreResult<bool> {
        let item = Self::chunk_item(video_id, chunk, 0, rev + 1, blob);
        let bytes = item_bytes(&item);
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        let put = if rev == 0 {
            put.condition_expression("attribute_not_exists(sk)")
        } else {
            put.condition_expression("rev = :rev")
                .expression_attribute_values(":rev", n(rev))
        };
        let result = put.send().await;
        // a write refused by its condition is charged too
        self.meter_frame_item(bytes, false);
        applied(result)
    }

    /// Replaces a chunk of several parts (or one that had several) in one transaction, if its
    /// first part's revision is still `stored.rev`; false when not. Every part carries the
    /// revision it was written with, so that a reader can tell a whole chunk from one seen half
    /// way through a replacement.
    async fn transact_chunk(
        &self,
        video_id: &str,
        chunk: u64,
        parts: &[chunks::Part],
        stored: &StoredChunk,
    ) -> StoreResult<bool> {
        let keys: Vec<String> = (0..parts.len()).map(|i| chunk_sk(chunk, i)).collect();
        let stale: Vec<&String> = stored.keys.iter().filter(|k| !keys.contains(k)).collect();
        if parts.len() + stale.len() > 100 {
            return Err(StoreError::Backend(format!(
                "chunk {chunk} of video {video_id} needs {} parts, more than one write can hold",
                parts.len()
            )));
        }
        let rev = stored.rev + 1;
        let mut items = Vec::new();
        let mut sizes = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let item = Self::chunk_item(video_id, chunk, i, rev, &part.blob);
            sizes.push(item_bytes(&item));
            let put = Put::builder().table_name(&self.table).set_item(Some(item));
            let put = match (i, stored.rev) {
                (0, 0) => put.condition_expression("attribute_not_exists(sk)"),
                (0, old) => put
                    .condition_expression("rev = :rev")
                    .expression_attribute_values(":rev", n(old)),
                _ => put,
            };
            items.push(
                TransactWriteItem::builder()
                    .put(put.build().map_err(backend)?)
                    .build(),
            );
        }
        for key in stale {
            let delete = Delete::builder()
                .table_name(&self.table)
                .key("pk", s(format!("VIDEO#{video_id}")))
                .key("sk", s(key))
                .build()
                .map_err(backend)?;
            items.push(TransactWriteItem::builder().delete(delete).build());
        }
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        for bytes in sizes {
            self.meter_frame_item(bytes, true);
        }
        match result {
            Ok(_) => Ok(true),
            Err(e) => match e.into_service_error() {
                aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c)
                    if c
                        .cancellation_reasons()
                        .iter()
                        .any(|r| r.code() == Some("ConditionalCheckFailed")) =>
                {
                    Ok(false)
                }
                other => Err(backend(other)),
            },
        }
    }

    /// Every part of a chunk, read consistently and merged; read again when the parts carry
    /// different revisions (a replacement seen half way).
    async fn read_chunk(&self, video_id: &str, chunk: u64) -> StoreResult<StoredChunk> {
        for attempt in 0..CHUNK_ATTEMPTS {
            let items = self
                .items_with_prefix(format!("VIDEO#{video_id}"), &chunk_sk(chunk, 0))
                .await?;
            let revs: Vec<u64> = items.iter().map(|i| number(i, "rev")).collect();
            if revs.windows(2).any(|w| w[0] != w[1]) {
                tracing::debug!(
                    video_id,
                    chunk,
                    attempt,
                    "chunk read half way through a replacement; reading again"
                );
                tokio::time::sleep(Duration::from_millis(20 << attempt.min(5))).await;
                continue;
            }
            let mut stored = StoredChunk {
                rev: revs.first().copied().unwrap_or(0),
                ..StoredChunk::default()
            };
            for item in &items {
                let (key, frames) = chunk_item_frames(video_id, item)?;
                stored.keys.push(key);
                stored
                    .frames
                    .extend(frames.into_iter().map(|f| (f.frame, f)));
            }
            // without its first part a chunk is not stored: the first part's condition says so
            if !stored.keys.contains(&chunk_sk(chunk, 0)) {
                stored.rev = 0;
            }
            return Ok(stored);
        }
        Err(StoreError::Backend(format!(
            "chunk {chunk} of video {video_id} kept changing while it was read"
        )))
    }

    /// Writes `(sk, value)` items of the video's partition, the value as JSON in `data`.
    async fn put_data_items<'a, T: serde::Serialize + 'a>(
        &self,
        video_id: &str,
        items: impl Iterator<Item = (String, &'a T)>,
    ) -> StoreResult<()> {
        // BatchWriteItem rejects two writes to one key in a batch; the last one wins anyway
        let latest: HashMap<String, &T> = items.collect();
        let mut requests = Vec::with_capacity(latest.len());
        for (sk, value) in latest {
            let item = HashMap::from([
                ("pk".to_string(), s(format!("VIDEO#{video_id}"))),
                ("sk".to_string(), s(sk)),
                ("data".to_string(), json_attr(value)?),
            ]);
            requests.push(
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(item))
                            .build()
                            .map_err(backend)?,
                    )
                    .build(),
            );
        }
        self.batch_write(requests).await
    }

    fn meta_key(&self, video_id: &str) -> [(String, AttributeValue); 2] {
        [
            ("pk".to_string(), s(format!("VIDEO#{video_id}"))),
            ("sk".to_string(), s("META")),
        ]
    }

    fn segment_key(&self, video_id: &str, index: u32) -> [(String, AttributeValue); 2] {
        [
            ("pk".to_string(), s(format!("VIDEO#{video_id}"))),
            ("sk".to_string(), s(segment_sk(index))),
        ]
    }
}

#[async_trait]
impl AnalysisLedger for DynamoStore {
    async fn plan(&self, video_id: &str) -> StoreResult<Option<AnalysisPlan>> {
        match self.item(format!("VIDEO#{video_id}"), "META").await? {
            Some(item) if item.contains_key("analysis_plan") => {
                from_json(&item, "analysis_plan").map(Some)
            }
            _ => Ok(None),
        }
    }

    async fn start_analysis(
        &self,
        video_id: &str,
        plan: &AnalysisPlan,
    ) -> StoreResult<PlanDecision> {
        let state = AnalysisState {
            status: VideoStatus::Processing,
            ..AnalysisState::pending()
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.meta_key(video_id).into()))
            .update_expression(
                // `duration_ms` (the plan's, copied by earlier versions) is read from the plan
                "SET #status = :processing, analysis = :a, analysis_plan = :p, covered_ms = :zero, frames_seen = :zero REMOVE done_segments, video_info, duration_ms",
            )
            .condition_expression("#status = :pending")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":processing", s("PROCESSING"))
            .expression_attribute_values(":pending", s("PENDING"))
            .expression_attribute_values(":a", analysis_attr(&state)?)
            .expression_attribute_values(":p", json_attr(plan)?)
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        match result {
            Ok(_) => Ok(PlanDecision::Recorded),
            Err(e) => {
                let e = e.into_service_error();
                if !condition_failed(&e) {
                    return Err(backend(e));
                }
                match self.item(format!("VIDEO#{video_id}"), "META").await? {
                    Some(item)
                        if item.contains_key("analysis_plan")
                            && text(&item, "status")? == "PROCESSING" =>
                    {
                        Ok(PlanDecision::Existing(from_json(&item, "analysis_plan")?))
                    }
                    _ => Ok(PlanDecision::Finished),
                }
            }
        }
    }

    async fn claim_segment(
        &self,
        video_id: &str,
        index: u32,
        owner: &str,
        lease: Duration,
    ) -> StoreResult<SegmentClaim> {
        let now = now_ms();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.segment_key(video_id, index).into()))
            .update_expression("SET lease_owner = :o, lease_until = :until ADD attempt_count :one")
            .condition_expression(
                "attribute_not_exists(pk) OR (attribute_not_exists(done_at) AND lease_until < :now)",
            )
            .expression_attribute_values(":o", s(owner))
            .expression_attribute_values(":until", n(now + lease.as_millis() as i64))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":one", n(1))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => {
                let old = out.attributes.unwrap_or_default();
                let mut crashed_runs = number(&old, "crash_count");
                // an owner that never released its lease: that run crashed or was killed
                if old.contains_key("lease_owner") {
                    crashed_runs += 1;
                    self.client
                        .update_item()
                        .table_name(&self.table)
                        .set_key(Some(self.segment_key(video_id, index).into()))
                        .update_expression("SET crash_count = :c")
                        .condition_expression("lease_owner = :o")
                        .expression_attribute_values(":c", n(crashed_runs))
                        .expression_attribute_values(":o", s(owner))
                        .send()
                        .await
                        .map_err(|e| backend(e.into_service_error()))?;
                }
                Ok(SegmentClaim::Claimed {
                    attempt: number(&old, "attempt_count") as u32 + 1,
                    checkpoint: old
                        .contains_key("resume_at")
                        .then(|| from_json::<Checkpoint>(&old, "resume_at"))
                        .transpose()?,
                    crashed_runs: crashed_runs as u32,
                })
            }
            Err(e) => {
                let e = e.into_service_error();
                if !condition_failed(&e) {
                    return Err(backend(e));
                }
                let item = self
                    .item(format!("VIDEO#{video_id}"), &segment_sk(index))
                    .await?
                    .unwrap_or_default();
                Ok(if item.contains_key("done_at") {
                    SegmentClaim::Done
                } else {
                    SegmentClaim::Busy
                })
            }
        }
    }

    async fn checkpoint(
        &self,
        video_id: &str,
        index: u32,
        owner: &str,
        checkpoint: &Checkpoint,
        progress: ProgressDelta,
        lease: Duration,
    ) -> StoreResult<bool> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.segment_key(video_id, index).into()))
            .update_expression("SET resume_at = :c, lease_until = :until")
            .condition_expression("lease_owner = :o AND attribute_not_exists(done_at)")
            .expression_attribute_values(":c", json_attr(checkpoint)?)
            .expression_attribute_values(":until", n(now_ms() + lease.as_millis() as i64))
            .expression_attribute_values(":o", s(owner))
            .send()
            .await;
        if let Err(e) = result {
            let e = e.into_service_error();
            return if condition_failed(&e) {
                Ok(false)
            } else {
                Err(backend(e))
            };
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.meta_key(video_id).into()))
            .update_expression("ADD covered_ms :c, frames_seen :f")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":c", n(progress.covered_ms))
            .expression_attribute_values(":f", n(progress.frames))
            .send()
            .await;
        // false: the video was deleted, and the run must stop
        applied(result)
    }

    async fn release_segment(&self, video_id: &str, index: u32, owner: &str) -> StoreResult<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.segment_key(video_id, index).into()))
            .update_expression("SET lease_until = :zero REMOVE lease_owner")
            .condition_expression("lease_owner = :o")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":o", s(owner))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = e.into_service_error();
                if condition_failed(&e) {
                    Ok(())
                } else {
                    Err(backend(e))
                }
            }
        }
    }

    async fn finish_segment(
        &self,
        video_id: &str,
        index: u32,
        owner: Option<&str>,
        video: Option<&VideoInfo>,
    ) -> StoreResult<SegmentTally> {
        if let Some(owner) = owner {
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(self.segment_key(video_id, index).into()))
                .update_expression("SET done_at = :now, lease_until = :zero")
                .condition_expression("lease_owner = :o")
                .expression_attribute_values(":now", n(now_ms()))
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":o", s(owner))
                .send()
                .await;
            if let Err(e) = result {
                let e = e.into_service_error();
                return Err(if condition_failed(&e) {
                    StoreError::Conflict("the segment's lease was lost".into())
                } else {
                    backend(e)
                });
            }
        }
        // a number set: adding the same segment twice counts it once
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.meta_key(video_id).into()))
            .condition_expression("attribute_exists(analysis_plan)")
            .expression_attribute_values(":i", AttributeValue::Ns(vec![index.to_string()]))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew);
        update = match video {
            Some(v) => update
                .update_expression("ADD done_segments :i SET video_info = :v")
                .expression_attribute_values(":v", json_attr(v)?),
            None => update.update_expression("ADD done_segments :i"),
        };
        let item = update
            .send()
            .await
            .map_err(|e| {
                let e = e.into_service_error();
                if condition_failed(&e) {
                    StoreError::NotFound
                } else {
                    backend(e)
                }
            })?
            .attributes
            .unwrap_or_default();
        let plan: AnalysisPlan = from_json(&item, "analysis_plan")?;
        Ok(SegmentTally {
            done: item
                .get("done_segments")
                .and_then(|v| v.as_ns().ok())
                .map_or(0, |set| set.len() as u32),
            total: plan.segments.len() as u32,
            video: item
                .contains_key("video_info")
                .then(|| from_json(&item, "video_info"))
                .transpose()?,
        })
    }

    async fn segments(&self, video_id: &str) -> StoreResult<Vec<SegmentStatus>> {
        let now = now_ms() as u64;
        self.items_with_prefix(format!("VIDEO#{video_id}"), "SEG#")
            .await?
            .iter()
            .map(|item| {
                let index = text(item, "sk")?
                    .trim_start_matches("SEG#")
                    .parse()
                    .map_err(|_| StoreError::Backend("bad segment key".into()))?;
                Ok(SegmentStatus {
                    index,
                    done: item.contains_key("done_at"),
                    leased: number(item, "lease_until") > now,
                })
            })
            .collect()
    }

    async fn end_analysis(&self, video_id: &str, state: &AnalysisState) -> StoreResult<bool> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.meta_key(video_id).into()))
            .update_expression("SET analysis = :a, #status = :s")
            .condition_expression("#status IN (:pending, :processing)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":a", analysis_attr(state)?)
            .expression_attribute_values(":s", s(state.status.as_str()))
            .expression_attribute_values(":pending", s("PENDING"))
            .expression_attribute_values(":processing", s("PROCESSING"))
            .send()
            .await;
        applied(result)
    }
}

/// Rate-limit counters in the table: one item per key and window (`RATE#{key}#{window}`),
/// added to atomically, and removed by DynamoDB's TTL (`expires_at`) after the window ends, so
/// every Lambda container counts against the same budget.
#[async_trait]
impl RateLimiter for DynamoStore {
    async fn hit(
        &self,
        key: &str,
        cost: u32,
        limit: u32,
        window: Duration,
    ) -> StoreResult<RateDecision> {
        let window = RateWindow::now(window);
        let pk = format!("RATE#{key}#{}", window.index);
        let count = if cost == 0 {
            self.item(pk, "RATE")
                .await?
                .map_or(0, |item| number(&item, "hits"))
        } else {
            let out = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(pk))
                .key("sk", s("RATE"))
                .update_expression(
                    "ADD hits :cost SET expires_at = if_not_exists(expires_at, :ttl)",
                )
                .expression_attribute_values(":cost", n(cost))
                // TTL is in seconds; a minute's slack keeps the item for the whole window
                .expression_attribute_values(":ttl", n(window.ends_ms / 1000 + 60))
                .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
                .send()
                .await
                .map_err(|e| backend(e.into_service_error()))?;
            number(&out.attributes.unwrap_or_default(), "hits")
        };
        Ok(window.decide(count, cost, limit))
    }
}

/// Blobs in an S3 bucket.
pub struct S3Blobs {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Blobs {
    pub fn new(clients: &AwsClients, bucket: impl Into<String>) -> Self {
        Self {
            client: clients.s3.clone(),
            bucket: bucket.into(),
        }
    }

    /// The versions and delete markers of exactly `key`, all pages.
    async fn versions_of(
        &self,
        key: &str,
    ) -> StoreResult<(
        Vec<aws_sdk_s3::types::ObjectVersion>,
        Vec<aws_sdk_s3::types::DeleteMarkerEntry>,
    )> {
        let (mut versions, mut markers) = (Vec::new(), Vec::new());
        let mut key_marker: Option<String> = None;
        let mut version_marker: Option<String> = None;
        loop {
            let out = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(key)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(backend)?;
            let mine = |k: Option<&str>| k == Some(key);
            versions.extend(out.versions().iter().filter(|v| mine(v.key())).cloned());
            markers.extend(
                out.delete_markers()
                    .iter()
                    .filter(|m| mine(m.key()))
                    .cloned(),
            );
            if out.is_truncated() != Some(true) {
                return Ok((versions, markers));
            }
            key_marker = out.next_key_marker().map(str::to_string);
            version_marker = out.next_version_id_marker().map(str::to_string);
        }
    }
}

#[async_trait]
impl BlobStore for S3Blobs {
    /// Signs the Content-Type and, when the size was declared, the Content-Length: S3 then
    /// refuses a body of any other length (browsers send the header by themselves).
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        content_length: Option<u64>,
        expires_in: Duration,
    ) -> StoreResult<PresignedUpload> {
        let expires_at = Utc::now() + chrono::Duration::from_std(expires_in).unwrap_or_default();
        let presigned = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .set_content_length(content_length.map(|n| n as i64))
            .presigned(PresigningConfig::expires_in(expires_in).map_err(backend)?)
            .await
            .map_err(backend)?;
        Ok(PresignedUpload {
            url: presigned.uri().to_string(),
            expires_at,
        })
    }

    async fn presign_get(
        &self,
        key: &str,
        version: Option<&str>,
        expires_in: Duration,
    ) -> StoreResult<String> {
        let presigned = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version.map(str::to_string))
            .presigned(PresigningConfig::expires_in(expires_in).map_err(backend)?)
            .await
            .map_err(backend)?;
        Ok(presigned.uri().to_string())
    }

    async fn stat(&self, key: &str, version: Option<&str>) -> StoreResult<Option<StoredObject>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version.map(str::to_string))
            .send()
            .await
        {
            Ok(out) => Ok(Some(StoredObject {
                size: out.content_length.unwrap_or(0).max(0) as u64,
                etag: out.e_tag.map(|t| t.trim_matches('"').to_string()),
                version_id: out.version_id.filter(|v| v != "null"),
            })),
            Err(e) => {
                let e = e.into_service_error();
                // a version id that does not exist is a 400 or 404 depending on the server
                if e.is_not_found() || (version.is_some() && e.meta().code().is_none()) {
                    Ok(None)
                } else {
                    Err(backend(e))
                }
            }
        }
    }

    async fn locate(&self, key: &str, object: &StoredObject) -> StoreResult<Option<StoredObject>> {
        if object.version_id.is_some() {
            return Ok(Some(object.clone()));
        }
        let (versions, _) = self.versions_of(key).await?;
        let oldest = versions
            .iter()
            .filter_map(|v| {
                let candidate = StoredObject {
                    size: v.size().unwrap_or(0).max(0) as u64,
                    etag: v.e_tag().map(|t| t.trim_matches('"').to_string()),
                    // an unversioned bucket lists its one object as version "null"
                    version_id: v
                        .version_id()
                        .filter(|id| *id != "null")
                        .map(str::to_string),
                };
                Some((v.last_modified()?, candidate))
            })
            .filter(|(_, candidate)| candidate.same_as(object))
            .min_by_key(|(at, _)| **at);
        Ok(oldest.map(|(_, object)| object))
    }

    /// Every version and delete marker of the key (the bucket is versioned so that an upload
    /// cannot be swapped; a plain DeleteObject would only hide it behind a delete marker).
    async fn delete(&self, key: &str) -> StoreResult<()> {
        let (versions, markers) = self.versions_of(key).await?;
        let ids = versions
            .iter()
            .map(|v| v.version_id())
            .chain(markers.iter().map(|m| m.version_id()));
        for version in ids {
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .set_version_id(version.map(str::to_string))
                .send()
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    async fn delete_version(&self, key: &str, version: &str) -> StoreResult<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .version_id(version)
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn analysis_source(
        &self,
        key: &str,
        version: Option<&str>,
        expires_in: Duration,
    ) -> StoreResult<MediaSource> {
        Ok(MediaSource::Url(
            self.presign_get(key, version, expires_in).await?,
        ))
    }

    async fn put_object(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> StoreResult<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(aws_sdk_s3::primitives::ByteStream::from(bytes))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// A key without a current version (never written, deleted, or behind a delete marker) is
    /// S3's NoSuchKey when the caller may list the bucket; without `s3:ListBucket` (the API
    /// function has none) S3 answers 403, which stays an error: the API only asks for the
    /// thumbnails of people a summary names.
    async fn get_object(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => {
                let bytes = out.body.collect().await.map_err(backend)?;
                Ok(Some(bytes.into_bytes().to_vec()))
            }
            Err(e) => {
                let e = e.into_service_error();
                if e.is_no_such_key() {
                    Ok(None)
                } else {
                    Err(backend(e))
                }
            }
        }
    }

    /// Lists every version and delete marker under the prefix (all pages, as `versions_of`
    /// does), then deletes them by version id with DeleteObjects, at most 1000 a request (S3's
    /// limit). By version id, the objects are gone for good instead of hidden behind new delete
    /// markers; on an unversioned bucket each object is listed as its one version "null".
    async fn delete_prefix(&self, prefix: &str) -> StoreResult<()> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};

        let mut objects = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut version_marker: Option<String> = None;
        loop {
            let out = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(backend)?;
            let versions = out.versions().iter().map(|v| (v.key(), v.version_id()));
            let markers = out
                .delete_markers()
                .iter()
                .map(|m| (m.key(), m.version_id()));
            for (key, version) in versions.chain(markers) {
                let Some(key) = key else { continue };
                objects.push(
                    ObjectIdentifier::builder()
                        .key(key)
                        .set_version_id(version.map(str::to_string))
                        .build()
                        .map_err(backend)?,
                );
            }
            if out.is_truncated() != Some(true) {
                break;
            }
            key_marker = out.next_key_marker().map(str::to_string);
            version_marker = out.next_version_id_marker().map(str::to_string);
        }
        for batch in objects.chunks(1000) {
            let delete = Delete::builder()
                .set_objects(Some(batch.to_vec()))
                .quiet(true)
                .build()
                .map_err(backend)?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(backend)?;
            // DeleteObjects answers 200 even when some keys failed: those are listed here
            if let Some(failed) = out.errors().first() {
                return Err(StoreError::Backend(format!(
                    "deleting {:?} (version {:?}) failed: {} {} ({} of {} keys failed)",
                    failed.key().unwrap_or_default(),
                    failed.version_id().unwrap_or_default(),
                    failed.code().unwrap_or_default(),
                    failed.message().unwrap_or_default(),
                    out.errors().len(),
                    batch.len(),
                )));
            }
        }
        Ok(())
    }
}

/// Jobs as SQS messages (the same JSON the S3 event handler understands).
pub struct SqsJobs {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsJobs {
    pub fn new(clients: &AwsClients, queue_url: impl Into<String>) -> Self {
        Self {
            client: clients.sqs.clone(),
            queue_url: queue_url.into(),
        }
    }
}

#[async_trait]
impl JobQueue for SqsJobs {
    async fn enqueue(&self, job: AnalysisJob) -> StoreResult<()> {
        let body = serde_json::to_string(&job).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn video(id: &str, owner: &str, uploaded_at: DateTime<Utc>) -> Video {
        Video {
            id: id.into(),
            user_id: owner.into(),
            title: format!("clip {id}"),
            s3_key: domain::object_key(owner, id, "mp4"),
            filename: format!("{id}.mp4"),
            content_type: "video/mp4".into(),
            size_bytes: Some(1234),
            sample_fps: 29.97,
            uploaded_at,
            upload: None,
            callback_url: None,
            analysis: AnalysisState::pending(),
        }
    }

    /// Nanoseconds that milliseconds would lose.
    fn at(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
            + chrono::Duration::seconds(s)
            + chrono::Duration::nanoseconds(123_456_789)
    }

    fn upload() -> StoredObject {
        StoredObject {
            size: 1234,
            etag: Some("\"e1\"".into()),
            version_id: Some("v-1".into()),
        }
    }

    fn plan_of_20_s() -> AnalysisPlan {
        AnalysisPlan::single(5.0, 0.0, 20_000)
    }

    /// A video item as the previous version wrote it: `create_video` put the whole video in
    /// `record` (and its title, status and analysis beside it); later writes kept `title`,
    /// `status`, `analysis`, `upload` and the ledger's attributes up to date.
    fn record_item(at_creation: &Video, now: &Video) -> HashMap<String, AttributeValue> {
        let mut item = HashMap::from([
            ("pk".to_string(), s(format!("VIDEO#{}", now.id))),
            ("sk".to_string(), s("META")),
            ("gsi1pk".to_string(), s(format!("USER#{}", now.user_id))),
            (
                "gsi1sk".to_string(),
                s(format!(
                    "{}#{}",
                    now.uploaded_at.to_rfc3339_opts(SecondsFormat::Millis, true),
                    now.id
                )),
            ),
            ("title".to_string(), s(&now.title)),
            ("status".to_string(), s(now.analysis.status.as_str())),
            ("record".to_string(), json_attr(at_creation).unwrap()),
            ("analysis".to_string(), json_attr(&now.analysis).unwrap()),
        ]);
        if let Some(upload) = &now.upload {
            item.insert("upload".to_string(), json_attr(upload).unwrap());
        }
        item
    }

    /// What the previous version's `start_analysis` and checkpoints added to a video item, with
    /// the progress it had reached.
    fn add_record_ledger(item: &mut HashMap<String, AttributeValue>, covered_ms: u64, frames: u64) {
        let plan = plan_of_20_s();
        item.insert("analysis_plan".to_string(), json_attr(&plan).unwrap());
        item.insert("duration_ms".to_string(), n(plan.duration_ms));
        item.insert("covered_ms".to_string(), n(covered_ms));
        item.insert("frames_seen".to_string(), n(frames));
    }

    /// Videos in every state as the previous version stored them, and how they must read.
    fn record_items() -> Vec<(HashMap<String, AttributeValue>, Video)> {
        let mut items = Vec::new();
        // renamed after creation: `record` still has the first title
        let v = video("pending", "ann", at(1));
        let renamed = Video {
            title: "Holiday".into(),
            size_bytes: None,
            ..v.clone()
        };
        items.push((
            record_item(
                &Video {
                    size_bytes: None,
                    ..v.clone()
                },
                &renamed,
            ),
            renamed,
        ));
        let v = video("queued", "ann", at(2));
        let queued = Video {
            upload: Some(upload()),
            ..v.clone()
        };
        items.push((record_item(&v, &queued), queued));
        // half analysed
        let v = video("running", "ann", at(3));
        let running = Video {
            upload: Some(upload()),
            analysis: AnalysisState {
                status: VideoStatus::Processing,
                ..AnalysisState::pending()
            },
            ..v.clone()
        };
        let mut item = record_item(&v, &running);
        add_record_ledger(&mut item, 5000, 26);
        let running = Video {
            analysis: AnalysisState {
                progress: 25,
                frames_analyzed: 26,
                ..running.analysis
            },
            ..running
        };
        items.push((item, running));
        let v = video("done", "ann", at(4));
        let done = Video {
            upload: Some(upload()),
            analysis: AnalysisState {
                status: VideoStatus::Completed,
                progress: 100,
                video: Some(VideoInfo {
                    duration_ms: 20_000,
                    frame_count: 500,
                    codec: "h264".into(),
                    ..Default::default()
                }),
                frames_analyzed: 50,
                processed_at: Some(at(60)),
                ..AnalysisState::pending()
            },
            ..v.clone()
        };
        let mut item = record_item(&v, &done);
        add_record_ledger(&mut item, 20_000, 50);
        items.push((item, done));
        let v = video("failed", "ann", at(5));
        let failed = Video {
            analysis: AnalysisState {
                status: VideoStatus::Failed,
                error: Some("not a video".into()),
                processed_at: Some(at(61)),
                ..AnalysisState::pending()
            },
            ..v.clone()
        };
        items.push((record_item(&v, &failed), failed));
        items
    }

    #[test]
    fn a_video_item_holds_each_field_once_and_reads_back_equal() {
        let mut v = video("v1", "ann", at(0));
        v.upload = Some(upload());
        v.callback_url = Some("https://hooks.example.com/done?v=1".into());
        v.analysis = AnalysisState {
            status: VideoStatus::Failed,
            error: Some("x".into()),
            processed_at: Some(at(9)),
            ..AnalysisState::pending()
        };
        let item = DynamoStore::video_item(&v).unwrap();
        let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "analysis",
                "callback_url",
                "content_type",
                "filename",
                "gsi1pk",
                "gsi1sk",
                "pk",
                "s3_key",
                "sample_fps",
                "size_bytes",
                "sk",
                "status",
                "title",
                "upload"
            ]
        );
        let analysis: serde_json::Value = from_json(&item, "analysis").unwrap();
        assert!(analysis.get("status").is_none(), "{analysis}");
        assert_eq!(DynamoStore::video_from(&item).unwrap(), v);

        let unsized_video = Video {
            size_bytes: None,
            upload: None,
            callback_url: None,
            ..v
        };
        let item = DynamoStore::video_item(&unsized_video).unwrap();
        assert!(
            !item.contains_key("size_bytes")
                && !item.contains_key("upload")
                && !item.contains_key("callback_url")
        );
        assert_eq!(DynamoStore::video_from(&item).unwrap(), unsized_video);
    }

    #[test]
    fn items_of_the_previous_version_read_as_they_did() {
        for (item, expected) in record_items() {
            assert_eq!(
                DynamoStore::video_from(&item).unwrap(),
                expected,
                "{}",
                expected.id
            );
        }
    }

    /// Clients for moto with a fresh table of their own, and a store on it; `None` (the test
    /// skips) when scripts/test did not start moto.
    async fn moto_table() -> Option<(AwsClients, AwsConfig, DynamoStore)> {
        let Ok(endpoint) = std::env::var("DEEPEMOTION_MOTO_ENDPOINT") else {
            eprintln!("skipped: DEEPEMOTION_MOTO_ENDPOINT is not set (scripts/test sets it)");
            return None;
        };
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let config = AwsConfig {
            region: "us-east-1".into(),
            endpoint_url: Some(endpoint),
            table: format!("deepemotion-{unique}"),
            bucket: format!("deepemotion-{unique}"),
            queue_url: None,
            delivery_queue_url: None,
            credentials: Some(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "moto",
            )),
        };
        let clients = AwsClients::new(&config).await;
        let store = DynamoStore::new(&clients, &config.table);
        store.create_table().await.unwrap();
        Some((clients, config, store))
    }

    /// The previous version's items, written with the raw client, through the ports: read,
    /// listed with new items, renamed, analysed. Against moto, when scripts/test started it.
    #[tokio::test]
    async fn items_of_the_previous_version_work_through_the_ports() {
        let Some((clients, config, store)) = moto_table().await else {
            return;
        };
        let mut expected = Vec::new();
        for (item, video) in record_items() {
            clients
                .dynamodb
                .put_item()
                .table_name(&config.table)
                .set_item(Some(item))
                .send()
                .await
                .unwrap();
            expected.push(video);
        }
        // new items between and after the old ones (whose keys have milliseconds only)
        for (id, uploaded_at) in [
            ("new-a", at(2) + chrono::Duration::milliseconds(500)),
            ("new-b", at(3) + chrono::Duration::milliseconds(1)),
            ("new-c", at(9)),
        ] {
            let v = video(id, "ann", uploaded_at);
            store.create_video(&v).await.unwrap();
            expected.push(v);
        }
        for v in &expected {
            assert_eq!(
                store.video(&v.id).await.unwrap().as_ref(),
                Some(v),
                "{}",
                v.id
            );
        }
        let mut listed = Vec::new();
        let mut cursor = None;
        loop {
            let page = store.videos_of("ann", 3, cursor.as_deref()).await.unwrap();
            listed.extend(page.items);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let ids: Vec<&str> = listed.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "new-c", "failed", "done", "new-b", "running", "new-a", "queued", "pending"
            ]
        );
        for v in &listed {
            assert!(expected.contains(v), "{}", v.id);
        }

        // an old item is written to as a new one would be
        store.set_title("queued", "Renamed").await.unwrap();
        assert_eq!(
            store.record_upload("queued", &upload()).await.unwrap(),
            UploadRecord::Same
        );
        assert_eq!(
            store
                .start_analysis("queued", &plan_of_20_s())
                .await
                .unwrap(),
            PlanDecision::Recorded
        );
        let lease = Duration::from_secs(60);
        store.claim_segment("queued", 0, "w", lease).await.unwrap();
        let delta = ProgressDelta {
            covered_ms: 10_000,
            frames: 50,
        };
        let checkpoint = Checkpoint {
            frame: 250,
            t_ms: 10_000,
        };
        assert!(
            store
                .checkpoint("queued", 0, "w", &checkpoint, delta, lease)
                .await
                .unwrap()
        );
        let queued = store.video("queued").await.unwrap().unwrap();
        assert_eq!(
            (
                queued.title.as_str(),
                queued.analysis.status,
                queued.analysis.progress,
                queued.analysis.frames_analyzed,
                queued.uploaded_at
            ),
            ("Renamed", VideoStatus::Processing, 50, 50, at(2))
        );
        let done = AnalysisState {
            status: VideoStatus::Completed,
            progress: 100,
            frames_analyzed: 100,
            ..AnalysisState::pending()
        };
        assert!(store.end_analysis("queued", &done).await.unwrap());
        assert!(!store.end_analysis("done", &done).await.unwrap());
        assert_eq!(store.video("queued").await.unwrap().unwrap().analysis, done);
        assert_eq!(
            store
                .start_analysis("running", &plan_of_20_s())
                .await
                .unwrap(),
            PlanDecision::Existing(plan_of_20_s())
        );
        store.delete_video("pending").await.unwrap();
        assert!(store.video("pending").await.unwrap().is_none());
    }

    /// Every item of a video's partition but its record, with its key and priced size.
    async fn frame_items(
        clients: &AwsClients,
        config: &AwsConfig,
        video_id: &str,
    ) -> Vec<(String, usize)> {
        let out = clients
            .dynamodb
            .query()
            .table_name(&config.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(format!("VIDEO#{video_id}")))
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        assert!(out.last_evaluated_key.is_none());
        out.items
            .unwrap_or_default()
            .iter()
            .map(|item| (text(item, "sk").unwrap(), item_bytes(item)))
            .collect()
    }

    async fn read_all(store: &DynamoStore, video_id: &str) -> Vec<FrameResult> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = store.frames(video_id, after, 77).await.unwrap();
            all.extend(page);
            match next {
                Some(n) => after = Some(n),
                None => return all,
            }
        }
    }

    fn json(frames: &[FrameResult]) -> String {
        serde_json::to_string(frames).unwrap()
    }

    /// Writes frames a chunk at a time, as the worker does.
    async fn put_by_chunk(store: &DynamoStore, video_id: &str, frames: &[FrameResult]) {
        for chunk in frames.chunk_by(|a, b| chunk_of(a.frame) == chunk_of(b.frame)) {
            store.put_frames(video_id, chunk).await.unwrap();
        }
    }

    /// A minute of video analysed at 5 fps (frames of a 30 fps source) with one, one to three
    /// and three faces costs at most 40 write units, counted from the items written (one unit
    /// per started KB of each), where one item per frame cost 300.
    #[tokio::test]
    async fn a_minute_of_video_at_5_fps_costs_at_most_40_write_units() {
        let Some((clients, config, store)) = moto_table().await else {
            return;
        };
        // a video id as long as a real one: keys are priced too
        let id = uuid::Uuid::new_v4().to_string();
        /// Faces in the `i`th frame.
        type Faces = fn(usize) -> usize;
        let cases: [(&str, Faces); 3] = [
            ("1 face", |_| 1),
            ("1-3 faces", |i| 1 + i % 3),
            ("3 faces", |_| 3),
        ];
        for (what, faces) in cases {
            let meter = Arc::new(WriteMeter::default());
            let metered = DynamoStore::new(&clients, &config.table).with_meter(meter.clone());
            let minute = crate::chunks::tests::crowd_minute(0, faces);
            put_by_chunk(&metered, &id, &minute).await;
            let units = meter.frame_units.load(std::sync::atomic::Ordering::Relaxed);
            let items = meter.frame_items.load(std::sync::atomic::Ordering::Relaxed);
            let bytes = meter.frame_bytes.load(std::sync::atomic::Ordering::Relaxed);
            eprintln!(
                "FIGURE a minute at 5 fps, {what}: {items} items, {bytes} bytes, {units} write units"
            );
            assert!(units <= 40, "{what}: {units} write units");
            assert_eq!(items, 6, "{what}: each 10 s chunk written once");
            assert_eq!(json(&read_all(&store, &id).await), json(&minute), "{what}");
            store.delete_frames(&id).await.unwrap();
        }
    }

    /// Every frame of a crowd analysed: a chunk too large for one part is split into parts,
    /// each item at most `PART_BYTES` of frames plus its keys and names (87 bytes with a real
    /// video id and a part key: 65,623 bytes, a sixth of DynamoDB's 400 KB), however many
    /// faces there are. Only a single frame larger than a part is alone in a larger item, and
    /// it is refused past `MAX_FRAME_BYTES` (384 KiB, plus the same 98 bytes of header, keys
    /// and names). Rewriting part of such a chunk keeps every frame.
    #[tokio::test]
    async fn items_stay_far_below_the_item_limit_at_every_frame_with_a_crowd() {
        let Some((clients, config, store)) = moto_table().await else {
            return;
        };
        const ITEM_BOUND: usize = PART_BYTES + 87;
        const _: () = assert!(ITEM_BOUND * 6 < 400 * 1024);
        const _: () = assert!(crate::chunks::MAX_FRAME_BYTES + 11 + 87 < 400 * 1024);
        let id = uuid::Uuid::new_v4().to_string();
        let mut crowd = crate::chunks::tests::crowd_minute(0, |_| 12);
        for (i, frame) in crowd.iter_mut().enumerate() {
            frame.frame = i as u64;
            frame.t_ms = i as u64 * 1000 / 30;
        }
        store.put_frames(&id, &crowd).await.unwrap();
        let items = frame_items(&clients, &config, &id).await;
        eprintln!("FIGURE a chunk of 300 frames of 12 faces: {items:?}");
        assert!(items.len() > 1, "{items:?}");
        for (key, bytes) in &items {
            assert!(*bytes <= ITEM_BOUND, "{key}: {bytes} bytes");
        }
        assert_eq!(json(&read_all(&store, &id).await), json(&crowd));

        // a resumed run rewrites the second half with fewer faces: the parts are replaced
        let mut rewrite = crowd[150..].to_vec();
        for frame in &mut rewrite {
            frame.faces.truncate(2);
        }
        store.put_frames(&id, &rewrite).await.unwrap();
        crowd.splice(150.., rewrite);
        assert_eq!(json(&read_all(&store, &id).await), json(&crowd));
        for (key, bytes) in frame_items(&clients, &config, &id).await {
            assert!(bytes <= ITEM_BOUND, "{key}: {bytes} bytes");
        }
        // and all of it with one face: one part is left, the other deleted
        for frame in &mut crowd {
            frame.faces.truncate(1);
        }
        store.put_frames(&id, &crowd).await.unwrap();
        assert_eq!(json(&read_all(&store, &id).await), json(&crowd));
        let items = frame_items(&clients, &config, &id).await;
        assert_eq!(items.len(), 1, "{items:?}");
        store.delete_frames(&id).await.unwrap();
        assert!(frame_items(&clients, &config, &id).await.is_empty());
    }

    /// A chunk that does not decode is an error that names it, for readers and for writers
    /// (which must not overwrite what they cannot merge with); other chunks still read.
    #[tokio::test]
    async fn a_corrupt_chunk_is_an_error_that_names_it() {
        let Some((clients, config, store)) = moto_table().await else {
            return;
        };
        let frames = crate::chunks::tests::raw(&crate::chunks::tests::pexels());
        let later: Vec<FrameResult> = frames
            .iter()
            .map(|f| FrameResult {
                frame: f.frame + 3000,
                ..f.clone()
            })
            .collect();
        put_by_chunk(&store, "v1", &later).await;
        let mut blob = crate::chunks::encode(&frames[..10]).unwrap();
        blob.truncate(blob.len() - 3);
        for (sk, blob) in [
            ("FRAMES#0000000000", blob),
            (
                "FRAMES#0000000001",
                crate::chunks::encode(&frames[..3]).unwrap(),
            ),
        ] {
            let item = HashMap::from([
                ("pk".to_string(), s("VIDEO#v1")),
                ("sk".to_string(), s(sk)),
                ("rev".to_string(), n(1)),
                ("frames".to_string(), AttributeValue::B(Blob::new(blob))),
            ]);
            clients
                .dynamodb
                .put_item()
                .table_name(&config.table)
                .set_item(Some(item))
                .send()
                .await
                .unwrap();
        }
        let error = store.frames("v1", None, 10).await.unwrap_err().to_string();
        assert!(
            error.contains("FRAMES#0000000000")
                && error.contains("v1")
                && error.contains("cut short"),
            "{error}"
        );
        let error = store
            .put_frames("v1", &frames[..2])
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("FRAMES#0000000000"), "{error}");
        // frames 0.. in the item of chunk 1
        let error = store
            .frames("v1", Some(299), 10)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("not in this chunk"), "{error}");
        assert_eq!(
            json(&store.frames("v1", Some(2999), 1000).await.unwrap().0),
            json(&later)
        );
    }

    /// Frames stored one JSON item per frame by the previous version read as before, with the
    /// chunks of an analysis resumed after the upgrade (a frame in both: the chunk's), and are
    /// deleted with them.
    #[tokio::test]
    async fn frames_of_the_previous_layout_still_read_and_are_deleted() {
        let Some((clients, config, store)) = moto_table().await else {
            return;
        };
        let frames = crate::chunks::tests::raw(&crate::chunks::tests::pexels());
        for frame in &frames[..40] {
            let item = HashMap::from([
                ("pk".to_string(), s("VIDEO#v1")),
                ("sk".to_string(), s(frame_sk(frame.frame))),
                ("data".to_string(), json_attr(frame).unwrap()),
            ]);
            clients
                .dynamodb
                .put_item()
                .table_name(&config.table)
                .set_item(Some(item))
                .send()
                .await
                .unwrap();
        }
        assert_eq!(json(&read_all(&store, "v1").await), json(&frames[..40]));
        let mut resumed = frames[30..].to_vec();
        for frame in &mut resumed {
            frame.faces[0].track = 7;
        }
        put_by_chunk(&store, "v1", &resumed).await;
        let mut expected = frames[..30].to_vec();
        expected.extend(resumed);
        assert_eq!(json(&read_all(&store, "v1").await), json(&expected));
        for (after, limit) in [
            (None, 1),
            (Some(frames[29].frame), 5),
            (Some(frames[35].frame), 1000),
        ] {
            let (page, _) = store.frames("v1", after, limit).await.unwrap();
            let from = expected
                .iter()
                .position(|f| after.is_none_or(|a| f.frame > a))
                .unwrap();
            assert_eq!(
                json(&page),
                json(&expected[from..(from + limit).min(expected.len())])
            );
        }
        store.delete_frames("v1").await.unwrap();
        assert!(frame_items(&clients, &config, "v1").await.is_empty());
    }

    #[test]
    fn items_are_priced_by_names_and_values() {
        let item = HashMap::from([
            ("pk".to_string(), s("VIDEO#v1")),
            ("rev".to_string(), n(12345)),
            (
                "frames".to_string(),
                AttributeValue::B(Blob::new(vec![0; 100])),
            ),
        ]);
        // 2 + 8, 3 + (3 digit pairs + 1), 6 + 100
        assert_eq!(item_bytes(&item), 10 + 7 + 106);
        assert_eq!(value_bytes(&n("0.001200")), 2);
        assert_eq!(value_bytes(&n("-100")), 2);
    }
}
