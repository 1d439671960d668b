//! Upload throughput benchmark: starts `deepemotion serve`, registers a user and uploads 20
//! videos at once as the web client does (initialize, then PUT to the upload URL), while
//! another user's API calls are timed; then waits for every analysis to end. Prints, asserting
//! nothing:
//!
//! - the time from the first upload to the last analysis' end, against the video's length;
//! - each upload's time to its 2xx (initialize + PUT);
//! - `GET /api/v2/videos/` and `POST /api/v2/videos/upload/initialize` (p50/p99/max) alone, then
//!   during the analyses;
//! - the server's peak RSS (VmHWM) and its ffmpeg children's (sampled every 20 ms);
//! - the analyses-at-once setting, and the most videos seen `PROCESSING` together.
//!
//! `cargo bench -p deepemotion --bench uploads [-- 1 2]`: one server per setting of
//! `--analysis-concurrency` (default: 1, then 2). Client and server share the machine's cores.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

// the tests' harness for `deepemotion serve` (its account helper is theirs)
#[allow(dead_code)]
#[path = "../tests/local/serve.rs"]
mod serve;

/// The uploads: the Pexels clip, and once each the other sample clips.
const PEXELS_COPIES: usize = 16;
const OTHERS: [&str; 4] = [
    "single_face.mp4",
    "face_noface.mov",
    "noface_face.mov",
    "no_face.mp4",
];
/// How long the API is timed alone, before the uploads.
const ALONE: Duration = Duration::from_secs(3);
/// A pause between two rounds of timed API calls.
const PAUSE: Duration = Duration::from_millis(25);

struct Clip {
    name: String,
    bytes: Arc<Vec<u8>>,
}

fn clips() -> Vec<Clip> {
    let dir = std::env::var_os("DEEPEMOTION_SHARED_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
        .join("data/videos");
    let read = |name: &str| Clip {
        name: name.to_string(),
        bytes: Arc::new(
            std::fs::read(dir.join(name))
                .unwrap_or_else(|e| panic!("{}: {e} (set DEEPEMOTION_SHARED_DIR)", name)),
        ),
    };
    let pexels = read("WolfgangLanger_Pexels.mp4");
    let mut clips: Vec<Clip> = (0..PEXELS_COPIES)
        .map(|_| Clip {
            name: pexels.name.clone(),
            bytes: pexels.bytes.clone(),
        })
        .collect();
    clips.extend(OTHERS.iter().map(|name| read(name)));
    clips
}

fn percentiles(mut latencies: Vec<Duration>) -> String {
    if latencies.is_empty() {
        return "n     0".into();
    }
    latencies.sort();
    let at = |p: f64| {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i].as_secs_f64() * 1000.0
    };
    format!(
        "n {:>5}  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        latencies.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

/// A `/proc/{pid}/status` field in MB.
fn status_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// The ffmpeg processes whose parent is `parent`. (A child not yet running ffmpeg is left out:
/// between fork and exec it reports its parent's memory.)
fn ffmpeg_children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // after the command in parentheses: state, ppid, ...
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let after = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
                    after.parse::<u32>().ok()
                })
                == Some(parent)
                && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "ffmpeg")
        })
        .collect()
}

/// The server's ffmpeg runs, sampled: each one's peak RSS, and the most alive at once with their
/// RSS together.
#[derive(Default)]
struct ChildPeaks {
    peaks_mb: HashMap<u32, f64>,
    most_at_once: usize,
    most_together_mb: f64,
}

fn sample_children(parent: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<ChildPeaks> {
    std::thread::spawn(move || {
        let mut peaks = ChildPeaks::default();
        while !stop.load(Ordering::Relaxed) {
            let alive = ffmpeg_children(parent);
            let mut together = 0.0;
            for &pid in &alive {
                let hwm = status_mb(pid, "VmHWM");
                together += status_mb(pid, "VmRSS");
                let peak = peaks.peaks_mb.entry(pid).or_default();
                *peak = peak.max(hwm);
            }
            peaks.most_at_once = peaks.most_at_once.max(alive.len());
            peaks.most_together_mb = peaks.most_together_mb.max(together);
            std::thread::sleep(Duration::from_millis(20));
        }
        peaks
    })
}

/// What the timed API calls saw.
#[derive(Default)]
struct Timed {
    list: Vec<Duration>,
    initialize: Vec<Duration>,
    failed: usize,
    /// The most of the uploader's videos `PROCESSING` in one listing.
    most_processing: usize,
}

/// Times `GET /videos/` (the uploader's list) and `POST /videos/upload/initialize` (another
/// user's) in turns until `stop`.
async fn time_api_calls(
    client: reqwest::Client,
    base: String,
    lister: String,
    initializer: String,
    stop: Arc<AtomicBool>,
) -> Timed {
    let mut timed = Timed::default();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let listed = client
            .get(format!("{base}/videos/"))
            .bearer_auth(&lister)
            .send()
            .await;
        let list = match listed {
            Ok(r) if r.status().is_success() => r.json::<Vec<Value>>().await.ok(),
            _ => None,
        };
        timed.list.push(started.elapsed());
        match list {
            Some(list) => {
                let processing = list.iter().filter(|v| v["status"] == "PROCESSING").count();
                timed.most_processing = timed.most_processing.max(processing);
            }
            None => timed.failed += 1,
        }
        n += 1;
        let started = Instant::now();
        let ok = client
            .post(format!("{base}/videos/upload/initialize"))
            .bearer_auth(&initializer)
            .json(&json!({"filename": format!("timed{n}.mp4")}))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        timed.initialize.push(started.elapsed());
        timed.failed += usize::from(!ok);
        tokio::time::sleep(PAUSE).await;
    }
    timed
}

async fn token(client: &reqwest::Client, base: &str, name: &str) -> String {
    let email = format!("{name}@example.com");
    let registered = client
        .post(format!("{base}/auth/register"))
        .json(&json!({"username": name, "email": email, "password": "password123"}))
        .send()
        .await
        .unwrap();
    assert!(registered.status().is_success());
    let login: Value = client
        .post(format!("{base}/auth/login"))
        .json(&json!({"email": email, "password": "password123"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    login["access_token"].as_str().unwrap().to_string()
}

/// One upload as the web client makes it: initialize, then PUT the file to the upload URL.
/// Returns the video id and the time to the PUT's 2xx (`None` if it failed).
async fn upload(
    client: reqwest::Client,
    base: String,
    token: String,
    clip_name: String,
    bytes: Arc<Vec<u8>>,
    n: usize,
) -> (Option<String>, Option<Duration>) {
    let started = Instant::now();
    let init: Value = match client
        .post(format!("{base}/videos/upload/initialize"))
        .bearer_auth(&token)
        .json(&json!({"filename": clip_name, "title": format!("upload {n}")}))
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => r.json().await.unwrap(),
        _ => return (None, None),
    };
    let id = init["video_id"].as_str().map(str::to_string);
    let put = client
        .put(init["upload_url"].as_str().unwrap())
        .header(
            "Content-Type",
            init["headers"]["Content-Type"].as_str().unwrap(),
        )
        .body(bytes.as_ref().clone())
        .send()
        .await;
    let ok = put.is_ok_and(|r| r.status().is_success());
    (id, ok.then(|| started.elapsed()))
}

fn run(at_once: usize, clips: &[Clip]) {
    let server = serve::start(&["--analysis-concurrency", &at_once.to_string()], &[]);
    let (pid, base) = (server.child.id(), server.base.clone());
    let rss_at_start = status_mb(pid, "VmRSS");
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = sample_children(pid, stop_sampling.clone());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap();
        let ann = token(&client, &base, "ann").await;
        let bob = token(&client, &base, "bob").await;
        let timing = |stop: &Arc<AtomicBool>| {
            tokio::spawn(time_api_calls(
                client.clone(),
                base.clone(),
                ann.clone(),
                bob.clone(),
                stop.clone(),
            ))
        };

        let stop = Arc::new(AtomicBool::new(false));
        let alone = timing(&stop);
        tokio::time::sleep(ALONE).await;
        stop.store(true, Ordering::Relaxed);
        let alone = alone.await.unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let loaded = timing(&stop);
        let first_upload = chrono::Utc::now();
        let uploads: Vec<_> = clips
            .iter()
            .enumerate()
            .map(|(n, clip)| {
                tokio::spawn(upload(
                    client.clone(),
                    base.clone(),
                    ann.clone(),
                    clip.name.clone(),
                    clip.bytes.clone(),
                    n,
                ))
            })
            .collect();
        let (mut ids, mut upload_times, mut upload_failures) = (Vec::new(), Vec::new(), 0);
        for u in uploads {
            match u.await.unwrap() {
                (Some(id), Some(took)) => {
                    ids.push(id);
                    upload_times.push(took);
                }
                _ => upload_failures += 1,
            }
        }

        // every analysis ended: COMPLETED or FAILED (the server's own end times are used)
        let waiting = Instant::now();
        let ended = loop {
            let list: Vec<Value> = client
                .get(format!("{base}/videos/"))
                .bearer_auth(&ann)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let ours: Vec<Value> = list
                .into_iter()
                .filter(|v| ids.iter().any(|id| v["id"] == id.as_str()))
                .collect();
            let done = ours
                .iter()
                .filter(|v| v["status"] == "COMPLETED" || v["status"] == "FAILED")
                .count();
            if done == ids.len() || waiting.elapsed() > Duration::from_secs(1800) {
                break ours;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        stop.store(true, Ordering::Relaxed);
        let loaded = loaded.await.unwrap();

        let last_end = ended
            .iter()
            .filter_map(|v| v["processed_at"].as_str())
            .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .max();
        let total = last_end.map(|t| (t.with_timezone(&chrono::Utc) - first_upload).num_milliseconds() as f64 / 1000.0);
        let video_seconds: f64 = ended
            .iter()
            .filter_map(|v| v["duration_seconds"].as_f64())
            .sum();
        let count = |status: &str| ended.iter().filter(|v| v["status"] == status).count();
        let mix = format!(
            "{PEXELS_COPIES} x WolfgangLanger_Pexels.mp4, {}",
            OTHERS.join(", ")
        );

        println!(
            "analyses at once: {at_once} (--analysis-concurrency); most uploads seen PROCESSING together: {}",
            loaded.most_processing
        );
        println!(
            "{} uploads at once ({mix}): {video_seconds:.1} s of video, {} COMPLETED, {} FAILED, {} unfinished, {upload_failures} uploads failed",
            clips.len(),
            count("COMPLETED"),
            count("FAILED"),
            ended.len() - count("COMPLETED") - count("FAILED"),
        );
        for failed in ended.iter().filter(|v| v["status"] == "FAILED") {
            println!("  FAILED {}: {}", failed["filename"], failed["error"]);
        }
        match total {
            Some(total) => println!(
                "  first upload to last completion: {total:.1} s ({:.1}x realtime)",
                video_seconds / total
            ),
            None => println!("  first upload to last completion: none completed"),
        }
        println!(
            "  upload (initialize + PUT) to 2xx:     {}",
            percentiles(upload_times)
        );
        println!(
            "  GET /api/v2/videos/ alone:            {}  failed {}",
            percentiles(alone.list),
            alone.failed
        );
        println!(
            "  GET /api/v2/videos/ during analyses:  {}  failed {}",
            percentiles(loaded.list),
            loaded.failed
        );
        println!(
            "  POST upload/initialize alone:         {}",
            percentiles(alone.initialize)
        );
        println!(
            "  POST upload/initialize during them:   {}",
            percentiles(loaded.initialize)
        );
    });
    let server_peak = status_mb(pid, "VmHWM");
    stop_sampling.store(true, Ordering::Relaxed);
    let ffmpeg = sampler.join().unwrap();
    let largest = ffmpeg.peaks_mb.values().copied().fold(0.0, f64::max);
    println!("  server peak RSS (VmHWM): {server_peak:.1} MB ({rss_at_start:.1} MB once started)");
    println!(
        "  ffmpeg: {} processes, largest peak {largest:.1} MB; at most {} at once, {:.1} MB together",
        ffmpeg.peaks_mb.len(),
        ffmpeg.most_at_once,
        ffmpeg.most_together_mb
    );
    drop(server);
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let settings: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let settings = if settings.is_empty() {
        vec![1, 2]
    } else {
        settings
    };
    let clips = clips();
    for (i, at_once) in settings.into_iter().enumerate() {
        if i > 0 {
            println!();
        }
        run(at_once, &clips);
    }
}
