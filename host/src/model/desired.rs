//! One snapshot of desired state: what the store holds and the layers
//! that run services converge to.

use std::collections::HashMap;

use super::environment::Environment;
use super::service::{Service, ServiceKey};
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

impl Desired {
    /// Every service with its key and its stack (if the stack exists).
    pub fn services_with_stacks(
        &self,
    ) -> impl Iterator<Item = (ServiceKey, &Service, Option<&Stack>)> {
        let stacks: HashMap<(&str, &str), &Stack> = self
            .stacks
            .iter()
            .map(|s| ((s.env.as_str(), s.name.as_str()), s))
            .collect();
        self.services.iter().map(move |service| {
            let stack = stacks
                .get(&(service.env.as_str(), service.stack.as_str()))
                .copied();
            (ServiceKey::of(service), service, stack)
        })
    }
}
