//! What the lab does on the machine a node lives on, whichever runtime asked: make a pod's
//! namespace and run the CNI plugin for it (as a container runtime runs one: the command in the
//! environment, the network configuration on stdin, the result on stdout), start the built-in
//! responders, read and write kube-proxy's iptables rules in the node's namespace, list the
//! node's devices. The local runtime calls these in-process; `enifab lab agent` calls them for
//! a lab that runs elsewhere.
//!
//! It decides nothing: which pod gets which member ENI is the plugin's business (and the
//! cloud's), which rules a node gets is [`super::kubeproxy`]'s. It never touches a namespace it
//! is not given.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use super::netns::{self, Ns};
use super::process::spawn_daemon;

/// Sysctls of an ECS node as Terway expects them: forwarding for pod traffic, and no reverse-path
/// filter, since a pod's replies can come back on another device than its requests left by.
/// IPv6 starts off everywhere: the shim turns it on, statically, on a NIC whose ENI has an IPv6
/// address, and the CNI on what a dual-stack pod needs (with IPv6 forwarding, as terwayd does).
pub const NODE_SYSCTLS: &[(&str, &str)] = &[
    ("net/ipv4/ip_forward", "1"),
    ("net/ipv4/conf/all/rp_filter", "0"),
    ("net/ipv4/conf/default/rp_filter", "0"),
    ("net/ipv6/conf/all/disable_ipv6", "1"),
    ("net/ipv6/conf/default/disable_ipv6", "1"),
    // Let ping-style ICMP sockets (the lab's icmp probes, `ping` without privileges) work.
    ("net/ipv4/ping_group_range", "0 2147483647"),
];

/// A pod's or an external client's namespace: IPv6 off until the CNI turns it on, statically,
/// on a dual-stack pod's eth0 (no router or address autoconfiguration to wait for); unprivileged
/// ping, which governs ICMPv6 echo sockets too.
pub const HOST_SYSCTLS: &[(&str, &str)] = &[
    ("net/ipv6/conf/all/disable_ipv6", "1"),
    ("net/ipv6/conf/default/disable_ipv6", "1"),
    ("net/ipv4/ping_group_range", "0 2147483647"),
];

/// The largest iptables-restore input accepted (kube-proxy's rules for thousands of Services
/// stay far below).
pub const MAX_IPTABLES_TEXT: usize = 4 << 20;

/// A rule kept at the top of a built-in chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub table: String,
    pub chain: String,
    /// The arguments after `-t <table> -C|-I <chain>`.
    pub args: Vec<String>,
}

/// Create a pod's namespace (unless it exists) with a pod's sysctls.
pub fn create_pod_ns(name: &str) -> Result<()> {
    netns::create(name)?;
    netns::sysctls(name, HOST_SYSCTLS)
}

/// Run the CNI plugin as a runtime would: the command in the environment, the network
/// configuration on stdin, the result (or a CNI error) on stdout.
pub fn run_cni(
    cni: &Path,
    command: &str,
    container: &str,
    pod_ns: &Path,
    args: &str,
    netconf: &serde_json::Value,
) -> Result<serde_json::Value> {
    let mut child = Command::new(cni)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", pod_ns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", args)
        .env("CNI_PATH", cni.parent().unwrap_or(Path::new("/")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", cni.display()))?;
    // A plugin may answer without reading its configuration (a usage error): a closed pipe here
    // is not the failure to report, its answer is.
    let _ = child.stdin.take().expect("piped").write_all(netconf.to_string().as_bytes());
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err: serde_json::Value = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
        let msg = err["msg"].as_str().map(str::to_string).unwrap_or_else(|| stdout.trim().to_string());
        let details = err["details"].as_str().unwrap_or("");
        bail!("{msg} {details} (code {}) {}", err["code"], String::from_utf8_lossy(&out.stderr).trim());
    }
    if stdout.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(&stdout).with_context(|| format!("the CNI's answer is not JSON: {stdout}"))
}

/// Start `enifab lab responder` for `owner` inside `ns`, logging to `log`; returns its pid.
pub fn spawn_responders(enifab: &Path, ns: &Ns, owner: &str, servers: &[(String, u16)], log: &Path) -> Result<u32> {
    let mut args = vec![
        "lab".into(),
        "responder".into(),
        "--netns".into(),
        ns.path().display().to_string(),
        "--name".into(),
        owner.to_string(),
    ];
    for (proto, port) in servers {
        args.push(format!("--{proto}"));
        args.push(port.to_string());
    }
    spawn_daemon(enifab, &args, log)
}

/// Run an iptables program inside `ns`; its stdout, or its stderr as the error.
pub fn iptables(ns: &Ns, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut child = ns
        .command(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program} in {ns}"))?;
    if let Some(text) = stdin {
        child.stdin.take().expect("piped").write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No such file") || (err.contains("not found") && err.contains(program)) {
            bail!("{program} is not installed: the lab plays kube-proxy with iptables (apt-get install iptables)");
        }
        bail!("{program} {} in {ns}: {}", args.join(" "), err.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `iptables-restore --noflush` of `text` in `ns`, then each of `jumps` ensured at the top of
/// its chain (`-C`, else `-I <chain> 1`): idempotent, so the rules can be written again.
pub fn apply_iptables(ns: &Ns, text: &str, jumps: &[Rule]) -> Result<()> {
    if text.len() > MAX_IPTABLES_TEXT {
        bail!("iptables-restore input of {} bytes (at most {MAX_IPTABLES_TEXT})", text.len());
    }
    iptables(ns, "iptables-restore", &["--noflush"], Some(text))?;
    for j in jumps {
        let mut check = vec!["-t", j.table.as_str(), "-C", j.chain.as_str()];
        check.extend(j.args.iter().map(String::as_str));
        if iptables(ns, "iptables", &check, None).is_err() {
            let mut insert = vec!["-t", j.table.as_str(), "-I", j.chain.as_str(), "1"];
            insert.extend(j.args.iter().map(String::as_str));
            iptables(ns, "iptables", &insert, None)?;
        }
    }
    Ok(())
}

/// Which of `names` exist in `ns`, each with its IPv4 addresses (CIDR notation).
pub fn interfaces(ns: &Ns, names: &[&str]) -> Result<Vec<(String, Vec<String>)>> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    ns.run_in(move || -> Result<Vec<(String, Vec<String>)>> {
        let present: Vec<String> =
            names.into_iter().filter(|n| nix::net::if_::if_nametoindex(n.as_str()).is_ok()).collect();
        let mut out: Vec<(String, Vec<String>)> = present.into_iter().map(|n| (n, Vec::new())).collect();
        for a in nix::ifaddrs::getifaddrs().context("listing addresses")? {
            let (Some(addr), Some(mask)) = (a.address, a.netmask) else { continue };
            let (Some(ip), Some(mask)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) else { continue };
            if let Some((_, list)) = out.iter_mut().find(|(n, _)| *n == a.interface_name) {
                list.push(format!("{}/{}", ip.ip(), u32::from(mask.ip()).count_ones()));
            }
        }
        Ok(out)
    })?
}
