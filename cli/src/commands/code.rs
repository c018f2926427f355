//! Local code on its way to the daemon: `.wasm` files, container images
//! and files folders, uploaded for `svc create`, `stack deploy` and `run`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use mesh_host::api::wire::{ComponentRef, PullRef};
use mesh_host::content::CodeInfo;
use mesh_host::model::Digest;

use super::encode;
use crate::client::Client;

/// Uploads any local `.wasm` the command starts with, and rewrites the
/// first word to the component name.
pub fn resolve_command(
    client: &Client,
    mut argv: Vec<String>,
) -> anyhow::Result<(Vec<String>, Option<ComponentRef>, Option<PullRef>)> {
    let Some(first) = argv.first() else {
        bail!("a service needs a command after `--`, e.g. `-- app.wasm queue`");
    };
    let path = PathBuf::from(first);
    // A word that names no file and reads as a reference: the daemon pulls.
    if !path.exists() && mesh_host::registry::is_reference(first) {
        let pull = PullRef {
            name: component_of(first)?,
            reference: first.clone(),
        };
        argv[0] = pull.name.clone();
        return Ok((argv, None, Some(pull)));
    }
    let component = if first.ends_with(".wasm") {
        upload(client, &path)?
    } else if (first.ends_with(".tar") || first.contains('/')) && is_image(&path) {
        upload_image(client, &path, None)?
    } else {
        return Ok((argv, None, None));
    };
    argv[0] = component.name.clone();
    Ok((argv, Some(component), None))
}

/// The component a reference deploys as: its repository's last part,
/// e.g. `app` for `ghcr.io/acme/app:1.4`.
pub fn component_of(reference: &str) -> anyhow::Result<String> {
    let path = reference.split('@').next().unwrap_or(reference);
    let last = path.rsplit('/').next().unwrap_or(path);
    let repo = last.split(':').next().unwrap_or(last);
    let name: String = repo
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() {
        bail!("cannot name a component after {reference}: give --name");
    }
    Ok(name)
}

/// Uploads one `.wasm` file; its stem names the component.
pub fn upload(client: &Client, path: &Path) -> anyhow::Result<ComponentRef> {
    let bytes = std::fs::read(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| anyhow!("cannot name a component after {}", path.display()))?
        .to_string();
    let file_name = path.file_name().and_then(|s| s.to_str()).unwrap_or(&name);
    let info: CodeInfo =
        client.put_bytes(&format!("/v1/code?name={}", encode(file_name)), &bytes)?;
    Ok(ComponentRef {
        name,
        digest: info.digest,
    })
}

/// Whether `path` is a container image: an OCI image layout directory, or
/// a tar file (an `oci-archive` or a `docker save`).
pub fn is_image(path: &Path) -> bool {
    if path.is_dir() {
        return path.join("oci-layout").is_file();
    }
    let mut head = [0u8; 512];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok()
        && mesh_host::container::image::is_tar(&head)
}

/// Uploads a container image; named `name`, or after the file or folder.
pub fn upload_image(
    client: &Client,
    path: &Path,
    name: Option<&str>,
) -> anyhow::Result<ComponentRef> {
    let bytes = if path.is_dir() {
        mesh_host::container::image::pack_layout(path)?
    } else {
        std::fs::read(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?
    };
    let name = match name {
        Some(name) => name.to_string(),
        None => path
            .file_name()
            .and_then(|s| s.to_str())
            .map(|s| {
                s.trim_end_matches(".tar")
                    .trim_end_matches(".oci")
                    .to_string()
            })
            .filter(|s| !s.is_empty())
            .ok_or_else(|| anyhow!("cannot name an image after {}; give --name", path.display()))?,
    };
    let info: CodeInfo = client.put_bytes(
        &format!(
            "/v1/code?kind=image&name={}",
            encode(&path.display().to_string())
        ),
        &bytes,
    )?;
    Ok(ComponentRef {
        name,
        digest: info.digest,
    })
}

/// Packs a folder as a stack's files and uploads it; its digest.
pub fn upload_files(client: &Client, dir: &Path) -> anyhow::Result<Digest> {
    let bytes = mesh_host::content::files::pack(dir)?;
    let name = dir.display().to_string();
    let info: CodeInfo = client.put_bytes(
        &format!("/v1/code?kind=files&name={}", encode(&name)),
        &bytes,
    )?;
    Ok(info.digest)
}

/// The `.wasm` files a deploy path names, and whether they are a whole
/// bundle (a directory) or one component (a file).
pub fn bundle_files(path: &Path) -> anyhow::Result<(Vec<PathBuf>, bool)> {
    let meta =
        std::fs::metadata(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
    if meta.is_file() {
        return Ok((vec![path.to_path_buf()], false));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("listing {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm" || x == "tar") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        bail!(
            "{} holds no .wasm files or image tars to deploy",
            path.display()
        );
    }
    Ok((files, true))
}
