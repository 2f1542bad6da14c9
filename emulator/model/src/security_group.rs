//! Security groups (ECS `2014-05-26`): CreateSecurityGroup, DeleteSecurityGroup,
//! DescribeSecurityGroups, DescribeSecurityGroupAttribute, AuthorizeSecurityGroup(Egress),
//! RevokeSecurityGroup(Egress), ModifySecurityGroupPolicy.
//!
//! This module stores and validates rules; the data plane evaluates them (reference §8.2). Rule
//! facts kept here: protocols `TCP/UDP/ICMP/GRE/ALL` (case-insensitive in, upper-case out); a
//! port range `start/end` for TCP and UDP and `-1/-1` for the others; priority 1–100, 1 highest,
//! default 1; policy `accept` (default) or `drop`; a peer CIDR or a peer group (the CIDR wins if
//! both are given); adding a rule identical to an existing one succeeds without a duplicate.
//! Basic (`normal`) groups have an InnerAccessPolicy (default Accept); enterprise groups are
//! always isolated inside, cannot name groups as peers and cannot be named as peers.
//!
//! Revoking a rule that does not exist succeeds and changes nothing (revoke is idempotent by
//! content); revoking by an unknown `SecurityGroupRuleId` is `InvalidSecurityGroupRuleId.NotFound`.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::ids::IdKind;
use crate::net::{Cidr, Cidr6, parse_peer_cidr, parse_peer_cidr6};
use crate::paging::{PageBounds, PageInfo, PageRequest, paginate};
use crate::region::{Kind, Region, check_tags, check_text, has_all_tags};
use crate::time::Millis;
use crate::{Result, Tag};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SecurityGroupType {
    /// A basic security group (`normal` on the wire).
    Normal,
    Enterprise,
}

impl SecurityGroupType {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityGroupType::Normal => "normal",
            SecurityGroupType::Enterprise => "enterprise",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IpProtocol {
    Tcp,
    Udp,
    Icmp,
    Gre,
    /// ICMPv6: rules with an IPv6 peer only.
    Icmpv6,
    All,
}

impl IpProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            IpProtocol::Tcp => "TCP",
            IpProtocol::Udp => "UDP",
            IpProtocol::Icmp => "ICMP",
            IpProtocol::Gre => "GRE",
            IpProtocol::Icmpv6 => "ICMPv6",
            IpProtocol::All => "ALL",
        }
    }

    fn parse(s: &str) -> Result<IpProtocol> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Ok(IpProtocol::Tcp),
            "UDP" => Ok(IpProtocol::Udp),
            "ICMP" => Ok(IpProtocol::Icmp),
            "GRE" => Ok(IpProtocol::Gre),
            "ICMPV6" => Ok(IpProtocol::Icmpv6),
            "ALL" => Ok(IpProtocol::All),
            _ => Err(ModelError::InvalidIpProtocol(s.to_string())),
        }
    }

    fn has_ports(self) -> bool {
        matches!(self, IpProtocol::Tcp | IpProtocol::Udp)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Policy {
    Accept,
    Drop,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Accept => "Accept",
            Policy::Drop => "Drop",
        }
    }
}

/// `start/end`; `None` is the cloud's `-1/-1` (any).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortRange {
    pub from: u16,
    pub to: u16,
}

pub fn port_range_str(r: Option<PortRange>) -> String {
    match r {
        Some(r) => format!("{}/{}", r.from, r.to),
        None => "-1/-1".to_string(),
    }
}

/// A rule's `PortRange` as the model stores and renders it ("80/80", or "-1/-1" for protocols
/// without ports), or the error AuthorizeSecurityGroup would give: for callers that check a
/// rule before sending it, or compare it with the stored one.
pub fn canonical_port_range(protocol: &str, ports: &str) -> Result<String> {
    Ok(port_range_str(parse_port_range(ports, IpProtocol::parse(protocol)?)?))
}

fn parse_port_range(s: &str, protocol: IpProtocol) -> Result<Option<PortRange>> {
    let bad = || ModelError::InvalidPortRange(s.to_string());
    let s = s.trim();
    if s.is_empty() || s == "-1/-1" {
        return if protocol.has_ports() { Err(bad()) } else { Ok(None) };
    }
    if !protocol.has_ports() {
        return Err(bad());
    }
    let (a, b) = s.split_once('/').ok_or_else(bad)?;
    let from: u16 = a.parse().map_err(|_| bad())?;
    let to: u16 = b.parse().map_err(|_| bad())?;
    if from == 0 || from > to {
        return Err(bad());
    }
    Ok(Some(PortRange { from, to }))
}

/// A stored rule. On an ingress rule the source is the peer and the destination the ENI's own
/// side; on an egress rule it is the other way round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SgRule {
    pub security_group_rule_id: String,
    pub direction: Direction,
    pub ip_protocol: IpProtocol,
    pub port_range: Option<PortRange>,
    pub source_port_range: Option<PortRange>,
    pub source_cidr_ip: Option<Cidr>,
    pub source_group_id: Option<String>,
    pub dest_cidr_ip: Option<Cidr>,
    pub dest_group_id: Option<String>,
    /// An IPv6 peer (`Ipv6SourceCidrIp` / `Ipv6DestCidrIp`): such a rule never matches IPv4.
    #[serde(default)]
    pub ipv6_source_cidr_ip: Option<Cidr6>,
    #[serde(default)]
    pub ipv6_dest_cidr_ip: Option<Cidr6>,
    pub policy: Policy,
    pub priority: u8,
    pub nic_type: String,
    pub description: String,
    pub create_time: Millis,
}

impl SgRule {
    /// What makes two rules "the same rule" for the cloud's no-duplicates behaviour.
    fn same_as(&self, o: &SgRule) -> bool {
        (
            self.direction,
            self.ip_protocol,
            self.port_range,
            self.source_port_range,
            &self.source_cidr_ip,
            &self.source_group_id,
        ) == (o.direction, o.ip_protocol, o.port_range, o.source_port_range, &o.source_cidr_ip, &o.source_group_id)
            && (&self.dest_cidr_ip, &self.dest_group_id, self.policy, self.priority)
                == (&o.dest_cidr_ip, &o.dest_group_id, o.policy, o.priority)
            && (self.ipv6_source_cidr_ip, self.ipv6_dest_cidr_ip) == (o.ipv6_source_cidr_ip, o.ipv6_dest_cidr_ip)
    }

    /// Whether the rule is about IPv6 traffic (it names an IPv6 peer or ICMPv6).
    pub fn is_ipv6(&self) -> bool {
        self.ipv6_source_cidr_ip.is_some() || self.ipv6_dest_cidr_ip.is_some() || self.ip_protocol == IpProtocol::Icmpv6
    }

    /// The peer group of the rule (source on ingress, destination on egress), if it has one.
    pub fn peer_group(&self) -> Option<&str> {
        match self.direction {
            Direction::Ingress => self.source_group_id.as_deref(),
            Direction::Egress => self.dest_group_id.as_deref(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecurityGroup {
    pub security_group_id: String,
    pub vpc_id: String,
    pub security_group_name: String,
    pub description: String,
    pub security_group_type: SecurityGroupType,
    /// Basic groups only: members reach each other whatever the rules say.
    pub inner_access_accept: bool,
    pub rules: Vec<SgRule>,
    pub resource_group_id: String,
    pub tags: Vec<Tag>,
    pub creation_time: Millis,
}

/// One `Permissions.N` entry (or the legacy flat parameters), as strings the way they arrive.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionInput {
    pub ip_protocol: String,
    pub port_range: String,
    pub source_port_range: String,
    pub source_cidr_ip: String,
    pub source_group_id: String,
    pub dest_cidr_ip: String,
    pub dest_group_id: String,
    pub policy: String,
    pub priority: String,
    pub nic_type: String,
    pub description: String,
    pub ipv6_source_cidr_ip: String,
    pub ipv6_dest_cidr_ip: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSecurityGroup {
    pub vpc_id: String,
    pub security_group_name: String,
    pub description: String,
    /// `normal` (default) or `enterprise`.
    pub security_group_type: String,
    pub resource_group_id: String,
    pub tags: Vec<Tag>,
    pub client_token: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizeSecurityGroup {
    pub security_group_id: String,
    pub permissions: Vec<PermissionInput>,
    pub client_token: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeSecurityGroup {
    pub security_group_id: String,
    pub security_group_rule_ids: Vec<String>,
    pub permissions: Vec<PermissionInput>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeSecurityGroups {
    pub vpc_id: Option<String>,
    pub security_group_ids: Vec<String>,
    pub security_group_name: Option<String>,
    pub security_group_type: Option<String>,
    pub network_interface_id: Option<String>,
    pub tags: Vec<Tag>,
    pub page: PageRequest,
}

/// A group with the counts Describe shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecurityGroupView {
    pub group: SecurityGroup,
    /// ENIs in the group (the cloud's `EcsCount` counts instances; for ENI-level groups the
    /// ENI count is what matters).
    pub ecs_count: u32,
}

const SG_PAGES: PageBounds = PageBounds { default_size: 10, max_page_size: 100, min_results: 10, max_results: 100 };

impl Region {
    pub fn create_security_group(&mut self, req: CreateSecurityGroup, now: Millis) -> Result<SecurityGroup> {
        self.idempotent("CreateSecurityGroup", req, now, |r, req| {
            if req.vpc_id.is_empty() {
                return Err(ModelError::MissingParameter("VpcId"));
            }
            if !r.vpcs.contains_key(&req.vpc_id) {
                return Err(ModelError::VpcNotFound(req.vpc_id.clone()));
            }
            let kind = match req.security_group_type.as_str() {
                "" | "normal" => SecurityGroupType::Normal,
                "enterprise" => SecurityGroupType::Enterprise,
                other => {
                    return Err(ModelError::invalid(
                        "SecurityGroupType",
                        format!("{other:?} is not normal or enterprise"),
                    ));
                }
            };
            check_text("SecurityGroupName", &req.security_group_name, 128)?;
            check_tags(&req.tags)?;
            let sg = SecurityGroup {
                security_group_id: r.new_id(IdKind::SecurityGroup),
                vpc_id: req.vpc_id,
                security_group_name: req.security_group_name,
                description: req.description,
                security_group_type: kind,
                inner_access_accept: kind == SecurityGroupType::Normal,
                rules: Vec::new(),
                resource_group_id: req.resource_group_id,
                tags: req.tags,
                creation_time: now,
            };
            r.sgs.insert(sg.security_group_id.clone(), sg.clone());
            r.mark(Kind::SecurityGroup, &sg.security_group_id);
            Ok(sg)
        })
    }

    pub fn delete_security_group(&mut self, id: &str, now: Millis) -> Result<()> {
        self.advance(now);
        if !self.sgs.contains_key(id) {
            return Err(ModelError::SecurityGroupNotFound(id.to_string()));
        }
        if self.sg_members.get(id).is_some_and(|m| !m.is_empty()) {
            return Err(ModelError::DependencyViolation(
                "There is still instance(s) in the specified security group.".into(),
            ));
        }
        if let Some(other) = self
            .sgs
            .values()
            .find(|g| g.security_group_id != id && g.rules.iter().any(|rl| rl.peer_group() == Some(id)))
        {
            return Err(ModelError::DependencyViolation(format!(
                "the security group is referenced by a rule of {}",
                other.security_group_id
            )));
        }
        self.sgs.remove(id);
        self.mark(Kind::SecurityGroup, id);
        Ok(())
    }

    pub fn security_group(&self, id: &str) -> Option<&SecurityGroup> {
        self.sgs.get(id)
    }

    pub fn security_groups(&self) -> impl Iterator<Item = &SecurityGroup> {
        self.sgs.values()
    }

    /// ENIs that are members of a group (for group-reference rules and DescribeSecurityGroups).
    pub fn security_group_members(&self, id: &str) -> impl Iterator<Item = &String> {
        self.sg_members.get(id).into_iter().flatten()
    }

    pub fn describe_security_groups(
        &mut self,
        req: &DescribeSecurityGroups,
        now: Millis,
    ) -> Result<(Vec<SecurityGroupView>, PageInfo)> {
        self.advance(now);
        let by_eni: Option<HashSet<&String>> = match &req.network_interface_id {
            Some(eni) => Some(self.enis.get(eni).map(|e| e.security_group_ids.iter().collect()).unwrap_or_default()),
            None => None,
        };
        let items: Vec<SecurityGroupView> = self
            .sgs
            .values()
            .filter(|g| req.vpc_id.as_ref().is_none_or(|v| &g.vpc_id == v))
            .filter(|g| req.security_group_ids.is_empty() || req.security_group_ids.contains(&g.security_group_id))
            .filter(|g| req.security_group_name.as_ref().is_none_or(|n| &g.security_group_name == n))
            .filter(|g| req.security_group_type.as_ref().is_none_or(|t| g.security_group_type.as_str() == t))
            .filter(|g| by_eni.as_ref().is_none_or(|set| set.contains(&g.security_group_id)))
            .filter(|g| has_all_tags(&g.tags, &req.tags))
            .map(|g| SecurityGroupView {
                group: g.clone(),
                ecs_count: self.sg_members.get(&g.security_group_id).map_or(0, |m| m.len() as u32),
            })
            .collect();
        paginate(items, |g| &g.group.security_group_id, &req.page, SG_PAGES)
    }

    pub fn describe_security_group_attribute(
        &mut self,
        id: &str,
        direction: Option<&str>,
        now: Millis,
    ) -> Result<(SecurityGroup, Vec<SgRule>)> {
        self.advance(now);
        let sg = self.sgs.get(id).ok_or_else(|| ModelError::SecurityGroupNotFound(id.to_string()))?;
        let want = match direction.unwrap_or("all") {
            "" | "all" => None,
            "ingress" => Some(Direction::Ingress),
            "egress" => Some(Direction::Egress),
            other => {
                return Err(ModelError::invalid("Direction", format!("{other:?} is not all, ingress or egress")));
            }
        };
        let rules = sg.rules.iter().filter(|r| want.is_none_or(|d| r.direction == d)).cloned().collect();
        Ok((sg.clone(), rules))
    }

    /// Turn one permission into a rule of `sg`, validating every field.
    fn build_rule(&self, sg: &SecurityGroup, direction: Direction, p: &PermissionInput, now: Millis) -> Result<SgRule> {
        if p.ip_protocol.is_empty() {
            return Err(ModelError::MissingParameter("IpProtocol"));
        }
        let ip_protocol = IpProtocol::parse(&p.ip_protocol)?;
        if ip_protocol.has_ports() && p.port_range.is_empty() {
            return Err(ModelError::MissingParameter("PortRange"));
        }
        let port_range = parse_port_range(&p.port_range, ip_protocol)?;
        let source_port_range =
            if p.source_port_range.is_empty() { None } else { parse_port_range(&p.source_port_range, ip_protocol)? };
        let policy = match p.policy.to_ascii_lowercase().as_str() {
            "" | "accept" => Policy::Accept,
            "drop" => Policy::Drop,
            _ => return Err(ModelError::InvalidPolicy(p.policy.clone())),
        };
        let priority = if p.priority.is_empty() {
            1
        } else {
            match p.priority.trim().parse::<u8>() {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => return Err(ModelError::InvalidPriority(p.priority.clone())),
            }
        };
        match p.nic_type.as_str() {
            "" | "intranet" => {}
            other => return Err(ModelError::InvalidNicType(other.to_string())),
        }
        if p.description.chars().count() > 512 {
            return Err(ModelError::invalid("Description", "at most 512 characters"));
        }
        let cidr = |s: &str, err: fn(String) -> ModelError| -> Result<Option<Cidr>> {
            if s.is_empty() { Ok(None) } else { parse_peer_cidr(s).map(Some).ok_or_else(|| err(s.to_string())) }
        };
        let source_cidr_ip = cidr(&p.source_cidr_ip, ModelError::InvalidSourceCidrIp)?;
        let dest_cidr_ip = cidr(&p.dest_cidr_ip, ModelError::InvalidDestCidrIp)?;
        let cidr6 = |param: &'static str, s: &str| -> Result<Option<Cidr6>> {
            if s.is_empty() {
                return Ok(None);
            }
            parse_peer_cidr6(s)
                .map(Some)
                .ok_or_else(|| ModelError::invalid(param, format!("{s:?} is not an IPv6 address or CIDR block")))
        };
        let ipv6_source_cidr_ip = cidr6("Ipv6SourceCidrIp", &p.ipv6_source_cidr_ip)?;
        let ipv6_dest_cidr_ip = cidr6("Ipv6DestCidrIp", &p.ipv6_dest_cidr_ip)?;
        // One family per rule: an IPv4 and an IPv6 CIDR on the same side are exclusive.
        if source_cidr_ip.is_some() && ipv6_source_cidr_ip.is_some() {
            return Err(ModelError::ParameterConflict("SourceCidrIp and Ipv6SourceCidrIp"));
        }
        if dest_cidr_ip.is_some() && ipv6_dest_cidr_ip.is_some() {
            return Err(ModelError::ParameterConflict("DestCidrIp and Ipv6DestCidrIp"));
        }
        let v4 = source_cidr_ip.is_some() || dest_cidr_ip.is_some();
        let v6 = ipv6_source_cidr_ip.is_some() || ipv6_dest_cidr_ip.is_some();
        if v4 && v6 {
            return Err(ModelError::ParameterConflict("an IPv4 and an IPv6 CIDR in one rule"));
        }
        if ip_protocol == IpProtocol::Icmpv6 && !v6 {
            return Err(ModelError::invalid("IpProtocol", "ICMPv6 rules name an IPv6 peer"));
        }
        if ip_protocol == IpProtocol::Icmp && v6 {
            return Err(ModelError::invalid("IpProtocol", "ICMP is IPv4; an IPv6 rule uses ICMPv6"));
        }
        let group = |s: &str| -> Result<Option<String>> {
            if s.is_empty() {
                return Ok(None);
            }
            let peer = self.sgs.get(s).ok_or_else(|| ModelError::SourceGroupNotFound(s.to_string()))?;
            if peer.vpc_id != sg.vpc_id {
                return Err(ModelError::VpcMismatch(format!("group {s} is in another VPC")));
            }
            if sg.security_group_type == SecurityGroupType::Enterprise
                || peer.security_group_type == SecurityGroupType::Enterprise
            {
                return Err(ModelError::SecurityGroupTypeNotSupported("enterprise".into()));
            }
            Ok(Some(s.to_string()))
        };
        let source_group_id = group(&p.source_group_id)?;
        let dest_group_id = group(&p.dest_group_id)?;
        // The peer side must be named: a CIDR or a group.
        match direction {
            Direction::Ingress
                if source_cidr_ip.is_none() && ipv6_source_cidr_ip.is_none() && source_group_id.is_none() =>
            {
                return Err(ModelError::MissingParameter("SourceCidrIp"));
            }
            Direction::Egress if dest_cidr_ip.is_none() && ipv6_dest_cidr_ip.is_none() && dest_group_id.is_none() => {
                return Err(ModelError::MissingParameter("DestCidrIp"));
            }
            _ => {}
        }
        Ok(SgRule {
            security_group_rule_id: String::new(),
            direction,
            ip_protocol,
            port_range,
            source_port_range,
            source_cidr_ip,
            source_group_id,
            dest_cidr_ip,
            dest_group_id,
            ipv6_source_cidr_ip,
            ipv6_dest_cidr_ip,
            policy,
            priority,
            nic_type: "intranet".into(),
            description: p.description.clone(),
            create_time: now,
        })
    }

    /// AuthorizeSecurityGroup (ingress) and AuthorizeSecurityGroupEgress. Every permission is
    /// validated before any is added; duplicates of existing rules are skipped.
    pub fn authorize_security_group(
        &mut self,
        direction: Direction,
        req: AuthorizeSecurityGroup,
        now: Millis,
    ) -> Result<()> {
        let action = match direction {
            Direction::Ingress => "AuthorizeSecurityGroup",
            Direction::Egress => "AuthorizeSecurityGroupEgress",
        };
        self.idempotent(action, req, now, |r, req| {
            let sg = r
                .sgs
                .get(&req.security_group_id)
                .ok_or_else(|| ModelError::SecurityGroupNotFound(req.security_group_id.clone()))?;
            if req.permissions.is_empty() {
                return Err(ModelError::MissingParameter("Permissions"));
            }
            if req.permissions.len() > 100 {
                return Err(ModelError::invalid("Permissions.N", "at most 100 permissions per call"));
            }
            let mut fresh: Vec<SgRule> = Vec::new();
            for p in &req.permissions {
                let rule = r.build_rule(sg, direction, p, now)?;
                if !sg.rules.iter().chain(fresh.iter()).any(|x| x.same_as(&rule)) {
                    fresh.push(rule);
                }
            }
            if sg.rules.len() + fresh.len() > r.config.limits.rules_per_security_group {
                return Err(ModelError::AuthorizationLimitExceed(req.security_group_id.clone()));
            }
            if fresh.is_empty() {
                return Ok(());
            }
            for rule in &mut fresh {
                rule.security_group_rule_id = r.new_id(IdKind::SecurityGroupRule);
            }
            let sg = r.sgs.get_mut(&req.security_group_id).expect("checked above");
            sg.rules.extend(fresh);
            r.mark(Kind::SecurityGroup, &req.security_group_id);
            Ok(())
        })
    }

    /// RevokeSecurityGroup (ingress) and RevokeSecurityGroupEgress, by rule ID or by content.
    pub fn revoke_security_group(&mut self, direction: Direction, req: RevokeSecurityGroup, now: Millis) -> Result<()> {
        self.advance(now);
        let sg = self
            .sgs
            .get(&req.security_group_id)
            .ok_or_else(|| ModelError::SecurityGroupNotFound(req.security_group_id.clone()))?;
        if req.permissions.is_empty() && req.security_group_rule_ids.is_empty() {
            return Err(ModelError::MissingParameter("Permissions"));
        }
        for id in &req.security_group_rule_ids {
            if !sg.rules.iter().any(|r| &r.security_group_rule_id == id && r.direction == direction) {
                return Err(ModelError::SecurityGroupRuleNotFound(id.clone()));
            }
        }
        let mut doomed: Vec<SgRule> = Vec::new();
        for p in &req.permissions {
            doomed.push(self.build_rule(sg, direction, p, now)?);
        }
        let before = sg.rules.len();
        let sg = self.sgs.get_mut(&req.security_group_id).expect("checked above");
        sg.rules.retain(|r| {
            !req.security_group_rule_ids.contains(&r.security_group_rule_id) && !doomed.iter().any(|d| d.same_as(r))
        });
        if sg.rules.len() != before {
            self.mark(Kind::SecurityGroup, &req.security_group_id);
        }
        Ok(())
    }

    /// ModifySecurityGroupPolicy: `Accept` lets the group's members reach each other whatever
    /// the rules say; `Drop` isolates them. Enterprise groups are always isolated.
    pub fn modify_security_group_policy(&mut self, id: &str, inner_access_policy: &str, now: Millis) -> Result<()> {
        self.advance(now);
        let sg = self.sgs.get(id).ok_or_else(|| ModelError::SecurityGroupNotFound(id.to_string()))?;
        let accept = match inner_access_policy.to_ascii_lowercase().as_str() {
            "accept" => true,
            "drop" => false,
            "" => return Err(ModelError::MissingParameter("InnerAccessPolicy")),
            _ => return Err(ModelError::invalid("InnerAccessPolicy", "Accept or Drop")),
        };
        if sg.security_group_type == SecurityGroupType::Enterprise {
            return Err(ModelError::SecurityGroupTypeNotSupported("enterprise".into()));
        }
        if sg.inner_access_accept != accept {
            self.sgs.get_mut(id).expect("checked above").inner_access_accept = accept;
            self.mark(Kind::SecurityGroup, id);
        }
        Ok(())
    }
}
