//! `enifab lab up | check | down FILE.yaml` and `enifab demo`: a whole trunk-ENI cluster on one
//! Linux machine, from a topology file.
//!
//! `up` applies the file's cloud side (see [`crate::apply`]), then makes every instance a node
//! (a network namespace with ECS-like sysctls and an `enifab-shim` that plugs its ENIs in as
//! TAP devices), plugs every external client into the internet side, runs `enifab-cni ADD` for
//! every pod (a namespace wired to a member ENI by the chosen datapath), starts the built-in
//! responders, applies the file's load balancers whose backends are pods, and serves the
//! Services: a CLB for each `LoadBalancer` one, made as the cloud-controller-manager makes it,
//! and kube-proxy's iptables rules on every node. Every step is idempotent, so `up` can be re-run
//! after a failure or an edit (the Services' backends and rules follow the pods). `check` runs
//! each probe for real (rule changes applied before it and undone after), reads the fabric's
//! counters around it to say which way the traffic went, and prints the table. `down` undoes
//! everything `up` made, also after a crash: what was made is recorded step by step in a state
//! file under the state directory, and names derive from the lab's id, so leftovers can be found
//! even without it.
//!
//! # Layout
//! - [`state`]: what was made (the state file);
//! - [`process`]: starting, stopping and finding the helper processes;
//! - [`nodes`], [`pods`]: the node runtime (namespaces, shims, CNI, responders) — the only
//!   modules that know a node is a namespace, so a container runtime would replace these two;
//! - [`services`], [`kubeproxy`], [`ccm`]: Kubernetes Services (endpoints, kube-proxy's rules,
//!   the CCM's load balancers);
//! - [`checks`]: probes and the table ([`probe`], [`responder`] are what runs in the namespaces);
//! - [`cloud`]: finding and deleting the cloud resources at `down`.
//!
//! The lab drives real processes and real namespaces; it needs root, `ip` (iproute2), `iptables`
//! when the file has Services, and the `enifab-shim` and `enifab-cni` binaries next to `enifab`.

pub mod ccm;
pub mod checks;
mod cloud;
pub mod demo;
pub mod kubeproxy;
pub mod netns;
mod nodes;
mod pods;
pub mod probe;
mod process;
pub mod rate;
pub mod responder;
pub mod services;
pub mod state;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

pub use checks::{CheckRow, check, exit_code, render};
pub use state::{ExternalState, LabState, NodeState, PodState, Responder, ServiceState};

use crate::apply;
use crate::cli::{self, Clients};
use crate::topology::Topology;

/// Where the lab finds its programs and keeps its state.
#[derive(Debug, Clone)]
pub struct LabOptions {
    pub endpoint: String,
    pub state_dir: PathBuf,
    pub bin_dir: PathBuf,
}

impl LabOptions {
    /// Binaries are looked for next to the running `enifab`.
    pub fn new(endpoint: &str, state_dir: &Path) -> Result<LabOptions> {
        let exe = std::env::current_exe().context("locating enifab")?;
        let bin_dir = exe.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        Ok(LabOptions { endpoint: endpoint.to_string(), state_dir: state_dir.to_path_buf(), bin_dir })
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
    let h = abs
        .to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{:06x}", h & 0xff_ffff)
}

/// The lab's progress lines: a heading, or `  <what>  <detail>` under it.
pub(crate) struct Log<'a> {
    out: &'a mut dyn FnMut(String),
}

impl Log<'_> {
    pub(crate) fn line(&mut self, s: impl Into<String>) {
        (self.out)(s.into());
    }

    pub(crate) fn say(&mut self, what: &str, detail: impl std::fmt::Display) {
        (self.out)(format!("  {what:<10} {detail}"));
    }
}

/// `enifab lab up`.
pub async fn up(opts: &LabOptions, file: &Path, out: &mut dyn FnMut(String)) -> Result<LabState> {
    process::require_root()?;
    let topo = Topology::load(file)?;
    let id = lab_id(file);
    let mut st = state::load(opts, &id)?.unwrap_or_else(|| LabState {
        id: id.clone(),
        topology: std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf()),
        endpoint: opts.endpoint.clone(),
        ..Default::default()
    });
    st.endpoint = opts.endpoint.clone();
    state::save(opts, &st)?;
    let channel = cli::connect_patiently(&opts.endpoint, Duration::from_secs(10)).await?;
    let mut c = Clients::new(channel);
    let mut log = Log { out };

    log.line(format!("lab {id}: cloud ({})", file.display()));
    let mut applied = apply::apply(&mut c, &topo, &mut |line| log.line(format!("  {line}"))).await?;

    log.line(format!("lab {id}: nodes"));
    nodes::up_nodes(opts, &topo, &applied, &mut st, &mut log).await?;
    nodes::up_externals(opts, &topo, &mut st, &mut log).await?;

    log.line(format!("lab {id}: pods"));
    pods::up_pods(opts, &topo, &applied, &mut c, &mut st, &mut log).await?;

    log.line(format!("lab {id}: servers"));
    pods::up_servers(opts, &topo, &mut st, &mut log).await?;

    if !topo.load_balancers.is_empty() {
        log.line(format!("lab {id}: load balancers"));
        let pods = st.pods.clone();
        let resolve = move |pod: &str| pods.get(pod).and_then(|p| p.ip.parse().ok());
        apply::apply_load_balancers(&mut c, &topo, &mut applied, &resolve, &mut |line| log.line(format!("  {line}")))
            .await?;
    }

    if !topo.services.is_empty() || !st.services.is_empty() {
        log.line(format!("lab {id}: services"));
        services::up_services(opts, &topo, &applied, &mut c, &mut st, &mut log).await?;
    }
    log.line(format!("lab {id}: up"));
    Ok(st)
}

/// `enifab lab down`: undo what `up` made, in reverse, tolerating what is already gone.
pub async fn down(opts: &LabOptions, file: &Path, out: &mut dyn FnMut(String)) -> Result<()> {
    process::require_root()?;
    let id = lab_id(file);
    let st = state::load(opts, &id)?.unwrap_or_else(|| LabState { id: id.clone(), ..Default::default() });
    let mut problems = Vec::new();
    let topo = Topology::load(file);
    let mut log = Log { out };

    pods::down_pods(opts, &st, &mut log, &mut problems);
    pods::stop_servers(&st);
    for (name, node) in &st.nodes {
        process::stop(node.shim_pid);
        let _ = std::fs::remove_file(&node.socket);
        log.say("node", format!("{name} shim stopped"));
    }
    for (name, x) in &st.externals {
        process::stop(x.shim_pid);
        let _ = std::fs::remove_file(&x.socket);
        log.say("external", format!("{name} shim stopped"));
    }
    // A crash between starting a helper and recording it leaves a process the state does not
    // know: find the lab's shims and responders by the namespaces they were given.
    problems.extend(remove_host_leftovers(&id));
    match topo {
        Ok(topo) => match cli::connect_patiently(&opts.endpoint, Duration::from_secs(5)).await {
            Ok(channel) => {
                let mut c = Clients::new(channel);
                if let Err(e) = down_cloud(&mut c, &topo, &st, &id, &mut log).await {
                    problems.push(format!("cloud: {e:#}"));
                }
            }
            Err(e) => problems.push(format!("cloud resources left (emulator unreachable): {e}")),
        },
        Err(e) => problems.push(format!("cloud resources left (topology unreadable): {e:#}")),
    }
    if problems.is_empty() {
        state::remove(opts, &id);
        log.line(format!("lab {id}: down"));
        Ok(())
    } else {
        bail!("lab {id} partly down:\n  {}", problems.join("\n  "))
    }
}

/// Stop the lab's helper processes and delete its namespaces, found by name only (`efb<id>-`),
/// as `down` does after a crash; returns what could not be removed. Test guards call it too.
pub fn remove_host_leftovers(id: &str) -> Vec<String> {
    let prefix = format!("efb{id}-");
    for pid in process::naming(&prefix) {
        process::stop(pid);
    }
    netns::list(&prefix).iter().filter_map(|ns| netns::delete(ns).err().map(|e| format!("{e:#}"))).collect()
}

/// Load balancers first (a VPC with one cannot go), then the rest of the cloud side.
async fn down_cloud(c: &mut Clients, topo: &Topology, st: &LabState, id: &str, log: &mut Log<'_>) -> Result<()> {
    let found = cloud::lookup(c, topo).await?;
    // The state may be gone (a crash before it was written): the lab's id is enough.
    let st = LabState { id: id.to_string(), ..st.clone() };
    services::down_services(c, topo, &st, &found, log).await?;
    apply::delete_load_balancers(c, topo, &mut |line| log.say("clb", line)).await?;
    cloud::delete_cloud(c, topo, id, log).await
}
