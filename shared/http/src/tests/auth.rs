//! Registration, login and the profile; how emails and usernames are normalised.

use super::*;

#[tokio::test]
async fn registration_returns_the_user_never_the_hash_and_one_account_per_email() {
    let api = api();
    let r = api.register("ann", "Ann@Example.com").await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["email"], "ann@example.com");
    for key in ["id", "username", "created_at", "updated_at"] {
        assert!(r.body.get(key).is_some(), "{key}");
    }
    assert!(
        !r.text.contains("argon2") && r.body.get("password_hash").is_none(),
        "never the hash"
    );
    let dup = api.register("ann2", "ANN@example.COM").await;
    assert_error(&dup, StatusCode::CONFLICT);
}

#[tokio::test]
async fn registration_names_every_invalid_field() {
    let api = api();
    let bad = api
        .post(
            "/api/v2/auth/register",
            None,
            json!({"username": "a", "email": "nope", "password": "short"}),
        )
        .await;
    assert_error(&bad, StatusCode::UNPROCESSABLE_ENTITY);
    for field in ["username", "email", "password"] {
        assert!(
            bad.body["fields"][field].is_array(),
            "{field}: {}",
            bad.text
        );
    }
}

#[tokio::test]
async fn login_issues_an_hour_long_bearer_token_for_the_profile() {
    let api = api();
    api.register("ann", "Ann@Example.com").await;
    let login = api.login("ann@example.com", PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK);
    assert_eq!(login.body["token_type"], "Bearer");
    assert_eq!(login.body["expires_in"], 3600);
    let me = api.profile(login.body["access_token"].as_str()).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["username"], "ann");
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_401() {
    let api = api();
    api.register("ann", "Ann@Example.com").await;
    let wrong_password = api.login("ann@example.com", "password124").await;
    let unknown_email = api.login("bob@example.com", PASSWORD).await;
    assert_error(&wrong_password, StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong_password.body, unknown_email.body,
        "same answer whether the email exists or not"
    );
}

#[tokio::test]
async fn the_profile_needs_a_token() {
    let anonymous = api().profile(None).await;
    assert_error(&anonymous, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers[header::WWW_AUTHENTICATE], "Bearer");
}

#[tokio::test]
async fn malformed_and_oversized_junk_json_is_400() {
    let api = api();
    let r = api
        .raw(
            Method::POST,
            "/api/v2/auth/register",
            None,
            "application/json",
            b"{\"username\": ".to_vec(),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST);
    let junk: Vec<u8> = (0..1_000_000u32)
        .map(|i| b"{[\"x:,}"[(i % 7) as usize])
        .collect();
    let r = api
        .raw(
            Method::POST,
            "/api/v2/auth/login",
            None,
            "application/json",
            junk,
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST);
    let r = api.post("/api/v2/auth/login", None, json!([1, 2, 3])).await;
    assert_error(&r, StatusCode::BAD_REQUEST);
}

// ---- hardening: accounts (issue 11, items 6 and 7) ----

#[tokio::test]
async fn every_spelling_of_a_registered_email_is_a_conflict() {
    let api = api();
    assert_eq!(
        api.register("ann", "ann@example.com").await.status,
        StatusCode::CREATED
    );
    // spellings that normalise to the registered address: 409
    for variant in [
        "ANN@EXAMPLE.COM",
        "  Ann@Example.com  ",
        "ａｎｎ@ｅｘａｍｐｌｅ.ｃｏｍ",
        "ａｎｎ＠ｅｘａｍｐｌｅ．ｃｏｍ",
    ] {
        let r = api.register("ann2", variant).await;
        assert_error(&r, StatusCode::CONFLICT);
    }
    // NFC then NFD of the same address: one account
    let nfc = api.register("jose", "jos\u{e9}@example.com").await;
    assert_eq!(nfc.status, StatusCode::CREATED, "{}", nfc.text);
    assert_eq!(nfc.body["email"], "jos\u{e9}@example.com");
    let nfd = api.register("jose2", "jose\u{301}@example.com").await;
    assert_error(&nfd, StatusCode::CONFLICT);
    let upper_nfd = api.register("jose3", "JOSE\u{301}@EXAMPLE.COM").await;
    assert_error(&upper_nfd, StatusCode::CONFLICT);
}

#[tokio::test]
async fn invisible_characters_nul_and_quoted_local_parts_in_an_email_are_refused() {
    let api = api();
    api.register("ann", "ann@example.com").await;
    // refused, never a second account
    for refused in [
        "ann\u{200b}@example.com",
        "ann@example.com\u{0}",
        "\"ann\"@example.com",
        "\"ann@example.com\"@example.com",
        "ann\u{feff}@example.com",
        "ann\u{2060}@example.com",
        "ann\u{202e}@example.com",
        "ann@exa\r\nmple.com",
    ] {
        let r = api.register("ann3", refused).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            r.body["fields"]["email"].is_array(),
            "{refused:?}: {}",
            r.text
        );
    }
    let ann = api.login("ann@example.com", PASSWORD).await;
    assert_eq!(
        ann.status,
        StatusCode::OK,
        "the first account still logs in"
    );
}

#[tokio::test]
async fn login_normalises_the_email_like_registration() {
    let api = api();
    let id = api.register("ann", "Ann@Example.com").await.str("id");
    for spelling in [
        "ann@example.com",
        "ANN@EXAMPLE.COM",
        " ann@example.com ",
        "ａｎｎ@ｅｘａｍｐｌｅ.ｃｏｍ",
        "ＡＮＮ＠ＥＸＡＭＰＬＥ．ＣＯＭ",
    ] {
        let login = api.login(spelling, PASSWORD).await;
        assert_eq!(login.status, StatusCode::OK, "{spelling:?}: {}", login.text);
        let me = api.profile(login.body["access_token"].as_str()).await;
        assert_eq!(me.body["id"], id.as_str(), "{spelling:?}");
    }
    for other in ["ann\u{200b}@example.com", "ann@example.com\u{0}"] {
        assert_error(&api.login(other, PASSWORD).await, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn usernames_are_nfc_trimmed_and_markup_is_just_text() {
    let api = api();
    let r = api.register("  Jose\u{301}  ", "jose@example.com").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["username"], "Jos\u{e9}");
    // markup is just text to the API: stored and returned as given (the page renders it as text)
    let markup = "<img src=x onerror=alert(1)>";
    let r = api.register(markup, "markup@example.com").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["username"], markup);
}

#[tokio::test]
async fn usernames_are_free_of_invisible_characters_and_not_too_short_or_long() {
    let api = api();
    for refused in [
        "ann\u{200b}",
        "an\u{200d}n",
        "ann\u{0}",
        "ann\u{202e}x",
        "a\nbc",
        "\u{3164}\u{3164}\u{3164}",
        "ab",
        "   ab   ",
    ] {
        let r = api.register(refused, "other@example.com").await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            r.body["fields"]["username"].is_array(),
            "{refused:?}: {}",
            r.text
        );
    }
    let r = api.register(&"x".repeat(51), "other@example.com").await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
    let r = api
        .register(&"\u{e9}".repeat(50), "other@example.com")
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "50 characters, 100 bytes");
}
