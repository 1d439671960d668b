//! Ports: one small trait per capability. The HTTP router and the analysis worker only see these;
//! `adapters::local` (SQLite, files, an in-process queue) and `adapters::aws` (DynamoDB, S3, SQS)
//! implement them, and tests hand in `adapters::memory` fakes.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{AnalysisState, FrameResult, User, Video};

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
    async fn set_analysis(&self, id: &str, state: &AnalysisState) -> StoreResult<()>;
    /// Moves a `PENDING` (or `FAILED`) video to `PROCESSING`; false when another worker already
    /// has it or it is done. This is what makes a duplicate upload event harmless.
    async fn claim_for_analysis(&self, id: &str) -> StoreResult<bool>;
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
    /// Copies the object to a local file (the analysis reads files).
    async fn download(&self, key: &str, to: &Path) -> StoreResult<()>;
}

/// A request to analyse the object at `key`: what an S3 ObjectCreated event carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisJob {
    pub key: String,
}

#[async_trait]
pub trait JobQueue: Send + Sync {
    async fn enqueue(&self, job: AnalysisJob) -> StoreResult<()>;
}
