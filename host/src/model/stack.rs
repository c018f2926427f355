//! Stacks and their numbered code versions (bundles of components).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::digest::Digest;

/// The bundle entry that holds a stack's files (the `files/` folder
/// deployed beside its code); never a component's name.
pub const FILES_ENTRY: &str = "files/";

/// Checks a component name: [`FILES_ENTRY`], or letters, digits, `-` and
/// `_`, at most 63 of them (a `.wasm` file's stem).
pub fn validate_component_name(name: &str) -> Result<(), String> {
    let ok = name == FILES_ENTRY
        || !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid component name `{name}`: use letters, digits, `-` and `_` (it is the .wasm file's stem)"
        ))
    }
}

/// A named group of services that run the same version of the code.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stack {
    /// Environment the stack belongs to.
    pub env: String,
    /// DNS-label name, e.g. `finance`.
    pub name: String,
    /// Number of the version every service of the stack runs; 0 before the
    /// first deploy.
    pub current: u64,
    /// Components of the current version (a copy of that version's map, so
    /// the supervisor reads one record per stack).
    pub components: BTreeMap<String, Digest>,
    /// Which of those components are container images (the rest are
    /// wasm): recorded at deploy, so a host that does not hold the code
    /// yet (or the placer) knows what it is.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub images: BTreeSet<Digest>,
    /// Where components pulled from a registry came from (the current
    /// version's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, Source>,
    /// Number the next version will get.
    pub next_version: u64,
    /// When the stack was first named.
    pub created_at: DateTime<Utc>,
}

/// One immutable version of a stack's code: a bundle of components.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Version {
    /// 1, 2, 3, ... per stack.
    pub number: u64,
    /// Digest of the bundle: of its sorted `name=digest` lines.
    pub digest: Digest,
    /// Component name (file stem) to content digest.
    pub components: BTreeMap<String, Digest>,
    /// Which of them are container images.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub images: BTreeSet<Digest>,
    /// Where components pulled from a registry came from, pinned to the
    /// manifest digests their references resolved to at deploy.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, Source>,
    /// Why this version exists ("deploy", "add component app", "rollback to v2").
    pub reason: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// Where a component pulled from an OCI registry came from: the
/// reference as given and the manifest digest it resolved to, once.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Source {
    /// As the user gave it, e.g. `ghcr.io/acme/web:1.4`.
    pub reference: String,
    /// The manifest it resolved to, `sha256:...`.
    pub digest: String,
}

impl Source {
    /// The reference pinned to its digest, `HOST/REPO@sha256:...`: what a
    /// host that lacks the code pulls, never the tag.
    pub fn pinned(&self) -> String {
        let name = match self.reference.split_once('@') {
            Some((name, _)) => name,
            None => self.reference.as_str(),
        };
        // A tag after the last `/` goes; a port before it stays.
        let name = match name.rfind(':') {
            Some(i) if !name[i..].contains('/') => &name[..i],
            _ => name,
        };
        format!("{name}@{}", self.digest)
    }
}

impl Version {
    /// The digest that names a bundle: equal bundles get equal digests.
    pub fn bundle_digest(components: &BTreeMap<String, Digest>) -> Digest {
        let mut text = String::new();
        for (name, digest) in components {
            text.push_str(name);
            text.push('=');
            text.push_str(digest.as_str());
            text.push('\n');
        }
        Digest::of(text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_digest_depends_on_names_and_contents() {
        let mut a = BTreeMap::new();
        a.insert("app".to_string(), Digest::of(b"1"));
        let mut b = a.clone();
        assert_eq!(Version::bundle_digest(&a), Version::bundle_digest(&b));
        b.insert("pay".to_string(), Digest::of(b"2"));
        assert_ne!(Version::bundle_digest(&a), Version::bundle_digest(&b));
    }
}
