//! Seeing the emulator from outside: Prometheus metrics at `/metrics` ([`metrics`]), the gate
//! that keeps read-only pages to holders of an AccessKey ([`gate`]), and the log format switch
//! ([`logs`]).
//!
//! Must not: decide anything or change any state. Everything here reads: counters the data
//! plane hands out as snapshots, the model through its read path, and the faces' outcomes as
//! they pass by.
//!
//! The cloud has its own monitoring (CloudMonitor's per-ENI and per-instance metrics, SLB's
//! backend health); enifab exposes the same kinds of numbers the way a self-hosted lab is
//! watched: a Prometheus scrape.

pub mod gate;
pub mod logs;
pub mod metrics;
