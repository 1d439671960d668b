//! What surrounds every route: JSON errors, body limits, CORS, the limits on password attempts
//! and how password hashing is kept off the async workers.

use std::sync::atomic::Ordering;

use axum::http::Response;

use super::*;
use crate::auth::{hashing_concurrency, probe};
use crate::{RateLimit, RateLimits};

#[tokio::test]
async fn errors_are_json_everywhere() {
    let api = api();
    let r = api
        .call(Method::PUT, "/api/v2/auth/login", None, None)
        .await;
    assert_error(&r, StatusCode::METHOD_NOT_ALLOWED);
    let r = api
        .raw(
            Method::POST,
            "/api/v2/auth/login",
            None,
            "application/json",
            vec![b' '; 3_000_000],
        )
        .await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE);
    let r = api.get("/api/v2/nothing-here", None).await;
    assert_error(&r, StatusCode::NOT_FOUND);
    let r = api.get("/api/v2/videos/stream/x.mp4", None).await;
    assert_error(&r, StatusCode::NOT_FOUND);
}

// ---- CORS ----

async fn preflight(api: &Api, origin: &str) -> Response<Body> {
    let request = Request::builder()
        .method(Method::OPTIONS)
        .uri("/api/v2/videos/")
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "PATCH")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization,content-type",
        )
        .body(Body::empty())
        .unwrap();
    api.app.clone().oneshot(request).await.unwrap()
}

fn allowed_origin<B>(r: &Response<B>) -> &str {
    header_of(r.headers(), header::ACCESS_CONTROL_ALLOW_ORIGIN)
}

#[tokio::test]
async fn cors_allows_any_origin_by_default_the_client_s_methods_and_headers() {
    let r = preflight(&api(), "http://localhost:3000").await;
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(allowed_origin(&r), "*");
    let methods = header_of(r.headers(), header::ACCESS_CONTROL_ALLOW_METHODS);
    for m in ["GET", "POST", "PATCH", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }
    let headers = header_of(r.headers(), header::ACCESS_CONTROL_ALLOW_HEADERS).to_lowercase();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );
}

#[tokio::test]
async fn errors_carry_cors_headers_too() {
    // or the browser hides the JSON error from the client
    let request = Request::builder()
        .uri("/api/v2/videos/")
        .header(header::ORIGIN, "http://localhost:3000")
        .body(Body::empty())
        .unwrap();
    let r = api().app.oneshot(request).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(allowed_origin(&r), "*");
}

#[tokio::test]
async fn configured_cors_origins_are_echoed_and_others_get_no_cors_headers() {
    let api = api_with(ApiConfig {
        cors_origins: ApiConfig::parse_cors_origins("https://app.example.com, https://b.example")
            .unwrap(),
        ..Default::default()
    });
    let r = preflight(&api, "https://app.example.com").await;
    assert_eq!(allowed_origin(&r), "https://app.example.com");
    let r = preflight(&api, "https://evil.example").await;
    assert!(
        r.headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
    assert!(ApiConfig::parse_cors_origins("app.example.com").is_err());
    assert_eq!(
        ApiConfig::parse_cors_origins(" * ").unwrap(),
        Vec::<String>::new()
    );
}

// ---- rate limits on password attempts (issue 11, item 6) ----

#[tokio::test]
async fn wrong_passwords_lock_the_email_for_a_while_even_for_the_right_one() {
    let api = api();
    api.user("ann").await;
    api.user("bob").await;
    for attempt in 0..10 {
        let r = api.login("ann@example.com", "wrong password").await;
        assert_error(&r, StatusCode::UNAUTHORIZED);
        assert!(
            r.headers.get(header::RETRY_AFTER).is_none(),
            "attempt {attempt}"
        );
    }
    // the budget is spent: refused before any hashing, the right password too
    for password in ["wrong password", PASSWORD] {
        let r = api.login("ann@example.com", password).await;
        assert_error(&r, StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = r.header(header::RETRY_AFTER).parse().unwrap();
        assert!((1..=15 * 60).contains(&retry), "Retry-After: {retry}");
    }
    // another spelling of the same email is the same budget; another account is untouched
    let r = api.login("ANN@Example.com", PASSWORD).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS);
    let r = api.login("bob@example.com", PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn unknown_emails_count_towards_the_limit_too() {
    // no free guessing of which emails exist
    let api = api();
    for _ in 0..10 {
        api.login("nobody@example.com", "x").await;
    }
    assert_error(
        &api.login("nobody@example.com", "x").await,
        StatusCode::TOO_MANY_REQUESTS,
    );
}

/// An API that allows 3 logins and 2 registrations a minute from one address.
fn api_with_address_limits() -> Api {
    api_with(ApiConfig {
        rate_limits: RateLimits {
            logins_per_address: RateLimit::new(3, 60),
            registrations_per_address: RateLimit::new(2, 60),
            ..RateLimits::default()
        },
        ..ApiConfig::default()
    })
}

async fn register_from(api: &Api, n: u32, addr: &str) -> Reply {
    let body = json!({"username": format!("user{n}"), "email": format!("user{n}@example.com"), "password": PASSWORD});
    from_addr(api, "/api/v2/auth/register", addr, body).await
}

#[tokio::test]
async fn registrations_are_limited_per_client_address() {
    let api = api_with_address_limits();
    for n in [1, 2] {
        let r = register_from(&api, n, "198.51.100.7").await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let r = register_from(&api, 3, "198.51.100.7").await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    let r = register_from(&api, 3, "2001:db8::1").await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn logins_are_limited_per_client_address() {
    let api = api_with_address_limits();
    register_from(&api, 1, "2001:db8::1").await;
    let login = |addr| {
        let body = json!({"email": "user1@example.com", "password": PASSWORD});
        from_addr(&api, "/api/v2/auth/login", addr, body)
    };
    for _ in 0..3 {
        assert_eq!(login("198.51.100.7").await.status, StatusCode::OK);
    }
    assert_error(&login("198.51.100.7").await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(login("203.0.113.5").await.status, StatusCode::OK);
}

// ---- password hashing ----

#[tokio::test]
async fn argon2_runs_on_the_blocking_pool_never_on_the_async_worker() {
    // a current-thread runtime: this test's thread is the runtime's only worker
    let here = std::thread::current().id();
    let api = api();
    let r = api.register("ann", "ann@example.com").await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = api.login("ann@example.com", PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK);
    for (email, password) in [
        ("ann@example.com", "wrong-password"),
        ("nobody@example.com", PASSWORD),
    ] {
        assert_error(&api.login(email, password).await, StatusCode::UNAUTHORIZED);
    }
    // other tests hash at the same time, each from its own thread: keep the hashes asked for here
    let mine: Vec<_> = probe::HASHES
        .lock()
        .unwrap()
        .iter()
        .filter(|(caller, _)| *caller == here)
        .map(|(_, ran_on)| *ran_on)
        .collect();
    assert_eq!(
        mine.len(),
        4,
        "register, login, wrong password and unknown email (the dummy hash) all hash on the pool"
    );
    assert!(
        mine.iter().all(|ran_on| *ran_on != here),
        "argon2 ran on the async worker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_hashes_are_bounded_and_other_requests_are_answered() {
    let api = api();
    let token = api.user("ann").await;
    let bound = hashing_concurrency();
    // more logins than permits: a few wrong passwords, the rest unknown emails (the dummy hash);
    // few enough per email and in all to stay under the login rate limits
    let emails: Vec<String> = (0..(3 * bound + 2).min(bound + 24))
        .map(|i| match i {
            0..3 => "ann@example.com".to_string(),
            _ => format!("nobody{i}@example.com"),
        })
        .collect();
    let logins = emails
        .iter()
        .map(|email| api.login(email, "wrong-password"));
    let flood = futures_util::future::join_all(logins);
    let (replies, me) = tokio::join!(flood, api.profile(Some(&token)));
    assert_eq!(me.status, StatusCode::OK);
    assert!(
        replies.iter().all(|r| r.status == StatusCode::UNAUTHORIZED),
        "every login answered"
    );
    let most = probe::MOST_AT_ONCE.load(Ordering::SeqCst);
    assert!(
        (1..=bound).contains(&most),
        "{most} hashes ran at once; the bound is {bound}"
    );
}
