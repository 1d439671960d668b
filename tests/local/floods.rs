//! Floods against a real `deepemotion serve` on 127.0.0.1: idle and half-sent connections, the
//! connection cap, slow-loris bodies, header floods, and the security headers. Bounded (a few
//! thousand sockets at most) and without timed assertions beyond generous multiples of the
//! configured timeouts; latencies and memory are printed, not asserted (see `benches/flood.rs`).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::{Value, json};

use crate::serve::{self, Server};

fn start(args: &[&str]) -> Server {
    raise_own_fd_limit();
    serve::start(args, &[])
}

/// This process holds thousands of sockets too: its soft open-file limit goes up to the hard one.
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

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
}

/// A response read off a raw connection: status, lower-cased headers, body.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Reads one response: the head, then `content-length` bytes of body.
fn read_response(stream: &mut TcpStream) -> std::io::Result<Raw> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("closed after {:?}", String::from_utf8_lossy(&buf)),
            ));
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; length];
    stream.read_exact(&mut body)?;
    Ok(Raw {
        status,
        headers,
        body,
    })
}

/// Sends `request` on a new connection and reads the response.
fn raw(addr: SocketAddr, request: &[u8]) -> Raw {
    let mut stream = connect(addr);
    stream.write_all(request).unwrap();
    read_response(&mut stream).unwrap()
}

/// Waits for the server to close `stream`: true on EOF or reset, false if it is still open
/// after the read timeout. Whatever the server sends first is read and skipped.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// Still open: a short read finds no EOF (data, if any, is read and skipped).
fn still_open(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return true;
            }
            Err(_) => return false,
        }
    }
}

const OPENAPI: &[u8] =
    b"GET /api/v2/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";

fn login(server: &Server, name: &str) -> String {
    serve::login(&Client::new(), &server.base, name)
}

fn initialize(server: &Server, token: &str, filename: &str) -> Value {
    let r = Client::new()
        .post(format!("{}/videos/upload/initialize", server.base))
        .bearer_auth(token)
        .json(&json!({"filename": filename}))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().unwrap()
}

#[test]
fn three_thousand_idle_connections_leave_room_for_a_fresh_request() {
    // a header timeout long enough that every idle connection is still held while we measure
    let server = start(&["--header-timeout", "120"]);
    let pid = server.child.id();
    let fresh = || {
        let started = Instant::now();
        let response = raw(server.addr, OPENAPI);
        (response.status, started.elapsed())
    };
    assert_eq!(fresh().0, 200);
    let rss_before = rss_kb(pid);
    let fds_before = open_fds(pid);

    let opened = Instant::now();
    let mut idle = Vec::with_capacity(3000);
    for i in 0..3000 {
        let mut stream = TcpStream::connect(server.addr).expect("connect");
        if i % 2 == 0 {
            stream.write_all(b"GET /api/v2/openapi.json HTT").unwrap();
        }
        idle.push(stream);
    }
    let opened = opened.elapsed();
    // let the server accept and read them all
    std::thread::sleep(Duration::from_secs(1));

    let mut latencies = Vec::new();
    for _ in 0..5 {
        let (status, latency) = fresh();
        assert_eq!(status, 200, "a fresh request under 3,000 idle connections");
        latencies.push(latency);
    }
    let held = open_fds(pid).saturating_sub(fds_before);
    let rss_after = rss_kb(pid);
    println!(
        "3,000 idle connections (1,500 half-sent) opened in {opened:.2?}; server holds {held} more \
         descriptors; fresh GET /api/v2/openapi.json: {:?}",
        latencies
    );
    println!(
        "server RSS {} KB -> {} KB: {:.1} KB per idle connection",
        rss_before,
        rss_after,
        rss_after.saturating_sub(rss_before) as f64 / 3000.0
    );
    drop(idle);
}

#[test]
fn half_sent_and_idle_connections_are_closed_within_the_header_timeout() {
    let server = start(&["--header-timeout", "2"]);
    let mut streams = Vec::new();
    for i in 0..30 {
        let mut stream = connect(server.addr);
        match i % 3 {
            // half a request line
            0 => stream.write_all(b"GET /api/v2/openapi.json HTT").unwrap(),
            // a complete request line and half the headers
            1 => stream
                .write_all(b"GET /api/v2/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A")
                .unwrap(),
            // a whole request, then the connection idles on keep-alive
            _ => {
                stream
                    .write_all(b"GET /api/v2/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    .unwrap();
                assert_eq!(read_response(&mut stream).unwrap().status, 200);
            }
        }
        streams.push(stream);
    }
    // and connections that never send a byte
    for _ in 0..10 {
        streams.push(connect(server.addr));
    }
    let started = Instant::now();
    for (i, stream) in streams.iter_mut().enumerate() {
        // the read timeout is 30 s: 15 times the header timeout
        assert!(
            closed_by_server(stream),
            "connection {i} still open {:?} after its last byte",
            started.elapsed()
        );
    }
    println!(
        "40 idle, half-sent or kept-alive connections closed by the server {:.2?} after their last \
         byte (header timeout 2 s)",
        started.elapsed()
    );
}

#[test]
fn connections_beyond_the_cap_get_a_503_and_are_closed() {
    let server = start(&["--max-connections", "20", "--header-timeout", "120"]);
    let mut idle: Vec<TcpStream> = (0..20).map(|_| connect(server.addr)).collect();
    // accepted after the 20 before it: refused with a 503, then closed
    let mut extra = connect(server.addr);
    let mut refused = Vec::new();
    let _ = extra.read_to_end(&mut refused);
    let refused = String::from_utf8_lossy(&refused);
    assert!(
        refused.starts_with("HTTP/1.1 503"),
        "over the cap: {refused:?}"
    );
    assert!(refused.contains(r#"{"error":"#), "{refused:?}");
    // once some close, new connections are served again
    idle.truncate(10);
    let started = Instant::now();
    loop {
        let mut stream = connect(server.addr);
        stream.write_all(OPENAPI).unwrap();
        match read_response(&mut stream) {
            Ok(r) if r.status == 200 => break,
            other => assert!(
                started.elapsed() < Duration::from_secs(30),
                "still refused 30 s after connections closed: {:?}",
                other.map(|r| r.status)
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn slow_loris_upload_bodies_are_cut_off() {
    // at least 200 bytes every 2 s; the uploads below send 2 bytes a second
    let server = start(&["--body-timeout", "2", "--body-min-rate", "100"]);
    let token = login(&server, "loris");
    let mut requests = Vec::new();
    for i in 0..3 {
        let init = initialize(&server, &token, &format!("slow{i}.mp4"));
        let url = init["upload_url"].as_str().unwrap();
        let path = &url[url.find("/uploads/").unwrap()..];
        let content_type = init["headers"]["Content-Type"].as_str().unwrap();
        requests.push(format!(
            "PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n\
             Content-Length: 100000\r\n\r\n"
        ));
    }
    for _ in 0..2 {
        requests.push(format!(
            "POST /api/v2/videos/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 100000\r\n\r\n\
             --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.mp4\"\r\n\
             Content-Type: video/mp4\r\n\r\n"
        ));
    }
    let started = Instant::now();
    let uploads: Vec<_> = requests
        .into_iter()
        .map(|head| {
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                stream.write_all(head.as_bytes()).unwrap();
                let done = Arc::new(AtomicBool::new(false));
                let mut writer = stream.try_clone().unwrap();
                let stop = done.clone();
                let trickle = std::thread::spawn(move || {
                    // a byte every 500 ms, for at most 60 s
                    for _ in 0..120 {
                        if stop.load(Ordering::Relaxed) || writer.write_all(b"x").is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(500));
                    }
                });
                let response = read_response(&mut stream);
                let closed = response.is_ok() && closed_by_server(&mut stream);
                let elapsed = started.elapsed();
                done.store(true, Ordering::Relaxed);
                trickle.join().unwrap();
                (response, closed, elapsed)
            })
        })
        .collect();
    for upload in uploads {
        let (response, closed, elapsed) = upload.join().unwrap();
        let response = response.expect("a response before the 60 s read timeout");
        assert_eq!(response.status, 408, "{:?}", response.json());
        assert!(response.json()["error"].is_string());
        assert!(closed, "the connection is closed after the 408");
        println!("slow-loris body cut off after {elapsed:.2?} (2 s windows)");
    }
    // the server is fine afterwards
    assert_eq!(raw(server.addr, OPENAPI).status, 200);
}

#[test]
fn header_floods_get_a_json_431() {
    let server = start(&[]);
    let request = |headers: &str| {
        format!(
            "GET /api/v2/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}\r\n"
        )
    };
    let many = |n: usize| -> String { (0..n).map(|i| format!("X-Flood-{i}: {i}\r\n")).collect() };

    for (what, headers) in [
        ("150 headers", many(150)),
        (
            "a 20 KB header",
            format!("X-Huge: {}\r\n", "a".repeat(20 * 1024)),
        ),
    ] {
        let response = raw(server.addr, request(&headers).as_bytes());
        assert_eq!(response.status, 431, "{what}");
        assert_eq!(
            response.header("content-type"),
            Some("application/json"),
            "{what}"
        );
        let error = response.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains("100 fields"), "{what}: {error}");
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    }
    // within the limits
    let response = raw(server.addr, request(&many(90)).as_bytes());
    assert_eq!(response.status, 200);
    // beyond the parser's own ceiling (256 fields, 64 KB) hyper refuses the request itself, with
    // an empty 431, and closes the connection (possibly before the response is read: a reset)
    let mut stream = connect(server.addr);
    stream.write_all(request(&many(300)).as_bytes()).unwrap();
    match read_response(&mut stream) {
        Ok(response) => assert_eq!(response.status, 431),
        Err(e) => println!("300 headers: connection closed without a readable response ({e})"),
    }
}

#[test]
fn security_headers_on_the_page_and_the_api() {
    let server = start(&[]);
    let http = Client::new();
    let page = http.get(format!("{}/", server.addr_url())).send().unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers();
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    // the upload and download links point at the public URL (here the same origin)
    assert!(
        csp.contains(&format!("connect-src 'self' {}", server.addr_url())),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    // the page has no inline script or style for the policy to block
    let html = page.text().unwrap();
    assert!(!html.contains("<script>") && !html.contains("<style") && !html.contains("style="));

    for path in [
        "/api/v2/openapi.json",
        "/api/v2/videos/",
        "/api/v2/nothing-here",
        "/app.js",
        "/socket.io/?EIO=4&transport=polling",
    ] {
        let r = http
            .get(format!("{}{path}", server.addr_url()))
            .send()
            .unwrap();
        let headers = r.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        if path.starts_with("/api/") {
            assert_eq!(
                headers["content-security-policy"], "default-src 'none'; frame-ancestors 'none'",
                "{path}"
            );
        }
    }
}

#[test]
fn long_lived_responses_outlive_the_timeouts() {
    let server = start(&["--header-timeout", "1", "--body-timeout", "1"]);
    let token = login(&server, "live");
    let init = initialize(&server, &token, "waiting.mp4");
    let id = init["video_id"].as_str().unwrap();

    // Server-Sent Events for a video that stays PENDING: open past both timeouts
    let mut events = connect(server.addr);
    events
        .write_all(
            format!(
                "GET /api/v2/videos/{id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let mut first = [0u8; 512];
    let n = events.read(&mut first).unwrap();
    let first = String::from_utf8_lossy(&first[..n]);
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");

    // socket.io over a websocket: the upgrade still works, and the upgraded connection is no
    // longer subject to the header timeout
    let mut socket = connect(server.addr);
    socket
        .write_all(
            format!(
                "GET /socket.io/?EIO=4&transport=websocket&token={token} HTTP/1.1\r\n\
                 Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let mut upgraded = [0u8; 512];
    let n = socket.read(&mut upgraded).unwrap();
    let upgraded = String::from_utf8_lossy(&upgraded[..n]);
    assert!(upgraded.starts_with("HTTP/1.1 101"), "{upgraded}");

    std::thread::sleep(Duration::from_secs(4));
    assert!(still_open(&mut events), "the SSE stream was cut");
    assert!(still_open(&mut socket), "the websocket was cut");
}

impl Server {
    fn addr_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
