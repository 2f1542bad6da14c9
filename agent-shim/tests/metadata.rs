//! The instance metadata service over real TCP (root): an emulator in this process, two nodes
//! with in-process shims (one in normal mode, one with tokens required), and HTTP requests made
//! from sockets opened inside each node's namespace to 100.100.100.200:80, the way Terway's
//! daemon reaches it. Every path Terway reads is compared with what the API says about the same
//! instance (DescribeInstances, DescribeNetworkInterfaces, DescribeVSwitches, DescribeVpcs),
//! before and after attaching a secondary ENI, assigning and unassigning an address, attaching a
//! trunk with a member, and detaching; each change must show within 1 s of the API showing it.
//! The VPC is dual stack and the secondary ENIs' vSwitch has an IPv6 /64: IPv6 addresses and
//! prefixes assigned to a NIC show as `ipv6s`, `ipv6-gateway`, `vswitch-ipv6-cidr-block`,
//! `ipv4-prefixes` and `ipv6-prefixes`, in the formats Terway's metadata client parses.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use enifab::cli::Clients;
use enifab_proto::v1 as pb;
use enifab_shim::driver::netns::run_in;
use enifab_shim::metadata::{MetadataError, MetadataOptions, MetadataServer};
use enifab_shim::{Shim, ShimOptions};
use support::{Emu, Netns, REGION, privileged};

const ZONE: &str = "cn-hongkong-b";
const META: &str = "/latest/meta-data/";
/// How soon a change the API shows must show in the metadata.
const WITHIN: Duration = Duration::from_secs(1);

// ---- the emulator and the cloud side ---------------------------------------------------------

struct Cloud {
    c: Clients,
    node_vsw: String,
    sec_vsw: String,
    pod_vsw: String,
    sg: String,
}

impl Cloud {
    /// VPC 10.0.0.0/8 with IPv6; vSwitches for nodes (10.0.4.0/24, IPv4 only), secondary ENIs
    /// (10.0.16.0/20, so another gateway and netmask, and the VPC's /64 number 16) and pods
    /// (10.0.64.0/22); one security group.
    async fn build(mut c: Clients) -> Cloud {
        let vpc_id = c
            .vpc
            .create_vpc(pb::CreateVpcRequest {
                region_id: REGION.into(),
                cidr_block: "10.0.0.0/8".into(),
                enable_ipv6: Some(true),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .vpc_id;
        let mut vsw = async |cidr: &str, ipv6: Option<i32>| {
            let req = pb::CreateVSwitchRequest {
                region_id: REGION.into(),
                vpc_id: vpc_id.clone(),
                zone_id: ZONE.into(),
                cidr_block: cidr.into(),
                ipv6_cidr_block: ipv6,
                ..Default::default()
            };
            c.vpc.create_v_switch(req).await.unwrap().into_inner().v_switch_id
        };
        let node_vsw = vsw("10.0.4.0/24", None).await;
        let sec_vsw = vsw("10.0.16.0/20", Some(16)).await;
        let pod_vsw = vsw("10.0.64.0/22", None).await;
        let sg = c
            .ecs
            .create_security_group(pb::CreateSecurityGroupRequest {
                region_id: REGION.into(),
                vpc_id,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .security_group_id;
        Cloud { c, node_vsw, sec_vsw, pod_vsw, sg }
    }

    async fn instance(&mut self, ip: &str) -> String {
        let req = pb::CreateInstanceRequest {
            region_id: REGION.into(),
            instance_type: "ecs.g7.xlarge".into(),
            v_switch_id: self.node_vsw.clone(),
            security_group_ids: vec![self.sg.clone()],
            private_ip_address: ip.into(),
            instance_name: format!("{REGION}.{ip}"),
            ..Default::default()
        };
        self.c.ecs.create_instance(req).await.unwrap().into_inner().instance_id
    }

    async fn eni(&mut self, vsw: &str, kind: &str) -> String {
        let req = pb::CreateNetworkInterfaceRequest {
            region_id: REGION.into(),
            v_switch_id: vsw.into(),
            security_group_ids: vec![self.sg.clone()],
            instance_type: kind.into(),
            ..Default::default()
        };
        self.c.ecs.create_network_interface(req).await.unwrap().into_inner().network_interface_id
    }

    async fn attach(&mut self, instance: &str, eni: &str, trunk: &str) {
        let req = pb::AttachNetworkInterfaceRequest {
            region_id: REGION.into(),
            instance_id: instance.into(),
            network_interface_id: eni.into(),
            trunk_network_instance_id: trunk.into(),
            ..Default::default()
        };
        self.c.ecs.attach_network_interface(req).await.unwrap();
    }

    async fn detach(&mut self, instance: &str, eni: &str) {
        let req = pb::DetachNetworkInterfaceRequest {
            region_id: REGION.into(),
            instance_id: instance.into(),
            network_interface_id: eni.into(),
            ..Default::default()
        };
        self.c.ecs.detach_network_interface(req).await.unwrap();
    }

    async fn eni_set(&mut self, id: &str) -> Option<pb::NetworkInterfaceSet> {
        let req = pb::DescribeNetworkInterfacesRequest {
            region_id: REGION.into(),
            network_interface_id: vec![id.into()],
            ..Default::default()
        };
        let r = self.c.ecs.describe_network_interfaces(req).await.unwrap().into_inner();
        r.network_interface_sets.unwrap_or_default().network_interface_set.into_iter().next()
    }

    /// Polls the API (not time-limited by [`WITHIN`]: the emulator's own transitions) until the
    /// ENI's status is `status` (`None`: gone from the instance, i.e. `Available`).
    async fn wait_status(&mut self, id: &str, status: &str) {
        for _ in 0..500 {
            if self.eni_set(id).await.is_some_and(|e| e.status == status) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{id} never became {status}");
    }

    /// The instance as the API describes it, reduced to what the metadata must agree with.
    async fn view(&mut self, instance_id: &str) -> ApiView {
        let req = pb::DescribeInstancesRequest {
            region_id: REGION.into(),
            instance_ids: format!("[\"{instance_id}\"]"),
            ..Default::default()
        };
        let r = self.c.ecs.describe_instances(req).await.unwrap().into_inner();
        let inst = r.instances.unwrap_or_default().instance.into_iter().next().expect("the instance is described");
        let vpc_attrs = inst.vpc_attributes.clone().unwrap_or_default();
        let primary_mac = inst
            .network_interfaces
            .clone()
            .unwrap_or_default()
            .network_interface
            .into_iter()
            .find(|n| n.r#type == "Primary")
            .expect("a primary NIC")
            .mac_address;
        let req = pb::DescribeVpcsRequest {
            region_id: REGION.into(),
            vpc_id: vpc_attrs.vpc_id.clone(),
            ..Default::default()
        };
        let vpc = self.c.vpc.describe_vpcs(req).await.unwrap().into_inner();
        let vpc_cidr = vpc.vpcs.unwrap_or_default().vpc.into_iter().next().expect("the VPC").cidr_block;
        let req = pb::DescribeNetworkInterfacesRequest {
            region_id: REGION.into(),
            instance_id: instance_id.into(),
            ..Default::default()
        };
        let r = self.c.ecs.describe_network_interfaces(req).await.unwrap().into_inner();
        let mut sets: Vec<_> = r
            .network_interface_sets
            .unwrap_or_default()
            .network_interface_set
            .into_iter()
            .filter(|e| e.status == "InUse")
            .collect();
        sets.sort_by_key(|e| e.attachment.as_ref().map_or(0, |a| a.device_index));
        let mut nics = Vec::new();
        for e in sets {
            let req = pb::DescribeVSwitchesRequest {
                region_id: REGION.into(),
                v_switch_id: e.v_switch_id.clone(),
                ..Default::default()
            };
            let v = self.c.vpc.describe_v_switches(req).await.unwrap().into_inner();
            let v = v.v_switches.unwrap_or_default().v_switch.into_iter().next().expect("the vSwitch");
            let (cidr, cidr6) = (v.cidr_block, v.ipv6_cidr_block);
            let ipv6: Vec<String> =
                e.ipv6_sets.unwrap_or_default().ipv6_set.into_iter().map(|s| s.ipv6_address).collect();
            let prefixes4: Vec<String> =
                e.ipv4_prefix_sets.unwrap_or_default().ipv4_prefix_set.into_iter().map(|s| s.ipv4_prefix).collect();
            let prefixes6: Vec<String> =
                e.ipv6_prefix_sets.unwrap_or_default().ipv6_prefix_set.into_iter().map(|s| s.ipv6_prefix).collect();
            let ips = e.private_ip_sets.unwrap_or_default().private_ip_set;
            let primary_ip =
                ips.iter().find(|s| s.primary).map(|s| s.private_ip_address.clone()).unwrap_or(e.private_ip_address);
            nics.push(ApiNic {
                id: e.network_interface_id,
                kind: e.r#type,
                mac: e.mac_address,
                primary_ip,
                ips: ips.into_iter().map(|s| s.private_ip_address).collect(),
                vswitch: e.v_switch_id,
                vswitch_cidr: cidr,
                vswitch_cidr6: cidr6,
                ipv6,
                prefixes4,
                prefixes6,
            });
        }
        ApiView {
            instance_id: inst.instance_id,
            instance_type: inst.instance_type,
            region: inst.region_id,
            zone: inst.zone_id,
            vpc_id: vpc_attrs.vpc_id,
            vpc_cidr,
            vswitch: vpc_attrs.v_switch_id,
            primary_mac,
            nics,
        }
    }
}

#[derive(Debug, Clone)]
struct ApiNic {
    id: String,
    kind: String,
    mac: String,
    primary_ip: String,
    ips: Vec<String>,
    vswitch: String,
    vswitch_cidr: String,
    /// Empty for an IPv4-only vSwitch.
    vswitch_cidr6: String,
    ipv6: Vec<String>,
    prefixes4: Vec<String>,
    prefixes6: Vec<String>,
}

#[derive(Debug, Clone)]
struct ApiView {
    instance_id: String,
    instance_type: String,
    region: String,
    zone: String,
    vpc_id: String,
    vpc_cidr: String,
    vswitch: String,
    primary_mac: String,
    /// `InUse` NICs (DescribeNetworkInterfaces by instance leaves members out), by DeviceIndex.
    nics: Vec<ApiNic>,
}

/// The VPC convention the emulator follows (reference §6): the gateway is the vSwitch CIDR's
/// last address minus 2 (`.253` in a /24). Worked out here from the CIDR alone, not taken from
/// the emulator, so the two are compared.
fn gateway_of(cidr: &str) -> String {
    let (net, len) = cidr.split_once('/').unwrap();
    let (net, len): (Ipv4Addr, u32) = (net.parse().unwrap(), len.parse().unwrap());
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    Ipv4Addr::from((u32::from(net) | !mask) - 2).to_string()
}

/// The same rule for a vSwitch's IPv6 /64, as Terway derives it (`DeriveGatewayIP`).
fn gateway6_of(cidr: &str) -> String {
    let (net, len) = cidr.split_once('/').unwrap();
    let (net, len): (std::net::Ipv6Addr, u32) = (net.parse().unwrap(), len.parse().unwrap());
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    std::net::Ipv6Addr::from((u128::from(net) | !mask) - 2).to_string()
}

fn netmask_of(cidr: &str) -> String {
    let len: u32 = cidr.split_once('/').unwrap().1.parse().unwrap();
    Ipv4Addr::from(u32::MAX.checked_shl(32 - len).unwrap_or(0)).to_string()
}

// ---- HTTP from inside a namespace ------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    status: u16,
    body: String,
}

/// One HTTP/1.1 request to 100.100.100.200:80 over a socket made inside `ns` (a plain client,
/// so what is checked is the bytes on the wire, not what a library makes of them).
fn http(ns: &Path, method: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Reply> {
    let mut s = run_in(ns, || {
        let addr = SocketAddr::from(([100, 100, 100, 200], 80));
        Ok(TcpStream::connect_timeout(&addr, Duration::from_secs(2)))
    })
    .expect("enter the node namespace")?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 100.100.100.200\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8(raw).expect("an HTTP reply in UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete HTTP reply");
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("a status line");
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    Ok(Reply { status, body: body.to_string() })
}

fn get(ns: &Path, path: &str) -> Reply {
    http(ns, "GET", path, &[]).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Everything the metadata must say about `api`, path → expected reply, for the paths Terway
/// reads (plus the per-MAC items ECS documents).
fn expected(api: &ApiView) -> BTreeMap<String, Reply> {
    let ok = |b: &str| Reply { status: 200, body: b.to_string() };
    let mut m = BTreeMap::new();
    let mut put = |p: String, r: Reply| {
        m.insert(p, r);
    };
    put(format!("{META}instance-id"), ok(&api.instance_id));
    put(format!("{META}instance/instance-type"), ok(&api.instance_type));
    put(format!("{META}region-id"), ok(&api.region));
    put(format!("{META}zone-id"), ok(&api.zone));
    put(format!("{META}vswitch-id"), ok(&api.vswitch));
    put(format!("{META}vpc-id"), ok(&api.vpc_id));
    put(format!("{META}vpc-cidr-block"), ok(&api.vpc_cidr));
    put(format!("{META}mac"), ok(&api.primary_mac));
    let primary = api.nics.iter().find(|n| n.kind == "Primary").expect("the primary is InUse");
    put(format!("{META}private-ipv4"), ok(&primary.primary_ip));
    let listing: Vec<String> = api.nics.iter().map(|n| format!("{}/", n.mac)).collect();
    put(format!("{META}network/interfaces/macs/"), ok(&listing.join("\n")));
    for n in &api.nics {
        let p = |item: &str| format!("{META}network/interfaces/macs/{}/{item}", n.mac);
        put(p("network-interface-id"), ok(&n.id));
        put(p("primary-ip-address"), ok(&n.primary_ip));
        // The API lists the primary first too; JSON exactly as Go's json.Marshal writes it.
        put(p("private-ipv4s"), ok(&serde_json::to_string(&n.ips).unwrap()));
        put(p("gateway"), ok(&gateway_of(&n.vswitch_cidr)));
        put(p("netmask"), ok(&netmask_of(&n.vswitch_cidr)));
        put(p("vswitch-id"), ok(&n.vswitch));
        put(p("vswitch-cidr-block"), ok(&n.vswitch_cidr));
        put(p("vpc-id"), ok(&api.vpc_id));
        put(p("vpc-cidr-block"), ok(&api.vpc_cidr));
        let absent = || Reply { status: 404, body: "Not Found".into() };
        // Terway strips the brackets and splits on commas; "no IPv6" is a 404.
        let ipv6s = if n.ipv6.is_empty() { absent() } else { ok(&format!("[{}]", n.ipv6.join(","))) };
        put(p("ipv6s"), ipv6s);
        let (gw6, cidr6) = match n.vswitch_cidr6.as_str() {
            "" => (absent(), absent()),
            c => (ok(&gateway6_of(c)), ok(c)),
        };
        put(p("ipv6-gateway"), gw6);
        put(p("vswitch-ipv6-cidr-block"), cidr6);
        let list = |l: &Vec<String>| if l.is_empty() { absent() } else { ok(&serde_json::to_string(l).unwrap()) };
        put(p("ipv4-prefixes"), list(&n.prefixes4));
        put(p("ipv6-prefixes"), list(&n.prefixes6));
    }
    m
}

/// Fetches every expected path from inside `ns`: the first difference, if any.
fn differences(ns: &Path, want: &BTreeMap<String, Reply>) -> Option<String> {
    for (path, w) in want {
        let got = match http(ns, "GET", path, &[]) {
            Ok(r) => r,
            Err(e) => return Some(format!("GET {path}: {e}")),
        };
        if &got != w {
            return Some(format!("GET {path}: got {got:?}, the API says {w:?}"));
        }
    }
    None
}

/// Waits until the metadata in `ns` agrees with the API's current view of `instance`, for at
/// most `within`; the time it took.
async fn agrees(cloud: &mut Cloud, ns: &Path, instance: &str, within: Duration, what: &str) -> Duration {
    let api = cloud.view(instance).await;
    let want = expected(&api);
    let ns = ns.to_path_buf();
    let what = what.to_string();
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        loop {
            let diff = differences(&ns, &want);
            let Some(diff) = diff else { return start.elapsed() };
            if start.elapsed() > within {
                panic!("{what}: the metadata still disagrees with the API after {within:?}: {diff}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap()
}

fn in_listing(ns: &Path, mac: &str) -> bool {
    get(ns, &format!("{META}network/interfaces/macs/")).body.split('\n').any(|l| l.trim_end_matches('/') == mac)
}

fn shim_options(emu: &Emu, instance: &str, ns: &Netns, dir: &Path, token_required: bool) -> ShimOptions {
    ShimOptions {
        endpoint: emu.grpc.to_string(),
        instance_id: instance.into(),
        netns: ns.name.clone(),
        control_socket: Some(dir.join(format!("{instance}.sock"))),
        geneve_listen: "127.0.0.1:0".parse().unwrap(),
        metadata: Some(MetadataOptions { token_required }),
        external_address: None,
        underlay: None,
        cni_state_dir: None,
        fast_path: None,
    }
}

// ---- the test ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_agrees_with_the_api_inside_the_node() {
    if !privileged("metadata_agrees_with_the_api_inside_the_node") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(&dir.path().join("data"), "127.0.0.1:0".parse().unwrap()).await;
    let mut cloud = Cloud::build(Clients::new(emu.channel().await)).await;
    let (ia, ib) = (cloud.instance("10.0.4.22").await, cloud.instance("10.0.4.23").await);
    let (na, nb) = (Netns::new("mda"), Netns::new("mdb"));
    let shim_a = Shim::start(shim_options(&emu, &ia, &na, dir.path(), false)).expect("shim A");
    let shim_b = Shim::start(shim_options(&emu, &ib, &nb, dir.path(), true)).expect("shim B");
    let (pa, pb_) = (na.path(), nb.path());
    assert!(na.ipv4_addrs("lo").contains(&"100.100.100.200/32".to_string()), "{:?}", na.ipv4_addrs("lo"));

    // Before any change: node A's answers are A's, as the API describes A (the first wait also
    // covers the shim registering; until then the service answers 503).
    agrees(&mut cloud, &pa, &ia, Duration::from_secs(10), "at start").await;
    let a_mac = get(&pa, &format!("{META}mac")).body;

    // Attach a secondary ENI from another vSwitch: it is listed, with its own gateway and mask.
    let sec = cloud.eni(&cloud.sec_vsw.clone(), "Secondary").await;
    cloud.attach(&ia, &sec, "").await;
    cloud.wait_status(&sec, "InUse").await;
    let took = agrees(&mut cloud, &pa, &ia, WITHIN, "after attaching a secondary ENI").await;
    eprintln!("attach visible in the metadata after {took:?}");
    let sec_mac = cloud.eni_set(&sec).await.unwrap().mac_address;
    assert_eq!(get(&pa, &format!("{META}network/interfaces/macs/{sec_mac}/gateway")).body, "10.0.31.253");

    // Assign a secondary address to it: private-ipv4s grows.
    let assigned = cloud
        .c
        .ecs
        .assign_private_ip_addresses(pb::AssignPrivateIpAddressesRequest {
            region_id: REGION.into(),
            network_interface_id: sec.clone(),
            secondary_private_ip_address_count: Some(1),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ip = assigned.assigned_private_ip_addresses_set.unwrap().private_ip_set.unwrap().private_ip_address[0].clone();
    let took = agrees(&mut cloud, &pa, &ia, WITHIN, "after assigning an address").await;
    eprintln!("assign visible in the metadata after {took:?}");
    let ips: Vec<String> =
        serde_json::from_str(&get(&pa, &format!("{META}network/interfaces/macs/{sec_mac}/private-ipv4s")).body)
            .unwrap();
    assert_eq!(ips.len(), 2);
    assert_eq!(ips[1], ip);

    // Dual stack: IPv6 addresses, then an IPv6 and an IPv4 prefix, each visible within 1 s.
    let v6 = cloud
        .c
        .ecs
        .assign_ipv6_addresses(pb::AssignIpv6AddressesRequest {
            region_id: REGION.into(),
            network_interface_id: sec.clone(),
            ipv6_address_count: Some(2),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let v6 = v6.ipv6_sets.unwrap().ipv6_address;
    agrees(&mut cloud, &pa, &ia, WITHIN, "after assigning IPv6 addresses").await;
    let listed = get(&pa, &format!("{META}network/interfaces/macs/{sec_mac}/ipv6s")).body;
    let parsed: Vec<std::net::Ipv6Addr> =
        listed.replace(['[', ']'], "").split(',').map(|a| a.trim().parse().unwrap()).collect();
    assert_eq!(parsed, v6.iter().map(|a| a.parse().unwrap()).collect::<Vec<std::net::Ipv6Addr>>());
    cloud
        .c
        .ecs
        .assign_ipv6_addresses(pb::AssignIpv6AddressesRequest {
            region_id: REGION.into(),
            network_interface_id: sec.clone(),
            ipv6_prefix_count: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    cloud
        .c
        .ecs
        .assign_private_ip_addresses(pb::AssignPrivateIpAddressesRequest {
            region_id: REGION.into(),
            network_interface_id: sec.clone(),
            ipv4_prefix_count: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    agrees(&mut cloud, &pa, &ia, WITHIN, "after assigning prefixes").await;
    // The node's own vSwitch is IPv4 only: eth0 still has no IPv6 items.
    assert_eq!(get(&pa, &format!("{META}network/interfaces/macs/{a_mac}/ipv6-gateway")).status, 404);

    // A trunk with a member: the trunk is a NIC of the guest, the member is not.
    let trunk = cloud.eni(&cloud.node_vsw.clone(), "Trunk").await;
    cloud.attach(&ia, &trunk, "").await;
    cloud.wait_status(&trunk, "InUse").await;
    let member = cloud.eni(&cloud.pod_vsw.clone(), "Secondary").await;
    cloud.attach(&ia, &member, &trunk).await;
    cloud.wait_status(&member, "InUse").await;
    agrees(&mut cloud, &pa, &ia, WITHIN, "after attaching a trunk and a member").await;
    let member_mac = cloud.eni_set(&member).await.unwrap().mac_address;
    assert!(!in_listing(&pa, &member_mac), "a member ENI is not a NIC of the guest");
    assert_eq!(get(&pa, &format!("{META}network/interfaces/macs/{member_mac}/network-interface-id")).status, 404);

    // Unassign, then detach: both go away again.
    cloud
        .c
        .ecs
        .unassign_private_ip_addresses(pb::UnassignPrivateIpAddressesRequest {
            region_id: REGION.into(),
            network_interface_id: sec.clone(),
            private_ip_address: vec![ip],
            ..Default::default()
        })
        .await
        .unwrap();
    agrees(&mut cloud, &pa, &ia, WITHIN, "after unassigning the address").await;
    cloud.detach(&ia, &sec).await;
    cloud.wait_status(&sec, "Available").await;
    agrees(&mut cloud, &pa, &ia, WITHIN, "after detaching the secondary ENI").await;
    assert!(!in_listing(&pa, &sec_mac));

    // Node B answers for B only, and only with a token.
    assert_eq!(get(&pb_, &format!("{META}instance-id")).status, 401, "tokens are required on B");
    assert_eq!(http(&pb_, "PUT", "/latest/api/token", &[]).unwrap().status, 400, "no TTL");
    let bad_ttl = [("X-aliyun-ecs-metadata-token-ttl-seconds", "21601")];
    assert_eq!(http(&pb_, "PUT", "/latest/api/token", &bad_ttl).unwrap().status, 400);
    let token =
        http(&pb_, "PUT", "/latest/api/token", &[("X-aliyun-ecs-metadata-token-ttl-seconds", "21600")]).unwrap();
    assert_eq!(token.status, 200);
    assert!(token.body.len() >= 32 && !token.body.contains('\n'), "{token:?}");
    let with = [("X-aliyun-ecs-metadata-token", token.body.as_str())];
    let b_id = http(&pb_, "GET", &format!("{META}instance-id"), &with).unwrap();
    assert_eq!(b_id, Reply { status: 200, body: ib.clone() });
    let b_mac = http(&pb_, "GET", &format!("{META}mac"), &with).unwrap().body;
    assert_ne!(b_mac, a_mac);
    let forged = [("X-aliyun-ecs-metadata-token", "0123456789abcdef")];
    assert_eq!(http(&pb_, "GET", &format!("{META}instance-id"), &forged).unwrap().status, 401);
    assert_eq!(http(&pb_, "GET", &format!("{META}nothing-here"), &with).unwrap().status, 404);
    // A token from B means nothing on A: each node's service keeps its own.
    assert_eq!(http(&pa, "GET", &format!("{META}instance-id"), &with).unwrap().status, 401);

    // Node A (normal mode): no token needed, a token honoured, unknown paths 404.
    let ta = http(&pa, "PUT", "/latest/api/token", &[("X-aliyun-ecs-metadata-token-ttl-seconds", "60")]).unwrap();
    let with_a = [("X-aliyun-ecs-metadata-token", ta.body.as_str())];
    assert_eq!(http(&pa, "GET", &format!("{META}instance-id"), &with_a).unwrap().body, ia);
    assert_eq!(get(&pa, "/latest/meta-data/network/interfaces/macs/00:00:00:00:00:00/gateway").status, 404);
    assert_eq!(get(&pa, "/latest/user-data").status, 404);
    let doc: serde_json::Value =
        serde_json::from_str(&get(&pa, "/latest/dynamic/instance-identity/document").body).unwrap();
    assert_eq!((doc["instance-id"].as_str(), doc["mac"].as_str()), (Some(ia.as_str()), Some(a_mac.as_str())));

    // Shutdown removes the address; nothing answers any more.
    shim_a.shutdown().await;
    shim_b.shutdown().await;
    for ns in [&na, &nb] {
        assert!(!ns.ipv4_addrs("lo").iter().any(|a| a.starts_with("100.100.100.200")), "{:?}", ns.ipv4_addrs("lo"));
    }
    let gone: PathBuf = pa.clone();
    assert!(tokio::task::spawn_blocking(move || http(&gone, "GET", META, &[])).await.unwrap().is_err());
}

/// The server alone, fed through its watch channel: `lo` down and the address left over from a
/// killed shim are both fine, a second server for the same namespace is refused, 503 until a
/// config arrives, and a new config answers from the next request on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_setup_is_idempotent_and_exclusive() {
    if !privileged("server_setup_is_idempotent_and_exclusive") {
        return;
    }
    let ns = Netns::new("mdx");
    ns.ip(&["link", "set", "lo", "down"]);
    ns.ip(&["addr", "add", "100.100.100.200/32", "dev", "lo"]);
    let (tx, rx) = tokio::sync::watch::channel(None);
    let server = MetadataServer::start(&ns.path(), rx.clone(), MetadataOptions::default()).expect("start");
    assert_eq!(server.local_addr(), SocketAddr::from(([100, 100, 100, 200], 80)));
    let second = MetadataServer::start(&ns.path(), rx, MetadataOptions::default());
    assert!(matches!(second, Err(MetadataError::Bind { .. })), "{second:?}");

    let p = ns.path();
    let fetch = |path: &'static str| {
        let p = p.clone();
        tokio::task::spawn_blocking(move || get(&p, path))
    };
    assert_eq!(fetch("/latest/meta-data/instance-id").await.unwrap().status, 503, "no config yet");
    let config = pb::NodeConfig { instance_id: "i-first".into(), ..Default::default() };
    tx.send_replace(Some(Arc::new(config)));
    assert_eq!(fetch("/latest/meta-data/instance-id").await.unwrap().body, "i-first");
    let config = pb::NodeConfig { instance_id: "i-second".into(), ..Default::default() };
    tx.send_replace(Some(Arc::new(config)));
    assert_eq!(fetch("/latest/meta-data/instance-id").await.unwrap().body, "i-second");

    server.shutdown().await;
    assert!(!ns.ipv4_addrs("lo").iter().any(|a| a.starts_with("100.100.100.200")));
    // The first server still stopped cleanly although a second one was tried (and dropped).
    assert!(tokio::task::spawn_blocking(move || http(&p, "GET", META, &[])).await.unwrap().is_err());
}
