//! `deepemotion serve`: the whole product on one machine. The same router as on Lambda, over
//! SQLite, files and an in-process queue, with the analysis worker in the same process.

use std::io::Write;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use domain::VideoAnalyzer;
use domain::memory::MemoryRateLimiter;
use domain::ports::{AnalysisJob, JobQueue};
use domain::webhooks::{SecretBox, TargetPolicy};
use http_api::limits::{self, BodyRate, PageOrigins};
use http_api::live::{AnnouncingLedger, VideoEvents};
use http_api::{ApiConfig, ApiPorts, AppState, ServerUploads, check_secret};
use webhooks::{Deliverer, DeliveryConfig};
use worker::{AnalysisWorker, WorkerConfig, WorkerPorts};

use crate::engines::EnginePool;
use crate::{DeliveryRunner, FileBlobs, LocalDeliveries, LocalQueue, SqliteStore};

#[derive(Debug, Clone)]
pub struct LocalServerConfig {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// Base of the upload/download URLs handed to clients (default `http://{addr}`).
    pub public_url: Option<String>,
    /// Token signing secret (`DEEPEMOTION_JWT_SECRET`); `None` is only allowed with `dev`.
    pub jwt_secret: Option<String>,
    /// Explicit development mode: without a secret, one is generated and kept in the data dir;
    /// webhooks may go to `http` URLs and to this machine (a receiver under test).
    pub dev: bool,
    pub api: ApiConfig,
    /// The worker's settings; the server sets `engine_nice` to [`ANALYSIS_NICE`].
    pub worker: WorkerConfig,
    pub limits: ConnectionLimits,
    /// Analyses run at once (`DEEPEMOTION_ANALYSIS_CONCURRENCY`, default 1). Each has its own
    /// engine, loaded at start; further uploads wait in the queue. Uploads and API calls never
    /// wait for analyses: these run on their own threads, off the runtime that serves requests.
    pub analysis_concurrency: NonZeroUsize,
}

/// How much lower than the server's requests the analyses run (their threads' and ffmpeg's
/// niceness, Linux): on a machine as busy as its cores, requests get a core first, and the
/// analyses lose next to nothing, since requests take little CPU.
pub const ANALYSIS_NICE: i32 = 10;

/// Analyses at once by default: on a small machine one analysis already keeps the cores busy
/// (ffmpeg, detection and classification run side by side), and each more holds another engine.
pub const DEFAULT_ANALYSIS_CONCURRENCY: NonZeroUsize = NonZeroUsize::MIN;

/// What a client may hold of the server: how long a connection may take to send a request head,
/// how many connections are served at once, and how slowly a request body may arrive.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// A connection must deliver a complete request head within this time of opening, or of the
    /// end of its previous response: it is also the keep-alive idle timeout
    /// (`DEEPEMOTION_HEADER_TIMEOUT`, 20 s).
    pub header_timeout: Duration,
    /// Most connections served at once (`DEEPEMOTION_MAX_CONNECTIONS`); beyond it a new
    /// connection gets a 503 and is closed. `None` derives it from the file-descriptor limit,
    /// which is raised to its hard limit at start: half of what is left after 256 for files,
    /// since a connection may hold a second descriptor, at most [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: Option<usize>,
    /// The slowest a request body may arrive (`DEEPEMOTION_BODY_TIMEOUT`, 20 s, and
    /// `DEEPEMOTION_BODY_MIN_RATE`, 500 bytes/s: at least 10,000 bytes in every 20 s).
    pub body_rate: BodyRate,
}

/// The connection cap when the fd limit allows it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;
/// Descriptors kept for everything but connections: the database, ffmpeg's pipes, the runtime.
const RESERVED_FDS: u64 = 256;
/// The HTTP parser's own ceilings, above the documented limits the router answers with a JSON 431
/// ([`limits::MAX_HEADER_FIELDS`], [`limits::MAX_HEADER_BYTES`]). A request over these gets
/// hyper's bare 431 and the connection is closed.
const PARSER_MAX_HEADERS: usize = 256;
const PARSER_MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long Ctrl-C waits for requests in flight (an SSE stream may never end by itself).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// After this many connections have closed since the last peak, their memory goes back to the
/// system (see [`allocator::trim`]), checked every [`TRIM_CHECK`].
const TRIM_AFTER_CLOSED: usize = 1000;
const TRIM_CHECK: Duration = Duration::from_secs(10);

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(20),
            max_connections: None,
            body_rate: BodyRate {
                window: Duration::from_secs(20),
                min_bytes_per_sec: 500,
            },
        }
    }
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
        return check_secret(s)
            .map(|_| s.clone())
            .map_err(|_| ServerError::WeakSecret);
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

/// The file in the data directory that holds the key sealing webhook signing secrets.
pub const WEBHOOK_KEY_FILE: &str = "webhook.key";

/// The key that seals webhook signing secrets in the database: [`WEBHOOK_KEY_FILE`], made on the
/// first start. A key of its own rather than one derived from the token secret, so that either
/// can be rotated alone, and a copy of the database alone opens no secret. Never logged.
fn webhook_key(data_dir: &Path) -> Result<SecretBox, ServerError> {
    let path = data_dir.join(WEBHOOK_KEY_FILE);
    loop {
        match std::fs::read_to_string(&path) {
            Ok(material) => {
                warn_if_readable_by_others(&path);
                return SecretBox::from_key_material(&material)
                    .map_err(|e| ServerError::Startup(format!("{}: {e}", path.display())));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ServerError::Startup(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        }
        if create_key_file(&path)? {
            tracing::info!(path = %path.display(), "made the webhook key");
        }
    }
}

/// Writes fresh key material to `path` unless a key is there already. The key is written whole
/// to a temporary file (mode 0600) and then linked into place, which fails rather than replace a
/// key another start made meanwhile: two starts at once end up with one key, and a reader never
/// sees half of one. True when this call made the key.
fn create_key_file(path: &Path) -> Result<bool, ServerError> {
    let temp = path.with_extension(format!("key.{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let made = (|| {
        let mut file = options.open(&temp)?;
        file.write_all(SecretBox::generate_key().as_bytes())?;
        file.sync_all()?;
        match std::fs::hard_link(&temp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&temp);
    let made =
        made.map_err(|e| ServerError::Startup(format!("cannot create {}: {e}", path.display())))?;
    // the new name survives a power cut too
    if made && let Some(dir) = path.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(made)
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        let mode = meta.permissions().mode() & 0o777;
        tracing::warn!(
            path = %path.display(),
            mode = %format!("{mode:o}"),
            "other users can read the webhook key: chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// Loads an analysis engine (blocking: the models are read and their sessions built); called
/// once per analysis run at once.
pub type AnalyzerLoader = Box<dyn Fn() -> Result<Arc<dyn VideoAnalyzer>, String> + Send + 'static>;

/// Serves until Ctrl-C. Calls `ready` with the bound address once it accepts connections.
pub async fn serve(
    config: LocalServerConfig,
    load_analyzer: AnalyzerLoader,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServerError> {
    allocator::configure();
    std::fs::create_dir_all(&config.data_dir).map_err(startup)?;
    let secret = secret(&config)?;
    let webhook_key = webhook_key(&config.data_dir)?;
    let delivery_config = DeliveryConfig::from_env(config.dev).map_err(ServerError::Startup)?;
    let mut api_config = config.api.clone();
    if config.dev {
        api_config.webhook_policy = TargetPolicy::development();
    }
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(startup)?;
    let addr = listener.local_addr().map_err(startup)?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let page_origins = PageOrigins::from_url(&public_url);

    let at_once = config.analysis_concurrency;
    let analyzer = tokio::task::spawn_blocking(move || {
        let engines = (0..at_once.get())
            .map(|_| load_analyzer())
            .collect::<Result<Vec<_>, _>>()?;
        Ok::<_, String>(EnginePool::of(engines))
    })
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
    let (queue, jobs) = LocalQueue::new();
    let events = VideoEvents::default();

    // webhook deliveries: stored in the database, attempted by the runner's tasks
    let deliveries = LocalDeliveries::default();
    let deliverer = Deliverer::new(
        store.clone(),
        Arc::new(deliveries.clone()),
        webhook_key.clone(),
        delivery_config.clone(),
    )
    .map_err(ServerError::Startup)?;
    tokio::spawn(DeliveryRunner::new(store.clone(), Arc::new(deliverer), &deliveries).run());
    tracing::info!(
        attempts = delivery_config.schedule.attempts,
        first_retry_s = delivery_config.schedule.first.as_secs_f64(),
        timeout_s = delivery_config.timeout.as_secs_f64(),
        private_targets = delivery_config.policy.allow_private,
        "webhook deliveries"
    );

    let ports = WorkerPorts {
        videos: store.clone(),
        ledger: Arc::new(AnnouncingLedger::new(store.clone(), events.clone())),
        results: store.clone(),
        blobs: files.clone(),
        jobs: Arc::new(queue.clone()),
        webhooks: store.clone(),
        deliveries: Arc::new(deliveries.clone()),
    };
    let worker_config = WorkerConfig {
        engine_nice: ANALYSIS_NICE,
        ..config.worker.clone()
    };
    let worker = AnalysisWorker::new(ports, analyzer, worker_config);
    // the same processing function the analysis Lambda runs, fed by the in-process queue
    tokio::spawn(Arc::new(worker).serve_queue(jobs, Arc::new(queue.clone()), at_once));
    for key in store.requeue_interrupted().map_err(startup)? {
        tracing::warn!(%key, "resuming an analysis interrupted by a restart");
        queue
            .enqueue(AnalysisJob::upload(key))
            .await
            .map_err(startup)?;
    }

    let ports = ApiPorts {
        users: store.clone(),
        videos: store.clone(),
        results: store.clone(),
        blobs: files.clone(),
        limiter: Arc::new(MemoryRateLimiter::default()),
        webhooks: store.clone(),
        deliveries: Arc::new(deliveries),
        webhook_key,
    };
    let state = AppState::new(ports, &secret, api_config.clone())
        .map_err(|_| ServerError::WeakSecret)?
        .with_server_uploads(ServerUploads {
            files: files.clone(),
            jobs: Arc::new(queue),
        })
        .with_events(events.clone());
    let tokens = state.tokens.clone();
    // the page and the signed URLs are part of the one-machine product; on AWS the page is
    // deployed as static files and S3 serves the URLs
    let local_routes = crate::uploads::upload_routes(files).merge(crate::web::routes());
    // CORS outside socket.io, so its polling requests get it too; the limits and security
    // headers outermost, so socket.io's requests and responses get them as well
    let app = http_api::routes(state, local_routes)
        .layer(crate::socket::progress_socket(
            tokens,
            store.clone(),
            store,
            events,
        ))
        .layer(http_api::cors(&api_config.cors_origins))
        .layer(axum::middleware::from_fn(limits::header_limits))
        .layer(axum::middleware::from_fn_with_state(
            config.limits.body_rate,
            limits::min_body_rate,
        ))
        .layer(axum::middleware::from_fn(limits::security_headers))
        .layer(axum::Extension(page_origins));
    let max_connections = connection_cap(config.limits.max_connections, raise_fd_limit());
    tracing::info!(
        %addr,
        max_connections,
        header_timeout_s = config.limits.header_timeout.as_secs_f64(),
        body_window_s = config.limits.body_rate.window.as_secs_f64(),
        body_min_rate = config.limits.body_rate.min_bytes_per_sec,
        analyses_at_once = at_once.get(),
        "serving /api/v2, socket.io and the web page"
    );
    ready(addr);
    serve_connections(listener, app, &config.limits, max_connections).await;
    Ok(())
}

/// Raises the soft limit on open files to the hard limit; returns the limit now in force.
fn raise_fd_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

/// The connection cap: the configured one, or [`DEFAULT_MAX_CONNECTIONS`], within what the
/// file-descriptor limit allows.
fn connection_cap(configured: Option<usize>, fd_limit: Option<u64>) -> usize {
    let by_fds = fd_limit.map(|n| (n.saturating_sub(RESERVED_FDS) / 2).max(16));
    let by_fds = by_fds.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let cap = match (configured, by_fds) {
        (Some(c), Some(f)) if c > f => {
            tracing::warn!(
                configured = c,
                fd_limit,
                "DEEPEMOTION_MAX_CONNECTIONS is more than the open-file limit allows; using {f}"
            );
            f
        }
        (Some(c), _) => c,
        (None, Some(f)) => f.min(DEFAULT_MAX_CONNECTIONS),
        (None, None) => DEFAULT_MAX_CONNECTIONS,
    };
    cap.clamp(1, u32::MAX as usize)
}

/// The accept loop: hyper's HTTP/1 server per connection, with the header-read timeout and the
/// parser's ceilings, at most `max_connections` at once, until Ctrl-C.
async fn serve_connections(
    listener: TcpListener,
    app: Router,
    limits: &ConnectionLimits,
    max_connections: usize,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(PARSER_MAX_HEADERS)
        .max_header_size(PARSER_MAX_HEAD_BYTES);
    let slots = Arc::new(Semaphore::new(max_connections));
    let peak = Arc::new(AtomicUsize::new(0));
    tokio::spawn(release_memory_after_floods(
        slots.clone(),
        peak.clone(),
        max_connections,
    ));
    let (closing, closed) = tokio::sync::watch::channel(());
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut refused = 0u64;
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            _ = &mut ctrl_c => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if refused == 0 {
                tracing::warn!(
                    max_connections,
                    "connection limit reached: refusing new connections until some close"
                );
            }
            refused += 1;
            refuse(stream);
            continue;
        };
        if refused > 0 {
            tracing::warn!(refused, "below the connection limit again");
            refused = 0;
        }
        peak.fetch_max(
            max_connections - slots.available_permits(),
            Ordering::Relaxed,
        );
        let _ = stream.set_nodelay(true);
        // handlers may ask for the client's address (`ConnectInfo<SocketAddr>`)
        let service = app
            .clone()
            .map_request(move |mut request: axum::http::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(remote));
                request
            });
        let conn = http
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .with_upgrades();
        let mut closed = closed.clone();
        tokio::spawn(async move {
            let _slot = slot;
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = closed.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%remote, error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    let _ = closing.send(());
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("stopping with requests still open");
    }
}

/// Once at least [`TRIM_AFTER_CLOSED`] connections have closed since the most open at once, hands
/// the memory their buffers took back to the system: about 13 KB each, which the allocator would
/// otherwise keep for reuse (8,000 connections: 102 MB while open, 72 MB of it kept after).
async fn release_memory_after_floods(slots: Arc<Semaphore>, peak: Arc<AtomicUsize>, max: usize) {
    let mut check = tokio::time::interval(TRIM_CHECK);
    loop {
        check.tick().await;
        let open = max - slots.available_permits();
        if peak.load(Ordering::Relaxed).saturating_sub(open) >= TRIM_AFTER_CLOSED {
            peak.store(open, Ordering::Relaxed);
            let _ = tokio::task::spawn_blocking(allocator::trim).await;
            tracing::debug!(open, "returned the memory of closed connections");
        }
    }
}

/// glibc's allocator, tuned for a server that must give memory back after a flood.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod allocator {
    /// Allocations of at least this size get their own mapping, returned to the system when
    /// freed. glibc's default threshold starts at 128 KiB and rises to the largest block freed so
    /// far (up to 32 MiB), after which such blocks come from the thread's arena and stay there:
    /// argon2's 19 MiB per password check then stayed resident, 409 MB after 39 wrong logins.
    /// 16 MiB keeps video frames up to about 2560x1440 RGB in the arenas, as before.
    const MMAP_THRESHOLD: libc::c_int = 16 << 20;

    pub fn configure() {
        // SAFETY: mallopt only sets an allocator parameter.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        }
    }

    /// Returns free memory in every arena to the system.
    pub fn trim() {
        // SAFETY: malloc_trim only releases free pages.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod allocator {
    pub fn configure() {}
    pub fn trim() {}
}

/// Over the connection cap: a best-effort 503 (the socket's send buffer is empty, so the write
/// does not block), then the connection is closed.
fn refuse(stream: TcpStream) {
    const BODY: &str = r#"{"error":"too many connections; try again shortly"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\
         x-content-type-options: nosniff\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

/// Errors of `accept` that concern one connection are skipped; others (out of descriptors, which
/// the cap should prevent) are logged and retried shortly.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_key_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = webhook_key(dir.path()).unwrap();
        let path = dir.path().join(WEBHOOK_KEY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sealed = first.seal("whsec_abc");
        let again = webhook_key(dir.path()).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), "whsec_abc", "the same key");
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn starts_at_once_agree_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<SecretBox> = std::thread::scope(|s| {
            let starts: Vec<_> = (0..8)
                .map(|_| s.spawn(|| webhook_key(dir.path()).unwrap()))
                .collect();
            starts.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let sealed = keys[0].seal("whsec_abc");
        for key in &keys {
            assert_eq!(key.open(&sealed).unwrap(), "whsec_abc");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_short_key_file_is_refused_without_showing_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(WEBHOOK_KEY_FILE), "hunter2").unwrap();
        let error = webhook_key(dir.path()).err().unwrap().to_string();
        assert!(error.contains(WEBHOOK_KEY_FILE), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}
