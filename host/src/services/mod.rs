//! Services: everything that owns running instances of a service, and
//! nothing that stores or serves the platform's state. It reads the
//! runtime and the container layer below it and writes telemetry; the
//! layers above (cron, the ingress, the API, the daemon's converge loop)
//! read it, and it imports none of them. It is handed desired state; it
//! never reads the store (`scripts/check-layers.py` holds it to that).
//!
//! - `supervisor`: desired versus actual: owns each service's slots, pool
//!   and rollout; writes routes and names.
//! - `slot`: one task per worker instance: start, run, back off, restart.
//! - `rollout`: moving a service's slots to new settings one at a time.
//! - `pool`: the instances that answer a service's requests, in pieces:
//!   `admission` (queue places, leases, picking an instance), `attempt`
//!   (serving, trying once more on a fresh instance, learning that code
//!   must run fresh), `lifecycle` (making, giving back, retiring and
//!   refilling instances), and `state` (what a pool holds).
//! - `replay`: a request kept so it can be sent to a fresh instance while
//!   its first instance has read none of its body.
//! - `callee`: what a service reached by name is to its callers.
//! - `directory`: intra-DNS names, outbound policy, and the runtime's
//!   [`Dispatch`](crate::runtime::Dispatch) for each instance.
//! - `remote`: services whose instances all run on other hosts.
//! - `routes`: which endpoint goes to which web service.
//! - `session`: interactive runs attached to a caller's terminal.
//! - `spec`: what a service runs, resolved against its stack.
//! - `code`: the instance boundary: the traits every kind of instance
//!   implements.
//! - `wasm`: wasm components as one kind, each instance a wasmtime store.
//! - `container`: container images as another, each instance a container
//!   made by the container layer (`crate::container`).
//! - `parts`: the handles every owner of instances shares.
//! - `backoff`: restart back-off.

pub mod backoff;
pub mod callee;
pub mod code;
pub mod container;
pub mod directory;
pub mod parts;
pub mod pool;
pub mod remote;
mod replay;
pub mod rollout;
pub mod routes;
pub mod session;
pub mod slot;
pub mod spec;
pub mod supervisor;
pub mod wasm;

pub use callee::{Callee, Refusal};
pub use code::{Code, CodeSource, Fetch, Handler};
pub use directory::{Directory, Identity, CALLER_HEADER, CHAIN_HEADER};
pub use parts::Parts;
pub use pool::WebPool;
pub use remote::{Call, Forward, Remote};
pub use routes::{request_host, Routes};
pub use spec::{CodeProblem, RunSpec, Spec};
pub use supervisor::{RolloutFailure, Route, Supervisor, Tracked, MAX_PENDING_FAILURES};
pub use wasm::WasmSource;
