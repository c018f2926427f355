//! Follow streams (`mesh events -f`, `mesh svc logs -f`) stay open for as
//! long as their client reads, so each holds one of the API's connections
//! the whole time. They are bounded per environment (one token acts on
//! one environment), all tenants' together at a share of the API's
//! connections, and the operator's apart, so no tenant can take the API
//! from the others or from the operator by opening streams.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{ApiError, ApiResult, Caller};
use crate::config::DEFAULT_API_MAX_CONNECTIONS;

/// Follow streams one tenant environment may hold open at once.
pub const MAX_STREAMS_PER_ENVIRONMENT: usize = 16;
/// Follow streams all tenants together may hold open: a quarter of the
/// API's connections, so the rest stay for commands.
pub const MAX_TENANT_STREAMS: usize = DEFAULT_API_MAX_CONNECTIONS / 4;
/// Follow streams the operator may hold open, apart from the tenants'.
pub const MAX_OPERATOR_STREAMS: usize = 64;

/// Open follow streams, by environment.
#[derive(Default)]
pub struct Streams {
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    by_env: HashMap<String, usize>,
    tenants: usize,
    operator: usize,
}

/// One open stream, counted until its body is dropped.
pub struct StreamSlot {
    streams: Arc<Streams>,
    /// The tenant environment it counts against; `None` for the operator.
    env: Option<String>,
}

impl Streams {
    /// Counts a new follow stream of the caller's, or says (429) which
    /// bound it would pass.
    pub(super) fn open(self: &Arc<Self>, caller: &Caller) -> ApiResult<StreamSlot> {
        let mut open = self.open.lock();
        if caller.admin {
            if open.operator >= MAX_OPERATOR_STREAMS {
                return Err(ApiError::too_many(format!(
                    "the operator already has {MAX_OPERATOR_STREAMS} follow streams open; close one (a `-f` command) first"
                )));
            }
            open.operator += 1;
            return Ok(StreamSlot {
                streams: self.clone(),
                env: None,
            });
        }
        let mine = open.by_env.get(&caller.env).copied().unwrap_or(0);
        if mine >= MAX_STREAMS_PER_ENVIRONMENT {
            return Err(ApiError::too_many(format!(
                "environment {} already has {MAX_STREAMS_PER_ENVIRONMENT} follow streams open (`-f`); close one first",
                caller.env
            )));
        }
        if open.tenants >= MAX_TENANT_STREAMS {
            return Err(ApiError::too_many(
                "the platform has as many follow streams open as it allows; try again later",
            ));
        }
        open.tenants += 1;
        *open.by_env.entry(caller.env.clone()).or_insert(0) += 1;
        Ok(StreamSlot {
            streams: self.clone(),
            env: Some(caller.env.clone()),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock();
        let Some(env) = &self.env else {
            open.operator -= 1;
            return;
        };
        open.tenants -= 1;
        if let Some(mine) = open.by_env.get_mut(env) {
            *mine -= 1;
            if *mine == 0 {
                open.by_env.remove(env);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(env: &str) -> Caller {
        Caller {
            env: env.into(),
            admin: false,
        }
    }

    #[test]
    fn a_tenant_is_bounded_and_others_and_the_operator_keep_theirs() {
        let streams = Arc::new(Streams::default());
        let held: Vec<_> = (0..MAX_STREAMS_PER_ENVIRONMENT)
            .map(|_| streams.open(&tenant("t1")).unwrap())
            .collect();
        let refused = streams.open(&tenant("t1")).err().unwrap();
        assert!(
            refused.message.contains("16 follow streams"),
            "{}",
            refused.message
        );
        assert!(streams.open(&tenant("t2")).is_ok());
        let operator = Caller {
            env: "default".into(),
            admin: true,
        };
        assert!(streams.open(&operator).is_ok());
        drop(held);
        assert!(streams.open(&tenant("t1")).is_ok());
        assert!(streams.open.lock().by_env.is_empty());
        assert_eq!(streams.open.lock().tenants, 0);
    }
}
