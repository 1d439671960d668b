//! Video decoding with ffmpeg (through ffmpeg-sidecar): upright RGB24 frames, each with its
//! source frame number and presentation time taken from the stream.
//!
//! Timestamps and frame numbers come from ffmpeg's `showinfo` filter rather than from counting
//! output frames, so variable-frame-rate files come out right. Sampling (`sample_fps`) happens
//! inside ffmpeg with a `select` filter that keeps the first frame of every 1/fps-second slot,
//! so skipped frames are never converted to RGB or piped.

use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};

use ffmpeg_sidecar::child::FfmpegChild;
use ffmpeg_sidecar::command::FfmpegCommand;
use ffmpeg_sidecar::event::{FfmpegEvent, LogLevel, OutputVideoFrame};
use ffmpeg_sidecar::iter::FfmpegIterator;

use super::AnalysisError;
use super::image::RgbFrame;
use crate::VideoInfo;

/// How to decode.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// The ffmpeg binary; `None` means `ffmpeg` next to the executable, else on `PATH`.
    pub ffmpeg: Option<PathBuf>,
    /// Frames per second to analyse; 0 means every frame.
    pub sample_fps: f64,
    /// Part of the stream to decode; the default is all of it.
    pub window: DecodeWindow,
}

/// A time range of the stream, for analysing a long video in segments or resuming one.
///
/// Times are on the stream's own timeline (ffmpeg runs with `-copyts`, so a file whose first
/// timestamp is not zero keeps it). Starting exactly on a sampling slot boundary, or on a frame
/// the full pass selected, makes a windowed decode pick exactly the frames a full pass picks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DecodeWindow {
    /// Seek here (input `-ss`, exact: frames before it are dropped after decoding).
    pub seek_s: Option<f64>,
    /// Stop before this time (input `-to`).
    pub end_s: Option<f64>,
    /// The source frame number of the first frame at or after `seek_s`; ffmpeg counts frames
    /// from the seek point, and frame numbers must stay those of the whole stream.
    pub first_frame: u64,
}

/// Whether the input is a URL ffmpeg reads itself (a presigned S3 GET) rather than a file.
pub fn is_url(path: &Path) -> bool {
    let text = path.to_string_lossy();
    text.starts_with("https://") || text.starts_with("http://")
}

/// A path or URL fit for logs and error messages: a presigned URL's query is a credential.
pub fn redacted(path: &Path) -> String {
    let text = path.to_string_lossy();
    match text.split_once('?') {
        Some((base, _)) if is_url(path) => format!("{base}?…"),
        _ => text.into_owned(),
    }
}

/// One decoded frame.
#[derive(Debug)]
pub struct DecodedFrame {
    /// Index among all frames of the stream (0-based).
    pub frame: u64,
    pub t_ms: u64,
    pub image: RgbFrame,
}

/// A parsed `showinfo` line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ShowInfo {
    /// 0 for the filter that sees every frame, 2 for the one after `select`.
    pub filter: u32,
    pub n: u64,
    pub pts: i64,
    pub pts_time: f64,
}

/// Parses `[Parsed_showinfo_0 @ 0x..] [info] n:   3 pts:  1536 pts_time:0.125 pos: ...`.
pub(crate) fn parse_showinfo(line: &str) -> Option<ShowInfo> {
    let rest = &line[line.find("Parsed_showinfo_")? + "Parsed_showinfo_".len()..];
    let filter: u32 = rest
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    let field = |name: &str| -> Option<&str> {
        let at = rest.find(name)? + name.len();
        rest[at..].split_whitespace().next()
    };
    Some(ShowInfo {
        filter,
        n: field(" n:")?.parse().ok()?,
        pts: field(" pts:")?.parse().ok()?,
        pts_time: field(" pts_time:")?.parse().ok()?,
    })
}

/// Parses `[Parsed_showinfo_0 @ 0x..] [info] config in time_base: 1/24000, ...`: showinfo prints
/// `pts_time` with six significant digits only (10 ms steps past 1000 s), so times are computed
/// from the integer `pts` and this time base instead.
fn parse_time_base(line: &str) -> Option<(i64, i64)> {
    if !line.contains("Parsed_showinfo_") {
        return None;
    }
    let at = line.find("config in time_base:")? + "config in time_base:".len();
    let (num, den) = line[at..]
        .trim_start()
        .split([',', ' '])
        .next()?
        .split_once('/')?;
    let (num, den) = (num.parse().ok()?, den.parse().ok()?);
    (den != 0 && num != 0).then_some((num, den))
}

/// Parses the `start: 1.400000` of ffmpeg's `Duration:` line.
fn parse_start(line: &str) -> Option<f64> {
    let at = line.find("start:")? + "start:".len();
    line[at..]
        .trim_start()
        .split(|c: char| c == ',' || c.is_whitespace())
        .next()?
        .parse()
        .ok()
}

/// Parses `displaymatrix: rotation of -90.00 degrees` into degrees in 0..360, in ffmpeg's
/// (and ffprobe's) convention: counter-clockwise positive.
fn parse_rotation(line: &str) -> Option<i32> {
    let at = line.find("rotation of")? + "rotation of".len();
    let degrees: f64 = line[at..].split_whitespace().next()?.parse().ok()?;
    Some((degrees.round() as i32).rem_euclid(360))
}

/// ffmpeg calls a codec it does not know "none"; the container's tag (`none (zzzz / 0x7A7A7A7A)`)
/// is more useful to the person reading the error.
fn codec_name(format: &str, stream_line: &str) -> String {
    if format != "none" {
        return format.to_string();
    }
    stream_line
        .split("none (")
        .nth(1)
        .and_then(|rest| rest.split(" /").next())
        .map_or_else(|| "unknown".to_string(), |tag| format!("unknown ({tag})"))
}

fn filtergraph(sample_fps: f64) -> String {
    if sample_fps > 0.0 {
        // Keep a frame when it is the first one in a new 1/fps slot: no drift, and never more
        // than the source has.
        format!(
            "showinfo=checksum=0,select='isnan(prev_selected_t)+gte(floor(t*{f}+{e}),floor(prev_selected_t*{f}+{e})+1)',showinfo=checksum=0",
            f = sample_fps,
            e = crate::domain::SLOT_EPSILON
        )
    } else {
        "showinfo=checksum=0".to_string()
    }
}

/// A running ffmpeg decode. Dropping it stops ffmpeg.
pub struct VideoDecoder {
    path: PathBuf,
    child: FfmpegChild,
    events: FfmpegIterator,
    sampling: bool,
    info: VideoInfo,
    start_s: f64,
    /// `(pts, n)` of every decoded frame not yet matched to a selected one.
    decoded: VecDeque<(i64, u64)>,
    /// `(n, pts_time)` of selected frames whose pixels have not arrived yet.
    selected: VecDeque<(u64, f64)>,
    /// Pixels that arrived before their `showinfo` line.
    pixels: VecDeque<OutputVideoFrame>,
    errors: Vec<String>,
    emitted: u64,
    first_frame: u64,
    time_base: Option<(i64, i64)>,
    finished: bool,
    output_seen: bool,
}

impl VideoDecoder {
    /// Starts ffmpeg and reads until the stream's metadata is known (or decoding failed).
    pub fn open(path: &Path, options: &DecodeOptions) -> Result<Self, AnalysisError> {
        let remote = is_url(path);
        if !remote {
            let meta = std::fs::metadata(path)
                .map_err(|_| AnalysisError::InputNotFound(path.to_path_buf()))?;
            if meta.len() == 0 {
                return Err(AnalysisError::EmptyFile {
                    path: path.to_path_buf(),
                });
            }
        }
        let mut command = match &options.ffmpeg {
            Some(bin) => FfmpegCommand::new_with_path(bin),
            None => FfmpegCommand::new(),
        };
        // Timestamps stay those of the file so that windows and full passes agree.
        command.args(["-nostdin", "-nostats", "-copyts"]);
        if remote {
            // ffmpeg reads a presigned URL with range requests; ride out a dropped connection
            command.args(["-reconnect", "1", "-reconnect_on_network_error", "1"]);
        }
        if let Some(seek) = options.window.seek_s {
            command.args(["-ss", &format!("{seek:.6}")]);
        }
        if let Some(end) = options.window.end_s {
            command.args(["-to", &format!("{end:.6}")]);
        }
        command
            .input(path)
            .args(["-map", "0:v:0"])
            .filter(filtergraph(options.sample_fps))
            .fps_mode("passthrough")
            .rawvideo();
        let mut child = command.spawn().map_err(|e| {
            let bin = options
                .ffmpeg
                .as_ref()
                .map_or("ffmpeg".to_string(), |p| p.display().to_string());
            match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    AnalysisError::FfmpegMissing(format!("{bin}: {e}"))
                }
                _ => AnalysisError::Ffmpeg(e.to_string()),
            }
        })?;
        let events = child
            .iter()
            .map_err(|e| AnalysisError::Ffmpeg(e.to_string()))?;
        let mut decoder = Self {
            path: path.to_path_buf(),
            child,
            events,
            sampling: options.sample_fps > 0.0,
            info: VideoInfo::default(),
            start_s: 0.0,
            decoded: VecDeque::new(),
            selected: VecDeque::new(),
            pixels: VecDeque::new(),
            errors: Vec::new(),
            emitted: 0,
            first_frame: options.window.first_frame,
            time_base: None,
            finished: false,
            output_seen: false,
        };
        // Metadata is complete once the first frame's pixels arrive (or ffmpeg ends).
        while decoder.pixels.is_empty() && !decoder.finished {
            decoder.pump()?;
        }
        if decoder.finished && decoder.pixels.is_empty() {
            decoder.finish()?;
        }
        Ok(decoder)
    }

    /// What is known about the video so far; `frame_count` is final once decoding has ended
    /// (and counts the frames of the window only).
    pub fn info(&self) -> &VideoInfo {
        &self.info
    }

    /// The stream's first timestamp, in seconds (usually 0); `t_ms` is measured from it.
    pub fn start_s(&self) -> f64 {
        self.start_s
    }

    /// The next frame, `None` at the end of a healthy stream, or the error that ended it.
    pub fn next_frame(&mut self) -> Result<Option<DecodedFrame>, AnalysisError> {
        loop {
            if !self.pixels.is_empty() && (!self.selected.is_empty() || self.finished) {
                let pixels = self.pixels.pop_front().expect("checked non-empty");
                let (n, pts_time) = self.selected.pop_front().unwrap_or({
                    // ffmpeg ended before logging this frame's showinfo (not seen in practice);
                    // fall back to the output's own cadence.
                    (self.emitted, pixels.timestamp as f64 + self.start_s)
                });
                self.emitted += 1;
                let t_ms = ((pts_time - self.start_s).max(0.0) * 1000.0).round() as u64;
                return Ok(Some(DecodedFrame {
                    frame: self.first_frame + n,
                    t_ms,
                    image: RgbFrame::new(pixels.width, pixels.height, pixels.data),
                }));
            }
            if self.finished {
                self.finish()?;
                return Ok(None);
            }
            self.pump()?;
        }
    }

    /// Handles one ffmpeg event.
    fn pump(&mut self) -> Result<(), AnalysisError> {
        let Some(event) = self.events.next() else {
            self.finished = true;
            return Ok(());
        };
        match event {
            FfmpegEvent::ParsedInputStream(stream) if self.info.codec.is_empty() => {
                if let Some(video) = stream.video_data() {
                    self.info.codec = codec_name(&stream.format, &stream.raw_log_message);
                    self.info.width = video.width;
                    self.info.height = video.height;
                    self.info.fps = (video.fps as f64 * 1000.0).round() / 1000.0;
                }
            }
            FfmpegEvent::ParsedDuration(d) if d.input_index == 0 => {
                self.info.duration_ms = (d.duration * 1000.0).round() as u64;
                self.start_s = parse_start(&d.raw_log_message).unwrap_or(0.0);
            }
            FfmpegEvent::ParsedOutput(_) => self.output_seen = true,
            FfmpegEvent::ParsedOutputStream(stream) => {
                if let Some(video) = stream.video_data() {
                    // after ffmpeg's autorotation: the size we actually analyse
                    self.info.width = video.width;
                    self.info.height = video.height;
                }
            }
            FfmpegEvent::Log(level, line) => self.on_log(level, line),
            FfmpegEvent::Error(e) => self.errors.push(e),
            FfmpegEvent::OutputFrame(frame) => self.pixels.push_back(frame),
            FfmpegEvent::Done | FfmpegEvent::LogEOF => {}
            _ => {}
        }
        Ok(())
    }

    fn on_log(&mut self, level: LogLevel, line: String) {
        if let Some(mut info) = parse_showinfo(&line) {
            if let Some((num, den)) = self.time_base {
                info.pts_time = info.pts as f64 * num as f64 / den as f64;
            }
            let selected = if !self.sampling {
                Some(info.n)
            } else if info.filter == 0 {
                self.info.frame_count += 1;
                self.decoded.push_back((info.pts, info.n));
                None
            } else {
                // The same frame passed showinfo_0 just before: find its source number.
                while let Some(&(pts, n)) = self.decoded.front() {
                    self.decoded.pop_front();
                    if pts == info.pts {
                        return self.selected.push_back((n, info.pts_time));
                    }
                }
                Some(info.n)
            };
            if let Some(n) = selected {
                if !self.sampling {
                    self.info.frame_count += 1;
                }
                self.selected.push_back((n, info.pts_time));
            }
            return;
        }
        if self.time_base.is_none()
            && let Some(tb) = parse_time_base(&line)
        {
            self.time_base = Some(tb);
        }
        // Only the input's display matrix counts; the output section repeats a reset one.
        if !self.output_seen
            && line.contains("displaymatrix")
            && let Some(rotation) = parse_rotation(&line)
        {
            self.info.rotation = rotation;
        }
        if matches!(level, LogLevel::Error | LogLevel::Fatal) && self.errors.len() < 50 {
            self.errors.push(line);
        }
    }

    /// Decides whether the stream ended cleanly once ffmpeg is done.
    fn finish(&mut self) -> Result<(), AnalysisError> {
        let status = self
            .child
            .wait()
            .map_err(|e| AnalysisError::Ffmpeg(e.to_string()))?;
        let text = self.errors.join("\n");
        let has = |needle: &str| text.contains(needle);
        let path = self.path.clone();
        let detail = || {
            self.errors
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.split("] ").last().unwrap_or(l).trim().to_string())
                .unwrap_or_else(|| format!("ffmpeg exited with {status}"))
        };

        if has("matches no streams") || has("does not contain any stream") {
            return Err(AnalysisError::NoVideoStream { path });
        }
        if self.emitted == 0 && self.pixels.is_empty() {
            if has("Decoder (codec") || has("no decoder found") || has("Unsupported codec") {
                let codec = if self.info.codec.is_empty() {
                    "unknown".to_string()
                } else {
                    self.info.codec.clone()
                };
                return Err(AnalysisError::UnsupportedCodec { path, codec });
            }
            if has("moov atom not found") && starts_like_mp4(&path) {
                return Err(AnalysisError::Truncated {
                    path,
                    detail: "the MP4/MOV index (moov atom) is missing".into(),
                });
            }
            if !status.success() || has("Invalid data found") {
                return Err(AnalysisError::NotMediaFile {
                    path,
                    detail: detail(),
                });
            }
            if self.info.frame_count == 0 {
                return Err(AnalysisError::Truncated {
                    path,
                    detail: "no decodable video frame".into(),
                });
            }
        }
        if has("partial file") {
            return Err(AnalysisError::Truncated {
                path,
                detail: format!(
                    "the data ends early, after {} decoded frames",
                    self.info.frame_count
                ),
            });
        }
        if !self.errors.is_empty() || !status.success() {
            return Err(AnalysisError::CorruptStream {
                path,
                frames_decoded: self.info.frame_count,
                detail: detail(),
            });
        }
        Ok(())
    }
}

impl Drop for VideoDecoder {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every video frame's timestamp in seconds, sorted, from ffprobe's packet list (container
/// data only, no decoding). ffprobe is looked for next to `ffmpeg`, else where ffmpeg-sidecar
/// finds it.
pub(crate) fn frame_times(ffmpeg: Option<&Path>, input: &Path) -> Result<Vec<f64>, AnalysisError> {
    let ffprobe = ffmpeg
        .and_then(|f| f.parent())
        .map(|dir| dir.join("ffprobe"))
        .filter(|p| p.exists())
        .unwrap_or_else(ffmpeg_sidecar::ffprobe::ffprobe_path);
    let output = std::process::Command::new(&ffprobe)
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .arg("packet=pts_time,dts_time")
        .args(["-of", "csv=p=0"])
        .arg(input)
        .output()
        .map_err(|e| AnalysisError::FfmpegMissing(format!("{}: {e}", ffprobe.display())))?;
    if !output.status.success() {
        return Err(AnalysisError::Ffmpeg(format!(
            "ffprobe failed on {}: {}",
            redacted(input),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(parse_frame_times(&String::from_utf8_lossy(&output.stdout)))
}

/// `pts_time,dts_time` lines; a packet without a pts falls back to its dts.
fn parse_frame_times(csv: &str) -> Vec<f64> {
    let mut times: Vec<f64> = csv
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(',').map(|f| f.trim().parse::<f64>().ok());
            let pts = fields.next().flatten();
            let dts = fields.next().flatten();
            pts.or(dts)
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

/// MP4 and QuickTime files start with an `ftyp` (or a `wide`/`mdat`/`free`) box at offset 4.
fn starts_like_mp4(path: &Path) -> bool {
    let mut head = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map(|_| matches!(&head[4..8], b"ftyp" | b"wide" | b"mdat" | b"free" | b"moov"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn showinfo_lines_give_filter_number_and_time() {
        let line = "[Parsed_showinfo_2 @ 0x56227b382500] [info] n:  12 pts:  61440 pts_time:5        pos: 1234 fmt:yuv420p";
        assert_eq!(
            parse_showinfo(line),
            Some(ShowInfo {
                filter: 2,
                n: 12,
                pts: 61440,
                pts_time: 5.0
            })
        );
        let first = "[Parsed_showinfo_0 @ 0x1] [info] n:   0 pts:      0 pts_time:0       pos:    32501 fmt:yuv420p";
        assert_eq!(parse_showinfo(first).unwrap().pts_time, 0.0);
        assert_eq!(
            parse_showinfo("[Parsed_showinfo_0 @ 0x1] [info] config in time_base: 1/12288"),
            None
        );
        assert_eq!(parse_showinfo("[info] Stream #0:0: Video: h264"), None);
    }

    #[test]
    fn the_time_base_comes_from_showinfo_config_lines() {
        assert_eq!(
            parse_time_base(
                "[Parsed_showinfo_0 @ 0x1] [info] config in time_base: 1/24000, frame_rate: 24000/1001"
            ),
            Some((1, 24000))
        );
        assert_eq!(
            parse_time_base(
                "[Parsed_showinfo_0 @ 0x1] [info] config out time_base: 0/0, frame_rate: 0/0"
            ),
            None
        );
        assert_eq!(
            parse_time_base("[Parsed_showinfo_2 @ 0x1] [info] config in time_base: 0/0"),
            None
        );
    }

    #[test]
    fn start_time_and_rotation_are_read_from_ffmpeg_log_lines() {
        assert_eq!(
            parse_start("[info]   Duration: 00:00:06.38, start: 1.400000, bitrate: 3355 kb/s"),
            Some(1.4)
        );
        assert_eq!(
            parse_rotation("[info]       displaymatrix: rotation of -90.00 degrees"),
            Some(270)
        );
        assert_eq!(
            parse_rotation("displaymatrix: rotation of 90.00 degrees"),
            Some(90)
        );
        assert_eq!(
            parse_rotation("displaymatrix: rotation of -0.00 degrees"),
            Some(0)
        );
        assert_eq!(
            parse_rotation("displaymatrix: rotation of -180.00 degrees"),
            Some(180)
        );
    }

    #[test]
    fn unknown_codecs_are_named_by_their_container_tag() {
        assert_eq!(codec_name("hevc", ""), "hevc");
        let line = "[info]   Stream #0:0[0x1](und): Video: none (zzzz / 0x7A7A7A7A), none, 640x360";
        assert_eq!(codec_name("none", line), "unknown (zzzz)");
    }

    #[test]
    fn frame_times_fall_back_to_dts_and_come_out_sorted() {
        assert_eq!(
            parse_frame_times("0.083,0.000\n0.000,N/A\nN/A,0.041\n\ngarbage\n"),
            vec![0.0, 0.041, 0.083]
        );
    }

    #[test]
    fn presigned_urls_are_redacted_and_recognised() {
        let url = Path::new("https://b.s3.amazonaws.com/uploads/u/v.mp4?X-Amz-Signature=abc");
        assert!(is_url(url));
        assert_eq!(
            redacted(url),
            "https://b.s3.amazonaws.com/uploads/u/v.mp4?…"
        );
        assert!(!is_url(Path::new("/tmp/v.mp4?x")));
        assert_eq!(redacted(Path::new("/tmp/v.mp4")), "/tmp/v.mp4");
    }

    #[test]
    fn sampling_uses_a_slot_select_between_two_showinfos() {
        assert_eq!(filtergraph(0.0), "showinfo=checksum=0");
        let g = filtergraph(5.0);
        assert!(
            g.starts_with("showinfo=checksum=0,select=") && g.ends_with(",showinfo=checksum=0")
        );
        assert!(g.contains("floor(t*5+0.0001)"));
    }
}
