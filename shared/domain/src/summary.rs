use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{EmotionLabel, EmotionScores, FrameResult};

/// What a whole video showed. Built incrementally, so it costs O(tracks + seconds), never
/// O(frames).
///
/// A frame's emotion is the mean over the faces in it; `mean` averages that over the frames with
/// faces, and `distribution` is the share of those frames in which each label dominates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub frames_analyzed: u64,
    pub frames_with_faces: u64,
    /// Label with the highest mean probability; `None` when no face was seen.
    pub dominant: Option<EmotionLabel>,
    pub distribution: EmotionScores,
    pub mean: EmotionScores,
    pub tracks: Vec<TrackSummary>,
    /// Tracks linked into people (see `domain::people`), over the smoothed emotions: this is
    /// also where the video's track → person map is stored. Empty until the analysis has
    /// finished, and in results stored before people existed.
    #[serde(default)]
    pub people: Vec<PersonSummary>,
    /// The σ (ms) the people's emotions were smoothed with; readers smooth frames with it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoothing_ms: Option<u64>,
    /// One entry per second of video that had at least one face.
    pub timeline: Vec<TimelineEntry>,
}

/// One person (track) over the video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackSummary {
    pub track: u32,
    pub first_ms: u64,
    pub last_ms: u64,
    pub frames: u64,
    pub dominant: EmotionLabel,
    pub distribution: EmotionScores,
    pub mean: EmotionScores,
}

/// One person over the video: `mean`, `distribution` and `dominant` are over the person's
/// smoothed emotions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonSummary {
    pub person: u32,
    pub tracks: Vec<u32>,
    pub first_ms: u64,
    pub last_ms: u64,
    pub frames: u64,
    pub dominant: EmotionLabel,
    pub distribution: EmotionScores,
    pub mean: EmotionScores,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub second: u64,
    /// Frames with faces in this second.
    pub frames: u64,
    pub mean: EmotionScores,
}

#[derive(Debug, Default, Clone)]
struct Accumulator {
    frames: u64,
    sum: [f64; 8],
    dominant_counts: [u64; 8],
}

impl Accumulator {
    fn add(&mut self, scores: &EmotionScores) {
        self.frames += 1;
        for (s, v) in self.sum.iter_mut().zip(scores.values()) {
            *s += *v as f64;
        }
        self.dominant_counts[scores.dominant().index()] += 1;
    }

    fn mean(&self, has_contempt: bool) -> EmotionScores {
        let n = self.frames.max(1) as f64;
        EmotionScores::from_values(self.sum.map(|s| (s / n) as f32), has_contempt)
    }

    fn distribution(&self, has_contempt: bool) -> EmotionScores {
        let n = self.frames.max(1) as f64;
        EmotionScores::from_values(
            self.dominant_counts.map(|c| (c as f64 / n) as f32),
            has_contempt,
        )
    }
}

/// One track's or one person's frames: when they were seen and what they showed.
#[derive(Debug, Default, Clone)]
struct TrackAccumulator {
    first_ms: u64,
    last_ms: u64,
    stats: Accumulator,
}

impl TrackAccumulator {
    fn starting_at(t_ms: u64) -> Self {
        Self {
            first_ms: t_ms,
            last_ms: t_ms,
            stats: Accumulator::default(),
        }
    }

    fn add(&mut self, t_ms: u64, scores: &EmotionScores) {
        self.last_ms = t_ms;
        self.stats.add(scores);
    }

    fn finish(&self, has_contempt: bool) -> Span {
        let mean = self.stats.mean(has_contempt);
        Span {
            first_ms: self.first_ms,
            last_ms: self.last_ms,
            frames: self.stats.frames,
            dominant: mean.dominant(),
            distribution: self.stats.distribution(has_contempt),
            mean,
        }
    }
}

/// What [`TrackSummary`] and [`PersonSummary`] share.
struct Span {
    first_ms: u64,
    last_ms: u64,
    frames: u64,
    dominant: EmotionLabel,
    distribution: EmotionScores,
    mean: EmotionScores,
}

/// Folds frame results into a [`Summary`].
#[derive(Debug, Default)]
pub struct SummaryBuilder {
    has_contempt: bool,
    frames_analyzed: u64,
    overall: Accumulator,
    tracks: BTreeMap<u32, TrackAccumulator>,
    people: BTreeMap<u32, (TrackAccumulator, std::collections::BTreeSet<u32>)>,
    seconds: BTreeMap<u64, Accumulator>,
}

impl SummaryBuilder {
    /// `has_contempt`: whether the classifier reports contempt (it then appears in every map).
    pub fn new(has_contempt: bool) -> Self {
        Self {
            has_contempt,
            ..Default::default()
        }
    }

    pub fn add(&mut self, frame: &FrameResult) {
        self.frames_analyzed += 1;
        if frame.faces.is_empty() {
            return;
        }
        let mut sum = [0f32; 8];
        for face in &frame.faces {
            for (s, v) in sum.iter_mut().zip(face.emotions.values()) {
                *s += v;
            }
            self.tracks
                .entry(face.track)
                .or_insert_with(|| TrackAccumulator::starting_at(frame.t_ms))
                .add(frame.t_ms, &face.emotions);
            if let (Some(person), Some(smoothed)) = (face.person, &face.smoothed) {
                let (acc, tracks) = self.people.entry(person).or_insert_with(|| {
                    (
                        TrackAccumulator::starting_at(frame.t_ms),
                        Default::default(),
                    )
                });
                acc.add(frame.t_ms, smoothed);
                tracks.insert(face.track);
            }
        }
        let n = frame.faces.len() as f32;
        let frame_scores = EmotionScores::from_values(sum.map(|s| s / n), self.has_contempt);
        self.overall.add(&frame_scores);
        self.seconds
            .entry(frame.t_ms / 1000)
            .or_default()
            .add(&frame_scores);
    }

    pub fn finish(self) -> Summary {
        let has_contempt = self.has_contempt;
        let mean = self.overall.mean(has_contempt);
        Summary {
            frames_analyzed: self.frames_analyzed,
            frames_with_faces: self.overall.frames,
            dominant: (self.overall.frames > 0).then(|| mean.dominant()),
            distribution: self.overall.distribution(has_contempt),
            mean,
            tracks: self
                .tracks
                .into_iter()
                .map(|(track, acc)| {
                    let span = acc.finish(has_contempt);
                    TrackSummary {
                        track,
                        first_ms: span.first_ms,
                        last_ms: span.last_ms,
                        frames: span.frames,
                        dominant: span.dominant,
                        distribution: span.distribution,
                        mean: span.mean,
                    }
                })
                .collect(),
            people: self
                .people
                .into_iter()
                .map(|(person, (acc, tracks))| {
                    let span = acc.finish(has_contempt);
                    PersonSummary {
                        person,
                        tracks: tracks.into_iter().collect(),
                        first_ms: span.first_ms,
                        last_ms: span.last_ms,
                        frames: span.frames,
                        dominant: span.dominant,
                        distribution: span.distribution,
                        mean: span.mean,
                    }
                })
                .collect(),
            smoothing_ms: None,
            timeline: self
                .seconds
                .into_iter()
                .map(|(second, acc)| TimelineEntry {
                    second,
                    frames: acc.frames,
                    mean: acc.mean(has_contempt),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FaceBox, FaceResult, Landmarks};
    use EmotionLabel::*;

    fn face(track: u32, probs: &[(EmotionLabel, f32)]) -> FaceResult {
        let mut emotions = EmotionScores::new(false);
        for (l, p) in probs {
            emotions.set(*l, *p);
        }
        FaceResult {
            track,
            person: None,
            smoothed: None,
            smoothed_dominant: None,
            bbox: FaceBox {
                x: 0.0,
                y: 0.0,
                w: 10.0,
                h: 10.0,
            },
            score: 0.9,
            landmarks: Landmarks::default(),
            dominant: emotions.dominant(),
            emotions,
        }
    }

    fn frame(t_ms: u64, faces: Vec<FaceResult>) -> FrameResult {
        FrameResult {
            frame: t_ms / 40,
            t_ms,
            faces,
        }
    }

    #[test]
    fn empty_video_has_no_dominant_emotion() {
        let mut b = SummaryBuilder::new(false);
        b.add(&frame(0, vec![]));
        let s = b.finish();
        assert_eq!(
            (s.frames_analyzed, s.frames_with_faces, s.dominant),
            (1, 0, None)
        );
        assert!(s.tracks.is_empty() && s.timeline.is_empty());
    }

    #[test]
    fn means_shares_tracks_and_timeline() {
        let mut b = SummaryBuilder::new(false);
        b.add(&frame(0, vec![face(1, &[(Sad, 0.8), (Neutral, 0.2)])]));
        b.add(&frame(500, vec![face(1, &[(Sad, 0.6), (Neutral, 0.4)])]));
        b.add(&frame(900, vec![]));
        // two faces: the frame's emotion is their mean (happy 0.5, sad 0.3, neutral 0.2)
        b.add(&frame(
            1200,
            vec![
                face(1, &[(Happy, 1.0)]),
                face(2, &[(Sad, 0.6), (Neutral, 0.4)]),
            ],
        ));
        let s = b.finish();

        assert_eq!((s.frames_analyzed, s.frames_with_faces), (4, 3));
        assert!((s.mean.get(Sad) - (0.8 + 0.6 + 0.3) / 3.0).abs() < 1e-6);
        assert!((s.mean.get(Happy) - 0.5 / 3.0).abs() < 1e-6);
        assert!((s.distribution.get(Sad) - 2.0 / 3.0).abs() < 1e-6);
        assert!((s.distribution.get(Happy) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(s.dominant, Some(Sad));

        assert_eq!(s.tracks.len(), 2);
        let t1 = &s.tracks[0];
        assert_eq!(
            (t1.track, t1.first_ms, t1.last_ms, t1.frames),
            (1, 0, 1200, 3)
        );
        assert_eq!(t1.dominant, Sad);
        assert!((t1.mean.get(Happy) - 1.0 / 3.0).abs() < 1e-6);
        assert!((t1.distribution.get(Happy) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(
            (s.tracks[1].track, s.tracks[1].first_ms, s.tracks[1].frames),
            (2, 1200, 1)
        );

        assert_eq!(
            s.timeline
                .iter()
                .map(|e| (e.second, e.frames))
                .collect::<Vec<_>>(),
            vec![(0, 2), (1, 1)]
        );
        assert!((s.timeline[0].mean.get(Sad) - 0.7).abs() < 1e-6);
        assert!((s.timeline[1].mean.get(Happy) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn contempt_appears_only_for_models_that_have_it() {
        let mut b = SummaryBuilder::new(true);
        b.add(&frame(0, vec![face(1, &[(Contempt, 0.9)])]));
        let json = serde_json::to_value(b.finish()).unwrap();
        assert_eq!(json["mean"]["contempt"], 0.9);
        let mut b = SummaryBuilder::new(false);
        b.add(&frame(0, vec![face(1, &[(Sad, 0.9)])]));
        assert!(
            serde_json::to_value(b.finish()).unwrap()["mean"]
                .get("contempt")
                .is_none()
        );
    }
}
