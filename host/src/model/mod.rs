//! The words of DESIGN.md as types: environments, stacks, versions,
//! services, instances, and the small values they are made of (names,
//! memory sizes, digests). Every other layer may use them; they use
//! nothing of the daemon's.
//!
//! These are the records kept in the state store (desired state) and the
//! status the services layer reports back (actual state).
//!
//! - `environment`: tenants and their outbound policy.
//! - `stack`: stacks and their code versions.
//! - `digest`: content digests of code.
//! - `service`: services, their keys, types and intra-DNS names.
//! - `endpoint`: public URLs bound to web services.
//! - `instance`: instance states and status.
//! - `net`: address ranges, and which are not public.
//! - `node`: the hosts instances run on.
//! - `run`: cron runs.
//! - `desired`: one snapshot of everything desired.
//! - `values`: names, memory sizes, env vars, defaults and bounds.

mod desired;
mod digest;
mod endpoint;
mod environment;
mod instance;
mod net;
mod node;
mod run;
mod service;
mod stack;
mod values;

pub use desired::Desired;
pub use digest::Digest;
pub use endpoint::{is_ip_like, may_publish, within, Endpoint};
pub use environment::{Egress, Environment, Outbound, Quotas};
pub use instance::{InstanceState, InstanceStatus, Rollout, RolloutState};
pub use net::{parse_ranges, special, Cidr, Special};
pub use node::{Drain, Node, NodeState, Placement};
pub use run::{Run, RunStatus, RunTrigger};
pub use service::{
    dns_name, HealthCheck, Service, ServiceKey, ServiceType, DEFAULT_ROLLOUT_TIMEOUT,
    DEFAULT_STOP_TIMEOUT, MAX_STOP_TIMEOUT,
};
pub use stack::{validate_component_name, Source, Stack, Version, FILES_ENTRY};
pub use values::*;
