//! `enifab lab down`: undo what `up` made, in reverse, tolerating what is already gone, also
//! after a crash: the pods (CNI DEL, which releases their member ENIs), the machines' part (the
//! node runtime's: responders, shims, namespaces), then the cloud side (the CCM's load
//! balancers, the file's, then everything `apply` made), found by name and tag when the state
//! is lost. Problems are collected and reported together; the state goes only when nothing is
//! left.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};

use super::runtime::{self, Runtime};
use super::state::{self, LabState};
use super::{LabOptions, Log, cloud, lab_id, pods, process, services};
use crate::apply;
use crate::cli::{self, Clients};
use crate::topology::Topology;

/// `enifab lab down`.
pub async fn down(opts: &LabOptions, file: &Path, out: &mut dyn FnMut(String)) -> Result<()> {
    let id = lab_id(file);
    let st = state::load(opts, &id)?.unwrap_or_else(|| LabState { id: id.clone(), ..Default::default() });
    let rt = Runtime::for_state(opts, &st)?;
    if rt.kind() == runtime::LOCAL {
        process::require_root()?;
    }
    let mut problems = Vec::new();
    let topo = Topology::load(file);
    let mut log = Log { out };

    pods::down_pods(opts, &rt, &st, &mut log, &mut problems).await;
    rt.down(&st, &mut log, &mut problems).await;
    if rt.kind() == runtime::LOCAL {
        // A crash between starting a helper and recording it leaves a process the state does not
        // know: find the lab's agents, shims and responders by the namespaces they were given.
        problems.extend(super::remove_host_leftovers(&id));
    }
    match topo {
        Ok(topo) => match cli::connect_patiently(&opts.endpoint, Duration::from_secs(5)).await {
            Ok(channel) => {
                let mut c = Clients::new(channel);
                if let Err(e) = down_cloud(&mut c, &topo, &st, &id, &mut log).await {
                    problems.push(format!("cloud: {e:#}"));
                }
            }
            Err(e) => problems.push(format!("cloud resources left (emulator unreachable): {e}")),
        },
        Err(e) => problems.push(format!("cloud resources left (topology unreadable): {e:#}")),
    }
    if problems.is_empty() {
        state::remove(opts, &id);
        log.line(format!("lab {id}: down"));
        Ok(())
    } else {
        bail!("lab {id} partly down:\n  {}", problems.join("\n  "))
    }
}

/// Load balancers first (a VPC with one cannot go), then the rest of the cloud side.
async fn down_cloud(c: &mut Clients, topo: &Topology, st: &LabState, id: &str, log: &mut Log<'_>) -> Result<()> {
    let found = cloud::lookup(c, topo).await?;
    // The state may be gone (a crash before it was written): the lab's id is enough.
    let st = LabState { id: id.to_string(), ..st.clone() };
    services::down_services(c, topo, &st, &found, log).await?;
    apply::delete_load_balancers(c, topo, &mut |line| log.say("clb", line)).await?;
    cloud::delete_cloud(c, topo, id, log).await
}
