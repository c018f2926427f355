//! Code as it comes and goes: uploads (`PUT /v1/code`) of components,
//! files archives and container images, checked and kept by the content
//! store, and downloads (`GET /v1/code/{digest}`) by the other hosts of a
//! cluster.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::{Extension, Json};

use super::uploads::{self, Kind};
use super::wire::CodeQuery;
use super::{ApiError, ApiResult, ApiState, Caller};
use crate::container::image::Room;
use crate::content::files::FilesError;
use crate::content::CodeInfo;
use crate::model::Digest;
use crate::runtime::CodeError;

/// `GET /v1/code/{digest}` (operator only): stored code by digest, as
/// uploaded. The hosts of a cluster fetch code they lack from each other
/// this way (with the operator's token they share).
pub(super) async fn download_code(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    axum::extract::Path(digest): axum::extract::Path<String>,
) -> ApiResult<axum::response::Response> {
    caller.require_operator("download code")?;
    let digest = Digest::try_from(digest).map_err(ApiError::bad_request)?;
    let missing = || ApiError::not_found(format!("no code {} is stored here", digest.short()));
    // Streamed from its file: an image may be gigabytes.
    let file = match tokio::fs::File::open(state.engine.content().code_path(&digest)).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
        Err(e) => return Err(anyhow::anyhow!("reading code {}: {e}", digest.short()).into()),
    };
    let size = file
        .metadata()
        .await
        .map_err(|e| anyhow::anyhow!("reading code {}: {e}", digest.short()))?
        .len();
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok(axum::response::Response::builder()
        .header(http::header::CONTENT_LENGTH, size)
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .map_err(|e| anyhow::anyhow!("{e}"))?)
}

/// `PUT /v1/code?name=app.wasm`: checks and stores one component (or,
/// with `kind=files`, a stack's files archive; with `kind=image`, a
/// container image).
pub(super) async fn upload_code(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<CodeQuery>,
    body: Body,
) -> ApiResult<Json<CodeInfo>> {
    let name = query.name.unwrap_or_else(|| "the upload".to_string());
    if query.kind.as_deref() == Some("image") {
        return upload_image(&state, &caller, name, body).await.map(Json);
    }
    let limit = state.config.max_upload_bytes;
    let mut stream = body.into_data_stream();
    let place = match state.places.take(&caller, Kind::Code) {
        Ok(place) => place,
        Err(refused) => return Err(heard(&mut stream, limit, refused).await),
    };
    let bytes = read_paced(&mut stream, &name, limit).await?;
    let (digest, bytes) = tokio::task::spawn_blocking(move || (Digest::of(&bytes), bytes))
        .await
        .map_err(|e| anyhow::anyhow!("hashing the upload failed: {e}"))?;
    // Code not deployed yet counts against the quota too, so uploads
    // cannot fill the disk.
    let reserved =
        super::quotas::check_upload(&state, &caller.env, &digest, bytes.len() as u64).await?;
    let engine = state.engine.clone();
    let files = query.kind.as_deref() == Some("files");
    // The place and the reservation go with the work, not the request: a
    // client that goes away does not free them while it is still done.
    let info = tokio::task::spawn_blocking(move || {
        let _place = place;
        let accepted = if files {
            engine.content().accept_files(&name, digest, &bytes)
        } else {
            engine.accept_as(&name, digest, &bytes)
        };
        let info = accepted.map_err(|e| match e.downcast::<CodeError>() {
            Ok(code) => ApiError::bad_request(code.to_string()),
            Err(other) => match other.downcast::<FilesError>() {
                Ok(files) => ApiError::bad_request(files.to_string()),
                Err(other) => ApiError::from(other),
            },
        })?;
        reserved.keep(info.size)?;
        Ok::<_, ApiError>(info)
    })
    .await
    .map_err(|e| anyhow::anyhow!("code check failed: {e}"))??;
    Ok(Json(info))
}

/// A whole upload body, in memory, up to `limit` bytes, coming at the
/// pace uploads must keep.
async fn read_paced(
    stream: &mut axum::body::BodyDataStream,
    name: &str,
    limit: u64,
) -> ApiResult<bytes::Bytes> {
    let started = std::time::Instant::now();
    let mut whole = bytes::BytesMut::new();
    loop {
        let next = uploads::next_chunk(stream, started, whole.len() as u64)
            .await
            .map_err(|stalled| stalled.error(name))?;
        let Some(chunk) = next else {
            return Ok(whole.freeze());
        };
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading {name}: {e}")))?;
        if (whole.len() + chunk.len()) as u64 > limit {
            return Err(ApiError::too_large(format!(
                "{name} is larger than the daemon's upload limit of {}",
                crate::model::format_memory(limit)
            )));
        }
        whole.extend_from_slice(&chunk);
    }
}

/// `PUT /v1/code?kind=image`: a container image (an OCI layout tar or a
/// `docker save` tar), streamed to disk as it comes (images are large),
/// then checked, unpacked and stored by digest. What it unpacks to counts
/// against the code quota with it, and unpacking stops where the quota
/// would be passed.
async fn upload_image(
    state: &ApiState,
    caller: &Caller,
    name: String,
    body: Body,
) -> ApiResult<CodeInfo> {
    use sha2::Digest as _;
    use tokio::io::AsyncWriteExt as _;
    let limit = state.config.max_image_bytes;
    let mut stream = body.into_data_stream();
    if let Some(why) = state.containers.unsupported() {
        let refused = ApiError::bad_request(format!("cannot deploy {name}: {why}"));
        return Err(heard(&mut stream, limit, refused).await);
    }
    let place = match state.places.take(caller, Kind::Image) {
        Ok(place) => place,
        Err(refused) => return Err(heard(&mut stream, limit, refused).await),
    };
    // Removed however this ends, unless it was stored.
    let guard = state.engine.content().incoming();
    let incoming = guard.path().to_path_buf();
    let mut file = tokio::fs::File::create(&incoming)
        .await
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", incoming.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut size = 0u64;
    // Code the environment keeps counts, so an upload past its room is
    // refused as it streams, not once it is all on disk.
    let room = super::quotas::upload_room(state, &caller.env).await?;
    let started = std::time::Instant::now();
    loop {
        let next = uploads::next_chunk(&mut stream, started, size)
            .await
            .map_err(|stalled| stalled.error(&name))?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading {name}: {e}")))?;
        size += chunk.len() as u64;
        if size > room {
            // Heard, not cut off: the rest is read (and dropped), without
            // holding a place.
            drop(place);
            let refused = ApiError::quota(format!(
                "environment {} is over its code quota (--max-code): {name} is larger than the {} it has left",
                caller.env,
                crate::model::format_memory(room)
            ));
            return Err(heard(&mut stream, OVERSIZE_DRAIN, refused).await);
        }
        if size > limit {
            drop(place);
            let refused = ApiError::too_large(format!(
                "{name} is larger than the daemon's image upload limit of {}",
                crate::model::format_memory(limit)
            ));
            return Err(heard(&mut stream, limit.max(OVERSIZE_DRAIN), refused).await);
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", incoming.display()))?;
    }
    file.flush().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    drop(file);
    let digest = Digest::try_from(format!("sha256:{}", hex::encode(hasher.finalize())))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    accept_image_tar(state, &caller.env, name, guard, digest, size, place).await
}

/// Checks the image whose tar is in `guard` (of `digest` and `size`:
/// uploaded or pulled) against `env`'s code quota and the image checks,
/// unpacks it and keeps it. The place, the tar and the reservation go with
/// the unpacking, not the request: a client that goes away frees none of
/// them while it runs.
pub(super) async fn accept_image_tar(
    state: &ApiState,
    env: &str,
    name: String,
    guard: crate::content::Incoming,
    digest: Digest,
    size: u64,
    place: uploads::Place,
) -> ApiResult<CodeInfo> {
    let reserved = super::quotas::check_upload(state, env, &digest, size).await?;
    let left = reserved.room().saturating_sub(size);
    let room = Room {
        bytes: left,
        limit: format!(
            "what is left of environment {env}'s code quota ({})",
            crate::model::format_memory(left)
        ),
    };
    let engine = state.engine.clone();
    let info = tokio::task::spawn_blocking(move || {
        let path = guard.path().to_path_buf();
        let _held = (place, guard);
        let info = engine
            .content()
            .accept_image(digest, &path, |dir| {
                crate::container::image::unpack(&name, &path, dir, room)
                    .map(|(_, unpacked)| unpacked.bytes)
                    .map_err(anyhow::Error::from)
            })
            .map_err(|e| match e.downcast::<crate::container::ImageError>() {
                Ok(image) => ApiError::bad_request(image.to_string()),
                Err(other) => ApiError::from(other),
            })?;
        reserved.keep(info.size)?;
        Ok::<_, ApiError>(info)
    })
    .await
    .map_err(|e| anyhow::anyhow!("image check failed: {e}"))??;
    Ok(info)
}

/// What is read past an image's limit so the client hears why it was
/// refused; the connection closes after that.
const OVERSIZE_DRAIN: u64 = 256 << 20;

/// `refused`, once at most `limit` more bytes of the body were read and
/// dropped (while it keeps the pace uploads must keep), so the client
/// hears why rather than a closed connection.
async fn heard(stream: &mut axum::body::BodyDataStream, limit: u64, refused: ApiError) -> ApiError {
    let started = std::time::Instant::now();
    let mut seen = 0u64;
    while let Ok(Some(Ok(chunk))) = uploads::next_chunk(stream, started, seen).await {
        seen += chunk.len() as u64;
        if seen > limit {
            break;
        }
    }
    refused
}
