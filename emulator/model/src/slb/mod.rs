//! Server Load Balancer, the layer-4 part of CLB (product Slb, API version `2014-05-15`): load
//! balancers ([`load_balancer`]), their TCP/UDP listeners ([`listener`]) and vServer groups with
//! their backend servers ([`vserver_group`]), with the calls, defaults, ranges and error codes
//! the Kubernetes cloud-controller-manager (CCM) relies on (notes/research-ccm-slb.md §2–§6,
//! reference §11).
//!
//! These modules store and validate configuration. They move no traffic and judge no health:
//! the data plane reads the configuration through [`Region::load_balancers`] and
//! [`Region::v_server_group`], and `DescribeHealthStatus` asks the data plane for the live state
//! (the model has no clock to run checks with).
//!
//! Rules shared by the three resources:
//! - Every action validates everything before it changes anything; a refused call leaves the
//!   region as it was.
//! - An intranet load balancer's address is held in its vSwitch's allocator like an ENI
//!   address, so the two can never collide and `AvailableIpAddressCount` counts it. An
//!   internet-facing one takes an address of the region's public pool ([`RegionConfig`]'s
//!   `public_pool`).
//! - Every backend server carries a concrete IPv4 address (`server_ip`), resolved when it is
//!   added: the data plane forwards by it.
//! - A listener lives inside its load balancer (one persisted row); a vServer group is a row of
//!   its own that names its load balancer.
//!
//! [`RegionConfig`]: crate::RegionConfig

pub mod listener;
pub mod load_balancer;
pub mod vserver_group;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

pub use listener::{HealthCheck, HealthCheckType, Listener, ListenerProtocol, ListenerStatus, Scheduler};
pub use load_balancer::{AddressType, LoadBalancer};
pub use vserver_group::{BackendServer, BackendServerInput, VServerGroup, parse_backend_servers};

use crate::error::ModelError;
use crate::region::Region;
use crate::{Result, Tag};

/// Tags one load balancer may carry.
pub const TAGS_PER_RESOURCE: usize = 20;

impl Region {
    /// Every load balancer, by ID.
    pub fn load_balancers(&self) -> impl Iterator<Item = &LoadBalancer> {
        self.load_balancers.values()
    }

    pub fn load_balancer(&self, id: &str) -> Option<&LoadBalancer> {
        self.load_balancers.get(id)
    }

    /// Every vServer group, by ID.
    pub fn v_server_groups(&self) -> impl Iterator<Item = &VServerGroup> {
        self.vserver_groups.values()
    }

    pub fn v_server_group(&self, id: &str) -> Option<&VServerGroup> {
        self.vserver_groups.get(id)
    }

    pub(crate) fn lb(&self, id: &str) -> Result<&LoadBalancer> {
        if id.is_empty() {
            return Err(ModelError::MissingParameter("LoadBalancerId"));
        }
        self.load_balancers.get(id).ok_or_else(|| ModelError::LoadBalancerNotFound(id.to_string()))
    }

    pub(crate) fn vsg(&self, id: &str) -> Result<&VServerGroup> {
        if id.is_empty() {
            return Err(ModelError::MissingParameter("VServerGroupId"));
        }
        self.vserver_groups.get(id).ok_or_else(|| ModelError::VServerGroupNotFound(id.to_string()))
    }

    /// Hold every load balancer's address again after a restore: intranet ones in their
    /// vSwitch's allocator (after the ENIs, so a collision is caught), internet ones in the
    /// public pool. An internet address outside the pool (the pool was changed between runs)
    /// is kept: the cloud does not take addresses back.
    pub(crate) fn rebuild_slb_indexes(&mut self) -> Result<(), String> {
        let mut public = HashSet::new();
        for (id, lb) in &self.load_balancers {
            match lb.address_type {
                AddressType::Intranet => {
                    let ipam = self
                        .ipam
                        .get_mut(&lb.v_switch_id)
                        .ok_or_else(|| format!("load balancer {id} is in unknown vSwitch {}", lb.v_switch_id))?;
                    if !ipam.reserve(lb.address) {
                        return Err(format!("load balancer {id}: {} is held twice or outside its vSwitch", lb.address));
                    }
                }
                AddressType::Internet => {
                    if !public.insert(lb.address) {
                        return Err(format!("load balancer {id}: public address {} is held twice", lb.address));
                    }
                    self.public_ipam.reserve(lb.address);
                }
            }
        }
        for (id, g) in &self.vserver_groups {
            if !self.load_balancers.contains_key(&g.load_balancer_id) {
                return Err(format!("vServer group {id} belongs to unknown load balancer {}", g.load_balancer_id));
            }
        }
        Ok(())
    }

    /// The load balancers' part of [`Region::check_invariants`]: addresses held where they
    /// belong and nowhere else, listeners unique and pointing at groups of their own load
    /// balancer, groups of existing load balancers with distinct backends within the limits.
    pub(crate) fn check_slb_invariants<'a>(&'a self, held_per_vsw: &mut HashMap<&'a str, usize>) -> Result<(), String> {
        let mut vips: HashSet<(&str, Ipv4Addr)> = HashSet::new();
        let mut public: HashSet<Ipv4Addr> = HashSet::new();
        for (id, lb) in &self.load_balancers {
            match lb.address_type {
                AddressType::Intranet => {
                    let vsw = self.vswitches.get(&lb.v_switch_id).ok_or(format!("{id}: vSwitch gone"))?;
                    if vsw.vpc_id != lb.vpc_id {
                        return Err(format!("{id}: VPC differs from its vSwitch's"));
                    }
                    if !vsw.cidr.contains(lb.address) || vsw.cidr.is_reserved(lb.address) {
                        return Err(format!("{id}: {} outside {} or reserved", lb.address, vsw.cidr));
                    }
                    if !self.ipam.get(&lb.v_switch_id).is_some_and(|i| i.is_used(lb.address)) {
                        return Err(format!("{id}: {} not held in the vSwitch's allocator", lb.address));
                    }
                    if let Some(eni) = self.ip_owner_in_vpc(&lb.vpc_id, lb.address) {
                        return Err(format!("{id}: {} is also ENI {eni}'s address", lb.address));
                    }
                    if !vips.insert((lb.vpc_id.as_str(), lb.address)) {
                        return Err(format!("{id}: address {} used twice in {}", lb.address, lb.vpc_id));
                    }
                    *held_per_vsw.entry(lb.v_switch_id.as_str()).or_default() += 1;
                }
                AddressType::Internet => {
                    if !public.insert(lb.address) {
                        return Err(format!("{id}: public address {} used twice", lb.address));
                    }
                    let pool = self.public_ipam.cidr();
                    if pool.contains(lb.address) && !self.public_ipam.is_used(lb.address) {
                        return Err(format!("{id}: {} not held in the public pool", lb.address));
                    }
                }
            }
            if !lb.vpc_id.is_empty() && !self.vpcs.contains_key(&lb.vpc_id) {
                return Err(format!("{id}: VPC {} gone", lb.vpc_id));
            }
            let mut seen = HashSet::new();
            for l in &lb.listeners {
                if !seen.insert((l.protocol, l.listener_port)) {
                    return Err(format!("{id}: two {} listeners on port {}", l.protocol.as_str(), l.listener_port));
                }
                match &l.v_server_group_id {
                    Some(g) if self.vserver_groups.get(g).is_none_or(|g| g.load_balancer_id != *id) => {
                        return Err(format!("{id}: listener {} uses group {g} of another or no LB", l.listener_port));
                    }
                    None if l.backend_server_port.is_none() => {
                        return Err(format!("{id}: listener {} has neither group nor port", l.listener_port));
                    }
                    _ => {}
                }
            }
        }
        let in_pool = self
            .load_balancers
            .values()
            .filter(|l| l.address_type == AddressType::Internet && self.public_ipam.cidr().contains(l.address))
            .count() as u64;
        if self.public_ipam.available() != self.public_ipam.cidr().usable() - in_pool {
            return Err(format!("public pool count {} disagrees with {in_pool} held", self.public_ipam.available()));
        }
        let mut per_lb: HashMap<&str, usize> = HashMap::new();
        for (id, g) in &self.vserver_groups {
            let lb = self.load_balancers.get(&g.load_balancer_id).ok_or(format!("{id}: load balancer gone"))?;
            let mut keys = HashSet::new();
            for b in &g.backend_servers {
                if !keys.insert(b.key()) {
                    return Err(format!("{id}: backend {} {}:{} twice", b.server_id, b.server_ip, b.port));
                }
                if b.port == 0 || b.weight > 100 {
                    return Err(format!("{id}: backend {} with port 0 or weight over 100", b.server_id));
                }
            }
            if !g.backend_servers.is_empty() && lb.vpc_id.is_empty() {
                return Err(format!("{id}: backends but the load balancer has no VPC"));
            }
            *per_lb.entry(lb.load_balancer_id.as_str()).or_default() += g.backend_servers.len();
        }
        if let Some((lb, n)) =
            per_lb.into_iter().find(|(_, n)| *n > self.config.limits.backend_servers_per_load_balancer)
        {
            return Err(format!("{lb}: {n} backend servers over the limit"));
        }
        Ok(())
    }
}

/// `on` / `off`, the SLB API's switches.
pub(crate) fn on_off(param: &'static str, s: &str) -> Result<bool> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(ModelError::invalid(param, "must be on or off")),
    }
}

pub(crate) fn on_off_str(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// An integer parameter within `lo..=hi` (the faces pass what the wire said, negative or not).
pub(crate) fn ranged(param: &'static str, v: i64, lo: i64, hi: i64) -> Result<u32> {
    if !(lo..=hi).contains(&v) || v < 0 {
        return Err(ModelError::invalid(param, format!("must be {lo} to {hi}")));
    }
    Ok(v as u32)
}

pub(crate) fn port(param: &'static str, v: i64) -> Result<u16> {
    ranged(param, v, 1, 65535).map(|p| p as u16)
}

/// `Tag.N` of the SLB API: at most 20, keys 1–64 characters not starting with `aliyun` or
/// `acs:` and without `http://` or `https://`, values at most 128 characters, no key twice.
pub(crate) fn check_slb_tags(tags: &[Tag]) -> Result<()> {
    if tags.len() > TAGS_PER_RESOURCE {
        return Err(ModelError::SizeLimitExceededTag(format!("at most {TAGS_PER_RESOURCE} tags")));
    }
    let mut keys = HashSet::new();
    for t in tags {
        let bad_key = t.key.is_empty()
            || t.key.chars().count() > 64
            || t.key.starts_with("aliyun")
            || t.key.starts_with("acs:")
            || t.key.contains("http://")
            || t.key.contains("https://");
        if bad_key {
            return Err(ModelError::InvalidParamTagKey(t.key.clone()));
        }
        if t.value.chars().count() > 128 || t.value.contains("http://") || t.value.contains("https://") {
            return Err(ModelError::invalid("Tag.N.Value", "at most 128 characters, without http:// or https://"));
        }
        if !keys.insert(&t.key) {
            return Err(ModelError::DuplicateTagKey);
        }
    }
    Ok(())
}
