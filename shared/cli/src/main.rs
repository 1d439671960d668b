//! `deepemotion`: the command-line front end. It only parses arguments and wires the engine to
//! an output writer; everything else lives in the `shared` library.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use domain::assembly::PeopleSink;
use domain::report::{CsvReport, JsonReport, SummaryReport};
use domain::{
    AnalysisOptions, AnalysisSink, FrameResult, MediaSource, ModelInfo, SinkError, Summary,
    TrackProfile, VideoAnalyzer, VideoInfo,
};
use engine::{Analyzer, EngineConfig};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "deepemotion",
    version,
    about = "What emotions do the faces in a video show, frame by frame"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Emotion model preset from models/manifest.json (faceapi, mini-xception, ferplus).
    #[arg(long, global = true, env = "DEEPEMOTION_CLASSIFIER")]
    model: Option<String>,
    /// A JSON spec for your own emotion model (see README); overrides --model.
    #[arg(long, global = true, env = "DEEPEMOTION_CLASSIFIER_SPEC")]
    model_spec: Option<PathBuf>,
    /// Face detector preset (yunet, yunet-dynamic).
    #[arg(long, global = true, env = "DEEPEMOTION_DETECTOR")]
    detector: Option<String>,
    /// Long side in pixels frames are scaled to for face detection (yunet-dynamic; default 384).
    /// Larger finds smaller faces, slower.
    #[arg(long, global = true)]
    detect_size: Option<u32>,
    /// Directory with the model files.
    #[arg(long, global = true, env = "DEEPEMOTION_MODELS_DIR")]
    models_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Analyse a video (or a jpg/png image as one frame).
    Analyze {
        input: PathBuf,
        /// Frames per second to analyse; 0 = every frame.
        #[arg(long, default_value_t = 5.0)]
        fps: f64,
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Run the face detector at most every N ms of video, tracking faces in between (0 = every analysed frame).
        #[arg(long)]
        detect_interval_ms: Option<u64>,
    },
    /// Run the whole product on this machine: the /api/v2 API, uploads and the analysis worker.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
        /// Where the database, uploads and results live.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Base URL clients use to reach this server (for upload links), if not http://ADDR.
        #[arg(long)]
        public_url: Option<String>,
        /// Development mode: without DEEPEMOTION_JWT_SECRET, generate a secret in the data dir.
        #[arg(long)]
        dev: bool,
        /// Seconds a connection has to send a complete request head, from opening or from its
        /// previous response (so also the keep-alive idle timeout).
        #[arg(long, env = "DEEPEMOTION_HEADER_TIMEOUT", default_value = "20", value_name = "SECONDS", value_parser = seconds)]
        header_timeout: std::time::Duration,
        /// Most connections served at once; beyond it new ones get a 503 and are closed
        /// [default: from the open-file limit, at most 8192].
        #[arg(long, env = "DEEPEMOTION_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
        max_connections: Option<u32>,
        /// A request body must deliver BODY_MIN_RATE x BODY_TIMEOUT bytes in every BODY_TIMEOUT
        /// seconds (a shorter body must be complete within it), else 408.
        #[arg(long, env = "DEEPEMOTION_BODY_TIMEOUT", default_value = "20", value_name = "SECONDS", value_parser = seconds)]
        body_timeout: std::time::Duration,
        /// Bytes per second (see --body-timeout).
        #[arg(
            long,
            env = "DEEPEMOTION_BODY_MIN_RATE",
            default_value_t = 500,
            value_name = "BYTES"
        )]
        body_min_rate: u64,
        /// Analyses run at once, each with its own engine; further uploads wait in the queue
        /// (1 to 64).
        #[arg(long, env = "DEEPEMOTION_ANALYSIS_CONCURRENCY", default_value_t = local_server::DEFAULT_ANALYSIS_CONCURRENCY, value_name = "N", value_parser = analyses_at_once)]
        analysis_concurrency: std::num::NonZeroUsize,
    },
    /// Classify images that are already face crops (no detection); one JSON line per image.
    Classify {
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Csv,
    Summary,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(if is_serve() { "info" } else { "warn" })
            }),
        )
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deepemotion: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A positive number of seconds, e.g. `20` or `2.5`.
fn seconds(value: &str) -> Result<std::time::Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
        .map(std::time::Duration::from_secs_f64)
        .ok_or_else(|| format!("{value:?} is not a positive number of seconds"))
}

/// How many analyses `serve` runs at once: a whole number from 1 to 64.
fn analyses_at_once(value: &str) -> Result<std::num::NonZeroUsize, String> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| *n <= 64)
        .and_then(std::num::NonZeroUsize::new)
        .ok_or_else(|| {
            "the number of analyses run at once (DEEPEMOTION_ANALYSIS_CONCURRENCY, \
             --analysis-concurrency) must be a whole number from 1 to 64"
                .to_string()
        })
}

/// The server logs requests and jobs by default; the one-shot commands keep stderr quiet.
fn is_serve() -> bool {
    std::env::args().any(|a| a == "serve")
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = EngineConfig::from_env()?;
    if let Some(m) = cli.model {
        config.classifier = m;
    }
    config.classifier_spec = cli.model_spec.or(config.classifier_spec);
    if let Some(d) = cli.detector {
        config.detector = d;
    }
    config.models_dir = cli.models_dir.or(config.models_dir);
    if let Some(size) = cli.detect_size {
        anyhow::ensure!(size >= 32, "--detect-size must be at least 32 pixels");
        config.detect_size = Some(size);
    }

    match cli.command {
        Command::Analyze {
            input,
            fps,
            format,
            output,
            detect_interval_ms,
        } => {
            if !(fps >= 0.0 && fps.is_finite()) {
                anyhow::bail!("--fps must be 0 (every frame) or a positive number");
            }
            if let Some(ms) = detect_interval_ms {
                config.detect_interval_ms = ms;
            }
            let analyzer = Analyzer::new(config)?;
            let out: Box<dyn Write> = match &output {
                Some(path) => Box::new(BufWriter::new(File::create(path)?)),
                None => Box::new(BufWriter::new(std::io::stdout().lock())),
            };
            let mut writer: Box<dyn AnalysisSink> = match format {
                Format::Json => Box::new(JsonReport::new(out)?),
                Format::Csv => Box::new(CsvReport::new(out)),
                Format::Summary => Box::new(SummaryReport::new(out)),
            };
            let engine = analyzer.config();
            // people are known once every frame is in: the writers get the frames then
            let mut people = PeopleSink::new(
                writer.as_mut(),
                engine.people,
                engine.smoothing,
                analyzer.has_contempt(),
            )?;
            let mut sink = WithProgress {
                inner: &mut people,
                bar: None,
                frames: 0,
            };
            let result = analyzer.analyze(
                &MediaSource::File(input.clone()),
                &AnalysisOptions::sampled(fps),
                &mut sink,
            );
            if let Some(bar) = sink.bar.take() {
                bar.finish_and_clear();
            }
            result?;
        }
        Command::Serve {
            addr,
            data_dir,
            public_url,
            dev,
            header_timeout,
            max_connections,
            body_timeout,
            body_min_rate,
            analysis_concurrency,
        } => {
            let api = http_api::ApiConfig::from_env().map_err(anyhow::Error::msg)?;
            let server = local_server::LocalServerConfig {
                addr,
                data_dir,
                public_url,
                jwt_secret: std::env::var("DEEPEMOTION_JWT_SECRET")
                    .ok()
                    .filter(|s| !s.is_empty()),
                dev,
                api,
                worker: worker::WorkerConfig::from_env().map_err(anyhow::Error::msg)?,
                limits: local_server::ConnectionLimits {
                    header_timeout,
                    max_connections: max_connections.map(|n| n as usize),
                    body_rate: http_api::limits::BodyRate {
                        window: body_timeout,
                        min_bytes_per_sec: body_min_rate,
                    },
                },
                analysis_concurrency,
            };
            tokio::runtime::Runtime::new()?.block_on(local_server::serve(
                server,
                Box::new(move || {
                    Analyzer::new(config.clone())
                        .map(|a| Arc::new(a) as Arc<dyn VideoAnalyzer>)
                        .map_err(|e| e.to_string())
                }),
                |addr| {
                    println!("deepemotion: serving http://{addr}/api/v2 (Ctrl-C stops)");
                },
            ))?;
        }
        Command::Classify { images } => {
            let analyzer = Analyzer::new(config)?;
            let mut out = BufWriter::new(std::io::stdout().lock());
            for path in images {
                let scores = analyzer.classify_image(&path)?;
                let line = serde_json::json!({"path": path, "dominant": scores.dominant(), "emotions": scores});
                writeln!(out, "{line}")?;
            }
        }
    }
    Ok(())
}

/// A progress bar on stderr (frames, fps, ETA), only when stderr is a terminal.
struct WithProgress<'a> {
    inner: &'a mut dyn AnalysisSink,
    bar: Option<ProgressBar>,
    frames: u64,
}

impl AnalysisSink for WithProgress<'_> {
    fn begin(
        &mut self,
        video: &VideoInfo,
        model: &ModelInfo,
        sample_fps: f64,
    ) -> Result<(), SinkError> {
        if std::io::stderr().is_terminal() && video.duration_ms > 0 {
            let bar = ProgressBar::new(video.duration_ms);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {percent:>3}% {msg} ETA {eta}")
                    .expect("valid template"),
            );
            self.bar = Some(bar);
        }
        self.inner.begin(video, model, sample_fps)
    }

    fn frame(&mut self, frame: &FrameResult) -> Result<(), SinkError> {
        self.frames += 1;
        if let Some(bar) = &self.bar {
            bar.set_position(frame.t_ms);
            let fps = self.frames as f64 / bar.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!("{} frames, {fps:.0} frames/s", self.frames));
        }
        self.inner.frame(frame)
    }

    fn track(&mut self, profile: &TrackProfile) -> Result<(), SinkError> {
        self.inner.track(profile)
    }

    fn finish(&mut self, video: &VideoInfo, summary: &Summary) -> Result<(), SinkError> {
        self.inner.finish(video, summary)
    }
}
