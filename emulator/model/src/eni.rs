//! Elastic network interfaces (ECS `2014-05-26`): CreateNetworkInterface,
//! AttachNetworkInterface, DetachNetworkInterface, DeleteNetworkInterface,
//! DescribeNetworkInterfaces, DescribeNetworkInterfaceAttribute, AssignPrivateIpAddresses,
//! UnassignPrivateIpAddresses, ModifyNetworkInterfaceAttribute.
//!
//! Types are `Primary` (created with its instance, never detached), `Secondary`, `Trunk`
//! (`InstanceType=Trunk` at create) and `Member`: a Secondary ENI attached through
//! `TrunkNetworkInstanceId`, which becomes `Secondary` again once detached (Terway's GC lists
//! `Type=Member,Status=InUse` to detach and `Type=Secondary,Status=Available` to delete).
//! A member's `Attachment.DeviceIndex` is its VLAN id on the trunk (Terway reads it as `Vid`):
//! the lowest free id in 1–4094 on that trunk (the cloud's real range is unconfirmed).
//!
//! Status machine: Available → Attaching → InUse → Detaching → Available; Available → Deleting
//! → gone. Choices where the reference is unconfirmed, all made so Terway never loops:
//! attaching an ENI again to the instance (and trunk) it is already attached or attaching to
//! succeeds; detaching an ENI that is `Detaching` or already `Available` succeeds; deleting an
//! ENI that is already `Deleting` succeeds. A full trunk answers `EniPerInstanceLimitExceeded`.
//! Detaching a trunk that still carries members is refused (`InvalidOperation.InvalidEniState`).
//!
//! Dual stack and prefixes (ECS API reference, "IP prefixes" user guide): an ENI in a vSwitch
//! with an IPv6 /64 may hold IPv6 addresses (`Ipv6AddressCount` / `Ipv6Address.N` at create,
//! AssignIpv6Addresses, UnassignIpv6Addresses) and /80 IPv6 prefixes (`Ipv6PrefixCount`,
//! `Ipv6Prefix.N`); any ENI may hold /28 IPv4 prefixes (`Ipv4PrefixCount`, `Ipv4Prefix.N` on
//! AssignPrivateIpAddresses / UnassignPrivateIpAddresses). "Each IP prefix counts as one IP
//! address": an attached ENI holds at most the type's `EniPrivateIpAddressQuantity` IPv4
//! addresses plus IPv4 prefixes (`InvalidOperation.Ipv4CountExceeded`) and
//! `EniIpv6AddressQuantity` IPv6 addresses plus IPv6 prefixes
//! (`InvalidOperation.Ipv6CountExceeded`, the code Terway checks). Single addresses and prefixes
//! of one family are never asked for in the same call (Terway's client refuses it too); a count
//! and the named list of the same thing are exclusive; prefix counts are 1–10 per call.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::ids::IdKind;
use crate::instance::InstanceStatus;
use crate::ipam::{IPV4_PREFIX_LEN, IPV6_PREFIX_LEN, Ipam, Ipam6};
use crate::net::{Cidr, Cidr6, Mac};
use crate::paging::{PageBounds, PageInfo, PageRequest, paginate};
use crate::region::{Kind, Region, check_tags, check_text, has_all_tags, parse_ip};
use crate::time::Millis;
use crate::{Result, Tag};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EniType {
    Primary,
    Secondary,
    Trunk,
    Member,
}

impl EniType {
    pub fn as_str(self) -> &'static str {
        match self {
            EniType::Primary => "Primary",
            EniType::Secondary => "Secondary",
            EniType::Trunk => "Trunk",
            EniType::Member => "Member",
        }
    }

    pub fn parse(s: &str) -> Option<EniType> {
        [EniType::Primary, EniType::Secondary, EniType::Trunk, EniType::Member].into_iter().find(|t| t.as_str() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EniStatus {
    Available,
    Attaching,
    InUse,
    Detaching,
    Deleting,
}

impl EniStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EniStatus::Available => "Available",
            EniStatus::Attaching => "Attaching",
            EniStatus::InUse => "InUse",
            EniStatus::Detaching => "Detaching",
            EniStatus::Deleting => "Deleting",
        }
    }

    pub fn parse(s: &str) -> Option<EniStatus> {
        [EniStatus::Available, EniStatus::Attaching, EniStatus::InUse, EniStatus::Detaching, EniStatus::Deleting]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub instance_id: String,
    /// For an instance NIC its slot (0 = primary); for a member its VLAN id on the trunk.
    pub device_index: u32,
    pub trunk_network_interface_id: Option<String>,
    pub network_card_index: u32,
    /// The fabric port of a NIC (its Geneve VNI between node and emulator); 0 for members,
    /// which travel on their trunk's port. Not part of the cloud's API.
    #[serde(default)]
    pub port_id: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Eni {
    pub network_interface_id: String,
    pub network_interface_name: String,
    pub description: String,
    pub eni_type: EniType,
    pub status: EniStatus,
    /// When the current transitional status ends.
    pub transition_due: Option<Millis>,
    pub vpc_id: String,
    pub v_switch_id: String,
    pub zone_id: String,
    pub mac_address: Mac,
    pub primary_ip_address: Ipv4Addr,
    pub secondary_ips: Vec<Ipv4Addr>,
    #[serde(default)]
    pub ipv6_addresses: Vec<Ipv6Addr>,
    /// /28 blocks the ENI holds whole (prefix mode).
    #[serde(default)]
    pub ipv4_prefixes: Vec<Cidr>,
    /// /80 blocks the ENI holds whole.
    #[serde(default)]
    pub ipv6_prefixes: Vec<Cidr6>,
    pub security_group_ids: Vec<String>,
    pub attachment: Option<Attachment>,
    pub tags: Vec<Tag>,
    pub creation_time: Millis,
    pub delete_on_release: bool,
    pub source_dest_check: bool,
    pub traffic_mode: String,
    pub resource_group_id: String,
}

impl Eni {
    /// Primary first, then the secondary addresses in assignment order.
    pub fn ips(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        std::iter::once(self.primary_ip_address).chain(self.secondary_ips.iter().copied())
    }

    pub fn ip_count(&self) -> u32 {
        1 + self.secondary_ips.len() as u32
    }

    /// What counts against `EniPrivateIpAddressQuantity`: addresses and IPv4 prefixes.
    pub fn ipv4_slots(&self) -> u32 {
        self.ip_count() + self.ipv4_prefixes.len() as u32
    }

    /// What counts against `EniIpv6AddressQuantity`: addresses and IPv6 prefixes.
    pub fn ipv6_slots(&self) -> u32 {
        (self.ipv6_addresses.len() + self.ipv6_prefixes.len()) as u32
    }

    /// The instance the ENI is attached to, members included.
    pub fn instance_id(&self) -> Option<&str> {
        self.attachment.as_ref().map(|a| a.instance_id.as_str())
    }

    pub fn vlan(&self) -> Option<u16> {
        let a = self.attachment.as_ref()?;
        a.trunk_network_interface_id.as_ref().map(|_| a.device_index as u16)
    }
}

/// Everything an ENI is created with, once validated.
pub(crate) struct NewEni {
    pub eni_type: EniType,
    pub v_switch_id: String,
    pub security_group_ids: Vec<String>,
    pub name: String,
    pub description: String,
    pub tags: Vec<Tag>,
    pub delete_on_release: bool,
    pub source_dest_check: bool,
    pub traffic_mode: String,
    pub resource_group_id: String,
    pub status: EniStatus,
    pub attachment: Option<Attachment>,
}

/// Prefixes a create names (`Ipv4Prefix.N`, `Ipv6Prefix.N`), parsed.
#[derive(Clone, Copy, Default)]
pub(crate) struct NamedPrefixes<'a> {
    pub v4: &'a [Cidr],
    pub v6: &'a [Cidr6],
}

/// The addresses an ENI will get, chosen before anything changes.
pub(crate) struct IpPlan {
    primary: Ipv4Addr,
    secondary: Vec<Ipv4Addr>,
    ipv6: Vec<Ipv6Addr>,
    ipv4_prefixes: Vec<Cidr>,
    ipv6_prefixes: Vec<Cidr6>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateNetworkInterface {
    pub v_switch_id: String,
    pub security_group_id: Option<String>,
    pub security_group_ids: Vec<String>,
    /// `Secondary` (default) or `Trunk`.
    pub instance_type: Option<String>,
    pub primary_ip_address: Option<String>,
    pub private_ip_addresses: Vec<String>,
    pub secondary_private_ip_address_count: Option<u32>,
    pub ipv6_address_count: Option<u32>,
    pub ipv6_addresses: Vec<String>,
    pub ipv4_prefix_count: Option<u32>,
    pub ipv6_prefix_count: Option<u32>,
    /// `Ipv4Prefix.N` / `Ipv6Prefix.N`: prefixes by name, exclusive with the counts.
    pub ipv4_prefixes: Vec<String>,
    pub ipv6_prefixes: Vec<String>,
    pub network_interface_name: String,
    pub description: String,
    pub tags: Vec<Tag>,
    pub delete_on_release: Option<bool>,
    pub source_dest_check: Option<bool>,
    pub network_interface_traffic_mode: Option<String>,
    pub resource_group_id: String,
    pub client_token: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachNetworkInterface {
    pub network_interface_id: String,
    pub instance_id: String,
    pub trunk_network_instance_id: Option<String>,
    pub network_card_index: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachNetworkInterface {
    pub network_interface_id: String,
    pub instance_id: String,
    pub trunk_network_instance_id: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeNetworkInterfaces {
    pub vpc_id: Option<String>,
    pub v_switch_id: Option<String>,
    pub instance_id: Option<String>,
    pub r#type: Option<String>,
    pub status: Option<String>,
    pub network_interface_ids: Vec<String>,
    pub private_ip_addresses: Vec<String>,
    pub ipv6_addresses: Vec<String>,
    pub primary_ip_address: Option<String>,
    pub security_group_id: Option<String>,
    pub network_interface_name: Option<String>,
    pub resource_group_id: Option<String>,
    pub tags: Vec<Tag>,
    pub page: PageRequest,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignPrivateIpAddresses {
    pub network_interface_id: String,
    pub secondary_private_ip_address_count: Option<u32>,
    pub private_ip_addresses: Vec<String>,
    pub ipv4_prefix_count: Option<u32>,
    pub ipv4_prefixes: Vec<String>,
    pub client_token: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedPrivateIps {
    pub network_interface_id: String,
    pub private_ip_addresses: Vec<String>,
    pub ipv4_prefixes: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnassignPrivateIpAddresses {
    pub network_interface_id: String,
    pub private_ip_addresses: Vec<String>,
    pub ipv4_prefixes: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignIpv6Addresses {
    pub network_interface_id: String,
    pub ipv6_address_count: Option<u32>,
    pub ipv6_addresses: Vec<String>,
    pub ipv6_prefix_count: Option<u32>,
    pub ipv6_prefixes: Vec<String>,
    pub client_token: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedIpv6 {
    pub network_interface_id: String,
    pub ipv6_addresses: Vec<String>,
    pub ipv6_prefixes: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnassignIpv6Addresses {
    pub network_interface_id: String,
    pub ipv6_addresses: Vec<String>,
    pub ipv6_prefixes: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModifyNetworkInterfaceAttribute {
    pub network_interface_id: String,
    /// The complete new set, when given.
    pub security_group_ids: Vec<String>,
    pub network_interface_name: Option<String>,
    pub description: Option<String>,
    pub delete_on_release: Option<bool>,
    pub source_dest_check: Option<bool>,
}

/// DescribeNetworkInterfaceAttribute's answer: the ENI and, for a trunk, its members.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EniAttribute {
    pub eni: Eni,
    pub member_network_interface_ids: Vec<String>,
}

const ENI_PAGES: PageBounds = PageBounds { default_size: 10, max_page_size: 1000, min_results: 10, max_results: 500 };

fn not_found(id: &str) -> ModelError {
    ModelError::EniNotFound(id.to_string())
}

impl Region {
    pub fn eni(&self, id: &str) -> Option<&Eni> {
        self.enis.get(id)
    }

    pub fn enis(&self) -> impl Iterator<Item = &Eni> {
        self.enis.values()
    }

    /// Members of a trunk ENI, by VLAN id.
    pub fn trunk_members(&self, trunk_id: &str) -> impl Iterator<Item = (u32, &String)> {
        self.members.get(trunk_id).into_iter().flat_map(|m| m.iter().map(|(v, e)| (*v, e)))
    }

    /// Choose the addresses of a new ENI: `primary` if named (else one from the pool), the
    /// `named` secondaries, and `count` more from the pool. Changes nothing.
    pub(crate) fn plan_eni_ips(
        &self,
        vsw_id: &str,
        primary: Option<Ipv4Addr>,
        named: &[Ipv4Addr],
        count: u32,
    ) -> Result<IpPlan> {
        let ipam = self.ipam.get(vsw_id).ok_or_else(|| ModelError::VSwitchNotFound(vsw_id.to_string()))?;
        let wanted = check_named(ipam, primary.iter().chain(named))?;
        let need = count as usize + usize::from(primary.is_none());
        let mut picked = ipam.pick(need, &wanted).ok_or_else(|| ModelError::VSwitchIpNotEnough(vsw_id.to_string()))?;
        let primary = match primary {
            Some(p) => p,
            None => picked.remove(0),
        };
        let mut secondary = named.to_vec();
        secondary.extend(picked);
        Ok(IpPlan { primary, secondary, ipv6: Vec::new(), ipv4_prefixes: Vec::new(), ipv6_prefixes: Vec::new() })
    }

    /// Add to `plan` the IPv6 addresses (`named_v6`, then `v6_count` picked), and the IPv4 and
    /// IPv6 prefixes a new ENI asks for: those `named`, then picked up to `v4_prefixes` /
    /// `v6_prefixes` in all. Changes nothing.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn plan_eni_extras(
        &self,
        vsw_id: &str,
        plan: &mut IpPlan,
        named_v6: &[Ipv6Addr],
        v6_count: u32,
        named: NamedPrefixes<'_>,
        v4_prefixes: u32,
        v6_prefixes: u32,
    ) -> Result<()> {
        if v4_prefixes > 0 {
            let ipam = self.ipam.get(vsw_id).ok_or_else(|| ModelError::VSwitchNotFound(vsw_id.to_string()))?;
            let mut blocks = check_named_blocks(ipam, named.v4)?;
            // The addresses this plan takes are not held yet: keep their blocks out.
            let in_plan =
                |b: &Cidr| std::iter::once(plan.primary).chain(plan.secondary.iter().copied()).any(|ip| b.contains(ip));
            if let Some(b) = blocks.iter().find(|b| in_plan(b)) {
                return Err(ModelError::PrivateIpDuplicated(b.to_string()));
            }
            let mut taken: Vec<Cidr> = std::iter::once(plan.primary)
                .chain(plan.secondary.iter().copied())
                .filter_map(|ip| Cidr::new(Ipv4Addr::from(u32::from(ip) & !0xf), IPV4_PREFIX_LEN))
                .collect();
            taken.extend(blocks.iter().copied());
            let more = ipam
                .pick_blocks(IPV4_PREFIX_LEN, v4_prefixes as usize - blocks.len(), &taken)
                .ok_or_else(|| ModelError::VSwitchIpNotEnough(vsw_id.to_string()))?;
            blocks.extend(more);
            plan.ipv4_prefixes = blocks;
        }
        if named_v6.is_empty() && v6_count == 0 && v6_prefixes == 0 {
            return Ok(());
        }
        let ipam6 = self.ipam6_of(vsw_id)?;
        let mut wanted = check_named_v6(ipam6, named_v6)?;
        let picked =
            ipam6.pick(v6_count as usize, &wanted).ok_or_else(|| ModelError::VSwitchIpNotEnough(vsw_id.to_string()))?;
        wanted.extend(picked);
        let mut prefixes: Vec<Cidr6> = Vec::new();
        for &p in named.v6 {
            if !ipam6.cidr().covers(&p) {
                return Err(ModelError::VSwitchIpInvalid(p.to_string()));
            }
            if !ipam6.is_prefix_free(p) || prefixes.contains(&p) || wanted.iter().any(|ip| p.contains(*ip)) {
                return Err(ModelError::PrivateIpDuplicated(p.to_string()));
            }
            prefixes.push(p);
        }
        let mut avoid: Vec<Cidr6> = wanted.iter().filter_map(|ip| v6_block(*ip)).collect();
        avoid.extend(prefixes.iter().copied());
        let more = ipam6
            .pick_prefixes(v6_prefixes as usize - prefixes.len(), &avoid)
            .ok_or_else(|| ModelError::VSwitchIpNotEnough(vsw_id.to_string()))?;
        prefixes.extend(more);
        plan.ipv6_prefixes = prefixes;
        plan.ipv6 = wanted;
        Ok(())
    }

    /// The IPv6 allocator of a vSwitch; an IPv4-only vSwitch cannot give IPv6 addresses.
    fn ipam6_of(&self, vsw_id: &str) -> Result<&Ipam6> {
        if !self.vswitches.contains_key(vsw_id) {
            return Err(ModelError::VSwitchNotFound(vsw_id.to_string()));
        }
        self.ipam6
            .get(vsw_id)
            .ok_or_else(|| ModelError::invalid("VSwitchId", format!("{vsw_id} has no IPv6 CIDR block")))
    }

    /// Hold and index an ENI's IPv6 addresses and both kinds of prefixes.
    fn hold_extras(&mut self, vsw_id: &str, eni_id: &str, v6: &[Ipv6Addr], p4: &[Cidr], p6: &[Cidr6]) {
        if let Some(ipam) = self.ipam.get_mut(vsw_id) {
            for p in p4 {
                ipam.reserve_block(*p);
            }
        }
        if let Some(ipam6) = self.ipam6.get_mut(vsw_id) {
            for ip in v6 {
                ipam6.reserve(*ip);
            }
            for p in p6 {
                ipam6.reserve_prefix(*p);
            }
        }
        for ip in v6 {
            self.ip6_owners.insert(*ip, eni_id.to_string());
        }
    }

    fn free_extras(&mut self, vsw_id: &str, v6: &[Ipv6Addr], p4: &[Cidr], p6: &[Cidr6]) {
        if let Some(ipam) = self.ipam.get_mut(vsw_id) {
            for p in p4 {
                ipam.release_block(*p);
            }
        }
        if let Some(ipam6) = self.ipam6.get_mut(vsw_id) {
            for ip in v6 {
                ipam6.release(*ip);
            }
            for p in p6 {
                ipam6.release_prefix(*p);
            }
        }
        for ip in v6 {
            self.ip6_owners.remove(ip);
        }
    }

    /// Who holds an IPv6 address, if anyone.
    pub fn ip6_owner(&self, ip: Ipv6Addr) -> Option<&str> {
        self.ip6_owners.get(&ip).map(String::as_str)
    }

    /// Create the ENI record and index it. All checks are done by the caller.
    pub(crate) fn insert_eni(&mut self, new: NewEni, plan: IpPlan, now: Millis) -> String {
        let id = self.new_id(IdKind::Eni);
        let mac = self.new_mac();
        let vsw = self.vswitches.get(&new.v_switch_id).expect("caller checked the vSwitch").clone();
        let eni = Eni {
            network_interface_id: id.clone(),
            network_interface_name: new.name,
            description: new.description,
            eni_type: new.eni_type,
            status: new.status,
            transition_due: None,
            vpc_id: vsw.vpc_id.clone(),
            v_switch_id: vsw.v_switch_id.clone(),
            zone_id: vsw.zone_id.clone(),
            mac_address: mac,
            primary_ip_address: plan.primary,
            secondary_ips: plan.secondary,
            ipv6_addresses: plan.ipv6,
            ipv4_prefixes: plan.ipv4_prefixes,
            ipv6_prefixes: plan.ipv6_prefixes,
            security_group_ids: new.security_group_ids,
            attachment: new.attachment,
            tags: new.tags,
            creation_time: now,
            delete_on_release: new.delete_on_release,
            source_dest_check: new.source_dest_check,
            traffic_mode: new.traffic_mode,
            resource_group_id: new.resource_group_id,
        };
        let ips: Vec<Ipv4Addr> = eni.ips().collect();
        for ip in ips {
            self.hold_ip(&vsw.v_switch_id, &id, ip);
        }
        let (v6, p4, p6) = (eni.ipv6_addresses.clone(), eni.ipv4_prefixes.clone(), eni.ipv6_prefixes.clone());
        self.hold_extras(&vsw.v_switch_id, &id, &v6, &p4, &p6);
        self.macs.insert(mac);
        self.join_groups(&id, &eni.security_group_ids);
        if let Some(att) = &eni.attachment {
            self.index_attachment(&id, att).expect("caller checked the slot; the port is new");
        }
        self.enis.insert(id.clone(), eni);
        self.mark(Kind::Eni, &id);
        id
    }

    /// Forget an ENI: its addresses go back to the vSwitch, its MAC and group memberships go.
    pub(crate) fn remove_eni(&mut self, id: &str) {
        let Some(eni) = self.enis.remove(id) else {
            return;
        };
        for ip in eni.ips() {
            self.free_ip(&eni.v_switch_id, id, ip);
        }
        self.free_extras(&eni.v_switch_id, &eni.ipv6_addresses, &eni.ipv4_prefixes, &eni.ipv6_prefixes);
        self.macs.remove(&eni.mac_address);
        self.leave_groups(id, &eni.security_group_ids);
        if let Some(att) = &eni.attachment {
            self.unindex_attachment(id, att);
        }
        self.mark(Kind::Eni, id);
    }

    /// A NIC by its fabric port.
    pub fn eni_by_port(&self, port_id: u32) -> Option<&Eni> {
        self.ports.get(&port_id).and_then(|id| self.enis.get(id))
    }

    /// Records an attachment in the slot index of its instance (or trunk) and the port index;
    /// a slot or port already held by another ENI is an error, and nothing is recorded.
    pub(crate) fn index_attachment(&mut self, id: &str, att: &Attachment) -> Result<(), String> {
        if att.port_id != 0 && self.ports.get(&att.port_id).is_some_and(|holder| holder != id) {
            return Err(format!("ENI {id}: fabric port {} is held twice", att.port_id));
        }
        let slots = match &att.trunk_network_interface_id {
            Some(trunk) => self.members.entry(trunk.clone()).or_default(),
            None => self.nics.entry(att.instance_id.clone()).or_default(),
        };
        match slots.get(&att.device_index) {
            Some(holder) if holder != id => {
                return Err(format!("ENI {id}: device index {} is held twice", att.device_index));
            }
            _ => slots.insert(att.device_index, id.to_string()),
        };
        if att.port_id != 0 {
            self.ports.insert(att.port_id, id.to_string());
        }
        Ok(())
    }

    fn unindex_attachment(&mut self, id: &str, att: &Attachment) {
        if att.port_id != 0 && self.ports.get(&att.port_id).map(String::as_str) == Some(id) {
            self.ports.remove(&att.port_id);
        }
        let (index, owner) = match &att.trunk_network_interface_id {
            Some(trunk) => (&mut self.members, trunk),
            None => (&mut self.nics, &att.instance_id),
        };
        if let Some(slots) = index.get_mut(owner)
            && slots.get(&att.device_index).map(String::as_str) == Some(id)
        {
            slots.remove(&att.device_index);
            // A trunk (or instance) with nothing attached leaves no entry behind.
            if slots.is_empty() {
                index.remove(owner);
            }
        }
    }

    /// End an attachment now: the ENI is Available, a member is Secondary again.
    pub(crate) fn finish_detach(&mut self, id: &str) {
        let Some(eni) = self.enis.get_mut(id) else {
            return;
        };
        let att = eni.attachment.take();
        eni.status = EniStatus::Available;
        eni.transition_due = None;
        if eni.eni_type == EniType::Member {
            eni.eni_type = EniType::Secondary;
        }
        if let Some(att) = att {
            self.unindex_attachment(id, &att);
        }
        self.mark(Kind::Eni, id);
    }

    pub(crate) fn complete_eni_transition(&mut self, id: &str, due: Millis) {
        let Some(eni) = self.enis.get_mut(id) else {
            return;
        };
        // A stale schedule entry (the ENI moved on since) is ignored.
        if eni.transition_due != Some(due) {
            return;
        }
        match eni.status {
            EniStatus::Attaching => {
                eni.status = EniStatus::InUse;
                eni.transition_due = None;
                self.mark(Kind::Eni, id);
            }
            EniStatus::Detaching => self.finish_detach(id),
            EniStatus::Deleting => self.remove_eni(id),
            _ => {}
        }
    }

    /// Put an ENI into a transitional status, completing it at once if the delay is zero.
    fn begin_eni_transition(&mut self, id: &str, status: EniStatus, delay_ms: u64, now: Millis) {
        let due = now.saturating_add_ms(delay_ms);
        let eni = self.enis.get_mut(id).expect("caller checked");
        eni.status = status;
        eni.transition_due = Some(due);
        self.mark(Kind::Eni, id);
        if delay_ms == 0 {
            self.complete_eni_transition(id, due);
        } else {
            self.schedule(Kind::Eni, id, due);
        }
    }

    pub fn create_network_interface(&mut self, req: CreateNetworkInterface, now: Millis) -> Result<Eni> {
        self.idempotent("CreateNetworkInterface", req, now, |r, req| {
            if req.v_switch_id.is_empty() {
                return Err(ModelError::MissingParameter("VSwitchId"));
            }
            let vsw = r
                .vswitches
                .get(&req.v_switch_id)
                .ok_or_else(|| ModelError::VSwitchNotFound(req.v_switch_id.clone()))?;
            let sgs: Vec<String> =
                match (req.security_group_id.as_deref().filter(|s| !s.is_empty()), req.security_group_ids.is_empty()) {
                    (Some(_), false) => {
                        return Err(ModelError::ParameterConflict("SecurityGroupId and SecurityGroupIds.N"));
                    }
                    (Some(one), true) => vec![one.to_string()],
                    (None, false) => req.security_group_ids.clone(),
                    (None, true) => return Err(ModelError::MissingParameter("SecurityGroupIds.N")),
                };
            r.check_security_groups(&vsw.vpc_id, &sgs)?;
            let eni_type = match req.instance_type.as_deref().unwrap_or("") {
                "" | "Secondary" => EniType::Secondary,
                "Trunk" => EniType::Trunk,
                other => {
                    return Err(ModelError::invalid("InstanceType", format!("{other:?} is not Secondary or Trunk")));
                }
            };
            let traffic_mode = match req.network_interface_traffic_mode.as_deref().unwrap_or("") {
                "" | "Standard" => "Standard",
                "HighPerformance" => "HighPerformance",
                other => {
                    return Err(ModelError::invalid(
                        "NetworkInterfaceTrafficMode",
                        format!("{other:?} is not Standard or HighPerformance"),
                    ));
                }
            };
            check_text("NetworkInterfaceName", &req.network_interface_name, 128)?;
            check_text("Description", &req.description, 256)?;
            check_tags(&req.tags)?;
            if req.secondary_private_ip_address_count.is_some() && !req.private_ip_addresses.is_empty() {
                return Err(ModelError::ParameterConflict("SecondaryPrivateIpAddressCount and PrivateIpAddress.N"));
            }
            let count = req.secondary_private_ip_address_count.unwrap_or(0);
            if req.secondary_private_ip_address_count.is_some() && !(1..=49).contains(&count) {
                return Err(ModelError::invalid("SecondaryPrivateIpAddressCount", "must be 1 to 49"));
            }
            if req.private_ip_addresses.len() > 10 {
                return Err(ModelError::invalid("PrivateIpAddress.N", "at most 10 addresses"));
            }
            let primary = req.primary_ip_address.as_deref().filter(|s| !s.is_empty()).map(parse_ip).transpose()?;
            let named: Vec<Ipv4Addr> = req.private_ip_addresses.iter().map(|s| parse_ip(s)).collect::<Result<_>>()?;
            let p4 = prefix_count("Ipv4PrefixCount", req.ipv4_prefix_count)?;
            let named_p4: Vec<Cidr> =
                req.ipv4_prefixes.iter().map(|s| parse_prefix4("Ipv4Prefix.N", s)).collect::<Result<_>>()?;
            let named_p6: Vec<Cidr6> =
                req.ipv6_prefixes.iter().map(|s| parse_prefix6("Ipv6Prefix.N", s)).collect::<Result<_>>()?;
            if named_p4.len() > 10 || named_p6.len() > 10 {
                return Err(ModelError::invalid("Ipv4Prefix.N", "at most 10 prefixes"));
            }
            if p4 > 0 && !named_p4.is_empty() {
                return Err(ModelError::ParameterConflict("Ipv4PrefixCount and Ipv4Prefix.N"));
            }
            let p4 = p4 + named_p4.len() as u32;
            if p4 > 0 && (count > 0 || !named.is_empty()) {
                return Err(ModelError::ParameterConflict("Ipv4PrefixCount and SecondaryPrivateIpAddressCount"));
            }
            let limit = r.config.limits.ips_per_unattached_eni;
            if 1 + named.len() as u32 + count + p4 > limit {
                return Err(ModelError::Ipv4CountExceeded(limit));
            }
            let named_v6: Vec<Ipv6Addr> = req.ipv6_addresses.iter().map(|s| parse_ip6(s)).collect::<Result<_>>()?;
            let v6_count = match (req.ipv6_address_count, named_v6.is_empty()) {
                (Some(_), false) => {
                    return Err(ModelError::ParameterConflict("Ipv6AddressCount and Ipv6Address.N"));
                }
                (Some(0), true) => return Err(ModelError::invalid("Ipv6AddressCount", "must be at least 1")),
                (Some(n), true) => n,
                (None, _) => 0,
            };
            let p6 = prefix_count("Ipv6PrefixCount", req.ipv6_prefix_count)?;
            if p6 > 0 && !named_p6.is_empty() {
                return Err(ModelError::ParameterConflict("Ipv6PrefixCount and Ipv6Prefix.N"));
            }
            let p6 = p6 + named_p6.len() as u32;
            if p6 > 0 && (v6_count > 0 || !named_v6.is_empty()) {
                return Err(ModelError::ParameterConflict("Ipv6PrefixCount and Ipv6AddressCount"));
            }
            let v6_total = u32::try_from(named_v6.len()).ok().and_then(|n| n.checked_add(v6_count));
            if v6_total.and_then(|n| n.checked_add(p6)).is_none_or(|n| n > limit) {
                return Err(ModelError::Ipv6CountExceeded(limit));
            }
            let mut plan = r.plan_eni_ips(&req.v_switch_id, primary, &named, count)?;
            let prefixes = NamedPrefixes { v4: &named_p4, v6: &named_p6 };
            r.plan_eni_extras(&req.v_switch_id, &mut plan, &named_v6, v6_count, prefixes, p4, p6)?;
            let id = r.insert_eni(
                NewEni {
                    eni_type,
                    v_switch_id: req.v_switch_id.clone(),
                    security_group_ids: sgs,
                    name: req.network_interface_name.clone(),
                    description: req.description.clone(),
                    tags: req.tags.clone(),
                    delete_on_release: req.delete_on_release.unwrap_or(false),
                    source_dest_check: req.source_dest_check.unwrap_or(false),
                    traffic_mode: traffic_mode.to_string(),
                    resource_group_id: req.resource_group_id.clone(),
                    status: EniStatus::Available,
                    attachment: None,
                },
                plan,
                now,
            );
            Ok(r.enis[&id].clone())
        })
    }

    pub fn attach_network_interface(&mut self, req: AttachNetworkInterface, now: Millis) -> Result<()> {
        self.advance(now);
        if req.network_interface_id.is_empty() {
            return Err(ModelError::MissingParameter("NetworkInterfaceId"));
        }
        if req.instance_id.is_empty() {
            return Err(ModelError::MissingParameter("InstanceId"));
        }
        let eni = self.enis.get(&req.network_interface_id).ok_or_else(|| not_found(&req.network_interface_id))?;
        let inst =
            self.instances.get(&req.instance_id).ok_or_else(|| ModelError::EcsNotFound(req.instance_id.clone()))?;
        let trunk_id = req.trunk_network_instance_id.as_deref().filter(|s| !s.is_empty());
        if req.network_card_index.is_some_and(|n| n != 0) {
            return Err(ModelError::invalid("NetworkCardIndex", "this instance type has one network card (index 0)"));
        }

        // Attaching again to where it already goes is a success: Terway's controller re-issues
        // Attach on every reconcile until it sees InUse.
        if let Some(att) = &eni.attachment {
            let same = att.instance_id == req.instance_id && att.trunk_network_interface_id.as_deref() == trunk_id;
            if same && matches!(eni.status, EniStatus::Attaching | EniStatus::InUse) {
                return Ok(());
            }
        }
        if eni.eni_type == EniType::Primary {
            return Err(ModelError::InvalidEniType("a primary ENI cannot be attached".into()));
        }
        if eni.status != EniStatus::Available {
            return Err(ModelError::InvalidEniState { expected: "Available", current: eni.status.as_str() });
        }
        if !matches!(inst.status, InstanceStatus::Running | InstanceStatus::Stopped) {
            return Err(ModelError::InvalidEcsState(inst.status.as_str()));
        }
        if eni.zone_id != inst.zone_id {
            return Err(ModelError::AvailabilityZoneMismatch {
                eni_zone: eni.zone_id.clone(),
                instance_zone: inst.zone_id.clone(),
            });
        }
        if eni.vpc_id != inst.vpc_id {
            return Err(ModelError::VpcMismatch(format!("ENI is in {}, instance in {}", eni.vpc_id, inst.vpc_id)));
        }
        let itype = self
            .types
            .get(&inst.instance_type)
            .ok_or_else(|| ModelError::InstanceTypeNotFound(inst.instance_type.clone()))?;
        if eni.ipv4_slots() > itype.eni_private_ip_address_quantity {
            return Err(ModelError::Ipv4CountExceeded(itype.eni_private_ip_address_quantity));
        }
        if eni.ipv6_slots() > itype.eni_ipv6_address_quantity {
            return Err(ModelError::Ipv6CountExceeded(itype.eni_ipv6_address_quantity));
        }

        let (slot, kind_after) = match trunk_id {
            Some(trunk_id) => {
                let trunk = self.enis.get(trunk_id).ok_or_else(|| not_found(trunk_id))?;
                if trunk.eni_type != EniType::Trunk {
                    return Err(ModelError::InvalidEniType(format!("{trunk_id} is not a trunk ENI")));
                }
                if trunk.instance_id() != Some(req.instance_id.as_str()) || trunk.status != EniStatus::InUse {
                    return Err(ModelError::InvalidEniState { expected: "InUse", current: trunk.status.as_str() });
                }
                if eni.eni_type != EniType::Secondary {
                    return Err(ModelError::InvalidEniType(format!(
                        "a {} ENI cannot be a trunk member",
                        eni.eni_type.as_str()
                    )));
                }
                let members: usize =
                    self.trunks_of(&req.instance_id).map(|t| self.members.get(t).map_or(0, |m| m.len())).sum();
                if members as u32 >= itype.member_eni_limit() {
                    return Err(ModelError::EniPerInstanceLimitExceeded(format!(
                        "{} carries at most {} member ENIs",
                        inst.instance_type,
                        itype.member_eni_limit()
                    )));
                }
                let used = self.members.get(trunk_id);
                let vlan = (1..=4094u32)
                    .find(|v| used.is_none_or(|m| !m.contains_key(v)))
                    .ok_or_else(|| ModelError::EniPerInstanceLimitExceeded("the trunk has no free VLAN id".into()))?;
                (vlan, EniType::Member)
            }
            None => {
                let nics = self.nics.get(&req.instance_id);
                let count = nics.map_or(0, |m| m.len()) as u32;
                if count >= itype.eni_quantity {
                    return Err(ModelError::EniPerInstanceLimitExceeded(format!(
                        "{} takes at most {} ENIs",
                        inst.instance_type, itype.eni_quantity
                    )));
                }
                if eni.eni_type == EniType::Trunk {
                    if !itype.eni_trunk_supported {
                        return Err(ModelError::InvalidEniType(format!(
                            "{} does not support trunk ENIs",
                            inst.instance_type
                        )));
                    }
                    if self.trunks_of(&req.instance_id).next().is_some() {
                        return Err(ModelError::InvalidEniType("the instance already has a trunk ENI".into()));
                    }
                }
                let index = (1..).find(|i| nics.is_none_or(|m| !m.contains_key(i))).expect("fewer than u32::MAX NICs");
                (index, eni.eni_type)
            }
        };

        let id = req.network_interface_id.clone();
        let port_id = if trunk_id.is_some() { 0 } else { self.new_port() };
        let att = Attachment {
            instance_id: req.instance_id.clone(),
            device_index: slot,
            trunk_network_interface_id: trunk_id.map(str::to_string),
            network_card_index: 0,
            port_id,
        };
        self.index_attachment(&id, &att).expect("the slot was checked free; the port is new");
        let eni = self.enis.get_mut(&id).expect("checked above");
        eni.attachment = Some(att);
        eni.eni_type = kind_after;
        let delay = self.config.delays.attach_ms;
        self.begin_eni_transition(&id, EniStatus::Attaching, delay, now);
        Ok(())
    }

    pub fn detach_network_interface(&mut self, req: DetachNetworkInterface, now: Millis) -> Result<()> {
        self.advance(now);
        if req.network_interface_id.is_empty() {
            return Err(ModelError::MissingParameter("NetworkInterfaceId"));
        }
        if req.instance_id.is_empty() {
            return Err(ModelError::MissingParameter("InstanceId"));
        }
        let eni = self.enis.get(&req.network_interface_id).ok_or_else(|| not_found(&req.network_interface_id))?;
        if !self.instances.contains_key(&req.instance_id) {
            return Err(ModelError::EcsNotFound(req.instance_id.clone()));
        }
        if eni.eni_type == EniType::Primary {
            return Err(ModelError::DetachPrimaryEniNotAllowed);
        }
        match eni.status {
            // Re-issuing a detach is allowed; detaching an ENI that is already free is a no-op
            // (unconfirmed in the cloud; success is what keeps Terway's GC simple).
            EniStatus::Detaching | EniStatus::Available => return Ok(()),
            EniStatus::InUse => {}
            other => {
                return Err(ModelError::InvalidEniState { expected: "InUse", current: other.as_str() });
            }
        }
        let att = eni.attachment.as_ref().expect("InUse ENIs are attached");
        if att.instance_id != req.instance_id {
            return Err(ModelError::invalid(
                "InstanceId",
                format!("{} is attached to {}", req.network_interface_id, att.instance_id),
            ));
        }
        if let Some(t) = req.trunk_network_instance_id.as_deref().filter(|s| !s.is_empty())
            && att.trunk_network_interface_id.as_deref() != Some(t)
        {
            return Err(ModelError::invalid(
                "TrunkNetworkInstanceId",
                format!("{} is not a member of {t}", req.network_interface_id),
            ));
        }
        if eni.eni_type == EniType::Trunk {
            let n = self.members.get(&req.network_interface_id).map_or(0, |m| m.len());
            if n > 0 {
                return Err(ModelError::InvalidEniState { expected: "InUse without members", current: "InUse" });
            }
        }
        let delay = self.config.delays.detach_ms;
        self.begin_eni_transition(&req.network_interface_id, EniStatus::Detaching, delay, now);
        Ok(())
    }

    pub fn delete_network_interface(&mut self, id: &str, now: Millis) -> Result<()> {
        self.advance(now);
        if id.is_empty() {
            return Err(ModelError::MissingParameter("NetworkInterfaceId"));
        }
        let eni = self.enis.get(id).ok_or_else(|| not_found(id))?;
        if eni.eni_type == EniType::Primary {
            return Err(ModelError::InvalidEniType("a primary ENI is deleted with its instance".into()));
        }
        match eni.status {
            EniStatus::Deleting => Ok(()),
            EniStatus::Available => {
                let delay = self.config.delays.delete_ms;
                self.begin_eni_transition(id, EniStatus::Deleting, delay, now);
                Ok(())
            }
            other => Err(ModelError::InvalidEniState { expected: "Available", current: other.as_str() }),
        }
    }

    /// DescribeNetworkInterfaces: filters AND together, values inside one list OR. Lookups by
    /// ID or private IP use the indexes, so a filtered call does not scan the region.
    pub fn describe_network_interfaces(
        &mut self,
        req: &DescribeNetworkInterfaces,
        now: Millis,
    ) -> Result<(Vec<Eni>, PageInfo)> {
        self.advance(now);
        if req.network_interface_ids.len() > 100 {
            return Err(ModelError::invalid("NetworkInterfaceId.N", "at most 100 values"));
        }
        if req.private_ip_addresses.len() > 100 {
            return Err(ModelError::invalid("PrivateIpAddress.N", "at most 100 values"));
        }
        let want_type = match req.r#type.as_deref().filter(|s| !s.is_empty()) {
            Some(t) => Some(
                EniType::parse(t).ok_or_else(|| ModelError::invalid("Type", format!("{t:?} is not an ENI type")))?,
            ),
            None => None,
        };
        let want_status = match req.status.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => Some(
                EniStatus::parse(s)
                    .ok_or_else(|| ModelError::invalid("Status", format!("{s:?} is not an ENI status")))?,
            ),
            None => None,
        };
        let ips: Vec<Ipv4Addr> = req.private_ip_addresses.iter().map(|s| parse_ip(s)).collect::<Result<_>>()?;
        if req.ipv6_addresses.len() > 100 {
            return Err(ModelError::invalid("Ipv6Address.N", "at most 100 values"));
        }
        let ips6: Vec<Ipv6Addr> = req.ipv6_addresses.iter().map(|s| parse_ip6(s)).collect::<Result<_>>()?;
        let primary_ip = req.primary_ip_address.as_deref().filter(|s| !s.is_empty()).map(parse_ip).transpose()?;

        // Narrow the candidates with an index when a filter allows it.
        let candidates: BTreeSet<&String> = if !req.network_interface_ids.is_empty() {
            req.network_interface_ids.iter().filter_map(|id| self.enis.get_key_value(id).map(|(k, _)| k)).collect()
        } else if !ips.is_empty() || primary_ip.is_some() {
            ips.iter().chain(primary_ip.iter()).filter_map(|ip| self.ip_owners.get(ip)).flatten().collect()
        } else if !ips6.is_empty() {
            ips6.iter().filter_map(|ip| self.ip6_owners.get(ip)).collect()
        } else if let Some(inst) = req.instance_id.as_deref().filter(|s| !s.is_empty()) {
            self.nics.get(inst).into_iter().flat_map(|m| m.values()).collect()
        } else {
            self.enis.keys().collect()
        };
        let some = |f: &Option<String>| f.as_deref().filter(|s| !s.is_empty()).map(str::to_string);
        let (vpc, vsw, inst, sg, name, rg) = (
            some(&req.vpc_id),
            some(&req.v_switch_id),
            some(&req.instance_id),
            some(&req.security_group_id),
            some(&req.network_interface_name),
            some(&req.resource_group_id),
        );
        let items: Vec<Eni> = candidates
            .into_iter()
            .filter_map(|id| self.enis.get(id))
            .filter(|e| vpc.as_ref().is_none_or(|v| &e.vpc_id == v))
            .filter(|e| vsw.as_ref().is_none_or(|v| &e.v_switch_id == v))
            // `InstanceId` lists the instance's own NICs: members are left out.
            .filter(|e| {
                inst.as_ref().is_none_or(|i| e.instance_id() == Some(i.as_str()) && e.eni_type != EniType::Member)
            })
            .filter(|e| want_type.is_none_or(|t| e.eni_type == t))
            .filter(|e| want_status.is_none_or(|s| e.status == s))
            .filter(|e| ips.is_empty() || e.ips().any(|ip| ips.contains(&ip)))
            .filter(|e| ips6.is_empty() || e.ipv6_addresses.iter().any(|ip| ips6.contains(ip)))
            .filter(|e| primary_ip.is_none_or(|p| e.primary_ip_address == p))
            .filter(|e| sg.as_ref().is_none_or(|g| e.security_group_ids.contains(g)))
            .filter(|e| name.as_ref().is_none_or(|n| &e.network_interface_name == n))
            .filter(|e| rg.as_ref().is_none_or(|g| &e.resource_group_id == g))
            .filter(|e| has_all_tags(&e.tags, &req.tags))
            .cloned()
            .collect();
        paginate(items, |e| &e.network_interface_id, &req.page, ENI_PAGES)
    }

    pub fn describe_network_interface_attribute(&mut self, id: &str, now: Millis) -> Result<EniAttribute> {
        self.advance(now);
        if id.is_empty() {
            return Err(ModelError::MissingParameter("NetworkInterfaceId"));
        }
        let eni = self.enis.get(id).ok_or_else(|| not_found(id))?;
        let members = self.trunk_members(id).map(|(_, e)| e.clone()).collect();
        Ok(EniAttribute { eni: eni.clone(), member_network_interface_ids: members })
    }

    /// The IPv4 limit that applies to an ENI now: the instance type's when attached, the
    /// unattached limit otherwise.
    fn ip_limit(&self, eni: &Eni) -> u32 {
        eni.instance_id()
            .and_then(|i| self.instances.get(i))
            .and_then(|i| self.types.get(&i.instance_type))
            .map_or(self.config.limits.ips_per_unattached_eni, |t| t.eni_private_ip_address_quantity)
    }

    pub fn assign_private_ip_addresses(
        &mut self,
        req: AssignPrivateIpAddresses,
        now: Millis,
    ) -> Result<AssignedPrivateIps> {
        self.idempotent("AssignPrivateIpAddresses", req, now, |r, req| {
            if req.network_interface_id.is_empty() {
                return Err(ModelError::MissingParameter("NetworkInterfaceId"));
            }
            let eni = r.enis.get(&req.network_interface_id).ok_or_else(|| not_found(&req.network_interface_id))?;
            if !matches!(eni.status, EniStatus::Available | EniStatus::InUse) {
                return Err(ModelError::InvalidEniState { expected: "Available", current: eni.status.as_str() });
            }
            let named: Vec<Ipv4Addr> = req.private_ip_addresses.iter().map(|s| parse_ip(s)).collect::<Result<_>>()?;
            let named_p4: Vec<Cidr> =
                req.ipv4_prefixes.iter().map(|s| parse_prefix4("Ipv4Prefix.N", s)).collect::<Result<_>>()?;
            let p4_count = prefix_count("Ipv4PrefixCount", req.ipv4_prefix_count)?;
            if named_p4.len() > 10 {
                return Err(ModelError::invalid("Ipv4Prefix.N", "at most 10 prefixes"));
            }
            let wants_ips = req.secondary_private_ip_address_count.is_some() || !named.is_empty();
            let wants_prefixes = p4_count > 0 || !named_p4.is_empty();
            if wants_ips && wants_prefixes {
                return Err(ModelError::ParameterConflict("PrivateIpAddress and Ipv4Prefix"));
            }
            if p4_count > 0 && !named_p4.is_empty() {
                return Err(ModelError::ParameterConflict("Ipv4PrefixCount and Ipv4Prefix.N"));
            }
            let count = match (req.secondary_private_ip_address_count, named.is_empty()) {
                (Some(_), false) => {
                    return Err(ModelError::ParameterConflict("SecondaryPrivateIpAddressCount and PrivateIpAddress.N"));
                }
                (None, true) if !wants_prefixes => {
                    return Err(ModelError::MissingParameter("SecondaryPrivateIpAddressCount"));
                }
                (Some(0), true) => {
                    return Err(ModelError::invalid("SecondaryPrivateIpAddressCount", "must be at least 1"));
                }
                (Some(n), true) => n,
                (None, _) => 0,
            };
            let limit = r.ip_limit(eni);
            if over_quota(eni.ipv4_slots(), named.len() + named_p4.len(), count.saturating_add(p4_count), limit) {
                return Err(ModelError::Ipv4CountExceeded(limit));
            }
            let vsw = eni.v_switch_id.clone();
            let ipam = r.ipam.get(&vsw).ok_or_else(|| ModelError::VSwitchNotFound(vsw.clone()))?;
            let mut wanted = check_named(ipam, &named)?;
            let picked =
                ipam.pick(count as usize, &wanted).ok_or_else(|| ModelError::VSwitchIpNotEnough(vsw.clone()))?;
            wanted.extend(picked);
            let mut blocks = check_named_blocks(ipam, &named_p4)?;
            let more = ipam
                .pick_blocks(IPV4_PREFIX_LEN, p4_count as usize, &blocks)
                .ok_or_else(|| ModelError::VSwitchIpNotEnough(vsw.clone()))?;
            blocks.extend(more);
            let id = req.network_interface_id.clone();
            for ip in &wanted {
                r.hold_ip(&vsw, &id, *ip);
            }
            r.hold_extras(&vsw, &id, &[], &blocks, &[]);
            let eni = r.enis.get_mut(&id).expect("checked above");
            eni.secondary_ips.extend(wanted.iter().copied());
            eni.ipv4_prefixes.extend(blocks.iter().copied());
            r.mark(Kind::Eni, &id);
            Ok(AssignedPrivateIps {
                network_interface_id: id,
                private_ip_addresses: wanted.iter().map(|ip| ip.to_string()).collect(),
                ipv4_prefixes: blocks.iter().map(|p| p.to_string()).collect(),
            })
        })
    }

    /// Unassign secondary addresses or IPv4 prefixes. An address that is not on the ENI, and the
    /// primary address, answer `InvalidIp.IpUnassigned` (Terway treats that as success).
    pub fn unassign_private_ip_addresses(&mut self, req: UnassignPrivateIpAddresses, now: Millis) -> Result<()> {
        self.advance(now);
        if req.network_interface_id.is_empty() {
            return Err(ModelError::MissingParameter("NetworkInterfaceId"));
        }
        let eni = self.enis.get(&req.network_interface_id).ok_or_else(|| not_found(&req.network_interface_id))?;
        if req.private_ip_addresses.is_empty() && req.ipv4_prefixes.is_empty() {
            return Err(ModelError::MissingParameter("PrivateIpAddress.N"));
        }
        if !req.private_ip_addresses.is_empty() && !req.ipv4_prefixes.is_empty() {
            return Err(ModelError::ParameterConflict("PrivateIpAddress.N and Ipv4Prefix.N"));
        }
        if !matches!(eni.status, EniStatus::Available | EniStatus::InUse) {
            return Err(ModelError::InvalidEniState { expected: "Available", current: eni.status.as_str() });
        }
        let doomed = held_ones(&req.private_ip_addresses, &eni.secondary_ips, parse_ip)?;
        let doomed_p4 = held_ones(&req.ipv4_prefixes, &eni.ipv4_prefixes, |s| parse_prefix4("Ipv4Prefix.N", s))?;
        let (id, vsw) = (eni.network_interface_id.clone(), eni.v_switch_id.clone());
        for ip in &doomed {
            self.free_ip(&vsw, &id, *ip);
        }
        self.free_extras(&vsw, &[], &doomed_p4, &[]);
        let eni = self.enis.get_mut(&id).expect("checked above");
        eni.secondary_ips.retain(|ip| !doomed.contains(ip));
        eni.ipv4_prefixes.retain(|p| !doomed_p4.contains(p));
        self.mark(Kind::Eni, &id);
        Ok(())
    }

    /// The IPv6 limit that applies to an ENI now: the instance type's when attached, the
    /// unattached limit otherwise.
    fn ipv6_limit(&self, eni: &Eni) -> u32 {
        eni.instance_id()
            .and_then(|i| self.instances.get(i))
            .and_then(|i| self.types.get(&i.instance_type))
            .map_or(self.config.limits.ips_per_unattached_eni, |t| t.eni_ipv6_address_quantity)
    }

    /// AssignIpv6Addresses: addresses (`Ipv6AddressCount` | `Ipv6Address.N`) or /80 prefixes
    /// (`Ipv6PrefixCount` | `Ipv6Prefix.N`) from the ENI's vSwitch /64.
    pub fn assign_ipv6_addresses(&mut self, req: AssignIpv6Addresses, now: Millis) -> Result<AssignedIpv6> {
        self.idempotent("AssignIpv6Addresses", req, now, |r, req| {
            if req.network_interface_id.is_empty() {
                return Err(ModelError::MissingParameter("NetworkInterfaceId"));
            }
            let eni = r.enis.get(&req.network_interface_id).ok_or_else(|| not_found(&req.network_interface_id))?;
            if !matches!(eni.status, EniStatus::Available | EniStatus::InUse) {
                return Err(ModelError::InvalidEniState { expected: "Available", current: eni.status.as_str() });
            }
            let named: Vec<Ipv6Addr> = req.ipv6_addresses.iter().map(|s| parse_ip6(s)).collect::<Result<_>>()?;
            let named_p6: Vec<Cidr6> =
                req.ipv6_prefixes.iter().map(|s| parse_prefix6("Ipv6Prefix.N", s)).collect::<Result<_>>()?;
            let p6_count = prefix_count("Ipv6PrefixCount", req.ipv6_prefix_count)?;
            if named_p6.len() > 10 {
                return Err(ModelError::invalid("Ipv6Prefix.N", "at most 10 prefixes"));
            }
            let wants_ips = req.ipv6_address_count.is_some() || !named.is_empty();
            let wants_prefixes = p6_count > 0 || !named_p6.is_empty();
            if wants_ips && wants_prefixes {
                return Err(ModelError::ParameterConflict("Ipv6Address and Ipv6Prefix"));
            }
            if p6_count > 0 && !named_p6.is_empty() {
                return Err(ModelError::ParameterConflict("Ipv6PrefixCount and Ipv6Prefix.N"));
            }
            let count = match (req.ipv6_address_count, named.is_empty()) {
                (Some(_), false) => return Err(ModelError::ParameterConflict("Ipv6AddressCount and Ipv6Address.N")),
                (None, true) if !wants_prefixes => return Err(ModelError::MissingParameter("Ipv6AddressCount")),
                (Some(0), true) => return Err(ModelError::invalid("Ipv6AddressCount", "must be at least 1")),
                (Some(n), true) => n,
                (None, _) => 0,
            };
            let limit = r.ipv6_limit(eni);
            if over_quota(eni.ipv6_slots(), named.len() + named_p6.len(), count.saturating_add(p6_count), limit) {
                return Err(ModelError::Ipv6CountExceeded(limit));
            }
            let vsw = eni.v_switch_id.clone();
            let ipam6 = r.ipam6_of(&vsw)?;
            let mut wanted = check_named_v6(ipam6, &named)?;
            let picked =
                ipam6.pick(count as usize, &wanted).ok_or_else(|| ModelError::VSwitchIpNotEnough(vsw.clone()))?;
            wanted.extend(picked);
            let mut prefixes = Vec::new();
            for p in named_p6 {
                if !ipam6.cidr().covers(&p) {
                    return Err(ModelError::VSwitchIpInvalid(p.to_string()));
                }
                if !ipam6.is_prefix_free(p) || prefixes.contains(&p) {
                    return Err(ModelError::PrivateIpDuplicated(p.to_string()));
                }
                prefixes.push(p);
            }
            let more = ipam6
                .pick_prefixes(p6_count as usize, &prefixes)
                .ok_or_else(|| ModelError::VSwitchIpNotEnough(vsw.clone()))?;
            prefixes.extend(more);
            let id = req.network_interface_id.clone();
            r.hold_extras(&vsw, &id, &wanted, &[], &prefixes);
            let eni = r.enis.get_mut(&id).expect("checked above");
            eni.ipv6_addresses.extend(wanted.iter().copied());
            eni.ipv6_prefixes.extend(prefixes.iter().copied());
            r.mark(Kind::Eni, &id);
            Ok(AssignedIpv6 {
                network_interface_id: id,
                ipv6_addresses: wanted.iter().map(|ip| ip.to_string()).collect(),
                ipv6_prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            })
        })
    }

    /// UnassignIpv6Addresses: an address or prefix the ENI does not hold answers
    /// `InvalidIp.IpUnassigned`, as for IPv4, and nothing is released.
    pub fn unassign_ipv6_addresses(&mut self, req: UnassignIpv6Addresses, now: Millis) -> Result<()> {
        self.advance(now);
        if req.network_interface_id.is_empty() {
            return Err(ModelError::MissingParameter("NetworkInterfaceId"));
        }
        let eni = self.enis.get(&req.network_interface_id).ok_or_else(|| not_found(&req.network_interface_id))?;
        if req.ipv6_addresses.is_empty() && req.ipv6_prefixes.is_empty() {
            return Err(ModelError::MissingParameter("Ipv6Address.N"));
        }
        if !matches!(eni.status, EniStatus::Available | EniStatus::InUse) {
            return Err(ModelError::InvalidEniState { expected: "Available", current: eni.status.as_str() });
        }
        let doomed = held_ones(&req.ipv6_addresses, &eni.ipv6_addresses, parse_ip6)?;
        let doomed_p6 = held_ones(&req.ipv6_prefixes, &eni.ipv6_prefixes, |s| parse_prefix6("Ipv6Prefix.N", s))?;
        let (id, vsw) = (eni.network_interface_id.clone(), eni.v_switch_id.clone());
        self.free_extras(&vsw, &doomed, &[], &doomed_p6);
        let eni = self.enis.get_mut(&id).expect("checked above");
        eni.ipv6_addresses.retain(|ip| !doomed.contains(ip));
        eni.ipv6_prefixes.retain(|p| !doomed_p6.contains(p));
        self.mark(Kind::Eni, &id);
        Ok(())
    }

    pub fn modify_network_interface_attribute(
        &mut self,
        req: ModifyNetworkInterfaceAttribute,
        now: Millis,
    ) -> Result<()> {
        self.advance(now);
        if req.network_interface_id.is_empty() {
            return Err(ModelError::MissingParameter("NetworkInterfaceId"));
        }
        let eni = self.enis.get(&req.network_interface_id).ok_or_else(|| not_found(&req.network_interface_id))?;
        let touches_more =
            !req.security_group_ids.is_empty() || req.delete_on_release.is_some() || req.source_dest_check.is_some();
        if eni.eni_type == EniType::Primary && touches_more {
            return Err(ModelError::PrimaryEniOnlyNameAndDescription);
        }
        if !req.security_group_ids.is_empty() {
            self.check_security_groups(&eni.vpc_id, &req.security_group_ids)?;
        }
        if let Some(n) = &req.network_interface_name {
            check_text("NetworkInterfaceName", n, 128)?;
        }
        if let Some(d) = &req.description {
            check_text("Description", d, 256)?;
        }
        let id = req.network_interface_id.clone();
        if !req.security_group_ids.is_empty() {
            let old = eni.security_group_ids.clone();
            self.leave_groups(&id, &old);
            self.join_groups(&id, &req.security_group_ids);
        }
        let eni = self.enis.get_mut(&id).expect("checked above");
        if !req.security_group_ids.is_empty() {
            eni.security_group_ids = req.security_group_ids;
        }
        if let Some(n) = req.network_interface_name {
            eni.network_interface_name = n;
        }
        if let Some(d) = req.description {
            eni.description = d;
        }
        if let Some(b) = req.delete_on_release {
            eni.delete_on_release = b;
        }
        if let Some(b) = req.source_dest_check {
            eni.source_dest_check = b;
        }
        self.mark(Kind::Eni, &id);
        Ok(())
    }
}

/// The addresses a caller named for one ENI, in order, once each checked: inside the vSwitch's
/// allocatable range, not held by anyone, and not named twice.
fn check_named<'a>(ipam: &Ipam, ips: impl IntoIterator<Item = &'a Ipv4Addr>) -> Result<Vec<Ipv4Addr>> {
    let mut wanted: Vec<Ipv4Addr> = Vec::new();
    for &ip in ips {
        if !ipam.is_allocatable(ip) {
            return Err(ModelError::VSwitchIpInvalid(ip.to_string()));
        }
        if ipam.is_used(ip) {
            return Err(ModelError::PrivateIpDuplicated(ip.to_string()));
        }
        if wanted.contains(&ip) {
            return Err(ModelError::IpRepeated(ip.to_string()));
        }
        wanted.push(ip);
    }
    Ok(wanted)
}

/// Whether `held` slots plus `named` and `counted` new ones pass `limit` (an overflow does).
fn over_quota(held: u32, named: usize, counted: u32, limit: u32) -> bool {
    let after = u32::try_from(named).ok().and_then(|n| n.checked_add(counted)).and_then(|n| held.checked_add(n));
    after.is_none_or(|after| after > limit)
}

/// What an unassign names, parsed: each held by the ENI (`held`; the primary address is not
/// among them) and named once. Otherwise `InvalidIp.IpUnassigned` / `InvalidIp.IpRepeated`, and
/// nothing is released.
fn held_ones<T: PartialEq + Copy>(named: &[String], held: &[T], parse: impl Fn(&str) -> Result<T>) -> Result<Vec<T>> {
    let mut out: Vec<T> = Vec::new();
    for s in named {
        let v = parse(s)?;
        if !held.contains(&v) {
            return Err(ModelError::IpUnassigned(s.clone()));
        }
        if out.contains(&v) {
            return Err(ModelError::IpRepeated(s.clone()));
        }
        out.push(v);
    }
    Ok(out)
}

/// The IPv6 addresses a caller named, checked as [`check_named`] checks IPv4 ones.
fn check_named_v6(ipam: &Ipam6, ips: &[Ipv6Addr]) -> Result<Vec<Ipv6Addr>> {
    let mut wanted: Vec<Ipv6Addr> = Vec::new();
    for &ip in ips {
        if !ipam.is_allocatable(ip) {
            return Err(ModelError::VSwitchIpInvalid(ip.to_string()));
        }
        if ipam.is_used(ip) {
            return Err(ModelError::PrivateIpDuplicated(ip.to_string()));
        }
        if wanted.contains(&ip) {
            return Err(ModelError::IpRepeated(ip.to_string()));
        }
        wanted.push(ip);
    }
    Ok(wanted)
}

/// The IPv4 prefixes a caller named: each free in the vSwitch and named once.
fn check_named_blocks(ipam: &Ipam, blocks: &[Cidr]) -> Result<Vec<Cidr>> {
    let mut wanted: Vec<Cidr> = Vec::new();
    for &b in blocks {
        if !ipam.cidr().covers(&b) {
            return Err(ModelError::VSwitchIpInvalid(b.to_string()));
        }
        if !ipam.is_block_free(b) {
            return Err(ModelError::PrivateIpDuplicated(b.to_string()));
        }
        if wanted.contains(&b) {
            return Err(ModelError::IpRepeated(b.to_string()));
        }
        wanted.push(b);
    }
    Ok(wanted)
}

/// The /80 an IPv6 address lies in (the block a prefix may not take).
fn v6_block(ip: Ipv6Addr) -> Option<Cidr6> {
    Cidr6::containing(ip, IPV6_PREFIX_LEN)
}

/// A prefix count: absent is 0; given, it is 1–10 (the API reference's range).
fn prefix_count(param: &'static str, n: Option<u32>) -> Result<u32> {
    match n {
        None => Ok(0),
        Some(n @ 1..=10) => Ok(n),
        Some(_) => Err(ModelError::invalid(param, "must be 1 to 10")),
    }
}

fn parse_ip6(s: &str) -> Result<Ipv6Addr> {
    s.trim().parse().map_err(|_| ModelError::InvalidPrivateIpMalformed(s.to_string()))
}

/// An IPv4 prefix by name: a /28, written with its network address.
fn parse_prefix4(param: &'static str, s: &str) -> Result<Cidr> {
    let p: Cidr = s.parse().map_err(|_| ModelError::invalid(param, format!("{s:?} is not a CIDR block")))?;
    if p.prefix() != IPV4_PREFIX_LEN {
        return Err(ModelError::invalid(param, format!("{s} is not a /{IPV4_PREFIX_LEN}")));
    }
    Ok(p)
}

/// An IPv6 prefix by name: a /80, written with its network address.
fn parse_prefix6(param: &'static str, s: &str) -> Result<Cidr6> {
    let p: Cidr6 = s.parse().map_err(|_| ModelError::invalid(param, format!("{s:?} is not a CIDR block")))?;
    if p.prefix() != IPV6_PREFIX_LEN {
        return Err(ModelError::invalid(param, format!("{s} is not a /{IPV6_PREFIX_LEN}")));
    }
    Ok(p)
}
