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
    /// The object the upload produced, recorded by the worker at the first upload event. Every
    /// later read (analysis, the player) names exactly this object, so a second PUT to the same
    /// upload URL can never change what is analysed or streamed.
    #[serde(default)]
    pub upload: Option<StoredObject>,
    /// Where to announce the end of this video's analysis, besides the owner's webhook
    /// endpoints (`callback_url` at `upload/initialize`; see [`crate::webhooks`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    pub analysis: AnalysisState,
}

/// An uploaded object as the blob store identifies it: its size and, where the store has them,
/// its ETag and version id (S3 with versioning; local files are write-once and have neither).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredObject {
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

impl StoredObject {
    /// Whether `other` is the same object: equal size, and equal ETag and version id wherever
    /// both sides know them. (S3 events and HeadObject quote ETags differently.)
    pub fn same_as(&self, other: &StoredObject) -> bool {
        let etag = |e: &Option<String>| e.as_deref().map(|t| t.trim_matches('"').to_string());
        let agree = |a: Option<String>, b: Option<String>| match (a, b) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        self.size == other.size
            && agree(etag(&self.etag), etag(&other.etag))
            && agree(self.version_id.clone(), other.version_id.clone())
    }
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

/// What an upload's declared `Content-Type` may be, compared case-insensitively: the types of the
/// extensions in [`VIDEO_TYPES`], the other names browsers and operating systems give the same
/// containers (`video/avi` and `video/msvideo` from Windows, `video/matroska`, the registered name),
/// and `application/octet-stream` for a browser that does not know the file. Nothing else: no
/// parameters, no whitespace, no bare `video/`.
pub const ALLOWED_UPLOAD_TYPES: [&str; 10] = [
    "video/mp4",
    "video/quicktime",
    "video/x-m4v",
    "video/x-msvideo",
    "video/x-matroska",
    "video/webm",
    "video/avi",
    "video/msvideo",
    "video/matroska",
    "application/octet-stream",
];

/// Whether a client may declare this `Content-Type` for a video upload (see
/// [`ALLOWED_UPLOAD_TYPES`]). The value must be exactly one of them, in any case.
pub fn is_allowed_upload_type(content_type: &str) -> bool {
    ALLOWED_UPLOAD_TYPES
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(content_type))
}

// ---- user text: emails, usernames and titles ----

/// Longest email address accepted, in bytes (RFC 5321's path limit less the angle brackets).
pub const EMAIL_MAX_BYTES: usize = 254;
/// Longest local part (before the `@`), in bytes (RFC 5321).
pub const EMAIL_LOCAL_MAX_BYTES: usize = 64;
/// Usernames are 3 to 50 characters (Unicode scalar values, after NFC and trimming).
pub const USERNAME_CHARS: std::ops::RangeInclusive<usize> = 3..=50;
/// Titles are 1 to 200 characters (after NFC and trimming).
pub const TITLE_MAX_CHARS: usize = 200;

/// Control characters: Unicode `Cc` (NUL, CR, LF, TAB, DEL, C1), the line and paragraph separators
/// (`Zl`, `Zp`), the bidirectional-text controls (which reorder how the text around them is shown)
/// and the byte-order mark. Refused in every piece of text a user names things with.
pub fn is_control_char(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    ) || matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}'
    )
}

/// Characters that show nothing (or look like a plain space) and so let two names look the same:
/// every format character (`Cf`: zero-width space and joiners U+200B–U+200F, word joiner U+2060,
/// invisible operators, U+FEFF, soft hyphen, tags, bidi controls), spaces other than U+0020, the
/// Hangul fillers, the blank braille pattern and the combining grapheme joiner; and the control
/// characters of [`is_control_char`]. Refused in emails and usernames.
pub fn is_invisible_char(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    is_control_char(c)
        || matches!(
            c.general_category(),
            GeneralCategory::Format | GeneralCategory::SpaceSeparator
        ) && c != ' '
        || matches!(
            c,
            '\u{034F}' | '\u{115F}' | '\u{1160}' | '\u{2800}' | '\u{3164}' | '\u{FFA0}'
        )
}

/// The form an email is stored and looked up in: NFKC (so fullwidth letters, ligatures and the
/// fullwidth `＠` become their plain forms), trimmed, lower-cased. Registration and login both use
/// it, so every spelling of one address reaches the same account.
pub fn normalize_email(raw: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let folded: String = raw.nfkc().collect();
    // NFKC again: lower-casing can leave a string that is not in NFKC
    folded.trim().to_lowercase().nfkc().collect()
}

/// A character of a dot-atom (RFC 5322 `atext`, with RFC 6532's UTF-8 extension limited to
/// letters, digits and combining marks).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (!c.is_ascii()
            && (c.is_alphanumeric() || unicode_normalization::char::is_combining_mark(c)))
}

/// A domain label: letters, digits and inner hyphens (internationalised names in their Unicode
/// form are letters too), at most 63 bytes.
fn is_domain_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || c == '-'
                || (!c.is_ascii()
                    && (c.is_alphanumeric() || unicode_normalization::char::is_combining_mark(c)))
        })
}

/// The normalised email ([`normalize_email`]) if it is a plain address `local@domain.tld`: one
/// `@`, a dot-atom local part (no quoted strings, no comments, no spaces, no leading, trailing or
/// double dots, at most 64 bytes), a domain of at least two labels whose last is not all digits
/// (no IP literals), at most 254 bytes in all, and no control or invisible characters.
pub fn validate_email(raw: &str) -> Result<String, &'static str> {
    let email = normalize_email(raw);
    if email.chars().any(is_invisible_char) {
        return Err("must not contain control or invisible characters");
    }
    let plain = "must be a plain email address like name@example.com";
    let (local, domain) = email.split_once('@').ok_or(plain)?;
    if email.len() > EMAIL_MAX_BYTES {
        return Err("must be at most 254 bytes");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let local_ok = !local.is_empty()
        && local.len() <= EMAIL_LOCAL_MAX_BYTES
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext));
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| is_domain_label(l))
        && !labels
            .last()
            .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()));
    if local_ok && domain_ok {
        Ok(email)
    } else {
        Err(plain)
    }
}

/// A username in NFC, trimmed: 3 to 50 characters, none of them control or invisible
/// ([`is_invisible_char`]). Usernames are display names, not unique.
pub fn validate_username(raw: &str) -> Result<String, &'static str> {
    use unicode_normalization::UnicodeNormalization;
    let name: String = raw.nfc().collect();
    let name = name.trim();
    if name.chars().any(is_invisible_char) {
        return Err("must not contain control or invisible characters");
    }
    if !USERNAME_CHARS.contains(&name.chars().count()) {
        return Err("must be 3 to 50 characters");
    }
    Ok(name.to_string())
}

/// A video title in NFC, trimmed: 1 to 200 characters and no control characters
/// ([`is_control_char`]); such a title is refused, never silently changed. Zero-width joiners,
/// variation selectors and the like stay allowed: emoji and several scripts need them.
pub fn validate_title(raw: &str) -> Result<String, &'static str> {
    use unicode_normalization::UnicodeNormalization;
    let title: String = raw.nfc().collect();
    let title = title.trim();
    if title.chars().any(is_control_char) {
        return Err("must not contain control characters");
    }
    if title.is_empty() || title.chars().count() > TITLE_MAX_CHARS {
        return Err("must be 1 to 200 characters");
    }
    Ok(title.to_string())
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

/// The blob-store prefix of everything an analysis stores for a video besides its records (the
/// people's thumbnails): one prefix per video, so deleting the video deletes them in one sweep.
pub fn results_prefix(video_id: &str) -> String {
    format!("results/{video_id}/")
}

/// The file name of the video's `person`th person's thumbnail (people count from 1): `{n}.jpg`.
pub fn person_thumbnail_file(person: u32) -> String {
    format!("{person}.jpg")
}

/// The key of the video's `person`th person's thumbnail (people count from 1): the best crop of
/// their face as a small JPEG, under [`results_prefix`]. The worker writes it, the API reads it.
pub fn person_thumbnail_key(video_id: &str, person: u32) -> String {
    format!(
        "{}people/{}",
        results_prefix(video_id),
        person_thumbnail_file(person)
    )
}

/// The person a file name made by [`person_thumbnail_file`] names: `{n}.jpg` with `n` a positive
/// integer written without leading zeros or sign; `None` for any other name.
pub fn parse_person_thumbnail_file(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".jpg")?;
    let canonical = !digits.is_empty()
        && !digits.starts_with('0')
        && digits.bytes().all(|b| b.is_ascii_digit());
    canonical.then(|| digits.parse().ok()).flatten()
}

/// The video id of a key, or of a prefix ending in `/`, under [`results_prefix`], when every part
/// of it is something the service makes: ASCII letters, digits, `-`, `_` and `.`, no empty part
/// and no part starting with `.` (so never `..`). `None` for anything else.
pub fn parse_results_key(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("results/")?;
    let (video, rest) = rest.split_once('/')?;
    let id_ok = !video.is_empty() && video.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let part_ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let parts_ok = rest.is_empty()
        || rest
            .strip_suffix('/')
            .unwrap_or(rest)
            .split('/')
            .all(part_ok);
    (id_ok && parts_ok).then_some(video)
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

    #[test]
    fn emails_normalise_to_one_form() {
        let plain = validate_email("ann@example.com").unwrap();
        for variant in [
            "  ANN@EXAMPLE.COM ",
            "ａｎｎ@ｅｘａｍｐｌｅ.ｃｏｍ",
            "ａｎｎ＠ｅｘａｍｐｌｅ．ｃｏｍ",
            "Ann@Example.Com",
        ] {
            assert_eq!(
                validate_email(variant).as_deref(),
                Ok(plain.as_str()),
                "{variant}"
            );
        }
        // NFC and NFD spellings of é are one address
        assert_eq!(
            validate_email("jos\u{e9}@example.com"),
            validate_email("jose\u{301}@example.com")
        );
        assert_eq!(
            validate_email("JOS\u{c9}@example.com").unwrap(),
            "jos\u{e9}@example.com"
        );
        for ok in [
            "a.b+tag@sub.example.co.uk",
            "o'brien@example.ie",
            "x@b\u{fc}cher.example",
        ] {
            assert!(validate_email(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            normalize_email(&normalize_email("ＡＮＮ@Example.COM")),
            normalize_email("ＡＮＮ@Example.COM")
        );
    }

    #[test]
    fn emails_that_are_not_plain_addresses_are_refused() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        // 60 + 1 + 3 × 64 + 3 = 256 bytes, each part within its own limit
        let l63 = "b".repeat(63);
        let long = format!("{}@{l63}.{l63}.{l63}.com", "a".repeat(60));
        for bad in [
            "ann\u{200b}@example.com",
            "ann@example.com\u{0}",
            "ann\u{0}@example.com",
            "ann@exa\u{2060}mple.com",
            "\u{feff}ann@example.com",
            "ann\u{202e}@example.com",
            "ann\u{ad}@example.com",
            "\"ann\"@example.com",
            "\"a b\"@example.com",
            "ann@@example.com",
            "ann@b@example.com",
            "ann@example",
            "ann@.example.com",
            "ann@example.com.",
            "ann@-example.com",
            "ann@[127.0.0.1]",
            "ann@127.0.0.1",
            ".ann@example.com",
            "ann.@example.com",
            "a..nn@example.com",
            "a nn@example.com",
            "ann(comment)@example.com",
            "@example.com",
            "ann@",
            "",
            long_local.as_str(),
            long.as_str(),
        ] {
            assert!(validate_email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn usernames_are_nfc_trimmed_and_visible() {
        assert_eq!(validate_username("  Ann Lee ").unwrap(), "Ann Lee");
        assert_eq!(validate_username("Jose\u{301}").unwrap(), "Jos\u{e9}");
        assert_eq!(
            validate_username("<script>alert(1)</script>").unwrap(),
            "<script>alert(1)</script>",
            "markup is text: the page escapes it"
        );
        for bad in [
            "ab",
            "  ab  ",
            "ann\u{200b}",
            "an\u{200d}n",
            "ann\u{0}",
            "ann\u{7}x",
            "a\u{202e}nna",
            "an\u{a0}n",
            "\u{3164}\u{3164}\u{3164}",
            "a\nbc",
        ] {
            assert!(validate_username(bad).is_err(), "{bad:?}");
        }
        assert!(validate_username(&"x".repeat(50)).is_ok());
        assert!(validate_username(&"x".repeat(51)).is_err());
        assert!(
            validate_username(&"é".repeat(50)).is_ok(),
            "characters, not bytes"
        );
    }

    #[test]
    fn titles_are_one_rule() {
        assert_eq!(validate_title("  Holiday ").unwrap(), "Holiday");
        assert_eq!(validate_title("Cafe\u{301}").unwrap(), "Caf\u{e9}");
        assert!(validate_title(&"t".repeat(200)).is_ok());
        assert!(validate_title(&"é".repeat(200)).is_ok());
        // emoji sequences keep their joiners and variation selectors
        let family = "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467} \u{2764}\u{FE0F}";
        assert_eq!(validate_title(family).unwrap(), family);
        for bad in [
            "",
            "   ",
            "a\u{0}b",
            "line\nbreak",
            "tab\there",
            "bell\u{7}",
            "del\u{7f}",
            "c1\u{85}x",
            "ls\u{2028}x",
            "evil\u{202e}4pm.exe",
            "iso\u{2066}late",
            "\u{feff}bom",
        ] {
            assert!(validate_title(bad).is_err(), "{bad:?}");
        }
        assert!(validate_title(&"t".repeat(201)).is_err());
    }

    #[test]
    fn upload_types_are_an_allowlist() {
        for (_, default) in VIDEO_TYPES {
            assert!(is_allowed_upload_type(default), "{default}");
        }
        for ok in ["VIDEO/MP4", "Video/QuickTime", "application/octet-stream"] {
            assert!(is_allowed_upload_type(ok), "{ok}");
        }
        for bad in [
            "",
            "video/",
            "video",
            "video/mp4\r\nX-Evil: 1",
            "video/mp4; codecs=avc1",
            " video/mp4",
            "video/mp4 ",
            "video/x-flv",
            "text/html",
            "image/png",
            "audio/webm",
            "video/*",
        ] {
            assert!(!is_allowed_upload_type(bad), "{bad:?}");
        }
    }

    #[test]
    fn results_keys_are_made_in_one_place_and_parsed_strictly() {
        assert_eq!(results_prefix("v-1"), "results/v-1/");
        assert_eq!(person_thumbnail_key("v-1", 3), "results/v-1/people/3.jpg");
        assert!(person_thumbnail_key("v-1", 3).starts_with(&results_prefix("v-1")));
        assert_eq!(
            parse_results_key(&person_thumbnail_key("v-1", 3)),
            Some("v-1")
        );
        assert_eq!(parse_results_key(&results_prefix("v-1")), Some("v-1"));
        assert_eq!(parse_results_key("results/v-1/people/"), Some("v-1"));
        for bad in [
            "results/",
            "results/v-1",
            "results//people/1.jpg",
            "results/v-1//",
            "results/v-1/people//1.jpg",
            "results/v-1/../x.jpg",
            "results/v-1/./x.jpg",
            "results/v-1/.x.jpg.part",
            "results/../uploads/x.mp4",
            "results/v 1/x.jpg",
            "uploads/u/v.mp4",
            "/results/v-1/x.jpg",
        ] {
            assert_eq!(parse_results_key(bad), None, "{bad}");
        }
        for n in [1, 2, 10, u32::MAX] {
            assert_eq!(
                parse_person_thumbnail_file(&person_thumbnail_file(n)),
                Some(n)
            );
        }
        for bad in [
            "0.jpg",
            "01.jpg",
            "+1.jpg",
            "-1.jpg",
            "x.jpg",
            "1.png",
            "1.JPG",
            ".jpg",
            "1",
            "1.jpg.jpg",
            "../1.jpg",
            "4294967296.jpg",
            " 1.jpg",
        ] {
            assert_eq!(parse_person_thumbnail_file(bad), None, "{bad}");
        }
    }
}
