//! `enifab apply -f FILE.yaml`: create the cloud side of a topology through the API.
//!
//! Declarative and idempotent: resources are found by name (VPC, vSwitch, security group,
//! instance) and created only when missing; a security group's rules are made equal to the file's
//! (missing rules authorized, extra rules revoked); a node's trunk ENI is found by its
//! `enifab:trunk-of` tag. Applying the same file twice changes nothing the second time. The file
//! is fully checked before the first call (see [`crate::topology`]), so a broken file creates
//! nothing. Every call goes through the same gRPC API as any client.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use enifab_model::net::parse_peer_cidr;
use enifab_model::security_group::canonical_port_range;
use enifab_proto::v1 as pb;
use tonic::Status;

use crate::cli::{self, Clients, describe_status};
use crate::topology::{RuleSpec, Topology};

/// The tag that ties a trunk ENI to the instance it was created for.
pub const TRUNK_TAG: &str = "enifab:trunk-of";

/// Names → IDs of everything a topology made, for the lab and for printing.
#[derive(Debug, Default, Clone)]
pub struct Applied {
    pub vpcs: HashMap<String, String>,
    pub vswitches: HashMap<String, String>,
    pub security_groups: HashMap<String, String>,
    pub instances: HashMap<String, String>,
    /// Instance name → its trunk ENI.
    pub trunks: HashMap<String, String>,
    pub created: usize,
}

fn api(what: &str) -> impl Fn(Status) -> anyhow::Error + '_ {
    move |s| anyhow!("{what}: {}", describe_status(&s))
}

/// The entry point of `enifab apply`.
pub async fn run(endpoint: &str, file: &Path) -> Result<ExitCode> {
    let topo = Topology::load(file)?;
    // `enifab serve & enifab apply …` is the usual way in: give the server a moment to bind.
    let channel = cli::connect_patiently(endpoint, std::time::Duration::from_secs(10)).await?;
    let mut clients = Clients::new(channel);
    let applied = apply(&mut clients, &topo, &mut |line| println!("{line}")).await?;
    println!(
        "applied {}: {} created, {} already present",
        file.display(),
        applied.created,
        count(&applied) - applied.created
    );
    Ok(ExitCode::SUCCESS)
}

fn count(a: &Applied) -> usize {
    a.vpcs.len() + a.vswitches.len() + a.security_groups.len() + a.instances.len() + a.trunks.len()
}

/// Make the cloud match `topo`; `log` receives one line per resource.
pub async fn apply(c: &mut Clients, topo: &Topology, log: &mut dyn FnMut(String)) -> Result<Applied> {
    let region = topo.region.value.clone();
    let mut out = Applied::default();
    let mut note = |out: &mut Applied, kind: &str, name: &str, id: &str, created: bool| {
        if created {
            out.created += 1;
        }
        log(format!("{kind:<15} {name:<28} {id:<26} {}", if created { "created" } else { "exists" }));
    };

    // A file written for another region must not half-apply: ask before creating anything.
    c.vpc
        .describe_vpcs(pb::DescribeVpcsRequest { region_id: region.clone(), page_size: Some(1), ..Default::default() })
        .await
        .map_err(api(&format!("region {region}")))?;
    for t in &topo.instance_types {
        c.emulator
            .create_instance_type(pb::CreateInstanceTypeRequest {
                instance_type_id: t.id.value.clone(),
                cpu_core_count: t.cpu as i32,
                memory_size: t.memory_gib,
                eni_quantity: t.eni_quantity as i32,
                eni_private_ip_address_quantity: t.eni_private_ip_address_quantity as i32,
                eni_total_quantity: t.eni_total_quantity as i32,
                eni_trunk_supported: t.eni_trunk_supported,
                ..Default::default()
            })
            .await
            .map_err(api(&format!("instance type {}", t.id.value)))?;
    }

    for v in &topo.vpcs {
        let (id, created) = match find_vpc(c, &region, &v.name.value).await?.as_ref() {
            Some(existing) if existing.cidr_block != v.cidr.value => {
                bail!("vpc {} exists with CIDR {}, the file says {}", v.name.value, existing.cidr_block, v.cidr.value)
            }
            Some(existing) => (existing.vpc_id.clone(), false),
            None => {
                let r = c
                    .vpc
                    .create_vpc(pb::CreateVpcRequest {
                        region_id: region.clone(),
                        cidr_block: v.cidr.value.clone(),
                        vpc_name: v.name.value.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(api(&format!("vpc {}", v.name.value)))?;
                (r.into_inner().vpc_id, true)
            }
        };
        note(&mut out, "vpc", &v.name.value, &id, created);
        out.vpcs.insert(v.name.value.clone(), id.clone());
        for s in &v.vswitches {
            let (vsw, created) = match find_vswitch(c, &region, &id, &s.name.value).await?.as_ref() {
                Some(e) if e.cidr_block != s.cidr.value || e.zone_id != s.zone.value => {
                    bail!(
                        "vswitch {} exists as {} in {}, the file says {} in {}",
                        s.name.value,
                        e.cidr_block,
                        e.zone_id,
                        s.cidr.value,
                        s.zone.value
                    )
                }
                Some(e) => (e.v_switch_id.clone(), false),
                None => {
                    let r = c
                        .vpc
                        .create_v_switch(pb::CreateVSwitchRequest {
                            region_id: region.clone(),
                            vpc_id: id.clone(),
                            zone_id: s.zone.value.clone(),
                            cidr_block: s.cidr.value.clone(),
                            v_switch_name: s.name.value.clone(),
                            ..Default::default()
                        })
                        .await
                        .map_err(api(&format!("vswitch {}", s.name.value)))?;
                    (r.into_inner().v_switch_id, true)
                }
            };
            note(&mut out, "vswitch", &s.name.value, &vsw, created);
            out.vswitches.insert(s.name.value.clone(), vsw);
        }
    }

    // Groups first, rules after: a rule may name any group of the file as its peer.
    for g in &topo.security_groups {
        let vpc_id = out.vpcs[&g.vpc.value].clone();
        let kind = g.kind.as_ref().map_or("normal", |k| k.value.as_str());
        let (id, created) = match find_group(c, &region, &vpc_id, &g.name.value).await?.as_ref() {
            Some(e) if e.security_group_type != kind => {
                bail!("security group {} exists as {}, the file says {kind}", g.name.value, e.security_group_type)
            }
            Some(e) => (e.security_group_id.clone(), false),
            None => {
                let r = c
                    .ecs
                    .create_security_group(pb::CreateSecurityGroupRequest {
                        region_id: region.clone(),
                        vpc_id,
                        security_group_name: g.name.value.clone(),
                        security_group_type: kind.to_string(),
                        ..Default::default()
                    })
                    .await
                    .map_err(api(&format!("security group {}", g.name.value)))?;
                (r.into_inner().security_group_id, true)
            }
        };
        note(&mut out, "security group", &g.name.value, &id, created);
        out.security_groups.insert(g.name.value.clone(), id);
    }
    for g in &topo.security_groups {
        let id = out.security_groups[&g.name.value].clone();
        sync_rules(c, &region, &id, g, &out.security_groups).await?;
    }

    for i in &topo.instances {
        let groups: Vec<String> = i.security_groups.iter().map(|g| out.security_groups[&g.value].clone()).collect();
        let (id, created) = match find_instance(c, &region, &i.name.value).await?.as_ref() {
            Some(e) => {
                let ip = e
                    .vpc_attributes
                    .as_ref()
                    .and_then(|v| v.private_ip_address.as_ref())
                    .and_then(|l| l.ip_address.first())
                    .cloned()
                    .unwrap_or_default();
                if e.instance_type != i.instance_type.value
                    || i.private_ip.as_ref().is_some_and(|want| want.value != ip)
                {
                    bail!(
                        "instance {} exists as {} with {ip}, which the file does not describe",
                        i.name.value,
                        e.instance_type
                    );
                }
                (e.instance_id.clone(), false)
            }
            None => {
                let r = c
                    .ecs
                    .create_instance(pb::CreateInstanceRequest {
                        region_id: region.clone(),
                        instance_type: i.instance_type.value.clone(),
                        v_switch_id: out.vswitches[&i.vswitch.value].clone(),
                        security_group_ids: groups,
                        private_ip_address: i.private_ip.as_ref().map(|p| p.value.clone()).unwrap_or_default(),
                        instance_name: i.name.value.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(api(&format!("instance {}", i.name.value)))?;
                (r.into_inner().instance_id, true)
            }
        };
        note(&mut out, "instance", &i.name.value, &id, created);
        out.instances.insert(i.name.value.clone(), id.clone());
        if let Some(t) = &i.trunk {
            let (trunk, created) = ensure_trunk(
                c,
                &region,
                &id,
                &i.name.value,
                &out.vswitches[&t.vswitch.value],
                t.security_groups.iter().map(|g| out.security_groups[&g.value].clone()).collect(),
            )
            .await?;
            note(&mut out, "trunk eni", &i.name.value, &trunk, created);
            out.trunks.insert(i.name.value.clone(), trunk);
        }
    }
    Ok(out)
}

/// Find the instance's trunk ENI by tag, creating and attaching it if needed.
/// The VPC named `name`, if there is one. `apply` creates what these finders do not find;
/// the lab finds what an earlier `apply` made with the same ones.
pub async fn find_vpc(c: &mut Clients, region: &str, name: &str) -> Result<Option<pb::VpcItem>> {
    let r = c
        .vpc
        .describe_vpcs(pb::DescribeVpcsRequest {
            region_id: region.to_string(),
            vpc_name: name.to_string(),
            page_size: Some(50),
            ..Default::default()
        })
        .await
        .map_err(api("DescribeVpcs"))?;
    Ok(r.into_inner().vpcs.unwrap_or_default().vpc.into_iter().next())
}

/// The vSwitch named `name` in VPC `vpc_id`.
pub async fn find_vswitch(c: &mut Clients, region: &str, vpc_id: &str, name: &str) -> Result<Option<pb::VSwitchItem>> {
    let r = c
        .vpc
        .describe_v_switches(pb::DescribeVSwitchesRequest {
            region_id: region.to_string(),
            vpc_id: vpc_id.to_string(),
            v_switch_name: name.to_string(),
            page_size: Some(50),
            ..Default::default()
        })
        .await
        .map_err(api("DescribeVSwitches"))?;
    Ok(r.into_inner().v_switches.unwrap_or_default().v_switch.into_iter().next())
}

/// The security group named `name` in VPC `vpc_id` (names are only unique within a VPC).
pub async fn find_group(
    c: &mut Clients,
    region: &str,
    vpc_id: &str,
    name: &str,
) -> Result<Option<pb::SecurityGroupItem>> {
    let r = c
        .ecs
        .describe_security_groups(pb::DescribeSecurityGroupsRequest {
            region_id: region.to_string(),
            vpc_id: vpc_id.to_string(),
            security_group_name: name.to_string(),
            page_size: Some(100),
            ..Default::default()
        })
        .await
        .map_err(api("DescribeSecurityGroups"))?;
    Ok(r.into_inner().security_groups.unwrap_or_default().security_group.into_iter().next())
}

/// The instance named `name`.
pub async fn find_instance(c: &mut Clients, region: &str, name: &str) -> Result<Option<pb::InstanceItem>> {
    let r = c
        .ecs
        .describe_instances(pb::DescribeInstancesRequest {
            region_id: region.to_string(),
            instance_name: name.to_string(),
            page_size: Some(100),
            ..Default::default()
        })
        .await
        .map_err(api("DescribeInstances"))?;
    Ok(r.into_inner().instances.unwrap_or_default().instance.into_iter().next())
}

async fn ensure_trunk(
    c: &mut Clients,
    region: &str,
    instance_id: &str,
    name: &str,
    vswitch_id: &str,
    groups: Vec<String>,
) -> Result<(String, bool)> {
    let tag = pb::Tag { key: TRUNK_TAG.into(), value: name.into() };
    let found = c
        .ecs
        .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
            region_id: region.into(),
            r#type: "Trunk".into(),
            tag: vec![tag.clone()],
            max_results: Some(100),
            ..Default::default()
        })
        .await
        .map_err(api("DescribeNetworkInterfaces"))?
        .into_inner()
        .network_interface_sets
        .unwrap_or_default()
        .network_interface_set;
    let (eni, created) = match found.into_iter().next() {
        Some(e) => {
            if !e.instance_id.is_empty() && e.instance_id != instance_id {
                bail!("trunk ENI {} of {name} is attached to {}", e.network_interface_id, e.instance_id);
            }
            (e, false)
        }
        None => {
            let r = c
                .ecs
                .create_network_interface(pb::CreateNetworkInterfaceRequest {
                    region_id: region.into(),
                    v_switch_id: vswitch_id.into(),
                    security_group_ids: groups,
                    instance_type: "Trunk".into(),
                    description: "interface create by terway".into(),
                    tag: vec![tag, pb::Tag { key: "creator".into(), value: "terway".into() }],
                    source_dest_check: Some(false),
                    ..Default::default()
                })
                .await
                .map_err(api(&format!("trunk ENI of {name}")))?
                .into_inner();
            let set = pb::NetworkInterfaceSet {
                network_interface_id: r.network_interface_id,
                status: r.status,
                ..Default::default()
            };
            (set, true)
        }
    };
    if eni.instance_id.is_empty() {
        c.ecs
            .attach_network_interface(pb::AttachNetworkInterfaceRequest {
                region_id: region.into(),
                instance_id: instance_id.into(),
                network_interface_id: eni.network_interface_id.clone(),
                ..Default::default()
            })
            .await
            .map_err(api(&format!("attaching the trunk ENI of {name}")))?;
    }
    Ok((eni.network_interface_id, created))
}

/// A rule in a comparable form: what DescribeSecurityGroupAttribute prints for it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RuleKey {
    direction: &'static str,
    protocol: String,
    ports: String,
    peer_cidr: String,
    peer_group: String,
    policy: String,
    priority: String,
}

fn desired_key(direction: &'static str, r: &RuleSpec, groups: &HashMap<String, String>) -> RuleKey {
    let protocol = r.protocol.value.to_ascii_uppercase();
    // As the model renders it, so that "80/80" and " 80/80" are one rule (the file was checked).
    let ports = match &r.ports {
        Some(p) => canonical_port_range(&protocol, &p.value).unwrap_or_else(|_| p.value.clone()),
        None => "-1/-1".into(),
    };
    let policy = match r.policy.as_ref().map(|p| p.value.to_ascii_lowercase()) {
        Some(p) if p == "drop" => "Drop".to_string(),
        _ => "Accept".to_string(),
    };
    RuleKey {
        direction,
        protocol,
        ports,
        peer_cidr: r.peer.as_ref().and_then(|p| parse_peer_cidr(&p.value)).map(|c| c.to_string()).unwrap_or_default(),
        peer_group: r.peer_group.as_ref().map(|g| groups[&g.value].clone()).unwrap_or_default(),
        policy,
        priority: r.priority.as_ref().map_or(1, |p| p.value).to_string(),
    }
}

fn current_key(p: &pb::PermissionItem) -> RuleKey {
    let ingress = p.direction == "ingress";
    RuleKey {
        direction: if ingress { "ingress" } else { "egress" },
        protocol: p.ip_protocol.clone(),
        ports: p.port_range.clone(),
        peer_cidr: if ingress { p.source_cidr_ip.clone() } else { p.dest_cidr_ip.clone() },
        peer_group: if ingress { p.source_group_id.clone() } else { p.dest_group_id.clone() },
        policy: p.policy.clone(),
        priority: p.priority.clone(),
    }
}

fn permission(k: &RuleKey, description: &str) -> pb::Permission {
    let ingress = k.direction == "ingress";
    let (cidr, group) = (k.peer_cidr.clone(), k.peer_group.clone());
    pb::Permission {
        ip_protocol: k.protocol.clone(),
        port_range: k.ports.clone(),
        source_cidr_ip: if ingress { cidr.clone() } else { String::new() },
        source_group_id: if ingress { group.clone() } else { String::new() },
        dest_cidr_ip: if ingress { String::new() } else { cidr },
        dest_group_id: if ingress { String::new() } else { group },
        policy: k.policy.to_ascii_lowercase(),
        priority: k.priority.clone(),
        description: description.to_string(),
        ..Default::default()
    }
}

/// The permission for one rule of a topology file, as `apply` sends it (peer groups by name in
/// `groups`): what the lab authorizes and revokes for a check's rule changes too.
pub fn rule_permission(direction: &'static str, r: &RuleSpec, groups: &HashMap<String, String>) -> pb::Permission {
    permission(&desired_key(direction, r, groups), r.description.as_deref().unwrap_or_default())
}

/// Make the group's policy and rules what the file says.
async fn sync_rules(
    c: &mut Clients,
    region: &str,
    id: &str,
    g: &crate::topology::SecurityGroupSpec,
    groups: &HashMap<String, String>,
) -> Result<()> {
    if let Some(policy) = &g.inner_access_policy {
        c.ecs
            .modify_security_group_policy(pb::ModifySecurityGroupPolicyRequest {
                region_id: region.into(),
                security_group_id: id.into(),
                inner_access_policy: policy.value.clone(),
            })
            .await
            .map_err(api(&format!("security group {} policy", g.name.value)))?;
    }
    let want: Vec<(RuleKey, String)> = g
        .ingress
        .iter()
        .map(|r| (desired_key("ingress", r, groups), r.description.clone().unwrap_or_default()))
        .chain(g.egress.iter().map(|r| (desired_key("egress", r, groups), r.description.clone().unwrap_or_default())))
        .collect();
    let current = c
        .ecs
        .describe_security_group_attribute(pb::DescribeSecurityGroupAttributeRequest {
            region_id: region.into(),
            security_group_id: id.into(),
            ..Default::default()
        })
        .await
        .map_err(api("DescribeSecurityGroupAttribute"))?
        .into_inner()
        .permissions
        .unwrap_or_default()
        .permission;
    let (mut stale_in, mut stale_out) = (Vec::new(), Vec::new());
    for p in &current {
        if !want.iter().any(|(k, _)| *k == current_key(p)) {
            if p.direction == "ingress" {
                stale_in.push(p.security_group_rule_id.clone())
            } else {
                stale_out.push(p.security_group_rule_id.clone())
            }
        }
    }
    revoke(c, region, id, true, Vec::new(), stale_in).await.map_err(api("RevokeSecurityGroup"))?;
    revoke(c, region, id, false, Vec::new(), stale_out).await.map_err(api("RevokeSecurityGroupEgress"))?;
    let missing = |dir: &str| -> Vec<pb::Permission> {
        want.iter()
            .filter(|(k, _)| k.direction == dir && !current.iter().any(|p| current_key(p) == *k))
            .map(|(k, d)| permission(k, d))
            .collect()
    };
    let name = &g.name.value;
    authorize(c, region, id, true, missing("ingress"))
        .await
        .map_err(api(&format!("security group {name} ingress rules")))?;
    authorize(c, region, id, false, missing("egress"))
        .await
        .map_err(api(&format!("security group {name} egress rules")))?;
    Ok(())
}

/// AuthorizeSecurityGroup (`ingress`) or AuthorizeSecurityGroupEgress; nothing to do for none.
pub async fn authorize(
    c: &mut Clients,
    region: &str,
    sg: &str,
    ingress: bool,
    permissions: Vec<pb::Permission>,
) -> Result<(), Status> {
    if permissions.is_empty() {
        return Ok(());
    }
    let (region_id, security_group_id) = (region.to_string(), sg.to_string());
    if ingress {
        let req = pb::AuthorizeSecurityGroupRequest { region_id, security_group_id, permissions, ..Default::default() };
        c.ecs.authorize_security_group(req).await.map(|_| ())
    } else {
        let req =
            pb::AuthorizeSecurityGroupEgressRequest { region_id, security_group_id, permissions, ..Default::default() };
        c.ecs.authorize_security_group_egress(req).await.map(|_| ())
    }
}

/// RevokeSecurityGroup (`ingress`) or RevokeSecurityGroupEgress, by content and/or rule ID.
pub async fn revoke(
    c: &mut Clients,
    region: &str,
    sg: &str,
    ingress: bool,
    permissions: Vec<pb::Permission>,
    security_group_rule_id: Vec<String>,
) -> Result<(), Status> {
    if permissions.is_empty() && security_group_rule_id.is_empty() {
        return Ok(());
    }
    let (region_id, security_group_id) = (region.to_string(), sg.to_string());
    if ingress {
        let req = pb::RevokeSecurityGroupRequest {
            region_id,
            security_group_id,
            permissions,
            security_group_rule_id,
            ..Default::default()
        };
        c.ecs.revoke_security_group(req).await.map(|_| ())
    } else {
        let req = pb::RevokeSecurityGroupEgressRequest {
            region_id,
            security_group_id,
            permissions,
            security_group_rule_id,
            ..Default::default()
        };
        c.ecs.revoke_security_group_egress(req).await.map(|_| ())
    }
}

/// Read a file and apply it (used by tests and the lab).
pub async fn apply_file(endpoint: &str, file: &Path) -> Result<Applied> {
    let topo = Topology::load(file)?;
    let channel = cli::connect(endpoint).await.context("connecting")?;
    let mut clients = Clients::new(channel);
    apply(&mut clients, &topo, &mut |_| {}).await
}
