//! YuNet face detection: letterbox, anchor-free decoding, score threshold, NMS.
//! The exact recipe is ../shared/models/PROVENANCE.md and validate.py's `YuNet`.

use ort::session::Session;
use ort::value::TensorRef;

use super::image::{RgbFrame, pillow_bilinear_resize, round_half_even};
use super::models::{DetectorInput, DetectorSpec};
use domain::AnalysisError;
use domain::{DetectedFace, FaceBox, Landmarks};

const STRIDES: [usize; 3] = [8, 16, 32];

/// How a frame was placed on the detector's canvas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Letterbox {
    pub canvas_w: usize,
    pub canvas_h: usize,
    pub resized_w: u32,
    pub resized_h: u32,
    /// Detector pixels per frame pixel.
    pub scale: f64,
}

impl Letterbox {
    pub fn plan(input: DetectorInput, frame_w: u32, frame_h: u32) -> Self {
        let (w, h) = (frame_w as f64, frame_h as f64);
        let (scale, canvas) = match input {
            DetectorInput::Fixed([cw, ch]) => (
                (cw as f64 / w).min(ch as f64 / h),
                Some((cw as usize, ch as usize)),
            ),
            DetectorInput::LongSide(side) => ((side as f64 / w.max(h)).min(1.0), None),
        };
        let resized_w = round_half_even(w * scale).max(1.0) as u32;
        let resized_h = round_half_even(h * scale).max(1.0) as u32;
        let round_up_32 = |v: u32| (v as usize).div_ceil(32) * 32;
        let (canvas_w, canvas_h) =
            canvas.unwrap_or((round_up_32(resized_w), round_up_32(resized_h)));
        Self {
            canvas_w,
            canvas_h,
            resized_w,
            resized_h,
            scale,
        }
    }
}

/// A face candidate in canvas coordinates, before NMS.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Candidate {
    pub corners: [f32; 4],
    pub score: f32,
    pub landmarks: [[f32; 2]; 5],
}

/// The raw outputs of one stride level for one image.
pub(crate) struct StrideOutputs<'a> {
    pub stride: usize,
    pub cls: &'a [f32],
    pub obj: &'a [f32],
    pub bbox: &'a [f32],
    pub kps: &'a [f32],
}

/// Anchor-free decoding: anchor `idx = row * cols + col` on a grid of `canvas_w / stride` columns.
pub(crate) fn decode(
    level: &StrideOutputs<'_>,
    canvas_w: usize,
    score_threshold: f32,
    out: &mut Vec<Candidate>,
) {
    let cols = canvas_w / level.stride;
    let s = level.stride as f32;
    for idx in 0..level.cls.len() {
        let score = (level.cls[idx].clamp(0.0, 1.0) * level.obj[idx].clamp(0.0, 1.0)).sqrt();
        if score < score_threshold {
            continue;
        }
        let (row, col) = ((idx / cols) as f32, (idx % cols) as f32);
        let b = &level.bbox[idx * 4..idx * 4 + 4];
        let (cx, cy) = ((col + b[0]) * s, (row + b[1]) * s);
        let (w, h) = (b[2].exp() * s, b[3].exp() * s);
        let k = &level.kps[idx * 10..idx * 10 + 10];
        let mut landmarks = [[0f32; 2]; 5];
        for (n, p) in landmarks.iter_mut().enumerate() {
            *p = [(k[2 * n] + col) * s, (k[2 * n + 1] + row) * s];
        }
        out.push(Candidate {
            corners: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
            score,
            landmarks,
        });
    }
}

fn corner_iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    inter / union.max(1e-9)
}

/// Greedy hard NMS, highest score first (stable for equal scores, like numpy's stable argsort).
pub(crate) fn nms(mut candidates: Vec<Candidate>, iou_threshold: f32) -> Vec<Candidate> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Candidate> = Vec::new();
    for c in candidates {
        if kept
            .iter()
            .all(|k| corner_iou(&k.corners, &c.corners) <= iou_threshold)
        {
            kept.push(c);
        }
    }
    kept
}

/// Maps a candidate back to frame pixels, clamping the box to the frame.
pub(crate) fn to_frame(c: &Candidate, scale: f64, frame_w: u32, frame_h: u32) -> DetectedFace {
    let s = scale as f32;
    let [x1, y1, x2, y2] = c.corners.map(|v| v / s);
    let (x1, y1) = (x1.max(0.0), y1.max(0.0));
    let (x2, y2) = (x2.min(frame_w as f32), y2.min(frame_h as f32));
    DetectedFace {
        bbox: FaceBox::from_corners(x1 as f64, y1 as f64, x2 as f64, y2 as f64),
        score: c.score,
        landmarks: Landmarks(c.landmarks.map(|[x, y]| [x / s, y / s])),
    }
}

/// YuNet with one ONNX session, built once and reused for every frame.
pub struct FaceDetector {
    session: Session,
    spec: DetectorSpec,
    input: Vec<f32>,
}

impl FaceDetector {
    pub fn new(session: Session, spec: DetectorSpec) -> Result<Self, AnalysisError> {
        if spec.family != "yunet" {
            return Err(AnalysisError::ModelSpec(format!(
                "detector family {:?} is not supported",
                spec.family
            )));
        }
        Ok(Self {
            session,
            spec,
            input: Vec::new(),
        })
    }

    /// Faces in the frame, highest score first.
    pub fn detect(&mut self, frame: &RgbFrame) -> Result<Vec<DetectedFace>, AnalysisError> {
        frame.check()?;
        let plan = Letterbox::plan(self.spec.input, frame.width, frame.height);
        self.fill_input(frame, &plan);
        let shape = [1usize, 3, plan.canvas_h, plan.canvas_w];
        let outputs = self
            .session
            .run(ort::inputs!["input" => TensorRef::from_array_view((shape, &self.input[..])).map_err(crate::runtime::onnx)?]).map_err(crate::runtime::onnx)?;

        let mut candidates = Vec::new();
        for stride in STRIDES {
            let get = |name: &str| -> Result<&[f32], AnalysisError> {
                let value = outputs.get(format!("{name}_{stride}")).ok_or_else(|| {
                    AnalysisError::ModelSpec(format!("YuNet output {name}_{stride} missing"))
                })?;
                Ok(value
                    .try_extract_tensor::<f32>()
                    .map_err(crate::runtime::onnx)?
                    .1)
            };
            let level = StrideOutputs {
                stride,
                cls: get("cls")?,
                obj: get("obj")?,
                bbox: get("bbox")?,
                kps: get("kps")?,
            };
            decode(
                &level,
                plan.canvas_w,
                self.spec.score_threshold,
                &mut candidates,
            );
        }
        Ok(nms(candidates, self.spec.nms_iou)
            .iter()
            .map(|c| to_frame(c, plan.scale, frame.width, frame.height))
            .collect())
    }

    /// Resized frame, BGR planar, raw 0..255, on a zeroed canvas.
    fn fill_input(&mut self, frame: &RgbFrame, plan: &Letterbox) {
        let resized = pillow_bilinear_resize(
            &frame.data,
            frame.width,
            frame.height,
            3,
            plan.resized_w,
            plan.resized_h,
        );
        let plane = plan.canvas_w * plan.canvas_h;
        self.input.clear();
        self.input.resize(3 * plane, 0.0);
        let (b_plane, rest) = self.input.split_at_mut(plane);
        let (g_plane, r_plane) = rest.split_at_mut(plane);
        for (y, row) in resized
            .chunks_exact(plan.resized_w as usize * 3)
            .enumerate()
        {
            let base = y * plan.canvas_w;
            for (x, px) in row.chunks_exact(3).enumerate() {
                r_plane[base + x] = px[0] as f32;
                g_plane[base + x] = px[1] as f32;
                b_plane[base + x] = px[2] as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_fixed_keeps_aspect_and_dynamic_pads_to_32() {
        let fixed = Letterbox::plan(DetectorInput::Fixed([640, 640]), 1280, 720);
        assert_eq!(
            (
                fixed.canvas_w,
                fixed.canvas_h,
                fixed.resized_w,
                fixed.resized_h
            ),
            (640, 640, 640, 360)
        );
        assert_eq!(fixed.scale, 0.5);
        let dynamic = Letterbox::plan(DetectorInput::LongSide(320), 640, 360);
        assert_eq!(
            (
                dynamic.canvas_w,
                dynamic.canvas_h,
                dynamic.resized_w,
                dynamic.resized_h
            ),
            (320, 192, 320, 180)
        );
        // never upscales small frames
        let small = Letterbox::plan(DetectorInput::LongSide(640), 200, 100);
        assert_eq!(
            (small.canvas_w, small.canvas_h, small.scale),
            (224, 128, 1.0)
        );
    }

    /// A 2x2 grid at stride 8 (canvas 16x16) where anchor (row 1, col 0) fires.
    fn one_anchor_level() -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut cls = vec![0.1; 4];
        let mut obj = vec![0.1; 4];
        let mut bbox = vec![0.0; 16];
        let mut kps = vec![0.0; 40];
        let idx = 2; // row 1, col 0
        cls[idx] = 0.81;
        obj[idx] = 1.2; // clamped to 1 -> score sqrt(0.81) = 0.9
        bbox[idx * 4..idx * 4 + 4].copy_from_slice(&[0.5, 0.25, (2.0f32).ln(), (3.0f32).ln()]);
        kps[idx * 10..idx * 10 + 2].copy_from_slice(&[0.5, 0.5]);
        (cls, obj, bbox, kps)
    }

    #[test]
    fn decoding_places_boxes_on_the_anchor_grid() {
        let (cls, obj, bbox, kps) = one_anchor_level();
        let level = StrideOutputs {
            stride: 8,
            cls: &cls,
            obj: &obj,
            bbox: &bbox,
            kps: &kps,
        };
        let mut out = Vec::new();
        decode(&level, 16, 0.6, &mut out);
        assert_eq!(out.len(), 1, "only the anchor above the threshold");
        let c = out[0];
        assert!((c.score - 0.9).abs() < 1e-6);
        // centre ((0 + 0.5) * 8, (1 + 0.25) * 8) = (4, 10); size (16, 24)
        assert_eq!(c.corners, [-4.0, -2.0, 12.0, 22.0]);
        assert_eq!(c.landmarks[0], [4.0, 12.0]);
        assert_eq!(c.landmarks[1], [0.0, 8.0]);
        let mut none = Vec::new();
        decode(&level, 16, 0.95, &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes_and_all_separate_ones() {
        let cand = |x: f32, score: f32| Candidate {
            corners: [x, 0.0, x + 10.0, 10.0],
            score,
            landmarks: [[0.0; 2]; 5],
        };
        // IoU(0, 2) = 80/120 = 0.67 -> suppressed; IoU(0, 6) = 40/160 = 0.25 -> kept at threshold 0.3
        let kept = nms(
            vec![
                cand(2.0, 0.8),
                cand(0.0, 0.9),
                cand(6.0, 0.7),
                cand(50.0, 0.65),
            ],
            0.3,
        );
        let xs: Vec<f32> = kept.iter().map(|c| c.corners[0]).collect();
        assert_eq!(xs, vec![0.0, 6.0, 50.0]);
    }

    #[test]
    fn boxes_map_back_to_the_frame_and_are_clamped() {
        let c = Candidate {
            corners: [-4.0, 10.0, 100.0, 60.0],
            score: 0.9,
            landmarks: [[20.0, 30.0]; 5],
        };
        let face = to_frame(&c, 0.5, 150, 100);
        assert_eq!(
            face.bbox,
            FaceBox {
                x: 0.0,
                y: 20.0,
                w: 150.0,
                h: 80.0
            }
        );
        assert_eq!(face.landmarks.0[0], [40.0, 60.0]);
    }
}
