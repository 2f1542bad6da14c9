//! `enifab lab up | check | down FILE.yaml`, `enifab lab agent` and `enifab demo`: a whole
//! trunk-ENI cluster from a topology file, on one Linux machine or on nodes that are containers.
//!
//! `up` applies the file's cloud side (see [`crate::apply`]), then makes every instance a node
//! (a machine with ECS-like sysctls whose `enifab-shim` plugs its ENIs in as TAP devices, kept
//! running by an agent), plugs every external client into the internet side, runs
//! `enifab-cni ADD` for every pod (a namespace wired to a member ENI by the chosen datapath),
//! starts the built-in responders, applies the file's load balancers whose backends are pods,
//! and serves the Services: a CLB for each `LoadBalancer` one, made as the
//! cloud-controller-manager makes it, and kube-proxy's iptables rules on every node. Every step
//! is idempotent, so `up` can be re-run after a failure or an edit (the Services' backends and
//! rules follow the pods). `check` runs each probe for real (rule changes applied before it and
//! undone after), reads the fabric's counters around it to say which way the traffic went, and
//! prints the table. `down` undoes everything `up` made, also after a crash: what was made is
//! recorded step by step in a state file under the state directory, and names derive from the
//! lab's id, so leftovers can be found even without it.
//!
//! Where nodes are is the node runtime's business ([`runtime`]): namespaces on this machine
//! (the local runtime, `enifab demo`), or wherever their agents run (`--agent NODE=ADDR`: node
//! containers in docker-compose, other hosts). Everything else is written once for both.
//!
//! # Layout
//! - [`up`], [`check`], [`down`]: the three commands, as sequences of shared steps;
//! - [`state`]: what was made, which runtime and agents, how far `up` got (the state file);
//! - [`runtime`]: the node runtime — [`runtime::local`] (namespaces, in-process work) and
//!   [`runtime::agents`] (everything through the nodes' agents);
//! - [`agent`]: `enifab lab agent`, the lab's hands on one node: supervises the shim, serves
//!   `enifab.v1.LabAgent` ([`agent::client`] is the lab's side);
//! - [`host`]: what is done on a node's machine (pod namespaces and the CNI, responders,
//!   iptables), for the local runtime and the agent alike; [`netns`] names and enters
//!   namespaces; [`process`] starts, stops and finds helper processes;
//! - [`pods`]: pods and their servers (what the CNI is given, what it answered);
//! - [`services`], [`kubeproxy`], [`ccm`]: Kubernetes Services (endpoints, kube-proxy's rules,
//!   the CCM's load balancers);
//! - [`probe`], [`responder`]: what runs in the namespaces for a check; [`rate`]: a benchmark's
//!   connection counter;
//! - [`cloud`]: finding and deleting the cloud resources at `down`;
//! - [`demo`]: `enifab demo`, an emulator in-process and the SOP example, up, checked, down.
//!
//! The local lab drives real processes and real namespaces; it needs root, `ip` (iproute2),
//! `iptables` when the file has Services, and the `enifab-shim` and `enifab-cni` binaries next
//! to `enifab`. With agents, the lab needs none of that: only the emulator and the agents.

pub mod agent;
pub mod ccm;
pub mod check;
mod cloud;
pub mod demo;
pub mod down;
pub mod host;
pub mod kubeproxy;
pub mod netns;
mod pods;
pub mod probe;
mod process;
pub mod rate;
pub mod responder;
pub mod runtime;
pub mod services;
pub mod state;
pub mod up;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

pub use check::{CheckRow, check, check_with, exit_code, render};
pub use down::down;
pub use runtime::local::remove_host_leftovers;
pub use state::{ExternalState, LabState, NodeState, PodState, Responder, ServiceState};
pub use up::up;

/// Where the lab finds its programs, its emulator and its nodes' agents, and keeps its state.
#[derive(Debug, Clone, Default)]
pub struct LabOptions {
    pub endpoint: String,
    pub state_dir: PathBuf,
    pub bin_dir: PathBuf,
    /// Node (or external client) name → its agent's address: the agents runtime. Empty: the
    /// runtime the state records, local for a new lab.
    pub agents: BTreeMap<String, String>,
    /// How long `check` waits for `up` to finish (default: see [`check::DEFAULT_WAIT`]).
    pub wait: Option<Duration>,
}

impl LabOptions {
    /// Binaries are looked for next to the running `enifab`.
    pub fn new(endpoint: &str, state_dir: &Path) -> Result<LabOptions> {
        let exe = std::env::current_exe().context("locating enifab")?;
        let bin_dir = exe.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        Ok(LabOptions {
            endpoint: endpoint.to_string(),
            state_dir: state_dir.to_path_buf(),
            bin_dir,
            ..Default::default()
        })
    }

    /// `NODE=ADDR` pairs (flags, or the comma-separated `ENIFAB_LAB_AGENTS`) as the agents map.
    pub fn parse_agents<'a>(pairs: impl IntoIterator<Item = &'a str>) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for p in pairs.into_iter().flat_map(|p| p.split(',')).map(str::trim).filter(|p| !p.is_empty()) {
            let Some((node, addr)) = p.split_once('=') else { bail!("--agent {p:?}: expected NODE=ADDR") };
            let (node, addr) = (node.trim(), addr.trim());
            if node.is_empty() || addr.is_empty() {
                bail!("--agent {p:?}: expected NODE=ADDR");
            }
            if out.insert(node.to_string(), addr.to_string()).is_some() {
                bail!("--agent: {node} is given twice");
            }
        }
        Ok(out)
    }

    fn bin(&self, name: &str) -> Result<PathBuf> {
        let p = self.bin_dir.join(name);
        if p.exists() {
            return Ok(p);
        }
        bail!(
            "{name} not found next to enifab (in {}); build the workspace: cargo build --release",
            self.bin_dir.display()
        )
    }
}

/// A short, stable id for a topology file: namespaces and state are named after it.
pub fn lab_id(topology: &Path) -> String {
    let abs = std::fs::canonicalize(topology).unwrap_or_else(|_| topology.to_path_buf());
    let h = enifab_net::fnv1a(abs.to_string_lossy().as_bytes());
    format!("{:06x}", h & 0xff_ffff)
}

/// The lab's progress lines: a heading, or `  <what>  <detail>` under it.
pub struct Log<'a> {
    out: &'a mut dyn FnMut(String),
}

impl Log<'_> {
    pub fn line(&mut self, s: impl Into<String>) {
        (self.out)(s.into());
    }

    pub fn say(&mut self, what: &str, detail: impl std::fmt::Display) {
        (self.out)(format!("  {what:<10} {detail}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_are_node_equals_address_pairs() {
        let a = LabOptions::parse_agents(["node-a=node-a:7070", "x=unix:/run/a.sock,y = http://h:1 "]).unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(
            (a["node-a"].as_str(), a["x"].as_str(), a["y"].as_str()),
            ("node-a:7070", "unix:/run/a.sock", "http://h:1")
        );
        assert!(LabOptions::parse_agents(["node-a"]).is_err(), "no address");
        assert!(LabOptions::parse_agents(["=a:1"]).is_err(), "no node");
        assert!(LabOptions::parse_agents(["a=x:1", "a=y:1"]).is_err(), "given twice");
        assert!(LabOptions::parse_agents(Vec::<&str>::new()).unwrap().is_empty());
    }
}
