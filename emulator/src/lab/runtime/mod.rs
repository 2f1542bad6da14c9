//! The node runtime: how the lab's nodes, external clients and pods come to exist, and how the
//! lab acts on them. Two implementations behind one enum, so `up`, `check` and `down` are written
//! once:
//!
//! - [`local`]: every node is a network namespace on this machine (`efb<id>-n<i>`), its shim
//!   supervised by an `enifab lab agent` on a Unix socket in the state directory; pods,
//!   responders, kube-proxy's rules and probes are done in-process ([`super::host`],
//!   [`super::probe`]). What `sudo enifab demo` runs.
//! - [`agents`]: every node (and external client) is wherever its agent runs — a container, a
//!   namespace on another host — and all of it goes through that agent's API
//!   (`enifab.v1.LabAgent`). Selected by `--agent NODE=ADDR`; recorded in the state, so `check`
//!   and `down` need nothing else.
//!
//! Must not: know the cloud side (which member ENI, which group) or what a check expects; the
//! lab's shared modules decide, the runtime carries out. The state's names stay the same for
//! both (bench/*.sh read them).

pub mod agents;
pub mod local;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use enifab_proto::v1 as pb;

use super::agent::client::AgentClient;
use super::host::Rule;
use super::probe::{Outcome, Proto};
use super::state::{LabState, Responder};
use super::{LabOptions, Log};

pub const LOCAL: &str = "local";
pub const AGENTS: &str = "agents";

/// Where something runs: a node's namespace, a pod's, an external client's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place<'a> {
    Node(&'a str),
    Pod(&'a str),
    External(&'a str),
}

impl<'a> Place<'a> {
    /// A name from the topology: a pod, a node or an external client, in that order.
    pub fn of(st: &LabState, name: &'a str) -> Option<Place<'a>> {
        if st.pods.contains_key(name) {
            Some(Place::Pod(name))
        } else if st.nodes.contains_key(name) {
            Some(Place::Node(name))
        } else if st.externals.contains_key(name) {
            Some(Place::External(name))
        } else {
            None
        }
    }
}

/// A pod to wire: what the CNI plugin is given.
#[derive(Debug, Clone)]
pub struct PodRequest {
    /// Its index in the file (its namespace is `efb<id>-p<index>`).
    pub index: usize,
    pub name: String,
    pub node: String,
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_ARGS.
    pub cni_args: String,
    /// The network configuration, without the node's own fields (endpoint, instanceId,
    /// nodeNetns, shimSocket, stateDir), which the runtime adds.
    pub netconf: serde_json::Value,
}

/// A probe as the runtime runs it.
pub type ProbeFuture = Pin<Box<dyn Future<Output = Result<Outcome>> + Send>>;

/// An instance of the topology that becomes a node: its place in the file (which names its
/// namespace and files in a local lab), its cloud identity, and the NICs its shim must plug in
/// before the node counts as up.
#[derive(Debug, Clone, Copy)]
pub struct NodeSpec<'a> {
    pub index: usize,
    pub name: &'a str,
    pub instance_id: &'a str,
    pub primary_ip: &'a str,
    /// Its primary ENI's IPv6 address; empty when it has none.
    pub primary_ip6: &'a str,
    pub links: &'a [&'a str],
}
/// The lab's node runtime.
pub enum Runtime {
    Local(local::Local),
    Agents(agents::Agents),
}

impl Runtime {
    /// The runtime for `up`: agents when `opts` names any (or the state already uses them),
    /// local otherwise. A lab that is up with one runtime is not taken over by the other.
    pub fn for_up(opts: &LabOptions, st: &LabState) -> Result<Runtime> {
        let made = !st.nodes.is_empty() || !st.pods.is_empty() || !st.externals.is_empty();
        let recorded = if st.runtime.is_empty() { LOCAL } else { st.runtime.as_str() };
        let wanted = if !opts.agents.is_empty() { AGENTS } else { recorded };
        if made && wanted != recorded {
            bail!(
                "lab {} is up with the {recorded} node runtime; run `enifab lab down` before using the {wanted} one",
                st.id
            );
        }
        Self::build(opts, st, wanted)
    }

    /// The runtime the state records (for `check` and `down`); `opts`' agents, if any, say
    /// where the recorded ones are now.
    pub fn for_state(opts: &LabOptions, st: &LabState) -> Result<Runtime> {
        let recorded = if st.runtime.is_empty() { LOCAL } else { st.runtime.as_str() };
        Self::build(opts, st, recorded)
    }

    fn build(opts: &LabOptions, st: &LabState, kind: &str) -> Result<Runtime> {
        match kind {
            LOCAL => Ok(Runtime::Local(local::Local)),
            AGENTS => {
                let mut map: BTreeMap<String, String> = st.agents.clone();
                map.extend(opts.agents.iter().map(|(k, v)| (k.clone(), v.clone())));
                Ok(Runtime::Agents(agents::Agents::new(&map)?))
            }
            other => bail!("the lab's state names an unknown node runtime {other:?}"),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Runtime::Local(_) => LOCAL,
            Runtime::Agents(_) => AGENTS,
        }
    }

    /// Record the runtime (and its agents) in the state.
    pub fn record(&self, st: &mut LabState) {
        st.runtime = self.kind().to_string();
        if let Runtime::Agents(a) = self {
            st.agents = a.addresses();
        }
    }

    /// Make the instance `node.name` a node (or find it made) and wait until its shim has
    /// plugged in `node.links`; records it in the state.
    pub async fn node(
        &self,
        opts: &LabOptions,
        st: &mut LabState,
        node: &NodeSpec<'_>,
        log: &mut Log<'_>,
    ) -> Result<()> {
        match self {
            Runtime::Local(l) => l.node(opts, st, node, log).await,
            Runtime::Agents(a) => a.node(st, node, log).await,
        }
    }

    /// Plug the external client `name` (public address `address`, with prefix) into the
    /// internet side; records it in the state.
    pub async fn external(
        &self,
        opts: &LabOptions,
        st: &mut LabState,
        index: usize,
        name: &str,
        address: &str,
        log: &mut Log<'_>,
    ) -> Result<()> {
        match self {
            Runtime::Local(l) => l.external(opts, st, index, name, address, log).await,
            Runtime::Agents(a) => a.external(st, name, address, log).await,
        }
    }

    /// Make the pod's namespace and run CNI ADD; the pod's namespace and the plugin's result.
    pub async fn add_pod(
        &self,
        opts: &LabOptions,
        st: &LabState,
        pod: PodRequest,
    ) -> Result<(String, serde_json::Value)> {
        match self {
            Runtime::Local(l) => l.add_pod(opts, st, pod).await,
            Runtime::Agents(a) => a.add_pod(st, pod).await,
        }
    }

    /// CNI DEL for a pod the state knows, then its namespace goes.
    pub async fn delete_pod(&self, opts: &LabOptions, st: &LabState, pod: PodRequest, netns: &str) -> Result<()> {
        match self {
            Runtime::Local(l) => l.delete_pod(opts, st, pod, netns).await,
            Runtime::Agents(a) => a.delete_pod(st, pod, netns).await,
        }
    }

    /// Start `owner`'s responders at `place` unless they run; them, and whether they were
    /// started now.
    pub async fn start_responders(
        &self,
        opts: &LabOptions,
        st: &LabState,
        owner: &str,
        place: Place<'_>,
        servers: &[(String, u16)],
    ) -> Result<(Responder, bool)> {
        match self {
            Runtime::Local(l) => l.start_responders(opts, st, owner, place, servers),
            Runtime::Agents(a) => a.start_responders(st, owner, place, servers).await,
        }
    }

    /// `iptables-save -t <table>` on node `node`.
    pub async fn read_iptables(&self, st: &LabState, node: &str, table: &str) -> Result<String> {
        match self {
            Runtime::Local(l) => l.read_iptables(st, node, table),
            Runtime::Agents(a) => a.read_iptables(node, table).await,
        }
    }

    /// kube-proxy's rules on node `node`: the restore text, then the jumps ensured.
    pub async fn apply_iptables(&self, st: &LabState, node: &str, text: &str, jumps: &[Rule]) -> Result<()> {
        match self {
            Runtime::Local(l) => l.apply_iptables(st, node, text, jumps),
            Runtime::Agents(a) => a.apply_iptables(node, text, jumps).await,
        }
    }

    /// A probe from `from` to `to` (either family); `stop` set ends it as [`Outcome::Timeout`].
    pub fn probe(
        &self,
        st: &LabState,
        from: Place<'_>,
        to: IpAddr,
        proto: Proto,
        port: u16,
        stop: Arc<AtomicBool>,
    ) -> Result<ProbeFuture> {
        match self {
            Runtime::Local(l) => l.probe(st, from, to, proto, port, stop),
            Runtime::Agents(a) => a.probe(st, from, to, proto, port, stop),
        }
    }

    /// What `down` does to the machines once the pods are gone: responders, shims, namespaces.
    /// Problems are collected, not fatal.
    pub async fn down(&self, st: &LabState, log: &mut Log<'_>, problems: &mut Vec<String>) {
        match self {
            Runtime::Local(l) => l.down(st, log, problems),
            Runtime::Agents(a) => a.down(st, log, problems).await,
        }
    }
}

/// Wait until an agent runs the shim for `want` and the shim has plugged in `links`; its last
/// answer. `alive` says whether the agent can still come (a local agent process that died
/// cannot); what the agent waits for is logged whenever it changes.
pub(crate) async fn wait_ready(
    client: &mut AgentClient,
    who: &str,
    want: &str,
    links: &[&str],
    patience: Duration,
    alive: &dyn Fn() -> bool,
    log: &mut Log<'_>,
) -> Result<pb::DescribeAgentResponse> {
    let start = Instant::now();
    let deadline = start + patience;
    // A node usually comes up within a second: say what it waits for only when it takes longer.
    let quiet = Duration::from_secs(2);
    let mut said = String::new();
    loop {
        let waiting = match client.describe_agent(pb::DescribeAgentRequest {}).await {
            Ok(r) => {
                let r = r.into_inner();
                let present = |l: &&str| r.interfaces.iter().any(|i| i.name == *l);
                if r.instance_id == want && r.state == "running" && links.iter().all(present) {
                    return Ok(r);
                }
                if r.shim_restarts >= 3 && r.instance_id == want {
                    bail!("{who}: the shim keeps exiting ({}); see the agent's log", r.detail);
                }
                if !r.instance_id.is_empty() && r.instance_id != want && r.state == "running" {
                    format!("its agent runs the shim for {}, not {want} (waiting for it to notice)", r.instance_id)
                } else if r.state == "running" {
                    let missing: Vec<&str> = links.iter().copied().filter(|l| !present(l)).collect();
                    format!("its shim runs; waiting for {}", missing.join("/"))
                } else {
                    format!("its agent is {}: {}", r.state, r.detail)
                }
            }
            // Waiting does not make a refused credential good.
            Err(s) if matches!(s.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied) => {
                bail!(
                    "{who}: its agent refuses the lab: {} (the lab signs with ENIFAB_ACCESS_KEY_ID/…_SECRET)",
                    s.message()
                )
            }
            Err(s) => format!("its agent does not answer ({})", s.message()),
        };
        if !alive() {
            bail!("{who}: the agent exited; see its log in the state directory ({waiting})");
        }
        if Instant::now() > deadline {
            bail!("{who} did not come up within {patience:?}: {waiting}");
        }
        if waiting != said && start.elapsed() > quiet {
            log.say("waiting", format!("{who}: {waiting}"));
            said = waiting;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An error for a name the state does not know.
pub(crate) fn not_up(what: &str, name: &str) -> anyhow::Error {
    anyhow!("{what} {name} is not up")
}
