//! The analysis worker end to end: the real engine, SQLite and files. Whether the video is
//! analysed in one run, in segments, or resumed after its process was killed, the results are
//! exactly those of one clean pass, with the same people and smoothed emotions; a broken upload
//! fails with a reason the uploader can read. (The worker's state machine itself, with a
//! scripted engine and in-memory ports, is tested in `shared/worker/src/tests.rs`.)

use crate::common;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use domain::memory::MemoryQueue;
use domain::ports::{
    AnalysisJob, AnalysisLedger, BlobStore, PlanDecision, ProgressDelta, ResultStore, SegmentClaim,
    VideoStore,
};
use domain::{
    AnalysisOptions, AnalysisPlan, AnalysisSink, Checkpoint, DecodeWindow, FrameResult,
    MediaSource, SinkError, Summary, TrackProfile, Video, VideoStatus,
};
use engine::{Analyzer, EngineConfig};
use local_server::{FileBlobs, SqliteStore};
use worker::{AnalysisWorker, JobOutcome, WorkerConfig, WorkerPorts};

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
        {
            let mut sink = domain::assembly::PeopleSink::new(
                &mut collect,
                engine.config().people,
                engine.config().smoothing,
                engine.has_contempt(),
            )
            .unwrap();
            engine
                .analyze(
                    &MediaSource::File(common::video(PEXELS)),
                    &AnalysisOptions::sampled(5.0),
                    &mut sink,
                )
                .unwrap();
        }
        collect.frames
    })
}

struct Rig {
    store: Arc<SqliteStore>,
    blobs: Arc<FileBlobs>,
    queue: Arc<MemoryQueue>,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            store: Arc::new(SqliteStore::open(&dir.path().join("deepemotion.db")).unwrap()),
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
        AnalysisWorker::new(
            WorkerPorts {
                videos: self.store.clone(),
                ledger: self.store.clone(),
                results: self.store.clone(),
                blobs: self.blobs.clone(),
                jobs: self.queue.clone(),
                webhooks: self.store.clone(),
                deliveries: Arc::new(domain::memory::MemoryDeliveryQueue::default()),
            },
            engine(),
            config,
        )
    }

    /// Stores an upload of `bytes` and returns the job its event would carry.
    async fn upload(&self, bytes: &[u8]) -> AnalysisJob {
        let id = uuid::Uuid::new_v4().to_string();
        let key = domain::object_key("u-1", &id, "mp4");
        let path = self.blobs.path_of(&key).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        self.store
            .create_video(&Video {
                size_bytes: Some(bytes.len() as u64),
                ..domain::memory::pending_video(&id, "u-1")
            })
            .await
            .unwrap();
        AnalysisJob::upload(key)
    }

    async fn video(&self, job: &AnalysisJob) -> Video {
        self.store.video(&video_id(job)).await.unwrap().unwrap()
    }

    /// The video's frames as the API serves them: with people and smoothing once it is done.
    /// Pages of 40 frames, so that reads start mid-video and smoothing needs its look-back.
    async fn frames(&self, job: &AnalysisJob) -> Vec<FrameResult> {
        let id = video_id(job);
        let summary = self.video(job).await.analysis.summary;
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = domain::assembly::read_frames(
                self.store.as_ref(),
                &id,
                summary.as_ref(),
                after,
                40,
            )
            .await
            .unwrap();
            all.extend(page);
            match next {
                Some(n) => after = Some(n),
                None => return all,
            }
        }
    }

    /// Delivers queued jobs until none are left.
    async fn drain(&self, worker: &AnalysisWorker) -> Vec<JobOutcome> {
        let mut outcomes = Vec::new();
        for _ in 0..100 {
            let jobs = std::mem::take(&mut *self.queue.jobs.lock().unwrap());
            if jobs.is_empty() {
                return outcomes;
            }
            for job in jobs {
                outcomes.push(worker.handle(&job, None).await.unwrap());
            }
        }
        panic!("the queue never drained: {outcomes:?}");
    }

    /// A completed video as one clean pass gives it: its frames, people and smoothed values,
    /// its state, and a summary that is the one its stored frames give.
    async fn assert_completed_as_one_pass(&self, job: &AnalysisJob) {
        assert_same_as_one_pass(&self.frames(job).await);
        let video = self.video(job).await;
        assert_eq!(video.analysis.status, VideoStatus::Completed);
        assert_eq!(video.analysis.progress, 100);
        assert_eq!(video.analysis.frames_analyzed, 99);
        assert_eq!(video.analysis.video.as_ref().unwrap().frame_count, 472);
        assert!(video.analysis.processed_at.is_some());
        let summary = video.analysis.summary.unwrap();
        assert_eq!(summary.frames_analyzed, 99);
        let engine = engine();
        let assembled = domain::assembly::assemble(
            self.store.as_ref(),
            &video.id,
            engine.has_contempt(),
            &engine.config().people,
            engine.config().smoothing,
        )
        .await
        .unwrap();
        // as stored: scores are kept to six decimals
        let assembled: Summary =
            serde_json::from_value(serde_json::to_value(&assembled).unwrap()).unwrap();
        assert_eq!(summary, assembled, "the summary the stored frames give");
        // one woman, with her thumbnail
        assert_eq!(summary.people.len(), 1, "{:#?}", summary.people);
        assert_eq!(summary.people[0].frames, 99);
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
        checkpoint_every: Duration::from_millis(100),
        ..WorkerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_analysed_in_one_run_is_what_one_pass_gives() {
    let rig = Rig::new();
    let worker = rig.worker(quick());
    let job = rig.upload(&pexels()).await;
    let first = worker.handle(&job, None).await.unwrap();
    assert_eq!(first, JobOutcome::Completed { frames: 99 });
    rig.assert_completed_as_one_pass(&job).await;
    // a duplicate event changes nothing
    let again = worker.handle(&job, None).await.unwrap();
    assert!(matches!(again, JobOutcome::Skipped { ref reason } if reason.contains("COMPLETED")));
    assert!(
        rig.queue.jobs.lock().unwrap().is_empty(),
        "a short video needs no other message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_analysed_in_segments_is_what_one_pass_gives() {
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
    let outcomes = rig.drain(&worker).await;
    assert_eq!(outcomes.last(), Some(&JobOutcome::Completed { frames: 99 }));
    rig.assert_completed_as_one_pass(&job).await;
    // four segments, four runs with their own tracks: still one woman
    let summary = rig.video(&job).await.analysis.summary.unwrap();
    assert!(
        summary.people[0].tracks.len() >= 4,
        "{:?}",
        summary.people[0]
    );
}

/// Keeps what an analysis delivers: frames and the latest profile of each track.
#[derive(Default)]
struct Keep {
    frames: Vec<FrameResult>,
    tracks: BTreeMap<u32, TrackProfile>,
}

impl AnalysisSink for Keep {
    fn frame(&mut self, frame: &FrameResult) -> Result<(), SinkError> {
        self.frames.push(frame.clone());
        Ok(())
    }
    fn track(&mut self, profile: &TrackProfile) -> Result<(), SinkError> {
        self.tracks.insert(profile.track, profile.clone());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_analysis_is_resumed_after_a_restart_and_gives_what_one_pass_gives() {
    let rig = Rig::new();
    let job = rig.upload(&pexels()).await;
    let id = video_id(&job);
    // what a run killed 8 s into the video leaves: its plan, its lease, the results it stored
    // and its last checkpoint
    let engine = engine();
    let source = rig
        .blobs
        .analysis_source(&job.key, None, Duration::from_secs(60))
        .await
        .unwrap();
    let probe = engine.probe(&source).unwrap();
    let plan = AnalysisPlan::single(5.0, probe.start_s, probe.video.duration_ms);
    assert_eq!(
        rig.store.start_analysis(&id, &plan).await.unwrap(),
        PlanDecision::Recorded
    );
    let lease = Duration::from_secs(3600);
    assert!(matches!(
        rig.store
            .claim_segment(&id, 0, "killed-run", lease)
            .await
            .unwrap(),
        SegmentClaim::Claimed { .. }
    ));
    let mut before = Keep::default();
    let options = AnalysisOptions {
        window: DecodeWindow {
            end_s: Some(probe.start_s + 8.0),
            ..DecodeWindow::default()
        },
        ..AnalysisOptions::sampled(5.0)
    };
    engine.analyze(&source, &options, &mut before).unwrap();
    let tracks: Vec<TrackProfile> = before.tracks.into_values().collect();
    rig.store.put_tracks(&id, &tracks).await.unwrap();
    rig.store.put_frames(&id, &before.frames).await.unwrap();
    let last = before.frames.last().unwrap();
    let stored = before.frames.len();
    assert!(
        (30..60).contains(&stored),
        "{stored} frames before the kill"
    );
    let checkpoint = Checkpoint {
        frame: last.frame,
        t_ms: last.t_ms,
    };
    let progress = ProgressDelta {
        covered_ms: last.t_ms,
        frames: stored as u64,
    };
    assert!(
        rig.store
            .checkpoint(&id, 0, "killed-run", &checkpoint, progress, lease)
            .await
            .unwrap()
    );
    let video = rig.video(&job).await;
    assert_eq!(video.analysis.status, VideoStatus::Processing);
    assert!(video.analysis.progress > 0 && video.analysis.progress < 100);

    // the server restarts: the killed run's lease is void, and its analysis queued again
    assert_eq!(
        rig.store.requeue_interrupted().unwrap(),
        vec![job.key.clone()]
    );
    let outcome = rig.worker(quick()).handle(&job, None).await.unwrap();
    assert_eq!(outcome, JobOutcome::Completed { frames: 99 });
    rig.assert_completed_as_one_pass(&job).await;
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
        assert!(error.contains(what), "{error}");
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
