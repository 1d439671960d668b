//! What every route that makes or shows a video shares: the checks a new video passes, the
//! owner-only lookup, and the video as JSON.

use chrono::Utc;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use domain::{
    ALLOWED_UPLOAD_TYPES, AnalysisState, TITLE_MAX_CHARS, Video, is_allowed_upload_type,
    is_control_char, object_key, validate_title, video_type,
};

/// A title set by any route (initialize, the multipart upload's `title` field, finalize, PATCH):
/// [`domain::validate_title`]'s rule, refused with a 422 on `title`.
pub(crate) fn checked_title(raw: &str) -> Result<String, ApiError> {
    validate_title(raw).map_err(|message| ApiError::invalid("title", message))
}

/// The title of a video whose upload names none: the file name without its extension, as the
/// original service did (the whole name when that leaves nothing), cut to the title length.
fn default_title(base_name: &str) -> String {
    let stem = base_name
        .rsplit_once('.')
        .map_or(base_name, |(stem, _)| stem)
        .trim();
    let title = if stem.is_empty() { base_name } else { stem };
    title.chars().take(TITLE_MAX_CHARS).collect()
}

/// A declared upload `Content-Type`: one of [`ALLOWED_UPLOAD_TYPES`] (any case), else 415.
/// Absent or blank means the extension's type. The value is kept as sent, because the presigned
/// URL signs it and the client sends it again with the PUT.
fn checked_upload_type(declared: Option<String>, default_type: &str) -> Result<String, ApiError> {
    match declared.filter(|c| !c.trim().is_empty()) {
        None => Ok(default_type.to_string()),
        Some(c) if is_allowed_upload_type(&c) => Ok(c),
        Some(_) => Err(ApiError::UnsupportedMediaType(format!(
            "content_type must be one of {}",
            ALLOWED_UPLOAD_TYPES.join(", ")
        ))),
    }
}

/// What a client asks for when it starts an upload.
#[derive(Debug, Default)]
pub(crate) struct NewVideo {
    pub filename: String,
    pub title: Option<String>,
    pub content_type: Option<String>,
    pub size_bytes: Option<u64>,
    pub sample_fps: Option<f64>,
    /// Announce the end of the analysis here too (see `domain::webhooks`).
    pub callback_url: Option<String>,
}

/// Checks an upload request and creates the `PENDING` video.
pub(crate) async fn create_video(
    state: &AppState,
    user_id: &str,
    request: NewVideo,
) -> Result<Video, ApiError> {
    let NewVideo {
        filename,
        title,
        content_type,
        size_bytes,
        sample_fps,
        callback_url,
    } = request;
    let filename = filename.trim();
    let callback_url = match callback_url.filter(|u| !u.trim().is_empty()) {
        Some(url) => Some(crate::webhooks::checked_callback(state, user_id, &url).await?),
        None => None,
    };
    if filename.is_empty() {
        return Err(ApiError::invalid("filename", "is required"));
    }
    if filename.chars().any(is_control_char) {
        return Err(ApiError::invalid(
            "filename",
            "must not contain control characters",
        ));
    }
    let (ext, default_type) = video_type(filename).ok_or_else(|| {
        ApiError::UnsupportedMediaType(
            "only video files can be uploaded (mp4, mov, m4v, avi, mkv, webm)".into(),
        )
    })?;
    let content_type = checked_upload_type(content_type, default_type)?;
    if let Some(size) = size_bytes
        && size > state.config.max_upload_bytes
    {
        return Err(ApiError::PayloadTooLarge(format!(
            "the file is larger than the {} byte limit",
            state.config.max_upload_bytes
        )));
    }
    let sample_fps = sample_fps.unwrap_or(state.config.default_sample_fps);
    if !(sample_fps.is_finite() && sample_fps >= 0.0 && sample_fps <= state.config.max_sample_fps) {
        return Err(ApiError::invalid(
            "sample_fps",
            format!(
                "must be between 0 (every frame) and {}",
                state.config.max_sample_fps
            ),
        ));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let base_name = filename.rsplit(['/', '\\']).next().unwrap_or(filename);
    // absent or blank: named after the file; anything else must be a valid title
    let title = match title.filter(|t| !t.trim().is_empty()) {
        Some(title) => checked_title(&title)?,
        None => default_title(base_name),
    };
    let video = Video {
        s3_key: object_key(user_id, &id, ext),
        id,
        user_id: user_id.to_string(),
        title,
        filename: base_name.to_string(),
        content_type,
        size_bytes,
        sample_fps,
        uploaded_at: Utc::now(),
        upload: None,
        callback_url,
        analysis: AnalysisState::pending(),
    };
    state.videos.create_video(&video).await?;
    tracing::Span::current().record("video_id", video.id.as_str());
    tracing::info!(key = %video.s3_key, "video created");
    Ok(video)
}

pub(crate) async fn owned_video(
    state: &AppState,
    user_id: &str,
    id: &str,
) -> Result<Video, ApiError> {
    // Someone else's video is "not found": never reveal that it exists.
    let video = state
        .videos
        .video(id)
        .await?
        .filter(|v| v.user_id == user_id)
        .ok_or(ApiError::NotFound)?;
    tracing::Span::current().record("video_id", video.id.as_str());
    Ok(video)
}

pub(crate) async fn video_json(
    state: &AppState,
    video: &Video,
    with_url: bool,
) -> Result<Value, ApiError> {
    let a = &video.analysis;
    let video_url = match &video.upload {
        Some(object) if with_url => Some(
            state
                .blobs
                .presign_get(
                    &video.s3_key,
                    object.version_id.as_deref(),
                    state.config.download_url_ttl,
                )
                .await?,
        ),
        _ => None,
    };
    Ok(json!({
        "id": video.id,
        "user_id": video.user_id,
        "title": video.title,
        "filename": video.filename,
        "s3_key": video.s3_key,
        "content_type": video.content_type,
        "size_bytes": video.size_bytes,
        "status": a.status,
        "progress": a.progress,
        "error": a.error,
        "frame_count": a.frames_analyzed,
        "duration_seconds": a.video.as_ref().map(|v| v.duration_ms as f64 / 1000.0),
        "video": a.video,
        "sample_fps": video.sample_fps,
        "uploaded_at": video.uploaded_at,
        "processed_at": a.processed_at,
        "summary": a.summary,
        "video_url": video_url,
        "callback_url": video.callback_url,
    }))
}
