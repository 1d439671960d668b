//! Writers for analysis results: the stable JSON document, CSV (one row per face per frame) and a
//! short human-readable summary. All are [`AnalysisSink`]s, so they stream.

use std::fmt::Write as _;
use std::io::{BufWriter, Seek, SeekFrom, Write};

use serde::Serialize;

use crate::{AnalysisSink, SinkError};
use crate::{EmotionLabel, EmotionScores, FrameResult, ModelInfo, Summary, VideoInfo};

/// The header of the JSON document; frames and summary follow.
#[derive(Serialize)]
struct Head<'a> {
    video: &'a VideoInfo,
    sample_fps: f64,
    model: &'a ModelInfo,
}

/// Writes `{"video", "sample_fps", "model", "frames": [...], "summary"}`.
///
/// `video.frame_count` is only known at the end, so frames are spooled to a temporary file and the
/// document is assembled in `finish`: memory stays flat for any video length.
pub struct JsonReport<W: Write> {
    out: W,
    head: Option<(ModelInfo, f64)>,
    spool: BufWriter<std::fs::File>,
    frames: u64,
}

impl<W: Write> JsonReport<W> {
    pub fn new(out: W) -> std::io::Result<Self> {
        Ok(Self {
            out,
            head: None,
            spool: BufWriter::new(tempfile::tempfile()?),
            frames: 0,
        })
    }
}

impl<W: Write> AnalysisSink for JsonReport<W> {
    fn begin(
        &mut self,
        _video: &VideoInfo,
        model: &ModelInfo,
        sample_fps: f64,
    ) -> Result<(), SinkError> {
        self.head = Some((model.clone(), sample_fps));
        Ok(())
    }

    fn frame(&mut self, frame: &FrameResult) -> Result<(), SinkError> {
        if self.frames > 0 {
            self.spool.write_all(b",")?;
        }
        serde_json::to_writer(&mut self.spool, frame)?;
        self.frames += 1;
        Ok(())
    }

    fn finish(&mut self, video: &VideoInfo, summary: &Summary) -> Result<(), SinkError> {
        let (model, sample_fps) = self.head.take().ok_or("finish before begin")?;
        let head = serde_json::to_string(&Head {
            video,
            sample_fps,
            model: &model,
        })?;
        // `head` is an object: reopen it to append the frames and the summary.
        self.out.write_all(&head.as_bytes()[..head.len() - 1])?;
        self.out.write_all(b",\"frames\":[")?;
        self.spool.flush()?;
        let file = self.spool.get_mut();
        file.seek(SeekFrom::Start(0))?;
        std::io::copy(file, &mut self.out)?;
        self.out.write_all(b"],\"summary\":")?;
        serde_json::to_writer(&mut self.out, summary)?;
        self.out.write_all(b"}\n")?;
        self.out.flush()?;
        Ok(())
    }
}

/// One row per face per frame.
pub struct CsvReport<W: Write> {
    out: W,
    labels: Vec<EmotionLabel>,
}

impl<W: Write> CsvReport<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            labels: Vec::new(),
        }
    }
}

impl<W: Write> AnalysisSink for CsvReport<W> {
    fn begin(
        &mut self,
        _video: &VideoInfo,
        model: &ModelInfo,
        _sample_fps: f64,
    ) -> Result<(), SinkError> {
        self.labels = model.labels.clone();
        let mut header =
            String::from("frame,t_ms,track,person,x,y,w,h,score,dominant,smoothed_dominant");
        for label in &self.labels {
            header.push(',');
            header.push_str(label.as_str());
        }
        writeln!(self.out, "{header}")?;
        Ok(())
    }

    fn frame(&mut self, frame: &FrameResult) -> Result<(), SinkError> {
        for face in &frame.faces {
            let b = face.bbox;
            // person and smoothed_dominant are empty until the video's people are known
            let person = face.person.map(|p| p.to_string()).unwrap_or_default();
            let smoothed = face
                .smoothed_dominant
                .map(|d| d.as_str())
                .unwrap_or_default();
            let mut row = format!(
                "{},{},{},{person},{:.1},{:.1},{:.1},{:.1},{:.4},{},{smoothed}",
                frame.frame, frame.t_ms, face.track, b.x, b.y, b.w, b.h, face.score, face.dominant
            );
            for label in &self.labels {
                let _ = write!(row, ",{:.6}", face.emotions.get(*label));
            }
            writeln!(self.out, "{row}")?;
        }
        Ok(())
    }

    fn finish(&mut self, _video: &VideoInfo, _summary: &Summary) -> Result<(), SinkError> {
        self.out.flush()?;
        Ok(())
    }
}

/// Writes [`summary_text`] once the analysis has finished.
pub struct SummaryReport<W: Write> {
    out: W,
    head: Option<(ModelInfo, f64)>,
}

impl<W: Write> SummaryReport<W> {
    pub fn new(out: W) -> Self {
        Self { out, head: None }
    }
}

impl<W: Write> AnalysisSink for SummaryReport<W> {
    fn begin(
        &mut self,
        _video: &VideoInfo,
        model: &ModelInfo,
        sample_fps: f64,
    ) -> Result<(), SinkError> {
        self.head = Some((model.clone(), sample_fps));
        Ok(())
    }

    fn frame(&mut self, _frame: &FrameResult) -> Result<(), SinkError> {
        Ok(())
    }

    fn finish(&mut self, video: &VideoInfo, summary: &Summary) -> Result<(), SinkError> {
        let (model, sample_fps) = self.head.take().ok_or("finish before begin")?;
        self.out
            .write_all(summary_text(video, &model, sample_fps, summary).as_bytes())?;
        self.out.flush()?;
        Ok(())
    }
}

fn top_labels(scores: &EmotionScores, n: usize) -> String {
    let mut pairs: Vec<_> = scores.iter().collect();
    pairs.sort_by(|a, b| b.1.total_cmp(&a.1));
    pairs
        .iter()
        .take(n)
        .map(|(l, p)| format!("{l} {:.0}%", p * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

fn seconds(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// A few lines a person can read.
pub fn summary_text(
    video: &VideoInfo,
    model: &ModelInfo,
    sample_fps: f64,
    summary: &Summary,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "input: {} {}x{}, {} at {} fps, {} frames{}",
        video.codec,
        video.width,
        video.height,
        seconds(video.duration_ms),
        video.fps,
        video.frame_count,
        if video.rotation != 0 {
            format!(", rotated {}°", video.rotation)
        } else {
            String::new()
        }
    );
    let rate = if sample_fps > 0.0 {
        format!("{sample_fps} fps")
    } else {
        "every frame".into()
    };
    let _ = writeln!(
        s,
        "models: {} + {}; sampled {rate}",
        model.detector, model.classifier
    );
    let _ = writeln!(
        s,
        "frames analysed: {}, with faces: {}",
        summary.frames_analyzed, summary.frames_with_faces
    );
    match summary.dominant {
        None => {
            let _ = writeln!(s, "no faces found");
        }
        Some(dominant) => {
            let _ = writeln!(
                s,
                "dominant: {dominant} (mean: {})",
                top_labels(&summary.mean, 3)
            );
            if summary.people.is_empty() {
                for t in &summary.tracks {
                    let _ = writeln!(
                        s,
                        "track {}: {}-{}, {} frames, mostly {} ({})",
                        t.track,
                        seconds(t.first_ms),
                        seconds(t.last_ms),
                        t.frames,
                        t.dominant,
                        top_labels(&t.distribution, 3)
                    );
                }
            }
            for p in &summary.people {
                let _ = writeln!(
                    s,
                    "person {}: {}-{}, {} frames in {} track(s), mostly {} ({})",
                    p.person,
                    seconds(p.first_ms),
                    seconds(p.last_ms),
                    p.frames,
                    p.tracks.len(),
                    p.dominant,
                    top_labels(&p.distribution, 3)
                );
            }
            let _ = writeln!(s, "timeline:");
            for entry in &summary.timeline {
                let _ = writeln!(s, "  {:>4}s  {}", entry.second, top_labels(&entry.mean, 2));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FaceBox, FaceResult, Landmarks, SummaryBuilder};

    fn sample() -> (VideoInfo, ModelInfo, Vec<FrameResult>) {
        let video = VideoInfo {
            duration_ms: 2000,
            width: 64,
            height: 48,
            fps: 25.0,
            frame_count: 50,
            codec: "h264".into(),
            rotation: 0,
        };
        let model = ModelInfo {
            detector: "yunet".into(),
            classifier: "faceapi".into(),
            labels: EmotionLabel::ALL[..7].to_vec(),
        };
        let mut emotions = EmotionScores::new(false);
        emotions.set(EmotionLabel::Happy, 0.9);
        emotions.set(EmotionLabel::Neutral, 0.1);
        let face = FaceResult {
            track: 1,
            bbox: FaceBox {
                x: 1.0,
                y: 2.0,
                w: 30.0,
                h: 31.0,
            },
            score: 0.95,
            landmarks: Landmarks::default(),
            emotions,
            dominant: EmotionLabel::Happy,
            person: None,
            smoothed: None,
            smoothed_dominant: None,
        };
        let frames = vec![
            FrameResult {
                frame: 0,
                t_ms: 0,
                faces: vec![face.clone()],
            },
            FrameResult {
                frame: 5,
                t_ms: 200,
                faces: vec![],
            },
            FrameResult {
                frame: 10,
                t_ms: 400,
                faces: vec![face],
            },
        ];
        (video, model, frames)
    }

    fn run(sink: &mut dyn AnalysisSink) {
        let (video, model, frames) = sample();
        let mut summary = SummaryBuilder::new(false);
        sink.begin(&video, &model, 5.0).unwrap();
        for f in &frames {
            summary.add(f);
            sink.frame(f).unwrap();
        }
        sink.finish(&video, &summary.finish()).unwrap();
    }

    #[test]
    fn json_report_is_one_document_in_the_documented_shape() {
        let mut out = Vec::new();
        run(&mut JsonReport::new(&mut out).unwrap());
        let text = String::from_utf8(out).unwrap();
        let keys: Vec<&str> = [
            "\"video\"",
            "\"sample_fps\"",
            "\"model\"",
            "\"frames\"",
            "\"summary\"",
        ]
        .to_vec();
        let positions: Vec<usize> = keys.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "key order {positions:?}"
        );
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["video"]["frame_count"], 50);
        assert_eq!(doc["frames"].as_array().unwrap().len(), 3);
        let face = &doc["frames"][0]["faces"][0];
        assert_eq!(face["box"], serde_json::json!([1.0, 2.0, 30.0, 31.0]));
        assert_eq!(face["emotions"]["happy"], 0.9);
        assert_eq!(face["dominant"], "happy");
        assert_eq!(doc["frames"][2]["t_ms"], 400);
        assert_eq!(doc["summary"]["frames_with_faces"], 2);
        assert_eq!(doc["summary"]["dominant"], "happy");
        assert_eq!(doc["model"]["labels"].as_array().unwrap().len(), 7);
    }

    #[test]
    fn csv_report_has_one_row_per_face_per_frame() {
        let mut out = Vec::new();
        run(&mut CsvReport::new(&mut out));
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "frame,t_ms,track,person,x,y,w,h,score,dominant,smoothed_dominant,angry,disgust,fear,happy,neutral,sad,surprised"
        );
        assert_eq!(lines.len(), 3, "two faces, the empty frame has no row");
        assert!(lines[2].starts_with(
            "10,400,1,,1.0,2.0,30.0,31.0,0.9500,happy,,0.000000,0.000000,0.000000,0.900000,0.100000"
        ));
    }

    #[test]
    fn summary_text_names_the_dominant_emotion_and_each_person() {
        let (video, model, frames) = sample();
        let mut b = SummaryBuilder::new(false);
        frames.iter().for_each(|f| b.add(f));
        let text = summary_text(&video, &model, 5.0, &b.finish());
        assert!(text.contains("dominant: happy"), "{text}");
        assert!(
            text.contains("track 1: 0.0s-0.4s, 2 frames, mostly happy"),
            "{text}"
        );
    }
}
