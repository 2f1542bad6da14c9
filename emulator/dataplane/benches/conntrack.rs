//! Conntrack memory with load-balancer translation: `cargo bench -p enifab-dataplane --bench
//! conntrack` (release build; prints a table, writes nothing).
//!
//! A fabric with a 1,000,000-flow table and one intranet VIP (TCP 80, two backends) takes one
//! SYN per flow from 1,000,000 distinct (client address, port) pairs, through `Fabric::process`,
//! so every flow is a translated one with both of its tuples indexed. The process's resident
//! size (`VmRSS`) is read before the fabric exists, after it is built (the table is reserved up
//! front), and after the flows are in; the per-flow figure is the growth over the whole run
//! divided by the flows. The baseline in the same run is the same with untranslated flows
//! (straight to a backend's address), whose replies need no index entry of their own.
//!
//! Target (issue 9): resident size at 1,000,000 tracked translated flows ≤ 256 MiB.

use std::hash::RandomState;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant as WallClock};

use enifab_dataplane::wire::ethernet::{self, ETHERTYPE_IPV4, GATEWAY_MAC, Mac};
use enifab_dataplane::wire::{checksum, geneve};
use enifab_dataplane::{
    Attachment, BackendConfig, Cidr, ConntrackTimeouts, EniConfig, Fabric, FabricConfig, FabricOptions, FabricSpec,
    Instant, LbNetwork, LbProtocol, ListenerConfig, LoadBalancerConfig, Peer, Policy, PortConfig, Protocol, Rule,
    Scheduler, SecurityGroupConfig, SgKind, Verdict, Vni,
};

const FLOWS: u32 = 1_000_000;
const VPC: &str = "vpc-bench";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 100);
const CLIENT_NODE: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 6081);
const SERVER_NODE: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 6081);

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn cidr(a: [u8; 4], p: u8) -> Cidr {
    Cidr::containing(Ipv4Addr::from(a), p).expect("prefix")
}

/// One client ENI holding 16 addresses (so 1,000,000 flows need only 16 × 62,500 ports) on node
/// A, and two backends on node B, all in one open group.
fn config() -> FabricConfig {
    let eni = |id: &str, vni: u32, ips: Vec<Ipv4Addr>, subnet: Cidr| EniConfig {
        id: id.into(),
        vpc_id: VPC.into(),
        mac: Mac([0, 0x16, 0x3e, 0, 0, vni as u8]),
        primary_ip: ips[0],
        ips,
        vswitch_cidr: subnet,
        ipv6: None,
        security_group_ids: vec!["sg-open".into()],
        source_dest_check: false,
        attachment: Attachment::Port { vni: Vni::new(vni).expect("vni") },
        conntrack: ConntrackTimeouts::default(),
    };
    let clients: Vec<Ipv4Addr> = (0..16).map(|i| Ipv4Addr::new(10, 0, 0, 10 + i)).collect();
    let ports = vec![
        (
            Vni::new(1).expect("vni"),
            PortConfig {
                eni_id: "eni-client".into(),
                mac: Mac([0, 0x16, 0x3e, 0, 0, 1]),
                peer: CLIENT_NODE,
                fast_path: None,
            },
        ),
        (
            Vni::new(2).expect("vni"),
            PortConfig {
                eni_id: "eni-server-1".into(),
                mac: Mac([0, 0x16, 0x3e, 0, 0, 2]),
                peer: SERVER_NODE,
                fast_path: None,
            },
        ),
        (
            Vni::new(3).expect("vni"),
            PortConfig {
                eni_id: "eni-server-2".into(),
                mac: Mac([0, 0x16, 0x3e, 0, 0, 3]),
                peer: SERVER_NODE,
                fast_path: None,
            },
        ),
    ];
    let enis = vec![
        eni("eni-client", 1, clients, cidr([10, 0, 0, 0], 24)),
        eni("eni-server-1", 2, vec![Ipv4Addr::new(10, 0, 1, 11)], cidr([10, 0, 1, 0], 24)),
        eni("eni-server-2", 3, vec![Ipv4Addr::new(10, 0, 1, 12)], cidr([10, 0, 1, 0], 24)),
    ];
    let open = Rule {
        id: String::new(),
        direction: enifab_dataplane::Direction::Ingress,
        priority: 1,
        policy: Policy::Accept,
        protocol: Protocol::All,
        port_range: None,
        source_port_range: None,
        peer: Peer::Cidr(cidr([0, 0, 0, 0], 0)),
        local_cidr: None,
        local_cidr6: None,
    };
    let groups = vec![SecurityGroupConfig {
        id: "sg-open".into(),
        vpc_id: VPC.into(),
        kind: SgKind::Basic,
        inner_access_accept: false,
        rules: vec![open],
    }];
    let backend = |ip, id: &str| BackendConfig { server_id: id.into(), ip, port: 80, weight: 100 };
    let lb = LoadBalancerConfig {
        id: "lb-bench".into(),
        vpc_id: VPC.into(),
        network: LbNetwork::Intranet,
        address: VIP,
        listeners: vec![ListenerConfig {
            protocol: LbProtocol::Tcp,
            port: 80,
            running: true,
            scheduler: Scheduler::Wrr,
            persistence: Duration::ZERO,
            established_timeout: Duration::from_secs(900),
            backends: vec![
                backend(Ipv4Addr::new(10, 0, 1, 11), "eni-server-1"),
                backend(Ipv4Addr::new(10, 0, 1, 12), "eni-server-2"),
            ],
            health_check: None,
        }],
    };
    let spec = FabricSpec { ports, enis, groups, load_balancers: vec![lb], external_hosts: Vec::new() };
    FabricConfig::build(1, spec).expect("a consistent bench config")
}

/// A SYN from `src:sport` to `dst:80`, as the client node's shim sends it.
fn syn(src: Ipv4Addr, sport: u16, dst: Ipv4Addr) -> Vec<u8> {
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[12] = 0x50;
    tcp[13] = 0x02;
    let mut ip = [0u8; 40];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = checksum::internet(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip[20..].copy_from_slice(&tcp);
    let mut frame = vec![0u8; ethernet::HEADER_LEN];
    ethernet::emit_header(GATEWAY_MAC, Mac([0, 0x16, 0x3e, 0, 0, 1]), None, ETHERTYPE_IPV4, &mut frame).expect("room");
    frame.extend_from_slice(&ip);
    let h = geneve::Header { vni: Vni::new(1).expect("vni"), oam: false, vnet: None };
    let mut out = vec![0u8; h.len() + frame.len()];
    let n = geneve::encapsulate(&h, &frame, &mut out).expect("room");
    out.truncate(n);
    out
}

struct Run {
    label: &'static str,
    rss_empty: u64,
    rss_reserved: u64,
    rss_full: u64,
    tracked: usize,
    secs: f64,
}

fn run(label: &'static str, through_vip: bool) -> Run {
    let rss_empty = rss_bytes();
    let mut options = FabricOptions::new(RandomState::new());
    options.conntrack_max = FLOWS as usize;
    let mut fabric = Fabric::new(Arc::new(config()), options);
    let rss_reserved = rss_bytes();
    let mut out = vec![0u8; 256];
    let start = WallClock::now();
    for i in 0..FLOWS {
        let src = Ipv4Addr::new(10, 0, 0, 10 + (i % 16) as u8);
        let sport = 1024 + (i / 16) as u16;
        let dst = if through_vip { VIP } else { Ipv4Addr::new(10, 0, 1, 11 + (i % 2) as u8) };
        let d = syn(src, sport, dst);
        let v = fabric.process(Instant(u64::from(i)), CLIENT_NODE, &d, &mut out);
        assert!(matches!(v, Verdict::Forward { .. }), "flow {i}: {v:?}");
    }
    let secs = start.elapsed().as_secs_f64();
    let rss_full = rss_bytes();
    let tracked = fabric.stats().conntrack_entries;
    assert_eq!(tracked, FLOWS as usize);
    drop(fabric);
    Run { label, rss_empty, rss_reserved, rss_full, tracked, secs }
}

fn main() {
    // Each run in a process of its own: memory freed by one run would hide the next one's growth.
    if let Ok(which) = std::env::var("ENIFAB_CONNTRACK_RUN") {
        let r = if which == "vip" {
            run("translated (through the VIP)", true)
        } else {
            run("untranslated (baseline: straight to a backend)", false)
        };
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let per_flow = (r.rss_full.saturating_sub(r.rss_empty)) as f64 / r.tracked as f64;
        println!(
            "| {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.0} bytes | {:.0} |",
            r.label,
            mib(r.rss_empty),
            mib(r.rss_reserved),
            mib(r.rss_full),
            per_flow,
            r.tracked as f64 / r.secs
        );
        return;
    }
    let me = std::env::current_exe().expect("the bench binary");
    println!("conntrack at {FLOWS} tracked flows (one SYN each, table reserved for {FLOWS}; one process per row)");
    println!("| flows | RSS before | RSS, table reserved | RSS with the flows | growth per flow | flows/s admitted |");
    println!("|---|---|---|---|---|---|");
    for which in ["vip", "direct"] {
        let out = std::process::Command::new(&me).env("ENIFAB_CONNTRACK_RUN", which).output().expect("a run");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}
