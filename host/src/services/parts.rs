//! The handles every owner of instances (slot, pool, cron job, session)
//! shares, and how they make an instance's launch from a spec.

use std::sync::Arc;

use super::code::CodeSource;
use super::directory::{Directory, Identity};
use super::spec::RunSpec;
use crate::model::{dns_name, ServiceKey};
use crate::runtime::{Launch, Output, Seat};
use crate::telemetry::{Events, LogStream, Logs, Metrics, ServiceLog, Stream};

/// The parts slots, pools and jobs need.
#[derive(Clone)]
pub struct Parts {
    /// Where code comes from.
    pub code: Arc<dyn CodeSource>,
    /// Instance output.
    pub logs: Arc<Logs>,
    /// Requests that may wait per web instance.
    pub queue_per_instance: usize,
    /// Intra-DNS names and outbound policies.
    pub directory: Arc<Directory>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// What happened, for `mesh events`.
    pub events: Arc<Events>,
}

impl Parts {
    /// Who an instance of a service is, for the calls it makes.
    pub fn identity(&self, key: &ServiceKey, instance: &str) -> Identity {
        Identity {
            env: key.env.clone(),
            name: dns_name(&key.stack, &key.name),
            directory: self.directory.clone(),
            log: self.logs.service(key),
            instance: instance.to_string(),
            metrics: self.metrics.service(key),
        }
    }
}

/// How instance `id` of the service `who` belongs to starts: its argv,
/// env and memory limit from `run`, output to the service's log, calls
/// through its identity.
pub fn launch(who: &Identity, run: &RunSpec, id: &str) -> Launch {
    Launch {
        args: run.command.clone(),
        env: run.env_for(id),
        memory_bytes: run.memory_bytes,
        stdout: log_output(&who.log, id, Stream::Stdout),
        stderr: log_output(&who.log, id, Stream::Stderr),
        dispatch: Some(Arc::new(who.at(id))),
        stdin: None,
        tenant: who.env.as_str().into(),
        seat: Seat::Service,
        files: run.files.clone(),
        scratch_bytes: run.scratch_bytes,
        stop_grace: run.stop_grace,
    }
}

/// An instance's stdout or stderr, into its service's log.
pub fn log_output(log: &Arc<ServiceLog>, id: &str, stream: Stream) -> Output {
    let stream = LogStream::new(log.clone(), id, stream);
    Output::new(move || Box::new(stream.writer()))
}
