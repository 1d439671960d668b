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

/// How much of ONNX Runtime's graph optimisation a model gets when its session is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Optimization {
    /// Every optimisation (fusions, layout changes): for the models run on every frame.
    Full,
    /// None: for a model run a few times per video (the recognizer), where optimising 22 MB of
    /// weights would double the process's start-up peak (transient copies of every initializer)
    /// to save a few milliseconds per video.
    Off,
}

/// A CPU session with one intra-op thread: the pipeline gets its parallelism from running
/// detection and classification on separate threads, which on 2 cores beats ORT's own threading.
/// No memory arena: the engine's tensors are small and the same size frame after frame, and an
/// arena only keeps what the largest run once needed.
pub fn session(
    env: &Environment,
    model: &Path,
    optimization: Optimization,
) -> Result<Session, AnalysisError> {
    let level = match optimization {
        Optimization::Full => GraphOptimizationLevel::Level3,
        Optimization::Off => GraphOptimizationLevel::Disable,
    };
    Session::builder(env)
        .map_err(onnx)?
        .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(false).build()])
        .map_err(onnx)?
        .with_optimization_level(level)
        .map_err(onnx)?
        .with_intra_threads(1)
        .map_err(onnx)?
        .with_inter_threads(1)
        .map_err(onnx)?
        .with_intra_op_spinning(false)
        .map_err(onnx)?
        .with_log_level(ort::logging::LogLevel::Error)
        .map_err(onnx)?
        .commit_from_file(model)
        .map_err(onnx)
}

/// Gives the heap's free pages back to the system. Building sessions leaves tens of megabytes
/// of freed parser and optimiser buffers in glibc's heap, which it would otherwise keep for the
/// life of the process (and Lambda bills the memory size that holds them).
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the kernel; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// ONNX Runtime's errors, as the engine reports them (`?` cannot convert them: both the error
/// and `AnalysisError` live in other crates).
pub(crate) fn onnx<T>(e: ort::Error<T>) -> AnalysisError {
    AnalysisError::Onnx(e.to_string())
}
