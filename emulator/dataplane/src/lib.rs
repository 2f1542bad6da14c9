//! `enifab-dataplane`: the emulator's frame pipeline, a pure function from "this Geneve datagram
//! arrived from that shim address at this time" to "send these bytes there, or drop for this
//! reason" (boringtun's `TunnResult`, OPTE's `ProcessResult`).
//!
//! It reproduces the Alibaba Cloud VPC as ENI trunking sees it (reference §6, §8, §9): ports
//! named by Geneve VNI, members demultiplexed by `(trunk port, 802.1Q VLAN)`, proxy ARP with
//! `ee:ff:ff:ff:ff:ff`, the vSwitch gateway answering ping, source/destination check, routing
//! by destination IP to the ENI that owns it, stateful security groups, and delivery rewritten
//! as routed (src MAC `ee:ff:ff:ff:ff:ff`, dst MAC the receiving device's, member tag pushed);
//! and CLB's layer 4 (reference §11): VIPs in a VPC or on the internet side, listeners that
//! translate new flows to a backend keeping the client's address, and health checks the fabric
//! originates itself. The order of steps is drawn in `PIPELINE.md`.
//!
//! Must not: use tokio, sockets, threads, clocks, syscalls or randomness; panic on any input;
//! allocate per frame. Time is a parameter ([`Instant`]); the output buffer is the caller's.
//!
//! # Layout
//! - [`wire`]: byte-level headers (Geneve + virtio-net option, VLAN push/pop, Ethernet, ARP,
//!   IPv4, TCP/UDP/ICMP, IPv6/NDP), re-exported from `enifab-net`, where the node shim uses
//!   them without this crate; CIDRs, MACs and the stable hash come from there too.
//! - [`config`]: the immutable, indexed snapshot of ports, ENIs, security groups, load
//!   balancers and external hosts.
//! - [`fabric`]: [`Fabric::process`], the pipeline, and [`Fabric::trace`], its explanation;
//!   [`explain`]: the synthetic first packet `enifab trace` puts through it.
//! - `conntrack`, `security_group`: the stateful firewall; conntrack also carries a load
//!   balancer's translation of a flow.
//! - `lb`: which backend a new flow to a VIP goes to; `nat`: how its packets are rewritten;
//!   [`health`]: the health checker.
//! - `fastpath`: what the nodes' kernels may carry by themselves (grants), and their reports;
//!   [`flowlog`]: per-ENI flow records with the deciding rule, from the pipeline's own events.
//! - [`drop`](mod@drop), [`stats`]: drop reasons and counters.

pub mod config;
mod conntrack;
pub mod drop;
pub mod explain;
pub mod fabric;
pub mod fastpath;
pub mod flowlog;
pub mod health;
mod lb;
mod nat;
mod security_group;
pub mod stats;
pub use enifab_net::wire;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

#[cfg(test)]
mod tests;

use core::time::Duration;

pub use config::{
    Attachment, BackendConfig, Cidr, Cidr6, ConfigError, ConntrackTimeouts, Direction, EniConfig, ExternalHostConfig,
    FabricConfig, FabricSpec, HealthCheckConfig, HealthCheckKind, HttpCodes, Ipv6Setup, LbNetwork, LbProtocol,
    ListenerConfig, LoadBalancerConfig, Peer, Policy, PortConfig, Protocol, Rule, Scheduler, SecurityGroupConfig,
    SgKind,
};
pub use conntrack::{FlowDir, FlowState};
pub use drop::{DropKind, DropReason, Layer};
pub use fabric::{CtLookup, Fabric, FabricOptions, FlowView, MAX_GROWTH, Step, Trace, Verdict};
pub use health::{BackendHealth, CHECKER, HealthStatus};
pub use security_group::{HEALTH_CHECK_CIDR, SgMatch};
pub use stats::{DropStats, EniStats, PortStats, StatsSnapshot};
pub use wire::geneve::Vni;

/// A point on the caller's monotonic clock, in nanoseconds. The pipeline only compares and adds
/// these, so any monotonic origin works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(pub u64);

impl Instant {
    pub const fn from_secs(s: u64) -> Instant {
        Instant(s.saturating_mul(1_000_000_000))
    }

    pub const fn from_millis(ms: u64) -> Instant {
        Instant(ms.saturating_mul(1_000_000))
    }

    pub fn saturating_add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
    }
}

impl core::ops::Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}
