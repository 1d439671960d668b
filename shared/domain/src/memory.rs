//! In-memory fakes of every port but the analysis engine's: users, videos, the analysis ledger,
//! results, blobs, jobs and rate limits, for tests of the router and of the worker (whose
//! analysis engine tests script themselves). [`MemoryStore`]'s ledger keeps the contract
//! [`crate::ledger_contract`] checks, as the SQLite and DynamoDB ledgers do; its leases run on
//! this process's monotonic clock, and [`MemoryStore::expire_leases`] lets a test make them run
//! out at once; [`MemoryStore::fail_next`] makes writes fail as a throttled database's do.
//! [`MemoryRateLimiter`] is also the one-machine server's rate limiter.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;

use crate::ports::*;
use crate::webhooks::{Delivery, DeliveryQueue, WebhookEndpoint, WebhookStore};
use crate::{
    AnalysisPlan, AnalysisState, Checkpoint, FrameResult, MediaSource, StoredObject, TrackProfile,
    User, Video, VideoInfo, VideoStatus, progress_percent,
};

/// A `PENDING` video of `owner`, uploaded now as `a.mp4`, for the stores' and the worker's tests
/// (which change the fields they care about).
pub fn pending_video(id: &str, owner: &str) -> Video {
    Video {
        id: id.into(),
        user_id: owner.into(),
        title: format!("video {id}"),
        s3_key: crate::object_key(owner, id, "mp4"),
        filename: "a.mp4".into(),
        content_type: "video/mp4".into(),
        size_bytes: Some(10),
        sample_fps: 5.0,
        uploaded_at: Utc::now(),
        upload: None,
        callback_url: None,
        analysis: AnalysisState::pending(),
    }
}

/// Users, videos, the analysis ledger and frame results in maps. Locks are taken in one order
/// (videos, then the ledger), so the ledger's writes that touch the video are atomic.
#[derive(Default)]
pub struct MemoryStore {
    users: Mutex<HashMap<String, User>>,
    videos: Mutex<HashMap<String, Video>>,
    frames: Mutex<HashMap<String, BTreeMap<u64, FrameResult>>>,
    tracks: Mutex<HashMap<String, BTreeMap<u32, TrackProfile>>>,
    ledger: Mutex<Ledger>,
    /// Per operation: calls so far, and how many of the next ones fail.
    faults: Mutex<HashMap<StoreOperation, (u32, u32)>>,
    /// The chunk size [`ResultStore::frames_per_chunk`] reports (see [`MemoryStore::chunked`]).
    frames_per_chunk: Option<u64>,
    /// The frame numbers of each `put_frames` that succeeded, in call order.
    frame_writes: Mutex<Vec<Vec<u64>>>,
}

/// The writes of [`MemoryStore`] a test can make fail, as a throttled or unreachable database
/// would (see [`MemoryStore::fail_next`]), and whose calls it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreOperation {
    PutFrames,
    PutTracks,
    Checkpoint,
    FinishSegment,
}

/// The analysis bookkeeping, by video id.
#[derive(Default)]
struct Ledger {
    plans: HashMap<String, PlanEntry>,
    segments: HashMap<String, BTreeMap<u32, SegmentEntry>>,
}

struct PlanEntry {
    plan: AnalysisPlan,
    /// Video time and frames the checkpoints added up.
    covered_ms: u64,
    frames: u64,
    /// Indices of the segments counted done.
    done: BTreeSet<u32>,
    video: Option<VideoInfo>,
}

#[derive(Default)]
struct SegmentEntry {
    /// `None` once released cleanly; kept by a run that crashed.
    owner: Option<String>,
    /// `None`: not leased (released, done, or expired by [`MemoryStore::expire_leases`]).
    lease_until: Option<Instant>,
    attempts: u32,
    crashes: u32,
    checkpoint: Option<Checkpoint>,
    done: bool,
}

impl SegmentEntry {
    fn leased(&self, now: Instant) -> bool {
        self.lease_until.is_some_and(|until| until > now)
    }
}

/// When a lease taken now for `lease` runs out (a century for leases too long to add).
fn lease_end(lease: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(lease)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

impl MemoryStore {
    /// A store that reports chunks of `frames_per_chunk` frame numbers, as the DynamoDB store
    /// does, so that tests see the worker align its writes to them (frames are kept one by one
    /// all the same).
    pub fn chunked(frames_per_chunk: u64) -> Self {
        Self {
            frames_per_chunk: Some(frames_per_chunk),
            ..Self::default()
        }
    }

    /// The frame numbers each successful `put_frames` wrote, in call order.
    pub fn frame_writes(&self) -> Vec<Vec<u64>> {
        self.frame_writes.lock().unwrap().clone()
    }

    /// The next `times` calls of `operation` fail, changing nothing, with the error DynamoDB
    /// gives when throttled.
    pub fn fail_next(&self, operation: StoreOperation, times: u32) {
        self.faults.lock().unwrap().entry(operation).or_default().1 += times;
    }

    /// How many times `operation` was called, failed calls included.
    pub fn calls(&self, operation: StoreOperation) -> u32 {
        self.faults
            .lock()
            .unwrap()
            .get(&operation)
            .map_or(0, |(calls, _)| *calls)
    }

    /// Counts a call of `operation`, and fails it when asked to.
    fn enter(&self, operation: StoreOperation) -> StoreResult<()> {
        let mut faults = self.faults.lock().unwrap();
        let (calls, failures) = faults.entry(operation).or_default();
        *calls += 1;
        if *failures == 0 {
            return Ok(());
        }
        *failures -= 1;
        Err(StoreError::Backend(format!(
            "ProvisionedThroughputExceededException: {operation:?} failed as the test asked"
        )))
    }

    /// Every lease runs out now, as if its holder had vanished and the lease's time had passed:
    /// the next claim takes the segment over (counting each run that never released its lease
    /// as crashed). What a restart does to the SQLite ledger (`requeue_interrupted`); tests use
    /// it instead of waiting for a lease to expire.
    pub fn expire_leases(&self) {
        let mut ledger = self.ledger.lock().unwrap();
        for segment in ledger.segments.values_mut().flat_map(|s| s.values_mut()) {
            segment.lease_until = None;
        }
    }
}

#[async_trait]
impl UserStore for MemoryStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let mut users = self.users.lock().unwrap();
        if users
            .values()
            .any(|u| u.email.eq_ignore_ascii_case(&user.email))
        {
            return Err(StoreError::Conflict("email already registered".into()));
        }
        users.insert(user.id.clone(), user.clone());
        Ok(())
    }
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        Ok(self
            .users
            .lock()
            .unwrap()
            .values()
            .find(|u| u.email.eq_ignore_ascii_case(email))
            .cloned())
    }
    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        Ok(self.users.lock().unwrap().get(id).cloned())
    }
}

#[async_trait]
impl VideoStore for MemoryStore {
    async fn create_video(&self, video: &Video) -> StoreResult<()> {
        self.videos
            .lock()
            .unwrap()
            .insert(video.id.clone(), video.clone());
        Ok(())
    }
    async fn video(&self, id: &str) -> StoreResult<Option<Video>> {
        Ok(self.videos.lock().unwrap().get(id).cloned())
    }
    async fn videos_of(
        &self,
        user_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Video>> {
        let mut mine: Vec<Video> = self
            .videos
            .lock()
            .unwrap()
            .values()
            .filter(|v| v.user_id == user_id)
            .cloned()
            .collect();
        mine.sort_by(|a, b| (b.uploaded_at, &b.id).cmp(&(a.uploaded_at, &a.id)));
        let start = match cursor {
            None => 0,
            Some(c) => mine
                .iter()
                .position(|v| v.id == c)
                .map(|i| i + 1)
                .ok_or(StoreError::BadCursor)?,
        };
        let items: Vec<Video> = mine.iter().skip(start).take(limit).cloned().collect();
        let next = (start + limit < mine.len())
            .then(|| items.last().map(|v| v.id.clone()))
            .flatten();
        Ok(Page { items, next })
    }
    async fn set_title(&self, id: &str, title: &str) -> StoreResult<()> {
        self.videos
            .lock()
            .unwrap()
            .get_mut(id)
            .map(|v| v.title = title.to_string())
            .ok_or(StoreError::NotFound)
    }
    async fn set_analysis(&self, id: &str, state: &AnalysisState) -> StoreResult<()> {
        self.videos
            .lock()
            .unwrap()
            .get_mut(id)
            .map(|v| v.analysis = state.clone())
            .ok_or(StoreError::NotFound)
    }
    async fn record_upload(&self, id: &str, object: &StoredObject) -> StoreResult<UploadRecord> {
        let mut videos = self.videos.lock().unwrap();
        let Some(video) = videos.get_mut(id) else {
            return Ok(UploadRecord::Gone);
        };
        Ok(match &video.upload {
            None => {
                video.upload = Some(object.clone());
                UploadRecord::Recorded
            }
            Some(recorded) if recorded.same_as(object) => UploadRecord::Same,
            Some(recorded) => UploadRecord::Different(recorded.clone()),
        })
    }
    /// One step under the videos' lock: a worker's later ledger write finds its segment gone.
    async fn delete_video(&self, id: &str) -> StoreResult<()> {
        let mut videos = self.videos.lock().unwrap();
        videos.remove(id);
        let mut ledger = self.ledger.lock().unwrap();
        ledger.plans.remove(id);
        ledger.segments.remove(id);
        drop(ledger);
        self.frames.lock().unwrap().remove(id);
        self.tracks.lock().unwrap().remove(id);
        Ok(())
    }
}

#[async_trait]
impl AnalysisLedger for MemoryStore {
    async fn plan(&self, video_id: &str) -> StoreResult<Option<AnalysisPlan>> {
        Ok(self
            .ledger
            .lock()
            .unwrap()
            .plans
            .get(video_id)
            .map(|p| p.plan.clone()))
    }

    async fn start_analysis(
        &self,
        video_id: &str,
        plan: &AnalysisPlan,
    ) -> StoreResult<PlanDecision> {
        let mut videos = self.videos.lock().unwrap();
        let mut ledger = self.ledger.lock().unwrap();
        let Some(video) = videos.get_mut(video_id) else {
            return Ok(PlanDecision::Finished);
        };
        match video.analysis.status {
            VideoStatus::Pending => {}
            VideoStatus::Processing => {
                return Ok(match ledger.plans.get(video_id) {
                    Some(entry) => PlanDecision::Existing(entry.plan.clone()),
                    None => PlanDecision::Finished,
                });
            }
            VideoStatus::Completed | VideoStatus::Failed => return Ok(PlanDecision::Finished),
        }
        video.analysis.status = VideoStatus::Processing;
        video.analysis.progress = 0;
        video.analysis.error = None;
        video.analysis.frames_analyzed = 0;
        ledger.plans.insert(
            video_id.to_string(),
            PlanEntry {
                plan: plan.clone(),
                covered_ms: 0,
                frames: 0,
                done: BTreeSet::new(),
                video: None,
            },
        );
        Ok(PlanDecision::Recorded)
    }

    async fn claim_segment(
        &self,
        video_id: &str,
        index: u32,
        owner: &str,
        lease: Duration,
    ) -> StoreResult<SegmentClaim> {
        let mut ledger = self.ledger.lock().unwrap();
        let segment = ledger
            .segments
            .entry(video_id.to_string())
            .or_default()
            .entry(index)
            .or_default();
        if segment.done {
            return Ok(SegmentClaim::Done);
        }
        if segment.leased(Instant::now()) {
            return Ok(SegmentClaim::Busy);
        }
        // an owner that never released its lease: that run crashed or was killed
        if segment.owner.is_some() {
            segment.crashes += 1;
        }
        segment.owner = Some(owner.to_string());
        segment.lease_until = Some(lease_end(lease));
        segment.attempts += 1;
        Ok(SegmentClaim::Claimed {
            attempt: segment.attempts,
            checkpoint: segment.checkpoint,
            crashed_runs: segment.crashes,
        })
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
        self.enter(StoreOperation::Checkpoint)?;
        let mut videos = self.videos.lock().unwrap();
        let mut ledger = self.ledger.lock().unwrap();
        let Ledger { plans, segments } = &mut *ledger;
        let Some(segment) = segments.get_mut(video_id).and_then(|s| s.get_mut(&index)) else {
            return Ok(false);
        };
        // the video was deleted (its segments with it), or the lease was taken over
        if segment.done || segment.owner.as_deref() != Some(owner) || !videos.contains_key(video_id)
        {
            return Ok(false);
        }
        segment.checkpoint = Some(*checkpoint);
        segment.lease_until = Some(lease_end(lease));
        if let Some(entry) = plans.get_mut(video_id) {
            entry.covered_ms += progress.covered_ms;
            entry.frames += progress.frames;
            // the progress the API shows lives in the video's analysis state
            if let Some(video) = videos.get_mut(video_id)
                && video.analysis.status == VideoStatus::Processing
            {
                video.analysis.progress =
                    progress_percent(entry.covered_ms, entry.plan.duration_ms);
                video.analysis.frames_analyzed = entry.frames;
            }
        }
        Ok(true)
    }

    async fn release_segment(&self, video_id: &str, index: u32, owner: &str) -> StoreResult<()> {
        let mut ledger = self.ledger.lock().unwrap();
        if let Some(segment) = ledger
            .segments
            .get_mut(video_id)
            .and_then(|s| s.get_mut(&index))
            .filter(|s| s.owner.as_deref() == Some(owner))
        {
            segment.owner = None;
            segment.lease_until = None;
        }
        Ok(())
    }

    async fn finish_segment(
        &self,
        video_id: &str,
        index: u32,
        owner: Option<&str>,
        video: Option<&VideoInfo>,
    ) -> StoreResult<SegmentTally> {
        self.enter(StoreOperation::FinishSegment)?;
        let mut ledger = self.ledger.lock().unwrap();
        let Ledger { plans, segments } = &mut *ledger;
        let held = match owner {
            None => None,
            Some(owner) => match segments
                .get_mut(video_id)
                .and_then(|s| s.get_mut(&index))
                .filter(|s| s.owner.as_deref() == Some(owner))
            {
                Some(segment) => Some(segment),
                None => return Err(StoreError::Conflict("the segment's lease was lost".into())),
            },
        };
        // both writes or neither, as in SQLite's transaction
        let entry = plans.get_mut(video_id).ok_or(StoreError::NotFound)?;
        if let Some(segment) = held {
            segment.done = true;
            segment.lease_until = None;
        }
        entry.done.insert(index);
        if let Some(v) = video {
            entry.video = Some(v.clone());
        }
        Ok(SegmentTally {
            done: entry.done.len() as u32,
            total: entry.plan.segments.len() as u32,
            video: entry.video.clone(),
        })
    }

    async fn segments(&self, video_id: &str) -> StoreResult<Vec<SegmentStatus>> {
        let now = Instant::now();
        Ok(self
            .ledger
            .lock()
            .unwrap()
            .segments
            .get(video_id)
            .map(|segments| {
                segments
                    .iter()
                    .map(|(&index, s)| SegmentStatus {
                        index,
                        done: s.done,
                        leased: s.leased(now),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn end_analysis(&self, video_id: &str, state: &AnalysisState) -> StoreResult<bool> {
        let mut videos = self.videos.lock().unwrap();
        match videos.get_mut(video_id) {
            Some(video) if !video.analysis.status.is_final() => {
                video.analysis = state.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl ResultStore for MemoryStore {
    async fn put_frames(&self, video_id: &str, frames: &[FrameResult]) -> StoreResult<()> {
        self.enter(StoreOperation::PutFrames)?;
        let mut all = self.frames.lock().unwrap();
        let mine = all.entry(video_id.to_string()).or_default();
        for f in frames {
            mine.insert(f.frame, f.clone());
        }
        self.frame_writes
            .lock()
            .unwrap()
            .push(frames.iter().map(|f| f.frame).collect());
        Ok(())
    }
    fn frames_per_chunk(&self) -> Option<u64> {
        self.frames_per_chunk
    }
    async fn frames(
        &self,
        video_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<(Vec<FrameResult>, Option<u64>)> {
        let all = self.frames.lock().unwrap();
        let Some(mine) = all.get(video_id) else {
            return Ok((Vec::new(), None));
        };
        let mut rest = mine.values().filter(|f| after.is_none_or(|a| f.frame > a));
        let page: Vec<FrameResult> = rest.by_ref().take(limit).cloned().collect();
        let next = rest.next().and(page.last().map(|f| f.frame));
        Ok((page, next))
    }
    async fn put_tracks(&self, video_id: &str, tracks: &[TrackProfile]) -> StoreResult<()> {
        self.enter(StoreOperation::PutTracks)?;
        let mut all = self.tracks.lock().unwrap();
        let mine = all.entry(video_id.to_string()).or_default();
        for t in tracks {
            mine.insert(t.track, t.clone());
        }
        Ok(())
    }
    async fn tracks(&self, video_id: &str) -> StoreResult<Vec<TrackProfile>> {
        Ok(self
            .tracks
            .lock()
            .unwrap()
            .get(video_id)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }
    async fn delete_frames(&self, video_id: &str) -> StoreResult<()> {
        self.frames.lock().unwrap().remove(video_id);
        self.tracks.lock().unwrap().remove(video_id);
        Ok(())
    }
}

/// Blobs in a map; URLs are fake but shaped like the real ones.
#[derive(Default)]
pub struct MemoryBlobs {
    pub objects: Mutex<HashMap<String, Vec<u8>>>,
    /// The Content-Type `put_object` stored each object with.
    pub content_types: Mutex<HashMap<String, String>>,
}

#[async_trait]
impl BlobStore for MemoryBlobs {
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        content_length: Option<u64>,
        expires_in: Duration,
    ) -> StoreResult<PresignedUpload> {
        let length = content_length.map_or(String::new(), |n| format!("&content-length={n}"));
        Ok(PresignedUpload {
            url: format!("https://blobs.example/{key}?content-type={content_type}{length}"),
            expires_at: Utc::now() + chrono::Duration::from_std(expires_in).unwrap_or_default(),
        })
    }
    async fn presign_get(
        &self,
        key: &str,
        _version: Option<&str>,
        _expires_in: Duration,
    ) -> StoreResult<String> {
        Ok(format!("https://blobs.example/{key}"))
    }
    async fn stat(&self, key: &str, _version: Option<&str>) -> StoreResult<Option<StoredObject>> {
        Ok(self.objects.lock().unwrap().get(key).map(|b| StoredObject {
            size: b.len() as u64,
            etag: None,
            version_id: None,
        }))
    }
    async fn locate(&self, _key: &str, object: &StoredObject) -> StoreResult<Option<StoredObject>> {
        Ok(Some(object.clone()))
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }
    async fn delete_version(&self, _key: &str, _version: &str) -> StoreResult<()> {
        Ok(())
    }
    async fn put_object(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> StoreResult<()> {
        self.objects.lock().unwrap().insert(key.to_string(), bytes);
        self.content_types
            .lock()
            .unwrap()
            .insert(key.to_string(), content_type.to_string());
        Ok(())
    }
    async fn get_object(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.objects.lock().unwrap().get(key).cloned())
    }
    async fn delete_prefix(&self, prefix: &str) -> StoreResult<()> {
        self.objects
            .lock()
            .unwrap()
            .retain(|key, _| !key.starts_with(prefix));
        self.content_types
            .lock()
            .unwrap()
            .retain(|key, _| !key.starts_with(prefix));
        Ok(())
    }
    async fn analysis_source(
        &self,
        key: &str,
        version: Option<&str>,
        expires_in: Duration,
    ) -> StoreResult<MediaSource> {
        Ok(MediaSource::Url(
            self.presign_get(key, version, expires_in).await?,
        ))
    }
}

/// Fixed-window counters in a map: exact for one process, which is all `deepemotion serve` is.
#[derive(Default)]
pub struct MemoryRateLimiter {
    /// key → (the end of its current window in ms since the epoch, attempts in it)
    windows: Mutex<HashMap<String, (u64, u32)>>,
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn hit(
        &self,
        key: &str,
        cost: u32,
        limit: u32,
        window: Duration,
    ) -> StoreResult<RateDecision> {
        let window = RateWindow::now(window);
        let mut windows = self.windows.lock().unwrap();
        if windows.len() > 100_000 {
            // forget finished windows so a flood of distinct keys cannot grow the map for ever
            windows.retain(|_, (ends, _)| *ends > window.now_ms);
        }
        let entry = windows
            .entry(key.to_string())
            .or_insert((window.ends_ms, 0));
        if entry.0 != window.ends_ms {
            *entry = (window.ends_ms, 0);
        }
        entry.1 = entry.1.saturating_add(cost);
        Ok(window.decide(u64::from(entry.1), cost, limit))
    }
}

/// Records queued jobs.
#[derive(Default)]
pub struct MemoryQueue {
    pub jobs: Mutex<Vec<AnalysisJob>>,
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn enqueue(&self, job: AnalysisJob) -> StoreResult<()> {
        self.jobs.lock().unwrap().push(job);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_fail_when_asked_and_change_nothing() {
        let store = MemoryStore::default();
        let frame = FrameResult {
            frame: 3,
            t_ms: 120,
            faces: vec![],
        };
        store.fail_next(StoreOperation::PutFrames, 2);
        for _ in 0..2 {
            assert!(matches!(
                store.put_frames("v1", std::slice::from_ref(&frame)).await,
                Err(StoreError::Backend(_))
            ));
        }
        assert!(store.frames("v1", None, 10).await.unwrap().0.is_empty());
        store
            .put_frames("v1", std::slice::from_ref(&frame))
            .await
            .unwrap();
        assert_eq!(store.frames("v1", None, 10).await.unwrap().0, vec![frame]);
        assert_eq!(store.calls(StoreOperation::PutFrames), 3);
        assert_eq!(store.calls(StoreOperation::Checkpoint), 0);
    }

    #[tokio::test]
    async fn blobs_put_get_and_delete_by_prefix() {
        let blobs = MemoryBlobs::default();
        assert_eq!(
            blobs.get_object("results/v1/people/1.jpg").await.unwrap(),
            None
        );
        for key in [
            "results/v1/people/1.jpg",
            "results/v1/people/2.jpg",
            "results/v10/people/1.jpg",
        ] {
            blobs
                .put_object(key, key.as_bytes().to_vec(), "image/jpeg")
                .await
                .unwrap();
        }
        blobs
            .put_object("results/v1/people/1.jpg", b"new".to_vec(), "image/jpeg")
            .await
            .unwrap();
        assert_eq!(
            blobs
                .get_object("results/v1/people/1.jpg")
                .await
                .unwrap()
                .as_deref(),
            Some(&b"new"[..]),
            "a put replaces"
        );
        assert_eq!(
            blobs.content_types.lock().unwrap()["results/v1/people/2.jpg"],
            "image/jpeg"
        );
        blobs.delete_prefix("results/v1/").await.unwrap();
        blobs.delete_prefix("results/nothing/").await.unwrap();
        assert_eq!(
            blobs.get_object("results/v1/people/1.jpg").await.unwrap(),
            None
        );
        assert_eq!(
            blobs.get_object("results/v1/people/2.jpg").await.unwrap(),
            None
        );
        assert!(
            blobs
                .get_object("results/v10/people/1.jpg")
                .await
                .unwrap()
                .is_some(),
            "outside the prefix"
        );
    }
}

/// Webhook endpoints, callback signing secrets and deliveries in maps: the fake of
/// [`WebhookStore`], and what [`crate::webhook_contract`] checks itself against.
#[derive(Default)]
pub struct MemoryWebhooks {
    endpoints: Mutex<Vec<WebhookEndpoint>>,
    secrets: Mutex<HashMap<String, String>>,
    deliveries: Mutex<Vec<Delivery>>,
}

impl MemoryWebhooks {
    /// Every delivery, oldest first (for tests that look at all of them).
    pub fn all_deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }
}

#[async_trait]
impl WebhookStore for MemoryWebhooks {
    async fn create_endpoint(&self, endpoint: &WebhookEndpoint) -> StoreResult<()> {
        let mut endpoints = self.endpoints.lock().unwrap();
        if endpoints.iter().any(|e| e.id == endpoint.id) {
            return Err(StoreError::Conflict("endpoint id taken".into()));
        }
        endpoints.push(endpoint.clone());
        Ok(())
    }

    async fn endpoint(&self, user_id: &str, id: &str) -> StoreResult<Option<WebhookEndpoint>> {
        Ok(self
            .endpoints
            .lock()
            .unwrap()
            .iter()
            .find(|e| e.id == id && e.user_id == user_id)
            .cloned())
    }

    async fn endpoints_of(&self, user_id: &str) -> StoreResult<Vec<WebhookEndpoint>> {
        let mut mine: Vec<WebhookEndpoint> = self
            .endpoints
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.user_id == user_id)
            .cloned()
            .collect();
        mine.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(mine)
    }

    async fn update_endpoint(&self, endpoint: &WebhookEndpoint) -> StoreResult<()> {
        let mut endpoints = self.endpoints.lock().unwrap();
        let stored = endpoints
            .iter_mut()
            .find(|e| e.id == endpoint.id && e.user_id == endpoint.user_id)
            .ok_or(StoreError::NotFound)?;
        *stored = endpoint.clone();
        Ok(())
    }

    async fn delete_endpoint(&self, user_id: &str, id: &str) -> StoreResult<bool> {
        let mut endpoints = self.endpoints.lock().unwrap();
        let before = endpoints.len();
        endpoints.retain(|e| !(e.id == id && e.user_id == user_id));
        let deleted = endpoints.len() < before;
        if deleted {
            self.deliveries
                .lock()
                .unwrap()
                .retain(|d| !(d.log == id && d.user_id == user_id));
        }
        Ok(deleted)
    }

    async fn signing_secret(&self, user_id: &str) -> StoreResult<Option<String>> {
        Ok(self.secrets.lock().unwrap().get(user_id).cloned())
    }

    async fn put_signing_secret(
        &self,
        user_id: &str,
        sealed: &str,
        replace: bool,
    ) -> StoreResult<String> {
        let mut secrets = self.secrets.lock().unwrap();
        if replace || !secrets.contains_key(user_id) {
            secrets.insert(user_id.to_string(), sealed.to_string());
        }
        Ok(secrets[user_id].clone())
    }

    async fn create_delivery(&self, delivery: &Delivery) -> StoreResult<bool> {
        let mut deliveries = self.deliveries.lock().unwrap();
        if deliveries.iter().any(|d| d.id == delivery.id) {
            return Ok(false);
        }
        deliveries.push(delivery.clone());
        Ok(true)
    }

    async fn delivery(&self, id: &str) -> StoreResult<Option<Delivery>> {
        Ok(self
            .deliveries
            .lock()
            .unwrap()
            .iter()
            .find(|d| d.id == id)
            .cloned())
    }

    async fn replace_delivery(
        &self,
        delivery: &Delivery,
        expected_version: u64,
    ) -> StoreResult<bool> {
        let mut deliveries = self.deliveries.lock().unwrap();
        match deliveries.iter_mut().find(|d| d.id == delivery.id) {
            Some(stored) if stored.version == expected_version => {
                *stored = delivery.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn deliveries(
        &self,
        user_id: &str,
        log: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Delivery>> {
        let mut mine: Vec<Delivery> = self
            .deliveries
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.user_id == user_id && d.log == log)
            .cloned()
            .collect();
        // newest first; the cursor is the position after which the next page starts
        mine.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        let start = match cursor {
            Some(c) => c.parse::<usize>().map_err(|_| StoreError::BadCursor)?,
            None => 0,
        };
        let items: Vec<Delivery> = mine.iter().skip(start).take(limit).cloned().collect();
        let end = start + items.len();
        let next = (end < mine.len()).then(|| end.to_string());
        Ok(Page { items, next })
    }
}

/// Records what was queued, and when it is due: the fake of [`DeliveryQueue`].
#[derive(Default)]
pub struct MemoryDeliveryQueue {
    queued: Mutex<Vec<(String, chrono::DateTime<Utc>)>>,
}

impl MemoryDeliveryQueue {
    /// Everything queued so far, oldest first, and empties the queue.
    pub fn take(&self) -> Vec<(String, chrono::DateTime<Utc>)> {
        std::mem::take(&mut *self.queued.lock().unwrap())
    }
}

#[async_trait]
impl DeliveryQueue for MemoryDeliveryQueue {
    async fn enqueue(&self, delivery_id: &str, due: chrono::DateTime<Utc>) -> StoreResult<()> {
        self.queued
            .lock()
            .unwrap()
            .push((delivery_id.to_string(), due));
        Ok(())
    }
}
