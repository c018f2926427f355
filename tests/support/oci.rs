//! Container images made by hand, as a hostile tenant would make them:
//! OCI layout tars whose layers, names and configs the test chooses.

use sha2::Digest as _;

/// `sha256:HEX` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Where a blob of `digest` sits in an OCI layout.
pub fn blob(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

/// This host's architecture as images name it.
pub fn host_arch() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "amd64"
    } else {
        "arm64"
    }
}

/// A layer tar of `entries` (mode 0755), names written raw, so `../x`
/// or `.wh..` stays as a hostile layer has it.
pub fn layer_tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut layer = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o755);
        header.set_size(data.len() as u64);
        let raw = &mut header.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        layer.append(&header, *data).unwrap();
    }
    layer.into_inner().unwrap()
}

/// An OCI layout tar with one layer (`gzip`: gzip-compressed as stored)
/// and `config` (its `rootfs` is added when it has none and the layer is
/// not compressed).
pub fn layout(layer: Vec<u8>, gzip: bool, mut config: serde_json::Value) -> Vec<u8> {
    if config.get("rootfs").is_none() && !gzip {
        config["rootfs"] = serde_json::json!({"type": "layers", "diff_ids": [sha256(&layer)]});
    }
    let config = config.to_string();
    let media = if gzip {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    } else {
        "application/vnd.oci.image.layer.v1.tar"
    };
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config.as_bytes()), "size": config.len()},
        "layers": [{"mediaType": media, "digest": sha256(&layer), "size": layer.len()}],
    })
    .to_string();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": sha256(manifest.as_bytes()), "size": manifest.len()}]})
    .to_string();
    let mut out = tar::Builder::new(Vec::new());
    let blobs: Vec<(String, Vec<u8>)> = vec![
        (
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".into(), index.into_bytes()),
        (blob(&sha256(manifest.as_bytes())), manifest.into_bytes()),
        (blob(&sha256(config.as_bytes())), config.into_bytes()),
        (blob(&sha256(&layer)), layer),
    ];
    for (name, bytes) in blobs {
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o644);
        header.set_size(bytes.len() as u64);
        out.append_data(&mut header, name, &bytes[..]).unwrap();
    }
    out.into_inner().unwrap()
}

/// An OCI layout tar holding one layer (a tar of `entries`), for `arch`,
/// whose command is `/x`.
pub fn crafted_image(entries: &[(&str, &[u8])], arch: &str) -> Vec<u8> {
    layout(
        layer_tar(entries),
        false,
        serde_json::json!({"architecture": arch, "os": "linux", "config": {"Cmd": ["/x"]}}),
    )
}
