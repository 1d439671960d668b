//! The in-process queue: what SQS is on AWS, for one process.

use async_trait::async_trait;
use tokio::sync::mpsc;

use domain::ports::{AnalysisJob, JobQueue, StoreError, StoreResult};

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
