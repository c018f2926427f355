//! A guest's standard streams: where its stdout and stderr go (any async
//! writer the layer above makes), and a stdin fed by the host.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use wasmtime_wasi::cli::{AsyncStdinStream, IsTerminal, StdinStream, StdoutStream};

type MakeWriter = dyn Fn() -> Box<dyn AsyncWrite + Send + Sync> + Send + Sync;

/// Where a guest's stdout or stderr goes: a maker of async writers, one
/// per stream the guest opens. A writer that waits applies backpressure to
/// the guest.
#[derive(Clone)]
pub struct Output(Arc<MakeWriter>);

impl Output {
    /// Output written to the writers `make` returns.
    pub fn new(
        make: impl Fn() -> Box<dyn AsyncWrite + Send + Sync> + Send + Sync + 'static,
    ) -> Output {
        Output(Arc::new(make))
    }
}

impl IsTerminal for Output {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Output {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        (self.0)()
    }
}

/// A guest's stdin fed by the host (an interactive run), saying whether
/// it is a terminal.
pub struct RunStdin {
    stream: AsyncStdinStream,
    terminal: bool,
    window: Option<tokio::sync::watch::Receiver<(u16, u16)>>,
}

impl RunStdin {
    /// Stdin reading from `input`; `terminal` is what the guest's
    /// `is_terminal` says.
    pub fn new(input: impl AsyncRead + Send + Sync + 'static, terminal: bool) -> RunStdin {
        RunStdin {
            stream: AsyncStdinStream::new(input),
            terminal,
            window: None,
        }
    }

    /// The same stdin, with the terminal's size (rows, columns) as the
    /// caller's changes.
    pub fn with_window(mut self, window: tokio::sync::watch::Receiver<(u16, u16)>) -> RunStdin {
        self.window = Some(window);
        self
    }

    /// The terminal's size as it changes, when the caller sends it.
    pub fn window(&self) -> Option<tokio::sync::watch::Receiver<(u16, u16)>> {
        self.window.clone()
    }
}

impl IsTerminal for RunStdin {
    fn is_terminal(&self) -> bool {
        self.terminal
    }
}

impl StdinStream for RunStdin {
    fn async_stream(&self) -> Box<dyn AsyncRead + Send + Sync> {
        self.stream.async_stream()
    }

    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::InputStream> {
        self.stream.p2_stream()
    }
}
