//! People, not tracks: clips cut from the sample videos with ffmpeg, analysed by the real engine
//! (YuNet, the emotion model, MobileFaceNet), then linked into people and smoothed as the CLI
//! and the worker do it.

use crate::common;

use std::path::{Path, PathBuf};

use common::{Collect, analyzer, ffmpeg, video};
use domain::assembly::PeopleSink;
use domain::{AnalysisOptions, EmotionLabel, FrameResult, MediaSource, Summary};

const PEXELS: &str = "WolfgangLanger_Pexels.mp4";
/// A man filmed against a door (a different person from the Pexels woman).
const MAN: &str = "single_face.mp4";

/// Analyses `input` at `fps` and returns the frames and summary with people, as the CLI writes
/// them.
fn people_of(input: &Path, fps: f64) -> (Vec<FrameResult>, Summary) {
    let engine = analyzer();
    let mut collect = Collect::default();
    {
        let config = engine.config();
        let mut sink = PeopleSink::new(
            &mut collect,
            config.people,
            config.smoothing,
            engine.has_contempt(),
        )
        .unwrap();
        engine
            .analyze(
                &MediaSource::from(input),
                &AnalysisOptions::sampled(fps),
                &mut sink,
            )
            .unwrap();
    }
    (collect.frames, collect.finished.unwrap())
}

fn clip(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let mut all: Vec<&str> = args.to_vec();
    all.extend([
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-an",
    ]);
    all.push(out.to_str().unwrap());
    ffmpeg(&all);
    out
}

/// Every face has a person, and the summary's people account for every face.
fn assert_every_face_has_a_person(frames: &[FrameResult], summary: &Summary) {
    let faces = frames.iter().flat_map(|f| &f.faces).count() as u64;
    assert!(faces > 0);
    for face in frames.iter().flat_map(|f| &f.faces) {
        let person = face.person.expect("every face has a person");
        let entry = summary
            .people
            .iter()
            .find(|p| p.person == person)
            .expect("the person is in the summary");
        assert!(entry.tracks.contains(&face.track));
        assert!(face.smoothed.is_some() && face.smoothed_dominant.is_some());
    }
    assert_eq!(summary.people.iter().map(|p| p.frames).sum::<u64>(), faces);
}

#[test]
fn the_same_person_before_and_after_a_faceless_gap_is_one_person() {
    let dir = tempfile::tempdir().unwrap();
    let pexels = video(PEXELS);
    let input = clip(
        dir.path(),
        "gap.mp4",
        &[
            "-i",
            pexels.to_str().unwrap(),
            "-filter_complex",
            "[0:v]trim=0:5,setpts=PTS-STARTPTS[a];\
             color=c=black:s=640x360:r=24000/1001:d=3[b];\
             [0:v]trim=10:15,setpts=PTS-STARTPTS[c];\
             [a][b][c]concat=n=3:v=1:a=0[v]",
            "-map",
            "[v]",
        ],
    );
    let (frames, summary) = people_of(&input, 5.0);
    assert_every_face_has_a_person(&frames, &summary);
    assert_eq!(summary.people.len(), 1, "{:#?}", summary.people);
    let person = &summary.people[0];
    assert!(
        person.tracks.len() >= 2,
        "the gap ends the first track: {person:?}"
    );
    assert!(
        person.first_ms < 1000 && person.last_ms > 12_000,
        "{person:?}"
    );
}

#[test]
fn two_people_side_by_side_are_two_people_even_when_they_look_alike() {
    // the clip beside its own mirror image: the same face twice, on screen together
    let dir = tempfile::tempdir().unwrap();
    let pexels = video(PEXELS);
    let input = clip(
        dir.path(),
        "mirror.mp4",
        &[
            "-t",
            "4",
            "-i",
            pexels.to_str().unwrap(),
            "-filter_complex",
            "[0:v]split[l][m];[m]hflip[r];[l][r]hstack[v]",
            "-map",
            "[v]",
        ],
    );
    let (frames, summary) = people_of(&input, 5.0);
    assert_every_face_has_a_person(&frames, &summary);
    assert_eq!(summary.people.len(), 2, "{:#?}", summary.people);
    for frame in frames.iter().filter(|f| f.faces.len() == 2) {
        let left = frame
            .faces
            .iter()
            .min_by(|a, b| a.bbox.x.total_cmp(&b.bbox.x));
        let right = frame
            .faces
            .iter()
            .max_by(|a, b| a.bbox.x.total_cmp(&b.bbox.x));
        assert_eq!(left.unwrap().person, Some(1), "frame {}", frame.frame);
        assert_eq!(right.unwrap().person, Some(2), "frame {}", frame.frame);
    }
}

/// The man's clip, scaled and shifted so that his face lands where the woman's is in the Pexels
/// clip: after a cut from her to him the tracker, which matches boxes only, would continue her
/// track.
fn cut_to_someone_else(dir: &Path) -> PathBuf {
    let (pexels, man) = (video(PEXELS), video(MAN));
    clip(
        dir,
        "cut.mp4",
        &[
            "-i",
            pexels.to_str().unwrap(),
            "-i",
            man.to_str().unwrap(),
            "-filter_complex",
            "[0:v]trim=0:3,setpts=PTS-STARTPTS,fps=24[a];\
             [1:v]trim=0:2.4,setpts=PTS-STARTPTS,scale=960:540,crop=640:360:0:40,fps=24[b];\
             [a][b]concat=n=2:v=1:a=0[v]",
            "-map",
            "[v]",
        ],
    )
}

#[test]
fn a_different_person_at_the_same_spot_after_a_cut_is_a_second_person() {
    let dir = tempfile::tempdir().unwrap();
    let input = cut_to_someone_else(dir.path());
    let (frames, summary) = people_of(&input, 0.0);
    assert_every_face_has_a_person(&frames, &summary);
    assert_eq!(summary.people.len(), 2, "{:#?}", summary.people);
    let person_at = |t_ms: u64| {
        frames
            .iter()
            .find(|f| f.t_ms >= t_ms && !f.faces.is_empty())
            .map(|f| f.faces[0].person)
    };
    assert_eq!(person_at(500), Some(Some(1)));
    assert_eq!(person_at(4000), Some(Some(2)));
    // the split is at the cut: no frame of his is counted as hers
    for frame in frames.iter().filter(|f| f.t_ms >= 3100) {
        for face in &frame.faces {
            assert_eq!(
                face.person,
                Some(2),
                "frame {} at {} ms",
                frame.frame,
                frame.t_ms
            );
        }
    }
}

#[test]
fn the_pexels_timeline_is_sad_then_happy_without_flicker_at_every_frame() {
    let (frames, summary) = people_of(&video(PEXELS), 0.0);
    assert_every_face_has_a_person(&frames, &summary);
    assert_eq!(summary.people.len(), 1, "{:#?}", summary.people);
    let main: Vec<(u64, EmotionLabel, EmotionLabel)> = frames
        .iter()
        .filter_map(|f| {
            f.main_face()
                .map(|face| (f.t_ms, face.dominant, face.smoothed_dominant.unwrap()))
        })
        .collect();
    let minutes = (main.last().unwrap().0 - main[0].0) as f64 / 60_000.0;
    let changes = |pick: fn(&(u64, EmotionLabel, EmotionLabel)) -> EmotionLabel| {
        main.windows(2)
            .filter(|w| pick(&w[0]) != pick(&w[1]))
            .count() as f64
            / minutes
    };
    let (raw, smoothed) = (changes(|m| m.1), changes(|m| m.2));
    println!("dominant changes per minute: raw {raw:.1}, smoothed {smoothed:.1}");
    assert!(smoothed <= 15.0, "{smoothed:.1} changes a minute");
    assert!(raw > smoothed * 3.0, "raw {raw:.1}, smoothed {smoothed:.1}");
    for (t, _, label) in &main {
        if *t < 5500 {
            assert_eq!(*label, EmotionLabel::Sad, "at {t} ms");
        }
        if *t >= 10_500 {
            assert_eq!(*label, EmotionLabel::Happy, "at {t} ms");
        }
    }
    let person = &summary.people[0];
    assert_eq!(person.frames, main.len() as u64);
    // the raw per-frame fields keep their meaning: the model's own output
    let face = &frames[0].faces[0];
    assert_eq!(face.dominant, face.emotions.dominant());
}

#[test]
fn a_person_who_comes_back_after_someone_else_keeps_their_number() {
    // the woman, the man (face_noface.mov) in her place, the woman again later in her clip
    let dir = tempfile::tempdir().unwrap();
    let (pexels, man) = (video(PEXELS), video("face_noface.mov"));
    let input = clip(
        dir.path(),
        "aba.mp4",
        &[
            "-i",
            pexels.to_str().unwrap(),
            "-i",
            man.to_str().unwrap(),
            "-filter_complex",
            "[0:v]trim=0:4,setpts=PTS-STARTPTS,fps=24[a];\
             [1:v]trim=0:3,setpts=PTS-STARTPTS,scale=640:360,fps=24[b];\
             [0:v]trim=12:16,setpts=PTS-STARTPTS,fps=24[c];\
             [a][b][c]concat=n=3:v=1:a=0[v]",
            "-map",
            "[v]",
        ],
    );
    let (frames, summary) = people_of(&input, 5.0);
    assert_every_face_has_a_person(&frames, &summary);
    assert_eq!(summary.people.len(), 2, "{:#?}", summary.people);
    let (her, him) = (&summary.people[0], &summary.people[1]);
    assert!(
        her.tracks.len() >= 2 && her.first_ms < 500 && her.last_ms > 10_000,
        "{her:?}"
    );
    assert!(him.first_ms >= 4000 && him.last_ms < 7100, "{him:?}");
    for frame in &frames {
        let expected = if (4000..7000).contains(&frame.t_ms) {
            2
        } else {
            1
        };
        for face in &frame.faces {
            assert_eq!(face.person, Some(expected), "at {} ms", frame.t_ms);
        }
    }
}
