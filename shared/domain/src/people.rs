//! Tracks → people.
//!
//! The tracker follows a face while it stays in view; a cut, a face-less gap or a segment
//! boundary starts a new track. Each track carries a face embedding (the mean of a few of its
//! best aligned crops, see `pipeline::embedder`), and once the whole video is analysed the tracks
//! are linked into people by average-linkage clustering on cosine similarity, never joining two
//! tracks that were on screen in the same frame.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{FrameResult, Summary};

/// How tracks become people.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeopleConfig {
    /// Two groups of tracks are one person when the mean cosine similarity of their embeddings
    /// is at least this (`DEEPEMOTION_PERSON_SIMILARITY`).
    ///
    /// Measured with face-api's FaceRecognitionNet on aligned crops (scripts/models/measure_embeddings.py, README
    /// "People"): same-person pairs across the sample clips and photos sit well above it,
    /// different-person pairs well below.
    pub link_similarity: f32,
    /// Within one track, a crop whose embedding is less similar than this to the track's own
    /// is someone else (a cut to another person at the same spot): the track is split there.
    pub split_similarity: f32,
    /// Crops embedded and averaged per track, the best ones by quality
    /// (`DEEPEMOTION_PERSON_SAMPLES`); 0 turns identity off: no embeddings, and every track is
    /// a person of its own.
    pub samples_per_track: usize,
}

impl Default for PeopleConfig {
    fn default() -> Self {
        Self {
            link_similarity: 0.943,
            split_similarity: 0.932,
            samples_per_track: 5,
        }
    }
}

/// What the pipeline learnt about one track's face, stored with the segment's results so that
/// the worker assembling the video can link tracks across segments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackProfile {
    pub track: u32,
    /// Unit-length mean of the embeddings of the track's best crops.
    pub embedding: Vec<f32>,
    /// How many crops were averaged.
    pub samples: u32,
    /// Quality of the best crop (see `pipeline::embedder::crop_quality`), 0..1.
    pub quality: f32,
    /// The best crop as a small JPEG (base64 in JSON), for the person's thumbnail.
    #[serde(
        default,
        with = "base64_bytes",
        skip_serializing_if = "Option::is_none"
    )]
    pub thumbnail: Option<Vec<u8>>,
}

mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_str(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| STANDARD.decode(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Keeps the best few embedded crops of one track and averages them.
#[derive(Debug, Clone)]
pub struct ProfileBuilder {
    capacity: usize,
    /// (quality, unit embedding)
    samples: Vec<(f32, Vec<f32>)>,
}

impl ProfileBuilder {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            samples: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Whether a crop of this quality would be kept: worth embedding.
    pub fn wants(&self, quality: f32) -> bool {
        self.samples.len() < self.capacity || quality > self.worst_quality()
    }

    fn worst_quality(&self) -> f32 {
        self.samples
            .iter()
            .map(|(q, _)| *q)
            .fold(f32::INFINITY, f32::min)
    }

    pub fn best_quality(&self) -> f32 {
        self.samples.iter().map(|(q, _)| *q).fold(0.0, f32::max)
    }

    /// Adds an embedding, dropping the worst kept one when full.
    pub fn add(&mut self, quality: f32, embedding: Vec<f32>) {
        if self.samples.len() >= self.capacity {
            let worst = self
                .samples
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.0.total_cmp(&b.1.0))
                .map(|(i, _)| i);
            match worst {
                Some(i) if self.samples[i].0 < quality => {
                    self.samples.swap_remove(i);
                }
                _ => return,
            }
        }
        self.samples.push((quality, embedding));
    }

    /// The unit-length mean of the kept embeddings.
    pub fn mean(&self) -> Option<Vec<f32>> {
        let first = self.samples.first()?;
        let mut sum = vec![0f32; first.1.len()];
        for (_, e) in &self.samples {
            for (s, v) in sum.iter_mut().zip(e) {
                *s += v;
            }
        }
        Some(unit(sum))
    }

    pub fn samples(&self) -> u32 {
        self.samples.len() as u32
    }
}

/// `v` scaled to unit length (unchanged when it is all zeros).
pub fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// Which tracks appear in the stored frames, when each first appears, which were on screen
/// together, and which continue one another. Built from the frames themselves (not from the
/// pipeline's view of its tracks), so a resumed run's overwritten frames cannot make two tracks
/// look simultaneous.
#[derive(Debug, Clone, Default)]
pub struct TrackOverlap {
    first_ms: BTreeMap<u32, u64>,
    together: HashSet<(u32, u32)>,
    /// (a, b): track a's face in one analysed frame is where track b's first face is in the next.
    /// A segment boundary, a resumed run or a split ends a track that way; one pass would have
    /// gone on with the same track (unless the split was right, which embeddings tell).
    continues: Vec<(u32, u32)>,
    previous: Vec<(u32, super::FaceBox)>,
}

impl TrackOverlap {
    pub fn observe(&mut self, frame: &FrameResult) {
        for face in &frame.faces {
            if self.first_ms.contains_key(&face.track) {
                continue;
            }
            self.first_ms.insert(face.track, frame.t_ms);
            let ended = self
                .previous
                .iter()
                .filter(|(t, _)| frame.faces.iter().all(|f| f.track != *t))
                .map(|(t, b)| (b.iou(&face.bbox), *t))
                .filter(|(iou, _)| *iou >= 0.3)
                .max_by(|a, b| a.0.total_cmp(&b.0));
            if let Some((_, before)) = ended {
                self.continues.push((before, face.track));
            }
        }
        for (i, a) in frame.faces.iter().enumerate() {
            for b in &frame.faces[i + 1..] {
                if a.track != b.track {
                    self.together
                        .insert((a.track.min(b.track), a.track.max(b.track)));
                }
            }
        }
        self.previous = frame.faces.iter().map(|f| (f.track, f.bbox)).collect();
    }

    fn together(&self, a: u32, b: u32) -> bool {
        self.together.contains(&(a.min(b), a.max(b)))
    }
}

/// Track → person, for one video. People are numbered from 1 in order of first appearance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeopleMap {
    person_of: BTreeMap<u32, u32>,
}

impl PeopleMap {
    pub fn person(&self, track: u32) -> Option<u32> {
        self.person_of.get(&track).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.person_of.is_empty()
    }

    /// Each person's tracks, in person order.
    pub fn people(&self) -> BTreeMap<u32, Vec<u32>> {
        let mut out: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (track, person) in &self.person_of {
            out.entry(*person).or_default().push(*track);
        }
        out
    }

    /// The map a finished summary records (`summary.people[].tracks`).
    pub fn from_summary(summary: &Summary) -> Self {
        Self {
            person_of: summary
                .people
                .iter()
                .flat_map(|p| p.tracks.iter().map(move |t| (*t, p.person)))
                .collect(),
        }
    }

    /// Sets each face's `person`. A track the map does not know (it cannot happen for frames
    /// the map was built from) is left without one.
    pub fn annotate(&self, frame: &mut FrameResult) {
        for face in &mut frame.faces {
            face.person = self.person(face.track);
        }
    }
}

/// Tracks being linked into one person.
struct Group {
    tracks: Vec<u32>,
    /// Sum of the members' unit embeddings: the mean pairwise cosine between two groups
    /// (average linkage) is `sum_a · sum_b / (n_a n_b)`.
    sum: Option<Vec<f32>>,
    n: usize,
}

/// Moves group `j` into group `i` (`i < j`).
fn merge(groups: &mut Vec<Group>, i: usize, j: usize) {
    let absorbed = groups.swap_remove(j);
    let into = &mut groups[i];
    into.tracks.extend(absorbed.tracks);
    into.n += absorbed.n;
    if let (Some(sum), Some(other)) = (into.sum.as_mut(), absorbed.sum) {
        sum.iter_mut().zip(other).for_each(|(s, o)| *s += o);
    }
}

/// Links the tracks seen in `overlap` into people. Tracks without a profile (no crop could be
/// embedded) stay people of their own.
pub fn link_tracks(
    overlap: &TrackOverlap,
    profiles: &[TrackProfile],
    config: &PeopleConfig,
) -> PeopleMap {
    let embedding: BTreeMap<u32, &[f32]> = profiles
        .iter()
        .filter(|p| !p.embedding.is_empty())
        .map(|p| (p.track, p.embedding.as_slice()))
        .collect();

    let mut groups: Vec<Group> = overlap
        .first_ms
        .keys()
        .map(|&track| {
            let sum = embedding.get(&track).map(|e| unit(e.to_vec()));
            Group {
                tracks: vec![track],
                n: usize::from(sum.is_some()),
                sum,
            }
        })
        .collect();

    let linkage = |a: &Group, b: &Group| -> Option<f32> {
        let (sa, sb) = (a.sum.as_ref()?, b.sum.as_ref()?);
        let dot: f32 = sa.iter().zip(sb).map(|(x, y)| x * y).sum();
        Some(dot / (a.n * b.n) as f32)
    };
    let apart = |a: &Group, b: &Group| {
        a.tracks
            .iter()
            .any(|x| b.tracks.iter().any(|y| overlap.together(*x, *y)))
    };

    // First, tracks that continue one another (a segment boundary, a resume, a split) and whose
    // faces are as alike as one track's crops are (the split threshold): what one pass would have
    // kept as one track. A cut to someone else at the same spot is less alike, and stays apart.
    for &(a, b) in &overlap.continues {
        let (Some(i), Some(j)) = (
            groups.iter().position(|g| g.tracks.contains(&a)),
            groups.iter().position(|g| g.tracks.contains(&b)),
        ) else {
            continue;
        };
        if i == j || apart(&groups[i], &groups[j]) {
            continue;
        }
        let alike = match (embedding.get(&a), embedding.get(&b)) {
            (Some(x), Some(y)) => cosine(x, y) >= config.split_similarity,
            _ => false,
        };
        if alike {
            merge(&mut groups, i.min(j), i.max(j));
        }
    }

    // Greedy agglomeration: merge the most similar allowed pair until none reaches the threshold.
    // O(n³) in tracks, which stays small next to decoding (hundreds of tracks at most per video).
    loop {
        let mut best: Option<(f32, usize, usize)> = None;
        for i in 0..groups.len() {
            for j in i + 1..groups.len() {
                let Some(sim) = linkage(&groups[i], &groups[j]) else {
                    continue;
                };
                if sim >= config.link_similarity
                    && best.is_none_or(|(s, _, _)| sim > s)
                    && !apart(&groups[i], &groups[j])
                {
                    best = Some((sim, i, j));
                }
            }
        }
        let Some((_, i, j)) = best else { break };
        merge(&mut groups, i, j);
    }

    let first = |g: &Group| {
        g.tracks
            .iter()
            .map(|t| (overlap.first_ms[t], *t))
            .min()
            .unwrap_or((u64::MAX, u32::MAX))
    };
    groups.sort_by_key(first);
    let mut person_of = BTreeMap::new();
    for (i, group) in groups.iter().enumerate() {
        for track in &group.tracks {
            person_of.insert(*track, i as u32 + 1);
        }
    }
    PeopleMap { person_of }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EmotionScores, FaceBox, FaceResult, Landmarks};

    fn frame(t_ms: u64, tracks: &[u32]) -> FrameResult {
        FrameResult {
            frame: t_ms / 40,
            t_ms,
            faces: tracks
                .iter()
                .map(|&track| FaceResult {
                    track,
                    person: None,
                    bbox: FaceBox {
                        x: 10.0,
                        y: 10.0,
                        w: 50.0,
                        h: 50.0,
                    },
                    score: 0.9,
                    landmarks: Landmarks::default(),
                    emotions: EmotionScores::new(false),
                    dominant: crate::EmotionLabel::Neutral,
                    smoothed: None,
                    smoothed_dominant: None,
                })
                .collect(),
        }
    }

    fn profile(track: u32, embedding: &[f32]) -> TrackProfile {
        TrackProfile {
            track,
            embedding: unit(embedding.to_vec()),
            samples: 1,
            quality: 0.5,
            thumbnail: None,
        }
    }

    fn overlap(frames: &[FrameResult]) -> TrackOverlap {
        let mut o = TrackOverlap::default();
        frames.iter().for_each(|f| o.observe(f));
        o
    }

    #[test]
    fn similar_tracks_apart_in_time_are_one_person_numbered_by_first_appearance() {
        // track 3 appears first; 1 and 4 are the same face, 2 someone else
        let frames = [
            frame(0, &[3]),
            frame(100, &[1]),
            frame(200, &[2]),
            frame(300, &[4]),
        ];
        let profiles = [
            profile(1, &[1.0, 0.1, 0.0]),
            profile(2, &[0.0, 1.0, 0.0]),
            profile(3, &[0.0, 0.0, 1.0]),
            profile(4, &[0.9, 0.0, 0.1]),
        ];
        let map = link_tracks(&overlap(&frames), &profiles, &PeopleConfig::default());
        assert_eq!(
            [1, 2, 3, 4].map(|t| map.person(t).unwrap()),
            [2, 3, 1, 2],
            "{map:?}"
        );
        assert_eq!(map.people()[&2], vec![1, 4]);
    }

    #[test]
    fn tracks_on_screen_together_are_never_one_person() {
        // the clip beside its mirrored copy: identical embeddings, always together
        let frames = [frame(0, &[1, 2]), frame(40, &[1, 2]), frame(1000, &[3])];
        let same = [0.6, 0.8, 0.0];
        let profiles = [profile(1, &same), profile(2, &same), profile(3, &same)];
        let map = link_tracks(&overlap(&frames), &profiles, &PeopleConfig::default());
        assert_eq!(map.person(1), Some(1));
        assert_eq!(map.person(2), Some(2));
        // the later track joins one of them, not both
        assert!(matches!(map.person(3), Some(1 | 2)));
        assert_eq!(map.people().len(), 2);
    }

    #[test]
    fn a_group_does_not_absorb_a_track_that_met_any_of_its_members() {
        // 1 and 3 are alike and apart; 2 is alike too but was on screen with 3
        let frames = [frame(0, &[1]), frame(100, &[2, 3])];
        let profiles = [
            profile(1, &[1.0, 0.0]),
            profile(2, &[1.0, 0.05]),
            profile(3, &[1.0, 0.0]),
        ];
        let map = link_tracks(&overlap(&frames), &profiles, &PeopleConfig::default());
        assert_ne!(map.person(2), map.person(3));
        assert_eq!(map.people().len(), 2);
    }

    #[test]
    fn tracks_without_an_embedding_stay_alone_and_profiles_without_frames_are_ignored() {
        let frames = [frame(0, &[1]), frame(100, &[2])];
        let profiles = [profile(1, &[1.0, 0.0]), profile(9, &[1.0, 0.0])];
        let map = link_tracks(&overlap(&frames), &profiles, &PeopleConfig::default());
        assert_eq!(
            (map.person(1), map.person(2), map.person(9)),
            (Some(1), Some(2), None)
        );
    }

    /// Frames whose face is `track` at a fixed spot, from `from_ms`, every 200 ms.
    fn run(track: u32, from_ms: u64, n: u64) -> Vec<FrameResult> {
        (0..n).map(|i| frame(from_ms + i * 200, &[track])).collect()
    }

    #[test]
    fn a_track_continued_at_the_same_spot_is_the_same_person_unless_its_face_changed() {
        // the embeddings' cosine is 0.936: below the link threshold, above the split threshold
        let (a, b) = ([1.0, 0.0], [0.936, 0.352]);
        let frames: Vec<FrameResult> = run(1, 0, 5).into_iter().chain(run(2, 1000, 5)).collect();
        let map = link_tracks(
            &overlap(&frames),
            &[profile(1, &a), profile(2, &b)],
            &PeopleConfig::default(),
        );
        assert_eq!((map.person(1), map.person(2)), (Some(1), Some(1)));
        // a cut to someone else at the same spot: not alike enough to continue the track
        let map = link_tracks(
            &overlap(&frames),
            &[profile(1, &a), profile(2, &[0.8, 0.6])],
            &PeopleConfig::default(),
        );
        assert_eq!((map.person(1), map.person(2)), (Some(1), Some(2)));
        // the same two tracks with face-less frames between them: only the link threshold counts
        let frames: Vec<FrameResult> = run(1, 0, 5)
            .into_iter()
            .chain((5..15).map(|i| frame(i * 200, &[])))
            .chain(run(2, 3000, 5))
            .collect();
        let map = link_tracks(
            &overlap(&frames),
            &[profile(1, &a), profile(2, &b)],
            &PeopleConfig::default(),
        );
        assert_eq!((map.person(1), map.person(2)), (Some(1), Some(2)));
    }

    #[test]
    fn dissimilar_tracks_stay_apart() {
        let frames = [frame(0, &[1]), frame(100, &[2])];
        let profiles = [profile(1, &[1.0, 0.0]), profile(2, &[0.3, 1.0])];
        let map = link_tracks(&overlap(&frames), &profiles, &PeopleConfig::default());
        assert_eq!((map.person(1), map.person(2)), (Some(1), Some(2)));
    }

    #[test]
    fn a_profile_keeps_its_best_crops_and_averages_them_to_unit_length() {
        let mut b = ProfileBuilder::new(2);
        assert!(b.mean().is_none() && b.wants(0.0));
        b.add(0.2, vec![1.0, 0.0]);
        b.add(0.9, vec![0.0, 1.0]);
        assert!(!b.wants(0.1) && b.wants(0.5));
        b.add(0.5, vec![0.0, 1.0]); // replaces the 0.2 one
        b.add(0.1, vec![1.0, 0.0]); // worse than both: ignored
        assert_eq!(b.samples(), 2);
        assert_eq!(b.mean().unwrap(), vec![0.0, 1.0]);
        assert_eq!(b.best_quality(), 0.9);
    }

    #[test]
    fn profiles_round_trip_through_json_with_their_thumbnail() {
        let p = TrackProfile {
            thumbnail: Some(vec![0xff, 0xd8, 0, 1]),
            ..profile(7, &[0.6, 0.8])
        };
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"thumbnail\":\"/9gAAQ==\""), "{json}");
        assert_eq!(serde_json::from_str::<TrackProfile>(&json).unwrap(), p);
    }
}
