//! socket.io for the original web client's live progress: it connects at the server's origin and
//! listens for `processing_update {video_id, status, progress}`. Unlike the original service,
//! which broadcast every update to everyone, a socket must present a valid token and only hears
//! about its owner's videos (one room per user).

use std::sync::Arc;

use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use tokio::sync::broadcast::error::RecvError;

use domain::ports::{UserStore, VideoStore};
use http_api::live::{ProgressUpdate, VideoEvents};
use http_api::{TokenKeys, bearer_token};

/// The socket.io layer, plus a task that turns "video changed" announcements into
/// `processing_update` events for the video's owner.
pub fn progress_socket(
    tokens: TokenKeys,
    users: Arc<dyn UserStore>,
    videos: Arc<dyn VideoStore>,
    events: VideoEvents,
) -> SocketIoLayer {
    let (layer, io) = SocketIo::new_layer();
    let check = tokens.clone();
    io.ns(
        "/",
        (move |socket: SocketRef, TryData(auth): TryData<Value>| {
            let tokens = tokens.clone();
            async move {
                // the middleware below has vetted the token already
                if let Some(user_id) =
                    token_of(&socket, auth.ok().as_ref()).and_then(|t| tokens.verify(&t).ok())
                {
                    tracing::debug!(socket = %socket.id, %user_id, "socket.io client joined");
                    socket.join(room(&user_id));
                }
            }
        })
        .with(move |socket: SocketRef, TryData(auth): TryData<Value>| {
            let (tokens, users) = (check.clone(), users.clone());
            async move {
                let token = token_of(&socket, auth.ok().as_ref()).ok_or(SocketAuthError)?;
                let user_id = tokens.verify(&token).map_err(|_| SocketAuthError)?;
                // as on every authenticated route: the token must name a user that exists
                match users.user_by_id(&user_id).await {
                    Ok(Some(_)) => Ok::<(), SocketAuthError>(()),
                    _ => Err(SocketAuthError),
                }
            }
        }),
    );
    tokio::spawn(relay(io, videos, events));
    layer
}

fn room(user_id: &str) -> String {
    format!("user:{user_id}")
}

/// The token from socket.io's `auth` payload (`{token}`), the handshake's `?token=`, or an
/// `Authorization: Bearer` header (`extraHeaders` in the polling transport).
fn token_of(socket: &SocketRef, auth: Option<&Value>) -> Option<String> {
    if let Some(t) = auth.and_then(|a| a.get("token")).and_then(Value::as_str) {
        let t = t.trim();
        let scheme = t.get(..7).filter(|s| s.eq_ignore_ascii_case("bearer "));
        return Some(scheme.map_or(t, |_| t[7..].trim_start()).to_string());
    }
    let parts = socket.req_parts();
    let from_query = parts.uri.query().and_then(|q| {
        q.split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned()
            })
    });
    from_query.or_else(|| bearer_token(&parts.headers).map(str::to_string))
}

#[derive(Debug)]
struct SocketAuthError;

impl std::fmt::Display for SocketAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a valid token is required (auth: {token})")
    }
}

async fn relay(io: SocketIo, videos: Arc<dyn VideoStore>, events: VideoEvents) {
    let mut heard = events.subscribe();
    loop {
        let video_id = match heard.recv().await {
            Ok(id) => id,
            // the next announcement carries the current state anyway
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        let video = match videos.video(&video_id).await {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(%video_id, error = %e, "progress not relayed");
                continue;
            }
        };
        let update = ProgressUpdate::of(&video);
        if let Err(e) = io
            .to(room(&video.user_id))
            .emit("processing_update", &update)
            .await
        {
            tracing::debug!(%video_id, error = %e, "processing_update not delivered");
        }
    }
}
