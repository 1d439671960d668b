use std::path::PathBuf;

/// Everything that can stop an analysis, each with a message a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error("input file not found: {0}")]
    InputNotFound(PathBuf),

    #[error("{path} is empty (0 bytes)")]
    EmptyFile { path: PathBuf },

    #[error("{path} is not a video or image file ffmpeg can read ({detail})")]
    NotMediaFile { path: PathBuf, detail: String },

    #[error("{path} is truncated or incomplete ({detail}); upload the whole file again")]
    Truncated { path: PathBuf, detail: String },

    #[error("{path} has no video stream")]
    NoVideoStream { path: PathBuf },

    #[error("{path}: unsupported video codec {codec:?} (this ffmpeg has no decoder for it)")]
    UnsupportedCodec { path: PathBuf, codec: String },

    /// Refused from the stream's or the image's header, before anything is decoded: a frame this
    /// large would take more memory than the engine allows (a "decompression bomb" is a tiny file
    /// that claims huge frames). The limits are the engine's `max_frame_pixels` and
    /// `max_frame_side`.
    #[error(
        "the frames are {width}x{height} pixels ({mp:.1} megapixels); the limit is {max_mp:.0} megapixels and {max_side} pixels a side: scale the video or image down and try again",
        mp = megapixels(u64::from(*.width) * u64::from(*.height)),
        max_mp = megapixels(*.max_pixels)
    )]
    FrameTooLarge {
        width: u32,
        height: u32,
        max_pixels: u64,
        max_side: u32,
    },

    /// A video stream without a single frame (an empty track, or a header and nothing after it).
    #[error("the video has no frames")]
    NoFrames,

    #[error("{path} is corrupt: decoding failed after {frames_decoded} frames ({detail})")]
    CorruptStream {
        path: PathBuf,
        frames_decoded: u64,
        detail: String,
    },

    #[error(
        "ffmpeg not found ({0}); install it (apt-get install ffmpeg) or set DEEPEMOTION_FFMPEG"
    )]
    FfmpegMissing(String),

    #[error("ffmpeg failed: {0}")]
    Ffmpeg(String),

    #[error("could not read image {path}: {detail}")]
    Image { path: PathBuf, detail: String },

    #[error(
        "model {name:?} not found at {path}; run scripts/setup.sh or set DEEPEMOTION_MODELS_DIR"
    )]
    ModelMissing { name: String, path: PathBuf },

    #[error(
        "model {name:?} at {path} has sha256 {actual}, expected one of {expected:?}; delete it and run scripts/setup.sh"
    )]
    ModelChecksum {
        name: String,
        path: PathBuf,
        expected: Vec<String>,
        actual: String,
    },

    #[error("unknown model {name:?}; known: {known}")]
    UnknownModel { name: String, known: String },

    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("invalid model spec: {0}")]
    ModelSpec(String),

    #[error(
        "ONNX Runtime library not found (searched: {searched}); run scripts/setup.sh or set ORT_DYLIB_PATH"
    )]
    OrtLibraryMissing { searched: String },

    #[error("ONNX Runtime error: {0}")]
    Onnx(String),

    #[error("result sink failed: {0}")]
    Sink(String),

    #[error("analysis cancelled")]
    Cancelled,

    /// A bug, not the input's fault: a pipeline stage panicked (the panic is caught and the
    /// engine stays usable), or a stage broke an invariant.
    #[error("internal error: {0}")]
    Internal(String),

    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

fn megapixels(pixels: u64) -> f64 {
    pixels as f64 / 1e6
}

impl AnalysisError {
    /// True when the input itself is at fault (a client error), as opposed to this service.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            AnalysisError::InputNotFound(_)
                | AnalysisError::EmptyFile { .. }
                | AnalysisError::NotMediaFile { .. }
                | AnalysisError::Truncated { .. }
                | AnalysisError::NoVideoStream { .. }
                | AnalysisError::UnsupportedCodec { .. }
                | AnalysisError::FrameTooLarge { .. }
                | AnalysisError::NoFrames
                | AnalysisError::CorruptStream { .. }
                | AnalysisError::Image { .. }
        )
    }
}
