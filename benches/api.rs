//! API latency benchmark: starts `deepemotion serve`, makes a user with analysed videos, then
//! loads `GET /videos/` and `GET /videos/{id}` with a real token. Prints figures, asserts nothing.
//!
//! `cargo bench -p shared --bench api`. Two runs per route: open loop at a fixed 1,000 requests/s
//! (latency measured from each request's scheduled start, so a stall is not hidden), and closed
//! loop with 32 concurrent clients for the maximum rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

// the tests' harness for `deepemotion serve` (its account helper is theirs)
#[allow(dead_code)]
#[path = "../tests/local/serve.rs"]
mod serve;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(name: &str, mode: &str, mut latencies: Vec<Duration>, errors: usize, elapsed: Duration) {
    latencies.sort();
    println!(
        "{name:<18} {mode:<22} {:>7.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms  errors {errors}",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
}

async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    rate: u64,
    seconds: u64,
) -> (Vec<Duration>, usize, Duration) {
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..rate * seconds {
        let scheduled = started + interval * i as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let (client, url, token) = (client.clone(), url.to_string(), token.to_string());
        tasks.push(tokio::spawn(async move {
            let ok = client
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            (scheduled.elapsed(), ok)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (latency, ok) = t.await.unwrap();
        latencies.push(latency);
        errors += usize::from(!ok);
    }
    (latencies, errors, started.elapsed())
}

async fn closed_loop(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    clients: usize,
    seconds: u64,
) -> (Vec<Duration>, usize, Duration) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url, token) = (client.clone(), url.to_string(), token.to_string());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                let ok = client
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
                latencies.push(t.elapsed());
                errors += usize::from(!ok);
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    (all, errors, started.elapsed())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let server = serve::start(&[], &[]);
    let base = server.base.clone();

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
        let post =
            |path: &str, body: Value| client.post(format!("{base}{path}")).json(&body).send();
        post(
            "/auth/register",
            json!({"username": "bench", "email": "bench@example.com", "password": "password123"}),
        )
        .await
        .unwrap();
        let login: Value = post(
            "/auth/login",
            json!({"email": "bench@example.com", "password": "password123"}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let token = Arc::new(login["access_token"].as_str().unwrap().to_string());
        // 20 videos in the list; one analysed, so its detail has a summary and frames
        let clip = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/videos/single_face.mp4");
        let mut last = String::new();
        for i in 0..20 {
            let init: Value = client
                .post(format!("{base}/videos/upload/initialize"))
                .bearer_auth(token.as_str())
                .json(&json!({"filename": format!("clip{i}.mp4")}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if i == 19 {
                let bytes = std::fs::read(&clip).expect("../shared test clip");
                client
                    .put(init["upload_url"].as_str().unwrap())
                    .header("Content-Type", "video/mp4")
                    .body(bytes)
                    .send()
                    .await
                    .unwrap();
            }
            last = init["video_id"].as_str().unwrap().to_string();
        }
        loop {
            let v: Value = client
                .get(format!("{base}/videos/{last}"))
                .bearer_auth(token.as_str())
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["status"] == "COMPLETED" {
                println!(
                    "video detail: {} bytes, {} frames embedded",
                    v.to_string().len(),
                    v["frames"].as_array().unwrap().len()
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for (name, url) in [
            ("GET /videos/", format!("{base}/videos/")),
            ("GET /videos/{id}", format!("{base}/videos/{last}")),
        ] {
            closed_loop(&client, &url, &token, 8, 1).await; // warm-up
            let (l, e, t) = open_loop(&client, &url, &token, 1000, 5).await;
            report(name, "open loop 1000 req/s", l, e, t);
            let (l, e, t) = closed_loop(&client, &url, &token, 32, 3).await;
            report(name, "closed loop 32 clients", l, e, t);
        }
    });
    drop(server);
}
