//! The VPC resource model: regions, VPCs, vSwitches, security groups, instances, ENIs and layer-4
//! load balancers with Alibaba Cloud's semantics (ECS `2014-05-26`, VPC `2016-04-28`, SLB/CLB
//! `2014-05-15`).
//!
//! This crate is the single source of truth every face calls: the gRPC services, the CLI (through
//! gRPC) and the cloud-compatible HTTP endpoint. It is **pure**: no tokio, no sockets, no files, no
//! clock and no randomness. Time arrives as a [`Millis`] argument; identifiers come from a seeded,
//! persisted counter ([`ids::IdGen`]); persistence is the caller's job, driven by the dirty set the
//! region keeps ([`Region::take_dirty`], [`Region::export_row`], [`Region::restore`]).
//!
//! Behaviour follows `shared/reference/alibaba-semantics.md`; where that reference marks a behaviour
//! as unconfirmed, the choice made is documented at the place it is implemented.
//!
//! # Layout
//! - [`net`]: CIDRs and MAC addresses; [`time`]: the caller's clock values and the cloud's formats;
//! - [`ids`]: ID and MAC generation; [`error`]: [`ModelError`], one variant per cloud error code;
//! - [`catalog`]: built-in instance types; [`ipam`]: per-vSwitch address allocation;
//! - [`vpc`], [`security_group`], [`instance`], [`eni`]: one resource per module, each with the
//!   `impl Region` block of its actions (moto's `models/<resource>.py`);
//! - [`slb`]: load balancers, their listeners and vServer groups (one module per resource);
//! - [`region`]: the region itself, its indexes, transitions, idempotency and persistence hooks;
//! - [`paging`]: the cloud's two paging schemes.

pub mod catalog;
pub mod eni;
pub mod error;
pub mod ids;
pub mod instance;
pub mod ipam;
pub mod net;
pub mod paging;
pub mod region;
pub mod security_group;
pub mod slb;
pub mod time;
pub mod vpc;

pub use error::ModelError;
pub use net::{Cidr, Mac};
pub use region::{Kind, Region, RegionConfig, TransitionDelays};
pub use time::Millis;

/// A resource tag (`Tag.N.Key` / `Tag.N.Value`); responses call the fields `TagKey` / `TagValue`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

/// The result type of every model action.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
