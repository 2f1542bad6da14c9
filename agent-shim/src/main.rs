//! `enifab-shim`: one per node. Runs in the host namespace (where the emulator's gRPC and UDP
//! are reachable) and makes the namespace `--netns` look like the ECS instance `--instance-id`.
//! It also answers the instance metadata service at 100.100.100.200 inside that namespace
//! (`--metadata`, on by default). With `--external-address` the namespace becomes a host of the
//! internet side instead (an external client of internet-facing load balancers). With an
//! emulator that requires credentials, it signs as its node (`--node-token`, or asks for the
//! token with an AccessKey). SIGTERM or
//! SIGINT removes the devices and the address it created and exits 0. A shim started again for
//! the same node (after a crash or SIGKILL) rebuilds the pods recorded in `--cni-state-dir`; inside
//! a container, `--underlay` moves the container's own `eth0` aside first.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use enifab_shim::control::{AccessKey, ControlOptions};
use enifab_shim::fastpath::{Encap, FastPathOptions};
use enifab_shim::metadata::MetadataOptions;
use enifab_shim::{DEFAULT_GENEVE_LISTEN, Shim, ShimOptions};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
#[command(name = "enifab-shim", version, about = "Make a network namespace look like an ECS instance of enifab's VPC")]
struct Args {
    /// The emulator's gRPC address.
    #[arg(long, env = "ENIFAB_ENDPOINT", default_value = "127.0.0.1:50051")]
    endpoint: String,
    /// The ECS instance this node is (i-…).
    #[arg(long)]
    instance_id: String,
    /// The node's network namespace: a name under /run/netns (as `ip netns add` makes it) or a path.
    #[arg(long)]
    netns: String,
    /// Unix socket of the Shim API for the CNI [default: /run/enifab/shim-<instance-id>.sock].
    #[arg(long)]
    control_socket: Option<PathBuf>,
    /// Address of the Geneve UDP socket.
    #[arg(long, env = "ENIFAB_GENEVE_LISTEN", default_value = DEFAULT_GENEVE_LISTEN)]
    geneve_listen: SocketAddr,
    /// The Geneve address to register with the emulator (HOST:PORT, resolved at start), when
    /// it is not the socket's own (NAT, a published port). Default: the socket's address; for a
    /// wildcard bind, this host's address toward the emulator.
    #[arg(long, env = "ENIFAB_GENEVE_ADVERTISE", value_parser = enifab_udp::parse_host_port)]
    geneve_advertise: Option<SocketAddr>,
    /// This node's token (from `enifab emulator IssueNodeToken --InstanceId i-…`): what
    /// RegisterNode and WatchNode are signed with when the emulator requires credentials. All a
    /// node needs; prefer it to an AccessKey on a node.
    #[arg(long, env = "ENIFAB_NODE_TOKEN", hide_env_values = true)]
    node_token: Option<String>,
    /// A file holding the node's token.
    #[arg(long, env = "ENIFAB_NODE_TOKEN_FILE", conflicts_with = "node_token")]
    node_token_file: Option<PathBuf>,
    /// An AccessKey (with --access-key-secret): without a node token, the shim asks the
    /// emulator for its own with it; an external host signs with it.
    #[arg(long, env = "ENIFAB_ACCESS_KEY_ID", requires = "access_key_secret")]
    access_key_id: Option<String>,
    /// The secret of --access-key-id (prefer the environment or --access-key-file).
    #[arg(long, env = "ENIFAB_ACCESS_KEY_SECRET", hide_env_values = true, requires = "access_key_id")]
    access_key_secret: Option<String>,
    /// A file of AccessKeys (`AccessKeyId AccessKeySecret` per line); the first is used.
    #[arg(long, env = "ENIFAB_ACCESS_KEY_FILE")]
    access_key_file: Option<PathBuf>,
    /// Serve the instance metadata service at http://100.100.100.200/ inside the node's
    /// namespace (`--metadata=false` to leave it off).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    metadata: bool,
    /// Security hardening mode only: metadata requests without a token from
    /// `PUT /latest/api/token` get 401.
    #[arg(long)]
    metadata_token_required: bool,
    /// Make the namespace a host of the internet side rather than an instance: its public
    /// address with the segment's prefix (e.g. 47.100.1.10/24); `--instance-id` is then the
    /// host's name. The metadata service is off for such a host.
    #[arg(long)]
    external_address: Option<String>,
    /// Run inside a container whose namespace is the node's (`--netns /proc/self/ns/net`):
    /// rename the container's own eth0 to this name (e.g. underlay0) and keep only the routes
    /// to the emulator through it, so that eth0 can be the primary ENI.
    #[arg(long, value_name = "NAME")]
    underlay: Option<String>,
    /// The CNI plugin's state directory (its `stateDir`): a restarted shim rebuilds the pods
    /// recorded there.
    #[arg(long, default_value = enifab_shim::cni::conf::DEFAULT_STATE_DIR)]
    cni_state_dir: PathBuf,
    /// Let this node's kernel carry the flows the emulator admitted (BPF + a VXLAN device on
    /// the underlay): `off` relays every frame through the emulator. Needs an underlay device
    /// (`--fast-path-device`, or `--underlay`); without one, or without kernel support, the
    /// shim says so once and relays everything.
    #[arg(long, env = "ENIFAB_FAST_PATH", default_value = "on", value_parser = ["on", "off"])]
    fast_path: String,
    /// The device in the node's namespace whose IPv4 address other nodes' fast paths reach
    /// this one at [default: the --underlay name].
    #[arg(long, env = "ENIFAB_FAST_PATH_DEVICE")]
    fast_path_device: Option<String>,
    /// The fast path's VXLAN port, the same on every node.
    #[arg(long, default_value_t = enifab_shim::fastpath::DEFAULT_PORT)]
    fast_path_port: u16,
    /// Who builds and takes apart the fast path's VXLAN: `program` (the BPF programs, on the
    /// underlay device; the fastest) or `device` (the kernel's VXLAN device for every frame).
    #[arg(long, env = "ENIFAB_FAST_PATH_ENCAP", default_value = "program", value_parser = ["program", "device"])]
    fast_path_encap: String,
    /// How log lines look on stderr: `text` for people, `json` (one object per line) for log
    /// collectors. `RUST_LOG` still chooses which lines.
    #[arg(long, env = "ENIFAB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// `--log-format` (the same switch as `enifab`'s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl Args {
    /// Credentials and the address to register.
    fn control(&self) -> Result<ControlOptions> {
        let node_token = match (&self.node_token, &self.node_token_file) {
            (Some(t), _) => Some(t.trim().to_string()),
            (None, Some(f)) => {
                let t = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
                Some(t.trim().to_string())
            }
            (None, None) => None,
        };
        let access_key = AccessKey::from_parts(
            self.access_key_id.clone(),
            self.access_key_secret.clone(),
            self.access_key_file.as_deref(),
        )?;
        Ok(ControlOptions {
            node_token: node_token.filter(|t| !t.is_empty()),
            access_key,
            geneve_advertise: self.geneve_advertise,
            fast_path_address: None,
        })
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let control = args.control()?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    // Two workers are plenty: the data plane runs on its own threads.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let external = args.external_address.is_some();
    rt.block_on(async move {
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let shim = Shim::start_with(
            ShimOptions {
                endpoint: args.endpoint,
                instance_id: args.instance_id,
                netns: args.netns,
                control_socket: args.control_socket,
                geneve_listen: args.geneve_listen,
                metadata: (args.metadata && args.external_address.is_none())
                    .then_some(MetadataOptions { token_required: args.metadata_token_required }),
                external_address: args.external_address,
                fast_path: match (args.fast_path.as_str(), args.fast_path_device.or(args.underlay.clone())) {
                    ("on", Some(device)) if !external => Some(FastPathOptions {
                        device,
                        port: args.fast_path_port,
                        encap: if args.fast_path_encap == "device" { Encap::Device } else { Encap::Program },
                    }),
                    ("on", None) if !external => {
                        tracing::info!("kernel fast path off: no underlay device (--fast-path-device)");
                        None
                    }
                    _ => None,
                },
                underlay: args.underlay,
                cni_state_dir: Some(args.cni_state_dir),
            },
            control,
        )
        .context("starting the shim")?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
        shim.shutdown().await;
        Ok(())
    })
}
