//! `app`: the seed's example program, one WebAssembly component whose first
//! argument picks a behaviour. The platform runs it as `app queue`,
//! `app send-emails`, ... exactly as a PaaS runs `node app.js queue`.
//!
//! Some behaviours exist to misbehave on purpose (`trap`, `oom`, `spin`, `flood`,
//! `exit N`) so the platform's supervisor can be seen handling them.
//!
//! The same component also exports `wasi:http/incoming-handler` (see
//! `http.rs`): one `app.wasm`, two doors. `app server` is what its web
//! service's command says; requests go to the handler, not to `main`.

mod client;
mod http;
mod redis;
mod repl;

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
        "flood" => flood(),
        "count" => count(),
        "cat" => repl::cat(),
        "repl" => exit_code(repl::repl()),
        "sleep" => sleep(args.get(2).map(String::as_str)),
        "server" => server(),
        _ => {
            eprintln!(
                "usage: app <queue|send-emails|env|exit N|trap|oom|spin|flood|count|sleep MS|server|cat|repl> (got {:?})",
                args.get(1..).unwrap_or_default()
            );
            exit_code(2);
        }
    }
}

/// A long-running worker. With `REDIS_URL` set it takes jobs from a Redis
/// list (see [`redis_worker`]); without, it prints one heartbeat line a
/// second (`HEARTBEAT_MS`), forever. A stack whose files hold `/crash`
/// makes it fail at once (a bad release).
fn queue() {
    if let Ok(why) = std::fs::read_to_string("/crash") {
        eprintln!("queue: cannot start: {}", why.trim());
        exit_code(3);
    }
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => redis_worker(&url),
        _ => heartbeat(),
    }
}

fn heartbeat() {
    let interval = std::env::var("HEARTBEAT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    for beat in 1u64.. {
        println!("queue: heartbeat {beat}");
        std::thread::sleep(Duration::from_millis(interval));
    }
}

/// A real queue worker: `BLPOP <QUEUE> 1` in a loop; for each job `J` it
/// prints `queue: job J` and pushes `done:J:<MESH_INSTANCE>` onto
/// `<RESULTS>` (`QUEUE` defaults to `jobs`, `RESULTS` to `results`).
/// Connection errors are printed to stderr and retried a second later.
fn redis_worker(url: &str) -> ! {
    let config = match redis::Config::from_url(url) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("queue: bad REDIS_URL: {e}");
            exit_code(2);
        }
    };
    let queue = std::env::var("QUEUE").unwrap_or_else(|_| "jobs".to_string());
    let results = std::env::var("RESULTS").unwrap_or_else(|_| "results".to_string());
    let instance = std::env::var("MESH_INSTANCE").unwrap_or_else(|_| "?".to_string());
    loop {
        let Err(e) = work_redis_queue(&config, &queue, &results, &instance);
        eprintln!("queue: redis error: {e}");
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// One connection's worth of work: returns only when something fails.
fn work_redis_queue(
    config: &redis::Config,
    queue: &str,
    results: &str,
    instance: &str,
) -> std::io::Result<std::convert::Infallible> {
    use redis::Value;

    let mut redis = redis::Connection::open(config)?;
    println!("queue: connected to {config}, waiting for jobs on {queue:?}");
    loop {
        let job = match redis.command_ok(&[b"BLPOP", queue.as_bytes(), b"1"])? {
            // Timed out with nothing to do: ask again.
            Value::Array(None) | Value::Bulk(None) => continue,
            Value::Array(Some(reply)) => match <[Value; 2]>::try_from(reply) {
                Ok([_, Value::Bulk(Some(job))]) => job,
                Ok(reply) => return Err(unexpected("BLPOP", &reply)),
                Err(reply) => return Err(unexpected("BLPOP", &reply)),
            },
            reply => return Err(unexpected("BLPOP", &reply)),
        };
        println!("queue: job {}", String::from_utf8_lossy(&job));
        let mut done = b"done:".to_vec();
        done.extend_from_slice(&job);
        done.push(b':');
        done.extend_from_slice(instance.as_bytes());
        match redis.command_ok(&[b"RPUSH", results.as_bytes(), &done])? {
            Value::Integer(_) => {}
            reply => return Err(unexpected("RPUSH", &reply)),
        }
    }
}

fn unexpected(command: &str, reply: &dyn std::fmt::Debug) -> std::io::Error {
    std::io::Error::other(format!("unexpected reply to {command}: {reply:?}"))
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
/// A noisy guest: writes log lines as fast as it can, forever.
fn flood() {
    let mut n: u64 = 0;
    loop {
        n += 1;
        println!("flood: line {n} of a guest that will not stop talking");
    }
}

fn spin() {
    println!("spin: looping forever");
    let _ = std::io::stdout().flush();
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}
