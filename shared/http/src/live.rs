//! Live progress for browser clients. The analysis ledger announces *which* video changed; the
//! socket.io bridge and the SSE endpoint then read that video from the store and tell its owner.
//! Announcing only the id keeps one source of truth (the store) and lets a listener that missed
//! announcements catch up with a single read.
//!
//! The announcements are in-process (a broadcast channel), so they reach listeners in the process
//! that runs the analysis: `deepemotion serve`. On AWS the API and the analysis run in different
//! Lambdas; the SSE endpoint then falls back to reading the store every few seconds.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::broadcast;

use domain::ports::{
    AnalysisLedger, PlanDecision, ProgressDelta, SegmentClaim, SegmentStatus, SegmentTally,
    StoreResult,
};
use domain::{AnalysisPlan, AnalysisState, Checkpoint, Video, VideoInfo, VideoStatus};

/// Announcements of "video `id` changed", fanned out to every subscriber.
#[derive(Clone)]
pub struct VideoEvents {
    sender: broadcast::Sender<String>,
}

impl Default for VideoEvents {
    fn default() -> Self {
        // A slow subscriber that falls this far behind skips ahead (it re-reads the store anyway).
        Self {
            sender: broadcast::channel(1024).0,
        }
    }
}

impl VideoEvents {
    pub fn changed(&self, video_id: &str) {
        // no subscribers is fine: nobody is watching
        let _ = self.sender.send(video_id.to_string());
    }

    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.sender.subscribe()
    }
}

/// What clients receive: socket.io's `processing_update` and the SSE `processing_update` event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgressUpdate {
    pub video_id: String,
    pub status: VideoStatus,
    pub progress: u8,
}

impl ProgressUpdate {
    pub fn of(video: &Video) -> Self {
        Self {
            video_id: video.id.clone(),
            status: video.analysis.status,
            progress: video.analysis.progress,
        }
    }
}

/// How often a listener re-reads the store when no announcement comes (the AWS case, and a guard
/// against a missed one).
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// An [`AnalysisLedger`] that announces every write that changes a video's status or progress.
pub struct AnnouncingLedger {
    inner: Arc<dyn AnalysisLedger>,
    events: VideoEvents,
}

impl AnnouncingLedger {
    pub fn new(inner: Arc<dyn AnalysisLedger>, events: VideoEvents) -> Self {
        Self { inner, events }
    }
}

#[async_trait]
impl AnalysisLedger for AnnouncingLedger {
    async fn plan(&self, video_id: &str) -> StoreResult<Option<AnalysisPlan>> {
        self.inner.plan(video_id).await
    }

    async fn start_analysis(
        &self,
        video_id: &str,
        plan: &AnalysisPlan,
    ) -> StoreResult<PlanDecision> {
        let decision = self.inner.start_analysis(video_id, plan).await?;
        self.events.changed(video_id);
        Ok(decision)
    }

    async fn claim_segment(
        &self,
        video_id: &str,
        index: u32,
        owner: &str,
        lease: Duration,
    ) -> StoreResult<SegmentClaim> {
        self.inner
            .claim_segment(video_id, index, owner, lease)
            .await
    }

    async fn checkpoint(
        &self,
        video_id: &str,
        index: u32,
        owner: &str,
        checkpoint: &Checkpoint,
        progress: ProgressDelta,
        lease: Duration,
    ) -> StoreResult<bool> {
        let held = self
            .inner
            .checkpoint(video_id, index, owner, checkpoint, progress, lease)
            .await?;
        if held {
            self.events.changed(video_id);
        }
        Ok(held)
    }

    async fn release_segment(&self, video_id: &str, index: u32, owner: &str) -> StoreResult<()> {
        self.inner.release_segment(video_id, index, owner).await
    }

    async fn finish_segment(
        &self,
        video_id: &str,
        index: u32,
        owner: Option<&str>,
        video: Option<&VideoInfo>,
    ) -> StoreResult<SegmentTally> {
        self.inner
            .finish_segment(video_id, index, owner, video)
            .await
    }

    async fn segments(&self, video_id: &str) -> StoreResult<Vec<SegmentStatus>> {
        self.inner.segments(video_id).await
    }

    async fn end_analysis(&self, video_id: &str, state: &AnalysisState) -> StoreResult<bool> {
        let ended = self.inner.end_analysis(video_id, state).await?;
        if ended {
            self.events.changed(video_id);
        }
        Ok(ended)
    }
}
