//! The model manifest (models/manifest.json, embedded at build time) and loading model files with
//! their sha256 checked.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use domain::AnalysisError;
use domain::EmotionLabel;

const MANIFEST_JSON: &str = include_str!("../../../models/manifest.json");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Detector,
    Classifier,
    /// A face-recognition model: one embedding per aligned face.
    Embedder,
}

/// One model: where its file is, which bytes are acceptable and how to run it.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelEntry {
    pub name: String,
    pub kind: ModelKind,
    /// File name, relative to the models directory (or to a spec file's directory).
    pub file: String,
    /// Accepted sha256 digests (several when a model can be rebuilt by more than one converter).
    /// Empty means "not pinned" and is only allowed for user-supplied specs.
    #[serde(default)]
    pub sha256: Vec<String>,
    #[serde(default)]
    pub licence: String,
    #[serde(default)]
    pub detector: Option<DetectorSpec>,
    #[serde(default)]
    pub classifier: Option<ClassifierSpec>,
    #[serde(default)]
    pub embedder: Option<EmbedderSpec>,
}

/// How a face-recognition model is fed: an RGB crop aligned to the five-point template at
/// `size`², NHWC, each channel `(pixel · pixel_scale − mean) / std`; its output is an embedding
/// of `dims` values.
#[derive(Debug, Clone, Deserialize)]
pub struct EmbedderSpec {
    pub input: String,
    pub output: String,
    pub size: u32,
    pub pixel_scale: f32,
    /// One value per channel, or one value for all channels.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub dims: usize,
    /// The alignment template's scale about the crop's centre (1: the ArcFace 112 crop; below 1
    /// the face is smaller in the crop, with more context, as dlib's chips are).
    #[serde(default = "one")]
    pub template_scale: f64,
    /// Then shifted by this much, in pixels of the 112 crop: dlib's chips, which the face-api
    /// recogniser was trained on, sit the face higher than the ArcFace crop (scale 1.082, shift
    /// (−0.77, −17.09), fitted from dlib's mean face shape by scripts/models/measure_embeddings.py).
    #[serde(default)]
    pub template_shift: [f64; 2],
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Deserialize)]
pub struct DetectorSpec {
    /// Only "yunet" is implemented.
    pub family: String,
    pub input: DetectorInput,
    pub score_threshold: f32,
    pub nms_iou: f32,
}

/// How frames are fitted to the detector's input.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorInput {
    /// A fixed [width, height] canvas; the frame is letterboxed into it (top-left, zero fill).
    Fixed([u32; 2]),
    /// A dynamic-shape model: the frame's longer side is scaled to at most this many pixels and
    /// the canvas is padded up to multiples of 32.
    LongSide(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorLayout {
    Nhwc,
    Nchw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColorMode {
    Rgb,
    Bgr,
    Grey,
}

/// Describes an emotion classifier so that a new model is configuration, not code.
///
/// Preprocessing: square crop around the face (side = max(w, h) · `crop_scale`), bilinear resize to
/// `resize_to` (default `size`), centre crop to `size`, colour conversion, then per channel
/// `(pixel · pixel_scale − mean) / std`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClassifierSpec {
    pub input: String,
    pub output: String,
    pub layout: TensorLayout,
    pub size: u32,
    #[serde(default)]
    pub resize_to: Option<u32>,
    pub color: ColorMode,
    pub pixel_scale: f32,
    /// One value per channel, or one value for all channels.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// The model's output classes, in output order.
    pub labels: Vec<EmotionLabel>,
    #[serde(default = "default_crop_scale")]
    pub crop_scale: f64,
    /// Average with the horizontally flipped crop (test-time augmentation).
    #[serde(default)]
    pub flip_tta: bool,
}

fn default_crop_scale() -> f64 {
    1.0
}

impl ClassifierSpec {
    /// Inputs per face: the crop, and its mirror image with flip test-time augmentation.
    pub fn views(&self) -> usize {
        if self.flip_tta { 2 } else { 1 }
    }

    pub fn channels(&self) -> usize {
        if self.color == ColorMode::Grey { 1 } else { 3 }
    }

    pub fn has_contempt(&self) -> bool {
        self.labels.contains(&EmotionLabel::Contempt)
    }

    pub fn validate(&self) -> Result<(), AnalysisError> {
        let bad = |m: String| Err(AnalysisError::ModelSpec(m));
        let ch = self.channels();
        for (name, v) in [("mean", &self.mean), ("std", &self.std)] {
            if v.len() != 1 && v.len() != ch {
                return bad(format!("{name} needs 1 or {ch} values, got {}", v.len()));
            }
        }
        if self.std.contains(&0.0) {
            return bad("std must not be 0".into());
        }
        if self.size == 0 || self.resize_to.is_some_and(|r| r < self.size) {
            return bad("size must be > 0 and resize_to >= size".into());
        }
        let mut seen = self.labels.clone();
        seen.sort();
        seen.dedup();
        if self.labels.is_empty() || seen.len() != self.labels.len() {
            return bad("labels must be non-empty and distinct".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
struct Manifest {
    models: Vec<ModelEntry>,
}

/// The models this build knows about.
#[derive(Debug, Clone)]
pub struct ModelCatalog {
    models: Vec<ModelEntry>,
}

impl ModelCatalog {
    pub fn builtin() -> Self {
        let manifest: Manifest =
            serde_json::from_str(MANIFEST_JSON).expect("models/manifest.json is valid");
        Self {
            models: manifest.models,
        }
    }

    pub fn get(&self, name: &str, kind: ModelKind) -> Result<&ModelEntry, AnalysisError> {
        self.models
            .iter()
            .find(|m| m.name == name && m.kind == kind)
            .ok_or_else(|| AnalysisError::UnknownModel {
                name: name.to_string(),
                known: self
                    .models
                    .iter()
                    .filter(|m| m.kind == kind)
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    pub fn entries(&self) -> &[ModelEntry] {
        &self.models
    }
}

impl ModelEntry {
    /// Reads a user-supplied classifier spec (a JSON object shaped like a manifest entry); its
    /// `file` is relative to the spec's directory.
    pub fn from_spec_file(path: &Path) -> Result<(Self, PathBuf), AnalysisError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AnalysisError::ModelSpec(format!("{}: {e}", path.display())))?;
        let entry: ModelEntry = serde_json::from_str(&text)
            .map_err(|e| AnalysisError::ModelSpec(format!("{}: {e}", path.display())))?;
        let spec = entry.classifier.as_ref().ok_or_else(|| {
            AnalysisError::ModelSpec(format!("{}: no \"classifier\" section", path.display()))
        })?;
        spec.validate()?;
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok((entry, dir))
    }

    /// Checks the model file in `dir` against its digests and returns its path. ONNX Runtime
    /// reads the file itself: handing it a copy in memory would cost the weights once more at
    /// start-up (22 MB for the recognizer), on top of its own copies.
    pub fn verify(&self, dir: &Path) -> Result<PathBuf, AnalysisError> {
        let path = dir.join(&self.file);
        let mut file = std::fs::File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => AnalysisError::ModelMissing {
                name: self.name.clone(),
                path: path.clone(),
            },
            _ => AnalysisError::Io(e),
        })?;
        if !self.sha256.is_empty() {
            let mut hasher = Sha256::new();
            std::io::copy(&mut file, &mut hasher).map_err(AnalysisError::Io)?;
            let actual = hex::encode(hasher.finalize());
            if !self.sha256.iter().any(|s| s.eq_ignore_ascii_case(&actual)) {
                return Err(AnalysisError::ModelChecksum {
                    name: self.name.clone(),
                    path,
                    expected: self.sha256.clone(),
                    actual,
                });
            }
        }
        Ok(path)
    }
}

/// Directories searched for model files, in order.
pub fn model_dir_candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = explicit {
        dirs.push(dir.to_path_buf());
        return dirs;
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir.join("models"));
        // target/{debug,release}/ inside a checkout, and target/debug/deps/ for test binaries
        for up in ["../../models", "../../../models"] {
            dirs.push(exe_dir.join(up));
        }
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    dirs
}

/// The first candidate directory holding `file`, or the first candidate (for the error message).
pub fn find_model_dir(explicit: Option<&Path>, file: &str) -> PathBuf {
    let candidates = model_dir_candidates(explicit);
    candidates
        .iter()
        .find(|d| d.join(file).is_file())
        .unwrap_or(&candidates[0])
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifest_has_a_primary_detector_and_classifier_with_valid_specs() {
        let catalog = ModelCatalog::builtin();
        let yunet = catalog.get("yunet", ModelKind::Detector).unwrap();
        assert_eq!(
            yunet.detector.as_ref().unwrap().input,
            DetectorInput::Fixed([640, 640])
        );
        for entry in catalog.entries() {
            assert!(!entry.sha256.is_empty(), "{} must be pinned", entry.name);
            if let Some(spec) = &entry.classifier {
                spec.validate().unwrap();
            }
        }
        let err = catalog
            .get("nope", ModelKind::Classifier)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("faceapi") && err.contains("mini-xception"),
            "{err}"
        );
    }

    #[test]
    fn label_orders_follow_each_model_card() {
        let catalog = ModelCatalog::builtin();
        let labels = |n: &str| {
            catalog
                .get(n, ModelKind::Classifier)
                .unwrap()
                .classifier
                .clone()
                .unwrap()
                .labels
        };
        use EmotionLabel::*;
        assert_eq!(
            labels("faceapi"),
            vec![Neutral, Happy, Sad, Angry, Fear, Disgust, Surprised]
        );
        assert_eq!(
            labels("mini-xception"),
            vec![Angry, Disgust, Fear, Happy, Sad, Surprised, Neutral]
        );
        assert_eq!(
            labels("ferplus"),
            vec![
                Neutral, Happy, Surprised, Sad, Angry, Disgust, Fear, Contempt
            ]
        );
        assert!(
            catalog
                .get("ferplus", ModelKind::Classifier)
                .unwrap()
                .classifier
                .as_ref()
                .unwrap()
                .has_contempt()
        );
    }

    #[test]
    fn a_spec_file_with_bad_labels_or_normalisation_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let write = |body: &str| {
            let p = dir.path().join("spec.json");
            std::fs::write(&p, body).unwrap();
            ModelEntry::from_spec_file(&p).map(|_| ())
        };
        let spec = |labels: &str, mean: &str| {
            format!(
                r#"{{"name":"x","kind":"classifier","file":"x.onnx","classifier":{{"input":"i","output":"o",
                "layout":"nchw","size":64,"color":"rgb","pixel_scale":1,"mean":{mean},"std":[1],"labels":{labels}}}}}"#
            )
        };
        assert!(write(&spec(r#"["happy","sad"]"#, "[0]")).is_ok());
        assert!(
            write(&spec(r#"["happy","joy"]"#, "[0]"))
                .unwrap_err()
                .to_string()
                .contains("joy")
        );
        assert!(
            write(&spec(r#"["happy","happiness"]"#, "[0]"))
                .unwrap_err()
                .to_string()
                .contains("distinct")
        );
        assert!(
            write(&spec(r#"["happy"]"#, "[0,0]"))
                .unwrap_err()
                .to_string()
                .contains("mean")
        );
    }

    #[test]
    fn loading_checks_presence_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let entry = ModelEntry {
            name: "m".into(),
            kind: ModelKind::Classifier,
            file: "m.onnx".into(),
            // sha256("abc")
            sha256: vec!["ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into()],
            licence: String::new(),
            detector: None,
            classifier: None,
            embedder: None,
        };
        assert!(matches!(
            entry.verify(dir.path()),
            Err(AnalysisError::ModelMissing { .. })
        ));
        std::fs::write(dir.path().join("m.onnx"), b"abd").unwrap();
        assert!(matches!(
            entry.verify(dir.path()),
            Err(AnalysisError::ModelChecksum { .. })
        ));
        std::fs::write(dir.path().join("m.onnx"), b"abc").unwrap();
        assert_eq!(entry.verify(dir.path()).unwrap(), dir.path().join("m.onnx"));
    }
}
