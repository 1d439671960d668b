use super::{DetectedFace, FaceBox};

/// How faces are associated across frames.
#[derive(Debug, Clone, Copy)]
pub struct TrackerConfig {
    /// Minimum IoU for a detection to continue a track.
    pub min_iou: f64,
    /// Below `min_iou`, a detection still continues a track when its centre moved by at most this
    /// many box sizes and the areas are within 4x: at low sampling rates a moving head can shift
    /// by more than its overlap allows.
    pub max_center_shift: f64,
    /// A track not seen for longer than this is closed; a face reappearing later gets a new id.
    pub max_gap_ms: u64,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            min_iou: 0.3,
            max_center_shift: 1.0,
            max_gap_ms: 1500,
        }
    }
}

#[derive(Debug, Clone)]
struct Track {
    id: u32,
    face: DetectedFace,
    last_seen_ms: u64,
}

/// Greedy IoU / centre-distance tracker with a short memory.
///
/// Greedy matching (best affinity first) is enough here: faces in a frame rarely overlap, and the
/// detector already suppresses overlapping boxes.
#[derive(Debug, Default)]
pub struct Tracker {
    config: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u32,
    last_update_ms: Option<u64>,
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            config,
            tracks: Vec::new(),
            next_id: 1,
            last_update_ms: None,
        }
    }

    /// Assigns a track id to each detection of the frame at `t_ms`, in detection order.
    /// Hands out track ids from `first` on.
    pub fn numbered_from(mut self, first: u32) -> Self {
        self.next_id = first.max(1);
        self
    }

    pub fn update(&mut self, t_ms: u64, detections: &[DetectedFace]) -> Vec<(u32, DetectedFace)> {
        let max_gap = self.config.max_gap_ms;
        self.tracks
            .retain(|t| t_ms.saturating_sub(t.last_seen_ms) <= max_gap);

        let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
        for (ti, track) in self.tracks.iter().enumerate() {
            for (di, det) in detections.iter().enumerate() {
                if let Some(a) = self.affinity(&track.face.bbox, &det.bbox) {
                    pairs.push((a, ti, di));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));

        let mut det_track: Vec<Option<usize>> = vec![None; detections.len()];
        let mut track_used = vec![false; self.tracks.len()];
        for (_, ti, di) in pairs {
            if !track_used[ti] && det_track[di].is_none() {
                track_used[ti] = true;
                det_track[di] = Some(ti);
            }
        }

        let mut out = Vec::with_capacity(detections.len());
        for (di, det) in detections.iter().enumerate() {
            let id = match det_track[di] {
                Some(ti) => {
                    let track = &mut self.tracks[ti];
                    track.face = *det;
                    track.last_seen_ms = t_ms;
                    track.id
                }
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.tracks.push(Track {
                        id,
                        face: *det,
                        last_seen_ms: t_ms,
                    });
                    id
                }
            };
            out.push((id, *det));
        }
        self.last_update_ms = Some(t_ms);
        out
    }

    /// Gives the track `id` a new id from here on (its face turned out to be someone else's) and
    /// returns it; the box stays, so the new track continues from it.
    pub fn split(&mut self, id: u32) -> u32 {
        let new_id = self.next_id;
        self.next_id += 1;
        if let Some(track) = self.tracks.iter_mut().find(|t| t.id == id) {
            track.id = new_id;
        }
        new_id
    }

    /// The faces seen at the latest update, for frames on which the detector did not run.
    pub fn current(&self) -> Vec<(u32, DetectedFace)> {
        match self.last_update_ms {
            Some(last) => self
                .tracks
                .iter()
                .filter(|t| t.last_seen_ms == last)
                .map(|t| (t.id, t.face))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Higher is a better match; `None` means the pair must not be matched.
    fn affinity(&self, track: &FaceBox, det: &FaceBox) -> Option<f64> {
        let iou = track.iou(det);
        if iou >= self.config.min_iou {
            return Some(1.0 + iou);
        }
        let size = track.w.max(track.h).max(1.0);
        let (tx, ty) = track.center();
        let (dx, dy) = det.center();
        let shift = ((tx - dx).powi(2) + (ty - dy).powi(2)).sqrt() / size;
        let ratio = det.area().max(1.0) / track.area().max(1.0);
        if shift <= self.config.max_center_shift && (0.25..=4.0).contains(&ratio) {
            Some(1.0 - shift)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Landmarks;

    fn face(x: f64, y: f64, side: f64) -> DetectedFace {
        DetectedFace {
            bbox: FaceBox {
                x,
                y,
                w: side,
                h: side,
            },
            score: 0.9,
            landmarks: Landmarks::default(),
        }
    }

    #[test]
    fn a_moving_face_keeps_its_id_and_a_new_face_gets_the_next() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        assert_eq!(tracker.update(0, &[face(100.0, 100.0, 80.0)])[0].0, 1);
        // moved 10 px: high IoU
        assert_eq!(tracker.update(40, &[face(110.0, 100.0, 80.0)])[0].0, 1);
        // moved 50 px: IoU 0.23, centre shift 0.63 box sizes: still the same person
        let ids: Vec<u32> = tracker
            .update(240, &[face(400.0, 50.0, 60.0), face(160.0, 100.0, 80.0)])
            .iter()
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(ids, vec![2, 1]);
    }

    #[test]
    fn two_faces_crossing_paths_are_not_swapped_by_greedy_order() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        tracker.update(0, &[face(0.0, 0.0, 100.0), face(150.0, 0.0, 100.0)]);
        // detections listed in the opposite order; each overlaps its own track best
        let out = tracker.update(40, &[face(140.0, 0.0, 100.0), face(10.0, 0.0, 100.0)]);
        assert_eq!(
            out.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            vec![2, 1]
        );
    }

    #[test]
    fn a_face_gone_longer_than_the_memory_comes_back_as_a_new_track() {
        let mut tracker = Tracker::new(TrackerConfig {
            max_gap_ms: 1000,
            ..Default::default()
        });
        tracker.update(0, &[face(100.0, 100.0, 80.0)]);
        tracker.update(500, &[]);
        assert_eq!(
            tracker.update(900, &[face(100.0, 100.0, 80.0)])[0].0,
            1,
            "within memory"
        );
        tracker.update(1000, &[]);
        assert_eq!(
            tracker.update(2500, &[face(100.0, 100.0, 80.0)])[0].0,
            2,
            "after memory"
        );
    }

    #[test]
    fn a_split_track_continues_under_a_new_id() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        tracker.update(0, &[face(100.0, 100.0, 80.0)]);
        assert_eq!(tracker.split(1), 2);
        assert_eq!(tracker.current()[0].0, 2);
        assert_eq!(tracker.update(40, &[face(102.0, 100.0, 80.0)])[0].0, 2);
        assert_eq!(tracker.update(80, &[face(400.0, 100.0, 80.0)])[0].0, 3);
    }

    #[test]
    fn current_returns_only_faces_of_the_latest_detection() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        assert!(tracker.current().is_empty());
        tracker.update(0, &[face(0.0, 0.0, 50.0), face(300.0, 0.0, 50.0)]);
        tracker.update(100, &[face(2.0, 0.0, 50.0)]);
        let current = tracker.current();
        assert_eq!(current.len(), 1);
        assert_eq!(current[0].0, 1);
        assert_eq!(current[0].1.bbox.x, 2.0);
    }

    #[test]
    fn far_away_or_very_different_sized_boxes_do_not_match() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        tracker.update(0, &[face(0.0, 0.0, 100.0)]);
        assert_eq!(
            tracker.update(40, &[face(300.0, 300.0, 100.0)])[0].0,
            2,
            "3 box sizes away"
        );
        tracker.update(80, &[face(0.0, 0.0, 100.0)]);
        assert_eq!(
            tracker.update(120, &[face(30.0, 30.0, 20.0)])[0].0,
            3,
            "1/25 the area"
        );
    }
}
