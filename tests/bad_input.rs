//! Bad input: one clear error line, a non-zero exit, and no change to the
//! state (checked by comparing `service ls` and `stack versions` before
//! and after).

use crate::support;

use std::io::{Read as _, Write as _};

use support::{app_wasm, create_args, guest, Daemon};

/// Everything a user can see of the state.
fn snapshot(d: &Daemon) -> String {
    let mut services = d.services();
    // Instance status moves on its own; desired state must not.
    for s in &mut services {
        s.instances.clear();
    }
    format!(
        "{}\n{}\n{}",
        serde_json::to_string(&services).unwrap(),
        d.ok(&["stack", "ls", "--json"]),
        d.ok(&["stack", "versions", "app", "--json"])
    )
}

#[test]
fn bad_input_is_refused_with_one_line_and_changes_nothing() {
    let d = Daemon::start();
    d.create("worker", &[], &["queue"]);
    d.create("c", &["--stack", "a-b", "--instances", "0"], &["queue"]);
    let app = app_wasm();
    let app = app.to_str().unwrap();
    let long_stack = "s".repeat(40);
    let long_name = "n".repeat(30);
    let scratch = d.scratch();
    let not_wasm = scratch.join("notes.wasm");
    std::fs::write(&not_wasm, "just some text").unwrap();
    let core = scratch.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let empty_component = scratch.join("lib.wasm");
    std::fs::write(&empty_component, b"\0asm\x0d\0\x01\0").unwrap();
    let nothing_here = scratch.join("nothing-here");
    let blog = guest("blog");
    let before = snapshot(&d);

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            create_args("x", &[], &[not_wasm.to_str().unwrap()]),
            "is not a WebAssembly file",
        ),
        (
            create_args("x", &[], &[core.to_str().unwrap()]),
            "core WebAssembly module without a `_start` function",
        ),
        (
            create_args("x", &[], &[empty_component.to_str().unwrap()]),
            "a service needs `wasi:cli/run`",
        ),
        (
            create_args("x", &[], &["missing.wasm"]),
            "cannot read missing.wasm",
        ),
        (
            create_args("x", &[], &["ap", "queue"]),
            "no component named 'ap' in stack app v1 (have: app); did you mean 'app'?",
        ),
        (
            create_args("worker", &[], &["app", "queue"]),
            "service worker already exists",
        ),
        (
            create_args("x", &["--instances", "-1"], &["app"]),
            "invalid instance count -1",
        ),
        (
            create_args("x", &["--memory", "lots"], &["app"]),
            "invalid memory limit `lots`: use a size from 1Mi to",
        ),
        (
            create_args("x", &["--memory", "100Gi"], &["app"]),
            "invalid memory limit `100Gi`: use a size from 1Mi to",
        ),
        (
            create_args("x", &["--memory", "10Ti"], &["app"]),
            "invalid memory limit `10Ti`: use a size from 1Mi to",
        ),
        (
            create_args("x", &["--env", "NOEQUALS"], &["app"]),
            "invalid --env `NOEQUALS`",
        ),
        (
            create_args("Bad_Name", &[], &["app"]),
            "invalid service name",
        ),
        (
            create_args("x", &["--stack", "NoSuch"], &["app"]),
            "invalid stack name",
        ),
        (
            create_args("x", &["--stack", "empty"], &["app"]),
            "stack empty has no code yet",
        ),
        (
            vec!["svc", "create", "-n", "x"],
            "the following required arguments were not provided: <ARGV>... (see `mesh service create --help`)",
        ),
        (
            vec!["servce", "ls"],
            "unrecognized subcommand 'servce'; did you mean 'svc' or 'service'? (see `mesh --help`)",
        ),
        (
            vec!["svc", "update", "x", "--instance", "2"],
            "did you mean '--instances'? (see `mesh service update --help`)",
        ),
        (
            vec!["svc", "update", "nope", "--instances", "2"],
            "no service named nope in stack app (stack app has: worker)",
        ),
        (
            vec!["svc", "update", "worker", "--instances", "-1"],
            "invalid instance count -1",
        ),
        (
            vec!["svc", "update", "worker", "--command", "ap queue"],
            "no component named 'ap'",
        ),
        (vec!["svc", "delete", "nope"], "no service named nope"),
        (
            vec!["svc", "logs", "c"],
            "no service named c in stack app: c is in stack a-b; add --stack a-b",
        ),
        (vec!["svc", "delete"], "which service?"),
        (vec!["svc", "logs", "-n", "nope"], "no service named nope"),
        (vec!["stack", "versions", "nope"], "no stack named nope"),
        (vec!["stack", "rollback", "app"], "no version before v1"),
        (
            vec!["stack", "rollback", "app", "--to", "9"],
            "has no version v9",
        ),
        (
            vec!["stack", "deploy", "app", nothing_here.to_str().unwrap()],
            "cannot read",
        ),
        (vec!["svc", "frobnicate"], "unrecognized subcommand"),
        (
            create_args("b-c", &["--stack", "a"], &[app, "queue"]),
            "service b-c in stack a would share the intra-DNS name a-b-c with service c in stack a-b",
        ),
        (
            create_args(&long_name, &["--stack", &long_stack], &[app, "queue"]),
            "longer than a DNS label's 63 characters",
        ),
        (
            create_args("x", &["--stack", "blogs", "--schedule", "@hourly"], &[blog.to_str().unwrap()]),
            "component 'blog' does not export `wasi:cli/run`, so x cannot run on a schedule",
        ),
        (
            vec!["svc", "update", "worker", "--schedule", "61 * * * *"],
            "minute",
        ),
    ];
    for (args, expected) in &cases {
        let err = d.fails(args);
        assert!(
            err.contains(expected),
            "mesh {args:?}: expected `{expected}` in: {err}"
        );
        assert_eq!(snapshot(&d), before, "mesh {args:?} changed the state");
    }
}

#[test]
fn the_api_requires_a_valid_token() {
    let d = Daemon::start();
    let api = d.info["api_url"].as_str().unwrap().to_string();
    let wrong = d.mesh_as("mesh_not_the_token", &["service", "ls"]);
    assert!(!wrong.status.success());
    assert_eq!(
        String::from_utf8_lossy(&wrong.stderr).trim(),
        "error: invalid API token"
    );
    // Changes with a wrong token change nothing.
    d.create("worker", &[], &["queue"]);
    let before = snapshot(&d);
    for args in [
        create_args("intruder", &[], &["app", "queue"]),
        vec!["svc", "update", "worker", "--instances", "3"],
        vec!["svc", "delete", "worker"],
        vec!["stack", "rollback", "app"],
    ] {
        let out = d.mesh_as("mesh_not_the_token", &args);
        assert!(!out.status.success(), "mesh {args:?} succeeded");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim(),
            "error: invalid API token"
        );
        assert_eq!(snapshot(&d), before, "mesh {args:?} changed the state");
    }

    // No token at all, over a raw socket: 401 with a JSON error.
    let addr = api.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /v1/services HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("missing API token"), "{answer}");

    // The right token from the environment works, as the Contract says.
    let right = d
        .mesh_cmd(&["service", "ls", "--json"])
        .env("MESH_API_URL", &api)
        .env("MESH_TOKEN", d.info["token"].as_str().unwrap())
        .env("MESH_DATA_DIR", "/nonexistent")
        .output()
        .unwrap();
    assert!(
        right.status.success(),
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );
}

#[test]
fn oversized_uploads_are_refused() {
    let d = Daemon::start();
    let big = d.scratch().join("big.wasm");
    // 65 MiB of a valid-looking header and zeros: over the 64 MiB default.
    let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
    bytes.resize(65 * 1024 * 1024, 0);
    std::fs::write(&big, bytes).unwrap();
    let err = d.fails(&create_args("big", &[], &[big.to_str().unwrap()]));
    assert!(
        err.contains("larger than the daemon's upload limit of 64 MiB"),
        "{err}"
    );
    assert!(d.services().is_empty());
}

#[test]
fn every_command_has_help_with_examples() {
    let d = Daemon::start();
    // Walk the whole command tree from `mesh --help`: every command and
    // group lists its subcommands under `Commands:`.
    let mut todo: Vec<Vec<String>> = vec![Vec::new()];
    let mut seen = 0;
    while let Some(path) = todo.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = d.ok(&args);
        assert!(
            out.contains("Examples:"),
            "mesh {args:?} has no examples:\n{out}"
        );
        seen += 1;
        let commands = out
            .split("Commands:\n")
            .nth(1)
            .map(|rest| rest.split("\n\n").next().unwrap_or(""))
            .unwrap_or("");
        // `  name  about`; wrapped text is indented further.
        for line in commands.lines().filter(|l| !l.starts_with("   ")) {
            let name = line.split_whitespace().next().unwrap_or("");
            if !name.is_empty() && name != "help" {
                let mut sub = path.clone();
                sub.push(name.to_string());
                todo.push(sub);
            }
        }
    }
    assert!(seen >= 20, "only {seen} commands found");
    // The seed's spellings: svc/service, -n/--name/--n.
    d.ok(&[
        "service",
        "create",
        "--n",
        "seed",
        "--",
        app_wasm().to_str().unwrap(),
        "send-emails",
    ]);
    d.ok(&["svc", "update", "--name", "seed", "--instances", "0"]);
    d.ok(&["svc", "delete", "-n", "seed"]);
}
