//! VPCs and vSwitches (VPC API `2016-04-28`): CreateVpc, DescribeVpcs, DescribeVpcAttribute,
//! DeleteVpc, CreateVSwitch, DescribeVSwitches, DeleteVSwitch.
//!
//! Address rules from the VPC documentation: a VPC CIDR is /8 to /28 and may not lie in the
//! ranges the platform keeps (100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4); a vSwitch
//! is /16 to /29, inside its VPC, overlapping no other vSwitch of the VPC (so a private IP is
//! unique per VPC as soon as it is unique per vSwitch); at most 150 vSwitches per VPC. Deleting
//! refuses while dependents exist (`DependencyViolation`), load balancers included.
//!
//! IPv6 (VPC and ECS API references): `CreateVpc` with `EnableIpv6=true` gives the VPC a /56
//! (the cloud takes it from its BGP ranges; enifab from `2408:4005:3000::/40`, one /56 per VPC,
//! the lowest free, or the caller's `Ipv6CidrBlock` when it names a free /56). `CreateVSwitch`'s
//! `Ipv6CidrBlock` is not a CIDR but the 8 bits (0–255) that pick the vSwitch's /64 inside the
//! VPC's /56; it is refused when the VPC has no IPv6 block, and two vSwitches cannot take the same
//! /64. A vSwitch without it is IPv4-only and its ENIs cannot hold IPv6 addresses.

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::ids::IdKind;
use crate::ipam::{Ipam, Ipam6};
use crate::net::{Cidr, Cidr6};
use crate::paging::{PageBounds, PageInfo, PageRequest, paginate};
use crate::region::{Kind, Region, check_tags, check_text, has_all_tags};
use crate::time::Millis;
use crate::{Result, Tag};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Vpc {
    pub vpc_id: String,
    pub vpc_name: String,
    pub description: String,
    pub cidr_block: Cidr,
    /// The VPC's IPv6 /56, when IPv6 is enabled.
    #[serde(default)]
    pub ipv6_cidr_block: Option<Cidr6>,
    pub v_router_id: String,
    pub route_table_id: String,
    pub resource_group_id: String,
    pub tags: Vec<Tag>,
    pub creation_time: Millis,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VSwitch {
    pub v_switch_id: String,
    pub vpc_id: String,
    pub zone_id: String,
    pub cidr: Cidr,
    /// The vSwitch's IPv6 /64, when it has one.
    #[serde(default)]
    pub ipv6_cidr: Option<Cidr6>,
    pub v_switch_name: String,
    pub description: String,
    pub resource_group_id: String,
    pub tags: Vec<Tag>,
    pub creation_time: Millis,
}

/// DescribeVpcAttribute's answer: the VPC and its vSwitches (the cloud-controller-manager reads
/// only `CidrBlock` and `SecondaryCidrBlocks`, to tell pod IPs of the VPC from others).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VpcAttribute {
    pub vpc: Vpc,
    pub v_switch_ids: Vec<String>,
}

/// A vSwitch with the figures that are derived, not stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VSwitchView {
    pub v_switch: VSwitch,
    pub available_ip_address_count: u64,
}

/// Where VPCs' IPv6 /56 blocks come from when the caller names none.
pub const IPV6_POOL: &str = "2408:4005:3000::/40";

const FORBIDDEN: [&str; 4] = ["100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4"];

fn parse_cidr(s: &str) -> Result<Cidr> {
    s.parse().map_err(|_| ModelError::InvalidCidrBlock(s.to_string()))
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateVpc {
    pub cidr_block: Option<String>,
    pub enable_ipv6: bool,
    /// A /56 the caller wants (only with `enable_ipv6`).
    pub ipv6_cidr_block: Option<String>,
    pub vpc_name: String,
    pub description: String,
    pub resource_group_id: String,
    pub tags: Vec<Tag>,
    pub client_token: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeVpcs {
    /// Up to 20 IDs, comma-separated in the cloud's request.
    pub vpc_ids: Vec<String>,
    pub vpc_name: Option<String>,
    pub page: PageRequest,
}

/// ModifyVpcAttribute: what is named changes, the rest stays.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModifyVpc {
    pub vpc_id: String,
    pub vpc_name: Option<String>,
    pub description: Option<String>,
    /// `EnableIPv6`.
    pub enable_ipv6: Option<bool>,
    /// The /56 wanted when IPv6 is switched on.
    pub ipv6_cidr_block: Option<String>,
}

/// ModifyVSwitchAttribute: what is named changes, the rest stays.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModifyVSwitch {
    pub v_switch_id: String,
    pub v_switch_name: Option<String>,
    pub description: Option<String>,
    /// `Ipv6CidrBlock`: which /64 of the VPC's /56 (0–255).
    pub ipv6_cidr_block: Option<u32>,
    /// `EnableIPv6`.
    pub enable_ipv6: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateVSwitch {
    pub vpc_id: String,
    pub zone_id: String,
    pub cidr_block: String,
    /// `Ipv6CidrBlock`: the 8 bits (0–255) of the vSwitch's /64 inside the VPC's /56.
    pub ipv6_cidr_block: Option<u32>,
    pub v_switch_name: String,
    pub description: String,
    pub tags: Vec<Tag>,
    pub client_token: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeVSwitches {
    pub v_switch_ids: Vec<String>,
    pub vpc_id: Option<String>,
    pub zone_id: Option<String>,
    pub v_switch_name: Option<String>,
    pub tags: Vec<Tag>,
    pub page: PageRequest,
}

const VPC_PAGES: PageBounds = PageBounds { default_size: 10, max_page_size: 50, min_results: 1, max_results: 100 };

impl Region {
    pub fn create_vpc(&mut self, req: CreateVpc, now: Millis) -> Result<Vpc> {
        self.idempotent("CreateVpc", req, now, |r, req| {
            // The cloud's default VPC block when none is given.
            let cidr = parse_cidr(req.cidr_block.as_deref().unwrap_or("172.16.0.0/12"))?;
            if !(8..=28).contains(&cidr.prefix()) {
                return Err(ModelError::InvalidCidrBlock(cidr.to_string()));
            }
            if FORBIDDEN.iter().any(|f| f.parse::<Cidr>().expect("constant").overlaps(&cidr)) {
                return Err(ModelError::InvalidCidrBlock(cidr.to_string()));
            }
            check_text("VpcName", &req.vpc_name, 128)?;
            check_tags(&req.tags)?;
            let ipv6 = r.plan_vpc_ipv6(req.enable_ipv6, req.ipv6_cidr_block.as_deref())?;
            let vpc = Vpc {
                vpc_id: r.new_id(IdKind::Vpc),
                vpc_name: req.vpc_name,
                description: req.description,
                cidr_block: cidr,
                ipv6_cidr_block: ipv6,
                v_router_id: r.new_id(IdKind::VRouter),
                route_table_id: r.new_id(IdKind::RouteTable),
                resource_group_id: req.resource_group_id,
                tags: req.tags,
                creation_time: now,
            };
            r.vpcs.insert(vpc.vpc_id.clone(), vpc.clone());
            r.mark(Kind::Vpc, &vpc.vpc_id);
            Ok(vpc)
        })
    }

    /// The /56 a new VPC gets: none without `enable`, the caller's if free, else the lowest free
    /// one of [`IPV6_POOL`]. Changes nothing.
    fn plan_vpc_ipv6(&self, enable: bool, wanted: Option<&str>) -> Result<Option<Cidr6>> {
        let wanted = wanted.filter(|s| !s.is_empty());
        if !enable {
            return match wanted {
                Some(_) => Err(ModelError::invalid("Ipv6CidrBlock", "requires EnableIpv6=true")),
                None => Ok(None),
            };
        }
        let taken: Vec<Cidr6> = self.vpcs.values().filter_map(|v| v.ipv6_cidr_block).collect();
        if let Some(w) = wanted {
            let block: Cidr6 = w.parse().map_err(|_| ModelError::InvalidCidrBlock(w.to_string()))?;
            if block.prefix() != 56 {
                return Err(ModelError::invalid("Ipv6CidrBlock", "a VPC's IPv6 block is a /56"));
            }
            if taken.iter().any(|t| t.overlaps(&block)) {
                return Err(ModelError::CidrOverlapped);
            }
            return Ok(Some(block));
        }
        let pool: Cidr6 = IPV6_POOL.parse().expect("a valid constant");
        let free = (0..1u128 << 16).filter_map(|i| pool.subnet(56, i)).find(|b| !taken.contains(b));
        free.map(Some).ok_or_else(|| ModelError::invalid("EnableIpv6", "the emulator's IPv6 pool is exhausted"))
    }

    /// ModifyVpcAttribute. IPv6 is switched on as at creation (a /56 from the pool, or the named
    /// one); a VPC that has IPv6 keeps its block ("you cannot modify the IPv6 CIDR block of a
    /// VPC that has IPv6 enabled", the API reference), and gives it up only while none of its
    /// vSwitches has a /64 of it. Everything is checked before anything changes.
    pub fn modify_vpc_attribute(&mut self, req: ModifyVpc, now: Millis) -> Result<()> {
        self.advance(now);
        if req.vpc_id.is_empty() {
            return Err(ModelError::MissingParameter("VpcId"));
        }
        let vpc = self.vpcs.get(&req.vpc_id).ok_or_else(|| ModelError::VpcNotFound(req.vpc_id.clone()))?;
        if let Some(name) = &req.vpc_name {
            check_text("VpcName", name, 128)?;
        }
        let wanted = req.ipv6_cidr_block.as_deref().filter(|s| !s.is_empty());
        let ipv6 = match (req.enable_ipv6, vpc.ipv6_cidr_block) {
            (Some(true), None) => self.plan_vpc_ipv6(true, wanted)?,
            (Some(true), Some(have)) => {
                if wanted.is_some_and(|w| w.parse::<Cidr6>().ok() != Some(have)) {
                    return Err(ModelError::invalid("Ipv6CidrBlock", format!("{} already has {have}", req.vpc_id)));
                }
                Some(have)
            }
            (Some(false), have) => {
                if wanted.is_some() {
                    return Err(ModelError::invalid("Ipv6CidrBlock", "requires EnableIPv6=true"));
                }
                if let Some(v) = self.vswitches.values().find(|v| v.vpc_id == req.vpc_id && v.ipv6_cidr.is_some()) {
                    return Err(ModelError::DependencyViolation(format!(
                        "vSwitch {} has an IPv6 CIDR block of {:?}",
                        v.v_switch_id, have
                    )));
                }
                None
            }
            (None, have) => {
                if wanted.is_some() {
                    return Err(ModelError::invalid("Ipv6CidrBlock", "requires EnableIPv6=true"));
                }
                have
            }
        };
        let vpc = self.vpcs.get_mut(&req.vpc_id).expect("looked up above");
        if let Some(name) = req.vpc_name {
            vpc.vpc_name = name;
        }
        if let Some(d) = req.description {
            vpc.description = d;
        }
        vpc.ipv6_cidr_block = ipv6;
        self.mark(Kind::Vpc, &req.vpc_id);
        Ok(())
    }

    /// ModifyVSwitchAttribute. A vSwitch without IPv6 gets a /64 of its VPC's /56: the one
    /// `Ipv6CidrBlock` numbers, or with `EnableIPv6=true` alone the lowest one no sibling holds.
    /// A vSwitch's /64 is not changed ("after an IPv6 CIDR block is allocated, it cannot be
    /// modified"), and is given up (`EnableIPv6=false`) only while no ENI holds an address or a
    /// prefix of it. Everything is checked before anything changes.
    pub fn modify_vswitch_attribute(&mut self, req: ModifyVSwitch, now: Millis) -> Result<()> {
        self.advance(now);
        if req.v_switch_id.is_empty() {
            return Err(ModelError::MissingParameter("VSwitchId"));
        }
        let vsw =
            self.vswitches.get(&req.v_switch_id).ok_or_else(|| ModelError::VSwitchNotFound(req.v_switch_id.clone()))?;
        if let Some(name) = &req.v_switch_name {
            check_text("VSwitchName", name, 128)?;
        }
        let siblings =
            || self.vswitches.values().filter(|v| v.vpc_id == vsw.vpc_id && v.v_switch_id != vsw.v_switch_id);
        let carve = |bits: u32| -> Result<Cidr6> {
            let vpc6 = self.vpcs.get(&vsw.vpc_id).and_then(|v| v.ipv6_cidr_block).ok_or_else(|| {
                ModelError::invalid("Ipv6CidrBlock", format!("{} has no IPv6 CIDR block", vsw.vpc_id))
            })?;
            let block = vpc6
                .subnet(64, u128::from(bits))
                .ok_or_else(|| ModelError::invalid("Ipv6CidrBlock", "must be 0 to 255"))?;
            if siblings().any(|v| v.ipv6_cidr == Some(block)) {
                return Err(ModelError::CidrOverlapped);
            }
            Ok(block)
        };
        let ipv6 = match (req.enable_ipv6, req.ipv6_cidr_block, vsw.ipv6_cidr) {
            (Some(false), Some(_), _) => {
                return Err(ModelError::invalid("Ipv6CidrBlock", "requires EnableIPv6 not false"));
            }
            (Some(false), None, have) => {
                let holder = self.enis.values().find(|e| {
                    e.v_switch_id == vsw.v_switch_id && (!e.ipv6_addresses.is_empty() || !e.ipv6_prefixes.is_empty())
                });
                if let (Some(e), Some(have)) = (holder, have) {
                    return Err(ModelError::DependencyViolation(format!(
                        "{} holds IPv6 addresses of {have}",
                        e.network_interface_id
                    )));
                }
                None
            }
            (_, Some(bits), None) => Some(carve(bits)?),
            (_, Some(bits), Some(have)) => {
                // Naming the /64 it has already is no change.
                let vpc6 = self.vpcs.get(&vsw.vpc_id).and_then(|v| v.ipv6_cidr_block);
                if vpc6.and_then(|c| c.subnet(64, u128::from(bits))) != Some(have) {
                    return Err(ModelError::invalid(
                        "Ipv6CidrBlock",
                        format!("{} already has {have}", vsw.v_switch_id),
                    ));
                }
                Some(have)
            }
            (Some(true), None, None) => {
                let lowest = (0..=255u32).find_map(|bits| carve(bits).ok());
                Some(lowest.ok_or_else(|| match carve(0) {
                    Err(e @ ModelError::InvalidParameter { .. }) => e,
                    _ => ModelError::invalid("EnableIPv6", "every /64 of the VPC's /56 is taken"),
                })?)
            }
            (_, None, have) => have,
        };
        let changed_ipv6 = ipv6 != vsw.ipv6_cidr;
        let id = req.v_switch_id.clone();
        let vsw = self.vswitches.get_mut(&id).expect("looked up above");
        if let Some(name) = req.v_switch_name {
            vsw.v_switch_name = name;
        }
        if let Some(d) = req.description {
            vsw.description = d;
        }
        vsw.ipv6_cidr = ipv6;
        if changed_ipv6 {
            match ipv6 {
                Some(c6) => {
                    self.ipam6.insert(id.clone(), Ipam6::new(c6));
                }
                None => {
                    self.ipam6.remove(&id);
                }
            }
        }
        self.mark(Kind::VSwitch, &id);
        Ok(())
    }

    pub fn describe_vpcs(&mut self, req: &DescribeVpcs, now: Millis) -> Result<(Vec<Vpc>, PageInfo)> {
        self.advance(now);
        if req.vpc_ids.len() > 20 {
            return Err(ModelError::invalid("VpcId", "at most 20 IDs"));
        }
        let items: Vec<Vpc> = self
            .vpcs
            .values()
            .filter(|v| req.vpc_ids.is_empty() || req.vpc_ids.contains(&v.vpc_id))
            .filter(|v| req.vpc_name.as_ref().is_none_or(|n| &v.vpc_name == n))
            .cloned()
            .collect();
        paginate(items, |v| &v.vpc_id, &req.page, VPC_PAGES)
    }

    /// The vSwitches of a VPC, for DescribeVpcs' `VSwitchIds`.
    pub fn vswitch_ids_of(&self, vpc_id: &str) -> Vec<String> {
        self.vswitches.values().filter(|v| v.vpc_id == vpc_id).map(|v| v.v_switch_id.clone()).collect()
    }

    pub fn describe_vpc_attribute(&mut self, vpc_id: &str, now: Millis) -> Result<VpcAttribute> {
        self.advance(now);
        if vpc_id.is_empty() {
            return Err(ModelError::MissingParameter("VpcId"));
        }
        let vpc = self.vpcs.get(vpc_id).ok_or_else(|| ModelError::VpcNotFound(vpc_id.to_string()))?.clone();
        Ok(VpcAttribute { vpc, v_switch_ids: self.vswitch_ids_of(vpc_id) })
    }

    pub fn delete_vpc(&mut self, vpc_id: &str, now: Millis) -> Result<()> {
        self.advance(now);
        if !self.vpcs.contains_key(vpc_id) {
            return Err(ModelError::VpcNotFound(vpc_id.to_string()));
        }
        if self.vswitches.values().any(|v| v.vpc_id == vpc_id) {
            return Err(ModelError::DependencyViolationVSwitch);
        }
        if self.sgs.values().any(|s| s.vpc_id == vpc_id) {
            return Err(ModelError::DependencyViolationSecurityGroup);
        }
        if let Some(lb) = self.load_balancers.values().find(|l| l.vpc_id == vpc_id) {
            return Err(ModelError::DependencyViolation(format!(
                "load balancer {} is in this VPC",
                lb.load_balancer_id
            )));
        }
        self.vpcs.remove(vpc_id);
        self.mark(Kind::Vpc, vpc_id);
        Ok(())
    }

    pub fn create_vswitch(&mut self, req: CreateVSwitch, now: Millis) -> Result<VSwitch> {
        self.idempotent("CreateVSwitch", req, now, |r, req| {
            if req.vpc_id.is_empty() {
                return Err(ModelError::MissingParameter("VpcId"));
            }
            if req.zone_id.is_empty() {
                return Err(ModelError::MissingParameter("ZoneId"));
            }
            if req.cidr_block.is_empty() {
                return Err(ModelError::MissingParameter("CidrBlock"));
            }
            let cidr = parse_cidr(&req.cidr_block)?;
            let vpc = r.vpcs.get(&req.vpc_id).ok_or_else(|| ModelError::VpcNotFound(req.vpc_id.clone()))?;
            r.check_zone(&req.zone_id)?;
            if !(16..=29).contains(&cidr.prefix()) {
                return Err(ModelError::InvalidCidrBlock(cidr.to_string()));
            }
            if !vpc.cidr_block.covers(&cidr) {
                return Err(ModelError::CidrNotInVpc);
            }
            let siblings: Vec<&VSwitch> = r.vswitches.values().filter(|v| v.vpc_id == req.vpc_id).collect();
            if siblings.iter().any(|v| v.cidr.overlaps(&cidr)) {
                return Err(ModelError::CidrOverlapped);
            }
            if siblings.len() >= r.config.limits.vswitches_per_vpc {
                return Err(ModelError::VSwitchQuotaExceeded);
            }
            let ipv6_cidr = match req.ipv6_cidr_block {
                None => None,
                Some(bits) => {
                    let vpc6 = vpc.ipv6_cidr_block.ok_or_else(|| {
                        ModelError::invalid("Ipv6CidrBlock", format!("{} has no IPv6 CIDR block", req.vpc_id))
                    })?;
                    let block = vpc6
                        .subnet(64, u128::from(bits))
                        .ok_or_else(|| ModelError::invalid("Ipv6CidrBlock", "must be 0 to 255"))?;
                    if siblings.iter().any(|v| v.ipv6_cidr == Some(block)) {
                        return Err(ModelError::CidrOverlapped);
                    }
                    Some(block)
                }
            };
            check_text("VSwitchName", &req.v_switch_name, 128)?;
            check_tags(&req.tags)?;
            let resource_group_id = vpc.resource_group_id.clone();
            let vsw = VSwitch {
                v_switch_id: r.new_id(IdKind::VSwitch),
                vpc_id: req.vpc_id,
                zone_id: req.zone_id,
                cidr,
                ipv6_cidr,
                v_switch_name: req.v_switch_name,
                description: req.description,
                resource_group_id,
                tags: req.tags,
                creation_time: now,
            };
            r.ipam.insert(vsw.v_switch_id.clone(), Ipam::new(cidr));
            if let Some(c6) = ipv6_cidr {
                r.ipam6.insert(vsw.v_switch_id.clone(), Ipam6::new(c6));
            }
            r.vswitches.insert(vsw.v_switch_id.clone(), vsw.clone());
            r.mark(Kind::VSwitch, &vsw.v_switch_id);
            Ok(vsw)
        })
    }

    pub fn vswitch_view(&self, vsw: &VSwitch) -> VSwitchView {
        let available = self.ipam.get(&vsw.v_switch_id).map_or(vsw.cidr.usable(), Ipam::available);
        VSwitchView { v_switch: vsw.clone(), available_ip_address_count: available }
    }

    pub fn vswitch(&self, id: &str) -> Option<&VSwitch> {
        self.vswitches.get(id)
    }

    pub fn vpc(&self, id: &str) -> Option<&Vpc> {
        self.vpcs.get(id)
    }

    /// Every VPC, by ID (for read-only views such as the topology page).
    pub fn vpcs(&self) -> impl Iterator<Item = &Vpc> {
        self.vpcs.values()
    }

    /// Every vSwitch, by ID.
    pub fn vswitches(&self) -> impl Iterator<Item = &VSwitch> {
        self.vswitches.values()
    }

    pub fn describe_vswitches(&mut self, req: &DescribeVSwitches, now: Millis) -> Result<(Vec<VSwitchView>, PageInfo)> {
        self.advance(now);
        let items: Vec<VSwitchView> = self
            .vswitches
            .values()
            .filter(|v| req.v_switch_ids.is_empty() || req.v_switch_ids.contains(&v.v_switch_id))
            .filter(|v| req.vpc_id.as_ref().is_none_or(|x| &v.vpc_id == x))
            .filter(|v| req.zone_id.as_ref().is_none_or(|x| &v.zone_id == x))
            .filter(|v| req.v_switch_name.as_ref().is_none_or(|x| &v.v_switch_name == x))
            .filter(|v| has_all_tags(&v.tags, &req.tags))
            .map(|v| self.vswitch_view(v))
            .collect();
        paginate(items, |v| &v.v_switch.v_switch_id, &req.page, VPC_PAGES)
    }

    pub fn delete_vswitch(&mut self, vswitch_id: &str, now: Millis) -> Result<()> {
        self.advance(now);
        if !self.vswitches.contains_key(vswitch_id) {
            return Err(ModelError::VSwitchNotFound(vswitch_id.to_string()));
        }
        if let Some(eni) = self.enis.values().find(|e| e.v_switch_id == vswitch_id) {
            return Err(ModelError::DependencyViolation(format!(
                "ENI {} is in this vSwitch",
                eni.network_interface_id
            )));
        }
        if let Some(lb) = self.load_balancers.values().find(|l| l.v_switch_id == vswitch_id) {
            return Err(ModelError::DependencyViolation(format!(
                "load balancer {} is in this vSwitch",
                lb.load_balancer_id
            )));
        }
        self.vswitches.remove(vswitch_id);
        self.ipam.remove(vswitch_id);
        self.ipam6.remove(vswitch_id);
        self.mark(Kind::VSwitch, vswitch_id);
        Ok(())
    }
}
