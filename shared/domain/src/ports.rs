//! Ports: one small trait per capability. The HTTP router and the analysis worker only see these;
//! the `local-server` crate (SQLite, files, an in-process queue) and the `aws-adapters` crate
//! (DynamoDB, S3, SQS) implement them, and tests hand in [`crate::memory`]'s fakes. The analysis
//! engine's port, [`crate::VideoAnalyzer`], lives with the analysis types.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    AnalysisPlan, AnalysisState, Checkpoint, FrameResult, MediaSource, StoredObject, TrackProfile,
    User, Video, VideoInfo,
};

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
    /// Records the object an upload produced, once: the first call wins, later calls report
    /// whether they name the same object.
    async fn record_upload(&self, id: &str, object: &StoredObject) -> StoreResult<UploadRecord>;
    /// Removes everything the store holds about the video: the record, the analysis
    /// bookkeeping and the frame results. A worker still writing frames finds its lease gone at
    /// its next checkpoint and removes what it wrote after this (see `worker`).
    async fn delete_video(&self, id: &str) -> StoreResult<()>;
}

/// What `record_upload` found.
#[derive(Debug, Clone, PartialEq)]
pub enum UploadRecord {
    /// This object is now the video's upload.
    Recorded,
    /// The same object was recorded before (a duplicate event).
    Same,
    /// A different object was recorded first: this one is a second upload to the same URL.
    Different(StoredObject),
    /// No such video.
    Gone,
}

#[async_trait]
pub trait ResultStore: Send + Sync {
    /// Stores frame results; writing the same frame twice keeps one copy.
    async fn put_frames(&self, video_id: &str, frames: &[FrameResult]) -> StoreResult<()>;
    /// How many consecutive frame numbers the store keeps together (frames `k·n .. k·n + n − 1`
    /// in one chunk), when it does: a chunk written whole in one call is written once, while
    /// writing part of a chunk that is already stored rewrites the whole chunk. The worker
    /// aligns its writes to chunks. `None`: frames are stored one by one, any batch as cheap.
    fn frames_per_chunk(&self) -> Option<u64> {
        None
    }
    /// Frames with `frame > after`, in order, at most `limit`; `next` is the last frame's number.
    async fn frames(
        &self,
        video_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<(Vec<FrameResult>, Option<u64>)>;
    /// Stores tracks' identity profiles; a profile replaces the track's earlier one.
    async fn put_tracks(&self, video_id: &str, tracks: &[TrackProfile]) -> StoreResult<()>;
    /// Every stored profile of the video, by track.
    async fn tracks(&self, video_id: &str) -> StoreResult<Vec<TrackProfile>>;
    /// Removes the video's frames and track profiles.
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
        /// Earlier runs of this segment that ended without giving the lease back: the process
        /// was killed, crashed or the run panicked. Runs that stopped cleanly (a deadline, a
        /// store error worth retrying) released their lease and are not counted.
        crashed_runs: u32,
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
    /// Gives the lease up early: the run stopped cleanly (a deadline, or a failure worth
    /// retrying such as throttling). A run that crashed never calls this, so the next claim
    /// counts it in `crashed_runs`.
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
    /// Writes the final state (`COMPLETED` or `FAILED`) if the video has not ended yet
    /// (`PENDING` or `PROCESSING`); false otherwise (already ended, or deleted).
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
    /// A PUT URL that is only valid with exactly this Content-Type (and, when given, exactly
    /// this Content-Length) and until `expires_in` passes.
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        content_length: Option<u64>,
        expires_in: Duration,
    ) -> StoreResult<PresignedUpload>;
    /// A GET URL for the object; `version` pins one version of it (the recorded upload).
    async fn presign_get(
        &self,
        key: &str,
        version: Option<&str>,
        expires_in: Duration,
    ) -> StoreResult<String>;
    /// The object (a given version, or the current one), or `None` when it does not exist.
    async fn stat(&self, key: &str, version: Option<&str>) -> StoreResult<Option<StoredObject>>;
    /// The stored version an event describes by size and ETag only (moto's events, and those of
    /// unversioned buckets, carry no version id): `object` with its version id filled in, the
    /// oldest matching version if several match; `object` itself where versions do not apply;
    /// `None` when no stored version matches.
    async fn locate(&self, key: &str, object: &StoredObject) -> StoreResult<Option<StoredObject>>;
    /// Deletes the object, every version of it.
    async fn delete(&self, key: &str) -> StoreResult<()>;
    /// Deletes one version of the object (a second upload to a used URL), leaving the others.
    async fn delete_version(&self, key: &str, version: &str) -> StoreResult<()>;
    /// Stores a small object the service makes itself (a person's thumbnail, see
    /// [`crate::person_thumbnail_key`]), replacing what is there: the bytes are already in
    /// memory, so no presigned URL or file is involved. Readers see the old or the new object
    /// whole, never a part.
    async fn put_object(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> StoreResult<()>;
    /// The current version of a small object (see `put_object`), read whole, for the API to
    /// serve; `None` when there is none, which callers turn into a 404.
    async fn get_object(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Deletes every object whose key starts with `prefix` (and on a versioned bucket every
    /// version and delete marker, so nothing is left hidden behind a marker): how a video's
    /// results (see [`crate::results_prefix`]), whose keys nobody records, are removed with the
    /// video. Nothing under the prefix is fine.
    async fn delete_prefix(&self, prefix: &str) -> StoreResult<()>;
    /// What ffmpeg should read for analysis: a file path for local blobs, a presigned GET URL
    /// of exactly `version` for S3 (ffmpeg streams it with range requests, so nothing is copied
    /// to /tmp).
    async fn analysis_source(
        &self,
        key: &str,
        version: Option<&str>,
        expires_in: Duration,
    ) -> StoreResult<MediaSource>;
}

/// A request to analyse the object at `key`: what an S3 ObjectCreated event carries, or (with
/// `segment`) one segment of a long video's plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisJob {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<u32>,
    /// The object the upload event reported (size, ETag, version id); `None` for jobs the
    /// service queues itself, and for events that carry none (the worker then reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<StoredObject>,
}

impl AnalysisJob {
    pub fn upload(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            segment: None,
            object: None,
        }
    }

    /// A job for one segment of a planned analysis (or its continuation).
    pub fn segment(key: impl Into<String>, index: u32) -> Self {
        Self {
            key: key.into(),
            segment: Some(index),
            object: None,
        }
    }
}

#[async_trait]
pub trait JobQueue: Send + Sync {
    async fn enqueue(&self, job: AnalysisJob) -> StoreResult<()>;
}

/// Whether one more attempt fits a key's budget (see [`RateLimiter`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateDecision {
    Allowed,
    /// Over the limit until the current window ends.
    Limited {
        retry_after: Duration,
    },
}

/// The fixed window of `length` that the current moment falls in: how both rate limiters cut
/// time, and the one rule for what a count means.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateWindow {
    /// Which window since the epoch.
    pub index: u64,
    pub ends_ms: u64,
    pub now_ms: u64,
}

impl RateWindow {
    pub fn now(length: Duration) -> Self {
        let length_ms = length.as_millis().max(1) as u64;
        let now_ms = Utc::now().timestamp_millis().max(0) as u64;
        let index = now_ms / length_ms;
        Self {
            index,
            ends_ms: (index + 1) * length_ms,
            now_ms,
        }
    }

    /// The decision once the window holds `count` attempts, `cost` of them just added: within
    /// `limit`, or, for a look (`cost` 0), whether one more would fit.
    pub fn decide(&self, count: u64, cost: u32, limit: u32) -> RateDecision {
        if count + u64::from(cost == 0) <= u64::from(limit) {
            RateDecision::Allowed
        } else {
            RateDecision::Limited {
                retry_after: Duration::from_millis(self.ends_ms.saturating_sub(self.now_ms)),
            }
        }
    }
}

/// Counts attempts per key in fixed time windows, shared by every process that serves the API
/// (an in-process map on one machine; a DynamoDB item per key and window, with a TTL, on AWS,
/// so that every Lambda container counts against the same budget).
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Adds `cost` attempts to `key`'s count in the current `window` and says whether the count
    /// is within `limit`. A look (`cost` 0) adds nothing and says whether one more would fit.
    async fn hit(
        &self,
        key: &str,
        cost: u32,
        limit: u32,
        window: Duration,
    ) -> StoreResult<RateDecision>;
}
