//! What a lab made, and where that is written down: one JSON file per lab under the state
//! directory, rewritten (atomically, by rename) after every step of `up`, so `down` can undo
//! everything after a crash, and so `check` and `down` find the node runtime (and its agents)
//! `up` used, and whether `up` has finished, from the file alone (in docker-compose, `up` and
//! `check` are different containers sharing the state directory on a volume). It names
//! namespaces and processes; it does not make them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::LabOptions;

/// What a lab made, written after every step so `down` can undo it after a crash. (Field names
/// are read by `bench/*.sh` too: add, do not rename.)
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub id: String,
    pub topology: PathBuf,
    pub endpoint: String,
    pub nodes: BTreeMap<String, NodeState>,
    pub pods: BTreeMap<String, PodState>,
    /// Hosts of the internet side.
    #[serde(default)]
    pub externals: BTreeMap<String, ExternalState>,
    pub responders: Vec<Responder>,
    /// `<namespace>/<name>` → what the lab made for the Service.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceState>,
    /// The node runtime: `local` (namespaces on this machine) or `agents`.
    #[serde(default = "local")]
    pub runtime: String,
    /// With the `agents` runtime: the node's (or external client's) name → its agent's address.
    #[serde(default)]
    pub agents: BTreeMap<String, String>,
    /// How far `up` got.
    #[serde(default)]
    pub up: UpProgress,
}

fn local() -> String {
    "local".into()
}

/// `up`'s progress, for a `check` started while `up` still runs (docker-compose).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UpProgress {
    /// `running`, `done` or `failed`; empty in a state written before this field existed.
    #[serde(default)]
    pub status: String,
    /// The step `up` is at (`cloud`, `nodes`, `pods`, …).
    #[serde(default)]
    pub step: String,
    /// Why `up` failed.
    #[serde(default)]
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    pub instance_id: String,
    /// The node's namespace (with the `agents` runtime: as its agent names it, on its machine).
    pub netns: String,
    /// The shim's pid when `up` saw it (its supervisor starts a new one if it dies).
    pub shim_pid: u32,
    pub socket: PathBuf,
    pub primary_ip: String,
    /// Its primary ENI's IPv6 address (an instance with `ipv6: true`); empty otherwise, and in
    /// a state written before dual stack.
    #[serde(default)]
    pub primary_ip6: String,
    /// The `enifab lab agent` supervising the shim (local runtime; 0 with agents, whose
    /// processes live elsewhere).
    #[serde(default)]
    pub agent_pid: u32,
    /// Where that agent listens (a Unix socket for the local runtime).
    #[serde(default)]
    pub agent: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodState {
    pub node: String,
    pub netns: String,
    pub datapath: String,
    pub ip: String,
    /// Its IPv6 address (a dual-stack pod); empty otherwise, and in a state written before dual
    /// stack.
    #[serde(default)]
    pub ip6: String,
    pub member_eni: String,
}

/// An external client: a namespace plugged into the internet side by its own shim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExternalState {
    pub netns: String,
    pub shim_pid: u32,
    pub socket: PathBuf,
    /// Its address, without the prefix.
    pub address: String,
    /// As [`NodeState::agent_pid`].
    #[serde(default)]
    pub agent_pid: u32,
    /// As [`NodeState::agent`].
    #[serde(default)]
    pub agent: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Responder {
    pub owner: String,
    /// Its namespace (with agents: empty for the node's own, else the pod's).
    pub netns: String,
    /// Its pid (with agents: on the agent's machine).
    pub pid: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServiceState {
    /// The CLB the lab's CCM made for a `LoadBalancer` Service, and its address (the Service's
    /// `status.loadBalancer.ingress[0].ip`).
    #[serde(default)]
    pub load_balancer_id: String,
    #[serde(default)]
    pub load_balancer_ip: String,
    /// `ip:port` of the ready endpoints, over all ports.
    #[serde(default)]
    pub endpoints: Vec<String>,
}

pub(crate) fn state_path(opts: &LabOptions, id: &str) -> PathBuf {
    opts.state_dir.join(format!("lab-{id}.json"))
}

pub(crate) fn load(opts: &LabOptions, id: &str) -> Result<Option<LabState>> {
    let p = state_path(opts, id);
    match std::fs::read_to_string(&p) {
        Ok(s) => Ok(Some(serde_json::from_str(&s).with_context(|| format!("reading {}", p.display()))?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

pub(crate) fn save(opts: &LabOptions, st: &LabState) -> Result<()> {
    std::fs::create_dir_all(&opts.state_dir)?;
    let p = state_path(opts, &st.id);
    let tmp = p.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(st)?)?;
    std::fs::rename(&tmp, &p)?;
    Ok(())
}

pub(crate) fn remove(opts: &LabOptions, id: &str) {
    let _ = std::fs::remove_file(state_path(opts, id));
}

/// A file under the state directory (logs, sockets).
pub(crate) fn file(opts: &LabOptions, name: &str) -> PathBuf {
    Path::new(&opts.state_dir).join(name)
}
