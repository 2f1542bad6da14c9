//! The `enifab` binary's library: everything with sockets, threads and files lives here, around
//! the pure `enifab-model` (and later `enifab-dataplane`) crates.
//!
//! # Layout
//! - [`actor`]: the single thread that owns the model and commits every call to [`store`];
//! - [`store`]: SQLite persistence (WAL, `synchronous=FULL`);
//! - [`grpc`]: the `enifab.v1` services, thin translators between proto and model;
//! - [`serve`]: `enifab serve`, one port for gRPC, reflection, health and HTTP;
//! - [`fabric`]: the data plane at run time: Geneve socket, I/O thread, shim registry,
//!   `enifab.v1.Fabric`;
//! - [`codec`]: the cloud's flat parameters (`SecurityGroupIds.1=…`) and PascalCase JSON,
//!   derived from the proto descriptors, shared by the CLI and the HTTP endpoint;
//! - [`openapi`]: the cloud-compatible HTTP(S) endpoint (ECS/VPC/SLB RPC-style OpenAPI,
//!   signatures, TLS) in front of the same gRPC handlers; its checker of callers serves the gRPC
//!   face too (`grpc::auth`), and its listeners (limits, timeouts) serve both;
//! - [`cli`]: `enifab ecs|vpc|slb|emulator <Action> --Param value` over gRPC;
//! - [`capture`]: `enifab capture`, a port's frames from `Fabric.CaptureFrames` as pcapng;
//! - [`apply`]: `enifab apply -f FILE.yaml`, declarative creation of a topology's cloud side;
//! - [`topology`]: the topology file, checked and located;
//! - [`lab`]: `enifab lab up|check|down` and `enifab demo`: nodes, pods, external clients,
//!   Services (kube-proxy's iptables rules on the nodes, the cloud-controller-manager's CLB) and
//!   probes for real;
//! - [`trace`]: `enifab trace` / `Fabric.TraceFrame`, the pipeline's explanation of a first
//!   packet rendered hop by hop;
//! - [`observe`]: `/metrics` (Prometheus), the gate of read-only pages, the log format.
//! - [`ui`]: the live topology page at `/ui/` and its JSON (read-only).

pub mod actor;
pub mod apply;
pub mod capture;
pub mod cli;
pub mod codec;
pub mod fabric;
pub mod grpc;
pub mod lab;
pub mod observe;
pub mod openapi;
pub mod serve;
pub mod store;
pub mod topology;
pub mod trace;
pub mod ui;
