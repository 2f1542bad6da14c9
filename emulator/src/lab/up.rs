//! `enifab lab up`: the topology made real, step by step, each step idempotent so `up` can be
//! run again after a failure or an edit. The cloud side first ([`crate::apply`]), then through
//! the node runtime the nodes (each instance's shim running, its NICs plugged in), the external
//! clients, the pods (CNI ADD), the responders; then the file's load balancers whose backends
//! are pods, and the Services (the CCM's CLBs, kube-proxy's rules on every node).
//!
//! Progress is written to the state after every step (`up.status`, `up.step`), so a `check`
//! started meanwhile knows to wait, and a failure is recorded with its reason. Must not know
//! how a node is made: that is the runtime's.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use super::runtime::{NodeSpec, Runtime};
use super::state::{self, LabState, UpProgress};
use super::{LabOptions, Log, lab_id, pods, process, runtime, services};
use crate::apply;
use crate::cli::{self, Clients};
use crate::topology::Topology;

/// `enifab lab up`.
pub async fn up(opts: &LabOptions, file: &Path, out: &mut dyn FnMut(String)) -> Result<LabState> {
    let topo = Topology::load(file)?;
    let id = lab_id(file);
    let mut st = state::load(opts, &id)?.unwrap_or_else(|| LabState {
        id: id.clone(),
        topology: std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf()),
        ..Default::default()
    });
    let rt = Runtime::for_up(opts, &st)?;
    if rt.kind() == runtime::LOCAL {
        process::require_root()?;
    }
    rt.record(&mut st);
    st.endpoint = opts.endpoint.clone();
    let mut log = Log { out };
    let result = steps(opts, &rt, &topo, file, &mut st, &mut log).await;
    st.up = match &result {
        Ok(()) => UpProgress { status: "done".into(), ..Default::default() },
        Err(e) => UpProgress { status: "failed".into(), step: st.up.step.clone(), error: format!("{e:#}") },
    };
    state::save(opts, &st)?;
    result?;
    log.line(format!("lab {id}: up"));
    Ok(st)
}

async fn steps(
    opts: &LabOptions,
    rt: &Runtime,
    topo: &Topology,
    file: &Path,
    st: &mut LabState,
    log: &mut Log<'_>,
) -> Result<()> {
    let id = st.id.clone();
    let step = |st: &mut LabState, name: &str| -> Result<()> {
        st.up = UpProgress { status: "running".into(), step: name.into(), error: String::new() };
        state::save(opts, st)
    };
    step(st, "cloud")?;
    let channel = cli::connect_patiently(&opts.endpoint, Duration::from_secs(10)).await?;
    let mut c = Clients::new(channel);
    log.line(format!("lab {id}: cloud ({})", file.display()));
    let mut applied = apply::apply(&mut c, topo, &mut |line| log.line(format!("  {line}"))).await?;
    pods::check_pinned_ipv6(&mut c, topo, &applied).await?;

    step(st, "nodes")?;
    log.line(format!("lab {id}: nodes ({} runtime)", rt.kind()));
    for (i, inst) in topo.instances.iter().enumerate() {
        let name = &inst.name.value;
        let primary_ip = inst.private_ip.as_ref().map(|p| p.value.clone()).unwrap_or_default();
        let primary_ip6 = applied.ipv6.get(name).cloned().unwrap_or_default();
        let links: &[&str] = if applied.trunks.contains_key(name) { &["eth0", "eth1"] } else { &["eth0"] };
        let instance_id = &applied.instances[name];
        let node = NodeSpec { index: i, name, instance_id, primary_ip: &primary_ip, primary_ip6: &primary_ip6, links };
        rt.node(opts, st, &node, log).await?;
        state::save(opts, st)?;
    }
    for (i, x) in topo.external_clients.iter().enumerate() {
        rt.external(opts, st, i, &x.name.value, &x.address.value, log).await?;
        state::save(opts, st)?;
    }

    step(st, "pods")?;
    log.line(format!("lab {id}: pods"));
    pods::up_pods(opts, rt, topo, &applied, &mut c, st, log).await?;

    step(st, "servers")?;
    log.line(format!("lab {id}: servers"));
    pods::up_servers(opts, rt, topo, st, log).await?;

    if !topo.load_balancers.is_empty() {
        step(st, "load balancers")?;
        log.line(format!("lab {id}: load balancers"));
        let pods = st.pods.clone();
        let resolve = move |pod: &str| pods.get(pod).and_then(|p| p.ip.parse().ok());
        apply::apply_load_balancers(&mut c, topo, &mut applied, &resolve, &mut |line| log.line(format!("  {line}")))
            .await?;
    }

    if !topo.services.is_empty() || !st.services.is_empty() {
        step(st, "services")?;
        log.line(format!("lab {id}: services"));
        services::up_services(opts, rt, topo, &applied, &mut c, st, log).await?;
    }
    Ok(())
}
