//! The analysis pipeline: decode → detect → track → classify → summarise, streaming.
//!
//! Three stages run on their own threads with small bounded queues between them (ffmpeg decodes
//! in its own process on top of that), so memory stays flat however long the video is and both
//! cores stay busy: reading frames; detecting, tracking and cropping faces; running the emotion
//! model and feeding the sink. The model is the largest cost, so its thread does nothing else.
//! Results go to an [`AnalysisSink`] frame by frame as they are produced.
//!
//! Nothing here panics out to the caller: frames larger than [`EngineConfig`]'s limits are
//! refused from their header before decoding, and a panic in any stage (or in the sink) is caught
//! and returned as [`AnalysisError::Internal`], with ffmpeg killed and reaped.

mod classifier;
mod decode;
mod detector;
pub mod embedder;
pub mod image;
pub mod models;
pub mod runtime;

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

pub use classifier::{EmotionClassifier, PreparedFaces};
pub use decode::{DecodeOptions, DecodedFrame, VideoDecoder};
pub use detector::FaceDetector;
pub use embedder::{FaceEmbedder, Identities};
pub use image::FrameLimits;
use image::RgbFrame;
use models::{ModelCatalog, ModelEntry, ModelKind, find_model_dir};
use runtime::Optimization;

use domain::{
    AnalysisError, AnalysisOptions, AnalysisOutcome, AnalysisSink, DecodeWindow, DetectedFace,
    EmotionScores, FaceResult, FrameResult, MediaSource, ModelInfo, PeopleConfig, Probe, SinkError,
    SmoothingConfig, StageTimings, SummaryBuilder, Tracker, TrackerConfig, VideoAnalyzer,
    VideoInfo,
};

/// Engine settings, read once at start-up.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// ffmpeg binary (`DEEPEMOTION_FFMPEG`); default: next to the executable, else on `PATH`.
    pub ffmpeg: Option<PathBuf>,
    /// Directory holding the model files (`DEEPEMOTION_MODELS_DIR`).
    pub models_dir: Option<PathBuf>,
    /// ONNX Runtime library (`ORT_DYLIB_PATH` is also honoured).
    pub ort_library: Option<PathBuf>,
    /// Detector preset from models/manifest.json (`DEEPEMOTION_DETECTOR`). The default,
    /// `yunet-dynamic`, is the same network as `yunet` (face_detection_yunet_2023mar) exported with
    /// a dynamic input, run at the frame's own aspect ratio with the long side at 384 px.
    pub detector: String,
    /// Classifier preset (`DEEPEMOTION_CLASSIFIER`, default `faceapi`).
    pub classifier: String,
    /// Face-recognition model (`DEEPEMOTION_EMBEDDER`, default `faceapi-recognition`): links tracks
    /// into people.
    pub embedder: String,
    /// How tracks become people (`DEEPEMOTION_PERSON_SIMILARITY` sets the link threshold).
    pub people: PeopleConfig,
    /// How emotions are smoothed per person (`DEEPEMOTION_SMOOTHING_MS`); recorded with each
    /// summary, so that every reader of a video smooths it the same way.
    pub smoothing: SmoothingConfig,
    /// A user-supplied classifier spec file; overrides `classifier` (`DEEPEMOTION_CLASSIFIER_SPEC`).
    pub classifier_spec: Option<PathBuf>,
    /// Run the detector on the first analysed frame of every this many ms of stream time and
    /// carry tracked boxes in between (`DEEPEMOTION_DETECT_INTERVAL_MS`, default 200: at 5 fps
    /// every analysed frame is detected, at every frame of 25 fps video one in five; a new face
    /// is found within 200 ms); 0 detects on every analysed frame.
    pub detect_interval_ms: u64,
    /// For dynamic-input detectors: the longer side, in pixels, frames are scaled to for detection
    /// (`DEEPEMOTION_DETECT_SIZE`). Smaller is faster and misses smaller faces.
    pub detect_size: Option<u32>,
    /// The largest frame accepted, in pixels, width × height (`DEEPEMOTION_MAX_FRAME_PIXELS`,
    /// default 160 000 000). Checked from the video's or the image's header before anything is
    /// decoded; larger inputs fail with [`AnalysisError::FrameTooLarge`], a bad-input error.
    ///
    /// A frame costs width × height × 3 bytes in each stage and queue it passes through, so this
    /// bounds the engine's memory. 160 megapixels admits every camera in use: 8K video (33 MP),
    /// 12K and 16K cinema video (80 and 133 MP), 12000×12000 (144 MP) and the largest
    /// medium-format stills (151 MP); a 16000×16000 "decompression bomb" (256 MP, 768 MB of RGB,
    /// from a PNG of 790 KB) is refused. It cannot go above 178 956 970 pixels
    /// ([`FrameLimits::CEILING_PIXELS`]), where ffmpeg-sidecar's 32-bit frame size overflows.
    pub max_frame_pixels: u64,
    /// The longest side accepted, in pixels (`DEEPEMOTION_MAX_FRAME_SIDE`, default 32768):
    /// room for stitched panoramas, while refusing degenerate strips such as 200000×10.
    pub max_frame_side: u32,
    /// Frames with a longer side are analysed scaled down to this many pixels
    /// (`DEEPEMOTION_ANALYSIS_SIDE`, default 1920; 0 analyses every frame at its own size).
    /// Detection runs at `detect_size` anyway; this bounds memory and keeps face crops sharp
    /// enough for the classifier: a face spanning 6 % of the longer side still crops to 115 px.
    pub analysis_side: u32,
    /// Tests only: make this stage panic on its first frame, to show that a panic becomes an
    /// [`AnalysisError::Internal`] and that ffmpeg is reaped. Never set from the environment.
    #[doc(hidden)]
    pub fault: Option<PipelineStage>,
}

/// The stages of an analysis, as named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineStage {
    /// Reads frames from ffmpeg (or decodes the image).
    Decode,
    /// Runs the face detector, tracks the faces and crops them for the classifier.
    Detect,
    /// Classifies the faces and feeds the sink.
    Classify,
}

impl PipelineStage {
    fn name(self) -> &'static str {
        match self {
            PipelineStage::Decode => "decoder stage",
            PipelineStage::Detect => "detector stage",
            PipelineStage::Classify => "classifier stage",
        }
    }

    /// Panics when this stage is the configured fault (tests only).
    fn inject(self, fault: Option<PipelineStage>) {
        if fault == Some(self) {
            panic!("injected fault in the {}", self.name());
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            ffmpeg: None,
            models_dir: None,
            ort_library: None,
            detector: "yunet-dynamic".into(),
            classifier: "faceapi".into(),
            embedder: "faceapi-recognition".into(),
            people: PeopleConfig::default(),
            smoothing: SmoothingConfig::default(),
            classifier_spec: None,
            detect_interval_ms: 200,
            detect_size: None,
            max_frame_pixels: FrameLimits::DEFAULT.max_pixels,
            max_frame_side: FrameLimits::DEFAULT.max_side,
            analysis_side: 1920,
            fault: None,
        }
    }
}

impl EngineConfig {
    /// Reads `DEEPEMOTION_*` variables over the defaults; fails naming the variable at fault.
    pub fn from_env() -> Result<Self, AnalysisError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let number = |name: &str, min: u64| -> Result<Option<u64>, AnalysisError> {
            var(name)
                .map(|v| {
                    v.parse::<u64>().ok().filter(|n| *n >= min).ok_or_else(|| {
                        AnalysisError::Config(format!(
                            "{name}={v:?} must be a whole number >= {min}"
                        ))
                    })
                })
                .transpose()
        };
        let defaults = Self::default();
        Ok(Self {
            ffmpeg: var("DEEPEMOTION_FFMPEG").map(PathBuf::from),
            models_dir: var("DEEPEMOTION_MODELS_DIR").map(PathBuf::from),
            ort_library: var("ORT_DYLIB_PATH").map(PathBuf::from),
            detector: var("DEEPEMOTION_DETECTOR").unwrap_or(defaults.detector),
            classifier: var("DEEPEMOTION_CLASSIFIER").unwrap_or(defaults.classifier),
            classifier_spec: var("DEEPEMOTION_CLASSIFIER_SPEC").map(PathBuf::from),
            embedder: var("DEEPEMOTION_EMBEDDER").unwrap_or(defaults.embedder),
            people: PeopleConfig {
                link_similarity: match var("DEEPEMOTION_PERSON_SIMILARITY") {
                    Some(v) => v
                        .parse::<f32>()
                        .ok()
                        .filter(|x| (-1.0..=1.0).contains(x))
                        .ok_or_else(|| {
                            AnalysisError::Config(format!(
                                "DEEPEMOTION_PERSON_SIMILARITY={v:?} must be a cosine similarity between -1 and 1"
                            ))
                        })?,
                    None => defaults.people.link_similarity,
                },
                samples_per_track: number("DEEPEMOTION_PERSON_SAMPLES", 0)?
                    .map_or(defaults.people.samples_per_track, |n| n as usize),
                ..defaults.people
            },
            smoothing: SmoothingConfig {
                sigma_ms: number("DEEPEMOTION_SMOOTHING_MS", 0)?
                    .unwrap_or(defaults.smoothing.sigma_ms),
            },
            detect_interval_ms: number("DEEPEMOTION_DETECT_INTERVAL_MS", 0)?
                .unwrap_or(defaults.detect_interval_ms),
            detect_size: number("DEEPEMOTION_DETECT_SIZE", 32)?.map(|n| n as u32),
            max_frame_pixels: match number("DEEPEMOTION_MAX_FRAME_PIXELS", 1)? {
                Some(n) if n > FrameLimits::CEILING_PIXELS => {
                    return Err(AnalysisError::Config(format!(
                        "DEEPEMOTION_MAX_FRAME_PIXELS={n} is above {}, the most ffmpeg-sidecar can size",
                        FrameLimits::CEILING_PIXELS
                    )));
                }
                Some(n) => n,
                None => defaults.max_frame_pixels,
            },
            max_frame_side: match number("DEEPEMOTION_MAX_FRAME_SIDE", 1)? {
                Some(n) => u32::try_from(n).map_err(|_| {
                    AnalysisError::Config(format!("DEEPEMOTION_MAX_FRAME_SIDE={n} is too large"))
                })?,
                None => defaults.max_frame_side,
            },
            analysis_side: match number("DEEPEMOTION_ANALYSIS_SIDE", 0)? {
                Some(n) => u32::try_from(n).map_err(|_| {
                    AnalysisError::Config(format!("DEEPEMOTION_ANALYSIS_SIDE={n} is too large"))
                })?,
                None => defaults.analysis_side,
            },
            fault: None,
        })
    }

    /// The frame limits as the decoders take them.
    pub fn frame_limits(&self) -> FrameLimits {
        FrameLimits {
            max_pixels: self.max_frame_pixels,
            max_side: self.max_frame_side,
        }
    }
}

/// The engine: ONNX sessions built once, reused for every input.
pub struct Analyzer {
    config: EngineConfig,
    detector: Mutex<FaceDetector>,
    classifier: Mutex<EmotionClassifier>,
    embedder: Mutex<FaceEmbedder>,
    model_info: ModelInfo,
    has_contempt: bool,
}

/// The model's file, found and checked against its digests.
fn model_file(
    config: &EngineConfig,
    entry: &ModelEntry,
    dir: Option<&Path>,
) -> Result<PathBuf, AnalysisError> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => find_model_dir(config.models_dir.as_deref(), &entry.file),
    };
    entry.verify(&dir)
}

impl Analyzer {
    pub fn new(config: EngineConfig) -> Result<Self, AnalysisError> {
        let catalog = ModelCatalog::builtin();
        let env = runtime::environment(config.ort_library.as_deref())?;

        let det_entry = catalog.get(&config.detector, ModelKind::Detector)?;
        let mut det_spec = det_entry.detector.clone().ok_or_else(|| {
            AnalysisError::ModelSpec(format!("{} has no detector spec", det_entry.name))
        })?;
        if let (Some(size), models::DetectorInput::LongSide(_)) =
            (config.detect_size, det_spec.input)
        {
            det_spec.input = models::DetectorInput::LongSide(size);
        }
        let det_file = model_file(&config, det_entry, None)?;

        let (cls_entry, cls_dir) = match &config.classifier_spec {
            Some(path) => {
                let (entry, dir) = ModelEntry::from_spec_file(path)?;
                (entry, Some(dir))
            }
            None => (
                catalog
                    .get(&config.classifier, ModelKind::Classifier)?
                    .clone(),
                None,
            ),
        };
        let cls_spec = cls_entry.classifier.clone().ok_or_else(|| {
            AnalysisError::ModelSpec(format!("{} has no classifier spec", cls_entry.name))
        })?;
        let cls_file = model_file(&config, &cls_entry, cls_dir.as_deref())?;

        let emb_entry = catalog.get(&config.embedder, ModelKind::Embedder)?;
        let emb_spec = emb_entry.embedder.clone().ok_or_else(|| {
            AnalysisError::ModelSpec(format!("{} has no embedder spec", emb_entry.name))
        })?;
        let emb_file = model_file(&config, emb_entry, None)?;

        // The three sessions are built at once: building one (parsing, graph optimisation) runs
        // on one thread, and the start is part of every short analysis and every cold start.
        let (det_session, cls_session, emb_session) = std::thread::scope(|scope| {
            let det = scope.spawn(|| runtime::session(&env, &det_file, Optimization::Full));
            let emb = scope.spawn(|| runtime::session(&env, &emb_file, Optimization::Off));
            let cls = runtime::session(&env, &cls_file, Optimization::Full);
            let joined = |handle: std::thread::ScopedJoinHandle<'_, _>| {
                handle
                    .join()
                    .unwrap_or_else(|p| Err(panicked("model loading", p)))
            };
            (joined(det), cls, joined(emb))
        });
        let detector = FaceDetector::new(det_session?, det_spec)?;
        let classifier = EmotionClassifier::new(cls_session?, cls_spec)?;
        let embedder = FaceEmbedder::new(emb_session?, emb_spec)?;

        let spec = classifier.spec();
        let has_contempt = spec.has_contempt();
        let labels = domain::EmotionLabel::ALL
            .into_iter()
            .filter(|l| *l != domain::EmotionLabel::Contempt || has_contempt)
            .collect();
        let model_info = ModelInfo {
            detector: det_entry.name.clone(),
            classifier: cls_entry.name.clone(),
            labels,
        };
        runtime::release_free_heap();
        tracing::info!(detector = %model_info.detector, classifier = %model_info.classifier, "analysis engine ready");
        Ok(Self {
            config,
            detector: Mutex::new(detector),
            classifier: Mutex::new(classifier),
            embedder: Mutex::new(embedder),
            model_info,
            has_contempt,
        })
    }

    pub fn model_info(&self) -> &ModelInfo {
        &self.model_info
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Whether the classifier reports contempt (summaries then include it).
    pub fn has_contempt(&self) -> bool {
        self.has_contempt
    }

    /// Reads a video's metadata (ffmpeg decodes the first frame, so a broken file fails here
    /// with the same errors an analysis would give).
    pub fn probe(&self, input: &MediaSource) -> Result<Probe, AnalysisError> {
        check_exists(input)?;
        catch_panic("probe", || {
            let decoder = VideoDecoder::open(input, &self.decode_options(0.0, Default::default()))?;
            Ok(Probe {
                video: VideoInfo {
                    frame_count: 0,
                    ..decoder.info().clone()
                },
                start_s: decoder.start_s(),
            })
        })
    }

    fn decode_options(&self, sample_fps: f64, window: DecodeWindow) -> DecodeOptions {
        DecodeOptions {
            ffmpeg: self.config.ffmpeg.clone(),
            sample_fps,
            window,
            limits: self.config.frame_limits(),
            max_side: self.config.analysis_side,
        }
    }

    /// Every video frame's timestamp (seconds, stream timeline), sorted, read from the container
    /// without decoding (ffmpeg's packet list): how many frames lie before a time, for segment planning.
    pub fn frame_times(&self, input: &MediaSource) -> Result<Vec<f64>, AnalysisError> {
        catch_panic("frame listing", || {
            decode::frame_times(
                self.config.ffmpeg.as_deref(),
                input,
                &self.config.frame_limits(),
            )
        })
    }

    /// Classifies an image that is already a face crop (no detection), e.g. a FER2013 sample.
    pub fn classify_image(&self, path: &Path) -> Result<EmotionScores, AnalysisError> {
        catch_panic("classifier", || self.classify_image_unguarded(path))
    }

    fn classify_image_unguarded(&self, path: &Path) -> Result<EmotionScores, AnalysisError> {
        let image = load_image_within(path, self.config.frame_limits())?;
        let side = image.width.max(image.height);
        let crop = image::SquareCrop::around(
            &domain::FaceBox {
                x: 0.0,
                y: 0.0,
                w: image.width as f64,
                h: image.height as f64,
            },
            1.0,
        );
        let mut classifier = self.classifier.lock().unwrap_or_else(|p| p.into_inner());
        let scores = classifier.classify_crops(&[(crop.extract(&image), side)])?;
        Ok(scores[0])
    }

    /// Analyses a video (or a jpg/png image as a one-frame video), streaming results to `sink`.
    ///
    /// On a decode error mid-stream, every frame decoded before it has already been delivered to
    /// the sink; the error is returned and `finish` is not called. Frames over the configured
    /// limits are refused before decoding ([`AnalysisError::FrameTooLarge`]). A panic in any
    /// stage, or in the sink, is returned as [`AnalysisError::Internal`]; whatever happens,
    /// ffmpeg has been stopped and reaped when this returns, and the engine stays usable.
    pub fn analyze(
        &self,
        input: &MediaSource,
        options: &AnalysisOptions,
        sink: &mut dyn AnalysisSink,
    ) -> Result<AnalysisOutcome, AnalysisError> {
        check_exists(input)?;
        // The stages catch their own panics and name themselves; this catches the rest (the
        // sink's `begin` and `finish`, opening the decoder).
        catch_panic("analysis", || match input {
            MediaSource::File(path) if is_image(path) => self.analyze_image(path, sink),
            _ => self.analyze_video(input, options, sink),
        })
    }

    fn analyze_video(
        &self,
        input: &MediaSource,
        options: &AnalysisOptions,
        sink: &mut dyn AnalysisSink,
    ) -> Result<AnalysisOutcome, AnalysisError> {
        // A guard dropped while a panic unwinds poisons its lock; the sessions hold no state
        // between frames, so the next analysis simply takes them back.
        let mut detector = self.detector.lock().unwrap_or_else(|p| p.into_inner());
        let mut classifier = self.classifier.lock().unwrap_or_else(|p| p.into_inner());
        let mut embedder = self.embedder.lock().unwrap_or_else(|p| p.into_inner());
        let mut identities = Identities::new(self.config.people);
        let first_frame = options.window.first_frame;
        let mut decoder = VideoDecoder::open(
            input,
            &self.decode_options(options.sample_fps, options.window),
        )?;
        // The frame count is only known at the end; 0 says "not yet" rather than a partial count.
        let head = VideoInfo {
            frame_count: 0,
            ..decoder.info().clone()
        };
        sink.begin(&head, &self.model_info, options.sample_fps)
            .map_err(sink_failed)?;
        tracing::info!(input = %input.redacted(), codec = %decoder.info().codec, width = decoder.info().width,
            height = decoder.info().height, sample_fps = options.sample_fps, "analysis started");

        let interval = self.config.detect_interval_ms;
        let fault = self.config.fault;
        let depth = queue_depth(head.width, head.height, self.config.analysis_side);
        let mut tracker = Tracker::new(TrackerConfig::default()).numbered_from(options.first_track);
        let mut summary = SummaryBuilder::new(self.has_contempt);
        let mut timings = StageTimings::default();

        let video = std::thread::scope(|scope| -> Result<VideoInfo, AnalysisError> {
            let (frame_tx, frame_rx) = sync_channel::<DecodedFrame>(depth);
            let (det_tx, det_rx) = sync_channel::<TrackedFrame>(depth);

            // The decoder is moved into its thread: however that thread ends, dropping it there
            // stops and reaps ffmpeg.
            let decoding = scope.spawn(move || -> (Duration, Result<VideoInfo, AnalysisError>) {
                let mut spent = Duration::ZERO;
                loop {
                    let started = Instant::now();
                    let next = decoder.next_frame();
                    spent += started.elapsed();
                    match next {
                        Ok(Some(frame)) => {
                            PipelineStage::Decode.inject(fault);
                            if frame_tx.send(frame).is_err() {
                                return (spent, Err(AnalysisError::Cancelled));
                            }
                        }
                        Ok(None) => {
                            let mut info = decoder.info().clone();
                            info.frame_count += first_frame;
                            return (spent, Ok(info));
                        }
                        Err(e) => return (spent, Err(e)),
                    }
                }
            });

            let detector = &mut *detector;
            let embedder = &mut *embedder;
            let (tracker, identities) = (&mut tracker, &mut identities);
            let spec = classifier.spec().clone();
            let detecting = scope.spawn(move || -> (DetectStage, Result<(), AnalysisError>) {
                let mut stage = DetectStage::default();
                // The detector runs on the first frame of each `interval` of stream time (and on a
                // run's first frame): tied to the stream, not to where this run began, so that a
                // run resumed at a slot's start detects on the frames a single pass would.
                let mut last_slot: Option<u64> = None;
                let run = || -> Result<(), AnalysisError> {
                    for frame in frame_rx {
                        PipelineStage::Detect.inject(fault);
                        // the same slot rule as the decoder's frame selection, so that at a
                        // sampling rate of 1000/interval every sampled frame is detected
                        let slot = if interval == 0 {
                            frame.t_ms
                        } else {
                            (frame.t_ms as f64 / interval as f64 + domain::SLOT_EPSILON).floor()
                                as u64
                        };
                        let detections = if interval == 0 || last_slot != Some(slot) {
                            let started = Instant::now();
                            let faces = detector.detect(&frame.image)?;
                            stage.detect += started.elapsed();
                            stage.runs += 1;
                            last_slot = Some(slot);
                            Some(faces)
                        } else {
                            None
                        };
                        // Tracking and cropping happen here too, leaving the classifier's
                        // thread (the busiest) nothing but the model.
                        let started = Instant::now();
                        let tracked = track_and_crop(
                            tracker, identities, embedder, &spec, frame, detections,
                        )?;
                        stage.track += started.elapsed();
                        if det_tx.send(tracked).is_err() {
                            break;
                        }
                    }
                    Ok(())
                };
                let result = run();
                stage.embedded = identities.embeddings;
                (stage, result)
            });

            // The classifier stage runs on this thread; the sink is called from it.
            let classify = || -> Result<(), AnalysisError> {
                for tracked in det_rx {
                    PipelineStage::Classify.inject(fault);
                    for profile in &tracked.profiles {
                        sink.track(profile).map_err(sink_failed)?;
                    }
                    let started = Instant::now();
                    let scores = classifier.classify_prepared(&tracked.prepared)?;
                    timings.classify += started.elapsed();
                    timings.faces_classified += tracked.prepared.len() as u64;
                    let (sx, sy) = tracked.to_source;
                    let result = FrameResult {
                        frame: tracked.frame,
                        t_ms: tracked.t_ms,
                        faces: tracked
                            .faces
                            .into_iter()
                            .zip(scores)
                            .map(|((track, face), emotions)| {
                                // found on the frame as analysed, reported in source pixels
                                FaceResult::new(track, &face.scaled(sx, sy), emotions)
                            })
                            .collect(),
                    };
                    summary.add(&result);
                    sink.frame(&result).map_err(sink_failed)?;
                }
                Ok(())
            };
            // Returning from `classify`, or unwinding out of it, drops its receiver, and that
            // stops the other stages: each finds its queue closed.
            let classified = catch_unwind(AssertUnwindSafe(classify))
                .unwrap_or_else(|p| Err(panicked(PipelineStage::Classify.name(), p)));
            let detected = match detecting.join() {
                Ok((stage, detected)) => {
                    timings.detect = stage.detect;
                    timings.track = stage.track;
                    timings.detector_runs = stage.runs;
                    timings.faces_embedded = stage.embedded;
                    detected
                }
                Err(p) => Err(panicked(PipelineStage::Detect.name(), p)),
            };
            let decoded = match decoding.join() {
                Ok((decode_time, decoded)) => {
                    timings.decode = decode_time;
                    decoded
                }
                Err(p) => Err(panicked(PipelineStage::Decode.name(), p)),
            };
            // Report the root cause: a failed stage makes the ones after it see a closed queue.
            match (decoded, classified.and(detected)) {
                (Ok(video), Ok(())) => Ok(video),
                (Err(AnalysisError::Cancelled), Err(e)) => Err(e),
                (Err(e), _) => Err(e),
                (Ok(_), Err(e)) => Err(e),
            }
        })?;
        let summary = summary.finish();
        sink.finish(&video, &summary).map_err(sink_failed)?;
        // each stage's busy time: where the stages wait on each other shows against the wall time
        tracing::info!(frames = summary.frames_analyzed, with_faces = summary.frames_with_faces,
            embedded = timings.faces_embedded, dominant = ?summary.dominant,
            detector_runs = timings.detector_runs, decode_ms = timings.decode.as_millis() as u64,
            detect_ms = timings.detect.as_millis() as u64, track_ms = timings.track.as_millis() as u64, classify_ms = timings.classify.as_millis() as u64,
            "analysis done");
        Ok(AnalysisOutcome {
            video,
            summary,
            timings,
        })
    }

    fn analyze_image(
        &self,
        input: &Path,
        sink: &mut dyn AnalysisSink,
    ) -> Result<AnalysisOutcome, AnalysisError> {
        let fault = self.config.fault;
        let image = catch_panic(PipelineStage::Decode.name(), || {
            let image = load_image_within(input, self.config.frame_limits())?;
            PipelineStage::Decode.inject(fault);
            Ok(image)
        })?;
        let codec = input
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("image")
            .to_ascii_lowercase();
        let mut video = VideoInfo {
            width: image.width,
            height: image.height,
            frame_count: 1,
            codec,
            ..Default::default()
        };
        video.codec = video.codec.replace("jpg", "jpeg");
        sink.begin(&video, &self.model_info, 0.0)
            .map_err(sink_failed)?;
        let mut timings = StageTimings::default();
        let started = Instant::now();
        // A panic while a lock is held poisons it; the next `lock` takes it back (see above).
        let detections = catch_panic(PipelineStage::Detect.name(), || {
            let mut detector = self.detector.lock().unwrap_or_else(|p| p.into_inner());
            PipelineStage::Detect.inject(fault);
            detector.detect(&image)
        })?;
        timings.detect = started.elapsed();
        timings.detector_runs = 1;
        let started = Instant::now();
        let summary = catch_panic(PipelineStage::Classify.name(), || {
            let mut tracker = Tracker::new(TrackerConfig::default());
            let faces = tracker.update(0, &detections);
            {
                let mut embedder = self.embedder.lock().unwrap_or_else(|p| p.into_inner());
                let mut identities = Identities::new(self.config.people);
                for (track, face) in &faces {
                    let observed =
                        identities.observe(&mut embedder, &mut tracker, &image, 0, *track, face)?;
                    if let Some(profile) = observed.profile {
                        sink.track(&profile).map_err(sink_failed)?;
                    }
                }
                timings.faces_embedded = identities.embeddings;
            }
            let boxes: Vec<_> = faces.iter().map(|(_, f)| f.bbox).collect();
            let scores = {
                let mut classifier = self.classifier.lock().unwrap_or_else(|p| p.into_inner());
                PipelineStage::Classify.inject(fault);
                classifier.classify_faces(&image, &boxes)?
            };
            timings.classify = started.elapsed();
            timings.faces_classified = boxes.len() as u64;
            let frame = FrameResult {
                frame: 0,
                t_ms: 0,
                faces: faces
                    .into_iter()
                    .zip(scores)
                    .map(|((track, face), emotions)| FaceResult::new(track, &face, emotions))
                    .collect(),
            };
            let mut summary = SummaryBuilder::new(self.has_contempt);
            summary.add(&frame);
            sink.frame(&frame).map_err(sink_failed)?;
            Ok(summary.finish())
        })?;
        sink.finish(&video, &summary).map_err(sink_failed)?;
        Ok(AnalysisOutcome {
            video,
            summary,
            timings,
        })
    }
}

/// The detector stage's busy times and counts.
#[derive(Default)]
struct DetectStage {
    detect: Duration,
    track: Duration,
    runs: u64,
    embedded: u64,
}

/// A frame as the classifier stage gets it: its faces tracked, identified and cropped into model
/// input; the pixels themselves stay behind.
struct TrackedFrame {
    frame: u64,
    t_ms: u64,
    to_source: (f64, f64),
    faces: Vec<(u32, DetectedFace)>,
    /// Track profiles that changed on this frame, for the sink before the frame itself.
    profiles: Vec<domain::TrackProfile>,
    prepared: PreparedFaces,
}

/// Carries the tracks to `frame` (updated from `detections` on detected frames), judges who each
/// face is and crops the faces for the classifier, in track order.
fn track_and_crop(
    tracker: &mut Tracker,
    identities: &mut Identities,
    embedder: &mut FaceEmbedder,
    spec: &models::ClassifierSpec,
    frame: DecodedFrame,
    detections: Option<Vec<DetectedFace>>,
) -> Result<TrackedFrame, AnalysisError> {
    let detected = detections.is_some();
    let mut faces = match detections {
        Some(d) => tracker.update(frame.t_ms, &d),
        None => tracker.current(),
    };
    let mut profiles = Vec::new();
    // Who a face is is judged on the detector's own boxes and landmarks only: a box carried
    // between detections may already show the background (the face left), which would look like
    // a cut to someone else.
    for (track, face) in faces.iter_mut().filter(|_| detected) {
        let observed =
            identities.observe(embedder, tracker, &frame.image, frame.t_ms, *track, face)?;
        *track = observed.track;
        profiles.extend(observed.profile);
    }
    faces.sort_by_key(|(track, _)| *track);
    let boxes: Vec<_> = faces.iter().map(|(_, f)| f.bbox).collect();
    let prepared = PreparedFaces::from_frame(spec, &frame.image, &boxes)?;
    Ok(TrackedFrame {
        frame: frame.frame,
        t_ms: frame.t_ms,
        to_source: frame.to_source,
        faces,
        profiles,
        prepared,
    })
}

/// Frames queued between two stages: 4, or fewer when 4 frames would take more than 128 MiB
/// (a 4K frame is 25 MB, an 8K one 100 MB), so that a huge frame size does not multiply the
/// memory it takes by every queue slot. Ordinary videos keep all 4.
fn queue_depth(width: u32, height: u32, analysis_side: u32) -> usize {
    // at most this many bytes of frames as analysed in the decoder's queue (4 frames up to 720p,
    // 2 at 1080p); the classifier's queue holds model input, far smaller, at the same depth
    const QUEUE_BYTES: u64 = 16 << 20;
    let (w, h) = decode::analysed_size(width, height, analysis_side);
    (QUEUE_BYTES / RgbFrame::bytes_for(w, h).max(1)).clamp(1, 4) as usize
}

/// Runs `f`, turning a panic inside it into [`AnalysisError::Internal`].
fn catch_panic<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, AnalysisError>,
) -> Result<T, AnalysisError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| Err(panicked(what, payload)))
}

/// The error for a caught panic, with the panic's message.
fn panicked(what: &str, payload: Box<dyn Any + Send>) -> AnalysisError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string());
    tracing::error!(stage = what, %message, "a pipeline stage panicked");
    AnalysisError::Internal(format!("the {what} panicked: {message}"))
}

fn sink_failed(e: SinkError) -> AnalysisError {
    AnalysisError::Sink(e.to_string())
}

/// A missing file fails before anything starts; a URL is ffmpeg's to fetch.
fn check_exists(input: &MediaSource) -> Result<(), AnalysisError> {
    match input {
        MediaSource::File(path) if !path.exists() => {
            Err(AnalysisError::InputNotFound(path.clone()))
        }
        _ => Ok(()),
    }
}

impl VideoAnalyzer for Analyzer {
    fn probe(&self, source: &MediaSource) -> Result<Probe, AnalysisError> {
        Analyzer::probe(self, source)
    }

    fn frame_times(&self, source: &MediaSource) -> Result<Vec<f64>, AnalysisError> {
        Analyzer::frame_times(self, source)
    }

    fn analyze(
        &self,
        source: &MediaSource,
        options: &AnalysisOptions,
        sink: &mut dyn AnalysisSink,
    ) -> Result<AnalysisOutcome, AnalysisError> {
        Analyzer::analyze(self, source, options, sink)
    }

    fn has_contempt(&self) -> bool {
        self.has_contempt
    }

    fn people(&self) -> &PeopleConfig {
        &self.config.people
    }

    fn smoothing(&self) -> SmoothingConfig {
        self.config.smoothing
    }
}

/// jpg/jpeg/png inputs are analysed as single frames.
pub fn is_image(path: &Path) -> bool {
    matches!(
        path.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("jpg" | "jpeg" | "png")
    )
}

/// Decodes a jpg/png into an RGB frame, within the default [`FrameLimits`].
pub fn load_image(path: &Path) -> Result<RgbFrame, AnalysisError> {
    load_image_within(path, FrameLimits::DEFAULT)
}

/// Decodes a jpg/png into an RGB frame. The size is read from the header first, and an image over
/// `limits` is refused ([`AnalysisError::FrameTooLarge`]) before its pixels are decoded.
pub fn load_image_within(path: &Path, limits: FrameLimits) -> Result<RgbFrame, AnalysisError> {
    let bad = |detail: String| AnalysisError::Image {
        path: path.to_path_buf(),
        detail,
    };
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => AnalysisError::InputNotFound(path.to_path_buf()),
        _ => AnalysisError::Io(e),
    })?;
    if bytes.is_empty() {
        return Err(AnalysisError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    if bytes.starts_with(&[0xff, 0xd8]) {
        return decode_jpeg(&bytes, limits).map_err(|e| match e {
            JpegError::Analysis(e) => e,
            JpegError::Bad(detail) => bad(detail),
        });
    }
    if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Err(bad("not a JPEG or PNG file".to_string()));
    }
    decode_png(&bytes, limits).map_err(|e| match e {
        PngError::Analysis(e) => e,
        PngError::Bad(detail) => bad(detail),
    })
}

enum PngError {
    Analysis(AnalysisError),
    Bad(String),
}

impl From<png::DecodingError> for PngError {
    fn from(e: png::DecodingError) -> Self {
        PngError::Bad(e.to_string())
    }
}

/// Decodes a PNG into RGB, as `image`'s `to_rgb8` did (palettes and low bit depths expanded,
/// alpha dropped, grey replicated, 16-bit samples rounded to 8). The header is read, and the
/// size checked against `limits`, before any pixel is decoded.
fn decode_png(bytes: &[u8], limits: FrameLimits) -> Result<RgbFrame, PngError> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let info = decoder.read_header_info()?;
    let (w, h) = (info.width, info.height);
    limits.check(w, h).map_err(PngError::Analysis)?;
    // Within the limits the decoder may take what the image needs (up to 16-bit RGBA, 8 bytes a
    // pixel) besides the output buffer
    decoder.set_limits(png::Limits {
        bytes: usize::try_from(u64::from(w) * u64::from(h) * 8 + (64 << 20)).unwrap_or(usize::MAX),
    });
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info()?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| PngError::Bad(format!("a {w}x{h} image does not fit in memory")))?;
    let mut buf = vec![0u8; size];
    let out = reader.next_frame(&mut buf)?;
    buf.truncate(out.buffer_size());
    if out.bit_depth == png::BitDepth::Sixteen {
        // the nearest 8-bit value, as `image` rounded: (v + 128) / 257
        buf = buf
            .chunks_exact(2)
            .map(|v| ((u32::from(u16::from_be_bytes([v[0], v[1]])) + 128) / 257) as u8)
            .collect();
    }
    // EXPAND leaves grey (1 or 2 samples a pixel, with alpha) or RGB (3 or 4)
    let rgb = buf
        .chunks_exact(out.color_type.samples())
        .flat_map(|p| match p.len() {
            1 | 2 => [p[0]; 3],
            _ => [p[0], p[1], p[2]],
        })
        .collect();
    RgbFrame::try_new(out.width, out.height, rgb).map_err(PngError::Analysis)
}

enum JpegError {
    Analysis(AnalysisError),
    Bad(String),
}

/// libjpeg reports a broken file by unwinding out of its error handler; catch that here. The
/// header is read (and the size checked against `limits`) before decompression starts.
fn decode_jpeg(bytes: &[u8], limits: FrameLimits) -> Result<RgbFrame, JpegError> {
    catch_unwind(|| -> Result<RgbFrame, JpegError> {
        let io = |e: std::io::Error| JpegError::Bad(e.to_string());
        let header = mozjpeg::Decompress::new_mem(bytes).map_err(io)?;
        let (w, h) = (header.width(), header.height());
        let (w, h) = (
            u32::try_from(w).unwrap_or(u32::MAX),
            u32::try_from(h).unwrap_or(u32::MAX),
        );
        limits.check(w, h).map_err(JpegError::Analysis)?;
        let mut jpeg = header.rgb().map_err(io)?;
        let (w, h) = (jpeg.width() as u32, jpeg.height() as u32);
        let pixels = jpeg.read_scanlines::<u8>().map_err(io)?;
        jpeg.finish().map_err(io)?;
        RgbFrame::try_new(w, h, pixels).map_err(JpegError::Analysis)
    })
    .map_err(|_| JpegError::Bad("not a valid JPEG file".to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_hold_the_frames_as_analysed_within_16_mib() {
        assert_eq!(queue_depth(640, 360, 1920), 4);
        assert_eq!(queue_depth(1280, 720, 1920), 4);
        assert_eq!(queue_depth(1920, 1080, 1920), 2);
        // larger videos are analysed at 1920 px, and queued as such
        assert_eq!(queue_depth(3840, 2160, 1920), 2);
        assert_eq!(queue_depth(2160, 3840, 1920), 2);
        assert_eq!(queue_depth(12000, 12000, 1920), 1);
        // without scaling, at their own size
        assert_eq!(queue_depth(3840, 2160, 0), 1);
        assert_eq!(queue_depth(0, 0, 1920), 4);
    }

    #[test]
    fn a_panic_becomes_an_internal_error_with_its_message() {
        let err = catch_panic("detector stage", || -> Result<(), AnalysisError> {
            panic!("index {} out of range", 7)
        })
        .unwrap_err();
        assert!(
            matches!(&err, AnalysisError::Internal(m) if m == "the detector stage panicked: index 7 out of range"),
            "{err:?}"
        );
        assert!(!err.is_bad_input());
        let err = catch_panic("probe", || -> Result<(), AnalysisError> {
            panic!("static")
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "internal error: the probe panicked: static"
        );
        assert!(catch_panic("probe", || Ok(1)).is_ok());
    }

    #[test]
    fn frame_limits_come_from_the_config() {
        let config = EngineConfig {
            max_frame_pixels: 1000,
            max_frame_side: 50,
            ..EngineConfig::default()
        };
        assert_eq!(
            config.frame_limits(),
            FrameLimits {
                max_pixels: 1000,
                max_side: 50
            }
        );
        assert_eq!(EngineConfig::default().frame_limits(), FrameLimits::DEFAULT);
    }

    /// A 2x1 PNG of `color` at `depth` holding `data`, with `palette` and `trns` chunks if given.
    fn png_of(
        color: png::ColorType,
        depth: png::BitDepth,
        data: &[u8],
        palette: Option<&[u8]>,
        trns: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, 2, 1);
        encoder.set_color(color);
        encoder.set_depth(depth);
        if let Some(p) = palette {
            encoder.set_palette(p.to_vec());
        }
        if let Some(t) = trns {
            encoder.set_trns(t.to_vec());
        }
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(data).unwrap();
        writer.finish().unwrap();
        out
    }

    #[test]
    fn pngs_of_every_colour_type_decode_to_rgb_as_image_to_rgb8_did() {
        use png::{BitDepth::*, ColorType::*};
        let rgb = |bytes: Vec<u8>| -> Vec<u8> {
            match decode_png(&bytes, FrameLimits::DEFAULT) {
                Ok(frame) => frame.data,
                Err(_) => panic!("decoding failed"),
            }
        };
        // RGB as it is; RGBA loses its alpha
        assert_eq!(
            rgb(png_of(Rgb, Eight, &[1, 2, 3, 4, 5, 6], None, None)),
            [1, 2, 3, 4, 5, 6]
        );
        assert_eq!(
            rgb(png_of(Rgba, Eight, &[1, 2, 3, 0, 4, 5, 6, 255], None, None)),
            [1, 2, 3, 4, 5, 6]
        );
        // grey is replicated, with or without alpha; 1-bit grey is expanded to 0 and 255
        assert_eq!(
            rgb(png_of(Grayscale, Eight, &[7, 9], None, None)),
            [7, 7, 7, 9, 9, 9]
        );
        assert_eq!(
            rgb(png_of(GrayscaleAlpha, Eight, &[7, 0, 9, 255], None, None)),
            [7, 7, 7, 9, 9, 9]
        );
        assert_eq!(
            rgb(png_of(Grayscale, One, &[0b0100_0000], None, None)),
            [0, 0, 0, 255, 255, 255]
        );
        // 16-bit samples round to the nearest 8-bit value: (v + 128) / 257
        let sixteen = [
            0x01, 0x00, 0x80, 0x80, 0xff, 0xff, 0x00, 0x80, 0x7f, 0x7f, 0x00, 0x00,
        ];
        assert_eq!(
            rgb(png_of(Rgb, Sixteen, &sixteen, None, None)),
            [1, 128, 255, 0, 127, 0]
        );
        // a palette is looked up, its transparency dropped
        let palette = [10, 20, 30, 40, 50, 60];
        assert_eq!(
            rgb(png_of(
                Indexed,
                Eight,
                &[1, 0],
                Some(&palette),
                Some(&[0, 255])
            )),
            [40, 50, 60, 10, 20, 30]
        );
        // the header is checked against the limits before any pixel is decoded
        let tiny = FrameLimits {
            max_pixels: 1,
            max_side: 1,
        };
        let two_pixels = png_of(Grayscale, Eight, &[7, 9], None, None);
        assert!(matches!(
            decode_png(&two_pixels, tiny),
            Err(PngError::Analysis(AnalysisError::FrameTooLarge {
                width: 2,
                height: 1,
                ..
            }))
        ));
        // a cut file is a decoding error, never a panic
        assert!(matches!(
            decode_png(&two_pixels[..40], FrameLimits::DEFAULT),
            Err(PngError::Bad(_))
        ));
    }
}
