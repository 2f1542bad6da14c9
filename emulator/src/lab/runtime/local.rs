//! The local node runtime: everything on this machine. Each ECS instance of the topology is a
//! network namespace (`efb<id>-n<i>`) whose shim is started, and started again should it die,
//! by an `enifab lab agent` (its API on a Unix socket in the state directory, which the lab
//! asks whether the node is up); each external client a namespace (`efb<id>-x<i>`) plugged into
//! the internet side the same way; each pod a namespace (`efb<id>-p<i>`) wired by `enifab-cni`
//! run from here. Responders, kube-proxy's rules and probes are done in-process
//! ([`crate::lab::host`], [`crate::lab::probe`]): no round trip through the agent, so the local
//! lab is as fast as it was before agents existed.
//!
//! The agent's and the shim's output go to `shim-<id>-n<i>.log` (`-x<i>` for external clients)
//! in the state directory. Must not leave anything behind that [`remove_host_leftovers`] could
//! not find by the lab's prefix.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};

use super::{NodeSpec, Place, PodRequest, ProbeFuture, not_up, wait_ready};
use crate::lab::agent::client;
use crate::lab::host::{self, Rule};
use crate::lab::netns::{self, Ns};
use crate::lab::probe::{self, Proto};
use crate::lab::process::{self, alive, spawn_daemon_env};
use crate::lab::state::{self, ExternalState, LabState, NodeState, Responder};
use crate::lab::{LabOptions, Log};

/// How long a local node may take to come up.
const PATIENCE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, Default)]
pub struct Local;

impl Local {
    pub(super) async fn node(
        &self,
        opts: &LabOptions,
        st: &mut LabState,
        node: &NodeSpec<'_>,
        log: &mut Log<'_>,
    ) -> Result<()> {
        let NodeSpec { index, name, instance_id, primary_ip, primary_ip6, links } = *node;
        let m = Machine::new(opts, &st.id, &format!("n{index}"))?;
        underlay(&st.id, index, &m.ns)?;
        let known = st.nodes.get(name).cloned();
        // Another instance by that name, or a lab made before nodes had agents: a new agent.
        let running = known.as_ref().filter(|n| n.instance_id == instance_id).map(|n| n.agent_pid);
        let stale = known.as_ref().map(|n| (n.agent_pid, n.shim_pid));
        let who = ["--instance-id".to_string(), instance_id.to_string()];
        let agent_pid = m.agent(opts, running, stale, &who, &[("ENIFAB_FAST_PATH_DEVICE", UNDERLAY)])?;
        st.nodes.insert(
            name.to_string(),
            NodeState {
                instance_id: instance_id.to_string(),
                netns: m.ns.clone(),
                shim_pid: known.map_or(0, |n| n.shim_pid),
                socket: m.shim_socket.clone(),
                primary_ip: primary_ip.to_string(),
                primary_ip6: primary_ip6.to_string(),
                agent_pid,
                agent: m.agent_address(),
            },
        );
        state::save(opts, st)?;
        let shim_pid = m.ready(&format!("node {name}"), instance_id, links, agent_pid, log).await?;
        st.nodes.get_mut(name).expect("recorded above").shim_pid = shim_pid;
        state::save(opts, st)?;
        log.say("node", format!("{name:<26} {instance_id} netns {} shim pid {shim_pid}", m.ns));
        Ok(())
    }

    pub(super) async fn external(
        &self,
        opts: &LabOptions,
        st: &mut LabState,
        index: usize,
        name: &str,
        address: &str,
        log: &mut Log<'_>,
    ) -> Result<()> {
        let ip = address.split('/').next().unwrap_or(address).to_string();
        let m = Machine::new(opts, &st.id, &format!("x{index}"))?;
        let known = st.externals.get(name).cloned();
        let running = known.as_ref().filter(|x| x.address == ip).map(|x| x.agent_pid);
        let stale = known.as_ref().map(|x| (x.agent_pid, x.shim_pid));
        let who = ["--external".to_string(), name.to_string(), "--external-address".to_string(), address.to_string()];
        let agent_pid = m.agent(opts, running, stale, &who, &[])?;
        st.externals.insert(
            name.to_string(),
            ExternalState {
                netns: m.ns.clone(),
                shim_pid: known.map_or(0, |x| x.shim_pid),
                socket: m.shim_socket.clone(),
                address: ip,
                agent_pid,
                agent: m.agent_address(),
            },
        );
        state::save(opts, st)?;
        let shim_pid = m.ready(&format!("external client {name}"), name, &["eth0"], agent_pid, log).await?;
        st.externals.get_mut(name).expect("recorded above").shim_pid = shim_pid;
        state::save(opts, st)?;
        log.say("external", format!("{name:<26} {address} netns {} shim pid {shim_pid}", m.ns));
        Ok(())
    }

    pub(super) async fn add_pod(
        &self,
        opts: &LabOptions,
        st: &LabState,
        pod: PodRequest,
    ) -> Result<(String, serde_json::Value)> {
        let ns = format!("efb{}-p{}", st.id, pod.index);
        let conf = node_netconf(opts, st, &pod)?;
        let cni = opts.bin("enifab-cni")?;
        let pod_ns = ns.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<serde_json::Value> {
            host::create_pod_ns(&pod_ns)?;
            host::run_cni(&cni, "ADD", &pod.container_id, &netns::path(&pod_ns), &pod.cni_args, &conf)
        })
        .await??;
        Ok((ns, result))
    }

    pub(super) async fn delete_pod(&self, opts: &LabOptions, st: &LabState, pod: PodRequest, ns: &str) -> Result<()> {
        let conf = node_netconf(opts, st, &pod)?;
        let cni = opts.bin("enifab-cni")?;
        let ns = ns.to_string();
        tokio::task::spawn_blocking(move || -> Result<()> {
            host::run_cni(&cni, "DEL", &pod.container_id, &netns::path(&ns), &pod.cni_args, &conf)?;
            netns::delete(&ns)
        })
        .await?
    }

    pub(super) fn start_responders(
        &self,
        opts: &LabOptions,
        st: &LabState,
        owner: &str,
        place: Place<'_>,
        servers: &[(String, u16)],
    ) -> Result<(Responder, bool)> {
        if let Some(r) = st.responders.iter().find(|r| r.owner == owner && alive(r.pid)) {
            return Ok((r.clone(), false));
        }
        let ns = netns_of(st, place)?;
        let log = state::file(opts, &format!("responder-{}-{ns}.log", st.id));
        let pid = host::spawn_responders(&opts.bin("enifab")?, &Ns::Named(ns.clone()), owner, servers, &log)?;
        Ok((Responder { owner: owner.to_string(), netns: ns, pid }, true))
    }

    pub(super) fn read_iptables(&self, st: &LabState, node: &str, table: &str) -> Result<String> {
        host::iptables(&node_ns(st, node)?, "iptables-save", &["-t", table], None)
    }

    pub(super) fn apply_iptables(&self, st: &LabState, node: &str, text: &str, jumps: &[Rule]) -> Result<()> {
        host::apply_iptables(&node_ns(st, node)?, text, jumps)
    }

    pub(super) fn probe(
        &self,
        st: &LabState,
        from: Place<'_>,
        to: std::net::IpAddr,
        proto: Proto,
        port: u16,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<ProbeFuture> {
        let ns = netns_of(st, from)?;
        Ok(Box::pin(async move {
            tokio::task::spawn_blocking(move || probe::probe_until(&ns, to, proto, port, stop)).await?
        }))
    }

    /// Responders, then the agents (which stop their shims: the devices go with them), then any
    /// shim an agent did not stop.
    pub(super) fn down(&self, st: &LabState, log: &mut Log<'_>, _problems: &mut Vec<String>) {
        for r in &st.responders {
            process::stop(r.pid);
        }
        for (name, node) in &st.nodes {
            process::stop(node.agent_pid);
            process::stop(node.shim_pid);
            let _ = std::fs::remove_file(&node.socket);
            let _ = std::fs::remove_file(node.agent.trim_start_matches("unix:"));
            log.say("node", format!("{name} shim stopped"));
        }
        for (name, x) in &st.externals {
            process::stop(x.agent_pid);
            process::stop(x.shim_pid);
            let _ = std::fs::remove_file(&x.socket);
            let _ = std::fs::remove_file(x.agent.trim_start_matches("unix:"));
            log.say("external", format!("{name} shim stopped"));
        }
    }
}

/// Stop the lab's helper processes and delete its namespaces, found by name only (`efb<id>-`),
/// as `down` does after a crash; returns what could not be removed. Test guards call it too.
/// Agents go first: a shim stopped under a running agent would be started again.
pub fn remove_host_leftovers(id: &str) -> Vec<String> {
    let prefix = format!("efb{id}-");
    for pid in process::naming(&prefix).into_iter().filter(|p| process::is_agent(*p)) {
        process::stop(pid);
    }
    for pid in process::naming(&prefix) {
        process::stop(pid);
    }
    netns::list(&prefix).iter().filter_map(|ns| netns::delete(ns).err().map(|e| format!("{e:#}"))).collect()
}

/// The node-side name of a local node's underlay link: its shim's fast path runs on it.
const UNDERLAY: &str = "underlay0";

/// The local lab's underlay: what the nodes' kernel fast paths send to each other over, as a
/// host's NIC on the provider's network does (a container's own interface in a compose
/// cluster). A namespace `efb<id>-u` holds a bridge; node `i` gets a veth `underlay0` with
/// 198.18.0.(i+1)/24 (RFC 2544's benchmarking range: never a VPC's, and only ever inside this
/// lab's namespaces). A large MTU, so a full frame fits encapsulated. Idempotent; it goes with
/// the lab's namespaces.
fn underlay(lab: &str, index: usize, ns: &str) -> Result<()> {
    let hub = format!("efb{lab}-u");
    if !netns::exists(&hub) {
        netns::create(&hub)?;
        // A plain switch: when br_netfilter is loaded (Docker loads it), bridged frames would
        // otherwise go through iptables too, a cost the lab's underlay has no use for.
        let _ = netns::sysctls(
            &hub,
            &[
                ("net/bridge/bridge-nf-call-iptables", "0"),
                ("net/bridge/bridge-nf-call-ip6tables", "0"),
                ("net/bridge/bridge-nf-call-arptables", "0"),
            ],
        );
        netns::ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        netns::ip(&["-n", &hub, "link", "set", "br0", "up"])?;
    }
    if Ns::Named(ns.to_string())
        .command("ip")
        .args(["link", "show", UNDERLAY])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    let host =
        u8::try_from(index + 1).ok().filter(|h| *h < 255).ok_or_else(|| anyhow!("too many nodes for the underlay"))?;
    let peer = format!("n{index}");
    let _ = netns::ip(&["-n", &hub, "link", "del", &peer]);
    netns::ip(&[
        "link", "add", UNDERLAY, "netns", ns, "mtu", "9000", "type", "veth", "peer", "name", &peer, "netns", &hub,
        "mtu", "9000",
    ])?;
    netns::ip(&["-n", ns, "addr", "add", &format!("198.18.0.{host}/24"), "dev", UNDERLAY])?;
    netns::ip(&["-n", ns, "link", "set", UNDERLAY, "up"])?;
    netns::ip(&["-n", &hub, "link", "set", &peer, "master", "br0", "up"])?;
    Ok(())
}

/// `enifab lab agent` for a local node (or external client) in namespace `ns`.
/// One machine of a local lab (a node or an external client, `tag` `n0`, `x1`, …): its
/// namespace, and the sockets of its agent and its shim.
struct Machine {
    ns: String,
    agent_socket: std::path::PathBuf,
    shim_socket: std::path::PathBuf,
    log: String,
}

impl Machine {
    fn new(opts: &LabOptions, lab: &str, tag: &str) -> Result<Machine> {
        let ns = format!("efb{lab}-{tag}");
        netns::create(&ns)?;
        Ok(Machine {
            ns,
            agent_socket: state::file(opts, &format!("agent-{lab}-{tag}.sock")),
            shim_socket: state::file(opts, &format!("shim-{lab}-{tag}.sock")),
            log: format!("shim-{lab}-{tag}.log"),
        })
    }

    /// The agent's pid: `running` if it is alive, else a new agent for `who`, after stopping
    /// what a `stale` record (agent, shim) names.
    fn agent(
        &self,
        opts: &LabOptions,
        running: Option<u32>,
        stale: Option<(u32, u32)>,
        who: &[String],
        env: &[(&str, &str)],
    ) -> Result<u32> {
        if let Some(pid) = running.filter(|p| alive(*p)) {
            return Ok(pid);
        }
        if let Some((agent, shim)) = stale {
            process::stop(agent);
            process::stop(shim);
        }
        spawn_agent(opts, who, &self.ns, &self.agent_socket, &self.shim_socket, &self.log, env)
    }

    fn agent_address(&self) -> String {
        format!("unix:{}", self.agent_socket.display())
    }

    /// Wait until the agent's shim serves `identity` with `links` plugged in: its pid.
    async fn ready(
        &self,
        what: &str,
        identity: &str,
        links: &[&str],
        agent_pid: u32,
        log: &mut Log<'_>,
    ) -> Result<u32> {
        let mut agent = client::connect(&self.agent_socket.display().to_string())?;
        let r = wait_ready(&mut agent, what, identity, links, PATIENCE, &|| alive(agent_pid), log)
            .await
            .with_context(|| format!("{what} did not come up"))?;
        Ok(r.shim_pid)
    }
}

fn spawn_agent(
    opts: &LabOptions,
    who: &[String],
    ns: &str,
    agent_socket: &std::path::Path,
    shim_socket: &std::path::Path,
    log: &str,
    extra_env: &[(&str, &str)],
) -> Result<u32> {
    let mut args = vec!["--endpoint".to_string(), opts.endpoint.clone(), "lab".into(), "agent".into()];
    args.extend(who.iter().cloned());
    args.extend([
        "--netns".into(),
        ns.to_string(),
        "--listen".into(),
        agent_socket.display().to_string(),
        "--shim-socket".into(),
        shim_socket.display().to_string(),
        "--cni-state-dir".into(),
        opts.state_dir.join("cni").display().to_string(),
        "--log-dir".into(),
        opts.state_dir.display().to_string(),
    ]);
    // The agent and its shim sign their calls with the lab's AccessKey, however it was given.
    let key = crate::cli::access_key();
    let mut env: Vec<(&str, &str)> = key
        .as_ref()
        .map(|k| vec![("ENIFAB_ACCESS_KEY_ID", k.id.as_str()), ("ENIFAB_ACCESS_KEY_SECRET", k.secret.as_str())])
        .unwrap_or_default();
    env.extend_from_slice(extra_env);
    spawn_daemon_env(&opts.bin("enifab")?, &args, &env, &state::file(opts, log))
}

/// The pod's network configuration with its node's fields, as this machine sees them.
fn node_netconf(opts: &LabOptions, st: &LabState, pod: &PodRequest) -> Result<serde_json::Value> {
    let node = st.nodes.get(&pod.node).ok_or_else(|| not_up("node", &pod.node))?;
    let mut conf = pod.netconf.clone();
    conf["endpoint"] = opts.endpoint.clone().into();
    conf["instanceId"] = node.instance_id.clone().into();
    conf["nodeNetns"] = netns::path(&node.netns).display().to_string().into();
    conf["shimSocket"] = node.socket.display().to_string().into();
    conf["stateDir"] = opts.state_dir.join("cni").display().to_string().into();
    Ok(conf)
}

fn node_ns(st: &LabState, node: &str) -> Result<Ns> {
    Ok(Ns::Named(st.nodes.get(node).ok_or_else(|| not_up("node", node))?.netns.clone()))
}

fn netns_of(st: &LabState, place: Place<'_>) -> Result<String> {
    let found = match place {
        Place::Node(n) => st.nodes.get(n).map(|x| x.netns.clone()),
        Place::Pod(p) => st.pods.get(p).map(|x| x.netns.clone()),
        Place::External(x) => st.externals.get(x).map(|x| x.netns.clone()),
    };
    found.ok_or_else(|| anyhow!("{place:?} is not up"))
}
