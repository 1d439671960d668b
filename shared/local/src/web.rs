//! The built-in web page (`web/`, built into `web/dist/` and committed), served by
//! `deepemotion serve` at `/`. The files are compiled into the binary so the one-machine product
//! stays a single file; `DEEPEMOTION_WEB_DIR` serves them from a directory instead, for work on
//! the page without rebuilding the server.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use http_api::{ApiError, AppState};

const INDEX_HTML: &str = include_str!("../../../web/dist/index.html");
const APP_JS: &str = include_str!("../../../web/dist/app.js");
const APP_CSS: &str = include_str!("../../../web/dist/app.css");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|state| asset(state, "index.html", INDEX_HTML, "text/html; charset=utf-8")),
        )
        .route(
            "/app.js",
            get(|state| asset(state, "app.js", APP_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/app.css",
            get(|state| asset(state, "app.css", APP_CSS, "text/css; charset=utf-8")),
        )
}

async fn asset(
    State(state): State<AppState>,
    name: &'static str,
    embedded: &'static str,
    content_type: &'static str,
) -> Result<Response, ApiError> {
    let body = match &state.config.web_dir {
        Some(dir) => tokio::fs::read_to_string(dir.join(name))
            .await
            .map_err(|e| ApiError::Internal(format!("{}: {e}", dir.join(name).display())))?,
        None => embedded.to_string(),
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            // the page is small and changes with the binary: always revalidate
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}
