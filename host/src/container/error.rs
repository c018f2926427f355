//! Why an image upload was refused: each variant one clear line.

use thiserror::Error;

/// Why an upload is not an image mesh can run.
#[derive(Debug, Error)]
pub enum ImageError {
    /// Not a tar holding an OCI layout or a `docker save`.
    #[error("{name} is not a container image: {reason}")]
    NotImage {
        /// What the user called it.
        name: String,
        /// What is missing.
        reason: String,
    },
    /// A blob the image names is not in the upload.
    #[error("{name}: the image names {what} {digest}, which the upload does not hold")]
    Missing {
        /// The image.
        name: String,
        /// Manifest, config or layer.
        what: String,
        /// Its digest.
        digest: String,
    },
    /// A blob whose bytes do not match its digest.
    #[error("{name}: {what} does not match its digest (expected {expected}, got {got})")]
    Digest {
        /// The image.
        name: String,
        /// Which blob.
        what: String,
        /// What the image says.
        expected: String,
        /// What the bytes hash to.
        got: String,
    },
    /// A layer entry that would land outside the root.
    #[error("layer {layer}: {path} would land outside the image's root filesystem")]
    Escapes {
        /// The layer.
        layer: String,
        /// The entry.
        path: String,
    },
    /// A layer that cannot be read or unpacked.
    #[error("layer {layer} cannot be unpacked: {reason}")]
    Layer {
        /// The layer.
        layer: String,
        /// Why.
        reason: String,
    },
    /// Built for another CPU or OS.
    #[error("{name} is built for {platform}; this host runs linux/{host}")]
    Platform {
        /// The image.
        name: String,
        /// `os/architecture` of the image.
        platform: String,
        /// This host's architecture.
        host: String,
    },
    /// Something else about the image is wrong.
    #[error("{name}: {reason}")]
    Invalid {
        /// The image.
        name: String,
        /// Why.
        reason: String,
    },
}
