//! Passwords (argon2id) and access tokens (JWT, HS256), and the extractor that turns a bearer
//! token into the caller's user id.
//!
//! argon2 is deliberately slow (about 19 MiB and tens of milliseconds of one core per hash), so it
//! never runs on the async workers: [`hash_password_blocking`] and [`check_password`] run it on
//! tokio's blocking pool, at most [`hashing_concurrency`] at a time. Requests beyond that wait for
//! a permit asynchronously, holding no thread, and everything else the server does keeps going.

use std::sync::{Arc, OnceLock};

use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::{ApiError, AppState};
use domain::User;

pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::Internal(format!("argon2: {e}")))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// How many argon2 computations may run at once: one per available core. Each holds a blocking
/// thread and about 19 MiB while it runs, so this also bounds the memory a login flood can take.
pub fn hashing_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

fn hashing_permits() -> Arc<Semaphore> {
    static PERMITS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    PERMITS
        .get_or_init(|| Arc::new(Semaphore::new(hashing_concurrency())))
        .clone()
}

/// Runs argon2 work on the blocking pool once a permit is free. The permit moves into the blocking
/// task, so it is released when the hash is done, even if the request that asked was dropped.
async fn on_hashing_pool<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let permit = hashing_permits()
        .acquire_owned()
        .await
        .map_err(|e| ApiError::Internal(format!("password hashing permits: {e}")))?;
    #[cfg(test)]
    let caller = std::thread::current().id();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        #[cfg(test)]
        let _probe = probe::enter(caller);
        work()
    })
    .await
    .map_err(|e| ApiError::Internal(format!("password hashing task: {e}")))
}

/// [`hash_password`] on the blocking pool, bounded by [`hashing_concurrency`].
pub async fn hash_password_blocking(password: String) -> Result<String, ApiError> {
    on_hashing_pool(move || hash_password(&password)).await?
}

/// Whether `password` matches `hash`, on the blocking pool, bounded by [`hashing_concurrency`].
/// Without a hash (an unknown email) it verifies against a dummy hash with the same parameters and
/// answers `false`, so the time taken does not tell whether the account exists.
pub async fn check_password(password: String, hash: Option<String>) -> Result<bool, ApiError> {
    on_hashing_pool(move || match hash {
        Some(hash) => verify_password(&password, &hash),
        None => {
            let _ = verify_password(&password, DUMMY_HASH);
            false
        }
    })
    .await
}

/// argon2id hash (the default parameters, as [`hash_password`] makes) of a random password,
/// verified against when the email is unknown.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Bm1JDAhMHR0uM8BCm0B7HYyeOqzOQWY4e/UaNh3+4SU";

/// What the tests observe of the hashing pool: for each hash, the thread that asked for it and the
/// thread that ran it; and the most hashes that ran at once.
#[cfg(test)]
pub(crate) mod probe {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread::ThreadId;

    /// (caller, hashing thread) per hash, in the order they ran.
    pub(crate) static HASHES: Mutex<Vec<(ThreadId, ThreadId)>> = Mutex::new(Vec::new());
    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    pub(crate) static MOST_AT_ONCE: AtomicUsize = AtomicUsize::new(0);

    pub(crate) struct Running;

    pub(crate) fn enter(caller: ThreadId) -> Running {
        HASHES
            .lock()
            .unwrap()
            .push((caller, std::thread::current().id()));
        let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
        MOST_AT_ONCE.fetch_max(now, Ordering::SeqCst);
        Running
    }

    impl Drop for Running {
        fn drop(&mut self) {
            RUNNING.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    pub aud: String,
}

/// Signs and checks access tokens. Validation pins the algorithm, issuer and audience.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    pub ttl_seconds: i64,
}

pub const ISSUER: &str = "deepemotion";
pub const AUDIENCE: &str = "deepemotion-api";

impl TokenKeys {
    pub fn new(secret: &[u8], ttl_seconds: i64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["sub", "exp", "iat", "iss", "aud"]);
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            ttl_seconds,
        }
    }

    pub fn issue(&self, user_id: &str) -> Result<String, ApiError> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.into(),
            iat: now,
            exp: now + self.ttl_seconds,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::Internal(format!("jwt: {e}")))
    }

    /// The user id of a valid token.
    pub fn verify(&self, token: &str) -> Result<String, ApiError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims.sub)
            .map_err(|_| ApiError::Unauthorized("invalid or expired token".into()))
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct AuthUser(pub String);

/// The token of an `Authorization: Bearer <token>` header, if there is one. The scheme is
/// case-insensitive (RFC 7235: `bearer`, `BEARER`, ...) and separated from the token by spaces;
/// `Bearerx` or a scheme without a token is no bearer token.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The user a token belongs to: a valid signature and claims, and a user that exists. A token of
/// a user that does not exist (never did, or was removed) is refused like a bad token: 401
/// "unknown user", on every authenticated route.
pub(crate) async fn authenticate(state: &AppState, token: &str) -> Result<User, ApiError> {
    let user_id = state.tokens.verify(token)?;
    state
        .users
        .user_by_id(&user_id)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("unknown user".into()))
}

/// The caller's user record ([`authenticate`] on the `Authorization` header).
pub(crate) async fn caller(parts: &Parts, state: &AppState) -> Result<User, ApiError> {
    let token = bearer_token(&parts.headers)
        .ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?;
    let user = authenticate(state, token).await?;
    tracing::Span::current().record("user_id", user.id.as_str());
    Ok(user)
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(AuthUser(caller(parts, state).await?.id))
    }
}

/// The authenticated caller's whole record, for routes that show it.
#[derive(Debug, Clone)]
pub(crate) struct CurrentUser(pub User);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(CurrentUser(caller(parts, state).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong horse", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let token_of = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            bearer_token(&headers).map(str::to_string)
        };
        for value in [
            "Bearer abc",
            "bearer abc",
            "BEARER abc",
            "BeArEr abc",
            "Bearer   abc ",
        ] {
            assert_eq!(token_of(value).as_deref(), Some("abc"), "{value:?}");
        }
        for value in [
            "Bearerabc",
            "Bearer",
            "Bearer ",
            "Basic abc",
            "abc",
            "Token abc",
            "Bearer\tabc",
        ] {
            assert_eq!(token_of(value), None, "{value:?}");
        }
    }

    #[test]
    fn tokens_round_trip_and_other_keys_fail() {
        let keys = TokenKeys::new(b"secret-one-with-enough-bytes-32!", 3600);
        let token = keys.issue("user-1").unwrap();
        assert_eq!(keys.verify(&token).unwrap(), "user-1");
        let other = TokenKeys::new(b"secret-two-with-enough-bytes-32!", 3600);
        assert!(other.verify(&token).is_err());
        let expired = TokenKeys::new(b"secret-one-with-enough-bytes-32!", -10)
            .issue("user-1")
            .unwrap();
        assert!(keys.verify(&expired).is_err());
    }
}
