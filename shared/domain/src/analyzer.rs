//! The analysis port: what the worker asks of an engine, and what an engine hands back. The
//! `engine` crate implements it with ffmpeg and ONNX Runtime; tests implement it with a script.

use std::path::PathBuf;
use std::time::Duration;

use crate::{
    AnalysisError, FrameResult, ModelInfo, PeopleConfig, SmoothingConfig, Summary, TrackProfile,
    VideoInfo,
};

/// Where an analysis reads its video: a file on this machine, or a URL ffmpeg fetches itself (a
/// presigned S3 GET, whose query is a credential: see [`MediaSource::redacted`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaSource {
    File(PathBuf),
    Url(String),
}

impl MediaSource {
    /// The source fit for logs and error messages: a URL without its query.
    pub fn redacted(&self) -> String {
        match self {
            MediaSource::File(path) => path.display().to_string(),
            MediaSource::Url(url) => match url.split_once('?') {
                Some((base, _)) => format!("{base}?…"),
                None => url.clone(),
            },
        }
    }

    /// What ffmpeg is given as its input: the path as it is (file names need not be UTF-8), or
    /// the URL.
    pub fn as_ffmpeg_input(&self) -> &std::ffi::OsStr {
        match self {
            MediaSource::File(path) => path.as_os_str(),
            MediaSource::Url(url) => url.as_ref(),
        }
    }
}

impl From<PathBuf> for MediaSource {
    fn from(path: PathBuf) -> Self {
        MediaSource::File(path)
    }
}

impl From<&std::path::Path> for MediaSource {
    fn from(path: &std::path::Path) -> Self {
        MediaSource::File(path.to_path_buf())
    }
}

/// A time range of the stream, for analysing a long video in segments or resuming one.
///
/// Times are on the stream's own timeline (ffmpeg runs with `-copyts`, so a file whose first
/// timestamp is not zero keeps it). Starting exactly on a sampling slot boundary, or on a frame
/// the full pass selected, makes a windowed decode pick exactly the frames a full pass picks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DecodeWindow {
    /// Seek here (input `-ss`, exact: frames before it are dropped after decoding).
    pub seek_s: Option<f64>,
    /// Stop before this time (input `-to`).
    pub end_s: Option<f64>,
    /// The source frame number of the first frame at or after `seek_s`; ffmpeg counts frames
    /// from the seek point, and frame numbers must stay those of the whole stream.
    pub first_frame: u64,
}

/// Per-analysis options.
#[derive(Debug, Clone, Copy)]
pub struct AnalysisOptions {
    /// Frames per second to analyse; 0 analyses every frame.
    pub sample_fps: f64,
    /// The part of the video to analyse (a segment, or the rest after a checkpoint).
    pub window: DecodeWindow,
    /// The first track id handed out. A windowed run starts its tracks afresh; numbering them
    /// from a different base keeps ids unique across the runs of one video.
    pub first_track: u32,
}

impl AnalysisOptions {
    pub fn sampled(sample_fps: f64) -> Self {
        Self {
            sample_fps,
            ..Self::default()
        }
    }
}

impl Default for AnalysisOptions {
    fn default() -> Self {
        Self {
            sample_fps: 5.0,
            window: DecodeWindow::default(),
            first_track: 1,
        }
    }
}

/// What a quick look at a video tells before analysing it.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub video: VideoInfo,
    /// The stream's first timestamp in seconds (the origin of `t_ms`).
    pub start_s: f64,
}

pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Where results go as they are produced (a file writer, a database batcher, a progress bar...).
pub trait AnalysisSink {
    /// Called once, before the first frame.
    fn begin(
        &mut self,
        _video: &VideoInfo,
        _model: &ModelInfo,
        _sample_fps: f64,
    ) -> Result<(), SinkError> {
        Ok(())
    }
    /// Called for every analysed frame, in order.
    fn frame(&mut self, frame: &FrameResult) -> Result<(), SinkError>;
    /// Called when a track's identity profile changes (a better crop was embedded, or the track
    /// began); the latest profile per track is the one that counts.
    fn track(&mut self, _profile: &TrackProfile) -> Result<(), SinkError> {
        Ok(())
    }
    /// Called once after the last frame of a successful analysis; `video.frame_count` is final.
    fn finish(&mut self, _video: &VideoInfo, _summary: &Summary) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Wall time spent in each stage (stages overlap, so these add up to more than the total).
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimings {
    pub decode: Duration,
    pub detect: Duration,
    /// Tracking, identity and cropping faces for the classifier (on the detector's thread).
    pub track: Duration,
    pub classify: Duration,
    pub detector_runs: u64,
    pub faces_classified: u64,
    /// Face crops embedded for identity (a few per track).
    pub faces_embedded: u64,
}

/// What an analysis returns besides what it sent to the sink.
#[derive(Debug, Clone)]
pub struct AnalysisOutcome {
    pub video: VideoInfo,
    pub summary: Summary,
    pub timings: StageTimings,
}

/// A borrowed sink is a sink (so wrappers such as `assembly::PeopleSink` can own or borrow).
impl<T: AnalysisSink + ?Sized> AnalysisSink for &mut T {
    fn begin(
        &mut self,
        video: &VideoInfo,
        model: &ModelInfo,
        sample_fps: f64,
    ) -> Result<(), SinkError> {
        (**self).begin(video, model, sample_fps)
    }
    fn frame(&mut self, frame: &FrameResult) -> Result<(), SinkError> {
        (**self).frame(frame)
    }
    fn track(&mut self, profile: &TrackProfile) -> Result<(), SinkError> {
        (**self).track(profile)
    }
    fn finish(&mut self, video: &VideoInfo, summary: &Summary) -> Result<(), SinkError> {
        (**self).finish(video, summary)
    }
}

/// An analysis engine, as the worker sees it. Blocking: the worker calls it on the blocking pool.
pub trait VideoAnalyzer: Send + Sync {
    /// Reads a video's metadata (a broken file fails here with the errors an analysis would give).
    fn probe(&self, source: &MediaSource) -> Result<Probe, AnalysisError>;
    /// Every video frame's timestamp (seconds, stream timeline), sorted, for segment planning.
    fn frame_times(&self, source: &MediaSource) -> Result<Vec<f64>, AnalysisError>;
    /// Analyses the source (or the window of it `options` names), streaming results to `sink`.
    fn analyze(
        &self,
        source: &MediaSource,
        options: &AnalysisOptions,
        sink: &mut dyn AnalysisSink,
    ) -> Result<AnalysisOutcome, AnalysisError>;
    /// Whether the classifier reports contempt (summaries then include it).
    fn has_contempt(&self) -> bool;
    /// How tracks are linked into people.
    fn people(&self) -> &PeopleConfig;
    /// How emotions are smoothed over time.
    fn smoothing(&self) -> SmoothingConfig;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presigned_urls_are_redacted_and_files_are_not() {
        let url = MediaSource::Url(
            "https://b.s3.amazonaws.com/uploads/u/v.mp4?X-Amz-Signature=abc".into(),
        );
        assert_eq!(
            url.redacted(),
            "https://b.s3.amazonaws.com/uploads/u/v.mp4?…"
        );
        let file = MediaSource::File("/tmp/v.mp4?x".into());
        assert_eq!(file.redacted(), "/tmp/v.mp4?x");
        assert_eq!(file.as_ffmpeg_input(), "/tmp/v.mp4?x");
    }
}
