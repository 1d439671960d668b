//! Pipeline benchmark: prints figures, asserts nothing about time.
//!
//! `cargo bench -p shared --bench pipeline` (or scripts/bench.sh). For the clip
//! (default ../shared/data/videos/WolfgangLanger_Pexels.mp4, override with DEEPEMOTION_BENCH_CLIP)
//! it prints ffmpeg's decode-only speed (the ceiling), then for every frame and for 5 fps sampling:
//! analysed frames/s, × realtime, ms per analysed frame in each stage, and peak RSS, with the
//! identity step (face embeddings that link tracks into people) and without it ("no ids"), to
//! show its cost. Each mode runs in a fresh child process so its peak RSS is its own.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use domain::{AnalysisOptions, AnalysisOutcome, AnalysisSink, FrameResult, MediaSource, SinkError};
use engine::{Analyzer, EngineConfig};

const RUNS: usize = 3;

fn clip() -> PathBuf {
    std::env::var_os("DEEPEMOTION_BENCH_CLIP")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/data/videos/WolfgangLanger_Pexels.mp4")
        })
}

/// Peak resident set of this process and of its largest waited-for child (ffmpeg), in MB.
fn peak_rss_mb() -> (f64, f64) {
    let own = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<f64>()
                    .unwrap_or(0.0)
            })
        })
        .unwrap_or(0.0);
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    (own / 1024.0, usage.ru_maxrss as f64 / 1024.0)
}

struct CountingSink(u64);

impl AnalysisSink for CountingSink {
    fn frame(&mut self, _frame: &FrameResult) -> Result<(), SinkError> {
        self.0 += 1;
        Ok(())
    }
}

fn child(sample_fps: f64, people: bool) {
    let started = Instant::now();
    let mut config = EngineConfig::from_env().expect("config");
    if !people {
        config.people.samples_per_track = 0;
    }
    let analyzer = Analyzer::new(config).expect("engine");
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut best: Option<(f64, AnalysisOutcome)> = None;
    for _ in 0..RUNS {
        let started = Instant::now();
        let outcome = analyzer
            .analyze(
                &MediaSource::File(clip()),
                &AnalysisOptions::sampled(sample_fps),
                &mut CountingSink(0),
            )
            .expect("analysis");
        let wall = started.elapsed().as_secs_f64();
        if best.as_ref().is_none_or(|(b, _)| wall < *b) {
            best = Some((wall, outcome));
        }
    }
    let (wall, outcome) = best.expect("ran");
    let frames = outcome.summary.frames_analyzed as f64;
    let per_frame = |d: std::time::Duration| d.as_secs_f64() * 1000.0 / frames;
    let (rss, ffmpeg_rss) = peak_rss_mb();
    let label = match (sample_fps > 0.0, people) {
        (true, true) => format!("{sample_fps} fps"),
        (true, false) => format!("{sample_fps} fps, no ids"),
        (false, true) => "every frame".into(),
        (false, false) => "every, no ids".into(),
    };
    println!(
        "{label:>12}: {frames:>4} frames in {wall:.3} s = {:>6.1} analysed frames/s, {:>5.1}x realtime | ms/frame decode {:.2} detect {:.2} ({} detector runs) track {:.2} classify {:.2} ({} crops embedded) | peak RSS {rss:.0} MB (ffmpeg {ffmpeg_rss:.0} MB) | engine load {load_ms:.0} ms",
        frames / wall,
        outcome.video.duration_ms as f64 / 1000.0 / wall,
        per_frame(outcome.timings.decode),
        per_frame(outcome.timings.detect),
        outcome.timings.detector_runs,
        per_frame(outcome.timings.track),
        per_frame(outcome.timings.classify),
        outcome.timings.faces_embedded,
    );
}

fn decode_only() {
    let clip = clip();
    let mut best = f64::MAX;
    for _ in 0..RUNS {
        let started = Instant::now();
        let status = Command::new("ffmpeg")
            .args(["-v", "error", "-nostdin", "-i"])
            .arg(&clip)
            .args(["-map", "0:v:0", "-f", "null", "-"])
            .status()
            .expect("ffmpeg runs");
        assert!(status.success());
        best = best.min(started.elapsed().as_secs_f64());
    }
    // frame count of the clip, from the engine's own decoder would need models; ffmpeg's is enough
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(&clip)
        .args(["-map", "0:v:0", "-f", "framemd5", "-"])
        .output()
        .expect("ffmpeg runs");
    let frames = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count() as f64;
    println!(
        "{:>12}: {frames:>4} frames in {best:.3} s = {:>6.1} frames/s (ffmpeg -f null, the ceiling)",
        "decode only",
        frames / best
    );
}

fn main() {
    if let Ok(fps) = std::env::var("DEEPEMOTION_BENCH_CHILD") {
        let people = std::env::var("DEEPEMOTION_BENCH_PEOPLE").as_deref() != Ok("off");
        child(fps.parse().expect("fps"), people);
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / test harness probes
    }
    println!("clip: {} (best of {RUNS} runs per mode)", clip().display());
    decode_only();
    // with and without the identity step (face embeddings for people), interleaved over three
    // rounds, so that its cost is measured on the same machine state
    for fps in ["0", "5", "0", "5", "0", "5"] {
        for people in ["on", "off"] {
            let status = Command::new(std::env::current_exe().expect("exe"))
                .env("DEEPEMOTION_BENCH_CHILD", fps)
                .env("DEEPEMOTION_BENCH_PEOPLE", people)
                .status()
                .expect("bench child runs");
            assert!(status.success(), "bench child failed");
        }
    }
}
