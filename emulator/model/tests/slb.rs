//! The SLB (CLB 2014-05-15) part of the model: addresses and where they are held, the
//! cloud-controller-manager's create sequence and what it reads back, backends of every type,
//! listeners and their defaults, the error table, "a refused call changes nothing", and the
//! restore round trip.

use std::net::Ipv4Addr;

use enifab_model::eni::*;
use enifab_model::instance::*;
use enifab_model::security_group::*;
use enifab_model::slb::listener::{DescribeLoadBalancerListeners, ListenerParams};
use enifab_model::slb::load_balancer::*;
use enifab_model::slb::vserver_group::*;
use enifab_model::slb::*;
use enifab_model::vpc::*;
use enifab_model::{Kind, Millis, ModelError, Region, RegionConfig, Tag, TransitionDelays};

const T0: Millis = Millis(1_795_751_123_000);

struct Lab {
    r: Region,
    vpc: String,
    vsw: String,
    pod_vsw: String,
    node: String,
    /// A member ENI of the node's trunk: a trunk pod's ENI.
    member: String,
    member_ip: Ipv4Addr,
}

fn config() -> RegionConfig {
    let mut cfg = RegionConfig::new("cn-hongkong");
    cfg.delays = TransitionDelays::ZERO;
    cfg
}

fn vswitch(r: &mut Region, vpc: &str, cidr: &str) -> String {
    r.create_vswitch(
        CreateVSwitch {
            vpc_id: vpc.into(),
            zone_id: "cn-hongkong-b".into(),
            cidr_block: cidr.into(),
            ..Default::default()
        },
        T0,
    )
    .unwrap()
    .v_switch_id
}

fn lab_with(cfg: RegionConfig) -> Lab {
    let mut r = Region::new(cfg, 7);
    let vpc =
        r.create_vpc(CreateVpc { cidr_block: Some("10.0.0.0/8".into()), ..Default::default() }, T0).unwrap().vpc_id;
    let vsw = vswitch(&mut r, &vpc, "10.0.4.0/24");
    let pod_vsw = vswitch(&mut r, &vpc, "10.0.8.0/29");
    let sg = r
        .create_security_group(CreateSecurityGroup { vpc_id: vpc.clone(), ..Default::default() }, T0)
        .unwrap()
        .security_group_id;
    let node = r
        .create_instance(
            CreateInstance {
                instance_type: "ecs.g7.xlarge".into(),
                v_switch_id: vsw.clone(),
                security_group_ids: vec![sg.clone()],
                private_ip_address: Some("10.0.4.22".into()),
                ..Default::default()
            },
            T0,
        )
        .unwrap()
        .instance
        .instance_id;
    let eni = |r: &mut Region, vsw: &str, kind: Option<&str>| {
        r.create_network_interface(
            CreateNetworkInterface {
                v_switch_id: vsw.into(),
                security_group_ids: vec![sg.clone()],
                instance_type: kind.map(str::to_string),
                ..Default::default()
            },
            T0,
        )
        .unwrap()
    };
    let trunk = eni(&mut r, &vsw, Some("Trunk")).network_interface_id;
    r.attach_network_interface(
        AttachNetworkInterface { network_interface_id: trunk.clone(), instance_id: node.clone(), ..Default::default() },
        T0,
    )
    .unwrap();
    let m = eni(&mut r, &pod_vsw, None);
    r.attach_network_interface(
        AttachNetworkInterface {
            network_interface_id: m.network_interface_id.clone(),
            instance_id: node.clone(),
            trunk_network_instance_id: Some(trunk),
            ..Default::default()
        },
        T0,
    )
    .unwrap();
    Lab { r, vpc, vsw, pod_vsw, node, member: m.network_interface_id, member_ip: m.primary_ip_address }
}

fn lab() -> Lab {
    lab_with(config())
}

/// What CreateLoadBalancer gets from the CCM for a default internet Service (notes §2a.4).
fn ccm_create(name: &str, token: Option<&str>) -> CreateLoadBalancer {
    CreateLoadBalancer {
        address_type: Some("internet".into()),
        load_balancer_name: Some(name.into()),
        instance_charge_type: Some("PayByCLCU".into()),
        delete_protection: Some("on".into()),
        modification_protection_status: Some("ConsoleProtection".into()),
        modification_protection_reason: Some("managed.by.ack".into()),
        tags: vec![tag("kubernetes.do.not.delete", name), tag("ack.aliyun.com", "clusterid")],
        client_token: token.map(str::to_string),
        ..Default::default()
    }
}

fn tag(k: &str, v: &str) -> Tag {
    Tag { key: k.into(), value: v.into() }
}

fn internet(r: &mut Region) -> LoadBalancer {
    r.create_load_balancer(CreateLoadBalancer::default(), T0).unwrap()
}

fn intranet(r: &mut Region, vsw: &str, address: Option<&str>) -> Result<LoadBalancer, ModelError> {
    r.create_load_balancer(
        CreateLoadBalancer {
            v_switch_id: Some(vsw.into()),
            address: address.map(str::to_string),
            ..Default::default()
        },
        T0,
    )
}

fn backends(json: &str) -> Vec<BackendServerInput> {
    parse_backend_servers("BackendServers", json, 40).unwrap()
}

fn eni_backend(eni: &str, ip: Ipv4Addr, port: u16) -> String {
    format!(
        r#"[{{"serverId":"{eni}","serverIp":"{ip}","port":{port},"weight":100,"type":"eni","description":"k8s/80/web/default/c1","TargetRef":{{"kind":"Pod","name":"web-1"}},"NodeName":null,"IsUserManaged":false}}]"#
    )
}

fn tcp(lb: &str, port: i64) -> ListenerParams {
    ListenerParams { load_balancer_id: lb.into(), listener_port: Some(port), bandwidth: Some(-1), ..Default::default() }
}

fn available(r: &Region, vsw: &str) -> u64 {
    r.vswitch_view(r.vswitch(vsw).unwrap()).available_ip_address_count
}

fn code<T: std::fmt::Debug>(r: Result<T, ModelError>) -> &'static str {
    r.expect_err("the call must fail").code()
}

/// Every stored row (the ID generator's included): equal exactly when nothing changed. The
/// indexes (address allocators) are checked against the rows on the way.
fn fingerprint(r: &Region) -> String {
    r.check_invariants().unwrap();
    let mut rows = r.export_all();
    rows.sort();
    format!("{rows:?}")
}

#[test]
fn internet_load_balancers_take_pool_addresses_and_may_name_one() {
    let mut l = lab();
    let a = internet(&mut l.r);
    assert_eq!(a.address_type, AddressType::Internet);
    assert_eq!(a.address, Ipv4Addr::new(8, 210, 162, 1), "the first usable address of the default pool");
    assert!(a.load_balancer_id.starts_with("lb-j6c"), "{}", a.load_balancer_id);
    assert_eq!((a.vpc_id.as_str(), a.network_type()), ("", "classic"));
    // The seed article's address, by name (the emulator's leniency for internet load balancers).
    let seed = CreateLoadBalancer { address: Some("8.210.162.178".into()), ..Default::default() };
    assert_eq!(l.r.create_load_balancer(seed.clone(), T0).unwrap().address, Ipv4Addr::new(8, 210, 162, 178));
    assert_eq!(code(l.r.create_load_balancer(seed, T0)), "InvalidParameter", "the address is taken");
    let outside = CreateLoadBalancer { address: Some("1.2.3.4".into()), ..Default::default() };
    assert_eq!(code(l.r.create_load_balancer(outside, T0)), "InvalidParameter");
    // An internet load balancer may be given its VPC.
    let with_vpc = CreateLoadBalancer { vpc_id: Some(l.vpc.clone()), ..Default::default() };
    assert_eq!(l.r.create_load_balancer(with_vpc, T0).unwrap().vpc_id, l.vpc);
    let bad_vpc = CreateLoadBalancer { vpc_id: Some("vpc-nope".into()), ..Default::default() };
    assert_eq!(code(l.r.create_load_balancer(bad_vpc, T0)), "InvalidVpcId.NotExist");
    l.r.check_invariants().unwrap();
}

#[test]
fn an_empty_public_pool_is_the_regions_resource_limit() {
    let mut cfg = config();
    cfg.public_pool = "203.0.113.0/29".parse().unwrap();
    let mut l = lab_with(cfg);
    for _ in 0..4 {
        internet(&mut l.r);
    }
    let before = fingerprint(&l.r);
    assert_eq!(
        code(l.r.create_load_balancer(CreateLoadBalancer::default(), T0)),
        "OperationFailed.RegionResourceLimit"
    );
    assert_eq!(fingerprint(&l.r), before);
    // Deleting gives the address back.
    let first = l.r.load_balancers().next().unwrap().load_balancer_id.clone();
    l.r.delete_load_balancer(&first, T0).unwrap();
    internet(&mut l.r);
    l.r.check_invariants().unwrap();
}

#[test]
fn intranet_addresses_are_held_in_the_vswitch() {
    let mut l = lab();
    let free = available(&l.r, &l.vsw);
    let lb = intranet(&mut l.r, &l.vsw, None).unwrap();
    assert_eq!(lb.address_type, AddressType::Intranet, "a VSwitchId means intranet");
    assert_eq!(
        (lb.vpc_id.as_str(), lb.v_switch_id.as_str(), lb.network_type()),
        (l.vpc.as_str(), l.vsw.as_str(), "vpc")
    );
    assert_eq!(lb.master_zone_id, "cn-hongkong-b");
    assert_eq!(available(&l.r, &l.vsw), free - 1, "AvailableIpAddressCount counts the address");
    let named = intranet(&mut l.r, &l.vsw, Some("10.0.4.200")).unwrap();
    assert_eq!(named.address, Ipv4Addr::new(10, 0, 4, 200));
    // The address is nobody else's: not another load balancer's, not an ENI's.
    assert_eq!(code(intranet(&mut l.r, &l.vsw, Some("10.0.4.200"))), "InvalidParameter");
    assert_eq!(code(intranet(&mut l.r, &l.vsw, Some("10.0.4.22"))), "InvalidParameter", "the node's address");
    assert_eq!(code(intranet(&mut l.r, &l.vsw, Some("10.0.5.1"))), "InvalidParameter", "not in subnet");
    assert_eq!(code(intranet(&mut l.r, &l.vsw, Some("10.0.4.255"))), "InvalidParameter", "reserved");
    let sg = l.r.security_groups().next().unwrap().security_group_id.clone();
    let eni = l.r.create_network_interface(
        CreateNetworkInterface {
            v_switch_id: l.vsw.clone(),
            security_group_ids: vec![sg],
            primary_ip_address: Some("10.0.4.200".into()),
            ..Default::default()
        },
        T0,
    );
    assert_eq!(code(eni), "InvalidPrivateIpAddress.Duplicated");
    // Intranet needs a vSwitch that exists; the VPC, if named, must be the vSwitch's.
    let no_vsw = CreateLoadBalancer { address_type: Some("intranet".into()), ..Default::default() };
    assert_eq!(code(l.r.create_load_balancer(no_vsw, T0)), "MissingParam.VSwitchId");
    assert_eq!(code(intranet(&mut l.r, "vsw-nope", None)), "VSwitchNotExist");
    // Deleting the vSwitch or the VPC is refused while the load balancer is there.
    assert_eq!(code(l.r.delete_vswitch(&l.vsw, T0)), "DependencyViolation");
    l.r.check_invariants().unwrap();
    l.r.delete_load_balancer(&lb.load_balancer_id, T0).unwrap();
    l.r.delete_load_balancer(&named.load_balancer_id, T0).unwrap();
    assert_eq!(available(&l.r, &l.vsw), free);
    l.r.check_invariants().unwrap();
}

#[test]
fn a_full_vswitch_is_vswitch_available_ip_not_exist() {
    let mut l = lab();
    // 10.0.8.0/29 has four usable addresses; the member ENI holds one.
    for _ in 0..3 {
        intranet(&mut l.r, &l.pod_vsw, None).unwrap();
    }
    let before = fingerprint(&l.r);
    let e = intranet(&mut l.r, &l.pod_vsw, None).unwrap_err();
    assert_eq!((e.code(), e.http_status()), ("VSwitchAvailableIpNotExist", 400));
    assert!(e.to_string().contains("has no available ip"), "{e}");
    assert_eq!(fingerprint(&l.r), before);
    assert_eq!(available(&l.r, &l.pod_vsw), 0);
    l.r.check_invariants().unwrap();
}

#[test]
fn the_ccm_create_values_are_echoed_and_the_client_token_replays() {
    let mut l = lab();
    let lb = l.r.create_load_balancer(ccm_create("a0123456789abcdef", Some("tok-1")), T0).unwrap();
    assert_eq!(lb.load_balancer_name, "a0123456789abcdef");
    assert_eq!(lb.instance_charge_type, "PayByCLCU");
    assert_eq!(lb.delete_protection_str(), "on");
    assert_eq!(lb.modification_protection_status, "ConsoleProtection");
    assert_eq!(lb.modification_protection_reason, "managed.by.ack");
    assert_eq!(
        (lb.bandwidth, lb.internet_charge_type.as_str(), lb.load_balancer_spec.as_str()),
        (-1, "paybytraffic", "")
    );
    assert_eq!(lb.tags, vec![tag("kubernetes.do.not.delete", "a0123456789abcdef"), tag("ack.aliyun.com", "clusterid")]);
    // The CCM retries with the same token: the same load balancer, nothing new.
    let again = l.r.create_load_balancer(ccm_create("a0123456789abcdef", Some("tok-1")), T0).unwrap();
    assert_eq!(again.load_balancer_id, lb.load_balancer_id);
    assert_eq!(l.r.load_balancers().count(), 1);
    assert_eq!(code(l.r.create_load_balancer(ccm_create("other", Some("tok-1")), T0)), "IdempotentParameterMismatch");
    // Names start with a letter, like the CCM's "a<uid>".
    assert_eq!(code(l.r.create_load_balancer(ccm_create("0abc", None), T0)), "InvalidParameter");
    let bad = CreateLoadBalancer { modification_protection_status: Some("Maybe".into()), ..Default::default() };
    assert_eq!(code(l.r.create_load_balancer(bad, T0)), "InvalidParam.ModificationProtectionStatus");
    let bad = CreateLoadBalancer { tags: vec![tag("acs:x", "1")], ..Default::default() };
    assert_eq!(code(l.r.create_load_balancer(bad, T0)), "InvalidParam.TagKey");
    let bad = CreateLoadBalancer { bandwidth: Some(0), ..Default::default() };
    assert_eq!(code(l.r.create_load_balancer(bad, T0)), "InvalidParameter");
}

#[test]
fn describe_load_balancers_filters_by_tags_name_and_more() {
    let mut l = lab();
    let a = l.r.create_load_balancer(ccm_create("asvc1", None), T0).unwrap();
    let b = l.r.create_load_balancer(ccm_create("asvc2", None), T0).unwrap();
    let c = intranet(&mut l.r, &l.vsw, None).unwrap();
    let find = |r: &mut Region, req: DescribeLoadBalancers| -> Vec<String> {
        r.describe_load_balancers(&req, T0).unwrap().0.into_iter().map(|l| l.load_balancer_id).collect()
    };
    // The CCM's Tags JSON (TagValue before TagKey), and the reference's lower-case keys.
    let tags = parse_tags_filter(r#"[{"TagValue":"asvc2","TagKey":"kubernetes.do.not.delete"}]"#).unwrap();
    assert_eq!(find(&mut l.r, DescribeLoadBalancers { tags, ..Default::default() }), vec![b.load_balancer_id.clone()]);
    let tags = parse_tags_filter(r#"[{"tagKey":"ack.aliyun.com","tagValue":"clusterid"}]"#).unwrap();
    assert_eq!(find(&mut l.r, DescribeLoadBalancers { tags, ..Default::default() }).len(), 2);
    let tags = parse_tags_filter(r#"[{"TagKey":"kubernetes.do.not.delete","TagValue":"nobody"}]"#).unwrap();
    assert!(find(&mut l.r, DescribeLoadBalancers { tags, ..Default::default() }).is_empty());
    for bad in ["{", r#"{"TagKey":"a"}"#, r#"[{"TagValue":"x"}]"#, "[1]"] {
        assert_eq!(parse_tags_filter(bad).unwrap_err().code(), "InvalidTag", "{bad}");
    }
    let by_name = DescribeLoadBalancers { load_balancer_names: vec!["asvc1".into()], ..Default::default() };
    assert_eq!(find(&mut l.r, by_name), vec![a.load_balancer_id.clone()]);
    let by_ids = DescribeLoadBalancers {
        load_balancer_ids: vec![a.load_balancer_id.clone(), c.load_balancer_id.clone()],
        ..Default::default()
    };
    assert_eq!(find(&mut l.r, by_ids).len(), 2);
    let by_type = DescribeLoadBalancers { address_type: Some("intranet".into()), ..Default::default() };
    assert_eq!(find(&mut l.r, by_type), vec![c.load_balancer_id.clone()]);
    let by_vsw = DescribeLoadBalancers { v_switch_id: Some(l.vsw.clone()), ..Default::default() };
    assert_eq!(find(&mut l.r, by_vsw), vec![c.load_balancer_id.clone()]);
    let by_addr = DescribeLoadBalancers { address: Some(a.address.to_string()), ..Default::default() };
    assert_eq!(find(&mut l.r, by_addr), vec![a.load_balancer_id.clone()]);
    let by_vpc = DescribeLoadBalancers { vpc_id: Some(l.vpc.clone()), ..Default::default() };
    assert_eq!(find(&mut l.r, by_vpc), vec![c.load_balancer_id.clone()]);
    let page = DescribeLoadBalancers {
        page: enifab_model::paging::PageRequest { page_number: Some(2), page_size: Some(2), ..Default::default() },
        ..Default::default()
    };
    let (items, info) = l.r.describe_load_balancers(&page, T0).unwrap();
    assert_eq!((items.len(), info.total_count, info.page_number, info.page_size), (1, 3, 2, 2));
}

#[test]
fn backends_of_every_type_resolve_to_an_address() {
    let mut l = lab();
    let lb = internet(&mut l.r);
    let g =
        l.r.create_vserver_group(
            CreateVServerGroup {
                load_balancer_id: lb.load_balancer_id.clone(),
                v_server_group_name: "k8s/80/web/default/c1".into(),
                ..Default::default()
            },
            T0,
        )
        .unwrap();
    assert!(g.v_server_group_id.starts_with("rsp-"), "{}", g.v_server_group_id);
    assert!(g.backend_servers.is_empty());
    // An ip backend needs the VPC, which this internet load balancer does not know yet.
    let ip = backends(r#"[{"ServerId":"10.0.8.3","Type":"ip","Port":"80"}]"#);
    assert_eq!(code(l.r.add_vserver_group_backend_servers(&g.v_server_group_id, &ip, T0)), "NetworkConflict");
    // The CCM's lower-camel JSON with its own extra keys: the member ENI of a trunk pod.
    let added =
        l.r.add_vserver_group_backend_servers(
            &g.v_server_group_id,
            &backends(&eni_backend(&l.member, l.member_ip, 80)),
            T0,
        )
        .unwrap();
    assert_eq!(
        added.backend_servers,
        [BackendServer {
            server_id: l.member.clone(),
            server_ip: l.member_ip,
            port: 80,
            weight: 100,
            server_type: "eni".into(),
            description: "k8s/80/web/default/c1".into(),
        }]
    );
    assert_eq!(l.r.load_balancer(&lb.load_balancer_id).unwrap().vpc_id, l.vpc, "the first backend fixed the VPC");
    // ecs: the instance's primary address; PascalCase keys, numbers as strings.
    let ecs = backends(&format!(r#"[{{"ServerId":"{}","Port":"8080","Weight":"50"}}]"#, l.node));
    let g2 = l.r.add_vserver_group_backend_servers(&g.v_server_group_id, &ecs, T0).unwrap();
    let b = &g2.backend_servers[1];
    assert_eq!((b.server_ip, b.port, b.weight, b.server_type.as_str()), (Ipv4Addr::new(10, 0, 4, 22), 8080, 50, "ecs"));
    // ip: inside the VPC now that it is known.
    let g3 = l.r.add_vserver_group_backend_servers(&g.v_server_group_id, &ip, T0).unwrap();
    assert_eq!(g3.backend_servers[2].server_ip, Ipv4Addr::new(10, 0, 8, 3));
    let outside = backends(r#"[{"ServerId":"192.168.0.1","Type":"ip","Port":80}]"#);
    assert_eq!(code(l.r.add_vserver_group_backend_servers(&g.v_server_group_id, &outside, T0)), "NetworkConflict");
    l.r.check_invariants().unwrap();

    let before = fingerprint(&l.r);
    let refused = [
        (eni_backend(&l.member, l.member_ip, 80), "InvalidParameter"), // already in the group
        (eni_backend(&l.member, Ipv4Addr::new(10, 0, 8, 6), 81), "InvalidBackendServers.ServerIpConflict"),
        (eni_backend("eni-nope", l.member_ip, 81), "ResourceNotFound.vServers"),
        (r#"[{"ServerId":"i-nope","Port":80}]"#.to_string(), "InvalidServerId.NotExist"),
        (format!(r#"[{{"ServerId":"{}","Port":80,"Type":"eci"}}]"#, l.node), "BackendServer.InvalidType"),
        (format!(r#"[{{"ServerId":"{}","Port":0}}]"#, l.node), "InvalidParameter"),
        (format!(r#"[{{"ServerId":"{}","Port":80,"Weight":101}}]"#, l.node), "InvalidParameter"),
        (format!(r#"[{{"ServerId":"{}"}}]"#, l.node), "MissingParameter"),
        (format!(r#"[{{"ServerId":"{0}","Port":81}},{{"ServerId":"{0}","Port":81}}]"#, l.node), "InvalidParameter"),
        (format!(r#"[{{"serverId":"{}","type":"eni","port":81}}]"#, l.member), "MissingParameter"),
    ];
    for (json, want) in refused {
        let inputs = backends(&json);
        assert_eq!(code(l.r.add_vserver_group_backend_servers(&g.v_server_group_id, &inputs, T0)), want, "{json}");
        assert_eq!(fingerprint(&l.r), before, "{json} changed something");
    }
    for bad in ["{}", "[1]", r#"[{"Port":"eighty"}]"#, r#"[{"Port":[1]}]"#] {
        assert_eq!(parse_backend_servers("BackendServers", bad, 40).unwrap_err().code(), "InvalidParameter", "{bad}");
    }
    let forty_one = format!("[{}]", vec![r#"{"ServerId":"i-x","Port":1}"#; 41].join(","));
    assert_eq!(parse_backend_servers("BackendServers", &forty_one, 40).unwrap_err().code(), "InvalidParameter");
}

#[test]
fn a_backend_of_another_vpc_is_a_network_conflict() {
    let mut l = lab();
    let other =
        l.r.create_vpc(CreateVpc { cidr_block: Some("172.16.0.0/12".into()), ..Default::default() }, T0).unwrap();
    let lb =
        l.r.create_load_balancer(CreateLoadBalancer { vpc_id: Some(other.vpc_id), ..Default::default() }, T0).unwrap();
    let g =
        l.r.create_vserver_group(
            CreateVServerGroup { load_balancer_id: lb.load_balancer_id.clone(), ..Default::default() },
            T0,
        )
        .unwrap();
    let e = l.r.add_vserver_group_backend_servers(
        &g.v_server_group_id,
        &backends(&eni_backend(&l.member, l.member_ip, 80)),
        T0,
    );
    assert_eq!(code(e), "NetworkConflict");
}

#[test]
fn remove_set_and_modify_backends() {
    let mut l = lab();
    let lb = intranet(&mut l.r, &l.vsw, None).unwrap();
    let g =
        l.r.create_vserver_group(
            CreateVServerGroup {
                load_balancer_id: lb.load_balancer_id.clone(),
                v_server_group_name: "g".into(),
                backend_servers: backends(&eni_backend(&l.member, l.member_ip, 80)),
            },
            T0,
        )
        .unwrap();
    let id = g.v_server_group_id.clone();
    // Set: weight and description of the member; a port change of the only backend of that
    // server and address.
    let set = SetVServerGroupAttribute {
        v_server_group_id: id.clone(),
        v_server_group_name: Some("renamed".into()),
        backend_servers: Some(backends(&format!(
            r#"[{{"ServerId":"{}","ServerIp":"{}","Port":8080,"Weight":0,"Type":"eni"}}]"#,
            l.member, l.member_ip
        ))),
    };
    let g = l.r.set_vserver_group_attribute(&set, T0).unwrap();
    assert_eq!(g.v_server_group_name, "renamed");
    let b = &g.backend_servers[0];
    assert_eq!((b.port, b.weight, b.description.as_str()), (8080, 0, "k8s/80/web/default/c1"));
    let nothing = SetVServerGroupAttribute { v_server_group_id: id.clone(), ..Default::default() };
    assert_eq!(code(l.r.set_vserver_group_attribute(&nothing, T0)), "MissingParameter");
    // Modify: the old backend for a new one in one step.
    let old = backends(&eni_backend(&l.member, l.member_ip, 8080));
    let new = backends(&format!(r#"[{{"ServerId":"{}","Port":9090}}]"#, l.node));
    let g = l.r.modify_vserver_group_backend_servers(&id, &old, &new, T0).unwrap();
    assert_eq!(g.backend_servers.len(), 1);
    assert_eq!((g.backend_servers[0].server_id.as_str(), g.backend_servers[0].port), (l.node.as_str(), 9090));
    assert_eq!(code(l.r.modify_vserver_group_backend_servers(&id, &old, &new, T0)), "InvalidParameter", "old is gone");
    // Remove: what is not there is skipped.
    let g = l.r.remove_vserver_group_backend_servers(&id, &new, T0).unwrap();
    assert!(g.backend_servers.is_empty());
    l.r.remove_vserver_group_backend_servers(&id, &new, T0).unwrap();
    assert_eq!(code(l.r.describe_vserver_group_attribute("rsp-nope", T0)), "InvalidParameter");
    assert!(
        l.r.describe_vserver_group_attribute("rsp-nope", T0)
            .unwrap_err()
            .to_string()
            .contains("VServerGroupId does not exist")
    );
    l.r.check_invariants().unwrap();
}

#[test]
fn a_removed_eni_can_still_be_removed_from_a_group() {
    let mut l = lab();
    let lb = intranet(&mut l.r, &l.vsw, None).unwrap();
    let g =
        l.r.create_vserver_group(
            CreateVServerGroup {
                load_balancer_id: lb.load_balancer_id.clone(),
                backend_servers: backends(&eni_backend(&l.member, l.member_ip, 80)),
                ..Default::default()
            },
            T0,
        )
        .unwrap();
    let trunk = l.r.eni(&l.member).unwrap().attachment.clone().unwrap();
    l.r.detach_network_interface(
        DetachNetworkInterface {
            network_interface_id: l.member.clone(),
            instance_id: trunk.instance_id,
            trunk_network_instance_id: trunk.trunk_network_interface_id,
        },
        T0,
    )
    .unwrap();
    l.r.delete_network_interface(&l.member, T0).unwrap();
    assert_eq!(l.r.v_server_group(&g.v_server_group_id).unwrap().backend_servers.len(), 1, "backends stay");
    l.r.check_invariants().unwrap();
    let g =
        l.r.remove_vserver_group_backend_servers(
            &g.v_server_group_id,
            &backends(&eni_backend(&l.member, l.member_ip, 80)),
            T0,
        )
        .unwrap();
    assert!(g.backend_servers.is_empty());
}

#[test]
fn the_backend_quota_of_a_load_balancer() {
    let mut cfg = config();
    cfg.limits.backend_servers_per_load_balancer = 3;
    let mut l = lab_with(cfg);
    let lb = intranet(&mut l.r, &l.vsw, None).unwrap();
    let group = |r: &mut Region| {
        r.create_vserver_group(
            CreateVServerGroup { load_balancer_id: lb.load_balancer_id.clone(), ..Default::default() },
            T0,
        )
        .unwrap()
        .v_server_group_id
    };
    let (g1, g2) = (group(&mut l.r), group(&mut l.r));
    let ports = |from: u16, n: u16| {
        let items: Vec<String> =
            (from..from + n).map(|p| format!(r#"{{"ServerId":"{}","Port":{p}}}"#, l.node)).collect();
        backends(&format!("[{}]", items.join(",")))
    };
    l.r.add_vserver_group_backend_servers(&g1, &ports(1, 2), T0).unwrap();
    let e = l.r.add_vserver_group_backend_servers(&g2, &ports(10, 2), T0).unwrap_err();
    assert_eq!(e.code(), "InstanceBackendServerNumberOverLimit");
    l.r.add_vserver_group_backend_servers(&g2, &ports(10, 1), T0).unwrap();
    l.r.check_invariants().unwrap();
}

#[test]
fn listeners_start_stopped_take_defaults_and_partial_updates() {
    let mut l = lab();
    let lb = l.r.create_load_balancer(ccm_create("asvc", None), T0).unwrap().load_balancer_id;
    let g =
        l.r.create_vserver_group(CreateVServerGroup { load_balancer_id: lb.clone(), ..Default::default() }, T0)
            .unwrap()
            .v_server_group_id;
    // The CCM's create: VServerGroupId, Description, Bandwidth -1, Scheduler rr, nothing else.
    let ccm = ListenerParams {
        v_server_group_id: Some(g.clone()),
        description: Some("k8s/80/web/default/c1".into()),
        scheduler: Some("rr".into()),
        ..tcp(&lb, 80)
    };
    let t = l.r.create_load_balancer_listener(ListenerProtocol::Tcp, &ccm, T0).unwrap();
    assert_eq!(t.status, ListenerStatus::Stopped);
    assert_eq!(
        (t.scheduler, t.backend_server_port, t.v_server_group_id.as_deref()),
        (Scheduler::Rr, None, Some(g.as_str()))
    );
    assert_eq!((t.persistence_timeout, t.established_timeout, t.bandwidth), (0, 900, -1));
    let hc = &t.health_check;
    assert_eq!((hc.enabled, hc.check_type, hc.connect_timeout, hc.interval), (true, HealthCheckType::Tcp, 5, 2));
    assert_eq!(
        (hc.healthy_threshold, hc.unhealthy_threshold, hc.http_code.as_str(), hc.method.as_str()),
        (3, 3, "http_2xx", "head")
    );
    assert_eq!(code(l.r.create_load_balancer_listener(ListenerProtocol::Tcp, &ccm, T0)), "ListenerAlreadyExists");
    // A UDP listener on the same port is another listener.
    let u =
        l.r.create_load_balancer_listener(
            ListenerProtocol::Udp,
            &ListenerParams { backend_server_port: Some(53), ..tcp(&lb, 80) },
            T0,
        )
        .unwrap();
    assert_eq!(
        (u.health_check.check_type, u.health_check.connect_timeout, u.health_check.interval),
        (HealthCheckType::Udp, 10, 5)
    );
    assert_eq!(u.established_timeout, 0);
    assert_eq!(code(l.r.start_load_balancer_listener(&lb, Some(80), None, T0)), "TooManyListeners");
    l.r.start_load_balancer_listener(&lb, Some(80), Some("tcp"), T0).unwrap();
    l.r.start_load_balancer_listener(&lb, Some(80), Some("tcp"), T0).unwrap();
    let t = l.r.describe_load_balancer_listener_attribute(ListenerProtocol::Tcp, &lb, Some(80), T0).unwrap();
    assert_eq!(t.status, ListenerStatus::Running);
    // A partial update changes what it names.
    let set = ListenerParams {
        health_check_type: Some("http".into()),
        health_check_uri: Some("/healthz".into()),
        health_check_http_code: Some("http_3xx,http_2xx".into()),
        health_check_interval: Some(10),
        persistence_timeout: Some(60),
        ..ListenerParams { load_balancer_id: lb.clone(), listener_port: Some(80), ..Default::default() }
    };
    let t = l.r.set_load_balancer_listener_attribute(ListenerProtocol::Tcp, &set, T0).unwrap();
    assert_eq!((t.health_check.check_type, t.health_check.uri.as_str()), (HealthCheckType::Http, "/healthz"));
    assert_eq!((t.health_check.http_code.as_str(), t.health_check.interval), ("http_2xx,http_3xx", 10));
    assert_eq!((t.persistence_timeout, t.scheduler, t.status), (60, Scheduler::Rr, ListenerStatus::Running));
    assert_eq!(t.description, "k8s/80/web/default/c1");
    // What the CCM sends back from DescribeLoadBalancerListeners: unset integers as 0.
    let echo = ListenerParams {
        health_check_connect_port: Some(0),
        connection_drain: Some("off".into()),
        connection_drain_timeout: Some(0),
        persistence_timeout: Some(60),
        acl_status: Some("off".into()),
        v_server_group: Some("on".into()),
        v_server_group_id: Some(g.clone()),
        ..tcp(&lb, 80)
    };
    let again = l.r.set_load_balancer_listener_attribute(ListenerProtocol::Tcp, &echo, T0).unwrap();
    assert_eq!(again, t, "sending back what was read changes nothing");
    // The group is in use.
    assert_eq!(code(l.r.delete_vserver_group(&g, T0)), "RspoolVipExist");
    l.r.check_invariants().unwrap();

    let before = fingerprint(&l.r);
    let refused: Vec<(ListenerProtocol, ListenerParams, &str)> = vec![
        (ListenerProtocol::Tcp, ListenerParams { bandwidth: None, ..tcp(&lb, 81) }, "MissingParameter"),
        (ListenerProtocol::Tcp, tcp(&lb, 81), "MissingParameter"),
        (ListenerProtocol::Tcp, ListenerParams { listener_port: Some(0), ..tcp(&lb, 81) }, "InvalidParameter"),
        (
            ListenerProtocol::Tcp,
            ListenerParams { v_server_group_id: Some("rsp-nope".into()), ..tcp(&lb, 81) },
            "ResourceNotFound.VServerGroup",
        ),
        (
            ListenerProtocol::Tcp,
            ListenerParams { backend_server_port: Some(80), scheduler: Some("qch".into()), ..tcp(&lb, 81) },
            "InvalidParameter",
        ),
        (
            ListenerProtocol::Tcp,
            ListenerParams { backend_server_port: Some(80), persistence_timeout: Some(3601), ..tcp(&lb, 81) },
            "InvalidParameter",
        ),
        (
            ListenerProtocol::Tcp,
            ListenerParams { backend_server_port: Some(80), established_timeout: Some(9), ..tcp(&lb, 81) },
            "InvalidParameter",
        ),
        (
            ListenerProtocol::Tcp,
            ListenerParams { backend_server_port: Some(80), health_check_interval: Some(51), ..tcp(&lb, 81) },
            "InvalidParameter",
        ),
        (
            ListenerProtocol::Tcp,
            ListenerParams { backend_server_port: Some(80), healthy_threshold: Some(1), ..tcp(&lb, 81) },
            "InvalidParameter",
        ),
        (
            ListenerProtocol::Tcp,
            ListenerParams {
                backend_server_port: Some(80),
                health_check_http_code: Some("http_6xx".into()),
                ..tcp(&lb, 81)
            },
            "InvalidParameter",
        ),
        (
            ListenerProtocol::Tcp,
            ListenerParams { backend_server_port: Some(80), health_check_uri: Some("healthz".into()), ..tcp(&lb, 81) },
            "InvalidParameter",
        ),
        (
            ListenerProtocol::Tcp,
            ListenerParams { backend_server_port: Some(80), bandwidth: Some(0), ..tcp(&lb, 81) },
            "InvalidParameter",
        ),
        (
            ListenerProtocol::Tcp,
            ListenerParams { backend_server_port: Some(80), acl_status: Some("on".into()), ..tcp(&lb, 81) },
            "UnsupportedParameter",
        ),
        (
            ListenerProtocol::Udp,
            ListenerParams { backend_server_port: Some(80), health_check_type: Some("http".into()), ..tcp(&lb, 81) },
            "InvalidParameter",
        ),
        (
            ListenerProtocol::Udp,
            ListenerParams {
                backend_server_port: Some(80),
                health_check_req: Some("hello world".into()),
                ..tcp(&lb, 81)
            },
            "InvalidParameter",
        ),
        (
            ListenerProtocol::Tcp,
            ListenerParams { backend_server_port: Some(80), ..tcp("lb-nope", 81) },
            "InvalidLoadBalancerId.NotFound",
        ),
    ];
    for (proto, p, want) in refused {
        assert_eq!(code(l.r.create_load_balancer_listener(proto, &p, T0)), want, "{p:?}");
        assert_eq!(fingerprint(&l.r), before, "{p:?} changed something");
    }
    let set_refused = [
        (ListenerParams { listener_port: Some(81), ..tcp(&lb, 81) }, "ResourceNotFound.Listener"),
        (ListenerParams { v_server_group: Some("off".into()), ..tcp(&lb, 80) }, "MissingParameter"),
        (ListenerParams { v_server_group: Some("maybe".into()), ..tcp(&lb, 80) }, "InvalidParameter"),
        (ListenerParams { unhealthy_threshold: Some(11), ..tcp(&lb, 80) }, "InvalidParameter"),
    ];
    for (p, want) in set_refused {
        assert_eq!(code(l.r.set_load_balancer_listener_attribute(ListenerProtocol::Tcp, &p, T0)), want, "{p:?}");
        assert_eq!(fingerprint(&l.r), before, "{p:?} changed something");
    }
    assert_eq!(code(l.r.stop_load_balancer_listener(&lb, Some(81), None, T0)), "ResourceNotFound.Listener");
    assert_eq!(code(l.r.stop_load_balancer_listener(&lb, Some(80), Some("sctp"), T0)), "IllegalParam.ListenerProtocol");
    assert_eq!(fingerprint(&l.r), before);

    // Switch to a fixed backend port, then delete the listener and the group.
    let off = ListenerParams { v_server_group: Some("off".into()), backend_server_port: Some(8080), ..tcp(&lb, 80) };
    let t = l.r.set_load_balancer_listener_attribute(ListenerProtocol::Tcp, &off, T0).unwrap();
    assert_eq!((t.v_server_group_id, t.backend_server_port), (None, Some(8080)));
    l.r.delete_vserver_group(&g, T0).unwrap();
    l.r.delete_load_balancer_listener(&lb, Some(80), Some("udp"), T0).unwrap();
    l.r.delete_load_balancer_listener(&lb, Some(80), None, T0).unwrap();
    assert!(l.r.load_balancer(&lb).unwrap().listeners.is_empty());
    l.r.check_invariants().unwrap();
}

#[test]
fn describe_load_balancer_listeners_pages_with_an_empty_last_token() {
    let mut l = lab();
    let a = internet(&mut l.r).load_balancer_id;
    let b = internet(&mut l.r).load_balancer_id;
    for (lb, port) in [(&a, 80), (&a, 443), (&a, 8080), (&b, 80), (&b, 53)] {
        l.r.create_load_balancer_listener(
            ListenerProtocol::Tcp,
            &ListenerParams { backend_server_port: Some(80), ..tcp(lb, port) },
            T0,
        )
        .unwrap();
    }
    let mut req = DescribeLoadBalancerListeners { max_results: Some(2), ..Default::default() };
    let mut seen = Vec::new();
    loop {
        let (items, info) = l.r.describe_load_balancer_listeners(&req, T0).unwrap();
        assert_eq!(info.total_count, 5);
        seen.extend(items.into_iter().map(|(lb, x)| (lb, x.listener_port)));
        if info.next_token.is_empty() {
            break;
        }
        req.next_token = Some(info.next_token);
    }
    assert_eq!(seen.len(), 5);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "load balancer, then port order");
    let one = DescribeLoadBalancerListeners {
        load_balancer_ids: vec![b.clone()],
        max_results: Some(50),
        ..Default::default()
    };
    let (items, info) = l.r.describe_load_balancer_listeners(&one, T0).unwrap();
    assert_eq!((items.len(), info.next_token.as_str()), (2, ""));
    let udp = DescribeLoadBalancerListeners { listener_protocol: Some("udp".into()), ..Default::default() };
    assert!(l.r.describe_load_balancer_listeners(&udp, T0).unwrap().0.is_empty());
    for (bad, want) in [
        (DescribeLoadBalancerListeners { max_results: Some(101), ..Default::default() }, "IllegalParam.MaxResults"),
        (
            DescribeLoadBalancerListeners { next_token: Some("zz".into()), ..Default::default() },
            "IllegalParam.NextToken",
        ),
        (
            DescribeLoadBalancerListeners { listener_protocol: Some("sctp".into()), ..Default::default() },
            "IllegalParam.ListenerProtocol",
        ),
        (
            DescribeLoadBalancerListeners { load_balancer_ids: vec!["lb-nope".into()], ..Default::default() },
            "InvalidLoadBalancerId.NotFound",
        ),
    ] {
        assert_eq!(code(l.r.describe_load_balancer_listeners(&bad, T0)), want);
    }
}

#[test]
fn health_targets_are_the_backends_of_running_checked_listeners() {
    let mut l = lab();
    let lb = intranet(&mut l.r, &l.vsw, None).unwrap().load_balancer_id;
    let g =
        l.r.create_vserver_group(
            CreateVServerGroup {
                load_balancer_id: lb.clone(),
                backend_servers: backends(&eni_backend(&l.member, l.member_ip, 80)),
                ..Default::default()
            },
            T0,
        )
        .unwrap()
        .v_server_group_id;
    let with_group = |port| ListenerParams { v_server_group_id: Some(g.clone()), ..tcp(&lb, port) };
    l.r.create_load_balancer_listener(ListenerProtocol::Tcp, &with_group(80), T0).unwrap();
    l.r.create_load_balancer_listener(
        ListenerProtocol::Tcp,
        &ListenerParams { health_check_switch: Some("off".into()), ..with_group(81) },
        T0,
    )
    .unwrap();
    l.r.create_load_balancer_listener(
        ListenerProtocol::Tcp,
        &ListenerParams { backend_server_port: Some(80), ..tcp(&lb, 82) },
        T0,
    )
    .unwrap();
    let targets = l.r.health_targets(&lb, None, None, T0).unwrap();
    assert_eq!(targets.len(), 2, "the listener without a group has no backends: {targets:?}");
    assert!(targets.iter().all(|t| !t.checked), "stopped listeners are not checked");
    l.r.start_load_balancer_listener(&lb, Some(80), None, T0).unwrap();
    l.r.start_load_balancer_listener(&lb, Some(81), None, T0).unwrap();
    let targets = l.r.health_targets(&lb, None, None, T0).unwrap();
    let checked: Vec<(u16, bool)> = targets.iter().map(|t| (t.listener_port, t.checked)).collect();
    assert_eq!(checked, [(80, true), (81, false)]);
    assert_eq!(l.r.health_targets(&lb, Some(80), Some("tcp"), T0).unwrap().len(), 1);
    assert_eq!(code(l.r.health_targets("lb-nope", None, None, T0)), "InvalidLoadBalancerId.NotFound");
}

#[test]
fn delete_protection_tags_and_names() {
    let mut l = lab();
    let lb = l.r.create_load_balancer(ccm_create("asvc", None), T0).unwrap().load_balancer_id;
    let g =
        l.r.create_vserver_group(CreateVServerGroup { load_balancer_id: lb.clone(), ..Default::default() }, T0)
            .unwrap()
            .v_server_group_id;
    l.r.create_load_balancer_listener(
        ListenerProtocol::Tcp,
        &ListenerParams { v_server_group_id: Some(g.clone()), ..tcp(&lb, 80) },
        T0,
    )
    .unwrap();
    let e = l.r.delete_load_balancer(&lb, T0).unwrap_err();
    assert_eq!((e.code(), e.http_status()), ("OperationDenied.DeleteProtectionIsOn", 400));
    assert_eq!(code(l.r.set_load_balancer_delete_protection(&lb, "maybe", T0)), "InvalidParameter");
    l.r.set_load_balancer_name(&lb, "renamed", T0).unwrap();
    assert_eq!(code(l.r.set_load_balancer_name(&lb, "", T0)), "MissingParameter");
    l.r.set_load_balancer_modification_protection(&lb, "NonProtection", "ignored", T0).unwrap();
    let got = l.r.describe_load_balancer_attribute(&lb, T0).unwrap();
    assert_eq!(
        (got.load_balancer_name.as_str(), got.modification_protection_status.as_str()),
        ("renamed", "NonProtection")
    );
    assert_eq!(got.modification_protection_reason, "");

    // Tags: add (a key again takes the new value), list, remove.
    let tr = |ids: &[&str], tags: Vec<Tag>| TagResources {
        resource_type: "instance".into(),
        resource_ids: ids.iter().map(|s| s.to_string()).collect(),
        tags,
    };
    l.r.tag_resources(&tr(&[&lb], vec![tag("env", "test"), tag("ack.aliyun.com", "c2")]), T0).unwrap();
    let list = |r: &mut Region| -> Vec<(String, String)> {
        let req =
            ListTagResources { resource_type: "instance".into(), resource_ids: vec![lb.clone()], ..Default::default() };
        r.list_tag_resources(&req, T0).unwrap().into_iter().map(|t| (t.tag.key, t.tag.value)).collect()
    };
    assert_eq!(
        list(&mut l.r),
        [
            ("kubernetes.do.not.delete".into(), "asvc".into()),
            ("ack.aliyun.com".into(), "c2".into()),
            ("env".into(), "test".into())
        ]
    );
    let by_tag =
        ListTagResources { resource_type: "instance".into(), tags: vec![tag("env", "test")], ..Default::default() };
    assert_eq!(l.r.list_tag_resources(&by_tag, T0).unwrap().len(), 3);
    let untag = UntagResources {
        resource_type: "instance".into(),
        resource_ids: vec![lb.clone()],
        tag_keys: vec!["env".into(), "absent".into()],
        all: false,
    };
    l.r.untag_resources(&untag, T0).unwrap();
    assert_eq!(list(&mut l.r).len(), 2);
    assert_eq!(code(l.r.tag_resources(&tr(&["lb-nope"], vec![tag("a", "b")]), T0)), "ResourceNotExist");
    assert_eq!(
        code(l.r.tag_resources(&TagResources { resource_type: "acl".into(), ..tr(&[&lb], vec![tag("a", "b")]) }, T0)),
        "InvalidParam.ResourceType"
    );
    let many: Vec<Tag> = (0..19).map(|i| tag(&format!("k{i}"), "v")).collect();
    assert_eq!(code(l.r.tag_resources(&tr(&[&lb], many), T0)), "SizeLimitExceeded.Tag");
    let nothing = ListTagResources { resource_type: "instance".into(), ..Default::default() };
    assert_eq!(code(l.r.list_tag_resources(&nothing, T0)), "MissingParam.TagOrResourceId");
    let all = UntagResources {
        resource_type: "instance".into(),
        resource_ids: vec![lb.clone()],
        tag_keys: vec![],
        all: true,
    };
    l.r.untag_resources(&all, T0).unwrap();
    assert!(list(&mut l.r).is_empty());

    // Protection off: the load balancer goes with its listeners and groups.
    l.r.set_load_balancer_delete_protection(&lb, "off", T0).unwrap();
    l.r.delete_load_balancer(&lb, T0).unwrap();
    assert!(l.r.load_balancer(&lb).is_none() && l.r.v_server_group(&g).is_none());
    let e = l.r.delete_load_balancer(&lb, T0).unwrap_err();
    assert_eq!((e.code(), e.http_status()), ("InvalidLoadBalancerId.NotFound", 404));
    assert!(e.to_string().contains("LoadBalancerId does not exist"), "the CCM matches this: {e}");
    l.r.check_invariants().unwrap();
}

#[test]
fn a_vpc_with_a_load_balancer_cannot_be_deleted_and_its_attribute_lists_vswitches() {
    let mut l = lab();
    let a = l.r.describe_vpc_attribute(&l.vpc, T0).unwrap();
    assert_eq!(a.vpc.cidr_block.to_string(), "10.0.0.0/8");
    let mut want = vec![l.vsw.clone(), l.pod_vsw.clone()];
    want.sort();
    assert_eq!(a.v_switch_ids, want);
    assert_eq!(code(l.r.describe_vpc_attribute("vpc-nope", T0)), "InvalidVpcId.NotFound");
    assert_eq!(code(l.r.describe_vpc_attribute("", T0)), "MissingParameter");
    // A VPC whose only dependant is a load balancer.
    let mut bare = Region::new(config(), 9);
    let v = bare.create_vpc(CreateVpc::default(), T0).unwrap().vpc_id;
    bare.create_load_balancer(CreateLoadBalancer { vpc_id: Some(v.clone()), ..Default::default() }, T0).unwrap();
    assert_eq!(code(bare.delete_vpc(&v, T0)), "DependencyViolation");
}

#[test]
fn restore_rebuilds_addresses_and_refuses_a_corrupt_store() {
    let mut l = lab();
    let a = l.r.create_load_balancer(ccm_create("asvc", Some("t")), T0).unwrap();
    let b = intranet(&mut l.r, &l.vsw, None).unwrap();
    let g =
        l.r.create_vserver_group(
            CreateVServerGroup {
                load_balancer_id: a.load_balancer_id.clone(),
                v_server_group_name: "k8s/80/web/default/c1".into(),
                backend_servers: backends(&eni_backend(&l.member, l.member_ip, 80)),
            },
            T0,
        )
        .unwrap();
    l.r.create_load_balancer_listener(
        ListenerProtocol::Tcp,
        &ListenerParams { v_server_group_id: Some(g.v_server_group_id.clone()), ..tcp(&a.load_balancer_id, 80) },
        T0,
    )
    .unwrap();
    l.r.start_load_balancer_listener(&a.load_balancer_id, Some(80), None, T0).unwrap();
    let dirty = l.r.take_dirty();
    assert!(dirty.contains(&(Kind::LoadBalancer, a.load_balancer_id.clone())));
    assert!(dirty.contains(&(Kind::VServerGroup, g.v_server_group_id.clone())));
    for k in [Kind::LoadBalancer, Kind::VServerGroup] {
        assert_eq!(Kind::parse(k.as_str()), Some(k));
    }
    let rows = l.r.export_all();
    let mut back = Region::restore(config(), rows.clone()).unwrap();
    back.check_invariants().unwrap();
    let mut again = back.export_all();
    let mut rows_sorted = rows.clone();
    again.sort();
    rows_sorted.sort();
    assert_eq!(again, rows_sorted);
    assert_eq!(available(&back, &l.vsw), available(&l.r, &l.vsw));
    assert_eq!(back.load_balancer(&a.load_balancer_id), l.r.load_balancer(&a.load_balancer_id));
    // New addresses after the restore avoid the restored ones.
    assert_ne!(internet(&mut back).address, a.address);
    assert_ne!(intranet(&mut back, &l.vsw, None).unwrap().address, b.address);
    back.check_invariants().unwrap();
    // The ClientToken still replays after a restore.
    assert_eq!(
        back.create_load_balancer(ccm_create("asvc", Some("t")), T0).unwrap().load_balancer_id,
        a.load_balancer_id
    );

    // Two load balancers with one address: reported, not patched.
    let mut twin = l.r.load_balancer(&b.load_balancer_id).unwrap().clone();
    twin.load_balancer_id = "lb-twin".into();
    let mut corrupt = rows.clone();
    corrupt.push((Kind::LoadBalancer, twin.load_balancer_id.clone(), serde_json::to_string(&twin).unwrap()));
    let e = Region::restore(config(), corrupt).unwrap_err();
    assert!(e.contains("held twice"), "{e}");
    // An intranet address that an ENI holds.
    let mut clash = twin.clone();
    clash.address = Ipv4Addr::new(10, 0, 4, 22);
    let mut corrupt = rows.clone();
    corrupt.push((Kind::LoadBalancer, clash.load_balancer_id.clone(), serde_json::to_string(&clash).unwrap()));
    assert!(Region::restore(config(), corrupt).is_err());
    // A group of a load balancer that is not there.
    let mut orphan = g.clone();
    orphan.load_balancer_id = "lb-gone".into();
    let mut corrupt = rows;
    corrupt.push((Kind::VServerGroup, "rsp-orphan".into(), serde_json::to_string(&orphan).unwrap()));
    assert!(Region::restore(config(), corrupt).unwrap_err().contains("unknown load balancer"));
}

#[test]
fn the_slb_error_table() {
    use ModelError::*;
    let rows: Vec<(ModelError, &str, u16, &str)> = vec![
        (
            LoadBalancerNotFound("lb-1".into()),
            "InvalidLoadBalancerId.NotFound",
            404,
            "The specified LoadBalancerId does not exist.",
        ),
        (VServerGroupNotFound("rsp-1".into()), "InvalidParameter", 400, "The specified VServerGroupId does not exist."),
        (ListenerNotFound, "ResourceNotFound.Listener", 404, "The specified listener is not found."),
        (TooManyListeners, "TooManyListeners", 400, "More than 1 listener is found, please be more specified."),
        (
            DeleteProtectionIsOn,
            "OperationDenied.DeleteProtectionIsOn",
            400,
            "The loadbalancer can not be deleted due to DeleteProtection is enabled.",
        ),
        (RspoolVipExist, "RspoolVipExist", 400, "there are vips associating with this vServer group."),
        (
            VSwitchAvailableIpNotExist("vsw-1".into()),
            "VSwitchAvailableIpNotExist",
            400,
            "The specified VSwitch has no available ip.",
        ),
        (SlbVSwitchNotExist("vsw-1".into()), "VSwitchNotExist", 400, "The specified VSwitch does not exist."),
        (MissingParamVSwitchId, "MissingParam.VSwitchId", 400, "The parameter VSwitchId is required."),
        (
            BackendServerNumberOverLimit,
            "InstanceBackendServerNumberOverLimit",
            400,
            "The backend server number has reached to the quota limit of this load balancers.",
        ),
        (EnisNotFound("eni-1".into()), "ResourceNotFound.vServers", 404, "The specified enis eni-1 does not exist."),
        (
            MissingParameterText("The BackendServerPort or VServerGroupId is required at lease one."),
            "MissingParameter",
            400,
            "The BackendServerPort or VServerGroupId is required at lease one.",
        ),
        (InvalidTag, "InvalidTag", 400, "The specified tags is invalid."),
    ];
    for (e, code, status, message) in rows {
        assert_eq!((e.code(), e.http_status(), e.to_string().as_str()), (code, status, message));
    }
    assert_eq!(enifab_model::error::Product::Slb.domain(), "slb.aliyuncs.com");
}
