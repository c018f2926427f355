//! Code pulled from OCI registries: `mesh stack deploy S HOST/REPO:TAG`.
//!
//! The daemon pulls (so every host of a cluster can), through
//! `oci-client`: a reference is resolved once, at deploy, to the digest of
//! a manifest (an image index is resolved to this host's platform), and
//! the stack version records that digest; nothing resolves the tag again.
//! Two kinds of artifact come out:
//!
//! - a WebAssembly component published in the CNCF wasm OCI artifact
//!   layout (`wkg`, `wash`: config `application/vnd.wasm.config.v0+json`,
//!   one `application/wasm` layer): its one layer is the component, whose
//!   digest is the component's own, as if it had been uploaded;
//! - a container image (OCI or Docker v2 schema 2 manifest): its blobs
//!   (config, layers) stream into a cache kept by digest and shared
//!   between images (a second image on the same base fetches only its own
//!   layers), each verified against its digest before use, and are then
//!   written as an OCI image layout tar, byte for byte the same on every
//!   host, which goes through the image checks uploads go through.
//!
//! Each pull uses a client of its own, holding only the credentials of
//! the environment that pulls, so no token one environment's login earned
//! serves another's pull.

mod fetch;
mod layout;
mod names;
mod progress;
mod sinks;

pub use fetch::{Limits, PullError, PullFailure, Pulled, Registries};
pub use names::{
    check_host, credentials_for, is_reference, login_purpose, Credentials, Login, Source,
};
pub use progress::PullStatus;
