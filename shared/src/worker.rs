//! The analysis worker: turns an upload event into stored results. The local server runs it on
//! its in-process queue; the analysis Lambda runs it on SQS messages.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use tokio::runtime::Handle;

use crate::pipeline::{AnalysisOptions, AnalysisSink, SinkError};
use crate::ports::{AnalysisJob, BlobStore, ResultStore, StoreError, VideoStore};
use crate::{
    AnalysisState, Analyzer, FrameResult, ModelInfo, Summary, VideoInfo, VideoStatus,
    parse_object_key,
};

/// What became of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Completed {
        frames: u64,
    },
    /// The input was bad (not a video, truncated...): recorded on the video, not worth a retry.
    Rejected {
        error: String,
    },
    /// Nothing to do: unknown key, deleted video, or already analysed / being analysed.
    Skipped {
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("analysis failed: {0}")]
    Analysis(String),
}

pub struct AnalysisWorker {
    pub videos: Arc<dyn VideoStore>,
    pub results: Arc<dyn ResultStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub analyzer: Arc<Analyzer>,
    /// Where uploads are downloaded to for analysis.
    pub scratch_dir: PathBuf,
}

/// Frames are written in batches of this many; progress is saved at most every 5 %.
const BATCH: usize = 50;

impl AnalysisWorker {
    pub async fn handle(&self, job: &AnalysisJob) -> Result<JobOutcome, WorkerError> {
        let Some((_, video_id)) = parse_object_key(&job.key) else {
            return Ok(JobOutcome::Skipped {
                reason: format!("not an upload key: {}", job.key),
            });
        };
        let Some(video) = self.videos.video(video_id).await? else {
            return Ok(JobOutcome::Skipped {
                reason: "no such video (deleted?)".into(),
            });
        };
        if video.s3_key != job.key {
            return Ok(JobOutcome::Skipped {
                reason: "key does not match the video".into(),
            });
        }
        // a duplicate event finds the video already claimed or done
        if !self.videos.claim_for_analysis(&video.id).await? {
            return Ok(JobOutcome::Skipped {
                reason: format!("already {}", video.analysis.status.as_str()),
            });
        }
        tracing::info!(video_id = %video.id, key = %job.key, "analysis claimed");
        let ext = job.key.rsplit_once('.').map_or("bin", |(_, e)| e);
        tokio::fs::create_dir_all(&self.scratch_dir)
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let local = self.scratch_dir.join(format!("{}.{ext}", video.id));
        let result = self
            .analyse(&video.id, &job.key, video.sample_fps, &local)
            .await;
        let _ = tokio::fs::remove_file(&local).await;
        result
    }

    async fn analyse(
        &self,
        video_id: &str,
        key: &str,
        sample_fps: f64,
        local: &std::path::Path,
    ) -> Result<JobOutcome, WorkerError> {
        let mut state = AnalysisState {
            status: VideoStatus::Processing,
            ..AnalysisState::pending()
        };
        if let Err(e) = self.blobs.download(key, local).await {
            state.status = VideoStatus::Failed;
            state.error = Some("the uploaded file could not be read".into());
            self.videos.set_analysis(video_id, &state).await?;
            return Err(e.into());
        }
        let mut sink = StoreSink {
            handle: Handle::current(),
            videos: self.videos.clone(),
            results: self.results.clone(),
            video_id: video_id.to_string(),
            batch: Vec::with_capacity(BATCH),
            state: state.clone(),
            duration_ms: 0,
        };
        let analyzer = self.analyzer.clone();
        let path = local.to_path_buf();
        let (sink, result) = tokio::task::spawn_blocking(move || {
            let result = analyzer.analyze(&path, &AnalysisOptions { sample_fps }, &mut sink);
            (sink, result)
        })
        .await
        .map_err(|e| WorkerError::Analysis(format!("analysis task: {e}")))?;

        let mut state = sink.state;
        match result {
            Ok(outcome) => {
                state.status = VideoStatus::Completed;
                state.progress = 100;
                state.video = Some(outcome.video);
                state.frames_analyzed = outcome.summary.frames_analyzed;
                state.summary = Some(outcome.summary);
                state.processed_at = Some(Utc::now());
                self.videos.set_analysis(video_id, &state).await?;
                tracing::info!(
                    video_id,
                    frames = state.frames_analyzed,
                    "analysis completed"
                );
                Ok(JobOutcome::Completed {
                    frames: state.frames_analyzed,
                })
            }
            Err(e) => {
                // frames analysed before the failure are kept: a partial analysis is still
                // useful, and nothing is lost
                if !sink.batch.is_empty() {
                    self.results.put_frames(video_id, &sink.batch).await?;
                    state.frames_analyzed += sink.batch.len() as u64;
                }
                state.status = VideoStatus::Failed;
                state.processed_at = Some(Utc::now());
                if e.is_bad_input() {
                    state.error = Some(
                        e.to_string()
                            .replace(&local.display().to_string(), "the uploaded file"),
                    );
                    self.videos.set_analysis(video_id, &state).await?;
                    tracing::warn!(video_id, error = %e, "input rejected");
                    Ok(JobOutcome::Rejected {
                        error: state.error.unwrap_or_default(),
                    })
                } else {
                    state.error = Some(
                        "analysis failed because of a server error; it will be retried".into(),
                    );
                    self.videos.set_analysis(video_id, &state).await?;
                    tracing::error!(video_id, error = %e, "analysis failed");
                    Err(WorkerError::Analysis(e.to_string()))
                }
            }
        }
    }
}

/// Streams frames to the result store in batches and keeps the video's progress current. Runs
/// on the analysis thread, so it blocks on the async stores through the runtime handle.
struct StoreSink {
    handle: Handle,
    videos: Arc<dyn VideoStore>,
    results: Arc<dyn ResultStore>,
    video_id: String,
    batch: Vec<FrameResult>,
    state: AnalysisState,
    duration_ms: u64,
}

impl StoreSink {
    fn flush(&mut self) -> Result<(), SinkError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let frames = std::mem::take(&mut self.batch);
        self.handle
            .block_on(self.results.put_frames(&self.video_id, &frames))?;
        let last_t = frames.last().map_or(0, |f| f.t_ms);
        self.state.frames_analyzed += frames.len() as u64;
        // 100 is only reported once the analysis is complete
        let progress = (last_t * 100)
            .checked_div(self.duration_ms)
            .map_or(0, |p| p.min(99) as u8);
        if progress >= self.state.progress.saturating_add(5) {
            self.state.progress = progress;
            self.handle
                .block_on(self.videos.set_analysis(&self.video_id, &self.state))?;
        }
        Ok(())
    }
}

impl AnalysisSink for StoreSink {
    fn begin(
        &mut self,
        video: &VideoInfo,
        _model: &ModelInfo,
        _sample_fps: f64,
    ) -> Result<(), SinkError> {
        self.duration_ms = video.duration_ms;
        self.state.video = Some(video.clone());
        Ok(())
    }

    fn frame(&mut self, frame: &FrameResult) -> Result<(), SinkError> {
        self.batch.push(frame.clone());
        if self.batch.len() >= BATCH {
            self.flush()
        } else {
            Ok(())
        }
    }

    fn finish(&mut self, _video: &VideoInfo, _summary: &Summary) -> Result<(), SinkError> {
        self.flush()
    }
}
