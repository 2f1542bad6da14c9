//! `enifab apply -f FILE.yaml`: create the cloud side of a topology through the API.
//!
//! Declarative and idempotent: resources are found by name (VPC, vSwitch, security group,
//! instance) and created only when missing; a security group's rules are made equal to the file's
//! (missing rules authorized, extra rules revoked); a node's trunk ENI is found by its
//! `enifab:trunk-of` tag. Applying the same file twice changes nothing the second time. Every
//! call goes through the same gRPC API as any client.
//!
//! All or nothing, as the README promises: the file is checked on its own first (see
//! [`crate::topology`]), then the whole apply is rehearsed in a dry run on the server (a copy of
//! the region, the same handlers and model methods), so what only the server can refuse (an
//! instance type without trunk support, a reserved or taken address, a zone the region lacks, a
//! group of another VPC) stops it before anything exists. Every error names the
//! `file:line:column` of the value it is about, then the cloud's `Code: Message`. The rehearsal
//! is of the region as it was when it began: another client changing the same resources between
//! the rehearsal and the real run can still make the real run stop halfway, as with the cloud.
//! The cloud has no such rehearsal for a batch of calls; this is the emulator's own
//! (`enifab.v1.Emulator/BeginDryRun`).
//!
//! Addresses the file pins are claimed before the vSwitch picks any: instances that pin theirs
//! are created first, trunks (which take whatever is free) after every instance. And apply
//! returns only when what it attached has settled (trunks `InUse`), unless told not to wait.
//!
//! Dual stack: a VPC is created with `EnableIpv6` (and the file's /56, if it names one), a
//! vSwitch with its /64, and an instance with `ipv6: true` has its primary ENI given one IPv6
//! address with the cloud's own `AssignIpv6Addresses` (in the dry run too), unless it holds one
//! already; the address is steered off the pods' pinned IPv6 addresses, as IPv4 ones are.
//!
//! Load balancers come last ([`apply_load_balancers`]): found by name, each listener forwarding
//! to a vServer group of its own (`enifab/<protocol>/<port>`) whose backends are made equal to
//! the file's, the listener's settings sent whole (absent ones as the API's defaults) and the
//! listener started; listeners and such groups the file no longer has are deleted. A backend
//! named by `pod` is the pod's member ENI, found by the pod's IP as the cloud-controller-manager
//! finds it (DescribeNetworkInterfaces); only the lab knows pod IPs, so [`apply`] defers a load
//! balancer with pod backends and the lab applies it again, with a resolver, once its pods run.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use enifab_model::net::{Cidr6, parse_peer_cidr, parse_peer_cidr6};
use enifab_model::security_group::canonical_port_range;
use enifab_proto::v1 as pb;
use tonic::Status;

use crate::cli::{self, Clients, describe_status};
use crate::grpc::status::cloud_error;
use crate::topology::{BackendSpec, InstanceSpec, ListenerSpec, LoadBalancerSpec, RuleSpec, S, Topology, TrunkSpec};

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
    /// Load balancer name → (ID, address), for those applied (not deferred).
    pub load_balancers: HashMap<String, (String, String)>,
    /// Instance name → its primary ENI's IPv6 address, for instances with `ipv6: true`.
    pub ipv6: HashMap<String, String>,
    pub created: usize,
}

fn api(what: &str) -> impl Fn(Status) -> anyhow::Error + '_ {
    move |s| anyhow!("{what}: {}", describe_status(&s))
}

/// Where a value was written: `file:line:column`.
fn loc<T>(topo: &Topology, s: &S<T>) -> String {
    format!("{}:{}:{}", topo.file, s.referenced.line(), s.referenced.column())
}

/// A cloud error as apply reports it: the place in the file that caused it, `Code: Message`,
/// and what apply was doing. `places` pairs fragments of an error's code or message with the
/// value they point at (the first whose fragment is found wins); `fallback` is the resource's
/// name.
fn located(
    places: Vec<(&'static [&'static str], Option<String>)>,
    fallback: String,
    what: String,
) -> impl FnOnce(Status) -> anyhow::Error {
    move |s| {
        // The message too: `InvalidParameter` names its parameter only there.
        let said = cloud_error(&s).map(|(c, m)| format!("{c} {m}")).unwrap_or_default();
        let place = places
            .into_iter()
            .find_map(|(frags, at)| at.filter(|_| frags.iter().any(|f| said.contains(f))))
            .unwrap_or(fallback);
        anyhow!("{place}: {} ({what})", describe_status(&s))
    }
}

/// How [`apply_with`] ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Return once every trunk it attached is `InUse` and every instance `Running`, so the next
    /// command can attach members to them (what a user of a topology file expects).
    Settle,
    /// Return as soon as the cloud accepted the calls, attachments still `Attaching`: the cloud's
    /// own asynchrony, for clients that want to see it.
    NoWait,
}

/// How long [`Wait::Settle`] waits for the cloud before it gives up.
const SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The entry point of `enifab apply`.
pub async fn run(endpoint: &str, file: &Path, wait: Wait) -> Result<ExitCode> {
    let topo = Topology::load(file)?;
    // `enifab serve & enifab apply …` is the usual way in: give the server a moment to bind.
    let channel = cli::connect_patiently(endpoint, std::time::Duration::from_secs(10)).await?;
    let mut clients = Clients::new(channel);
    let applied = apply_with(&mut clients, &topo, &mut |line| println!("{line}"), wait).await?;
    println!(
        "applied {}: {} created, {} already present",
        file.display(),
        applied.created,
        count(&applied) - applied.created
    );
    Ok(ExitCode::SUCCESS)
}

fn count(a: &Applied) -> usize {
    a.vpcs.len()
        + a.vswitches.len()
        + a.security_groups.len()
        + a.instances.len()
        + a.trunks.len()
        + a.load_balancers.len()
        + a.ipv6.len()
}

/// Make the cloud match `topo` and wait for it to settle; `log` receives one line per resource.
pub async fn apply(c: &mut Clients, topo: &Topology, log: &mut dyn FnMut(String)) -> Result<Applied> {
    apply_with(c, topo, log, Wait::Settle).await
}

/// Make the cloud match `topo`, all or nothing: the whole apply is first played against a copy
/// of the region (a dry run, `enifab.v1.Emulator/BeginDryRun`), through the same calls, handlers
/// and model methods as the real one, so an error only the server can find (an instance type
/// without trunk support, a reserved address, a zone the region lacks) stops it before anything
/// exists, located at the value that caused it. Only a clean rehearsal is played for real.
pub async fn apply_with(c: &mut Clients, topo: &Topology, log: &mut dyn FnMut(String), wait: Wait) -> Result<Applied> {
    let region = topo.region.value.clone();
    // A file written for another region must be refused before anything else, by the real
    // server's answer (a dry run would answer the same, less clearly).
    c.vpc
        .describe_vpcs(pb::DescribeVpcsRequest { region_id: region.clone(), page_size: Some(1), ..Default::default() })
        .await
        .map_err(located(vec![], loc(topo, &topo.region), format!("region {region}")))?;
    let id = c
        .emulator
        .begin_dry_run(pb::BeginDryRunRequest {})
        .await
        .map_err(api("opening a dry run (BeginDryRun)"))?
        .into_inner()
        .dry_run_id;
    let mut rehearsal = c.in_dry_run(&id)?;
    let planned = apply_once(&mut rehearsal, topo, &mut |_| {}).await;
    // Best effort: an unclosed dry run expires on its own.
    let _ = c.emulator.end_dry_run(pb::EndDryRunRequest { dry_run_id: id }).await;
    planned?;
    let out = apply_once(c, topo, log).await?;
    if wait == Wait::Settle {
        settle(c, &region, &out).await?;
    }
    Ok(out)
}

/// Wait until every instance of `applied` is `Running` and every trunk `InUse`.
async fn settle(c: &mut Clients, region: &str, applied: &Applied) -> Result<()> {
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        let mut waiting = Vec::new();
        let instances: Vec<String> = applied.instances.values().cloned().collect();
        for chunk in instances.chunks(100) {
            let found = c
                .ecs
                .describe_instances(pb::DescribeInstancesRequest {
                    region_id: region.into(),
                    instance_ids: serde_json::to_string(chunk).expect("strings serialize"),
                    page_size: Some(100),
                    ..Default::default()
                })
                .await
                .map_err(api("DescribeInstances"))?
                .into_inner()
                .instances
                .unwrap_or_default()
                .instance;
            waiting.extend(found.into_iter().filter(|i| i.status != "Running").map(|i| (i.instance_id, i.status)));
        }
        let trunks: Vec<String> = applied.trunks.values().cloned().collect();
        for chunk in trunks.chunks(100) {
            let found = c
                .ecs
                .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
                    region_id: region.into(),
                    network_interface_id: chunk.to_vec(),
                    max_results: Some(100),
                    ..Default::default()
                })
                .await
                .map_err(api("DescribeNetworkInterfaces"))?
                .into_inner()
                .network_interface_sets
                .unwrap_or_default()
                .network_interface_set;
            waiting
                .extend(found.into_iter().filter(|e| e.status != "InUse").map(|e| (e.network_interface_id, e.status)));
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let list: Vec<String> = waiting.iter().map(|(id, st)| format!("{id} {st}")).collect();
            bail!("still settling after {}s: {}", SETTLE_TIMEOUT.as_secs(), list.join(", "));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// One pass of the apply, against whatever region `c` reaches (the real one or a dry run).
async fn apply_once(c: &mut Clients, topo: &Topology, log: &mut dyn FnMut(String)) -> Result<Applied> {
    let region = topo.region.value.clone();
    let mut out = Applied::default();
    let mut note = |out: &mut Applied, kind: &str, name: &str, id: &str, created: bool| {
        if created {
            out.created += 1;
        }
        log(format!("{kind:<15} {name:<28} {id:<26} {}", if created { "created" } else { "exists" }));
    };

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
            .map_err(located(vec![], loc(topo, &t.id), format!("instance type {}", t.id.value)))?;
    }

    for v in &topo.vpcs {
        let (id, created) = match find_vpc(c, &region, &v.name.value).await?.as_ref() {
            Some(existing) if existing.cidr_block != v.cidr.value => {
                bail!(
                    "{}: vpc {} exists with CIDR {}, the file says {}",
                    loc(topo, &v.cidr),
                    v.name.value,
                    existing.cidr_block,
                    v.cidr.value
                )
            }
            Some(existing) if v.enable_ipv6.as_ref().is_some_and(|e| e.value) && !existing.enabled_ipv6 => {
                bail!(
                    "{}: vpc {} exists without IPv6, the file enables it (the emulator, as this file, has no \
                     action that adds a block later)",
                    loc(topo, &v.name),
                    v.name.value
                )
            }
            Some(existing)
                if v.ipv6_cidr_block.as_ref().is_some_and(|b| !same_cidr6(&b.value, &existing.ipv6_cidr_block)) =>
            {
                let b = v.ipv6_cidr_block.as_ref().expect("matched");
                bail!(
                    "{}: vpc {} exists with the IPv6 block {:?}, the file says {}",
                    loc(topo, b),
                    v.name.value,
                    existing.ipv6_cidr_block,
                    b.value
                )
            }
            Some(existing) => (existing.vpc_id.clone(), false),
            None => {
                let r = c
                    .vpc
                    .create_vpc(pb::CreateVpcRequest {
                        region_id: region.clone(),
                        cidr_block: v.cidr.value.clone(),
                        vpc_name: v.name.value.clone(),
                        enable_ipv6: v.enable_ipv6.as_ref().map(|e| e.value),
                        ipv6_cidr_block: v.ipv6_cidr_block.as_ref().map(|b| b.value.clone()).unwrap_or_default(),
                        ..Default::default()
                    })
                    .await
                    .map_err(located(
                        vec![
                            // Only the IPv6 block can overlap another VPC's: IPv4 CIDRs may repeat.
                            (&["Ipv6CidrBlock", "Overlapped"], v.ipv6_cidr_block.as_ref().map(|b| loc(topo, b))),
                            (&["Cidr"], Some(loc(topo, &v.cidr))),
                        ],
                        loc(topo, &v.name),
                        format!("vpc {}", v.name.value),
                    ))?;
                (r.into_inner().vpc_id, true)
            }
        };
        note(&mut out, "vpc", &v.name.value, &id, created);
        out.vpcs.insert(v.name.value.clone(), id.clone());
        for s in &v.vswitches {
            let (vsw, created) = match find_vswitch(c, &region, &id, &s.name.value).await?.as_ref() {
                Some(e) if s.ipv6_cidr_block.is_some() && e.ipv6_cidr_block.is_empty() => {
                    bail!(
                        "{}: vswitch {} exists without IPv6, the file gives it a /64",
                        loc(topo, &s.name),
                        s.name.value
                    )
                }
                Some(e) if e.cidr_block != s.cidr.value || e.zone_id != s.zone.value => {
                    bail!(
                        "{}: vswitch {} exists as {} in {}, the file says {} in {}",
                        loc(topo, &s.name),
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
                            ipv6_cidr_block: s.ipv6_cidr_block.as_ref().map(|b| b.value as i32),
                            ..Default::default()
                        })
                        .await
                        .map_err(located(
                            vec![
                                (&["Zone"], Some(loc(topo, &s.zone))),
                                (&["Ipv6CidrBlock"], s.ipv6_cidr_block.as_ref().map(|b| loc(topo, b))),
                                (&["Cidr", "InvalidParameter"], Some(loc(topo, &s.cidr))),
                            ],
                            loc(topo, &s.name),
                            format!("vswitch {}", s.name.value),
                        ))?;
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
        let kind_at = g.kind.as_ref().map(|k| loc(topo, k));
        let (id, created) = match find_group(c, &region, &vpc_id, &g.name.value).await?.as_ref() {
            Some(e) if e.security_group_type != kind => {
                bail!(
                    "{}: security group {} exists as {}, the file says {kind}",
                    kind_at.unwrap_or_else(|| loc(topo, &g.name)),
                    g.name.value,
                    e.security_group_type
                )
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
                    .map_err(located(
                        vec![(&["Type"], kind_at)],
                        loc(topo, &g.name),
                        format!("security group {}", g.name.value),
                    ))?;
                (r.into_inner().security_group_id, true)
            }
        };
        note(&mut out, "security group", &g.name.value, &id, created);
        out.security_groups.insert(g.name.value.clone(), id);
    }
    for g in &topo.security_groups {
        let id = out.security_groups[&g.name.value].clone();
        sync_rules(c, topo, &region, &id, g, &out.security_groups).await?;
    }

    // Every instance before any trunk, and those that pin their address before those that let
    // the vSwitch choose: an address the file pins must be claimed before the IPAM hands out
    // the next free one, which could be it (nodes pinned at .20 and .21 with trunks beside them).
    // Pods and load balancers come later still, so what is left to the vSwitch is steered off
    // their addresses too ([`steer`]).
    let pins = pinned(topo);
    let pins6 = pinned6(topo);
    let mut order: Vec<&InstanceSpec> = topo.instances.iter().collect();
    order.sort_by_key(|i| i.private_ip.is_none());
    for i in order {
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
                        "{}: instance {} exists as {} with {ip}, which the file does not describe",
                        loc(topo, &i.name),
                        i.name.value,
                        e.instance_type
                    );
                }
                (e.instance_id.clone(), false)
            }
            None => {
                let vswitch_id = out.vswitches[&i.vswitch.value].clone();
                let private_ip_address = match &i.private_ip {
                    Some(p) => p.value.clone(),
                    None => {
                        let cidr = topo.vswitch(&i.vswitch.value).map(|(_, s)| s.cidr.value.as_str()).unwrap_or("");
                        steer(c, &region, &vswitch_id, cidr, pins.get(&i.vswitch.value)).await?
                    }
                };
                let r = c
                    .ecs
                    .create_instance(pb::CreateInstanceRequest {
                        region_id: region.clone(),
                        instance_type: i.instance_type.value.clone(),
                        v_switch_id: vswitch_id,
                        security_group_ids: groups,
                        private_ip_address,
                        instance_name: i.name.value.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(located(
                        vec![
                            (&["InstanceType"], Some(loc(topo, &i.instance_type))),
                            (&["PrivateIp", "IpInvalid", "Ip."], i.private_ip.as_ref().map(|p| loc(topo, p))),
                            (&["VSwitch", "Zone"], Some(loc(topo, &i.vswitch))),
                            (
                                &["SecurityGroup", "VpcMismatch", "GroupType", "Group"],
                                i.security_groups.first().map(|g| loc(topo, g)),
                            ),
                        ],
                        loc(topo, &i.name),
                        format!("instance {}", i.name.value),
                    ))?;
                (r.into_inner().instance_id, true)
            }
        };
        note(&mut out, "instance", &i.name.value, &id, created);
        out.instances.insert(i.name.value.clone(), id.clone());
        if i.has_ipv6() {
            let (ip6, assigned) = ensure_ipv6(c, topo, &region, &out, i, pins6.get(&i.vswitch.value)).await?;
            note(&mut out, "ipv6 address", &i.name.value, &ip6, assigned);
            out.ipv6.insert(i.name.value.clone(), ip6);
        }
    }
    for i in &topo.instances {
        let Some(t) = &i.trunk else { continue };
        let (trunk, created) = ensure_trunk(c, topo, &region, &out, i, t, pins.get(&t.vswitch.value)).await?;
        note(&mut out, "trunk eni", &i.name.value, &trunk, created);
        out.trunks.insert(i.name.value.clone(), trunk);
    }
    // No pod exists yet: load balancers with pod backends wait for the lab.
    apply_load_balancers(c, topo, &mut out, &|_| None, log).await?;
    Ok(out)
}

/// The IPv6 addresses the file pins (pods' `ipv6`), by the name of the vSwitch they are in.
fn pinned6(topo: &Topology) -> HashMap<String, HashSet<Ipv6Addr>> {
    let mut out: HashMap<String, HashSet<Ipv6Addr>> = HashMap::new();
    for p in topo.pods.iter().filter(|p| p.dual()) {
        if let (Some(ip), Some(vswitch)) = (p.ipv6.as_ref().and_then(|i| i.value.parse().ok()), topo.pod_vswitch(p)) {
            out.entry(vswitch.to_string()).or_default().insert(ip);
        }
    }
    out
}

/// Whether two spellings of an IPv6 block are the same block (the API may compress it otherwise).
fn same_cidr6(a: &str, b: &str) -> bool {
    match (a.parse::<Cidr6>(), b.parse::<Cidr6>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The instance's primary ENI's IPv6 address: the one it has, or one assigned now
/// (`AssignIpv6Addresses`, as the console's "assign IPv6" does). Returns it and whether it was
/// assigned. Where the file pins pods' IPv6 addresses in the vSwitch, the address is steered
/// off them as [`steer`] does for IPv4.
async fn ensure_ipv6(
    c: &mut Clients,
    topo: &Topology,
    region: &str,
    applied: &Applied,
    i: &InstanceSpec,
    pins: Option<&HashSet<Ipv6Addr>>,
) -> Result<(String, bool)> {
    let name = &i.name.value;
    let primary = c
        .ecs
        .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
            region_id: region.into(),
            instance_id: applied.instances[name].clone(),
            r#type: "Primary".into(),
            max_results: Some(100),
            ..Default::default()
        })
        .await
        .map_err(api("DescribeNetworkInterfaces"))?
        .into_inner()
        .network_interface_sets
        .unwrap_or_default()
        .network_interface_set
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("{}: instance {name} has no primary ENI", loc(topo, &i.name)))?;
    // Idempotent: an address it holds already (from an earlier apply) is kept.
    if let Some(have) = primary.ipv6_sets.as_ref().and_then(|s| s.ipv6_set.first()) {
        return Ok((have.ipv6_address.clone(), false));
    }
    let vswitch_id = applied.vswitches[&i.vswitch.value].clone();
    let steered = steer6(c, region, &vswitch_id, pins).await?;
    let at = i.ipv6.as_ref().map(|v| loc(topo, v));
    let r = c
        .ecs
        .assign_ipv6_addresses(pb::AssignIpv6AddressesRequest {
            region_id: region.into(),
            network_interface_id: primary.network_interface_id.clone(),
            ipv6_address_count: if steered.is_none() { Some(1) } else { None },
            ipv6_address: steered.map(|a| vec![a.to_string()]).unwrap_or_default(),
            ..Default::default()
        })
        .await
        .map_err(located(
            vec![(&["Ipv6", "VSwitch", "IpNotEnough"], at)],
            loc(topo, &i.name),
            format!("the IPv6 address of {name}"),
        ))?
        .into_inner();
    let ip6 = r.ipv6_sets.and_then(|s| s.ipv6_address.into_iter().next());
    Ok((ip6.ok_or_else(|| anyhow!("AssignIpv6Addresses for {name} answered no address"))?, true))
}

/// Every ENI in a vSwitch, all pages (what `steer` and `steer6` keep clear of).
async fn enis_in(c: &mut Clients, region: &str, vswitch_id: &str) -> Result<Vec<pb::NetworkInterfaceSet>> {
    let mut all = Vec::new();
    let mut next_token = String::new();
    loop {
        let r = c
            .ecs
            .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
                region_id: region.into(),
                v_switch_id: vswitch_id.into(),
                max_results: Some(500),
                next_token: next_token.clone(),
                ..Default::default()
            })
            .await
            .map_err(api("DescribeNetworkInterfaces"))?
            .into_inner();
        all.extend(r.network_interface_sets.unwrap_or_default().network_interface_set);
        if r.next_token.is_empty() {
            return Ok(all);
        }
        next_token = r.next_token;
    }
}

/// The IPv6 address to ask for on behalf of an instance when the file pins pods' addresses in
/// its vSwitch (the lowest neither held nor pinned), or `None` to let the vSwitch choose.
async fn steer6(
    c: &mut Clients,
    region: &str,
    vswitch_id: &str,
    pins: Option<&HashSet<Ipv6Addr>>,
) -> Result<Option<Ipv6Addr>> {
    let Some(pins) = pins.filter(|p| !p.is_empty()) else { return Ok(None) };
    let vsw = c
        .vpc
        .describe_v_switches(pb::DescribeVSwitchesRequest {
            region_id: region.into(),
            v_switch_id: vswitch_id.into(),
            ..Default::default()
        })
        .await
        .map_err(api("DescribeVSwitches"))?
        .into_inner()
        .v_switches
        .unwrap_or_default()
        .v_switch;
    let Some(cidr) = vsw.first().and_then(|v| v.ipv6_cidr_block.parse::<Cidr6>().ok()) else { return Ok(None) };
    let mut held: HashSet<Ipv6Addr> = HashSet::new();
    for e in enis_in(c, region, vswitch_id).await? {
        held.extend(
            e.ipv6_sets.unwrap_or_default().ipv6_set.iter().filter_map(|s| s.ipv6_address.parse::<Ipv6Addr>().ok()),
        );
    }
    // A /64 is never full of pins: the first few thousand addresses hold a free one.
    let free = (cidr.first()..cidr.first().saturating_add(1 << 16))
        .map(Ipv6Addr::from)
        .find(|ip| !cidr.is_reserved(*ip) && !held.contains(ip) && !pins.contains(ip));
    Ok(free)
}

/// The addresses the file pins, by the name of the vSwitch they are in: nodes' `privateIp`,
/// pods' `ip` (in the pod's vSwitch, by default its node trunk's) and load balancers' `address`.
fn pinned(topo: &Topology) -> HashMap<String, HashSet<Ipv4Addr>> {
    let mut out: HashMap<String, HashSet<Ipv4Addr>> = HashMap::new();
    let mut pin = |vswitch: &str, ip: &S<String>| {
        if let Ok(ip) = ip.value.parse() {
            out.entry(vswitch.to_string()).or_default().insert(ip);
        }
    };
    for i in &topo.instances {
        if let Some(ip) = &i.private_ip {
            pin(&i.vswitch.value, ip);
        }
    }
    for p in &topo.pods {
        if let (Some(ip), Some(vswitch)) = (&p.ip, topo.pod_vswitch(p)) {
            pin(vswitch, ip);
        }
    }
    for lb in &topo.load_balancers {
        if let (Some(ip), Some(vswitch)) = (&lb.address, &lb.vswitch) {
            pin(&vswitch.value, ip);
        }
    }
    out
}

/// The address to ask for on behalf of something the file lets the vSwitch choose for (an
/// unpinned node, a trunk), or `""` to let it choose. The vSwitch's own choice walks on from its
/// last allocation and would take an address the file pins for a pod or a load balancer that
/// comes later; so where the file pins any, apply picks the lowest address that is neither held
/// nor pinned. The model still decides whether that address may be had.
async fn steer(
    c: &mut Clients,
    region: &str,
    vswitch_id: &str,
    cidr: &str,
    pins: Option<&HashSet<Ipv4Addr>>,
) -> Result<String> {
    let Some(pins) = pins.filter(|p| !p.is_empty()) else { return Ok(String::new()) };
    let Ok(cidr) = cidr.parse::<enifab_model::Cidr>() else { return Ok(String::new()) };
    let mut held: HashSet<Ipv4Addr> = HashSet::new();
    for e in enis_in(c, region, vswitch_id).await? {
        held.extend(e.private_ip_address.parse::<Ipv4Addr>());
        for p in e.private_ip_sets.unwrap_or_default().private_ip_set {
            held.extend(p.private_ip_address.parse::<Ipv4Addr>());
        }
    }
    for page in 1.. {
        let r = c
            .slb
            .describe_load_balancers(pb::DescribeLoadBalancersRequest {
                region_id: region.into(),
                v_switch_id: vswitch_id.into(),
                page_number: Some(page),
                page_size: Some(100),
                ..Default::default()
            })
            .await
            .map_err(api("DescribeLoadBalancers"))?
            .into_inner();
        let list = r.load_balancers.unwrap_or_default().load_balancer;
        held.extend(list.iter().filter_map(|l| l.address.parse::<Ipv4Addr>().ok()));
        if list.len() < 100 {
            break;
        }
    }
    let free = (cidr.first()..=cidr.last())
        .map(Ipv4Addr::from)
        .find(|ip| !cidr.is_reserved(*ip) && !held.contains(ip) && !pins.contains(ip));
    // None: the vSwitch is full; asking without an address gets the cloud's own error for that.
    Ok(free.map(|ip| ip.to_string()).unwrap_or_default())
}

/// Where a pod is, once it runs (the lab knows): its IP, or `None` while it does not exist.
pub type PodAddresses<'a> = &'a (dyn Fn(&str) -> Option<Ipv4Addr> + Sync);

/// A backend as the API takes it (the `BackendServers` JSON element) and how apply compares it
/// with what the group has.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WantBackend {
    server_id: String,
    /// Empty for `ecs` backends: the cloud takes the instance's address.
    server_ip: String,
    port: u16,
    weight: u32,
    kind: &'static str,
}

impl WantBackend {
    fn json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "ServerId": self.server_id, "Port": self.port, "Weight": self.weight, "Type": self.kind,
        });
        if !self.server_ip.is_empty() {
            v["ServerIp"] = self.server_ip.clone().into();
        }
        v
    }

    fn matches(&self, b: &pb::SlbBackendServer) -> bool {
        b.server_id == self.server_id
            && i32::from(self.port) == b.port
            && (self.server_ip.is_empty() || b.server_ip == self.server_ip)
    }
}

fn backends_json(list: &[&WantBackend]) -> String {
    serde_json::Value::Array(list.iter().map(|b| b.json()).collect()).to_string()
}

/// The group a listener of the file forwards to.
fn group_name(l: &ListenerSpec) -> String {
    format!("enifab/{}/{}", l.protocol.value, l.port.value)
}

/// Make the file's load balancers exist as it says (see the module docs). Those with a `pod`
/// backend that `pods` cannot place yet are left alone and logged as waiting. `applied` must
/// hold the VPCs, vSwitches and instances of the file (what [`apply`] returns).
pub async fn apply_load_balancers(
    c: &mut Clients,
    topo: &Topology,
    applied: &mut Applied,
    pods: PodAddresses<'_>,
    log: &mut dyn FnMut(String),
) -> Result<()> {
    let region = topo.region.value.clone();
    for lb in &topo.load_balancers {
        let vpc_id = applied.vpcs[&lb.vpc.value].clone();
        let mut wanted: Vec<Vec<WantBackend>> = Vec::new();
        let mut waiting = None;
        for l in &lb.listeners {
            let mut list = Vec::new();
            for b in &l.backends {
                match resolve_backend(c, &region, &vpc_id, applied, pods, b).await? {
                    Some(w) => list.push(w),
                    None => waiting = b.pod.as_ref().map(|p| p.value.clone()),
                }
            }
            wanted.push(list);
        }
        if let Some(pod) = waiting {
            log(format!("{:<15} {:<28} {:<26} waits for pod {pod}", "load balancer", lb.name.value, "-"));
            continue;
        }
        let (id, address, created) = ensure_load_balancer(c, topo, &region, lb, applied).await?;
        if created {
            applied.created += 1;
        }
        log(format!(
            "{:<15} {:<28} {:<26} {} {address}",
            "load balancer",
            lb.name.value,
            id,
            if created { "created" } else { "exists" }
        ));
        sync_listeners(c, &region, &id, lb, &wanted).await.map_err(|e| anyhow!("{}: {e:#}", loc(topo, &lb.name)))?;
        applied.load_balancers.insert(lb.name.value.clone(), (id, address));
    }
    Ok(())
}

/// A backend of the file as the API names it; `None` for a pod that does not run yet.
async fn resolve_backend(
    c: &mut Clients,
    region: &str,
    vpc_id: &str,
    applied: &Applied,
    pods: PodAddresses<'_>,
    b: &BackendSpec,
) -> Result<Option<WantBackend>> {
    let port = b.port.value;
    let weight = b.weight.as_ref().map_or(100, |w| w.value);
    let eni = |server_id: String, server_ip: String| WantBackend { server_id, server_ip, port, weight, kind: "eni" };
    if let Some(pod) = &b.pod {
        let Some(ip) = pods(&pod.value) else { return Ok(None) };
        // The pod's member ENI, found by its address as the cloud-controller-manager finds it.
        let found = c
            .ecs
            .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
                region_id: region.into(),
                vpc_id: vpc_id.into(),
                private_ip_address: vec![ip.to_string()],
                max_results: Some(100),
                ..Default::default()
            })
            .await
            .map_err(api("DescribeNetworkInterfaces"))?
            .into_inner()
            .network_interface_sets
            .unwrap_or_default()
            .network_interface_set;
        let Some(e) = found.into_iter().next() else {
            bail!("pod {} ({ip}) has no ENI in its VPC", pod.value);
        };
        return Ok(Some(eni(e.network_interface_id, ip.to_string())));
    }
    if let Some(name) = &b.instance {
        let id =
            applied.instances.get(&name.value).ok_or_else(|| anyhow!("instance {} was not applied", name.value))?;
        return Ok(Some(WantBackend { server_id: id.clone(), server_ip: String::new(), port, weight, kind: "ecs" }));
    }
    if let Some(id) = &b.eni {
        let ip = match &b.ip {
            Some(ip) => ip.value.clone(),
            None => {
                let found = c
                    .ecs
                    .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
                        region_id: region.into(),
                        network_interface_id: vec![id.value.clone()],
                        ..Default::default()
                    })
                    .await
                    .map_err(api("DescribeNetworkInterfaces"))?
                    .into_inner()
                    .network_interface_sets
                    .unwrap_or_default()
                    .network_interface_set;
                found.first().map(|e| e.private_ip_address.clone()).ok_or_else(|| anyhow!("no ENI {}", id.value))?
            }
        };
        return Ok(Some(eni(id.value.clone(), ip)));
    }
    let ip = b.ip.as_ref().map(|i| i.value.clone()).unwrap_or_default();
    Ok(Some(WantBackend { server_id: ip.clone(), server_ip: ip, port, weight, kind: "ip" }))
}

/// The load balancer named in the file: found, or created. Returns its ID, address and whether
/// it was created.
async fn ensure_load_balancer(
    c: &mut Clients,
    topo: &Topology,
    region: &str,
    lb: &LoadBalancerSpec,
    applied: &Applied,
) -> Result<(String, String, bool)> {
    let address_type = lb.address_type.as_ref().map_or("internet", |t| t.value.as_str());
    let found = find_load_balancer(c, region, &lb.name.value).await?;
    if let Some(e) = found {
        let wrong_address = lb.address.as_ref().is_some_and(|a| a.value != e.address);
        if e.address_type != address_type || wrong_address {
            bail!(
                "{}: load balancer {} exists as {} {}, which the file does not describe",
                loc(topo, &lb.name),
                lb.name.value,
                e.address_type,
                e.address
            );
        }
        return Ok((e.load_balancer_id, e.address, false));
    }
    let r = c
        .slb
        .create_load_balancer(pb::CreateLoadBalancerRequest {
            region_id: region.into(),
            load_balancer_name: lb.name.value.clone(),
            address_type: address_type.into(),
            vpc_id: applied.vpcs[&lb.vpc.value].clone(),
            v_switch_id: lb.vswitch.as_ref().map(|s| applied.vswitches[&s.value].clone()).unwrap_or_default(),
            address: lb.address.as_ref().map(|a| a.value.clone()).unwrap_or_default(),
            ..Default::default()
        })
        .await
        .map_err(located(
            vec![
                (
                    &["\"Address\"", "IpConflict", "AvailableIp", "NetworkConflict"],
                    lb.address.as_ref().map(|a| loc(topo, a)),
                ),
                (&["VSwitch"], lb.vswitch.as_ref().map(|v| loc(topo, v))),
                (&["AddressType"], lb.address_type.as_ref().map(|t| loc(topo, t))),
            ],
            loc(topo, &lb.name),
            format!("load balancer {}", lb.name.value),
        ))?
        .into_inner();
    Ok((r.load_balancer_id, r.address, true))
}

/// The load balancer named `name`, if there is one.
pub async fn find_load_balancer(c: &mut Clients, region: &str, name: &str) -> Result<Option<pb::LoadBalancerItem>> {
    let r = c
        .slb
        .describe_load_balancers(pb::DescribeLoadBalancersRequest {
            region_id: region.into(),
            load_balancer_name: name.into(),
            page_size: Some(100),
            ..Default::default()
        })
        .await
        .map_err(api("DescribeLoadBalancers"))?;
    Ok(r.into_inner().load_balancers.unwrap_or_default().load_balancer.into_iter().next())
}

/// Listeners and their groups as the file says; what the file no longer has goes.
async fn sync_listeners(
    c: &mut Clients,
    region: &str,
    lb_id: &str,
    lb: &LoadBalancerSpec,
    wanted: &[Vec<WantBackend>],
) -> Result<()> {
    let what = |w: &str| format!("load balancer {}: {w}", lb.name.value);
    let groups = c
        .slb
        .describe_v_server_groups(pb::DescribeVServerGroupsRequest {
            region_id: region.into(),
            load_balancer_id: lb_id.into(),
            ..Default::default()
        })
        .await
        .map_err(api(&what("DescribeVServerGroups")))?
        .into_inner()
        .v_server_groups
        .unwrap_or_default()
        .v_server_group;
    let current = c
        .slb
        .describe_load_balancer_listeners(pb::DescribeLoadBalancerListenersRequest {
            region_id: region.into(),
            load_balancer_id: vec![lb_id.into()],
            max_results: Some(100),
            ..Default::default()
        })
        .await
        .map_err(api(&what("DescribeLoadBalancerListeners")))?
        .into_inner()
        .listeners;
    // Listeners first, then the groups only they used.
    for l in &current {
        let keep = lb
            .listeners
            .iter()
            .any(|s| s.protocol.value == l.listener_protocol && i32::from(s.port.value) == l.listener_port);
        if !keep {
            c.slb
                .delete_load_balancer_listener(pb::DeleteLoadBalancerListenerRequest {
                    region_id: region.into(),
                    load_balancer_id: lb_id.into(),
                    listener_port: Some(l.listener_port),
                    listener_protocol: l.listener_protocol.clone(),
                })
                .await
                .map_err(api(&what("DeleteLoadBalancerListener")))?;
        }
    }
    for g in &groups {
        let ours = g.v_server_group_name.starts_with("enifab/");
        if ours && !lb.listeners.iter().any(|l| group_name(l) == g.v_server_group_name) {
            c.slb
                .delete_v_server_group(pb::DeleteVServerGroupRequest {
                    region_id: region.into(),
                    v_server_group_id: g.v_server_group_id.clone(),
                })
                .await
                .map_err(api(&what("DeleteVServerGroup")))?;
        }
    }
    for (l, want) in lb.listeners.iter().zip(wanted) {
        let name = group_name(l);
        let group = match groups.iter().find(|g| g.v_server_group_name == name) {
            Some(g) => g.v_server_group_id.clone(),
            None => {
                c.slb
                    .create_v_server_group(pb::CreateVServerGroupRequest {
                        region_id: region.into(),
                        load_balancer_id: lb_id.into(),
                        v_server_group_name: name.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(api(&what("CreateVServerGroup")))?
                    .into_inner()
                    .v_server_group_id
            }
        };
        sync_backends(c, region, &group, want).await.map_err(|e| anyhow!("{}: {e:#}", what(&name)))?;
        let existing = current
            .iter()
            .find(|x| x.listener_protocol == l.protocol.value && x.listener_port == i32::from(l.port.value));
        if existing.is_none() {
            create_listener(c, region, lb_id, l, &group).await.map_err(api(&what("creating a listener")))?;
        }
        set_listener(c, region, lb_id, l, &group).await.map_err(api(&what("listener settings")))?;
        if existing.is_none_or(|x| x.status != "running") {
            c.slb
                .start_load_balancer_listener(pb::StartLoadBalancerListenerRequest {
                    region_id: region.into(),
                    load_balancer_id: lb_id.into(),
                    listener_port: Some(i32::from(l.port.value)),
                    listener_protocol: l.protocol.value.clone(),
                })
                .await
                .map_err(api(&what("StartLoadBalancerListener")))?;
        }
    }
    Ok(())
}

/// Make the group's backends `want`: remove the others, add the missing, fix weights.
async fn sync_backends(c: &mut Clients, region: &str, group: &str, want: &[WantBackend]) -> Result<()> {
    let have = c
        .slb
        .describe_v_server_group_attribute(pb::DescribeVServerGroupAttributeRequest {
            region_id: region.into(),
            v_server_group_id: group.into(),
        })
        .await
        .map_err(api("DescribeVServerGroupAttribute"))?
        .into_inner()
        .backend_servers
        .unwrap_or_default()
        .backend_server;
    let stale: Vec<serde_json::Value> = have
        .iter()
        .filter(|b| !want.iter().any(|w| w.matches(b)))
        .map(
            |b| serde_json::json!({"ServerId": b.server_id, "ServerIp": b.server_ip, "Port": b.port, "Type": b.r#type}),
        )
        .collect();
    let missing: Vec<&WantBackend> = want.iter().filter(|w| !have.iter().any(|b| w.matches(b))).collect();
    let reweigh: Vec<&WantBackend> =
        want.iter().filter(|w| have.iter().any(|b| w.matches(b) && b.weight != w.weight as i32)).collect();
    let batch = enifab_model::region::Limits::default().backend_servers_per_call;
    for chunk in stale.chunks(batch) {
        c.slb
            .remove_v_server_group_backend_servers(pb::RemoveVServerGroupBackendServersRequest {
                region_id: region.into(),
                v_server_group_id: group.into(),
                backend_servers: serde_json::Value::Array(chunk.to_vec()).to_string(),
            })
            .await
            .map_err(api("RemoveVServerGroupBackendServers"))?;
    }
    for chunk in missing.chunks(batch) {
        c.slb
            .add_v_server_group_backend_servers(pb::AddVServerGroupBackendServersRequest {
                region_id: region.into(),
                v_server_group_id: group.into(),
                backend_servers: backends_json(chunk),
            })
            .await
            .map_err(api("AddVServerGroupBackendServers"))?;
    }
    for chunk in reweigh.chunks(batch) {
        c.slb
            .set_v_server_group_attribute(pb::SetVServerGroupAttributeRequest {
                region_id: region.into(),
                v_server_group_id: group.into(),
                backend_servers: Some(backends_json(chunk)),
                ..Default::default()
            })
            .await
            .map_err(api("SetVServerGroupAttribute"))?;
    }
    Ok(())
}

async fn create_listener(
    c: &mut Clients,
    region: &str,
    lb_id: &str,
    l: &ListenerSpec,
    group: &str,
) -> Result<(), Status> {
    let (region_id, load_balancer_id) = (region.to_string(), lb_id.to_string());
    let (listener_port, v_server_group_id, bandwidth) = (Some(i32::from(l.port.value)), group.to_string(), Some(-1));
    if l.protocol.value == "udp" {
        let req = pb::CreateLoadBalancerUdpListenerRequest {
            region_id,
            load_balancer_id,
            listener_port,
            v_server_group_id,
            bandwidth,
            ..Default::default()
        };
        c.slb.create_load_balancer_udp_listener(req).await.map(|_| ())
    } else {
        let req = pb::CreateLoadBalancerTcpListenerRequest {
            region_id,
            load_balancer_id,
            listener_port,
            v_server_group_id,
            bandwidth,
            ..Default::default()
        };
        c.slb.create_load_balancer_tcp_listener(req).await.map(|_| ())
    }
}

/// Every setting of the file's listener, the API's default where the file says nothing, so the
/// file is the whole truth (except URI, domain and codes, which stay when left out).
async fn set_listener(c: &mut Clients, region: &str, lb_id: &str, l: &ListenerSpec, group: &str) -> Result<(), Status> {
    let udp = l.protocol.value == "udp";
    let h = l.health_check.as_ref();
    let num = |v: Option<u32>, default: u32| Some(v.unwrap_or(default) as i32);
    let text = |v: Option<&crate::topology::S<String>>| v.map(|v| v.value.clone()).unwrap_or_default();
    let switch = if h.and_then(|h| h.enabled).unwrap_or(true) { "on" } else { "off" }.to_string();
    let connect_port = Some(h.and_then(|h| h.port.as_ref()).map_or(-520, |p| i32::from(p.value)));
    let interval = num(h.and_then(|h| h.interval.as_ref()).map(|v| v.value), if udp { 5 } else { 2 });
    let timeout = num(h.and_then(|h| h.timeout.as_ref()).map(|v| v.value), if udp { 10 } else { 5 });
    let healthy = num(h.and_then(|h| h.healthy_threshold.as_ref()).map(|v| v.value), 3);
    let unhealthy = num(h.and_then(|h| h.unhealthy_threshold.as_ref()).map(|v| v.value), 3);
    let scheduler = l.scheduler.as_ref().map_or("wrr".to_string(), |s| s.value.clone());
    let persistence = num(l.persistence_timeout.as_ref().map(|v| v.value), 0);
    let (region_id, load_balancer_id) = (region.to_string(), lb_id.to_string());
    let listener_port = Some(i32::from(l.port.value));
    if udp {
        let req = pb::SetLoadBalancerUdpListenerAttributeRequest {
            region_id,
            load_balancer_id,
            listener_port,
            v_server_group: "on".into(),
            v_server_group_id: group.into(),
            scheduler,
            persistence_timeout: persistence,
            health_check_switch: switch,
            health_check_connect_port: connect_port,
            health_check_connect_timeout: timeout,
            health_check_interval: interval,
            healthy_threshold: healthy,
            unhealthy_threshold: unhealthy,
            health_check_req: text(h.and_then(|h| h.request.as_ref())),
            health_check_exp: text(h.and_then(|h| h.expect.as_ref())),
            ..Default::default()
        };
        c.slb.set_load_balancer_udp_listener_attribute(req).await.map(|_| ())
    } else {
        let req = pb::SetLoadBalancerTcpListenerAttributeRequest {
            region_id,
            load_balancer_id,
            listener_port,
            v_server_group: "on".into(),
            v_server_group_id: group.into(),
            scheduler,
            persistence_timeout: persistence,
            established_timeout: num(l.established_timeout.as_ref().map(|v| v.value), 900),
            health_check_switch: switch,
            health_check_type: h.and_then(|h| h.check_type.as_ref()).map_or("tcp".into(), |t| t.value.clone()),
            health_check_connect_port: connect_port,
            health_check_connect_timeout: timeout,
            health_check_interval: interval,
            healthy_threshold: healthy,
            unhealthy_threshold: unhealthy,
            health_check_u_r_i: text(h.and_then(|h| h.uri.as_ref())),
            health_check_domain: text(h.and_then(|h| h.domain.as_ref())),
            health_check_http_code: text(h.and_then(|h| h.http_code.as_ref())),
            ..Default::default()
        };
        c.slb.set_load_balancer_tcp_listener_attribute(req).await.map(|_| ())
    }
}

/// Delete the file's load balancers (protection off first), for a teardown: a VPC cannot go while
/// a load balancer is in it.
pub async fn delete_load_balancers(c: &mut Clients, topo: &Topology, log: &mut dyn FnMut(String)) -> Result<()> {
    let region = topo.region.value.clone();
    for lb in &topo.load_balancers {
        let Some(found) = find_load_balancer(c, &region, &lb.name.value).await? else { continue };
        let id = found.load_balancer_id;
        if found.delete_protection == "on" {
            c.slb
                .set_load_balancer_delete_protection(pb::SetLoadBalancerDeleteProtectionRequest {
                    region_id: region.clone(),
                    load_balancer_id: id.clone(),
                    delete_protection: "off".into(),
                })
                .await
                .map_err(api(&format!("load balancer {}", lb.name.value)))?;
        }
        c.slb
            .delete_load_balancer(pb::DeleteLoadBalancerRequest {
                region_id: region.clone(),
                load_balancer_id: id.clone(),
            })
            .await
            .map_err(api(&format!("load balancer {}", lb.name.value)))?;
        log(format!("deleted load balancer {} ({id})", lb.name.value));
    }
    Ok(())
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

/// The instance's trunk ENI, found by tag, created and attached if needed.
async fn ensure_trunk(
    c: &mut Clients,
    topo: &Topology,
    region: &str,
    applied: &Applied,
    i: &InstanceSpec,
    t: &TrunkSpec,
    pins: Option<&HashSet<Ipv4Addr>>,
) -> Result<(String, bool)> {
    let (name, instance_id) = (&i.name.value, &applied.instances[&i.name.value]);
    let tag = pb::Tag { key: TRUNK_TAG.into(), value: name.clone() };
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
    let vswitch_at = Some(loc(topo, &t.vswitch));
    let groups_at = t.security_groups.first().map(|g| loc(topo, g));
    // The groups and the vSwitch disagree on the VPC: the file's node says which is the odd one.
    let vpc_of = |vsw: &str| topo.vswitch(vsw).map(|(v, _)| v.name.value.clone());
    let mismatch_at = if vpc_of(&t.vswitch.value) != vpc_of(&i.vswitch.value) { &vswitch_at } else { &groups_at };
    let (eni, created) = match found.into_iter().next() {
        Some(e) => {
            if !e.instance_id.is_empty() && e.instance_id != *instance_id {
                bail!(
                    "{}: trunk ENI {} of {name} is attached to {}",
                    loc(topo, &i.name),
                    e.network_interface_id,
                    e.instance_id
                );
            }
            (e, false)
        }
        None => {
            let vswitch_id = applied.vswitches[&t.vswitch.value].clone();
            let cidr = topo.vswitch(&t.vswitch.value).map(|(_, s)| s.cidr.value.as_str()).unwrap_or("");
            let primary_ip_address = steer(c, region, &vswitch_id, cidr, pins).await?;
            let r = c
                .ecs
                .create_network_interface(pb::CreateNetworkInterfaceRequest {
                    region_id: region.into(),
                    primary_ip_address,
                    v_switch_id: vswitch_id,
                    security_group_ids: t
                        .security_groups
                        .iter()
                        .map(|g| applied.security_groups[&g.value].clone())
                        .collect(),
                    instance_type: "Trunk".into(),
                    description: "interface create by terway".into(),
                    tag: vec![tag, pb::Tag { key: "creator".into(), value: "terway".into() }],
                    source_dest_check: Some(false),
                    ..Default::default()
                })
                .await
                .map_err(located(
                    vec![
                        (&["VpcMismatch"], mismatch_at.clone()),
                        (&["VSwitch", "Zone", "IpNotEnough"], vswitch_at.clone()),
                        (&["SecurityGroup", "Group"], groups_at.clone()),
                    ],
                    loc(topo, &i.name),
                    format!("trunk ENI of {name}"),
                ))?
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
                instance_id: instance_id.clone(),
                network_interface_id: eni.network_interface_id.clone(),
                ..Default::default()
            })
            .await
            // Attaching fails on what the instance is (its type has no trunk support or no
            // room for another ENI), unless the trunk's vSwitch is elsewhere.
            .map_err(located(
                vec![(&["Zone", "VpcMismatch", "VSwitch"], vswitch_at)],
                loc(topo, &i.instance_type),
                format!("attaching the trunk ENI of {name}"),
            ))?;
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
    /// An IPv6 peer (`Ipv6SourceCidrIp` / `Ipv6DestCidrIp`); a rule has one family.
    peer_cidr6: String,
    peer_group: String,
    policy: String,
    priority: String,
}

fn desired_key(direction: &'static str, r: &RuleSpec, groups: &HashMap<String, String>) -> RuleKey {
    // Spelled as DescribeSecurityGroupAttribute answers, ICMPv6 included.
    let protocol = match r.protocol.value.to_ascii_uppercase() {
        p if p == "ICMPV6" => "ICMPv6".to_string(),
        p => p,
    };
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
        peer_cidr6: r.peer.as_ref().and_then(|p| parse_peer_cidr6(&p.value)).map(|c| c.to_string()).unwrap_or_default(),
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
        peer_cidr6: if ingress { p.ipv6_source_cidr_ip.clone() } else { p.ipv6_dest_cidr_ip.clone() },
        peer_group: if ingress { p.source_group_id.clone() } else { p.dest_group_id.clone() },
        policy: p.policy.clone(),
        priority: p.priority.clone(),
    }
}

fn permission(k: &RuleKey, description: &str) -> pb::Permission {
    let ingress = k.direction == "ingress";
    let (cidr, group) = (k.peer_cidr.clone(), k.peer_group.clone());
    let cidr6 = k.peer_cidr6.clone();
    pb::Permission {
        ipv6_source_cidr_ip: if ingress { cidr6.clone() } else { String::new() },
        ipv6_dest_cidr_ip: if ingress { String::new() } else { cidr6 },
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

/// Where a rule's error points: the field the cloud's code names, else the rule's protocol.
fn rule_error(topo: &Topology, r: &RuleSpec, what: String) -> impl FnOnce(Status) -> anyhow::Error {
    let at = |s: Option<&S<String>>| s.map(|s| loc(topo, s));
    located(
        vec![
            (&["SourceGroup", "DestGroup", "Group", "VpcMismatch"], at(r.peer_group.as_ref())),
            (&["CidrIp", "Cidr"], at(r.peer.as_ref())),
            (&["PortRange"], at(r.ports.as_ref())),
            (&["Policy"], at(r.policy.as_ref())),
            (&["Priority"], r.priority.as_ref().map(|p| loc(topo, p))),
        ],
        loc(topo, &r.protocol),
        what,
    )
}

/// Make the group's policy and rules what the file says.
async fn sync_rules(
    c: &mut Clients,
    topo: &Topology,
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
            .map_err(located(vec![], loc(topo, policy), format!("security group {} policy", g.name.value)))?;
    }
    let want: Vec<(RuleKey, &RuleSpec)> = g
        .ingress
        .iter()
        .map(|r| (desired_key("ingress", r, groups), r))
        .chain(g.egress.iter().map(|r| (desired_key("egress", r, groups), r)))
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
    // One call per missing rule, so a rule the cloud refuses is named by its own line.
    for (k, r) in want.iter().filter(|(k, _)| !current.iter().any(|p| current_key(p) == *k)) {
        let ingress = k.direction == "ingress";
        let what = format!("security group {} {} rule", g.name.value, k.direction);
        authorize(c, region, id, ingress, vec![permission(k, r.description.as_deref().unwrap_or_default())])
            .await
            .map_err(rule_error(topo, r, what))?;
    }
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

/// Read a file and apply it, waiting for it to settle (used by tests and the lab).
pub async fn apply_file(endpoint: &str, file: &Path) -> Result<Applied> {
    apply_file_with(endpoint, file, Wait::Settle).await
}

/// [`apply_file`], settling as `wait` says.
pub async fn apply_file_with(endpoint: &str, file: &Path, wait: Wait) -> Result<Applied> {
    let topo = Topology::load(file)?;
    let channel = cli::connect(endpoint).await.context("connecting")?;
    let mut clients = Clients::new(channel);
    apply_with(&mut clients, &topo, &mut |_| {}, wait).await
}
