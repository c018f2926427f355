//! `app cat` and `app repl`: programs for interactive runs
//! (`mesh service run`), one that copies stdin to stdout and one that
//! prompts for commands.
//!
//! When stdin is a terminal the caller's terminal is raw, so `repl` edits
//! its own line: it echoes what is typed, handles backspace, and ends a
//! line on Enter, as a shell's line editor does.

use std::io::{IsTerminal as _, Read as _, Write as _};

/// Copies stdin to stdout until end of input.
pub fn cat() {
    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    let mut buf = [0u8; 4096];
    loop {
        match input.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if output
                    .write_all(&buf[..n])
                    .and_then(|()| output.flush())
                    .is_err()
                {
                    break;
                }
            }
        }
    }
}

/// A tiny command prompt: `echo WORDS`, `add A B`, `env NAME`, `exit [CODE]`.
/// Returns the exit code.
pub fn repl() -> u8 {
    let terminal = std::io::stdin().is_terminal();
    let mut out = std::io::stdout();
    let _ = writeln!(out, "app repl: commands are echo, add, env, exit");
    loop {
        let _ = write!(out, "> ");
        let _ = out.flush();
        let Some(line) = read_line(terminal) else {
            return 0;
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            [] => continue,
            ["echo", rest @ ..] => rest.join(" "),
            ["add", a, b] => match (a.parse::<i64>(), b.parse::<i64>()) {
                (Ok(a), Ok(b)) => (a + b).to_string(),
                _ => "add: give two whole numbers".to_string(),
            },
            ["env", name] => std::env::var(name).unwrap_or_else(|_| format!("{name} is not set")),
            ["exit"] => return 0,
            ["exit", code] => return code.parse().unwrap_or(1),
            [other, ..] => format!("unknown command {other}"),
        };
        let _ = writeln!(out, "{answer}");
    }
}

/// Reads one line; on a terminal, echoes and edits it byte by byte.
fn read_line(terminal: bool) -> Option<String> {
    let mut stdin = std::io::stdin().lock();
    let mut out = std::io::stdout();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stdin.read(&mut byte) {
            Ok(0) | Err(_) => {
                return (!line.is_empty()).then(|| String::from_utf8_lossy(&line).into_owned())
            }
            Ok(_) => {}
        }
        match byte[0] {
            b'\r' | b'\n' => {
                if terminal {
                    let _ = writeln!(out);
                    let _ = out.flush();
                }
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
            0x7f | 0x08 if terminal => {
                if line.pop().is_some() {
                    let _ = write!(out, "\x08 \x08");
                    let _ = out.flush();
                }
            }
            0x04 if terminal && line.is_empty() => return None,
            b => {
                line.push(b);
                if terminal {
                    let _ = out.write_all(&[b]);
                    let _ = out.flush();
                }
            }
        }
    }
}
