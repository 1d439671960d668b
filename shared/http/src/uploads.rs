//! Uploads that pass through this server instead of going straight to the object store: on one
//! machine, the signed upload URLs that stand in for S3's and the original web client's
//! multipart form. On AWS clients upload to S3 and the API has none of this ([`AppState`]'s
//! `server_uploads` is `None`): the multipart form is a 404 there.

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{Multipart, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::videos::{NewVideo, checked_title, create_video, owned_video, video_json};
use super::{ApiError, AppState, AuthUser};
use domain::StoredObject;
use domain::Video;
use domain::ports::{AnalysisJob, JobQueue, StoreError, UploadRecord};

/// A request body as it arrives, chunk by chunk.
pub type BodyChunks<'a> =
    dyn futures_util::Stream<Item = Result<Bytes, String>> + Send + Unpin + 'a;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("this upload URL has already been used: a video is uploaded once")]
    AlreadyUploaded,
    #[error("the file is larger than the {0} byte limit")]
    TooLarge(u64),
    #[error("the upload is {got} bytes but {declared} bytes were declared")]
    SizeMismatch { declared: u64, got: u64 },
    #[error("upload interrupted: {0}")]
    Interrupted(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where uploads through this server are kept, and how the kept files reach a browser.
#[async_trait]
pub trait ServerFiles: Send + Sync {
    /// Streams `body` into the object at `key`, once (a second upload gets
    /// [`UploadError::AlreadyUploaded`]): at most `max_bytes`, and exactly `declared` bytes when
    /// the upload declared its size. Returns the stored size.
    async fn store_new(
        &self,
        key: &str,
        body: &mut BodyChunks<'_>,
        max_bytes: u64,
        declared: Option<u64>,
    ) -> Result<u64, UploadError>;
    /// Serves the stored object with `Range`, `If-Modified-Since` and `HEAD` support, as the
    /// given content type.
    async fn serve(
        &self,
        key: &str,
        content_type: Option<&str>,
        request: Request,
    ) -> Result<Response, ApiError>;
}

/// What the API needs to take uploads itself: somewhere to keep them, and the queue their
/// analysis goes on (S3's ObjectCreated event does that on AWS).
#[derive(Clone)]
pub struct ServerUploads {
    pub files: Arc<dyn ServerFiles>,
    pub jobs: Arc<dyn JobQueue>,
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

/// The most of a refused body read before the connection is closed instead.
const DISCARD_AT_MOST: u64 = 256 << 20;

/// Reads what is left of a refused upload, up to a bound, so that the client, still sending,
/// reads its 409 or 413 instead of a connection reset (a socket closed with unread data resets
/// the connection, and the client may lose the answer). Past the bound the connection is closed.
pub async fn discard_rest(chunks: &mut BodyChunks<'_>) {
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
pub async fn store_upload(
    state: &AppState,
    uploads: &ServerUploads,
    video: &Video,
    chunks: &mut BodyChunks<'_>,
) -> Result<u64, ApiError> {
    let size = uploads
        .files
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
        state.blobs.delete(&video.s3_key).await?;
        return Err(ApiError::NotFound);
    }
    tracing::info!(key = %video.s3_key, size, "upload stored");
    uploads
        .jobs
        .enqueue(AnalysisJob {
            object: Some(object),
            ..AnalysisJob::upload(video.s3_key.clone())
        })
        .await?;
    Ok(size)
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
    let uploads = state.server_uploads.clone().ok_or(ApiError::NotFound)?;
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
                        NewVideo {
                            filename,
                            title: title.clone(),
                            content_type,
                            ..NewVideo::default()
                        },
                    )
                    .await?;
                    let mut chunks = Box::pin(field.map(|c| c.map_err(|e| e.body_text())));
                    video = Some(created.clone());
                    let stored = store_upload(&state, &uploads, &created, &mut chunks).await;
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
                state.blobs.delete(&created.s3_key).await?;
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
