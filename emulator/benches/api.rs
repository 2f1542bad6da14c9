//! API throughput and latency, measured against a real `enifab serve` on loopback.
//!
//! `cargo bench -p enifab --bench api` prints the numbers and rewrites the "Control plane"
//! section of BENCHMARKS.md (machine and baseline included). Two measurements:
//!
//! 1. create + attach (as a trunk member) + describe round trips per second, with N concurrent
//!    gRPC clients, each a sequence of three calls that wait for their answers (create and attach
//!    are durable SQLite commits with synchronous=FULL). Baseline in the same run: the same
//!    clients calling `grpc.health.v1.Health/Check`, the transport's own ceiling. The round
//!    trips run twice: against an emulator without credentials, and against one that requires
//!    an AccessKey, each call signed by the client (`enifab_proto::auth`) and checked by the
//!    server — what the signature and its replay memory cost.
//! 2. DescribeNetworkInterfaces filtered by `PrivateIpAddress.1` over 10,000 ENIs, p50/p99 of
//!    sequential calls over gRPC. Baseline in the same run: the same filter with no index
//!    (`Description` is not indexed, so the model scans all 10,000), called directly on the model.
//!
//! Env: `ENIFAB_BENCH_SECS` (default 5) per throughput run, `ENIFAB_BENCH_CLIENTS` (default
//! "1,8,32,64").

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use enifab::actor::SystemClock;
use enifab::cli::{AccessKey, Clients};
use enifab::openapi::{self, auth::Credentials};
use enifab::serve::{self, ServeConfig};
use enifab_proto::v1 as pb;
use tonic::transport::Channel;

const MEMBERS_PER_TRUNK: i32 = 4000;
const AK: &str = "LTAIbenchkey";
const SECRET: &str = "bench-secret";

struct Server {
    addr: std::net::SocketAddr,
    signed: bool,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// An emulator on loopback; with `signed`, one that requires the AccessKey [`AK`].
async fn start(signed: bool) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServeConfig::loopback(dir.path());
    let model = serve::open_model(&cfg, Arc::new(SystemClock), Vec::new()).unwrap();
    let listener = tokio::net::TcpListener::bind(cfg.listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let credentials = if signed { Credentials::new([(AK.into(), SECRET.into())]) } else { Credentials::default() };
    let api = openapi::Options { credentials, node_key: None };
    tokio::spawn(serve::run_with(listener, model, api, async move {
        let _ = rx.await;
    }));
    Server { addr, signed, _dir: dir, _stop: tx }
}

async fn channel(addr: std::net::SocketAddr) -> Channel {
    enifab::cli::connect(&addr.to_string()).await.unwrap()
}

/// Clients that sign every call when `signed`; the same wrapper without a key otherwise.
async fn clients(addr: std::net::SocketAddr, signed: bool) -> Clients {
    let key = signed.then(|| AccessKey { id: AK.into(), secret: SECRET.into() });
    Clients::signed(channel(addr).await, key)
}

/// One node per client: its own /16 vSwitch and a trunk that takes MEMBERS_PER_TRUNK members.
struct Node {
    instance: String,
    trunk: String,
    vswitch: String,
    sg: String,
}

async fn topology(c: &mut Clients, nodes: usize) -> Vec<Node> {
    c.emulator
        .create_instance_type(pb::CreateInstanceTypeRequest {
            instance_type_id: "ecs.bench.huge".into(),
            eni_quantity: 4,
            eni_private_ip_address_quantity: 10,
            eni_total_quantity: 4 + MEMBERS_PER_TRUNK,
            eni_trunk_supported: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let vpc = c
        .vpc
        .create_vpc(pb::CreateVpcRequest { cidr_block: "10.0.0.0/8".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .vpc_id;
    let sg = c
        .ecs
        .create_security_group(pb::CreateSecurityGroupRequest { vpc_id: vpc.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .security_group_id;
    let mut out = Vec::new();
    for i in 0..nodes {
        let vswitch = c
            .vpc
            .create_v_switch(pb::CreateVSwitchRequest {
                vpc_id: vpc.clone(),
                zone_id: "cn-hongkong-b".into(),
                cidr_block: format!("10.{}.0.0/16", i + 1),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .v_switch_id;
        let instance = c
            .ecs
            .create_instance(pb::CreateInstanceRequest {
                instance_type: "ecs.bench.huge".into(),
                v_switch_id: vswitch.clone(),
                security_group_ids: vec![sg.clone()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .instance_id;
        let trunk = c
            .ecs
            .create_network_interface(pb::CreateNetworkInterfaceRequest {
                v_switch_id: vswitch.clone(),
                security_group_ids: vec![sg.clone()],
                instance_type: "Trunk".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .network_interface_id;
        c.ecs
            .attach_network_interface(pb::AttachNetworkInterfaceRequest {
                instance_id: instance.clone(),
                network_interface_id: trunk.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        out.push(Node { instance, trunk, vswitch, sg: sg.clone() });
    }
    out
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Rate {
    ops: u64,
    secs: f64,
    p50: Duration,
    p99: Duration,
}

async fn round_trips(srv: &Server, n: usize, secs: f64) -> Rate {
    let mut setup = clients(srv.addr, srv.signed).await;
    let nodes = topology(&mut setup, n).await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let start = Instant::now();
    for node in nodes {
        let (stop, done) = (stop.clone(), done.clone());
        let mut ecs = clients(srv.addr, srv.signed).await.ecs;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for _ in 0..MEMBERS_PER_TRUNK {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let t = Instant::now();
                let eni = ecs
                    .create_network_interface(pb::CreateNetworkInterfaceRequest {
                        v_switch_id: node.vswitch.clone(),
                        security_group_ids: vec![node.sg.clone()],
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .network_interface_id;
                ecs.attach_network_interface(pb::AttachNetworkInterfaceRequest {
                    instance_id: node.instance.clone(),
                    network_interface_id: eni.clone(),
                    trunk_network_instance_id: node.trunk.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
                let d = ecs
                    .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
                        network_interface_id: vec![eni],
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(d.network_interface_sets.unwrap().network_interface_set[0].status, "InUse");
                lat.push(t.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort();
    Rate { ops: done.load(Ordering::Relaxed), secs: elapsed, p50: pct(&lat, 0.5), p99: pct(&lat, 0.99) }
}

async fn health_baseline(addr: std::net::SocketAddr, clients: usize, secs: f64) -> Rate {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let start = Instant::now();
    for _ in 0..clients {
        let (stop, done) = (stop.clone(), done.clone());
        let ch = channel(addr).await;
        tasks.push(tokio::spawn(async move {
            let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                h.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
                lat.push(t.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    lat.sort();
    Rate {
        ops: done.load(Ordering::Relaxed),
        secs: start.elapsed().as_secs_f64(),
        p50: pct(&lat, 0.5),
        p99: pct(&lat, 0.99),
    }
}

struct Describe {
    grpc_p50: Duration,
    grpc_p99: Duration,
    scan_p50: Duration,
    scan_p99: Duration,
}

async fn filtered_describe() -> Describe {
    use enifab_model::eni::{CreateNetworkInterface, DescribeNetworkInterfaces};
    use enifab_model::security_group::CreateSecurityGroup;
    use enifab_model::vpc::{CreateVSwitch, CreateVpc};
    use enifab_model::{Millis, Region, RegionConfig};

    let srv = start(false).await;
    let mut c = Clients::new(channel(srv.addr).await);
    let vpc = c
        .vpc
        .create_vpc(pb::CreateVpcRequest { cidr_block: "10.0.0.0/8".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .vpc_id;
    let vsw = c
        .vpc
        .create_v_switch(pb::CreateVSwitchRequest {
            vpc_id: vpc.clone(),
            zone_id: "cn-hongkong-b".into(),
            cidr_block: "10.1.0.0/16".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .v_switch_id;
    let sg = c
        .ecs
        .create_security_group(pb::CreateSecurityGroupRequest { vpc_id: vpc.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .security_group_id;
    // 10,000 ENIs, created by 16 clients at once.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (vsw, sg) = (vsw.clone(), sg.clone());
        let ch = channel(srv.addr).await;
        tasks.push(tokio::spawn(async move {
            let mut ecs = pb::ecs_client::EcsClient::new(ch);
            let mut ips = Vec::new();
            for _ in 0..625 {
                let r = ecs
                    .create_network_interface(pb::CreateNetworkInterfaceRequest {
                        v_switch_id: vsw.clone(),
                        security_group_ids: vec![sg.clone()],
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                ips.push(r.private_ip_address);
            }
            ips
        }));
    }
    let mut ips = Vec::new();
    for t in tasks {
        ips.extend(t.await.unwrap());
    }
    assert_eq!(ips.len(), 10_000);
    let mut lat = Vec::new();
    for i in 0..2000 {
        let ip = ips[(i * 7919) % ips.len()].clone();
        let t = Instant::now();
        let r = c
            .ecs
            .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
                vpc_id: vpc.clone(),
                private_ip_address: vec![ip],
                max_results: Some(100),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        lat.push(t.elapsed());
        assert_eq!(r.network_interface_sets.unwrap().network_interface_set.len(), 1);
    }
    lat.sort();

    // Baseline: the model alone, a filter with no index, i.e. a scan of all 10,000 ENIs.
    let mut r = Region::new(RegionConfig::new("cn-hongkong"), 1);
    let now = Millis(1);
    let vpc =
        r.create_vpc(CreateVpc { cidr_block: Some("10.0.0.0/8".into()), ..Default::default() }, now).unwrap().vpc_id;
    let vsw = r
        .create_vswitch(
            CreateVSwitch {
                vpc_id: vpc.clone(),
                zone_id: "cn-hongkong-b".into(),
                cidr_block: "10.1.0.0/16".into(),
                ..Default::default()
            },
            now,
        )
        .unwrap()
        .v_switch_id;
    let sg = r
        .create_security_group(CreateSecurityGroup { vpc_id: vpc.clone(), ..Default::default() }, now)
        .unwrap()
        .security_group_id;
    for i in 0..10_000 {
        r.create_network_interface(
            CreateNetworkInterface {
                v_switch_id: vsw.clone(),
                security_group_ids: vec![sg.clone()],
                description: format!("eni {i}"),
                ..Default::default()
            },
            now,
        )
        .unwrap();
    }
    let mut scan = Vec::new();
    for i in 0..200 {
        let q = DescribeNetworkInterfaces {
            network_interface_name: Some(format!("nobody-{i}")),
            page: enifab_model::paging::PageRequest { max_results: Some(100), ..Default::default() },
            ..Default::default()
        };
        let t = Instant::now();
        let (items, _) = r.describe_network_interfaces(&q, now).unwrap();
        scan.push(t.elapsed());
        assert!(items.is_empty());
    }
    scan.sort();
    Describe {
        grpc_p50: pct(&lat, 0.5),
        grpc_p99: pct(&lat, 0.99),
        scan_p50: pct(&scan, 0.5),
        scan_p99: pct(&scan, 0.99),
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<u64>().unwrap_or(0) / 1024 / 1024)
        })
        .unwrap_or(0);
    format!("{cores} cores ({cpu}), {mem} GiB RAM, Linux {}", kernel.trim())
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn write_section(section: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| "# enifab benchmarks\n".into());
    let (begin, end) = ("<!-- control-plane:begin -->", "<!-- control-plane:end -->");
    let block = format!("{begin}\n{section}{end}");
    let new = match (old.find(begin), old.find(end)) {
        (Some(b), Some(e)) => format!("{}{}{}", &old[..b], block, &old[e + end.len()..]),
        _ => format!("{}\n{}\n", old.trim_end(), block),
    };
    std::fs::write(&path, new).unwrap();
    eprintln!("wrote {}", path.display());
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let secs: f64 = std::env::var("ENIFAB_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let clients: Vec<usize> = std::env::var("ENIFAB_BENCH_CLIENTS")
        .unwrap_or_else(|_| "1,8,32,64".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mut rows = String::new();
    let mut best = 0.0f64;
    for &n in &clients {
        let (rt_rate, signed, base) = rt.block_on(async {
            let srv = start(false).await;
            let rate = round_trips(&srv, n, secs).await;
            let base = health_baseline(srv.addr, n, secs.min(3.0)).await;
            drop(srv);
            let signed = round_trips(&start(true).await, n, secs).await;
            (rate, signed, base)
        });
        let per_s = rt_rate.ops as f64 / rt_rate.secs;
        let signed_s = signed.ops as f64 / signed.secs;
        best = best.max(per_s);
        let base_s = base.ops as f64 / base.secs;
        println!(
            "clients {n:>3}: {per_s:>8.0} create+attach+describe/s (p50 {}, p99 {}); signed {signed_s:>8.0}/s (p50 {}); \
             health baseline {base_s:>8.0} calls/s",
            ms(rt_rate.p50),
            ms(rt_rate.p99),
            ms(signed.p50)
        );
        rows.push_str(&format!(
            "| {n} | {per_s:.0} | {} | {} | {signed_s:.0} | {} | {base_s:.0} | {} |\n",
            ms(rt_rate.p50),
            ms(rt_rate.p99),
            ms(signed.p50),
            ms(base.p50)
        ));
    }
    let d = rt.block_on(filtered_describe());
    println!(
        "DescribeNetworkInterfaces by PrivateIpAddress over 10,000 ENIs: p50 {} p99 {} (model-only full scan: p50 {} p99 {})",
        ms(d.grpc_p50),
        ms(d.grpc_p99),
        ms(d.scan_p50),
        ms(d.scan_p99)
    );
    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let (gp50, gp99, sp50, sp99) = (ms(d.grpc_p50), ms(d.grpc_p99), ms(d.scan_p50), ms(d.scan_p99));
    let machine = machine();
    let section = format!(
        "## Control plane (`cargo bench -p enifab --bench api`)\n\n\
         Measured {date} on {machine}, release build, emulator and clients in one process on loopback,\n\
         data directory on the machine's disk (SQLite WAL, synchronous=FULL), transition delays 0.\n\n\
         ### create + attach (trunk member) + describe round trips\n\n\
         Each round trip is three sequential calls by one client: CreateNetworkInterface,\n\
         AttachNetworkInterface (TrunkNetworkInstanceId), DescribeNetworkInterfaces (NetworkInterfaceId.1),\n\
         the last asserting `InUse`. Baseline: the same number of clients calling Health/Check.\n\
         *Signed*: the same round trips against an emulator that requires an AccessKey, every call signed\n\
         (ENIFAB-HMAC-SHA256 metadata) and checked, nonce remembered.\n\
         Target: ≥ 3,000 round trips/s. Best (unsigned): **{best:.0}/s**.\n\n\
         | clients | round trips/s | p50 | p99 | signed round trips/s | signed p50 | baseline Health/Check calls/s | baseline p50 |\n\
         |---|---|---|---|---|---|---|---|\n{rows}\n\
         ### DescribeNetworkInterfaces filtered by PrivateIpAddress over 10,000 ENIs\n\n\
         2,000 sequential calls over gRPC, each with `VpcId` and one `PrivateIpAddress.1` (CCM's shape).\n\
         Target: p99 ≤ 10 ms. Baseline: the model alone scanning all 10,000 ENIs for a filter that has no index.\n\n\
         | | p50 | p99 |\n|---|---|---|\n\
         | gRPC, indexed by IP | {gp50} | {gp99} |\n\
         | baseline: model-only full scan | {sp50} | {sp99} |\n\n"
    );
    write_section(&section);
}
