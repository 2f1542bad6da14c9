//! The real `enifab` binary, as someone exposing it would run it: `serve` refuses to listen
//! beyond loopback without credentials unless `--insecure` says so (and then says it loudly);
//! `--fabric-advertise` is checked at start; the CLI signs with the AccessKey it is given by
//! flag, file or environment, and an unsigned CLI call to a server with credentials is refused
//! with the cloud's code (issue 10's `enifab emulator InjectFault` attack); `enifab health`
//! needs no key.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use enifab_tests::{ChildServer, enifab_binary};

const AK: &str = "LTAI5tExposureKey";
const SECRET: &str = "exposure-secret";

/// `enifab serve` with `args`, without any AccessKey in its environment.
fn serve(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(enifab_binary());
    cmd.args(["serve", "--data-dir"]).arg(dir).args(args);
    for var in ["ENIFAB_ACCESS_KEY_ID", "ENIFAB_ACCESS_KEY_SECRET", "ENIFAB_ACCESS_KEY_FILE", "ENIFAB_INSECURE"] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "warn").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

/// Start `cmd`; its stderr lines until it says where it serves (then it is killed), or until it
/// exits; and whether it was still serving.
fn start_and_read(mut cmd: Command) -> (Vec<String>, bool) {
    let mut child = cmd.spawn().expect("spawn enifab serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let mut serving = false;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        serving |= line.contains("serving on");
        lines.push(line);
        // The warning, if any, follows the two lines that say where it serves.
        if serving && lines.iter().any(|l| l.contains("OpenAPI on the same port")) {
            std::thread::sleep(Duration::from_millis(200));
            lines.extend(rx.try_iter());
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    (lines, serving)
}

#[test]
fn serve_refuses_to_listen_beyond_loopback_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--listen", "0.0.0.0:0", "--fabric-listen", "127.0.0.1:0"][..],
        &["--listen", "127.0.0.1:0", "--fabric-listen", "0.0.0.0:0"][..],
        &["--listen", "127.0.0.1:0", "--fabric-listen", "127.0.0.1:0", "--https-listen", "0.0.0.0:0"][..],
    ] {
        let out = serve(dir.path(), args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("refusing to listen beyond loopback"), "{args:?}: {stderr}");
        assert!(stderr.contains("--insecure"), "the way out is named: {stderr}");
    }

    // Said with --insecure, it serves, and says so loudly.
    let (lines, serving) =
        start_and_read(serve(dir.path(), &["--listen", "0.0.0.0:0", "--fabric-listen", "127.0.0.1:0", "--insecure"]));
    assert!(serving, "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("*** INSECURE")), "{lines:#?}");

    // With an AccessKey it serves beyond loopback, without the warning.
    let mut cmd = serve(dir.path(), &["--listen", "0.0.0.0:0", "--fabric-listen", "0.0.0.0:0"]);
    cmd.env("ENIFAB_ACCESS_KEY_ID", AK).env("ENIFAB_ACCESS_KEY_SECRET", SECRET);
    let (lines, serving) = start_and_read(cmd);
    assert!(serving, "{lines:#?}");
    assert!(!lines.iter().any(|l| l.contains("INSECURE")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("signatures required")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("the address that routes to each shim")), "a wildcard fabric: {lines:#?}");
}

#[test]
fn the_fabric_advertise_address_is_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (advertise, why) in [
        ("10.1.2.3:6081", "listens on loopback"),
        ("127.0.0.1:0", "port 0"),
        ("224.0.0.1:6081", "multicast"),
        ("no-such-host.invalid:6081", "resolve"),
    ] {
        let out = serve(
            dir.path(),
            &["--listen", "127.0.0.1:0", "--fabric-listen", "127.0.0.1:0", "--fabric-advertise", advertise],
        )
        .output()
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{advertise}: {stderr}");
        assert!(stderr.contains(why), "{advertise}: {stderr}");
    }
    let (lines, serving) = start_and_read(serve(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--fabric-listen", "127.0.0.1:0", "--fabric-advertise", "localhost:16081"],
    ));
    assert!(serving, "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("shims are told 127.0.0.1:16081")), "{lines:#?}");
}

/// `enifab --endpoint ADDR ARGS…` with `env` (and no other AccessKey): exit code, stdout, stderr.
fn cli(addr: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(enifab_binary());
    cmd.args(["--endpoint", addr]).args(args);
    for var in ["ENIFAB_ACCESS_KEY_ID", "ENIFAB_ACCESS_KEY_SECRET", "ENIFAB_ACCESS_KEY_FILE"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn the_cli_signs_with_the_access_key_and_unsigned_calls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::spawn(dir.path(), &["--access-key-id", AK, "--access-key-secret", SECRET]);
    let addr = server.addr.to_string();
    let signed = [("ENIFAB_ACCESS_KEY_ID", AK), ("ENIFAB_ACCESS_KEY_SECRET", SECRET)];

    // Issue 10: an unsigned InjectFault made the next signed calls fail.
    let inject =
        ["emulator", "InjectFault", "--TargetAction", "DescribeVpcs", "--Code", "ServiceUnavailable", "--Count", "3"];
    let (code, _, stderr) = cli(&addr, &inject, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.starts_with("MissingAccessKeyId:"), "{stderr}");
    for _ in 0..3 {
        let (code, stdout, stderr) = cli(&addr, &["vpc", "DescribeVpcs"], &signed);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("RequestId"), "{stdout}");
    }

    let (code, _, stderr) =
        cli(&addr, &["vpc", "DescribeVpcs"], &[("ENIFAB_ACCESS_KEY_ID", AK), ("ENIFAB_ACCESS_KEY_SECRET", "wrong")]);
    assert_eq!(code, 1);
    assert!(stderr.starts_with("SignatureDoesNotMatch:"), "{stderr}");

    // Flags and files do as the environment does.
    let (code, _, stderr) =
        cli(&addr, &["--access-key-id", AK, "--access-key-secret", SECRET, "fabric", "counters"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("# the CLI signs with the first\n{AK} {SECRET}\n")).unwrap();
    let (code, _, stderr) = cli(&addr, &["--access-key-file", keys.to_str().unwrap(), "ecs", "DescribeInstances"], &[]);
    assert_eq!(code, 0, "{stderr}");

    // Health stays open: what a container's health check asks, without a key.
    let (code, stdout, stderr) = cli(&addr, &["health"], &[]);
    assert_eq!((code, stdout.trim_end()), (0, format!("{addr}: SERVING").as_str()), "{stderr}");
    drop(server);
    let (code, stdout, _) = cli(&addr, &["health", "--timeout-ms", "500"], &[]);
    assert_eq!(code, 1, "a stopped emulator is not healthy: {stdout}");
}
