//! Users and their videos: the records the API and the analysis worker share.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Summary, VideoInfo};

/// A registered account. `password_hash` is an argon2id PHC string and never leaves the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub username: String,
    /// Stored lower-cased: emails are unique case-insensitively.
    pub email: String,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VideoStatus {
    /// Created; waiting for the upload (or for the worker to pick it up).
    Pending,
    Processing,
    Completed,
    Failed,
}

impl VideoStatus {
    /// The analysis has ended, successfully or not: nothing about it changes any more.
    pub fn is_final(self) -> bool {
        matches!(self, VideoStatus::Completed | VideoStatus::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VideoStatus::Pending => "PENDING",
            VideoStatus::Processing => "PROCESSING",
            VideoStatus::Completed => "COMPLETED",
            VideoStatus::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "PENDING" => VideoStatus::Pending,
            "PROCESSING" => VideoStatus::Processing,
            "COMPLETED" => VideoStatus::Completed,
            "FAILED" => VideoStatus::Failed,
            _ => return None,
        })
    }
}

/// A video and the state of its analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Video {
    pub id: String,
    pub user_id: String,
    pub title: String,
    /// Object key: `uploads/{user_id}/{video_id}.{ext}`.
    pub s3_key: String,
    pub filename: String,
    pub content_type: String,
    pub size_bytes: Option<u64>,
    pub sample_fps: f64,
    pub uploaded_at: DateTime<Utc>,
    pub analysis: AnalysisState,
}

/// What the worker writes; kept apart from the user-editable fields so that a title change and
/// a progress update never overwrite each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisState {
    pub status: VideoStatus,
    /// 0–100.
    pub progress: u8,
    pub error: Option<String>,
    pub video: Option<VideoInfo>,
    pub frames_analyzed: u64,
    pub summary: Option<Summary>,
    pub processed_at: Option<DateTime<Utc>>,
}

impl AnalysisState {
    pub fn pending() -> Self {
        Self {
            status: VideoStatus::Pending,
            progress: 0,
            error: None,
            video: None,
            frames_analyzed: 0,
            summary: None,
            processed_at: None,
        }
    }
}

/// Progress in percent from the video time analysed so far; 100 is only reported once the
/// analysis is complete.
pub fn progress_percent(covered_ms: u64, duration_ms: u64) -> u8 {
    (covered_ms.saturating_mul(100))
        .checked_div(duration_ms)
        .map_or(0, |p| p.min(99) as u8)
}

/// Allowed upload types: extension → Content-Type.
pub const VIDEO_TYPES: [(&str, &str); 6] = [
    ("mp4", "video/mp4"),
    ("mov", "video/quicktime"),
    ("m4v", "video/x-m4v"),
    ("avi", "video/x-msvideo"),
    ("mkv", "video/x-matroska"),
    ("webm", "video/webm"),
];

/// The lower-cased extension of an accepted video file name, with its default Content-Type.
pub fn video_type(filename: &str) -> Option<(&'static str, &'static str)> {
    let ext = filename.rsplit_once('.')?.1.to_ascii_lowercase();
    VIDEO_TYPES.iter().copied().find(|(e, _)| *e == ext)
}

/// The object key of a user's video. Only server-made ids go in, so no client text can steer it.
pub fn object_key(user_id: &str, video_id: &str, ext: &str) -> String {
    format!("uploads/{user_id}/{video_id}.{ext}")
}

/// `(user_id, video_id)` from an object key made by [`object_key`].
pub fn parse_object_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("uploads/")?;
    let (user, file) = rest.split_once('/')?;
    let (video, ext) = file.rsplit_once('.')?;
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    (ok(user) && ok(video) && video_type(&format!("x.{ext}")).is_some()).then_some((user, video))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_video_extensions_are_accepted() {
        assert_eq!(video_type("Holiday.MP4"), Some(("mp4", "video/mp4")));
        assert_eq!(video_type("a.b.webm"), Some(("webm", "video/webm")));
        assert_eq!(video_type("notes.txt"), None);
        assert_eq!(video_type("noext"), None);
    }

    #[test]
    fn object_keys_round_trip_and_reject_anything_else() {
        let key = object_key("u-1", "v-2", "mov");
        assert_eq!(key, "uploads/u-1/v-2.mov");
        assert_eq!(parse_object_key(&key), Some(("u-1", "v-2")));
        for bad in [
            "uploads/../etc/passwd.mp4",
            "uploads/u/../../x.mp4",
            "other/u/v.mp4",
            "uploads/u/v.txt",
            "uploads/u/v",
        ] {
            assert_eq!(parse_object_key(bad), None, "{bad}");
        }
    }
}
