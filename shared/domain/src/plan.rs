//! How one video's analysis is divided into segments that separate workers (Lambda invocations)
//! can run in parallel, and where an interrupted run resumes. Plain data and arithmetic only.
//!
//! A segment must select exactly the frames a single pass would, so that splitting never changes
//! results. A single pass keeps the first frame of every `1/sample_fps` slot, the slot being
//! `floor(t * fps + SLOT_EPSILON)` (the epsilon puts a frame that sits exactly on a slot edge,
//! as every fifth frame of a 25 fps video does at 5 fps, surely in the later slot whatever the
//! floating-point rounding). A segment starts at a frame that is certainly first in its slot,
//! and ffmpeg seeks to halfway between that frame and the one before it, far from both.

use serde::{Deserialize, Serialize};

/// A video's analysis plan: recorded once, by the first worker to see the upload, and read by
/// every worker that runs one of its segments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisPlan {
    pub sample_fps: f64,
    /// The stream's first timestamp in seconds; frame times `t_ms` are measured from it.
    pub start_s: f64,
    pub duration_ms: u64,
    pub segments: Vec<SegmentPlan>,
}

/// One segment: the frames from `first_frame` (at or after `seek_s`) up to `end_s`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SegmentPlan {
    pub index: u32,
    /// Where ffmpeg seeks to, on the stream's timeline; `None` for the start of the file.
    pub seek_s: Option<f64>,
    /// Where the segment stops (exclusive), on the stream's timeline; `None` for the end.
    pub end_s: Option<f64>,
    /// The source frame number of the first frame after `seek_s`.
    pub first_frame: u64,
    /// Where the segment starts and ends in video time, for progress.
    pub start_ms: u64,
    pub end_ms: u64,
}

/// How far a segment's run got: the last frame whose results are stored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub frame: u64,
    pub t_ms: u64,
}

/// Added to `t * fps` before flooring, here and in the decoder's `select` filter.
pub const SLOT_EPSILON: f64 = 1e-4;
/// A frame whose `t * fps + SLOT_EPSILON` is closer than this to a whole number could fall in
/// either slot after rounding (a frame's time is its ticks times the stream's time base, in
/// floating point).
const AMBIGUOUS: f64 = 1e-5;
/// In every-frame mode, frames closer than this (seconds) are not cut between.
const MIN_GAP_S: f64 = 2e-4;

impl AnalysisPlan {
    /// One segment: the whole video.
    pub fn single(sample_fps: f64, start_s: f64, duration_ms: u64) -> Self {
        Self {
            sample_fps,
            start_s,
            duration_ms,
            segments: vec![SegmentPlan {
                index: 0,
                seek_s: None,
                end_s: None,
                first_frame: 0,
                start_ms: 0,
                end_ms: duration_ms,
            }],
        }
    }

    /// Splits the video into segments of about `segment_s` seconds. `frame_times` are every
    /// frame's timestamp (stream timeline, sorted), from the container.
    pub fn split(
        sample_fps: f64,
        start_s: f64,
        duration_ms: u64,
        segment_s: f64,
        frame_times: &[f64],
    ) -> Self {
        let mut plan = Self::single(sample_fps, start_s, duration_ms);
        if frame_times.len() < 2 || segment_s <= 0.0 {
            return plan;
        }
        let mut cuts: Vec<usize> = Vec::new();
        let mut target = start_s + segment_s;
        while let Some(j) = cut_at_or_after(frame_times, target, sample_fps) {
            if cuts.last().is_some_and(|&last| j <= last) || j == 0 {
                break;
            }
            cuts.push(j);
            target = frame_times[j] + segment_s;
        }
        let to_ms = |t: f64| ((t - start_s).max(0.0) * 1000.0).round() as u64;
        let mut segments = Vec::with_capacity(cuts.len() + 1);
        let mut previous: Option<(f64, usize)> = None;
        for (index, cut) in cuts.iter().map(Some).chain([None]).enumerate() {
            let boundary = cut.map(|&j| ((frame_times[j - 1] + frame_times[j]) / 2.0, j));
            segments.push(SegmentPlan {
                index: index as u32,
                seek_s: previous.map(|(s, _)| s),
                end_s: boundary.map(|(s, _)| s),
                first_frame: previous.map_or(0, |(_, j)| j as u64),
                start_ms: previous.map_or(0, |(s, _)| to_ms(s)),
                end_ms: boundary.map_or(duration_ms, |(s, _)| to_ms(s)),
            });
            previous = boundary;
        }
        plan.segments = segments;
        plan
    }

    /// How many segments of `segment_s` seconds a video of `duration_ms` needs (at least one).
    pub fn segments_needed(duration_ms: u64, segment_s: f64) -> u32 {
        if segment_s <= 0.0 {
            return 1;
        }
        ((duration_ms as f64 / 1000.0 / segment_s).ceil() as u32).max(1)
    }

    pub fn segment(&self, index: u32) -> Option<&SegmentPlan> {
        self.segments.get(index as usize)
    }
}

impl SegmentPlan {
    /// The window that continues this segment after `checkpoint`: it restarts at the
    /// checkpoint's frame itself (which a single pass selected, so a fresh selection keeps it
    /// too), seeking half a millisecond before it. Rewriting that one frame is harmless: results
    /// are keyed by frame number.
    pub fn resume_after(&self, plan_start_s: f64, checkpoint: &Checkpoint) -> SegmentPlan {
        SegmentPlan {
            seek_s: Some(plan_start_s + checkpoint.t_ms as f64 / 1000.0 - 0.0006),
            first_frame: checkpoint.frame,
            start_ms: checkpoint.t_ms,
            ..*self
        }
    }

    /// Track ids for a run starting at `first_frame`: runs never share ids (a track does not
    /// continue across a segment boundary or a resume).
    pub fn first_track(&self) -> u32 {
        (self.first_frame.saturating_mul(16) + 1).min(u32::MAX as u64) as u32
    }
}

/// The first frame at or after `target` that a single pass certainly selects first in its slot,
/// with no frame near the slot's edge; `None` when there is none before the end.
fn cut_at_or_after(times: &[f64], target: f64, sample_fps: f64) -> Option<usize> {
    let mut j = times.partition_point(|&t| t < target);
    while j < times.len() {
        if j == 0 {
            j += 1;
            continue;
        }
        let (before, at) = (times[j - 1], times[j]);
        let clear = if sample_fps > 0.0 {
            let x_at = at * sample_fps + SLOT_EPSILON;
            let x_before = before * sample_fps + SLOT_EPSILON;
            // `at` opens a new slot, and neither frame is near enough an edge to be in doubt
            x_before.floor() < x_at.floor()
                && x_at - x_at.floor() > AMBIGUOUS
                && x_before.floor() + 1.0 - x_before > AMBIGUOUS
        } else {
            at - before > MIN_GAP_S
        };
        if clear {
            return Some(j);
        }
        j += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(fps: f64, seconds: f64) -> Vec<f64> {
        (0..(fps * seconds) as usize)
            .map(|i| i as f64 / fps)
            .collect()
    }

    /// The frames a single pass selects: the first of every slot.
    fn selected(times: &[f64], fps: f64) -> Vec<usize> {
        let mut last: Option<f64> = None;
        (0..times.len())
            .filter(|&i| {
                let slot = (times[i] * fps + SLOT_EPSILON).floor();
                let keep = last.is_none_or(|l| slot > l);
                if keep {
                    last = Some(slot);
                }
                keep
            })
            .collect()
    }

    #[test]
    fn segments_cover_every_frame_once_and_start_on_selected_frames() {
        // 23.976 fps, 100 s, 5 fps sampling, 30 s segments
        let times: Vec<f64> = (0..2398).map(|i| i as f64 * 1001.0 / 24000.0).collect();
        let plan = AnalysisPlan::split(5.0, 0.0, 100_000, 30.0, &times);
        assert_eq!(plan.segments.len(), 4);
        let keep = selected(&times, 5.0);
        for pair in plan.segments.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert_eq!(a.end_s, b.seek_s, "segments abut");
            assert_eq!(a.end_ms, b.start_ms);
            let j = b.first_frame as usize;
            assert!(times[j - 1] < b.seek_s.unwrap() && b.seek_s.unwrap() < times[j]);
            assert!(
                keep.contains(&j),
                "a segment starts on a frame the full pass selects"
            );
        }
        assert_eq!(plan.segments[0].seek_s, None);
        assert_eq!(plan.segments[3].end_s, None);
        assert_eq!(plan.segments[3].end_ms, 100_000);
        assert!((plan.segments[1].start_ms as i64 - 30_000).abs() < 300);
    }

    #[test]
    fn frames_on_a_slot_edge_are_never_cut_points() {
        // 25 fps: every fifth frame sits exactly on a 5 fps slot edge
        let times = frames(25.0, 20.0);
        let plan = AnalysisPlan::split(5.0, 0.0, 20_000, 6.0, &times);
        assert_eq!(plan.segments.len(), 4);
        let keep = selected(&times, 5.0);
        for s in &plan.segments[1..] {
            let j = s.first_frame as usize;
            assert_eq!(j % 5, 0, "cut on the edge frame, which opens its slot");
            assert!(keep.contains(&j));
        }
        // every frame still belongs to exactly one segment
        let mut covered = 0;
        for s in &plan.segments {
            let from = s.seek_s.unwrap_or(f64::MIN);
            let to = s.end_s.unwrap_or(f64::MAX);
            covered += times.iter().filter(|&&t| t >= from && t < to).count();
        }
        assert_eq!(covered, times.len());
    }

    #[test]
    fn short_videos_and_degenerate_inputs_stay_one_segment() {
        assert_eq!(
            AnalysisPlan::split(5.0, 0.0, 3000, 60.0, &frames(25.0, 3.0))
                .segments
                .len(),
            1
        );
        assert_eq!(
            AnalysisPlan::split(5.0, 0.0, 3000, 1.0, &[]).segments.len(),
            1
        );
        assert_eq!(AnalysisPlan::segments_needed(3_600_000, 600.0), 6);
        assert_eq!(AnalysisPlan::segments_needed(1, 600.0), 1);
        assert_eq!(AnalysisPlan::segments_needed(1_000, 0.0), 1);
    }

    #[test]
    fn every_frame_mode_cuts_anywhere_between_frames() {
        let times = frames(30.0, 10.0);
        let plan = AnalysisPlan::split(0.0, 0.0, 10_000, 2.5, &times);
        assert_eq!(plan.segments.len(), 4);
        assert_eq!(plan.segments[1].first_frame, 75);
    }

    #[test]
    fn a_resume_restarts_at_the_checkpoint_frame_with_fresh_track_ids() {
        let seg = AnalysisPlan::single(5.0, 1.4, 10_000).segments[0];
        let resumed = seg.resume_after(
            1.4,
            &Checkpoint {
                frame: 120,
                t_ms: 5005,
            },
        );
        assert_eq!(resumed.first_frame, 120);
        let seek = resumed.seek_s.unwrap();
        assert!(seek < 1.4 + 5.0045 && seek > 1.4 + 5.0035, "{seek}");
        assert_eq!(resumed.end_s, None);
        assert_eq!(seg.first_track(), 1);
        assert_eq!(resumed.first_track(), 1921);
    }
}
