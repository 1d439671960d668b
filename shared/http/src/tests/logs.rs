//! What the log lines say about a request: Lambda's JSON format, with the caller and the video on
//! the request's span once the handler knows them.

use std::sync::Mutex;

use super::*;

/// The JSON lines of what runs on this thread while it lives (the router runs on the test's).
struct JsonLogs {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl JsonLogs {
    fn capture() -> Self {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || SharedBuffer(writer.clone()))
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        Self { buffer, _guard }
    }

    /// The line whose message is `message`.
    fn line(&self, message: &str) -> Value {
        let text = String::from_utf8(self.buffer.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .find(|line| line["fields"]["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line in:\n{text}"))
    }
}

#[tokio::test]
async fn the_request_span_names_the_caller_and_the_video() {
    let api = api();
    let token = api.user("ann").await;
    let user_id = api.user_id(&token).await;
    let logs = JsonLogs::capture();
    let r = api
        .initialize(Some(&token), json!({"filename": "a.mp4"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let created = logs.line("video created");
    let span = &created["span"];
    assert_eq!(span["name"], "request", "{created}");
    assert_eq!(span["user_id"], user_id.as_str(), "{created}");
    assert_eq!(span["video_id"], r.str("video_id").as_str(), "{created}");
    assert_eq!(
        span["path"], "/api/v2/videos/upload/initialize",
        "{created}"
    );
}
