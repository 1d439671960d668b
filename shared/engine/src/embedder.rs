//! Who a face is: aligned crops, a face-recognition embedding per track, and the split of a track
//! when a cut puts someone else where its face was.
//!
//! Embedding every face of every frame would cost more than classifying it, so each track embeds
//! only a few of its best crops ([`crop_quality`]: large, frontal, sharp, confidently detected),
//! at most one candidate every [`identity_check_ms`] of video, plus one whenever the face's
//! appearance jumps from one analysed frame to the next (a cut). The tracker follows boxes only;
//! a jump whose embedding is unlike the track's is a different person, and the track is split.

use std::collections::HashMap;

use ort::session::Session;
use ort::value::TensorRef;

use super::image::{RgbFrame, SquareCrop, pillow_bilinear_resize, rgb_to_grey};
use super::models::EmbedderSpec;
use domain::AnalysisError;
use domain::{
    DetectedFace, FaceBox, Landmarks, PeopleConfig, ProfileBuilder, TrackProfile, Tracker, cosine,
    unit,
};

/// The five-point template of ArcFace-style recognisers, in a 112×112 crop: eyes, nose tip,
/// mouth corners (image-left first, as YuNet orders its landmarks).
pub const TEMPLATE_112: [[f64; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// Video time between two identity checks of a track that has `samples` of its `capacity` crops
/// (a check is a quality look, and an embedding when the crop beats the worst one kept): often
/// while the track's profile is thin, so that short tracks get a second view, then rarely once it
/// is full. A 20 s track makes at most 8 checks.
pub fn identity_check_ms(samples: u32, capacity: usize) -> u64 {
    match samples {
        0 | 1 => 1000,
        n if (n as usize) < capacity => 2000,
        _ => 4000,
    }
}

/// Below this correlation of a face's 16×16 grey thumbnail with the previous frame's, the face
/// is checked at once: a cut, or a different face under the same box.
const CUT_CORRELATION: f32 = 0.6;

/// Side of the JPEG thumbnail kept per track, in pixels.
const THUMBNAIL_SIDE: u32 = 96;

/// The least-squares similarity transform (rotation, uniform scale, translation; no reflection)
/// taking `src` to `dst`: `[a, b, tx, ty]` with `x' = a·x − b·y + tx`, `y' = b·x + a·y + ty`.
pub fn similarity_transform(src: &[[f64; 2]], dst: &[[f64; 2]]) -> [f64; 4] {
    let n = src.len().min(dst.len()) as f64;
    let mean = |pts: &[[f64; 2]]| {
        let (sx, sy) = pts
            .iter()
            .fold((0.0, 0.0), |(x, y), p| (x + p[0], y + p[1]));
        (sx / n, sy / n)
    };
    let ((mx, my), (nx, ny)) = (mean(src), mean(dst));
    let (mut a, mut b, mut var) = (0.0, 0.0, 0.0);
    for (p, q) in src.iter().zip(dst) {
        let (px, py, qx, qy) = (p[0] - mx, p[1] - my, q[0] - nx, q[1] - ny);
        a += qx * px + qy * py;
        b += qy * px - qx * py;
        var += px * px + py * py;
    }
    if var <= f64::EPSILON {
        return [1.0, 0.0, nx - mx, ny - my];
    }
    let (a, b) = (a / var, b / var);
    [a, b, nx - (a * mx - b * my), ny - (b * mx + a * my)]
}

/// Where the five template points go in a `size` crop: [`TEMPLATE_112`] scaled by `scale` about
/// the 112 crop's centre, shifted by `shift` (112-crop pixels), then scaled to `size`.
pub fn template(size: u32, scale: f64, shift: [f64; 2]) -> [[f64; 2]; 5] {
    let to_size = f64::from(size) / 112.0;
    let half = f64::from(size) / 2.0;
    TEMPLATE_112.map(|p| {
        [
            ((p[0] - 56.0) * scale + shift[0]) * to_size + half,
            ((p[1] - 56.0) * scale + shift[1]) * to_size + half,
        ]
    })
}

/// The face warped onto `template` (see [`template`]): `size²` RGB pixels, bilinear, black
/// outside the frame. Coordinates are pixel centres, as the detector reports landmarks.
pub fn align_face(
    frame: &RgbFrame,
    landmarks: &Landmarks,
    size: u32,
    template: &[[f64; 2]; 5],
) -> Vec<u8> {
    let src: Vec<[f64; 2]> = landmarks
        .0
        .iter()
        .map(|p| [f64::from(p[0]), f64::from(p[1])])
        .collect();
    let [a, b, tx, ty] = similarity_transform(&src, template);
    // invert x' = M x + t  →  x = M⁻¹ (x' − t), M⁻¹ = [[a, b], [−b, a]] / (a² + b²)
    let det = (a * a + b * b).max(f64::MIN_POSITIVE);
    let (w, h) = (i64::from(frame.width), i64::from(frame.height));
    let pixel = |x: i64, y: i64, c: usize| -> f64 {
        if x < 0 || y < 0 || x >= w || y >= h {
            0.0
        } else {
            f64::from(frame.data[((y * w + x) * 3) as usize + c])
        }
    };
    let mut out = Vec::with_capacity((size * size * 3) as usize);
    for oy in 0..size {
        for ox in 0..size {
            let (dx, dy) = (f64::from(ox) - tx, f64::from(oy) - ty);
            let sx = (a * dx + b * dy) / det;
            let sy = (-b * dx + a * dy) / det;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            for c in 0..3 {
                let v = pixel(x0, y0, c) * (1.0 - fx) * (1.0 - fy)
                    + pixel(x0 + 1, y0, c) * fx * (1.0 - fy)
                    + pixel(x0, y0 + 1, c) * (1.0 - fx) * fy
                    + pixel(x0 + 1, y0 + 1, c) * fx * fy;
                out.push(v.round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}

/// How useful a crop is for telling who someone is, 0..1: the detector's score × size (the eye
/// distance in the frame against the one in the aligned crop, `crop_eyes`: 1 when the crop
/// needs no upscaling) × frontality (the nose halfway between the eyes) × sharpness (variance
/// of the Laplacian of the aligned crop, v / (v + 100)).
pub fn crop_quality(face: &DetectedFace, aligned: &[u8], side: u32, crop_eyes: f32) -> f32 {
    let [re, le, nose, ..] = face.landmarks.0;
    let dist = |p: [f32; 2], q: [f32; 2]| ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sqrt();
    let eyes = dist(re, le);
    let size = (eyes / crop_eyes.max(1.0)).min(1.0);
    let (to_r, to_l) = (dist(nose, re), dist(nose, le));
    let frontal = if to_r + to_l > 0.0 {
        (1.0 - 2.0 * (to_r - to_l).abs() / (to_r + to_l)).max(0.0)
    } else {
        0.0
    };
    let grey = rgb_to_grey(aligned);
    let s = side as usize;
    let (mut sum, mut sum2, mut n) = (0f64, 0f64, 0f64);
    for y in 1..s.saturating_sub(1) {
        for x in 1..s - 1 {
            let at = |x: usize, y: usize| f64::from(grey[y * s + x]);
            let lap = at(x - 1, y) + at(x + 1, y) + at(x, y - 1) + at(x, y + 1) - 4.0 * at(x, y);
            sum += lap;
            sum2 += lap * lap;
            n += 1.0;
        }
    }
    let var = if n > 0.0 {
        (sum2 / n - (sum / n).powi(2)).max(0.0)
    } else {
        0.0
    };
    let sharp = (var / (var + 100.0)) as f32;
    face.score.clamp(0.0, 1.0) * size * frontal * sharp
}

/// A face's coarse appearance: its square box as 16×16 luma (each cell the mean of a 2×2 grid
/// of point samples), zero mean, unit norm. Two frames of the same face correlate highly; a cut
/// to someone else (or to the background) does not. Runs on every face of every frame, so it
/// reads 1 024 pixels rather than copying the crop.
fn appearance(frame: &RgbFrame, bbox: &FaceBox) -> Vec<f32> {
    const CELLS: usize = 16;
    let crop = SquareCrop::around(bbox, 1.0);
    let (w, h) = (i64::from(frame.width), i64::from(frame.height));
    let step = f64::from(crop.side) / CELLS as f64;
    let luma = |x: f64, y: f64| -> f32 {
        let (x, y) = (crop.x + x as i64, crop.y + y as i64);
        if x < 0 || y < 0 || x >= w || y >= h {
            return 0.0;
        }
        let i = ((y * w + x) * 3) as usize;
        let p = &frame.data[i..i + 3];
        0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])
    };
    let mut cells = Vec::with_capacity(CELLS * CELLS);
    for cy in 0..CELLS {
        for cx in 0..CELLS {
            let (x0, y0) = (cx as f64 * step, cy as f64 * step);
            let q = step / 4.0;
            cells.push(
                (luma(x0 + q, y0 + q)
                    + luma(x0 + 3.0 * q, y0 + q)
                    + luma(x0 + q, y0 + 3.0 * q)
                    + luma(x0 + 3.0 * q, y0 + 3.0 * q))
                    / 4.0,
            );
        }
    }
    let mean = cells.iter().sum::<f32>() / cells.len() as f32;
    unit(cells.into_iter().map(|v| v - mean).collect())
}

/// A face-recognition model with one ONNX session.
pub struct FaceEmbedder {
    session: Session,
    spec: EmbedderSpec,
    /// The spec's alignment template in crop pixels.
    template: [[f64; 2]; 5],
    input: Vec<f32>,
}

impl FaceEmbedder {
    pub fn new(session: Session, spec: EmbedderSpec) -> Result<Self, AnalysisError> {
        if session.outputs().iter().all(|o| o.name() != spec.output)
            || session.inputs().iter().all(|i| i.name() != spec.input)
        {
            return Err(AnalysisError::ModelSpec(format!(
                "embedding model has no input {:?} or output {:?}",
                spec.input, spec.output
            )));
        }
        Ok(Self {
            session,
            template: template(spec.size, spec.template_scale, spec.template_shift),
            spec,
            input: Vec::new(),
        })
    }

    pub fn spec(&self) -> &EmbedderSpec {
        &self.spec
    }

    /// The unit-length embedding of an aligned `size × size` RGB crop.
    pub fn embed(&mut self, aligned: &[u8]) -> Result<Vec<f32>, AnalysisError> {
        let spec = &self.spec;
        self.input.clear();
        self.input.extend(aligned.chunks_exact(3).flat_map(|px| {
            (0..3).map(move |c| {
                (f32::from(px[c]) * spec.pixel_scale - spec.mean[c.min(spec.mean.len() - 1)])
                    / spec.std[c.min(spec.std.len() - 1)]
            })
        }));
        let size = spec.size as usize;
        let outputs = self.session.run(ort::inputs![spec.input.as_str() =>
            TensorRef::from_array_view(([1usize, size, size, 3], &self.input[..])).map_err(crate::runtime::onnx)?]).map_err(crate::runtime::onnx)?;
        let (_, values) = outputs[spec.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(crate::runtime::onnx)?;
        Ok(unit(values.to_vec()))
    }
}

#[derive(Debug)]
struct TrackIdentity {
    profile: ProfileBuilder,
    last_check_ms: Option<u64>,
    appearance: Option<Vec<f32>>,
    thumbnail: Option<Vec<u8>>,
}

/// What [`Identities::observe`] did to one face.
pub struct Observed {
    /// The face's track after a split (the tracker's id otherwise).
    pub track: u32,
    /// The track's profile, when it changed.
    pub profile: Option<TrackProfile>,
}

/// Per-track identity state for one analysis run.
pub struct Identities {
    config: PeopleConfig,
    tracks: HashMap<u32, TrackIdentity>,
    pub embeddings: u64,
}

impl Identities {
    pub fn new(config: PeopleConfig) -> Self {
        Self {
            config,
            tracks: HashMap::new(),
            embeddings: 0,
        }
    }

    /// Looks at the face `track` has in this frame: embeds it when due and worth it, and splits
    /// the track in `tracker` when the face turns out to be someone else.
    pub fn observe(
        &mut self,
        embedder: &mut FaceEmbedder,
        tracker: &mut Tracker,
        frame: &RgbFrame,
        t_ms: u64,
        track: u32,
        face: &DetectedFace,
    ) -> Result<Observed, AnalysisError> {
        let capacity = self.config.samples_per_track;
        if capacity == 0 {
            // identity is off: every track is a person of its own
            return Ok(Observed {
                track,
                profile: None,
            });
        }
        // the pixel code below indexes rows by the frame's dimensions
        frame.check()?;
        let look = appearance(frame, &face.bbox);
        let fresh = move || TrackIdentity {
            profile: ProfileBuilder::new(capacity),
            last_check_ms: None,
            appearance: None,
            thumbnail: None,
        };
        let state = self.tracks.entry(track).or_insert_with(fresh);
        let jumped = state.appearance.as_ref().is_some_and(|prev| {
            prev.iter().zip(&look).map(|(a, b)| a * b).sum::<f32>() < CUT_CORRELATION
        });
        state.appearance = Some(look);
        let due = state.profile.is_empty()
            || jumped
            || state.last_check_ms.is_none_or(|last| {
                t_ms < last || t_ms - last >= identity_check_ms(state.profile.samples(), capacity)
            });
        if !due {
            return Ok(Observed {
                track,
                profile: None,
            });
        }
        state.last_check_ms = Some(t_ms);
        let side = embedder.spec().size;
        let aligned = align_face(frame, &face.landmarks, side, &embedder.template);
        let crop_eyes = embedder.template[1][0] - embedder.template[0][0];
        let quality = crop_quality(face, &aligned, side, crop_eyes as f32);
        if !(state.profile.is_empty() || jumped || state.profile.wants(quality)) {
            return Ok(Observed {
                track,
                profile: None,
            });
        }
        let embedding = embedder.embed(&aligned)?;
        self.embeddings += 1;
        let mut track = track;
        let mean = self.tracks[&track].profile.mean();
        tracing::debug!(
            track,
            t_ms,
            jumped,
            quality,
            similarity = mean.as_ref().map(|m| cosine(m, &embedding)),
            "crop embedded"
        );
        let state = match mean {
            // a thin profile (one or two crops, maybe poor ones) is only challenged at a cut
            Some(mean)
                if (jumped || self.tracks[&track].profile.samples() >= 3)
                    && cosine(&mean, &embedding) < self.config.split_similarity =>
            {
                let new_track = tracker.split(track);
                tracing::debug!(
                    track,
                    new_track,
                    t_ms,
                    "a different face under the same track: split"
                );
                let previous = self
                    .tracks
                    .get_mut(&track)
                    .and_then(|s| s.appearance.take());
                track = new_track;
                let state = self.tracks.entry(track).or_insert_with(fresh);
                state.appearance = previous;
                state.last_check_ms = Some(t_ms);
                state
            }
            _ => self.tracks.get_mut(&track).expect("state inserted above"),
        };
        if quality >= state.profile.best_quality() || state.thumbnail.is_none() {
            state.thumbnail = thumbnail(frame, &face.bbox);
        }
        state.profile.add(quality, embedding);
        let profile = TrackProfile {
            track,
            embedding: state.profile.mean().unwrap_or_default(),
            samples: state.profile.samples(),
            quality: state.profile.best_quality(),
            thumbnail: state.thumbnail.clone(),
        };
        Ok(Observed {
            track,
            profile: Some(profile),
        })
    }
}

/// The face's box, a little wider, as a small JPEG: what a person's thumbnail shows.
fn thumbnail(frame: &RgbFrame, bbox: &FaceBox) -> Option<Vec<u8>> {
    let crop = SquareCrop::around(bbox, 1.3);
    let pixels = pillow_bilinear_resize(
        &crop.extract(frame),
        crop.side,
        crop.side,
        3,
        THUMBNAIL_SIDE,
        THUMBNAIL_SIDE,
    );
    let encode = || -> std::io::Result<Vec<u8>> {
        let mut jpeg = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        jpeg.set_size(THUMBNAIL_SIDE as usize, THUMBNAIL_SIDE as usize);
        jpeg.set_quality(85.0);
        let mut started = jpeg.start_compress(Vec::new())?;
        started.write_scanlines(&pixels)?;
        started.finish()
    };
    // libjpeg reports errors by unwinding (see `decode_jpeg`); a thumbnail is optional
    std::panic::catch_unwind(encode).ok()?.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_similarity_transform_recovers_rotation_scale_and_shift() {
        // template rotated by 30°, scaled by 2, shifted by (10, -5)
        let (s, c) = (
            2.0 * 30f64.to_radians().sin(),
            2.0 * 30f64.to_radians().cos(),
        );
        let src: Vec<[f64; 2]> = TEMPLATE_112
            .iter()
            .map(|p| [c * p[0] - s * p[1] + 10.0, s * p[0] + c * p[1] - 5.0])
            .collect();
        let [a, b, tx, ty] = similarity_transform(&src, &TEMPLATE_112);
        for (p, q) in src.iter().zip(TEMPLATE_112) {
            let (x, y) = (a * p[0] - b * p[1] + tx, b * p[0] + a * p[1] + ty);
            assert!((x - q[0]).abs() < 1e-9 && (y - q[1]).abs() < 1e-9);
        }
        assert!((a * a + b * b).sqrt() - 0.5 < 1e-12, "scale 1/2");
    }

    #[test]
    fn the_template_scales_and_shifts_about_the_crop_centre() {
        assert_eq!(template(112, 1.0, [0.0, 0.0]), TEMPLATE_112);
        let dlib = template(150, 1.082, [-0.77, -17.09]);
        // the eyes 35.2 · 1.082 · 150/112 = 51.1 px apart, and higher than the ArcFace crop's
        assert!((dlib[1][0] - dlib[0][0] - 51.07).abs() < 0.05, "{dlib:?}");
        assert!(
            dlib[0][1] < TEMPLATE_112[0][1] * 150.0 / 112.0 - 15.0,
            "{dlib:?}"
        );
    }

    #[test]
    fn alignment_puts_the_landmarks_on_the_template() {
        // a frame with a bright dot at each landmark of a face twice the template's size
        let (w, h) = (400u32, 300u32);
        let mut data = vec![0u8; (w * h * 3) as usize];
        let landmarks = Landmarks(
            TEMPLATE_112.map(|p| [(p[0] * 2.0 + 50.0) as f32, (p[1] * 2.0 + 20.0) as f32]),
        );
        for p in landmarks.0 {
            let (x, y) = (p[0].round() as u32, p[1].round() as u32);
            for dy in 0..5 {
                for dx in 0..5 {
                    let i = (((y + dy - 2) * w + x + dx - 2) * 3) as usize;
                    data[i..i + 3].copy_from_slice(&[255, 255, 255]);
                }
            }
        }
        let aligned = align_face(
            &RgbFrame::new(w, h, data),
            &landmarks,
            112,
            &template(112, 1.0, [0.0, 0.0]),
        );
        assert_eq!(aligned.len(), 112 * 112 * 3);
        for p in TEMPLATE_112 {
            let (x, y) = (p[0].round() as usize, p[1].round() as usize);
            assert!(aligned[(y * 112 + x) * 3] > 100, "no dot at {p:?}");
        }
        assert_eq!(aligned[0], 0, "the corner is background");
    }

    #[test]
    fn quality_prefers_large_frontal_sharp_faces() {
        let face = |eye_gap: f32, nose_x: f32| DetectedFace {
            bbox: FaceBox::default(),
            score: 0.9,
            landmarks: Landmarks([
                [0.0, 0.0],
                [eye_gap, 0.0],
                [nose_x, eye_gap / 2.0],
                [0.0, eye_gap],
                [eye_gap, eye_gap],
            ]),
        };
        let checker: Vec<u8> = (0..112 * 112)
            .flat_map(|i| {
                let v = if (i % 112 / 4 + i / 112 / 4) % 2 == 0 {
                    0
                } else {
                    255
                };
                [v, v, v]
            })
            .collect();
        let flat = vec![128u8; 112 * 112 * 3];
        let big = crop_quality(&face(40.0, 20.0), &checker, 112, 35.0);
        assert!(big > 0.8, "{big}");
        assert!(
            crop_quality(&face(10.0, 5.0), &checker, 112, 35.0) < big / 2.0,
            "small"
        );
        assert!(
            crop_quality(&face(40.0, 38.0), &checker, 112, 35.0) < big / 3.0,
            "profile"
        );
        assert_eq!(
            crop_quality(&face(40.0, 20.0), &flat, 112, 35.0),
            0.0,
            "blurred to nothing"
        );
    }

    #[test]
    fn a_thumbnail_is_a_small_jpeg() {
        let frame = RgbFrame::new(64, 48, vec![90; 64 * 48 * 3]);
        let jpeg = thumbnail(
            &frame,
            &FaceBox {
                x: 10.0,
                y: 10.0,
                w: 30.0,
                h: 30.0,
            },
        )
        .unwrap();
        assert_eq!(&jpeg[..2], &[0xff, 0xd8]);
        assert!(jpeg.len() < 10_000);
    }
}
