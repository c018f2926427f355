//! Containers: OCI images run through youki's `libcontainer`, the fallback
//! beside wasm components. This layer knows images, bundles, the shim
//! process, cgroups and the bridge network; it knows no service, log or
//! policy. The services layer turns its instances into slots, pools and
//! runs like any other code (`services/container.rs`).
//!
//! - `error`: why an image was refused.
//! - `image`: checking an uploaded image and unpacking it once per digest.
//! - `archive`: the uploaded tar: finding and reading its files; packing a
//!   layout directory into one.
//! - `manifest`: what an image says about itself in either format (OCI
//!   layout, `docker save`): its config and the layers to unpack.
//! - `layer`: unpacking one layer safely (whiteouts, no escapes, bounds).
//! - `bundle`: one instance's bundle: its private writable layer over the
//!   image (overlayfs on a size-capped tmpfs) and its OCI runtime config.
//! - `net`: the bridge the daemon owns, and a veth pair per container.
//! - `shim`: the per-container process that drives `libcontainer`.
//! - `tasks`: the pids cgroups above the containers: per environment, and
//!   all of them under the host's capacity.
//! - `userns`: each environment's host id range, and images copied with
//!   their owners shifted into it, so root inside is nobody outside.
//! - `instance`: one daemon's containers: opening them, preparing one to
//!   start (its command checked, its address and bundle made).
//! - `start`: starting a prepared container through its shim.
//! - `running`: a running container: signalling it, waiting for its end,
//!   stopping it, cleaning up after it.

mod archive;
pub mod bundle;
pub mod error;
pub mod image;
pub mod instance;
pub mod layer;
mod manifest;
pub mod net;
mod running;
pub mod shim;
mod start;
pub mod tasks;
pub mod userns;

pub use error::ImageError;
pub use image::ImageSettings;
pub use instance::{ContainerLaunch, Containers};
pub use running::{Exit, Running, Usage};
