//! The lab's helper processes (node agents, shims, responders): started detached with their
//! output in a log file, stopped by pid (SIGTERM, then SIGKILL after 5 s), reaped so they do not
//! linger as zombies, and found by their command line when a crash lost their pids. Only
//! processes whose command line names both a lab program and the lab's namespace prefix are
//! ever signalled. Restarting a shim that died is its agent's job ([`super::agent::supervise`]),
//! not this module's.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub(crate) fn require_root() -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the lab creates network namespaces, TAP devices and routes: run it as root (sudo)");
    }
    Ok(())
}

/// Whether `pid` runs. A child of ours that died is a zombie until reaped (it still has a /proc
/// entry): it counts as dead, and is reaped here.
pub(crate) fn alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        // The state follows the command name, which is in parentheses and may contain spaces.
        Ok(stat) if stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')) => {
            reap(pid);
            false
        }
        Ok(_) => Path::new(&format!("/proc/{pid}")).exists(),
    }
}

pub(crate) fn stop(pid: u32) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    if !alive(pid) {
        return;
    }
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        reap(pid);
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(pid) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(50));
    }
    reap(pid);
}

/// Collect a child that exited, so it does not linger as a zombie (which still has a /proc entry).
fn reap(pid: u32) {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    let _ = waitpid(nix::unistd::Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
}

fn cmdline(pid: u32) -> Vec<String> {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    cmd.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// Whether `pid` is an `enifab lab agent`.
pub(crate) fn is_agent(pid: u32) -> bool {
    cmdline(pid).windows(2).any(|w| w[0] == "lab" && w[1] == "agent")
}

/// Our agents, shims and responders whose command line mentions `needle` (a lab's namespace
/// prefix).
pub(crate) fn naming(needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let args = cmdline(*pid);
            let cmd = args.join(" ");
            let ours = cmd.contains("enifab-shim") || cmd.contains("responder") || is_agent(*pid);
            ours && cmd.contains(needle) && *pid != std::process::id()
        })
        .collect()
}

/// Start a long-running helper detached from our terminal, logging to `log`.
pub(crate) fn spawn_daemon(program: &Path, args: &[String], log: &Path) -> Result<u32> {
    spawn_daemon_env(program, args, &[], log)
}

/// As [`spawn_daemon`], with more environment variables.
pub(crate) fn spawn_daemon_env(program: &Path, args: &[String], env: &[(&str, &str)], log: &Path) -> Result<u32> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    let child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    Ok(child.id())
}
