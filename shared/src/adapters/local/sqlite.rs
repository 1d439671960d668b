use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use crate::ports::{Page, ResultStore, StoreError, StoreResult, UserStore, VideoStore};
use crate::{AnalysisState, FrameResult, User, Video, VideoStatus};

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
    record TEXT NOT NULL,   -- the Video as JSON, minus title and analysis
    analysis TEXT NOT NULL  -- AnalysisState as JSON
);
CREATE INDEX IF NOT EXISTS videos_by_user ON videos (user_id, uploaded_ms DESC, id DESC);
CREATE TABLE IF NOT EXISTS frames (
    video_id TEXT NOT NULL,
    frame INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (video_id, frame)
) WITHOUT ROWID;
";

impl SqliteStore {
    pub fn open(path: &Path) -> StoreResult<Self> {
        let conn = Connection::open(path).map_err(backend)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    pub fn in_memory() -> StoreResult<Self> {
        let conn = Connection::open_in_memory().map_err(backend)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After a crash or restart: analyses that were running go back to `PENDING`; returns their
    /// keys so the caller can queue them again.
    pub fn requeue_interrupted(&self) -> StoreResult<Vec<String>> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT id, record, title, analysis FROM videos WHERE status = 'PROCESSING'")
            .map_err(backend)?;
        let videos: Vec<Video> = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                ))
            })
            .map_err(backend)?
            .filter_map(Result::ok)
            .filter_map(|(record, title, analysis)| video_from(&record, &title, &analysis).ok())
            .collect();
        let mut keys = Vec::new();
        for video in videos {
            let state = AnalysisState {
                status: VideoStatus::Pending,
                progress: 0,
                ..video.analysis.clone()
            };
            db.execute(
                "UPDATE videos SET status = 'PENDING', analysis = ?2 WHERE id = ?1",
                params![video.id, serde_json::to_string(&state).map_err(backend)?],
            )
            .map_err(backend)?;
            keys.push(video.s3_key);
        }
        Ok(keys)
    }
}

fn video_from(record: &str, title: &str, analysis: &str) -> StoreResult<Video> {
    let mut video: Video = serde_json::from_str(record).map_err(backend)?;
    video.title = title.to_string();
    video.analysis = serde_json::from_str(analysis).map_err(backend)?;
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
                "SELECT record, title, analysis FROM videos WHERE id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(backend)?;
        row.map(|(record, title, analysis)| video_from(&record, &title, &analysis))
            .transpose()
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
                "SELECT record, title, analysis, uploaded_ms, id FROM videos
                 WHERE user_id = ?1 AND (uploaded_ms < ?2 OR (uploaded_ms = ?2 AND id < ?3) OR ?4)
                 ORDER BY uploaded_ms DESC, id DESC LIMIT ?5",
            )
            .map_err(backend)?;
        let rows: Vec<(String, String, String, i64, String)> = stmt
            .query_map(
                params![
                    user_id,
                    before_ms,
                    before_id,
                    cursor.is_none(),
                    limit as i64 + 1
                ],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        let more = rows.len() > limit;
        let mut items = Vec::with_capacity(limit.min(rows.len()));
        let mut next = None;
        for (record, title, analysis, ms, id) in rows.into_iter().take(limit) {
            items.push(video_from(&record, &title, &analysis)?);
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

    async fn claim_for_analysis(&self, id: &str) -> StoreResult<bool> {
        let db = self.db();
        let Some(analysis) = db
            .query_row("SELECT analysis FROM videos WHERE id = ?1", [id], |r| {
                r.get::<_, String>(0)
            })
            .optional()
            .map_err(backend)?
        else {
            return Ok(false);
        };
        let mut state: AnalysisState = serde_json::from_str(&analysis).map_err(backend)?;
        state.status = VideoStatus::Processing;
        state.progress = 0;
        state.error = None;
        let changed = db
            .execute(
                "UPDATE videos SET status = 'PROCESSING', analysis = ?2 WHERE id = ?1 AND status IN ('PENDING', 'FAILED')",
                params![id, serde_json::to_string(&state).map_err(backend)?],
            )
            .map_err(backend)?;
        Ok(changed == 1)
    }

    async fn delete_video(&self, id: &str) -> StoreResult<()> {
        self.db()
            .execute("DELETE FROM videos WHERE id = ?1", [id])
            .map(|_| ())
            .map_err(backend)
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

    async fn delete_frames(&self, video_id: &str) -> StoreResult<()> {
        self.db()
            .execute("DELETE FROM frames WHERE video_id = ?1", [video_id])
            .map(|_| ())
            .map_err(backend)
    }
}
