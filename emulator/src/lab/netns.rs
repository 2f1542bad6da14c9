//! Network namespaces for the lab: create and delete named ones (`/var/run/netns/<name>`, as
//! `ip netns` does, so `ip -n <name> …` works on them), run a closure inside one, set sysctls.
//!
//! Entering a namespace is per thread, so [`run_in`] spawns a fresh OS thread, enters the
//! namespace there, runs the closure and joins: the caller's thread (a tokio worker, say) never
//! changes namespace. Sockets created inside keep working from anywhere afterwards.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};

pub const NETNS_DIR: &str = "/var/run/netns";

pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Create the namespace `name` unless it exists, with loopback up.
pub fn create(name: &str) -> Result<()> {
    if !exists(name) {
        let out = Command::new("ip")
            .args(["netns", "add", name])
            .output()
            .context("running ip netns add (is iproute2 installed?)")?;
        if !out.status.success() && !exists(name) {
            bail!("ip netns add {name}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
    }
    ip(&["-n", name, "link", "set", "lo", "up"])
}

/// Delete the namespace `name` if it exists; its devices go with it.
pub fn delete(name: &str) -> Result<()> {
    if exists(name) {
        let out = Command::new("ip").args(["netns", "del", name]).output().context("running ip netns del")?;
        if !out.status.success() && exists(name) {
            bail!("ip netns del {name}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
    }
    Ok(())
}

/// Run `ip` with `args`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("running ip")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Run `f` on a new thread inside the namespace `name`.
pub fn run_in<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let file = File::open(path(name)).with_context(|| format!("opening namespace {name}"))?;
    let name = name.to_string();
    std::thread::spawn(move || -> Result<T> {
        setns(&file, CloneFlags::CLONE_NEWNET).with_context(|| format!("entering namespace {name}"))?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a thread in a namespace panicked"))?
}

/// Write sysctls (`net/ipv4/ip_forward` = `1`, …) inside the namespace `name`.
pub fn sysctls(name: &str, values: &[(&str, &str)]) -> Result<()> {
    let values: Vec<(String, String)> = values.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    run_in(name, move || -> Result<()> {
        for (k, v) in values {
            let p = Path::new("/proc/sys").join(&k);
            // Per-device keys can be missing (no IPv6 on a device); that is not an error.
            if p.exists() {
                std::fs::write(&p, &v).with_context(|| format!("setting {k}={v}"))?;
            }
        }
        Ok(())
    })?
}

/// Namespaces whose name starts with `prefix`.
pub fn list(prefix: &str) -> Vec<String> {
    std::fs::read_dir(NETNS_DIR)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}
