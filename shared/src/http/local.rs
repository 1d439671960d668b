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

use super::routes::{checked_title, create_video, owned_video, video_json};
use super::stream::serve_file;
use super::{ApiError, AppState, AuthUser};
use crate::adapters::local::{FileBlobs, SignatureError, UploadError};
use crate::ports::{AnalysisJob, BlobStore, UploadRecord};
use crate::{StoredObject, Video, VideoStatus};

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

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::AlreadyUploaded => ApiError::Conflict(e.to_string()),
            UploadError::TooLarge(_) => ApiError::PayloadTooLarge(e.to_string()),
            UploadError::SizeMismatch { declared, got } if got > declared => {
                ApiError::PayloadTooLarge(e.to_string())
            }
            UploadError::SizeMismatch { .. } | UploadError::Interrupted(_) => {
                ApiError::BadRequest(e.to_string())
            }
            UploadError::Store(e) => e.into(),
        }
    }
}

/// The video a local upload URL belongs to, if it may still be uploaded to: 404 when the video
/// is gone, 409 once an upload has been stored (an upload URL writes once).
async fn uploadable_video(state: &AppState, key: &str) -> Result<Video, ApiError> {
    let (_, video_id) = crate::parse_object_key(key).ok_or(ApiError::NotFound)?;
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

/// The most of a refused body read before the connection is closed instead.
const DISCARD_AT_MOST: u64 = 256 << 20;

/// Reads what is left of a refused upload, up to a bound, so that the client, still sending,
/// reads its 409 or 413 instead of a connection reset (a socket closed with unread data resets
/// the connection, and the client may lose the answer). Past the bound the connection is closed.
async fn discard_rest<S, B>(chunks: &mut S)
where
    S: futures_util::Stream<Item = Result<B, String>> + Unpin,
    B: AsRef<[u8]>,
{
    let mut discarded = 0u64;
    while let Some(Ok(chunk)) = chunks.next().await {
        discarded += chunk.as_ref().len() as u64;
        if discarded > DISCARD_AT_MOST {
            break;
        }
    }
}

/// Stores an upload write-once and queues its analysis, as S3's ObjectCreated event does on
/// AWS. A DELETE that raced the upload leaves no file behind.
async fn store_upload<S, B>(
    state: &AppState,
    files: &FileBlobs,
    video: &Video,
    chunks: &mut S,
) -> Result<u64, ApiError>
where
    S: futures_util::Stream<Item = Result<B, String>> + Unpin,
    B: AsRef<[u8]>,
{
    let size = files
        .store_new(
            &video.s3_key,
            chunks,
            state.config.max_upload_bytes,
            video.size_bytes,
        )
        .await?;
    let object = StoredObject {
        size,
        etag: None,
        version_id: None,
    };
    // recorded now, not only by the worker: the local queue lives in memory, and a restart
    // re-queues uploads it finds recorded
    if state.videos.record_upload(&video.id, &object).await? == UploadRecord::Gone {
        files.delete(&video.s3_key).await?;
        return Err(ApiError::NotFound);
    }
    tracing::info!(key = %video.s3_key, size, "upload stored");
    state
        .jobs
        .enqueue(AnalysisJob {
            object: Some(object),
            ..AnalysisJob::upload(video.s3_key.clone())
        })
        .await?;
    Ok(size)
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
    let mut chunks = body
        .into_data_stream()
        .map(|c| c.map_err(|e| e.to_string()));
    let stored = async {
        check_signature(files, "PUT", &key, content_type, &query)?;
        let video = uploadable_video(&state, &key).await?;
        store_upload(&state, files, &video, &mut chunks).await
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

/// A form field that is not the file, read whole but never more than a few KB: the form
/// itself has no size limit, because it carries the video.
async fn small_text_field(
    mut field: axum::extract::multipart::Field<'_>,
) -> Result<String, ApiError> {
    const MAX: usize = 16 * 1024;
    let mut bytes = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| ApiError::BadRequest(e.body_text()))?
    {
        if bytes.len() + chunk.len() > MAX {
            return Err(ApiError::PayloadTooLarge(format!(
                "form field {:?} is longer than {MAX} bytes",
                field.name().unwrap_or("")
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| ApiError::BadRequest("form fields must be UTF-8".into()))
}

/// The original client's local mode: `multipart/form-data` with `file` and `title`. The title
/// follows the one rule for titles wherever it comes in the form; if anything in the form is
/// refused, the video made from it is removed again, file and all.
pub(crate) async fn multipart_upload(
    state: AppState,
    AuthUser(user_id): AuthUser,
    mut form: Multipart,
) -> Result<Response, ApiError> {
    let files = local_files(&state)?;
    let mut title: Option<String> = None;
    let mut video: Option<Video> = None;
    let read = async {
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?
        {
            match field.name() {
                Some("title") => {
                    let text = small_text_field(field).await?;
                    title = Some(text).filter(|t| !t.trim().is_empty());
                    if let Some(t) = &title {
                        checked_title(t)?;
                    }
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
                    let mut chunks = Box::pin(field.map(|c| c.map_err(|e| e.body_text())));
                    video = Some(created.clone());
                    let stored = store_upload(&state, files, &created, &mut chunks).await;
                    if stored.is_err() {
                        discard_rest(&mut chunks).await;
                    }
                    stored?;
                }
                _ => {}
            }
        }
        let video = video
            .clone()
            .ok_or_else(|| ApiError::invalid("file", "is required"))?;
        if let Some(t) = &title {
            let t = checked_title(t)?;
            if t != video.title {
                state.videos.set_title(&video.id, &t).await?;
            }
        }
        Ok::<_, ApiError>(video)
    };
    let video = match read.await {
        Ok(video) => video,
        Err(e) => {
            // the rest of the form too (bounded), so that the client reads this answer
            let mut left = DISCARD_AT_MOST;
            while let Ok(Some(mut field)) = form.next_field().await {
                while let Ok(Some(chunk)) = field.chunk().await {
                    left = left.saturating_sub(chunk.len() as u64);
                    if left == 0 {
                        break;
                    }
                }
                if left == 0 {
                    break;
                }
            }
            if let Some(created) = &video {
                files.delete(&created.s3_key).await?;
                state.videos.delete_video(&created.id).await?;
            }
            return Err(e);
        }
    };
    let video = owned_video(&state, &user_id, &video.id).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(video_json(&state, &video, false).await?),
    )
        .into_response())
}
