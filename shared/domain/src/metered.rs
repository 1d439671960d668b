//! Counting what the analysis writes, priced the way DynamoDB prices writes (one write unit per
//! started KB of each item written). Used to report write units per minute of video.
//!
//! The ledger's writes are counted at the port ([`Metered`]), so they are priced the same
//! whatever store is behind it. Frame results are counted by the store itself (the DynamoDB
//! adapter's `with_meter`), through [`WriteMeter::frame_write`]: only the store knows how it
//! groups and encodes frames into items, and when a write has to rewrite an item.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::ports::{
    AnalysisLedger, PlanDecision, ProgressDelta, ResultStore, SegmentClaim, SegmentStatus,
    SegmentTally, StoreResult,
};
use crate::{AnalysisPlan, AnalysisState, Checkpoint, FrameResult, TrackProfile, VideoInfo};

/// Write counts so far.
#[derive(Debug, Default)]
pub struct WriteMeter {
    /// Frame items written (a rewrite, and a write refused by its condition, count too: DynamoDB
    /// charges them).
    pub frame_items: AtomicU64,
    pub frame_units: AtomicU64,
    /// Bytes of the frame items written.
    pub frame_bytes: AtomicU64,
    pub ledger_writes: AtomicU64,
    pub ledger_units: AtomicU64,
}

impl WriteMeter {
    pub fn total_units(&self) -> u64 {
        self.frame_units.load(Ordering::Relaxed) + self.ledger_units.load(Ordering::Relaxed)
    }

    /// Counts one frame item of `bytes` written `units` write units' worth (a transactional
    /// write costs twice the item's).
    pub fn frame_write(&self, bytes: usize, units: u64) {
        self.frame_items.fetch_add(1, Ordering::Relaxed);
        self.frame_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.frame_units.fetch_add(units, Ordering::Relaxed);
    }
}

/// Write units for an item of `bytes` (attribute names and values).
pub fn write_units(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(1024).max(1)
}

pub struct Metered<S> {
    pub inner: Arc<S>,
    pub meter: Arc<WriteMeter>,
    /// Size of the video item that ledger updates rewrite (DynamoDB charges an update by the
    /// item's whole size); segment items are small.
    pub video_item_bytes: usize,
}

impl<S> Metered<S> {
    fn ledger_write(&self, bytes: usize) {
        self.meter.ledger_writes.fetch_add(1, Ordering::Relaxed);
        self.meter
            .ledger_units
            .fetch_add(write_units(bytes), Ordering::Relaxed);
    }
}

/// A segment item: keys, owner, lease, attempts, checkpoint.
const SEGMENT_ITEM_BYTES: usize = 200;

#[async_trait]
impl<S: ResultStore> ResultStore for Metered<S> {
    /// Counted by the store (see the module's comment).
    async fn put_frames(&self, video_id: &str, frames: &[FrameResult]) -> StoreResult<()> {
        self.inner.put_frames(video_id, frames).await
    }
    fn frames_per_chunk(&self) -> Option<u64> {
        self.inner.frames_per_chunk()
    }
    async fn frames(
        &self,
        video_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<(Vec<FrameResult>, Option<u64>)> {
        self.inner.frames(video_id, after, limit).await
    }
    async fn put_tracks(&self, video_id: &str, tracks: &[TrackProfile]) -> StoreResult<()> {
        self.inner.put_tracks(video_id, tracks).await
    }
    async fn tracks(&self, video_id: &str) -> StoreResult<Vec<TrackProfile>> {
        self.inner.tracks(video_id).await
    }
    async fn delete_frames(&self, video_id: &str) -> StoreResult<()> {
        self.inner.delete_frames(video_id).await
    }
}

#[async_trait]
impl<S: AnalysisLedger> AnalysisLedger for Metered<S> {
    async fn plan(&self, video_id: &str) -> StoreResult<Option<AnalysisPlan>> {
        self.inner.plan(video_id).await
    }
    async fn start_analysis(
        &self,
        video_id: &str,
        plan: &AnalysisPlan,
    ) -> StoreResult<PlanDecision> {
        let decision = self.inner.start_analysis(video_id, plan).await?;
        self.ledger_write(self.video_item_bytes);
        Ok(decision)
    }
    async fn claim_segment(
        &self,
        video_id: &str,
        index: u32,
        owner: &str,
        lease: Duration,
    ) -> StoreResult<SegmentClaim> {
        let claim = self
            .inner
            .claim_segment(video_id, index, owner, lease)
            .await?;
        self.ledger_write(SEGMENT_ITEM_BYTES);
        Ok(claim)
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
        self.ledger_write(SEGMENT_ITEM_BYTES);
        self.ledger_write(self.video_item_bytes);
        Ok(held)
    }
    async fn release_segment(&self, video_id: &str, index: u32, owner: &str) -> StoreResult<()> {
        self.inner.release_segment(video_id, index, owner).await?;
        self.ledger_write(SEGMENT_ITEM_BYTES);
        Ok(())
    }
    async fn finish_segment(
        &self,
        video_id: &str,
        index: u32,
        owner: Option<&str>,
        video: Option<&VideoInfo>,
    ) -> StoreResult<SegmentTally> {
        let tally = self
            .inner
            .finish_segment(video_id, index, owner, video)
            .await?;
        if owner.is_some() {
            self.ledger_write(SEGMENT_ITEM_BYTES);
        }
        self.ledger_write(self.video_item_bytes);
        Ok(tally)
    }
    async fn segments(&self, video_id: &str) -> StoreResult<Vec<SegmentStatus>> {
        self.inner.segments(video_id).await
    }
    async fn end_analysis(&self, video_id: &str, state: &AnalysisState) -> StoreResult<bool> {
        let ended = self.inner.end_analysis(video_id, state).await?;
        let summary = serde_json::to_string(state).map_or(0, |s| s.len());
        self.ledger_write(self.video_item_bytes + summary);
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_priced_per_started_kilobyte() {
        assert_eq!(write_units(1), 1);
        assert_eq!(write_units(1024), 1);
        assert_eq!(write_units(1025), 2);
        let meter = WriteMeter::default();
        meter.frame_write(1500, 2);
        meter.frame_write(100, 2);
        assert_eq!(meter.frame_items.load(Ordering::Relaxed), 2);
        assert_eq!(meter.frame_bytes.load(Ordering::Relaxed), 1600);
        assert_eq!(meter.total_units(), 4);
    }
}
