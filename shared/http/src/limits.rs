//! Request limits and security headers that every response gets, on both backends:
//!
//! - a documented limit on request headers, answered with a JSON 431 like every other error;
//! - `X-Content-Type-Options: nosniff`, `Referrer-Policy`, `X-Frame-Options` and a
//!   `Content-Security-Policy` (the web page's own policy for HTML, `default-src 'none'` for the
//!   rest);
//! - on one machine, a minimum rate for request bodies ([`min_body_rate`]), so an upload that
//!   trickles a byte now and then cannot hold a connection for ever.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::Frame;

/// Most header fields a request may carry (each value of a repeated header counts).
pub const MAX_HEADER_FIELDS: usize = 100;
/// Most bytes of header names and values a request may carry.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Refuses requests over [`MAX_HEADER_FIELDS`] or [`MAX_HEADER_BYTES`] with a JSON 431. The HTTP
/// server's own parser is set to a higher ceiling, so requests between the two get this answer.
pub async fn header_limits(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADER_FIELDS || bytes > MAX_HEADER_BYTES {
        return (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            axum::Json(serde_json::json!({
                "error": format!(
                    "request header fields too large: at most {MAX_HEADER_FIELDS} fields and \
                     {MAX_HEADER_BYTES} bytes of names and values"
                )
            })),
        )
            .into_response();
    }
    next.run(request).await
}

/// Origins besides the page's own that the built-in web page talks to: the server's public URL,
/// which upload and download links point at. The local server puts this in each request's
/// extensions; [`security_headers`] adds it to the page's `connect-src` and `media-src`.
#[derive(Debug, Clone, Default)]
pub struct PageOrigins(pub Vec<String>);

impl PageOrigins {
    /// The origin (`scheme://host[:port]`) of `url`, if it is a plain http(s) URL.
    pub fn from_url(url: &str) -> Self {
        let origin = url.split_once("://").and_then(|(scheme, rest)| {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            let plain = |c: char| c.is_ascii_alphanumeric() || ".-:[]".contains(c);
            ((scheme == "http" || scheme == "https") && !host.is_empty() && host.chars().all(plain))
                .then(|| format!("{scheme}://{host}"))
        });
        Self(origin.into_iter().collect())
    }
}

/// For everything that is not the web page: nothing may load from or frame it.
const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// The web page's policy: its script, stylesheet and API on its own origin (no inline script or
/// style: the page sets styles through the DOM only), the video from its own origin or the
/// server's public URL, the `data:` favicon, `blob:` images (people's thumbnails, fetched with
/// the token and shown through object URLs), never framed.
fn page_csp(origins: Option<&PageOrigins>) -> String {
    let extra: String = origins
        .map(|o| o.0.iter().map(|o| format!(" {o}")).collect())
        .unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
         media-src 'self'{extra}; connect-src 'self'{extra}; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'"
    )
}

/// Security headers on every response, errors included; a header a handler set is kept.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let origins = request.extensions().get::<PageOrigins>().cloned();
    let mut response = next.run(request).await;
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let headers = response.headers_mut();
    headers
        .entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    headers
        .entry(header::REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("no-referrer"));
    headers
        .entry(header::X_FRAME_OPTIONS)
        .or_insert(HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        let csp = if is_html {
            HeaderValue::from_str(&page_csp(origins.as_ref()))
                .unwrap_or(HeaderValue::from_static(API_CSP))
        } else {
            HeaderValue::from_static(API_CSP)
        };
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    response
}

/// The slowest a request body may arrive: at least `min_bytes_per_sec × window` bytes in every
/// `window`, counted while the server waits for the client (time a handler spends between reads
/// does not count). A body shorter than that must be complete within `window`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BodyRate {
    pub window: Duration,
    pub min_bytes_per_sec: u64,
}

impl BodyRate {
    fn min_bytes(&self) -> u64 {
        (self.min_bytes_per_sec as f64 * self.window.as_secs_f64()).ceil() as u64
    }
}

/// Wraps every request body in [`MinRateBody`]. A body that falls under the rate ends with an
/// error the handler sees as an interrupted body, and the response becomes a JSON 408 that closes
/// the connection, whatever the handler made of the error.
pub async fn min_body_rate(State(rate): State<BodyRate>, request: Request, next: Next) -> Response {
    use axum::body::HttpBody;
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let too_slow = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| {
        Body::new(MinRateBody {
            inner: body,
            min_bytes: rate.min_bytes().max(1),
            window: rate.window,
            received: 0,
            deadline: None,
            too_slow: too_slow.clone(),
        })
    });
    let response = next.run(request).await;
    if !too_slow.load(Ordering::Relaxed) {
        return response;
    }
    (
        StatusCode::REQUEST_TIMEOUT,
        [(header::CONNECTION, "close")],
        axum::Json(serde_json::json!({ "error": body_too_slow_message(&rate) })),
    )
        .into_response()
}

fn body_too_slow_message(rate: &BodyRate) -> String {
    format!(
        "the request body arrived too slowly (less than {} bytes in {} s)",
        rate.min_bytes(),
        rate.window.as_secs_f64()
    )
}

/// A request body that fails once fewer than `min_bytes` arrive within `window`: the window
/// restarts each time `min_bytes` have arrived. The clock runs only while the body waits for the
/// client, and starts when the handler first reads.
struct MinRateBody {
    inner: Body,
    min_bytes: u64,
    window: Duration,
    received: u64,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    too_slow: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body arrived too slowly")]
struct BodyTooSlow;

impl http_body::Body for MinRateBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.too_slow.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(BodyTooSlow.into())));
        }
        let window = this.window;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(window)));
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if this.received >= this.min_bytes {
                        this.received = 0;
                        let next = tokio::time::Instant::now() + window;
                        deadline.as_mut().reset(next);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map_err(Into::into))),
            Poll::Pending => {
                if deadline.as_mut().poll(cx).is_ready() {
                    this.too_slow.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(BodyTooSlow.into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::{get, put};
    use tower::ServiceExt;

    fn app() -> Router {
        Router::new()
            .route("/", get(|| async { axum::response::Html("<p>page</p>") }))
            .route("/api", get(|| async { axum::Json(serde_json::json!({})) }))
            .route(
                "/upload",
                put(|body: Body| async move {
                    match axum::body::to_bytes(body, usize::MAX).await {
                        Ok(b) => (StatusCode::OK, format!("{}", b.len())),
                        Err(e) => (StatusCode::BAD_REQUEST, format!("upload interrupted: {e}")),
                    }
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                BodyRate {
                    window: Duration::from_secs(2),
                    min_bytes_per_sec: 10,
                },
                min_body_rate,
            ))
            .layer(axum::middleware::from_fn(header_limits))
            .layer(axum::middleware::from_fn(security_headers))
    }

    #[tokio::test]
    async fn too_many_or_too_large_headers_get_a_json_431() {
        let mut many = Request::get("/api");
        for i in 0..=MAX_HEADER_FIELDS {
            many = many.header(format!("x-h{i}"), "1");
        }
        let large = Request::get("/api").header("x-big", "a".repeat(MAX_HEADER_BYTES));
        for request in [many, large] {
            let response = app()
                .oneshot(request.body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            );
            assert_eq!(response.headers()["content-type"], "application/json");
            assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        }
        let mut fine = Request::get("/api");
        for i in 0..MAX_HEADER_FIELDS {
            fine = fine.header(format!("x-h{i}"), "1");
        }
        let response = app()
            .oneshot(fine.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn the_page_and_the_api_get_their_policies() {
        let page = Request::get("/")
            .extension(PageOrigins::from_url("http://127.0.0.1:8080/x"))
            .body(Body::empty())
            .unwrap();
        let response = app().oneshot(page).await.unwrap();
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap();
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(
            csp.contains("connect-src 'self' http://127.0.0.1:8080;"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("img-src 'self' data: blob:;"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(response.headers()["x-frame-options"], "DENY");
        assert_eq!(response.headers()["referrer-policy"], "no-referrer");
        let response = app()
            .oneshot(Request::get("/api").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.headers()["content-security-policy"], API_CSP);
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    }

    #[test]
    fn page_origins_take_only_plain_origins() {
        assert_eq!(
            PageOrigins::from_url("https://emotions.example.com:8443/base/").0,
            ["https://emotions.example.com:8443"]
        );
        assert!(
            PageOrigins::from_url("http://a.com; script-src *")
                .0
                .is_empty()
        );
        assert!(PageOrigins::from_url("javascript://x").0.is_empty());
    }

    #[tokio::test]
    async fn a_trickling_body_is_cut_off_and_a_steady_one_is_not() {
        // 2 bytes a second against 10 bytes/s over 2 s windows: cut off after the first window
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        tokio::spawn(async move {
            for _ in 0..100 {
                if tx.send(Ok(Bytes::from_static(b"x"))).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let body = Body::from_stream(tokio_stream_from(rx));
        let started = tokio::time::Instant::now();
        let response = app()
            .oneshot(Request::put("/upload").body(body).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(response.headers()["connection"], "close");
        // generous: the bound is 2 s
        assert!(started.elapsed() < Duration::from_secs(30));

        // 30 bytes every 200 ms for 3 s: far more than 20 bytes in every 2 s window
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        tokio::spawn(async move {
            for _ in 0..15 {
                tx.send(Ok(Bytes::from(vec![b'x'; 30]))).await.unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let body = Body::from_stream(tokio_stream_from(rx));
        let response = app()
            .oneshot(Request::put("/upload").body(body).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), 100)
            .await
            .unwrap();
        assert_eq!(&bytes[..], b"450");
    }

    fn tokio_stream_from<T: Send + 'static>(
        rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> {
        futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
    }
}
