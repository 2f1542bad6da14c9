//! The lab's cloud side after `up`: finding what `apply` made by name, and deleting it again at
//! `down` (members and trunks first, then instances, groups, vSwitches, VPCs), tolerating what
//! is already gone, so a teardown can be repeated after a crash. Load balancers go first, since
//! the cloud refuses to delete a VPC that still has one (see [`super::ccm`] and
//! [`crate::apply::delete_load_balancers`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use enifab_proto::v1 as pb;

use super::Log;
use crate::apply::{self, Applied};
use crate::cli::{Clients, describe_status};
use crate::topology::Topology;

/// Security group names of the topology → IDs, all of which must exist.
pub(crate) async fn group_ids(c: &mut Clients, topo: &Topology) -> Result<HashMap<String, String>> {
    let found = lookup(c, topo).await?.security_groups;
    if let Some(g) = topo.security_groups.iter().find(|g| !found.contains_key(&g.name.value)) {
        bail!("security group {} does not exist: is the lab up?", g.name.value);
    }
    Ok(found)
}

/// An answer that says the resource is already gone is as good as success when tearing down.
pub(crate) fn tolerate_gone<T>(r: Result<T, tonic::Status>, what: impl FnOnce() -> String) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(s) if crate::grpc::status::cloud_error(&s).is_some_and(|(code, _)| code.ends_with(".NotFound")) => Ok(()),
        Err(s) => Err(anyhow!("{}: {}", what(), describe_status(&s))),
    }
}

/// Delete the topology's cloud resources (found by name), members and trunks first.
pub(crate) async fn delete_cloud(c: &mut Clients, topo: &Topology, id: &str, log: &mut Log<'_>) -> Result<()> {
    let enis =
        |r: pb::DescribeNetworkInterfacesResponse| r.network_interface_sets.unwrap_or_default().network_interface_set;
    // Member ENIs the CNI could not remove (tagged by the lab), then the trunks.
    let tagged = c
        .ecs
        .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
            tag: vec![pb::Tag { key: "enifab:lab".into(), value: id.into() }],
            max_results: Some(500),
            ..Default::default()
        })
        .await
        .map(|r| enis(r.into_inner()))
        .unwrap_or_default();
    let trunks = c
        .ecs
        .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
            r#type: "Trunk".into(),
            max_results: Some(500),
            ..Default::default()
        })
        .await
        .map(|r| enis(r.into_inner()))
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.tags.as_ref().is_some_and(|t| {
                t.tag.iter().any(|t| t.tag_key == apply::TRUNK_TAG && topo.instance(&t.tag_value).is_some())
            })
        })
        .collect::<Vec<_>>();
    // Members first: a trunk cannot be detached while it still carries any.
    for group in [&tagged, &trunks] {
        for e in group.iter() {
            if e.instance_id.is_empty() {
                continue;
            }
            let trunk = e.attachment.as_ref().map(|a| a.trunk_network_interface_id.clone()).unwrap_or_default();
            let r = c
                .ecs
                .detach_network_interface(pb::DetachNetworkInterfaceRequest {
                    instance_id: e.instance_id.clone(),
                    network_interface_id: e.network_interface_id.clone(),
                    trunk_network_instance_id: trunk,
                    ..Default::default()
                })
                .await;
            tolerate_gone(r, || format!("detaching {}", e.network_interface_id))?;
        }
        for e in group.iter() {
            wait_eni(c, &e.network_interface_id, "Available").await?;
            let r = c
                .ecs
                .delete_network_interface(pb::DeleteNetworkInterfaceRequest {
                    network_interface_id: e.network_interface_id.clone(),
                    ..Default::default()
                })
                .await;
            tolerate_gone(r, || format!("deleting {}", e.network_interface_id))?;
            // Deleting takes a moment in the cloud too; its groups stay in use until it is gone.
            wait_eni(c, &e.network_interface_id, "").await?;
            log.say("eni", format!("{} deleted", e.network_interface_id));
        }
    }
    let applied = lookup(c, topo).await?;
    for (name, iid) in &applied.instances {
        let r = c
            .ecs
            .delete_instance(pb::DeleteInstanceRequest {
                instance_id: iid.clone(),
                force: Some(true),
                ..Default::default()
            })
            .await;
        tolerate_gone(r, || format!("deleting instance {name}"))?;
        log.say("instance", format!("{name} deleted"));
    }
    // Rules may name other groups of the file: empty every group before deleting any.
    for sg in applied.security_groups.values() {
        let attr = c
            .ecs
            .describe_security_group_attribute(pb::DescribeSecurityGroupAttributeRequest {
                security_group_id: sg.clone(),
                ..Default::default()
            })
            .await;
        if let Ok(attr) = attr {
            let perms = attr.into_inner().permissions.unwrap_or_default().permission;
            let (ing, eg): (Vec<_>, Vec<_>) = perms.into_iter().partition(|p| p.direction == "ingress");
            let ids = |v: Vec<pb::PermissionItem>| v.into_iter().map(|p| p.security_group_rule_id).collect();
            // Best effort: a group that cannot be emptied fails its own delete below, with a reason.
            let _ = apply::revoke(c, "", sg, true, Vec::new(), ids(ing)).await;
            let _ = apply::revoke(c, "", sg, false, Vec::new(), ids(eg)).await;
        }
    }
    for (name, sg) in &applied.security_groups {
        let r = c
            .ecs
            .delete_security_group(pb::DeleteSecurityGroupRequest {
                security_group_id: sg.clone(),
                ..Default::default()
            })
            .await;
        tolerate_gone(r, || format!("deleting security group {name}"))?;
        log.say("group", format!("{name} deleted"));
    }
    for (name, vsw) in &applied.vswitches {
        let r =
            c.vpc.delete_v_switch(pb::DeleteVSwitchRequest { v_switch_id: vsw.clone(), ..Default::default() }).await;
        tolerate_gone(r, || format!("deleting vswitch {name}"))?;
    }
    for (name, vpc) in &applied.vpcs {
        let r = c.vpc.delete_vpc(pb::DeleteVpcRequest { vpc_id: vpc.clone(), ..Default::default() }).await;
        tolerate_gone(r, || format!("deleting vpc {name}"))?;
        log.say("vpc", format!("{name} deleted"));
    }
    Ok(())
}

/// Wait until an ENI is `status`, or gone (which also satisfies an empty `status`).
async fn wait_eni(c: &mut Clients, eni: &str, status: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = c
            .ecs
            .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
                network_interface_id: vec![eni.to_string()],
                ..Default::default()
            })
            .await
            .map_err(|s| anyhow!("{}", describe_status(&s)))?
            .into_inner();
        match r.network_interface_sets.unwrap_or_default().network_interface_set.first() {
            None => return Ok(()),
            Some(e) if e.status == status => return Ok(()),
            Some(e) if Instant::now() > deadline => bail!("{eni} stuck in {}", e.status),
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Find the topology's resources by name without creating anything, as `apply` finds them.
pub(crate) async fn lookup(c: &mut Clients, topo: &Topology) -> Result<Applied> {
    let region = &topo.region.value;
    let mut out = Applied::default();
    for v in &topo.vpcs {
        let Some(vpc) = apply::find_vpc(c, region, &v.name.value).await? else { continue };
        for s in &v.vswitches {
            if let Some(vsw) = apply::find_vswitch(c, region, &vpc.vpc_id, &s.name.value).await? {
                out.vswitches.insert(s.name.value.clone(), vsw.v_switch_id);
            }
        }
        out.vpcs.insert(v.name.value.clone(), vpc.vpc_id);
    }
    for g in &topo.security_groups {
        let Some(vpc_id) = out.vpcs.get(&g.vpc.value) else { continue };
        if let Some(sg) = apply::find_group(c, region, vpc_id, &g.name.value).await? {
            out.security_groups.insert(g.name.value.clone(), sg.security_group_id);
        }
    }
    for i in &topo.instances {
        if let Some(inst) = apply::find_instance(c, region, &i.name.value).await? {
            out.instances.insert(i.name.value.clone(), inst.instance_id);
        }
    }
    Ok(out)
}
