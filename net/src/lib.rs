//! `enifab-net`: the network vocabulary the model, the pipeline and the node shim share, so
//! each rule about addresses has one home.
//!
//! - [`cidr`]: IP prefixes of both families ([`Cidr`], [`Cidr6`]) with the VPC's vSwitch rules
//!   (gateway = last address − 2, first and last three reserved), strict parsing for what the
//!   cloud accepts and lenient construction for matching.
//! - [`mac`]: [`Mac`], with Alibaba's OUI and the gateway's `ee:ff:ff:ff:ff:ff`.
//! - [`hash`]: the stable FNV-1a hash behind names and keys that must not change between runs.
//! - [`wire`]: byte-level formats (Geneve with the virtio-net option, Ethernet, 802.1Q, ARP,
//!   IPv4, TCP/UDP/ICMP, the fast-path maps' records; IPv6, ICMPv6 and neighbour discovery).
//!   [`Vni`] names a port in Geneve.
//!
//! Must not: hold policy (which port, which ENI, which group: that is the pipeline's), do I/O,
//! read a clock, or depend on anything heavier than serde (optional) and etherparse. The node
//! shim depends on this crate instead of the whole pipeline.

pub mod cidr;
pub mod hash;
pub mod mac;
pub mod wire;

pub use cidr::{BadCidr, Cidr, Cidr6, Family, IpCidr, parse_peer_cidr, parse_peer_cidr6};
pub use hash::{fnv1a, fnv1a_extend, stable_key};
pub use mac::{BadMac, Mac};
pub use wire::geneve::Vni;
