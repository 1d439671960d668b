//! Ports: one small trait per capability. The HTTP router and the analysis worker only see these;
//! `adapters::local` (SQLite, files, an in-process queue) and `adapters::aws` (DynamoDB, S3, SQS)
//! implement them, and tests hand in `adapters::memory` fakes.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{AnalysisPlan, AnalysisState, Checkpoint, FrameResult, User, Video, VideoInfo};

/// Failures of a store or service behind a port.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was violated (e.g. the email is taken).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    #[error("invalid cursor")]
    BadCursor,
    #[error("{0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// One page of a listing; `next` is an opaque cursor for the following page.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Fails with `Conflict` when the (lower-cased) email is taken.
    async fn create_user(&self, user: &User) -> StoreResult<()>;
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>>;
    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>>;
}

#[async_trait]
pub trait VideoStore: Send + Sync {
    async fn create_video(&self, video: &Video) -> StoreResult<()>;
    async fn video(&self, id: &str) -> StoreResult<Option<Video>>;
    /// A user's videos, newest first.
    async fn videos_of(
        &self,
        user_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Video>>;
    async fn set_title(&self, id: &str, title: &str) -> StoreResult<()>;
    /// Overwrites the analysis state (the API uses it to reset a video for a new upload).
    async fn set_analysis(&self, id: &str, state: &AnalysisState) -> StoreResult<()>;
    async fn delete_video(&self, id: &str) -> StoreResult<()>;
}

#[async_trait]
pub trait ResultStore: Send + Sync {
    /// Stores frame results; writing the same frame twice keeps one copy.
    async fn put_frames(&self, video_id: &str, frames: &[FrameResult]) -> StoreResult<()>;
    /// Frames with `frame > after`, in order, at most `limit`; `next` is the last frame's number.
    async fn frames(
        &self,
        video_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<(Vec<FrameResult>, Option<u64>)>;
    async fn delete_frames(&self, video_id: &str) -> StoreResult<()>;
}

/// What `start_analysis` found.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanDecision {
    /// This plan is now the video's; the video is `PROCESSING`.
    Recorded,
    /// Another worker planned first: its plan is the one in force.
    Existing(AnalysisPlan),
    /// The video is `COMPLETED` or `FAILED` (or gone): nothing to do.
    Finished,
}

/// What `claim_segment` found.
#[derive(Debug, Clone, PartialEq)]
pub enum SegmentClaim {
    /// Ours until the lease expires; continue after `checkpoint` when there is one.
    Claimed {
        attempt: u32,
        checkpoint: Option<Checkpoint>,
    },
    /// Another worker holds a live lease on it.
    Busy,
    Done,
}

/// A segment as the ledger knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentStatus {
    pub index: u32,
    pub done: bool,
    /// Whether a worker holds an unexpired lease on it.
    pub leased: bool,
}

/// Segments done so far, after recording one.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentTally {
    pub done: u32,
    pub total: u32,
    /// The video's metadata as the segment that reached the end of the stream saw it.
    pub video: Option<VideoInfo>,
}

/// The analysis bookkeeping that makes workers safe to run twice, in parallel and after a
/// crash: a video's plan, a lease per segment (owner + expiry, with an attempt count), where
/// each segment got to, and which segments are done. Every write is conditional, so two workers
/// never both think they own a segment, and a late worker cannot overwrite a finished video.
#[async_trait]
pub trait AnalysisLedger: Send + Sync {
    /// The video's plan, once one is recorded.
    async fn plan(&self, video_id: &str) -> StoreResult<Option<AnalysisPlan>>;
    /// Records `plan` and moves the video `PENDING → PROCESSING`, unless it is not `PENDING`.
    async fn start_analysis(
        &self,
        video_id: &str,
        plan: &AnalysisPlan,
    ) -> StoreResult<PlanDecision>;
    /// Takes the segment for `lease` when it is new or its lease has expired.
    async fn claim_segment(
        &self,
        video_id: &str,
        index: u32,
        owner: &str,
        lease: Duration,
    ) -> StoreResult<SegmentClaim>;
    /// Records where the segment got to, renews the lease and adds `covered_ms` of video time
    /// and `frames` to the video's progress. False when `owner` no longer holds the lease.
    async fn checkpoint(
        &self,
        video_id: &str,
        index: u32,
        owner: &str,
        checkpoint: &Checkpoint,
        progress: ProgressDelta,
        lease: Duration,
    ) -> StoreResult<bool>;
    /// Gives the lease up early (the work stopped cleanly, or failed in a way worth retrying).
    async fn release_segment(&self, video_id: &str, index: u32, owner: &str) -> StoreResult<()>;
    /// Marks the segment done and counts it on the video; `video` is given by the segment that
    /// decoded to the end of the stream. Counting is idempotent, so calling this again for a
    /// segment already done (after a crash between the two writes) is safe and returns the tally.
    async fn finish_segment(
        &self,
        video_id: &str,
        index: u32,
        owner: Option<&str>,
        video: Option<&VideoInfo>,
    ) -> StoreResult<SegmentTally>;
    async fn segments(&self, video_id: &str) -> StoreResult<Vec<SegmentStatus>>;
    /// Writes the final state (`COMPLETED` or `FAILED`) if the video is still `PROCESSING`;
    /// false otherwise.
    async fn end_analysis(&self, video_id: &str, state: &AnalysisState) -> StoreResult<bool>;
}

/// Video time and frames a checkpoint adds to a video's progress.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProgressDelta {
    pub covered_ms: u64,
    pub frames: u64,
}

/// A URL the client uploads to directly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresignedUpload {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

#[async_trait]
pub trait BlobStore: Send + Sync {
    /// A PUT URL that is only valid with exactly this Content-Type and until `expires_in` passes.
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        expires_in: Duration,
    ) -> StoreResult<PresignedUpload>;
    async fn presign_get(&self, key: &str, expires_in: Duration) -> StoreResult<String>;
    /// The object's size, or `None` when it does not exist.
    async fn head(&self, key: &str) -> StoreResult<Option<u64>>;
    async fn delete(&self, key: &str) -> StoreResult<()>;
    /// Copies the object to a local file.
    async fn download(&self, key: &str, to: &Path) -> StoreResult<()>;
    /// What ffmpeg should read for analysis: a file path for local blobs, a presigned GET URL
    /// for S3 (ffmpeg streams it with range requests, so nothing is copied to /tmp).
    async fn analysis_source(&self, key: &str, expires_in: Duration) -> StoreResult<String>;
}

/// A request to analyse the object at `key`: what an S3 ObjectCreated event carries, or (with
/// `segment`) one segment of a long video's plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisJob {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<u32>,
}

impl AnalysisJob {
    pub fn upload(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            segment: None,
        }
    }
}

#[async_trait]
pub trait JobQueue: Send + Sync {
    async fn enqueue(&self, job: AnalysisJob) -> StoreResult<()>;
}
