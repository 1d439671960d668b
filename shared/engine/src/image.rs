//! Pixel work: frames, crops, grey conversion, resizing — all bit-exact with Pillow, because the
//! reference pipeline (../shared/models/validate.py) uses Pillow and the parity tests hold us to it.

use domain::AnalysisError;
use domain::FaceBox;

/// An upright RGB24 frame, rows top to bottom, no padding: `data` holds exactly
/// `width × height × 3` bytes. [`RgbFrame::try_new`] checks that; the detector and the
/// classifier check it again ([`RgbFrame::check`]) before touching pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbFrame {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl RgbFrame {
    /// A frame from pixels known to fit (a decoder's own output); see [`RgbFrame::try_new`].
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Self {
        debug_assert_eq!(data.len() as u64, Self::bytes_for(width, height));
        Self {
            width,
            height,
            data,
        }
    }

    /// A frame from a buffer that must hold exactly `width × height × 3` bytes.
    pub fn try_new(width: u32, height: u32, data: Vec<u8>) -> Result<Self, AnalysisError> {
        let frame = Self {
            width,
            height,
            data,
        };
        frame.check()?;
        Ok(frame)
    }

    /// The size of an RGB24 buffer of these dimensions, computed in 64 bits (a 16000×16000
    /// frame needs 768 000 000 bytes, 6.1·10⁹ bits: more than a `u32` holds).
    pub fn bytes_for(width: u32, height: u32) -> u64 {
        u64::from(width) * u64::from(height) * 3
    }

    /// Fails unless the frame has pixels and `data` is exactly `width × height × 3` bytes; the
    /// pixel code below indexes rows by these dimensions.
    pub fn check(&self) -> Result<(), AnalysisError> {
        let expected = Self::bytes_for(self.width, self.height);
        if expected == 0 || self.data.len() as u64 != expected {
            return Err(AnalysisError::Internal(format!(
                "a {}x{} RGB frame has {} bytes of pixels; it needs {expected}",
                self.width,
                self.height,
                self.data.len()
            )));
        }
        Ok(())
    }
}

/// The largest frames the engine accepts, checked from a stream's or an image's header before
/// anything is decoded (see [`EngineConfig`](super::EngineConfig) for the defaults and why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Width × height.
    pub max_pixels: u64,
    /// The longer side.
    pub max_side: u32,
}

impl FrameLimits {
    /// No limit may go above this: ffmpeg-sidecar computes a raw frame's size as
    /// `width × height × 24` bits in a `u32`, which wraps (release) or panics (debug) above
    /// 178 956 970 pixels, and then hands out buffers of the wrong size.
    pub const CEILING_PIXELS: u64 = u32::MAX as u64 / 24;

    /// 160 megapixels and 32768 pixels a side.
    pub const DEFAULT: Self = Self {
        max_pixels: 160_000_000,
        max_side: 32_768,
    };

    /// The pixel limit in force: `max_pixels`, never above [`FrameLimits::CEILING_PIXELS`].
    pub fn pixel_limit(&self) -> u64 {
        self.max_pixels.min(Self::CEILING_PIXELS)
    }

    /// `Err(FrameTooLarge)` when a `width × height` frame is over the limits.
    pub fn check(&self, width: u32, height: u32) -> Result<(), AnalysisError> {
        let max_pixels = self.pixel_limit();
        if u64::from(width) * u64::from(height) > max_pixels || width.max(height) > self.max_side {
            return Err(AnalysisError::FrameTooLarge {
                width,
                height,
                max_pixels,
                max_side: self.max_side,
            });
        }
        Ok(())
    }
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Python's `round()` (half to even), so crop geometry matches the reference to the pixel.
pub(crate) fn round_half_even(v: f64) -> f64 {
    let r = v.round();
    if (v - v.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - v.signum()
    } else {
        r
    }
}

/// Where a square crop centred on a face lies in the frame. Parts outside the frame are black.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SquareCrop {
    /// Top-left corner in frame coordinates (may be negative).
    pub x: i64,
    pub y: i64,
    pub side: u32,
}

impl SquareCrop {
    /// Side = max(w, h) · `scale`, centred on the box.
    pub fn around(bbox: &FaceBox, scale: f64) -> Self {
        let (x1, y1) = (bbox.x, bbox.y);
        let (x2, y2) = (x1 + bbox.w, y1 + bbox.h);
        let (cx, cy) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
        let side = round_half_even((x2 - x1).max(y2 - y1) * scale).max(1.0);
        Self {
            x: round_half_even(cx - side / 2.0) as i64,
            y: round_half_even(cy - side / 2.0) as i64,
            side: side as u32,
        }
    }

    /// Copies the crop out of `frame`, zero-filling what lies outside it.
    pub fn extract(&self, frame: &RgbFrame) -> Vec<u8> {
        let side = self.side as i64;
        let mut out = vec![0u8; (side * side * 3) as usize];
        let (fw, fh) = (frame.width as i64, frame.height as i64);
        let (sx1, sy1) = (self.x.max(0), self.y.max(0));
        let (sx2, sy2) = ((self.x + side).min(fw), (self.y + side).min(fh));
        if sx2 <= sx1 || sy2 <= sy1 {
            return out;
        }
        let row_bytes = ((sx2 - sx1) * 3) as usize;
        for sy in sy1..sy2 {
            let src = ((sy * fw + sx1) * 3) as usize;
            let dst = (((sy - self.y) * side + (sx1 - self.x)) * 3) as usize;
            out[dst..dst + row_bytes].copy_from_slice(&frame.data[src..src + row_bytes]);
        }
        out
    }
}

/// Pillow's `convert('L')`: ITU-R 601 luma in 16-bit fixed point with rounding.
pub fn rgb_to_grey(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3)
        .map(|p| {
            ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8
        })
        .collect()
}

/// Pillow's `Image.resize(size, BILINEAR)` on 8-bit images, reproduced to the bit: separable
/// convolution with a support that widens when shrinking, 22-bit fixed-point coefficients, and an
/// 8-bit intermediate image between the horizontal and the vertical pass.
///
/// The emotion models are sensitive to single-level pixel differences (a generic resizer moves
/// probabilities by up to 0.04, and a 0.2 px box shift moves a crop by a pixel), and the
/// reference pipeline uses Pillow, so frames for the detector and face crops both go through this.
///
/// `src` must hold `sw × sh × channels` bytes (callers check frames with [`RgbFrame::check`]).
pub fn pillow_bilinear_resize(
    src: &[u8],
    sw: u32,
    sh: u32,
    channels: usize,
    dw: u32,
    dh: u32,
) -> Vec<u8> {
    if (sw, sh) == (dw, dh) {
        return src.to_vec();
    }
    let (sw, sh, dw, dh) = (sw as usize, sh as usize, dw as usize, dh as usize);
    assert!(
        sw > 0 && sh > 0 && dw > 0 && dh > 0 && src.len() == sw * sh * channels,
        "pillow_bilinear_resize: {} bytes for {sw}x{sh}x{channels}, to {dw}x{dh}",
        src.len()
    );
    let horizontal = PillowCoefficients::new(sw, dw);
    let vertical = PillowCoefficients::new(sh, dh);
    // Only the source rows the vertical pass reads need a horizontal pass.
    let first_row = vertical.bounds[0].0;
    let last_row = vertical.bounds[dh - 1].0 + vertical.bounds[dh - 1].1;
    let half = 1i32 << (PILLOW_PRECISION_BITS - 1);
    let mut temp = vec![0u8; (last_row - first_row) * dw * channels];
    for y in first_row..last_row {
        let src_row = &src[y * sw * channels..(y + 1) * sw * channels];
        let dst_row =
            &mut temp[(y - first_row) * dw * channels..(y - first_row + 1) * dw * channels];
        for (x, (&(start, len), dst)) in horizontal
            .bounds
            .iter()
            .zip(dst_row.chunks_exact_mut(channels))
            .enumerate()
        {
            let taps = horizontal.weights(x)[..len]
                .iter()
                .zip(src_row[start * channels..].chunks_exact(channels));
            if channels == 3 {
                let (mut a0, mut a1, mut a2) = (half, half, half);
                for (&w, px) in taps {
                    a0 += px[0] as i32 * w;
                    a1 += px[1] as i32 * w;
                    a2 += px[2] as i32 * w;
                }
                dst.copy_from_slice(&[clip8(a0), clip8(a1), clip8(a2)]);
            } else {
                for (c, d) in dst.iter_mut().enumerate() {
                    let mut acc = half;
                    for (&w, px) in horizontal.weights(x)[..len]
                        .iter()
                        .zip(src_row[start * channels..].chunks_exact(channels))
                    {
                        acc += px[c] as i32 * w;
                    }
                    *d = clip8(acc);
                }
            }
        }
    }
    let row_len = dw * channels;
    let mut out = vec![0u8; dh * row_len];
    let mut acc = vec![0i32; row_len];
    for (y, &(start, len)) in vertical.bounds.iter().enumerate() {
        acc.fill(half);
        for (i, &w) in vertical.weights(y)[..len].iter().enumerate() {
            let row =
                &temp[(start - first_row + i) * row_len..(start - first_row + i + 1) * row_len];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += p as i32 * w;
            }
        }
        for (o, &a) in out[y * row_len..(y + 1) * row_len].iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

const PILLOW_PRECISION_BITS: u32 = 32 - 8 - 2;

fn clip8(acc: i32) -> u8 {
    (acc >> PILLOW_PRECISION_BITS).clamp(0, 255) as u8
}

/// Per output pixel: the first source pixel, how many are used, and their fixed-point weights.
struct PillowCoefficients {
    bounds: Vec<(usize, usize)>,
    kernel_size: usize,
    weights: Vec<i32>,
}

impl PillowCoefficients {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the triangle filter (support 1).
    fn new(in_size: usize, out_size: usize) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = filter_scale;
        let kernel_size = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * kernel_size];
        let mut k = vec![0f64; kernel_size];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
            let mut total = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(xmax) {
                let t = ((x + xmin) as f64 - center + 0.5) / filter_scale;
                *kx = (1.0 - t.abs()).max(0.0);
                total += *kx;
            }
            for (x, kx) in k.iter().enumerate().take(xmax) {
                let w = if total != 0.0 { kx / total } else { *kx };
                let fixed = w * (1u64 << PILLOW_PRECISION_BITS) as f64;
                weights[xx * kernel_size + x] = if w < 0.0 {
                    (fixed - 0.5) as i32
                } else {
                    (fixed + 0.5) as i32
                };
            }
            bounds.push((xmin, xmax));
        }
        Self {
            bounds,
            kernel_size,
            weights,
        }
    }

    fn weights(&self, out_index: usize) -> &[i32] {
        &self.weights[out_index * self.kernel_size..(out_index + 1) * self.kernel_size]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rounding_is_half_to_even() {
        for (v, r) in [
            (0.5, 0.0),
            (1.5, 2.0),
            (2.5, 2.0),
            (-0.5, 0.0),
            (-1.5, -2.0),
            (2.4, 2.0),
            (2.6, 3.0),
        ] {
            assert_eq!(round_half_even(v), r, "round({v})");
        }
    }

    fn numbered_frame(w: u32, h: u32) -> RgbFrame {
        let data = (0..w * h).flat_map(|i| [(i % 251) as u8, 1, 2]).collect();
        RgbFrame::new(w, h, data)
    }

    #[test]
    fn crop_inside_the_frame_copies_pixels() {
        let frame = numbered_frame(10, 8);
        let crop = SquareCrop::around(
            &FaceBox {
                x: 2.0,
                y: 1.0,
                w: 4.0,
                h: 2.0,
            },
            1.0,
        );
        assert_eq!(
            crop,
            SquareCrop {
                x: 2,
                y: 0,
                side: 4
            }
        );
        let px = crop.extract(&frame);
        assert_eq!(px.len(), 4 * 4 * 3);
        // first pixel of the crop is frame pixel (2, 0), last is (5, 3)
        assert_eq!(px[0], 2);
        assert_eq!(px[px.len() - 3], (3 * 10 + 5) as u8);
    }

    #[test]
    fn crop_past_the_frame_edges_is_zero_padded() {
        let frame = numbered_frame(10, 8);
        // a 6x6 face box in the top-left corner, crop scale 2 -> 12x12 square from (-3, -3)
        let crop = SquareCrop::around(
            &FaceBox {
                x: 0.0,
                y: 0.0,
                w: 6.0,
                h: 6.0,
            },
            2.0,
        );
        assert_eq!(
            crop,
            SquareCrop {
                x: -3,
                y: -3,
                side: 12
            }
        );
        let px = crop.extract(&frame);
        let at = |cx: usize, cy: usize| &px[(cy * 12 + cx) * 3..(cy * 12 + cx) * 3 + 3];
        assert_eq!(at(0, 0), [0, 0, 0], "outside, top-left");
        assert_eq!(at(3, 3), [0, 1, 2], "frame pixel (0, 0)");
        assert_eq!(at(11, 10), [78, 1, 2], "frame pixel (8, 7), the bottom row");
        assert_eq!(at(11, 11), [0, 0, 0], "below the frame");
    }

    #[test]
    fn crop_entirely_outside_is_black() {
        let frame = numbered_frame(10, 8);
        let crop = SquareCrop::around(
            &FaceBox {
                x: 50.0,
                y: 50.0,
                w: 4.0,
                h: 4.0,
            },
            1.0,
        );
        assert!(crop.extract(&frame).iter().all(|&b| b == 0));
    }

    #[test]
    fn frame_sizes_are_computed_in_64_bits_and_buffers_must_match_them() {
        // 16000 x 16000 x 24 bits wraps a u32 (to 231 129 088 bytes): the buffer ffmpeg-sidecar
        // once handed out for the bomb, which the detector then read past
        assert_eq!(RgbFrame::bytes_for(16000, 16000), 768_000_000);
        assert_eq!(
            (16000u32.wrapping_mul(16000).wrapping_mul(24) / 8) as u64,
            231_129_088
        );
        assert!(RgbFrame::try_new(4, 2, vec![0; 24]).is_ok());
        for (w, h, len) in [
            (4, 2, 23),
            (4, 2, 25),
            (0, 0, 0),
            (16000, 16000, 231_129_088),
        ] {
            let err = RgbFrame::try_new(w, h, vec![0; len]).unwrap_err();
            assert!(
                matches!(&err, AnalysisError::Internal(m) if m.contains(&format!("{w}x{h}"))),
                "{err:?}"
            );
            assert!(!err.is_bad_input());
        }
    }

    #[test]
    fn the_default_limits_take_every_camera_and_refuse_the_bomb() {
        let limits = FrameLimits::default();
        for (w, h) in [
            (640, 360),
            (7680, 4320),   // 8K
            (15360, 8640),  // 16K
            (14204, 10652), // a 151 MP medium-format still
            (12000, 12000),
            (12000, 400),
            (32768, 4000), // a panorama
        ] {
            assert!(limits.check(w, h).is_ok(), "{w}x{h}");
        }
        for (w, h) in [(16000, 16000), (13000, 13000), (40000, 10), (u32::MAX, 1)] {
            let err = limits.check(w, h).unwrap_err();
            assert!(
                matches!(err, AnalysisError::FrameTooLarge { width, height, .. } if (width, height) == (w, h)),
                "{w}x{h}: {err:?}"
            );
            assert!(err.is_bad_input());
        }
        assert_eq!(
            limits.check(16000, 16000).unwrap_err().to_string(),
            "the frames are 16000x16000 pixels (256.0 megapixels); the limit is 160 megapixels \
             and 32768 pixels a side: scale the video or image down and try again"
        );
        // no configuration lifts the limit past what ffmpeg-sidecar can size
        let unbounded = FrameLimits {
            max_pixels: u64::MAX,
            max_side: u32::MAX,
        };
        assert!(unbounded.check(13377, 13377).is_ok());
        assert!(matches!(
            unbounded.check(13378, 13378),
            Err(AnalysisError::FrameTooLarge { max_pixels, .. }) if max_pixels == FrameLimits::CEILING_PIXELS
        ));
    }

    #[test]
    fn grey_matches_pillow_luma() {
        assert_eq!(
            rgb_to_grey(&[255, 255, 255, 0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]),
            vec![255, 0, 76, 150, 29]
        );
    }

    #[test]
    fn pillow_resize_keeps_uniform_images_and_interpolates_gradients() {
        let out = pillow_bilinear_resize(&vec![200u8; 48 * 48], 48, 48, 1, 112, 112);
        assert!(out.iter().all(|&v| v == 200));
        // upscaling a 2-pixel ramp: Pillow gives 0 at the left edge, 255 at the right, monotonic
        let out = pillow_bilinear_resize(&[0, 255], 2, 1, 1, 4, 1);
        assert_eq!(out, vec![0, 64, 191, 255]);
        // shrinking averages: 4 pixels -> 1
        assert_eq!(
            pillow_bilinear_resize(&[0, 100, 100, 200], 4, 1, 1, 1, 1),
            vec![100]
        );
    }
}
