//! The analysis worker: turns an upload event (or one segment of a long video) into stored
//! results. The analysis Lambda runs it on SQS messages; the local server runs the same code on
//! its in-process queue.
//!
//! Safe to run twice, in parallel, and after a crash:
//! - the first worker to see an upload records a plan (one segment, or several for a long video,
//!   each then its own queue message) and moves the video to `PROCESSING`;
//! - a segment is run under a lease (owner + expiry, renewed at every checkpoint); a live lease
//!   held by someone else makes the message fail so the queue retries it later, an expired one
//!   is taken over and the run resumes from the last checkpoint;
//! - frame results are keyed by frame number, so rewriting a frame never duplicates it;
//! - the worker that finishes the last segment assembles the summary from the stored frames and
//!   writes `COMPLETED`, only if the video is still `PROCESSING`.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chrono::Utc;
use tokio::runtime::Handle;
use tracing::Instrument;

use domain::assembly::{PeopleSink, RunSummary};
use domain::ports::{
    AnalysisJob, AnalysisLedger, BlobStore, JobQueue, PlanDecision, ProgressDelta, ResultStore,
    SegmentClaim, SegmentTally, StoreError, StoreResult, UploadRecord, VideoStore,
};
use domain::webhooks::{DeliveryQueue, WebhookStore};
use domain::{
    AnalysisError, AnalysisOptions, AnalysisPlan, AnalysisSink, AnalysisState, Checkpoint,
    DecodeWindow, FrameResult, MediaSource, SegmentPlan, SinkError, StoredObject, Summary,
    TrackProfile, Video, VideoAnalyzer, VideoInfo, VideoStatus, parse_object_key,
};

/// What became of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// The video is analysed; this worker wrote the summary.
    Completed { frames: u64 },
    /// One segment of several is done; others are still running.
    SegmentDone { index: u32, done: u32, total: u32 },
    /// The deadline came first: progress is saved and the rest of the segment is queued again.
    Continued { index: u32 },
    /// The input was bad (not a video, truncated, too long...): recorded on the video as
    /// `FAILED`, not worth a retry.
    Rejected { error: String },
    /// Nothing to do: unknown key, deleted video, already analysed, or the lease was lost.
    Skipped { reason: String },
}

/// A failure worth retrying: the queue should deliver the message again later.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("segment {0} is being analysed by another worker")]
    Busy(u32),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("analysis failed: {0}")]
    Analysis(String),
}

/// Worker settings, read once at start-up.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// How long a segment's lease lasts; renewed at every checkpoint
    /// (`DEEPEMOTION_LEASE_SECONDS`, default 120).
    pub lease: Duration,
    /// Progress is saved (and the lease renewed) at most this often
    /// (`DEEPEMOTION_CHECKPOINT_SECONDS`, default 3).
    pub checkpoint_every: Duration,
    /// Videos longer than this many seconds of video are split into segments that run in
    /// parallel (`DEEPEMOTION_SEGMENT_SECONDS`, default 600).
    pub segment_seconds: f64,
    /// Analysed frames per second one worker sustains, to plan segments that fit before the
    /// deadline (`DEEPEMOTION_PLANNING_FPS`, default 80: half the 2-core benchmark figure).
    pub planning_fps: f64,
    /// A run stops this long before its deadline to save its checkpoint and queue the rest
    /// (`DEEPEMOTION_DEADLINE_MARGIN_SECONDS`, default 20).
    pub deadline_margin: Duration,
    /// Longer videos are rejected (`DEEPEMOTION_MAX_VIDEO_SECONDS`, default 4 hours).
    pub max_video: Duration,
    /// Lifetime of the URL ffmpeg reads the upload through (default 2 hours).
    pub source_ttl: Duration,
    /// A segment whose runs crashed, panicked or were killed this many times (without giving
    /// their lease back) is not run again: the video ends `FAILED` "analysis failed repeatedly"
    /// and the message is acknowledged (`DEEPEMOTION_MAX_CRASHED_RUNS`, default 3). Runs that
    /// stopped for a store or network error released their lease and do not count.
    pub max_crashed_runs: u32,
    /// Niceness of the threads that run the engine (Linux; the engine's stage threads and its
    /// ffmpeg inherit it). 0 on Lambda, where nothing else runs; `deepemotion serve` raises it
    /// so that requests get the cores first.
    pub engine_nice: i32,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(120),
            checkpoint_every: Duration::from_secs(3),
            segment_seconds: 600.0,
            planning_fps: 80.0,
            deadline_margin: Duration::from_secs(20),
            max_video: Duration::from_secs(4 * 3600),
            source_ttl: Duration::from_secs(2 * 3600),
            max_crashed_runs: 3,
            engine_nice: 0,
        }
    }
}

impl WorkerConfig {
    /// Reads the `DEEPEMOTION_*` variables above over the defaults.
    pub fn from_env() -> Result<Self, String> {
        let defaults = Self::default();
        let number = |name: &str, default: f64| -> Result<f64, String> {
            match std::env::var(name).ok().filter(|v| !v.is_empty()) {
                None => Ok(default),
                Some(v) => v
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite() && *n > 0.0)
                    .ok_or_else(|| format!("{name}={v:?} must be a positive number")),
            }
        };
        let seconds = |name: &str, default: Duration| -> Result<Duration, String> {
            number(name, default.as_secs_f64()).map(Duration::from_secs_f64)
        };
        Ok(Self {
            lease: seconds("DEEPEMOTION_LEASE_SECONDS", defaults.lease)?,
            checkpoint_every: seconds("DEEPEMOTION_CHECKPOINT_SECONDS", defaults.checkpoint_every)?,
            segment_seconds: number("DEEPEMOTION_SEGMENT_SECONDS", defaults.segment_seconds)?,
            planning_fps: number("DEEPEMOTION_PLANNING_FPS", defaults.planning_fps)?,
            deadline_margin: seconds(
                "DEEPEMOTION_DEADLINE_MARGIN_SECONDS",
                defaults.deadline_margin,
            )?,
            max_video: seconds("DEEPEMOTION_MAX_VIDEO_SECONDS", defaults.max_video)?,
            source_ttl: defaults.source_ttl,
            max_crashed_runs: number(
                "DEEPEMOTION_MAX_CRASHED_RUNS",
                f64::from(defaults.max_crashed_runs),
            )? as u32,
            engine_nice: defaults.engine_nice,
        })
    }
}

pub struct AnalysisWorker {
    pub videos: Arc<dyn VideoStore>,
    pub ledger: Arc<dyn AnalysisLedger>,
    pub results: Arc<dyn ResultStore>,
    pub blobs: Arc<dyn BlobStore>,
    /// Where segments of long videos (and continuations) are queued.
    pub jobs: Arc<dyn JobQueue>,
    /// Webhook endpoints and deliveries: the end of an analysis is announced through them.
    pub webhooks: Arc<dyn WebhookStore>,
    pub deliveries: Arc<dyn DeliveryQueue>,
    pub analyzer: Arc<dyn VideoAnalyzer>,
    pub config: WorkerConfig,
}

/// Frames are written in batches of this many, when the store keeps them one by one (a store
/// that keeps chunks of frames is written a chunk at a time instead).
const BATCH: usize = 50;
/// Attempts at one batch write before the run gives up (and the message is retried).
const WRITE_ATTEMPTS: u32 = 4;

fn remaining(deadline: Option<SystemTime>) -> Option<Duration> {
    deadline.map(|d| d.duration_since(SystemTime::now()).unwrap_or_default())
}

/// ffmpeg errors that mean the network, not the file, failed: worth a retry.
fn network_trouble(e: &AnalysisError) -> bool {
    let text = e.to_string();
    [
        "Server returned 5",
        "Connection reset",
        "Connection refused",
        "Connection timed out",
        "Network is unreachable",
        "End of file while parsing",
        "HTTP error 5",
        "Server returned 403",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// Errors a retry can cure without the input or the code changing: the store was throttled
/// or unreachable, or ffmpeg lost the network. The run gives its lease back, so the retry is not
/// counted as a crashed run.
fn transient(e: &AnalysisError) -> bool {
    matches!(e, AnalysisError::Sink(_)) || network_trouble(e)
}

/// Redeliveries of one failed job on the local queue before it waits for the next start (SQS's
/// `maxReceiveCount` plays this part on AWS).
const LOCAL_REDELIVERIES: u32 = 8;

impl AnalysisWorker {
    /// Feeds the one-machine server's in-process queue to the worker, `at_once` jobs at a time
    /// (each in its own task; the engine runs on threads of its own, never on the runtime's
    /// workers), and redelivers failed jobs as SQS would: a crashed run after its lease
    /// has expired (so the retry counts it against `max_crashed_runs`), a store error after a
    /// growing backoff. Jobs beyond `at_once` wait in the queue, in order.
    pub async fn serve_queue(
        self: Arc<Self>,
        mut jobs: tokio::sync::mpsc::UnboundedReceiver<AnalysisJob>,
        redeliver: Arc<dyn JobQueue>,
        at_once: NonZeroUsize,
    ) {
        let slots = Arc::new(tokio::sync::Semaphore::new(at_once.get()));
        let failures: Arc<Mutex<Failures>> = Arc::default();
        loop {
            // a free slot first, then a job: waiting jobs stay in the queue, not in tasks
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let Some(job) = jobs.recv().await else {
                return;
            };
            let (worker, failures, redeliver) = (self.clone(), failures.clone(), redeliver.clone());
            tokio::spawn(async move {
                let result = worker.handle(&job, None).await;
                drop(slot);
                worker.after_local_job(job, result, &failures, redeliver);
            });
        }
    }

    /// Counts a local job's failure and schedules its redelivery (see [`Self::serve_queue`]).
    fn after_local_job(
        &self,
        job: AnalysisJob,
        result: Result<JobOutcome, WorkerError>,
        failures: &Mutex<Failures>,
        redeliver: Arc<dyn JobQueue>,
    ) {
        let id = (job.key.clone(), job.segment);
        let mut failures = failures.lock().unwrap_or_else(|p| p.into_inner());
        let Err(error) = result else {
            failures.remove(&id);
            return;
        };
        let count = failures.entry(id.clone()).or_default();
        *count += 1;
        if *count > LOCAL_REDELIVERIES {
            failures.remove(&id);
            tracing::error!(key = %job.key, error = %error, "job failed repeatedly; it resumes at the next start");
            return;
        }
        let delay = match error {
            WorkerError::Store(_) => Duration::from_secs(5 << (*count - 1).min(6)),
            // the lease must have expired for the retry to take the segment over
            WorkerError::Busy(_) | WorkerError::Analysis(_) => {
                self.config.lease + Duration::from_secs(1)
            }
        };
        tracing::warn!(key = %job.key, retry_in = ?delay, "job will be retried");
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = redeliver.enqueue(job).await;
        });
    }
}

/// Failed deliveries of each local job (key, segment) since its last success.
type Failures = std::collections::HashMap<(String, Option<u32>), u32>;

/// The outcome that records a failure as the uploader should read it.
const FAILED_REPEATEDLY: &str =
    "analysis failed repeatedly; upload the video again, or report it if it keeps failing";

/// The stores, blobs and queue a worker uses, whichever backend implements them.
pub struct WorkerPorts {
    pub videos: Arc<dyn VideoStore>,
    pub ledger: Arc<dyn AnalysisLedger>,
    pub results: Arc<dyn ResultStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub jobs: Arc<dyn JobQueue>,
    pub webhooks: Arc<dyn WebhookStore>,
    pub deliveries: Arc<dyn DeliveryQueue>,
}

impl AnalysisWorker {
    /// The one way both backends build the worker.
    pub fn new(ports: WorkerPorts, analyzer: Arc<dyn VideoAnalyzer>, config: WorkerConfig) -> Self {
        let WorkerPorts {
            videos,
            ledger,
            results,
            blobs,
            jobs,
            webhooks,
            deliveries,
        } = ports;
        Self {
            videos,
            ledger,
            results,
            blobs,
            jobs,
            webhooks,
            deliveries,
            analyzer,
            config,
        }
    }

    /// Handles one job, and logs what became of it. `deadline` is the Lambda invocation's;
    /// `None` runs to the end.
    pub async fn handle(
        &self,
        job: &AnalysisJob,
        deadline: Option<SystemTime>,
    ) -> Result<JobOutcome, WorkerError> {
        // every line about this job carries the video and its owner (the key names both)
        let span = match parse_object_key(&job.key) {
            Some((user_id, video_id)) => {
                tracing::info_span!("job", video_id, user_id, segment = ?job.segment)
            }
            None => tracing::info_span!("job", key = %job.key),
        };
        let result = self
            .handle_unlogged(job, deadline)
            .instrument(span.clone())
            .await;
        let _in_job = span.enter();
        match &result {
            Ok(JobOutcome::Skipped { reason }) => {
                tracing::info!(key = %job.key, segment = ?job.segment, %reason, "job skipped")
            }
            Ok(outcome) => {
                tracing::info!(key = %job.key, segment = ?job.segment, ?outcome, "job done")
            }
            Err(e) => {
                tracing::warn!(key = %job.key, segment = ?job.segment, error = %e, "job failed")
            }
        }
        result
    }

    async fn handle_unlogged(
        &self,
        job: &AnalysisJob,
        deadline: Option<SystemTime>,
    ) -> Result<JobOutcome, WorkerError> {
        let skipped = |reason: String| Ok(JobOutcome::Skipped { reason });
        let Some((_, video_id)) = parse_object_key(&job.key) else {
            return skipped(format!("not an upload key: {}", job.key));
        };
        let Some(video) = self.videos.video(video_id).await? else {
            // an upload to the URL of a deleted video: nothing may stay behind
            self.remove_leftovers(video_id, &job.key).await?;
            return skipped("no such video (deleted?); its object and results are removed".into());
        };
        if video.s3_key != job.key {
            return skipped("key does not match the video".into());
        }
        let upload = match self.settle_upload(&video, job).await? {
            Ok(upload) => upload,
            Err(outcome) => return Ok(outcome),
        };
        if video.analysis.status.is_final() {
            // a run that ended the video may have died before queueing its webhooks
            self.announce(&video.id).await?;
            return skipped(format!("already {}", video.analysis.status.as_str()));
        }
        let plan = self.ledger.plan(&video.id).await?;
        if job.segment.is_some() && plan.is_none() {
            return skipped("no plan recorded for this segment".into());
        }
        if let Some(plan) = &plan
            && job.segment.is_none()
            && plan.segments.len() > 1
        {
            self.dispatch_segments(&video, plan).await?;
        }

        // The lease covers probing and planning too: a file that crashes the probe is counted
        // like one that crashes the analysis.
        let index = job.segment.unwrap_or(0);
        let owner = uuid::Uuid::new_v4().to_string();
        let (attempt, checkpoint, crashed_runs) = match self
            .ledger
            .claim_segment(&video.id, index, &owner, self.config.lease)
            .await?
        {
            SegmentClaim::Busy => return Err(WorkerError::Busy(index)),
            SegmentClaim::Done => {
                let Some(plan) = &plan else {
                    return skipped("segment done without a plan".into());
                };
                // a crash may have come between marking it done and counting it
                let tally = self
                    .ledger
                    .finish_segment(&video.id, index, None, None)
                    .await?;
                return self
                    .assemble_if_last(&video, plan, index, tally, None)
                    .await;
            }
            SegmentClaim::Claimed {
                attempt,
                checkpoint,
                crashed_runs,
            } => (attempt, checkpoint, crashed_runs),
        };
        let lease = Lease {
            video_id: video.id.clone(),
            index,
            owner,
        };
        if crashed_runs >= self.config.max_crashed_runs {
            tracing::error!(video_id = %video.id, segment = index, crashed_runs,
                "the analysis crashed too often; giving up");
            return self.reject(&lease, FAILED_REPEATEDLY.to_string(), 0).await;
        }
        let outcome = self
            .claimed(&video, &upload, plan, &lease, attempt, checkpoint, deadline)
            .await;
        if let Err(WorkerError::Store(_)) = &outcome {
            // worth a retry, and not a crash: give the lease back so it is not counted
            let _ = self.release(&lease).await;
        }
        outcome
    }

    /// Runs a claimed segment: checks the object, plans the analysis if nobody has, analyses.
    #[allow(clippy::too_many_arguments)]
    async fn claimed(
        &self,
        video: &Video,
        upload: &StoredObject,
        plan: Option<AnalysisPlan>,
        lease: &Lease,
        attempt: u32,
        checkpoint: Option<Checkpoint>,
        deadline: Option<SystemTime>,
    ) -> Result<JobOutcome, WorkerError> {
        match self
            .blobs
            .stat(&video.s3_key, upload.version_id.as_deref())
            .await?
        {
            Some(stored) if stored.same_as(upload) => {}
            found => {
                let error = match found {
                    None => "the uploaded file is no longer stored",
                    Some(_) => "the stored file is not the one that was uploaded",
                };
                tracing::warn!(video_id = %video.id, ?found, recorded = ?upload, "object check failed");
                return self.reject(lease, error.to_string(), 0).await;
            }
        }
        let source = self
            .blobs
            .analysis_source(
                &video.s3_key,
                upload.version_id.as_deref(),
                self.config.source_ttl,
            )
            .await?;
        let plan = match plan {
            Some(plan) => plan,
            None => match self.plan(video, &source, lease, deadline).await? {
                Ok(plan) => plan,
                Err(outcome) => return Ok(outcome),
            },
        };
        let Some(segment) = plan.segment(lease.index).copied() else {
            self.release(lease).await?;
            return Ok(JobOutcome::Skipped {
                reason: format!("the plan has no segment {}", lease.index),
            });
        };
        self.run_segment(
            video, &plan, segment, &source, lease, attempt, checkpoint, deadline,
        )
        .await
    }

    /// Which object this job is about. An upload event's object is recorded on the video the
    /// first time; a different object at the same key (a second PUT to a used upload URL) is
    /// removed where the store keeps versions, and never analysed or streamed. Jobs the service
    /// queued itself use the recorded object. `Err(outcome)` when there is nothing to analyse.
    async fn settle_upload(
        &self,
        video: &Video,
        job: &AnalysisJob,
    ) -> Result<Result<StoredObject, JobOutcome>, WorkerError> {
        let skipped = |reason: &str| {
            Ok(Err(JobOutcome::Skipped {
                reason: reason.to_string(),
            }))
        };
        let reported = match (&job.object, job.segment) {
            (_, Some(_)) => None,
            (Some(object), None) if object.version_id.is_none() => {
                // pin the version the event is about, not whatever is current now
                match self.blobs.locate(&job.key, object).await? {
                    Some(located) => Some(located),
                    None => {
                        return skipped("the object the event names is no longer stored");
                    }
                }
            }
            (Some(object), None) => {
                // the version the event names, as the store has it
                match self
                    .blobs
                    .stat(&job.key, object.version_id.as_deref())
                    .await?
                {
                    Some(stored) => Some(stored),
                    None => return skipped("the object the event names is no longer stored"),
                }
            }
            (None, None) => self.blobs.stat(&job.key, None).await?,
        };
        let Some(reported) = reported else {
            return match &video.upload {
                Some(recorded) => Ok(Ok(recorded.clone())),
                None => skipped("nothing has been uploaded yet"),
            };
        };
        match self.videos.record_upload(&video.id, &reported).await? {
            UploadRecord::Recorded => {
                tracing::info!(video_id = %video.id, object = ?reported, "upload recorded");
                Ok(Ok(reported))
            }
            UploadRecord::Same => Ok(Ok(video.upload.clone().unwrap_or(reported))),
            UploadRecord::Different(recorded) => {
                if let Some(version) = reported
                    .version_id
                    .as_deref()
                    .filter(|v| Some(*v) != recorded.version_id.as_deref())
                {
                    self.blobs.delete_version(&job.key, version).await?;
                }
                tracing::warn!(video_id = %video.id, ?recorded, discarded = ?reported,
                    "a second upload to a used upload URL was discarded");
                skipped("a second upload to the same upload URL was discarded")
            }
            UploadRecord::Gone => {
                self.remove_leftovers(&video.id, &job.key).await?;
                skipped("the video was deleted")
            }
        }
    }

    /// After a DELETE: the object (every version) and any result a worker wrote after the
    /// delete swept them.
    async fn remove_leftovers(&self, video_id: &str, key: &str) -> Result<(), WorkerError> {
        self.results.delete_frames(video_id).await?;
        self.blobs
            .delete_prefix(&domain::results_prefix(video_id))
            .await?;
        self.blobs.delete(key).await?;
        Ok(())
    }

    /// When a ledger write found the video's bookkeeping gone: if the video was deleted, removes
    /// what this run wrote after the delete. True when it was deleted.
    async fn cleanup_if_deleted(&self, video: &Video) -> Result<bool, WorkerError> {
        if self.videos.video(&video.id).await?.is_some() {
            return Ok(false);
        }
        tracing::info!(video_id = %video.id, "the video was deleted during its analysis; removing its results");
        self.remove_leftovers(&video.id, &video.s3_key).await?;
        Ok(true)
    }

    /// What a run needs to announce progress, if the owner has an endpoint that takes
    /// `video.progress` (a failure to look only means no progress is announced).
    async fn progress_webhooks(&self, video: &Video) -> Option<ProgressWebhooks> {
        let endpoints = self.webhooks.endpoints_of(&video.user_id).await;
        let wanted = endpoints.ok()?.iter().any(|e| {
            e.events
                .contains(&domain::webhooks::WebhookEvent::VideoProgress)
        });
        wanted.then(|| ProgressWebhooks {
            videos: self.videos.clone(),
            webhooks: self.webhooks.clone(),
            deliveries: self.deliveries.clone(),
            announced: None,
        })
    }

    /// Queues the webhook deliveries announcing how the video ended, from its stored final
    /// state. Safe to repeat: deliveries already made are not made again.
    async fn announce(&self, video_id: &str) -> Result<(), WorkerError> {
        let Some(video) = self.videos.video(video_id).await? else {
            return Ok(());
        };
        domain::webhooks::queue_video_notifications(
            &*self.webhooks,
            &*self.deliveries,
            &video,
            &video.analysis,
        )
        .await?;
        Ok(())
    }

    async fn release(&self, lease: &Lease) -> Result<(), WorkerError> {
        self.ledger
            .release_segment(&lease.video_id, lease.index, &lease.owner)
            .await?;
        Ok(())
    }

    /// Records `FAILED` with `error` (acknowledging the message: no retry can help) and gives
    /// the lease back.
    async fn reject(
        &self,
        lease: &Lease,
        error: String,
        frames_stored: u64,
    ) -> Result<JobOutcome, WorkerError> {
        let mut state = failed_state(&error, None);
        state.frames_analyzed = frames_stored;
        let ended = self.ledger.end_analysis(&lease.video_id, &state).await?;
        self.release(lease).await?;
        if !ended {
            return Ok(JobOutcome::Skipped {
                reason: "the video had already ended or was deleted".into(),
            });
        }
        self.announce(&lease.video_id).await?;
        tracing::warn!(video_id = %lease.video_id, segment = lease.index, %error, "analysis failed");
        Ok(JobOutcome::Rejected { error })
    }

    /// Probes the upload and records how to analyse it; `Err(outcome)` when it is rejected or
    /// another worker finished it meanwhile.
    async fn plan(
        &self,
        video: &Video,
        source: &MediaSource,
        lease: &Lease,
        deadline: Option<SystemTime>,
    ) -> Result<Result<AnalysisPlan, JobOutcome>, WorkerError> {
        let analyzer = self.analyzer.clone();
        let input = source.clone();
        let probe = self
            .on_engine_thread("probe", move || analyzer.probe(&input))
            .await?;
        let probe = match probe {
            Ok(p) => p,
            Err(e) if e.is_bad_input() && !network_trouble(&e) => {
                return Ok(Err(self.reject(lease, user_facing(&e, source), 0).await?));
            }
            Err(e) => return Err(self.failed_run(lease, &e).await),
        };
        let duration = Duration::from_millis(probe.video.duration_ms);
        if duration > self.config.max_video {
            let error = format!(
                "the video is {} long; the limit is {}",
                clock(duration),
                clock(self.config.max_video)
            );
            return Ok(Err(self.reject(lease, error, 0).await?));
        }
        let sample_fps = video.sample_fps;
        let analysed_per_video_second = if sample_fps > 0.0 {
            sample_fps.min(probe.video.fps.max(1.0))
        } else {
            probe.video.fps.max(1.0)
        };
        let mut segment_s = self.config.segment_seconds;
        if let Some(left) = remaining(deadline) {
            // what one run can analyse before it must stop
            let budget = left
                .saturating_sub(self.config.deadline_margin)
                .as_secs_f64();
            let fits = budget * self.config.planning_fps / analysed_per_video_second;
            segment_s = segment_s.min(fits.max(1.0));
        }
        let plan = if duration.as_secs_f64() > segment_s {
            let analyzer = self.analyzer.clone();
            let input = source.clone();
            let times = self
                .on_engine_thread("frame listing", move || analyzer.frame_times(&input))
                .await?;
            let times = match times {
                Ok(times) => times,
                Err(e) => return Err(self.failed_run(lease, &e).await),
            };
            AnalysisPlan::split(
                sample_fps,
                probe.start_s,
                probe.video.duration_ms,
                segment_s,
                &times,
            )
        } else {
            AnalysisPlan::single(sample_fps, probe.start_s, probe.video.duration_ms)
        };
        match self.ledger.start_analysis(&video.id, &plan).await? {
            PlanDecision::Recorded => {
                tracing::info!(video_id = %video.id, segments = plan.segments.len(),
                    duration_ms = plan.duration_ms, "analysis planned");
                if plan.segments.len() > 1 {
                    self.dispatch_segments(video, &plan).await?;
                }
                Ok(Ok(plan))
            }
            PlanDecision::Existing(plan) => Ok(Ok(plan)),
            PlanDecision::Finished => {
                self.release(lease).await?;
                Ok(Err(JobOutcome::Skipped {
                    reason: "finished by another worker".into(),
                }))
            }
        }
    }

    /// A run that failed for a reason other than its input. A transient one (the store, the
    /// network) gives its lease back; anything else (a panic turned into an error, a missing
    /// tool) keeps it, so that the retry counts it as a crashed run and the cap applies.
    async fn failed_run(&self, lease: &Lease, e: &AnalysisError) -> WorkerError {
        if transient(e) {
            let _ = self.release(lease).await;
            tracing::warn!(video_id = %lease.video_id, segment = lease.index, error = %e, "analysis interrupted; will be retried");
        } else {
            tracing::error!(video_id = %lease.video_id, segment = lease.index, error = %e, "analysis crashed; will be retried");
        }
        WorkerError::Analysis(e.to_string())
    }

    /// Queues the segments no worker has started (the first run plans them; a redelivered
    /// upload event re-queues any a crash kept from being queued).
    async fn dispatch_segments(
        &self,
        video: &Video,
        plan: &AnalysisPlan,
    ) -> Result<(), WorkerError> {
        let known = self.ledger.segments(&video.id).await?;
        for segment in plan.segments.iter().skip(1) {
            let status = known.iter().find(|s| s.index == segment.index);
            if status.is_none_or(|s| !s.done && !s.leased) {
                self.jobs
                    .enqueue(AnalysisJob::segment(video.s3_key.clone(), segment.index))
                    .await?;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_segment(
        &self,
        video: &Video,
        plan: &AnalysisPlan,
        segment: SegmentPlan,
        source: &MediaSource,
        lease: &Lease,
        attempt: u32,
        checkpoint: Option<Checkpoint>,
        deadline: Option<SystemTime>,
    ) -> Result<JobOutcome, WorkerError> {
        let index = lease.index;
        let owner = lease.owner.clone();
        let window = match &checkpoint {
            Some(c) => segment.resume_after(plan.start_s, c),
            None => segment,
        };
        tracing::info!(video_id = %video.id, segment = index, attempt, resume = ?checkpoint,
            "segment claimed");
        let options = AnalysisOptions {
            sample_fps: plan.sample_fps,
            window: DecodeWindow {
                seek_s: window.seek_s,
                end_s: window.end_s,
                first_frame: window.first_frame,
            },
            first_track: window.first_track(),
        };
        let mut sink = StoreSink {
            handle: Handle::current(),
            ledger: self.ledger.clone(),
            results: self.results.clone(),
            video_id: video.id.clone(),
            index,
            owner: owner.clone(),
            frames_per_chunk: self.results.frames_per_chunk().filter(|n| *n > 0),
            batch: Vec::with_capacity(BATCH),
            tracks: Default::default(),
            stored: None,
            covered_ms: window.start_ms,
            segment_end_ms: segment.end_ms,
            frames_since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            checkpoint_every: self.config.checkpoint_every,
            lease: self.config.lease,
            stop_at: deadline.map(|d| d - self.config.deadline_margin),
            stopped: None,
            frames_stored: 0,
            whole_video: None,
            progress_webhooks: self.progress_webhooks(video).await,
        };
        if plan.segments.len() == 1 && checkpoint.is_none() {
            sink.whole_video = PeopleSink::new(
                RunSummary::default(),
                *self.analyzer.people(),
                self.analyzer.smoothing(),
                self.analyzer.has_contempt(),
            )
            .inspect_err(|e| tracing::warn!(error = %e, "no spool for the run's own summary"))
            .ok();
        }
        let analyzer = self.analyzer.clone();
        let input = source.clone();
        // the engine's lines (and the sink's) belong to this job too
        let span = tracing::Span::current();
        let run = move || {
            let _in_job = span.enter();
            let result = analyzer.analyze(&input, &options, &mut sink);
            if let Err(e) = &result
                && sink.stopped.is_none()
                && let Err(flush) = sink.flush()
            {
                // frames analysed before a failure are kept: those still in the batch too
                tracing::warn!(error = %e, flush = %flush, "could not store the last frames before the failure");
            }
            (sink, result)
        };
        let (mut sink, result) = self.on_engine_thread("analysis", run).await?;
        let run_summary = sink
            .whole_video
            .take()
            .and_then(|people| people.into_inner().0);

        match (result, sink.stopped) {
            (Ok(outcome), _) => {
                let reached_end = segment.end_s.is_none();
                let tally = self
                    .ledger
                    .finish_segment(
                        &video.id,
                        index,
                        Some(&owner),
                        reached_end.then_some(&outcome.video),
                    )
                    .await;
                match tally {
                    Ok(tally) => {
                        self.assemble_if_last(video, plan, index, tally, run_summary)
                            .await
                    }
                    Err(StoreError::Conflict(_)) | Err(StoreError::NotFound) => {
                        self.lease_lost(video).await
                    }
                    Err(e) => Err(e.into()),
                }
            }
            (Err(_), Some(Stop::Deadline)) => {
                self.release(lease).await?;
                self.jobs
                    .enqueue(AnalysisJob::segment(video.s3_key.clone(), index))
                    .await?;
                tracing::info!(video_id = %video.id, segment = index, "deadline near: continuation queued");
                Ok(JobOutcome::Continued { index })
            }
            (Err(_), Some(Stop::LeaseLost)) => self.lease_lost(video).await,
            (Err(e), None) if e.is_bad_input() && !network_trouble(&e) => {
                let outcome = self
                    .reject(lease, user_facing(&e, source), sink.frames_stored)
                    .await?;
                if matches!(outcome, JobOutcome::Skipped { .. }) {
                    self.cleanup_if_deleted(video).await?;
                }
                Ok(outcome)
            }
            // frames stored so far stay; the retry resumes from the last checkpoint
            (Err(e), None) => Err(self.failed_run(lease, &e).await),
        }
    }

    /// Runs engine work (ffmpeg, the models) on a thread of its own, at the configured
    /// niceness, never on the runtime's workers: requests keep their threads however long an
    /// analysis runs. A panic that escapes the engine is a failed run.
    async fn on_engine_thread<T: Send + 'static>(
        &self,
        what: &str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, WorkerError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let nice = self.config.engine_nice;
        // in the runtime's context, as on its blocking pool: the sink blocks on async stores
        let runtime = Handle::current();
        std::thread::Builder::new()
            .name(format!("engine {what}"))
            .spawn(move || {
                let _runtime = runtime.enter();
                lower_thread_priority(nice);
                let _ = done.send(work());
            })
            .map_err(|e| WorkerError::Analysis(format!("{what} thread: {e}")))?;
        result
            .await
            .map_err(|_| WorkerError::Analysis(format!("the {what} thread panicked")))
    }

    /// Another worker took the segment over, or the video was deleted (its bookkeeping went
    /// with it): then this run's late writes are removed too.
    async fn lease_lost(&self, video: &Video) -> Result<JobOutcome, WorkerError> {
        let reason = if self.cleanup_if_deleted(video).await? {
            "the video was deleted during its analysis"
        } else {
            "the lease was lost to another worker"
        };
        Ok(JobOutcome::Skipped {
            reason: reason.into(),
        })
    }

    /// Writes the summary and `COMPLETED` once every segment is done.
    async fn assemble_if_last(
        &self,
        video: &Video,
        plan: &AnalysisPlan,
        index: u32,
        tally: SegmentTally,
        run_summary: Option<Summary>,
    ) -> Result<JobOutcome, WorkerError> {
        if tally.done < tally.total {
            return Ok(JobOutcome::SegmentDone {
                index,
                done: tally.done,
                total: tally.total,
            });
        }
        // one run saw every frame: its summary is the one the stored frames would give
        let summary = match run_summary {
            Some(summary) => summary,
            None => {
                domain::assembly::assemble(
                    self.results.as_ref(),
                    &video.id,
                    self.analyzer.has_contempt(),
                    self.analyzer.people(),
                    self.analyzer.smoothing(),
                )
                .await?
            }
        };
        // thumbnails before the final state: a reader of a COMPLETED video finds them
        let profiles = self.results.tracks(&video.id).await?;
        for (person, jpeg) in domain::assembly::person_thumbnails(&summary, &profiles) {
            self.blobs
                .put_object(
                    &domain::person_thumbnail_key(&video.id, person),
                    jpeg,
                    "image/jpeg",
                )
                .await?;
        }
        let people = summary.people.len();
        let info = tally.video.unwrap_or_else(|| VideoInfo {
            duration_ms: plan.duration_ms,
            ..VideoInfo::default()
        });
        let frames = summary.frames_analyzed;
        let state = AnalysisState {
            status: VideoStatus::Completed,
            progress: 100,
            error: None,
            video: Some(info),
            frames_analyzed: frames,
            summary: Some(summary),
            processed_at: Some(Utc::now()),
        };
        if !self.ledger.end_analysis(&video.id, &state).await? {
            return self.lease_lost(video).await.map(|_| JobOutcome::Skipped {
                reason: "finished by another worker, or deleted".into(),
            });
        }
        self.announce(&video.id).await?;
        tracing::info!(video_id = %video.id, frames, people, segments = tally.total, "analysis completed");
        Ok(JobOutcome::Completed { frames })
    }
}

/// Adds `nice` to the calling thread's niceness (Linux, where it is a thread's own and is
/// inherited by the threads and processes it starts); best effort.
fn lower_thread_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread (`who` 0).
        let (current, set) = unsafe {
            let current = libc::getpriority(libc::PRIO_PROCESS as _, 0);
            let target = (current + nice).min(19);
            (
                current,
                libc::setpriority(libc::PRIO_PROCESS as _, 0, target),
            )
        };
        if set != 0 {
            tracing::debug!(
                current,
                nice,
                "could not lower the engine thread's priority"
            );
        }
    }
}

fn failed_state(error: &str, video: Option<VideoInfo>) -> AnalysisState {
    AnalysisState {
        status: VideoStatus::Failed,
        error: Some(error.to_string()),
        video,
        processed_at: Some(Utc::now()),
        ..AnalysisState::pending()
    }
}

/// The error as the uploader should read it: no server paths or presigned URLs. The engine's
/// errors name the source redacted, but ffmpeg's own messages in them quote its input whole.
fn user_facing(e: &AnalysisError, source: &MediaSource) -> String {
    e.to_string()
        .replace(
            &*source.as_ffmpeg_input().to_string_lossy(),
            "the uploaded file",
        )
        .replace(&source.redacted(), "the uploaded file")
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The segment lease a run holds.
struct Lease {
    video_id: String,
    index: u32,
    owner: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    Deadline,
    LeaseLost,
}

/// Streams frames to the result store in batches, checkpoints the segment every few seconds
/// and stops the run before the deadline. Runs on the analysis thread, so it blocks on the
/// async stores through the runtime handle.
///
/// When the store keeps frames in chunks (DynamoDB), a batch is a chunk: it is written when the
/// first frame of the next chunk arrives, and checkpoints wait for such a boundary, so that
/// each chunk is written once, and a resumed run (which analyses the checkpoint's frame again)
/// rewrites only the chunk that frame ends: writing into a stored chunk rewrites all of it. A
/// chunk open for too long (a slow analysis), or the deadline, still flushes and checkpoints
/// mid-chunk, so the lease never lapses.
struct StoreSink {
    handle: Handle,
    ledger: Arc<dyn AnalysisLedger>,
    results: Arc<dyn ResultStore>,
    video_id: String,
    index: u32,
    owner: String,
    /// The store's chunk size (see `ResultStore::frames_per_chunk`).
    frames_per_chunk: Option<u64>,
    batch: Vec<FrameResult>,
    /// Track profiles changed since the last write.
    tracks: std::collections::BTreeMap<u32, TrackProfile>,
    /// The last frame whose results are stored.
    stored: Option<Checkpoint>,
    /// Video time already added to the video's progress.
    covered_ms: u64,
    segment_end_ms: u64,
    frames_since_checkpoint: u64,
    last_checkpoint: Instant,
    checkpoint_every: Duration,
    lease: Duration,
    stop_at: Option<SystemTime>,
    stopped: Option<Stop>,
    frames_stored: u64,
    /// When this run analyses the whole video (one segment, from its start): the summary with
    /// people, built from the frames as they pass, so that it need not be rebuilt by reading
    /// every stored frame back. Dropped (and the summary assembled from the store instead) if
    /// its spool fails.
    whole_video: Option<PeopleSink<RunSummary>>,
    /// Where `video.progress` goes, when the owner has an endpoint that takes it.
    progress_webhooks: Option<ProgressWebhooks>,
}

/// What announcing progress needs: the video's overall progress is read after a checkpoint
/// (segments add to it in parallel), and each step of ten percent is announced once.
struct ProgressWebhooks {
    videos: Arc<dyn VideoStore>,
    webhooks: Arc<dyn WebhookStore>,
    deliveries: Arc<dyn DeliveryQueue>,
    announced: Option<u8>,
}

impl StoreSink {
    /// Runs a store write, retrying what may pass (throttling, network errors); anything
    /// persistent ends the run, and the message is retried from the last checkpoint.
    fn write<F>(&self, what: &str, write: impl Fn() -> F) -> Result<(), SinkError>
    where
        F: std::future::Future<Output = StoreResult<()>>,
    {
        let mut attempt = 0;
        loop {
            match self.handle.block_on(write()) {
                Ok(()) => return Ok(()),
                Err(e) if attempt + 1 < WRITE_ATTEMPTS => {
                    tracing::warn!(video_id = %self.video_id, attempt, error = %e, what, "write failed; retrying");
                    std::thread::sleep(Duration::from_millis(200 << attempt));
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        // profiles first: a checkpoint vouches for everything written before it
        if !self.tracks.is_empty() {
            let tracks: Vec<TrackProfile> = self.tracks.values().cloned().collect();
            self.write("track profiles", || {
                self.results.put_tracks(&self.video_id, &tracks)
            })?;
            self.tracks.clear();
        }
        let Some(last) = self.batch.last() else {
            return Ok(());
        };
        let checkpoint = Checkpoint {
            frame: last.frame,
            t_ms: last.t_ms,
        };
        self.write("frames", || {
            self.results.put_frames(&self.video_id, &self.batch)
        })?;
        self.frames_since_checkpoint += self.batch.len() as u64;
        self.frames_stored += self.batch.len() as u64;
        self.batch.clear();
        self.stored = Some(checkpoint);
        Ok(())
    }

    /// Checkpoints at the last stored frame.
    fn checkpoint_stored(&mut self) -> Result<(), SinkError> {
        let covered_to = self.stored.map_or(self.covered_ms, |s| s.t_ms);
        self.checkpoint(covered_to)
    }

    /// Saves progress and renews the lease; `covered_to` is how far the video is done.
    fn checkpoint(&mut self, covered_to: u64) -> Result<(), SinkError> {
        let Some(stored) = self.stored else {
            return Ok(());
        };
        let progress = ProgressDelta {
            covered_ms: covered_to.saturating_sub(self.covered_ms),
            frames: self.frames_since_checkpoint,
        };
        let held = self.handle.block_on(self.ledger.checkpoint(
            &self.video_id,
            self.index,
            &self.owner,
            &stored,
            progress,
            self.lease,
        ))?;
        if !held {
            self.stopped = Some(Stop::LeaseLost);
            return Err("the segment's lease was taken over by another worker".into());
        }
        self.covered_ms = self.covered_ms.max(covered_to);
        self.frames_since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        self.announce_progress();
        Ok(())
    }

    /// Queues `video.progress` when the video passed another tenth. Best effort: a failure is
    /// logged and never stops the analysis.
    fn announce_progress(&mut self) {
        let Some(hooks) = &mut self.progress_webhooks else {
            return;
        };
        let announced = self.handle.block_on(async {
            let Some(video) = hooks.videos.video(&self.video_id).await? else {
                return Ok(None);
            };
            let step = domain::webhooks::progress_step(video.analysis.progress);
            let Some(step) = step.filter(|&step| Some(step) > hooks.announced) else {
                return Ok(None);
            };
            domain::webhooks::queue_video_progress(
                &*hooks.webhooks,
                &*hooks.deliveries,
                &video,
                step,
            )
            .await?;
            Ok::<_, domain::ports::StoreError>(Some(step))
        });
        match announced {
            Ok(Some(step)) => hooks.announced = Some(step),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(video_id = %self.video_id, error = %e, "progress not announced")
            }
        }
    }
}

impl AnalysisSink for StoreSink {
    fn frame(&mut self, frame: &FrameResult) -> Result<(), SinkError> {
        self.beside(|people| people.frame(frame));
        let overdue = match self.frames_per_chunk {
            None => {
                self.batch.push(frame.clone());
                if self.batch.len() >= BATCH {
                    self.flush()?;
                }
                self.last_checkpoint.elapsed() >= self.checkpoint_every
            }
            Some(n) => {
                let chunk_done = self
                    .batch
                    .last()
                    .is_some_and(|last| last.frame / n != frame.frame / n);
                if chunk_done {
                    self.flush()?;
                    if self.last_checkpoint.elapsed() >= self.checkpoint_every {
                        self.checkpoint_stored()?;
                    }
                }
                self.batch.push(frame.clone());
                // a chunk open this long is written unfinished (and rewritten when it is done)
                self.last_checkpoint.elapsed() >= (self.checkpoint_every * 2).min(self.lease / 2)
            }
        };
        let deadline_near = self.stop_at.is_some_and(|t| SystemTime::now() >= t);
        if deadline_near || overdue {
            self.flush()?;
            self.checkpoint_stored()?;
        }
        if deadline_near {
            self.stopped = Some(Stop::Deadline);
            return Err("stopping before the invocation's deadline".into());
        }
        Ok(())
    }

    fn track(&mut self, profile: &TrackProfile) -> Result<(), SinkError> {
        self.beside(|people| people.track(profile));
        self.tracks.insert(profile.track, profile.clone());
        Ok(())
    }

    fn finish(&mut self, video: &VideoInfo, summary: &Summary) -> Result<(), SinkError> {
        self.flush()?;
        self.checkpoint(self.segment_end_ms)?;
        self.beside(|people| people.finish(video, summary));
        Ok(())
    }
}

impl StoreSink {
    /// Feeds the whole-video summary; a failure there only means assembling from the store.
    fn beside(&mut self, feed: impl FnOnce(&mut PeopleSink<RunSummary>) -> Result<(), SinkError>) {
        if let Some(people) = &mut self.whole_video
            && let Err(e) = feed(people)
        {
            tracing::warn!(video_id = %self.video_id, error = %e, "the run's own summary is unavailable; it will be assembled from the stored frames");
            self.whole_video = None;
        }
    }
}

#[cfg(test)]
mod tests;
