//! What browsers need besides JSON: the video itself for a plain `<video>` element, and live
//! progress as Server-Sent Events.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::extract::{Path, Query, Request, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use futures_util::Stream;
use tokio::sync::broadcast;

use super::videos::owned_video;
use super::{ApiError, AppState, bearer_token};
use crate::live::{POLL_INTERVAL, ProgressUpdate};

/// The video id in a stream file name `{video_id}.{ext}`, or `None` for anything else. The strict
/// shape is what keeps this unauthenticated route from reaching other files: no separators, no
/// dots but one, and an id that must exist.
fn capability_video_id(filename: &str) -> Option<&str> {
    let (stem, ext) = filename.split_once('.')?;
    let ext_ok = (1..=5).contains(&ext.len()) && ext.bytes().all(|b| b.is_ascii_alphanumeric());
    (ext_ok && uuid::Uuid::try_parse(stem).is_ok()).then_some(stem)
}

/// `GET /videos/stream/{video_id}.{ext}`: the original client's player source. A `<video>`
/// element cannot send a token, so the URL is the capability: the file name carries the video's
/// random (v4) id, and only a name equal to a live video's object name is served. Byte ranges
/// work, so seeking does. On AWS it redirects to a short-lived presigned S3 URL (S3 serves ranges).
pub(crate) async fn stream_video(
    State(state): State<AppState>,
    Path(filename): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let video_id = capability_video_id(&filename).ok_or(ApiError::NotFound)?;
    let video = state
        .videos
        .video(video_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if video.s3_key.rsplit('/').next() != Some(filename.as_str()) {
        return Err(ApiError::NotFound);
    }
    match &state.server_uploads {
        Some(uploads) => {
            uploads
                .files
                .serve(&video.s3_key, Some(&video.content_type), request)
                .await
        }
        None => {
            // exactly the object that was analysed, never a later PUT to the same key
            let upload = video.upload.as_ref().ok_or(ApiError::NotFound)?;
            let url = state
                .blobs
                .presign_get(
                    &video.s3_key,
                    upload.version_id.as_deref(),
                    state.config.download_url_ttl,
                )
                .await?;
            Ok(Redirect::temporary(&url).into_response())
        }
    }
}

/// `GET /videos/{id}/events`: `processing_update` events (`{video_id, status, progress}`) as the
/// analysis goes, starting with the current state and ending after `COMPLETED` or `FAILED`.
/// `EventSource` cannot send headers, so the token may also come as `?token=`.
pub(crate) async fn video_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let token = bearer_token(&headers)
        .or(query.get("token").map(String::as_str))
        .ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?;
    // the same check as every other authenticated route: a valid token of an existing user
    let user = super::auth::authenticate(&state, token.trim()).await?;
    owned_video(&state, &user.id, &id).await?;
    let watch = Watch {
        heard: state.events.subscribe(),
        until: state
            .config
            .events_max_duration
            .map(|d| tokio::time::Instant::now() + d),
        state,
        video_id: id,
        last: None,
    };
    let updates = futures_util::stream::unfold(watch, |mut watch| async move {
        let update = watch.next_update().await?;
        let event = Event::default()
            .event("processing_update")
            // an EventSource whose stream was closed early reconnects after this long
            .retry(std::time::Duration::from_secs(1))
            .json_data(&update)
            .expect("a progress update serialises");
        Some((Ok(event), watch))
    });
    Ok(Sse::new(updates).keep_alive(KeepAlive::default()))
}

struct Watch {
    state: AppState,
    heard: broadcast::Receiver<String>,
    video_id: String,
    /// When the stream closes even though the analysis goes on (the client reconnects).
    until: Option<tokio::time::Instant>,
    last: Option<ProgressUpdate>,
}

impl Watch {
    /// The next different state of the video; `None` once it has ended or was deleted, or the
    /// stream has been open for as long as it may.
    async fn next_update(&mut self) -> Option<ProgressUpdate> {
        if self.last.as_ref().is_some_and(|u| u.status.is_final()) {
            return None;
        }
        loop {
            if self.until.is_some_and(|t| tokio::time::Instant::now() >= t) {
                return None;
            }
            match self.state.videos.video(&self.video_id).await {
                Ok(Some(video)) => {
                    let update = ProgressUpdate::of(&video);
                    if self.last.as_ref() != Some(&update) {
                        self.last = Some(update.clone());
                        return Some(update);
                    }
                }
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(video_id = %self.video_id, error = %e, "progress read failed; retrying")
                }
            }
            // an announcement for this video, or the poll interval, whichever comes first
            let poll = tokio::time::Instant::now() + POLL_INTERVAL;
            let wake = self.until.map_or(poll, |until| until.min(poll));
            let _ = tokio::time::timeout_at(wake, self.announced()).await;
        }
    }

    async fn announced(&mut self) {
        loop {
            match self.heard.recv().await {
                Ok(id) if id == self.video_id => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                // nobody announces (another process runs the analysis): polling alone
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::capability_video_id;

    #[test]
    fn only_uuid_names_with_a_plain_extension_are_capabilities() {
        let id = "0b6e2a8e-2a7c-4b0e-9a55-1d3c1f0e7a10";
        assert_eq!(capability_video_id(&format!("{id}.mp4")), Some(id));
        for bad in [
            format!("../{id}.mp4"),
            format!("{id}.mp4/../x"),
            format!("{id}..mp4"),
            format!("{id}.tar.gz"),
            id.to_string(),
            "..%2F..%2Fetc%2Fpasswd".to_string(),
            "../../etc/passwd".to_string(),
            format!("{id}.mp4\0"),
        ] {
            assert_eq!(capability_video_id(&bad), None, "{bad:?}");
        }
    }
}
