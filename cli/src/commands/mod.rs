//! What each command does, one file per noun, each with its arguments
//! beside the code that runs them: `svc` (and `ls`, `logs` for what it
//! shows), `stack`, `env`, `node`, `run`, `up`; `code` uploads local code
//! for the others.

pub mod code;
pub mod domain;
pub mod env;
pub mod logs;
pub mod ls;
pub mod node;
pub mod registry;
pub mod rollout;
pub mod run;
pub mod stack;
pub mod svc;
pub mod up;

use clap::Args;
use serde::Serialize;

pub struct Out {
    /// Print JSON.
    pub json: bool,
}

impl Out {
    fn print<T: Serialize>(&self, value: &T, human: impl FnOnce()) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            human();
        }
        Ok(())
    }
}

/// The stack a command acts on.
#[derive(Debug, Args)]
pub struct StackArg {
    /// Stack of the service.
    #[arg(long, env = "MESH_STACK", default_value = mesh_host::model::DEFAULT_STACK)]
    pub stack: String,
}

/// A service named either as `NAME` or with `-n NAME`.
#[derive(Debug, Args)]
pub struct NameArg {
    /// Service name.
    #[arg(value_name = "NAME")]
    pub positional: Option<String>,

    /// Service name (same as NAME).
    #[arg(short = 'n', long = "name", visible_alias = "n", value_name = "NAME")]
    pub flag: Option<String>,
}

impl NameArg {
    /// The name, however it was given.
    pub fn get(&self) -> anyhow::Result<&str> {
        match (&self.positional, &self.flag) {
            (Some(a), Some(b)) if a != b => {
                anyhow::bail!("two different service names given: {a} and {b}")
            }
            (Some(name), _) | (None, Some(name)) => Ok(name),
            (None, None) => anyhow::bail!("which service? give its name: NAME or -n NAME"),
        }
    }
}

/// A command that names one service.
#[derive(Debug, Args)]
pub struct NamedArgs {
    #[command(flatten)]
    pub name: NameArg,

    #[command(flatten)]
    pub stack: StackArg,
}

fn service_path(stack: &str, name: &str) -> String {
    format!("/v1/services/{}/{}", encode(stack), encode(name))
}

/// Percent-encodes a path segment or query value.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode("app.wasm"), "app.wasm");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
