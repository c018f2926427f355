//! A plain Rust program built for `wasm32-wasip1`, the core-module target
//! many toolchains still emit. mesh runs it as a worker, a cron job or an
//! interactive run, and, published, as a CGI web service (WAGI).
//!
//! - no arguments under CGI (`REQUEST_METHOD` set): answers the request,
//!   echoing its method, path, query, one header and body.
//! - `hello`: prints a greeting, its argv and `GREETING` from its env.
//! - `exit N`: prints a line, then exits with code N.
//! - `alloc MIB`: allocates that much memory, touching every page.
//! - `tick MS`: prints `tick N` every MS milliseconds, forever.
//! - `trap`: aborts (a wasm trap).
//! - `cat`: copies stdin to stdout.

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
    print!("Content-Type: text/plain\nX-Served-By: classic\n\n");
    println!("method={}", var("REQUEST_METHOD"));
    println!("path={path}");
    println!("query={}", var("QUERY_STRING"));
    println!("agent={}", var("HTTP_USER_AGENT"));
    println!("body={}", String::from_utf8_lossy(&body));
}
