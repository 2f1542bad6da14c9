//! The ECS instance metadata service of one node: `http://100.100.100.200/latest/meta-data/…`
//! answered from inside the node's namespace, for that instance only (reference §10).
//!
//! On ECS the hypervisor answers 100.100.100.200 for the calling instance. Here each node is a
//! namespace with its own shim, so the shim owns the address inside that namespace (on `lo`)
//! and answers from the latest `NodeConfig` the emulator pushed (`WatchNode`): an attach, detach,
//! assign or unassign shows up as soon as the shim has reconciled it, well within Terway's
//! polling. Nothing is cached apart from that config and the tokens.
//!
//! - [`routes`] (pure): `(NodeConfig, request, tokens, now)` → status, content type, body.
//! - [`server`]: the address on `lo`, the listener bound inside the namespace, the axum glue.

pub mod routes;
pub mod server;

pub use server::{METADATA_IP, METADATA_PORT, MetadataError, MetadataOptions, MetadataServer};
