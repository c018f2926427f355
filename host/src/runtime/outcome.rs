//! How a run ended, as a type callers match on, and the switch that stops
//! a running guest.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use wasmtime::{Trap, WasmBacktrace};
use wasmtime_wasi::I32Exit;

use crate::model::format_memory;

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The guest exited (or `run` returned) with a code.
    Exited,
    /// It tried to grow its memory past its limit and died of it.
    OutOfMemory,
    /// It was stopped (interrupted, timed out, its owner went away).
    Stopped,
    /// It trapped.
    Trapped,
    /// It could not start or failed in the host.
    Failed,
    /// Its command cannot run with these settings (not found in its
    /// image): not retried until they change.
    Unrunnable,
    /// It failed its service's health check too many times in a row.
    Unhealthy,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Exit code, when the guest exited (traps and start failures have none).
    pub exit_code: Option<i32>,
    /// What happened, for people: `exited with code 3`,
    /// `exceeded memory limit 64 MiB`, `trap: ... in app::trap`.
    pub message: String,
    /// Why, for code.
    pub ending: Ending,
}

impl Outcome {
    /// Whether the run counts as a success.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// An exit with `code`.
    pub fn exited(code: i32) -> Outcome {
        Outcome {
            exit_code: Some(code),
            message: format!("exited with code {code}"),
            ending: Ending::Exited,
        }
    }

    /// A run that was stopped.
    pub fn stopped() -> Outcome {
        Outcome::failed_as(Ending::Stopped, "stopped".to_string())
    }

    /// A run that could not start, or failed in the host, for `message`.
    pub fn failed(message: String) -> Outcome {
        Outcome::failed_as(Ending::Failed, message)
    }

    fn failed_as(ending: Ending, message: String) -> Outcome {
        Outcome {
            exit_code: None,
            message,
            ending,
        }
    }

    /// The event kind for this ending: `instance.oom` when it ran out of
    /// memory, else `otherwise`.
    pub fn event_kind<'a>(&self, otherwise: &'a str) -> &'a str {
        match self.ending {
            Ending::OutOfMemory => "instance.oom",
            Ending::Unhealthy => "instance.unhealthy",
            _ => otherwise,
        }
    }

    /// Turns the error a store's guest failed with into an outcome.
    pub(crate) fn explain(
        e: &wasmtime::Error,
        memory_refused: Option<u64>,
        interrupt: &Interrupt,
    ) -> Outcome {
        if let Some(exit) = e.downcast_ref::<I32Exit>() {
            return Outcome::exited(exit.0);
        }
        if let Some(limit) = memory_refused {
            return Outcome::failed_as(
                Ending::OutOfMemory,
                format!("exceeded memory limit {}", format_memory(limit)),
            );
        }
        if interrupt.is_triggered() {
            return Outcome::stopped();
        }
        match e.downcast_ref::<Trap>() {
            Some(trap) => {
                let place = e
                    .downcast_ref::<WasmBacktrace>()
                    .and_then(|bt| bt.frames().iter().find_map(|f| f.func_name()))
                    .map(|name| format!(" in {:#}", rustc_demangle::demangle(name)))
                    .unwrap_or_default();
                let what = trap.to_string();
                let what = what.strip_prefix("wasm trap: ").unwrap_or(&what);
                Outcome::failed_as(Ending::Trapped, format!("trap: {what}{place}"))
            }
            None => Outcome::failed(format!("failed: {}", e.root_cause())),
        }
    }
}

/// A switch that stops a running guest: it traps at its next epoch check
/// if it is running wasm, and its run is cancelled if it is waiting in a
/// host call (sleeping, reading stdin), where no epoch check comes.
#[derive(Clone, Default)]
pub struct Interrupt(Arc<(AtomicBool, tokio::sync::Notify)>);

impl Interrupt {
    /// Asks the guest to stop.
    pub fn trigger(&self) {
        self.0 .0.store(true, Ordering::Relaxed);
        self.0 .1.notify_waiters();
    }

    /// Whether the switch was triggered.
    pub fn is_triggered(&self) -> bool {
        self.0 .0.load(Ordering::Relaxed)
    }

    /// Returns once the switch is triggered.
    pub async fn triggered(&self) {
        loop {
            let notified = self.0 .1.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
    }
}
