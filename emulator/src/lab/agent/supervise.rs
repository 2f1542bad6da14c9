//! The agent's first job: keep the node's `enifab-shim` running, as systemd or a kubelet keeps
//! a node daemon running. It finds out which instance the node is (by name, polling
//! `DescribeInstances` until the instance exists and is `Running`, so a node container may start
//! before the topology is applied), starts the shim for it, and starts it again with a backoff
//! when it exits without being asked to. A shim that stays up for [`STABLE`] is forgiven its
//! past: the next exit starts it again after [`FIRST_DELAY`]. When the instance found by name
//! is deleted or replaced (a `lab down` and `up` again), the shim is stopped and started for the
//! new one. On shutdown the shim gets SIGTERM (it removes its devices) and, after 10 s, SIGKILL.
//!
//! It must not touch the node's devices itself (the shim owns them, and rebuilds them when it
//! starts again), and it never acts on a failed lookup: an emulator that is restarting is no
//! reason to stop a working shim.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use enifab_proto::v1 as pb;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::cli::{Clients, describe_status};
use crate::lab::netns::{self, Ns};

/// The first wait before starting a shim again.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest wait between starts.
pub const MAX_DELAY: Duration = Duration::from_secs(10);
/// A run this long resets the backoff.
pub const STABLE: Duration = Duration::from_secs(10);
/// How often the instance is looked up while waiting for it, and while the shim runs.
const LOOKUP_EVERY: Duration = Duration::from_millis(500);
const RECHECK_EVERY: Duration = Duration::from_secs(2);

/// Exponential backoff between restarts: 0.1 s, 0.2 s, 0.4 s, … up to 10 s; back to 0.1 s after
/// a run of [`STABLE`].
#[derive(Debug, Clone)]
pub struct Backoff {
    delay: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { delay: FIRST_DELAY }
    }
}

impl Backoff {
    /// The wait before the next start, after a run that lasted `ran`.
    pub fn next(&mut self, ran: Duration) -> Duration {
        if ran >= STABLE {
            self.delay = FIRST_DELAY;
        }
        let d = self.delay;
        self.delay = (self.delay * 2).min(MAX_DELAY);
        d
    }
}

/// Who the node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// An ECS instance, found by its name (the topology's), whatever its id.
    InstanceName(String),
    /// An ECS instance by id.
    InstanceId(String),
    /// A host of the internet side: its name and public address with the segment's prefix.
    External { name: String, address: String },
}

impl Identity {
    pub fn name(&self) -> &str {
        match self {
            Identity::InstanceName(n) | Identity::InstanceId(n) => n,
            Identity::External { name, .. } => name,
        }
    }

    pub fn role(&self) -> &'static str {
        match self {
            Identity::External { .. } => "external",
            _ => "instance",
        }
    }
}

/// How to run the shim.
#[derive(Debug, Clone)]
pub struct ShimConfig {
    pub program: PathBuf,
    /// The emulator, as the shim reaches it.
    pub endpoint: String,
    pub identity: Identity,
    pub netns: Ns,
    pub socket: PathBuf,
    /// `--underlay`: the container's own interface, moved out of the node's way.
    pub underlay: Option<String>,
    /// `--cni-state-dir`: where the CNI plugin records the pods, for a restarted shim.
    pub cni_state_dir: Option<PathBuf>,
    /// More arguments for the shim, as given.
    pub extra: Vec<String>,
    /// Bind the shim's Geneve socket on the address this machine reaches the emulator from
    /// (port [`GENEVE_PORT`]), unless `extra` says where: in a node container the shim's socket
    /// lives in the node's namespace, and the emulator must reach it across the containers'
    /// network (its default, loopback, is only right for a shim in the host's namespace).
    pub geneve_on_route: bool,
}

/// The Geneve port a node container's shim listens on (RFC 8926's).
pub const GENEVE_PORT: u16 = 6081;

impl ShimConfig {
    /// The shim's command line for instance (or external host) `id`, its Geneve socket bound
    /// on `geneve` when given.
    pub fn args(&self, id: &str, geneve: Option<std::net::SocketAddr>) -> Vec<String> {
        let netns = match &self.netns {
            // The name, as the lab always passed it (leftovers are found by it).
            Ns::Named(n) => n.clone(),
            other => other.path().display().to_string(),
        };
        let mut a = vec!["--endpoint".into(), self.endpoint.clone(), "--instance-id".into(), id.to_string()];
        if let Identity::External { address, .. } = &self.identity {
            a.extend(["--external-address".into(), address.clone()]);
        }
        a.extend(["--netns".into(), netns, "--control-socket".into(), self.socket.display().to_string()]);
        if let Some(u) = &self.underlay {
            a.extend(["--underlay".into(), u.clone()]);
        }
        if let Some(d) = &self.cni_state_dir {
            a.extend(["--cni-state-dir".into(), d.display().to_string()]);
        }
        if let Some(g) = geneve {
            a.extend(["--geneve-listen".into(), g.to_string()]);
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    fn wants_geneve_on_route(&self) -> bool {
        self.geneve_on_route && !self.extra.iter().any(|a| a.starts_with("--geneve-listen"))
    }
}

/// The address this machine uses to reach `endpoint` (`host:port` or a URL), with
/// [`GENEVE_PORT`]: what the kernel's routing picks for a datagram there (nothing is sent).
pub async fn geneve_toward(endpoint: &str) -> Result<std::net::SocketAddr> {
    let hostport = endpoint.split("://").last().unwrap_or(endpoint).trim_end_matches('/');
    let target = tokio::net::lookup_host(hostport)
        .await
        .with_context(|| format!("resolving the emulator's address {hostport}"))?
        .find(|a| a.is_ipv4())
        .ok_or_else(|| anyhow!("{hostport} has no IPv4 address"))?;
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").context("a UDP socket")?;
    probe.connect(target).with_context(|| format!("no route to the emulator at {target}"))?;
    Ok(std::net::SocketAddr::new(probe.local_addr()?.ip(), GENEVE_PORT))
}

/// How the shim is doing, as `DescribeAgent` reports it.
#[derive(Debug, Clone, Default)]
pub struct ShimStatus {
    pub instance_id: String,
    /// `waiting`, `running`, `restarting` or `stopped`.
    pub state: &'static str,
    pub detail: String,
    pub pid: u32,
    pub restarts: u32,
}

/// Why supervision ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Asked to stop.
    Stopped,
    /// The node's named namespace was deleted: there is nothing left to supervise.
    NodeGone,
}

/// Keep the shim running until `stop` turns true or the node's namespace goes away.
pub async fn supervise(
    cfg: ShimConfig,
    mut cloud: Clients,
    status: Arc<Mutex<ShimStatus>>,
    mut stop: watch::Receiver<bool>,
) -> Result<Ended> {
    let set = |f: &dyn Fn(&mut ShimStatus)| f(&mut status.lock().expect("status lock"));
    let mut backoff = Backoff::default();
    loop {
        if node_gone(&cfg.netns) {
            return Ok(Ended::NodeGone);
        }
        let id = match &cfg.identity {
            Identity::InstanceId(id) => id.clone(),
            Identity::External { name, .. } => name.clone(),
            Identity::InstanceName(name) => {
                match wait_for_instance(&mut cloud, name, &cfg.netns, &status, &mut stop).await {
                    Some(id) => id,
                    None if node_gone(&cfg.netns) => return Ok(Ended::NodeGone),
                    None => return Ok(Ended::Stopped),
                }
            }
        };
        let geneve = match cfg.wants_geneve_on_route() {
            true => geneve_toward(&cfg.endpoint).await.map(Some),
            false => Ok(None),
        };
        let mut child = match geneve.and_then(|g| spawn(&cfg, &id, g)) {
            Ok(c) => c,
            Err(e) => {
                // Not being able to start it at all (a missing binary) will not fix itself soon,
                // but a retry costs nothing: back off as for an exit.
                tracing::error!("{e:#}");
                let wait = backoff.next(Duration::ZERO);
                set(&|s| {
                    s.state = "restarting";
                    s.detail = format!("{e:#}");
                    s.pid = 0;
                });
                if sleep_or_stop(wait, &mut stop).await {
                    return Ok(Ended::Stopped);
                }
                continue;
            }
        };
        let pid = child.id().unwrap_or(0);
        tracing::info!(pid, instance = %id, "shim started");
        set(&|s| {
            s.instance_id = id.clone();
            s.state = "running";
            s.detail = String::new();
            s.pid = pid;
        });
        let started = Instant::now();
        let why = watch_shim(&cfg, &mut cloud, &id, &mut child, &mut stop).await;
        match why {
            Watch::Exited(how) => {
                let wait = backoff.next(started.elapsed());
                tracing::warn!(pid, %how, ?wait, "the shim exited; starting it again");
                set(&|s| {
                    s.state = "restarting";
                    s.detail = format!("the shim (pid {pid}) {how}; starting it again in {wait:?}");
                    s.pid = 0;
                    s.restarts += 1;
                });
                if sleep_or_stop(wait, &mut stop).await {
                    return Ok(Ended::Stopped);
                }
            }
            Watch::Stop => {
                terminate(&mut child).await;
                set(&|s| {
                    s.state = "stopped";
                    s.pid = 0;
                });
                return Ok(Ended::Stopped);
            }
            Watch::NodeGone => {
                tracing::info!("the node's namespace is gone; stopping the shim");
                terminate(&mut child).await;
                return Ok(Ended::NodeGone);
            }
            Watch::Replaced(what) => {
                tracing::info!(pid, "{what}; stopping the shim");
                terminate(&mut child).await;
                set(&|s| {
                    s.state = "waiting";
                    s.detail = what.clone();
                    s.pid = 0;
                    s.instance_id.clear();
                });
            }
        }
    }
}

enum Watch {
    Exited(String),
    Stop,
    NodeGone,
    Replaced(String),
}

/// Wait for the shim to exit, a stop, the node's namespace to go, or the instance to change.
async fn watch_shim(
    cfg: &ShimConfig,
    cloud: &mut Clients,
    id: &str,
    child: &mut Child,
    stop: &mut watch::Receiver<bool>,
) -> Watch {
    let mut tick = tokio::time::interval(RECHECK_EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            r = child.wait() => {
                return Watch::Exited(match r {
                    Ok(s) => describe_exit(s),
                    Err(e) => format!("could not be waited for: {e}"),
                });
            }
            _ = stop.changed() => return Watch::Stop,
            _ = tick.tick() => {
                if node_gone(&cfg.netns) {
                    return Watch::NodeGone;
                }
                if let Identity::InstanceName(name) = &cfg.identity {
                    // Only a definite answer counts: an unreachable emulator changes nothing.
                    match lookup(cloud, name).await {
                        Ok(None) => return Watch::Replaced(format!("instance {name} ({id}) was deleted")),
                        Ok(Some((now, _))) if now != id => {
                            return Watch::Replaced(format!("instance {name} is now {now} (was {id})"));
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

fn describe_exit(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended".into(),
    }
}

/// Wait until the instance `name` exists and runs; its id, or `None` when told to stop (or the
/// node's namespace went away).
async fn wait_for_instance(
    cloud: &mut Clients,
    name: &str,
    netns: &Ns,
    status: &Mutex<ShimStatus>,
    stop: &mut watch::Receiver<bool>,
) -> Option<String> {
    let mut said = String::new();
    loop {
        let detail = match lookup(cloud, name).await {
            Ok(Some((id, st))) if st == "Running" => return Some(id),
            Ok(Some((id, st))) => format!("waiting for instance {name} ({id}) to run (it is {st})"),
            Ok(None) => format!("waiting for instance {name} to exist"),
            Err(e) => format!("waiting for the emulator: {e:#}"),
        };
        if detail != said {
            tracing::info!("{detail}");
            said = detail.clone();
            let mut s = status.lock().expect("status lock");
            s.state = "waiting";
            s.detail = detail;
        }
        if node_gone(netns) || sleep_or_stop(LOOKUP_EVERY, stop).await {
            return None;
        }
    }
}

/// The id and status of the instance named `name`.
async fn lookup(cloud: &mut Clients, name: &str) -> Result<Option<(String, String)>> {
    let r = cloud
        .ecs
        .describe_instances(pb::DescribeInstancesRequest {
            instance_name: name.to_string(),
            page_size: Some(10),
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow!("DescribeInstances: {}", describe_status(&s)))?
        .into_inner();
    let found = r.instances.unwrap_or_default().instance.into_iter().find(|i| i.instance_name == name);
    Ok(found.map(|i| (i.instance_id, i.status)))
}

fn spawn(cfg: &ShimConfig, id: &str, geneve: Option<std::net::SocketAddr>) -> Result<Child> {
    Command::new(&cfg.program)
        .args(cfg.args(id, geneve))
        .stdin(Stdio::null())
        // Its output goes where ours goes (the node's log file, the container's log).
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", cfg.program.display()))
}

/// SIGTERM (the shim removes its devices), then SIGKILL after 10 s.
pub async fn terminate(child: &mut Child) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_ok() {
            return;
        }
        tracing::warn!(pid, "the shim did not stop within 10 s of SIGTERM; killing it");
    }
    let _ = child.kill().await;
}

/// A node whose named namespace was deleted is gone (a local lab's `down`, or its crash clean-up).
fn node_gone(netns: &Ns) -> bool {
    match netns {
        Ns::Named(n) => !netns::exists(n),
        Ns::Path(p) => !p.exists(),
        Ns::Own => false,
    }
}

/// Sleep for `d`; true when told to stop meanwhile.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_geneve_address_is_the_one_that_routes_to_the_emulator() {
        let a = geneve_toward("http://127.0.0.1:50051").await.unwrap();
        assert_eq!(a, "127.0.0.1:6081".parse().unwrap());
        assert!(geneve_toward("http://no-such-host.invalid:50051").await.is_err());
    }

    #[test]
    fn restarts_back_off_and_a_stable_run_is_forgiven() {
        let mut b = Backoff::default();
        let quick = Duration::from_millis(50);
        let waits: Vec<Duration> = (0..9).map(|_| b.next(quick)).collect();
        assert_eq!(waits[0], FIRST_DELAY);
        assert_eq!(waits[1], FIRST_DELAY * 2);
        assert_eq!(waits[2], FIRST_DELAY * 4);
        assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
        assert_eq!(*waits.last().unwrap(), MAX_DELAY, "capped");
        assert_eq!(b.next(STABLE), FIRST_DELAY, "a run of STABLE resets the backoff");
        assert_eq!(b.next(quick), FIRST_DELAY * 2);
    }

    #[test]
    fn the_shim_is_told_who_it_is_and_where() {
        let cfg = ShimConfig {
            program: "enifab-shim".into(),
            endpoint: "http://emulator:50051".into(),
            identity: Identity::External { name: "internet".into(), address: "47.100.1.10/24".into() },
            netns: Ns::Named("efb1-x0".into()),
            socket: "/run/enifab/shim.sock".into(),
            underlay: Some("underlay0".into()),
            cni_state_dir: None,
            extra: vec!["--geneve-listen".into(), "0.0.0.0:6081".into()],
            geneve_on_route: true,
        };
        assert!(!cfg.wants_geneve_on_route(), "the user said where");
        let a = cfg.args("internet", None).join(" ");
        assert_eq!(
            a,
            "--endpoint http://emulator:50051 --instance-id internet --external-address 47.100.1.10/24 \
             --netns efb1-x0 --control-socket /run/enifab/shim.sock --underlay underlay0 \
             --geneve-listen 0.0.0.0:6081"
        );
        let own = ShimConfig { netns: Ns::Own, identity: Identity::InstanceId("i-1".into()), extra: vec![], ..cfg };
        assert!(own.wants_geneve_on_route());
        let a = own.args("i-1", Some("172.30.0.3:6081".parse().unwrap())).join(" ");
        assert!(a.contains(&format!("--netns /proc/{}/ns/net", std::process::id())), "{a}");
        assert!(a.ends_with("--geneve-listen 172.30.0.3:6081"), "{a}");
    }
}
