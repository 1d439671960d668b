use serde::{Deserialize, Serialize};

use super::{EmotionLabel, EmotionScores};

/// An axis-aligned box in source-frame pixels: top-left corner, width and height.
///
/// f64, although the detector works in f32: `x + w` must give back the detector's right edge
/// exactly, or crop rounding can differ by a pixel from the reference pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaceBox {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl FaceBox {
    pub fn from_corners(x1: f64, y1: f64, x2: f64, y2: f64) -> Self {
        Self {
            x: x1,
            y: y1,
            w: (x2 - x1).max(0.0),
            h: (y2 - y1).max(0.0),
        }
    }

    pub fn area(&self) -> f64 {
        self.w * self.h
    }

    pub fn center(&self) -> (f64, f64) {
        (self.x + self.w / 2.0, self.y + self.h / 2.0)
    }

    pub fn iou(&self, other: &FaceBox) -> f64 {
        let ix = (self.x + self.w).min(other.x + other.w) - self.x.max(other.x);
        let iy = (self.y + self.h).min(other.y + other.h) - self.y.max(other.y);
        let inter = ix.max(0.0) * iy.max(0.0);
        let union = self.area() + other.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }
}

/// Boxes serialise as `[x, y, w, h]` rounded to 0.1 px.
impl Serialize for FaceBox {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        [
            round1(self.x),
            round1(self.y),
            round1(self.w),
            round1(self.h),
        ]
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for FaceBox {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let [x, y, w, h] = <[f64; 4]>::deserialize(d)?;
        Ok(Self { x, y, w, h })
    }
}

/// Five facial landmarks in source-frame pixels: right eye, left eye, nose tip, right and left
/// mouth corner (the subject's right, i.e. image left).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Landmarks(pub [[f32; 2]; 5]);

impl Serialize for Landmarks {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let pts: Vec<[f64; 2]> = self
            .0
            .iter()
            .map(|p| [round1(p[0]), round1(p[1])])
            .collect();
        pts.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Landmarks {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self(<[[f32; 2]; 5]>::deserialize(d)?))
    }
}

fn round1(v: impl Into<f64>) -> f64 {
    (v.into() * 10.0).round() / 10.0
}

/// A face as the detector reports it, before tracking and classification.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectedFace {
    pub bbox: FaceBox,
    pub score: f32,
    pub landmarks: Landmarks,
}

impl DetectedFace {
    /// The face in another pixel grid: x coordinates times `sx`, y times `sy` (e.g. from a frame
    /// scaled down for analysis back to the source's pixels).
    pub fn scaled(&self, sx: f64, sy: f64) -> Self {
        let FaceBox { x, y, w, h } = self.bbox;
        Self {
            bbox: FaceBox {
                x: x * sx,
                y: y * sy,
                w: w * sx,
                h: h * sy,
            },
            score: self.score,
            landmarks: Landmarks(
                self.landmarks
                    .0
                    .map(|[px, py]| [(f64::from(px) * sx) as f32, (f64::from(py) * sy) as f32]),
            ),
        }
    }
}

/// One face in one analysed frame: where it is, which track it belongs to and what it shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceResult {
    /// The continuous run of this face (ids start at 1; a run ends when the face is lost for
    /// longer than the tracker's memory, or at a cut to someone else).
    pub track: u32,
    /// The person the track belongs to: 1-based, stable for the whole video, one person across
    /// cuts, gaps and segments. Known once the video's tracks are linked (see `domain::people`);
    /// absent from the raw frames the pipeline stores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<u32>,
    #[serde(rename = "box")]
    pub bbox: FaceBox,
    #[serde(serialize_with = "ser_round4")]
    pub score: f32,
    pub landmarks: Landmarks,
    /// The model's raw output for this frame.
    pub emotions: EmotionScores,
    pub dominant: EmotionLabel,
    /// `emotions` smoothed over time for this person (see `domain::smoothing`); set with
    /// `person`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoothed: Option<EmotionScores>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoothed_dominant: Option<EmotionLabel>,
}

impl FaceResult {
    pub fn new(track: u32, face: &DetectedFace, emotions: EmotionScores) -> Self {
        Self {
            track,
            person: None,
            smoothed: None,
            smoothed_dominant: None,
            bbox: face.bbox,
            score: face.score,
            landmarks: face.landmarks,
            dominant: emotions.dominant(),
            emotions,
        }
    }
}

fn ser_round4<S: serde::Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((*v as f64 * 1e4).round() / 1e4)
}

/// The result for one analysed frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameResult {
    /// Index of the frame among all frames decoded from the source (0-based).
    pub frame: u64,
    /// Presentation time in milliseconds from the start of the stream.
    pub t_ms: u64,
    pub faces: Vec<FaceResult>,
}

impl FrameResult {
    /// The face the original service reported per frame: the largest one.
    pub fn main_face(&self) -> Option<&FaceResult> {
        self.faces
            .iter()
            .max_by(|a, b| a.bbox.area().total_cmp(&b.bbox.area()))
    }
}

/// What the decoder learnt about the input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct VideoInfo {
    pub duration_ms: u64,
    /// Width and height as analysed, i.e. after applying the stream's rotation.
    pub width: u32,
    pub height: u32,
    /// Native frame rate as the container declares it (0 for still images).
    pub fps: f64,
    /// Number of frames decoded from the stream (known once decoding has finished).
    pub frame_count: u64,
    pub codec: String,
    /// The stream's display rotation in degrees (0..360, counter-clockwise, as ffprobe reports
    /// it); frames are analysed upright, i.e. with it applied.
    #[serde(default)]
    pub rotation: i32,
}

/// Which models produced a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub detector: String,
    pub classifier: String,
    pub labels: Vec<EmotionLabel>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_identical_disjoint_and_half_overlapping_boxes() {
        let a = FaceBox {
            x: 0.0,
            y: 0.0,
            w: 10.0,
            h: 10.0,
        };
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&FaceBox { x: 20.0, ..a }), 0.0);
        let half = FaceBox { x: 5.0, ..a };
        assert!((a.iou(&half) - 50.0 / 150.0).abs() < 1e-6);
    }

    #[test]
    fn main_face_is_the_largest() {
        let face = |w: f64, track| FaceResult {
            track,
            bbox: FaceBox {
                x: 0.0,
                y: 0.0,
                w,
                h: w,
            },
            score: 0.9,
            landmarks: Landmarks::default(),
            emotions: EmotionScores::new(false),
            dominant: EmotionLabel::Neutral,
            person: None,
            smoothed: None,
            smoothed_dominant: None,
        };
        let frame = FrameResult {
            frame: 0,
            t_ms: 0,
            faces: vec![face(10.0, 1), face(30.0, 2), face(20.0, 3)],
        };
        assert_eq!(frame.main_face().unwrap().track, 2);
    }
}
