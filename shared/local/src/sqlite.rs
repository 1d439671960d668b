use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use domain::ports::{
    AnalysisLedger, Page, PlanDecision, ProgressDelta, ResultStore, SegmentClaim, SegmentStatus,
    SegmentTally, StoreError, StoreResult, UploadRecord, UserStore, VideoStore,
};
use domain::{
    AnalysisPlan, AnalysisState, Checkpoint, FrameResult, StoredObject, TrackProfile, User, Video,
    VideoInfo, VideoStatus,
};

/// Users, videos and frame results in one SQLite file (WAL mode). Queries take microseconds, so
/// they run inline under a mutex rather than on a blocking pool.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

const SCHEMA: &str = "
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

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Columns added since the first release, for databases made before them.
const MIGRATIONS: &[(&str, &str, &str)] = &[
    (
        "videos",
        "upload",
        "ALTER TABLE videos ADD COLUMN upload TEXT",
    ),
    (
        "analysis_segments",
        "crashes",
        "ALTER TABLE analysis_segments ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0",
    ),
];

fn prepare(conn: &Connection) -> StoreResult<()> {
    conn.execute_batch(SCHEMA).map_err(backend)?;
    for (table, column, alter) in MIGRATIONS {
        let present: bool = conn
            .query_row(
                &format!("SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = ?1"),
                [column],
                |r| r.get::<_, i64>(0),
            )
            .map_err(backend)?
            > 0;
        if !present {
            conn.execute_batch(alter).map_err(backend)?;
        }
    }
    Ok(())
}

impl SqliteStore {
    pub fn open(path: &Path) -> StoreResult<Self> {
        let conn = Connection::open(path).map_err(backend)?;
        prepare(&conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    pub fn in_memory() -> StoreResult<Self> {
        let conn = Connection::open_in_memory().map_err(backend)?;
        prepare(&conn)?;
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
            .prepare(&format!(
                "SELECT {VIDEO_COLUMNS} FROM videos
                 WHERE status = 'PROCESSING' OR (status = 'PENDING' AND upload IS NOT NULL)
                 ORDER BY uploaded_ms"
            ))
            .map_err(backend)?;
        let rows: Vec<VideoRow> = stmt
            .query_map([], video_row)
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        rows.iter()
            .map(|row| video_from(row).map(|v| v.s3_key))
            .collect()
    }
}

/// The columns a video is read from: the record, then the fields kept in their own columns
/// so that their writers never overwrite each other.
const VIDEO_COLUMNS: &str = "record, title, analysis, upload";

type VideoRow = (String, String, String, Option<String>);

fn video_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VideoRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn video_from((record, title, analysis, upload): &VideoRow) -> StoreResult<Video> {
    let mut video: Video = serde_json::from_str(record).map_err(backend)?;
    video.title = title.to_string();
    video.analysis = serde_json::from_str(analysis).map_err(backend)?;
    video.upload = upload
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(backend)?;
    Ok(video)
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
        self.db()
            .execute(
                "INSERT INTO videos (id, user_id, uploaded_ms, status, title, record, analysis) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    video.id,
                    video.user_id,
                    video.uploaded_at.timestamp_millis(),
                    video.analysis.status.as_str(),
                    video.title,
                    serde_json::to_string(video).map_err(backend)?,
                    serde_json::to_string(&video.analysis).map_err(backend)?
                ],
            )
            .map(|_| ())
            .map_err(backend)
    }

    async fn video(&self, id: &str) -> StoreResult<Option<Video>> {
        let row = self
            .db()
            .query_row(
                &format!("SELECT {VIDEO_COLUMNS} FROM videos WHERE id = ?1"),
                [id],
                video_row,
            )
            .optional()
            .map_err(backend)?;
        row.as_ref().map(video_from).transpose()
    }

    async fn videos_of(
        &self,
        user_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Video>> {
        // keyset pagination on (uploaded_ms, id), newest first
        let (before_ms, before_id) = match cursor {
            None => (i64::MAX, String::new()),
            Some(c) => {
                let raw = URL_SAFE_NO_PAD
                    .decode(c)
                    .map_err(|_| StoreError::BadCursor)?;
                let text = String::from_utf8(raw).map_err(|_| StoreError::BadCursor)?;
                let (ms, id) = text.split_once(':').ok_or(StoreError::BadCursor)?;
                (
                    ms.parse().map_err(|_| StoreError::BadCursor)?,
                    id.to_string(),
                )
            }
        };
        let db = self.db();
        let mut stmt = db
            .prepare_cached(
                "SELECT record, title, analysis, upload, uploaded_ms, id FROM videos
                 WHERE user_id = ?1 AND (uploaded_ms < ?2 OR (uploaded_ms = ?2 AND id < ?3) OR ?4)
                 ORDER BY uploaded_ms DESC, id DESC LIMIT ?5",
            )
            .map_err(backend)?;
        let rows: Vec<(VideoRow, i64, String)> = stmt
            .query_map(
                params![
                    user_id,
                    before_ms,
                    before_id,
                    cursor.is_none(),
                    limit as i64 + 1
                ],
                |r| Ok((video_row(r)?, r.get(4)?, r.get(5)?)),
            )
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        let more = rows.len() > limit;
        let mut items = Vec::with_capacity(limit.min(rows.len()));
        let mut next = None;
        for (row, ms, id) in rows.into_iter().take(limit) {
            items.push(video_from(&row)?);
            if more {
                next = Some(URL_SAFE_NO_PAD.encode(format!("{ms}:{id}")));
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
                "UPDATE videos SET status = ?2, analysis = ?3 WHERE id = ?1",
                params![
                    id,
                    state.status.as_str(),
                    serde_json::to_string(state).map_err(backend)?
                ],
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
                    params![id, serde_json::to_string(object).map_err(backend)?],
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
        let mut state: AnalysisState = serde_json::from_str(&analysis).map_err(backend)?;
        state.status = VideoStatus::Processing;
        state.progress = 0;
        state.error = None;
        tx.execute(
            "UPDATE videos SET status = 'PROCESSING', analysis = ?2 WHERE id = ?1",
            params![video_id, serde_json::to_string(&state).map_err(backend)?],
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
        tx.execute(
            "UPDATE analysis_plans SET covered_ms = covered_ms + ?2, frames = frames + ?3 WHERE video_id = ?1",
            params![video_id, progress.covered_ms as i64, progress.frames as i64],
        )
        .map_err(backend)?;
        // the progress the API shows lives in the video's analysis state
        let row: Option<(String, String, i64, i64)> = tx
            .query_row(
                "SELECT v.analysis, p.plan, p.covered_ms, p.frames FROM videos v JOIN analysis_plans p ON p.video_id = v.id
                 WHERE v.id = ?1 AND v.status = 'PROCESSING'",
                [video_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(backend)?;
        if let Some((analysis, plan, covered, frames)) = row {
            let mut state: AnalysisState = serde_json::from_str(&analysis).map_err(backend)?;
            let plan: AnalysisPlan = serde_json::from_str(&plan).map_err(backend)?;
            state.progress = domain::progress_percent(covered as u64, plan.duration_ms);
            state.frames_analyzed = frames as u64;
            tx.execute(
                "UPDATE videos SET analysis = ?2 WHERE id = ?1",
                params![video_id, serde_json::to_string(&state).map_err(backend)?],
            )
            .map_err(backend)?;
        }
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
                "UPDATE videos SET status = ?2, analysis = ?3 WHERE id = ?1 AND status IN ('PENDING', 'PROCESSING')",
                params![
                    video_id,
                    state.status.as_str(),
                    serde_json::to_string(state).map_err(backend)?
                ],
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
        let db = self.db();
        let mut stmt = db
            .prepare_cached("SELECT data FROM frames WHERE video_id = ?1 AND frame > ?2 ORDER BY frame LIMIT ?3")
            .map_err(backend)?;
        let rows: Vec<String> = stmt
            .query_map(
                params![video_id, after.map_or(-1, |a| a as i64), limit as i64 + 1],
                |r| r.get(0),
            )
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
