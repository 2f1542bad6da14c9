//! CLB instances (SLB `2014-05-15`): CreateLoadBalancer, DescribeLoadBalancers,
//! DescribeLoadBalancerAttribute, SetLoadBalancerName, SetLoadBalancerDeleteProtection,
//! SetLoadBalancerModificationProtection, DeleteLoadBalancer, and their tags (TagResources,
//! UntagResources, ListTagResources with `ResourceType=instance`).
//!
//! Addresses: `AddressType` is `internet` (default) or `intranet`; a `VSwitchId` without an
//! `AddressType` means intranet. An intranet load balancer takes an address of its vSwitch
//! (`Address` may name one; it must be free and inside the vSwitch), and a full vSwitch is
//! `VSwitchAvailableIpNotExist`, which the CCM answers by trying another vSwitch. An internet one
//! takes the next free address of the region's public pool (`OperationFailed.RegionResourceLimit`
//! when it is empty). Emulator leniency: an internet load balancer may name its `Address` too, if
//! it is a free address of the pool, so a topology can reproduce a known public IP.
//!
//! VPC of an internet load balancer: the cloud's internet CLB carries no VPC, but the emulator's
//! data plane needs one to reach the backends. `VpcId` (or an explicit `VSwitchId` with
//! `AddressType=internet`) gives it at creation; otherwise it stays empty until the first
//! backend server is added to one of its vServer groups, whose VPC it then takes for good.
//!
//! Echo: what CreateLoadBalancer was given (charge types, spec, protections, name, tags) is what
//! the Describe calls return, field for field, because the CCM compares them with what it sent
//! and "fixes" every difference on each reconcile (notes §6.3). Deleting is refused while
//! `DeleteProtection` is on; deleting removes the listeners and vServer groups too.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::listener::Listener;
use super::{TAGS_PER_RESOURCE, check_slb_tags, on_off, on_off_str};
use crate::error::ModelError;
use crate::ids::IdKind;
use crate::paging::{PageBounds, PageInfo, PageRequest, paginate};
use crate::region::{Kind, Region, check_text, has_all_tags};
use crate::time::Millis;
use crate::{Result, Tag};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AddressType {
    Internet,
    Intranet,
}

impl AddressType {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressType::Internet => "internet",
            AddressType::Intranet => "intranet",
        }
    }

    pub fn parse(s: &str) -> Result<AddressType> {
        match s {
            "internet" => Ok(AddressType::Internet),
            "intranet" => Ok(AddressType::Intranet),
            _ => Err(ModelError::invalid("AddressType", "must be internet or intranet")),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadBalancer {
    pub load_balancer_id: String,
    pub load_balancer_name: String,
    /// The service address (VIP): a public pool address or one of the vSwitch's.
    pub address: Ipv4Addr,
    pub address_type: AddressType,
    /// The VPC the backends are in; empty for an internet load balancer that has none yet.
    pub vpc_id: String,
    /// The vSwitch of an intranet load balancer's address; empty for internet ones unless given.
    pub v_switch_id: String,
    pub master_zone_id: String,
    pub slave_zone_id: String,
    /// Mbit/s, -1 for "as the spec allows".
    pub bandwidth: i32,
    pub internet_charge_type: String,
    pub instance_charge_type: String,
    pub load_balancer_spec: String,
    pub pay_type: String,
    pub resource_group_id: String,
    pub delete_protection: bool,
    pub modification_protection_status: String,
    pub modification_protection_reason: String,
    pub tags: Vec<Tag>,
    pub listeners: Vec<Listener>,
    pub creation_time: Millis,
}

impl LoadBalancer {
    /// `vpc` once the load balancer belongs to a VPC, `classic` before (the cloud's internet
    /// CLB reports `classic`).
    pub fn network_type(&self) -> &'static str {
        if self.vpc_id.is_empty() { "classic" } else { "vpc" }
    }

    /// The cloud has no lifecycle for a CLB beyond `active` unless it is locked for billing.
    pub fn load_balancer_status(&self) -> &'static str {
        "active"
    }

    pub fn delete_protection_str(&self) -> &'static str {
        on_off_str(self.delete_protection)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateLoadBalancer {
    pub load_balancer_name: Option<String>,
    pub address_type: Option<String>,
    pub vpc_id: Option<String>,
    pub v_switch_id: Option<String>,
    pub address: Option<String>,
    pub address_ip_version: Option<String>,
    pub internet_charge_type: Option<String>,
    pub bandwidth: Option<i64>,
    pub master_zone_id: Option<String>,
    pub slave_zone_id: Option<String>,
    pub load_balancer_spec: Option<String>,
    pub instance_charge_type: Option<String>,
    pub pay_type: Option<String>,
    pub resource_group_id: Option<String>,
    pub delete_protection: Option<String>,
    pub modification_protection_status: Option<String>,
    pub modification_protection_reason: Option<String>,
    pub tags: Vec<Tag>,
    pub client_token: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeLoadBalancers {
    pub load_balancer_ids: Vec<String>,
    pub load_balancer_names: Vec<String>,
    /// From the `Tags` JSON parameter ([`parse_tags_filter`]) and `Tag.N`, together.
    pub tags: Vec<Tag>,
    pub address_type: Option<String>,
    pub vpc_id: Option<String>,
    pub v_switch_id: Option<String>,
    pub address: Option<String>,
    pub network_type: Option<String>,
    pub load_balancer_status: Option<String>,
    pub page: PageRequest,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagResources {
    pub resource_type: String,
    pub resource_ids: Vec<String>,
    pub tags: Vec<Tag>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UntagResources {
    pub resource_type: String,
    pub resource_ids: Vec<String>,
    pub tag_keys: Vec<String>,
    pub all: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListTagResources {
    pub resource_type: String,
    pub resource_ids: Vec<String>,
    pub tags: Vec<Tag>,
}

/// One row of ListTagResources.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagResource {
    pub resource_id: String,
    pub resource_type: String,
    pub tag: Tag,
}

const LB_PAGES: PageBounds = PageBounds { default_size: 10, max_page_size: 100, min_results: 1, max_results: 100 };

/// The resource type of a load balancer in the tag APIs (the only one emulated: listeners,
/// vServer groups, certificates and ACLs carry no tags here).
pub const RESOURCE_TYPE_INSTANCE: &str = "instance";

/// DescribeLoadBalancers' `Tags`: a JSON array of `{"TagKey": …, "TagValue": …}`, keys in any
/// case (the CCM sends PascalCase, the API reference's example lower camel case), at most 10.
pub fn parse_tags_filter(s: &str) -> Result<Vec<Tag>> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    let items: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_str(s).map_err(|_| ModelError::InvalidTag)?;
    if items.len() > 10 {
        return Err(ModelError::InvalidTag);
    }
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let mut out = Vec::new();
    for item in items {
        let (mut key, mut value) = (None, String::new());
        for (k, v) in &item {
            match k.to_ascii_lowercase().as_str() {
                "tagkey" | "key" => key = Some(text(v).ok_or(ModelError::InvalidTag)?),
                "tagvalue" | "value" => value = text(v).ok_or(ModelError::InvalidTag)?,
                _ => {}
            }
        }
        let key = key.filter(|k| !k.is_empty()).ok_or(ModelError::InvalidTag)?;
        out.push(Tag { key, value });
    }
    Ok(out)
}

fn check_lb_name(name: &str) -> Result<()> {
    let starts_with_letter = name.chars().next().is_some_and(char::is_alphabetic);
    if name.is_empty() || name.chars().count() > 80 || !starts_with_letter {
        return Err(ModelError::invalid("LoadBalancerName", "1 to 80 characters, starting with a letter"));
    }
    check_text("LoadBalancerName", name, 80)
}

fn check_modification_protection(status: &str, reason: &str) -> Result<()> {
    if !matches!(status, "NonProtection" | "ConsoleProtection") {
        return Err(ModelError::InvalidModificationProtectionStatus);
    }
    if reason.chars().count() > 80 {
        return Err(ModelError::invalid("ModificationProtectionReason", "at most 80 characters"));
    }
    Ok(())
}

fn parse_address(s: &str) -> Result<Ipv4Addr> {
    s.trim().parse().map_err(|_| ModelError::invalid("Address", "Illegal parameter. The IP address is not in subnet."))
}

impl Region {
    pub fn create_load_balancer(&mut self, req: CreateLoadBalancer, now: Millis) -> Result<LoadBalancer> {
        self.idempotent("CreateLoadBalancer", req, now, |r, req| r.create_load_balancer_now(req, now))
    }

    fn create_load_balancer_now(&mut self, req: CreateLoadBalancer, now: Millis) -> Result<LoadBalancer> {
        let given = |o: &Option<String>| o.as_deref().filter(|s| !s.is_empty()).map(str::to_string);
        let vsw_id = given(&req.v_switch_id);
        let address_type = match given(&req.address_type) {
            Some(t) => AddressType::parse(&t)?,
            None if vsw_id.is_some() => AddressType::Intranet,
            None => AddressType::Internet,
        };
        if let Some(v) = given(&req.address_ip_version)
            && v != "ipv4"
        {
            return Err(ModelError::invalid("AddressIPVersion", "only ipv4 is emulated"));
        }
        let name = given(&req.load_balancer_name).unwrap_or_else(|| "auto_named_slb".to_string());
        check_lb_name(&name)?;
        let bandwidth = match req.bandwidth {
            None => -1,
            Some(-1) => -1,
            Some(b) if (1..=5120).contains(&b) => b as i32,
            Some(_) => return Err(ModelError::invalid("Bandwidth", "must be -1 or 1 to 5120")),
        };
        let internet_charge_type =
            given(&req.internet_charge_type).map_or("paybytraffic".to_string(), |s| s.to_ascii_lowercase());
        if !matches!(internet_charge_type.as_str(), "paybytraffic" | "paybybandwidth") {
            return Err(ModelError::invalid("InternetChargeType", "must be paybytraffic or paybybandwidth"));
        }
        let instance_charge_type = given(&req.instance_charge_type).unwrap_or_else(|| "PayBySpec".to_string());
        if !matches!(instance_charge_type.as_str(), "PayBySpec" | "PayByCLCU") {
            return Err(ModelError::invalid("InstanceChargeType", "must be PayBySpec or PayByCLCU"));
        }
        let spec = given(&req.load_balancer_spec).unwrap_or_default();
        if !spec.is_empty() && (!spec.starts_with("slb.") || spec.len() > 32) {
            return Err(ModelError::invalid("LoadBalancerSpec", "a spec such as slb.s1.small"));
        }
        let pay_type = given(&req.pay_type).unwrap_or_else(|| "PayOnDemand".to_string());
        if pay_type != "PayOnDemand" {
            return Err(ModelError::invalid("PayType", "only PayOnDemand is emulated"));
        }
        let delete_protection = on_off("DeleteProtection", req.delete_protection.as_deref().unwrap_or("off"))?;
        let mp_status = given(&req.modification_protection_status).unwrap_or_else(|| "NonProtection".to_string());
        let mp_reason = req.modification_protection_reason.clone().unwrap_or_default();
        check_modification_protection(&mp_status, &mp_reason)?;
        check_slb_tags(&req.tags)?;
        for z in [&req.master_zone_id, &req.slave_zone_id].into_iter().filter_map(given) {
            self.check_zone(&z)?;
        }
        let named = given(&req.address).map(|a| parse_address(&a)).transpose()?;
        let vpc_given = given(&req.vpc_id);
        if let Some(v) = &vpc_given
            && !self.vpcs.contains_key(v)
        {
            return Err(ModelError::SlbVpcNotExist(v.clone()));
        }
        let vsw = match &vsw_id {
            Some(id) => Some(self.vswitches.get(id).ok_or_else(|| ModelError::SlbVSwitchNotExist(id.clone()))?.clone()),
            None if address_type == AddressType::Intranet => return Err(ModelError::MissingParamVSwitchId),
            None => None,
        };
        if let (Some(v), Some(s)) = (&vpc_given, &vsw)
            && *v != s.vpc_id
        {
            return Err(ModelError::invalid("VpcId", format!("the vSwitch {} is in {}", s.v_switch_id, s.vpc_id)));
        }
        // Choose the address before changing anything.
        let address = match (address_type, &vsw) {
            (AddressType::Intranet, Some(s)) => {
                let ipam = self
                    .ipam
                    .get(&s.v_switch_id)
                    .ok_or_else(|| ModelError::SlbVSwitchNotExist(s.v_switch_id.clone()))?;
                match named {
                    Some(ip) if !ipam.is_allocatable(ip) => {
                        return Err(ModelError::invalid(
                            "Address",
                            "Illegal parameter. The IP address is not in subnet.",
                        ));
                    }
                    Some(ip) if ipam.is_used(ip) => {
                        return Err(ModelError::invalid("Address", format!("{ip} is already in use")));
                    }
                    Some(ip) => ip,
                    None => ipam
                        .pick(1, &[])
                        .and_then(|v| v.first().copied())
                        .ok_or_else(|| ModelError::VSwitchAvailableIpNotExist(s.v_switch_id.clone()))?,
                }
            }
            _ => match named {
                Some(ip) if !self.public_ipam.is_allocatable(ip) => {
                    return Err(ModelError::invalid(
                        "Address",
                        format!("an internet address must come from the public pool {}", self.public_ipam.cidr()),
                    ));
                }
                Some(ip) if self.public_ipam.is_used(ip) => {
                    return Err(ModelError::invalid("Address", format!("{ip} is already in use")));
                }
                Some(ip) => ip,
                None => self
                    .public_ipam
                    .pick(1, &[])
                    .and_then(|v| v.first().copied())
                    .ok_or(ModelError::RegionResourceLimit)?,
            },
        };
        let zones = &self.config.zones;
        let master = given(&req.master_zone_id)
            .or_else(|| vsw.as_ref().map(|s| s.zone_id.clone()))
            .unwrap_or_else(|| zones.first().cloned().unwrap_or_default());
        let slave = given(&req.slave_zone_id)
            .unwrap_or_else(|| zones.iter().find(|z| **z != master).cloned().unwrap_or_default());
        let vpc_id = vsw.as_ref().map(|s| s.vpc_id.clone()).or(vpc_given).unwrap_or_default();
        let lb = LoadBalancer {
            load_balancer_id: self.new_id(IdKind::LoadBalancer),
            load_balancer_name: name,
            address,
            address_type,
            vpc_id,
            v_switch_id: vsw.map(|s| s.v_switch_id).unwrap_or_default(),
            master_zone_id: master,
            slave_zone_id: slave,
            bandwidth,
            internet_charge_type,
            instance_charge_type,
            load_balancer_spec: spec,
            pay_type,
            resource_group_id: given(&req.resource_group_id).unwrap_or_default(),
            delete_protection,
            modification_protection_status: mp_status,
            modification_protection_reason: mp_reason,
            tags: req.tags,
            listeners: Vec::new(),
            creation_time: now,
        };
        self.hold_lb_address(&lb);
        self.load_balancers.insert(lb.load_balancer_id.clone(), lb.clone());
        self.mark(Kind::LoadBalancer, &lb.load_balancer_id);
        Ok(lb)
    }

    fn hold_lb_address(&mut self, lb: &LoadBalancer) {
        match lb.address_type {
            AddressType::Intranet => {
                if let Some(ipam) = self.ipam.get_mut(&lb.v_switch_id) {
                    ipam.reserve(lb.address);
                }
            }
            AddressType::Internet => {
                self.public_ipam.reserve(lb.address);
            }
        }
    }

    fn free_lb_address(&mut self, lb: &LoadBalancer) {
        match lb.address_type {
            AddressType::Intranet => {
                if let Some(ipam) = self.ipam.get_mut(&lb.v_switch_id) {
                    ipam.release(lb.address);
                }
            }
            AddressType::Internet => self.public_ipam.release(lb.address),
        }
    }

    pub fn describe_load_balancers(
        &mut self,
        req: &DescribeLoadBalancers,
        now: Millis,
    ) -> Result<(Vec<LoadBalancer>, PageInfo)> {
        self.advance(now);
        if let Some(t) = &req.address_type {
            AddressType::parse(t)?;
        }
        let address = req.address.as_deref().map(parse_address).transpose()?;
        let items: Vec<LoadBalancer> = self
            .load_balancers
            .values()
            .filter(|l| req.load_balancer_ids.is_empty() || req.load_balancer_ids.contains(&l.load_balancer_id))
            .filter(|l| req.load_balancer_names.is_empty() || req.load_balancer_names.contains(&l.load_balancer_name))
            .filter(|l| has_all_tags(&l.tags, &req.tags))
            .filter(|l| req.address_type.as_deref().is_none_or(|t| t == l.address_type.as_str()))
            .filter(|l| req.vpc_id.as_ref().is_none_or(|v| *v == l.vpc_id))
            .filter(|l| req.v_switch_id.as_ref().is_none_or(|v| *v == l.v_switch_id))
            .filter(|l| address.is_none_or(|a| a == l.address))
            .filter(|l| req.network_type.as_deref().is_none_or(|n| n == l.network_type()))
            .filter(|l| req.load_balancer_status.as_deref().is_none_or(|s| s == l.load_balancer_status()))
            .cloned()
            .collect();
        paginate(items, |l| &l.load_balancer_id, &req.page, LB_PAGES)
    }

    pub fn describe_load_balancer_attribute(&mut self, id: &str, now: Millis) -> Result<LoadBalancer> {
        self.advance(now);
        self.lb(id).cloned()
    }

    pub fn set_load_balancer_name(&mut self, id: &str, name: &str, now: Millis) -> Result<()> {
        self.advance(now);
        self.lb(id)?;
        if name.is_empty() {
            return Err(ModelError::MissingParameter("LoadBalancerName"));
        }
        check_lb_name(name)?;
        self.update_lb(id, |l| l.load_balancer_name = name.to_string());
        Ok(())
    }

    pub fn set_load_balancer_delete_protection(&mut self, id: &str, protection: &str, now: Millis) -> Result<()> {
        self.advance(now);
        self.lb(id)?;
        if protection.is_empty() {
            return Err(ModelError::MissingParameter("DeleteProtection"));
        }
        let on = on_off("DeleteProtection", protection)?;
        self.update_lb(id, |l| l.delete_protection = on);
        Ok(())
    }

    pub fn set_load_balancer_modification_protection(
        &mut self,
        id: &str,
        status: &str,
        reason: &str,
        now: Millis,
    ) -> Result<()> {
        self.advance(now);
        self.lb(id)?;
        if status.is_empty() {
            return Err(ModelError::MissingParameter("ModificationProtectionStatus"));
        }
        check_modification_protection(status, reason)?;
        // The reason only means something while protected.
        let reason = if status == "ConsoleProtection" { reason.to_string() } else { String::new() };
        self.update_lb(id, |l| {
            l.modification_protection_status = status.to_string();
            l.modification_protection_reason = reason;
        });
        Ok(())
    }

    /// Refused while `DeleteProtection` is on; takes the listeners and vServer groups along and
    /// gives the address back.
    pub fn delete_load_balancer(&mut self, id: &str, now: Millis) -> Result<()> {
        self.advance(now);
        if self.lb(id)?.delete_protection {
            return Err(ModelError::DeleteProtectionIsOn);
        }
        let lb = self.load_balancers.remove(id).expect("checked above");
        self.free_lb_address(&lb);
        self.mark(Kind::LoadBalancer, id);
        let groups: Vec<String> = self
            .vserver_groups
            .values()
            .filter(|g| g.load_balancer_id == id)
            .map(|g| g.v_server_group_id.clone())
            .collect();
        for g in groups {
            self.vserver_groups.remove(&g);
            self.mark(Kind::VServerGroup, &g);
        }
        Ok(())
    }

    /// Change one load balancer in place (it exists: the caller checked) and mark it.
    pub(crate) fn update_lb(&mut self, id: &str, f: impl FnOnce(&mut LoadBalancer)) {
        if let Some(l) = self.load_balancers.get_mut(id) {
            f(l);
            self.mark(Kind::LoadBalancer, id);
        }
    }

    /// The load balancers a tag call names: the type must be `instance`, 1–50 IDs, each known.
    fn tag_targets(&self, resource_type: &str, ids: &[String]) -> Result<()> {
        if resource_type.is_empty() {
            return Err(ModelError::MissingParameter("ResourceType"));
        }
        if !resource_type.eq_ignore_ascii_case(RESOURCE_TYPE_INSTANCE) {
            return Err(ModelError::InvalidResourceType);
        }
        if ids.len() > 50 {
            return Err(ModelError::invalid("ResourceId.N", "at most 50 resources"));
        }
        for id in ids {
            if !self.load_balancers.contains_key(id) {
                return Err(ModelError::ResourceNotExist(id.clone()));
            }
        }
        Ok(())
    }

    /// Add tags (a key already there takes the new value), at most 20 per load balancer.
    pub fn tag_resources(&mut self, req: &TagResources, now: Millis) -> Result<()> {
        self.advance(now);
        self.tag_targets(&req.resource_type, &req.resource_ids)?;
        if req.resource_ids.is_empty() {
            return Err(ModelError::MissingParameter("ResourceId.N"));
        }
        if req.tags.is_empty() {
            return Err(ModelError::MissingParameter("Tag.N.Key"));
        }
        check_slb_tags(&req.tags)?;
        let mut updated = Vec::new();
        for id in &req.resource_ids {
            let mut tags = self.load_balancers[id].tags.clone();
            for t in &req.tags {
                match tags.iter_mut().find(|x| x.key == t.key) {
                    Some(x) => x.value = t.value.clone(),
                    None => tags.push(t.clone()),
                }
            }
            if tags.len() > TAGS_PER_RESOURCE {
                return Err(ModelError::SizeLimitExceededTag(format!("{id} would carry {} tags", tags.len())));
            }
            updated.push((id.clone(), tags));
        }
        for (id, tags) in updated {
            self.update_lb(&id, |l| l.tags = tags);
        }
        Ok(())
    }

    /// Remove the named keys (absent keys are fine), or every tag with `All` and no key.
    pub fn untag_resources(&mut self, req: &UntagResources, now: Millis) -> Result<()> {
        self.advance(now);
        self.tag_targets(&req.resource_type, &req.resource_ids)?;
        if req.resource_ids.is_empty() {
            return Err(ModelError::MissingParameter("ResourceId.N"));
        }
        if req.tag_keys.is_empty() && !req.all {
            return Err(ModelError::MissingParameter("TagKey.N"));
        }
        if req.tag_keys.len() > TAGS_PER_RESOURCE {
            return Err(ModelError::SizeLimitExceededTag(format!("at most {TAGS_PER_RESOURCE} keys")));
        }
        for id in &req.resource_ids {
            let keys = &req.tag_keys;
            self.update_lb(id, |l| l.tags.retain(|t| !keys.is_empty() && !keys.contains(&t.key)));
        }
        Ok(())
    }

    /// The tags of the named load balancers, or of those carrying every tag of `Tag.N`; one row
    /// per tag, all at once (the CCM reads no pages here).
    pub fn list_tag_resources(&mut self, req: &ListTagResources, now: Millis) -> Result<Vec<TagResource>> {
        self.advance(now);
        self.tag_targets(&req.resource_type, &req.resource_ids)?;
        if req.resource_ids.is_empty() && req.tags.is_empty() {
            return Err(ModelError::MissingTagOrResourceId);
        }
        Ok(self
            .load_balancers
            .values()
            .filter(|l| req.resource_ids.is_empty() || req.resource_ids.contains(&l.load_balancer_id))
            .filter(|l| has_all_tags(&l.tags, &req.tags))
            .flat_map(|l| {
                l.tags.iter().map(|t| TagResource {
                    resource_id: l.load_balancer_id.clone(),
                    resource_type: RESOURCE_TYPE_INSTANCE.to_string(),
                    tag: t.clone(),
                })
            })
            .collect())
    }
}
