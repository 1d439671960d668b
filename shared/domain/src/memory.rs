//! In-memory fakes of the users, videos, results, blobs, jobs and rate-limit ports, for tests of
//! the router; [`MemoryRateLimiter`] is also the one-machine server's rate limiter.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;

use crate::ports::*;
use crate::{AnalysisState, FrameResult, MediaSource, StoredObject, TrackProfile, User, Video};

#[derive(Default)]
pub struct MemoryStore {
    users: Mutex<HashMap<String, User>>,
    videos: Mutex<HashMap<String, Video>>,
    frames: Mutex<HashMap<String, BTreeMap<u64, FrameResult>>>,
    tracks: Mutex<HashMap<String, BTreeMap<u32, TrackProfile>>>,
}

#[async_trait]
impl UserStore for MemoryStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let mut users = self.users.lock().unwrap();
        if users
            .values()
            .any(|u| u.email.eq_ignore_ascii_case(&user.email))
        {
            return Err(StoreError::Conflict("email already registered".into()));
        }
        users.insert(user.id.clone(), user.clone());
        Ok(())
    }
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        Ok(self
            .users
            .lock()
            .unwrap()
            .values()
            .find(|u| u.email.eq_ignore_ascii_case(email))
            .cloned())
    }
    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        Ok(self.users.lock().unwrap().get(id).cloned())
    }
}

#[async_trait]
impl VideoStore for MemoryStore {
    async fn create_video(&self, video: &Video) -> StoreResult<()> {
        self.videos
            .lock()
            .unwrap()
            .insert(video.id.clone(), video.clone());
        Ok(())
    }
    async fn video(&self, id: &str) -> StoreResult<Option<Video>> {
        Ok(self.videos.lock().unwrap().get(id).cloned())
    }
    async fn videos_of(
        &self,
        user_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Video>> {
        let mut mine: Vec<Video> = self
            .videos
            .lock()
            .unwrap()
            .values()
            .filter(|v| v.user_id == user_id)
            .cloned()
            .collect();
        mine.sort_by(|a, b| (b.uploaded_at, &b.id).cmp(&(a.uploaded_at, &a.id)));
        let start = match cursor {
            None => 0,
            Some(c) => mine
                .iter()
                .position(|v| v.id == c)
                .map(|i| i + 1)
                .ok_or(StoreError::BadCursor)?,
        };
        let items: Vec<Video> = mine.iter().skip(start).take(limit).cloned().collect();
        let next = (start + limit < mine.len())
            .then(|| items.last().map(|v| v.id.clone()))
            .flatten();
        Ok(Page { items, next })
    }
    async fn set_title(&self, id: &str, title: &str) -> StoreResult<()> {
        self.videos
            .lock()
            .unwrap()
            .get_mut(id)
            .map(|v| v.title = title.to_string())
            .ok_or(StoreError::NotFound)
    }
    async fn set_analysis(&self, id: &str, state: &AnalysisState) -> StoreResult<()> {
        self.videos
            .lock()
            .unwrap()
            .get_mut(id)
            .map(|v| v.analysis = state.clone())
            .ok_or(StoreError::NotFound)
    }
    async fn record_upload(&self, id: &str, object: &StoredObject) -> StoreResult<UploadRecord> {
        let mut videos = self.videos.lock().unwrap();
        let Some(video) = videos.get_mut(id) else {
            return Ok(UploadRecord::Gone);
        };
        Ok(match &video.upload {
            None => {
                video.upload = Some(object.clone());
                UploadRecord::Recorded
            }
            Some(recorded) if recorded.same_as(object) => UploadRecord::Same,
            Some(recorded) => UploadRecord::Different(recorded.clone()),
        })
    }
    async fn delete_video(&self, id: &str) -> StoreResult<()> {
        self.videos.lock().unwrap().remove(id);
        self.frames.lock().unwrap().remove(id);
        Ok(())
    }
}

#[async_trait]
impl ResultStore for MemoryStore {
    async fn put_frames(&self, video_id: &str, frames: &[FrameResult]) -> StoreResult<()> {
        let mut all = self.frames.lock().unwrap();
        let mine = all.entry(video_id.to_string()).or_default();
        for f in frames {
            mine.insert(f.frame, f.clone());
        }
        Ok(())
    }
    async fn frames(
        &self,
        video_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<(Vec<FrameResult>, Option<u64>)> {
        let all = self.frames.lock().unwrap();
        let Some(mine) = all.get(video_id) else {
            return Ok((Vec::new(), None));
        };
        let mut rest = mine.values().filter(|f| after.is_none_or(|a| f.frame > a));
        let page: Vec<FrameResult> = rest.by_ref().take(limit).cloned().collect();
        let next = rest.next().and(page.last().map(|f| f.frame));
        Ok((page, next))
    }
    async fn put_tracks(&self, video_id: &str, tracks: &[TrackProfile]) -> StoreResult<()> {
        let mut all = self.tracks.lock().unwrap();
        let mine = all.entry(video_id.to_string()).or_default();
        for t in tracks {
            mine.insert(t.track, t.clone());
        }
        Ok(())
    }
    async fn tracks(&self, video_id: &str) -> StoreResult<Vec<TrackProfile>> {
        Ok(self
            .tracks
            .lock()
            .unwrap()
            .get(video_id)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }
    async fn delete_frames(&self, video_id: &str) -> StoreResult<()> {
        self.frames.lock().unwrap().remove(video_id);
        self.tracks.lock().unwrap().remove(video_id);
        Ok(())
    }
}

/// Blobs in a map; URLs are fake but shaped like the real ones.
#[derive(Default)]
pub struct MemoryBlobs {
    pub objects: Mutex<HashMap<String, Vec<u8>>>,
    /// The Content-Type `put_object` stored each object with.
    pub content_types: Mutex<HashMap<String, String>>,
}

#[async_trait]
impl BlobStore for MemoryBlobs {
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        content_length: Option<u64>,
        expires_in: Duration,
    ) -> StoreResult<PresignedUpload> {
        let length = content_length.map_or(String::new(), |n| format!("&content-length={n}"));
        Ok(PresignedUpload {
            url: format!("https://blobs.example/{key}?content-type={content_type}{length}"),
            expires_at: Utc::now() + chrono::Duration::from_std(expires_in).unwrap_or_default(),
        })
    }
    async fn presign_get(
        &self,
        key: &str,
        _version: Option<&str>,
        _expires_in: Duration,
    ) -> StoreResult<String> {
        Ok(format!("https://blobs.example/{key}"))
    }
    async fn stat(&self, key: &str, _version: Option<&str>) -> StoreResult<Option<StoredObject>> {
        Ok(self.objects.lock().unwrap().get(key).map(|b| StoredObject {
            size: b.len() as u64,
            etag: None,
            version_id: None,
        }))
    }
    async fn locate(&self, _key: &str, object: &StoredObject) -> StoreResult<Option<StoredObject>> {
        Ok(Some(object.clone()))
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }
    async fn delete_version(&self, _key: &str, _version: &str) -> StoreResult<()> {
        Ok(())
    }
    async fn put_object(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> StoreResult<()> {
        self.objects.lock().unwrap().insert(key.to_string(), bytes);
        self.content_types
            .lock()
            .unwrap()
            .insert(key.to_string(), content_type.to_string());
        Ok(())
    }
    async fn get_object(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.objects.lock().unwrap().get(key).cloned())
    }
    async fn delete_prefix(&self, prefix: &str) -> StoreResult<()> {
        self.objects
            .lock()
            .unwrap()
            .retain(|key, _| !key.starts_with(prefix));
        self.content_types
            .lock()
            .unwrap()
            .retain(|key, _| !key.starts_with(prefix));
        Ok(())
    }
    async fn analysis_source(
        &self,
        key: &str,
        version: Option<&str>,
        expires_in: Duration,
    ) -> StoreResult<MediaSource> {
        Ok(MediaSource::Url(
            self.presign_get(key, version, expires_in).await?,
        ))
    }
}

/// Fixed-window counters in a map: exact for one process, which is all `deepemotion serve` is.
#[derive(Default)]
pub struct MemoryRateLimiter {
    /// key → (the end of its current window in ms since the epoch, attempts in it)
    windows: Mutex<HashMap<String, (u64, u32)>>,
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn hit(
        &self,
        key: &str,
        cost: u32,
        limit: u32,
        window: Duration,
    ) -> StoreResult<RateDecision> {
        let window = RateWindow::now(window);
        let mut windows = self.windows.lock().unwrap();
        if windows.len() > 100_000 {
            // forget finished windows so a flood of distinct keys cannot grow the map for ever
            windows.retain(|_, (ends, _)| *ends > window.now_ms);
        }
        let entry = windows
            .entry(key.to_string())
            .or_insert((window.ends_ms, 0));
        if entry.0 != window.ends_ms {
            *entry = (window.ends_ms, 0);
        }
        entry.1 = entry.1.saturating_add(cost);
        Ok(window.decide(u64::from(entry.1), cost, limit))
    }
}

/// Records queued jobs.
#[derive(Default)]
pub struct MemoryQueue {
    pub jobs: Mutex<Vec<AnalysisJob>>,
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn enqueue(&self, job: AnalysisJob) -> StoreResult<()> {
        self.jobs.lock().unwrap().push(job);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blobs_put_get_and_delete_by_prefix() {
        let blobs = MemoryBlobs::default();
        assert_eq!(
            blobs.get_object("results/v1/people/1.jpg").await.unwrap(),
            None
        );
        for key in [
            "results/v1/people/1.jpg",
            "results/v1/people/2.jpg",
            "results/v10/people/1.jpg",
        ] {
            blobs
                .put_object(key, key.as_bytes().to_vec(), "image/jpeg")
                .await
                .unwrap();
        }
        blobs
            .put_object("results/v1/people/1.jpg", b"new".to_vec(), "image/jpeg")
            .await
            .unwrap();
        assert_eq!(
            blobs
                .get_object("results/v1/people/1.jpg")
                .await
                .unwrap()
                .as_deref(),
            Some(&b"new"[..]),
            "a put replaces"
        );
        assert_eq!(
            blobs.content_types.lock().unwrap()["results/v1/people/2.jpg"],
            "image/jpeg"
        );
        blobs.delete_prefix("results/v1/").await.unwrap();
        blobs.delete_prefix("results/nothing/").await.unwrap();
        assert_eq!(
            blobs.get_object("results/v1/people/1.jpg").await.unwrap(),
            None
        );
        assert_eq!(
            blobs.get_object("results/v1/people/2.jpg").await.unwrap(),
            None
        );
        assert!(
            blobs
                .get_object("results/v10/people/1.jpg")
                .await
                .unwrap()
                .is_some(),
            "outside the prefix"
        );
    }
}
