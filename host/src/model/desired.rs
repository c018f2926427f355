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
    /// In a cluster, where each service's instances run (the leader's
    /// placements).
    pub placements: Vec<super::node::Placement>,
    /// In a cluster, the instance numbers placed on this host, by service
    /// (a service absent runs nothing here); `None` on one machine, where
    /// every instance runs here.
    pub placed: Option<HashMap<ServiceKey, Vec<u32>>>,
}

impl Desired {
    /// Keeps, of the placements, what runs on `node`: what this host runs.
    pub fn place_on(&mut self, node: &str) {
        let placed = self
            .placements
            .iter()
            .map(|p| (p.key(), p.on(node)))
            .filter(|(_, numbers)| !numbers.is_empty())
            .collect();
        self.placed = Some(placed);
    }

    /// The instance numbers (1-based) of `service` that run on this host.
    pub fn numbers_here(&self, key: &ServiceKey, service: &Service) -> Vec<u32> {
        match &self.placed {
            None => (1..=service.instances).collect(),
            Some(placed) => placed.get(key).cloned().unwrap_or_default(),
        }
    }

    /// Whether anything of the service runs on this host (for a cron job:
    /// whether this host fires it).
    pub fn runs_here(&self, key: &ServiceKey) -> bool {
        self.placed
            .as_ref()
            .is_none_or(|placed| placed.get(key).is_some_and(|n| !n.is_empty()))
    }

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
