use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use domain::ports::{BlobStore, PresignedUpload, StoreError, StoreResult};
use domain::{MediaSource, StoredObject, parse_object_key, parse_results_key};
use http_api::{ApiError, BodyChunks, ServerFiles, UploadError};
use tower::ServiceExt;

type HmacSha256 = Hmac<Sha256>;

/// Why a local signed URL was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SignatureError {
    #[error("this upload link has expired; ask for a new one")]
    Expired,
    #[error("invalid signature for this URL, method or Content-Type")]
    Invalid,
}

/// Why a write-once upload was refused.
/// Blobs as files under a directory. URLs are `{base_url}/{key}?expires=..&signature=..`, signed
/// with HMAC-SHA256 over method, key, Content-Type and expiry, like an S3 presigned URL.
pub struct FileBlobs {
    root: PathBuf,
    base_url: String,
    secret: Vec<u8>,
}

impl FileBlobs {
    pub fn new(root: impl Into<PathBuf>, base_url: impl Into<String>, secret: &[u8]) -> Self {
        Self {
            root: root.into(),
            base_url: base_url.into().trim_end_matches('/').to_string(),
            secret: secret.to_vec(),
        }
    }

    /// The file for `key`. Only keys the service makes are accepted (uploads, and results
    /// under [`domain::results_prefix`]), so no key can leave `root`.
    pub fn path_of(&self, key: &str) -> StoreResult<PathBuf> {
        let results_file = || parse_results_key(key).is_some() && !key.ends_with('/');
        if parse_object_key(key).is_none() && !results_file() {
            return Err(StoreError::Backend(format!(
                "not a key this service makes: {key:?}"
            )));
        }
        Ok(self.root.join(key))
    }

    /// Streams an upload into the file for `key`, once: each request writes its own temporary
    /// file, and only a complete one is linked into place, atomically and only if no file is
    /// there yet. Concurrent uploads to one key therefore leave exactly one of them, whole; the
    /// others get `AlreadyUploaded`. With `declared`, the body must be exactly that long.
    pub async fn store_new<S, B>(
        &self,
        key: &str,
        chunks: &mut S,
        max_bytes: u64,
        declared: Option<u64>,
    ) -> Result<u64, UploadError>
    where
        S: futures_util::Stream<Item = Result<B, String>> + Unpin,
        B: AsRef<[u8]>,
    {
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;

        let path = self.path_of(key)?;
        let io = |e: std::io::Error| UploadError::Store(StoreError::Backend(e.to_string()));
        let dir = path.parent().expect("keys have a directory");
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
        if tokio::fs::try_exists(&path).await.map_err(io)? {
            return Err(UploadError::AlreadyUploaded);
        }
        let name = path
            .file_name()
            .expect("keys name a file")
            .to_string_lossy();
        let partial = dir.join(format!(".{name}.{}.part", uuid::Uuid::new_v4().simple()));
        let limit = declared.map_or(max_bytes, |d| d.min(max_bytes));
        let result = async {
            let mut file = tokio::fs::File::create_new(&partial).await.map_err(io)?;
            let mut written = 0u64;
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(UploadError::Interrupted)?;
                let chunk = chunk.as_ref();
                written += chunk.len() as u64;
                if written > limit {
                    return Err(match declared {
                        Some(declared) if declared <= max_bytes => UploadError::SizeMismatch {
                            declared,
                            got: written,
                        },
                        _ => UploadError::TooLarge(max_bytes),
                    });
                }
                file.write_all(chunk).await.map_err(io)?;
            }
            if let Some(declared) = declared.filter(|d| *d != written) {
                return Err(UploadError::SizeMismatch {
                    declared,
                    got: written,
                });
            }
            file.sync_all().await.map_err(io)?;
            drop(file);
            // a hard link fails if the name exists: the first complete upload wins
            match tokio::fs::hard_link(&partial, &path).await {
                Ok(()) => Ok(written),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Err(UploadError::AlreadyUploaded)
                }
                Err(e) => Err(io(e)),
            }
        }
        .await;
        let _ = tokio::fs::remove_file(&partial).await;
        result
    }

    fn signature(&self, method: &str, key: &str, content_type: &str, expires: i64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(format!("{method}\n{key}\n{content_type}\n{expires}").as_bytes());
        mac
    }

    fn signed_url(
        &self,
        method: &str,
        key: &str,
        content_type: &str,
        expires_in: Duration,
    ) -> (String, DateTime<Utc>) {
        let expires_at = Utc::now()
            + chrono::Duration::from_std(expires_in).unwrap_or(chrono::Duration::minutes(15));
        let expires = expires_at.timestamp();
        let signature = hex::encode(
            self.signature(method, key, content_type, expires)
                .finalize()
                .into_bytes(),
        );
        (
            format!(
                "{}/{key}?expires={expires}&signature={signature}",
                self.base_url
            ),
            expires_at,
        )
    }

    /// Checks a signed URL's query against the request (constant-time comparison).
    pub fn verify(
        &self,
        method: &str,
        key: &str,
        content_type: &str,
        expires: i64,
        signature: &str,
    ) -> Result<(), SignatureError> {
        let given = hex::decode(signature).map_err(|_| SignatureError::Invalid)?;
        self.signature(method, key, content_type, expires)
            .verify_slice(&given)
            .map_err(|_| SignatureError::Invalid)?;
        if Utc::now().timestamp() > expires {
            return Err(SignatureError::Expired);
        }
        Ok(())
    }
}

#[async_trait]
impl BlobStore for FileBlobs {
    /// The declared length is not signed into the URL: the upload route checks the body
    /// against the size recorded on the video instead.
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        _content_length: Option<u64>,
        expires_in: Duration,
    ) -> StoreResult<PresignedUpload> {
        self.path_of(key)?;
        let (url, expires_at) = self.signed_url("PUT", key, content_type, expires_in);
        Ok(PresignedUpload { url, expires_at })
    }

    async fn presign_get(
        &self,
        key: &str,
        _version: Option<&str>,
        expires_in: Duration,
    ) -> StoreResult<String> {
        self.path_of(key)?;
        Ok(self.signed_url("GET", key, "", expires_in).0)
    }

    /// Files are write-once (see [`FileBlobs::store_new`]), so they need no version.
    async fn stat(&self, key: &str, _version: Option<&str>) -> StoreResult<Option<StoredObject>> {
        match tokio::fs::metadata(self.path_of(key)?).await {
            Ok(m) => Ok(Some(StoredObject {
                size: m.len(),
                etag: None,
                version_id: None,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Backend(e.to_string())),
        }
    }

    async fn locate(&self, key: &str, object: &StoredObject) -> StoreResult<Option<StoredObject>> {
        Ok(self.stat(key, None).await?.filter(|s| s.same_as(object)))
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        match tokio::fs::remove_file(self.path_of(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Backend(e.to_string())),
        }
    }

    /// Never needed: a file cannot be replaced, so there is no second version to remove.
    async fn delete_version(&self, _key: &str, _version: &str) -> StoreResult<()> {
        Ok(())
    }

    async fn analysis_source(
        &self,
        key: &str,
        _version: Option<&str>,
        _expires_in: Duration,
    ) -> StoreResult<MediaSource> {
        Ok(MediaSource::File(self.path_of(key)?))
    }

    /// Written to a temporary file beside the target (a name no key has: it starts with `.`),
    /// then renamed over it, so a reader sees the old file or the new one, whole.
    async fn put_object(&self, key: &str, bytes: Vec<u8>, _content_type: &str) -> StoreResult<()> {
        use tokio::io::AsyncWriteExt;

        let path = self.path_of(key)?;
        let io = |e: std::io::Error| StoreError::Backend(e.to_string());
        let dir = path.parent().expect("keys have a directory");
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
        let name = path
            .file_name()
            .expect("keys name a file")
            .to_string_lossy();
        let partial = dir.join(format!(".{name}.{}.part", uuid::Uuid::new_v4().simple()));
        let result = async {
            let mut file = tokio::fs::File::create_new(&partial).await.map_err(io)?;
            file.write_all(&bytes).await.map_err(io)?;
            file.sync_all().await.map_err(io)?;
            drop(file);
            tokio::fs::rename(&partial, &path).await.map_err(io)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        result
    }

    async fn get_object(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        match tokio::fs::read(self.path_of(key)?).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Backend(e.to_string())),
        }
    }

    /// Only prefixes under a video's results (see [`domain::results_prefix`]) are accepted:
    /// nothing else is deleted by prefix, and no prefix can reach outside `root`. A prefix
    /// ending in `/` removes that directory; otherwise the entries of its directory whose names
    /// start with the rest (files, and directory trees), as S3 matches prefixes.
    async fn delete_prefix(&self, prefix: &str) -> StoreResult<()> {
        parse_results_key(prefix)
            .ok_or_else(|| StoreError::Backend(format!("not a results prefix: {prefix:?}")))?;
        let io = |e: std::io::Error| StoreError::Backend(e.to_string());
        let gone = |r: std::io::Result<()>| match r {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        };
        let (dir, start) = prefix
            .rsplit_once('/')
            .expect("results prefixes have a directory");
        let dir = self.root.join(dir);
        if start.is_empty() {
            return gone(tokio::fs::remove_dir_all(&dir).await);
        }
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e)),
        };
        while let Some(entry) = entries.next_entry().await.map_err(io)? {
            if !entry.file_name().to_string_lossy().starts_with(start) {
                continue;
            }
            let path = entry.path();
            if entry.file_type().await.map_err(io)?.is_dir() {
                gone(tokio::fs::remove_dir_all(&path).await)?;
            } else {
                gone(tokio::fs::remove_file(&path).await)?;
            }
        }
        Ok(())
    }
}

/// Uploads through the server go straight to these files; the stream route serves them.
#[async_trait]
impl ServerFiles for FileBlobs {
    async fn store_new(
        &self,
        key: &str,
        body: &mut BodyChunks<'_>,
        max_bytes: u64,
        declared: Option<u64>,
    ) -> Result<u64, UploadError> {
        FileBlobs::store_new(self, key, &mut &mut *body, max_bytes, declared).await
    }

    async fn serve(
        &self,
        key: &str,
        content_type: Option<&str>,
        request: Request,
    ) -> Result<Response, ApiError> {
        serve_file(self, key, content_type, request).await
    }
}

/// Serves a stored file with `Range`, `If-Modified-Since` and `HEAD` support.
pub(crate) async fn serve_file(
    files: &FileBlobs,
    key: &str,
    content_type: Option<&str>,
    request: Request,
) -> Result<Response, ApiError> {
    // a missing file is ServeFile's own 404, made JSON by the router's `json_errors`
    let response = tower_http::services::ServeFile::new(files.path_of(key)?)
        .oneshot(request)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = response.map(Body::new);
    if let Some(value) = content_type.and_then(|c| HeaderValue::from_str(c).ok())
        && response.status().is_success()
    {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs() -> FileBlobs {
        FileBlobs::new("/tmp/x", "http://127.0.0.1:8080/", b"k")
    }

    fn query(url: &str) -> (i64, String) {
        let q = url.split_once('?').unwrap().1;
        let mut expires = 0;
        let mut sig = String::new();
        for pair in q.split('&') {
            match pair.split_once('=').unwrap() {
                ("expires", v) => expires = v.parse().unwrap(),
                ("signature", v) => sig = v.to_string(),
                _ => {}
            }
        }
        (expires, sig)
    }

    #[tokio::test]
    async fn signed_urls_verify_only_for_their_method_key_and_type() {
        let b = blobs();
        let key = "uploads/u1/v1.mp4";
        let up = b
            .presign_put(key, "video/mp4", None, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(
            up.url
                .starts_with("http://127.0.0.1:8080/uploads/u1/v1.mp4?expires=")
        );
        let (expires, sig) = query(&up.url);
        assert_eq!(b.verify("PUT", key, "video/mp4", expires, &sig), Ok(()));
        assert_eq!(
            b.verify("PUT", key, "text/plain", expires, &sig),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            b.verify("GET", key, "video/mp4", expires, &sig),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            b.verify("PUT", "uploads/u1/v2.mp4", "video/mp4", expires, &sig),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            b.verify("PUT", key, "video/mp4", expires + 3600, &sig),
            Err(SignatureError::Invalid),
            "expiry is signed"
        );
        let other_secret = FileBlobs::new("/tmp/x", "http://h", b"other");
        assert_eq!(
            other_secret.verify("PUT", key, "video/mp4", expires, &sig),
            Err(SignatureError::Invalid)
        );
    }

    #[tokio::test]
    async fn expired_urls_are_refused() {
        let b = blobs();
        let key = "uploads/u1/v1.mp4";
        let up = b
            .presign_put(key, "video/mp4", None, Duration::ZERO)
            .await
            .unwrap();
        let (expires, sig) = query(&up.url);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(
            b.verify("PUT", key, "video/mp4", expires, &sig),
            Err(SignatureError::Expired)
        );
    }

    #[test]
    fn keys_cannot_escape_the_root() {
        let b = blobs();
        assert!(b.path_of("uploads/u1/v1.mp4").is_ok());
        assert!(b.path_of("uploads/../../etc/passwd.mp4").is_err());
        assert!(b.path_of("/etc/passwd").is_err());
        assert!(b.path_of(&domain::person_thumbnail_key("v1", 1)).is_ok());
        assert!(b.path_of("results/v1/../../etc/passwd").is_err());
        assert!(b.path_of("results/../etc/passwd").is_err());
        assert!(b.path_of("results/v1/").is_err(), "a prefix is not a file");
    }

    fn blobs_in(dir: &tempfile::TempDir) -> FileBlobs {
        FileBlobs::new(dir.path(), "http://127.0.0.1:8080", b"k")
    }

    #[tokio::test]
    async fn small_objects_are_put_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let b = blobs_in(&dir);
        let key = domain::person_thumbnail_key("v1", 1);
        assert_eq!(b.get_object(&key).await.unwrap(), None);
        b.put_object(&key, vec![1, 2, 3], "image/jpeg")
            .await
            .unwrap();
        assert_eq!(b.get_object(&key).await.unwrap(), Some(vec![1, 2, 3]));
        b.put_object(&key, vec![9; 10], "image/jpeg").await.unwrap();
        assert_eq!(
            b.get_object(&key).await.unwrap(),
            Some(vec![9; 10]),
            "a put replaces"
        );
        assert_eq!(
            std::fs::read(dir.path().join("results/v1/people/1.jpg")).unwrap(),
            vec![9; 10]
        );
        let names: Vec<_> = std::fs::read_dir(dir.path().join("results/v1/people"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["1.jpg"], "no temporary file is left behind");
        for bad in [
            "results/v1/../../outside.jpg",
            "../outside.jpg",
            "/tmp/outside.jpg",
        ] {
            assert!(
                b.put_object(bad, vec![1], "image/jpeg").await.is_err(),
                "{bad}"
            );
            assert!(b.get_object(bad).await.is_err(), "{bad}");
        }
        assert!(!dir.path().join("../outside.jpg").exists());
    }

    #[tokio::test]
    async fn delete_prefix_removes_what_is_under_it_only() {
        let dir = tempfile::tempdir().unwrap();
        let b = blobs_in(&dir);
        let keep = domain::person_thumbnail_key("v10", 1);
        for key in [
            domain::person_thumbnail_key("v1", 1),
            domain::person_thumbnail_key("v1", 2),
            keep.clone(),
        ] {
            b.put_object(&key, vec![1], "image/jpeg").await.unwrap();
        }
        std::fs::create_dir_all(dir.path().join("uploads/u1")).unwrap();
        std::fs::write(dir.path().join("uploads/u1/v1.mp4"), b"video").unwrap();

        b.delete_prefix(&domain::results_prefix("v1"))
            .await
            .unwrap();
        assert_eq!(
            b.get_object(&domain::person_thumbnail_key("v1", 1))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            b.get_object(&domain::person_thumbnail_key("v1", 2))
                .await
                .unwrap(),
            None
        );
        assert!(!dir.path().join("results/v1").exists());
        assert!(
            b.get_object(&keep).await.unwrap().is_some(),
            "v10 is not under results/v1/"
        );
        assert!(dir.path().join("uploads/u1/v1.mp4").exists());
        // nothing there is fine
        b.delete_prefix(&domain::results_prefix("v1"))
            .await
            .unwrap();
        b.delete_prefix("results/never/people/").await.unwrap();
        // a prefix that ends inside a name, as S3 matches them
        b.put_object("results/v2/people/1.jpg", vec![1], "image/jpeg")
            .await
            .unwrap();
        b.put_object("results/v2/people/12.jpg", vec![1], "image/jpeg")
            .await
            .unwrap();
        b.put_object("results/v2/people/2.jpg", vec![1], "image/jpeg")
            .await
            .unwrap();
        b.delete_prefix("results/v2/people/1").await.unwrap();
        assert_eq!(b.get_object("results/v2/people/1.jpg").await.unwrap(), None);
        assert_eq!(
            b.get_object("results/v2/people/12.jpg").await.unwrap(),
            None
        );
        assert!(
            b.get_object("results/v2/people/2.jpg")
                .await
                .unwrap()
                .is_some()
        );
        // never outside the results, never outside the root
        for bad in [
            "",
            "uploads/",
            "results/",
            "results/v1",
            "results/../",
            "results/v1/../../",
            "/",
        ] {
            assert!(b.delete_prefix(bad).await.is_err(), "{bad:?}");
        }
        assert!(dir.path().join("uploads/u1/v1.mp4").exists());
        assert!(b.get_object(&keep).await.unwrap().is_some());
    }
}
