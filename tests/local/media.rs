//! The engine on real media: the sample videos, photos, and broken files made from them.

use crate::common;

use std::path::Path;

use common::{
    Collect, analyzer, bomb_png, child_processes, children_peak_rss_mb, ffmpeg,
    ffprobe_frame_times_ms, in_own_process, photo, video,
};
use domain::{
    AnalysisError, AnalysisOptions, AnalysisSink, EmotionLabel, EmotionScores, FrameResult,
    MediaSource, SinkError,
};
use engine::{Analyzer, EngineConfig, PipelineStage};

#[allow(clippy::result_large_err)] // test helper: the sink is returned with the error on purpose
fn analyze(path: &Path, sample_fps: f64) -> Result<Collect, (AnalysisError, Collect)> {
    let mut sink = Collect::default();
    match analyzer().analyze(
        &MediaSource::from(path),
        &AnalysisOptions::sampled(sample_fps),
        &mut sink,
    ) {
        Ok(_) => Ok(sink),
        Err(e) => Err((e, sink)),
    }
}

/// Dominant label of the mean emotions over the frames with faces in `[from_ms, to_ms)`.
fn dominant_between(frames: &[FrameResult], from_ms: u64, to_ms: u64) -> EmotionLabel {
    let mut sum = [0f32; 8];
    let mut n = 0;
    for face in frames
        .iter()
        .filter(|f| (from_ms..to_ms).contains(&f.t_ms))
        .flat_map(|f| &f.faces)
    {
        for (i, label) in EmotionLabel::ALL.iter().enumerate() {
            sum[i] += face.emotions.get(*label);
        }
        n += 1;
    }
    assert!(n > 0, "no faces between {from_ms} and {to_ms} ms");
    let mut mean = EmotionScores::new(false);
    for (i, label) in EmotionLabel::ALL.iter().enumerate().take(7) {
        mean.set(*label, sum[i] / n as f32);
    }
    mean.dominant()
}

#[test]
fn pexels_clip_is_one_person_sad_then_happy() {
    let out = analyze(&video("WolfgangLanger_Pexels.mp4"), 5.0).expect("analysis");
    let summary = out.finished.expect("finished");
    assert_eq!(
        summary.tracks.len(),
        1,
        "one person, one track: {:?}",
        summary.tracks
    );
    assert!(summary.frames_with_faces as f64 >= 0.95 * summary.frames_analyzed as f64);
    assert_eq!(dominant_between(&out.frames, 0, 7000), EmotionLabel::Sad);
    assert_eq!(
        dominant_between(&out.frames, 10_000, 19_700),
        EmotionLabel::Happy
    );
    let info = out.began.expect("began");
    assert_eq!(
        (info.width, info.height, info.codec.as_str()),
        (640, 360, "h264")
    );
    assert!(
        (19_600..19_800).contains(&info.duration_ms),
        "{}",
        info.duration_ms
    );
    // 19.7 s at 5 fps: one frame per 200 ms slot
    assert!(
        (97..=100).contains(&summary.frames_analyzed),
        "{}",
        summary.frames_analyzed
    );
    assert_eq!(summary.timeline.len(), 20);
}

#[test]
fn every_frame_mode_numbers_frames_consecutively_with_stream_timestamps() {
    // HEVC, variable frame rate (26.5 fps average, 120 tbr): counting frames would get times wrong
    let path = video("noface_face.mov");
    let expected = ffprobe_frame_times_ms(&path);
    let out = analyze(&path, 0.0).expect("analysis");
    assert_eq!(out.frames.len(), expected.len());
    for (i, (frame, t)) in out.frames.iter().zip(&expected).enumerate() {
        assert_eq!(frame.frame, i as u64);
        assert!(
            (frame.t_ms as f64 - t).abs() <= 1.0,
            "frame {i}: {} ms vs ffprobe {t} ms",
            frame.t_ms
        );
    }
}

#[test]
fn the_planners_frame_list_is_ffprobes_packet_list_on_every_sample_video() {
    // ffmpeg's packet list (-c copy -f framecrc, so that the image needs no ffprobe) against
    // ffprobe's, which the planner used before: VFR HEVC .mov with B-frames, h264 .mp4
    for name in [
        "noface_face.mov",
        "face_noface.mov",
        "WolfgangLanger_Pexels.mp4",
        "single_face.mp4",
        "no_face.mp4",
    ] {
        let path = video(name);
        let out = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
            .args(["packet=pts_time,dts_time", "-of", "csv=p=0"])
            .arg(&path)
            .output()
            .expect("ffprobe on PATH");
        let mut probed: Vec<f64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(',').map(|f| f.trim().parse::<f64>().ok());
                let (pts, dts) = (fields.next().flatten(), fields.next().flatten());
                pts.or(dts)
            })
            .collect();
        probed.sort_by(f64::total_cmp);
        let listed = analyzer()
            .frame_times(&MediaSource::from(path.as_path()))
            .unwrap();
        assert_eq!(listed.len(), probed.len(), "{name}");
        for (i, (listed, probed)) in listed.iter().zip(&probed).enumerate() {
            // ffprobe prints microseconds
            assert!(
                (listed - probed).abs() <= 1e-6,
                "{name} packet {i}: {listed} s, ffprobe {probed} s"
            );
        }
    }
}

#[test]
fn sampling_keeps_source_frame_numbers_and_one_frame_per_slot() {
    let path = video("noface_face.mov");
    let times = ffprobe_frame_times_ms(&path);
    let out = analyze(&path, 5.0).expect("analysis");
    let mut last_slot = None;
    for f in &out.frames {
        let t = times[f.frame as usize];
        assert!(
            (f.t_ms as f64 - t).abs() <= 1.0,
            "frame {} is at {t} ms, reported {} ms",
            f.frame,
            f.t_ms
        );
        let slot = f.t_ms / 200;
        assert!(
            last_slot.is_none_or(|s| slot > s),
            "two frames in slot {slot}"
        );
        last_slot = Some(slot);
    }
    assert!(
        (30..=33).contains(&out.frames.len()),
        "{} frames for 6.4 s at 5 fps",
        out.frames.len()
    );
    assert_eq!(
        out.began.unwrap().frame_count,
        0,
        "frame_count is only final at the end"
    );
}

#[test]
fn hevc_movies_decode_and_find_the_man_where_he_is() {
    for (name, face_from_ms, face_to_ms) in [
        ("face_noface.mov", 0, 3000),
        ("noface_face.mov", 3500, 7000),
    ] {
        let out = analyze(&video(name), 5.0).unwrap_or_else(|(e, _)| panic!("{name}: {e}"));
        let with_faces: Vec<&FrameResult> =
            out.frames.iter().filter(|f| !f.faces.is_empty()).collect();
        assert!(
            with_faces.len() >= 8,
            "{name}: only {} frames with a face",
            with_faces.len()
        );
        for f in &with_faces {
            assert!(
                (face_from_ms..face_to_ms).contains(&f.t_ms),
                "{name}: a face at {} ms",
                f.t_ms
            );
            assert!(f.faces[0].bbox.w > 50.0, "{name}: a real face, not a speck");
        }
        assert_eq!(out.began.unwrap().codec, "hevc");
    }
}

#[test]
fn a_video_without_faces_gives_zero_faces_and_no_error() {
    let out = analyze(&video("no_face.mp4"), 5.0).expect("no error");
    let summary = out.finished.unwrap();
    assert!(summary.frames_analyzed >= 19);
    assert_eq!(summary.frames_with_faces, 0);
    assert_eq!(summary.dominant, None);
    assert!(out.frames.iter().all(|f| f.faces.is_empty()));
}

#[test]
fn the_astronaut_photo_is_happy() {
    let out = analyze(&photo("astronaut.png"), 5.0).expect("analysis");
    assert_eq!(out.frames.len(), 1);
    let faces = &out.frames[0].faces;
    assert_eq!(faces.len(), 1);
    assert_eq!(faces[0].dominant, EmotionLabel::Happy);
    assert!(faces[0].emotions.get(EmotionLabel::Happy) > 0.9);
}

#[test]
fn a_rotated_phone_video_is_analysed_upright() {
    let dir = tempfile::tempdir().unwrap();
    let sideways = dir.path().join("sideways.mp4");
    let phone = dir.path().join("phone.mp4");
    // pixels stored rotated, with a display matrix that turns them upright: what phones record
    ffmpeg(&[
        "-i",
        video("single_face.mp4").to_str().unwrap(),
        "-vf",
        "transpose=1",
        "-c:v",
        "libx264",
        "-an",
        sideways.to_str().unwrap(),
    ]);
    ffmpeg(&[
        "-i",
        sideways.to_str().unwrap(),
        "-c",
        "copy",
        "-metadata:s:v:0",
        "rotate=90",
        phone.to_str().unwrap(),
    ]);

    let upright = analyze(&video("single_face.mp4"), 2.0).expect("analysis");
    let rotated = analyze(&phone, 2.0).expect("analysis");
    let info = rotated.began.clone().unwrap();
    assert_eq!((info.width, info.height, info.rotation), (640, 360, 90));
    let faces = |c: &Collect| c.frames.iter().filter(|f| !f.faces.is_empty()).count();
    assert_eq!(faces(&rotated), faces(&upright));
    for (a, b) in upright.frames.iter().zip(&rotated.frames) {
        if let (Some(a), Some(b)) = (a.faces.first(), b.faces.first()) {
            assert!(
                (a.bbox.x - b.bbox.x).abs() < 15.0 && (a.bbox.y - b.bbox.y).abs() < 15.0,
                "{:?} vs {:?}",
                a.bbox,
                b.bbox
            );
        }
    }
}

#[test]
fn tracks_stay_stable_with_sparse_detection() {
    // detector every 250 ms of video, tracked boxes in between: still one person
    let config = EngineConfig {
        detect_interval_ms: 250,
        ..Default::default()
    };
    let engine = Analyzer::new(config).unwrap();
    let mut sink = Collect::default();
    let outcome = engine
        .analyze(
            &MediaSource::File(video("single_face.mp4")),
            &AnalysisOptions::sampled(0.0),
            &mut sink,
        )
        .unwrap();
    assert_eq!(outcome.summary.tracks.len(), 1);
    assert_eq!(sink.frames.len(), 72);
    assert!(
        outcome.timings.detector_runs <= 11,
        "{} detector runs for 2.4 s",
        outcome.timings.detector_runs
    );
    assert!(
        sink.frames.iter().all(|f| f.faces.len() == 1),
        "every frame still has the face"
    );
}

// ---- bad input: a clear error, and nothing already analysed is lost ----

fn fixture(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn a_zero_byte_file_is_reported_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (err, _) = analyze(&fixture(dir.path(), "empty.mp4", b""), 5.0).unwrap_err();
    assert!(matches!(err, AnalysisError::EmptyFile { .. }), "{err:?}");
    assert!(err.to_string().contains("empty (0 bytes)"));
    assert!(err.is_bad_input());
}

#[test]
fn a_text_file_named_mp4_is_not_a_media_file() {
    let dir = tempfile::tempdir().unwrap();
    let (err, sink) = analyze(
        &fixture(
            dir.path(),
            "notes.mp4",
            b"these are my meeting notes, not a video\n",
        ),
        5.0,
    )
    .unwrap_err();
    assert!(matches!(err, AnalysisError::NotMediaFile { .. }), "{err:?}");
    assert!(
        err.to_string().contains("not a video or image file"),
        "{err}"
    );
    assert!(sink.began.is_none());
}

#[test]
fn a_truncated_mp4_delivers_what_it_decoded_then_says_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let whole = std::fs::read(video("WolfgangLanger_Pexels.mp4")).unwrap();
    // the index (moov) is at the front of this file, so half of it still decodes
    let cut = fixture(dir.path(), "cut.mp4", &whole[..whole.len() / 2]);
    let (err, sink) = analyze(&cut, 5.0).unwrap_err();
    assert!(matches!(err, AnalysisError::Truncated { .. }), "{err:?}");
    assert!(err.to_string().contains("truncated"), "{err}");
    assert!(
        sink.frames.len() >= 20,
        "frames before the cut reached the sink: {}",
        sink.frames.len()
    );
    assert!(sink.finished.is_none());
}

#[test]
fn a_truncated_mp4_without_its_index_says_truncated_not_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let moov_last = dir.path().join("moov_last.mp4");
    ffmpeg(&[
        "-i",
        video("single_face.mp4").to_str().unwrap(),
        "-c",
        "copy",
        moov_last.to_str().unwrap(),
    ]);
    let whole = std::fs::read(&moov_last).unwrap();
    let cut = fixture(dir.path(), "cut.mp4", &whole[..whole.len() * 2 / 3]);
    let (err, _) = analyze(&cut, 5.0).unwrap_err();
    assert!(matches!(err, AnalysisError::Truncated { .. }), "{err:?}");
}

#[test]
fn an_audio_only_file_has_no_video_stream() {
    let dir = tempfile::tempdir().unwrap();
    let audio = dir.path().join("voice.m4a");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=duration=1",
        "-c:a",
        "aac",
        audio.to_str().unwrap(),
    ]);
    let (err, _) = analyze(&audio, 5.0).unwrap_err();
    assert!(
        matches!(err, AnalysisError::NoVideoStream { .. }),
        "{err:?}"
    );
}

#[test]
fn a_codec_without_a_decoder_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(video("single_face.mp4")).unwrap();
    // rename the sample entry's codec (avc1) to a tag no decoder knows
    let stsd = bytes.windows(4).position(|w| w == b"stsd").unwrap();
    let avc1 = stsd + bytes[stsd..].windows(4).position(|w| w == b"avc1").unwrap();
    bytes[avc1..avc1 + 4].copy_from_slice(b"zzzz");
    let (err, _) = analyze(&fixture(dir.path(), "odd.mp4", &bytes), 5.0).unwrap_err();
    assert!(
        matches!(&err, AnalysisError::UnsupportedCodec { codec, .. } if codec == "unknown (zzzz)"),
        "{err:?}"
    );
}

#[test]
fn a_missing_file_and_a_broken_image_are_named() {
    let (err, _) = analyze(Path::new("/nonexistent/video.mp4"), 5.0).unwrap_err();
    assert!(matches!(err, AnalysisError::InputNotFound(_)), "{err:?}");
    let dir = tempfile::tempdir().unwrap();
    let (err, _) = analyze(
        &fixture(
            dir.path(),
            "photo.jpg",
            b"\xff\xd8\xff\xe0 not really a jpeg",
        ),
        5.0,
    )
    .unwrap_err();
    assert!(matches!(err, AnalysisError::Image { .. }), "{err:?}");
}

#[test]
fn corrupt_data_mid_stream_is_an_error_after_the_good_frames() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(video("WolfgangLanger_Pexels.mp4")).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 200_000] {
        *b = 0x5a;
    }
    let path = fixture(dir.path(), "corrupt.mp4", &bytes);
    let (err, sink) = analyze(&path, 5.0).unwrap_err();
    assert!(
        matches!(err, AnalysisError::CorruptStream { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("corrupt"), "{err}");
    assert!(
        sink.frames.len() >= 20,
        "{} frames delivered before the damage",
        sink.frames.len()
    );
}

/// A sink that fails on the third frame, like a database going away mid-analysis.
struct FailingSink(u32);

impl AnalysisSink for FailingSink {
    fn frame(&mut self, _frame: &FrameResult) -> Result<(), SinkError> {
        self.0 += 1;
        if self.0 == 3 {
            Err("database unavailable".into())
        } else {
            Ok(())
        }
    }
}

#[test]
fn a_failing_sink_stops_the_analysis_promptly_and_says_why() {
    let started = std::time::Instant::now();
    let mut sink = FailingSink(0);
    let err = analyzer()
        .analyze(
            &MediaSource::File(video("WolfgangLanger_Pexels.mp4")),
            &AnalysisOptions::sampled(0.0),
            &mut sink,
        )
        .unwrap_err();
    assert!(
        matches!(&err, AnalysisError::Sink(m) if m.contains("database unavailable")),
        "{err:?}"
    );
    assert_eq!(sink.0, 3, "no frame after the failure");
    // ffmpeg is stopped, not drained: far less than a full every-frame analysis
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // and the engine is usable again afterwards
    assert!(analyze(&video("single_face.mp4"), 1.0).is_ok());
}

// ---- hostile input: refused before decoding, panics contained, ffmpeg always reaped ----

/// No child process is left running or as a zombie. Only meaningful in a test that runs in a
/// process of its own ([`in_own_process`]): other tests' ffmpeg children would show up here.
fn assert_no_children(after: &str) {
    assert_eq!(
        child_processes(),
        vec![],
        "child processes left after {after}"
    );
}

#[test]
fn a_decompression_bomb_is_refused_from_its_header_and_ffmpeg_is_reaped() {
    // 16000x16000: once a panic in the detector (a frame buffer shorter than its size), and a
    // stuck job; now refused from the header, named .mp4 (ffmpeg decodes it) and as .png
    let bomb = bomb_png();
    if !in_own_process(
        "media::a_decompression_bomb_is_refused_from_its_header_and_ffmpeg_is_reaped",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let as_mp4 = dir.path().join("bomb.mp4");
    std::fs::copy(&bomb, &as_mp4).unwrap();
    for path in [&as_mp4, &bomb] {
        let (err, sink) = analyze(path, 5.0).unwrap_err();
        assert!(
            matches!(
                err,
                AnalysisError::FrameTooLarge {
                    width: 16000,
                    height: 16000,
                    ..
                }
            ),
            "{}: {err:?}",
            path.display()
        );
        assert!(err.is_bad_input(), "the worker records it as FAILED");
        let message = err.to_string();
        assert!(
            message.contains("16000x16000") && message.contains("limit is 160 megapixels"),
            "{message}"
        );
        assert!(
            !message.contains("bomb"),
            "no path in the message: {message}"
        );
        assert!(sink.began.is_none(), "refused before the analysis began");
        assert_no_children(&format!("analysing {}", path.display()));
    }
    let err = analyzer()
        .probe(&MediaSource::from(as_mp4.as_path()))
        .unwrap_err();
    assert!(
        matches!(err, AnalysisError::FrameTooLarge { .. }),
        "{err:?}"
    );
    assert_no_children("probing it");
    // listing its frames (for planning; the worker only does it after a probe passed) fails
    // the same way, and the ffmpeg that tried is reaped too
    let err = analyzer()
        .frame_times(&MediaSource::from(as_mp4.as_path()))
        .unwrap_err();
    assert!(
        matches!(&err, AnalysisError::Ffmpeg(m) if m.contains("exceeds specified max pixel count")),
        "{err:?}"
    );
    assert_no_children("listing its frames");
    // and no ffmpeg decoded it to find its size (768 MB of RGB): each was told the limit
    // (-max_pixels), and the largest of them stayed small
    let peak = children_peak_rss_mb();
    assert!(peak < 300, "a child process peaked at {peak} MB");

    // the limit is configuration, and the engine is still usable afterwards
    let strict = Analyzer::new(EngineConfig {
        max_frame_pixels: 640 * 360 - 1,
        ..EngineConfig::default()
    })
    .unwrap();
    let err = strict
        .analyze(
            &MediaSource::File(video("single_face.mp4")),
            &AnalysisOptions::sampled(1.0),
            &mut Collect::default(),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            AnalysisError::FrameTooLarge {
                width: 640,
                height: 360,
                ..
            }
        ),
        "{err:?}"
    );
    assert_no_children("a video over a configured limit");
    assert!(analyze(&video("single_face.mp4"), 1.0).is_ok());
    assert_no_children("a normal analysis");
}

#[test]
fn a_12000_pixel_wide_frame_is_legitimate_input() {
    let dir = tempfile::tempdir().unwrap();
    let wide_mp4 = dir.path().join("wide.mp4");
    let wide_png = dir.path().join("wide.png");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=gray:size=12000x400:rate=5",
        "-frames:v",
        "3",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        wide_mp4.to_str().unwrap(),
    ]);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=gray:size=12000x400",
        "-frames:v",
        "1",
        wide_png.to_str().unwrap(),
    ]);
    for (path, frames) in [(&wide_mp4, 3), (&wide_png, 1)] {
        let out = analyze(path, 0.0).unwrap_or_else(|(e, _)| panic!("{}: {e}", path.display()));
        let info = out.began.expect("began");
        assert_eq!(
            (info.width, info.height),
            (12000, 400),
            "{}",
            path.display()
        );
        assert_eq!(out.frames.len(), frames, "{}", path.display());
        assert_eq!(out.finished.expect("finished").frames_with_faces, 0);
    }
}

/// A sink that panics on the second frame, like a bug in a result writer.
struct PanickingSink(u32);

impl AnalysisSink for PanickingSink {
    fn frame(&mut self, _frame: &FrameResult) -> Result<(), SinkError> {
        self.0 += 1;
        assert!(self.0 < 2, "the sink broke");
        Ok(())
    }
}

#[test]
fn a_panic_in_any_stage_is_an_internal_error_and_ffmpeg_is_reaped() {
    if !in_own_process("media::a_panic_in_any_stage_is_an_internal_error_and_ffmpeg_is_reaped") {
        return;
    }
    let clip = video("WolfgangLanger_Pexels.mp4");
    for (stage, name) in [
        (PipelineStage::Decode, "decoder stage"),
        (PipelineStage::Detect, "detector stage"),
        (PipelineStage::Classify, "classifier stage"),
    ] {
        let engine = Analyzer::new(EngineConfig {
            fault: Some(stage),
            ..EngineConfig::default()
        })
        .unwrap();
        for input in [clip.clone(), photo("astronaut.png")] {
            let mut sink = Collect::default();
            let err = engine
                .analyze(
                    &MediaSource::from(input.as_path()),
                    &AnalysisOptions::sampled(0.0),
                    &mut sink,
                )
                .unwrap_err();
            assert!(
                matches!(&err, AnalysisError::Internal(m)
                    if m.contains(&format!("the {name} panicked: injected fault in the {name}"))),
                "{stage:?} on {}: {err:?}",
                input.display()
            );
            assert!(!err.is_bad_input(), "a crash, not the input's fault");
            assert!(sink.finished.is_none());
            assert_no_children(&format!("a panic in the {name}"));
        }
        // the image's classifier panicked holding the session's lock, which is taken back
        engine
            .classify_image(&photo("astronaut.png"))
            .unwrap_or_else(|e| panic!("{stage:?}: the engine is usable again: {e}"));
    }

    // a panic in the sink, on the classifier thread, with ffmpeg still decoding
    let mut sink = PanickingSink(0);
    let err = analyzer()
        .analyze(
            &MediaSource::from(clip.as_path()),
            &AnalysisOptions::sampled(0.0),
            &mut sink,
        )
        .unwrap_err();
    assert!(
        matches!(&err, AnalysisError::Internal(m) if m.contains("classifier stage panicked: the sink broke")),
        "{err:?}"
    );
    assert_eq!(sink.0, 2);
    assert_no_children("a panic in the sink");
    // the engine (its ONNX sessions, behind locks) is still usable
    let out = analyze(&video("single_face.mp4"), 2.0).expect("analysis after a panic");
    assert!(out.finished.is_some());
    assert_no_children("an analysis after the panics");
}

#[test]
fn a_video_with_no_frames_says_so() {
    let dir = tempfile::tempdir().unwrap();
    // a video stream and not one frame in it
    let empty_track = dir.path().join("empty_track.avi");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=size=64x64",
        "-frames:v",
        "0",
        empty_track.to_str().unwrap(),
    ]);
    // a stream header and nothing after it
    let header_only = fixture(
        dir.path(),
        "header_only.y4m",
        b"YUV4MPEG2 W64 H64 F25:1 Ip A1:1 C420jpeg\n",
    );
    for path in [&empty_track, &header_only] {
        let (err, sink) = analyze(path, 5.0).unwrap_err();
        assert!(
            matches!(err, AnalysisError::NoFrames),
            "{}: {err:?}",
            path.display()
        );
        assert_eq!(err.to_string(), "the video has no frames");
        assert!(err.is_bad_input());
        assert!(sink.began.is_none());
        let err = analyzer()
            .probe(&MediaSource::from(path.as_path()))
            .unwrap_err();
        assert!(matches!(err, AnalysisError::NoFrames), "{err:?}");
    }
}

#[test]
fn a_4k_video_is_analysed_scaled_down_and_reported_in_its_own_pixels() {
    // ffmpeg hands out frames of at most 1920 px (EngineConfig::analysis_side); boxes, landmarks
    // and the video's size stay in the source's pixels
    let dir = tempfile::tempdir().unwrap();
    let uhd = dir.path().join("pexels-4k.mp4");
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-nostdin", "-t", "2", "-i"])
        .arg(video("WolfgangLanger_Pexels.mp4"))
        .args([
            "-vf",
            "scale=3840:2160",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ])
        .arg(&uhd)
        .status()
        .expect("ffmpeg on PATH");
    assert!(status.success());
    let big = analyze(&uhd, 5.0).expect("analysis");
    let small = analyze(&video("WolfgangLanger_Pexels.mp4"), 5.0).expect("analysis");
    let info = big.began.as_ref().unwrap();
    assert_eq!((info.width, info.height), (3840, 2160));
    assert!(!big.frames.is_empty());
    for frame in &big.frames {
        let twin = small
            .frames
            .iter()
            .find(|f| f.frame == frame.frame)
            .unwrap();
        assert_eq!(frame.faces.len(), twin.faces.len(), "frame {}", frame.frame);
        for (face, at_360p) in frame.faces.iter().zip(&twin.faces) {
            // 6x the 360p box, within 2 % of the frame
            let near = |a: f64, b: f64, side: f64| (a - 6.0 * b).abs() < 0.02 * side;
            let (b, s) = (face.bbox, at_360p.bbox);
            assert!(
                near(b.x, s.x, 3840.0)
                    && near(b.y, s.y, 2160.0)
                    && near(b.w, s.w, 3840.0)
                    && near(b.h, s.h, 2160.0),
                "frame {}: {b:?} vs 6 x {s:?}",
                frame.frame
            );
            let (eye, eye_360p) = (face.landmarks.0[0], at_360p.landmarks.0[0]);
            assert!(
                near(f64::from(eye[0]), f64::from(eye_360p[0]), 3840.0),
                "{eye:?} vs {eye_360p:?}"
            );
        }
    }
}

#[test]
fn every_frame_of_a_variable_rate_movie_is_analysed_to_its_end() {
    // two frames of this HEVC movie fall on one tick of a clock derived from its frame rate:
    // ffmpeg used to fail the stream at its end ("non monotonically increasing dts")
    let path = video("face_noface.mov");
    let out = analyze(&path, 0.0).expect("analysis");
    assert_eq!(out.frames.len(), ffprobe_frame_times_ms(&path).len());
    assert!(out.finished.is_some());
}

#[test]
fn the_detector_runs_once_per_200_ms_of_stream_time_and_faces_are_carried_between() {
    // every frame of the 24 fps Pexels clip: detections on the first frame of each 200 ms slot
    // of the stream's time, the tracked face on every frame
    let mut sink = Collect::default();
    let outcome = analyzer()
        .analyze(
            &MediaSource::File(video("WolfgangLanger_Pexels.mp4")),
            &AnalysisOptions::sampled(0.0),
            &mut sink,
        )
        .unwrap();
    let slots: std::collections::BTreeSet<u64> = sink
        .frames
        .iter()
        .map(|f| (f.t_ms as f64 / 200.0 + domain::SLOT_EPSILON).floor() as u64)
        .collect();
    assert_eq!(outcome.timings.detector_runs, slots.len() as u64);
    assert!(outcome.timings.detector_runs < sink.frames.len() as u64 / 4);
    assert!(
        sink.frames.iter().all(|f| f.faces.len() == 1),
        "the face on every frame"
    );
}
