//! Finding and loading the ONNX Runtime shared library (`ort` with `load-dynamic`), once per process.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

use domain::AnalysisError;

const LIB_NAME: &str = "libonnxruntime.so.1";

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Where the library is looked for, in order: next to the executable (and its `lib/`), the
/// checkout's `.deps/lib` (where scripts/setup.sh puts it), then the usual system directories.
/// An explicit path (config or `ORT_DYLIB_PATH`) is the only candidate: if it is wrong, say so
/// rather than silently load another library.
pub fn library_candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
    {
        out.push(p);
        return out;
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        out.push(exe_dir.join(LIB_NAME));
        out.push(exe_dir.join("lib").join(LIB_NAME));
        for up in ["../../.deps/lib", "../../../.deps/lib"] {
            out.push(exe_dir.join(up).join(LIB_NAME));
        }
    }
    out.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../.deps/lib")
            .join(LIB_NAME),
    );
    for dir in [
        "/opt/onnxruntime/lib",
        "/usr/local/lib",
        "/usr/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
    ] {
        out.push(Path::new(dir).join(LIB_NAME));
    }
    out
}

/// The process-wide ONNX Runtime environment. The first call decides which library is loaded.
pub fn environment(explicit: Option<&Path>) -> Result<Environment, AnalysisError> {
    ENVIRONMENT
        .get_or_init(|| {
            let candidates = library_candidates(explicit);
            let Some(lib) = candidates.iter().find(|p| p.is_file()) else {
                return Err(candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "));
            };
            tracing::debug!(library = %lib.display(), "loading ONNX Runtime");
            ort::init_from(lib)
                .map_err(|e| format!("{} could not be loaded: {e}", lib.display()))?
                .with_name("deepemotion")
                .build()
                .map_err(|e| format!("{}: {e}", lib.display()))
        })
        .clone()
        .map_err(|searched| AnalysisError::OrtLibraryMissing { searched })
}

/// A CPU session with one intra-op thread: the pipeline gets its parallelism from running
/// detection and classification on separate threads, which on 2 cores beats ORT's own threading.
pub fn session(env: &Environment, model: &[u8]) -> Result<Session, AnalysisError> {
    Session::builder(env)
        .map_err(onnx)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(onnx)?
        .with_intra_threads(1)
        .map_err(onnx)?
        .with_inter_threads(1)
        .map_err(onnx)?
        .with_intra_op_spinning(false)
        .map_err(onnx)?
        .with_log_level(ort::logging::LogLevel::Error)
        .map_err(onnx)?
        .commit_from_memory(model)
        .map_err(onnx)
}

/// ONNX Runtime's errors, as the engine reports them (`?` cannot convert them: both the error
/// and `AnalysisError` live in other crates).
pub(crate) fn onnx<T>(e: ort::Error<T>) -> AnalysisError {
    AnalysisError::Onnx(e.to_string())
}
