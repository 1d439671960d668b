//! Flood benchmark: starts `deepemotion serve` with its default limits and prints, asserting
//! nothing:
//!
//! 1. the latency of fresh requests (each on a new connection) while 3,000 idle connections are
//!    held, half of them with a partial request line, and the server's RSS before, with and after
//!    them;
//! 2. another user's `GET /api/v2/videos/` (p50/p99/max) alone and while 30 threads hammer
//!    `POST /api/v2/auth/login` with wrong passwords: with the default login limits (most attempts
//!    get 429), then on a second server with the limits lifted, so every attempt runs argon2.
//!
//! `cargo bench -p shared --bench flood`. Client and server share the machine's cores.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

// the tests' harness for `deepemotion serve` (its account helper is theirs)
#[allow(dead_code)]
#[path = "../tests/local/serve.rs"]
mod serve;

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn percentiles(mut latencies: Vec<Duration>) -> String {
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

/// One request on a new connection, read to the end (`Connection: close`).
fn fresh_request(addr: SocketAddr) -> (Duration, bool) {
    let started = Instant::now();
    let ok = (|| -> std::io::Result<bool> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.write_all(
            b"GET /api/v2/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        Ok(response.starts_with(b"HTTP/1.1 200"))
    })()
    .unwrap_or(false);
    (started.elapsed(), ok)
}

fn raise_own_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain calls on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    raise_own_fd_limit();
    let server = serve::start(&[], &[("RUST_LOG", "error")]);
    let (pid, base, addr) = (server.child.id(), server.base.clone(), server.addr);

    // 1. idle connections
    for _ in 0..20 {
        fresh_request(addr);
    }
    let rss_before = rss_mb(pid);
    let opening = Instant::now();
    let mut idle = Vec::with_capacity(3000);
    for i in 0..3000 {
        let mut stream = TcpStream::connect(addr).expect("connect");
        if i % 2 == 0 {
            stream.write_all(b"GET /api/v2/openapi.json HTT").unwrap();
        }
        idle.push(stream);
    }
    let opened = opening.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let rss_with = rss_mb(pid);
    let (mut latencies, mut failed) = (Vec::new(), 0);
    for _ in 0..200 {
        let (latency, ok) = fresh_request(addr);
        latencies.push(latency);
        failed += usize::from(!ok);
    }
    println!("3,000 idle connections (1,500 with half a request line), opened in {opened:.2?}");
    println!(
        "  fresh GET /api/v2/openapi.json, new connection each: {}  failed {failed}",
        percentiles(latencies)
    );
    drop(idle);
    // the server hands the memory back within 10 s of a flood's end
    std::thread::sleep(Duration::from_secs(12));
    let rss_closed = rss_mb(pid);
    println!(
        "  server RSS: {rss_before:.1} MB before, {rss_with:.1} MB with them ({:.1} KB per \
         connection), {rss_closed:.1} MB 12 s after they closed",
        (rss_with - rss_before) * 1024.0 / 3000.0
    );

    // 2. a login flood against another user's reads
    login_flood(&base, pid, "default login limits");
    drop(server);
    let lifted = "1000000/60";
    let server = serve::start(
        &[],
        &[
            ("RUST_LOG", "error"),
            ("DEEPEMOTION_LOGINS_PER_ADDRESS", lifted),
            ("DEEPEMOTION_LOGIN_FAILURES_PER_EMAIL", lifted),
        ],
    );
    login_flood(
        &server.base,
        server.child.id(),
        "login limits lifted: every attempt runs argon2",
    );
}

fn login_flood(base: &str, pid: u32, what: &str) {
    println!("{what}");
    let http = reqwest::blocking::Client::new();
    for name in ["victim", "target"] {
        http.post(format!("{base}/auth/register"))
            .json(&json!({"username": name, "email": format!("{name}@example.com"), "password": "password123"}))
            .send()
            .unwrap();
    }
    let login: Value = http
        .post(format!("{base}/auth/login"))
        .json(&json!({"email": "victim@example.com", "password": "password123"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_string();
    let measure = |seconds: u64| {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let (mut latencies, mut failed) = (Vec::new(), 0);
        while Instant::now() < deadline {
            let started = Instant::now();
            let ok = http
                .get(format!("{base}/videos/"))
                .bearer_auth(&token)
                .send()
                .is_ok_and(|r| r.status().is_success());
            latencies.push(started.elapsed());
            failed += usize::from(!ok);
            // about 200 requests a second
            std::thread::sleep(Duration::from_millis(5));
        }
        (percentiles(latencies), failed)
    };
    let (alone, failed) = measure(3);
    println!("  GET /api/v2/videos/ alone:              {alone}  failed {failed}");

    let stop = Arc::new(AtomicBool::new(false));
    let statuses: Arc<[AtomicUsize; 6]> = Arc::new(Default::default());
    let flooding = Instant::now();
    let flood: Vec<_> = (0..30)
        .map(|i| {
            let (stop, statuses, base) = (stop.clone(), statuses.clone(), base.to_string());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    let slot = match client
                        .post(format!("{base}/auth/login"))
                        .json(&json!({"email": "target@example.com", "password": format!("wrong{i}")}))
                        .send()
                        .map(|r| r.status().as_u16())
                    {
                        Ok(401) => 0,
                        Ok(429) => 1,
                        Ok(s) if s < 400 => 2,
                        Ok(s) if s < 500 => 3,
                        Ok(_) => 4,
                        Err(_) => 5,
                    };
                    statuses[slot].fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (flooded, failed) = measure(5);
    stop.store(true, Ordering::Relaxed);
    for t in flood {
        t.join().unwrap();
    }
    let elapsed = flooding.elapsed().as_secs_f64();
    let counts: Vec<usize> = statuses.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    println!("  GET /api/v2/videos/ under the flood:    {flooded}  failed {failed}");
    println!(
        "  login flood: {} attempts in {elapsed:.1} s ({:.0}/s): 401 {}, 429 {}, 2xx {}, other 4xx {}, 5xx {}, errors {}",
        counts.iter().sum::<usize>(),
        counts.iter().sum::<usize>() as f64 / elapsed,
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        counts[4],
        counts[5]
    );
    println!("  server RSS after the flood: {:.1} MB", rss_mb(pid));
}
