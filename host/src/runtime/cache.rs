//! The compiled-code cache: each digest's compiled form in
//! `DATA/cache/<engine hash>/<digest>.cwasm`, with its sha256 beside it
//! (`.cwasm.sha256`), written through a unique temporary file that is
//! synced and renamed, and read back only when the checksum matches, so a
//! daemon restart recompiles nothing and a torn or altered file is
//! recompiled, never run.
//!
//! A second, shared directory (`mesh up --shared-cache`) may sit behind
//! it: read on a miss, filled after each compile, never collected. It must
//! be the daemon user's and writable by no one else.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::Digest as _;
use wasmtime::component::Component;

use crate::content::write_synced;
use crate::model::Digest;

/// Compiled code of either kind.
pub(super) enum Compiled {
    Component(Component),
    Module(wasmtime::Module),
}

/// What kind of WebAssembly a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Component,
    Module,
}

impl Compiled {
    /// Compiles `bytes` of `kind`.
    pub(super) fn new(
        engine: &wasmtime::Engine,
        kind: Kind,
        bytes: &[u8],
    ) -> wasmtime::Result<Compiled> {
        Ok(match kind {
            Kind::Component => Compiled::Component(Component::new(engine, bytes)?),
            Kind::Module => Compiled::Module(wasmtime::Module::new(engine, bytes)?),
        })
    }

    fn serialize(&self) -> anyhow::Result<Vec<u8>> {
        match self {
            Compiled::Component(component) => component.serialize(),
            Compiled::Module(module) => module.serialize(),
        }
        .map_err(anyhow::Error::from)
        .context("serialising compiled code")
    }
}

/// This daemon's compiled code, and the shared directory behind it.
pub(super) struct CodeCache {
    dir: PathBuf,
    shared: Option<PathBuf>,
}

impl CodeCache {
    /// The cache for engines with compatibility hash `settings`, under
    /// `data_dir`, with `shared` behind it.
    pub(super) fn open(
        data_dir: &Path,
        settings: &str,
        shared: Option<&Path>,
    ) -> anyhow::Result<CodeCache> {
        let dir = data_dir.join("cache").join(settings);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the code cache {}", dir.display()))?;
        let shared = shared.map(|dir| dir.join(settings));
        if let Some(dir) = &shared {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the shared code cache {}", dir.display()))?;
            check_private(dir)?;
        }
        Ok(CodeCache { dir, shared })
    }

    /// The compiled form of `digest`, if it is there whole: from this
    /// daemon's cache, else from the shared one (then kept here too).
    pub(super) fn read(&self, engine: &wasmtime::Engine, digest: &Digest) -> Option<Compiled> {
        if let Some(compiled) = read_in(engine, &self.dir, digest) {
            return Some(compiled);
        }
        let compiled = read_in(engine, self.shared.as_ref()?, digest)?;
        // Kept in our own cache too, for when the shared one goes.
        let copied = compiled
            .serialize()
            .and_then(|bytes| write_in(&self.dir, digest, &bytes));
        if let Err(e) = copied {
            tracing::warn!(error = %format!("{e:#}"), "cannot copy shared compiled code");
        }
        Some(compiled)
    }

    /// Writes the compiled form here, and to the shared cache.
    pub(super) fn write(&self, digest: &Digest, compiled: &Compiled) -> anyhow::Result<()> {
        let bytes = compiled.serialize()?;
        write_in(&self.dir, digest, &bytes)?;
        if let Some(shared) = &self.shared {
            if let Err(e) = write_in(shared, digest, &bytes) {
                tracing::warn!(error = %format!("{e:#}"), "cannot fill the shared code cache");
            }
        }
        Ok(())
    }

    /// Where the compiled form of `digest` is kept here.
    pub(super) fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{}.cwasm", digest.hex()))
    }

    /// Removes the compiled form of `digest` from this daemon's cache;
    /// whether there was one.
    pub(super) fn remove(&self, digest: &Digest) -> anyhow::Result<bool> {
        let path = self.path(digest);
        if !path.exists() {
            return Ok(false);
        }
        let _ = std::fs::remove_file(sum_path(&self.dir, digest));
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        Ok(true)
    }

    /// Digests that have a compiled file here.
    pub(super) fn digests(&self) -> anyhow::Result<Vec<Digest>> {
        let entries = std::fs::read_dir(&self.dir)
            .with_context(|| format!("listing {}", self.dir.display()))?;
        Ok(entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let hex = name.strip_suffix(".cwasm")?.to_string();
                Digest::try_from(format!("sha256:{hex}")).ok()
            })
            .collect())
    }
}

fn sum_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join(format!("{}.cwasm.sha256", digest.hex()))
}

fn read_in(engine: &wasmtime::Engine, dir: &Path, digest: &Digest) -> Option<Compiled> {
    let path = dir.join(format!("{}.cwasm", digest.hex()));
    let want = std::fs::read_to_string(sum_path(dir, digest)).ok()?;
    // Hashed as it is read, not read whole: the file is mapped below.
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(&path).ok()?, &mut hasher).ok()?;
    if hex::encode(hasher.finalize()) != want.trim() {
        tracing::warn!(path = %path.display(), "compiled code does not match its checksum: compiling again");
        return None;
    }
    let kind = wasmtime::Engine::detect_precompiled_file(&path).ok()?;
    // The checked file is mapped, not copied: large code then costs only
    // the pages it runs (a restarted daemon serves sooner).
    // SAFETY: the file was written by `write_in` (of this daemon, or of
    // another sharing the cache, which must be private to the daemon's
    // user) from code compiled by an engine with the same compatibility
    // hash (it is part of the directory name), and it matches the checksum
    // written with it, so it is what wasmtime produced. Files in the cache
    // are only ever replaced whole (renamed over), never written in place.
    let read = match kind {
        Some(wasmtime::Precompiled::Module) => unsafe {
            wasmtime::Module::deserialize_file(engine, &path).map(Compiled::Module)
        },
        _ => unsafe { Component::deserialize_file(engine, &path).map(Compiled::Component) },
    };
    match read {
        Ok(compiled) => Some(compiled),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot load compiled code: compiling again");
            None
        }
    }
}

/// Writes compiled code into `dir`: checksum first, then the code through
/// a unique temporary file that is synced and renamed.
fn write_in(dir: &Path, digest: &Digest, bytes: &[u8]) -> anyhow::Result<()> {
    let sum = hex::encode(sha2::Sha256::digest(bytes));
    write_synced(dir, &sum_path(dir, digest), sum.as_bytes())?;
    write_synced(dir, &dir.join(format!("{}.cwasm", digest.hex())), bytes)?;
    Ok(())
}

/// Refuses a shared cache others could write to: compiled code in it
/// runs in the daemon.
fn check_private(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    for dir in dir.ancestors().take(2) {
        let meta = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
        if meta.uid() != me || meta.mode() & 0o022 != 0 {
            anyhow::bail!(
                "the shared code cache {} must be owned by this daemon's user and writable by no one else (compiled code in it runs in the daemon)",
                dir.display()
            );
        }
    }
    Ok(())
}
