//! The signed upload and download URLs that stand in for S3's presigned URLs on one machine.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::{Extension, Router};
use futures_util::StreamExt;
use http_api::{ApiError, AppState, UploadError, discard_rest, store_upload};

use domain::{Video, VideoStatus};

use crate::files::{FileBlobs, SignatureError, serve_file};

/// `PUT /uploads/{user}/{video}.{ext}` and `GET` of the same, both signed.
pub fn upload_routes(files: Arc<FileBlobs>) -> Router<AppState> {
    Router::new()
        .route("/uploads/{*rest}", put(signed_put).get(signed_get))
        .layer(DefaultBodyLimit::disable())
        .layer(Extension(files))
}

fn check_signature(
    files: &FileBlobs,
    method: &str,
    key: &str,
    content_type: &str,
    query: &HashMap<String, String>,
) -> Result<(), ApiError> {
    let expires = query
        .get("expires")
        .and_then(|e| e.parse().ok())
        .ok_or_else(|| ApiError::Forbidden("missing expires".into()))?;
    let signature = query
        .get("signature")
        .ok_or_else(|| ApiError::Forbidden("missing signature".into()))?;
    files
        .verify(method, key, content_type, expires, signature)
        .map_err(|e: SignatureError| ApiError::Forbidden(e.to_string()))
}

/// The video a local upload URL belongs to, if it may still be uploaded to: 404 when the video
/// is gone, 409 once an upload has been stored (an upload URL writes once).
async fn uploadable_video(state: &AppState, key: &str) -> Result<Video, ApiError> {
    let (_, video_id) = domain::parse_object_key(key).ok_or(ApiError::NotFound)?;
    let video = state
        .videos
        .video(video_id)
        .await?
        .filter(|v| v.s3_key == key)
        .ok_or(ApiError::NotFound)?;
    if video.analysis.status != VideoStatus::Pending || video.upload.is_some() {
        return Err(UploadError::AlreadyUploaded.into());
    }
    Ok(video)
}

async fn signed_put(
    State(state): State<AppState>,
    Extension(files): Extension<Arc<FileBlobs>>,
    Path(rest): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let uploads = state.server_uploads.clone().ok_or(ApiError::NotFound)?;
    let key = format!("uploads/{rest}");
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut chunks = body
        .into_data_stream()
        .map(|c| c.map_err(|e| e.to_string()));
    let stored = async {
        check_signature(&files, "PUT", &key, content_type, &query)?;
        let video = uploadable_video(&state, &key).await?;
        store_upload(&state, &uploads, &video, &mut chunks).await
    }
    .await;
    match stored {
        Ok(_) => Ok(StatusCode::OK.into_response()),
        Err(e) => {
            // answered before the client finished sending: read the rest first (bounded), or
            // the client may see a connection reset instead of this answer
            discard_rest(&mut chunks).await;
            Err(e)
        }
    }
}

async fn signed_get(
    Extension(files): Extension<Arc<FileBlobs>>,
    Path(rest): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Result<Response, ApiError> {
    let key = format!("uploads/{rest}");
    check_signature(&files, "GET", &key, "", &query)?;
    serve_file(&files, &key, None, request).await
}
