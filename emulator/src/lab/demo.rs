//! `enifab demo`: the seed article's SOP scenarios, end to end, with nothing to set up.
//!
//! Starts an emulator in this process (temporary data directory, API and fabric on free
//! loopback ports), writes the SOP example topology next to it, runs `lab up`, `lab check` and
//! `lab down`, and prints the table. Needs root (namespaces, TAP devices, routes).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::{LabOptions, check, down, exit_code, render, up};
use crate::actor::SystemClock;
use crate::serve::{Emulator, ServeConfig};

const VETH: &str = include_str!("../../../examples/terway-trunk-sop/topology.yaml");
const VLAN: &str = include_str!("../../../examples/terway-trunk-sop/topology-vlan.yaml");

pub async fn run(vlan: bool) -> Result<ExitCode> {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("enifab demo builds network namespaces, TAP devices and routes: run it as root (sudo enifab demo).");
        return Ok(ExitCode::from(2));
    }
    let dir = tempfile::Builder::new().prefix("enifab-demo-").tempdir().context("a temporary directory")?;
    let cfg = ServeConfig {
        delays: enifab_model::TransitionDelays { attach_ms: 50, detach_ms: 50, delete_ms: 20, start_stop_ms: 50 },
        ..ServeConfig::loopback(dir.path().join("data"))
    };
    let emulator = Emulator::open(&cfg, Arc::new(SystemClock))?;
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    let endpoint = listener.local_addr()?.to_string();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(emulator.run(listener, async move {
        let _ = stop_rx.await;
    }));
    println!("enifab demo: emulator on {endpoint}, state in {}", dir.path().display());

    let file = dir.path().join(if vlan { "topology-vlan.yaml" } else { "topology.yaml" });
    std::fs::write(&file, if vlan { VLAN } else { VETH })?;
    let opts = LabOptions::new(&endpoint, &dir.path().join("lab"))?;
    let mut print = |line: String| println!("{line}");
    let outcome = async {
        up(&opts, &file, &mut print).await?;
        println!("lab: running the checks");
        check(&opts, &file).await
    }
    .await;
    println!("lab: tearing down");
    let down_result = down(&opts, &file, &mut |_| {}).await;
    let _ = stop_tx.send(());
    let _ = server.await;
    let rows = outcome?;
    down_result?;
    println!();
    print!("{}", render(&rows));
    Ok(exit_code(&rows))
}
