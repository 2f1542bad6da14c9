//! Network namespaces for the lab: create and delete named ones (`/var/run/netns/<name>`, as
//! `ip netns` does, so `ip -n <name> …` works on them), run a closure or a program inside one,
//! set sysctls. [`Ns`] names a namespace the way a node runtime meets them: a named one (a
//! node, pod or external client on this machine), the process's own (a node container's), or
//! any other by path.
//!
//! Entering a namespace is per thread, so [`run_in`] spawns a fresh OS thread, enters the
//! namespace there, runs the closure and joins: the caller's thread (a tokio worker, say) never
//! changes namespace. Sockets created inside keep working from anywhere afterwards. Programs
//! are run through `ip netns exec` or `nsenter`, never by entering a namespace between fork and
//! exec (that needs `unsafe`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};

pub const NETNS_DIR: &str = "/var/run/netns";

/// A network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ns {
    /// `/var/run/netns/<name>`, as `ip netns add` makes them.
    Named(String),
    /// This process's own: in a node container, the node.
    Own,
    /// Any other, by path (`/proc/<pid>/ns/net`, a bind mount elsewhere).
    Path(PathBuf),
}

impl Ns {
    /// `/proc/self/ns/net` (and `self`) is [`Ns::Own`], anything with a `/` a path, the rest a
    /// name under [`NETNS_DIR`].
    pub fn parse(s: &str) -> Ns {
        match s {
            "" | "self" | "/proc/self/ns/net" | "/proc/thread-self/ns/net" => Ns::Own,
            s if s.contains('/') => Ns::Path(PathBuf::from(s)),
            s => Ns::Named(s.to_string()),
        }
    }

    /// A path that names this namespace for any process (children included, which is why our
    /// own is `/proc/<our pid>/ns/net` and not `/proc/self/…`).
    pub fn path(&self) -> PathBuf {
        match self {
            Ns::Named(n) => path(n),
            Ns::Own => PathBuf::from(format!("/proc/{}/ns/net", std::process::id())),
            Ns::Path(p) => p.clone(),
        }
    }

    /// Run `f` on a new thread inside this namespace.
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        match self {
            Ns::Named(n) => run_in(n, f),
            // A thread of our own is already there.
            Ns::Own => std::thread::spawn(f).join().map_err(|_| anyhow::anyhow!("a thread panicked")),
            Ns::Path(p) => run_in_path(p, f),
        }
    }

    /// `program` run inside this namespace: `ip netns exec` for a named one (which also gives
    /// it that namespace's /sys), directly for our own, `nsenter --net=` for another.
    pub fn command(&self, program: &str) -> Command {
        match self {
            Ns::Named(n) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", n, program]);
                c
            }
            Ns::Own => Command::new(program),
            Ns::Path(p) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", p.display())).arg(program);
                c
            }
        }
    }
}

impl std::fmt::Display for Ns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ns::Named(n) => f.write_str(n),
            Ns::Own => f.write_str("/proc/self/ns/net"),
            Ns::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

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
    run_in_path(&path(name), f)
}

/// Run `f` on a new thread inside the namespace at `ns` (a path).
pub fn run_in_path<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let file = File::open(ns).with_context(|| format!("opening namespace {}", ns.display()))?;
    let shown = ns.display().to_string();
    std::thread::spawn(move || -> Result<T> {
        setns(&file, CloneFlags::CLONE_NEWNET).with_context(|| format!("entering namespace {shown}"))?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a thread in a namespace panicked"))?
}

/// Write sysctls (`net/ipv4/ip_forward` = `1`, …) inside the namespace `name`.
pub fn sysctls(name: &str, values: &[(&str, &str)]) -> Result<()> {
    sysctls_in(&Ns::Named(name.to_string()), values)
}

/// Write sysctls inside `ns`. /proc/sys shows the namespace of the thread that reads it, so the
/// writes happen on a thread inside. In a container /proc/sys is mounted read-only: a write
/// refused as such remounts it read-write once (which needs CAP_SYS_ADMIN) and is tried again.
pub fn sysctls_in(ns: &Ns, values: &[(&str, &str)]) -> Result<()> {
    let values: Vec<(String, String)> = values.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    ns.run_in(move || -> Result<()> {
        for (k, v) in values {
            let p = Path::new("/proc/sys").join(&k);
            // Per-device keys can be missing (no IPv6 on a device); that is not an error.
            if !p.exists() {
                continue;
            }
            match std::fs::write(&p, &v) {
                Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
                    remount_proc_sys_rw().with_context(|| format!("setting {k}={v}: /proc/sys is read-only"))?;
                    std::fs::write(&p, &v).with_context(|| format!("setting {k}={v}"))?;
                }
                r => r.with_context(|| format!("setting {k}={v}"))?,
            }
        }
        Ok(())
    })?
}

/// `mount -o remount,rw /proc/sys`: what a node container needs to set its own and its pods'
/// network sysctls (Docker mounts /proc/sys read-only).
fn remount_proc_sys_rw() -> Result<()> {
    let out = Command::new("mount").args(["-o", "remount,rw", "/proc/sys"]).output().context("running mount")?;
    if !out.status.success() {
        bail!(
            "mount -o remount,rw /proc/sys: {} (a node container needs CAP_SYS_ADMIN)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
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
