//! Waiting for the rollouts a change started: `stack deploy`, `svc
//! update` and `svc restart` return once every service they replace rolls
//! to the new instances, or fail with one line when a rollout stopped and
//! the previous version was restored (`--no-wait` returns at once).

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use mesh_host::api::wire::{ServiceView, VersionView};
use mesh_host::model::{RolloutState, DEFAULT_ROLLOUT_TIMEOUT};

use super::{encode, service_path};
use crate::client::Client;

/// `--no-wait`, shared by the commands that roll instances.
#[derive(Debug, Args, Default)]
pub struct WaitArg {
    /// Return at once instead of waiting for the new instances to be up
    /// (and healthy); follow them with `mesh svc ls` and `mesh events`.
    #[arg(long)]
    pub no_wait: bool,
}

/// Between two looks at a rollout.
const POLL: Duration = Duration::from_millis(200);
/// Beyond the services' own rollout timeouts, for starting and handing
/// over.
const SLACK: Duration = Duration::from_secs(30);

/// Waits for the rollouts of `names` (in `stack`) that revision
/// `revision` or later started on the host that answers; says which
/// failed, what was kept, and fails then.
pub fn wait(client: &Client, stack: &str, names: &[String], revision: u64) -> anyhow::Result<()> {
    let mut pending: Vec<String> = names.to_vec();
    // Each service's own: its instances times its rollout timeout.
    let mut deadlines: std::collections::HashMap<String, Instant> = Default::default();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for name in &pending {
            let view: ServiceView = client.get(&service_path(stack, name))?;
            let per_instance = view
                .settings
                .rollout_timeout_ms
                .map_or(DEFAULT_ROLLOUT_TIMEOUT, Duration::from_millis);
            let budget = per_instance * view.settings.instances_desired.max(1) + SLACK;
            let limit = *deadlines
                .entry(name.clone())
                .or_insert_with(|| Instant::now() + budget);
            let Some(rollout) = view.rollout.filter(|r| r.revision >= revision) else {
                // Nothing rolls on this host for this change.
                continue;
            };
            match rollout.state {
                RolloutState::Done => {}
                RolloutState::Rolling if Instant::now() < limit => still.push(name.clone()),
                RolloutState::Rolling => bail!(
                    "{name}: the rollout to v{} is still going after {}s; follow it with `mesh svc ls -n {name} --stack {stack}`",
                    rollout.to_version,
                    budget.as_secs()
                ),
                RolloutState::Failed => {
                    let why = rollout.reason.unwrap_or_default();
                    if rollout.from_version == rollout.to_version {
                        bail!("{name}: the rollout stopped: {why}; the previous instances are kept");
                    }
                    bail!(
                        "{name}: the rollout to v{} stopped: {why}; v{} is kept{}",
                        rollout.to_version,
                        rollout.from_version,
                        rolled_back_as(client, stack, rollout.to_version)
                    );
                }
            }
        }
        pending = still;
        if !pending.is_empty() {
            std::thread::sleep(POLL);
        }
    }
    Ok(())
}

/// ` (rolled back as vN)`, once the stack's version that undoes
/// `failed` is there (it is written a moment after the failure).
fn rolled_back_as(client: &Client, stack: &str, failed: u64) -> String {
    let wanted = format!("rollout of v{failed} failed");
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let versions: Vec<VersionView> =
            match client.get(&format!("/v1/stacks/{}/versions", encode(stack))) {
                Ok(versions) => versions,
                Err(_) => return String::new(),
            };
        if let Some(v) = versions
            .iter()
            .find(|v| v.number > failed && v.reason.contains(&wanted))
        {
            return format!(" (rolled back as v{})", v.number);
        }
        std::thread::sleep(POLL);
    }
    String::new()
}
