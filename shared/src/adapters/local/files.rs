use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ports::{BlobStore, PresignedUpload, StoreError, StoreResult};
use crate::{StoredObject, parse_object_key};

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
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("this upload URL has already been used: a video is uploaded once")]
    AlreadyUploaded,
    #[error("the file is larger than the {0} byte limit")]
    TooLarge(u64),
    #[error("the upload is {got} bytes but {declared} bytes were declared")]
    SizeMismatch { declared: u64, got: u64 },
    #[error("upload interrupted: {0}")]
    Interrupted(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

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

    /// The file for `key`. Only keys the API makes are accepted, so no key can leave `root`.
    pub fn path_of(&self, key: &str) -> StoreResult<PathBuf> {
        parse_object_key(key)
            .ok_or_else(|| StoreError::Backend(format!("not an upload key: {key:?}")))?;
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

    async fn download(&self, key: &str, to: &Path) -> StoreResult<()> {
        tokio::fs::copy(self.path_of(key)?, to)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Backend(e.to_string()))
    }

    async fn analysis_source(
        &self,
        key: &str,
        _version: Option<&str>,
        _expires_in: Duration,
    ) -> StoreResult<String> {
        Ok(self.path_of(key)?.to_string_lossy().into_owned())
    }
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
    }
}
