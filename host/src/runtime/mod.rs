//! The runtime: wasmtime and nothing above it. It knows components,
//! stores, limits and how a run ends; it knows no service, name, log or
//! policy. What an instance's outgoing calls reach is decided by the layer
//! above through the [`Dispatch`] trait, which that layer implements.
//!
//! - `engine`: the one wasmtime engine, its linker, epoch ticker and the
//!   compiled-code cache (each digest compiled once, files checked on load),
//!   over the code the content store (`crate::content`) keeps.
//! - `setup`: what the engine is built from ([`EngineConfig`]), and the
//!   pooling allocator sized for it.
//! - `state`: what one store holds: WASI contexts, memory limit, hooks.
//! - `instance`: making a store for a launch, and running `wasi:cli/run`
//!   in it to its end.
//! - `outcome`: how a run ended, typed, and the switch that stops one.
//! - `cache`: compiled code on disk, checked on load, and a shared cache
//!   behind it.
//! - `cgi`: wasip1 modules serving HTTP as CGI programs (WAGI), a fresh
//!   store per request.
//! - `http`: instances that serve `wasi:http/incoming-handler`, one request
//!   at a time.
//! - `io`: where a guest's stdout and stderr go, and a host-fed stdin.
//! - `cpu`: CPU time per request, and fair shares of the cores between
//!   environments for guests that run long.
//! - `scratch`: an instance's private, size-capped scratch directory.
//! - `seats`: live instances bounded, by who they are for.
//! - `dispatch`: the outgoing-HTTP and socket hook, and the trait behind it.
//! - `connect`: sending an outgoing request to the network, each resolved
//!   address checked before it is dialled.

mod cache;
pub mod cgi;
mod connect;
pub mod cpu;
pub mod dispatch;
pub mod engine;
pub mod http;
pub mod instance;
pub mod io;
pub mod outcome;
pub mod scratch;
pub mod seats;
pub mod setup;
pub mod state;

pub use dispatch::{send_outgoing, Dispatch, Outgoing, MAX_HOPS};
pub use engine::{CodeError, Engine, Loaded};
pub use http::{Answered, CallLimits, HttpInstance, Respond};
pub use instance::{new_store, run_command, Launch};
pub use io::{Output, RunStdin};
pub use outcome::{Ending, Interrupt, Outcome};
pub use seats::Seat;
pub use setup::{EngineConfig, MemorySlots};
pub use state::HostState;
