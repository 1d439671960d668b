//! The `deepemotion` command as a user runs it.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::{photo, shared_dir, video};

fn deepemotion(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_deepemotion"));
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("deepemotion runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failure is exactly one line on stderr and a non-zero exit.
fn assert_one_line_error(o: &Output, needle: &str) {
    assert!(!o.status.success(), "should fail");
    let err = stderr(o);
    assert_eq!(err.lines().count(), 1, "one line on stderr, got: {err}");
    assert!(
        err.starts_with("deepemotion: error: ") && err.contains(needle),
        "{err}"
    );
    assert!(o.stdout.is_empty(), "nothing on stdout");
}

#[test]
fn analyze_writes_the_documented_json() {
    let o = deepemotion(
        &[
            "analyze",
            video("single_face.mp4").to_str().unwrap(),
            "--fps",
            "2",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        o.stderr.is_empty(),
        "no progress bar when stderr is not a terminal: {}",
        stderr(&o)
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("one JSON document");
    let keys: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for k in ["video", "sample_fps", "model", "frames", "summary"] {
        assert!(keys.contains(&k), "missing {k}");
    }
    for k in [
        "duration_ms",
        "width",
        "height",
        "fps",
        "frame_count",
        "codec",
    ] {
        assert!(doc["video"].get(k).is_some(), "video.{k}");
    }
    assert_eq!(doc["video"]["frame_count"], 72);
    assert_eq!(doc["sample_fps"], 2.0);
    assert_eq!(doc["model"]["classifier"], "faceapi");
    let labels = doc["model"]["labels"].as_array().unwrap();
    assert_eq!(labels.len(), 7);
    let frames = doc["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 5, "2.4 s at 2 fps");
    let face = &frames[0]["faces"][0];
    assert_eq!(face["track"], 1);
    assert_eq!(face["box"].as_array().unwrap().len(), 4);
    assert_eq!(face["landmarks"].as_array().unwrap().len(), 5);
    let sum: f64 = face["emotions"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!((sum - 1.0).abs() < 1e-3, "probabilities sum to 1: {sum}");
    assert!(
        face["emotions"]
            .get(face["dominant"].as_str().unwrap())
            .is_some()
    );
    for k in [
        "frames_analyzed",
        "frames_with_faces",
        "dominant",
        "distribution",
        "mean",
        "tracks",
        "timeline",
    ] {
        assert!(doc["summary"].get(k).is_some(), "summary.{k}");
    }
    assert_eq!(doc["summary"]["tracks"][0]["frames"], 5);
}

#[test]
fn csv_has_one_row_per_face_and_summary_is_readable() {
    let input = video("single_face.mp4");
    let o = deepemotion(
        &[
            "analyze",
            input.to_str().unwrap(),
            "--fps",
            "2",
            "--format",
            "csv",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("frame,t_ms,track,person,x,y,w,h,score,dominant,smoothed_dominant,angry,")
    );
    assert_eq!(lines.count(), 5);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("summary.txt");
    let o = deepemotion(
        &[
            "analyze",
            input.to_str().unwrap(),
            "--format",
            "summary",
            "-o",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.contains("frames analysed: 12, with faces: 12") && text.contains("person 1:"),
        "{text}"
    );
}

#[test]
fn images_are_one_frame_inputs_and_classify_prints_json_lines() {
    let o = deepemotion(&["analyze", photo("astronaut.png").to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(doc["frames"][0]["faces"][0]["dominant"], "happy");

    let crops = shared_dir().join("data/expressions/fer2013_test_subset/happiness");
    let mut images: Vec<String> = std::fs::read_dir(&crops)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    images.sort();
    images.truncate(3);
    let mut args = vec!["classify"];
    args.extend(images.iter().map(String::as_str));
    let o = deepemotion(&args, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["path"], images[0]);
    assert!(lines[0]["emotions"].get("happy").is_some() && lines[0]["dominant"].is_string());
}

#[test]
fn other_models_are_configuration() {
    let o = deepemotion(
        &[
            "--model",
            "mini-xception",
            "analyze",
            photo("astronaut.png").to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(doc["model"]["classifier"], "mini-xception");
    assert_eq!(doc["frames"][0]["faces"][0]["dominant"], "happy");

    // a user-supplied spec: the FER+ model described in a JSON file next to it
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/emotion_ferplus_smallres_40.onnx"),
        dir.path().join("mine.onnx"),
    )
    .expect("ferplus model present (scripts/setup.sh with DEEPEMOTION_MODEL_MIRROR)");
    let spec = dir.path().join("mine.json");
    std::fs::write(
        &spec,
        r#"{"name": "my-ferplus", "kind": "classifier", "file": "mine.onnx",
            "classifier": {"input": "face40", "output": "ferplus_probs", "layout": "nchw", "size": 40, "resize_to": 44,
              "color": "grey", "pixel_scale": 0.00392156862745098, "mean": [0.5], "std": [0.25], "flip_tta": true,
              "labels": ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]}}"#,
    )
    .unwrap();
    let o = deepemotion(
        &[
            "--model-spec",
            spec.to_str().unwrap(),
            "analyze",
            photo("astronaut.png").to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(doc["model"]["classifier"], "my-ferplus");
    assert_eq!(doc["model"]["labels"].as_array().unwrap().len(), 8);
    let face = &doc["frames"][0]["faces"][0];
    assert_eq!(face["dominant"], "happy");
    assert!(
        face["emotions"].get("contempt").is_some(),
        "contempt reported by an 8-class model"
    );
}

#[test]
fn bad_input_is_one_clear_line_and_a_failing_exit() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    assert_one_line_error(
        &deepemotion(&["analyze", empty.to_str().unwrap()], &[]),
        "empty (0 bytes)",
    );
    let text = dir.path().join("notes.mp4");
    std::fs::write(&text, b"not a video at all").unwrap();
    assert_one_line_error(
        &deepemotion(&["analyze", text.to_str().unwrap()], &[]),
        "not a video or image file",
    );
    assert_one_line_error(
        &deepemotion(&["analyze", "/nonexistent.mp4"], &[]),
        "input file not found",
    );
    assert_one_line_error(
        &deepemotion(
            &[
                "analyze",
                video("single_face.mp4").to_str().unwrap(),
                "--fps=-1",
            ],
            &[],
        ),
        "--fps",
    );
}

#[test]
fn missing_tools_and_models_are_named() {
    let input = video("single_face.mp4");
    let input = input.to_str().unwrap();
    assert_one_line_error(
        &deepemotion(
            &["analyze", input],
            &[("DEEPEMOTION_FFMPEG", "/nonexistent/ffmpeg")],
        ),
        "ffmpeg not found",
    );
    assert_one_line_error(
        &deepemotion(
            &["analyze", input],
            &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so.1")],
        ),
        "ONNX Runtime library not found",
    );
    let dir = tempfile::tempdir().unwrap();
    assert_one_line_error(
        &deepemotion(
            &["analyze", input],
            &[("DEEPEMOTION_MODELS_DIR", dir.path().to_str().unwrap())],
        ),
        "not found at",
    );
    // a model file with the wrong bytes
    std::fs::write(dir.path().join("yunet_s_dynamic.onnx"), b"tampered").unwrap();
    assert_one_line_error(
        &deepemotion(
            &["analyze", input],
            &[("DEEPEMOTION_MODELS_DIR", dir.path().to_str().unwrap())],
        ),
        "sha256",
    );
    assert_one_line_error(
        &deepemotion(&["--model", "happy-net", "analyze", input], &[]),
        "unknown model \"happy-net\"",
    );
}

#[test]
fn a_decompression_bomb_and_an_empty_video_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    // 16000x16000 pixels in 790 KB, uploaded as a video: once a panic in the detector
    let bomb = dir.path().join("bomb.mp4");
    std::fs::copy(common::bomb_png(), &bomb).unwrap();
    let o = deepemotion(&["analyze", bomb.to_str().unwrap()], &[]);
    assert_one_line_error(&o, "the frames are 16000x16000 pixels");
    assert!(
        stderr(&o).contains("limit is 160 megapixels"),
        "{}",
        stderr(&o)
    );
    // the limit is configuration
    assert_one_line_error(
        &deepemotion(
            &["analyze", video("single_face.mp4").to_str().unwrap()],
            &[("DEEPEMOTION_MAX_FRAME_PIXELS", "100000")],
        ),
        "the frames are 640x360 pixels",
    );
    assert_one_line_error(
        &deepemotion(
            &["analyze", bomb.to_str().unwrap()],
            &[("DEEPEMOTION_MAX_FRAME_PIXELS", "400000000")],
        ),
        "DEEPEMOTION_MAX_FRAME_PIXELS",
    );
    let empty = dir.path().join("empty.avi");
    common::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=size=64x64",
        "-frames:v",
        "0",
        empty.to_str().unwrap(),
    ]);
    assert_one_line_error(
        &deepemotion(&["analyze", empty.to_str().unwrap()], &[]),
        "the video has no frames",
    );
}
