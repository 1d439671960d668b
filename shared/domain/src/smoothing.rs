//! Emotions over time, per person.
//!
//! The classifiers' probabilities are close to one-hot, so frame-to-frame noise flips the
//! dominant label many times a second. A face's `smoothed` scores are a Gaussian-weighted mean
//! of the same person's raw scores within ±3σ of video time around the frame: centred (no lag
//! at a change of expression), time-based (the same σ whatever the frame or sampling rate), and
//! bounded, so any reader can compute a frame's value from the frames stored around it: one pass,
//! a segmented run and a resumed run store the same raw frames and so give the same values.

use std::collections::VecDeque;

use super::{EmotionScores, FrameResult};

/// How emotions are smoothed over time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SmoothingConfig {
    /// σ of the Gaussian, in ms of video time (`DEEPEMOTION_SMOOTHING_MS`, default 1000); 0
    /// turns smoothing off (`smoothed` = `emotions`).
    ///
    /// 1 s: on the Pexels clip at every frame the main face's dominant label changes 110 times a
    /// minute raw, 15 at σ = 300 ms, 9 at 500 ms and 6 at 1 s, where it still follows the turn
    /// from crying to laughing within a second.
    pub sigma_ms: u64,
}

impl Default for SmoothingConfig {
    fn default() -> Self {
        Self { sigma_ms: 1000 }
    }
}

impl SmoothingConfig {
    /// How far (ms) a frame's value looks before and after it.
    pub fn reach_ms(&self) -> u64 {
        self.sigma_ms * 3
    }
}

/// Streams frames (in order, with `person` set) and hands them back with `smoothed` and
/// `smoothed_dominant` filled in, each as soon as every frame within reach after it has been
/// pushed. Holds only the frames within reach: memory is flat in video length.
#[derive(Debug)]
pub struct Smoother {
    config: SmoothingConfig,
    buffer: VecDeque<FrameResult>,
    /// Index in `buffer` of the first frame not handed back yet.
    pending: usize,
}

impl Smoother {
    pub fn new(config: SmoothingConfig) -> Self {
        Self {
            config,
            buffer: VecDeque::new(),
            pending: 0,
        }
    }

    /// Adds the next frame; returns the frames that are now complete.
    pub fn push(&mut self, frame: FrameResult) -> Vec<FrameResult> {
        let now = frame.t_ms;
        self.buffer.push_back(frame);
        let reach = self.config.reach_ms();
        let mut ready = Vec::new();
        while self.pending < self.buffer.len() - 1 && self.buffer[self.pending].t_ms + reach < now {
            ready.push(self.smoothed(self.pending));
            self.pending += 1;
        }
        // frames more than `reach` before the first pending one are no longer needed
        while self.pending > 0 {
            let oldest = self.buffer[0].t_ms;
            if oldest + reach < self.buffer[self.pending].t_ms {
                self.buffer.pop_front();
                self.pending -= 1;
            } else {
                break;
            }
        }
        ready
    }

    /// The remaining frames, once the last one has been pushed.
    pub fn finish(self) -> Vec<FrameResult> {
        (self.pending..self.buffer.len())
            .map(|i| self.smoothed(i))
            .collect()
    }

    fn smoothed(&self, index: usize) -> FrameResult {
        let mut frame = self.buffer[index].clone();
        let t = frame.t_ms as f64;
        let reach = self.config.reach_ms() as f64;
        let sigma = self.config.sigma_ms as f64;
        for face in &mut frame.faces {
            let Some(person) = face.person else { continue };
            if sigma == 0.0 {
                face.smoothed = Some(face.emotions);
                face.smoothed_dominant = Some(face.dominant);
                continue;
            }
            let mut sum = [0f64; 8];
            let mut weights = 0f64;
            for other in &self.buffer {
                let dt = other.t_ms as f64 - t;
                if dt.abs() > reach {
                    continue;
                }
                let w = (-0.5 * (dt / sigma).powi(2)).exp();
                for f in other.faces.iter().filter(|f| f.person == Some(person)) {
                    weights += w;
                    for (s, v) in sum.iter_mut().zip(f.emotions.values()) {
                        *s += w * f64::from(*v);
                    }
                }
            }
            let scores = EmotionScores::from_values(
                sum.map(|s| (s / weights.max(f64::MIN_POSITIVE)) as f32),
                face.emotions.has_contempt(),
            );
            face.smoothed_dominant = Some(scores.dominant());
            face.smoothed = Some(scores);
        }
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EmotionLabel, FaceBox, FaceResult, Landmarks};
    use EmotionLabel::*;

    fn face(person: u32, label: EmotionLabel) -> FaceResult {
        let mut emotions = EmotionScores::new(false);
        emotions.set(label, 1.0);
        FaceResult {
            track: person,
            person: Some(person),
            bbox: FaceBox::default(),
            score: 0.9,
            landmarks: Landmarks::default(),
            dominant: label,
            emotions,
            smoothed: None,
            smoothed_dominant: None,
        }
    }

    fn run(config: SmoothingConfig, frames: Vec<FrameResult>) -> Vec<FrameResult> {
        let mut s = Smoother::new(config);
        let mut out: Vec<FrameResult> = frames.into_iter().flat_map(|f| s.push(f)).collect();
        out.extend(s.finish());
        out
    }

    /// Sad for 4 s with one happy frame every half second, then happy for 4 s.
    fn noisy(fps: u64) -> Vec<FrameResult> {
        labelled(fps, true)
    }

    fn labelled(fps: u64, noise: bool) -> Vec<FrameResult> {
        let step = 1000 / fps;
        (0..8 * fps)
            .map(|i| {
                let t = i * step;
                let label = if t < 4000 {
                    if noise && i % (fps / 2) == 3 {
                        Happy
                    } else {
                        Sad
                    }
                } else {
                    Happy
                };
                FrameResult {
                    frame: i,
                    t_ms: t,
                    faces: vec![face(1, label)],
                }
            })
            .collect()
    }

    fn dominants(frames: &[FrameResult]) -> Vec<EmotionLabel> {
        frames
            .iter()
            .map(|f| f.faces[0].smoothed_dominant.unwrap())
            .collect()
    }

    #[test]
    fn isolated_flips_vanish_and_a_real_change_is_kept() {
        let out = run(SmoothingConfig::default(), noisy(25));
        assert_eq!(out.len(), 200, "every frame comes back once");
        assert!(out.windows(2).all(|w| w[0].frame + 1 == w[1].frame));
        let d = dominants(&out);
        let changes = d.windows(2).filter(|w| w[0] != w[1]).count();
        assert_eq!(changes, 1, "{d:?}");
        // raw labels and scores are left as they were
        assert_eq!(out[3].faces[0].dominant, Happy);
        assert_eq!(d[3], Sad);
        assert_eq!(d[199], Happy);
        let s = out[3].faces[0].smoothed.unwrap();
        assert!((s.get(Sad) + s.get(Happy) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn the_same_video_time_gives_the_same_values_at_any_frame_rate() {
        let at = |fps| {
            let out = run(SmoothingConfig::default(), labelled(fps, false));
            let i = out.iter().position(|f| f.t_ms == 4600).unwrap();
            out[i].faces[0].smoothed.unwrap().get(Happy)
        };
        // 0.6 s into the happy stretch, σ = 1 s: ≈ Φ(0.6) = 0.73 of the weight is after the change
        let (a, b) = (at(25), at(50));
        assert!((a - b).abs() < 0.01, "{a} vs {b}");
        assert!((0.68..0.78).contains(&a), "{a}");
    }

    #[test]
    fn people_are_smoothed_separately_and_faces_without_a_person_are_left_alone() {
        let frames: Vec<FrameResult> = (0..50)
            .map(|i| {
                let mut unknown = face(9, Fear);
                unknown.person = None;
                FrameResult {
                    frame: i,
                    t_ms: i * 40,
                    faces: vec![face(1, Sad), face(2, Happy), unknown],
                }
            })
            .collect();
        let out = run(SmoothingConfig::default(), frames);
        for f in &out {
            assert_eq!(f.faces[0].smoothed_dominant, Some(Sad));
            assert_eq!(f.faces[1].smoothed_dominant, Some(Happy));
            assert_eq!(f.faces[2].smoothed, None);
        }
    }

    #[test]
    fn a_frame_depends_only_on_frames_within_reach() {
        let all = run(SmoothingConfig::default(), noisy(25));
        // start reading mid-video with exactly `reach` of context before: same values
        let reach = SmoothingConfig::default().reach_ms();
        let first = 100; // t = 4000
        let context: Vec<FrameResult> = noisy(25)
            .into_iter()
            .filter(|f| f.t_ms + reach >= 4000)
            .collect();
        let out = run(SmoothingConfig::default(), context);
        let mine = out.iter().find(|f| f.frame == first).unwrap();
        assert_eq!(
            mine.faces[0].smoothed,
            all[first as usize].faces[0].smoothed
        );
    }

    #[test]
    fn zero_sigma_turns_smoothing_off() {
        let out = run(SmoothingConfig { sigma_ms: 0 }, noisy(25));
        assert!(
            out.iter()
                .all(|f| f.faces[0].smoothed == Some(f.faces[0].emotions))
        );
    }
}
