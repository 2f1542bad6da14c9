//! vServer groups of a CLB (SLB `2014-05-15`): CreateVServerGroup, DescribeVServerGroups,
//! DescribeVServerGroupAttribute, AddVServerGroupBackendServers,
//! RemoveVServerGroupBackendServers, SetVServerGroupAttribute, ModifyVServerGroupBackendServers,
//! DeleteVServerGroup.
//!
//! `BackendServers` arrives as a JSON string: a list of objects whose keys the cloud takes in
//! either case (`ServerId` or `serverId`, … — the CCM sends lower camel case plus keys of its own
//! such as `TargetRef`, which are ignored) and whose numbers may be numbers or strings
//! ([`parse_backend_servers`]). At most 40 per call (what the CCM sends; the API reference says
//! 20), at most 200 backends per load balancer (`InstanceBackendServerNumberOverLimit`, which the
//! CCM answers by removing first and adding again).
//!
//! Backend types and what they must be:
//! - `ecs` (default): an instance; its address is its primary private IP, or `ServerIp` if that
//!   is one of its primary ENI's addresses;
//! - `eni`: an ENI that holds `ServerIp` (required); for a trunk pod that is its member ENI,
//!   which is what the CCM finds with DescribeNetworkInterfaces;
//! - `ip`: an address (`ServerIp`, or `ServerId` when that is an address) inside the CIDR of the
//!   load balancer's VPC, which must therefore be known already.
//!
//! All backends of a load balancer are in its VPC (`NetworkConflict` otherwise); an internet load
//! balancer without a VPC takes the VPC of its first backend. A backend is identified by
//! `ServerId`, its address and `Port` (the CCM's key for ENI backends; for the others the address
//! follows from the ID). Adding one that is already there is refused, removing one that is not
//! there is accepted and changes nothing. Backends stay when their ENI or instance goes away
//! (the cloud keeps them too); the data plane then finds nothing at the address and the health
//! check fails. Deleting a group a listener uses is `RspoolVipExist`.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::load_balancer::LoadBalancer;
use super::{port, ranged};
use crate::Result;
use crate::error::ModelError;
use crate::ids::IdKind;
use crate::region::{Kind, Region, check_text};
use crate::time::Millis;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendServer {
    /// `i-…`, `eni-…`, or the address itself for `ip` backends.
    pub server_id: String,
    /// Where traffic for this backend goes.
    pub server_ip: Ipv4Addr,
    pub port: u16,
    /// 0–100; 0 takes no new connections.
    pub weight: u8,
    /// `ecs`, `eni` or `ip`.
    pub server_type: String,
    pub description: String,
}

impl BackendServer {
    /// What tells two backends of a group apart.
    pub fn key(&self) -> (&str, Ipv4Addr, u16) {
        (&self.server_id, self.server_ip, self.port)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VServerGroup {
    pub v_server_group_id: String,
    pub v_server_group_name: String,
    pub load_balancer_id: String,
    pub backend_servers: Vec<BackendServer>,
    pub creation_time: Millis,
}

/// One element of a `BackendServers` JSON list, as given (validated against the region later).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendServerInput {
    pub server_id: String,
    pub server_ip: Option<String>,
    pub port: Option<i64>,
    pub weight: Option<i64>,
    pub server_type: Option<String>,
    pub description: Option<String>,
}

/// Parse a `BackendServers` parameter: a JSON array of objects, keys in any case, numbers as
/// numbers or strings, unknown keys ignored; at most `max` elements. An empty string is an
/// empty list.
pub fn parse_backend_servers(param: &'static str, s: &str, max: usize) -> Result<Vec<BackendServerInput>> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    let bad = |why: &str| ModelError::invalid(param, why.to_string());
    let items: Vec<serde_json::Value> =
        serde_json::from_str(s).map_err(|_| bad("must be a JSON array of backend server objects"))?;
    if items.len() > max {
        return Err(bad(&format!("at most {max} backend servers in one call")));
    }
    let text = |v: &serde_json::Value, what: &str| -> Result<Option<String>> {
        match v {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::String(s) => Ok(Some(s.clone())),
            serde_json::Value::Number(n) => Ok(Some(n.to_string())),
            _ => Err(bad(&format!("{what} must be a string"))),
        }
    };
    let number = |v: &serde_json::Value, what: &str| -> Result<Option<i64>> {
        match v {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::Number(n) => {
                n.as_i64().map(Some).ok_or_else(|| bad(&format!("{what} must be an integer")))
            }
            serde_json::Value::String(s) if s.trim().is_empty() => Ok(None),
            serde_json::Value::String(s) => {
                s.trim().parse().map(Some).map_err(|_| bad(&format!("{what} must be an integer")))
            }
            _ => Err(bad(&format!("{what} must be an integer"))),
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let serde_json::Value::Object(fields) = item else {
            return Err(bad("each backend server is a JSON object"));
        };
        let mut b = BackendServerInput::default();
        for (k, v) in &fields {
            match k.to_ascii_lowercase().as_str() {
                "serverid" => b.server_id = text(v, "ServerId")?.unwrap_or_default(),
                "serverip" => b.server_ip = text(v, "ServerIp")?.filter(|s| !s.is_empty()),
                "port" => b.port = number(v, "Port")?,
                "weight" => b.weight = number(v, "Weight")?,
                "type" => b.server_type = text(v, "Type")?.filter(|s| !s.is_empty()),
                "description" => b.description = text(v, "Description")?,
                _ => {}
            }
        }
        out.push(b);
    }
    Ok(out)
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateVServerGroup {
    pub load_balancer_id: String,
    pub v_server_group_name: String,
    pub backend_servers: Vec<BackendServerInput>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetVServerGroupAttribute {
    pub v_server_group_id: String,
    pub v_server_group_name: Option<String>,
    /// `None` when the parameter was absent (an empty list is "change no backend").
    pub backend_servers: Option<Vec<BackendServerInput>>,
}

/// DescribeVServerGroups' view of a group: it and the listeners that use it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VServerGroupView {
    pub group: VServerGroup,
    /// `(protocol, port)` of each listener forwarding to it.
    pub listeners: Vec<(String, u16)>,
}

fn check_group_name(name: &str) -> Result<()> {
    let ok_chars = name.chars().all(|c| c.is_alphanumeric() || matches!(c, '-' | '/' | '.' | '_'));
    if name.chars().count() > 80 || !ok_chars {
        return Err(ModelError::invalid("VServerGroupName", "at most 80 letters, digits, '-', '/', '.' or '_'"));
    }
    Ok(())
}

impl Region {
    /// Turn inputs into backends of `lb`: each checked against the region, given its address.
    /// Returns the backends and the VPC they are in (the load balancer's, or the one they fix
    /// for an internet load balancer that had none).
    fn resolve_backends(
        &self,
        lb: &LoadBalancer,
        inputs: &[BackendServerInput],
    ) -> Result<(Vec<BackendServer>, String)> {
        let mut vpc = lb.vpc_id.clone();
        let mut out: Vec<BackendServer> = Vec::with_capacity(inputs.len());
        let mut keys = HashSet::new();
        for input in inputs {
            let id = input.server_id.trim();
            let kind = input.server_type.as_deref().unwrap_or("ecs").to_ascii_lowercase();
            let given_ip = input
                .server_ip
                .as_deref()
                .map(|s| s.trim().parse::<Ipv4Addr>().map_err(|_| ModelError::InvalidPrivateIpMalformed(s.to_string())))
                .transpose()?;
            if id.is_empty() && !(kind == "ip" && given_ip.is_some()) {
                return Err(ModelError::MissingParameter("ServerId"));
            }
            let (server_ip, backend_vpc) = match kind.as_str() {
                "ecs" => {
                    let inst = self.instances.get(id).ok_or_else(|| ModelError::ServerIdNotExist(id.to_string()))?;
                    let primary = self.enis.get(&inst.primary_eni_id);
                    let ip = match (given_ip, primary) {
                        (Some(ip), Some(p)) if p.ips().any(|x| x == ip) => ip,
                        (Some(ip), _) => {
                            return Err(ModelError::BackendServerIpConflict(format!("{ip} is not an address of {id}")));
                        }
                        (None, Some(p)) => p.primary_ip_address,
                        (None, None) => return Err(ModelError::ServerIdNotExist(id.to_string())),
                    };
                    (ip, inst.vpc_id.clone())
                }
                "eni" => {
                    let eni = self.enis.get(id).ok_or_else(|| ModelError::EnisNotFound(id.to_string()))?;
                    let ip = given_ip.ok_or(ModelError::MissingParameter("ServerIp"))?;
                    if !eni.ips().any(|x| x == ip) {
                        return Err(ModelError::BackendServerIpConflict(format!("{ip} is not an address of {id}")));
                    }
                    (ip, eni.vpc_id.clone())
                }
                "ip" => {
                    let ip = match given_ip {
                        Some(ip) => ip,
                        None => id.parse().map_err(|_| ModelError::MissingParameter("ServerIp"))?,
                    };
                    if vpc.is_empty() {
                        return Err(ModelError::NetworkConflict(format!(
                            "an ip backend ({ip}) needs the load balancer's VPC: create it with VpcId, or add an eni or ecs backend first"
                        )));
                    }
                    let cidr = self.vpcs.get(&vpc).map(|v| v.cidr_block);
                    if !cidr.is_some_and(|c| c.contains(ip)) {
                        return Err(ModelError::NetworkConflict(format!("{ip} is not in {vpc}")));
                    }
                    (ip, vpc.clone())
                }
                other => return Err(ModelError::BackendServerInvalidType(other.to_string())),
            };
            if vpc.is_empty() {
                vpc = backend_vpc;
            } else if backend_vpc != vpc {
                return Err(ModelError::NetworkConflict(format!(
                    "{id} is in {backend_vpc}, the load balancer in {vpc}"
                )));
            }
            let port = match input.port {
                Some(p) => port("Port", p)?,
                None => return Err(ModelError::MissingParameter("Port")),
            };
            let weight = match input.weight {
                Some(w) => ranged("Weight", w, 0, 100)? as u8,
                None => 100,
            };
            let description = input.description.clone().unwrap_or_default();
            check_text("Description", &description, 80)?;
            let server_id = if id.is_empty() { server_ip.to_string() } else { id.to_string() };
            let b = BackendServer { server_id, server_ip, port, weight, server_type: kind, description };
            if !keys.insert((b.server_id.clone(), b.server_ip, b.port)) {
                return Err(ModelError::invalid(
                    "BackendServers",
                    "The specified BackendServers contain duplicated value of ServerID and Port.",
                ));
            }
            out.push(b);
        }
        Ok((out, vpc))
    }

    /// Backends of `lb_id` in every group but `except`, for the per-load-balancer limit.
    fn backends_elsewhere(&self, lb_id: &str, except: &str) -> usize {
        self.vserver_groups
            .values()
            .filter(|g| g.load_balancer_id == lb_id && g.v_server_group_id != except)
            .map(|g| g.backend_servers.len())
            .sum()
    }

    fn check_backend_quota(&self, lb_id: &str, group_id: &str, count: usize) -> Result<()> {
        if self.backends_elsewhere(lb_id, group_id) + count > self.config.limits.backend_servers_per_load_balancer {
            return Err(ModelError::BackendServerNumberOverLimit);
        }
        Ok(())
    }

    /// Store a group's new backends (and the VPC they fixed for their load balancer).
    fn commit_group(&mut self, group: VServerGroup, vpc: String) {
        let lb_id = group.load_balancer_id.clone();
        if !vpc.is_empty() && self.load_balancers.get(&lb_id).is_some_and(|l| l.vpc_id.is_empty()) {
            self.update_lb(&lb_id, |l| l.vpc_id = vpc);
        }
        let id = group.v_server_group_id.clone();
        self.vserver_groups.insert(id.clone(), group);
        self.mark(Kind::VServerGroup, &id);
    }

    pub fn create_vserver_group(&mut self, req: CreateVServerGroup, now: Millis) -> Result<VServerGroup> {
        self.advance(now);
        let lb = self.lb(&req.load_balancer_id)?;
        check_group_name(&req.v_server_group_name)?;
        let (backends, vpc) = self.resolve_backends(lb, &req.backend_servers)?;
        self.check_backend_quota(&req.load_balancer_id, "", backends.len())?;
        let group = VServerGroup {
            v_server_group_id: self.new_id(IdKind::VServerGroup),
            v_server_group_name: req.v_server_group_name,
            load_balancer_id: req.load_balancer_id,
            backend_servers: backends,
            creation_time: now,
        };
        self.commit_group(group.clone(), vpc);
        Ok(group)
    }

    /// The groups of a load balancer, optionally only those whose name contains `name`.
    pub fn describe_vserver_groups(
        &mut self,
        lb_id: &str,
        name: Option<&str>,
        now: Millis,
    ) -> Result<Vec<VServerGroupView>> {
        self.advance(now);
        let lb = self.lb(lb_id)?;
        Ok(self
            .vserver_groups
            .values()
            .filter(|g| g.load_balancer_id == lb_id)
            .filter(|g| name.is_none_or(|n| g.v_server_group_name.contains(n)))
            .map(|g| VServerGroupView {
                group: g.clone(),
                listeners: lb
                    .listeners
                    .iter()
                    .filter(|l| l.v_server_group_id.as_deref() == Some(g.v_server_group_id.as_str()))
                    .map(|l| (l.protocol.as_str().to_string(), l.listener_port))
                    .collect(),
            })
            .collect())
    }

    pub fn describe_vserver_group_attribute(&mut self, id: &str, now: Millis) -> Result<VServerGroup> {
        self.advance(now);
        self.vsg(id).cloned()
    }

    /// Append backends; one already in the group is refused.
    pub fn add_vserver_group_backend_servers(
        &mut self,
        id: &str,
        inputs: &[BackendServerInput],
        now: Millis,
    ) -> Result<VServerGroup> {
        self.advance(now);
        let mut group = self.vsg(id)?.clone();
        if inputs.is_empty() {
            return Err(ModelError::MissingParameter("BackendServers"));
        }
        let (new, vpc) = self.resolve_backends(self.lb(&group.load_balancer_id)?, inputs)?;
        if let Some(b) = new.iter().find(|b| group.backend_servers.iter().any(|x| x.key() == b.key())) {
            return Err(ModelError::invalid(
                "BackendServers",
                format!("backend server {} {}:{} is already in the group", b.server_id, b.server_ip, b.port),
            ));
        }
        self.check_backend_quota(&group.load_balancer_id, id, group.backend_servers.len() + new.len())?;
        group.backend_servers.extend(new);
        self.commit_group(group.clone(), vpc);
        Ok(group)
    }

    /// Remove backends by identity; those not in the group are skipped.
    pub fn remove_vserver_group_backend_servers(
        &mut self,
        id: &str,
        inputs: &[BackendServerInput],
        now: Millis,
    ) -> Result<VServerGroup> {
        self.advance(now);
        let mut group = self.vsg(id)?.clone();
        if inputs.is_empty() {
            return Err(ModelError::MissingParameter("BackendServers"));
        }
        let gone = self.identify(&group, inputs)?;
        group.backend_servers.retain(|b| !gone.iter().any(|g| g.key() == b.key()));
        self.commit_group(group.clone(), String::new());
        Ok(group)
    }

    /// Backends named by `inputs`, resolved as for an add but without the VPC having to be
    /// fixed already (a removal never fixes it).
    fn identify(&self, group: &VServerGroup, inputs: &[BackendServerInput]) -> Result<Vec<BackendServer>> {
        // A backend whose ENI or instance is gone can still be named: match it by what was
        // stored when the inputs do not resolve any more.
        let mut out = Vec::with_capacity(inputs.len());
        let lb = self.lb(&group.load_balancer_id)?;
        for input in inputs {
            let resolved = self.resolve_backends(lb, std::slice::from_ref(input));
            match resolved {
                Ok((mut b, _)) => out.append(&mut b),
                Err(e) => {
                    let port = input.port.and_then(|p| u16::try_from(p).ok());
                    let ip = input.server_ip.as_deref().and_then(|s| s.trim().parse::<Ipv4Addr>().ok());
                    let stored = group.backend_servers.iter().find(|b| {
                        b.server_id == input.server_id.trim()
                            && Some(b.port) == port
                            && ip.is_none_or(|ip| ip == b.server_ip)
                    });
                    match stored {
                        Some(b) => out.push(b.clone()),
                        None => return Err(e),
                    }
                }
            }
        }
        Ok(out)
    }

    /// Rename the group and/or change weight, port or description of backends in it.
    pub fn set_vserver_group_attribute(&mut self, req: &SetVServerGroupAttribute, now: Millis) -> Result<VServerGroup> {
        self.advance(now);
        let mut group = self.vsg(&req.v_server_group_id)?.clone();
        if req.v_server_group_name.is_none() && req.backend_servers.is_none() {
            return Err(ModelError::MissingParameterText(
                "The VServerGroupName or BackendServers is required at lease one.",
            ));
        }
        if let Some(name) = &req.v_server_group_name {
            check_group_name(name)?;
            group.v_server_group_name = name.clone();
        }
        for input in req.backend_servers.iter().flatten() {
            let (new, _) = self.resolve_backends(self.lb(&group.load_balancer_id)?, std::slice::from_ref(input))?;
            let new = new.into_iter().next().expect("one input, one backend");
            // The exact backend, else the only one of that server and address (its port changes).
            let exact = group.backend_servers.iter().position(|b| b.key() == new.key());
            let same_server: Vec<usize> = (0..group.backend_servers.len())
                .filter(|&i| {
                    let b = &group.backend_servers[i];
                    b.server_id == new.server_id && b.server_ip == new.server_ip
                })
                .collect();
            let at = match (exact, same_server.as_slice()) {
                (Some(i), _) => i,
                (None, [i]) => *i,
                _ => {
                    return Err(ModelError::invalid(
                        "BackendServers",
                        format!("backend server {} {}:{} is not in the group", new.server_id, new.server_ip, new.port),
                    ));
                }
            };
            let b = &mut group.backend_servers[at];
            b.port = new.port;
            if input.weight.is_some() {
                b.weight = new.weight;
            }
            if input.description.is_some() {
                b.description = new.description;
            }
        }
        let mut keys = HashSet::new();
        if !group.backend_servers.iter().all(|b| keys.insert(b.key())) {
            return Err(ModelError::invalid(
                "BackendServers",
                "The specified BackendServers contain duplicated value of ServerID and Port.",
            ));
        }
        self.commit_group(group.clone(), String::new());
        Ok(group)
    }

    /// Replace `old` backends (which must be in the group) by `new` ones, in one step.
    pub fn modify_vserver_group_backend_servers(
        &mut self,
        id: &str,
        old: &[BackendServerInput],
        new: &[BackendServerInput],
        now: Millis,
    ) -> Result<VServerGroup> {
        self.advance(now);
        let mut group = self.vsg(id)?.clone();
        if old.is_empty() {
            return Err(ModelError::MissingParameter("OldBackendServers"));
        }
        if new.is_empty() {
            return Err(ModelError::MissingParameter("NewBackendServers"));
        }
        let gone = self.identify(&group, old)?;
        if let Some(b) = gone.iter().find(|g| !group.backend_servers.iter().any(|b| b.key() == g.key())) {
            return Err(ModelError::invalid(
                "OldBackendServers",
                format!("backend server {} {}:{} is not in the group", b.server_id, b.server_ip, b.port),
            ));
        }
        group.backend_servers.retain(|b| !gone.iter().any(|g| g.key() == b.key()));
        let (added, vpc) = self.resolve_backends(self.lb(&group.load_balancer_id)?, new)?;
        if added.iter().any(|b| group.backend_servers.iter().any(|x| x.key() == b.key())) {
            return Err(ModelError::invalid(
                "NewBackendServers",
                "The specified BackendServers contain duplicated value of ServerID and Port.",
            ));
        }
        self.check_backend_quota(&group.load_balancer_id, id, group.backend_servers.len() + added.len())?;
        group.backend_servers.extend(added);
        self.commit_group(group.clone(), vpc);
        Ok(group)
    }

    /// Refused while a listener forwards to it.
    pub fn delete_vserver_group(&mut self, id: &str, now: Millis) -> Result<()> {
        self.advance(now);
        let group = self.vsg(id)?;
        let lb = self.lb(&group.load_balancer_id)?;
        if lb.listeners.iter().any(|l| l.v_server_group_id.as_deref() == Some(id)) {
            return Err(ModelError::RspoolVipExist);
        }
        self.vserver_groups.remove(id);
        self.mark(Kind::VServerGroup, id);
        Ok(())
    }
}
