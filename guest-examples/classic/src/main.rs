//! A plain Rust program built for `wasm32-wasip1`, the core-module target
//! many toolchains still emit. mesh runs it as a worker, a cron job or an
//! interactive run, and, published, as a CGI web service (WAGI).
//!
//! - no arguments under CGI (`REQUEST_METHOD` set): answers the request,
//!   echoing its method, path, query, one header and body;
//!   `/big-head?N` answers with one header of N bytes.
//! - `hello`: prints a greeting, its argv and `GREETING` from its env.
//! - `exit N`: prints a line, then exits with code N.
//! - `alloc MIB`: allocates that much memory, touching every page.
//! - `tick MS`: prints `tick N` every MS milliseconds, forever.
//! - `trap`: aborts (a wasm trap).
//! - `cat`: copies stdin to stdout.
//! - `read PATH`: prints the file (the stack's files are at `/`).
//! - `write PATH MIB`: writes that many MiB to the file, and says how far
//!   it got (scratch space is at `/tmp`).
//! - `ls PATH`: lists a directory.
//! - `cwd`: prints the working directory.
//! - `env`: prints every environment variable, sorted.
//! - `stderr TEXT`: writes TEXT to stderr.
//! - `probe`: checks the clocks behave, and prints a random number.

use std::io::{Read, Write};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let word = args.get(1).map(String::as_str);
    if word.is_none() && std::env::var("REQUEST_METHOD").is_ok() {
        return cgi();
    }
    match word.unwrap_or("hello") {
        "hello" => {
            println!("hello from wasip1");
            println!("args: {}", args.join(" "));
            println!(
                "GREETING={}",
                std::env::var("GREETING").unwrap_or_else(|_| "(unset)".into())
            );
        }
        "exit" => {
            let code: i32 = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(1);
            println!("exiting with {code}");
            std::process::exit(code);
        }
        "alloc" => {
            let mib: usize = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(1);
            let mut block = vec![0u8; mib << 20];
            for page in block.chunks_mut(4096) {
                page[0] = 1;
            }
            println!("allocated {mib} MiB ({} pages)", block.len() / 4096);
        }
        "tick" => {
            let ms: u64 = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(1000);
            for n in 1.. {
                println!("tick {n}");
                std::thread::sleep(Duration::from_millis(ms));
            }
        }
        "trap" => std::process::abort(),
        "read" => {
            let path = args.get(2).map_or("", String::as_str);
            match std::fs::read_to_string(path) {
                Ok(text) => print!("{text}"),
                Err(e) => {
                    println!("cannot read {path}: {e}");
                    std::process::exit(4);
                }
            }
        }
        "write" => {
            let path = args.get(2).map_or("", String::as_str);
            let mib: usize = args.get(3).and_then(|c| c.parse().ok()).unwrap_or(1);
            let written = write_mib(path, mib);
            match written {
                Ok(()) => println!("wrote {mib} MiB to {path}"),
                Err((done, e)) => {
                    println!("wrote {done} MiB to {path}, then: {e}");
                    std::process::exit(4);
                }
            }
        }
        "ls" => {
            let path = args.get(2).map_or(".", String::as_str);
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut names: Vec<String> = entries
                        .filter_map(Result::ok)
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect();
                    names.sort();
                    println!("{}", names.join(" "));
                }
                Err(e) => {
                    println!("cannot list {path}: {e}");
                    std::process::exit(4);
                }
            }
        }
        "env" => {
            let mut vars: Vec<(String, String)> = std::env::vars().collect();
            vars.sort();
            for (k, v) in vars {
                println!("{k}={v}");
            }
        }
        "stderr" => eprintln!("{}", args[2..].join(" ")),
        "probe" => probe(),
        "cwd" => match std::env::current_dir() {
            Ok(dir) => println!("cwd={}", dir.display()),
            Err(e) => println!("cwd error: {e}"),
        },
        "cat" => {
            let mut input = Vec::new();
            std::io::stdin().read_to_end(&mut input).unwrap();
            std::io::stdout().write_all(&input).unwrap();
        }
        other => {
            eprintln!("classic: unknown command {other:?}");
            std::process::exit(2);
        }
    }
}

/// Clocks and randomness, as facts that hold under any correct host.
fn probe() {
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher as _;
    let t0 = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(20));
    let slept = t0.elapsed();
    println!(
        "monotonic clock {}",
        if slept >= Duration::from_millis(20) && slept < Duration::from_secs(5) {
            "ok"
        } else {
            "wrong"
        }
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // After 2025-01-01 and before 2100.
    println!(
        "wall clock {}",
        if (1_735_689_600..4_102_444_800).contains(&now) {
            "ok"
        } else {
            "wrong"
        }
    );
    // Seeded from the host's random source: differs from run to run.
    println!("random {:016x}", RandomState::new().hash_one(1));
}

/// Writes `mib` MiB to `path`; on failure, how many whole MiB went in.
fn write_mib(path: &str, mib: usize) -> Result<(), (usize, std::io::Error)> {
    let mut file = std::fs::File::create(path).map_err(|e| (0, e))?;
    let block = vec![b'x'; 1 << 20];
    for done in 0..mib {
        file.write_all(&block).map_err(|e| (done, e))?;
    }
    file.flush().map_err(|e| (mib, e))
}

/// One CGI request: headers in the environment, body on stdin.
fn cgi() {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body).unwrap();
    let path = var("PATH_INFO");
    if path == "/missing" {
        print!("Status: 404 Not Found\nContent-Type: text/plain\n\nno such page\n");
        return;
    }
    if path == "/trap" {
        std::process::abort();
    }
    if path == "/big-head" {
        // One header of QUERY_STRING bytes: a head no client could send.
        let n: usize = var("QUERY_STRING").parse().unwrap_or(0);
        print!(
            "Content-Type: text/plain\nX-Big: {}\n\nbig head\n",
            "a".repeat(n)
        );
        return;
    }
    if let Some(file) = path.strip_prefix("/static/") {
        match std::fs::read(format!("/static/{file}")) {
            Ok(bytes) => {
                print!("Content-Type: text/plain\n\n");
                std::io::stdout().write_all(&bytes).unwrap();
            }
            Err(e) => print!("Status: 404 Not Found\nContent-Type: text/plain\n\n{e}\n"),
        }
        return;
    }
    print!("Content-Type: text/plain\nX-Served-By: classic\n\n");
    println!("method={}", var("REQUEST_METHOD"));
    println!("path={path}");
    println!("query={}", var("QUERY_STRING"));
    println!("agent={}", var("HTTP_USER_AGENT"));
    println!("body={}", String::from_utf8_lossy(&body));
}
