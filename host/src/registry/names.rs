//! The words of pulling: a login and its credentials, a reference and
//! the source a stack version keeps.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::Digest;
pub use crate::model::Source;
use crate::sealed::Sealed;

/// An environment's login for one registry, as the store keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Login {
    /// The environment.
    pub env: String,
    /// The registry, `HOST[:PORT]`.
    pub host: String,
    /// The user name.
    pub username: String,
    /// The password, sealed for [`login_purpose`].
    pub password: Sealed,
    /// When it was kept.
    pub created_at: DateTime<Utc>,
}

/// What a pull authenticates with.
#[derive(Clone)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// What a login's password is sealed for: its environment and registry.
pub fn login_purpose(env: &str, host: &str) -> String {
    format!("registry-login/{env}/{host}")
}

/// The credentials an environment's pull from `host` uses: its own login
/// for that registry, unsealed, or none (an anonymous pull).
pub async fn credentials_for(
    store: &crate::store::Store,
    sealer: &crate::sealed::Sealer,
    env: &str,
    host: &str,
) -> anyhow::Result<Option<Credentials>> {
    let key = crate::store::key::registry_login(env, host);
    let Some(found) = store.get::<Login>(key).await? else {
        return Ok(None);
    };
    let login = found.value;
    let password = sealer.unseal(&login_purpose(env, host), &login.password)?;
    Ok(Some(Credentials {
        username: login.username,
        password: String::from_utf8(password)
            .map_err(|_| anyhow::anyhow!("the login for {host} does not open as text"))?,
    }))
}

/// A registry as a user names it: `HOST[:PORT]`, lowercase.
pub fn check_host(text: &str) -> Result<String, String> {
    let host = text.trim().to_ascii_lowercase();
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host.as_str(), None),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    if name_ok && port_ok {
        Ok(host)
    } else {
        Err(format!(
            "invalid registry `{text}`: use a host name, with a port if not 443 (e.g. ghcr.io, 127.0.0.1:5000)"
        ))
    }
}

/// Whether `text` reads as a registry reference, `HOST[:PORT]/REPO[:TAG]`
/// or `HOST/REPO@sha256:...`: a first part with a dot or a port (or
/// `localhost`) before a `/`. The CLI asks this only of words that name
/// no file or directory, so a path keeps its meaning.
pub fn is_reference(text: &str) -> bool {
    let Some((host, rest)) = text.split_once('/') else {
        return false;
    };
    !rest.is_empty()
        && (host.contains('.') || host.contains(':') || host == "localhost")
        && check_host(host).is_ok()
        && !text.contains("//")
}

/// A code digest in our own form.
pub(super) fn digest_of(text: &str) -> Result<Digest, String> {
    Digest::try_from(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_told_from_paths() {
        for r in [
            "127.0.0.1:5000/team/app:1.0",
            "ghcr.io/acme/web",
            "localhost/app@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "registry.example.com:8443/a/b/c:latest",
        ] {
            assert!(is_reference(r), "{r}");
        }
        for p in [
            "app.wasm",
            "./app.wasm",
            "dist/app.wasm",
            "/tmp/x.tar",
            "build",
            "busybox:latest",
            "team/app:1.0",
        ] {
            assert!(!is_reference(p), "{p}");
        }
    }

    #[test]
    fn a_source_pins_its_reference_to_its_digest() {
        let d = "sha256:aaaa".to_string();
        let pin = |r: &str| {
            Source {
                reference: r.into(),
                digest: d.clone(),
            }
            .pinned()
        };
        assert_eq!(
            pin("127.0.0.1:5000/team/app:1.0"),
            "127.0.0.1:5000/team/app@sha256:aaaa"
        );
        assert_eq!(
            pin("127.0.0.1:5000/team/app"),
            "127.0.0.1:5000/team/app@sha256:aaaa"
        );
        assert_eq!(pin("ghcr.io/a/b@sha256:bbbb"), "ghcr.io/a/b@sha256:aaaa");
    }

    #[test]
    fn registry_hosts_are_checked() {
        assert_eq!(check_host("GHCR.io").unwrap(), "ghcr.io");
        assert_eq!(check_host("127.0.0.1:5000").unwrap(), "127.0.0.1:5000");
        for bad in ["", "a/b", "host:0", "host:99999", "a..b", "x y"] {
            assert!(check_host(bad).is_err(), "{bad}");
        }
    }
}
