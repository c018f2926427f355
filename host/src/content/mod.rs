//! The content store: the code a host keeps, by digest, in its data
//! directory (uploaded components, stacks' files archives, container
//! images), unpacked where it must be, and collected when no kept
//! version names it. It knows no wasmtime and no container: what the
//! runtime makes of stored code (compiled files, loaded code) it drops
//! through the [`Derived`] trait the runtime implements, and an image is
//! unpacked by whoever hands it one.
//!
//! - `kept`: the store itself ([`Content`]): accepting code, files and
//!   images, where each is kept, the lock per digest, and the uploads no
//!   version names yet.
//! - `collect`: [`Content::retain`], removing what no kept version names.
//! - `blobs`: every upload kept once, as uploaded, named by its sha256.
//! - `files`: a stack's files: packed, checked and unpacked.
//! - `partial`: trees and files half-made, and their clean-up after a
//!   crash.

mod blobs;
mod collect;
pub mod files;
mod kept;
mod partial;

pub use blobs::{write_synced, Blobs};
pub use collect::{Collected, Derived};
pub use kept::{CodeInfo, Content, DigestGuard, UNDEPLOYED_GRACE};
pub use partial::{clean_partial, incoming_in, partial_beside, Incoming};
