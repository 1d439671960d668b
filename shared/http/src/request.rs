//! What routes share about requests: JSON bodies, and pages of listings.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ApiError;

/// Parses a JSON object body: 400 when it is not JSON (or not an object), 422 when it does not
/// fit `T`.
pub(crate) fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    }
    serde_json::from_value(value).map_err(|e| ApiError::Validation {
        message: e.to_string(),
        fields: BTreeMap::new(),
    })
}

#[derive(Deserialize)]
pub(crate) struct PageQuery {
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

pub(crate) fn page_limit(
    limit: Option<usize>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {max}"),
        )),
    }
}

pub(crate) fn link_next(headers: &mut HeaderMap, path: &str, limit: usize, cursor: &str) {
    let link = format!("<{path}?limit={limit}&cursor={cursor}>; rel=\"next\"");
    if let Ok(v) = HeaderValue::from_str(&link) {
        headers.insert(header::LINK, v);
    }
}
