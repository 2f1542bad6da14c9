//! The agents node runtime: each node and external client of the topology is wherever its
//! `enifab lab agent` runs (a container that is the node, a namespace on another host), named
//! on the command line as `--agent NODE=ADDR` and recorded in the state. The lab never touches
//! a node itself: it waits until the node's agent runs the shim for the instance `apply` made
//! (the agent finds it by name) and the NICs are plugged in, then asks the agent for pods,
//! responders, kube-proxy's rules and probes. Pods' namespaces are named as in the local
//! runtime (`efb<id>-p<i>`), on their node's machine.
//!
//! Must not assume anything about where an agent is (same host or not, container or not): only
//! its API. An agent that cannot be reached is waited for at `up` (nodes may start after the
//! lab) and reported at `down`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use enifab_proto::v1 as pb;

use super::{NodeSpec, Place, PodRequest, ProbeFuture, not_up, wait_ready};
use crate::lab::Log;
use crate::lab::agent::client::{self, AgentClient};
use crate::lab::host::Rule;
use crate::lab::probe::{Outcome, Proto, TIMEOUT};
use crate::lab::state::{ExternalState, LabState, NodeState, Responder};

/// How long `up` waits for a node's agent (containers start in any order, and an agent finds
/// its instance only once `apply` made it).
const PATIENCE: Duration = Duration::from_secs(180);

/// The agents, by the name of their node or external client.
pub struct Agents {
    agents: BTreeMap<String, (String, AgentClient)>,
}

fn rpc(who: &str, what: &str) -> impl Fn(tonic::Status) -> anyhow::Error {
    let (who, what) = (who.to_string(), what.to_string());
    move |s| anyhow!("{what} on {who}'s agent: {}", s.message())
}

impl Agents {
    pub fn new(addresses: &BTreeMap<String, String>) -> Result<Agents> {
        let mut agents = BTreeMap::new();
        for (name, addr) in addresses {
            let c = client::connect(addr).with_context(|| format!("the agent of {name}"))?;
            agents.insert(name.clone(), (addr.clone(), c));
        }
        Ok(Agents { agents })
    }

    pub fn addresses(&self) -> BTreeMap<String, String> {
        self.agents.iter().map(|(k, (a, _))| (k.clone(), a.clone())).collect()
    }

    fn client(&self, name: &str) -> Result<AgentClient> {
        match self.agents.get(name) {
            Some((_, c)) => Ok(c.clone()),
            None => bail!("no agent for {name}: say where it is with --agent {name}=ADDR"),
        }
    }

    /// The agent a place belongs to, and the namespace there ("" for the machine's own).
    fn at(&self, st: &LabState, place: Place<'_>) -> Result<(String, AgentClient, String)> {
        match place {
            Place::Node(n) | Place::External(n) => Ok((n.to_string(), self.client(n)?, String::new())),
            Place::Pod(p) => {
                let pod = st.pods.get(p).ok_or_else(|| not_up("pod", p))?;
                Ok((pod.node.clone(), self.client(&pod.node)?, pod.netns.clone()))
            }
        }
    }

    pub(super) async fn node(&self, st: &mut LabState, node: &NodeSpec<'_>, log: &mut Log<'_>) -> Result<()> {
        let NodeSpec { name, instance_id, primary_ip, primary_ip6, links, .. } = *node;
        let mut c = self.client(name)?;
        let r = wait_ready(&mut c, &format!("node {name}"), instance_id, links, PATIENCE, &|| true, log)
            .await
            .with_context(|| format!("node {name} did not come up"))?;
        if r.role != "instance" {
            bail!("the agent given for node {name} serves the {} {}", r.role, r.name);
        }
        st.nodes.insert(
            name.to_string(),
            NodeState {
                instance_id: instance_id.to_string(),
                netns: r.netns.clone(),
                shim_pid: r.shim_pid,
                socket: r.shim_socket.clone().into(),
                primary_ip: primary_ip.to_string(),
                primary_ip6: primary_ip6.to_string(),
                agent_pid: 0,
                agent: self.agents[name].0.clone(),
            },
        );
        log.say("node", format!("{name:<26} {instance_id} agent {} shim pid {}", self.agents[name].0, r.shim_pid));
        Ok(())
    }

    pub(super) async fn external(&self, st: &mut LabState, name: &str, address: &str, log: &mut Log<'_>) -> Result<()> {
        let mut c = self.client(name)?;
        let r = wait_ready(&mut c, &format!("external client {name}"), name, &["eth0"], PATIENCE, &|| true, log)
            .await
            .with_context(|| format!("external client {name} did not come up"))?;
        let ip = address.split('/').next().unwrap_or(address);
        let has = r
            .interfaces
            .iter()
            .any(|i| i.name == "eth0" && i.addresses.iter().any(|a| a.split('/').next() == Some(ip)));
        if r.role != "external" || !has {
            bail!(
                "the agent given for external client {name} serves the {} {} without {address} on eth0",
                r.role,
                r.name
            );
        }
        st.externals.insert(
            name.to_string(),
            ExternalState {
                netns: r.netns.clone(),
                shim_pid: r.shim_pid,
                socket: r.shim_socket.clone().into(),
                address: ip.to_string(),
                agent_pid: 0,
                agent: self.agents[name].0.clone(),
            },
        );
        log.say("external", format!("{name:<26} {address} agent {} shim pid {}", self.agents[name].0, r.shim_pid));
        Ok(())
    }

    pub(super) async fn add_pod(&self, st: &LabState, pod: PodRequest) -> Result<(String, serde_json::Value)> {
        let ns = format!("efb{}-p{}", st.id, pod.index);
        let r = self
            .client(&pod.node)?
            .add_pod(pb::AgentAddPodRequest {
                netns: ns.clone(),
                container_id: pod.container_id,
                cni_args: pod.cni_args,
                netconf_json: pod.netconf.to_string(),
            })
            .await
            .map_err(rpc(&pod.node, "CNI ADD"))?
            .into_inner();
        let result =
            serde_json::from_str(&r.result_json).with_context(|| format!("the CNI's answer: {}", r.result_json))?;
        Ok((ns, result))
    }

    pub(super) async fn delete_pod(&self, _st: &LabState, pod: PodRequest, ns: &str) -> Result<()> {
        self.client(&pod.node)?
            .delete_pod(pb::AgentDeletePodRequest {
                netns: ns.to_string(),
                container_id: pod.container_id,
                cni_args: pod.cni_args,
                netconf_json: pod.netconf.to_string(),
            })
            .await
            .map_err(rpc(&pod.node, "CNI DEL"))?;
        Ok(())
    }

    pub(super) async fn start_responders(
        &self,
        st: &LabState,
        owner: &str,
        place: Place<'_>,
        servers: &[(String, u16)],
    ) -> Result<(Responder, bool)> {
        let (who, mut c, netns) = self.at(st, place)?;
        let list = |p: &str| servers.iter().filter(|(q, _)| q == p).map(|(_, n)| u32::from(*n)).collect();
        let r = c
            .start_responders(pb::StartRespondersRequest {
                owner: owner.to_string(),
                netns: netns.clone(),
                tcp: list("tcp"),
                udp: list("udp"),
                http: list("http"),
            })
            .await
            .map_err(rpc(&who, "starting responders"))?
            .into_inner();
        Ok((Responder { owner: owner.to_string(), netns, pid: r.pid }, r.started))
    }

    pub(super) async fn read_iptables(&self, node: &str, table: &str) -> Result<String> {
        let r = self
            .client(node)?
            .read_iptables(pb::ReadIptablesRequest { table: table.to_string() })
            .await
            .map_err(rpc(node, "iptables-save"))?;
        Ok(r.into_inner().text)
    }

    pub(super) async fn apply_iptables(&self, node: &str, text: &str, jumps: &[Rule]) -> Result<()> {
        let jumps = jumps
            .iter()
            .map(|j| pb::IptablesRule { table: j.table.clone(), chain: j.chain.clone(), args: j.args.clone() })
            .collect();
        self.client(node)?
            .apply_iptables(pb::ApplyIptablesRequest { restore: text.to_string(), jumps })
            .await
            .map_err(rpc(node, "iptables-restore"))?;
        Ok(())
    }

    /// The agent runs the probe; a `stop` drops the call, which ends the probe there at once.
    pub(super) fn probe(
        &self,
        st: &LabState,
        from: Place<'_>,
        to: IpAddr,
        proto: Proto,
        port: u16,
        stop: Arc<AtomicBool>,
    ) -> Result<ProbeFuture> {
        let (who, mut c, netns) = self.at(st, from)?;
        let req = pb::AgentProbeRequest {
            netns,
            address: to.to_string(),
            protocol: proto.as_str().into(),
            port: port.into(),
            timeout_ms: TIMEOUT.as_millis() as u32,
        };
        Ok(Box::pin(async move {
            let call = c.probe(req);
            tokio::pin!(call);
            loop {
                tokio::select! {
                    r = &mut call => {
                        let r = r.map_err(rpc(&who, "probe"))?.into_inner();
                        return Outcome::from_word(&r.outcome, &r.detail)
                            .ok_or_else(|| anyhow!("{who}'s agent answered a probe with {:?}", r.outcome));
                    }
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {
                        if stop.load(Ordering::Relaxed) {
                            return Ok(Outcome::Timeout);
                        }
                    }
                }
            }
        }))
    }

    /// Each agent stops the lab's responders and deletes what is left of its pods' namespaces.
    /// The shims keep running: the nodes are the agents' (their containers'), not the lab's.
    pub(super) async fn down(&self, st: &LabState, log: &mut Log<'_>, problems: &mut Vec<String>) {
        // Pods only (`-p<i>`): on a shared host the nodes' own namespaces carry the lab's prefix too.
        let prefix = format!("efb{}-p", st.id);
        for (name, (addr, c)) in &self.agents {
            let r = c.clone().clean_up(pb::AgentCleanUpRequest { netns_prefix: prefix.clone() }).await;
            match r {
                Ok(r) => {
                    let r = r.into_inner();
                    log.say(
                        "agent",
                        format!(
                            "{name:<26} {} responders stopped, {} namespaces left deleted",
                            r.stopped_responders,
                            r.deleted_netns.len()
                        ),
                    );
                }
                Err(s) => problems.push(format!("the agent of {name} at {addr}: {}", s.message())),
            }
        }
    }
}
