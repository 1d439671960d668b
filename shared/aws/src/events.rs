//! S3 event notifications as they arrive in SQS message bodies, parsed tolerantly: real S3, moto
//! and the `s3:TestEvent` S3 sends when a notification is configured all have different shapes,
//! and `aws_lambda_events::S3Event` rejects moto's (no `userIdentity`).

use serde::Deserialize;

use domain::StoredObject;
use domain::ports::AnalysisJob;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("not an S3 event notification: {0}")]
pub struct MalformedEvent(pub String);

#[derive(Deserialize)]
struct Notification {
    #[serde(rename = "Records", default)]
    records: Vec<Record>,
}

#[derive(Deserialize)]
struct Record {
    #[serde(rename = "eventName", default)]
    event_name: String,
    s3: Entity,
}

#[derive(Deserialize)]
struct Entity {
    bucket: Bucket,
    object: Object,
}

#[derive(Deserialize)]
struct Bucket {
    name: String,
}

#[derive(Deserialize)]
struct Object {
    key: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(rename = "eTag", default)]
    etag: Option<String>,
    #[serde(rename = "versionId", default)]
    version_id: Option<String>,
}

/// One created object.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectCreated {
    pub bucket: String,
    /// Decoded: S3 URL-encodes keys in events, with `+` for spaces.
    pub key: String,
    pub size: Option<u64>,
    pub etag: Option<String>,
    /// Set when the bucket is versioned (the product's is).
    pub version_id: Option<String>,
}

impl ObjectCreated {
    /// The object as the worker records it; `None` when the event does not say its size.
    pub fn stored_object(&self) -> Option<StoredObject> {
        Some(StoredObject {
            size: self.size?,
            etag: self
                .etag
                .as_deref()
                .map(|t| t.trim_matches('"').to_string())
                .filter(|t| !t.is_empty()),
            version_id: self
                .version_id
                .clone()
                .filter(|v| !v.is_empty() && v != "null"),
        })
    }
}

/// Decodes an event key: `+` is a space, then percent-decoding (moto also encodes `/`).
pub fn decode_key(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// The objects created according to one message body. A test event gives none.
pub fn objects_created(body: &str) -> Result<Vec<ObjectCreated>, MalformedEvent> {
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| MalformedEvent(e.to_string()))?;
    if value.get("Event").and_then(|e| e.as_str()) == Some("s3:TestEvent") {
        return Ok(Vec::new());
    }
    if value.get("Records").is_none() {
        return Err(MalformedEvent("no Records".into()));
    }
    let notification: Notification =
        serde_json::from_value(value).map_err(|e| MalformedEvent(e.to_string()))?;
    Ok(notification
        .records
        .into_iter()
        .filter(|r| r.event_name.starts_with("ObjectCreated:"))
        .map(|r| ObjectCreated {
            bucket: r.s3.bucket.name,
            key: decode_key(&r.s3.object.key),
            size: r.s3.object.size,
            etag: r.s3.object.etag,
            version_id: r.s3.object.version_id,
        })
        .collect())
}

/// The analysis jobs in one message body: created objects under `uploads/` from an S3
/// notification, or a job this service queued itself (`{"key": ..., "segment": n}`: a finalize
/// call, a segment of a long video, a continuation). Other keys are logged and dropped
/// (retrying them could never succeed).
pub fn jobs_from_body(body: &str) -> Result<Vec<AnalysisJob>, MalformedEvent> {
    if let Ok(job) = serde_json::from_str::<AnalysisJob>(body) {
        return Ok(if domain::parse_object_key(&job.key).is_some() {
            vec![job]
        } else {
            tracing::warn!(key = %job.key, "ignoring a job that is not an upload");
            vec![]
        });
    }
    Ok(objects_created(body)?
        .into_iter()
        .filter_map(|o| {
            if domain::parse_object_key(&o.key).is_some() {
                Some(AnalysisJob {
                    object: o.stored_object(),
                    ..AnalysisJob::upload(o.key)
                })
            } else {
                tracing::warn!(bucket = %o.bucket, key = %o.key, "ignoring an object that is not an upload");
                None
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::sqs::SqsEvent;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../events")
                .join(name),
        )
        .unwrap()
    }

    fn bodies(name: &str) -> Vec<String> {
        let event: SqsEvent =
            serde_json::from_str(&fixture(name)).expect("a real-shaped SQS event");
        event.records.into_iter().map(|r| r.body.unwrap()).collect()
    }

    #[test]
    fn a_real_s3_event_in_sqs_gives_the_upload_job() {
        let jobs = jobs_from_body(&bodies("sqs-s3-object-created.json")[0]).unwrap();
        assert_eq!(
            jobs,
            vec![AnalysisJob {
                object: Some(StoredObject {
                    size: 1632292,
                    etag: Some("d41d8cd98f00b204e9800998ecf8427e".into()),
                    version_id: Some("3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY".into()),
                }),
                ..AnalysisJob::upload(
                    "uploads/0f8fad5b-d9cb-469f-a165-70867728950e/7c9e6679-7425-40de-944b-e07fc1f90ae7.mp4"
                )
            }]
        );
        // the same notification also parses with the SDK's strict type
        let strict: aws_lambda_events::event::s3::S3Event =
            serde_json::from_str(&fixture("s3-object-created.json")).unwrap();
        assert_eq!(strict.records.len(), 1);
    }

    #[test]
    fn moto_shaped_events_with_missing_fields_and_encoded_slashes_parse() {
        let objects = objects_created(&bodies("sqs-s3-object-created-moto.json")[0]).unwrap();
        assert_eq!(objects[0].key, "uploads/u-1/v-2.mp4");
        assert_eq!(objects[0].size, Some(10));
    }

    #[test]
    fn the_test_event_is_acknowledged_with_no_jobs_and_garbage_is_malformed() {
        assert_eq!(
            jobs_from_body(&bodies("sqs-s3-test-event.json")[0]).unwrap(),
            vec![]
        );
        assert!(jobs_from_body(&bodies("sqs-malformed.json")[0]).is_err());
        assert!(jobs_from_body(r#"{"hello": "world"}"#).is_err());
    }

    #[test]
    fn jobs_the_service_queued_itself_round_trip() {
        let segment = AnalysisJob::segment("uploads/u-1/v-2.mp4", 3);
        let body = serde_json::to_string(&segment).unwrap();
        assert_eq!(body, r#"{"key":"uploads/u-1/v-2.mp4","segment":3}"#);
        assert_eq!(jobs_from_body(&body).unwrap(), vec![segment]);
        assert_eq!(
            jobs_from_body(r#"{"key":"uploads/u-1/v-2.mp4"}"#).unwrap(),
            vec![AnalysisJob::upload("uploads/u-1/v-2.mp4")]
        );
        assert_eq!(
            jobs_from_body(r#"{"key":"../etc/passwd"}"#).unwrap(),
            vec![]
        );
    }

    #[test]
    fn keys_are_url_decoded_with_plus_as_space_and_foreign_keys_are_dropped() {
        assert_eq!(
            decode_key("uploads/u/my+holiday%281%29.mp4"),
            "uploads/u/my holiday(1).mp4"
        );
        let body = r#"{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {"key": "other/thing.txt"}}},
                                  {"eventName": "ObjectRemoved:Delete", "s3": {"bucket": {"name": "b"}, "object": {"key": "uploads/u/v.mp4"}}}]}"#;
        assert_eq!(jobs_from_body(body).unwrap(), vec![]);
    }
}
