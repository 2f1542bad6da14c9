//! The model's network vocabulary: IPv4 and IPv6 CIDR blocks with the VPC's address rules
//! (gateway = last − 2, first and last three reserved, strict "network address only" parsing)
//! and MAC addresses. They live in `enifab-net`, shared with the pipeline and the node shim, so
//! each rule has one copy; this module keeps the model's paths (`crate::net::Cidr`).

pub use enifab_net::{Cidr, Cidr6, Mac, parse_peer_cidr, parse_peer_cidr6};
