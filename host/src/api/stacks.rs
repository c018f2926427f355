//! A stack's code: deploys, versions and rollback (uploads are
//! `code.rs`).
//!
//! A stack's code is a bundle of components. Every change to the bundle
//! makes a new numbered version (only when a digest actually changed); the
//! last few versions are kept for rollback, which itself makes a new
//! version with an old bundle, as Heroku's releases do.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use chrono::Utc;

use super::wire::{
    DeployRequest, DeployResult, PulledView, RollbackRequest, StackView, VersionView,
};
use super::{ApiError, ApiResult, ApiState, Caller};
use crate::model::{
    validate_component_name, validate_name, Digest, Service, Source, Stack, Version, FILES_ENTRY,
};
use crate::services::spec::resolve_command;
use crate::services::RolloutFailure;
use crate::store::{encode, key, Compare, Txn};

/// `GET /v1/stacks`.
pub(super) async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<StackView>>> {
    let stacks = state.store.stacks(&caller.env).await?;
    let services = state.store.services(&caller.env).await?;
    let views = stacks
        .into_iter()
        .map(|s| StackView {
            services: services
                .iter()
                .filter(|svc| svc.value.stack == s.value.name)
                .map(|svc| svc.value.name.clone())
                .collect(),
            name: s.value.name,
            version: s.value.current,
            components: s.value.components,
            sources: s.value.sources,
        })
        .collect();
    Ok(Json(views))
}

/// `POST /v1/stacks/{stack}/deploy`: a new version of the stack's code.
pub(super) async fn deploy(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(stack): Path<String>,
    Json(request): Json<DeployRequest>,
) -> ApiResult<Json<DeployResult>> {
    validate_name("stack", &stack).map_err(ApiError::bad_request)?;
    if request.components.is_empty() && request.pull.is_empty() {
        return Err(ApiError::bad_request(
            "a deploy needs at least one component",
        ));
    }
    for (name, digest) in &request.components {
        validate_component_name(name).map_err(ApiError::bad_request)?;
        require_blob(&state, &caller.env, digest).await?;
        if (name == FILES_ENTRY) != state.engine.content().files_path(digest).is_dir() {
            return Err(ApiError::bad_request(format!(
                "{name} names {digest}, which is not {}",
                if name == FILES_ENTRY {
                    "a files archive (upload it with PUT /v1/code?kind=files)"
                } else {
                    "code but a files archive"
                }
            )));
        }
    }
    // Pulled before anything changes: a failed pull leaves the running
    // version as it was.
    let pulled = super::pulls::pull_all(&state, &caller, &request.pull).await?;
    let mut change = StackChange::load(&state, &caller.env, &stack).await?;
    let (mut components, mut sources) = if request.replace {
        (BTreeMap::new(), BTreeMap::new())
    } else {
        (
            change.stack.components.clone(),
            change.stack.sources.clone(),
        )
    };
    for name in request.components.keys() {
        sources.remove(name);
    }
    components.extend(request.components);
    let mut reason = "deploy".to_string();
    for kept in &pulled {
        components.insert(kept.name.clone(), kept.digest.clone());
        sources.insert(kept.name.clone(), kept.source.clone());
        reason = format!("{reason} {}", kept.source.reference);
    }
    let Json(mut result) = apply_and_commit(
        &state,
        &caller.env,
        change.set_components(components, sources, &reason, &|d| state.code.is_image(d)),
    )
    .await?;
    result.pulled = pulled
        .into_iter()
        .map(|k| PulledView {
            name: k.name,
            reference: k.source.reference,
            digest: k.source.digest,
            fetched: k.fetched,
            cached: k.cached,
        })
        .collect();
    Ok(Json(result))
}

/// `GET /v1/stacks/{stack}/versions`: kept versions, newest first.
pub(super) async fn versions(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(stack): Path<String>,
) -> ApiResult<Json<Vec<VersionView>>> {
    let found = state
        .store
        .stack(&caller.env, &stack)
        .await?
        .ok_or_else(|| unknown_stack(&stack))?;
    let mut versions: Vec<VersionView> = state
        .store
        .versions(&caller.env, &stack)
        .await?
        .into_iter()
        .map(|v| version_view(v.value, found.value.current))
        .collect();
    versions.reverse();
    Ok(Json(versions))
}

/// `POST /v1/stacks/{stack}/rollback`: makes a new version with an older
/// version's bundle.
pub(super) async fn rollback(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(stack): Path<String>,
    Json(request): Json<RollbackRequest>,
) -> ApiResult<Json<DeployResult>> {
    let mut change = StackChange::load(&state, &caller.env, &stack).await?;
    if change.stack_rev.is_none() {
        return Err(unknown_stack(&stack));
    }
    let current = change.stack.current;
    let target = match request.to {
        Some(n) => change
            .versions
            .iter()
            .find(|v| v.number == n)
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "stack {stack} has no version v{n} (kept: {})",
                    version_list(&change.versions)
                ))
            })?,
        None => change
            .versions
            .iter()
            .rev()
            .find(|v| v.number < current)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "stack {stack} has no version before v{current} to roll back to"
                ))
            })?,
    };
    if target.number == current {
        return Err(ApiError::bad_request(format!(
            "stack {stack} is already on v{current}"
        )));
    }
    let reason = format!("rollback to v{}", target.number);
    let components = target.components.clone();
    // The code of an old version is pinned by digest: a rollback pulls
    // nothing and resolves no tag.
    let sources = target.sources.clone();
    apply_and_commit(
        &state,
        &caller.env,
        change.set_components(components, sources, &reason, &|d| state.code.is_image(d)),
    )
    .await
}

/// Restores, in desired state, the version a failed rollout came from:
/// a new version with its bundle, as `mesh stack rollback` makes, unless
/// the stack has moved on from the version that failed (another host
/// rolled it back already, or a newer deploy came).
pub(super) async fn roll_back_failed(state: &ApiState, failure: &RolloutFailure) -> ApiResult<()> {
    let (env, stack) = (&failure.key.env, &failure.key.stack);
    let mut change = StackChange::load(state, env, stack).await?;
    if change.stack_rev.is_none() || change.stack.current != failure.to_version {
        return Ok(());
    }
    let Some(target) = change
        .versions
        .iter()
        .find(|v| v.number == failure.from_version)
        .cloned()
    else {
        tracing::warn!(stack = %stack, version = failure.from_version, "the version to restore is no longer kept");
        return Ok(());
    };
    let reason = format!(
        "rollback to v{}: {}'s rollout of v{} failed: {}",
        target.number, failure.key.name, failure.to_version, failure.reason
    );
    apply_and_commit(
        state,
        env,
        change.set_components(
            target.components.clone(),
            target.sources.clone(),
            &reason,
            &|d| state.code.is_image(d),
        ),
    )
    .await
    .map(|_| ())
}

/// Checks a stack change leaves every service of the stack with its
/// component, then commits it.
async fn apply_and_commit(
    state: &ApiState,
    env: &str,
    change: &mut StackChange,
) -> ApiResult<Json<DeployResult>> {
    let guard = super::quotas::guard(state, env).await?;
    let services = state.store.services(env).await?;
    let in_stack: Vec<&Service> = services
        .iter()
        .map(|s| &s.value)
        .filter(|s| s.stack == change.stack.name)
        .collect();
    check_services_keep_code(state, &change.stack, &in_stack, None)?;
    let all: Vec<&Service> = services.iter().map(|s| &s.value).collect();
    let code = change.kept_code(state.config.versions_kept);
    let quota = guard.check(state, &all, &all, Some(&code)).await?;
    let restarting = change.restarting(&in_stack);
    let created = change.new_version.is_some();
    let txn = change.txn(quota(Txn::new()), state.config.versions_kept);
    let committed = state.commit(txn).await?;
    let revision = if created { committed } else { 0 };
    change.announce(state, env, &restarting);
    let version = match &change.new_version {
        Some(v) => v.clone(),
        None => change
            .versions
            .iter()
            .find(|v| v.number == change.stack.current)
            .cloned()
            .ok_or_else(|| {
                anyhow::anyhow!("current version of {} is missing", change.stack.name)
            })?,
    };
    Ok(Json(DeployResult {
        stack: change.stack.name.clone(),
        version: version_view(version, change.stack.current),
        created,
        restarting,
        pulled: Vec::new(),
        revision,
    }))
}

/// A pending change to one stack's code, to commit with compare-and-swap.
pub(super) struct StackChange {
    /// The stack as it will be.
    pub stack: Stack,
    /// `mod_rev` of the stack as read; `None` when it does not exist yet.
    pub stack_rev: Option<u64>,
    /// Versions kept now, oldest first.
    pub versions: Vec<Version>,
    /// The version to add, if the bundle changed.
    pub new_version: Option<Version>,
    before: BTreeMap<String, Digest>,
}

impl StackChange {
    /// Reads a stack (or starts a new one) to change.
    pub async fn load(state: &ApiState, env: &str, name: &str) -> ApiResult<StackChange> {
        validate_name("stack", name).map_err(ApiError::bad_request)?;
        let found = state.store.stack(env, name).await?;
        let versions = state
            .store
            .versions(env, name)
            .await?
            .into_iter()
            .map(|v| v.value)
            .collect();
        let (stack, stack_rev) = match found {
            Some(s) => (s.value, Some(s.mod_rev)),
            None => (
                Stack {
                    env: env.to_string(),
                    name: name.to_string(),
                    current: 0,
                    components: BTreeMap::new(),
                    images: Default::default(),
                    sources: BTreeMap::new(),
                    next_version: 1,
                    created_at: Utc::now(),
                },
                None,
            ),
        };
        Ok(StackChange {
            before: stack.components.clone(),
            stack,
            stack_rev,
            versions,
            new_version: None,
        })
    }

    /// Sets the bundle; makes a new version only if it differs. Which of
    /// its components are images is what an earlier version recorded or,
    /// for new code, what `is_image` says of the code stored here.
    pub fn set_components(
        &mut self,
        components: BTreeMap<String, Digest>,
        mut sources: BTreeMap<String, Source>,
        reason: &str,
        is_image: &dyn Fn(&Digest) -> bool,
    ) -> &mut Self {
        // A source is kept only for a component the bundle still has.
        sources.retain(|name, _| components.contains_key(name));
        if components == self.stack.components && self.stack.current > 0 {
            return self;
        }
        let known: std::collections::BTreeSet<&Digest> = self
            .versions
            .iter()
            .flat_map(|v| &v.images)
            .chain(&self.stack.images)
            .collect();
        let images: std::collections::BTreeSet<Digest> = components
            .iter()
            .filter(|(name, d)| *name != FILES_ENTRY && (known.contains(d) || is_image(d)))
            .map(|(_, d)| d.clone())
            .collect();
        let number = self.stack.next_version;
        let changes = if self.stack.current == 0 {
            format!("first version: {}", components_list(&components))
        } else {
            component_changes(&self.stack.components, &components)
        };
        let version = Version {
            number,
            digest: Version::bundle_digest(&components),
            components: components.clone(),
            images: images.clone(),
            sources: sources.clone(),
            reason: format!("{reason}: {changes}"),
            created_at: Utc::now(),
        };
        self.stack.images = images;
        self.stack.sources = sources;
        self.stack.components = components;
        self.stack.current = number;
        self.stack.next_version = number + 1;
        self.new_version = Some(version);
        self
    }

    /// The stack's name and every digest it keeps after the change: its
    /// bundle and the versions that stay (at most `kept`, newest first).
    pub fn kept_code(&self, kept: usize) -> (String, Vec<Digest>) {
        let mut digests: Vec<Digest> = self.stack.components.values().cloned().collect();
        let versions = self.versions.iter().chain(self.new_version.as_ref());
        let total = self.versions.len() + usize::from(self.new_version.is_some());
        for version in versions.skip(total.saturating_sub(kept.max(1))) {
            digests.extend(version.components.values().cloned());
        }
        (self.stack.name.clone(), digests)
    }

    /// Services whose component digest this change alters.
    pub fn restarting(&self, services: &[&Service]) -> Vec<String> {
        services
            .iter()
            .filter(|s| self.before.get(s.component()) != self.stack.components.get(s.component()))
            .map(|s| s.name.clone())
            .collect()
    }

    /// Records a `stack.deployed` event once a change that made a new
    /// version is committed.
    pub fn announce(&self, state: &ApiState, env: &str, restarting: &[String]) {
        let Some(version) = &self.new_version else {
            return;
        };
        state.supervisor.events().record(crate::telemetry::Event {
            time: Utc::now(),
            env: env.to_string(),
            kind: "stack.deployed".into(),
            service: None,
            instance: None,
            message: format!(
                "stack {} v{} ({}); restarting: {}",
                self.stack.name,
                version.number,
                version.reason,
                super::list_or_none(restarting)
            ),
        });
    }

    /// Adds the change's compares and writes to `txn`, pruning versions
    /// beyond `kept`.
    pub fn txn(&self, mut txn: Txn, kept: usize) -> Txn {
        let stack_key = key::stack(&self.stack.env, &self.stack.name);
        txn = txn.when(match self.stack_rev {
            Some(rev) => Compare::ModRev(stack_key.clone(), rev),
            None => Compare::Absent(stack_key.clone()),
        });
        let Some(version) = &self.new_version else {
            if self.stack_rev.is_none() {
                txn = txn.put(stack_key, encode(&self.stack));
            }
            return txn;
        };
        txn = txn.put(stack_key, encode(&self.stack)).put(
            key::version(&self.stack.env, &self.stack.name, version.number),
            encode(version),
        );
        let total = self.versions.len() + 1;
        for old in self.versions.iter().take(total.saturating_sub(kept.max(1))) {
            txn = txn.delete(key::version(&self.stack.env, &self.stack.name, old.number));
        }
        txn
    }
}

/// Refuses a bundle that would leave a service without its component.
/// `except` is a service being replaced in the same request.
pub(super) fn check_services_keep_code(
    state: &ApiState,
    stack: &Stack,
    services: &[&Service],
    except: Option<&str>,
) -> ApiResult<()> {
    for service in services {
        if Some(service.name.as_str()) == except {
            continue;
        }
        if resolve(state, stack, service, &service.command).is_err() {
            return Err(ApiError::bad_request(format!(
                "service {} runs component '{}', which this change would remove from stack {}; delete or update the service first",
                service.name,
                service.component(),
                stack.name
            )));
        }
    }
    Ok(())
}

/// The code a service's command runs in the stack and the argv its
/// instances get (see [`resolve_command`]): a clear error when it names
/// nothing.
pub(super) fn resolve(
    state: &ApiState,
    stack: &Stack,
    service: &Service,
    command: &[String],
) -> ApiResult<(Digest, Vec<String>)> {
    if stack.components.is_empty() {
        return Err(ApiError::bad_request(format!(
            "stack {} has no code yet: give a .wasm file or an image as the command (`-- app.wasm ARGS`) or run `mesh stack deploy {} PATH`",
            stack.name, stack.name
        )));
    }
    let code = state.code.clone();
    resolve_command(
        &stack.name,
        command,
        service.image.as_deref(),
        Some(stack),
        &|d| code.is_image(d),
    )
    .map_err(|problem| ApiError::bad_request(problem.to_string()))
}

/// [`resolve`] against the stack's current code, with the stack.
pub(super) async fn resolve_in(
    state: &ApiState,
    env: &str,
    service: &Service,
    command: &[String],
) -> ApiResult<(Digest, Vec<String>, Stack)> {
    let record = state
        .store
        .stack(env, &service.stack)
        .await?
        .map(|s| s.value)
        .ok_or_else(|| ApiError::bad_request(format!("stack {} has no code yet", service.stack)))?;
    let (digest, argv) = resolve(state, &record, service, command)?;
    Ok((digest, argv, record))
}

/// Checks code named by digest was uploaded.
pub(super) async fn require_blob(state: &ApiState, env: &str, digest: &Digest) -> ApiResult<()> {
    // Only code the environment uploaded or keeps: a digest is not a key
    // to another tenant's code or files (and whether it exists is not
    // told either).
    let mine = state.uploads.has(env, digest)
        || super::quotas::kept_digests(state, env)
            .await?
            .contains(digest);
    // Held from now until a committed version names it.
    if mine && state.engine.content().hold(digest) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "no code with digest {digest} was uploaded; upload it with PUT /v1/code first"
        )))
    }
}

fn unknown_stack(stack: &str) -> ApiError {
    ApiError::not_found(format!(
        "no stack named {stack}; `mesh stack ls` lists the stacks"
    ))
}

fn version_list(versions: &[Version]) -> String {
    versions
        .iter()
        .map(|v| format!("v{}", v.number))
        .collect::<Vec<_>>()
        .join(", ")
}

fn version_view(v: Version, current: u64) -> VersionView {
    VersionView {
        current: v.number == current,
        number: v.number,
        digest: v.digest,
        components: v.components,
        sources: v.sources,
        reason: v.reason,
        created_at: v.created_at,
    }
}

/// `app, files`: the names of a version's parts.
fn components_list(components: &BTreeMap<String, Digest>) -> String {
    let names: Vec<&str> = components.keys().map(String::as_str).collect();
    if names.is_empty() {
        "no components".into()
    } else {
        names.join(", ")
    }
}

/// What a new version changes in its stack's parts, as a version's reason
/// says it: `app changed (sha256:1a2b3c4d → sha256:5e6f7a8b), api added`.
pub fn component_changes(old: &BTreeMap<String, Digest>, new: &BTreeMap<String, Digest>) -> String {
    let short = |d: &Digest| {
        let text = d.to_string();
        text.chars().take("sha256:".len() + 8).collect::<String>()
    };
    let mut parts = Vec::new();
    for (name, digest) in new {
        match old.get(name) {
            None => parts.push(format!("{name} added")),
            Some(before) if before != digest => parts.push(format!(
                "{name} changed ({} \u{2192} {})",
                short(before),
                short(digest)
            )),
            Some(_) => {}
        }
    }
    for name in old.keys().filter(|n| !new.contains_key(*n)) {
        parts.push(format!("{name} removed"));
    }
    if parts.is_empty() {
        "no change".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(byte: u8) -> Digest {
        Digest::of(&[byte])
    }

    #[test]
    fn a_version_says_what_it_changed() {
        let old = BTreeMap::from([
            ("app".to_string(), digest(1)),
            ("gone".to_string(), digest(2)),
        ]);
        let new = BTreeMap::from([
            ("app".to_string(), digest(3)),
            ("api".to_string(), digest(4)),
        ]);
        let text = component_changes(&old, &new);
        assert!(
            text.starts_with("api added, app changed (sha256:"),
            "{text}"
        );
        assert!(text.ends_with(", gone removed"), "{text}");
        assert_eq!(component_changes(&new, &new), "no change");
    }
}
