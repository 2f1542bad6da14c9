//! Fake node shims for the emulator's end-to-end tests: a VPC with one vSwitch and one basic
//! group, ECS instances, and plain UDP sockets registered over `enifab.v1.Fabric` as their
//! shims. Frames are built with the data plane's testkit. No privileges needed.

#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use enifab::cli::Clients;
use enifab_dataplane::testkit::Endpoint;
use enifab_dataplane::wire::geneve;
use enifab_proto::v1 as pb;

pub struct Node {
    pub sock: UdpSocket,
    pub instance: String,
    pub eth0: Endpoint,
}

pub fn endpoint(eni: String, vni: u32, mac: &str, ip: &str, peer: SocketAddr) -> Endpoint {
    let m: enifab_model::Mac = mac.parse().unwrap();
    Endpoint { eni: Box::leak(eni.into_boxed_str()), vni, vlan: None, mac: m, ip: ip.parse().unwrap(), peer }
}

/// VPC 10.0.0.0/8, vSwitch 10.0.4.0/24, one basic group (members reach each other):
/// (vSwitch, group).
pub async fn network(c: &mut Clients) -> (String, String) {
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
            cidr_block: "10.0.4.0/24".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .v_switch_id;
    let sg = c
        .ecs
        .create_security_group(pb::CreateSecurityGroupRequest { vpc_id: vpc, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .security_group_id;
    (vsw, sg)
}

/// An ECS instance at `ip`: its id.
pub async fn instance(c: &mut Clients, vsw: &str, sg: &str, ip: &str) -> String {
    c.ecs
        .create_instance(pb::CreateInstanceRequest {
            instance_type: "ecs.g7.xlarge".into(),
            v_switch_id: vsw.into(),
            security_group_ids: vec![sg.into()],
            private_ip_address: ip.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .instance_id
}

/// An instance at `ip` and its fake shim, registered.
pub async fn node(c: &mut Clients, vsw: &str, sg: &str, ip: &str) -> Node {
    let instance = instance(c, vsw, sg, ip).await;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut fabric = c.fabric.clone();
    let r = fabric
        .register_node(pb::RegisterNodeRequest {
            instance_id: instance.clone(),
            geneve_address: sock.local_addr().unwrap().to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    sock.connect(r.fabric_address.parse::<SocketAddr>().unwrap()).unwrap();
    let nic = &r.config.unwrap().nics[0];
    assert_eq!((nic.r#type.as_str(), nic.device_index), ("Primary", 0));
    let eth0 = endpoint(nic.network_interface_id.clone(), nic.vni, &nic.mac_address, ip, sock.local_addr().unwrap());
    Node { sock, instance, eth0 }
}

/// Receive one datagram and return its inner Ethernet frame.
pub fn recv_frame(sock: &UdpSocket) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 70_000];
    let n = sock.recv(&mut buf).ok()?;
    let (_, inner) = geneve::Header::parse(&buf[..n]).ok()?;
    Some(inner.to_vec())
}
