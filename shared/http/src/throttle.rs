//! Rate limits on the routes that check passwords: per client address and per email, counted
//! by the [`RateLimiter`] port, so every Lambda container (or the one local server) counts
//! against the same budget. Over the limit, the answer is 429 with `Retry-After`, before any
//! password is hashed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Extensions;
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};
use domain::ports::RateDecision;

/// At most `attempts` in each `window`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub attempts: u32,
    pub window: Duration,
}

impl RateLimit {
    pub const fn new(attempts: u32, seconds: u64) -> Self {
        Self {
            attempts,
            window: Duration::from_secs(seconds),
        }
    }

    /// Parses `N/SECONDS`, e.g. `10/900`.
    pub fn parse(value: &str) -> Result<Self, String> {
        let parsed = value
            .split_once('/')
            .and_then(|(n, s)| Some(Self::new(n.trim().parse().ok()?, s.trim().parse().ok()?)));
        parsed
            .filter(|l| l.attempts > 0 && !l.window.is_zero())
            .ok_or_else(|| format!("{value:?} is not a rate limit like 10/900 (attempts/seconds)"))
    }
}

/// The limits on `/auth/login` and `/auth/register`. Env names are the same for both backends.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimits {
    /// Failed logins per email, whoever sends them (`DEEPEMOTION_LOGIN_FAILURES_PER_EMAIL`,
    /// default 10 per 15 minutes). Over it, even the right password waits.
    pub login_failures_per_email: RateLimit,
    /// Login attempts per client address (`DEEPEMOTION_LOGINS_PER_ADDRESS`, default 60 a minute).
    pub logins_per_address: RateLimit,
    /// Registrations per client address (`DEEPEMOTION_REGISTRATIONS_PER_ADDRESS`, default 30 per
    /// 10 minutes).
    pub registrations_per_address: RateLimit,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            login_failures_per_email: RateLimit::new(10, 15 * 60),
            logins_per_address: RateLimit::new(60, 60),
            registrations_per_address: RateLimit::new(30, 10 * 60),
        }
    }
}

impl RateLimits {
    /// The defaults, overridden by the `DEEPEMOTION_*` variables above.
    pub fn from_env() -> Result<Self, String> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`RateLimits::from_env`] over any source of variables.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut limits = Self::default();
        for (name, limit) in [
            (
                "DEEPEMOTION_LOGIN_FAILURES_PER_EMAIL",
                &mut limits.login_failures_per_email,
            ),
            (
                "DEEPEMOTION_LOGINS_PER_ADDRESS",
                &mut limits.logins_per_address,
            ),
            (
                "DEEPEMOTION_REGISTRATIONS_PER_ADDRESS",
                &mut limits.registrations_per_address,
            ),
        ] {
            if let Some(value) = var(name).filter(|v| !v.is_empty()) {
                *limit = RateLimit::parse(&value).map_err(|e| format!("{name}: {e}"))?;
            }
        }
        Ok(limits)
    }
}

/// The caller's address as the server saw it: the accepted socket on one machine
/// (`ConnectInfo`), API Gateway's `sourceIp` on Lambda (put there as a [`ClientAddr`]).
/// Headers such as `X-Forwarded-For` are not trusted: any client can send them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientAddr(pub IpAddr);

/// The caller's address, when the server knows it (an extractor for the limited routes).
pub(crate) struct CallerAddr(pub Option<IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for CallerAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(CallerAddr(client_addr(&parts.extensions)))
    }
}

fn client_addr(extensions: &Extensions) -> Option<IpAddr> {
    extensions.get::<ClientAddr>().map(|a| a.0).or_else(|| {
        extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
    })
}

/// Counter keys carry a hash, not the email or address itself: the store need not hold them.
fn counter_key(kind: &str, subject: &str) -> String {
    let digest = Sha256::digest(subject.as_bytes());
    format!("{kind}#{}", hex::encode(&digest[..16]))
}

async fn count(
    state: &AppState,
    kind: &str,
    subject: &str,
    cost: u32,
    limit: RateLimit,
) -> Result<(), ApiError> {
    let key = counter_key(kind, subject);
    match state
        .limiter
        .hit(&key, cost, limit.attempts, limit.window)
        .await?
    {
        RateDecision::Allowed => Ok(()),
        RateDecision::Limited { retry_after } => {
            tracing::debug!(kind, retry_after_s = retry_after.as_secs(), "rate limited");
            Err(ApiError::TooManyRequests {
                message: "too many attempts; try again later".into(),
                retry_after,
            })
        }
    }
}

/// Before a login: the address's budget (counted) and the email's failures (looked at).
pub(crate) async fn before_login(
    state: &AppState,
    addr: Option<IpAddr>,
    email: &str,
) -> Result<(), ApiError> {
    let limits = &state.config.rate_limits;
    if let Some(addr) = addr {
        count(
            state,
            "login-addr",
            &addr.to_string(),
            1,
            limits.logins_per_address,
        )
        .await?;
    }
    count(
        state,
        "login-fail",
        email,
        0,
        limits.login_failures_per_email,
    )
    .await
}

/// After a wrong password (or an unknown email): one more failure for the email.
pub(crate) async fn login_failed(state: &AppState, email: &str) -> Result<(), ApiError> {
    let limit = state.config.rate_limits.login_failures_per_email;
    // this attempt is refused with 401 either way; the count stops the next ones
    match count(state, "login-fail", email, 1, limit).await {
        Err(ApiError::TooManyRequests { .. }) | Ok(()) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Before a registration: the address's budget.
pub(crate) async fn before_register(
    state: &AppState,
    addr: Option<IpAddr>,
) -> Result<(), ApiError> {
    match addr {
        Some(addr) => {
            let limit = state.config.rate_limits.registrations_per_address;
            count(state, "register-addr", &addr.to_string(), 1, limit).await
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_as_attempts_per_seconds() {
        assert_eq!(RateLimit::parse("10/900"), Ok(RateLimit::new(10, 900)));
        for bad in ["10", "0/60", "10/0", "x/60", "10/ten"] {
            assert!(RateLimit::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn counter_keys_hide_the_subject() {
        let key = counter_key("login-fail", "ann@example.com");
        assert!(key.starts_with("login-fail#") && !key.contains("ann"));
        assert_ne!(key, counter_key("login-fail", "bob@example.com"));
    }
}
