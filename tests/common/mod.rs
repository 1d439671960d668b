//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use domain::{AnalysisSink, FrameResult, ModelInfo, SinkError, Summary, VideoInfo};
use engine::{Analyzer, EngineConfig};

/// The team's shared material: `DEEPEMOTION_SHARED_DIR`, else `../shared` next to the checkout.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("DEEPEMOTION_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
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

/// A 16000×16000 PNG of one colour: 790 KB on disk, 768 MB of RGB once decoded (a
/// "decompression bomb"). ffmpeg makes it once (about 12 s) into Cargo's scratch directory for
/// tests, where every test binary finds it afterwards.
pub fn bomb_png() -> PathBuf {
    static BOMB: OnceLock<PathBuf> = OnceLock::new();
    BOMB.get_or_init(|| {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bomb-16000x16000.png");
        if !path.is_file() {
            // written aside, then renamed: a concurrent test binary never sees half a file
            let partial = path.with_extension(format!("{}.png", std::process::id()));
            ffmpeg(&[
                "-f",
                "lavfi",
                "-i",
                "color=c=red:size=16000x16000",
                "-frames:v",
                "1",
                partial.to_str().unwrap(),
            ]);
            std::fs::rename(&partial, &path).unwrap();
        }
        path
    })
    .clone()
}

/// The child processes of this process, from /proc: `(pid, state, command)`; a state `Z` is a
/// zombie, one that exited and was never waited for.
pub fn child_processes() -> Vec<(u32, char, String)> {
    let me = std::process::id();
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split at the last ')'
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if rest.next().and_then(|p| p.parse::<u32>().ok()) == Some(me) {
            children.push((pid, state, stat[open + 1..close].to_string()));
        }
    }
    children
}

/// Runs test `name` (its path in the test binary, e.g. `media::a_test`) again, alone in a process of its own, so that every
/// child process it finds is its own (tests in one binary share a process, and their ffmpeg
/// children with it). Returns true in that process, where the test goes on; in the calling
/// process, waits for it, asserts that it ran and passed, and returns false.
pub fn in_own_process(name: &str) -> bool {
    const VAR: &str = "DEEPEMOTION_TEST_OWN_PROCESS";
    if std::env::var(VAR).as_deref() == Ok(name) {
        return true;
    }
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([name, "--exact", "--nocapture", "--test-threads", "1"])
        .env(VAR, name)
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name}, in a process of its own:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

/// The peak memory (MB) of the largest child process this process has waited for.
pub fn children_peak_rss_mb() -> u64 {
    // SAFETY: getrusage only writes into the struct it is given
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss as u64 / 1024
}
