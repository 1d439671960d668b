//! Emotion classification of face crops, driven entirely by a [`ClassifierSpec`].

use ort::session::Session;
use ort::value::TensorRef;

use super::image::{RgbFrame, SquareCrop, pillow_bilinear_resize, rgb_to_grey};
use super::models::{ClassifierSpec, ColorMode, TensorLayout};
use domain::AnalysisError;
use domain::{EmotionScores, FaceBox};

/// Turns one square RGB crop into the model's input values (one sample, `size²·channels` floats,
/// in the spec's layout), appending to `out`.
pub(crate) fn preprocess(
    spec: &ClassifierSpec,
    crop: &[u8],
    side: u32,
    flip: bool,
    out: &mut Vec<f32>,
) {
    let channels = spec.channels();
    let pixels = match spec.color {
        ColorMode::Grey => rgb_to_grey(crop),
        ColorMode::Rgb | ColorMode::Bgr => crop.to_vec(),
    };
    let resize_to = spec.resize_to.unwrap_or(spec.size);
    let resized = pillow_bilinear_resize(&pixels, side, side, channels, resize_to, resize_to);
    let (size, r) = (spec.size as usize, resize_to as usize);
    let offset = (r - size) / 2;
    let value = |x: usize, y: usize, c: usize| -> f32 {
        let sx = if flip {
            offset + size - 1 - x
        } else {
            offset + x
        };
        let src_c = if spec.color == ColorMode::Bgr {
            2 - c
        } else {
            c
        };
        let px = resized[((offset + y) * r + sx) * channels + src_c] as f32;
        let mean = spec.mean[c.min(spec.mean.len() - 1)];
        let std = spec.std[c.min(spec.std.len() - 1)];
        (px * spec.pixel_scale - mean) / std
    };
    match spec.layout {
        TensorLayout::Nhwc => {
            for y in 0..size {
                for x in 0..size {
                    for c in 0..channels {
                        out.push(value(x, y, c));
                    }
                }
            }
        }
        TensorLayout::Nchw => {
            for c in 0..channels {
                for y in 0..size {
                    for x in 0..size {
                        out.push(value(x, y, c));
                    }
                }
            }
        }
    }
}

/// Maps one row of model outputs (in the model's label order) to the product's labels.
pub(crate) fn to_scores(spec: &ClassifierSpec, row: &[f32]) -> EmotionScores {
    let mut scores = EmotionScores::new(spec.has_contempt());
    for (label, p) in spec.labels.iter().zip(row) {
        scores.set(*label, *p);
    }
    scores
}

/// An emotion model with one ONNX session, built once and reused.
pub struct EmotionClassifier {
    session: Session,
    spec: ClassifierSpec,
}

impl EmotionClassifier {
    pub fn new(session: Session, spec: ClassifierSpec) -> Result<Self, AnalysisError> {
        spec.validate()?;
        if session.outputs().iter().all(|o| o.name() != spec.output)
            || session.inputs().iter().all(|i| i.name() != spec.input)
        {
            return Err(AnalysisError::ModelSpec(format!(
                "model has no input {:?} or output {:?}",
                spec.input, spec.output
            )));
        }
        Ok(Self { session, spec })
    }

    pub fn spec(&self) -> &ClassifierSpec {
        &self.spec
    }

    /// Classifies the faces at `boxes` in one batch.
    pub fn classify_faces(
        &mut self,
        frame: &RgbFrame,
        boxes: &[FaceBox],
    ) -> Result<Vec<EmotionScores>, AnalysisError> {
        let prepared = PreparedFaces::from_frame(&self.spec, frame, boxes)?;
        self.classify_prepared(&prepared)
    }

    /// Classifies square RGB crops `(pixels, side)` in one batch.
    pub fn classify_crops(
        &mut self,
        crops: &[(Vec<u8>, u32)],
    ) -> Result<Vec<EmotionScores>, AnalysisError> {
        let mut prepared = PreparedFaces::new(&self.spec, crops.len());
        for (crop, side) in crops {
            prepared.push(&self.spec, crop, *side);
        }
        self.classify_prepared(&prepared)
    }

    /// Runs the model on faces prepared (with this classifier's spec) on another thread.
    pub fn classify_prepared(
        &mut self,
        prepared: &PreparedFaces,
    ) -> Result<Vec<EmotionScores>, AnalysisError> {
        if prepared.faces == 0 {
            return Ok(Vec::new());
        }
        let views = self.spec.views();
        let (n, size, ch) = (
            prepared.faces * views,
            self.spec.size as usize,
            self.spec.channels(),
        );
        if prepared.input.len() != n * size * size * ch {
            return Err(AnalysisError::Internal(format!(
                "{} input values prepared for {n} views of {size}x{size}x{ch}",
                prepared.input.len()
            )));
        }
        let shape = match self.spec.layout {
            TensorLayout::Nhwc => [n, size, size, ch],
            TensorLayout::Nchw => [n, ch, size, size],
        };
        let outputs = self
            .session
            .run(ort::inputs![self.spec.input.as_str() => TensorRef::from_array_view((shape, &prepared.input[..])).map_err(crate::runtime::onnx)?]).map_err(crate::runtime::onnx)?;
        let (out_shape, probs) = outputs[self.spec.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(crate::runtime::onnx)?;
        let classes = self.spec.labels.len();
        if out_shape.len() != 2 || out_shape[1] as usize != classes {
            return Err(AnalysisError::ModelSpec(format!(
                "output {:?} has shape {out_shape:?}, the spec lists {classes} labels",
                self.spec.output
            )));
        }
        Ok(probs
            .chunks_exact(classes * views)
            .map(|rows| {
                let mut mean = vec![0f32; classes];
                for row in rows.chunks_exact(classes) {
                    for (m, p) in mean.iter_mut().zip(row) {
                        *m += p / views as f32;
                    }
                }
                to_scores(&self.spec, &mean)
            })
            .collect())
    }
}

/// Faces cropped and turned into a classifier's input values, apart from running the model: the
/// pipeline prepares them on the detector's thread, so that the classifier's thread (the busiest)
/// only runs the model.
#[derive(Debug, Default)]
pub struct PreparedFaces {
    input: Vec<f32>,
    faces: usize,
}

impl PreparedFaces {
    fn new(spec: &ClassifierSpec, faces: usize) -> Self {
        let per_face = spec.views() * (spec.size as usize).pow(2) * spec.channels();
        Self {
            input: Vec::with_capacity(faces * per_face),
            faces: 0,
        }
    }

    /// The faces at `boxes` (in this order), cropped from `frame` as `spec` says.
    pub fn from_frame(
        spec: &ClassifierSpec,
        frame: &RgbFrame,
        boxes: &[FaceBox],
    ) -> Result<Self, AnalysisError> {
        frame.check()?;
        let mut prepared = Self::new(spec, boxes.len());
        for b in boxes {
            let crop = SquareCrop::around(b, spec.crop_scale);
            prepared.push(spec, &crop.extract(frame), crop.side);
        }
        Ok(prepared)
    }

    fn push(&mut self, spec: &ClassifierSpec, crop: &[u8], side: u32) {
        for view in 0..spec.views() {
            preprocess(spec, crop, side, view == 1, &mut self.input);
        }
        self.faces += 1;
    }

    pub fn len(&self) -> usize {
        self.faces
    }

    pub fn is_empty(&self) -> bool {
        self.faces == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{ModelCatalog, ModelKind};
    use domain::EmotionLabel::*;

    fn spec(name: &str) -> ClassifierSpec {
        ModelCatalog::builtin()
            .get(name, ModelKind::Classifier)
            .unwrap()
            .classifier
            .clone()
            .unwrap()
    }

    #[test]
    fn outputs_map_to_product_labels_per_model() {
        let row = [0.1, 0.2, 0.3, 0.05, 0.15, 0.12, 0.08];
        let faceapi = to_scores(&spec("faceapi"), &row);
        assert_eq!(
            (faceapi.get(Neutral), faceapi.get(Happy), faceapi.get(Sad)),
            (0.1, 0.2, 0.3)
        );
        assert_eq!((faceapi.get(Angry), faceapi.get(Surprised)), (0.05, 0.08));
        assert!(!faceapi.has_contempt());
        let mini = to_scores(&spec("mini-xception"), &row);
        assert_eq!(
            (mini.get(Angry), mini.get(Fear), mini.get(Neutral)),
            (0.1, 0.3, 0.08)
        );
        let ferplus = to_scores(&spec("ferplus"), &[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.9]);
        assert!(ferplus.has_contempt());
        assert_eq!(ferplus.dominant(), Contempt);
    }

    #[test]
    fn faceapi_preprocessing_is_rgb_nhwc_minus_mean_over_255() {
        let s = spec("faceapi");
        let crop: Vec<u8> = [200u8, 100, 50].repeat(4 * 4);
        let mut out = Vec::new();
        preprocess(&s, &crop, 4, false, &mut out);
        assert_eq!(out.len(), 112 * 112 * 3);
        assert!((out[0] - (200.0 - 122.782) / 255.0).abs() < 1e-6);
        assert!((out[1] - (100.0 - 117.001) / 255.0).abs() < 1e-6);
        assert!((out[2] - (50.0 - 104.298) / 255.0).abs() < 1e-6);
    }

    #[test]
    fn ferplus_preprocessing_is_grey_nchw_centre_cropped_and_flippable() {
        let s = spec("ferplus");
        // 44x44 crop: left half black, right half white; no resize needed (resize_to = 44)
        let crop: Vec<u8> = (0..44 * 44)
            .flat_map(|i| if i % 44 < 22 { [0u8; 3] } else { [255u8; 3] })
            .collect();
        let (mut plain, mut flipped) = (Vec::new(), Vec::new());
        preprocess(&s, &crop, 44, false, &mut plain);
        preprocess(&s, &crop, 44, true, &mut flipped);
        assert_eq!(plain.len(), 40 * 40);
        // (0/255 - 0.5) / 0.25 = -2 ; (255/255 - 0.5) / 0.25 = 2
        assert!((plain[0] + 2.0).abs() < 1e-5 && (plain[39] - 2.0).abs() < 1e-5);
        assert!((flipped[0] - 2.0).abs() < 1e-5 && (flipped[39] + 2.0).abs() < 1e-5);
    }

    #[test]
    fn bgr_models_get_channels_swapped() {
        let mut s = spec("faceapi");
        s.color = ColorMode::Bgr;
        s.mean = vec![0.0];
        s.std = vec![1.0];
        let mut out = Vec::new();
        preprocess(&s, &[10u8, 20, 30].repeat(112 * 112), 112, false, &mut out);
        assert_eq!(&out[..3], &[30.0, 20.0, 10.0]);
    }
}
