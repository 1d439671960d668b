//! Routes only the one-machine server has: the signed upload/download URLs that stand in for S3
//! presigned URLs, and the original web client's local mode (multipart upload, streaming).

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::routes::{create_video, job_for, owned_video, video_json};
use super::stream::serve_file;
use super::{ApiError, AppState, AuthUser};
use crate::adapters::local::{FileBlobs, SignatureError};

/// `PUT /uploads/{user}/{video}.{ext}` and `GET` of the same, both signed.
pub fn upload_routes() -> Router<AppState> {
    Router::new()
        .route("/uploads/{*rest}", put(signed_put).get(signed_get))
        .layer(DefaultBodyLimit::disable())
}

fn local_files(state: &AppState) -> Result<&FileBlobs, ApiError> {
    state.local_files.as_deref().ok_or(ApiError::NotFound)
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

/// Streams a request body into the blob file (via a temporary file, so a broken upload never
/// leaves a half file under the real name), refusing more than the configured maximum.
async fn write_blob(
    files: &FileBlobs,
    key: &str,
    mut chunks: impl futures_util::Stream<Item = Result<axum::body::Bytes, String>> + Unpin,
    max_bytes: u64,
) -> Result<u64, ApiError> {
    let path = files.path_of(key)?;
    let internal = |e: std::io::Error| ApiError::Internal(e.to_string());
    tokio::fs::create_dir_all(path.parent().expect("keys have a directory"))
        .await
        .map_err(internal)?;
    let partial = path.with_extension("part");
    let mut file = tokio::fs::File::create(&partial).await.map_err(internal)?;
    let mut written = 0u64;
    while let Some(chunk) = chunks.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(ApiError::BadRequest(format!("upload interrupted: {e}")));
            }
        };
        written += chunk.len() as u64;
        if written > max_bytes {
            drop(file);
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(ApiError::PayloadTooLarge(format!(
                "the file is larger than the {max_bytes} byte limit"
            )));
        }
        file.write_all(&chunk).await.map_err(internal)?;
    }
    file.flush().await.map_err(internal)?;
    drop(file);
    tokio::fs::rename(&partial, &path).await.map_err(internal)?;
    Ok(written)
}

async fn signed_put(
    State(state): State<AppState>,
    Path(rest): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let files = local_files(&state)?;
    let key = format!("uploads/{rest}");
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    check_signature(files, "PUT", &key, content_type, &query)?;
    let chunks = body
        .into_data_stream()
        .map(|c| c.map_err(|e| e.to_string()));
    let size = write_blob(files, &key, chunks, state.config.max_upload_bytes).await?;
    tracing::info!(%key, size, "upload stored");
    // exactly what the S3 ObjectCreated event does on AWS
    state.jobs.enqueue(job_for(&key)).await?;
    Ok(StatusCode::OK.into_response())
}

async fn signed_get(
    State(state): State<AppState>,
    Path(rest): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Result<Response, ApiError> {
    let files = local_files(&state)?;
    let key = format!("uploads/{rest}");
    check_signature(files, "GET", &key, "", &query)?;
    serve_file(files, &key, None, request).await
}

/// The original client's local mode: `multipart/form-data` with `file` and `title`.
pub(crate) async fn multipart_upload(
    state: AppState,
    AuthUser(user_id): AuthUser,
    mut form: Multipart,
) -> Result<Response, ApiError> {
    local_files(&state)?;
    let mut title: Option<String> = None;
    let mut video = None;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| ApiError::BadRequest(e.body_text()))?
    {
        match field.name() {
            Some("title") => {
                title = Some(
                    field
                        .text()
                        .await
                        .map_err(|e| ApiError::BadRequest(e.body_text()))?,
                )
            }
            Some("file") if video.is_none() => {
                let filename = field.file_name().unwrap_or("").to_string();
                let content_type = field.content_type().map(str::to_string);
                let created = create_video(
                    &state,
                    &user_id,
                    &filename,
                    title.clone(),
                    content_type,
                    None,
                    None,
                )
                .await?;
                let chunks = field.map(|c| c.map_err(|e| e.body_text()));
                let files = local_files(&state)?;
                if let Err(e) = write_blob(
                    files,
                    &created.s3_key,
                    Box::pin(chunks),
                    state.config.max_upload_bytes,
                )
                .await
                {
                    state.videos.delete_video(&created.id).await?;
                    return Err(e);
                }
                video = Some(created);
            }
            _ => {}
        }
    }
    let video = video.ok_or_else(|| ApiError::invalid("file", "is required"))?;
    if let Some(t) = title
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty() && *t != video.title)
    {
        state.videos.set_title(&video.id, &t).await?;
    }
    state.jobs.enqueue(job_for(&video.s3_key)).await?;
    let video = owned_video(&state, &user_id, &video.id).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(video_json(&state, &video, false).await?),
    )
        .into_response())
}
