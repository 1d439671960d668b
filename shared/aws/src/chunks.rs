//! Frame results as DynamoDB keeps them: the frames of [`FRAMES_PER_CHUNK`] consecutive frame
//! numbers in one item (a chunk), in a compact binary encoding instead of JSON.
//!
//! DynamoDB charges a write unit per started KB of every item written, so one ~400-byte JSON
//! item per analysed frame cost a write unit each (300 a minute of video at 5 fps). A chunk
//! holds every analysed frame of about 10 s of a 30 fps video, at about 35 bytes a face, so a
//! minute costs a few items of a few KB.
//!
//! The encoding (version 1) is lossless for everything the API shows: boxes and landmarks are
//! kept in tenths of a pixel, scores in 1e-4 and probabilities in 1e-6, which is exactly what
//! the JSON of a [`FrameResult`] rounds them to, so a decoded frame serialises to the same JSON
//! as the frame that was encoded.
//!
//! ```text
//! blob   = version (1 byte) · frame count (varint) · frame*
//! frame  = frame number − previous (varint; the first: absolute) · t_ms − previous (zigzag) ·
//!          face count (varint) · face*
//! face   = track (varint) · flags (1 byte: bits 0–2 dominant, 3 contempt, 4 person,
//!          5 smoothed, 6 smoothed_dominant) · [person (varint)] ·
//!          box x, y, w, h (4 zigzag, tenths of a pixel) ·
//!          landmarks (10 zigzag: tenths of a pixel from the box's corner) ·
//!          10000 − score·1e4 (zigzag) · emotions · [smoothed] · [smoothed_dominant (1 byte)]
//! scores = one zigzag per label in canonical order (7, or 8 with contempt), probability·1e6;
//!          the dominant label's as its difference from 1e6 − the others' sum
//! ```
//!
//! Box and landmark numbers are differences from the same track's previous face in the blob
//! (faces move little between analysed frames), so most take one byte. Probabilities sum to
//! one, so the dominant one, the largest, costs a byte instead of three.

use std::collections::HashMap;

use domain::{EmotionLabel, EmotionScores, FaceBox, FaceResult, FrameResult, Landmarks};

/// Frame numbers per chunk: 10 s of a 30 fps video (12 s at 25 fps, 5 s at 60 fps). Analysis
/// picks frames by stream time (5 a second by default), so a chunk holds about 50 analysed
/// frames, a few KB, whatever the source's frame rate within a factor of two.
pub const FRAMES_PER_CHUNK: u64 = 300;

/// A chunk's encoded frames are split into parts of at most this many bytes (every frame
/// analysed in a crowd: a chunk of 300 frames of 20 faces is about 210 KB), so that an item stays
/// far below DynamoDB's 400 KB limit and a rewrite, charged by the whole item, stays cheap.
pub const PART_BYTES: usize = 64 * 1024;

/// One frame alone larger than this cannot be stored (DynamoDB's limit is 400 KB an item, keys
/// and attribute names included): about 10,000 faces in one frame.
pub const MAX_FRAME_BYTES: usize = 384 * 1024;

/// The encoding written now; the first byte of every blob.
const VERSION: u8 = 1;

/// The fewest bytes a frame takes (number, time, face count) and a face takes (track, flags,
/// 4 box numbers, 10 landmark numbers, score, 7 probabilities): counts in a blob larger than
/// its bytes could hold are refused before anything is allocated for them.
const MIN_FRAME_BYTES: usize = 3;
const MIN_FACE_BYTES: usize = 24;

/// Why a blob could not be written or read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CodecError {
    #[error("empty blob")]
    Empty,
    #[error("unknown encoding version {0}")]
    Version(u8),
    #[error("cut short at byte {0}")]
    Truncated(usize),
    #[error("corrupt at byte {at}: {what}")]
    Corrupt { at: usize, what: &'static str },
    #[error("frame {frame}: {what} is {value}, which cannot be stored")]
    Unstorable {
        frame: u64,
        what: &'static str,
        value: f64,
    },
    #[error("frames must be in increasing order of frame number (frame {0})")]
    Order(u64),
    #[error("frame {frame} alone takes {bytes} bytes, more than an item can hold")]
    FrameTooLarge { frame: u64, bytes: usize },
}

/// The chunk a frame belongs to.
pub fn chunk_of(frame: u64) -> u64 {
    frame / FRAMES_PER_CHUNK
}

/// The frames of one part of a chunk, encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub blob: Vec<u8>,
    pub first: u64,
    pub last: u64,
}

/// Encodes `frames` (in increasing order of frame number, each once) into one blob.
pub fn encode(frames: &[FrameResult]) -> Result<Vec<u8>, CodecError> {
    let mut parts = encode_parts(frames, usize::MAX)?;
    Ok(parts.pop().map_or_else(|| header(0), |p| p.blob))
}

/// Encodes `frames` (in increasing order of frame number, each once) into as few blobs of at
/// most `max_bytes` as a greedy split gives; a single frame larger than that gets a blob of its
/// own, up to [`MAX_FRAME_BYTES`].
pub fn encode_parts(frames: &[FrameResult], max_bytes: usize) -> Result<Vec<Part>, CodecError> {
    let mut parts = Vec::new();
    let mut body = Vec::new();
    let mut tracks = Tracks::default();
    // the part's frames so far, its first, and the last frame (number, time) coded in it
    let mut count = 0u64;
    let mut first = 0;
    let mut last: Option<(u64, u64)> = None;
    for frame in frames {
        if last.is_some_and(|(n, _)| frame.frame <= n) {
            return Err(CodecError::Order(frame.frame));
        }
        let mark = body.len();
        put_frame(&mut body, frame, last.filter(|_| count > 0), &mut tracks)?;
        if count > 0 && HEADER_BYTES + body.len() > max_bytes {
            // close the part without this frame, and start the next one with it
            body.truncate(mark);
            parts.push(finish(&body, count, first, last.map_or(first, |l| l.0)));
            body.clear();
            tracks.clear();
            count = 0;
            put_frame(&mut body, frame, None, &mut tracks)?;
        }
        let start = if count == 0 { 0 } else { mark };
        if body.len() - start > MAX_FRAME_BYTES {
            return Err(CodecError::FrameTooLarge {
                frame: frame.frame,
                bytes: body.len() - start,
            });
        }
        if count == 0 {
            first = frame.frame;
        }
        count += 1;
        last = Some((frame.frame, frame.t_ms));
    }
    if count > 0 {
        parts.push(finish(&body, count, first, last.map_or(first, |l| l.0)));
    }
    Ok(parts)
}

/// The most bytes a header (version and a frame count) takes.
const HEADER_BYTES: usize = 1 + 10;

fn header(count: u64) -> Vec<u8> {
    let mut blob = vec![VERSION];
    put_varint(&mut blob, count);
    blob
}

fn finish(body: &[u8], count: u64, first: u64, last: u64) -> Part {
    let mut blob = header(count);
    blob.extend_from_slice(body);
    Part { blob, first, last }
}

/// What the next face of a track is coded against: its previous box and landmarks (relative
/// to that box), in tenths of a pixel.
#[derive(Debug, Clone, Copy, Default)]
struct Previous {
    bbox: [i64; 4],
    landmarks: [i64; 10],
}

type Tracks = HashMap<u32, Previous>;

fn put_frame(
    out: &mut Vec<u8>,
    frame: &FrameResult,
    previous: Option<(u64, u64)>,
    tracks: &mut Tracks,
) -> Result<(), CodecError> {
    let (n0, t0) = previous.unwrap_or((0, 0));
    put_varint(out, frame.frame - n0);
    let dt = i64::try_from(i128::from(frame.t_ms) - i128::from(t0)).map_err(|_| {
        CodecError::Unstorable {
            frame: frame.frame,
            what: "the time after the previous frame's",
            value: frame.t_ms as f64,
        }
    })?;
    put_zigzag(out, dt);
    put_varint(out, frame.faces.len() as u64);
    for face in &frame.faces {
        put_face(out, frame.frame, face, tracks)?;
    }
    Ok(())
}

/// `value` in units of `1 / scale`, rounded as the JSON output rounds it.
fn quantize(frame: u64, what: &'static str, value: f64, scale: f64) -> Result<i64, CodecError> {
    let q = (value * scale).round();
    // beyond 2^53 a double no longer holds every integer: the value would not read back
    if !q.is_finite() || q.abs() > 9_007_199_254_740_992.0 {
        return Err(CodecError::Unstorable { frame, what, value });
    }
    Ok(q as i64)
}

fn put_face(
    out: &mut Vec<u8>,
    frame: u64,
    face: &FaceResult,
    tracks: &mut Tracks,
) -> Result<(), CodecError> {
    put_varint(out, u64::from(face.track));
    let flags = face.dominant.index() as u8
        | u8::from(face.emotions.has_contempt()) << 3
        | u8::from(face.person.is_some()) << 4
        | u8::from(face.smoothed.is_some()) << 5
        | u8::from(face.smoothed_dominant.is_some()) << 6;
    out.push(flags);
    if let Some(person) = face.person {
        put_varint(out, u64::from(person));
    }
    let FaceBox { x, y, w, h } = face.bbox;
    let mut bbox = [0; 4];
    for (q, v) in bbox.iter_mut().zip([x, y, w, h]) {
        *q = quantize(frame, "a box coordinate", v, 10.0)?;
    }
    let mut landmarks = [0; 10];
    for (i, q) in landmarks.iter_mut().enumerate() {
        let v = f64::from(face.landmarks.0[i / 2][i % 2]);
        *q = quantize(frame, "a landmark coordinate", v, 10.0)? - bbox[i % 2];
    }
    let previous = tracks.get(&face.track).copied().unwrap_or_default();
    for (q, p) in bbox.iter().zip(previous.bbox) {
        put_zigzag(out, q - p);
    }
    for (q, p) in landmarks.iter().zip(previous.landmarks) {
        put_zigzag(out, q - p);
    }
    tracks.insert(face.track, Previous { bbox, landmarks });
    let score = quantize(frame, "a score", f64::from(face.score), 1e4)?;
    put_zigzag(out, 10_000 - score);
    put_scores(out, frame, &face.emotions, Some(face.dominant))?;
    if let Some(smoothed) = &face.smoothed {
        out.push(u8::from(smoothed.has_contempt()));
        put_scores(out, frame, smoothed, None)?;
    }
    if let Some(label) = face.smoothed_dominant {
        out.push(label.index() as u8);
    }
    Ok(())
}

/// Probabilities in millionths, each once, but `residual`'s label's as what the others leave of
/// 1e6 (a label missing from the set, e.g. contempt without the class, has no residual).
fn put_scores(
    out: &mut Vec<u8>,
    frame: u64,
    scores: &EmotionScores,
    residual: Option<EmotionLabel>,
) -> Result<(), CodecError> {
    let mut values = Vec::with_capacity(8);
    for (label, p) in scores.iter() {
        values.push((label, quantize(frame, "a probability", f64::from(p), 1e6)?));
    }
    let residual = residual.filter(|r| values.iter().any(|(l, _)| l == r));
    let others: i64 = values
        .iter()
        .filter(|(l, _)| Some(*l) != residual)
        .map(|(_, q)| q)
        .sum();
    for (label, q) in values {
        if Some(label) == residual {
            put_zigzag(out, q - (1_000_000 - others));
        } else {
            put_zigzag(out, q);
        }
    }
    Ok(())
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Signed numbers interleaved (0, -1, 1, -2, ...) so that small ones of either sign are short.
/// Quantized values are below 2^53 (see `quantize`), so their sums and differences here fit.
fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Decodes a blob made by [`encode`] or [`encode_parts`]; anything else is refused with an
/// error, never a panic, and without allocating more than the blob's size implies.
pub fn decode(blob: &[u8]) -> Result<Vec<FrameResult>, CodecError> {
    let (&version, _) = blob.split_first().ok_or(CodecError::Empty)?;
    if version != VERSION {
        return Err(CodecError::Version(version));
    }
    let mut r = Reader { blob, at: 1 };
    let count = r.count(MIN_FRAME_BYTES)?;
    let mut frames = Vec::with_capacity(count);
    let mut tracks = Tracks::default();
    let (mut n, mut t) = (0u64, 0u64);
    for i in 0..count {
        let delta = r.varint()?;
        if i > 0 && delta == 0 {
            return r.corrupt("a frame number repeats");
        }
        n = n
            .checked_add(delta)
            .ok_or(r.error("frame number overflow"))?;
        t = t
            .checked_add_signed(r.zigzag()?)
            .ok_or(r.error("time out of range"))?;
        let faces = r.count(MIN_FACE_BYTES)?;
        let mut frame = FrameResult {
            frame: n,
            t_ms: t,
            faces: Vec::with_capacity(faces),
        };
        for _ in 0..faces {
            frame.faces.push(r.face(&mut tracks)?);
        }
        frames.push(frame);
    }
    if r.at != blob.len() {
        return r.corrupt("bytes after the last frame");
    }
    Ok(frames)
}

struct Reader<'a> {
    blob: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn error(&self, what: &'static str) -> CodecError {
        CodecError::Corrupt { at: self.at, what }
    }

    fn corrupt<T>(&self, what: &'static str) -> Result<T, CodecError> {
        Err(self.error(what))
    }

    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self
            .blob
            .get(self.at)
            .ok_or(CodecError::Truncated(self.at))?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                return self.corrupt("varint overflow");
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        self.corrupt("varint too long")
    }

    fn zigzag(&mut self) -> Result<i64, CodecError> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// A count of things of at least `min_bytes` each, refused when the rest of the blob could
    /// not hold them.
    fn count(&mut self, min_bytes: usize) -> Result<usize, CodecError> {
        let n = self.varint()?;
        let left = (self.blob.len() - self.at) as u64;
        if n > left / min_bytes as u64 {
            return self.corrupt("a count larger than the blob");
        }
        Ok(n as usize)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, CodecError> {
        let v = self.varint()?;
        u32::try_from(v).map_err(|_| self.error(what))
    }

    fn label(&mut self, index: u8) -> Result<EmotionLabel, CodecError> {
        EmotionLabel::ALL
            .get(usize::from(index))
            .copied()
            .ok_or(self.error("unknown emotion label"))
    }

    fn face(&mut self, tracks: &mut Tracks) -> Result<FaceResult, CodecError> {
        let track = self.u32("track out of range")?;
        let flags = self.byte()?;
        if flags & 0x80 != 0 {
            return self.corrupt("unknown face flags");
        }
        let dominant = self.label(flags & 0x07)?;
        let person = if flags & 0x10 != 0 {
            Some(self.u32("person out of range")?)
        } else {
            None
        };
        let previous = tracks.get(&track).copied().unwrap_or_default();
        let mut bbox = [0i64; 4];
        for (q, p) in bbox.iter_mut().zip(previous.bbox) {
            *q = self.plus(p)?;
        }
        let mut landmarks = [0i64; 10];
        for (q, p) in landmarks.iter_mut().zip(previous.landmarks) {
            *q = self.plus(p)?;
        }
        tracks.insert(track, Previous { bbox, landmarks });
        let mut points = [[0f32; 2]; 5];
        for (i, q) in landmarks.iter().enumerate() {
            let absolute = q
                .checked_add(bbox[i % 2])
                .ok_or(self.error("landmark out of range"))?;
            points[i / 2][i % 2] = (absolute as f64 / 10.0) as f32;
        }
        let score = 10_000i64
            .checked_sub(self.zigzag()?)
            .ok_or(self.error("score out of range"))?;
        let emotions = self.scores(flags & 0x08 != 0, Some(dominant))?;
        let smoothed = if flags & 0x20 != 0 {
            let contempt = match self.byte()? {
                0 => false,
                1 => true,
                _ => return self.corrupt("unknown smoothed flags"),
            };
            Some(self.scores(contempt, None)?)
        } else {
            None
        };
        let smoothed_dominant = if flags & 0x40 != 0 {
            let index = self.byte()?;
            Some(self.label(index)?)
        } else {
            None
        };
        let [x, y, w, h] = bbox.map(|q| q as f64 / 10.0);
        Ok(FaceResult {
            track,
            person,
            bbox: FaceBox { x, y, w, h },
            score: (score as f64 / 1e4) as f32,
            landmarks: Landmarks(points),
            emotions,
            dominant,
            smoothed,
            smoothed_dominant,
        })
    }

    /// The next zigzag number added to `base`.
    fn plus(&mut self, base: i64) -> Result<i64, CodecError> {
        let delta = self.zigzag()?;
        base.checked_add(delta)
            .ok_or(self.error("coordinate out of range"))
    }

    fn scores(
        &mut self,
        contempt: bool,
        residual: Option<EmotionLabel>,
    ) -> Result<EmotionScores, CodecError> {
        let labels: Vec<EmotionLabel> = EmotionScores::new(contempt).labels().collect();
        let residual = residual.filter(|r| labels.contains(r));
        let mut values = Vec::with_capacity(labels.len());
        for _ in &labels {
            values.push(i128::from(self.zigzag()?));
        }
        let others: i128 = labels
            .iter()
            .zip(&values)
            .filter(|(l, _)| Some(**l) != residual)
            .map(|(_, q)| q)
            .sum();
        let mut scores = EmotionScores::new(contempt);
        for (label, q) in labels.into_iter().zip(values) {
            let q = if Some(label) == residual {
                q + (1_000_000 - others)
            } else {
                q
            };
            scores.set(label, (q as f64 / 1e6) as f32);
        }
        Ok(scores)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Frames the engine gave for the Pexels clip (`deepemotion analyze`, 5 fps: one face,
    /// with `person` and `smoothed` as a finished analysis reads them).
    pub(crate) fn pexels() -> Vec<FrameResult> {
        #[derive(serde::Deserialize)]
        struct Report {
            frames: Vec<FrameResult>,
        }
        let report: Report =
            serde_json::from_str(include_str!("testdata/pexels_frames.json")).unwrap();
        report.frames
    }

    /// The frames as the pipeline stores them: raw, before people are linked.
    pub(crate) fn raw(frames: &[FrameResult]) -> Vec<FrameResult> {
        let mut frames = frames.to_vec();
        for face in frames.iter_mut().flat_map(|f| &mut f.faces) {
            face.person = None;
            face.smoothed = None;
            face.smoothed_dominant = None;
        }
        frames
    }

    /// A minute of video at 5 fps (frames 6 apart, as from a 30 fps source) with 1–3 faces:
    /// the Pexels faces, with a second and third person made of later frames' faces shifted
    /// across the picture.
    pub(crate) fn crowd_minute(first: u64, faces: impl Fn(usize) -> usize) -> Vec<FrameResult> {
        let source = raw(&pexels());
        (0..300)
            .map(|i| {
                let n = source.len();
                let mut frame = FrameResult {
                    frame: first + i as u64 * 6,
                    t_ms: (first + i as u64 * 6) * 1000 / 30,
                    faces: Vec::new(),
                };
                for k in 0..faces(i) {
                    let mut face = source[(i + 17 * k) % n].faces[0].clone();
                    face.track = k as u32 + 1;
                    face.bbox.x += 700.0 * k as f64;
                    for p in &mut face.landmarks.0 {
                        p[0] += 700.0 * k as f32;
                    }
                    frame.faces.push(face);
                }
                frame
            })
            .collect()
    }

    fn json(frames: &[FrameResult]) -> String {
        serde_json::to_string(frames).unwrap()
    }

    #[test]
    fn real_frames_read_back_as_the_same_json() {
        for frames in [pexels(), raw(&pexels())] {
            let blob = encode(&frames).unwrap();
            assert_eq!(json(&decode(&blob).unwrap()), json(&frames));
        }
        assert_eq!(decode(&encode(&[]).unwrap()).unwrap(), vec![]);
    }

    #[test]
    fn a_face_frame_takes_about_thirty_five_bytes() {
        let frames = raw(&pexels());
        let faces: usize = frames.iter().map(|f| f.faces.len()).sum();
        let bytes = encode(&frames).unwrap().len();
        let per_face = bytes as f64 / faces as f64;
        eprintln!("{bytes} bytes for {faces} face-frames: {per_face:.1} bytes each");
        assert!(per_face < 45.0, "{per_face:.1} bytes a face-frame");
        let json_bytes: usize = frames
            .iter()
            .map(|f| serde_json::to_string(f).unwrap().len())
            .sum();
        assert!(
            bytes * 8 < json_bytes,
            "{bytes} vs {json_bytes} bytes of JSON"
        );
    }

    /// Odd values still read back as the same JSON: contempt, no person, a label without its
    /// class, negative coordinates, probabilities that do not sum to one, big times.
    #[test]
    fn unusual_frames_read_back_as_the_same_json() {
        let mut frames = pexels();
        let mut odd = frames[3].clone();
        odd.frame = 1_000_000_007;
        odd.t_ms = 3;
        let mut face = odd.faces[0].clone();
        face.track = u32::MAX;
        face.person = None;
        face.bbox = FaceBox {
            x: -12.34,
            y: 1e7 + 0.05,
            w: 0.0,
            h: 32768.0,
        };
        face.landmarks.0[2] = [-5.55, 99999.95];
        face.score = 1.5;
        face.emotions.set(EmotionLabel::Contempt, 0.25);
        face.emotions.set(EmotionLabel::Happy, 0.123_456_7);
        face.dominant = EmotionLabel::Contempt;
        face.smoothed = Some(EmotionScores::new(false));
        face.smoothed_dominant = Some(EmotionLabel::Contempt);
        odd.faces.push(face.clone());
        face.dominant = EmotionLabel::Contempt;
        face.emotions = EmotionScores::new(false);
        odd.faces.push(face);
        frames.push(odd);
        frames.push(FrameResult {
            frame: u64::MAX,
            t_ms: i64::MAX as u64,
            faces: vec![],
        });
        let blob = encode(&frames).unwrap();
        assert_eq!(json(&decode(&blob).unwrap()), json(&frames));
    }

    #[test]
    fn values_that_cannot_read_back_are_refused_when_written() {
        let mut frames = raw(&pexels());
        frames[2].faces[0].score = f32::NAN;
        assert!(matches!(
            encode(&frames),
            Err(CodecError::Unstorable {
                what: "a score",
                ..
            })
        ));
        let mut frames = raw(&pexels());
        frames[2].faces[0].bbox.x = 1e300;
        assert!(matches!(
            encode(&frames),
            Err(CodecError::Unstorable { .. })
        ));
        let mut frames = raw(&pexels());
        frames.swap(1, 2);
        assert_eq!(encode(&frames), Err(CodecError::Order(frames[2].frame)));
    }

    #[test]
    fn parts_split_by_size_and_read_back_in_order() {
        let frames = crowd_minute(0, |_| 3);
        let parts = encode_parts(&frames, 2000).unwrap();
        assert!(parts.len() > 5, "{}", parts.len());
        let mut back = Vec::new();
        for part in &parts {
            assert!(part.blob.len() <= 2000, "{}", part.blob.len());
            let decoded = decode(&part.blob).unwrap();
            assert_eq!(
                (decoded[0].frame, decoded.last().unwrap().frame),
                (part.first, part.last)
            );
            back.extend(decoded);
        }
        assert_eq!(json(&back), json(&frames));
        // a frame larger than a part gets a part of its own
        let parts = encode_parts(&frames[..4], 10).unwrap();
        assert_eq!(parts.len(), 4);
    }

    /// Every cut, flipped bit, wrong count and trailing byte gives an error or other frames,
    /// never a panic or a huge allocation.
    #[test]
    fn corrupt_blobs_are_errors_not_panics() {
        let blob = encode(&pexels()[..5]).unwrap();
        assert_eq!(decode(&[]), Err(CodecError::Empty));
        assert_eq!(decode(&[7, 0]), Err(CodecError::Version(7)));
        for cut in 1..blob.len() {
            assert!(decode(&blob[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = blob.clone();
        longer.push(0);
        assert!(matches!(decode(&longer), Err(CodecError::Corrupt { .. })));
        for i in 1..blob.len() {
            for bit in 0..8 {
                let mut flipped = blob.clone();
                flipped[i] ^= 1 << bit;
                let _ = decode(&flipped);
            }
        }
        // a count of 2^63 frames in a few bytes
        let mut huge = vec![VERSION];
        put_varint(&mut huge, 1 << 63);
        assert!(matches!(decode(&huge), Err(CodecError::Corrupt { .. })));
        // an endless varint
        assert!(
            decode(&[
                VERSION, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
            ])
            .is_err()
        );
    }
}
