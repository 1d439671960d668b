//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use shared::pipeline::{AnalysisSink, SinkError};
use shared::{Analyzer, EngineConfig, FrameResult, ModelInfo, Summary, VideoInfo};

/// The team's shared material: `DEEPEMOTION_SHARED_DIR`, else `../shared` next to the checkout.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("DEEPEMOTION_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
}

pub fn video(name: &str) -> PathBuf {
    let p = shared_dir().join("data/videos").join(name);
    assert!(
        p.is_file(),
        "test video {} missing (set DEEPEMOTION_SHARED_DIR)",
        p.display()
    );
    p
}

pub fn photo(name: &str) -> PathBuf {
    shared_dir().join("data/expressions/photos").join(name)
}

/// One engine per test binary, with the product's defaults.
pub fn analyzer() -> &'static Analyzer {
    static ANALYZER: OnceLock<Analyzer> = OnceLock::new();
    ANALYZER.get_or_init(|| {
        Analyzer::new(EngineConfig::default()).expect("engine starts (run scripts/setup.sh first)")
    })
}

/// Keeps everything the pipeline sends.
#[derive(Debug, Default)]
pub struct Collect {
    pub began: Option<VideoInfo>,
    pub frames: Vec<FrameResult>,
    pub finished: Option<Summary>,
}

impl AnalysisSink for Collect {
    fn begin(&mut self, video: &VideoInfo, _model: &ModelInfo, _fps: f64) -> Result<(), SinkError> {
        self.began = Some(video.clone());
        Ok(())
    }
    fn frame(&mut self, frame: &FrameResult) -> Result<(), SinkError> {
        self.frames.push(frame.clone());
        Ok(())
    }
    fn finish(&mut self, _video: &VideoInfo, summary: &Summary) -> Result<(), SinkError> {
        self.finished = Some(summary.clone());
        Ok(())
    }
}

/// Runs ffmpeg (test fixtures are made with it), panicking with its stderr on failure.
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-nostdin"])
        .args(args)
        .output()
        .expect("ffmpeg on PATH");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Presentation times (ms) of every frame of the first video stream, as ffprobe sees them.
pub fn ffprobe_frame_times_ms(path: &Path) -> Vec<f64> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=best_effort_timestamp_time",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("ffprobe on PATH");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse::<f64>().ok())
        .map(|s| s * 1000.0)
        .collect()
}
