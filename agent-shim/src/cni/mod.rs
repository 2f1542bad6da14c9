//! `enifab-cni`: the CNI plugin (spec 1.0/1.1: ADD, DEL, CHECK, STATUS, GC, VERSION) that wires
//! trunk pods the way Terway does, against the emulated cloud.
//!
//! ADD: find or create the pod's member ENI (a Secondary ENI in the pod's vSwitch with its
//! security groups, tagged with the container ID), attach it to the node's trunk with
//! `TrunkNetworkInstanceId`, wait for `InUse`, read `DeviceIndex` (the VLAN id), wait until the
//! node shim carries the member, then compute the pod's network ([`plan`]) and apply it with the
//! idempotent netlink driver ([`net`]) or, for the `vlan` datapath, the shim's sub-interface
//! device. DEL undoes the links, detaches and deletes the ENI; both are safe to repeat, and DEL
//! of an unknown container succeeds. CHECK compares the kernel and the cloud with the plan.
//!
//! Errors are CNI error JSON: 7 for a bad configuration, 11 when the emulator cannot be
//! reached, 100 with the cloud's code as `msg` (e.g. `InvalidVSwitchId.IpNotEnough`) and its
//! message as `details` for a cloud error.

pub mod cloud;
pub mod conf;
pub mod net;
pub mod plan;
pub mod state;

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use enifab_proto::v1 as pb;
use hyper_util::rt::TokioIo;
use rscni_plugin::async_cni::Cni;
use rscni_plugin::error::Error;
use rscni_plugin::types::{Args, CNIResult, Interface, IpConfig};

use crate::driver::netlink::Netlink;
use crate::driver::netns::run_in;
use crate::view::{IN_USE, nic_name};
use cloud::Cloud;
use conf::{Datapath, EnifabConf, IpStack, PodRequest};
use plan::{Inputs, Ns, Step};
use state::PodState;

/// The plugin; every operation reads its inputs from the invocation.
#[derive(Debug, Default)]
pub struct EnifabCni;

fn request(args: &Args) -> Result<PodRequest, Error> {
    PodRequest::new(
        args.config(),
        args.container_id().map(|c| c.to_string()).as_deref(),
        args.netns().cloned(),
        args.ifname().map(|i| i.to_string()).as_deref(),
        args.args(),
    )
}

fn io(e: crate::driver::DriverError) -> Error {
    Error::Custom(101, "netlink".into(), e.to_string())
}

/// The node's namespace: the one named in the configuration, or ours.
fn node_ns(conf: &EnifabConf) -> PathBuf {
    conf.node_netns.clone().unwrap_or_else(|| PathBuf::from("/proc/self/ns/net"))
}

async fn shim(socket: &Path) -> Result<pb::shim_client::ShimClient<tonic::transport::Channel>, Error> {
    let path = socket.to_path_buf();
    let ch = tonic::transport::Endpoint::from_static("http://shim.local")
        .connect_with_connector(tower::service_fn(move |_| {
            let p = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?)) }
        }))
        .await
        .map_err(|e| Error::TryAgainLater(format!("the node shim at {}: {e}", socket.display())))?;
    Ok(pb::shim_client::ShimClient::new(ch))
}

/// Wait until the shim's view of the node carries the member, `InUse`, on its VLAN: only then
/// does it tag the pod's frames.
async fn wait_shim_knows(socket: &Path, member: &str, vlan: u32) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut client = shim(socket).await?;
    loop {
        let node = client
            .describe_node(pb::DescribeNodeRequest {})
            .await
            .map_err(|s| Error::TryAgainLater(s.message().to_string()))?
            .into_inner();
        let known = node
            .nics
            .iter()
            .flat_map(|n| &n.members)
            .any(|m| m.network_interface_id == member && m.vlan_id == vlan && m.status == IN_USE);
        if known {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::TryAgainLater(format!("the node shim does not carry member {member} after 30 s")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Apply the plan's steps in order, each in its namespace: the sub-interface through the node
/// shim's API, the rest with the kernel ([`apply_kernel_step`]).
async fn apply(req: &PodRequest, pod_ns: &Path, steps: Vec<Step>) -> Result<(), Error> {
    let node = node_ns(&req.conf);
    for step in steps {
        let text = step.to_string();
        let fail = |e: Error| Error::Custom(101, "setup".into(), format!("{text}: {}", e.details()));
        match step {
            Step::VlanDevice { member, link, mtu, .. } => {
                let mut c = shim(&req.conf.shim_socket).await?;
                c.create_vlan_device(pb::CreateVlanDeviceRequest {
                    network_interface_id: member,
                    netns_path: pod_ns.display().to_string(),
                    if_name: link,
                    mtu,
                })
                .await
                .map_err(|s| fail(Error::TryAgainLater(s.message().to_string())))?;
            }
            Step::MoveToPod { .. } if !pod_ns.exists() => {
                return Err(Error::InvalidNetNS(format!("{} does not exist", pod_ns.display())));
            }
            step => apply_kernel_step(step, &node, pod_ns).map_err(io).map_err(fail)?,
        }
    }
    Ok(())
}

/// Makes one step of a pod's plan in its namespace (`node` or `pod`, given by path), blocking
/// and idempotent like every `ensure_*` under it. The ADD above and a restarted node shim
/// ([`crate::rebuild`]) share it. [`Step::VlanDevice`] is the node shim's to make, not the
/// kernel's: handed here it is refused.
pub fn apply_kernel_step(step: Step, node: &Path, pod: &Path) -> Result<(), crate::driver::DriverError> {
    use crate::driver::DriverError;
    match step {
        Step::VlanDevice { .. } => Err(DriverError::NotAKernelStep(step.to_string())),
        Step::MoveToPod { link } => {
            let target =
                std::fs::File::open(pod).map_err(|source| DriverError::OpenNetns { path: pod.to_owned(), source })?;
            run_in(node, move || Netlink::open()?.move_to(&link, target.as_raw_fd()))
        }
        Step::Neigh { link, ip, mac_of } => {
            let mac = run_in(node, move || Netlink::open()?.mac(&mac_of))?;
            run_in(pod, move || Netlink::open()?.replace_neigh(&link, ip, mac))
        }
        Step::Veth { host, peer } => run_in(node, move || Netlink::open()?.ensure_veth(&host, &peer)),
        Step::RenameUp { from, to } => run_in(pod, move || Netlink::open()?.rename_up(&from, &to)),
        Step::Up { ns, link } => run_in(ns_path(ns, node, pod), move || {
            let n = Netlink::open()?;
            n.set_up(n.index_of(&link)?, &link, true)
        }),
        Step::Addr { ns, link, ip, prefix } => {
            run_in(ns_path(ns, node, pod), move || Netlink::open()?.ensure_addr(&link, ip, prefix))
        }
        Step::Route { ns, dst, prefix, via, link, table, onlink } => run_in(ns_path(ns, node, pod), move || {
            Netlink::open()?.replace_route(dst, prefix, via, &link, table, onlink)
        }),
        Step::Rule { priority, from, to, table } => {
            run_in(node, move || Netlink::open()?.ensure_rule(priority, from, to, table))
        }
        Step::Ipv6On { ns, link } => {
            run_in(ns_path(ns, node, pod), move || crate::driver::netlink::enable_ipv6_static(&link))
        }
        Step::Forward6 => run_in(node, || {
            let path = "/proc/sys/net/ipv6/conf/all/forwarding".to_string();
            std::fs::write(&path, b"1").map_err(|source| DriverError::Sysctl { path, source })
        }),
    }
}

fn ns_path<'a>(ns: Ns, node: &'a Path, pod: &'a Path) -> &'a Path {
    match ns {
        Ns::Node => node,
        Ns::Pod => pod,
    }
}

/// Undo what a pod's plan made. Every part tolerates being gone already.
async fn teardown(conf: &EnifabConf, st: &PodState) -> Result<(), Error> {
    match st.datapath {
        Datapath::Veth => {
            let (host, table) = (st.host_veth.clone(), st.table);
            let ips: Vec<IpAddr> = std::iter::once(st.pod_ip.into()).chain(st.ipv6.map(|v| v.ip.into())).collect();
            run_in(&node_ns(conf), move || {
                let n = Netlink::open()?;
                n.delete_link(&host)?;
                for ip in ips {
                    n.delete_rules_for(plan::RULE_TO_POD, ip)?;
                    n.delete_rules_for(plan::RULE_FROM_POD, ip)?;
                }
                n.flush_table(table)
            })
            .map_err(io)?;
        }
        Datapath::Vlan => {
            // A shim that is gone took its devices with it.
            if let Ok(mut c) = shim(&conf.shim_socket).await {
                c.delete_vlan_device(pb::DeleteVlanDeviceRequest { network_interface_id: st.member.clone() })
                    .await
                    .map_err(|s| Error::TryAgainLater(s.message().to_string()))?;
            }
        }
    }
    Ok(())
}

#[async_trait]
impl Cni for EnifabCni {
    async fn add(&self, args: Args) -> Result<CNIResult, Error> {
        let req = request(&args)?;
        let pod_ns =
            req.pod_netns.clone().ok_or_else(|| Error::InvalidEnvValue("CNI_NETNS is required for ADD".into()))?;
        if !pod_ns.exists() {
            return Err(Error::InvalidNetNS(format!("{} does not exist", pod_ns.display())));
        }
        let mut c = Cloud::for_conf(&req.conf).await?;
        let trunk = c.trunk(&req.conf).await?;
        if trunk.status != IN_USE || trunk.instance_id != req.conf.instance_id {
            return Err(Error::TryAgainLater(format!(
                "trunk {} is {} on {:?}",
                trunk.network_interface_id, trunk.status, trunk.instance_id
            )));
        }
        let trunk_dev = nic_name(trunk.attachment.as_ref().map_or(0, |a| a.device_index));
        let member = match c.member_of(&req.container_id).await? {
            Some(m) => m.network_interface_id,
            None => c.create_member(&req, &trunk).await?,
        };
        let eni =
            c.eni(&member).await?.ok_or_else(|| Error::Custom(100, "InvalidEniId.NotFound".into(), member.clone()))?;
        if eni.status == "Available" {
            c.attach(&req, &member, &trunk.network_interface_id).await?;
        }
        let eni = c
            .wait(&member, IN_USE)
            .await?
            .ok_or_else(|| Error::Custom(100, "InvalidEniId.NotFound".into(), member.clone()))?;
        let vlan = eni.attachment.as_ref().map_or(0, |a| a.device_index as u32);
        let pod_ip: Ipv4Addr =
            eni.private_ip_address.parse().map_err(|_| Error::FailedToDecode(eni.private_ip_address.clone()))?;
        let vsw = c.vswitch(&eni.v_switch_id).await?;
        let (prefix, gateway) = (vsw.prefix, vsw.gateway);
        let ipv6 = match req.ip_stack {
            IpStack::Ipv4 => None,
            IpStack::Dual => Some(c.pod_ipv6(&req, &eni, vsw).await?),
        };
        wait_shim_knows(&req.conf.shim_socket, &member, vlan).await?;

        // Terway's HostIPSet: the node's own address (eth0, the primary ENI), which the veth
        // datapath also puts on the trunk.
        let host_ip = match req.datapath {
            Datapath::Veth => {
                let node = node_ns(&req.conf);
                let eth0 = nic_name(0);
                run_in(&node, move || Netlink::open()?.addrs(&eth0)).ok().and_then(|a| {
                    a.into_iter().find_map(|(ip, _)| match ip {
                        IpAddr::V4(v4) => Some(v4),
                        IpAddr::V6(_) => None,
                    })
                })
            }
            Datapath::Vlan => None,
        };
        let inputs = Inputs {
            host_ip,
            datapath: req.datapath,
            member: member.clone(),
            vlan,
            pod_ip,
            vswitch_prefix: prefix,
            gateway,
            trunk_dev: trunk_dev.clone(),
            host_veth: req.host_veth(),
            ifname: req.ifname.clone(),
            mtu: req.conf.mtu,
            ipv6,
        };
        let st = PodState {
            container_id: req.container_id.clone(),
            member: member.clone(),
            vlan,
            pod_ip,
            prefix,
            gateway,
            datapath: req.datapath,
            host_veth: inputs.host_veth.clone(),
            trunk_dev,
            ifname: req.ifname.clone(),
            table: inputs.table(),
            instance_id: Some(req.conf.instance_id.clone()),
            pod_netns: Some(pod_ns.clone()),
            pod_netns_id: crate::driver::netns::id_of(&pod_ns).ok(),
            mtu: req.conf.mtu,
            ipv6,
        };
        // Recorded before the links exist, so a DEL after a failed ADD knows what to remove.
        state::save(&req.conf.state_dir, &st)?;
        apply(&req, &pod_ns, plan::setup(&inputs)).await?;

        let pod_mac = {
            let (ns, name) = (pod_ns.clone(), req.ifname.clone());
            run_in(&ns, move || Netlink::open()?.mac(&name)).map_err(io)?
        };
        let mac = |m: [u8; 6]| enifab_net::Mac(m).to_string();
        let iface = |name: String, mac: String, sandbox: Option<String>| Interface {
            name,
            mac,
            mtu: Some(req.conf.mtu),
            sandbox,
            socket_path: None,
            pci_id: None,
        };
        let mut interfaces = Vec::new();
        if req.datapath == Datapath::Veth {
            let host = st.host_veth.clone();
            let host_mac = run_in(&node_ns(&req.conf), move || Netlink::open()?.mac(&host)).map_err(io)?;
            interfaces.push(iface(st.host_veth.clone(), mac(host_mac), None));
        }
        interfaces.push(iface(req.ifname.clone(), mac(pod_mac), Some(pod_ns.display().to_string())));
        let pod_if = Some((interfaces.len() - 1) as u32);
        let ip = |address: IpAddr, prefix: u8, gateway: IpAddr| -> Result<IpConfig, Error> {
            Ok(IpConfig {
                interface: pod_if,
                address: format!("{address}/{prefix}")
                    .parse()
                    .map_err(|_| Error::FailedToDecode(address.to_string()))?,
                gateway: Some(gateway),
            })
        };
        let mut ips = Vec::new();
        match req.datapath {
            Datapath::Veth => {
                ips.push(ip(pod_ip.into(), 32, plan::POD_GATEWAY.into())?);
                if let Some(v6) = ipv6 {
                    ips.push(ip(v6.ip.into(), 128, plan::POD_GATEWAY6.into())?);
                }
            }
            Datapath::Vlan => {
                ips.push(ip(pod_ip.into(), prefix, gateway.into())?);
                if let Some(v6) = ipv6 {
                    ips.push(ip(v6.ip.into(), v6.prefix, v6.gateway.into())?);
                }
            }
        }
        Ok(CNIResult { interfaces, ips, ..Default::default() })
    }

    async fn del(&self, args: Args) -> Result<(), Error> {
        let req = request(&args)?;
        let st = state::load(&req.conf.state_dir, &req.container_id)?;
        if let Some(st) = &st {
            teardown(&req.conf, st).await?;
        }
        let mut c = Cloud::for_conf(&req.conf).await?;
        if let Some(eni) = c.member_of(&req.container_id).await? {
            c.release(&eni).await?;
        }
        state::remove(&req.conf.state_dir, &req.container_id)
    }

    async fn check(&self, args: Args) -> Result<(), Error> {
        let req = request(&args)?;
        let st = state::load(&req.conf.state_dir, &req.container_id)?
            .ok_or_else(|| Error::NotExist(format!("container {} has no enifab network", req.container_id)))?;
        let pod_ns =
            req.pod_netns.clone().ok_or_else(|| Error::InvalidEnvValue("CNI_NETNS is required for CHECK".into()))?;
        let mut c = Cloud::for_conf(&req.conf).await?;
        let eni = c
            .eni(&st.member)
            .await?
            .ok_or_else(|| Error::Custom(100, "InvalidEniId.NotFound".into(), st.member.clone()))?;
        let vlan = eni.attachment.as_ref().map_or(0, |a| a.device_index as u32);
        if eni.status != IN_USE || vlan != st.vlan || eni.private_ip_address != st.pod_ip.to_string() {
            return Err(Error::Custom(
                102,
                "member ENI drifted".into(),
                format!("{} is {} on VLAN {vlan} with {}", st.member, eni.status, eni.private_ip_address),
            ));
        }
        let want: Vec<IpAddr> = std::iter::once(st.pod_ip.into()).chain(st.ipv6.map(|v| v.ip.into())).collect();
        if let Some(v6) = st.ipv6
            && !eni.ipv6_sets.as_ref().is_some_and(|s| s.ipv6_set.iter().any(|x| x.ipv6_address == v6.ip.to_string()))
        {
            return Err(Error::Custom(
                102,
                "member ENI drifted".into(),
                format!("{} no longer holds {}", st.member, v6.ip),
            ));
        }
        let ifname = st.ifname.clone();
        let addrs = run_in(&pod_ns, move || Netlink::open()?.addrs(&ifname)).map_err(io)?;
        for ip in want {
            if !addrs.iter().any(|(a, _)| *a == ip) {
                return Err(Error::Custom(
                    102,
                    "pod address missing".into(),
                    format!("{} has {addrs:?}, not {ip}", st.ifname),
                ));
            }
        }
        if st.datapath == Datapath::Veth {
            let s = st.clone();
            let problems = run_in(&node_ns(&req.conf), move || {
                let n = Netlink::open()?;
                let mut p = Vec::new();
                if n.index(&s.host_veth)?.is_none() {
                    p.push(format!("{} is missing", s.host_veth));
                }
                let rules = n.rules()?;
                let (main, trunk) = (n.routes(254)?, n.routes(s.table)?);
                let families = std::iter::once((IpAddr::from(s.pod_ip), IpAddr::from(s.gateway)))
                    .chain(s.ipv6.map(|v| (v.ip.into(), v.gateway.into())));
                for (ip, gateway) in families {
                    let want = [
                        net::RuleInfo { priority: plan::RULE_TO_POD, from: None, to: Some(ip), table: 254 },
                        net::RuleInfo { priority: plan::RULE_FROM_POD, from: Some(ip), to: None, table: s.table },
                    ];
                    for w in want {
                        if !rules.contains(&w) {
                            p.push(format!("rule {w:?} is missing"));
                        }
                    }
                    if !trunk.iter().any(|r| r.prefix == 0 && r.gateway == Some(gateway)) {
                        p.push(format!("table {} has no default route via {gateway}", s.table));
                    }
                    if !main.iter().any(|r| r.prefix == plan::host_prefix(&ip) && r.dst == ip) {
                        p.push(format!("main has no route to {ip}"));
                    }
                }
                Ok(p)
            })
            .map_err(io)?;
            if !problems.is_empty() {
                return Err(Error::Custom(102, "node state drifted".into(), problems.join("; ")));
            }
        }
        Ok(())
    }

    async fn status(&self, args: Args) -> Result<(), Error> {
        let req = PodRequest::new(args.config(), Some("status"), None, None, None)?;
        let mut c = Cloud::for_conf(&req.conf).await.map_err(|e| Error::PluginNotAvailable(e.details().to_string()))?;
        c.ecs
            .describe_instances(pb::DescribeInstancesRequest {
                instance_ids: format!("[\"{}\"]", req.conf.instance_id),
                ..Default::default()
            })
            .await
            .map_err(|s| Error::PluginNotAvailable(s.message().to_string()))?;
        Ok(())
    }

    /// CNI 1.1 GC: what this node wired for a container the runtime no longer lists is unwired
    /// and its member ENI released — from the state files first, then from the trunk's members
    /// (an ENI whose state file was lost). Without the runtime's list nothing is touched: every
    /// pod would look stale.
    async fn gc(&self, args: Args) -> Result<(), Error> {
        let netconf = args.config();
        let conf = EnifabConf::from_netconf(netconf)?;
        let Some(valid) = &netconf.valid_attachments else { return Ok(()) };
        let valid: std::collections::BTreeSet<&str> = valid.iter().map(|a| a.container_id.as_str()).collect();
        let mut c = Cloud::for_conf(&conf).await?;
        for (_, st) in state::load_all(&conf.state_dir) {
            // An unreadable file names no container for sure: the shim's rebuild reports it.
            let Ok(st) = st else { continue };
            let elsewhere = st.instance_id.as_deref().is_some_and(|i| i != conf.instance_id);
            if elsewhere || valid.contains(st.container_id.as_str()) {
                continue;
            }
            teardown(&conf, &st).await?;
            if let Some(eni) = c.member_of(&st.container_id).await? {
                c.release(&eni).await?;
            }
            state::remove(&conf.state_dir, &st.container_id)?;
        }
        let trunk = c.trunk(&conf).await?;
        for (container, eni) in c.members_on(&trunk.network_interface_id).await? {
            if !valid.contains(container.as_str()) {
                c.release(&eni).await?;
            }
        }
        Ok(())
    }
}
