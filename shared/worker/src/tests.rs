//! The worker's state machine on a scripted analyzer and `domain::memory`'s ports: duplicate
//! events, bad uploads, crashes and takeovers, throttled writes, deadlines, segments and deletes,
//! each in milliseconds (the throttling cases wait out the worker's write backoff). A few of
//! these run end to end with the real engine, SQLite and files in `tests/local/worker.rs`.
//!
//! The fake "video" is 20 s of 25 fps (500 frames); at 5 fps a single pass selects every fifth
//! frame (100 frames), and a window of it (a segment, a resume) selects exactly the frames of
//! the single pass inside it, as the engine does. Leases are a minute long: a test that needs one
//! to have run out says so with `MemoryStore::expire_leases`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use domain::memory::{
    MemoryBlobs, MemoryDeliveryQueue, MemoryQueue, MemoryStore, MemoryWebhooks, StoreOperation,
    pending_video,
};
use domain::ports::{AnalysisJob, AnalysisLedger, BlobStore, ResultStore, VideoStore};
use domain::{
    AnalysisError, AnalysisOptions, AnalysisOutcome, AnalysisPlan, AnalysisSink, DecodeWindow,
    DetectedFace, EmotionLabel, EmotionScores, FaceBox, FaceResult, FrameResult, Landmarks,
    MediaSource, ModelInfo, PeopleConfig, Probe, SLOT_EPSILON, SinkError, SmoothingConfig,
    StageTimings, SummaryBuilder, TrackProfile, Video, VideoAnalyzer, VideoInfo, VideoStatus,
};

use crate::{
    AnalysisWorker, BATCH, FAILED_REPEATEDLY, JobOutcome, WRITE_ATTEMPTS, WorkerConfig,
    WorkerError, WorkerPorts,
};

/// The fake video: `frames` frames at `fps` from time 0.
#[derive(Debug, Clone, Copy)]
struct Clip {
    frames: u64,
    fps: f64,
}

const CLIP: Clip = Clip {
    frames: 500,
    fps: 25.0,
};
/// Frames a single pass at 5 fps analyses.
const ANALYSED: u64 = 100;

impl Clip {
    fn time(&self, frame: u64) -> f64 {
        frame as f64 / self.fps
    }

    fn info(&self) -> VideoInfo {
        VideoInfo {
            duration_ms: (self.frames as f64 / self.fps * 1000.0).round() as u64,
            width: 640,
            height: 360,
            fps: self.fps,
            frame_count: self.frames,
            codec: "h264".into(),
            rotation: 0,
        }
    }

    /// The frames a single pass selects: the first of every `1/sample_fps` slot.
    fn single_pass(&self, sample_fps: f64) -> Vec<u64> {
        let mut last_slot = None;
        (0..self.frames)
            .filter(|&i| {
                if sample_fps <= 0.0 {
                    return true;
                }
                let slot = (self.time(i) * sample_fps + SLOT_EPSILON).floor();
                let first = last_slot.is_none_or(|last| slot > last);
                if first {
                    last_slot = Some(slot);
                }
                first
            })
            .collect()
    }

    /// What a run over `window` delivers: the single pass's frames inside it.
    fn window(&self, options: &AnalysisOptions) -> Vec<u64> {
        let window = options.window;
        self.single_pass(options.sample_fps)
            .into_iter()
            .filter(|&i| {
                i >= window.first_frame && window.end_s.is_none_or(|end| self.time(i) < end)
            })
            .collect()
    }

    /// One face per frame, in the same place all along, on the run's own track.
    fn frame(&self, frame: u64, track: u32) -> FrameResult {
        let mut emotions = EmotionScores::new(false);
        emotions.set(EmotionLabel::Happy, 0.7);
        emotions.set(EmotionLabel::Neutral, 0.2);
        emotions.set(EmotionLabel::Sad, 0.1);
        let face = DetectedFace {
            bbox: FaceBox {
                x: 200.0,
                y: 80.0,
                w: 120.0,
                h: 150.0,
            },
            score: 0.98,
            landmarks: Landmarks::default(),
        };
        FrameResult {
            frame,
            t_ms: (self.time(frame) * 1000.0).round() as u64,
            faces: vec![FaceResult::new(track, &face, emotions)],
        }
    }
}

/// The same face on every track: the tracks of all runs are one person.
fn profile(track: u32) -> TrackProfile {
    TrackProfile {
        track,
        embedding: vec![0.6, 0.8, 0.0, 0.0],
        samples: 3,
        quality: 0.9,
        thumbnail: Some(vec![0xff, 0xd8, 0xff, 0xd9]),
    }
}

type ErrorFn = Box<dyn FnOnce(&MediaSource) -> AnalysisError + Send>;

/// What one `analyze` call does; calls past the script run to the end of their window.
enum Run {
    Complete,
    /// Delivers `after` frames of the window, then fails.
    Fail {
        after: usize,
        error: ErrorFn,
    },
    /// Delivers `after` frames, runs `hook` on the analysis thread (a wait, a delete meanwhile),
    /// then carries on.
    Pause {
        after: usize,
        hook: Box<dyn FnOnce() + Send>,
    },
}

impl Run {
    fn fail(
        after: usize,
        error: impl FnOnce(&MediaSource) -> AnalysisError + Send + 'static,
    ) -> Self {
        Run::Fail {
            after,
            error: Box::new(error),
        }
    }

    fn pause(after: usize, hook: impl FnOnce() + Send + 'static) -> Self {
        Run::Pause {
            after,
            hook: Box::new(hook),
        }
    }

    /// Before the `n`th frame (or after the last, `n` = their number).
    fn at(self, n: usize, source: &MediaSource) -> Result<Run, AnalysisError> {
        match self {
            Run::Fail { after, error } if after == n => Err(error(source)),
            Run::Pause { after, hook } if after == n => {
                hook();
                Ok(Run::Complete)
            }
            run => Ok(run),
        }
    }
}

/// The path an engine's error names: the source as ffmpeg was given it.
fn path_of(source: &MediaSource) -> std::path::PathBuf {
    source.as_ffmpeg_input().into()
}

fn panicked(what: &'static str) -> impl FnOnce(&MediaSource) -> AnalysisError + Send {
    move |_| AnalysisError::Internal(format!("the {what} panicked: index out of bounds"))
}

fn truncated(source: &MediaSource) -> AnalysisError {
    AnalysisError::Truncated {
        path: path_of(source),
        detail: "partial file".into(),
    }
}

/// A scripted engine over [`CLIP`].
struct FakeAnalyzer {
    clip: Clip,
    /// Errors of the next `probe` calls; then probes succeed.
    probe_errors: Mutex<VecDeque<ErrorFn>>,
    runs: Mutex<VecDeque<Run>>,
    probes: AtomicU32,
    frame_listings: AtomicU32,
    /// The window of every `analyze` call, in order.
    windows: Mutex<Vec<DecodeWindow>>,
    people: PeopleConfig,
}

impl FakeAnalyzer {
    fn new(clip: Clip) -> Self {
        Self {
            clip,
            probe_errors: Mutex::default(),
            runs: Mutex::default(),
            probes: AtomicU32::new(0),
            frame_listings: AtomicU32::new(0),
            windows: Mutex::default(),
            people: PeopleConfig::default(),
        }
    }

    fn script(&self, run: Run) {
        self.runs.lock().unwrap().push_back(run);
    }

    fn fail_probe(&self, error: impl FnOnce(&MediaSource) -> AnalysisError + Send + 'static) {
        self.probe_errors.lock().unwrap().push_back(Box::new(error));
    }

    fn windows(&self) -> Vec<DecodeWindow> {
        self.windows.lock().unwrap().clone()
    }

    fn first_frames(&self) -> Vec<u64> {
        self.windows().iter().map(|w| w.first_frame).collect()
    }
}

impl VideoAnalyzer for FakeAnalyzer {
    fn probe(&self, source: &MediaSource) -> Result<Probe, AnalysisError> {
        self.probes.fetch_add(1, Ordering::SeqCst);
        if let Some(error) = self.probe_errors.lock().unwrap().pop_front() {
            return Err(error(source));
        }
        Ok(Probe {
            video: VideoInfo {
                frame_count: 0,
                ..self.clip.info()
            },
            start_s: 0.0,
        })
    }

    fn frame_times(&self, _source: &MediaSource) -> Result<Vec<f64>, AnalysisError> {
        self.frame_listings.fetch_add(1, Ordering::SeqCst);
        Ok((0..self.clip.frames).map(|i| self.clip.time(i)).collect())
    }

    fn analyze(
        &self,
        source: &MediaSource,
        options: &AnalysisOptions,
        sink: &mut dyn AnalysisSink,
    ) -> Result<AnalysisOutcome, AnalysisError> {
        self.windows.lock().unwrap().push(options.window);
        tracing::info!(window = ?options.window, "scripted analysis");
        let mut run = self
            .runs
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Run::Complete);
        let sink_error = |e: SinkError| AnalysisError::Sink(e.to_string());
        let model = ModelInfo {
            detector: "fake-detector".into(),
            classifier: "fake-classifier".into(),
            labels: EmotionLabel::ALL[..7].to_vec(),
        };
        let head = VideoInfo {
            frame_count: 0,
            ..self.clip.info()
        };
        sink.begin(&head, &model, options.sample_fps)
            .map_err(sink_error)?;
        let frames = self.clip.window(options);
        let mut summary = SummaryBuilder::new(false);
        for (n, &i) in frames.iter().enumerate() {
            run = run.at(n, source)?;
            if n == 0 {
                sink.track(&profile(options.first_track))
                    .map_err(sink_error)?;
            }
            let frame = self.clip.frame(i, options.first_track);
            sink.frame(&frame).map_err(sink_error)?;
            summary.add(&frame);
        }
        run.at(frames.len(), source)?;
        let video = self.clip.info();
        let summary = summary.finish();
        sink.finish(&video, &summary).map_err(sink_error)?;
        Ok(AnalysisOutcome {
            video,
            summary,
            timings: StageTimings::default(),
        })
    }

    fn has_contempt(&self) -> bool {
        false
    }

    fn people(&self) -> &PeopleConfig {
        &self.people
    }

    fn smoothing(&self) -> SmoothingConfig {
        SmoothingConfig::default()
    }
}

/// Holds an analysis thread until the test opens it: a process frozen mid-run.
#[derive(Default)]
struct Gate {
    /// (a run has arrived, the gate is open)
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

impl Gate {
    /// On the analysis thread. Gives up after a minute, so that a failing test cannot leave a
    /// thread behind for ever.
    fn arrive_and_wait(&self) {
        let mut state = self.state.lock().unwrap();
        state.0 = true;
        self.changed.notify_all();
        let (_state, _timeout) = self
            .changed
            .wait_timeout_while(state, Duration::from_secs(60), |s| !s.1)
            .unwrap();
    }

    async fn arrived(&self) {
        within("the run to reach the gate", async {
            while !self.state.lock().unwrap().0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
    }

    fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}

/// A guard against hanging, not a timed assertion.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .unwrap_or_else(|_| panic!("{what} took over a minute"))
}

struct Rig {
    store: Arc<MemoryStore>,
    blobs: Arc<MemoryBlobs>,
    queue: Arc<MemoryQueue>,
    webhooks: Arc<MemoryWebhooks>,
    deliveries: Arc<MemoryDeliveryQueue>,
    analyzer: Arc<FakeAnalyzer>,
}

impl Rig {
    fn new() -> Self {
        Self {
            store: Arc::default(),
            blobs: Arc::default(),
            queue: Arc::default(),
            webhooks: Arc::default(),
            deliveries: Arc::default(),
            analyzer: Arc::new(FakeAnalyzer::new(CLIP)),
        }
    }

    /// A rig whose store keeps chunks of `frames_per_chunk` frame numbers, as DynamoDB does.
    fn chunked(frames_per_chunk: u64) -> Self {
        Self {
            store: Arc::new(MemoryStore::chunked(frames_per_chunk)),
            ..Self::new()
        }
    }

    fn worker(&self, config: WorkerConfig) -> AnalysisWorker {
        AnalysisWorker::new(
            WorkerPorts {
                videos: self.store.clone(),
                ledger: self.store.clone(),
                results: self.store.clone(),
                blobs: self.blobs.clone(),
                jobs: self.queue.clone(),
                webhooks: self.webhooks.clone(),
                deliveries: self.deliveries.clone(),
            },
            self.analyzer.clone(),
            config,
        )
    }

    /// Stores an upload and returns the job its event would carry.
    async fn upload(&self) -> AnalysisJob {
        let id = uuid::Uuid::new_v4().to_string();
        let key = domain::object_key("u-1", &id, "mp4");
        let bytes = b"twenty seconds of video".to_vec();
        let size = bytes.len() as u64;
        self.blobs
            .objects
            .lock()
            .unwrap()
            .insert(key.clone(), bytes);
        self.store
            .create_video(&Video {
                size_bytes: Some(size),
                ..pending_video(&id, "u-1")
            })
            .await
            .unwrap();
        AnalysisJob::upload(key)
    }

    async fn video(&self, job: &AnalysisJob) -> Video {
        self.store.video(&video_id(job)).await.unwrap().unwrap()
    }

    /// Every stored frame, in order.
    async fn frames(&self, job: &AnalysisJob) -> Vec<FrameResult> {
        let id = video_id(job);
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = self.store.frames(&id, after, 40).await.unwrap();
            all.extend(page);
            match next {
                Some(n) => after = Some(n),
                None => return all,
            }
        }
    }

    async fn frame_numbers(&self, job: &AnalysisJob) -> Vec<u64> {
        self.frames(job).await.iter().map(|f| f.frame).collect()
    }

    fn queued(&self) -> Vec<AnalysisJob> {
        std::mem::take(&mut *self.queue.jobs.lock().unwrap())
    }

    /// Delivers queued jobs until none are left, each with a fresh deadline when given a budget.
    async fn drain(&self, worker: &AnalysisWorker, budget: Option<Duration>) -> Vec<JobOutcome> {
        let mut outcomes = Vec::new();
        for _ in 0..100 {
            let jobs = self.queued();
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

    /// The video's results are exactly one clean pass's: every frame it selects, once, with the
    /// face it saw; the summary is the one the stored frames give.
    async fn assert_one_pass(&self, job: &AnalysisJob) {
        let frames = self.frames(job).await;
        let expected = CLIP.single_pass(5.0);
        assert_eq!(
            frames.iter().map(|f| f.frame).collect::<Vec<_>>(),
            expected,
            "the same frames as one pass, each once"
        );
        for f in &frames {
            assert_eq!(f.t_ms, f.frame * 40);
            assert_eq!(f.faces.len(), 1, "frame {}", f.frame);
        }
        let video = self.video(job).await;
        assert_eq!(video.analysis.status, VideoStatus::Completed);
        assert_eq!(video.analysis.progress, 100);
        assert_eq!(video.analysis.frames_analyzed, ANALYSED);
        assert_eq!(video.analysis.video.as_ref().unwrap().frame_count, 500);
        assert!(video.analysis.processed_at.is_some());
        let summary = video.analysis.summary.expect("a summary");
        assert_eq!(summary.frames_analyzed, ANALYSED);
        let assembled = domain::assembly::assemble(
            self.store.as_ref(),
            &video.id,
            false,
            &PeopleConfig::default(),
            SmoothingConfig::default(),
        )
        .await
        .unwrap();
        assert_eq!(summary, assembled, "what the stored frames give");
        assert_eq!(summary.people.len(), 1, "one face all along: one person");
        assert_eq!(summary.people[0].frames, ANALYSED);
        let thumbnail = self
            .blobs
            .get_object(&domain::person_thumbnail_key(&video.id, 1))
            .await
            .unwrap()
            .expect("person 1 has a thumbnail");
        assert_eq!(&thumbnail[..2], &[0xff, 0xd8], "a JPEG");
    }
}

fn video_id(job: &AnalysisJob) -> String {
    domain::parse_object_key(&job.key).unwrap().1.to_string()
}

/// Every frame checkpoints (so where a run stops is exact), and leases outlive every test.
fn quick() -> WorkerConfig {
    WorkerConfig {
        lease: Duration::from_secs(60),
        checkpoint_every: Duration::ZERO,
        ..WorkerConfig::default()
    }
}

fn skipped(outcome: &JobOutcome) -> &str {
    match outcome {
        JobOutcome::Skipped { reason } => reason,
        other => panic!("expected a skip: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_is_analysed_once_even_when_its_event_comes_twice() {
    let rig = Rig::new();
    let worker = rig.worker(quick());
    let job = rig.upload().await;
    let first = worker.handle(&job, None).await.unwrap();
    assert_eq!(first, JobOutcome::Completed { frames: ANALYSED });
    let again = worker.handle(&job, None).await.unwrap();
    assert!(skipped(&again).contains("COMPLETED"), "{again:?}");
    rig.assert_one_pass(&job).await;
    assert_eq!(rig.analyzer.probes.load(Ordering::SeqCst), 1);
    assert_eq!(rig.analyzer.windows().len(), 1, "analysed once");
    assert_eq!(
        rig.analyzer.frame_listings.load(Ordering::SeqCst),
        0,
        "a short video is not split"
    );
    assert!(
        rig.queued().is_empty(),
        "a short video needs no other message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_fail_with_a_reason_and_are_not_retried() {
    let rig = Rig::new();
    let worker = rig.worker(quick());
    // not a video: the probe says so
    let not_a_video = rig.upload().await;
    rig.analyzer
        .fail_probe(|source| AnalysisError::NotMediaFile {
            path: path_of(source),
            detail: "Invalid data found when processing input".into(),
        });
    // truncated: the analysis fails after 10 frames
    let cut = rig.upload().await;
    rig.analyzer.script(Run::fail(10, truncated));
    for (job, what, kept) in [(&not_a_video, "not a video", 0), (&cut, "truncated", 10)] {
        let outcome = worker.handle(job, None).await;
        let Ok(JobOutcome::Rejected { error }) = outcome else {
            panic!("{what}: {outcome:?}");
        };
        assert!(error.contains(what), "{error}");
        let video = rig.video(job).await;
        assert_eq!(video.analysis.status, VideoStatus::Failed, "{what}");
        assert_eq!(video.analysis.error.as_deref(), Some(error.as_str()));
        assert_eq!(video.analysis.frames_analyzed, kept, "{what}");
        assert!(
            !error.contains("blobs.example") && !error.contains(&job.key),
            "no server paths or URLs: {error}"
        );
        assert!(error.contains("the uploaded file"), "{what}: {error}");
        // a redelivery changes nothing, and analyses nothing
        let calls = (
            rig.analyzer.probes.load(Ordering::SeqCst),
            rig.analyzer.windows().len(),
        );
        let again = worker.handle(job, None).await.unwrap();
        assert!(skipped(&again).contains("FAILED"), "{again:?}");
        assert_eq!(
            (
                rig.analyzer.probes.load(Ordering::SeqCst),
                rig.analyzer.windows().len()
            ),
            calls
        );
        assert_eq!(
            rig.video(job).await.analysis.error.as_deref(),
            Some(error.as_str())
        );
    }
    assert_eq!(
        rig.frame_numbers(&cut).await.len(),
        10,
        "what was analysed stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn videos_over_the_length_limit_are_rejected() {
    let rig = Rig::new();
    let worker = rig.worker(WorkerConfig {
        max_video: Duration::from_secs(10),
        ..quick()
    });
    let job = rig.upload().await;
    let outcome = worker.handle(&job, None).await.unwrap();
    assert_eq!(
        outcome,
        JobOutcome::Rejected {
            error: "the video is 0:00:20 long; the limit is 0:00:10".into()
        }
    );
    assert_eq!(rig.video(&job).await.analysis.status, VideoStatus::Failed);
    assert!(rig.analyzer.windows().is_empty(), "nothing analysed");
    assert_eq!(rig.analyzer.frame_listings.load(Ordering::SeqCst), 0);
    assert!(matches!(
        worker.handle(&job, None).await.unwrap(),
        JobOutcome::Skipped { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_analysis_is_resumed_by_the_redelivery_without_duplicates() {
    killed_and_resumed(Rig::new()).await;
    // the same over a store of chunks: the resumed run starts mid-chunk
    killed_and_resumed(Rig::chunked(60)).await;
}

async fn killed_and_resumed(rig: Rig) {
    let job = rig.upload().await;
    // the first run freezes after 40 frames, holding its lease (a process frozen or killed)
    let gate = Arc::new(Gate::default());
    let frozen = gate.clone();
    rig.analyzer
        .script(Run::pause(40, move || frozen.arrive_and_wait()));
    let doomed = rig.worker(quick());
    let doomed_job = job.clone();
    let run = tokio::spawn(async move { doomed.handle(&doomed_job, None).await });
    gate.arrived().await;

    let stored = rig.frame_numbers(&job).await;
    assert_eq!(
        stored,
        CLIP.single_pass(5.0)[..40],
        "checkpointed as it went"
    );
    let video = rig.video(&job).await;
    assert_eq!(video.analysis.status, VideoStatus::Processing);
    assert!(
        video.analysis.progress > 0 && video.analysis.progress < 100,
        "{}",
        video.analysis.progress
    );
    assert_eq!(video.analysis.frames_analyzed, 40);

    // while the lease lives, the redelivered message is handed back for later
    let worker = rig.worker(quick());
    assert!(matches!(
        worker.handle(&job, None).await,
        Err(WorkerError::Busy(0))
    ));
    // the lease runs out: the redelivery takes over from the last checkpoint
    rig.store.expire_leases();
    let outcome = worker.handle(&job, None).await.unwrap();
    assert_eq!(outcome, JobOutcome::Completed { frames: ANALYSED });
    assert_eq!(
        rig.analyzer.first_frames(),
        vec![0, 195],
        "resumed at the 40th frame, the last one stored"
    );
    rig.assert_one_pass(&job).await;
    let completed = rig.video(&job).await.analysis;

    // the frozen run wakes up: it has lost its lease and stops at its next checkpoint. The one
    // frame it wrote before that is one of the video's frames, rewritten with the same results
    // under its own track, which the summary links to the same person.
    gate.open();
    let late = within("the frozen run", run).await.unwrap().unwrap();
    assert!(skipped(&late).contains("lost"), "{late:?}");
    assert_eq!(rig.frame_numbers(&job).await, CLIP.single_pass(5.0));
    assert_eq!(rig.video(&job).await.analysis, completed);
    let people = completed.summary.unwrap().people;
    for frame in rig.frames(&job).await {
        let track = frame.faces[0].track;
        assert!(
            people.iter().any(|p| p.tracks.contains(&track)),
            "frame {}: track {track} belongs to nobody",
            frame.frame
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_result_writes_are_retried_and_nothing_is_lost() {
    let rig = Rig::new();
    let worker = rig.worker(quick());
    let job = rig.upload().await;
    rig.store.fail_next(StoreOperation::PutFrames, 2);
    let outcome = worker.handle(&job, None).await.unwrap();
    assert_eq!(outcome, JobOutcome::Completed { frames: ANALYSED });
    assert!(rig.store.calls(StoreOperation::PutFrames) > ANALYSED as u32 + 1);
    rig.assert_one_pass(&job).await;

    // throttling that does not pass ends the run; it gives its lease back, and the redelivered
    // message runs at once and completes
    let rig = Rig::new();
    let worker = rig.worker(quick());
    let job = rig.upload().await;
    rig.store
        .fail_next(StoreOperation::PutFrames, WRITE_ATTEMPTS);
    assert!(matches!(
        worker.handle(&job, None).await,
        Err(WorkerError::Analysis(_))
    ));
    assert_eq!(
        rig.video(&job).await.analysis.status,
        VideoStatus::Processing
    );
    assert_eq!(
        worker.handle(&job, None).await.unwrap(),
        JobOutcome::Completed { frames: ANALYSED }
    );
    rig.assert_one_pass(&job).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_that_cannot_finish_before_the_deadline_fans_out_into_segments() {
    let rig = Rig::new();
    // 30 s of working time at a planned 1 analysed frame/s fits 6 s of video at 5 fps: four
    // segments of the 20 s clip (however slowly the test gets to planning)
    let budget = Duration::from_secs(31);
    let worker = rig.worker(WorkerConfig {
        deadline_margin: Duration::from_secs(1),
        planning_fps: 1.0,
        ..quick()
    });
    let job = rig.upload().await;
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
    assert_eq!(rig.analyzer.frame_listings.load(Ordering::SeqCst), 1);
    let plan = rig.store.plan(&video_id(&job)).await.unwrap().unwrap();
    let starts: Vec<u64> = plan.segments.iter().map(|s| s.first_frame).collect();
    assert_eq!(starts.len(), 4, "{starts:?}");
    let queued = rig.queue.jobs.lock().unwrap().clone();
    assert_eq!(
        queued.iter().map(|j| j.segment).collect::<Vec<_>>(),
        vec![Some(1), Some(2), Some(3)]
    );
    assert_eq!(
        rig.video(&job).await.analysis.status,
        VideoStatus::Processing
    );
    let outcomes = rig.drain(&worker, Some(budget)).await;
    assert_eq!(
        outcomes,
        vec![
            JobOutcome::SegmentDone {
                index: 1,
                done: 2,
                total: 4
            },
            JobOutcome::SegmentDone {
                index: 2,
                done: 3,
                total: 4
            },
            JobOutcome::Completed { frames: ANALYSED }
        ]
    );
    assert_eq!(rig.analyzer.first_frames(), starts, "each segment run once");
    rig.assert_one_pass(&job).await;
    // four segments, four runs with their own tracks: one person
    let summary = rig.video(&job).await.analysis.summary.unwrap();
    assert_eq!(summary.people[0].tracks.len(), 4, "{:?}", summary.people[0]);
    // a duplicate segment message after the end is a no-op
    let late = worker
        .handle(&AnalysisJob::segment(job.key.clone(), 2), None)
        .await
        .unwrap();
    assert!(skipped(&late).contains("COMPLETED"), "{late:?}");
    assert_eq!(rig.analyzer.windows().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_videos_split_by_length_and_deadline_stops_continue_where_they_left_off() {
    // split by the configured segment length, no deadline (the local server's case)
    let rig = Rig::new();
    let worker = rig.worker(WorkerConfig {
        segment_seconds: 5.0,
        ..quick()
    });
    let job = rig.upload().await;
    let first = worker.handle(&job, None).await.unwrap();
    assert_eq!(
        first,
        JobOutcome::SegmentDone {
            index: 0,
            done: 1,
            total: 4
        }
    );
    let outcomes = rig.drain(&worker, None).await;
    assert_eq!(
        outcomes.last(),
        Some(&JobOutcome::Completed { frames: ANALYSED })
    );
    assert_eq!(rig.analyzer.first_frames(), vec![0, 125, 250, 375]);
    rig.assert_one_pass(&job).await;

    // a single segment whose run meets the deadline saves its place and queues the rest. (The
    // plan is recorded beforehand, so that only the stop depends on the clock; the analysis
    // waits after 30 frames until the run must stop.)
    let rig = Rig::new();
    let margin = Duration::from_secs(1);
    let worker = rig.worker(WorkerConfig {
        deadline_margin: margin,
        ..quick()
    });
    let job = rig.upload().await;
    rig.store
        .start_analysis(&video_id(&job), &AnalysisPlan::single(5.0, 0.0, 20_000))
        .await
        .unwrap();
    let deadline = SystemTime::now() + margin + Duration::from_millis(150);
    rig.analyzer.script(Run::pause(30, move || {
        while SystemTime::now() < deadline - margin {
            std::thread::sleep(Duration::from_millis(5));
        }
    }));
    let first = worker.handle(&job, Some(deadline)).await.unwrap();
    assert_eq!(first, JobOutcome::Continued { index: 0 });
    let stored = rig.frame_numbers(&job).await;
    assert!(
        !stored.is_empty() && stored.len() <= 31,
        "{} frames before the stop",
        stored.len()
    );
    assert_eq!(
        rig.queue.jobs.lock().unwrap().clone(),
        vec![AnalysisJob::segment(job.key.clone(), 0)]
    );
    let outcomes = rig.drain(&worker, None).await;
    assert_eq!(outcomes, vec![JobOutcome::Completed { frames: ANALYSED }]);
    assert_eq!(
        rig.analyzer.first_frames(),
        vec![0, *stored.last().unwrap()],
        "the continuation starts at the last stored frame"
    );
    rig.assert_one_pass(&job).await;
}

/// Over a store that keeps chunks (DynamoDB), the worker writes a chunk at a time, when the
/// next one starts, so that each is written once, and checkpoints only at a chunk's end (here:
/// the video's, as the checkpoint interval is long). A stop for the deadline writes the open
/// chunk unfinished, and the continuation completes it: that chunk alone is written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_the_stores_chunks_and_each_chunk_is_written_once() {
    const CHUNK: u64 = 60;
    let chunks = CLIP.frames.div_ceil(CHUNK);
    let written_chunks = |rig: &Rig| -> Vec<u64> {
        rig.store
            .frame_writes()
            .iter()
            .map(|write| {
                let chunk = write[0] / CHUNK;
                assert!(
                    write.iter().all(|f| f / CHUNK == chunk),
                    "a write across chunks: {write:?}"
                );
                chunk
            })
            .collect()
    };
    let unhurried = WorkerConfig {
        lease: Duration::from_secs(60),
        checkpoint_every: Duration::from_secs(3600),
        deadline_margin: Duration::from_secs(1),
        ..WorkerConfig::default()
    };

    let rig = Rig::chunked(CHUNK);
    let worker = rig.worker(unhurried.clone());
    let job = rig.upload().await;
    assert_eq!(
        worker.handle(&job, None).await.unwrap(),
        JobOutcome::Completed { frames: ANALYSED }
    );
    rig.assert_one_pass(&job).await;
    assert_eq!(written_chunks(&rig), (0..chunks).collect::<Vec<_>>());
    assert_eq!(rig.store.calls(StoreOperation::Checkpoint), 1, "at the end");

    // the deadline comes after 30 frames (as in the test of deadline stops above)
    let rig = Rig::chunked(CHUNK);
    let worker = rig.worker(unhurried.clone());
    let job = rig.upload().await;
    rig.store
        .start_analysis(&video_id(&job), &AnalysisPlan::single(5.0, 0.0, 20_000))
        .await
        .unwrap();
    let margin = unhurried.deadline_margin;
    let deadline = SystemTime::now() + margin + Duration::from_millis(150);
    rig.analyzer.script(Run::pause(30, move || {
        while SystemTime::now() < deadline - margin {
            std::thread::sleep(Duration::from_millis(5));
        }
    }));
    let first = worker.handle(&job, Some(deadline)).await.unwrap();
    assert_eq!(first, JobOutcome::Continued { index: 0 });
    let stopped_in = rig.frame_numbers(&job).await.last().unwrap() / CHUNK;
    let outcomes = rig.drain(&worker, None).await;
    assert_eq!(outcomes, vec![JobOutcome::Completed { frames: ANALYSED }]);
    rig.assert_one_pass(&job).await;
    let mut expected: Vec<u64> = (0..chunks).collect();
    expected.insert(stopped_in as usize, stopped_in);
    assert_eq!(written_chunks(&rig), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_that_crash_are_capped_and_the_video_fails_repeatedly_instead_of_cycling() {
    let rig = Rig::new();
    let worker = rig.worker(quick());
    let job = rig.upload().await;
    // three runs whose analysis panics (caught by the engine, reported as an internal error)
    for _ in 0..3 {
        rig.analyzer.script(Run::fail(5, panicked("classifier")));
    }
    for run in 0..3 {
        let outcome = worker.handle(&job, None).await;
        assert!(
            matches!(&outcome, Err(WorkerError::Analysis(e)) if e.contains("panicked")),
            "run {run}: {outcome:?}"
        );
        if run == 0 {
            // a crashed run keeps its lease: the retry waits for it to run out
            assert!(matches!(
                worker.handle(&job, None).await,
                Err(WorkerError::Busy(0))
            ));
        }
        rig.store.expire_leases();
    }
    assert_eq!(
        rig.analyzer.first_frames(),
        vec![0, 20, 40],
        "each retry resumed where the crashed run got to"
    );
    let outcome = worker.handle(&job, None).await.unwrap();
    assert_eq!(
        outcome,
        JobOutcome::Rejected {
            error: FAILED_REPEATEDLY.into()
        },
        "the fourth run gives up"
    );
    assert_eq!(rig.analyzer.windows().len(), 3, "without analysing again");
    let video = rig.video(&job).await;
    assert_eq!(video.analysis.status, VideoStatus::Failed);
    assert_eq!(video.analysis.error.as_deref(), Some(FAILED_REPEATEDLY));
    // acknowledged for good: a redelivery is skipped, not run again
    rig.store.expire_leases();
    assert!(matches!(
        worker.handle(&job, None).await.unwrap(),
        JobOutcome::Skipped { .. }
    ));
    assert_eq!(rig.analyzer.windows().len(), 3);

    // the lease covers the probe too: a file that crashes the probe is capped the same way
    let rig = Rig::new();
    let worker = rig.worker(quick());
    let job = rig.upload().await;
    for _ in 0..3 {
        rig.analyzer.fail_probe(panicked("probe"));
    }
    for run in 0..3 {
        let outcome = worker.handle(&job, None).await;
        assert!(
            matches!(&outcome, Err(WorkerError::Analysis(_))),
            "run {run}: {outcome:?}"
        );
        rig.store.expire_leases();
    }
    assert_eq!(
        worker.handle(&job, None).await.unwrap(),
        JobOutcome::Rejected {
            error: FAILED_REPEATEDLY.into()
        }
    );
    assert_eq!(rig.analyzer.probes.load(Ordering::SeqCst), 3);
    assert!(rig.analyzer.windows().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failures_give_the_lease_back_and_never_count_as_crashes() {
    let rig = Rig::new();
    let worker = rig.worker(quick());
    let job = rig.upload().await;
    // more failed runs than the crash cap allows, each stopped by the store: two at their first
    // checkpoint (inside the analysis), two when counting the finished segment (after it)
    rig.store.fail_next(StoreOperation::Checkpoint, 2);
    rig.store.fail_next(StoreOperation::FinishSegment, 2);
    for run in 0..4 {
        // no lease to wait for: each run gave it back
        let outcome = worker.handle(&job, None).await;
        match run {
            0 | 1 => assert!(
                matches!(&outcome, Err(WorkerError::Analysis(e)) if e.contains("ProvisionedThroughputExceeded")),
                "run {run}: {outcome:?}"
            ),
            _ => assert!(
                matches!(&outcome, Err(WorkerError::Store(_))),
                "run {run}: {outcome:?}"
            ),
        }
        assert_eq!(
            rig.video(&job).await.analysis.status,
            VideoStatus::Processing
        );
    }
    // a redrive after the store recovers completes normally
    let outcome = worker.handle(&job, None).await.unwrap();
    assert_eq!(outcome, JobOutcome::Completed { frames: ANALYSED });
    assert_eq!(
        rig.analyzer.first_frames(),
        vec![0, 0, 0, 495, 495],
        "runs stopped before a checkpoint start over; the others resume"
    );
    rig.assert_one_pass(&job).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_deleted_mid_analysis_stops_at_the_next_checkpoint_and_leaves_no_rows() {
    let rig = Rig::new();
    let job = rig.upload().await;
    let id = video_id(&job);
    // after two frames, the video is deleted as `DELETE /videos/{id}` does it (the object,
    // then the record with everything the store holds); the analysis goes on writing
    let (store, blobs, key, deleted) = (
        rig.store.clone(),
        rig.blobs.clone(),
        job.key.clone(),
        id.clone(),
    );
    rig.analyzer.script(Run::pause(2, move || {
        let handle = tokio::runtime::Handle::current();
        handle.block_on(blobs.delete(&key)).unwrap();
        handle
            .block_on(blobs.delete_prefix(&domain::results_prefix(&deleted)))
            .unwrap();
        handle.block_on(store.delete_video(&deleted)).unwrap();
    }));
    let worker = rig.worker(quick());
    let outcome = worker.handle(&job, None).await.unwrap();
    assert!(skipped(&outcome).contains("deleted"), "{outcome:?}");
    assert_eq!(
        rig.store.calls(StoreOperation::PutFrames),
        3,
        "a frame was written after the delete"
    );
    assert!(rig.frames(&job).await.is_empty(), "no result rows left");
    assert!(rig.store.tracks(&id).await.unwrap().is_empty());
    assert!(rig.store.video(&id).await.unwrap().is_none());
    assert!(
        rig.blobs.objects.lock().unwrap().is_empty(),
        "no object left"
    );
    // the upload event, redelivered later, finds nothing to do and leaves nothing behind
    let late = worker.handle(&job, None).await.unwrap();
    assert!(matches!(late, JobOutcome::Skipped { .. }), "{late:?}");
    assert!(rig.frames(&job).await.is_empty());
    assert_eq!(rig.analyzer.windows().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_analysis_keeps_every_frame_decoded_before_the_failure() {
    let rig = Rig::new();
    // no time-based checkpoint: only full batches would be written before the failure
    let worker = rig.worker(WorkerConfig {
        checkpoint_every: Duration::from_secs(3600),
        ..quick()
    });
    let delivered: usize = 73;
    assert!(
        !delivered.is_multiple_of(BATCH),
        "a partial batch is pending at the failure"
    );
    let job = rig.upload().await;
    rig.analyzer.script(Run::fail(delivered, truncated));
    let outcome = worker.handle(&job, None).await.unwrap();
    assert!(
        matches!(&outcome, JobOutcome::Rejected { error } if error.contains("truncated")),
        "{outcome:?}"
    );
    assert_eq!(
        rig.frame_numbers(&job).await,
        CLIP.single_pass(5.0)[..delivered],
        "every frame decoded before the failure is kept"
    );
    let video = rig.video(&job).await;
    assert_eq!(video.analysis.status, VideoStatus::Failed);
    assert_eq!(video.analysis.frames_analyzed, delivered as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_cut_by_the_network_is_retried_and_not_held_against_the_upload() {
    let rig = Rig::new();
    let worker = rig.worker(quick());
    let job = rig.upload().await;
    // ffmpeg reading the presigned URL: the connection drops after 20 frames
    rig.analyzer
        .script(Run::fail(20, |source| AnalysisError::CorruptStream {
            path: path_of(source),
            frames_decoded: 100,
            detail: "Connection reset by peer".into(),
        }));
    assert!(matches!(
        worker.handle(&job, None).await,
        Err(WorkerError::Analysis(_))
    ));
    assert_eq!(
        rig.video(&job).await.analysis.status,
        VideoStatus::Processing,
        "not rejected"
    );
    // the lease was given back: the retry runs at once, from the checkpoint
    assert_eq!(
        worker.handle(&job, None).await.unwrap(),
        JobOutcome::Completed { frames: ANALYSED }
    );
    assert_eq!(rig.analyzer.first_frames(), vec![0, 95]);
    rig.assert_one_pass(&job).await;
}

/// Every log line of this test process as JSON (Lambda's format), from every thread: the
/// blocking pool's too, which a thread's own default subscriber would miss. Installed once, as
/// the process's subscriber; tests find their own lines by their video.
struct JsonLogs(Mutex<Vec<u8>>);

struct SharedBuffer(&'static JsonLogs);

impl std::io::Write for SharedBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl JsonLogs {
    fn capture() -> &'static JsonLogs {
        static LOGS: std::sync::OnceLock<&'static JsonLogs> = std::sync::OnceLock::new();
        LOGS.get_or_init(|| {
            let logs: &'static JsonLogs = Box::leak(Box::new(JsonLogs(Mutex::new(Vec::new()))));
            let subscriber = tracing_subscriber::fmt()
                .json()
                .with_writer(move || SharedBuffer(logs))
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
            logs
        })
    }

    /// The line whose message is `message`, logged in the span of `video_id`'s job.
    fn line(&self, message: &str, video_id: &str) -> serde_json::Value {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .find(|line| {
                line["fields"]["message"] == message
                    && line["spans"]
                        .as_array()
                        .is_some_and(|spans| spans.iter().any(|s| s["video_id"] == video_id))
            })
            .unwrap_or_else(|| panic!("no {message:?} line in the job of {video_id}:\n{text}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_about_a_job_names_its_video_and_its_owner() {
    let rig = Rig::new();
    let worker = rig.worker(quick());
    let job = rig.upload().await;
    let (user_id, video_id) = domain::parse_object_key(&job.key).unwrap();
    let logs = JsonLogs::capture();
    worker.handle(&job, None).await.unwrap();
    // the outcome, logged in the job's span; a line from inside the run, in its span list; and
    // the analyzer's, from the blocking pool
    let done = logs.line("job done", video_id);
    assert_eq!(done["span"]["name"], "job", "{done}");
    assert_eq!(done["span"]["user_id"], user_id, "{done}");
    let completed = logs.line("analysis completed", video_id);
    assert!(
        completed["spans"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "job" && s["user_id"] == user_id),
        "{completed}"
    );
    let analysed = logs.line("scripted analysis", video_id);
    assert_eq!(analysed["span"]["name"], "job", "{analysed}");
}

/// Counts the analyses in progress on a [`FakeAnalyzer`]. The first `meet` analyses wait for
/// each other (at most a minute), so that a test sees them in progress together when they can
/// be; the others go straight on.
struct AtOnce {
    inner: Arc<FakeAnalyzer>,
    /// (in progress, arrived in all, most in progress at once)
    state: Mutex<(usize, usize, usize)>,
    changed: Condvar,
    meet: usize,
}

impl AtOnce {
    fn new(inner: Arc<FakeAnalyzer>, meet: usize) -> Self {
        Self {
            inner,
            state: Mutex::default(),
            changed: Condvar::new(),
            meet,
        }
    }

    fn most_at_once(&self) -> usize {
        self.state.lock().unwrap().2
    }
}

impl VideoAnalyzer for AtOnce {
    fn probe(&self, source: &MediaSource) -> Result<Probe, AnalysisError> {
        self.inner.probe(source)
    }

    fn frame_times(&self, source: &MediaSource) -> Result<Vec<f64>, AnalysisError> {
        self.inner.frame_times(source)
    }

    fn analyze(
        &self,
        source: &MediaSource,
        options: &AnalysisOptions,
        sink: &mut dyn AnalysisSink,
    ) -> Result<AnalysisOutcome, AnalysisError> {
        let mut state = self.state.lock().unwrap();
        state.0 += 1;
        state.1 += 1;
        state.2 = state.2.max(state.0);
        self.changed.notify_all();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, Duration::from_secs(60), |s| s.1 < self.meet)
            .unwrap();
        drop(state);
        let result = self.inner.analyze(source, options, sink);
        self.state.lock().unwrap().0 -= 1;
        result
    }

    fn has_contempt(&self) -> bool {
        false
    }

    fn people(&self) -> &PeopleConfig {
        self.inner.people()
    }

    fn smoothing(&self) -> SmoothingConfig {
        SmoothingConfig::default()
    }
}

/// The local server's queue with `at_once` analyses at a time: four uploads queued together all
/// complete, and the most analyses in progress at once is `at_once`.
async fn four_uploads_on_the_local_queue(at_once: usize) -> usize {
    let rig = Rig::new();
    let analyzer = Arc::new(AtOnce::new(rig.analyzer.clone(), at_once));
    let worker = AnalysisWorker::new(
        WorkerPorts {
            videos: rig.store.clone(),
            ledger: rig.store.clone(),
            results: rig.store.clone(),
            blobs: rig.blobs.clone(),
            jobs: rig.queue.clone(),
            webhooks: rig.webhooks.clone(),
            deliveries: rig.deliveries.clone(),
        },
        analyzer.clone(),
        quick(),
    );
    let (queue, jobs) = tokio::sync::mpsc::unbounded_channel();
    let mut uploads = Vec::new();
    for _ in 0..4 {
        let job = rig.upload().await;
        queue.send(job.clone()).unwrap();
        uploads.push(job);
    }
    let serving = tokio::spawn(Arc::new(worker).serve_queue(
        jobs,
        rig.queue.clone(),
        std::num::NonZeroUsize::new(at_once).unwrap(),
    ));
    for job in &uploads {
        within("every upload to complete", async {
            while rig.video(job).await.analysis.status != VideoStatus::Completed {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        rig.assert_one_pass(job).await;
    }
    drop(queue);
    within("the queue to stop when its sender is gone", serving)
        .await
        .unwrap();
    assert!(rig.queued().is_empty(), "nothing was redelivered");
    analyzer.most_at_once()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_queue_with_one_slot_runs_one_analysis_at_a_time() {
    assert_eq!(four_uploads_on_the_local_queue(1).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_queue_runs_as_many_analyses_at_once_as_configured() {
    assert_eq!(four_uploads_on_the_local_queue(2).await, 2);
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_runs_on_a_thread_of_its_own_at_the_configured_niceness() {
    fn niceness() -> i32 {
        // SAFETY: reads the calling thread's niceness
        unsafe { libc::getpriority(libc::PRIO_PROCESS as _, 0) }
    }
    let rig = Rig::new();
    let worker = rig.worker(WorkerConfig {
        engine_nice: 5,
        ..quick()
    });
    let before = niceness();
    let (name, nice) = worker
        .on_engine_thread("test", || {
            let name = std::thread::current().name().map(str::to_string);
            (name, niceness())
        })
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("engine test"));
    assert_eq!(nice, (before + 5).min(19));
    assert_eq!(niceness(), before, "the runtime's threads keep theirs");
}

/// An endpoint of `owner`'s taking `events`, registered now.
async fn endpoint_taking(
    rig: &Rig,
    owner: &str,
    events: &[domain::webhooks::WebhookEvent],
) -> String {
    use domain::webhooks::{WebhookEndpoint, WebhookStore};
    let now = chrono::Utc::now() - chrono::Duration::seconds(1);
    let id = domain::webhooks::new_endpoint_id();
    rig.webhooks
        .create_endpoint(&WebhookEndpoint {
            id: id.clone(),
            user_id: owner.into(),
            url: "https://hooks.example.com/x".into(),
            events: events.to_vec(),
            description: String::new(),
            sealed_secret: "v1.sealed".into(),
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
    id
}

/// An endpoint of `owner`'s taking both ends of an analysis, registered now.
async fn endpoint_of(rig: &Rig, owner: &str) -> String {
    use domain::webhooks::WebhookEvent;
    let ends = [WebhookEvent::VideoCompleted, WebhookEvent::VideoFailed];
    endpoint_taking(rig, owner, &ends).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_an_analysis_is_announced_once_after_the_final_state_is_stored() {
    let rig = Rig::new();
    let endpoint = endpoint_of(&rig, "u-1").await;
    endpoint_of(&rig, "someone-else").await;
    let worker = rig.worker(quick());
    let job = rig.upload().await;
    assert_eq!(
        worker.handle(&job, None).await.unwrap(),
        JobOutcome::Completed { frames: ANALYSED }
    );
    let deliveries = rig.webhooks.all_deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].log, endpoint);
    let payload: serde_json::Value = serde_json::from_str(&deliveries[0].payload).unwrap();
    assert_eq!(payload["type"], "video.completed");
    assert_eq!(payload["data"]["video_id"], video_id(&job).as_str());
    // the payload is the stored final state, summary included
    assert_eq!(payload["data"]["status"], "COMPLETED");
    assert_eq!(payload["data"]["frame_count"], ANALYSED);
    let summary = &payload["data"]["summary"];
    assert!(
        summary["people"].is_array() && summary["dominant"].is_string(),
        "{payload}"
    );
    assert!(summary.get("timeline").is_none() && summary.get("tracks").is_none());
    assert_eq!(rig.deliveries.take().len(), 1);

    // the event again (or a run that died after storing the end): no second delivery, and the
    // one never attempted is queued again
    worker.handle(&job, None).await.unwrap();
    assert_eq!(rig.webhooks.all_deliveries().len(), 1);
    assert_eq!(rig.deliveries.take().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_upload_is_announced_as_failed_with_its_reason() {
    let rig = Rig::new();
    endpoint_of(&rig, "u-1").await;
    let worker = rig.worker(quick());
    let job = rig.upload().await;
    rig.analyzer
        .fail_probe(|source| AnalysisError::NotMediaFile {
            path: path_of(source),
            detail: "Invalid data found when processing input".into(),
        });
    assert!(matches!(
        worker.handle(&job, None).await,
        Ok(JobOutcome::Rejected { .. })
    ));
    let deliveries = rig.webhooks.all_deliveries();
    assert_eq!(deliveries.len(), 1);
    let payload: serde_json::Value = serde_json::from_str(&deliveries[0].payload).unwrap();
    assert_eq!(payload["type"], "video.failed");
    assert_eq!(payload["data"]["status"], "FAILED");
    assert!(
        payload["data"]["error"]
            .as_str()
            .unwrap()
            .contains("not a video"),
        "{payload}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_announced_at_each_tenth_to_endpoints_that_take_it() {
    use domain::webhooks::WebhookEvent;
    let rig = Rig::new();
    let progress_endpoint = endpoint_taking(&rig, "u-1", &[WebhookEvent::VideoProgress]).await;
    endpoint_of(&rig, "u-1").await;
    // quick() checkpoints at every write, so progress passes several tenths
    let worker = rig.worker(quick());
    let job = rig.upload().await;
    assert_eq!(
        worker.handle(&job, None).await.unwrap(),
        JobOutcome::Completed { frames: ANALYSED }
    );
    let progress: Vec<u64> = rig
        .webhooks
        .all_deliveries()
        .iter()
        .filter(|d| d.event == WebhookEvent::VideoProgress)
        .map(|d| {
            assert_eq!(d.log, progress_endpoint);
            let payload: serde_json::Value = serde_json::from_str(&d.payload).unwrap();
            assert_eq!(payload["type"], "video.progress");
            payload["data"]["progress"].as_u64().unwrap()
        })
        .collect();
    assert!(!progress.is_empty(), "no progress announced");
    assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");
    assert!(
        progress
            .iter()
            .all(|p| p % 10 == 0 && (10..100).contains(p)),
        "{progress:?}"
    );
    // the end still goes to the endpoint that takes it, once
    let ends = rig
        .webhooks
        .all_deliveries()
        .iter()
        .filter(|d| d.event == WebhookEvent::VideoCompleted)
        .count();
    assert_eq!(ends, 1);
}
