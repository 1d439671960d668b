use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Deserialize;

use domain::ports::{
    AnalysisLedger, Page, PlanDecision, ProgressDelta, ResultStore, SegmentClaim, SegmentStatus,
    SegmentTally, StoreError, StoreResult, UploadRecord, UserStore, VideoStore,
};
use domain::{
    AnalysisPlan, AnalysisState, Checkpoint, FrameResult, StoredObject, TrackProfile, User, Video,
    VideoInfo, VideoStatus,
};

mod webhooks;

/// Users, videos, their analysis ledger (plans, segment leases), frame results, track profiles
/// and webhooks (endpoints, signing secrets, deliveries) in one SQLite file (WAL mode). Queries take microseconds, so they run inline under a
/// mutex rather than on a blocking pool.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Connection settings; outside the transaction `prepare` runs the schema in, where SQLite would
/// ignore them.
const PRAGMAS: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA foreign_keys = ON;
";

/// Every fact is in one column. A video's `status` is not stored a second time: the `status`
/// column is computed from `analysis` whenever a query reads it. The progress of a `PROCESSING`
/// video is not written into the video either: checkpoints add to its plan's `covered_ms` and
/// `frames`, and a video is read with them (see `video_from`).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS videos (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    title TEXT NOT NULL,
    s3_key TEXT NOT NULL,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size_bytes INTEGER,              -- as declared by the client; NULL when it declared none
    sample_fps REAL NOT NULL,
    uploaded_at_ns INTEGER NOT NULL, -- uploaded_at: nanoseconds since the Unix epoch
    upload TEXT,                     -- StoredObject as JSON, set once by record_upload
    analysis TEXT NOT NULL,          -- AnalysisState as JSON; while PROCESSING, progress and
                                     -- frames_analyzed are read from analysis_plans instead
    status TEXT GENERATED ALWAYS AS (json_extract(analysis, '$.status')) VIRTUAL,
    callback_url TEXT                -- announced to when the analysis ends; last, where
                                     -- MIGRATIONS adds it to older databases
);
CREATE INDEX IF NOT EXISTS videos_by_user ON videos (user_id, uploaded_at_ns DESC, id DESC);
CREATE TABLE IF NOT EXISTS frames (
    video_id TEXT NOT NULL,
    frame INTEGER NOT NULL,
    data TEXT NOT NULL,     -- FrameResult as JSON
    PRIMARY KEY (video_id, frame)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS track_profiles (
    video_id TEXT NOT NULL,
    track INTEGER NOT NULL,
    data TEXT NOT NULL,     -- TrackProfile as JSON
    PRIMARY KEY (video_id, track)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS analysis_plans (
    video_id TEXT PRIMARY KEY,
    plan TEXT NOT NULL,                     -- AnalysisPlan as JSON
    covered_ms INTEGER NOT NULL DEFAULT 0,  -- video time analysed: every checkpoint adds to it
    frames INTEGER NOT NULL DEFAULT 0,      -- frames analysed: every checkpoint adds to it
    done TEXT NOT NULL DEFAULT '[]',        -- indices of finished segments, JSON
    video_info TEXT                         -- VideoInfo as JSON, from the segment that reached
                                            -- the end of the stream
);
CREATE TABLE IF NOT EXISTS analysis_segments (
    video_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    owner TEXT,             -- NULL once released cleanly; kept by a run that crashed
    lease_until_ms INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    crashes INTEGER NOT NULL DEFAULT 0,
    checkpoint TEXT,        -- Checkpoint as JSON
    done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (video_id, idx)
) WITHOUT ROWID;
";

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Columns added since the first release, for databases made before them. (A `videos` table
/// that still keeps whole videos in `record` is rebuilt instead: see `migrate_record_videos`.)
const MIGRATIONS: &[(&str, &str, &str)] = &[
    (
        "analysis_segments",
        "crashes",
        "ALTER TABLE analysis_segments ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0",
    ),
    (
        "videos",
        "callback_url",
        "ALTER TABLE videos ADD COLUMN callback_url TEXT",
    ),
];

fn has_column(db: &Connection, table: &str, column: &str) -> StoreResult<bool> {
    db.query_row(
        "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
    .map_err(backend)
}

/// Creates the tables, or brings a database made by an earlier version up to date, in one
/// transaction: a database is either migrated whole or left as it was.
fn prepare(conn: &mut Connection) -> StoreResult<()> {
    conn.execute_batch(PRAGMAS).map_err(backend)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend)?;
    let record_videos = has_column(&tx, "videos", "record")?;
    if record_videos {
        // the index moves with a renamed table, and its name is needed for the new one
        tx.execute_batch(
            "DROP INDEX IF EXISTS videos_by_user;
             ALTER TABLE videos RENAME TO videos_with_record;",
        )
        .map_err(backend)?;
    }
    tx.execute_batch(SCHEMA).map_err(backend)?;
    tx.execute_batch(webhooks::SCHEMA).map_err(backend)?;
    for (table, column, alter) in MIGRATIONS {
        if !has_column(&tx, table, column)? {
            tx.execute_batch(alter).map_err(backend)?;
        }
    }
    if record_videos {
        migrate_record_videos(&tx)?;
        tx.execute_batch("DROP TABLE videos_with_record")
            .map_err(backend)?;
    }
    tx.commit().map_err(backend)
}

/// The fields of a video that never change and had no column of their own in earlier versions,
/// as their whole-video JSON (`record`) holds them; the rest of that JSON is ignored.
#[derive(Deserialize)]
struct RecordFields {
    s3_key: String,
    filename: String,
    content_type: String,
    size_bytes: Option<u64>,
    sample_fps: f64,
    uploaded_at: DateTime<Utc>,
}

/// Copies the videos of an earlier version's table (renamed `videos_with_record`) into the
/// current one. That table kept the whole `Video` as JSON in `record`, written once at creation,
/// beside `id`, `user_id` and the columns its writers kept up to date: `title`, `analysis`,
/// `upload` (absent from the oldest databases) and `status`, which conditional writes checked
/// and which therefore wins over the status in `analysis`. The progress checkpoints wrote into
/// `analysis` is the one computed from the plan's counters, which stay where they are.
fn migrate_record_videos(tx: &Transaction<'_>) -> StoreResult<()> {
    let upload = if has_column(tx, "videos_with_record", "upload")? {
        "upload"
    } else {
        "NULL"
    };
    struct Row {
        id: String,
        user_id: String,
        record: String,
        title: String,
        status: String,
        analysis: String,
        upload: Option<String>,
    }
    let rows: Vec<Row> = tx
        .prepare(&format!(
            "SELECT id, user_id, record, title, status, analysis, {upload} FROM videos_with_record"
        ))
        .map_err(backend)?
        .query_map([], |r| {
            Ok(Row {
                id: r.get(0)?,
                user_id: r.get(1)?,
                record: r.get(2)?,
                title: r.get(3)?,
                status: r.get(4)?,
                analysis: r.get(5)?,
                upload: r.get(6)?,
            })
        })
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    for row in rows {
        let unreadable = |e: &dyn std::fmt::Display| {
            StoreError::Backend(format!("cannot migrate video {}: {e}", row.id))
        };
        let fields: RecordFields = serde_json::from_str(&row.record).map_err(|e| unreadable(&e))?;
        let mut analysis: AnalysisState =
            serde_json::from_str(&row.analysis).map_err(|e| unreadable(&e))?;
        analysis.status = VideoStatus::parse(&row.status)
            .ok_or_else(|| unreadable(&format!("unknown status {:?}", row.status)))?;
        let upload = row
            .upload
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| unreadable(&e))?;
        let video = Video {
            id: row.id.clone(),
            user_id: row.user_id,
            title: row.title,
            s3_key: fields.s3_key,
            filename: fields.filename,
            content_type: fields.content_type,
            size_bytes: fields.size_bytes,
            sample_fps: fields.sample_fps,
            uploaded_at: fields.uploaded_at,
            upload,
            // callbacks came after this format
            callback_url: None,
            analysis,
        };
        insert_video(tx, &video).map_err(|e| unreadable(&e))?;
    }
    Ok(())
}

impl SqliteStore {
    pub fn open(path: &Path) -> StoreResult<Self> {
        let mut conn = Connection::open(path).map_err(backend)?;
        prepare(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    pub fn in_memory() -> StoreResult<Self> {
        let mut conn = Connection::open_in_memory().map_err(backend)?;
        prepare(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After a crash or restart: the leases this process held are void, so analyses that were
    /// running (or uploads stored but not yet analysed) are queued again and resume from their
    /// checkpoints; returns their keys. A run the restart cut short counts as crashed (see
    /// `AnalysisLedger::claim_segment`), so a video that keeps taking the process down ends as
    /// `FAILED` instead of being retried at every start.
    pub fn requeue_interrupted(&self) -> StoreResult<Vec<String>> {
        let db = self.db();
        db.execute(
            "UPDATE analysis_segments SET lease_until_ms = 0 WHERE done = 0",
            [],
        )
        .map_err(backend)?;
        let mut stmt = db
            .prepare(
                "SELECT s3_key FROM videos
                 WHERE status = 'PROCESSING' OR (status = 'PENDING' AND upload IS NOT NULL)
                 ORDER BY uploaded_at_ns",
            )
            .map_err(backend)?;
        stmt.query_map([], |r| r.get(0))
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)
    }
}

fn json_text<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(backend)
}

/// A time as the integer columns keep it: nanoseconds since the Unix epoch.
fn nanos(field: &str, at: DateTime<Utc>) -> StoreResult<i64> {
    at.timestamp_nanos_opt().ok_or_else(|| {
        StoreError::Backend(format!("{field} {at} is outside the years 1677 to 2262"))
    })
}

fn uploaded_at_ns(video: &Video) -> StoreResult<i64> {
    nanos("uploaded_at", video.uploaded_at)
}

/// The cursor of a listing newest first by (time, id), after the item at `ns` with `id`:
/// base64url, so that it goes into a `Link` header and a query string as it is.
fn make_cursor(ns: i64, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{ns}:{id}"))
}

/// The (time, id) a cursor of [`make_cursor`] resumes after.
fn read_cursor(cursor: &str) -> StoreResult<(i64, String)> {
    let raw = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| StoreError::BadCursor)?;
    let text = String::from_utf8(raw).map_err(|_| StoreError::BadCursor)?;
    let (ns, id) = text.split_once(':').ok_or(StoreError::BadCursor)?;
    Ok((
        ns.parse().map_err(|_| StoreError::BadCursor)?,
        id.to_string(),
    ))
}

fn insert_video(db: &Connection, video: &Video) -> StoreResult<()> {
    db.execute(
        "INSERT INTO videos (id, user_id, title, s3_key, filename, content_type, size_bytes, sample_fps, uploaded_at_ns, upload, analysis, callback_url)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            video.id,
            video.user_id,
            video.title,
            video.s3_key,
            video.filename,
            video.content_type,
            video.size_bytes,
            video.sample_fps,
            uploaded_at_ns(video)?,
            video.upload.as_ref().map(json_text).transpose()?,
            json_text(&video.analysis)?,
            video.callback_url,
        ],
    )
    .map(|_| ())
    .map_err(backend)
}

/// How a video is read: its columns, its plan's progress counters and duration (NULL when it has
/// no plan), then its callback URL. `video_from` reads the columns in this order.
const SELECT_VIDEO: &str = "SELECT v.id, v.user_id, v.title, v.s3_key, v.filename, v.content_type,
        v.size_bytes, v.sample_fps, v.uploaded_at_ns, v.upload, v.analysis,
        p.covered_ms, p.frames, json_extract(p.plan, '$.duration_ms'), v.callback_url
    FROM videos v LEFT JOIN analysis_plans p ON p.video_id = v.id";

/// The JSON in column `i` (`None` for NULL).
fn json_column<T: serde::de::DeserializeOwned>(
    r: &rusqlite::Row<'_>,
    i: usize,
) -> rusqlite::Result<Option<T>> {
    r.get::<_, Option<String>>(i)?
        .map(|text| {
            serde_json::from_str(&text).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    i,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })
        })
        .transpose()
}

/// A video from a row of `SELECT_VIDEO`.
fn video_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<Video> {
    let mut analysis: AnalysisState = json_column(r, 10)?.ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            10,
            rusqlite::types::Type::Null,
            "a video without an analysis state".into(),
        )
    })?;
    // a running analysis has got as far as its checkpoints add up to
    if analysis.status == VideoStatus::Processing
        && let (Some(covered_ms), Some(frames), Some(duration_ms)) = (
            r.get::<_, Option<u64>>(11)?,
            r.get::<_, Option<u64>>(12)?,
            r.get::<_, Option<u64>>(13)?,
        )
    {
        analysis.progress = domain::progress_percent(covered_ms, duration_ms);
        analysis.frames_analyzed = frames;
    }
    Ok(Video {
        id: r.get(0)?,
        user_id: r.get(1)?,
        title: r.get(2)?,
        s3_key: r.get(3)?,
        filename: r.get(4)?,
        content_type: r.get(5)?,
        size_bytes: r.get(6)?,
        sample_fps: r.get(7)?,
        uploaded_at: DateTime::from_timestamp_nanos(r.get(8)?),
        upload: json_column(r, 9)?,
        callback_url: r.get(14)?,
        analysis,
    })
}

fn user_from(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let time = |i: usize| -> rusqlite::Result<DateTime<Utc>> {
        let s: String = row.get(i)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    i,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })
    };
    Ok(User {
        id: row.get(0)?,
        username: row.get(1)?,
        email: row.get(2)?,
        password_hash: row.get(3)?,
        created_at: time(4)?,
        updated_at: time(5)?,
    })
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let result = self.db().execute(
            "INSERT INTO users (id, username, email, password_hash, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![user.id, user.username, user.email.to_lowercase(), user.password_hash, user.created_at.to_rfc3339(), user.updated_at.to_rfc3339()],
        );
        match result {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Conflict("email already registered".into()))
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        self.db()
            .query_row(
                "SELECT id, username, email, password_hash, created_at, updated_at FROM users WHERE email = ?1",
                [email.to_lowercase()],
                user_from,
            )
            .optional()
            .map_err(backend)
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        self.db()
            .query_row("SELECT id, username, email, password_hash, created_at, updated_at FROM users WHERE id = ?1", [id], user_from)
            .optional()
            .map_err(backend)
    }
}

#[async_trait]
impl VideoStore for SqliteStore {
    async fn create_video(&self, video: &Video) -> StoreResult<()> {
        insert_video(&self.db(), video)
    }

    async fn video(&self, id: &str) -> StoreResult<Option<Video>> {
        self.db()
            .query_row(&format!("{SELECT_VIDEO} WHERE v.id = ?1"), [id], video_from)
            .optional()
            .map_err(backend)
    }

    async fn videos_of(
        &self,
        user_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Video>> {
        // keyset pagination on (uploaded_at_ns, id), newest first
        let (before_ns, before_id) = cursor.map(read_cursor).transpose()?.unwrap_or_default();
        let db = self.db();
        let mut stmt = db
            .prepare_cached(&format!(
                "{SELECT_VIDEO}
                 WHERE v.user_id = ?1
                   AND (v.uploaded_at_ns < ?2 OR (v.uploaded_at_ns = ?2 AND v.id < ?3) OR ?4)
                 ORDER BY v.uploaded_at_ns DESC, v.id DESC LIMIT ?5"
            ))
            .map_err(backend)?;
        let mut items: Vec<Video> = stmt
            .query_map(
                params![
                    user_id,
                    before_ns,
                    before_id,
                    cursor.is_none(),
                    limit as i64 + 1
                ],
                video_from,
            )
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        let mut next = None;
        if items.len() > limit {
            items.truncate(limit);
            if let Some(last) = items.last() {
                next = Some(make_cursor(uploaded_at_ns(last)?, &last.id));
            }
        }
        Ok(Page { items, next })
    }

    async fn set_title(&self, id: &str, title: &str) -> StoreResult<()> {
        let changed = self
            .db()
            .execute(
                "UPDATE videos SET title = ?2 WHERE id = ?1",
                params![id, title],
            )
            .map_err(backend)?;
        if changed == 0 {
            Err(StoreError::NotFound)
        } else {
            Ok(())
        }
    }

    async fn set_analysis(&self, id: &str, state: &AnalysisState) -> StoreResult<()> {
        let changed = self
            .db()
            .execute(
                "UPDATE videos SET analysis = ?2 WHERE id = ?1",
                params![id, json_text(state)?],
            )
            .map_err(backend)?;
        if changed == 0 {
            Err(StoreError::NotFound)
        } else {
            Ok(())
        }
    }

    async fn record_upload(&self, id: &str, object: &StoredObject) -> StoreResult<UploadRecord> {
        let mut db = self.db();
        let tx = db.transaction().map_err(backend)?;
        let row: Option<Option<String>> = tx
            .query_row("SELECT upload FROM videos WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(backend)?;
        let decision = match row {
            None => UploadRecord::Gone,
            Some(None) => {
                tx.execute(
                    "UPDATE videos SET upload = ?2 WHERE id = ?1",
                    params![id, json_text(object)?],
                )
                .map_err(backend)?;
                UploadRecord::Recorded
            }
            Some(Some(recorded)) => {
                let recorded: StoredObject = serde_json::from_str(&recorded).map_err(backend)?;
                if recorded.same_as(object) {
                    UploadRecord::Same
                } else {
                    UploadRecord::Different(recorded)
                }
            }
        };
        tx.commit().map_err(backend)?;
        Ok(decision)
    }

    /// One transaction: a worker's later write finds its segment gone (see `VideoStore`).
    async fn delete_video(&self, id: &str) -> StoreResult<()> {
        let mut db = self.db();
        let tx = db.transaction().map_err(backend)?;
        for table in [
            "videos WHERE id",
            "analysis_plans WHERE video_id",
            "analysis_segments WHERE video_id",
            "frames WHERE video_id",
            "track_profiles WHERE video_id",
        ] {
            tx.execute(&format!("DELETE FROM {table} = ?1"), [id])
                .map_err(backend)?;
        }
        tx.commit().map_err(backend)
    }
}

#[async_trait]
impl AnalysisLedger for SqliteStore {
    async fn plan(&self, video_id: &str) -> StoreResult<Option<AnalysisPlan>> {
        let plan: Option<String> = self
            .db()
            .query_row(
                "SELECT plan FROM analysis_plans WHERE video_id = ?1",
                [video_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        plan.map(|p| serde_json::from_str(&p).map_err(backend))
            .transpose()
    }

    async fn start_analysis(
        &self,
        video_id: &str,
        plan: &AnalysisPlan,
    ) -> StoreResult<PlanDecision> {
        let mut db = self.db();
        let tx = db.transaction().map_err(backend)?;
        let row: Option<(String, String)> = tx
            .query_row(
                "SELECT status, analysis FROM videos WHERE id = ?1",
                [video_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(backend)?;
        let Some((status, analysis)) = row else {
            return Ok(PlanDecision::Finished);
        };
        if status != "PENDING" {
            let existing: Option<String> = tx
                .query_row(
                    "SELECT plan FROM analysis_plans WHERE video_id = ?1",
                    [video_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            return match (status.as_str(), existing) {
                ("PROCESSING", Some(p)) => Ok(PlanDecision::Existing(
                    serde_json::from_str(&p).map_err(backend)?,
                )),
                _ => Ok(PlanDecision::Finished),
            };
        }
        // progress and frames_analyzed are read from the plan's counters from now on
        let mut state: AnalysisState = serde_json::from_str(&analysis).map_err(backend)?;
        state.status = VideoStatus::Processing;
        state.progress = 0;
        state.error = None;
        state.frames_analyzed = 0;
        tx.execute(
            "UPDATE videos SET analysis = ?2 WHERE id = ?1",
            params![video_id, json_text(&state)?],
        )
        .map_err(backend)?;
        tx.execute(
            "INSERT OR REPLACE INTO analysis_plans (video_id, plan) VALUES (?1, ?2)",
            params![video_id, serde_json::to_string(plan).map_err(backend)?],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(PlanDecision::Recorded)
    }

    async fn claim_segment(
        &self,
        video_id: &str,
        index: u32,
        owner: &str,
        lease: Duration,
    ) -> StoreResult<SegmentClaim> {
        let mut db = self.db();
        let tx = db.transaction().map_err(backend)?;
        type SegmentRow = (i64, i64, i64, i64, Option<String>, Option<String>);
        let row: Option<SegmentRow> = tx
            .query_row(
                "SELECT done, lease_until_ms, attempts, crashes, owner, checkpoint FROM analysis_segments WHERE video_id = ?1 AND idx = ?2",
                params![video_id, index],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .optional()
            .map_err(backend)?;
        let now = now_ms();
        let (attempts, crashes, checkpoint) = match row {
            Some((1, ..)) => return Ok(SegmentClaim::Done),
            Some((_, until, ..)) if until > now => return Ok(SegmentClaim::Busy),
            // an owner that never released its lease: that run crashed or was killed
            Some((_, _, attempts, crashes, owner, checkpoint)) => {
                (attempts, crashes + i64::from(owner.is_some()), checkpoint)
            }
            None => (0, 0, None),
        };
        tx.execute(
            "INSERT INTO analysis_segments (video_id, idx, owner, lease_until_ms, attempts, crashes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (video_id, idx) DO UPDATE SET owner = ?3, lease_until_ms = ?4, attempts = ?5, crashes = ?6",
            params![video_id, index, owner, now + lease.as_millis() as i64, attempts + 1, crashes],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(SegmentClaim::Claimed {
            crashed_runs: crashes as u32,
            attempt: attempts as u32 + 1,
            checkpoint: checkpoint
                .map(|c| serde_json::from_str(&c).map_err(backend))
                .transpose()?,
        })
    }

    async fn checkpoint(
        &self,
        video_id: &str,
        index: u32,
        owner: &str,
        checkpoint: &Checkpoint,
        progress: ProgressDelta,
        lease: Duration,
    ) -> StoreResult<bool> {
        let mut db = self.db();
        let tx = db.transaction().map_err(backend)?;
        let changed = tx
            .execute(
                "UPDATE analysis_segments SET checkpoint = ?4, lease_until_ms = ?5
                 WHERE video_id = ?1 AND idx = ?2 AND owner = ?3 AND done = 0",
                params![
                    video_id,
                    index,
                    owner,
                    serde_json::to_string(checkpoint).map_err(backend)?,
                    now_ms() + lease.as_millis() as i64
                ],
            )
            .map_err(backend)?;
        if changed == 0 {
            return Ok(false);
        }
        // the video's progress: read from these counters, never copied into the video
        tx.execute(
            "UPDATE analysis_plans SET covered_ms = covered_ms + ?2, frames = frames + ?3 WHERE video_id = ?1",
            params![video_id, progress.covered_ms as i64, progress.frames as i64],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(true)
    }

    async fn release_segment(&self, video_id: &str, index: u32, owner: &str) -> StoreResult<()> {
        self.db()
            .execute(
                "UPDATE analysis_segments SET lease_until_ms = 0, owner = NULL WHERE video_id = ?1 AND idx = ?2 AND owner = ?3",
                params![video_id, index, owner],
            )
            .map(|_| ())
            .map_err(backend)
    }

    async fn finish_segment(
        &self,
        video_id: &str,
        index: u32,
        owner: Option<&str>,
        video: Option<&VideoInfo>,
    ) -> StoreResult<SegmentTally> {
        let mut db = self.db();
        let tx = db.transaction().map_err(backend)?;
        if let Some(owner) = owner {
            let changed = tx
                .execute(
                    "UPDATE analysis_segments SET done = 1, lease_until_ms = 0 WHERE video_id = ?1 AND idx = ?2 AND owner = ?3",
                    params![video_id, index, owner],
                )
                .map_err(backend)?;
            if changed == 0 {
                return Err(StoreError::Conflict("the segment's lease was lost".into()));
            }
        }
        let (plan, done, info): (String, String, Option<String>) = tx
            .query_row(
                "SELECT plan, done, video_info FROM analysis_plans WHERE video_id = ?1",
                [video_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(backend)?
            .ok_or(StoreError::NotFound)?;
        let mut done: Vec<u32> = serde_json::from_str(&done).map_err(backend)?;
        if !done.contains(&index) {
            done.push(index);
        }
        let info = match video {
            Some(v) => Some(serde_json::to_string(v).map_err(backend)?),
            None => info,
        };
        tx.execute(
            "UPDATE analysis_plans SET done = ?2, video_info = ?3 WHERE video_id = ?1",
            params![
                video_id,
                serde_json::to_string(&done).map_err(backend)?,
                info
            ],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        let plan: AnalysisPlan = serde_json::from_str(&plan).map_err(backend)?;
        Ok(SegmentTally {
            done: done.len() as u32,
            total: plan.segments.len() as u32,
            video: info
                .map(|i| serde_json::from_str(&i).map_err(backend))
                .transpose()?,
        })
    }

    async fn segments(&self, video_id: &str) -> StoreResult<Vec<SegmentStatus>> {
        let db = self.db();
        let mut stmt = db
            .prepare_cached(
                "SELECT idx, done, lease_until_ms FROM analysis_segments WHERE video_id = ?1 ORDER BY idx",
            )
            .map_err(backend)?;
        let now = now_ms();
        stmt.query_map([video_id], |r| {
            Ok(SegmentStatus {
                index: r.get(0)?,
                done: r.get::<_, i64>(1)? == 1,
                leased: r.get::<_, i64>(2)? > now,
            })
        })
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)
    }

    async fn end_analysis(&self, video_id: &str, state: &AnalysisState) -> StoreResult<bool> {
        let changed = self
            .db()
            .execute(
                "UPDATE videos SET analysis = ?2 WHERE id = ?1 AND status IN ('PENDING', 'PROCESSING')",
                params![video_id, json_text(state)?],
            )
            .map_err(backend)?;
        Ok(changed == 1)
    }
}

#[async_trait]
impl ResultStore for SqliteStore {
    async fn put_frames(&self, video_id: &str, frames: &[FrameResult]) -> StoreResult<()> {
        let mut db = self.db();
        let tx = db.transaction().map_err(backend)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO frames (video_id, frame, data) VALUES (?1, ?2, ?3)",
                )
                .map_err(backend)?;
            for frame in frames {
                stmt.execute(params![
                    video_id,
                    frame.frame as i64,
                    serde_json::to_string(frame).map_err(backend)?
                ])
                .map_err(backend)?;
            }
        }
        tx.commit().map_err(backend)
    }

    async fn frames(
        &self,
        video_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<(Vec<FrameResult>, Option<u64>)> {
        // no frame number is stored past i64::MAX, SQLite's largest integer
        let after = match after.map(i64::try_from) {
            None => -1,
            Some(Ok(after)) => after,
            Some(Err(_)) => return Ok((Vec::new(), None)),
        };
        let db = self.db();
        let mut stmt = db
            .prepare_cached("SELECT data FROM frames WHERE video_id = ?1 AND frame > ?2 ORDER BY frame LIMIT ?3")
            .map_err(backend)?;
        let rows: Vec<String> = stmt
            .query_map(params![video_id, after, limit as i64 + 1], |r| r.get(0))
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        let more = rows.len() > limit;
        let frames: Vec<FrameResult> = rows
            .iter()
            .take(limit)
            .map(|d| serde_json::from_str(d).map_err(backend))
            .collect::<Result<_, _>>()?;
        let next = if more {
            frames.last().map(|f| f.frame)
        } else {
            None
        };
        Ok((frames, next))
    }

    async fn put_tracks(&self, video_id: &str, tracks: &[TrackProfile]) -> StoreResult<()> {
        let mut db = self.db();
        let tx = db.transaction().map_err(backend)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO track_profiles (video_id, track, data) VALUES (?1, ?2, ?3)",
                )
                .map_err(backend)?;
            for track in tracks {
                stmt.execute(params![
                    video_id,
                    track.track,
                    serde_json::to_string(track).map_err(backend)?
                ])
                .map_err(backend)?;
            }
        }
        tx.commit().map_err(backend)
    }

    async fn tracks(&self, video_id: &str) -> StoreResult<Vec<TrackProfile>> {
        let db = self.db();
        let mut stmt = db
            .prepare_cached("SELECT data FROM track_profiles WHERE video_id = ?1 ORDER BY track")
            .map_err(backend)?;
        let rows: Vec<String> = stmt
            .query_map([video_id], |r| r.get(0))
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        rows.iter()
            .map(|d| serde_json::from_str(d).map_err(backend))
            .collect()
    }

    async fn delete_frames(&self, video_id: &str) -> StoreResult<()> {
        let db = self.db();
        for table in ["frames", "track_profiles"] {
            db.execute(
                &format!("DELETE FROM {table} WHERE video_id = ?1"),
                [video_id],
            )
            .map_err(backend)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use domain::{AnalysisPlan, SegmentPlan};

    /// The schema of the previous version (`git show 1b11a40:shared/local/src/sqlite.rs`): the
    /// whole video in `record`, beside copies of its title, status and analysis.
    const RECORD_SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA foreign_keys = ON;
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS videos (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    uploaded_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    title TEXT NOT NULL,
    record TEXT NOT NULL,   -- the Video as JSON; title, upload and analysis are read from their columns
    analysis TEXT NOT NULL, -- AnalysisState as JSON
    upload TEXT             -- StoredObject as JSON, set once by record_upload
);
CREATE INDEX IF NOT EXISTS videos_by_user ON videos (user_id, uploaded_ms DESC, id DESC);
CREATE TABLE IF NOT EXISTS frames (
    video_id TEXT NOT NULL,
    frame INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (video_id, frame)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS track_profiles (
    video_id TEXT NOT NULL,
    track INTEGER NOT NULL,
    data TEXT NOT NULL,     -- TrackProfile as JSON
    PRIMARY KEY (video_id, track)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS analysis_plans (
    video_id TEXT PRIMARY KEY,
    plan TEXT NOT NULL,          -- AnalysisPlan as JSON
    covered_ms INTEGER NOT NULL DEFAULT 0,
    frames INTEGER NOT NULL DEFAULT 0,
    done TEXT NOT NULL DEFAULT '[]',  -- indices of finished segments, JSON
    video_info TEXT
);
CREATE TABLE IF NOT EXISTS analysis_segments (
    video_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    owner TEXT,             -- NULL once released cleanly; kept by a run that crashed
    lease_until_ms INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    crashes INTEGER NOT NULL DEFAULT 0,
    checkpoint TEXT,
    done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (video_id, idx)
) WITHOUT ROWID;
";

    /// The first release's: no `videos.upload`, no `analysis_segments.crashes`.
    fn first_schema() -> String {
        let without_upload = RECORD_SCHEMA.replace(
            "    analysis TEXT NOT NULL, -- AnalysisState as JSON\n    upload TEXT             -- StoredObject as JSON, set once by record_upload\n",
            "    analysis TEXT NOT NULL  -- AnalysisState as JSON\n",
        );
        let first = without_upload.replace("    crashes INTEGER NOT NULL DEFAULT 0,\n", "");
        assert!(!first.contains("upload TEXT") && !first.contains("crashes"));
        first
    }

    fn created(id: &str, owner: &str, uploaded_at: DateTime<Utc>) -> Video {
        Video {
            id: id.into(),
            user_id: owner.into(),
            title: format!("clip {id}"),
            s3_key: domain::object_key(owner, id, "mp4"),
            filename: format!("{id}.mp4"),
            content_type: "video/mp4".into(),
            size_bytes: Some(1234),
            sample_fps: 2.5,
            uploaded_at,
            upload: None,
            callback_url: None,
            analysis: AnalysisState::pending(),
        }
    }

    fn plan_of_20_s() -> AnalysisPlan {
        let segment = |index: u32, start_ms: u64, end_ms: u64| SegmentPlan {
            index,
            seek_s: (index > 0).then_some(start_ms as f64 / 1000.0),
            end_s: (index == 0).then_some(end_ms as f64 / 1000.0),
            first_frame: start_ms / 40,
            start_ms,
            end_ms,
        };
        AnalysisPlan {
            sample_fps: 2.5,
            start_s: 0.0,
            duration_ms: 20_000,
            segments: vec![segment(0, 0, 10_000), segment(1, 10_000, 20_000)],
        }
    }

    /// A video as the previous version left it: `record` written at creation, the other
    /// columns as its writers last left them.
    fn insert_record_row(db: &Connection, at_creation: &Video, now: &Video, with_upload: bool) {
        let columns = if with_upload {
            "id, user_id, uploaded_ms, status, title, record, analysis, upload"
        } else {
            "id, user_id, uploaded_ms, status, title, record, analysis"
        };
        let upload = now.upload.as_ref().map(|u| json_text(u).unwrap());
        let values = params![
            now.id,
            now.user_id,
            now.uploaded_at.timestamp_millis(),
            now.analysis.status.as_str(),
            now.title,
            json_text(at_creation).unwrap(),
            json_text(&now.analysis).unwrap(),
            upload,
        ];
        let count = if with_upload { 8 } else { 7 };
        let placeholders: Vec<String> = (1..=count).map(|i| format!("?{i}")).collect();
        db.execute(
            &format!(
                "INSERT INTO videos ({columns}) VALUES ({})",
                placeholders.join(", ")
            ),
            &values[..count],
        )
        .unwrap();
    }

    /// Videos in every state, as the previous version stored them, and how they must read.
    fn record_database(path: &Path, schema: &str, with_upload: bool) -> Vec<Video> {
        let db = Connection::open(path).unwrap();
        db.execute_batch(schema).unwrap();
        let t0 = Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap();
        // nanoseconds that milliseconds (the old `uploaded_ms`) would lose
        let at =
            |s: i64| t0 + chrono::Duration::seconds(s) + chrono::Duration::nanoseconds(123_456_789);
        let upload = StoredObject {
            size: 1234,
            etag: Some("\"e1\"".into()),
            version_id: Some("v-1".into()),
        };
        let mut expected = Vec::new();
        let mut add = |at_creation: Video, now: Video| {
            insert_record_row(&db, &at_creation, &now, with_upload);
            expected.push(now);
        };

        // renamed after creation: `record` still has the first title
        let v = Video {
            size_bytes: None,
            ..created("pending", "ann", at(1))
        };
        add(
            v.clone(),
            Video {
                title: "Holiday".into(),
                ..v
            },
        );

        // uploaded, not yet analysed
        let v = created("queued", "ann", at(2));
        add(
            v.clone(),
            Video {
                upload: with_upload.then(|| upload.clone()),
                ..v
            },
        );

        // half analysed: the old checkpoints wrote the progress into `analysis` too
        let v = created("running", "ann", at(3));
        let running = Video {
            upload: with_upload.then(|| upload.clone()),
            analysis: AnalysisState {
                status: VideoStatus::Processing,
                progress: 25,
                frames_analyzed: 26,
                ..AnalysisState::pending()
            },
            ..v.clone()
        };
        add(v, running);
        db.execute(
            "INSERT INTO analysis_plans (video_id, plan, covered_ms, frames) VALUES ('running', ?1, 5000, 26)",
            [json_text(&plan_of_20_s()).unwrap()],
        )
        .unwrap();
        db.execute(
            "INSERT INTO analysis_segments (video_id, idx, owner, lease_until_ms, attempts, checkpoint)
             VALUES ('running', 0, 'worker-a', 0, 1, ?1)",
            [json_text(&Checkpoint { frame: 125, t_ms: 5000 }).unwrap()],
        )
        .unwrap();

        let v = created("done", "ann", at(4));
        let done = Video {
            upload: with_upload.then(|| upload.clone()),
            analysis: AnalysisState {
                status: VideoStatus::Completed,
                progress: 100,
                video: Some(VideoInfo {
                    duration_ms: 20_000,
                    frame_count: 500,
                    codec: "h264".into(),
                    ..Default::default()
                }),
                frames_analyzed: 50,
                summary: Some(domain::SummaryBuilder::new(false).finish()),
                processed_at: Some(at(60)),
                ..AnalysisState::pending()
            },
            ..v.clone()
        };
        add(v, done);

        let v = created("failed", "ann", at(5));
        let failed = Video {
            analysis: AnalysisState {
                status: VideoStatus::Failed,
                error: Some("not a video".into()),
                processed_at: Some(at(61)),
                ..AnalysisState::pending()
            },
            ..v.clone()
        };
        add(v, failed);

        let v = created("bobs", "bob", at(6));
        add(v.clone(), v);
        expected
    }

    fn video_columns(store: &SqliteStore) -> Vec<String> {
        let db = store.db();
        let mut stmt = db
            .prepare("SELECT name FROM pragma_table_xinfo('videos') ORDER BY cid")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    async fn all_of(store: &SqliteStore, owner: &str) -> Vec<Video> {
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let page = store.videos_of(owner, 2, cursor.as_deref()).await.unwrap();
            all.extend(page.items);
            match page.next {
                Some(next) => cursor = Some(next),
                None => return all,
            }
        }
    }

    async fn opens_with_every_video(schema: &str, with_upload: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deepemotion.db");
        let expected = record_database(&path, schema, with_upload);

        for _ in 0..2 {
            // the second opening finds nothing left to migrate
            let store = SqliteStore::open(&path).unwrap();
            assert_eq!(
                video_columns(&store),
                [
                    "id",
                    "user_id",
                    "title",
                    "s3_key",
                    "filename",
                    "content_type",
                    "size_bytes",
                    "sample_fps",
                    "uploaded_at_ns",
                    "upload",
                    "analysis",
                    "status",
                    "callback_url"
                ]
            );
            for video in &expected {
                assert_eq!(
                    store.video(&video.id).await.unwrap().as_ref(),
                    Some(video),
                    "{}",
                    video.id
                );
            }
            let mut anns: Vec<Video> = expected
                .iter()
                .filter(|v| v.user_id == "ann")
                .cloned()
                .collect();
            anns.reverse();
            assert_eq!(all_of(&store, "ann").await, anns, "newest first, in pages");
            assert_eq!(all_of(&store, "bob").await.len(), 1);
        }

        // the ledger carries on where the previous version left it
        let store = SqliteStore::open(&path).unwrap();
        let mut requeued = vec![domain::object_key("ann", "running", "mp4")];
        if with_upload {
            requeued.insert(0, domain::object_key("ann", "queued", "mp4"));
        }
        assert_eq!(store.requeue_interrupted().unwrap(), requeued);
        let lease = Duration::from_secs(60);
        assert_eq!(
            store
                .claim_segment("running", 0, "worker-b", lease)
                .await
                .unwrap(),
            SegmentClaim::Claimed {
                attempt: 2,
                checkpoint: Some(Checkpoint {
                    frame: 125,
                    t_ms: 5000
                }),
                crashed_runs: 1,
            }
        );
        let progress = ProgressDelta {
            covered_ms: 5000,
            frames: 24,
        };
        let at = Checkpoint {
            frame: 250,
            t_ms: 10_000,
        };
        assert!(
            store
                .checkpoint("running", 0, "worker-b", &at, progress, lease)
                .await
                .unwrap()
        );
        let running = store.video("running").await.unwrap().unwrap().analysis;
        assert_eq!((running.progress, running.frames_analyzed), (50, 50));
        assert_eq!(
            store
                .start_analysis("queued", &plan_of_20_s())
                .await
                .unwrap(),
            PlanDecision::Recorded
        );
        assert!(
            !store
                .end_analysis("done", &AnalysisState::pending())
                .await
                .unwrap(),
            "a finished video stays finished"
        );
        assert_eq!(
            store
                .record_upload(
                    "queued",
                    &StoredObject {
                        size: 1234,
                        etag: None,
                        version_id: None,
                    }
                )
                .await
                .unwrap(),
            if with_upload {
                UploadRecord::Same
            } else {
                UploadRecord::Recorded
            }
        );
    }

    #[tokio::test]
    async fn a_database_of_the_previous_version_opens_with_every_video() {
        opens_with_every_video(RECORD_SCHEMA, true).await;
    }

    #[tokio::test]
    async fn a_database_of_the_first_release_opens_with_every_video() {
        opens_with_every_video(&first_schema(), false).await;
    }

    /// A migration that fails leaves the database as it was.
    #[tokio::test]
    async fn a_failed_migration_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deepemotion.db");
        record_database(&path, RECORD_SCHEMA, true);
        Connection::open(&path)
            .unwrap()
            .execute("UPDATE videos SET record = '{' WHERE id = 'done'", [])
            .unwrap();
        let error = SqliteStore::open(&path).err().expect("a broken record");
        assert!(error.to_string().contains("video done"), "{error}");
        let db = Connection::open(&path).unwrap();
        assert!(has_column(&db, "videos", "record").unwrap());
        let count: i64 = db
            .query_row("SELECT COUNT(*) FROM videos", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 6);
    }

    #[tokio::test]
    async fn every_field_of_a_video_is_stored_once_and_read_back_equal() {
        let store = SqliteStore::in_memory().unwrap();
        let mut video = created("v1", "ann", Utc::now());
        video.sample_fps = 29.97;
        video.callback_url = Some("https://hooks.example.com/done?v=1".into());
        video.upload = Some(StoredObject {
            size: 7,
            etag: Some("e".into()),
            version_id: None,
        });
        store.create_video(&video).await.unwrap();
        assert_eq!(store.video("v1").await.unwrap(), Some(video.clone()));
        let stored: (String, String) = store
            .db()
            .query_row(
                "SELECT analysis, status FROM videos WHERE id = 'v1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            stored,
            (json_text(&video.analysis).unwrap(), "PENDING".into())
        );

        // the status is the analysis state's
        let failed = AnalysisState {
            status: VideoStatus::Failed,
            error: Some("x".into()),
            ..AnalysisState::pending()
        };
        store.set_analysis("v1", &failed).await.unwrap();
        let status: String = store
            .db()
            .query_row("SELECT status FROM videos WHERE id = 'v1'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(status, "FAILED");
        assert_eq!(store.video("v1").await.unwrap().unwrap().analysis, failed);
    }

    /// The schema of the version before per-video callbacks: `videos` without `callback_url`.
    fn schema_before_callbacks() -> String {
        let before = SCHEMA.replace(
            "VIRTUAL,\n    callback_url TEXT                -- announced to when the analysis ends; last, where\n                                     -- MIGRATIONS adds it to older databases\n",
            "VIRTUAL\n",
        );
        assert!(!before.contains("callback_url"));
        format!("{PRAGMAS}{before}")
    }

    #[tokio::test]
    async fn a_database_from_before_callbacks_gets_the_column_and_keeps_its_videos() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deepemotion.db");
        let old = created("old", "ann", Utc::now());
        {
            let db = Connection::open(&path).unwrap();
            db.execute_batch(&schema_before_callbacks()).unwrap();
            db.execute(
                "INSERT INTO videos (id, user_id, title, s3_key, filename, content_type, size_bytes, sample_fps, uploaded_at_ns, analysis)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    old.id,
                    old.user_id,
                    old.title,
                    old.s3_key,
                    old.filename,
                    old.content_type,
                    old.size_bytes,
                    old.sample_fps,
                    uploaded_at_ns(&old).unwrap(),
                    json_text(&old.analysis).unwrap(),
                ],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(video_columns(&store).last().unwrap(), "callback_url");
        assert_eq!(store.video("old").await.unwrap(), Some(old));
        let new = Video {
            callback_url: Some("https://hooks.example.com/x".into()),
            ..created("new", "ann", Utc::now())
        };
        store.create_video(&new).await.unwrap();
        assert_eq!(store.video("new").await.unwrap(), Some(new));
        drop(store);
        // and opens again with nothing left to do
        SqliteStore::open(&path).unwrap();
    }

    /// Checkpoints add to the plan's counters only; the video is read with them.
    #[tokio::test]
    async fn checkpoints_write_progress_once() {
        let store = SqliteStore::in_memory().unwrap();
        store
            .create_video(&created("v1", "ann", Utc::now()))
            .await
            .unwrap();
        store.start_analysis("v1", &plan_of_20_s()).await.unwrap();
        let stored_analysis = || -> String {
            store
                .db()
                .query_row("SELECT analysis FROM videos WHERE id = 'v1'", [], |r| {
                    r.get(0)
                })
                .unwrap()
        };
        let before = stored_analysis();
        let lease = Duration::from_secs(60);
        store.claim_segment("v1", 0, "w", lease).await.unwrap();
        let delta = ProgressDelta {
            covered_ms: 5000,
            frames: 26,
        };
        let at = Checkpoint {
            frame: 125,
            t_ms: 5000,
        };
        assert!(
            store
                .checkpoint("v1", 0, "w", &at, delta, lease)
                .await
                .unwrap()
        );
        assert_eq!(stored_analysis(), before, "the video itself is not written");
        let state = store.video("v1").await.unwrap().unwrap().analysis;
        assert_eq!(
            (state.status, state.progress, state.frames_analyzed),
            (VideoStatus::Processing, 25, 26)
        );
        let listed = store.videos_of("ann", 10, None).await.unwrap().items;
        assert_eq!(listed[0].analysis, state, "listing reads it the same way");
    }
}
