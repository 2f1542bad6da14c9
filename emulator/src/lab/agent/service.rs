//! `enifab.v1.LabAgent`: the agent's API, what a lab running elsewhere needs done on this node
//! (see `proto/enifab/v1/lab.proto`). Each call is checked before anything is done — names are
//! plain names (never a path, never `..`), sizes are bounded, the CNI configuration is a JSON
//! object — and refused with `INVALID_ARGUMENT` otherwise; nothing is half done by a bad
//! request, and nothing here panics on one. The work itself is [`crate::lab::host`]'s (and
//! [`crate::lab::probe`]'s), run on blocking threads: it forks programs and enters namespaces.
//!
//! The node's own facts win over the caller's: the CNI configuration's `endpoint`,
//! `instanceId`, `nodeNetns`, `shimSocket` and `stateDir` are set here, from what the agent
//! knows, since only it knows how this node reaches the emulator and where its shim listens.
//! It must not decide what the lab does; it does what it is asked, on this node only.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use enifab_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::supervise::{Identity, ShimStatus};
use crate::lab::host::{self, MAX_IPTABLES_TEXT, Rule};
use crate::lab::netns::{self, Ns};
use crate::lab::probe::{self, Proto};
use crate::lab::process;

/// The largest CNI configuration accepted.
const MAX_NETCONF: usize = 64 * 1024;
const MAX_CNI_ARGS: usize = 4096;
const MAX_JUMPS: usize = 64;
const MAX_RULE_ARGS: usize = 64;
const MAX_PORTS: usize = 32;
const MAX_PROBE: Duration = Duration::from_secs(60);
const TABLES: &[&str] = &["nat", "filter", "mangle", "raw"];

/// What the agent knows about its node, and what it started there.
#[derive(Debug)]
pub struct NodeAgent {
    pub identity: Identity,
    /// The emulator, as this node reaches it.
    pub endpoint: String,
    pub netns: Ns,
    pub shim_socket: PathBuf,
    pub cni_state_dir: PathBuf,
    /// Where responders' logs go.
    pub log_dir: PathBuf,
    pub enifab: PathBuf,
    pub cni: PathBuf,
    pub shim: Arc<Mutex<ShimStatus>>,
    /// Owner → (namespace name, "" for the node's; pid).
    pub responders: Mutex<BTreeMap<String, (String, u32)>>,
}

impl NodeAgent {
    /// Stop every responder this agent started; how many were running.
    pub fn stop_responders(&self) -> u32 {
        let all = std::mem::take(&mut *self.responders.lock().expect("responders lock"));
        let mut n = 0;
        for (_, (_, pid)) in all {
            if process::alive(pid) {
                n += 1;
            }
            process::stop(pid);
        }
        n
    }

    fn status(&self) -> ShimStatus {
        self.shim.lock().expect("status lock").clone()
    }
}

/// The service; cheap to clone.
#[derive(Debug, Clone)]
pub struct AgentService {
    node: Arc<NodeAgent>,
}

impl AgentService {
    pub fn new(node: Arc<NodeAgent>) -> AgentService {
        AgentService { node }
    }
}

fn invalid(field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("invalid {field}: {why}"))
}

/// A plain name: 1–`max` characters of letters, digits, `.`, `_`, `-`; not `.` or `..`, not
/// starting with `-` (it would read as an option of `ip`).
pub fn check_name(field: &str, s: &str, max: usize) -> Result<(), Status> {
    if s.is_empty() || s.len() > max {
        return Err(invalid(field, format_args!("must be 1 to {max} characters")));
    }
    if s == "." || s == ".." || s.starts_with('-') {
        return Err(invalid(field, format_args!("{s:?} is not a name")));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(invalid(field, format_args!("{c:?} is not allowed (letters, digits, '.', '_', '-')")));
    }
    Ok(())
}

fn check_text(field: &str, s: &str, max: usize) -> Result<(), Status> {
    if s.len() > max {
        return Err(invalid(field, format_args!("{} bytes, at most {max}", s.len())));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(invalid(field, "control characters are not allowed"));
    }
    Ok(())
}

/// The namespace a call names: "" is the node's own, anything else a pod's that must exist.
fn existing_ns(node: &NodeAgent, name: &str) -> Result<Ns, Status> {
    if name.is_empty() {
        return Ok(node.netns.clone());
    }
    check_name("netns", name, 64)?;
    if !netns::exists(name) {
        return Err(Status::not_found(format!("no namespace {name} on this node")));
    }
    Ok(Ns::Named(name.to_string()))
}

fn ports(field: &str, list: &[u32]) -> Result<Vec<u16>, Status> {
    if list.len() > MAX_PORTS {
        return Err(invalid(field, format_args!("at most {MAX_PORTS} ports")));
    }
    list.iter()
        .map(|&p| u16::try_from(p).ok().filter(|p| *p != 0).ok_or_else(|| invalid(field, format_args!("port {p}"))))
        .collect()
}

/// The CNI configuration with the node's own fields set.
fn netconf(node: &NodeAgent, json: &str) -> Result<serde_json::Value, Status> {
    if json.len() > MAX_NETCONF {
        return Err(invalid("netconf_json", format_args!("{} bytes, at most {MAX_NETCONF}", json.len())));
    }
    let mut v: serde_json::Value = serde_json::from_str(json).map_err(|e| invalid("netconf_json", e))?;
    let Some(obj) = v.as_object_mut() else { return Err(invalid("netconf_json", "not a JSON object")) };
    let st = node.status();
    obj.insert("endpoint".into(), node.endpoint.clone().into());
    obj.insert("instanceId".into(), st.instance_id.into());
    obj.insert("nodeNetns".into(), node.netns.path().display().to_string().into());
    obj.insert("shimSocket".into(), node.shim_socket.display().to_string().into());
    obj.insert("stateDir".into(), node.cni_state_dir.display().to_string().into());
    Ok(v)
}

fn pod_request(
    node: &NodeAgent,
    netns: &str,
    container: &str,
    args: &str,
    conf: &str,
) -> Result<serde_json::Value, Status> {
    check_name("netns", netns, 64)?;
    check_name("container_id", container, 253)?;
    check_text("cni_args", args, MAX_CNI_ARGS)?;
    netconf(node, conf)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("agent task failed: {e}")))?
        .map_err(|e| Status::internal(format!("{e:#}")))
}

/// Sets the flag when dropped: a cancelled call (the lab saw a decisive drop) ends its probe.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[tonic::async_trait]
impl pb::lab_agent_server::LabAgent for AgentService {
    async fn describe_agent(
        &self,
        _: Request<pb::DescribeAgentRequest>,
    ) -> Result<Response<pb::DescribeAgentResponse>, Status> {
        let st = self.node.status();
        let ns = self.node.netns.clone();
        let names = ["eth0", "eth1", "eth2", "eth3", "eth4", "eth5", "eth6", "eth7", "eth8", "eth9"];
        let interfaces = blocking(move || host::interfaces(&ns, &names)).await?;
        Ok(Response::new(pb::DescribeAgentResponse {
            role: self.node.identity.role().into(),
            name: self.node.identity.name().into(),
            instance_id: st.instance_id,
            state: st.state.into(),
            detail: st.detail,
            shim_pid: st.pid,
            shim_restarts: st.restarts,
            netns: self.node.netns.to_string(),
            shim_socket: self.node.shim_socket.display().to_string(),
            interfaces: interfaces
                .into_iter()
                .map(|(name, addresses)| pb::AgentInterface { name, addresses })
                .collect(),
        }))
    }

    async fn add_pod(&self, req: Request<pb::AgentAddPodRequest>) -> Result<Response<pb::AgentAddPodResponse>, Status> {
        let r = req.into_inner();
        let conf = pod_request(&self.node, &r.netns, &r.container_id, &r.cni_args, &r.netconf_json)?;
        let st = self.node.status();
        if st.state != "running" {
            return Err(Status::failed_precondition(format!(
                "the node's shim is not running ({}{}{})",
                st.state,
                if st.detail.is_empty() { "" } else { ": " },
                st.detail
            )));
        }
        let cni = self.node.cni.clone();
        let result = blocking(move || {
            host::create_pod_ns(&r.netns)?;
            host::run_cni(&cni, "ADD", &r.container_id, &netns::path(&r.netns), &r.cni_args, &conf)
        })
        .await?;
        Ok(Response::new(pb::AgentAddPodResponse { result_json: result.to_string() }))
    }

    async fn delete_pod(
        &self,
        req: Request<pb::AgentDeletePodRequest>,
    ) -> Result<Response<pb::AgentDeletePodResponse>, Status> {
        let r = req.into_inner();
        let conf = pod_request(&self.node, &r.netns, &r.container_id, &r.cni_args, &r.netconf_json)?;
        let cni = self.node.cni.clone();
        blocking(move || {
            // DEL of a pod whose namespace is gone still releases its member ENI.
            host::run_cni(&cni, "DEL", &r.container_id, &netns::path(&r.netns), &r.cni_args, &conf)?;
            netns::delete(&r.netns)
        })
        .await?;
        Ok(Response::new(pb::AgentDeletePodResponse {}))
    }

    async fn start_responders(
        &self,
        req: Request<pb::StartRespondersRequest>,
    ) -> Result<Response<pb::StartRespondersResponse>, Status> {
        let r = req.into_inner();
        check_name("owner", &r.owner, 253)?;
        let ns = existing_ns(&self.node, &r.netns)?;
        let mut servers = Vec::new();
        for (proto, list) in [("tcp", &r.tcp), ("udp", &r.udp), ("http", &r.http)] {
            servers.extend(ports(proto, list)?.into_iter().map(|p| (proto.to_string(), p)));
        }
        if servers.is_empty() {
            return Err(invalid("ports", "no tcp, udp or http port"));
        }
        if let Some((_, pid)) = self.node.responders.lock().expect("responders lock").get(&r.owner)
            && process::alive(*pid)
        {
            return Ok(Response::new(pb::StartRespondersResponse { pid: *pid, started: false }));
        }
        let (enifab, log) = (self.node.enifab.clone(), self.node.log_dir.join(format!("responder-{}.log", r.owner)));
        let _ = std::fs::create_dir_all(&self.node.log_dir);
        let owner = r.owner.clone();
        let pid = blocking(move || host::spawn_responders(&enifab, &ns, &owner, &servers, &log)).await?;
        self.node.responders.lock().expect("responders lock").insert(r.owner, (r.netns, pid));
        Ok(Response::new(pb::StartRespondersResponse { pid, started: true }))
    }

    async fn read_iptables(
        &self,
        req: Request<pb::ReadIptablesRequest>,
    ) -> Result<Response<pb::ReadIptablesResponse>, Status> {
        let table = req.into_inner().table;
        if !TABLES.contains(&table.as_str()) {
            return Err(invalid("table", format_args!("{table:?} (one of {})", TABLES.join(", "))));
        }
        let ns = self.node.netns.clone();
        let text = blocking(move || host::iptables(&ns, "iptables-save", &["-t", &table], None)).await?;
        Ok(Response::new(pb::ReadIptablesResponse { text }))
    }

    async fn apply_iptables(
        &self,
        req: Request<pb::ApplyIptablesRequest>,
    ) -> Result<Response<pb::ApplyIptablesResponse>, Status> {
        let r = req.into_inner();
        let jumps = check_rules(&r.restore, r.jumps)?;
        let ns = self.node.netns.clone();
        blocking(move || host::apply_iptables(&ns, &r.restore, &jumps)).await?;
        Ok(Response::new(pb::ApplyIptablesResponse {}))
    }

    async fn probe(&self, req: Request<pb::AgentProbeRequest>) -> Result<Response<pb::AgentProbeResponse>, Status> {
        let r = req.into_inner();
        let ns = existing_ns(&self.node, &r.netns)?;
        let to: IpAddr = r.address.parse().map_err(|_| invalid("address", format_args!("{:?}", r.address)))?;
        let proto = Proto::parse(&r.protocol)
            .ok_or_else(|| invalid("protocol", format_args!("{:?} (tcp, udp, http or icmp)", r.protocol)))?;
        let port = u16::try_from(r.port).map_err(|_| invalid("port", r.port))?;
        if port == 0 && proto != Proto::Icmp {
            return Err(invalid("port", "must be set for tcp, udp and http"));
        }
        let timeout = match Duration::from_millis(r.timeout_ms.into()) {
            d if d.is_zero() => probe::TIMEOUT,
            d if d > MAX_PROBE => return Err(invalid("timeout_ms", format_args!("at most {}", MAX_PROBE.as_millis()))),
            d => d,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let _guard = StopOnDrop(stop.clone());
        let outcome = blocking(move || probe::probe_in(&ns, to, proto, port, timeout, stop)).await?;
        Ok(Response::new(pb::AgentProbeResponse { outcome: outcome.word().into(), detail: outcome.detail().into() }))
    }

    async fn clean_up(
        &self,
        req: Request<pb::AgentCleanUpRequest>,
    ) -> Result<Response<pb::AgentCleanUpResponse>, Status> {
        let prefix = req.into_inner().netns_prefix;
        check_name("netns_prefix", &prefix, 64)?;
        if prefix.len() < 4 {
            return Err(invalid("netns_prefix", "at least 4 characters"));
        }
        let node = self.node.clone();
        let (stopped, deleted) = blocking(move || {
            let stopped = node.stop_responders();
            let mut deleted = Vec::new();
            // Never the node's own namespace, whatever the prefix.
            let own = match &node.netns {
                Ns::Named(n) => Some(n.clone()),
                _ => None,
            };
            for ns in netns::list(&prefix).into_iter().filter(|n| Some(n) != own.as_ref()) {
                netns::delete(&ns)?;
                deleted.push(ns);
            }
            Ok((stopped, deleted))
        })
        .await?;
        Ok(Response::new(pb::AgentCleanUpResponse { deleted_netns: deleted, stopped_responders: stopped }))
    }
}

/// The jump rules of an ApplyIptables call, checked; with the restore text's size.
fn check_rules(restore: &str, jumps: Vec<pb::IptablesRule>) -> Result<Vec<Rule>, Status> {
    if restore.len() > MAX_IPTABLES_TEXT {
        return Err(invalid("restore", format_args!("{} bytes, at most {MAX_IPTABLES_TEXT}", restore.len())));
    }
    if restore.contains('\0') {
        return Err(invalid("restore", "NUL is not allowed"));
    }
    if jumps.len() > MAX_JUMPS {
        return Err(invalid("jumps", format_args!("at most {MAX_JUMPS}")));
    }
    jumps
        .into_iter()
        .map(|j| {
            if !TABLES.contains(&j.table.as_str()) {
                return Err(invalid("jumps.table", format_args!("{:?}", j.table)));
            }
            let chain_ok = !j.chain.is_empty()
                && j.chain.len() <= 28
                && j.chain.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '-');
            if !chain_ok || j.chain.starts_with('-') {
                return Err(invalid("jumps.chain", format_args!("{:?}", j.chain)));
            }
            if j.args.len() > MAX_RULE_ARGS {
                return Err(invalid("jumps.args", format_args!("at most {MAX_RULE_ARGS}")));
            }
            for a in &j.args {
                check_text("jumps.args", a, 256)?;
            }
            Ok(Rule { table: j.table, chain: j.chain, args: j.args })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_names() {
        for ok in ["efb1a2b3c-p0", "cn-hongkong.10.0.4.22", "a", "x_y"] {
            assert!(check_name("n", ok, 64).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "../etc", "a/b", "/var/run/netns/x", "-all", "a b", "é", "a\0"] {
            let e = check_name("n", bad, 64).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
        assert!(check_name("n", &"a".repeat(65), 64).is_err());
    }

    #[test]
    fn iptables_requests_are_bounded() {
        let rule = |table: &str, chain: &str, args: &[&str]| pb::IptablesRule {
            table: table.into(),
            chain: chain.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        let ok = check_rules("*nat\nCOMMIT\n", vec![rule("nat", "PREROUTING", &["-j", "KUBE-SERVICES"])]).unwrap();
        assert_eq!(ok[0].chain, "PREROUTING");
        assert!(check_rules(&"x".repeat(MAX_IPTABLES_TEXT + 1), vec![]).is_err(), "huge text");
        assert!(check_rules("", vec![rule("security", "INPUT", &[])]).is_err(), "unknown table");
        assert!(check_rules("", vec![rule("nat", "-F", &[])]).is_err(), "a chain is no option");
        assert!(check_rules("", vec![rule("nat", "input; rm", &[])]).is_err());
        assert!(check_rules("", vec![rule("nat", "INPUT", &["a\nb"])]).is_err(), "control characters");
        assert!(check_rules("", (0..=MAX_JUMPS).map(|_| rule("nat", "INPUT", &[])).collect()).is_err());
    }

    #[test]
    fn ports_are_ports() {
        assert_eq!(ports("tcp", &[80, 65535]).unwrap(), [80, 65535]);
        assert!(ports("tcp", &[0]).is_err());
        assert!(ports("tcp", &[65536]).is_err());
        assert!(ports("tcp", &[1; MAX_PORTS + 1]).is_err());
    }
}
