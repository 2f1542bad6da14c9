//! The end-to-end harness: real enifab servers, driven through the generated gRPC clients the
//! way Terway drives the cloud (moto's "test with the consumer's client", mini-redis's
//! `start_server()` on `127.0.0.1:0`).
//!
//! # Layout
//! - [`TestServer`]: an in-process server (model thread + `serve::run`) on a free loopback port
//!   with its own temporary data directory; stop it, restart it on the same directory;
//! - [`ChildServer`]: the real `enifab serve` binary as a child process, for `kill -9` tests;
//!   killed when dropped, so a panicking test leaves no process behind;
//! - [`Topology`]: the standard node built through the API (VPC, node and pod vSwitches, a
//!   security group, instance `cn-hongkong.10.0.4.22` with a trunk ENI);
//! - [`Snapshot`]: every Describe* output at once, request IDs cleared, so a test can say "this
//!   call changed nothing" or "the restart lost nothing";
//! - error helpers: the cloud code of a `tonic::Status` ([`code_of`], [`assert_code`]).
//!
//! Every server binds `127.0.0.1:0` and owns a `tempfile::TempDir`, so tests run in parallel.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use enifab::actor::SystemClock;
use enifab::cli::Clients;
use enifab::serve::{self, ServeConfig};
use enifab_model::TransitionDelays;
use enifab_proto::v1 as pb;
use enifab_proto::v1::ecs_client::EcsClient;
use enifab_proto::v1::emulator_client::EmulatorClient;
use enifab_proto::v1::slb_client::SlbClient;
use enifab_proto::v1::vpc_client::VpcClient;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Response, Status};

pub use enifab_proto::v1;

/// The region every test server emulates.
pub const REGION: &str = "cn-hongkong";
/// The zone of the standard node.
pub const ZONE: &str = "cn-hongkong-b";
/// The standard node: ACK names nodes `<region>.<primary IP>`.
pub const NODE_NAME: &str = "cn-hongkong.10.0.4.22";
pub const NODE_IP: &str = "10.0.4.22";
pub const NODE_TYPE: &str = "ecs.g7.xlarge";
pub const VPC_CIDR: &str = "10.0.0.0/8";
pub const NODE_VSW_CIDR: &str = "10.0.4.0/24";
/// Big enough for the paging test's 500+ ENIs.
pub const POD_VSW_CIDR: &str = "10.0.64.0/22";

// ---- errors ---------------------------------------------------------------------------------------

/// The cloud error code a status carries (its `google.rpc.ErrorInfo` reason). Panics when the
/// status has none: every API error must carry one.
pub fn code_of(status: &Status) -> String {
    match enifab::grpc::status::cloud_error(status) {
        Some((code, _)) => code,
        None => panic!("status without a cloud error code: {status:?}"),
    }
}

/// The error of a call that must fail.
#[track_caller]
pub fn expect_err<T: Debug>(r: Result<Response<T>, Status>) -> Status {
    match r {
        Ok(resp) => panic!("expected an error, got {:?}", resp.into_inner()),
        Err(s) => s,
    }
}

/// Assert a call failed with cloud code `code`; returns the status for further checks.
#[track_caller]
pub fn assert_code<T: Debug>(r: Result<Response<T>, Status>, code: &str) -> Status {
    let status = expect_err(r);
    assert_eq!(code_of(&status), code, "wrong cloud code; status: {status:?}");
    status
}

/// The `ErrorInfo` domain of a status (`ecs.aliyuncs.com` or `vpc.aliyuncs.com`).
pub fn domain_of(status: &Status) -> String {
    use tonic_types::StatusExt;
    status.get_details_error_info().map(|i| i.domain).unwrap_or_default()
}

/// Unwrap a call that must succeed, with the cloud code in the panic message.
#[track_caller]
pub fn ok<T>(r: Result<Response<T>, Status>) -> T {
    match r {
        Ok(resp) => resp.into_inner(),
        Err(s) => panic!("call failed: {}", enifab::cli::describe_status(&s)),
    }
}

// ---- in-process server ----------------------------------------------------------------------------

struct Running {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
    /// The model thread's commit counter; closed when the thread exits.
    epochs: watch::Receiver<u64>,
}

/// An emulator served from this process on `127.0.0.1:<free port>`, with its own data directory.
pub struct TestServer {
    dir: TempDir,
    delays: TransitionDelays,
    addr: SocketAddr,
    /// Typed clients connected to the current address (replaced on restart).
    pub clients: Clients,
    channel: Channel,
    running: Option<Running>,
}

impl TestServer {
    /// A server whose transitions (attach, detach, delete, start, stop) complete at once.
    pub async fn start() -> TestServer {
        Self::start_with_delays(TransitionDelays::ZERO).await
    }

    pub async fn start_with_delays(delays: TransitionDelays) -> TestServer {
        let dir = tempfile::Builder::new().prefix("enifab-test-").tempdir().expect("a temporary directory");
        let (running, addr) = launch(dir.path(), delays).await;
        let channel = connect(addr).await;
        TestServer { dir, delays, addr, clients: Clients::new(channel.clone()), channel, running: Some(running) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    // Typed on the plain channel (these servers check no signatures), so helpers can name the
    // client types.
    pub fn ecs(&self) -> EcsClient<Channel> {
        EcsClient::new(self.channel.clone())
    }

    pub fn vpc(&self) -> VpcClient<Channel> {
        VpcClient::new(self.channel.clone())
    }

    pub fn emulator(&self) -> EmulatorClient<Channel> {
        EmulatorClient::new(self.channel.clone())
    }

    /// Changes whenever the model thread commits (also for timer-driven transitions).
    pub fn epochs(&self) -> watch::Receiver<u64> {
        self.running.as_ref().expect("the server is running").epochs.clone()
    }

    /// Graceful shutdown: stop accepting, finish in-flight calls, wait until the model thread
    /// has exited (so its SQLite connection is closed).
    pub async fn stop(&mut self) {
        let Some(mut running) = self.running.take() else {
            return;
        };
        let _ = running.shutdown.send(());
        match tokio::time::timeout(Duration::from_secs(10), &mut running.task).await {
            Ok(joined) => joined.expect("the server task panicked").expect("the server failed"),
            Err(_) => panic!("graceful shutdown took more than 10 s"),
        }
        // The model thread drops its epoch sender when it returns, which happens once every
        // handle (held by the router) is gone.
        let exited =
            tokio::time::timeout(Duration::from_secs(10), async { while running.epochs.changed().await.is_ok() {} })
                .await;
        assert!(exited.is_ok(), "the model thread did not exit");
    }

    /// Stop gracefully and start again on the same data directory (on a new port; the clients
    /// are reconnected).
    pub async fn restart(&mut self) {
        self.restart_with_delays(self.delays).await;
    }

    pub async fn restart_with_delays(&mut self, delays: TransitionDelays) {
        self.stop().await;
        self.delays = delays;
        let (running, addr) = launch(self.dir.path(), delays).await;
        self.running = Some(running);
        self.addr = addr;
        self.channel = connect(addr).await;
        self.clients = Clients::new(self.channel.clone());
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.shutdown.send(());
            running.task.abort();
        }
    }
}

async fn launch(data_dir: &Path, delays: TransitionDelays) -> (Running, SocketAddr) {
    let cfg = ServeConfig { delays, ..ServeConfig::loopback(data_dir) };
    let model = serve::open_model(&cfg, Arc::new(SystemClock), Vec::new()).expect("open the model");
    let epochs = model.epochs();
    let listener = TcpListener::bind(cfg.listen).await.expect("bind");
    let addr = listener.local_addr().expect("a local address");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve::run(listener, model, async {
        let _ = rx.await;
    }));
    (Running { shutdown: tx, task, epochs }, addr)
}

/// Connect to an emulator at `addr`.
pub async fn connect(addr: SocketAddr) -> Channel {
    enifab::cli::connect(&addr.to_string()).await.unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

// ---- the standard topology ------------------------------------------------------------------------

/// What [`build_topology`] created.
#[derive(Clone, Debug)]
pub struct Topology {
    pub vpc_id: String,
    pub node_vsw: String,
    pub pod_vsw: String,
    pub sg_id: String,
    pub instance_id: String,
    pub primary_eni_id: String,
    pub trunk_eni_id: String,
}

#[derive(Clone, Debug)]
pub struct TopologyOptions {
    pub instance_type: String,
    pub pod_vsw_cidr: String,
}

impl Default for TopologyOptions {
    fn default() -> Self {
        TopologyOptions { instance_type: NODE_TYPE.to_string(), pod_vsw_cidr: POD_VSW_CIDR.to_string() }
    }
}

/// The standard node, built through the API: VPC 10.0.0.0/8; node vSwitch 10.0.4.0/24 and pod
/// vSwitch 10.0.64.0/22 in cn-hongkong-b; one basic security group; instance
/// `cn-hongkong.10.0.4.22` (ecs.g7.xlarge, primary IP 10.0.4.22); a trunk ENI attached to it.
/// Waits until the trunk is InUse (immediate without delays).
pub async fn build_topology(channel: Channel) -> Topology {
    build_topology_with(channel, TopologyOptions::default()).await
}

pub async fn build_topology_with(channel: Channel, opts: TopologyOptions) -> Topology {
    let (mut ecs, mut vpc) = (EcsClient::new(channel.clone()), VpcClient::new(channel));
    let vpc_id = ok(vpc
        .create_vpc(pb::CreateVpcRequest {
            region_id: REGION.into(),
            cidr_block: VPC_CIDR.into(),
            vpc_name: "enifab-test".into(),
            ..Default::default()
        })
        .await)
    .vpc_id;
    let vsw = |cidr: &str, name: &str| pb::CreateVSwitchRequest {
        region_id: REGION.into(),
        vpc_id: vpc_id.clone(),
        zone_id: ZONE.into(),
        cidr_block: cidr.into(),
        v_switch_name: name.into(),
        ..Default::default()
    };
    let node_vsw = ok(vpc.create_v_switch(vsw(NODE_VSW_CIDR, "node")).await).v_switch_id;
    let pod_vsw = ok(vpc.create_v_switch(vsw(&opts.pod_vsw_cidr, "pod")).await).v_switch_id;
    let sg_id = ok(ecs
        .create_security_group(pb::CreateSecurityGroupRequest {
            region_id: REGION.into(),
            vpc_id: vpc_id.clone(),
            security_group_name: "basic".into(),
            ..Default::default()
        })
        .await)
    .security_group_id;
    let instance_id = ok(ecs
        .create_instance(pb::CreateInstanceRequest {
            region_id: REGION.into(),
            instance_type: opts.instance_type.clone(),
            v_switch_id: node_vsw.clone(),
            security_group_ids: vec![sg_id.clone()],
            private_ip_address: NODE_IP.into(),
            instance_name: NODE_NAME.into(),
            ..Default::default()
        })
        .await)
    .instance_id;
    let primary_eni_id = ok(ecs
        .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
            region_id: REGION.into(),
            instance_id: instance_id.clone(),
            r#type: "Primary".into(),
            ..Default::default()
        })
        .await)
    .network_interface_sets
    .unwrap_or_default()
    .network_interface_set
    .first()
    .expect("the instance has a primary ENI")
    .network_interface_id
    .clone();
    let trunk_eni_id = ok(ecs
        .create_network_interface(pb::CreateNetworkInterfaceRequest {
            region_id: REGION.into(),
            v_switch_id: node_vsw.clone(),
            security_group_ids: vec![sg_id.clone()],
            instance_type: "Trunk".into(),
            description: "trunk".into(),
            ..Default::default()
        })
        .await)
    .network_interface_id;
    ok(ecs
        .attach_network_interface(pb::AttachNetworkInterfaceRequest {
            region_id: REGION.into(),
            instance_id: instance_id.clone(),
            network_interface_id: trunk_eni_id.clone(),
            ..Default::default()
        })
        .await);
    wait_status(&mut ecs, &trunk_eni_id, "InUse").await;
    Topology { vpc_id, node_vsw, pod_vsw, sg_id, instance_id, primary_eni_id, trunk_eni_id }
}

impl Topology {
    /// A Secondary ENI in the pod vSwitch with the topology's group (Available).
    pub async fn create_pod_eni(&self, ecs: &mut EcsClient<Channel>) -> pb::CreateNetworkInterfaceResponse {
        ok(ecs
            .create_network_interface(pb::CreateNetworkInterfaceRequest {
                region_id: REGION.into(),
                v_switch_id: self.pod_vsw.clone(),
                security_group_ids: vec![self.sg_id.clone()],
                description: "interface create by terway".into(),
                ..Default::default()
            })
            .await)
    }

    /// Create a pod ENI and attach it to the trunk as a member, as terway-controlplane does.
    pub async fn create_member(&self, ecs: &mut EcsClient<Channel>) -> String {
        let id = self.create_pod_eni(ecs).await.network_interface_id;
        ok(ecs
            .attach_network_interface(pb::AttachNetworkInterfaceRequest {
                region_id: REGION.into(),
                instance_id: self.instance_id.clone(),
                network_interface_id: id.clone(),
                trunk_network_instance_id: self.trunk_eni_id.clone(),
                ..Default::default()
            })
            .await);
        id
    }
}

// ---- describe helpers -----------------------------------------------------------------------------

/// One ENI by ID, or `None` when DescribeNetworkInterfaces does not list it.
pub async fn describe_eni(ecs: &mut EcsClient<Channel>, id: &str) -> Option<pb::NetworkInterfaceSet> {
    let mut got = ok(ecs
        .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
            region_id: REGION.into(),
            network_interface_id: vec![id.to_string()],
            ..Default::default()
        })
        .await)
    .network_interface_sets
    .unwrap_or_default()
    .network_interface_set;
    assert!(got.len() <= 1, "one ID, several ENIs: {got:?}");
    got.pop()
}

/// Poll until the ENI has `status` (10 s at most).
pub async fn wait_status(ecs: &mut EcsClient<Channel>, id: &str, status: &str) -> pb::NetworkInterfaceSet {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let eni = describe_eni(ecs, id).await;
        if let Some(e) = eni.as_ref().filter(|e| e.status == status) {
            return e.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{id} never became {status}; last seen {eni:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every ENI matching `filter` (its paging fields are overwritten), through NextToken paging.
pub async fn all_enis_where(
    ecs: &mut EcsClient<Channel>,
    filter: pb::DescribeNetworkInterfacesRequest,
) -> Vec<pb::NetworkInterfaceSet> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let mut req = filter.clone();
        req.max_results = Some(500);
        req.next_token = token;
        let page = ok(ecs.describe_network_interfaces(req).await);
        out.extend(page.network_interface_sets.unwrap_or_default().network_interface_set);
        if page.next_token.is_empty() {
            return out;
        }
        token = page.next_token;
    }
}

pub async fn all_enis(ecs: &mut EcsClient<Channel>) -> Vec<pb::NetworkInterfaceSet> {
    all_enis_where(ecs, pb::DescribeNetworkInterfacesRequest { region_id: REGION.into(), ..Default::default() }).await
}

pub async fn vswitch(vpc: &mut VpcClient<Channel>, id: &str) -> pb::VSwitchItem {
    let mut list = ok(vpc
        .describe_v_switches(pb::DescribeVSwitchesRequest {
            region_id: REGION.into(),
            v_switch_id: id.into(),
            ..Default::default()
        })
        .await)
    .v_switches
    .unwrap_or_default()
    .v_switch;
    assert_eq!(list.len(), 1, "DescribeVSwitches {id}: {list:?}");
    list.pop().expect("one")
}

/// Addresses a vSwitch of `cidr` can hand out: all but the first and the last three.
pub fn usable_ips(cidr: &str) -> i64 {
    let prefix: u32 =
        cidr.split_once('/').and_then(|(_, p)| p.parse().ok()).unwrap_or_else(|| panic!("bad CIDR {cidr}"));
    (1i64 << (32 - prefix)) - 4
}

pub fn ips_of(e: &pb::NetworkInterfaceSet) -> Vec<String> {
    e.private_ip_sets
        .as_ref()
        .map(|s| s.private_ip_set.iter().map(|p| p.private_ip_address.clone()).collect())
        .unwrap_or_default()
}

pub fn sgs_of(e: &pb::NetworkInterfaceSet) -> Vec<String> {
    e.security_group_ids.as_ref().map(|s| s.security_group_id.clone()).unwrap_or_default()
}

// ---- snapshots ------------------------------------------------------------------------------------

/// Everything the Describe* actions show, request IDs cleared. Two snapshots are equal exactly
/// when no visible state changed between them.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub vpcs: Vec<pb::VpcItem>,
    pub vswitches: Vec<pb::VSwitchItem>,
    pub security_groups: Vec<pb::SecurityGroupItem>,
    pub security_group_attributes: Vec<pb::DescribeSecurityGroupAttributeResponse>,
    pub instances: Vec<pb::InstanceItem>,
    pub enis: Vec<pb::NetworkInterfaceSet>,
    pub eni_attributes: Vec<pb::DescribeNetworkInterfaceAttributeResponse>,
    pub instance_types: Vec<pb::InstanceTypeItem>,
    pub load_balancers: Vec<pb::LoadBalancerItem>,
    /// Every listener of every load balancer (DescribeLoadBalancerListeners).
    pub listeners: Vec<pb::SlbListenerItem>,
    /// Every vServer group with its backends (DescribeVServerGroupAttribute).
    pub vserver_groups: Vec<pb::DescribeVServerGroupAttributeResponse>,
}

impl Snapshot {
    /// Take a snapshot through the API at `channel`.
    pub async fn take(channel: Channel) -> Snapshot {
        let (mut ecs, mut vpc, mut slb) =
            (EcsClient::new(channel.clone()), VpcClient::new(channel.clone()), SlbClient::new(channel));
        let mut vpcs = Vec::new();
        for page in 1.. {
            let r = ok(vpc
                .describe_vpcs(pb::DescribeVpcsRequest {
                    region_id: REGION.into(),
                    page_number: Some(page),
                    page_size: Some(50),
                    ..Default::default()
                })
                .await);
            let items = r.vpcs.unwrap_or_default().vpc;
            let n = items.len();
            vpcs.extend(items);
            if n < 50 {
                break;
            }
        }
        let mut vswitches = Vec::new();
        for page in 1.. {
            let r = ok(vpc
                .describe_v_switches(pb::DescribeVSwitchesRequest {
                    region_id: REGION.into(),
                    page_number: Some(page),
                    page_size: Some(50),
                    ..Default::default()
                })
                .await);
            let items = r.v_switches.unwrap_or_default().v_switch;
            let n = items.len();
            vswitches.extend(items);
            if n < 50 {
                break;
            }
        }
        let mut security_groups = Vec::new();
        let mut token = String::new();
        loop {
            let r = ok(ecs
                .describe_security_groups(pb::DescribeSecurityGroupsRequest {
                    region_id: REGION.into(),
                    max_results: Some(100),
                    next_token: token,
                    ..Default::default()
                })
                .await);
            security_groups.extend(r.security_groups.unwrap_or_default().security_group);
            if r.next_token.is_empty() {
                break;
            }
            token = r.next_token;
        }
        let mut security_group_attributes = Vec::new();
        for g in &security_groups {
            let mut a = ok(ecs
                .describe_security_group_attribute(pb::DescribeSecurityGroupAttributeRequest {
                    region_id: REGION.into(),
                    security_group_id: g.security_group_id.clone(),
                    ..Default::default()
                })
                .await);
            a.request_id.clear();
            security_group_attributes.push(a);
        }
        let mut instances = Vec::new();
        let mut token = String::new();
        loop {
            let r = ok(ecs
                .describe_instances(pb::DescribeInstancesRequest {
                    region_id: REGION.into(),
                    max_results: Some(100),
                    next_token: token,
                    ..Default::default()
                })
                .await);
            instances.extend(r.instances.unwrap_or_default().instance);
            if r.next_token.is_empty() {
                break;
            }
            token = r.next_token;
        }
        let enis = all_enis(&mut ecs).await;
        let mut eni_attributes = Vec::new();
        // Trunks are the ENIs whose attribute view says more than the list (their members).
        for e in enis.iter().filter(|e| e.r#type == "Trunk") {
            let mut a = ok(ecs
                .describe_network_interface_attribute(pb::DescribeNetworkInterfaceAttributeRequest {
                    region_id: REGION.into(),
                    network_interface_id: e.network_interface_id.clone(),
                    ..Default::default()
                })
                .await);
            a.request_id.clear();
            eni_attributes.push(a);
        }
        let instance_types = ok(ecs
            .describe_instance_types(pb::DescribeInstanceTypesRequest {
                region_id: REGION.into(),
                ..Default::default()
            })
            .await)
        .instance_types
        .unwrap_or_default()
        .instance_type;
        let mut load_balancers = Vec::new();
        for page in 1.. {
            let r = ok(slb
                .describe_load_balancers(pb::DescribeLoadBalancersRequest {
                    region_id: REGION.into(),
                    page_number: Some(page),
                    page_size: Some(100),
                    ..Default::default()
                })
                .await);
            let items = r.load_balancers.unwrap_or_default().load_balancer;
            let n = items.len();
            load_balancers.extend(items);
            if n < 100 {
                break;
            }
        }
        let mut listeners = Vec::new();
        let mut token = String::new();
        loop {
            let r = ok(slb
                .describe_load_balancer_listeners(pb::DescribeLoadBalancerListenersRequest {
                    region_id: REGION.into(),
                    max_results: Some(100),
                    next_token: token,
                    ..Default::default()
                })
                .await);
            listeners.extend(r.listeners);
            if r.next_token.is_empty() {
                break;
            }
            token = r.next_token;
        }
        let mut vserver_groups = Vec::new();
        for lb in &load_balancers {
            let groups = ok(slb
                .describe_v_server_groups(pb::DescribeVServerGroupsRequest {
                    region_id: REGION.into(),
                    load_balancer_id: lb.load_balancer_id.clone(),
                    ..Default::default()
                })
                .await)
            .v_server_groups
            .unwrap_or_default()
            .v_server_group;
            for g in groups {
                let mut a = ok(slb
                    .describe_v_server_group_attribute(pb::DescribeVServerGroupAttributeRequest {
                        region_id: REGION.into(),
                        v_server_group_id: g.v_server_group_id,
                    })
                    .await);
                a.request_id.clear();
                vserver_groups.push(a);
            }
        }
        Snapshot {
            vpcs,
            vswitches,
            security_groups,
            security_group_attributes,
            instances,
            enis,
            eni_attributes,
            instance_types,
            load_balancers,
            listeners,
            vserver_groups,
        }
    }

    /// A readable account of what differs, or `None` when equal.
    pub fn diff(&self, other: &Snapshot) -> Option<String> {
        fn section<T: PartialEq + Debug>(name: &str, a: &[T], b: &[T], out: &mut Vec<String>) {
            if a == b {
                return;
            }
            if a.len() != b.len() {
                out.push(format!("{name}: {} items before, {} after", a.len(), b.len()));
            }
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                if x != y {
                    out.push(format!("{name}[{i}]:\n  before {x:?}\n  after  {y:?}"));
                }
            }
            if a.len() > b.len() {
                out.push(format!("{name}: gone {:?}", &a[b.len()..]));
            } else if b.len() > a.len() {
                out.push(format!("{name}: new {:?}", &b[a.len()..]));
            }
        }
        let mut out = Vec::new();
        section("vpcs", &self.vpcs, &other.vpcs, &mut out);
        section("vswitches", &self.vswitches, &other.vswitches, &mut out);
        section("security_groups", &self.security_groups, &other.security_groups, &mut out);
        section(
            "security_group_attributes",
            &self.security_group_attributes,
            &other.security_group_attributes,
            &mut out,
        );
        section("instances", &self.instances, &other.instances, &mut out);
        section("enis", &self.enis, &other.enis, &mut out);
        section("eni_attributes", &self.eni_attributes, &other.eni_attributes, &mut out);
        section("instance_types", &self.instance_types, &other.instance_types, &mut out);
        section("load_balancers", &self.load_balancers, &other.load_balancers, &mut out);
        section("listeners", &self.listeners, &other.listeners, &mut out);
        section("vserver_groups", &self.vserver_groups, &other.vserver_groups, &mut out);
        (!out.is_empty()).then(|| out.join("\n"))
    }

    #[track_caller]
    pub fn assert_same(&self, after: &Snapshot, context: &str) {
        if let Some(d) = self.diff(after) {
            panic!("{context}: the state changed:\n{d}");
        }
    }
}

/// Check what must hold in any state the API shows: no private IP or MAC held twice (an intranet
/// load balancer's address counts as held), every vSwitch's AvailableIpAddressCount equal to its
/// usable size minus the addresses its ENIs and intranet load balancers hold, device indexes
/// unique per instance (own NICs) and per trunk (members), member VLANs within 1..=4094 on a
/// trunk of the same instance. Returns the list of violations.
pub fn consistency_violations(snap: &Snapshot) -> Vec<String> {
    let mut bad = Vec::new();
    let mut ips: HashMap<(String, String), String> = HashMap::new();
    let mut macs: HashMap<String, String> = HashMap::new();
    let mut held: HashMap<String, i64> = HashMap::new();
    let mut nic_slots: HashSet<(String, i32)> = HashSet::new();
    let mut vlan_slots: HashSet<(String, i32)> = HashSet::new();
    let by_id: HashMap<&str, &pb::NetworkInterfaceSet> =
        snap.enis.iter().map(|e| (e.network_interface_id.as_str(), e)).collect();
    for e in &snap.enis {
        let id = &e.network_interface_id;
        for ip in ips_of(e) {
            if let Some(other) = ips.insert((e.vpc_id.clone(), ip.clone()), id.clone()) {
                bad.push(format!("{ip} held by {other} and {id}"));
            }
            *held.entry(e.v_switch_id.clone()).or_default() += 1;
        }
        if let Some(other) = macs.insert(e.mac_address.clone(), id.clone()) {
            bad.push(format!("MAC {} held by {other} and {id}", e.mac_address));
        }
        if let Some(a) = &e.attachment {
            if a.trunk_network_interface_id.is_empty() {
                if !nic_slots.insert((a.instance_id.clone(), a.device_index)) {
                    bad.push(format!("{id}: DeviceIndex {} of {} taken twice", a.device_index, a.instance_id));
                }
            } else {
                if e.r#type != "Member" {
                    bad.push(format!("{id}: on trunk {} but Type {}", a.trunk_network_interface_id, e.r#type));
                }
                if !(1..=4094).contains(&a.device_index) {
                    bad.push(format!("{id}: VLAN {} out of 1..=4094", a.device_index));
                }
                if !vlan_slots.insert((a.trunk_network_interface_id.clone(), a.device_index)) {
                    bad.push(format!(
                        "{id}: VLAN {} of trunk {} taken twice",
                        a.device_index, a.trunk_network_interface_id
                    ));
                }
                match by_id.get(a.trunk_network_interface_id.as_str()) {
                    Some(t) if t.r#type == "Trunk" && t.instance_id == a.instance_id => {}
                    other => bad.push(format!(
                        "{id}: trunk {} is not a trunk of {}: {other:?}",
                        a.trunk_network_interface_id, a.instance_id
                    )),
                }
            }
            if e.instance_id != a.instance_id {
                bad.push(format!("{id}: InstanceId {} but Attachment.InstanceId {}", e.instance_id, a.instance_id));
            }
        } else if e.r#type == "Member" || e.r#type == "Primary" || e.status == "InUse" {
            bad.push(format!("{id}: {} {} without an attachment", e.r#type, e.status));
        }
    }
    for lb in snap.load_balancers.iter().filter(|l| l.address_type == "intranet") {
        if let Some(other) = ips.insert((lb.vpc_id.clone(), lb.address.clone()), lb.load_balancer_id.clone()) {
            bad.push(format!("{} held by {other} and {}", lb.address, lb.load_balancer_id));
        }
        *held.entry(lb.v_switch_id.clone()).or_default() += 1;
    }
    for v in &snap.vswitches {
        let want = usable_ips(&v.cidr_block) - held.get(&v.v_switch_id).copied().unwrap_or(0);
        if v.available_ip_address_count != want {
            bad.push(format!(
                "{} ({}): AvailableIpAddressCount {} but {} usable − held = {want}",
                v.v_switch_id,
                v.cidr_block,
                v.available_ip_address_count,
                usable_ips(&v.cidr_block)
            ));
        }
    }
    bad
}

// ---- the real binary ------------------------------------------------------------------------------

/// The `enifab` binary of this workspace, built if needed.
///
/// `CARGO_BIN_EXE_enifab` exists only inside the `enifab` package, and cargo does not build a
/// dependency's binaries for another package's tests. So, as `assert_cmd::cargo::cargo_bin` does,
/// the binary is looked for next to the test executable's `deps/` directory
/// (`target/debug/enifab`). Before the first use in a test process, `cargo build -p enifab --bin
/// enifab` runs once (a no-op when it is up to date), so a stale or missing binary is never
/// tested. `ENIFAB_BIN=/path/to/enifab` skips all of this.
pub fn enifab_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("ENIFAB_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("the test executable's path");
        let mut dir = exe.parent().expect("deps/").to_path_buf();
        if dir.ends_with("deps") {
            dir.pop();
        }
        let bin = dir.join(format!("enifab{}", std::env::consts::EXE_SUFFIX));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf();
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&workspace).args(["build", "--quiet", "-p", "enifab", "--bin", "enifab"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p enifab --bin enifab failed");
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
    .clone()
}

// ---- a whole emulator (API and data plane) --------------------------------------------------------

/// An emulator with its data plane (`serve::Emulator`: gRPC and the Geneve fabric) in this
/// process, on free loopback ports, with a temporary data directory and short transition
/// delays. For tests that run shims and pods against it; stopped when dropped.
pub struct FullEmulator {
    pub dir: TempDir,
    pub endpoint: String,
    pub clients: Clients,
    _stop: oneshot::Sender<()>,
}

impl FullEmulator {
    pub async fn start() -> FullEmulator {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let cfg = ServeConfig {
            delays: TransitionDelays { attach_ms: 30, detach_ms: 30, delete_ms: 10, start_stop_ms: 10 },
            ..ServeConfig::loopback(dir.path().join("data"))
        };
        let emu = serve::Emulator::open(&cfg, Arc::new(SystemClock)).expect("open the emulator");
        let listener = TcpListener::bind(cfg.listen).await.expect("bind");
        let endpoint = listener.local_addr().expect("a local address").to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(emu.run(listener, async move {
            let _ = stopped.await;
        }));
        let clients = Clients::new(connect(endpoint.parse().expect("an address")).await);
        FullEmulator { dir, endpoint, clients, _stop: stop }
    }

    /// Lab options for this emulator, with the workspace's binaries and state in the temp dir.
    pub fn lab_options(&self) -> enifab::lab::LabOptions {
        enifab::lab::LabOptions {
            endpoint: self.endpoint.clone(),
            state_dir: self.dir.path().join("lab"),
            bin_dir: workspace_bin_dir(),
            ..Default::default()
        }
    }
}

/// Whether this process runs as root (the lab and the shims need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// The directory holding this workspace's `enifab`, `enifab-shim` and `enifab-cni`, built if
/// needed (the lab starts shims and runs the CNI plugin as processes, as a node would).
pub fn workspace_bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let enifab = enifab_binary();
        let dir = enifab.parent().expect("target/<profile>").to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf();
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&workspace).args(["build", "--quiet", "-p", "enifab-shim", "--bins"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        assert!(cmd.status().expect("run cargo build").success(), "cargo build -p enifab-shim --bins failed");
        dir
    })
    .clone()
}

/// `enifab serve` as a child process on a free loopback port with `data_dir`. Killed (SIGKILL)
/// and reaped when dropped, so a failing test leaves nothing running.
pub struct ChildServer {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl ChildServer {
    /// Start `enifab serve --listen 127.0.0.1:0 --data-dir <dir> <extra…>` and wait until it
    /// says where it listens (its stderr line `… serving on ADDR …`).
    pub fn spawn(data_dir: &Path, extra: &[&str]) -> ChildServer {
        let mut child = Command::new(enifab_binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--region", REGION, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            // The data plane's UDP socket: a free port too, so servers run side by side.
            .env("ENIFAB_FABRIC_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn enifab serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        let sink = log.clone();
        // Keep draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split_once("serving on ").map(|(_, r)| r) {
                    let addr = rest.split(|c: char| c.is_whitespace() || c == ',').next().and_then(|a| a.parse().ok());
                    if let Some(addr) = addr {
                        let _ = tx.send(addr);
                    }
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let mut server = ChildServer { child, addr: "127.0.0.1:1".parse().expect("an address"), log };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => server.addr = addr,
            Err(_) => panic!("enifab serve did not report its address; stderr:\n{}", server.log().join("\n")),
        }
        server
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// `kill -9`: no chance to flush or shut down.
    pub fn kill9(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        // `Child::kill` is SIGKILL on Unix.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.kill_now();
    }
}

// ---- small utilities ------------------------------------------------------------------------------

/// A small deterministic generator (xorshift64*) for test choices; the seed is printed so a run
/// can be repeated with `ENIFAB_TEST_SEED`.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn from_env_or_time(test: &str) -> Rng {
        let seed = std::env::var("ENIFAB_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            let t =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
            t ^ u64::from(std::process::id()).rotate_left(32)
        });
        eprintln!("{test}: ENIFAB_TEST_SEED={seed}");
        Rng(seed.max(1))
    }

    pub fn from_seed(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
}

/// Run `f` for each of `n` indexes concurrently and collect the results in index order.
pub async fn concurrently<T, F, Fut>(n: usize, f: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let handles: Vec<_> = (0..n).map(|i| tokio::spawn(f(i))).collect();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(h.await.expect("a task panicked"));
    }
    out
}

/// The items that occur more than once, with their counts (empty when all are distinct).
pub fn duplicates<'a>(items: impl IntoIterator<Item = &'a str>) -> BTreeMap<&'a str, usize> {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for i in items {
        *count.entry(i).or_default() += 1;
    }
    count.retain(|_, n| *n > 1);
    count
}
