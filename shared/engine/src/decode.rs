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
use std::process::{Child, Command, Stdio};

use ffmpeg_sidecar::child::FfmpegChild;
use ffmpeg_sidecar::command::FfmpegCommand;
use ffmpeg_sidecar::event::{FfmpegEvent, LogLevel, OutputVideoFrame};
use ffmpeg_sidecar::iter::FfmpegIterator;

use super::image::{FrameLimits, RgbFrame};
use domain::{AnalysisError, DecodeWindow, MediaSource, VideoInfo};

/// How to decode.
#[derive(Debug, Clone, Default)]
pub struct DecodeOptions {
    /// The ffmpeg binary; `None` means `ffmpeg` next to the executable, else on `PATH`.
    pub ffmpeg: Option<PathBuf>,
    /// Frames per second to analyse; 0 means every frame.
    pub sample_fps: f64,
    /// Part of the stream to decode; the default is all of it.
    pub window: DecodeWindow,
    /// Larger frames are refused from the stream's header, before ffmpeg decodes the stream.
    pub limits: FrameLimits,
    /// ffmpeg scales frames whose longer side is larger down to this many pixels (never up)
    /// before converting them to RGB; 0 keeps every frame at its size. Results are reported in
    /// the source's pixels all the same ([`DecodedFrame::to_source`]).
    pub max_side: u32,
}

/// One decoded frame.
#[derive(Debug)]
pub struct DecodedFrame {
    /// Index among all frames of the stream (0-based).
    pub frame: u64,
    pub t_ms: u64,
    pub image: RgbFrame,
    /// Source pixels per pixel of `image`, across and down (1 unless ffmpeg scaled it down).
    pub to_source: (f64, f64),
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

/// Parses the size out of ffmpeg's `Picture size 16000x16000 exceeds specified max pixel count
/// 160000000, ...` (and `Picture size 70000x70000 is invalid`).
fn parse_picture_size(line: &str) -> Option<(u32, u32)> {
    let at = line.find("Picture size ")? + "Picture size ".len();
    let (w, h) = line[at..].split_whitespace().next()?.split_once('x')?;
    Some((w.parse().ok()?, h.parse().ok()?))
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

fn filtergraph(sample_fps: f64, max_side: u32) -> String {
    let mut graph = if sample_fps > 0.0 {
        // Keep a frame when it is the first one in a new 1/fps slot: no drift, and never more
        // than the source has.
        format!(
            "showinfo=checksum=0,select='isnan(prev_selected_t)+gte(floor(t*{f}+{e}),floor(prev_selected_t*{f}+{e})+1)',showinfo=checksum=0",
            f = sample_fps,
            e = domain::SLOT_EPSILON
        )
    } else {
        "showinfo=checksum=0".to_string()
    };
    if max_side > 0 {
        // Only the selected frames, shrunk to fit max_side (aspect kept, never enlarged) and
        // converted to RGB in the same swscale pass: a 4K frame costs 6 MB of RGB, not 25.
        graph.push_str(&format!(
            ",scale=w='if(gte(iw,ih),min(iw,{m}),-1)':h='if(gte(iw,ih),-1,min(ih,{m}))',format=rgb24",
            m = max_side
        ));
    }
    graph
}

/// The size of the frames ffmpeg hands out for a `width`x`height` video under
/// [`DecodeOptions::max_side`]: the rule of `filtergraph`'s `scale` (the longer side to
/// `max_side` if larger, the other in proportion, rounded), for planning memory before the first
/// frame arrives.
pub(crate) fn analysed_size(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    if max_side == 0 || width.max(height) <= max_side {
        return (width, height);
    }
    let proportional = |side: u32, long: u32| {
        ((u64::from(side) * u64::from(max_side) + u64::from(long) / 2) / u64::from(long)) as u32
    };
    if width >= height {
        (max_side, proportional(height, width))
    } else {
        (proportional(width, height), max_side)
    }
}

/// A running ffmpeg decode. Dropping it stops ffmpeg and reaps it, on every path: the end of the
/// stream, an error, a panic in the thread that owns it, or a consumer that stops early.
pub struct VideoDecoder {
    path: PathBuf,
    child: FfmpegChild,
    events: FfmpegIterator,
    sampling: bool,
    seeking: bool,
    limits: FrameLimits,
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
    pub fn open(source: &MediaSource, options: &DecodeOptions) -> Result<Self, AnalysisError> {
        let remote = matches!(source, MediaSource::Url(_));
        if let MediaSource::File(file) = source {
            let meta =
                std::fs::metadata(file).map_err(|_| AnalysisError::InputNotFound(file.clone()))?;
            if meta.len() == 0 {
                return Err(AnalysisError::EmptyFile { path: file.clone() });
            }
        }
        // what error messages name: the file itself, or the URL without its query (a credential)
        let path = match source {
            MediaSource::File(file) => file.clone(),
            MediaSource::Url(_) => PathBuf::from(source.redacted()),
        };
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
        // ffmpeg's decoders refuse larger pictures before allocating them, also while ffmpeg
        // probes the input (which decodes an image's first frame to learn its size): a 790 KB
        // PNG of 16000x16000 would otherwise cost ffmpeg 768 MB before we see its header.
        command.args(["-max_pixels", &options.limits.pixel_limit().to_string()]);
        command
            .input(source.as_ffmpeg_input())
            .args(["-map", "0:v:0"])
            .filter(filtergraph(options.sample_fps, options.max_side))
            .fps_mode("passthrough")
            // a microsecond clock for the output: with the default one (from the frame rate) two
            // close frames of a variable-rate video can get the same tick, and ffmpeg fails the
            // stream at its end ("non monotonically increasing dts"). Our times come from
            // showinfo, not from this clock. (Spelled as a number for ffmpeg 5 to 9 alike.)
            .args(["-enc_time_base", "1/1000000"])
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
            path,
            child,
            events,
            sampling: options.sample_fps > 0.0,
            seeking: options.window.seek_s.is_some(),
            limits: options.limits,
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
                let image = frame_pixels(&self.limits, pixels)?;
                let to_source = if image.width == 0 || image.height == 0 {
                    (1.0, 1.0)
                } else {
                    (
                        f64::from(self.info.width.max(image.width)) / f64::from(image.width),
                        f64::from(self.info.height.max(image.height)) / f64::from(image.height),
                    )
                };
                return Ok(Some(DecodedFrame {
                    frame: self.first_frame + n,
                    t_ms,
                    image,
                    to_source,
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
                    // The input's header, before ffmpeg sets up decoding: a bomb stops here.
                    self.limits.check(video.width, video.height)?;
                }
            }
            FfmpegEvent::ParsedDuration(d) if d.input_index == 0 => {
                self.info.duration_ms = (d.duration * 1000.0).round() as u64;
                self.start_s = parse_start(&d.raw_log_message).unwrap_or(0.0);
            }
            FfmpegEvent::ParsedOutput(_) => self.output_seen = true,
            FfmpegEvent::ParsedOutputStream(stream) => {
                if let Some(video) = stream.video_data() {
                    // what we analyse: after autorotation, and scaling if the frames were large;
                    // the video's own size is the input's, upright
                    if self.info.rotation % 180 == 90 {
                        std::mem::swap(&mut self.info.width, &mut self.info.height);
                    }
                    self.limits.check(video.width, video.height)?;
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

    /// A video stream was found and ffmpeg ended without decoding a frame of it, for no reason
    /// but that there was none: an empty track ("Cannot determine format of input stream 0:0
    /// after EOF", "Error marking filters as finished"), or a header with nothing after it
    /// (success, "Output file is empty"). A decode that seeks may end up past the last frame,
    /// which says nothing about the video; it keeps the older verdicts.
    fn no_frames_at_all(&self) -> bool {
        const NOTHING_TO_DECODE: [&str; 3] = [
            "Cannot determine format of input stream",
            "Error marking filters as finished",
            "Output file is empty",
        ];
        !self.seeking
            && !self.info.codec.is_empty()
            && self.info.frame_count == 0
            && self
                .errors
                .iter()
                .all(|line| NOTHING_TO_DECODE.iter().any(|n| line.contains(n)))
    }

    /// Decides whether the stream ended cleanly once ffmpeg is done.
    fn finish(&mut self) -> Result<(), AnalysisError> {
        let status = self
            .child
            .wait()
            .map_err(|e| AnalysisError::Ffmpeg(e.to_string()))?;
        // a picture ffmpeg refused for its size (`-max_pixels`, or its own limit)
        if let Some(Err(e)) = self
            .errors
            .iter()
            .find_map(|line| parse_picture_size(line))
            .map(|(w, h)| self.limits.check(w, h))
        {
            return Err(e);
        }
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
            if self.no_frames_at_all() {
                return Err(AnalysisError::NoFrames);
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

/// A frame's pixels, refused unless they are the RGB24 buffer its size calls for.
/// ffmpeg-sidecar sizes its read buffer from the output stream's header line, as
/// `width × height × 24` bits in a `u32`: for 16000×16000 that wraps to 231 129 088 bytes instead
/// of 768 000 000, and one frame comes out as three short "frames" (the detector then read past
/// the end of the first). The limits keep such sizes out; this catches whatever else disagrees.
fn frame_pixels(limits: &FrameLimits, pixels: OutputVideoFrame) -> Result<RgbFrame, AnalysisError> {
    limits.check(pixels.width, pixels.height)?;
    let expected = RgbFrame::bytes_for(pixels.width, pixels.height);
    if pixels.pix_fmt != "rgb24" || pixels.data.len() as u64 != expected {
        return Err(AnalysisError::Internal(format!(
            "ffmpeg sent {} bytes of {} for a {}x{} frame; expected {expected} bytes of rgb24",
            pixels.data.len(),
            pixels.pix_fmt,
            pixels.width,
            pixels.height
        )));
    }
    RgbFrame::try_new(pixels.width, pixels.height, pixels.data)
}

impl Drop for VideoDecoder {
    fn drop(&mut self) {
        // Even when the event stream has ended, ffmpeg may not have been waited for yet (a
        // consumer that stopped early, an error, a panic): kill it if it still runs, then reap
        // it. Both are no-ops once `finish` has waited.
        reap(self.child.as_inner_mut());
    }
}

/// Kills a child process unless it has exited, then waits for it, so that it never lingers
/// as a zombie. Safe to call on a child that was already waited for.
fn reap(child: &mut Child) {
    if !matches!(child.try_wait(), Ok(Some(_))) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// A child process that is killed and reaped when this guard is dropped, on every path.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        reap(&mut self.0);
    }
}

/// Every video frame's timestamp in seconds, sorted, from the packet list of the first video
/// stream (container data only, no decoding): ffmpeg copies the stream's packets, as they are and
/// with their own timestamps, into its `framecrc` muxer, which prints one line per packet. ffmpeg
/// alone, rather than ffprobe, so that a single static binary serves (the analysis image ships
/// one). `limits` bounds what ffmpeg decodes while it probes (see [`VideoDecoder::open`]).
pub(crate) fn frame_times(
    ffmpeg: Option<&Path>,
    input: &MediaSource,
    limits: &FrameLimits,
) -> Result<Vec<f64>, AnalysisError> {
    let ffmpeg = ffmpeg.map_or_else(ffmpeg_sidecar::paths::ffmpeg_path, Path::to_path_buf);
    let child = Command::new(&ffmpeg)
        .args(["-nostdin", "-v", "error", "-max_pixels"])
        .arg(limits.pixel_limit().to_string())
        // the stream's own timestamps, and every packet, also those before the first keyframe
        .args(["-copyts", "-i"])
        .arg(input.as_ffmpeg_input())
        .args([
            "-map",
            "0:v:0",
            "-c",
            "copy",
            "-copyinkf",
            "-f",
            "framecrc",
            "-",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| AnalysisError::FfmpegMissing(format!("{}: {e}", ffmpeg.display())))?;
    // From here on ffmpeg is killed and reaped however this function ends.
    let mut child = Reaped(child);
    let (stdout, stderr) = (child.0.stdout.take(), child.0.stderr.take());
    let (out, err) = std::thread::scope(|scope| {
        // stderr is drained alongside stdout so that neither pipe can fill up and stall ffmpeg
        let err = scope.spawn(move || {
            let mut text = Vec::new();
            if let Some(mut stderr) = stderr {
                let _ = stderr.read_to_end(&mut text);
            }
            text
        });
        let mut out = Vec::new();
        let read = stdout.map_or(Ok(0), |mut s| s.read_to_end(&mut out));
        (read.map(|_| out), err.join().unwrap_or_default())
    });
    let out =
        out.map_err(|e| AnalysisError::Ffmpeg(format!("reading ffmpeg's packet list: {e}")))?;
    let status = child
        .0
        .wait()
        .map_err(|e| AnalysisError::Ffmpeg(e.to_string()))?;
    if !status.success() {
        return Err(AnalysisError::Ffmpeg(format!(
            "listing the frames of {} failed: {}",
            input.redacted(),
            String::from_utf8_lossy(&err).trim()
        )));
    }
    Ok(parse_frame_times(&String::from_utf8_lossy(&out)))
}

/// The `framecrc` muxer's output for one stream: a `#tb 0: num/den` header, then a line per
/// packet, `stream, dts, pts, duration, size, crc[, flags]`, times in that time base. A packet
/// without a pts (printed as i64::MIN) falls back to its dts.
fn parse_frame_times(framecrc: &str) -> Vec<f64> {
    let mut time_base = None;
    let mut times = Vec::new();
    for line in framecrc.lines() {
        if let Some(tb) = line.strip_prefix("#tb 0:") {
            let (num, den) = tb.trim().split_once('/').unwrap_or(("", ""));
            time_base = match (num.parse::<f64>(), den.parse::<f64>()) {
                (Ok(num), Ok(den)) if den > 0.0 => Some(num / den),
                _ => None,
            };
            continue;
        }
        let Some(time_base) = time_base.filter(|_| !line.starts_with('#')) else {
            continue;
        };
        let mut fields = line.split(',').map(|f| f.trim().parse::<i64>().ok());
        let (_stream, dts, pts) = (
            fields.next(),
            fields.next().flatten(),
            fields.next().flatten(),
        );
        let known = |t: Option<i64>| t.filter(|&t| t != i64::MIN);
        if let Some(ticks) = known(pts).or(known(dts)) {
            times.push(ticks as f64 * time_base);
        }
    }
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
    fn pictures_ffmpeg_refused_for_their_size_are_read_from_its_log() {
        assert_eq!(
            parse_picture_size(
                "[png @ 0x1] [IMGUTILS @ 0x7f] [error] Picture size 16000x16000 exceeds specified max pixel count 160000000, see the documentation if you wish to increase it"
            ),
            Some((16000, 16000))
        );
        assert_eq!(
            parse_picture_size("[IMGUTILS @ 0x7f] Picture size 70000x70000 is invalid"),
            Some((70000, 70000))
        );
        assert_eq!(parse_picture_size("[error] Invalid data found"), None);
    }

    #[test]
    fn unknown_codecs_are_named_by_their_container_tag() {
        assert_eq!(codec_name("hevc", ""), "hevc");
        let line = "[info]   Stream #0:0[0x1](und): Video: none (zzzz / 0x7A7A7A7A), none, 640x360";
        assert_eq!(codec_name("none", line), "unknown (zzzz)");
    }

    #[test]
    fn frame_times_fall_back_to_dts_and_come_out_sorted() {
        let framecrc = "#extradata 0:      104, 0xb6951783\n#tb 0: 1/1000\n#media_type 0: video\n\
                        0,          0,         83,       41,     6635, 0x12cbd170\n\
                        0,         41, -9223372036854775808,       41,     4393, 0x122c97e6, F=0x0\n\
                        0,        -41,          0,       41,     2426, 0x1c44bff0\n\
                        garbage\n";
        assert_eq!(parse_frame_times(framecrc), vec![0.0, 0.041, 0.083]);
        // packets before a time base are not guessed at
        assert_eq!(
            parse_frame_times("0, 0, 83, 41, 1, 0x0\n"),
            Vec::<f64>::new()
        );
    }

    #[test]
    fn frame_times_are_the_streams_packet_times() {
        // h264 with B-frames (the default encoder for .mp4): packets come in decode order, with
        // a negative first dts; their presentation times are the frames' times
        let dir = tempfile::tempdir().unwrap();
        let clip = MediaSource::File(tiny_clip(dir.path(), 10));
        let times = frame_times(None, &clip, &FrameLimits::default()).unwrap();
        let expected: Vec<f64> = (0..10).map(|i| f64::from(i) / 10.0).collect();
        assert_eq!(times.len(), expected.len(), "{times:?}");
        for (time, expected) in times.iter().zip(&expected) {
            assert!((time - expected).abs() < 1e-6, "{times:?}");
        }
        let missing = MediaSource::File(dir.path().join("missing.mp4"));
        let err = frame_times(None, &missing, &FrameLimits::default()).unwrap_err();
        assert!(matches!(err, AnalysisError::Ffmpeg(_)), "{err:?}");
    }

    fn output_frame(width: u32, height: u32, bytes: usize) -> OutputVideoFrame {
        OutputVideoFrame {
            width,
            height,
            pix_fmt: "rgb24".into(),
            output_index: 0,
            data: vec![0; bytes],
            frame_num: 0,
            timestamp: 0.0,
        }
    }

    #[test]
    fn a_frame_buffer_that_does_not_fit_its_size_is_an_error_not_a_panic() {
        let limits = FrameLimits::default();
        assert!(frame_pixels(&limits, output_frame(64, 32, 64 * 32 * 3)).is_ok());
        // what ffmpeg-sidecar handed out for the 16000x16000 bomb: refused for its size
        let err = frame_pixels(&limits, output_frame(16000, 16000, 231_129_088)).unwrap_err();
        assert!(
            matches!(err, AnalysisError::FrameTooLarge { .. }),
            "{err:?}"
        );
        // a buffer short by one byte, or of another pixel format
        let err = frame_pixels(&limits, output_frame(64, 32, 64 * 32 * 3 - 1)).unwrap_err();
        assert!(
            matches!(&err, AnalysisError::Internal(m) if m.contains("6143 bytes of rgb24 for a 64x32 frame")),
            "{err:?}"
        );
        let mut grey = output_frame(64, 32, 64 * 32);
        grey.pix_fmt = "gray".into();
        assert!(matches!(
            frame_pixels(&limits, grey),
            Err(AnalysisError::Internal(_))
        ));
    }

    /// A clip of `frames` frames of 32x32, made by ffmpeg.
    fn tiny_clip(dir: &Path, frames: u32) -> PathBuf {
        let clip = dir.join("tiny.mp4");
        let status = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-nostdin", "-f", "lavfi", "-i"])
            .arg("color=size=32x32:rate=10")
            .args(["-frames:v", &frames.to_string()])
            .arg(&clip)
            .status()
            .expect("ffmpeg on PATH");
        assert!(status.success());
        clip
    }

    #[test]
    fn a_decoder_dropped_after_ffmpeg_ended_still_reaps_it() {
        // ffmpeg has written everything and exited, frames are still queued, and the consumer
        // stops (a stage failed): dropping the decoder used to skip the wait once the event
        // stream had ended, leaving a defunct ffmpeg behind
        let dir = tempfile::tempdir().unwrap();
        let clip = MediaSource::File(tiny_clip(dir.path(), 10));
        let mut decoder = VideoDecoder::open(&clip, &DecodeOptions::default()).unwrap();
        let pid = decoder.child.as_inner().id();
        while !decoder.finished {
            decoder.pump().unwrap();
        }
        assert!(decoder.pixels.len() > 1, "frames left unread");
        drop(decoder);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "ffmpeg {pid} is still there: {:?}",
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
        );

        // and one dropped mid-stream is killed and reaped
        let mut decoder = VideoDecoder::open(&clip, &DecodeOptions::default()).unwrap();
        let pid = decoder.child.as_inner().id();
        assert!(decoder.next_frame().unwrap().is_some());
        drop(decoder);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn sampling_uses_a_slot_select_between_two_showinfos() {
        assert_eq!(filtergraph(0.0, 0), "showinfo=checksum=0");
        let g = filtergraph(5.0, 0);
        assert!(
            g.starts_with("showinfo=checksum=0,select=") && g.ends_with(",showinfo=checksum=0")
        );
        assert!(g.contains("floor(t*5+0.0001)"));
        // scaling comes after the selection, so that skipped frames are never converted
        let g = filtergraph(5.0, 1920);
        assert!(g.ends_with(",showinfo=checksum=0,scale=w='if(gte(iw,ih),min(iw,1920),-1)':h='if(gte(iw,ih),-1,min(ih,1920))',format=rgb24"), "{g}");
    }

    #[test]
    fn large_frames_are_scaled_down_and_say_how_to_get_back_to_source_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let clip = dir.path().join("wide.mp4");
        let status = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-nostdin", "-f", "lavfi", "-i"])
            .arg("testsrc=size=320x180:rate=10")
            .args(["-frames:v", "3"])
            .arg(&clip)
            .status()
            .expect("ffmpeg on PATH");
        assert!(status.success());
        let source = MediaSource::File(clip);
        let first_frame = |max_side| {
            let options = DecodeOptions {
                max_side,
                ..DecodeOptions::default()
            };
            let mut decoder = VideoDecoder::open(&source, &options).unwrap();
            let frame = decoder.next_frame().unwrap().unwrap();
            (frame, (decoder.info().width, decoder.info().height))
        };
        let (frame, video_size) = first_frame(80);
        assert_eq!((frame.image.width, frame.image.height), (80, 45));
        assert_eq!(
            analysed_size(320, 180, 80),
            (80, 45),
            "the size queues are planned for"
        );
        assert_eq!(frame.to_source, (4.0, 4.0));
        // the video is still described in its own pixels
        assert_eq!(video_size, (320, 180));
        // frames that fit are left alone
        let (frame, _) = first_frame(1920);
        assert_eq!((frame.image.width, frame.image.height), (320, 180));
        assert_eq!(frame.to_source, (1.0, 1.0));
    }
}
