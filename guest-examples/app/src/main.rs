//! `app`: the seed's example program, one WebAssembly component whose first
//! argument picks a behaviour. The platform runs it as `app queue`,
//! `app send-emails`, ... exactly as a PaaS runs `node app.js queue`.
//!
//! Some behaviours exist to misbehave on purpose (`trap`, `oom`, `spin`,
//! `exit N`) so the platform's supervisor can be seen handling them.
//!
//! The same component also exports `wasi:http/incoming-handler` (see
//! `http.rs`): one `app.wasm`, two doors. `app server` is what its web
//! service's command says; requests go to the handler, not to `main`.

mod http;

use std::io::Write;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let command = args.get(1).map(String::as_str).unwrap_or("");
    match command {
        "queue" => queue(),
        "send-emails" => send_emails(),
        "env" => print_env(&args),
        "exit" => exit_with(args.get(2).map(String::as_str)),
        "trap" => trap(),
        "oom" => oom(),
        "spin" => spin(),
        "count" => count(),
        "sleep" => sleep(args.get(2).map(String::as_str)),
        "server" => server(),
        _ => {
            eprintln!(
                "usage: app <queue|send-emails|env|exit N|trap|oom|spin|count|sleep MS|server> (got {:?})",
                args.get(1..).unwrap_or_default()
            );
            exit_code(2);
        }
    }
}

/// A long-running worker: one heartbeat line a second, forever.
fn queue() {
    let interval = std::env::var("HEARTBEAT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    for beat in 1u64.. {
        println!("queue: heartbeat {beat}");
        std::thread::sleep(Duration::from_millis(interval));
    }
}

/// `app server` run as a plain command: the requests go to the exported
/// `wasi:http/incoming-handler`, never to `main`, so there is nothing to do
/// here but say so and stay alive.
fn server() {
    println!("server: serving wasi:http/incoming-handler; waiting for requests");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A one-shot job: does its work, says so, exits 0.
fn send_emails() {
    println!("send-emails: sent 3 emails");
}

/// Prints argv and the environment, sorted, one per line.
fn print_env(args: &[String]) {
    println!("argv: {}", args.join(" "));
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    vars.sort();
    for (key, value) in vars {
        println!("env: {key}={value}");
    }
}

fn exit_with(code: Option<&str>) {
    let code: u8 = code.and_then(|c| c.parse().ok()).unwrap_or(1);
    println!("exit: leaving with code {code}");
    exit_code(code);
}

/// Exits with an exact status code through `wasi:cli/exit`.
fn exit_code(code: u8) -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    wasip2::cli::exit::exit_with_code(code);
    // A host without `exit-with-code` returns here: fall back to the
    // ok/err form, which keeps at least success versus failure.
    std::process::exit(i32::from(code))
}

fn trap() {
    println!("trap: about to execute `unreachable`");
    let _ = std::io::stdout().flush();
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

/// Grows memory one MiB at a time, touching every page, until it fails.
fn oom() {
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        let chunk = vec![1u8; 1 << 20];
        held.push(chunk);
        if held.len().is_multiple_of(16) {
            println!("oom: holding {} MiB", held.len());
        }
    }
}

/// Counts runs in this instance's memory: a fresh instance always prints
/// `count: 1`, an instance reused across runs would print more.
fn count() {
    use std::sync::atomic::{AtomicU32, Ordering};
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let n = RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    println!("count: {n}");
}

/// A slow job: sleeps for the given milliseconds, then says so.
fn sleep(ms: Option<&str>) {
    let ms: u64 = ms.and_then(|m| m.parse().ok()).unwrap_or(1000);
    println!("sleep: sleeping {ms} ms");
    std::thread::sleep(Duration::from_millis(ms));
    println!("sleep: done");
}

/// An endless loop that never yields and never calls the host.
fn spin() {
    println!("spin: looping forever");
    let _ = std::io::stdout().flush();
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}
