//! What a service runs: its command, env, memory limit and the code its
//! command names, resolved against its stack; and loading that code with
//! errors that say what is wrong.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use thiserror::Error;

use super::code::{Code, CodeSource};
use crate::model::{Digest, Service, Stack, FILES_ENTRY};

/// Why a service's instances cannot start: each names the problem and
/// what would fix it.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum CodeProblem {
    /// The stack has no code yet.
    #[error("stack {stack} has no code yet: deploy some with `mesh stack deploy {stack} PATH`")]
    NoCode {
        /// The stack.
        stack: String,
    },
    /// The command names no component of the stack.
    #[error("no component named '{name}' in stack {stack} v{version} (have: {have}){hint}")]
    NoComponent {
        /// The name the command used.
        name: String,
        /// The stack.
        stack: String,
        /// Its current version.
        version: u64,
        /// The components it has, comma-separated.
        have: String,
        /// What was probably meant, or how to run a program of an image,
        /// after a `; `; empty when there is nothing to say.
        hint: String,
    },
    /// The code could not be read or compiled.
    #[error("loading code failed: {0}")]
    Load(String),
    /// A worker or cron job whose code only serves HTTP.
    #[error("component '{0}' only serves HTTP (no `wasi:cli/run`): it takes requests by its intra-DNS name, or publish it with `mesh svc publish`")]
    OnlyHttp(String),
    /// Code with no command entry point where one is needed.
    #[error("component '{name}' does not export `wasi:cli/run`, so it cannot run as a worker (it exports {exports})")]
    NoCommand {
        /// The component.
        name: String,
        /// What it exports.
        exports: String,
    },
    /// `--image NAME` names no image of the stack.
    #[error("no image named '{name}' in stack {stack} (have: {have})")]
    NoImage {
        /// The name given.
        name: String,
        /// The stack.
        stack: String,
        /// Its images, comma-separated.
        have: String,
    },
    /// Code with no HTTP handler where one is needed.
    #[error("component '{name}' does not export `wasi:http/incoming-handler`, so it cannot serve requests (it exports {exports})")]
    NoHandler {
        /// The component.
        name: String,
        /// What it exports.
        exports: String,
    },
}

/// What a slot runs: everything about a service that, when it changes,
/// means its instances must restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSpec {
    /// argv: for a component, the whole command; for an image, what
    /// replaces its `Cmd` (the command without the image's name).
    pub command: Vec<String>,
    /// Environment variables, `MESH_STACK` and `MESH_SERVICE` included.
    pub env: Vec<(String, String)>,
    /// Memory limit of each instance.
    pub memory_bytes: u64,
    /// The component's digest, or why there is none.
    pub component: Result<Digest, CodeProblem>,
    /// The stack's files, when it has any.
    pub files: Option<Digest>,
    /// Bytes of scratch space per instance.
    pub scratch_bytes: Option<u64>,
    /// How long an instance has to stop before it is killed.
    pub stop_grace: std::time::Duration,
    /// The last restart asked for: a new one rolls the instances though
    /// nothing else changed.
    pub restarted_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A [`RunSpec`] as handed to slots, pools and cron jobs, with an id so a
/// rollout can tell when a slot has taken it, and the stack version it
/// belongs to.
#[derive(Debug)]
pub struct Spec {
    /// Unique per spec made.
    pub id: u64,
    /// What to run.
    pub run: RunSpec,
    /// The stack version.
    pub version: u64,
}

static NEXT_SPEC_ID: AtomicU64 = AtomicU64::new(1);

impl Spec {
    /// A new spec with a fresh id.
    pub fn new(run: RunSpec, version: u64) -> Arc<Spec> {
        Arc::new(Spec {
            id: NEXT_SPEC_ID.fetch_add(1, Ordering::Relaxed),
            run,
            version,
        })
    }

    /// The same spec under a new version number.
    pub fn relabelled(&self, version: u64) -> Arc<Spec> {
        Arc::new(Spec {
            id: self.id,
            run: self.run.clone(),
            version,
        })
    }
}

impl RunSpec {
    /// What a service should run, given its stack, and the stack version;
    /// `is_image` tells images from components.
    pub fn of(
        service: &Service,
        stack: Option<&Stack>,
        is_image: &dyn Fn(&Digest) -> bool,
    ) -> (RunSpec, u64) {
        let mut env: Vec<(String, String)> = service
            .env_vars
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.push(("MESH_STACK".into(), service.stack.clone()));
        env.push(("MESH_SERVICE".into(), service.name.clone()));
        let resolved = resolve_command(
            &service.stack,
            &service.command,
            service.image.as_deref(),
            stack,
            is_image,
        );
        let command = match &resolved {
            Ok((_, argv)) => argv.clone(),
            Err(_) => service.command.clone(),
        };
        let run = RunSpec {
            command,
            env,
            memory_bytes: service.memory_bytes,
            component: resolved.map(|(digest, _)| digest),
            files: stack.and_then(|s| s.components.get(FILES_ENTRY).cloned()),
            scratch_bytes: service.scratch_bytes,
            stop_grace: service.stop_grace(),
            restarted_at: service.restarted_at,
        };
        (run, stack.map_or(0, |s| s.current))
    }

    /// The guest's environment variables for one instance.
    pub fn env_for(&self, instance: &str) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        env.push(("MESH_INSTANCE".into(), instance.to_string()));
        env
    }

    /// The component the command names (its first word).
    pub fn component_name(&self) -> &str {
        self.command.first().map(String::as_str).unwrap_or("")
    }

    /// Loads the code, whatever it exports.
    pub async fn load_any(&self, source: &dyn CodeSource) -> Result<Arc<dyn Code>, CodeProblem> {
        let digest = self.component.clone()?;
        source.load(&digest).await.map_err(CodeProblem::Load)
    }

    /// Loads the code to run as a command.
    pub async fn load_command(
        &self,
        source: &dyn CodeSource,
    ) -> Result<Arc<dyn Code>, CodeProblem> {
        let code = self.load_any(source).await?;
        let name = self.component_name().to_string();
        if !code.runs_command() && code.serves_http() {
            return Err(CodeProblem::OnlyHttp(name));
        }
        if !code.runs_command() {
            let exports = code.exports().join(", ");
            return Err(CodeProblem::NoCommand { name, exports });
        }
        Ok(code)
    }

    /// Loads the code to serve requests.
    pub async fn load_handler(
        &self,
        source: &dyn CodeSource,
    ) -> Result<Arc<dyn Code>, CodeProblem> {
        let code = self.load_any(source).await?;
        if !code.serves_http() {
            let name = self.component_name().to_string();
            let exports = code.exports().join(", ");
            return Err(CodeProblem::NoHandler { name, exports });
        }
        Ok(code)
    }
}

/// The code a command runs and the argv its instance gets: a component
/// named by the first word gets the whole command; an image named by the
/// first word gets the rest (it replaces the image's `Cmd`, as `docker run
/// IMAGE ARGV`); with `image` given, or when the first word names nothing
/// and the stack has exactly one image, the image gets the whole command
/// (`-- node send-emails.js`).
pub fn resolve_command(
    stack_name: &str,
    command: &[String],
    image: Option<&str>,
    stack: Option<&Stack>,
    is_image: &dyn Fn(&Digest) -> bool,
) -> Result<(Digest, Vec<String>), CodeProblem> {
    let stack = match stack {
        Some(stack) if stack.current > 0 => stack,
        _ => {
            return Err(CodeProblem::NoCode {
                stack: stack_name.to_string(),
            })
        }
    };
    // What the deploy recorded, else (a stack deployed before images were
    // recorded) what is stored here.
    let is_image = |digest: &Digest| stack.images.contains(digest) || is_image(digest);
    // Which components are images is asked only when the command does not
    // name its code itself (each answer looks at the disk).
    let images = || -> Vec<(&String, &Digest)> {
        stack
            .components
            .iter()
            .filter(|(name, digest)| *name != FILES_ENTRY && is_image(digest))
            .collect()
    };
    if let Some(wanted) = image {
        let images = images();
        return images
            .iter()
            .find(|(name, _)| name.as_str() == wanted)
            .map(|(_, digest)| ((*digest).clone(), command.to_vec()))
            .ok_or_else(|| CodeProblem::NoImage {
                name: wanted.to_string(),
                stack: stack.name.clone(),
                have: images
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
    }
    let first = command.first().map(String::as_str).unwrap_or("");
    if let Some(digest) = stack.components.get(first).filter(|_| first != FILES_ENTRY) {
        let argv = if is_image(digest) {
            command[1..].to_vec()
        } else {
            command.to_vec()
        };
        return Ok((digest.clone(), argv));
    }
    if let [(_, digest)] = images().as_slice() {
        return Ok(((*digest).clone(), command.to_vec()));
    }
    Err(no_component(
        first,
        &stack.name,
        stack.current,
        &stack.components,
    ))
}

/// `no component named 'ap' in stack app v4 (have: app, payments); did
/// you mean 'app'?`.
pub fn no_component(
    name: &str,
    stack: &str,
    version: u64,
    components: &BTreeMap<String, Digest>,
) -> CodeProblem {
    let have: Vec<&str> = components
        .keys()
        .map(String::as_str)
        .filter(|name| *name != FILES_ENTRY)
        .collect();
    let hint = if let Some(meant) = crate::model::did_you_mean(name, &have) {
        format!("; did you mean '{meant}'?")
    } else if name.starts_with('/') {
        format!(
            "; {name} looks like a program of a container image: deploy the image to a stack (`mesh stack deploy boxes ./image.tar`) and run it there (`--stack boxes`)"
        )
    } else {
        String::new()
    };
    CodeProblem::NoComponent {
        name: name.to_string(),
        stack: stack.to_string(),
        version,
        have: have.join(", "),
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_components_are_named_with_what_exists() {
        let mut components = BTreeMap::new();
        components.insert("app".to_string(), Digest::of(b"a"));
        components.insert("payments".to_string(), Digest::of(b"p"));
        assert_eq!(
            no_component("ap", "app", 4, &components).to_string(),
            "no component named 'ap' in stack app v4 (have: app, payments); did you mean 'app'?"
        );
        assert_eq!(
            no_component("web", "app", 4, &components).to_string(),
            "no component named 'web' in stack app v4 (have: app, payments)"
        );
        assert!(no_component("/bin/bash", "app", 4, &components)
            .to_string()
            .contains("mesh stack deploy"));
    }
}
