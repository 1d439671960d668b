//! The API as documented and as deployed: the OpenAPI document matches the routes, and API
//! Gateway's events drive the same router.

use super::*;
use crate::openapi;

#[tokio::test]
async fn every_route_in_the_openapi_document_exists() {
    let api = api();
    let doc = api.get("/api/v2/openapi.json", None).await;
    assert_eq!(doc.body["openapi"], "3.1.0");
    let paths = doc.body["paths"].as_object().unwrap();
    assert_eq!(
        paths
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum::<usize>(),
        openapi::ROUTES.len()
    );
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            let concrete = path
                .replace("{id}", "some-id")
                .replace("{filename}", "some-id.mp4");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = api
                .call(
                    method.clone(),
                    &format!("/api/v2{concrete}"),
                    None,
                    Some(json!({})),
                )
                .await;
            // an unknown route is the fallback's 404 or a 405; a protected one answers 401 first
            assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            if op.get("security").is_some() {
                assert_eq!(
                    r.status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} must need a token"
                );
            } else if !path.contains("{filename}") {
                // (a stream name that is no video's is a 404 by design: covered on its own)
                assert_ne!(r.status, StatusCode::NOT_FOUND, "{method} {path}");
            }
        }
    }
}

fn event_fixture(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../events")
            .join(name),
    )
    .unwrap()
}

/// An API Gateway HTTP API (payload v2) event through the router: the status and the JSON body.
async fn send_event(api: &Api, json: &str) -> (StatusCode, Value) {
    let request = lambda_http::request::from_str(json).expect("a valid API Gateway v2 event");
    let response = api.app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
    )
}

/// The fixture `name`, sent with the access token where it says so.
async fn send_fixture(api: &Api, name: &str, token: &str) -> (StatusCode, Value) {
    let json = event_fixture(name).replace("REPLACE_WITH_ACCESS_TOKEN", token);
    send_event(api, &json).await
}

/// The events/ fixtures drive the same router Lambda runs.
#[tokio::test]
async fn api_gateway_events_drive_the_router() {
    let api = api();
    let (status, _) = send_fixture(&api, "apigw-register.json", "").await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, login) = send_fixture(&api, "apigw-login.json", "").await;
    assert_eq!(status, StatusCode::OK);
    let token = login["access_token"].as_str().unwrap();
    let (status, init) = send_fixture(&api, "apigw-initialize-upload.json", token).await;
    assert_eq!(status, StatusCode::OK, "{init}");
    let (status, list) = send_fixture(&api, "apigw-list-videos.json", token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list[0]["id"], init["video_id"]);
    let (status, doc) = send_fixture(&api, "apigw-openapi.json", "").await;
    assert_eq!(
        (status, doc["openapi"].as_str()),
        (StatusCode::OK, Some("3.1.0"))
    );
}
