//! Property tests over what the outside world hands the daemon as text:
//! cron specs, endpoints and URLs, sizes and durations, address ranges,
//! outbound policies, the control API's JSON bodies, and container image
//! uploads and layers (which must never write outside their root). Each target runs a
//! fixed number of generated inputs (`FUZZ_CASES`, default 2,000), checks
//! that nothing panics and that what parses means what it says, and prints
//! how many inputs it ran.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{TimeZone as _, Utc};
use mesh_host::api::wire::{
    CreateEnv, CreateService, DeployRequest, PublishRequest, UpdateEnv, UpdateService,
};
use mesh_host::cron::{parse_duration, Schedule};
use mesh_host::model::{
    format_memory, parse_memory, parse_ranges, special, Cidr, Endpoint, Outbound,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000)
}

/// Runs `check` on `cases()` inputs from `strategy` and prints the count.
fn fuzz<S: Strategy>(name: &str, strategy: S, check: impl Fn(S::Value)) {
    let runs = AtomicU64::new(0);
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |input| {
            runs.fetch_add(1, Ordering::Relaxed);
            check(input);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    eprintln!("fuzz {name}: {} inputs", runs.load(Ordering::Relaxed));
}

/// Text made of the pieces a parser cares about, and some it does not.
fn tokens(pieces: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => prop::sample::select(pieces).prop_map(str::to_string),
            1 => any::<String>(),
            1 => "[0-9]{1,12}",
        ],
        0..8,
    )
    .prop_map(|parts| parts.concat())
}

#[test]
fn cron_specs_parse_or_say_why_and_next_runs_lie_ahead() {
    let pieces: &[&str] = &[
        " ", "*", "*/", ",", "-", "/", "@every ", "@hourly", "@daily", "@weekly", "@monthly",
        "@yearly", "@reboot", "mon", "fri", "jan", "dec", "L", "W", "#", "?", "s", "m", "h", "d",
        "0", "59", "23", "31", "12", "7",
    ];
    let zones = prop::sample::select(vec![
        None,
        Some("UTC"),
        Some("Europe/Berlin"),
        Some("Mars/Base"),
    ]);
    let now = Utc.with_ymd_and_hms(2026, 3, 29, 0, 30, 0).unwrap();
    fuzz(
        "cron",
        (tokens(pieces), zones),
        |(spec, zone)| match Schedule::parse(&spec, zone) {
            Ok(schedule) => {
                if let Some(next) = schedule.next_after(now) {
                    assert!(
                        next > now,
                        "{spec:?} {zone:?}: next {next} is not after {now}"
                    );
                }
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        },
    );
}

#[test]
fn endpoints_parse_to_urls_that_parse_back_the_same() {
    let pieces: &[&str] = &[
        "http://",
        "https://",
        "ftp://",
        "www",
        ".",
        "example",
        "com",
        ":",
        "8080",
        "/",
        "blog",
        "%2F",
        "%zz",
        "?",
        "#",
        "@",
        "-",
        "_",
        "..",
        "[::1]",
        "127.0.0.1",
        "*",
    ];
    let paths = prop::option::of(tokens(&["/", "a", "%41", "..", "//", " ", "~"]));
    fuzz("endpoints", (tokens(pieces), paths), |(text, path)| {
        if let Ok(e) = Endpoint::parse(&text, path.as_deref(), "localhost") {
            assert!(e.path.starts_with('/'), "{text:?}: {e:?}");
            assert!(!e.host.is_empty() && e.host.len() <= 253, "{text:?}: {e:?}");
            let again = Endpoint::parse(&e.url(), None, "localhost")
                .unwrap_or_else(|err| panic!("{text:?} -> {} does not parse: {err}", e.url()));
            assert_eq!(again, e, "{text:?}");
        }
    });
}

#[test]
fn sizes_and_durations_parse_what_is_printed_and_never_overflow() {
    fuzz("sizes", any::<String>(), |text| {
        let _ = parse_memory(&text);
        let _ = parse_duration(&text);
    });
    let units = prop::sample::select(vec!["", "k", "Ki", "Mi", "MiB", "G", "Gi", "GB", " GiB"]);
    fuzz("size units", (any::<u64>(), units), |(n, unit)| {
        let text = format!("{n}{unit}");
        if let Ok(bytes) = parse_memory(&text) {
            assert!(bytes >= n, "{text}");
            assert_eq!(parse_memory(&format_memory(bytes)), Ok(bytes), "{text}");
        }
    });
    let units = prop::sample::select(vec!["ms", "s", "m", "h", "d", "", "x"]);
    fuzz("durations", (0u64..u64::MAX, units), |(n, unit)| {
        let text = format!("{n}{unit}");
        if let Ok(d) = parse_duration(&text) {
            let scale = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                _ => return,
            };
            assert_eq!(d.as_millis(), u128::from(n) * scale, "{text}");
        }
    });
}

#[test]
fn addresses_and_policies_classify_the_same_whatever_the_spelling() {
    fuzz("address classes", any::<[u8; 4]>(), |octets| {
        let v4 = Ipv4Addr::from(octets);
        let mapped = IpAddr::V6(v4.to_ipv6_mapped());
        assert_eq!(special(mapped), special(IpAddr::V4(v4)), "{v4}");
        let nat64 = IpAddr::V6(Ipv6Addr::from(
            (0x0064_ff9b_u128 << 96) | u128::from(u32::from(v4)),
        ));
        assert_eq!(special(nat64), special(IpAddr::V4(v4)), "{v4} via NAT64");
        let range = Cidr::parse(&format!("{v4}/32")).unwrap();
        assert!(range.contains(IpAddr::V4(v4)) && range.contains(mapped));
    });
    let pieces: &[&str] = &[
        "10.", "0.", "255.", "/", "8", "32", "33", "::", "fd00", ":", ",", "none", " ", "1",
    ];
    fuzz("ranges", tokens(pieces), |text| {
        if let Ok(ranges) = parse_ranges(&text) {
            let shown: Vec<String> = ranges.iter().map(ToString::to_string).collect();
            assert_eq!(
                parse_ranges(&shown.join(",")).ok(),
                Some(ranges),
                "{text:?}"
            );
        }
    });
    let pieces: &[&str] = &[
        "allow",
        "deny",
        "*.",
        "example.com",
        ":",
        "443",
        "99999",
        ",",
        " ",
        "127.0.0.1",
        "!",
    ];
    fuzz("outbound policies", tokens(pieces), |text| {
        if let Ok(policy) = Outbound::parse(&text) {
            let again = match &policy {
                Outbound::AllowList(patterns) => Outbound::parse(&patterns.join(",")),
                other => Outbound::parse(&other.to_string()),
            };
            assert_eq!(again.ok(), Some(policy), "{text:?}");
        }
    });
}

#[test]
fn api_bodies_deserialize_or_fail_without_panicking() {
    let json = prop::collection::vec(
        prop_oneof![
            prop::sample::select(vec![
                "{",
                "}",
                "[",
                "]",
                ",",
                ":",
                "\"name\"",
                "\"command\"",
                "\"instances\"",
                "\"memory\"",
                "\"env\"",
                "\"endpoint\"",
                "\"components\"",
                "\"max_instances\"",
                "\"outbound\"",
                "null",
                "true",
                "-1",
                "1e400",
                "18446744073709551616",
                "\"x\"",
                "\"\\u0000\"",
            ])
            .prop_map(str::to_string),
            any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat());
    fuzz("api bodies", json, |body| {
        let bytes = body.as_bytes();
        let _ = serde_json::from_slice::<CreateService>(bytes);
        let _ = serde_json::from_slice::<UpdateService>(bytes);
        let _ = serde_json::from_slice::<CreateEnv>(bytes);
        let _ = serde_json::from_slice::<UpdateEnv>(bytes);
        let _ = serde_json::from_slice::<PublishRequest>(bytes);
        let _ = serde_json::from_slice::<DeployRequest>(bytes);
    });
}

/// One entry of a generated layer: its name, kind and link target.
type LayerEntry = (String, u8, String);

fn layer_entries() -> impl Strategy<Value = Vec<LayerEntry>> {
    let part = prop::sample::select(
        &[
            "..",
            ".",
            "a",
            "b",
            "etc",
            "",
            ".wh.a",
            ".wh..wh..opq",
            "/",
            "outside",
        ][..],
    );
    let path = prop::collection::vec(part, 1..5).prop_map(|p| p.join("/"));
    prop::collection::vec((path.clone(), 0u8..4, path), 0..12)
}

/// A layer tar with exactly these raw names (hostile ones included).
fn raw_layer(entries: &[LayerEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, target) in entries {
        let mut header = tar::Header::new_gnu();
        let old = header.as_old_mut();
        let n = name.len().min(99);
        old.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        let t = target.len().min(99);
        old.linkname[..t].copy_from_slice(&target.as_bytes()[..t]);
        let (kind, body): (tar::EntryType, &[u8]) = match kind {
            0 => (tar::EntryType::Regular, b"data"),
            1 => (tar::EntryType::Directory, b""),
            2 => (tar::EntryType::Symlink, b""),
            _ => (tar::EntryType::Link, b""),
        };
        header.set_entry_type(kind);
        header.set_mode(0o755);
        header.set_size(body.len() as u64);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

#[test]
fn image_layers_never_write_outside_the_root() {
    use mesh_host::container::layer::{apply, Budget};
    fuzz("image layer", layer_entries(), |entries| {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        let outside = base.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("keep"), "keep").unwrap();
        let tar = raw_layer(&entries);
        let mut budget = Budget {
            bytes: 1 << 20,
            entries: 100,
            limit: "the fuzzer's limit".into(),
        };
        // Twice: the second layer lands on what the first made (links).
        let _ = apply(&root, &tar[..], "fuzz", &mut budget);
        let _ = apply(&root, &tar[..], "fuzz", &mut budget);
        let mut top: Vec<String> = std::fs::read_dir(base.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        top.sort();
        assert_eq!(top, ["outside", "root"], "{entries:?}");
        let beside: Vec<String> = std::fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(beside, ["keep"], "{entries:?}");
        assert_eq!(
            std::fs::read_to_string(outside.join("keep")).unwrap(),
            "keep"
        );
    });
}

#[test]
fn image_uploads_of_any_bytes_are_refused_without_a_panic() {
    fuzz(
        "image upload",
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..4096),
            layer_entries().prop_map(|e| raw_layer(&e)),
        ],
        |bytes| {
            let dir = tempfile::tempdir().unwrap();
            let upload = dir.path().join("upload.tar");
            std::fs::write(&upload, &bytes).unwrap();
            let dest = dir.path().join("images/x");
            if mesh_host::container::image::unpack(
                "fuzz",
                &upload,
                &dest,
                mesh_host::container::image::Room::platform(),
            )
            .is_err()
            {
                assert!(!dest.exists());
            }
        },
    );
}
