//! One machine, no AWS: SQLite for users, videos and results, files for blobs (with HMAC-signed,
//! expiring URLs served by the local server itself), and an in-process queue.

mod files;
mod sqlite;

pub use files::{FileBlobs, SignatureError, UploadError};
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::ports::{AnalysisJob, JobQueue, StoreError, StoreResult};

/// The in-process queue: the local server's analysis worker reads the other end.
#[derive(Clone)]
pub struct LocalQueue(mpsc::UnboundedSender<AnalysisJob>);

impl LocalQueue {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<AnalysisJob>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self(tx), rx)
    }
}

#[async_trait]
impl JobQueue for LocalQueue {
    async fn enqueue(&self, job: AnalysisJob) -> StoreResult<()> {
        self.0
            .send(job)
            .map_err(|_| StoreError::Backend("the analysis worker has stopped".into()))
    }
}
