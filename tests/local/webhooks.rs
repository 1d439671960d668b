//! Webhooks end to end against `deepemotion serve --dev`: receivers on 127.0.0.1 get signed
//! notifications when analyses end, and the signatures verify with the Standard Webhooks
//! reference package for Python (`standardwebhooks`, independent of the Rust crate that signs).
//! Retries follow the schedule, a receiver that never answers ends its delivery `failed`, and
//! another user sees none of it. Only order and counts are asserted, and lower bounds the
//! schedule guarantees, never how fast something happened: waits poll with generous deadlines.

use crate::serve;
use crate::server::{Session, upload};

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PEXELS: &str = "WolfgangLanger_Pexels.mp4";

/// How a receiver answers a request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Status(u16),
    /// Reads the request and never answers: the sender gives up after its timeout.
    Silence,
}

/// A request as it reached a receiver: header names in lower case, the body byte for byte.
#[derive(Debug, Clone)]
struct Received {
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// An HTTP receiver on 127.0.0.1, plain `std::net`, so that what it records is exactly what
/// came over the wire.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// Answers the requests with `answers` in turn, the last from then on.
    fn start(answers: &[Answer]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let answers = Arc::new(Mutex::new(answers.to_vec()));
        let log = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, answers) = (log.clone(), answers.clone());
                std::thread::spawn(move || serve_connection(stream, &log, &answers));
            }
        });
        Self { url, got }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

/// Serves the requests of one connection (the sender may keep it alive between attempts).
fn serve_connection(stream: TcpStream, log: &Mutex<Vec<Received>>, answers: &Mutex<Vec<Answer>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
        let length = headers
            .get("content-length")
            .map_or(0, |l| l.parse().unwrap());
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        log.lock().unwrap().push(Received { headers, body });
        let answer = {
            let mut answers = answers.lock().unwrap();
            if answers.len() > 1 {
                answers.remove(0)
            } else {
                answers[0]
            }
        };
        match answer {
            Answer::Status(code) => {
                let response = format!("HTTP/1.1 {code} Answer\r\ncontent-length: 0\r\n\r\n");
                if stream.write_all(response.as_bytes()).is_err() {
                    return;
                }
            }
            Answer::Silence => {
                // until the sender gives up and closes the connection
                let _ = std::io::copy(&mut reader, &mut std::io::sink());
                return;
            }
        }
    }
}

/// Polls `check` until it gives a value. The deadline only stops a test that hangs: the machine
/// may be busy, and nothing here is about speed.
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "still waiting for {what} after 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Session<'_> {
    fn post(&self, path: &str, body: Value) -> reqwest::blocking::Response {
        self.http
            .post(format!("{}{path}", self.server.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .unwrap()
    }

    fn delete_path(&self, path: &str) -> reqwest::blocking::Response {
        self.http
            .delete(format!("{}{path}", self.server.base))
            .bearer_auth(&self.token)
            .send()
            .unwrap()
    }

    fn json(&self, path: &str) -> Value {
        let r = self.get(path);
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        r.json().unwrap()
    }

    /// Registers an endpoint for `url`: its id and signing secret.
    fn endpoint(&self, url: &str, events: &[&str]) -> (String, String) {
        let r = self.post("/webhooks", json!({"url": url, "events": events}));
        assert_eq!(r.status(), StatusCode::CREATED);
        let created: Value = r.json().unwrap();
        let secret = created["secret"].as_str().unwrap().to_string();
        assert!(secret.starts_with("whsec_"), "{created}");
        (created["id"].as_str().unwrap().to_string(), secret)
    }

    /// Uploads `bytes` as a new video (with these extra `initialize` fields): its id.
    fn upload_video(&self, filename: &str, bytes: Vec<u8>, extra: Value) -> String {
        let mut body = json!({ "filename": filename });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let init = self.initialize_with(body);
        assert_eq!(upload(&self.http, &init, bytes).status(), StatusCode::OK);
        init["video_id"].as_str().unwrap().to_string()
    }

    /// The only delivery in a log, once it is no longer pending.
    fn settled_delivery(&self, log: &str) -> Value {
        wait_for(&format!("the delivery of {log} to settle"), || {
            let deliveries = self.json(&format!("/webhooks/{log}/deliveries"));
            let list = deliveries.as_array().unwrap();
            assert!(list.len() <= 1, "{deliveries}");
            list.first().filter(|d| d["status"] != "pending").cloned()
        })
    }
}

/// The outcome of verifying a request with the Python reference implementation.
#[derive(Debug, PartialEq)]
enum Verdict {
    Verified,
    Refused,
}

/// Verifies `request` as signed with `secret`, with `standardwebhooks` (PyPI) in `.deps/venv`.
fn verify_in_python(secret: &str, request: &Received) -> Verdict {
    const SCRIPT: &str = r#"
import json, sys
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
secret = open(sys.argv[1]).read()
headers = json.load(open(sys.argv[2]))
body = open(sys.argv[3], "rb").read()
try:
    Webhook(secret).verify(body, headers)
except WebhookVerificationError as e:
    print(f"refused: {e}")
    sys.exit(3)
print("verified")
"#;
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.deps/venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/setup.sh",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let (secret_file, headers_file, body_file) = (
        dir.path().join("secret"),
        dir.path().join("headers.json"),
        dir.path().join("body"),
    );
    std::fs::write(&secret_file, secret).unwrap();
    std::fs::write(&headers_file, json!(request.headers).to_string()).unwrap();
    std::fs::write(&body_file, &request.body).unwrap();
    let out = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .args([&secret_file, &headers_file, &body_file])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => Verdict::Verified,
        Some(3) => Verdict::Refused,
        _ => panic!("the verifier itself failed (is standardwebhooks installed?): {said}"),
    }
}

fn tampered(request: &Received) -> Received {
    let body = String::from_utf8(request.body.clone())
        .unwrap()
        .replacen("COMPLETED", "FAILED", 1);
    assert_ne!(body.as_bytes(), request.body);
    Received {
        headers: request.headers.clone(),
        body: body.into_bytes(),
    }
}

/// The one request a receiver got, once it has it.
fn first_request(receiver: &Receiver, what: &str) -> Received {
    wait_for(what, || receiver.received().first().cloned())
}

#[test]
fn a_finished_analysis_is_announced_signed_to_its_endpoint_and_callback() {
    let server = serve::start(&[], &[("DEEPEMOTION_WEBHOOK_FIRST_RETRY_SECS", "0.2")]);
    let ann = server.session("ann");
    let hook = Receiver::start(&[Answer::Status(204)]);
    let callback = Receiver::start(&[Answer::Status(200)]);
    let (endpoint, secret) = ann.endpoint(&hook.url, &["video.completed", "video.failed"]);
    let id = ann.upload_video(
        "pexels.mp4",
        std::fs::read(crate::common::video(PEXELS)).unwrap(),
        json!({"callback_url": callback.url}),
    );
    assert_eq!(
        ann.json(&format!("/videos/{id}"))["callback_url"],
        callback.url
    );

    let request = first_request(&hook, "the endpoint's notification");
    let event = request.json();
    assert_eq!(event["type"], "video.completed", "{event}");
    assert_eq!(event["data"]["video_id"], id.as_str());
    assert_eq!(event["data"]["status"], "COMPLETED");
    assert_eq!(request.headers["content-type"], "application/json");

    // the reference implementation accepts the signature, and refuses it over another body
    assert_eq!(verify_in_python(&secret, &request), Verdict::Verified);
    assert_eq!(
        verify_in_python(&secret, &tampered(&request)),
        Verdict::Refused
    );

    // the callback is signed with the owner's callback secret, not the endpoint's
    let called = first_request(&callback, "the callback");
    assert_eq!(called.json()["data"]["video_id"], id.as_str());
    let callback_secret = ann.json("/webhooks/signing-secret")["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        verify_in_python(&callback_secret, &called),
        Verdict::Verified
    );
    assert_eq!(verify_in_python(&secret, &called), Verdict::Refused);

    // the logs say delivered, on the first attempt, with the id the receivers got
    let delivered = ann.settled_delivery(&endpoint);
    assert_eq!(delivered["status"], "delivered", "{delivered}");
    assert_eq!(
        delivered["id"].as_str(),
        Some(&*request.headers["webhook-id"])
    );
    assert_eq!(delivered["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(delivered["attempts"][0]["status_code"], 204);
    assert_eq!(delivered["payload"], event);
    let summary = ann.json(&format!("/webhooks/{endpoint}"));
    assert_eq!(summary["last_delivery"]["status"], "delivered", "{summary}");
    let by_callback = ann.settled_delivery("callback");
    assert_eq!(by_callback["status"], "delivered", "{by_callback}");
    assert_eq!(hook.received().len(), 1);
    assert_eq!(callback.received().len(), 1);
}

/// The attempts of a delivery as the API lists them: (when, status code).
fn attempts(delivery: &Value) -> Vec<(DateTime<Utc>, Option<u64>)> {
    delivery["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["at"].as_str().unwrap().parse().unwrap(),
                a["status_code"].as_u64(),
            )
        })
        .collect()
}

#[test]
fn failed_attempts_are_retried_on_schedule_and_a_silent_receiver_ends_failed() {
    // a schedule of seconds: 3 attempts, 0.5 s after the first, then 1.5 s (+-20 %); the flaky
    // receiver succeeds on the last one. An attempt waits 2 s for an answer: the silent receiver
    // costs the schedule 3 x 2 s, and a receiver on this machine answers in milliseconds
    let server = serve::start(
        &[],
        &[
            ("DEEPEMOTION_WEBHOOK_FIRST_RETRY_SECS", "0.5"),
            ("DEEPEMOTION_WEBHOOK_ATTEMPTS", "3"),
            ("DEEPEMOTION_WEBHOOK_TIMEOUT_SECS", "2"),
        ],
    );
    let ann = server.session("ann");
    let flaky = Receiver::start(&[
        Answer::Status(500),
        Answer::Status(500),
        Answer::Status(200),
    ]);
    let silent = Receiver::start(&[Answer::Silence]);
    let (flaky_id, _) = ann.endpoint(&flaky.url, &["video.failed"]);
    let (silent_id, _) = ann.endpoint(&silent.url, &["video.failed"]);
    // a broken upload ends FAILED without the engine: video.failed to both
    let id = ann.upload_video("broken.mp4", b"not a video at all\n".to_vec(), json!({}));
    assert_eq!(ann.wait_until_done(&id)["status"], "FAILED");

    let delivered = ann.settled_delivery(&flaky_id);
    assert_eq!(delivered["status"], "delivered", "{delivered}");
    assert_eq!(delivered["video_id"], id.as_str());
    let tries = attempts(&delivered);
    let codes: Vec<Option<u64>> = tries.iter().map(|t| t.1).collect();
    assert_eq!(codes, [Some(500), Some(500), Some(200)], "{delivered}");
    // never sooner than the schedule says, and the second wait at least three times the first
    // wait's least (0.5 s and 1.5 s, less 20 % jitter)
    let gaps: Vec<chrono::TimeDelta> = tries.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(gaps[0] >= chrono::TimeDelta::milliseconds(400), "{gaps:?}");
    assert!(gaps[1] >= chrono::TimeDelta::milliseconds(1200), "{gaps:?}");
    // every attempt is the same message: one id, one body
    let requests = flaky.received();
    assert_eq!(requests.len(), 3);
    assert!(
        requests
            .iter()
            .all(|r| r.headers["webhook-id"] == delivered["id"])
    );
    assert!(requests.iter().all(|r| r.body == requests[0].body));

    let failed = ann.settled_delivery(&silent_id);
    assert_eq!(failed["status"], "failed", "{failed}");
    let tries = attempts(&failed);
    assert_eq!(tries.len(), 3, "the whole schedule: {failed}");
    assert!(tries.iter().all(|t| t.1.is_none()), "no answer: {failed}");
    let summary = ann.json(&format!("/webhooks/{silent_id}"));
    assert_eq!(summary["last_delivery"]["status"], "failed", "{summary}");
    assert_eq!(summary["last_delivery"]["attempts"], 3);
    assert!(
        summary["last_delivery"]["last_error"].is_string(),
        "{summary}"
    );
    assert_eq!(silent.received().len(), 3);

    // none of it is another user's to see or delete
    let bob = server.session("bob");
    let delivery_id = delivered["id"].as_str().unwrap();
    for path in [
        format!("/webhooks/{flaky_id}"),
        format!("/webhooks/{flaky_id}/deliveries"),
        format!("/webhooks/{flaky_id}/deliveries/{delivery_id}"),
    ] {
        assert_eq!(bob.get(&path).status(), StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(
        bob.delete_path(&format!("/webhooks/{flaky_id}")).status(),
        StatusCode::NOT_FOUND
    );
    assert!(
        bob.json("/webhooks/callback/deliveries")
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ann.get(&format!("/webhooks/{flaky_id}")).status(),
        StatusCode::OK
    );

    // the owner's delete takes the log with it
    assert_eq!(
        ann.delete_path(&format!("/webhooks/{flaky_id}")).status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        ann.get(&format!("/webhooks/{flaky_id}/deliveries"))
            .status(),
        StatusCode::NOT_FOUND
    );
}
