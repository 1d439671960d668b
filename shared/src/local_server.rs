//! `deepemotion serve`: the whole product on one machine. The same router as on Lambda, over
//! SQLite, files and an in-process queue, with the analysis worker in the same process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::adapters::local::{FileBlobs, LocalQueue, SqliteStore};
use crate::http::{ApiConfig, AppState, TokenKeys};
use crate::live::{AnnouncingLedger, VideoEvents};
use crate::ports::{AnalysisJob, JobQueue};
use crate::worker::{AnalysisWorker, JobOutcome, WorkerConfig};
use crate::{Analyzer, EngineConfig};

#[derive(Debug, Clone)]
pub struct LocalServerConfig {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// Base of the upload/download URLs handed to clients (default `http://{addr}`).
    pub public_url: Option<String>,
    /// Token signing secret (`DEEPEMOTION_JWT_SECRET`); `None` is only allowed with `dev`.
    pub jwt_secret: Option<String>,
    /// Explicit development mode: without a secret, one is generated and kept in the data dir.
    pub dev: bool,
    pub engine: EngineConfig,
    pub api: ApiConfig,
    pub worker: WorkerConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "no token secret: set DEEPEMOTION_JWT_SECRET (32+ characters), or pass --dev to generate one in the data directory"
    )]
    NoSecret,
    #[error("DEEPEMOTION_JWT_SECRET must be at least 32 characters")]
    WeakSecret,
    #[error("{0}")]
    Startup(String),
}

fn startup(e: impl std::fmt::Display) -> ServerError {
    ServerError::Startup(e.to_string())
}

fn secret(config: &LocalServerConfig) -> Result<String, ServerError> {
    if let Some(s) = &config.jwt_secret {
        return if s.len() >= 32 {
            Ok(s.clone())
        } else {
            Err(ServerError::WeakSecret)
        };
    }
    if !config.dev {
        return Err(ServerError::NoSecret);
    }
    let path = config.data_dir.join("dev-jwt-secret");
    if let Ok(s) = std::fs::read_to_string(&path) {
        return Ok(s.trim().to_string());
    }
    let generated = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    std::fs::write(&path, &generated).map_err(startup)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(startup)?;
    }
    tracing::warn!(path = %path.display(), "development mode: generated a token secret");
    Ok(generated)
}

/// Serves until Ctrl-C. Calls `ready` with the bound address once it accepts connections.
pub async fn serve(
    config: LocalServerConfig,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServerError> {
    std::fs::create_dir_all(&config.data_dir).map_err(startup)?;
    let secret = secret(&config)?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(startup)?;
    let addr = listener.local_addr().map_err(startup)?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));

    let engine = config.engine.clone();
    let analyzer = tokio::task::spawn_blocking(move || Analyzer::new(engine))
        .await
        .map_err(startup)?
        .map_err(startup)?;
    let store =
        Arc::new(SqliteStore::open(&config.data_dir.join("deepemotion.db")).map_err(startup)?);
    // uploads are signed with a key derived from the token secret, never with the secret itself
    let blob_key = Sha256::digest(format!("deepemotion-blobs:{secret}"));
    let files = Arc::new(FileBlobs::new(
        config.data_dir.join("blobs"),
        public_url,
        &blob_key,
    ));
    let (queue, mut jobs) = LocalQueue::new();
    let events = VideoEvents::default();

    let worker = AnalysisWorker {
        videos: store.clone(),
        ledger: Arc::new(AnnouncingLedger::new(store.clone(), events.clone())),
        results: store.clone(),
        blobs: files.clone(),
        jobs: Arc::new(queue.clone()),
        analyzer: Arc::new(analyzer),
        config: config.worker.clone(),
    };
    // the same processing function the analysis Lambda runs, fed by the in-process queue
    tokio::spawn(async move {
        while let Some(job) = jobs.recv().await {
            match worker.handle(&job, None).await {
                Ok(JobOutcome::Skipped { reason }) => {
                    tracing::info!(key = %job.key, segment = ?job.segment, %reason, "job skipped")
                }
                Ok(outcome) => tracing::info!(key = %job.key, ?outcome, "job done"),
                Err(e) => {
                    tracing::error!(key = %job.key, error = %e, "job failed; it resumes at the next start")
                }
            }
        }
    });
    for key in store.requeue_interrupted().map_err(startup)? {
        tracing::warn!(%key, "resuming an analysis interrupted by a restart");
        queue
            .enqueue(AnalysisJob::upload(key))
            .await
            .map_err(startup)?;
    }

    let tokens = TokenKeys::new(secret.as_bytes(), 3600);
    let state = AppState {
        users: store.clone(),
        videos: store.clone(),
        results: store.clone(),
        blobs: files.clone(),
        jobs: Arc::new(queue),
        tokens: tokens.clone(),
        config: config.api.clone(),
        local_files: Some(files),
        events: events.clone(),
    };
    // CORS outermost, so socket.io's polling requests get it too
    let app = crate::http::routes(state)
        .layer(crate::socket::progress_socket(tokens, store, events))
        .layer(crate::http::cors(&config.api.cors_origins));
    tracing::info!(%addr, "serving /api/v2, socket.io and the web page");
    ready(addr);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(startup)
}
