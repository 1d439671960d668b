//! The analysis worker over the embedded backends (SQLite, files, a recording queue) with the
//! real engine: duplicate events, bad uploads, a crash mid-analysis, throttled writes, and long
//! videos split into segments must all end with exactly the results of one clean pass.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::Utc;
use shared::adapters::local::{FileBlobs, SqliteStore};
use shared::pipeline::AnalysisOptions;
use shared::ports::{
    AnalysisJob, AnalysisLedger, BlobStore, JobQueue, ResultStore, SegmentClaim, StoreError,
    StoreResult, VideoStore,
};
use shared::worker::{AnalysisWorker, JobOutcome, WorkerConfig, WorkerError};
use shared::{AnalysisState, Analyzer, EngineConfig, FrameResult, Video, VideoStatus};

const PEXELS: &str = "WolfgangLanger_Pexels.mp4";

fn engine() -> Arc<Analyzer> {
    static ENGINE: OnceLock<Arc<Analyzer>> = OnceLock::new();
    ENGINE
        .get_or_init(|| Arc::new(Analyzer::new(EngineConfig::default()).expect("engine starts")))
        .clone()
}

/// What one clean pass over the Pexels clip at 5 fps gives, with people and smoothing as the
/// CLI computes them.
fn reference() -> &'static Vec<FrameResult> {
    static FRAMES: OnceLock<Vec<FrameResult>> = OnceLock::new();
    FRAMES.get_or_init(|| {
        let engine = engine();
        let mut collect = common::Collect::default();
        let mut sink = shared::assembly::PeopleSink::new(
            &mut collect,
            engine.config().people,
            engine.config().smoothing,
            engine.has_contempt(),
        )
        .unwrap();
        engine
            .analyze(
                &common::video(PEXELS),
                &AnalysisOptions::sampled(5.0),
                &mut sink,
            )
            .unwrap();
        collect.frames
    })
}

/// Jobs the worker queues (segments, continuations), for the test to deliver.
#[derive(Default)]
struct RecordingQueue(Mutex<Vec<AnalysisJob>>);

#[async_trait]
impl JobQueue for RecordingQueue {
    async fn enqueue(&self, job: AnalysisJob) -> StoreResult<()> {
        self.0.lock().unwrap().push(job);
        Ok(())
    }
}

impl RecordingQueue {
    fn take(&self) -> Vec<AnalysisJob> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

struct Rig {
    store: Arc<SqliteStore>,
    blobs: Arc<FileBlobs>,
    queue: Arc<RecordingQueue>,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            store: Arc::new(SqliteStore::in_memory().unwrap()),
            blobs: Arc::new(FileBlobs::new(
                dir.path().join("blobs"),
                "http://localhost",
                b"k",
            )),
            queue: Arc::default(),
            _dir: dir,
        }
    }

    fn worker(&self, config: WorkerConfig) -> AnalysisWorker {
        self.worker_with(config, self.store.clone(), engine())
    }

    fn worker_with(
        &self,
        config: WorkerConfig,
        results: Arc<dyn ResultStore>,
        analyzer: Arc<Analyzer>,
    ) -> AnalysisWorker {
        AnalysisWorker {
            videos: self.store.clone(),
            ledger: self.store.clone(),
            results,
            blobs: self.blobs.clone(),
            jobs: self.queue.clone(),
            analyzer,
            config,
        }
    }

    /// Stores an upload of `bytes` and returns the job its S3 event would carry.
    async fn upload(&self, bytes: &[u8]) -> AnalysisJob {
        let id = uuid::Uuid::new_v4().to_string();
        let key = shared::object_key("u-1", &id, "mp4");
        let path = self.blobs.path_of(&key).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        self.store
            .create_video(&Video {
                id,
                user_id: "u-1".into(),
                title: "clip".into(),
                s3_key: key.clone(),
                filename: "clip.mp4".into(),
                content_type: "video/mp4".into(),
                size_bytes: Some(bytes.len() as u64),
                sample_fps: 5.0,
                uploaded_at: Utc::now(),
                upload: None,
                analysis: AnalysisState::pending(),
            })
            .await
            .unwrap();
        AnalysisJob::upload(key)
    }

    async fn video(&self, job: &AnalysisJob) -> Video {
        let (_, id) = shared::parse_object_key(&job.key).unwrap();
        self.store.video(id).await.unwrap().unwrap()
    }

    /// The video's frames as the API serves them: with people and smoothing once it is done.
    /// Pages of 40 frames, so that reads start mid-video and smoothing needs its look-back.
    async fn frames(&self, job: &AnalysisJob) -> Vec<FrameResult> {
        let (_, id) = shared::parse_object_key(&job.key).unwrap();
        let summary = self.video(job).await.analysis.summary;
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let (page, next) =
                shared::assembly::read_frames(self.store.as_ref(), id, summary.as_ref(), after, 40)
                    .await
                    .unwrap();
            all.extend(page);
            match next {
                Some(n) => after = Some(n),
                None => return all,
            }
        }
    }

    /// Delivers queued jobs until none are left, each with a fresh deadline when given one.
    async fn drain(&self, worker: &AnalysisWorker, budget: Option<Duration>) -> Vec<JobOutcome> {
        let mut outcomes = Vec::new();
        for _ in 0..100 {
            let jobs = self.queue.take();
            if jobs.is_empty() {
                return outcomes;
            }
            for job in jobs {
                let deadline = budget.map(|b| SystemTime::now() + b);
                outcomes.push(worker.handle(&job, deadline).await.unwrap());
            }
        }
        panic!("the queue never drained: {outcomes:?}");
    }
}

fn pexels() -> Vec<u8> {
    std::fs::read(common::video(PEXELS)).unwrap()
}

/// Same frames, times, boxes and emotions as the clean pass, and the same people with the same
/// smoothed emotions. Track ids may differ: a track does not continue across a segment boundary
/// or a resume, and the people they are linked into are what stays the same.
fn assert_same_as_one_pass(frames: &[FrameResult]) {
    let expected = reference();
    assert_eq!(
        frames.iter().map(|f| f.frame).collect::<Vec<_>>(),
        expected.iter().map(|f| f.frame).collect::<Vec<_>>(),
        "the same source frames, each once"
    );
    let pairs = || {
        frames.iter().zip(expected).flat_map(|(got, want)| {
            assert_eq!(got.t_ms, want.t_ms);
            assert_eq!(got.faces.len(), want.faces.len(), "frame {}", got.frame);
            got.faces
                .iter()
                .zip(&want.faces)
                .map(move |(a, b)| (got.frame, a, b))
        })
    };
    // what the pipeline stored first, then what is derived from it
    for (frame, a, b) in pairs() {
        assert!((a.bbox.x - b.bbox.x).abs() < 0.5 && (a.bbox.w - b.bbox.w).abs() < 0.5);
        for ((_, p), (_, q)) in a.emotions.iter().zip(b.emotions.iter()) {
            assert!((p - q).abs() < 1e-4, "frame {frame}: {p} vs {q}");
        }
    }
    for (frame, a, b) in pairs() {
        assert_eq!(a.person, b.person, "frame {frame}");
        assert!(a.person.is_some(), "frame {frame}: no person");
        let (sa, sb) = (a.smoothed.unwrap(), b.smoothed.unwrap());
        for ((_, p), (_, q)) in sa.iter().zip(sb.iter()) {
            assert!((p - q).abs() < 1e-4, "frame {frame}: smoothed {p} vs {q}");
        }
        assert_eq!(a.smoothed_dominant, b.smoothed_dominant, "frame {frame}");
    }
}

fn quick() -> WorkerConfig {
    WorkerConfig {
        lease: Duration::from_secs(1),
        checkpoint_every: Duration::from_millis(100),
        ..WorkerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_is_analysed_once_even_when_its_event_comes_twice() {
    let rig = Rig::new();
    let worker = rig.worker(quick());
    let job = rig.upload(&pexels()).await;
    let first = worker.handle(&job, None).await.unwrap();
    assert_eq!(first, JobOutcome::Completed { frames: 99 });
    let again = worker.handle(&job, None).await.unwrap();
    assert!(matches!(again, JobOutcome::Skipped { ref reason } if reason.contains("COMPLETED")));
    let frames = rig.frames(&job).await;
    assert_same_as_one_pass(&frames);
    let video = rig.video(&job).await;
    assert_eq!(video.analysis.status, VideoStatus::Completed);
    assert_eq!(video.analysis.progress, 100);
    assert_eq!(video.analysis.frames_analyzed, 99);
    assert_eq!(video.analysis.video.as_ref().unwrap().frame_count, 472);
    assert!(video.analysis.processed_at.is_some());
    let summary = video.analysis.summary.unwrap();
    assert_eq!(summary.frames_analyzed, 99);
    assert!(
        rig.queue.take().is_empty(),
        "a short video needs no other message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_fail_with_a_reason_and_are_not_retried() {
    let rig = Rig::new();
    let worker = rig.worker(quick());
    let cases: [(&[u8], &str); 2] = [
        (b"this is a text file, not a video\n", "not a video"),
        (&pexels()[..150_000], "truncated"),
    ];
    for (bytes, what) in cases {
        let job = rig.upload(bytes).await;
        let outcome = worker.handle(&job, None).await;
        let Ok(JobOutcome::Rejected { error }) = outcome else {
            panic!("{what}: {outcome:?}");
        };
        let video = rig.video(&job).await;
        assert_eq!(video.analysis.status, VideoStatus::Failed, "{what}");
        assert_eq!(video.analysis.error.as_deref(), Some(error.as_str()));
        assert!(!error.contains("/blobs/"), "no server paths: {error}");
        assert!(error.contains("the uploaded file"), "{what}: {error}");
        // a redelivery changes nothing
        assert!(matches!(
            worker.handle(&job, None).await.unwrap(),
            JobOutcome::Skipped { .. }
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn videos_over_the_length_limit_are_rejected() {
    let rig = Rig::new();
    let worker = rig.worker(WorkerConfig {
        max_video: Duration::from_secs(10),
        ..quick()
    });
    let job = rig.upload(&pexels()).await;
    let outcome = worker.handle(&job, None).await.unwrap();
    assert_eq!(
        outcome,
        JobOutcome::Rejected {
            error: "the video is 0:00:19 long; the limit is 0:00:10".into()
        }
    );
    assert_eq!(rig.video(&job).await.analysis.status, VideoStatus::Failed);
}

/// Passes writes through until `hang_after` frames are stored, then hangs (a process frozen or
/// killed mid-write) until released, and then fails.
struct HangingResults {
    inner: Arc<SqliteStore>,
    hang_after: u64,
    stored: AtomicU64,
    hung: AtomicBool,
    released: AtomicBool,
    release: tokio::sync::Notify,
}

#[async_trait]
impl ResultStore for HangingResults {
    async fn put_frames(&self, video_id: &str, frames: &[FrameResult]) -> StoreResult<()> {
        if self.stored.load(Ordering::SeqCst) >= self.hang_after {
            self.hung.store(true, Ordering::SeqCst);
            if !self.released.load(Ordering::SeqCst) {
                self.release.notified().await;
            }
            return Err(StoreError::Backend("the process died".into()));
        }
        self.inner.put_frames(video_id, frames).await?;
        self.stored.fetch_add(frames.len() as u64, Ordering::SeqCst);
        Ok(())
    }
    async fn frames(
        &self,
        video_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<(Vec<FrameResult>, Option<u64>)> {
        self.inner.frames(video_id, after, limit).await
    }
    async fn put_tracks(&self, video_id: &str, tracks: &[shared::TrackProfile]) -> StoreResult<()> {
        self.inner.put_tracks(video_id, tracks).await
    }
    async fn tracks(&self, video_id: &str) -> StoreResult<Vec<shared::TrackProfile>> {
        self.inner.tracks(video_id).await
    }
    async fn delete_frames(&self, video_id: &str) -> StoreResult<()> {
        self.inner.delete_frames(video_id).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_analysis_is_resumed_by_the_redelivery_without_duplicates() {
    let rig = Rig::new();
    let job = rig.upload(&pexels()).await;
    let hanging = Arc::new(HangingResults {
        inner: rig.store.clone(),
        hang_after: 40,
        stored: AtomicU64::new(0),
        hung: AtomicBool::new(false),
        released: AtomicBool::new(false),
        release: tokio::sync::Notify::new(),
    });
    // the doomed run gets its own engine: its analysis thread stays stuck holding it
    let doomed_engine =
        Arc::new(Analyzer::new(EngineConfig::default()).expect("a second engine starts"));
    let doomed_config = WorkerConfig {
        lease: Duration::from_secs(3),
        ..quick()
    };
    let doomed = rig.worker_with(doomed_config.clone(), hanging.clone(), doomed_engine);
    let worker = rig.worker(quick());
    let doomed_job = job.clone();
    let run = tokio::spawn(async move { doomed.handle(&doomed_job, None).await });
    while !hanging.hung.load(Ordering::SeqCst) {
        assert!(!run.is_finished(), "the run hangs before it ends");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.abort(); // the invocation is gone; its lease is not released
    let stored_before = rig.frames(&job).await.len();

    assert!(
        (40..99).contains(&stored_before),
        "{stored_before} frames stored before the crash"
    );
    let video = rig.video(&job).await;
    assert_eq!(video.analysis.status, VideoStatus::Processing);
    assert!(video.analysis.progress > 0 && video.analysis.progress < 100);

    // while the lease lives, the redelivered message is handed back for later
    assert!(matches!(
        worker.handle(&job, None).await,
        Err(WorkerError::Busy(0))
    ));
    tokio::time::sleep(doomed_config.lease).await;
    let outcome = worker.handle(&job, None).await.unwrap();
    assert_eq!(outcome, JobOutcome::Completed { frames: 99 });
    assert_same_as_one_pass(&rig.frames(&job).await);
    let video = rig.video(&job).await;
    assert_eq!(video.analysis.frames_analyzed, 99);
    assert_eq!(video.analysis.summary.unwrap().frames_analyzed, 99);

    // the frozen run wakes up: it has lost its lease and writes nothing more that counts
    hanging.released.store(true, Ordering::SeqCst);
    hanging.release.notify_waiters();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rig.frames(&job).await.len(), 99);
    assert_eq!(
        rig.video(&job).await.analysis.status,
        VideoStatus::Completed
    );
}

/// Fails the first `failures` writes as DynamoDB does when throttled.
struct ThrottledResults {
    inner: Arc<SqliteStore>,
    failures: u32,
    calls: AtomicU32,
}

#[async_trait]
impl ResultStore for ThrottledResults {
    async fn put_frames(&self, video_id: &str, frames: &[FrameResult]) -> StoreResult<()> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
            return Err(StoreError::Backend(
                "ProvisionedThroughputExceededException: rate of requests exceeds the allowed throughput".into(),
            ));
        }
        self.inner.put_frames(video_id, frames).await
    }
    async fn frames(
        &self,
        video_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<(Vec<FrameResult>, Option<u64>)> {
        self.inner.frames(video_id, after, limit).await
    }
    async fn put_tracks(&self, video_id: &str, tracks: &[shared::TrackProfile]) -> StoreResult<()> {
        self.inner.put_tracks(video_id, tracks).await
    }
    async fn tracks(&self, video_id: &str) -> StoreResult<Vec<shared::TrackProfile>> {
        self.inner.tracks(video_id).await
    }
    async fn delete_frames(&self, video_id: &str) -> StoreResult<()> {
        self.inner.delete_frames(video_id).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_result_writes_are_retried_and_nothing_is_lost() {
    let rig = Rig::new();
    let job = rig.upload(&pexels()).await;
    let throttled = Arc::new(ThrottledResults {
        inner: rig.store.clone(),
        failures: 2,
        calls: AtomicU32::new(0),
    });
    let worker = rig.worker_with(quick(), throttled.clone(), engine());
    let outcome = worker.handle(&job, None).await.unwrap();
    assert_eq!(outcome, JobOutcome::Completed { frames: 99 });
    assert!(throttled.calls.load(Ordering::SeqCst) > 2);
    assert_same_as_one_pass(&rig.frames(&job).await);

    // throttling that does not pass ends the run; the message comes back and resumes
    let rig = Rig::new();
    let job = rig.upload(&pexels()).await;
    let stuck = Arc::new(ThrottledResults {
        inner: rig.store.clone(),
        failures: 100,
        calls: AtomicU32::new(0),
    });
    let worker = rig.worker_with(quick(), stuck, engine());
    assert!(matches!(
        worker.handle(&job, None).await,
        Err(WorkerError::Analysis(_))
    ));
    let retry = rig.worker(quick());
    assert_eq!(
        retry.handle(&job, None).await.unwrap(),
        JobOutcome::Completed { frames: 99 }
    );
    assert_same_as_one_pass(&rig.frames(&job).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_that_cannot_finish_before_the_deadline_fans_out_into_segments() {
    let rig = Rig::new();
    // 30 s of working time at a planned 1 analysed frame/s fits 6 s of video at 5 fps: 4 segments
    // of the 19.7 s clip. (A long budget at a low planning speed, rather than a few seconds at a
    // realistic one, keeps the plan the same on a slow machine: the time spent before planning
    // would otherwise eat into the budget and add a segment.)
    let budget = Duration::from_secs(31);
    let worker = rig.worker(WorkerConfig {
        deadline_margin: Duration::from_secs(1),
        planning_fps: 1.0,
        ..quick()
    });
    let job = rig.upload(&pexels()).await;
    let first = worker
        .handle(&job, Some(SystemTime::now() + budget))
        .await
        .unwrap();
    assert_eq!(
        first,
        JobOutcome::SegmentDone {
            index: 0,
            done: 1,
            total: 4
        }
    );
    let queued = rig.queue.0.lock().unwrap().clone();
    assert_eq!(
        queued.iter().map(|j| j.segment).collect::<Vec<_>>(),
        vec![Some(1), Some(2), Some(3)]
    );
    assert_eq!(
        rig.video(&job).await.analysis.status,
        VideoStatus::Processing
    );
    let outcomes = rig.drain(&worker, Some(budget)).await;
    assert_eq!(outcomes.last(), Some(&JobOutcome::Completed { frames: 99 }));
    assert_same_as_one_pass(&rig.frames(&job).await);
    let video = rig.video(&job).await;
    assert_eq!(video.analysis.status, VideoStatus::Completed);
    assert_eq!(video.analysis.video.unwrap().frame_count, 472);
    // four segments, four runs with their own tracks: one woman, with her thumbnail
    let summary = video.analysis.summary.unwrap();
    assert_eq!(summary.people.len(), 1, "{:#?}", summary.people);
    assert!(
        summary.people[0].tracks.len() >= 4,
        "{:?}",
        summary.people[0]
    );
    assert_eq!(summary.people[0].frames, 99);
    let thumbnail = rig
        .blobs
        .get_object(&shared::person_thumbnail_key(&video.id, 1))
        .await
        .unwrap()
        .expect("person 1 has a thumbnail");
    assert_eq!(&thumbnail[..2], &[0xff, 0xd8], "a JPEG");
    // a duplicate segment message after the end is a no-op
    let late = worker
        .handle(&AnalysisJob::segment(job.key.clone(), 2), None)
        .await
        .unwrap();
    assert!(matches!(late, JobOutcome::Skipped { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_videos_split_by_length_and_deadline_stops_continue_where_they_left_off() {
    // split by the configured segment length, no deadline (the local server's case)
    let rig = Rig::new();
    let worker = rig.worker(WorkerConfig {
        segment_seconds: 5.0,
        ..quick()
    });
    let job = rig.upload(&pexels()).await;
    let first = worker.handle(&job, None).await.unwrap();
    assert!(
        matches!(first, JobOutcome::SegmentDone { total: 4, .. }),
        "{first:?}"
    );
    let outcomes = rig.drain(&worker, None).await;
    assert_eq!(outcomes.last(), Some(&JobOutcome::Completed { frames: 99 }));
    assert_same_as_one_pass(&rig.frames(&job).await);

    // a single segment whose run meets the deadline saves its place and queues the rest: its first
    // write is throttled three times, and the retries' backoff (0.2 + 0.4 + 0.8 s) carries the run
    // past the point where it must stop (1.2 s of work), whatever the machine's speed
    let rig = Rig::new();
    let throttled = Arc::new(ThrottledResults {
        inner: rig.store.clone(),
        failures: 3,
        calls: AtomicU32::new(0),
    });
    let worker = rig.worker_with(
        WorkerConfig {
            deadline_margin: Duration::from_secs(1),
            planning_fps: 100_000.0,
            ..quick()
        },
        throttled,
        engine(),
    );
    let job = rig.upload(&pexels()).await;
    let first = worker
        .handle(&job, Some(SystemTime::now() + Duration::from_millis(2200)))
        .await
        .unwrap();
    assert_eq!(first, JobOutcome::Continued { index: 0 });
    let stored = rig.frames(&job).await.len();
    assert!(stored > 0 && stored < 99, "{stored} frames before the stop");
    let outcomes = rig.drain(&worker, None).await;
    assert_eq!(outcomes, vec![JobOutcome::Completed { frames: 99 }]);
    assert_same_as_one_pass(&rig.frames(&job).await);
}

fn video_id(job: &AnalysisJob) -> String {
    shared::parse_object_key(&job.key).unwrap().1.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_that_crash_are_capped_and_the_video_fails_repeatedly_instead_of_cycling() {
    let rig = Rig::new();
    let worker = rig.worker(quick());
    let job = rig.upload(&pexels()).await;
    let id = video_id(&job);
    // three runs that took the lease and never gave it back (killed, crashed, panicked)
    let short = Duration::from_millis(1);
    for run in 0..3 {
        let claim = rig
            .store
            .claim_segment(&id, 0, &format!("crashed-run-{run}"), short)
            .await
            .unwrap();
        let SegmentClaim::Claimed { crashed_runs, .. } = claim else {
            panic!("{claim:?}");
        };
        assert_eq!(crashed_runs, run, "each unreleased lease counts once");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let outcome = worker.handle(&job, None).await.unwrap();
    let JobOutcome::Rejected { error } = outcome else {
        panic!("the fourth run must give up: {outcome:?}");
    };
    assert!(error.contains("analysis failed repeatedly"), "{error}");
    let video = rig.video(&job).await;
    assert_eq!(video.analysis.status, VideoStatus::Failed);
    assert_eq!(video.analysis.error.as_deref(), Some(error.as_str()));
    // acknowledged for good: a redelivery is skipped, not run again
    assert!(matches!(
        worker.handle(&job, None).await.unwrap(),
        JobOutcome::Skipped { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failures_give_the_lease_back_and_never_count_as_crashes() {
    let rig = Rig::new();
    let job = rig.upload(&pexels()).await;
    let stuck = Arc::new(ThrottledResults {
        inner: rig.store.clone(),
        failures: 1000,
        calls: AtomicU32::new(0),
    });
    // more failed runs than the crash cap allows: each stopped cleanly
    let failing = rig.worker_with(quick(), stuck, engine());
    for _ in 0..4 {
        assert!(matches!(
            failing.handle(&job, None).await,
            Err(WorkerError::Analysis(_))
        ));
    }
    // a redrive after the store recovers completes normally
    let outcome = rig.worker(quick()).handle(&job, None).await.unwrap();
    assert_eq!(outcome, JobOutcome::Completed { frames: 99 });
    assert_same_as_one_pass(&rig.frames(&job).await);
}

/// Passes writes through, and after the first one deletes the video as `DELETE /videos/{id}`
/// does (the object, then the record with everything the store holds), then goes on writing:
/// the writes a running analysis makes after a delete.
struct DeletedMidway {
    inner: Arc<SqliteStore>,
    blobs: Arc<FileBlobs>,
    key: String,
    writes: AtomicU32,
}

#[async_trait]
impl ResultStore for DeletedMidway {
    async fn put_frames(&self, video_id: &str, frames: &[FrameResult]) -> StoreResult<()> {
        if self.writes.fetch_add(1, Ordering::SeqCst) == 1 {
            self.blobs.delete(&self.key).await?;
            self.inner.delete_video(video_id).await?;
        }
        self.inner.put_frames(video_id, frames).await
    }
    async fn frames(
        &self,
        video_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<(Vec<FrameResult>, Option<u64>)> {
        self.inner.frames(video_id, after, limit).await
    }
    async fn put_tracks(&self, video_id: &str, tracks: &[shared::TrackProfile]) -> StoreResult<()> {
        self.inner.put_tracks(video_id, tracks).await
    }
    async fn tracks(&self, video_id: &str) -> StoreResult<Vec<shared::TrackProfile>> {
        self.inner.tracks(video_id).await
    }
    async fn delete_frames(&self, video_id: &str) -> StoreResult<()> {
        self.inner.delete_frames(video_id).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_deleted_mid_analysis_stops_at_the_next_checkpoint_and_leaves_no_rows() {
    let rig = Rig::new();
    let job = rig.upload(&pexels()).await;
    let id = video_id(&job);
    let results = Arc::new(DeletedMidway {
        inner: rig.store.clone(),
        blobs: rig.blobs.clone(),
        key: job.key.clone(),
        writes: AtomicU32::new(0),
    });
    let worker = rig.worker_with(quick(), results.clone(), engine());
    let outcome = worker.handle(&job, None).await.unwrap();
    assert!(
        matches!(&outcome, JobOutcome::Skipped { reason } if reason.contains("deleted")),
        "{outcome:?}"
    );
    let writes = results.writes.load(Ordering::SeqCst);
    assert!(
        writes >= 2,
        "frames were written after the delete ({writes} writes)"
    );
    assert!(
        rig.store.frames(&id, None, 10).await.unwrap().0.is_empty(),
        "no result rows left for the deleted id"
    );
    assert!(rig.store.video(&id).await.unwrap().is_none());
    assert!(!rig.blobs.path_of(&job.key).unwrap().exists());
    // the upload event, redelivered later, finds nothing to do and leaves nothing behind
    let late = worker.handle(&job, None).await.unwrap();
    assert!(matches!(late, JobOutcome::Skipped { .. }), "{late:?}");
    assert!(rig.store.frames(&id, None, 10).await.unwrap().0.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_analysis_keeps_every_frame_decoded_before_the_failure() {
    let whole = pexels();
    let cut = &whole[..whole.len() / 2];
    // what the engine delivers before the cut
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.mp4");
    std::fs::write(&path, cut).unwrap();
    let mut sink = common::Collect::default();
    engine()
        .analyze(&path, &AnalysisOptions::sampled(5.0), &mut sink)
        .unwrap_err();
    let delivered: Vec<u64> = sink.frames.iter().map(|f| f.frame).collect();
    assert!(
        !delivered.is_empty() && !delivered.len().is_multiple_of(50),
        "a partial batch is pending at the failure: {} frames",
        delivered.len()
    );

    let rig = Rig::new();
    // no time-based checkpoint: only full batches of 50 would be written before the failure
    let worker = rig.worker(WorkerConfig {
        checkpoint_every: Duration::from_secs(3600),
        ..quick()
    });
    let job = rig.upload(cut).await;
    let outcome = worker.handle(&job, None).await.unwrap();
    assert!(
        matches!(&outcome, JobOutcome::Rejected { error } if error.contains("truncated")),
        "{outcome:?}"
    );
    let stored: Vec<u64> = rig.frames(&job).await.iter().map(|f| f.frame).collect();
    assert_eq!(
        stored, delivered,
        "every frame decoded before the failure is kept"
    );
    let video = rig.video(&job).await;
    assert_eq!(video.analysis.status, VideoStatus::Failed);
    assert_eq!(video.analysis.frames_analyzed, delivered.len() as u64);
}
