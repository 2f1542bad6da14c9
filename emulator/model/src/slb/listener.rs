//! Layer-4 listeners of a CLB (SLB `2014-05-15`): CreateLoadBalancerTCPListener,
//! CreateLoadBalancerUDPListener, SetLoadBalancerTCPListenerAttribute,
//! SetLoadBalancerUDPListenerAttribute, DescribeLoadBalancerTCPListenerAttribute,
//! DescribeLoadBalancerUDPListenerAttribute, DescribeLoadBalancerListeners,
//! StartLoadBalancerListener, StopLoadBalancerListener, DeleteLoadBalancerListener, and the
//! configuration half of DescribeHealthStatus.
//!
//! A listener is named by its load balancer, protocol and port: a TCP and a UDP listener may
//! share a port, and Start/Stop/Delete then need `ListenerProtocol` (`TooManyListeners`
//! otherwise). A new listener is `stopped` until StartLoadBalancerListener (which the CCM calls
//! right after creating it); start and stop complete at once and are idempotent.
//!
//! Parameters, ranges and defaults (API reference and notes §4.8–§4.10): `Bandwidth` is
//! required on create (-1 or 1–5120); `BackendServerPort` or `VServerGroupId` (a group of the same
//! load balancer) is required; `Scheduler` wrr (default) | rr | wlc | sch | tch;
//! `PersistenceTimeout` 0–3600 (0: off); `EstablishedTimeout` 10–900 (default 900, TCP only);
//! health check `HealthCheckSwitch` on (default) | off, `HealthCheckType` tcp (default) | http for
//! TCP listeners (UDP listeners probe with `healthCheckReq`/`healthCheckExp`),
//! `HealthCheckConnectPort` 1–65535 (-520, 0 or absent: the backend's port),
//! `HealthCheckConnectTimeout` 1–300 (default 5, UDP 10), `HealthCheckInterval` 1–50 (default 2,
//! UDP 5; the CCM spells it `healthCheckInterval` on create, the faces take both), thresholds
//! 2–10 (default 3), `HealthCheckHttpCode` a comma list of http_2xx…http_5xx (default
//! http_2xx), `HealthCheckMethod` head (default) | get. Set* calls change only what they name.
//! Access control lists are not emulated: `AclStatus=on` is refused rather than ignored.

use serde::{Deserialize, Serialize};

use super::load_balancer::LoadBalancer;
use super::vserver_group::BackendServer;
use super::{on_off, port, ranged};
use crate::Result;
use crate::error::ModelError;
use crate::paging::{PageBounds, PageInfo, PageRequest, paginate};
use crate::region::{Region, check_text};
use crate::time::Millis;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ListenerProtocol {
    Tcp,
    Udp,
}

impl ListenerProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerProtocol::Tcp => "tcp",
            ListenerProtocol::Udp => "udp",
        }
    }

    pub fn parse(s: &str) -> Option<ListenerProtocol> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(ListenerProtocol::Tcp),
            "udp" => Some(ListenerProtocol::Udp),
            _ => None,
        }
    }
}

/// A `ListenerProtocol` filter: `tcp`, `udp`, or `http`/`https` (valid, but no listener of the
/// emulator has them); empty means any.
fn protocol_filter(s: Option<&str>) -> Result<Option<String>> {
    match s.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => Ok(None),
        Some(p @ ("tcp" | "udp" | "http" | "https")) => Ok(Some(p.to_string())),
        Some(_) => Err(ModelError::IllegalListenerProtocol),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ListenerStatus {
    Running,
    Stopped,
}

impl ListenerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerStatus::Running => "running",
            ListenerStatus::Stopped => "stopped",
        }
    }
}

/// How a new connection picks its backend (reference §11.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scheduler {
    /// Weighted round robin, the API's default.
    Wrr,
    /// Round robin, weights ignored (the CCM's default).
    Rr,
    /// Weighted least connections.
    Wlc,
    /// Consistent hash of the source IP.
    Sch,
    /// Consistent hash of the 4-tuple.
    Tch,
}

impl Scheduler {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheduler::Wrr => "wrr",
            Scheduler::Rr => "rr",
            Scheduler::Wlc => "wlc",
            Scheduler::Sch => "sch",
            Scheduler::Tch => "tch",
        }
    }

    pub fn parse(s: &str) -> Result<Scheduler> {
        Ok(match s {
            "wrr" => Scheduler::Wrr,
            "rr" => Scheduler::Rr,
            "wlc" => Scheduler::Wlc,
            "sch" => Scheduler::Sch,
            "tch" => Scheduler::Tch,
            _ => return Err(ModelError::invalid("Scheduler", "must be wrr, rr, wlc, sch or tch")),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HealthCheckType {
    /// A TCP handshake to the check port.
    Tcp,
    /// An HTTP request (`method` `uri` with `Host: domain`), judged by `http_code`.
    Http,
    /// A UDP datagram `udp_request`, answered by `udp_expect` (or by no ICMP error).
    Udp,
}

impl HealthCheckType {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthCheckType::Tcp => "tcp",
            HealthCheckType::Http => "http",
            HealthCheckType::Udp => "udp",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub enabled: bool,
    pub check_type: HealthCheckType,
    /// `None`: the backend's own port.
    pub connect_port: Option<u16>,
    /// Seconds to wait for an answer.
    pub connect_timeout: u32,
    /// Seconds between checks.
    pub interval: u32,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub uri: String,
    /// `Host` of an HTTP check; empty (or `$_ip`) is the backend's address.
    pub domain: String,
    /// Comma list of `http_2xx`, `http_3xx`, `http_4xx`, `http_5xx`.
    pub http_code: String,
    /// `head` or `get`.
    pub method: String,
    pub udp_request: String,
    pub udp_expect: String,
}

impl HealthCheck {
    fn defaults(protocol: ListenerProtocol) -> HealthCheck {
        let udp = protocol == ListenerProtocol::Udp;
        HealthCheck {
            enabled: true,
            check_type: if udp { HealthCheckType::Udp } else { HealthCheckType::Tcp },
            connect_port: None,
            connect_timeout: if udp { 10 } else { 5 },
            interval: if udp { 5 } else { 2 },
            healthy_threshold: 3,
            unhealthy_threshold: 3,
            uri: String::new(),
            domain: String::new(),
            http_code: "http_2xx".to_string(),
            method: "head".to_string(),
            udp_request: String::new(),
            udp_expect: String::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    pub protocol: ListenerProtocol,
    pub listener_port: u16,
    /// Where traffic goes without a vServer group; `None` when a group is attached.
    pub backend_server_port: Option<u16>,
    pub v_server_group_id: Option<String>,
    pub status: ListenerStatus,
    /// Mbit/s, -1 for unlimited.
    pub bandwidth: i32,
    pub scheduler: Scheduler,
    /// Seconds a client sticks to its backend; 0 is off.
    pub persistence_timeout: u32,
    /// Idle seconds before an established TCP connection is dropped (0 for UDP listeners).
    pub established_timeout: u32,
    pub description: String,
    pub health_check: HealthCheck,
    pub connection_drain: bool,
    /// Seconds, when `connection_drain` is on.
    pub connection_drain_timeout: u32,
    pub proxy_protocol_v2_enabled: bool,
}

impl Listener {
    fn new(protocol: ListenerProtocol, listener_port: u16) -> Listener {
        Listener {
            protocol,
            listener_port,
            backend_server_port: None,
            v_server_group_id: None,
            status: ListenerStatus::Stopped,
            bandwidth: -1,
            scheduler: Scheduler::Wrr,
            persistence_timeout: 0,
            established_timeout: if protocol == ListenerProtocol::Tcp { 900 } else { 0 },
            description: String::new(),
            health_check: HealthCheck::defaults(protocol),
            connection_drain: false,
            connection_drain_timeout: 0,
            proxy_protocol_v2_enabled: false,
        }
    }
}

/// The parameters of Create/Set*ListenerAttribute, as the wire gave them (integers unchecked,
/// so a negative value is this module's to refuse). `None` is "not given".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerParams {
    pub load_balancer_id: String,
    pub listener_port: Option<i64>,
    pub backend_server_port: Option<i64>,
    pub bandwidth: Option<i64>,
    pub v_server_group_id: Option<String>,
    /// Set only: `on` to forward to `v_server_group_id`, `off` to stop using a group.
    pub v_server_group: Option<String>,
    pub scheduler: Option<String>,
    pub persistence_timeout: Option<i64>,
    pub established_timeout: Option<i64>,
    pub description: Option<String>,
    pub health_check_switch: Option<String>,
    pub health_check_type: Option<String>,
    pub health_check_connect_port: Option<i64>,
    pub health_check_connect_timeout: Option<i64>,
    pub health_check_interval: Option<i64>,
    pub healthy_threshold: Option<i64>,
    pub unhealthy_threshold: Option<i64>,
    pub health_check_uri: Option<String>,
    pub health_check_domain: Option<String>,
    pub health_check_http_code: Option<String>,
    pub health_check_method: Option<String>,
    pub health_check_req: Option<String>,
    pub health_check_exp: Option<String>,
    pub connection_drain: Option<String>,
    pub connection_drain_timeout: Option<i64>,
    pub proxy_protocol_v2_enabled: Option<bool>,
    pub acl_status: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeLoadBalancerListeners {
    pub load_balancer_ids: Vec<String>,
    pub listener_protocol: Option<String>,
    pub listener_port: Option<i64>,
    pub description: Option<String>,
    pub max_results: Option<i64>,
    pub next_token: Option<String>,
}

/// One (listener, backend) pair whose health DescribeHealthStatus reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthTarget {
    pub load_balancer_id: String,
    pub protocol: ListenerProtocol,
    pub listener_port: u16,
    /// Only a running listener with its check on has a health the data plane can know.
    pub checked: bool,
    pub backend: BackendServer,
}

const HTTP_CODES: [&str; 4] = ["http_2xx", "http_3xx", "http_4xx", "http_5xx"];

fn bandwidth(v: i64) -> Result<i32> {
    match v {
        -1 => Ok(-1),
        1..=5120 => Ok(v as i32),
        _ => Err(ModelError::invalid("Bandwidth", "must be -1 or 1 to 5120")),
    }
}

fn check_uri(uri: &str) -> Result<()> {
    if !uri.is_empty() && (!uri.starts_with('/') || uri.len() > 80 || uri.chars().any(|c| c.is_whitespace())) {
        return Err(ModelError::invalid("HealthCheckURI", "a path starting with /, at most 80 characters"));
    }
    Ok(())
}

fn check_domain(d: &str) -> Result<()> {
    let ok = d == "$_ip" || d.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if !ok || d.len() > 80 {
        return Err(ModelError::invalid("HealthCheckDomain", "$_ip or a domain name of at most 80 characters"));
    }
    Ok(())
}

fn check_http_codes(s: &str) -> Result<String> {
    let codes: Vec<&str> = s.split(',').map(str::trim).collect();
    if codes.iter().any(|c| !HTTP_CODES.contains(c)) {
        return Err(ModelError::invalid(
            "HealthCheckHttpCode",
            "a comma list of http_2xx, http_3xx, http_4xx, http_5xx",
        ));
    }
    // Stored in the cloud's order, each once.
    Ok(HTTP_CODES.iter().filter(|c| codes.contains(c)).copied().collect::<Vec<_>>().join(","))
}

fn check_udp_probe(param: &'static str, s: &str) -> Result<()> {
    if s.len() > 64 || !s.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ModelError::invalid(param, "at most 64 letters and digits"));
    }
    Ok(())
}

/// Apply the plain fields of `p` to `l` (the vServer group is the caller's, it needs the region).
fn apply(l: &mut Listener, p: &ListenerParams) -> Result<()> {
    let udp = l.protocol == ListenerProtocol::Udp;
    if let Some(v) = p.backend_server_port {
        l.backend_server_port = Some(port("BackendServerPort", v)?);
    }
    if let Some(b) = p.bandwidth {
        l.bandwidth = bandwidth(b)?;
    }
    if let Some(s) = &p.scheduler {
        l.scheduler = Scheduler::parse(s)?;
    }
    if let Some(v) = p.persistence_timeout {
        l.persistence_timeout = ranged("PersistenceTimeout", v, 0, 3600)?;
    }
    if let Some(v) = p.established_timeout
        && !udp
    {
        l.established_timeout = ranged("EstablishedTimeout", v, 10, 900)?;
    }
    if let Some(d) = &p.description {
        check_text("Description", d, 256)?;
        l.description = d.clone();
    }
    let hc = &mut l.health_check;
    if let Some(s) = &p.health_check_switch {
        hc.enabled = on_off("HealthCheckSwitch", s)?;
    }
    if let Some(t) = &p.health_check_type {
        hc.check_type = match (t.as_str(), udp) {
            ("tcp", false) => HealthCheckType::Tcp,
            ("http", false) => HealthCheckType::Http,
            _ => return Err(ModelError::invalid("HealthCheckType", "tcp or http, for TCP listeners")),
        };
    }
    if let Some(v) = p.health_check_connect_port {
        // -520 is the API's "the backend's port". So is 0: the CCM sends back what it read from
        // DescribeLoadBalancerListeners, and its Go SDK sends an unset integer as "0".
        hc.connect_port = if v == -520 || v == 0 { None } else { Some(port("HealthCheckConnectPort", v)?) };
    }
    if let Some(v) = p.health_check_connect_timeout {
        hc.connect_timeout = ranged("HealthCheckConnectTimeout", v, 1, 300)?;
    }
    if let Some(v) = p.health_check_interval {
        hc.interval = ranged("HealthCheckInterval", v, 1, 50)?;
    }
    if let Some(v) = p.healthy_threshold {
        hc.healthy_threshold = ranged("HealthyThreshold", v, 2, 10)?;
    }
    if let Some(v) = p.unhealthy_threshold {
        hc.unhealthy_threshold = ranged("UnhealthyThreshold", v, 2, 10)?;
    }
    if let Some(u) = &p.health_check_uri {
        check_uri(u)?;
        hc.uri = u.clone();
    }
    if let Some(d) = &p.health_check_domain {
        check_domain(d)?;
        hc.domain = d.clone();
    }
    if let Some(c) = &p.health_check_http_code {
        hc.http_code = check_http_codes(c)?;
    }
    if let Some(m) = &p.health_check_method {
        let m = m.to_ascii_lowercase();
        if !matches!(m.as_str(), "head" | "get") {
            return Err(ModelError::invalid("HealthCheckMethod", "head or get"));
        }
        hc.method = m;
    }
    if let Some(r) = &p.health_check_req {
        check_udp_probe("healthCheckReq", r)?;
        hc.udp_request = r.clone();
    }
    if let Some(e) = &p.health_check_exp {
        check_udp_probe("healthCheckExp", e)?;
        hc.udp_expect = e.clone();
    }
    if let Some(s) = &p.connection_drain {
        l.connection_drain = on_off("ConnectionDrain", s)?;
    }
    if let Some(v) = p.connection_drain_timeout {
        // 0 is what the listener list shows while draining is off, and what the CCM sends back.
        l.connection_drain_timeout = if v == 0 { 0 } else { ranged("ConnectionDrainTimeout", v, 10, 900)? };
    }
    if l.connection_drain && l.connection_drain_timeout == 0 {
        // The console's default drain time.
        l.connection_drain_timeout = 300;
    }
    if let Some(b) = p.proxy_protocol_v2_enabled {
        l.proxy_protocol_v2_enabled = b;
    }
    match p.acl_status.as_deref() {
        None | Some("") | Some("off") => {}
        Some("on") => return Err(ModelError::UnsupportedParameter("AclStatus")),
        Some(_) => return Err(ModelError::invalid("AclStatus", "on or off")),
    }
    Ok(())
}

/// The listener of `lb` on `port`, of `protocol` if given.
fn listener_index(lb: &LoadBalancer, port: u16, protocol: Option<&str>) -> Result<usize> {
    let found: Vec<usize> = lb
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| l.listener_port == port && protocol.is_none_or(|p| p == l.protocol.as_str()))
        .map(|(i, _)| i)
        .collect();
    match found.as_slice() {
        [] => Err(ModelError::ListenerNotFound),
        [i] => Ok(*i),
        _ => Err(ModelError::TooManyListeners),
    }
}

const LISTENER_PAGES: PageBounds =
    PageBounds { default_size: 20, max_page_size: 100, min_results: 1, max_results: 100 };

impl Region {
    /// A group `lb_id` may forward to.
    fn check_listener_group(&self, lb_id: &str, group: &str) -> Result<()> {
        match self.vserver_groups.get(group) {
            Some(g) if g.load_balancer_id == lb_id => Ok(()),
            _ => Err(ModelError::ListenerVServerGroupNotFound(group.to_string())),
        }
    }

    fn listener_port_param(p: &ListenerParams) -> Result<u16> {
        port("ListenerPort", p.listener_port.ok_or(ModelError::MissingParameter("ListenerPort"))?)
    }

    /// CreateLoadBalancerTCPListener / CreateLoadBalancerUDPListener: a stopped listener.
    pub fn create_load_balancer_listener(
        &mut self,
        protocol: ListenerProtocol,
        p: &ListenerParams,
        now: Millis,
    ) -> Result<Listener> {
        self.advance(now);
        let lb = self.lb(&p.load_balancer_id)?;
        let listener_port = Self::listener_port_param(p)?;
        if p.bandwidth.is_none() {
            return Err(ModelError::MissingParameter("Bandwidth"));
        }
        if lb.listeners.iter().any(|l| l.protocol == protocol && l.listener_port == listener_port) {
            return Err(ModelError::ListenerAlreadyExists(format!("{}:{listener_port}", protocol.as_str())));
        }
        let mut l = Listener::new(protocol, listener_port);
        apply(&mut l, p)?;
        match p.v_server_group_id.as_deref().filter(|g| !g.is_empty()) {
            Some(g) => {
                self.check_listener_group(&p.load_balancer_id, g)?;
                l.v_server_group_id = Some(g.to_string());
                l.backend_server_port = None;
            }
            None if l.backend_server_port.is_none() => {
                return Err(ModelError::MissingParameterText(
                    "The BackendServerPort or VServerGroupId is required at lease one.",
                ));
            }
            None => {}
        }
        let id = p.load_balancer_id.clone();
        let created = l.clone();
        self.update_lb(&id, |lb| lb.listeners.push(l));
        Ok(created)
    }

    /// SetLoadBalancerTCPListenerAttribute / SetLoadBalancerUDPListenerAttribute: change what
    /// the call names, nothing else.
    pub fn set_load_balancer_listener_attribute(
        &mut self,
        protocol: ListenerProtocol,
        p: &ListenerParams,
        now: Millis,
    ) -> Result<Listener> {
        self.advance(now);
        let lb = self.lb(&p.load_balancer_id)?;
        let listener_port = Self::listener_port_param(p)?;
        let at = listener_index(lb, listener_port, Some(protocol.as_str()))?;
        let mut l = lb.listeners[at].clone();
        apply(&mut l, p)?;
        let group = p.v_server_group_id.as_deref().filter(|g| !g.is_empty());
        match (p.v_server_group.as_deref().filter(|s| !s.is_empty()), group) {
            (Some("off"), _) => {
                l.v_server_group_id = None;
                if l.backend_server_port.is_none() {
                    return Err(ModelError::MissingParameterText(
                        "The BackendServerPort or VServerGroupId is required at lease one.",
                    ));
                }
            }
            (Some("on") | None, Some(g)) => {
                self.check_listener_group(&p.load_balancer_id, g)?;
                l.v_server_group_id = Some(g.to_string());
                l.backend_server_port = None;
            }
            (Some("on"), None) if l.v_server_group_id.is_none() => {
                return Err(ModelError::MissingParameter("VServerGroupId"));
            }
            (Some("on") | None, None) => {}
            (Some(_), _) => return Err(ModelError::invalid("VServerGroup", "must be on or off")),
        }
        let id = p.load_balancer_id.clone();
        let updated = l.clone();
        self.update_lb(&id, |lb| lb.listeners[at] = l);
        Ok(updated)
    }

    /// DescribeLoadBalancerTCPListenerAttribute / …UDP…: the listener of that protocol.
    pub fn describe_load_balancer_listener_attribute(
        &mut self,
        protocol: ListenerProtocol,
        lb_id: &str,
        listener_port: Option<i64>,
        now: Millis,
    ) -> Result<Listener> {
        self.advance(now);
        let lb = self.lb(lb_id)?;
        let port = port("ListenerPort", listener_port.ok_or(ModelError::MissingParameter("ListenerPort"))?)?;
        Ok(lb.listeners[listener_index(lb, port, Some(protocol.as_str()))?].clone())
    }

    fn set_listener_status(
        &mut self,
        lb_id: &str,
        listener_port: Option<i64>,
        protocol: Option<&str>,
        status: ListenerStatus,
        now: Millis,
    ) -> Result<()> {
        self.advance(now);
        let lb = self.lb(lb_id)?;
        let port = port("ListenerPort", listener_port.ok_or(ModelError::MissingParameter("ListenerPort"))?)?;
        let protocol = protocol_filter(protocol)?;
        let at = listener_index(lb, port, protocol.as_deref())?;
        if lb.listeners[at].status != status {
            self.update_lb(lb_id, |lb| lb.listeners[at].status = status);
        }
        Ok(())
    }

    pub fn start_load_balancer_listener(
        &mut self,
        lb_id: &str,
        listener_port: Option<i64>,
        protocol: Option<&str>,
        now: Millis,
    ) -> Result<()> {
        self.set_listener_status(lb_id, listener_port, protocol, ListenerStatus::Running, now)
    }

    pub fn stop_load_balancer_listener(
        &mut self,
        lb_id: &str,
        listener_port: Option<i64>,
        protocol: Option<&str>,
        now: Millis,
    ) -> Result<()> {
        self.set_listener_status(lb_id, listener_port, protocol, ListenerStatus::Stopped, now)
    }

    pub fn delete_load_balancer_listener(
        &mut self,
        lb_id: &str,
        listener_port: Option<i64>,
        protocol: Option<&str>,
        now: Millis,
    ) -> Result<()> {
        self.advance(now);
        let lb = self.lb(lb_id)?;
        let port = port("ListenerPort", listener_port.ok_or(ModelError::MissingParameter("ListenerPort"))?)?;
        let protocol = protocol_filter(protocol)?;
        let at = listener_index(lb, port, protocol.as_deref())?;
        self.update_lb(lb_id, |lb| {
            lb.listeners.remove(at);
        });
        Ok(())
    }

    /// The flat listener list (`Listeners[]`), paged by `MaxResults` (1–100, default 20) and
    /// `NextToken`, which is empty on the last page. Without `LoadBalancerId.N`: every load
    /// balancer's.
    pub fn describe_load_balancer_listeners(
        &mut self,
        req: &DescribeLoadBalancerListeners,
        now: Millis,
    ) -> Result<(Vec<(String, Listener)>, PageInfo)> {
        self.advance(now);
        if req.load_balancer_ids.len() > 10 {
            return Err(ModelError::invalid("LoadBalancerId.N", "at most 10 load balancers"));
        }
        for id in &req.load_balancer_ids {
            self.lb(id)?;
        }
        let protocol = protocol_filter(req.listener_protocol.as_deref())?;
        let port = req.listener_port.map(|p| port("ListenerPort", p)).transpose()?;
        let size = match req.max_results {
            None => LISTENER_PAGES.default_size,
            Some(n) if (1..=100).contains(&n) => n as u32,
            Some(_) => return Err(ModelError::IllegalMaxResults),
        };
        // Paged by a key that sorts like the ID order paging wants: load balancer, protocol, port.
        let mut items: Vec<(String, String, Listener)> = self
            .load_balancers
            .values()
            .filter(|lb| req.load_balancer_ids.is_empty() || req.load_balancer_ids.contains(&lb.load_balancer_id))
            .flat_map(|lb| lb.listeners.iter().map(move |l| (lb, l)))
            .filter(|(_, l)| protocol.as_deref().is_none_or(|p| p == l.protocol.as_str()))
            .filter(|(_, l)| port.is_none_or(|p| p == l.listener_port))
            .filter(|(_, l)| req.description.as_ref().is_none_or(|d| *d == l.description))
            .map(|(lb, l)| {
                let key = format!("{}/{}/{:05}", lb.load_balancer_id, l.protocol.as_str(), l.listener_port);
                (key, lb.load_balancer_id.clone(), l.clone())
            })
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let page = PageRequest { max_results: Some(size), next_token: req.next_token.clone(), ..Default::default() };
        let (items, info) = paginate(items, |(k, _, _)| k, &page, LISTENER_PAGES).map_err(|e| match e {
            ModelError::InvalidNextToken => ModelError::IllegalNextToken,
            other => other,
        })?;
        Ok((items.into_iter().map(|(_, lb, l)| (lb, l)).collect(), info))
    }

    /// What DescribeHealthStatus reports on: every backend of every listener of `lb_id` (or of
    /// the one on `listener_port`) that forwards to a vServer group.
    pub fn health_targets(
        &mut self,
        lb_id: &str,
        listener_port: Option<i64>,
        protocol: Option<&str>,
        now: Millis,
    ) -> Result<Vec<HealthTarget>> {
        self.advance(now);
        let lb = self.lb(lb_id)?;
        let protocol = protocol_filter(protocol)?;
        let listeners: Vec<&Listener> = match listener_port {
            Some(p) => {
                let p = port("ListenerPort", p)?;
                let matching: Vec<&Listener> = lb
                    .listeners
                    .iter()
                    .filter(|l| l.listener_port == p && protocol.as_deref().is_none_or(|x| x == l.protocol.as_str()))
                    .collect();
                if matching.len() > 1 {
                    return Err(ModelError::TooManyListeners);
                }
                matching
            }
            None => {
                lb.listeners.iter().filter(|l| protocol.as_deref().is_none_or(|x| x == l.protocol.as_str())).collect()
            }
        };
        let mut out = Vec::new();
        for l in listeners {
            let Some(group) = l.v_server_group_id.as_ref().and_then(|g| self.vserver_groups.get(g)) else { continue };
            for b in &group.backend_servers {
                out.push(HealthTarget {
                    load_balancer_id: lb_id.to_string(),
                    protocol: l.protocol,
                    listener_port: l.listener_port,
                    checked: l.status == ListenerStatus::Running && l.health_check.enabled,
                    backend: b.clone(),
                });
            }
        }
        Ok(out)
    }
}
