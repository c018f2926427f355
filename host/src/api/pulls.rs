//! Code a deploy names by registry reference: pulled by the daemon with
//! the environment's own login, then checked and kept exactly as an
//! upload of the same code would be (the same quotas, the same component
//! and image checks). A pull that fails changes nothing.

use std::collections::BTreeMap;

use super::uploads::Kind;
use super::{ApiError, ApiResult, ApiState, Caller};
use crate::content::CodeInfo;
use crate::model::{validate_component_name, Digest, Source};
use crate::registry::{Limits, PullError, PullFailure, Pulled};
use crate::runtime::CodeError;

/// One component pulled and kept.
pub(super) struct Kept {
    /// The component's name in the stack.
    pub name: String,
    /// Its code digest.
    pub digest: Digest,
    /// Where it came from.
    pub source: Source,
    /// Blobs fetched from the registry, and found already here.
    pub fetched: usize,
    /// Blobs found already here.
    pub cached: usize,
}

/// Pulls each `name -> reference` of a deploy, in order; the first
/// failure ends it, with its line.
pub(super) async fn pull_all(
    state: &ApiState,
    caller: &Caller,
    pulls: &BTreeMap<String, String>,
) -> ApiResult<Vec<Kept>> {
    let mut kept = Vec::new();
    for (name, reference) in pulls {
        validate_component_name(name).map_err(ApiError::bad_request)?;
        kept.push(pull_one(state, caller, name, reference).await?);
    }
    Ok(kept)
}

async fn pull_one(state: &ApiState, caller: &Caller, name: &str, text: &str) -> ApiResult<Kept> {
    let host = text.split('/').next().unwrap_or("").to_ascii_lowercase();
    let credentials = super::registries::credentials_for(state, &caller.env, &host).await?;
    let kind = if state.containers.unsupported().is_none() {
        Kind::Image
    } else {
        Kind::Code
    };
    let place = state.places.take(caller, kind)?;
    // Removed however this ends, unless it was stored.
    let guard = state.engine.content().incoming();
    let room = super::quotas::upload_room(state, &caller.env).await?;
    let limits = Limits {
        component_bytes: state.config.max_upload_bytes,
        image_bytes: state.config.max_image_bytes,
        quota: Some((
            room,
            format!(
                "environment {} is over its code quota (--max-code): it has {} left",
                caller.env,
                crate::model::format_memory(room)
            ),
        )),
        private_allowed: caller.admin,
    };
    let pulled = state
        .registries
        .pull(
            text,
            &caller.env,
            credentials.as_ref(),
            limits,
            guard.path(),
        )
        .await
        .map_err(refused)?;
    let (info, source, fetched, cached) = match pulled {
        Pulled::Component {
            bytes,
            digest,
            source,
            fetched,
            cached,
        } => {
            let reserved =
                super::quotas::check_upload(state, &caller.env, &digest, bytes.len() as u64)
                    .await?;
            let engine = state.engine.clone();
            let label = text.to_string();
            let info = tokio::task::spawn_blocking(move || {
                let _place = place;
                let info = engine
                    .accept_as(&label, digest, &bytes)
                    .map_err(|e| match e.downcast::<CodeError>() {
                        Ok(code) => ApiError::bad_request(code.to_string()),
                        Err(other) => ApiError::from(other),
                    })?;
                reserved.keep(info.size)?;
                Ok::<CodeInfo, ApiError>(info)
            })
            .await
            .map_err(|e| anyhow::anyhow!("code check failed: {e}"))??;
            (info, source, fetched, cached)
        }
        Pulled::Image {
            digest,
            size,
            source,
            fetched,
            cached,
        } => {
            if let Some(why) = state.containers.unsupported() {
                return Err(ApiError::bad_request(format!(
                    "{text} is a container image, and containers cannot run here: {why}"
                )));
            }
            let label = text.to_string();
            let info = super::code::accept_image_tar(
                state,
                &caller.env,
                label,
                guard,
                digest,
                size,
                place,
            )
            .await?;
            (info, source, fetched, cached)
        }
    };
    Ok(Kept {
        name: name.to_string(),
        digest: info.digest,
        source,
        fetched,
        cached,
    })
}

/// A failed pull as the API says it: its one line, with a status.
fn refused(e: PullError) -> ApiError {
    let line = e.to_string();
    match e.kind {
        PullFailure::Invalid => ApiError::bad_request(line),
        PullFailure::NotFound => ApiError::not_found(line),
        PullFailure::Unauthorized => ApiError::forbidden(line),
        PullFailure::Unavailable => ApiError::bad_gateway(line),
        PullFailure::TooLarge => ApiError::too_large(line),
        PullFailure::Quota => ApiError::quota(line),
    }
}
