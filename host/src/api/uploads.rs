//! Uploads of code and images as they arrive: how many one environment
//! may have going at once, and how fast their bodies must come.
//!
//! Each environment has its own places (the operator's environment too),
//! so one tenant's uploads, however slow, hold only its own; all tenants'
//! image uploads together are bounded too (each unpacks on this host's
//! disk and CPU), apart from the operator's. A body must keep up a
//! minimum rate after a short grace, and may not pause for long, so a
//! trickling client gives its place back within seconds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use parking_lot::Mutex;

use super::{ApiError, ApiResult, Caller};

/// Image uploads one environment may have going at once.
pub const IMAGE_UPLOADS_PER_ENVIRONMENT: usize = 2;
/// Image uploads all tenants together may have going at once (the
/// operator's are apart).
pub const TENANT_IMAGE_UPLOADS: usize = 8;
/// Other uploads (components, files) one environment may have going.
pub const UPLOADS_PER_ENVIRONMENT: usize = 4;
/// Other uploads all tenants together may have going (each is held in
/// memory, up to `--max-upload`); the operator's are apart.
pub const TENANT_UPLOADS: usize = 16;
/// How long a body may come slowly before it must keep up [`MIN_RATE`].
pub const RATE_GRACE: Duration = Duration::from_secs(10);
/// The slowest an upload body may come on average, after the grace, in
/// bytes a second.
pub const MIN_RATE: u64 = 64 << 10;
/// The longest a body may send nothing.
pub const MAX_PAUSE: Duration = Duration::from_secs(10);
/// The longest any upload body may take, however fast it comes.
pub const MAX_UPLOAD_TIME: Duration = Duration::from_secs(30 * 60);

/// What kind of upload a place is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A container image (streamed to disk, unpacked).
    Image,
    /// A component or a files archive (held in memory, checked).
    Code,
}

/// Uploads going, by environment and kind.
#[derive(Default)]
pub struct Places {
    going: Mutex<Going>,
}

#[derive(Default)]
struct Going {
    by_env: HashMap<(String, Kind), usize>,
    tenant_images: usize,
    tenant_code: usize,
}

/// A place taken; given back on drop.
pub struct Place {
    places: Arc<Places>,
    env: String,
    kind: Kind,
    tenant: bool,
}

impl Places {
    /// Takes a place for an upload of the caller's, or says (429) that
    /// its environment (or all tenants) has as many going as allowed.
    pub(super) fn take(self: &Arc<Self>, caller: &Caller, kind: Kind) -> ApiResult<Place> {
        let most = match kind {
            Kind::Image => IMAGE_UPLOADS_PER_ENVIRONMENT,
            Kind::Code => UPLOADS_PER_ENVIRONMENT,
        };
        let what = match kind {
            Kind::Image => "image uploads",
            Kind::Code => "uploads",
        };
        let mut going = self.going.lock();
        let tenant = !caller.admin;
        let key = (caller.env.clone(), kind);
        if going.by_env.get(&key).copied().unwrap_or(0) >= most {
            return Err(ApiError::too_many(format!(
                "environment {} has {most} {what} going already; wait for one to finish",
                caller.env
            )));
        }
        if tenant {
            let (all, most) = match kind {
                Kind::Image => (&mut going.tenant_images, TENANT_IMAGE_UPLOADS),
                Kind::Code => (&mut going.tenant_code, TENANT_UPLOADS),
            };
            if *all >= most {
                return Err(ApiError::too_many(format!(
                    "the platform has as many {what} going as it takes; try again shortly"
                )));
            }
            *all += 1;
        }
        *going.by_env.entry(key).or_insert(0) += 1;
        Ok(Place {
            places: self.clone(),
            env: caller.env.clone(),
            kind,
            tenant,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut going = self.places.going.lock();
        if self.tenant {
            match self.kind {
                Kind::Image => going.tenant_images -= 1,
                Kind::Code => going.tenant_code -= 1,
            }
        }
        let key = (std::mem::take(&mut self.env), self.kind);
        if let Some(n) = going.by_env.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                going.by_env.remove(&key);
            }
        }
    }
}

/// Why a body stopped coming as it should.
#[derive(Debug)]
pub enum Stalled {
    /// It sent nothing for [`MAX_PAUSE`].
    Paused,
    /// It came slower than [`MIN_RATE`] after [`RATE_GRACE`].
    Slow,
    /// It took longer than [`MAX_UPLOAD_TIME`] in all.
    TooLong,
}

impl Stalled {
    /// The answer (408) for an upload called `name`.
    pub fn error(&self, name: &str) -> ApiError {
        let why = match self {
            Stalled::Paused => format!("sent nothing for {} s", MAX_PAUSE.as_secs()),
            Stalled::Slow => format!(
                "came slower than {} KiB/s after its first {} s",
                MIN_RATE >> 10,
                RATE_GRACE.as_secs()
            ),
            Stalled::TooLong => format!(
                "took longer than {} minutes in all",
                MAX_UPLOAD_TIME.as_secs() / 60
            ),
        };
        ApiError::timeout(format!(
            "{name} was refused: its body {why}; uploads must keep up that pace"
        ))
    }
}

/// A body's next chunk, or why it stalled: `got` bytes so far since
/// `started`.
pub async fn next_chunk(
    stream: &mut axum::body::BodyDataStream,
    started: Instant,
    got: u64,
) -> Result<Option<Result<Bytes, axum::Error>>, Stalled> {
    let elapsed = started.elapsed();
    if elapsed > MAX_UPLOAD_TIME {
        return Err(Stalled::TooLong);
    }
    if let Some(late) = elapsed.checked_sub(RATE_GRACE) {
        let owed = (late.as_secs_f64() * MIN_RATE as f64) as u64;
        if got < owed {
            return Err(Stalled::Slow);
        }
    }
    match tokio::time::timeout(MAX_PAUSE, stream.next()).await {
        Ok(next) => Ok(next),
        Err(_) => Err(Stalled::Paused),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(env: &str, admin: bool) -> Caller {
        Caller {
            env: env.into(),
            admin,
        }
    }

    #[test]
    fn places_are_per_environment_and_the_operator_keeps_its_own() {
        let places = Arc::new(Places::default());
        let t2 = caller("t2", false);
        let held: Vec<_> = (0..IMAGE_UPLOADS_PER_ENVIRONMENT)
            .map(|_| places.take(&t2, Kind::Image).unwrap())
            .collect();
        assert!(places.take(&t2, Kind::Image).is_err());
        // Its other uploads, other tenants and the operator go on.
        assert!(places.take(&t2, Kind::Code).is_ok());
        assert!(places.take(&caller("t3", false), Kind::Image).is_ok());
        let operator = caller("default", true);
        let _op: Vec<_> = (0..IMAGE_UPLOADS_PER_ENVIRONMENT)
            .map(|_| places.take(&operator, Kind::Image).unwrap())
            .collect();
        drop(held);
        assert!(places.take(&t2, Kind::Image).is_ok());
        // All tenants together are bounded; the operator is not counted.
        let many: Vec<_> = (0..TENANT_IMAGE_UPLOADS)
            .filter_map(|i| {
                places
                    .take(&caller(&format!("e{i}"), false), Kind::Image)
                    .ok()
            })
            .collect();
        assert_eq!(many.len(), TENANT_IMAGE_UPLOADS);
        assert!(places.take(&caller("late", false), Kind::Image).is_err());
        drop(many);
        assert_eq!(places.going.lock().tenant_images, 0);
    }
}
