//! `mesh service run` and `mesh run`: an instance attached to this
//! terminal over an upgraded control API connection (see
//! `mesh_host::session` for the frames). When stdin is a terminal it goes
//! raw for the run (Ctrl-C then stops the remote instance) and is restored
//! however the run ends.

use std::io::{BufReader, IsTerminal as _, Read as _, Write as _};
use std::net::TcpStream;

use anyhow::bail;
use mesh_host::services::session::{
    decode_exit, frame, read_frame, EXIT, INTERRUPT, RESIZE, STDERR, STDIN, STDIN_EOF, STDOUT,
};

use crate::client::Client;

/// The byte a raw terminal sends for Ctrl-C.
const CTRL_C: u8 = 0x03;

/// Connects to `path` (a run route, without `tty=`), streams stdio, and
/// exits the process with the guest's exit code.
pub fn run(client: &Client, path: &str) -> anyhow::Result<()> {
    let terminal = std::io::stdin().is_terminal();
    let separator = if path.contains('?') { '&' } else { '?' };
    let stream = client.upgrade(&format!("{path}{separator}tty={terminal}"))?;
    let raw = if terminal { RawMode::enter() } else { None };
    let code = pump(stream, terminal);
    drop(raw);
    let (code, message) = code?;
    if !message.is_empty() {
        eprintln!("mesh: the instance ended: {message}");
    }
    std::process::exit(code)
}

/// Sends stdin, prints stdout and stderr, until the exit frame.
fn pump(stream: TcpStream, terminal: bool) -> anyhow::Result<(i32, String)> {
    // Stdin and window sizes go out from two threads, a frame at a time.
    let writer = std::sync::Arc::new(std::sync::Mutex::new(stream.try_clone()?));
    if terminal {
        let writer = writer.clone();
        std::thread::spawn(move || {
            let mut last = (0, 0);
            loop {
                let size = window_size();
                if size != last && size != (0, 0) {
                    last = size;
                    let mut payload = size.0.to_be_bytes().to_vec();
                    payload.extend_from_slice(&size.1.to_be_bytes());
                    if send(&writer, RESIZE, &payload).is_err() {
                        return;
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        });
    }
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 4096];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = send(&writer, STDIN_EOF, &[]);
                    return;
                }
                Ok(n) => n,
            };
            let input = &buf[..n];
            let sent = match input.iter().position(|&b| terminal && b == CTRL_C) {
                Some(at) => {
                    send(&writer, STDIN, &input[..at]).and_then(|()| send(&writer, INTERRUPT, &[]))
                }
                None => send(&writer, STDIN, input),
            };
            if sent.is_err() {
                return;
            }
        }
    });
    let mut reader = BufReader::new(stream);
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    loop {
        match read_frame(&mut reader)? {
            Some((STDOUT, bytes)) => {
                stdout.write_all(&bytes)?;
                stdout.flush()?;
            }
            Some((STDERR, bytes)) => {
                stderr.write_all(&bytes)?;
                stderr.flush()?;
            }
            Some((EXIT, payload)) => return Ok(decode_exit(&payload)),
            Some(_) => {}
            None => bail!("the daemon closed the connection before the instance ended"),
        }
    }
}

/// Sends one frame over the shared connection.
fn send(writer: &std::sync::Mutex<TcpStream>, kind: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut stream = writer.lock().unwrap_or_else(|e| e.into_inner());
    stream.write_all(&frame(kind, payload))?;
    stream.flush()
}

/// This terminal's size (rows, columns), or zeros when unknown.
fn window_size() -> (u16, u16) {
    // SAFETY: TIOCGWINSZ fills a winsize; a failure leaves it zeroed.
    unsafe {
        let mut size: libc::winsize = std::mem::zeroed();
        if libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) != 0 {
            return (0, 0);
        }
        (size.ws_row, size.ws_col)
    }
}

/// The terminal in raw mode (no line editing, echo or signals; output
/// processing kept so `\n` still starts a new line); restored on drop.
struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a properly sized,
        // initialised termios; failures are reported by the return value.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                return None;
            }
            let mut raw = saved;
            raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
            raw.c_iflag &= !(libc::IXON | libc::ICRNL | libc::BRKINT | libc::ISTRIP);
            raw.c_cc[libc::VMIN] = 1;
            raw.c_cc[libc::VTIME] = 0;
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) != 0 {
                return None;
            }
            Some(RawMode { saved })
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `enter`.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved);
        }
    }
}
