//! enifab's gRPC API, `enifab.v1`: the generated messages, clients and servers, and the encoded
//! descriptor set (for server reflection and for the generic cloud-style JSON/parameter codec).
//!
//! The `.proto` files under `proto/enifab/v1/` are the contract; see `common.proto` for the rule
//! that makes field names the snake_case of the cloud's names. Calls are signed as [`auth`] says,
//! one implementation for the emulator that checks and the clients that sign.

pub mod auth;

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("enifab.v1");
}

/// The encoded `FileDescriptorSet` of every `enifab.v1` file.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/enifab_descriptor.bin"));
