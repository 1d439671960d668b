//! Access tokens: forged, expired, tampered, of no user; the `Bearer` scheme.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::*;
use crate::TokenKeys;

fn forge(header: Value, claims: Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// `claims` signed with the test API's own secret.
fn signed(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn forged_expired_and_tampered_tokens_are_401() {
    let api = api();
    let token = api.user("ann").await;
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let now = chrono::Utc::now().timestamp();

    let alg_none = forge(json!({"alg": "none", "typ": "JWT"}), claims.clone(), "");
    let other_key = TokenKeys::new(b"another-secret-another-secret-another", 3600)
        .issue(claims["sub"].as_str().unwrap())
        .unwrap();
    let expired = {
        let mut c = claims.clone();
        c["exp"] = json!(now - 60);
        c["iat"] = json!(now - 3660);
        signed(&c)
    };
    let tampered = {
        let mut c = claims.clone();
        c["sub"] = json!("someone-else");
        let parts: Vec<&str> = token.split('.').collect();
        format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(c.to_string()),
            parts[2]
        )
    };
    let wrong_audience = {
        let mut c = claims.clone();
        c["aud"] = json!("another-service");
        signed(&c)
    };
    for (what, bad) in [
        ("alg none", alg_none),
        ("other key", other_key),
        ("expired", expired),
        ("tampered", tampered),
        ("audience", wrong_audience),
        ("garbage", "abc".into()),
    ] {
        let r = api.profile(Some(&bad)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.text);
        assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
    }
    assert_eq!(api.profile(Some(&token)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_valid_token_of_a_user_that_does_not_exist_is_401_everywhere() {
    let api = api();
    let ann = api.user("ann").await;
    let (id, key) = api.video(&ann).await;
    // correctly signed, unexpired, for a user id that was never registered
    let ghost = TokenKeys::new(SECRET.as_bytes(), 3600)
        .issue("no-such-user")
        .unwrap();
    let calls: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/api/v2/auth/profile".into(), None),
        (Method::GET, "/api/v2/videos/".into(), None),
        (Method::GET, "/api/v2/videos".into(), None),
        (
            Method::POST,
            "/api/v2/videos/upload/initialize".into(),
            Some(json!({"filename": "a.mp4"})),
        ),
        (
            Method::POST,
            "/api/v2/videos/upload".into(),
            Some(json!({"filename": "a.mp4"})),
        ),
        (
            Method::POST,
            "/api/v2/videos/upload/finalize".into(),
            Some(json!({"s3_key": key})),
        ),
        (Method::GET, format!("/api/v2/videos/{id}"), None),
        (
            Method::PATCH,
            format!("/api/v2/videos/{id}"),
            Some(json!({"title": "x"})),
        ),
        (Method::DELETE, format!("/api/v2/videos/{id}"), None),
        (Method::GET, format!("/api/v2/videos/{id}/frames"), None),
        (Method::GET, format!("/api/v2/videos/{id}/export.csv"), None),
        (Method::GET, format!("/api/v2/videos/{id}/events"), None),
        (
            Method::GET,
            format!("/api/v2/videos/{id}/events?token={ghost}"),
            None,
        ),
    ];
    for (method, path, body) in calls {
        let token = (!path.contains("?token=")).then_some(ghost.as_str());
        let r = api.call(method.clone(), &path, token, body).await;
        assert_error(&r, StatusCode::UNAUTHORIZED);
        assert_eq!(r.body["error"], "unknown user", "{method} {path}");
        assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
    }
    let created = api
        .store
        .videos_of("no-such-user", 100, None)
        .await
        .unwrap();
    assert!(created.items.is_empty(), "nothing created");
    assert!(
        api.store.video(&id).await.unwrap().is_some(),
        "nothing deleted"
    );
    // the real user is unaffected
    let r = api.get("/api/v2/videos/", Some(&ann)).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_on_every_route() {
    let api = api();
    let token = api.user("ann").await;
    let (id, _) = api.video(&token).await;
    for scheme in ["Bearer", "bearer", "BEARER", "BeArEr"] {
        for path in [
            "/api/v2/auth/profile".to_string(),
            "/api/v2/videos/".to_string(),
            format!("/api/v2/videos/{id}"),
        ] {
            let r =
                with_authorization(&api, Method::GET, &path, &format!("{scheme} {token}")).await;
            assert_eq!(r.status, StatusCode::OK, "{scheme} {path}: {}", r.text);
        }
    }
}

#[tokio::test]
async fn an_authorization_header_without_the_bearer_scheme_is_401() {
    let api = api();
    let token = api.user("ann").await;
    for value in [
        format!("Bearer{token}"),
        format!("Basic {token}"),
        "Bearer".to_string(),
        "Bearer ".to_string(),
        token.clone(),
    ] {
        let r = with_authorization(&api, Method::GET, "/api/v2/auth/profile", &value).await;
        assert_error(&r, StatusCode::UNAUTHORIZED);
    }
}
