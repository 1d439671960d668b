//! `/api/v2` handlers.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{CurrentUser, check_password, hash_password_blocking};
use super::request::{PageQuery, link_next, page_limit, parse_body};
use super::throttle::{self, CallerAddr};
use super::videos::{NewVideo, checked_title, create_video, owned_video, video_json};
use super::{ApiError, AppState, AuthUser, openapi, stream, uploads};
use domain::{EmotionLabel, FrameResult, User, normalize_email, validate_email, validate_username};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/register", post(register))
        .route("/auth/login", post(login))
        .route("/auth/profile", get(profile))
        .route("/videos/upload/initialize", post(initialize_upload))
        // the multipart form carries the whole video: its size is checked as it is stored
        .route(
            "/videos/upload",
            post(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/videos/upload/finalize", post(finalize_upload))
        .route("/videos", get(list_videos))
        .route("/videos/", get(list_videos))
        .route("/videos/stream/{filename}", get(stream::stream_video))
        .route(
            "/videos/{id}",
            get(get_video).patch(patch_video).delete(delete_video),
        )
        .route("/videos/{id}/frames", get(list_frames))
        .route("/videos/{id}/events", get(stream::video_events))
        .route("/videos/{id}/export.csv", get(export_csv))
        .route("/videos/{id}/people/{filename}", get(person_thumbnail))
        .route(
            "/openapi.json",
            get(|| async { Json(openapi::openapi_document()) }),
        )
}

/// Collects field errors for one 422.
#[derive(Default)]
struct FieldErrors(BTreeMap<String, Vec<String>>);

impl FieldErrors {
    fn add(&mut self, field: &str, message: &str) {
        self.0.entry(field.into()).or_default().push(message.into());
    }

    /// The checked value, or an empty string with the message recorded against `field`.
    fn check(&mut self, field: &str, checked: Result<String, &str>) -> String {
        checked.unwrap_or_else(|message| {
            self.add(field, message);
            String::new()
        })
    }

    fn into_result(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let message = self
            .0
            .iter()
            .map(|(f, m)| format!("{f}: {}", m.join(", ")))
            .collect::<Vec<_>>()
            .join("; ");
        Err(ApiError::Validation {
            message,
            fields: self.0,
        })
    }
}

fn user_json(user: &User) -> Value {
    json!({
        "id": user.id, "username": user.username, "email": user.email,
        "created_at": user.created_at, "updated_at": user.updated_at,
    })
}

#[derive(Deserialize)]
struct RegisterBody {
    username: Option<String>,
    email: Option<String>,
    password: Option<String>,
}

/// `POST /auth/register`. The email is stored normalised (see [`domain::validate_email`]), so
/// every spelling of a registered address is a 409; the username is checked by
/// [`domain::validate_username`]. The password is hashed on the blocking pool.
async fn register(
    State(state): State<AppState>,
    CallerAddr(addr): CallerAddr,
    body: Bytes,
) -> Result<Response, ApiError> {
    throttle::before_register(&state, addr).await?;
    let body: RegisterBody = parse_body(&body)?;
    let mut errors = FieldErrors::default();
    let username = errors.check(
        "username",
        validate_username(body.username.as_deref().unwrap_or_default()),
    );
    let email = errors.check(
        "email",
        validate_email(body.email.as_deref().unwrap_or_default()),
    );
    let password = body.password.unwrap_or_default();
    if password.chars().count() < 8 {
        errors.add("password", "must be at least 8 characters");
    }
    errors.into_result()?;

    let password_hash = hash_password_blocking(password).await?;
    let now = Utc::now();
    let user = User {
        id: uuid::Uuid::new_v4().to_string(),
        username,
        email,
        password_hash,
        created_at: now,
        updated_at: now,
    };
    state.users.create_user(&user).await.map_err(|e| match e {
        domain::ports::StoreError::Conflict(_) => {
            ApiError::Conflict("an account with this email already exists".into())
        }
        other => other.into(),
    })?;
    tracing::info!(user_id = %user.id, "user registered");
    Ok((StatusCode::CREATED, Json(user_json(&user))).into_response())
}

#[derive(Deserialize)]
struct LoginBody {
    email: Option<String>,
    password: Option<String>,
}

/// `POST /auth/login`. The email is normalised as at registration, so `ANN@EXAMPLE.COM` and the
/// fullwidth spelling reach the same account; the password is verified on the blocking pool.
async fn login(
    State(state): State<AppState>,
    CallerAddr(addr): CallerAddr,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: LoginBody = parse_body(&body)?;
    let email = normalize_email(body.email.as_deref().unwrap_or_default());
    let password = body.password.unwrap_or_default();
    // before any hashing: a flood is refused cheaply
    throttle::before_login(&state, addr, &email).await?;
    let user = state.users.user_by_email(&email).await?;
    // Same answer whether the email exists or not; an unknown email is verified against a dummy
    // hash so that the time taken does not tell either.
    let valid = check_password(password, user.as_ref().map(|u| u.password_hash.clone())).await?;
    if !valid {
        throttle::login_failed(&state, &email).await?;
    }
    let user = user
        .filter(|_| valid)
        .ok_or_else(|| ApiError::Unauthorized("invalid email or password".into()))?;
    Ok(Json(json!({
        "access_token": state.tokens.issue(&user.id)?,
        "token_type": "Bearer",
        "expires_in": state.tokens.ttl_seconds,
    })))
}

async fn profile(CurrentUser(user): CurrentUser) -> Json<Value> {
    Json(user_json(&user))
}

// ---- uploads ----

#[derive(Deserialize)]
struct InitializeBody {
    filename: Option<String>,
    title: Option<String>,
    content_type: Option<String>,
    size_bytes: Option<u64>,
    sample_fps: Option<f64>,
    callback_url: Option<String>,
}

async fn initialize_upload(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: InitializeBody = parse_body(&body)?;
    let video = create_video(
        &state,
        &user_id,
        NewVideo {
            filename: body.filename.unwrap_or_default(),
            title: body.title,
            content_type: body.content_type,
            size_bytes: body.size_bytes,
            sample_fps: body.sample_fps,
            callback_url: body.callback_url,
        },
    )
    .await?;
    let upload = state
        .blobs
        .presign_put(
            &video.s3_key,
            &video.content_type,
            video.size_bytes,
            state.config.upload_url_ttl,
        )
        .await?;
    Ok(Json(json!({
        "video_id": video.id,
        "upload_url": upload.url,
        "s3_key": video.s3_key,
        "method": "PUT",
        "headers": {"Content-Type": video.content_type},
        "expires_at": upload.expires_at,
    })))
}

/// `POST /videos/upload`: JSON is the presigned flow; multipart/form-data is the original web
/// client's local mode (the file goes through the server).
async fn upload(
    State(state): State<AppState>,
    user: AuthUser,
    request: Request,
) -> Result<Response, ApiError> {
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if is_multipart {
        let multipart = Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        return uploads::multipart_upload(state, user, multipart).await;
    }
    let body = axum::body::to_bytes(request.into_body(), JSON_BODY_LIMIT)
        .await
        .map_err(|e| {
            if format!("{e:?}").contains("LengthLimitError") {
                ApiError::PayloadTooLarge(format!("a JSON body is at most {JSON_BODY_LIMIT} bytes"))
            } else {
                ApiError::BadRequest(format!("request body: {e}"))
            }
        })?;
    initialize_upload(State(state), user, body)
        .await
        .map(IntoResponse::into_response)
}

/// axum's default limit for the other JSON routes, kept for the JSON form of `/videos/upload`.
const JSON_BODY_LIMIT: usize = 2 << 20;

#[derive(Deserialize)]
struct FinalizeBody {
    s3_key: Option<String>,
    title: Option<String>,
}

/// Confirms an upload. Idempotent, and never starts an analysis: the object-created event does.
async fn finalize_upload(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: FinalizeBody = parse_body(&body)?;
    let key = body.s3_key.unwrap_or_default();
    let (key_user, video_id) = domain::parse_object_key(&key).ok_or(ApiError::NotFound)?;
    if key_user != user_id {
        return Err(ApiError::NotFound);
    }
    let video = owned_video(&state, &user_id, video_id).await?;
    if video.s3_key != key {
        return Err(ApiError::NotFound);
    }
    // absent or blank leaves the title as it is; anything else must be a valid title
    if let Some(title) = body.title.filter(|t| !t.trim().is_empty()) {
        let title = checked_title(&title)?;
        state.videos.set_title(&video.id, &title).await?;
    }
    let video = owned_video(&state, &user_id, video_id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(video_json(&state, &video, false).await?),
    )
        .into_response())
}

// ---- videos ----

/// The labels of the original client's `emotions`/`confidences` arrays: always the seven basic
/// labels in the canonical order, i.e. `EmotionLabel::ALL` without contempt (which only FER+ has),
/// whatever the model reports; a label the model lacks is 0.
const CLIENT_LABELS: &[EmotionLabel] = match EmotionLabel::ALL.split_last() {
    Some((EmotionLabel::Contempt, basic)) => basic,
    _ => panic!("EmotionLabel::ALL ends with contempt"),
};

/// The original service's per-frame shape for the main face, plus every face in full. The frame
/// number is unique within a video, so it doubles as the frame's `id`.
pub(crate) fn frame_json(frame: &FrameResult) -> Value {
    let main = frame.main_face();
    let confidences: Vec<f64> = CLIENT_LABELS
        .iter()
        .map(|&label| {
            main.map_or(0.0, |face| {
                (face.emotions.get(label) as f64 * 1e6).round() / 1e6
            })
        })
        .collect();
    json!({
        "id": frame.frame,
        "frame_number": frame.frame,
        "video_timestamp_sec": frame.t_ms as f64 / 1000.0,
        "emotions": CLIENT_LABELS,
        "confidences": confidences,
        "faces": frame.faces,
    })
}

async fn list_videos(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let limit = page_limit(q.limit, 50, 200)?;
    let page = state
        .videos
        .videos_of(&user_id, limit, q.cursor.as_deref())
        .await?;
    let mut items = Vec::with_capacity(page.items.len());
    for video in &page.items {
        items.push(video_json(&state, video, false).await?);
    }
    let mut response = Json(items).into_response();
    if let Some(next) = &page.next {
        link_next(response.headers_mut(), "/api/v2/videos/", limit, next);
    }
    Ok(response)
}

/// Frames embedded in `GET /videos/{id}`; longer analyses continue at `frames_next`.
const EMBEDDED_FRAMES: usize = 1000;

async fn get_video(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let video = owned_video(&state, &user_id, &id).await?;
    let mut body = video_json(&state, &video, true).await?;
    let (frames, next) = domain::assembly::read_frames(
        state.results.as_ref(),
        &video.id,
        video.analysis.summary.as_ref(),
        None,
        EMBEDDED_FRAMES,
    )
    .await?;
    body["frames"] = Value::Array(frames.iter().map(frame_json).collect());
    body["frames_next"] =
        json!(next.map(|n| format!("/api/v2/videos/{}/frames?cursor={n}", video.id)));
    Ok(Json(body))
}

#[derive(Deserialize)]
struct PatchBody {
    title: Option<String>,
}

async fn patch_video(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: PatchBody = parse_body(&body)?;
    let video = owned_video(&state, &user_id, &id).await?;
    let title = checked_title(body.title.as_deref().unwrap_or_default())?;
    state.videos.set_title(&video.id, &title).await?;
    let video = owned_video(&state, &user_id, &id).await?;
    Ok(Json(video_json(&state, &video, true).await?))
}

async fn delete_video(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let video = owned_video(&state, &user_id, &id).await?;
    // objects first, record last: if anything fails the user can retry the delete. A running
    // analysis stops at its next checkpoint and removes what it wrote since (see `worker`).
    state.blobs.delete(&video.s3_key).await?;
    state
        .blobs
        .delete_prefix(&domain::results_prefix(&video.id))
        .await?;
    state.videos.delete_video(&video.id).await?;
    tracing::info!(video_id = %video.id, "video deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// A person's thumbnail (`{n}.jpg`, people counting from 1): the best crop of their face, as the
/// analysis stored it. Any other file name, and a person without one, is not found.
async fn person_thumbnail(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path((id, filename)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let video = owned_video(&state, &user_id, &id).await?;
    let person = domain::parse_person_thumbnail_file(&filename).ok_or(ApiError::NotFound)?;
    // only the people the summary names have a thumbnail: anyone else is a 404 without asking
    // the store (S3 answers a missing key with 403 unless the caller may list the bucket)
    let known = video
        .analysis
        .summary
        .as_ref()
        .is_some_and(|s| s.people.iter().any(|p| p.person == person));
    if !known {
        return Err(ApiError::NotFound);
    }
    let key = domain::person_thumbnail_key(&video.id, person);
    let bytes = state
        .blobs
        .get_object(&key)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "private, max-age=3600"),
        ],
        bytes,
    )
        .into_response())
}

async fn list_frames(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let video = owned_video(&state, &user_id, &id).await?;
    let limit = page_limit(q.limit, 500, 5000)?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<u64>()
                .map_err(|_| ApiError::BadRequest("invalid cursor".into()))
        })
        .transpose()?;
    let (frames, next) = domain::assembly::read_frames(
        state.results.as_ref(),
        &video.id,
        video.analysis.summary.as_ref(),
        after,
        limit,
    )
    .await?;
    let mut response = Json(frames.iter().map(frame_json).collect::<Vec<_>>()).into_response();
    if let Some(next) = next {
        link_next(
            response.headers_mut(),
            &format!("/api/v2/videos/{}/frames", video.id),
            limit,
            &next.to_string(),
        );
    }
    Ok(response)
}

async fn export_csv(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let video = owned_video(&state, &user_id, &id).await?;
    let labels: Vec<EmotionLabel> = EmotionLabel::ALL
        .into_iter()
        .filter(|l| {
            *l != EmotionLabel::Contempt
                || video
                    .analysis
                    .summary
                    .as_ref()
                    .is_some_and(|s| s.mean.has_contempt())
        })
        .collect();
    let model = domain::ModelInfo {
        detector: String::new(),
        classifier: String::new(),
        labels,
    };
    let mut out = Vec::new();
    let mut writer = domain::report::CsvReport::new(&mut out);
    use domain::AnalysisSink;
    let sink_err = |e: domain::SinkError| ApiError::Internal(e.to_string());
    writer
        .begin(&Default::default(), &model, video.sample_fps)
        .map_err(sink_err)?;
    let mut after = None;
    loop {
        let (frames, next) = domain::assembly::read_frames(
            state.results.as_ref(),
            &video.id,
            video.analysis.summary.as_ref(),
            after,
            1000,
        )
        .await?;
        for frame in &frames {
            writer.frame(frame).map_err(sink_err)?;
        }
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    drop(writer);
    let disposition = format!("attachment; filename=\"{}.csv\"", video.id);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        out,
    )
        .into_response())
}
