//! Interactive runs (`mesh service run`, `mesh run`): one new instance whose
//! stdin, stdout and stderr are the caller's, over a control API connection
//! upgraded from HTTP (`Upgrade: mesh-run`), ending with the guest's exit
//! code.
//!
//! After the `101` answer both sides send frames: a kind byte, a 4-byte
//! big-endian length, the payload. The client sends stdin bytes, end of
//! stdin, and interrupts (Ctrl-C); the daemon sends stdout, stderr and,
//! last, the exit code. A client that goes away stops the instance.

use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use chrono::Utc;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use super::code::Code;
use super::directory::Identity;
use crate::model::{InstanceState, InstanceStatus};
use crate::runtime::{Ending, Interrupt, Launch, Outcome, Output, RunStdin, Seat};
use crate::telemetry::{LogStream, ServiceLog, Stream};

/// The exit code a run that trapped or ran out of memory ends the client
/// with: what `wasmtime run` exits with when its guest traps.
pub const TRAPPED_EXIT_CODE: i32 = 134;

/// The `Upgrade` protocol name.
pub const PROTOCOL: &str = "mesh-run";

/// Client to daemon: stdin bytes.
pub const STDIN: u8 = 0;
/// Client to daemon: end of stdin.
pub const STDIN_EOF: u8 = 1;
/// Client to daemon: stop the instance (Ctrl-C); for a container with a
/// terminal, Ctrl-C typed into that terminal.
pub const INTERRUPT: u8 = 2;
/// Client to daemon: the terminal's size (rows, columns: 2 bytes each,
/// big-endian).
pub const RESIZE: u8 = 3;
/// Daemon to client: stdout bytes.
pub const STDOUT: u8 = 1;
/// Daemon to client: stderr bytes.
pub const STDERR: u8 = 2;
/// Daemon to client: the exit code (4 bytes, big-endian) and a message.
pub const EXIT: u8 = 3;

/// Largest frame either side accepts.
const MAX_FRAME: usize = 1 << 20;
/// Bytes of stdin buffered for the guest before the client is slowed.
const STDIN_BUFFER: usize = 64 * 1024;
/// Output writes buffered for a client before the guest is slowed.
const OUTPUT_FRAMES: usize = 64;

/// Encodes one frame.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(kind);
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(payload);
    out
}

/// Reads one frame from a blocking reader; `None` at a clean end.
pub fn read_frame(reader: &mut impl Read) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match reader.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other("frame too large"));
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload)?;
    Ok(Some((head[0], payload)))
}

/// Writes one frame to a blocking writer.
pub fn write_frame(writer: &mut impl Write, kind: u8, payload: &[u8]) -> std::io::Result<()> {
    writer.write_all(&frame(kind, payload))?;
    writer.flush()
}

/// How the run ended, as the `EXIT` frame says it.
pub fn decode_exit(payload: &[u8]) -> (i32, String) {
    let code = payload
        .get(..4)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(1);
    let message = String::from_utf8_lossy(payload.get(4..).unwrap_or_default()).into_owned();
    (code, message)
}

/// What to run interactively.
pub struct Session {
    /// The instance's code.
    pub code: Arc<dyn Code>,
    /// argv.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Memory limit.
    pub memory_bytes: u64,
    /// Who it is (a service's instance), for intra-DNS and policy.
    pub who: Option<Identity>,
    /// Whether the caller's stdin is a terminal.
    pub terminal: bool,
    /// Whose seat it takes: the operator's runs have their own.
    pub seat: Seat,
    /// Files it sees read-only at `/`.
    pub files: Option<crate::model::Digest>,
    /// Bytes of scratch space at `/tmp`.
    pub scratch_bytes: Option<u64>,
    /// How long a container has after SIGTERM.
    pub stop_grace: std::time::Duration,
    /// The service log its output is kept in too, and its instance id
    /// there (`None` for a component run outside any service).
    pub log: Option<(Arc<ServiceLog>, String)>,
}

/// Runs the session's instance over `stream` until it exits or the client
/// goes away; `status` is kept up to date for `service ls`.
pub async fn serve<S>(session: Session, stream: S, status: Arc<Mutex<InstanceStatus>>) -> Outcome
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    // Output goes to the client and, for a service's instance, to the
    // service's log like any instance's.
    let mut kept: Option<[Pin<Box<dyn AsyncWrite + Send + Sync>>; 2]> =
        session.log.as_ref().map(|(log, id)| {
            [Stream::Stdout, Stream::Stderr].map(|stream| {
                let writer = LogStream::new(log.clone(), id, stream).writer();
                Box::pin(writer) as Pin<Box<dyn AsyncWrite + Send + Sync>>
            })
        });
    let (from_client, mut to_client) = tokio::io::split(stream);
    let (stdin_tx, stdin_rx) = tokio::io::duplex(STDIN_BUFFER);
    let (window_tx, window_rx) = tokio::sync::watch::channel((0u16, 0u16));
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Bytes)>(OUTPUT_FRAMES);
    let interrupt = Interrupt::default();
    let tenant: Arc<str> = session
        .who
        .as_ref()
        .map_or(crate::model::DEFAULT_ENVIRONMENT, |who| who.env.as_str())
        .into();
    let launch = Launch {
        args: session.args,
        env: session.env,
        memory_bytes: session.memory_bytes,
        stdout: frames_to_client(STDOUT, &out_tx),
        stderr: frames_to_client(STDERR, &out_tx),
        dispatch: session
            .who
            .map(|who| Arc::new(who) as Arc<dyn crate::runtime::Dispatch>),
        stdin: Some(RunStdin::new(stdin_rx, session.terminal).with_window(window_rx)),
        tenant,
        seat: session.seat,
        files: session.files,
        scratch_bytes: session.scratch_bytes,
        stop_grace: session.stop_grace,
    };
    let mark_running = {
        let status = status.clone();
        Box::new(move || status.lock().enter(InstanceState::Running))
    };
    drop(out_tx);

    // Ends with the session, however it ends.
    let reader = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(read_client(
        from_client,
        stdin_tx,
        interrupt.clone(),
        // A container's terminal is a real one: Ctrl-C and its size go
        // to it, rather than stopping the instance.
        (session.terminal && session.code.kind() == "container").then_some(window_tx),
    )));

    let run = session.code.run(launch, interrupt.clone(), mark_running);
    tokio::pin!(run);
    let outcome = loop {
        tokio::select! {
            outcome = &mut run => break outcome,
            Some((kind, bytes)) = out_rx.recv() => {
                keep(&mut kept, kind, &bytes).await;
                if to_client.write_all(&frame(kind, &bytes)).await.is_err() {
                    interrupt.trigger();
                }
            }
        }
    };
    // The store is gone: drain what the guest wrote last.
    while let Some((kind, bytes)) = out_rx.recv().await {
        keep(&mut kept, kind, &bytes).await;
        let _ = to_client.write_all(&frame(kind, &bytes)).await;
    }
    // Dropping the log writers flushes a last line without a newline.
    drop((kept, reader));
    {
        let mut status = status.lock();
        status.enter(InstanceState::Exited);
        status.exit_code = outcome.exit_code;
        status.message = Some(outcome.message.clone());
    }
    let _ = to_client.write_all(&exit_frame(&outcome)).await;
    let _ = to_client.shutdown().await;
    outcome
}

/// Feeds the client's frames to the guest's stdin and interrupts; the
/// connection closing (or a malformed frame) stops the instance.
async fn read_client(
    mut from_client: impl AsyncRead + Unpin,
    mut stdin_tx: tokio::io::DuplexStream,
    interrupt: Interrupt,
    terminal: Option<tokio::sync::watch::Sender<(u16, u16)>>,
) {
    loop {
        let mut head = [0u8; 5];
        if from_client.read_exact(&mut head).await.is_err() {
            interrupt.trigger();
            return;
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > MAX_FRAME {
            interrupt.trigger();
            return;
        }
        let mut payload = vec![0u8; len];
        if from_client.read_exact(&mut payload).await.is_err() {
            interrupt.trigger();
            return;
        }
        match head[0] {
            STDIN => {
                // A guest that closed stdin leaves later input nowhere to go.
                let _ = stdin_tx.write_all(&payload).await;
            }
            STDIN_EOF => {
                let _ = stdin_tx.shutdown().await;
            }
            INTERRUPT => match &terminal {
                // The terminal's own line discipline turns it into SIGINT
                // for whatever runs in the foreground there.
                Some(_) => {
                    let _ = stdin_tx.write_all(&[0x03]).await;
                }
                None => interrupt.trigger(),
            },
            RESIZE => {
                if let (Some(window), [r1, r2, c1, c2]) = (&terminal, payload.as_slice()) {
                    let _ = window.send((
                        u16::from_be_bytes([*r1, *r2]),
                        u16::from_be_bytes([*c1, *c2]),
                    ));
                }
            }
            _ => {}
        }
    }
}

/// The `EXIT` frame for how a run ended: its code, and the message when
/// it did not exit by itself.
fn exit_frame(outcome: &Outcome) -> Vec<u8> {
    // A guest that died (a trap, or out of memory) ends the client with
    // 134, as `wasmtime run` ends when its guest traps.
    let code = outcome.exit_code.unwrap_or(match outcome.ending {
        Ending::Trapped | Ending::OutOfMemory => TRAPPED_EXIT_CODE,
        _ => 1,
    });
    // A code of the guest's own says enough; one the host gave (a command
    // not found: 127) comes with why.
    let message = if outcome.exit_code.is_some() && outcome.ending != Ending::Unrunnable {
        ""
    } else {
        outcome.message.as_str()
    };
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(message.as_bytes());
    frame(EXIT, &payload)
}

/// Writes output to the service log, when there is one.
async fn keep(
    kept: &mut Option<[Pin<Box<dyn AsyncWrite + Send + Sync>>; 2]>,
    kind: u8,
    bytes: &[u8],
) {
    if let Some([stdout, stderr]) = kept {
        let target = if kind == STDERR { stderr } else { stdout };
        let _ = target.write_all(bytes).await;
    }
}

/// A fresh status for an interactive instance.
pub fn starting(id: String, version: u64) -> InstanceStatus {
    InstanceStatus {
        message: Some("interactive run".to_string()),
        started_at: Some(Utc::now()),
        ..InstanceStatus::starting(id, version)
    }
}

/// A guest's stdout or stderr, sent to the client as frames through a
/// bounded queue: a full queue makes the guest's write wait.
fn frames_to_client(kind: u8, tx: &mpsc::Sender<(u8, Bytes)>) -> Output {
    let tx = tx.clone();
    Output::new(move || {
        Box::new(FrameWriter {
            kind,
            tx: PollSender::new(tx.clone()),
        })
    })
}

struct FrameWriter {
    kind: u8,
    tx: PollSender<(u8, Bytes)>,
}

impl AsyncWrite for FrameWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.tx.poll_reserve(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => {
                let frame = (self.kind, Bytes::copy_from_slice(buf));
                let _ = self.tx.send_item(frame);
                Poll::Ready(Ok(buf.len()))
            }
            // The session ended; output has nowhere to go.
            Poll::Ready(Err(_)) => Poll::Ready(Ok(buf.len())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use wasmtime_wasi::cli::StdoutStream as _;

    use super::*;
    use crate::model::Digest;
    use crate::runtime::Outcome;
    use crate::services::code::{BoxFuture, Handler};

    /// A guest that writes `total` bytes to stdout in 4 KiB writes,
    /// counting what its writes have handed over.
    struct Chatty {
        digest: Digest,
        total: usize,
        written: Arc<AtomicUsize>,
    }

    impl Code for Chatty {
        fn digest(&self) -> &Digest {
            &self.digest
        }
        fn runs_command(&self) -> bool {
            true
        }
        fn serves_http(&self) -> bool {
            false
        }
        fn exports(&self) -> Vec<String> {
            vec!["wasi:cli/run@0.2.0".into()]
        }
        fn run(
            &self,
            launch: Launch,
            _: Interrupt,
            running: Box<dyn FnOnce() + Send>,
        ) -> BoxFuture<'static, Outcome> {
            let (total, written) = (self.total, self.written.clone());
            Box::pin(async move {
                running();
                let mut out = Pin::from(launch.stdout.async_stream());
                let chunk = [b'x'; 4096];
                while written.load(Ordering::SeqCst) < total {
                    if out.write_all(&chunk).await.is_err() {
                        return Outcome::failed("stdout closed".into());
                    }
                    written.fetch_add(chunk.len(), Ordering::SeqCst);
                }
                Outcome::exited(0)
            })
        }
        fn start_handler(
            &self,
            _: Launch,
        ) -> BoxFuture<'static, Result<Box<dyn Handler>, Outcome>> {
            Box::pin(async { Err(Outcome::failed("no handler".into())) })
        }
    }

    #[tokio::test]
    async fn a_slow_client_slows_the_guest_instead_of_buffering() {
        let total = 8 << 20;
        let written = Arc::new(AtomicUsize::new(0));
        let session = Session {
            seat: Seat::Service,
            code: Arc::new(Chatty {
                digest: Digest::of(b"chatty"),
                total,
                written: written.clone(),
            }),
            args: vec!["chatty".into()],
            env: Vec::new(),
            memory_bytes: 1 << 20,
            who: None,
            terminal: false,
            log: None,
            files: None,
            scratch_bytes: None,
            stop_grace: std::time::Duration::from_secs(1),
        };
        let (client, daemon_side) = tokio::io::duplex(64 * 1024);
        let status = Arc::new(Mutex::new(starting("chatty.run1".into(), 1)));
        let run = tokio::spawn(serve(session, daemon_side, status));
        // The client reads nothing: the guest gets a bounded way ahead.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let ahead = written.load(Ordering::SeqCst);
        assert!(
            ahead < 1 << 20,
            "the guest wrote {ahead} bytes to a client that reads nothing"
        );
        // Once the client reads, everything arrives, then the exit code.
        let (mut reader, _writer) = tokio::io::split(client);
        let mut stdout = 0;
        loop {
            let mut head = [0u8; 5];
            reader.read_exact(&mut head).await.unwrap();
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            let mut payload = vec![0u8; len];
            reader.read_exact(&mut payload).await.unwrap();
            match head[0] {
                STDOUT => stdout += len,
                EXIT => {
                    assert_eq!(decode_exit(&payload).0, 0);
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(stdout, total);
        assert!(run.await.unwrap().succeeded());
    }

    #[test]
    fn frames_round_trip() {
        let mut bytes = frame(STDIN, b"hello");
        bytes.extend(frame(EXIT, &[0, 0, 0, 7, b'x']));
        let mut reader = &bytes[..];
        assert_eq!(
            read_frame(&mut reader).unwrap(),
            Some((STDIN, b"hello".to_vec()))
        );
        let (kind, payload) = read_frame(&mut reader).unwrap().unwrap();
        assert_eq!(kind, EXIT);
        assert_eq!(decode_exit(&payload), (7, "x".to_string()));
        assert_eq!(read_frame(&mut reader).unwrap(), None);
    }
}
