//! End to end over real HTTP against `deepemotion serve`: what a client of the one-machine product
//! does, from registering to deleting.

use crate::common;
use crate::serve::{self, Server};

use std::time::{Duration, Instant};

use common::video;
use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::{Value, json};

fn start() -> Server {
    start_with(&[])
}

fn start_with(env: &[(&str, &str)]) -> Server {
    serve::start(&[], env)
}

/// A registered user's client (the webhook tests use it too).
pub(crate) struct Session<'a> {
    pub server: &'a Server,
    pub http: Client,
    pub token: String,
}

impl Server {
    pub(crate) fn session(&self, name: &str) -> Session<'_> {
        let http = Client::new();
        let token = serve::login(&http, &self.base, name);
        Session {
            server: self,
            http,
            token,
        }
    }
}

impl Session<'_> {
    pub(crate) fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.http
            .get(format!("{}{path}", self.server.base))
            .bearer_auth(&self.token)
            .send()
            .unwrap()
    }

    fn delete(&self, id: &str) -> reqwest::blocking::Response {
        self.http
            .delete(format!("{}/videos/{id}", self.server.base))
            .bearer_auth(&self.token)
            .send()
            .unwrap()
    }

    fn initialize(&self, filename: &str) -> Value {
        self.initialize_with(json!({ "filename": filename }))
    }

    pub(crate) fn initialize_with(&self, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}/videos/upload/initialize", self.server.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().unwrap()
    }

    pub(crate) fn wait_until_done(&self, id: &str) -> Value {
        let started = Instant::now();
        loop {
            let v: Value = self.get(&format!("/videos/{id}")).json().unwrap();
            if v["status"] == "COMPLETED" || v["status"] == "FAILED" {
                return v;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "still {} after 2 minutes",
                v["status"]
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

pub(crate) fn upload(http: &Client, init: &Value, body: Vec<u8>) -> reqwest::blocking::Response {
    http.put(init["upload_url"].as_str().unwrap())
        .header(
            "Content-Type",
            init["headers"]["Content-Type"].as_str().unwrap(),
        )
        .body(body)
        .send()
        .unwrap()
}

#[test]
fn register_upload_analyse_read_page_export_delete() {
    let server = start();
    let ann = server.session("ann");
    let init = ann.initialize("pexels.mp4");
    let id = init["video_id"].as_str().unwrap().to_string();
    assert_eq!(
        upload(
            &ann.http,
            &init,
            std::fs::read(video("WolfgangLanger_Pexels.mp4")).unwrap()
        )
        .status(),
        StatusCode::OK
    );

    let done = ann.wait_until_done(&id);
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["progress"], 100);
    assert!((19.0..20.0).contains(&done["duration_seconds"].as_f64().unwrap()));
    let summary = &done["summary"];
    assert_eq!(summary["tracks"].as_array().unwrap().len(), 1);
    // the timeline says sad first, happy later
    let dominant_at = |second: u64| {
        let entry = summary["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["second"] == second)
            .unwrap();
        entry["mean"]
            .as_object()
            .unwrap()
            .iter()
            .max_by(|a, b| a.1.as_f64().unwrap().total_cmp(&b.1.as_f64().unwrap()))
            .unwrap()
            .0
            .clone()
    };
    assert_eq!(dominant_at(2), "sad");
    assert_eq!(dominant_at(15), "happy");

    // the download URL serves the file
    let url = done["video_url"].as_str().unwrap();
    assert_eq!(
        ann.http.get(url).send().unwrap().bytes().unwrap().len(),
        std::fs::metadata(video("WolfgangLanger_Pexels.mp4"))
            .unwrap()
            .len() as usize
    );

    // frames page by page: all of them, in order, once
    let total = done["frame_count"].as_u64().unwrap();
    let mut seen = Vec::new();
    let mut path = format!("/videos/{id}/frames?limit=40");
    loop {
        let r = ann.get(&path);
        let link = r
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_string());
        let page: Vec<Value> = r.json().unwrap();
        seen.extend(page.iter().map(|f| f["frame_number"].as_u64().unwrap()));
        for face in page.iter().flat_map(|f| f["faces"].as_array().unwrap()) {
            assert_eq!(face["person"], 1, "one woman: {face}");
            assert!(face["smoothed"].is_object() && face["smoothed_dominant"].is_string());
        }
        match link {
            Some(l) => {
                path = l[1..l.find('>').unwrap()]
                    .trim_start_matches("/api/v2")
                    .to_string()
            }
            None => break,
        }
    }
    assert_eq!(seen.len() as u64, total);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));

    // one person, with a thumbnail only the owner can fetch
    let people = summary["people"].as_array().unwrap();
    assert_eq!(people.len(), 1, "{summary}");
    assert_eq!(people[0]["frames"].as_u64(), Some(total));
    let thumbnail = ann.get(&format!("/videos/{id}/people/1.jpg"));
    assert_eq!(thumbnail.status(), StatusCode::OK);
    assert_eq!(thumbnail.headers()["content-type"], "image/jpeg");
    assert_eq!(&thumbnail.bytes().unwrap()[..2], &[0xff, 0xd8]);
    assert_eq!(
        ann.get(&format!("/videos/{id}/people/2.jpg")).status(),
        StatusCode::NOT_FOUND
    );

    // CSV: a header and one row per face per frame
    let csv = ann.get(&format!("/videos/{id}/export.csv")).text().unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(&header[..4], &["frame", "t_ms", "track", "person"]);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len() as u64, total, "one face in every frame");
    assert!(
        rows.iter()
            .all(|r| r.len() == header.len() && r[1].parse::<u64>().is_ok())
    );

    // another user sees nothing
    let bob = server.session("bob");
    assert_eq!(
        bob.get(&format!("/videos/{id}")).status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        bob.get(&format!("/videos/{id}/people/1.jpg")).status(),
        StatusCode::NOT_FOUND
    );

    // delete removes the record, the results and the file
    let blob = server
        .data_dir
        .path()
        .join("blobs")
        .join(init["s3_key"].as_str().unwrap());
    assert!(blob.exists());
    let r = ann.delete(&id);
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        ann.get(&format!("/videos/{id}")).status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        ann.get(&format!("/videos/{id}/frames")).status(),
        StatusCode::NOT_FOUND
    );
    assert!(!blob.exists());
    assert!(
        !server
            .data_dir
            .path()
            .join("blobs/results")
            .join(&id)
            .exists(),
        "the thumbnails went with the video"
    );
}

#[test]
fn tampered_or_mistyped_upload_urls_are_refused_and_bad_files_fail_clearly() {
    let server = start();
    let ann = server.session("ann");
    let init = ann.initialize("notes.mp4");
    let url = init["upload_url"].as_str().unwrap();

    let tampered = url.replace("signature=", "signature=00");
    let r = ann
        .http
        .put(tampered)
        .header("Content-Type", "video/mp4")
        .body("x")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = ann
        .http
        .put(url)
        .header("Content-Type", "text/plain")
        .body("x")
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "the Content-Type is signed"
    );
    let longer = url.replace("expires=", "expires=9");
    let r = ann
        .http
        .put(longer)
        .header("Content-Type", "video/mp4")
        .body("x")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "the expiry is signed");
    let body: Value = r.json().unwrap();
    assert!(body["error"].is_string());

    // a text file named .mp4 is analysed, fails with a clear error, and stays listed
    assert_eq!(
        upload(&ann.http, &init, b"just some meeting notes".to_vec()).status(),
        StatusCode::OK
    );
    let done = ann.wait_until_done(init["video_id"].as_str().unwrap());
    assert_eq!(done["status"], "FAILED");
    let error = done["error"].as_str().unwrap();
    assert!(error.contains("not a video"), "{error}");
    assert!(
        !error.contains(server.data_dir.path().to_str().unwrap()),
        "no server paths in errors: {error}"
    );
}

#[test]
fn the_original_clients_local_mode_uploads_multipart_and_streams() {
    let server = start();
    let ann = server.session("ann");
    let bytes = std::fs::read(video("single_face.mp4")).unwrap();
    let form = reqwest::blocking::multipart::Form::new()
        .text("title", "Smile")
        .part(
            "file",
            reqwest::blocking::multipart::Part::bytes(bytes.clone())
                .file_name("smile.mp4")
                .mime_str("video/mp4")
                .unwrap(),
        );
    let r = ann
        .http
        .post(format!("{}/videos/upload", server.base))
        .bearer_auth(&ann.token)
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().unwrap();
    assert_eq!(created["title"], "Smile");
    let id = created["id"].as_str().unwrap();
    assert_eq!(ann.wait_until_done(id)["status"], "COMPLETED");

    // the player's source: no token (a <video> element cannot send one), the random id is the
    // capability, and byte ranges work so the player can seek
    let stream = format!("{}/videos/stream/{id}.mp4", server.base);
    let anyone = Client::new();
    let r = anyone.get(&stream).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(r.headers()["content-type"], "video/mp4");
    assert_eq!(r.bytes().unwrap().as_ref(), bytes.as_slice());
    let r = anyone
        .get(&stream)
        .header("Range", "bytes=100-199")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 100-199/{}", bytes.len()).as_str()
    );
    assert_eq!(r.bytes().unwrap().as_ref(), &bytes[100..200]);
    let r = anyone
        .get(&stream)
        .header("Range", format!("bytes={}-", bytes.len() + 10))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    // never another file: traversal, the database, the secret, a guessed id
    for bad in [
        "..%2Fdeepemotion.db".to_string(),
        "..%2F..%2Fdev-jwt-secret".to_string(),
        "%2E%2E%2F%2E%2E%2Fdeepemotion.db".to_string(),
        format!("{}.mp4", uuid::Uuid::new_v4()),
        format!("{id}.mov"),
    ] {
        let r = anyone
            .get(format!("{}/videos/stream/{bad}", server.base))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{bad}");
    }
    // a deleted video's URL is dead
    let r = ann.delete(id);
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        anyone.get(&stream).send().unwrap().status(),
        StatusCode::NOT_FOUND
    );
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Every file under the server's blob directory (uploads and leftovers of any kind).
fn stored_files(server: &Server) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&server.data_dir.path().join("blobs"), &mut out);
    out
}

fn streamed(session: &Session, init: &Value) -> Vec<u8> {
    let name = init["s3_key"].as_str().unwrap().rsplit('/').next().unwrap();
    let r = session
        .http
        .get(format!("{}/videos/stream/{name}", session.server.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.bytes().unwrap().to_vec()
}

#[test]
fn an_upload_url_writes_once_after_completed_failed_or_deleted() {
    let server = start();
    let ann = server.session("ann");
    let pexels = std::fs::read(video("WolfgangLanger_Pexels.mp4")).unwrap();
    let other = b"some other bytes, not the analysed video\n".repeat(100);

    // COMPLETED: a second PUT is refused and the stream still serves what was analysed
    let init = ann.initialize("pexels.mp4");
    let id = init["video_id"].as_str().unwrap();
    assert_eq!(
        upload(&ann.http, &init, pexels.clone()).status(),
        StatusCode::OK
    );
    assert_eq!(ann.wait_until_done(id)["status"], "COMPLETED");
    let again = upload(&ann.http, &init, other.clone());
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let body: Value = again.json().unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("already been used"),
        "{body}"
    );
    assert_eq!(sha256(&streamed(&ann, &init)), sha256(&pexels));

    // FAILED stays failed: the URL is used up (a new upload is a new video)
    let bad = ann.initialize("notes.mp4");
    let bad_id = bad["video_id"].as_str().unwrap();
    assert_eq!(
        upload(&ann.http, &bad, b"not a video at all\n".to_vec()).status(),
        StatusCode::OK
    );
    assert_eq!(ann.wait_until_done(bad_id)["status"], "FAILED");
    assert_eq!(
        upload(&ann.http, &bad, pexels.clone()).status(),
        StatusCode::CONFLICT
    );
    let still: Value = ann.get(&format!("/videos/{bad_id}")).json().unwrap();
    assert_eq!(still["status"], "FAILED");

    // DELETE: the old URL finds nothing, and nothing is left on disk
    for init in [&init, &bad] {
        let id = init["video_id"].as_str().unwrap();
        let r = ann.delete(id);
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            upload(&ann.http, init, other.clone()).status(),
            StatusCode::NOT_FOUND
        );
    }
    let pending = ann.initialize("later.mp4");
    let r = ann.delete(pending["video_id"].as_str().unwrap());
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        upload(&ann.http, &pending, pexels).status(),
        StatusCode::NOT_FOUND,
        "a PUT to a deleted video's URL"
    );
    assert_eq!(stored_files(&server), Vec::<std::path::PathBuf>::new());
}

#[test]
fn concurrent_puts_to_one_url_store_exactly_one_whole_upload() {
    let server = start();
    let ann = server.session("ann");
    let pexels = std::fs::read(video("WolfgangLanger_Pexels.mp4")).unwrap();
    let init = ann.initialize("race.mp4");
    // eight different bodies (an mp4 ignores trailing bytes), some sent slowly in chunks
    let bodies: Vec<Vec<u8>> = (0..8u8)
        .map(|i| {
            let mut body = pexels.clone();
            body.extend(std::iter::repeat_n(i, 4096 * (usize::from(i) + 1)));
            body
        })
        .collect();
    let statuses: Vec<StatusCode> = std::thread::scope(|scope| {
        let handles: Vec<_> = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| {
                let (init, body) = (&init, body.clone());
                scope.spawn(move || {
                    let http = Client::new();
                    let request = http
                        .put(init["upload_url"].as_str().unwrap())
                        .header("Content-Type", "video/mp4");
                    let request = if i % 2 == 0 {
                        request.body(body)
                    } else {
                        // a slow writer: the body arrives in pieces
                        let reader = SlowReader {
                            chunks: body.chunks(64 * 1024).map(<[u8]>::to_vec).collect(),
                            at: 0,
                        };
                        request.body(reqwest::blocking::Body::sized(reader, body.len() as u64))
                    };
                    request.send().unwrap().status()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won = statuses.iter().filter(|s| s.is_success()).count();
    assert_eq!(won, 1, "exactly one upload wins: {statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| s.is_success() || *s == StatusCode::CONFLICT),
        "the others get 409, never a 500: {statuses:?}"
    );
    let stored = sha256(&streamed(&ann, &init));
    assert!(
        bodies.iter().any(|b| sha256(b) == stored),
        "the stored object is one of the uploads, whole"
    );
    assert_eq!(
        stored_files(&server).len(),
        1,
        "no temporary files left: {:?}",
        stored_files(&server)
    );
}

/// Hands out a body in pieces with a pause between them.
struct SlowReader {
    chunks: std::collections::VecDeque<Vec<u8>>,
    at: usize,
}

impl std::io::Read for SlowReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(chunk) = self.chunks.front() else {
            return Ok(0);
        };
        if self.at == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let n = buf.len().min(chunk.len() - self.at);
        buf[..n].copy_from_slice(&chunk[self.at..self.at + n]);
        self.at += n;
        if self.at == chunk.len() {
            self.chunks.pop_front();
            self.at = 0;
        }
        Ok(n)
    }
}

/// A form the original web client sends: `file` and `title`.
fn multipart(session: &Session, bytes: Vec<u8>) -> reqwest::blocking::Response {
    let form = reqwest::blocking::multipart::Form::new()
        .text("title", "big one")
        .part(
            "file",
            reqwest::blocking::multipart::Part::bytes(bytes)
                .file_name("big.mp4")
                .mime_str("video/mp4")
                .unwrap(),
        );
    session
        .http
        .post(format!("{}/videos/upload", session.server.base))
        .bearer_auth(&session.token)
        .multipart(form)
        .send()
        .unwrap()
}

#[test]
fn multipart_uploads_take_real_sizes_and_declared_sizes_are_enforced() {
    let server = start_with(&[("DEEPEMOTION_MAX_UPLOAD_BYTES", "8000000")]);
    let ann = server.session("ann");
    let mut big = std::fs::read(video("WolfgangLanger_Pexels.mp4")).unwrap();
    big.resize(6_000_000, 0); // a real video is rarely under axum's 2 MB default body limit
    let r = multipart(&ann, big.clone());
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().unwrap());
    let mut huge = big;
    huge.resize(9_000_000, 0);
    let r = multipart(&ann, huge);
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.json::<Value>().unwrap()["error"].is_string());
    // the original client sends the title after the file: the title rule still holds
    let form = reqwest::blocking::multipart::Form::new()
        .part(
            "file",
            reqwest::blocking::multipart::Part::bytes(vec![0u8; 10_000])
                .file_name("late.mp4")
                .mime_str("video/mp4")
                .unwrap(),
        )
        .text("title", "x".repeat(201));
    let r = ann
        .http
        .post(format!("{}/videos/upload", server.base))
        .bearer_auth(&ann.token)
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let listed: Value = ann.get("/videos/").json().unwrap();
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "the refused uploads left no video"
    );
    assert_eq!(stored_files(&server).len(), 1, "nor a file");

    // a declared size is the size: more is 413, less is 400, exactly it is stored
    let init = ann.initialize_with(json!({"filename": "small.mp4", "size_bytes": 1000}));
    assert_eq!(
        upload(&ann.http, &init, vec![1u8; 208_000]).status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        upload(&ann.http, &init, vec![1u8; 999]).status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        upload(&ann.http, &init, vec![1u8; 1000]).status(),
        StatusCode::OK
    );
}

#[test]
fn a_decompression_bomb_fails_clearly_and_newer_uploads_still_complete() {
    let server = start();
    let ann = server.session("ann");
    // 790 KB of PNG that decodes to 16000x16000 pixels, uploaded as a video
    let bomb = common::bomb_png();
    let init = ann.initialize("bomb.mp4");
    let id = init["video_id"].as_str().unwrap();
    assert_eq!(
        upload(&ann.http, &init, std::fs::read(&bomb).unwrap()).status(),
        StatusCode::OK
    );
    let clip = ann.initialize("after.mp4");
    let clip_id = clip["video_id"].as_str().unwrap();
    let pexels = std::fs::read(video("WolfgangLanger_Pexels.mp4")).unwrap();
    assert_eq!(upload(&ann.http, &clip, pexels).status(), StatusCode::OK);

    let failed = ann.wait_until_done(id);
    assert_eq!(failed["status"], "FAILED", "{failed}");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("16000"),
        "the reason names the size: {error}"
    );
    assert!(
        !error.contains(server.data_dir.path().to_str().unwrap()),
        "{error}"
    );
    assert_eq!(ann.wait_until_done(clip_id)["status"], "COMPLETED");
}

#[test]
fn uploads_queued_together_are_analysed_one_at_a_time_while_the_api_answers() {
    let server = start();
    let ann = server.session("ann");
    // four 2.5 s clips of the Pexels clip, each analysed at every frame (about 60 frames)
    let dir = tempfile::tempdir().unwrap();
    let pexels = video("WolfgangLanger_Pexels.mp4");
    let clips: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            let out = dir.path().join(format!("clip{i}.mp4"));
            let start = format!("{}", 2 + 4 * i);
            common::ffmpeg(&[
                "-ss",
                &start,
                "-t",
                "2.5",
                "-i",
                pexels.to_str().unwrap(),
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-pix_fmt",
                "yuv420p",
                "-an",
                out.to_str().unwrap(),
            ]);
            std::fs::read(out).unwrap()
        })
        .collect();
    let inits: Vec<Value> = (0..clips.len())
        .map(|i| ann.initialize_with(json!({"filename": format!("clip{i}.mp4"), "sample_fps": 0})))
        .collect();
    let ids: Vec<String> = inits
        .iter()
        .map(|init| init["video_id"].as_str().unwrap().to_string())
        .collect();
    // all uploaded at once: each stored upload queues its analysis
    std::thread::scope(|scope| {
        let puts: Vec<_> = inits
            .iter()
            .zip(&clips)
            .map(|(init, clip)| scope.spawn(|| upload(&Client::new(), init, clip.clone()).status()))
            .collect();
        for put in puts {
            assert_eq!(put.join().unwrap(), StatusCode::OK);
        }
    });

    // Each poll of the list is one read of the database: it shows which analyses have started
    // (PROCESSING) and not ended. With the default setting, never two at once.
    let started = Instant::now();
    let (mut most_at_once, mut calls_during_analysis) = (0, 0);
    let statuses = loop {
        let list = ann.get("/videos/");
        assert_eq!(list.status(), StatusCode::OK);
        let list: Vec<Value> = list.json().unwrap();
        let ours: Vec<&Value> = list
            .iter()
            .filter(|v| ids.iter().any(|id| v["id"] == id.as_str()))
            .collect();
        assert_eq!(ours.len(), ids.len());
        let processing: Vec<&str> = ours
            .iter()
            .filter(|v| v["status"] == "PROCESSING")
            .map(|v| v["id"].as_str().unwrap())
            .collect();
        assert!(
            processing.len() <= 1,
            "analyses at once with the default setting: {processing:?}"
        );
        most_at_once = most_at_once.max(processing.len());
        if let Some(id) = processing.first()
            && calls_during_analysis < 3
        {
            // the API answers while an analysis runs: a read and a new upload URL
            assert_eq!(ann.get(&format!("/videos/{id}")).status(), StatusCode::OK);
            ann.initialize("another.mp4");
            calls_during_analysis += 1;
        }
        if ours
            .iter()
            .all(|v| v["status"] == "COMPLETED" || v["status"] == "FAILED")
        {
            break ours
                .iter()
                .map(|v| v["status"].as_str().unwrap().to_string())
                .collect::<Vec<_>>();
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "not every analysis ended within 10 minutes: {ours:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        statuses.iter().all(|s| s == "COMPLETED"),
        "every upload is analysed: {statuses:?}"
    );
    assert_eq!(most_at_once, 1, "an analysis was seen running");
    assert!(calls_during_analysis > 0);
}

#[test]
fn a_bad_analysis_concurrency_stops_the_server_at_start() {
    for (how, value) in [("env", "0"), ("env", "two"), ("env", "65"), ("flag", "0")] {
        let data_dir = tempfile::tempdir().unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_deepemotion"));
        command
            .args(["serve", "--dev", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        match how {
            "env" => command.env("DEEPEMOTION_ANALYSIS_CONCURRENCY", value),
            _ => command.args(["--analysis-concurrency", value]),
        };
        let mut child = command.spawn().unwrap();
        // it must stop by itself; a server that started anyway is stopped after a minute
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if child.try_wait().unwrap().is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{how} {value}: the server started");
        }
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "{how} {value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("DEEPEMOTION_ANALYSIS_CONCURRENCY") && stderr.contains("1 to 64"),
            "{how} {value}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{how} {value}: nothing served");
    }
}
