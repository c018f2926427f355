//! One snapshot of desired state: what the store holds and the layers
//! that run services converge to.

use super::environment::Environment;
use super::service::Service;
use super::stack::Stack;

/// Every environment, stack and service at one store revision.
#[derive(Clone, Debug, Default)]
pub struct Desired {
    /// Every change committed at or before this revision is included.
    pub revision: u64,
    /// Every service.
    pub services: Vec<Service>,
    /// Every stack.
    pub stacks: Vec<Stack>,
    /// Every environment.
    pub envs: Vec<Environment>,
}
