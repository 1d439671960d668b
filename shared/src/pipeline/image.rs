//! Pixel work: frames, crops, resizing. Resizing is Pillow-compatible (convolution bilinear with
//! antialiasing when shrinking), because the reference pipeline (validate.py) uses Pillow and the
//! parity tests hold us to it.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::FaceBox;

/// An upright RGB24 frame, rows top to bottom, no padding.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbFrame {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl RgbFrame {
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Self {
        debug_assert_eq!(data.len(), width as usize * height as usize * 3);
        Self {
            width,
            height,
            data,
        }
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
        let (x1, y1) = (bbox.x as f64, bbox.y as f64);
        let (x2, y2) = (x1 + bbox.w as f64, y1 + bbox.h as f64);
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

/// Bilinear (Pillow-style) resizing of 8-bit images with 1 or 3 channels.
pub struct ImageResizer {
    resizer: Resizer,
    options: ResizeOptions,
}

impl Default for ImageResizer {
    fn default() -> Self {
        Self {
            resizer: Resizer::new(),
            options: ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
        }
    }
}

impl ImageResizer {
    /// `channels` is 1 (grey) or 3 (RGB/BGR).
    pub fn resize(
        &mut self,
        src: &[u8],
        sw: u32,
        sh: u32,
        channels: u8,
        dw: u32,
        dh: u32,
    ) -> Vec<u8> {
        if (sw, sh) == (dw, dh) {
            return src.to_vec();
        }
        let pixel_type = if channels == 1 {
            PixelType::U8
        } else {
            PixelType::U8x3
        };
        let src_image =
            ImageRef::new(sw, sh, src, pixel_type).expect("source buffer matches its size");
        let mut dst = Image::new(dw, dh, pixel_type);
        self.resizer
            .resize(&src_image, &mut dst, &self.options)
            .expect("same pixel type on both sides");
        dst.into_vec()
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
    fn grey_matches_pillow_luma() {
        assert_eq!(
            rgb_to_grey(&[255, 255, 255, 0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]),
            vec![255, 0, 76, 150, 29]
        );
    }

    #[test]
    fn resize_shrinks_uniform_images_exactly_and_keeps_same_size_untouched() {
        let mut r = ImageResizer::default();
        let out = r.resize(&vec![77u8; 20 * 10 * 3], 20, 10, 3, 7, 3);
        assert_eq!(out.len(), 7 * 3 * 3);
        assert!(out.iter().all(|&v| v == 77));
        let src: Vec<u8> = (0..16).collect();
        assert_eq!(r.resize(&src, 4, 4, 1, 4, 4), src);
    }
}
