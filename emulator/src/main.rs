//! `enifab`: the VPC emulator (`enifab serve`) and its command-line client.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use enifab::cli::{self, CallError};
use enifab::observe::logs::LogFormat;
use enifab::openapi::listener::{self, Limits};
use enifab::serve::{self, ServeConfig};
use enifab_model::TransitionDelays;

#[derive(Parser, Debug)]
#[command(
    name = "enifab",
    version,
    about = "A local Alibaba Cloud VPC for Terway's ENI trunking: API, data plane, nodes."
)]
struct Cli {
    /// The emulator's API endpoint (for client commands).
    #[arg(long, global = true, env = "ENIFAB_ENDPOINT", default_value = cli::DEFAULT_ENDPOINT)]
    endpoint: String,
    #[command(flatten)]
    key: KeyArgs,
    /// How log lines look on stderr: `text` for people, `json` (one object per line) for log
    /// collectors. `RUST_LOG` still chooses which lines.
    #[arg(long, global = true, env = "ENIFAB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// The AccessKey: what `serve` requires of callers, what client commands sign with.
#[derive(clap::Args, Debug)]
struct KeyArgs {
    /// The AccessKey (with --access-key-secret): `serve` requires every call (HTTP and gRPC) to be
    /// signed with it; client commands (ecs, vpc, …, apply, lab) sign with it. Without any key,
    /// `serve` accepts every request unsigned and clients send them so.
    #[arg(long, global = true, env = "ENIFAB_ACCESS_KEY_ID", requires = "access_key_secret")]
    access_key_id: Option<String>,
    /// The secret of --access-key-id (prefer the environment or --access-key-file: flags show in `ps`).
    #[arg(long, global = true, env = "ENIFAB_ACCESS_KEY_SECRET", hide_env_values = true, requires = "access_key_id")]
    access_key_secret: Option<String>,
    /// A file of AccessKeys, one `AccessKeyId AccessKeySecret` pair per line: `serve` accepts
    /// them all, clients sign with the first (when no --access-key-id is given).
    #[arg(long, global = true, env = "ENIFAB_ACCESS_KEY_FILE")]
    access_key_file: Option<PathBuf>,
}

impl KeyArgs {
    /// Every key `serve` accepts.
    fn credentials(&self) -> Result<enifab::openapi::auth::Credentials> {
        use enifab::openapi::auth::{Credentials, NODE_PREFIX};
        let mut credentials = Credentials::default();
        if let (Some(id), Some(secret)) = (&self.access_key_id, &self.access_key_secret) {
            credentials.extend(Credentials::new([(id.clone(), secret.clone())]));
        }
        if let Some(file) = &self.access_key_file {
            credentials.extend(Credentials::load(file)?);
        }
        if let Some(id) = credentials.ids().find(|id| id.starts_with(NODE_PREFIX)) {
            anyhow::bail!("the AccessKeyId {id:?} looks like a node's ({NODE_PREFIX}<instance-id>); choose another");
        }
        Ok(credentials)
    }

    /// The key a client signs with.
    fn client_key(&self) -> Result<Option<cli::AccessKey>> {
        Ok(cli::AccessKey::from_parts(
            self.access_key_id.clone(),
            self.access_key_secret.clone(),
            self.access_key_file.as_deref(),
        )?)
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the emulator: the VPC's API (gRPC, reflection, health) on one port.
    Serve {
        /// Address to listen on; loopback unless you choose otherwise.
        #[arg(long, env = "ENIFAB_LISTEN", default_value = serve::DEFAULT_LISTEN)]
        listen: std::net::SocketAddr,
        /// Where the state lives (SQLite, crash-safe).
        #[arg(long, env = "ENIFAB_DATA_DIR", default_value = "./enifab-data")]
        data_dir: PathBuf,
        /// The Geneve/UDP socket node shims exchange frames with.
        #[arg(long, env = "ENIFAB_FABRIC_LISTEN", default_value = serve::DEFAULT_FABRIC_LISTEN)]
        fabric_listen: std::net::SocketAddr,
        /// The region this server emulates (one region per server and data directory).
        #[arg(long, env = "ENIFAB_REGION", default_value = "cn-hongkong")]
        region: String,
        /// Attaching → InUse delay in milliseconds.
        #[arg(long, default_value_t = TransitionDelays::default().attach_ms)]
        attach_delay_ms: u64,
        /// Detaching → Available delay in milliseconds.
        #[arg(long, default_value_t = TransitionDelays::default().detach_ms)]
        detach_delay_ms: u64,
        /// Deleting → gone delay in milliseconds.
        #[arg(long, default_value_t = TransitionDelays::default().delete_ms)]
        delete_delay_ms: u64,
        /// Starting/Stopping delay in milliseconds.
        #[arg(long, default_value_t = TransitionDelays::default().start_stop_ms)]
        start_stop_delay_ms: u64,
        /// Complete every transition at once (what tests want).
        #[arg(long)]
        no_delays: bool,
        /// Where internet-facing load balancers take their public addresses from.
        #[arg(long, env = "ENIFAB_PUBLIC_POOL", default_value = enifab_model::region::DEFAULT_PUBLIC_POOL, value_parser = parse_cidr)]
        public_pool: enifab_model::Cidr,
        /// The Geneve address shims are told to send to (HOST:PORT, resolved at start), when it
        /// is not the one the fabric socket is bound to (NAT, a published port). Default: the
        /// bound address; for a wildcard bind, the address of this host that routes to each shim.
        #[arg(long, env = "ENIFAB_FABRIC_ADVERTISE", value_parser = enifab_udp::parse_host_port)]
        fabric_advertise: Option<std::net::SocketAddr>,
        /// Let the nodes' kernels carry the flows the pipeline admitted (`off`: every frame
        /// through the emulator, as before the fast path; the shims' own `--fast-path` too).
        #[arg(long, env = "ENIFAB_FAST_PATH", default_value = "on", value_parser = ["on", "off"])]
        fast_path: String,
        /// Flow logs of every ENI (`enifab flowlog`): records per flow, direction and capture
        /// window, with the deciding rule.
        #[arg(long, env = "ENIFAB_FLOW_LOGS", default_value = "on", value_parser = ["on", "off"])]
        flow_logs: String,
        /// The flow logs' capture window, in seconds (the cloud offers 60, 300 and 600).
        #[arg(long, env = "ENIFAB_FLOW_LOG_WINDOW", default_value_t = 10.0)]
        flow_log_window: f64,
        #[command(flatten)]
        api: Box<ApiArgs>,
    },
    /// Call an ECS action: `enifab ecs DescribeNetworkInterfaces --InstanceId i-…`.
    Ecs(ActionArgs),
    /// Call a VPC action: `enifab vpc DescribeVSwitches --VSwitchId vsw-…`.
    Vpc(ActionArgs),
    /// Call an SLB (CLB) action: `enifab slb DescribeLoadBalancers --LoadBalancerName web`.
    Slb(ActionArgs),
    /// Call an emulator-only action: `enifab emulator CreateInstanceType --InstanceTypeId …`.
    Emulator(ActionArgs),
    /// Look at the data plane.
    #[command(subcommand)]
    Fabric(FabricCommand),
    /// A whole cluster on this machine from a topology file: nodes, pods, probes.
    #[command(subcommand)]
    Lab(LabCommand),
    /// The seed article's SOP scenarios, end to end: lab up, check, down (needs root).
    Demo {
        /// Use the `vlan` datapath example instead of the article's `veth` one.
        #[arg(long)]
        vlan: bool,
    },
    /// Ask the emulator whether it serves (grpc.health.v1, no credentials needed): exit 0 when
    /// it does, 1 otherwise. What container health checks and scripts wait on.
    Health {
        /// How long to wait for the answer, connection included.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Create the cloud side of a topology file (VPCs, vSwitches, groups, instances, trunks).
    Apply {
        /// The topology file (YAML).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Return as soon as the cloud accepted every call, trunks possibly still `Attaching`
        /// (the cloud's own asynchrony); by default apply waits until they are `InUse` and the
        /// instances `Running`.
        #[arg(long)]
        no_wait: bool,
    },
    /// Why can (or can't) FROM reach TO? Puts a first packet through the fabric's pipeline in
    /// explain mode (nothing delivered, nothing changed) and prints every hop: trunk and VLAN,
    /// member ENI, anti-spoof, route, security groups with the deciding rule, load balancer,
    /// delivery. FROM and TO are pods (name or namespace/name), ENIs, instances or addresses;
    /// TO may be a load balancer (lb-…) or its VIP.
    Trace {
        from: String,
        to: String,
        /// tcp, udp or icmp.
        #[arg(short, long, default_value = "tcp")]
        protocol: String,
        /// Destination port (tcp, udp).
        #[arg(long, default_value_t = 80)]
        port: u16,
        /// Source port; by default one no live flow uses, so the packet is a new flow.
        #[arg(long)]
        source_port: Option<u16>,
        /// Print the response as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Flow logs of real traffic: per ENI, flow, direction and capture window, with the action
    /// (ACCEPT/REJECT) and the security-group rule that decided it.
    Flowlog {
        /// Only this ENI.
        #[arg(long)]
        eni: Option<String>,
        /// Keep printing records as their windows close.
        #[arg(short, long)]
        follow: bool,
        /// One JSON object per record.
        #[arg(long)]
        json: bool,
    },
    /// Capture a port's frames as they are on the trunk (pcapng): `enifab capture --eni eni-… -w - | tshark -r -`.
    Capture(CaptureArgs),
}

/// `enifab capture`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["eni", "node"])))]
struct CaptureArgs {
    /// The ENI: a NIC's port, or a trunk member's frames (its VLAN on the trunk's port).
    #[arg(long)]
    eni: Option<String>,
    /// Every port of this instance (i-…).
    #[arg(long)]
    node: Option<String>,
    /// Only frames with this 802.1Q VLAN id (a trunk's members).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4094))]
    vlan: Option<u16>,
    /// The outer view: the Geneve datagrams, in IPv4/UDP headers (the fabric at port 6081).
    #[arg(long)]
    outer: bool,
    /// Stop after this many frames.
    #[arg(short = 'c', long)]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Where to write: a file, or `-` for stdout.
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    write: PathBuf,
    /// pcapng (direction and drops recorded) or pcap.
    #[arg(long, default_value = "pcapng")]
    format: enifab::capture::Format,
}

#[derive(Subcommand, Debug)]
enum LabCommand {
    /// Create the topology: cloud resources, node namespaces with their shims, pods, servers.
    Up(LabArgs),
    /// Run the topology's checks and print the table; exit 1 on any mismatch.
    Check(LabArgs),
    /// Remove everything `up` made, also after a crash.
    Down(LabArgs),
    /// Run on a node (a container, a namespace, a host): supervise its enifab-shim and serve
    /// the lab's node API (pods, responders, kube-proxy's rules, probes).
    Agent(Box<AgentArgs>),
    /// (internal) Count short TCP connections per second from a namespace (bench/slb.sh).
    #[command(hide = true)]
    ConnectRate {
        #[arg(long)]
        netns: PathBuf,
        #[arg(long)]
        to: std::net::SocketAddr,
        #[arg(long, default_value_t = 5)]
        secs: u64,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// (internal) Run the built-in responders inside a namespace.
    #[command(hide = true)]
    Responder {
        #[arg(long)]
        netns: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        tcp: Vec<u16>,
        #[arg(long)]
        udp: Vec<u16>,
        #[arg(long)]
        http: Vec<u16>,
    },
}

#[derive(clap::Args, Debug)]
struct LabArgs {
    /// The topology file.
    file: PathBuf,
    /// Where the lab keeps its state, logs and shim sockets.
    #[arg(long, env = "ENIFAB_LAB_DIR", default_value = "./enifab-data/lab")]
    state_dir: PathBuf,
    /// NODE=ADDR: the node (or external client) of the topology named NODE is run by the
    /// `enifab lab agent` at ADDR (host:port, http://host:port, or unix:PATH); repeat for each.
    /// Without it, a new lab's nodes are namespaces on this machine; `check` and `down` use the
    /// agents `up` recorded.
    #[arg(long = "agent", env = "ENIFAB_LAB_AGENTS", value_delimiter = ',', value_name = "NODE=ADDR")]
    agents: Vec<String>,
    /// `check`: how many seconds to wait for `up` to finish (default 180 with agents, 0 for a
    /// local lab).
    #[arg(long, env = "ENIFAB_LAB_WAIT", value_name = "SECS")]
    wait: Option<u64>,
    /// `check`: also write the table and the topology as one self-contained HTML page.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

impl LabArgs {
    fn options(&self, endpoint: &str) -> Result<enifab::lab::LabOptions> {
        let mut o = enifab::lab::LabOptions::new(endpoint, &self.state_dir)?;
        o.agents = enifab::lab::LabOptions::parse_agents(self.agents.iter().map(String::as_str))?;
        o.wait = self.wait.map(std::time::Duration::from_secs);
        Ok(o)
    }
}

/// `enifab lab agent`: who the node is, where the API listens, how to run the shim.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["instance_name", "instance_id", "external"])))]
struct AgentArgs {
    /// The ECS instance's name in the topology (e.g. cn-hongkong.10.0.4.22): the agent waits
    /// until it exists and runs, and follows it when it is replaced.
    #[arg(long)]
    instance_name: Option<String>,
    /// The ECS instance's id (i-…).
    #[arg(long)]
    instance_id: Option<String>,
    /// An external client (a host of the internet side) of that name, with --external-address.
    #[arg(long, requires = "external_address")]
    external: Option<String>,
    /// The external client's public address with its segment's prefix (e.g. 47.100.1.10/24).
    #[arg(long, requires = "external")]
    external_address: Option<String>,
    /// Where the agent's API listens: ADDR:PORT (TCP; beyond loopback only with credentials or
    /// --insecure) or a Unix socket path.
    #[arg(long, env = "ENIFAB_AGENT_LISTEN", default_value = "127.0.0.1:7070")]
    listen: String,
    /// The node's network namespace: a name under /var/run/netns, a path, or (the default) the
    /// agent's own (a node container's).
    #[arg(long, default_value = "/proc/self/ns/net")]
    netns: String,
    /// In a container: the name Docker's interface is moved to, out of the node's way (passed
    /// to the shim).
    #[arg(long)]
    underlay: Option<String>,
    /// The shim's Unix socket (for the CNI plugin).
    #[arg(long, default_value = "/run/enifab/shim.sock")]
    shim_socket: PathBuf,
    /// Where the CNI plugin keeps its pods' records (a restarted shim rebuilds from them).
    #[arg(long, default_value = "/var/lib/enifab/cni")]
    cni_state_dir: PathBuf,
    /// Where responders log.
    #[arg(long, default_value = "/var/lib/enifab/agent")]
    log_dir: PathBuf,
    /// One more argument for the shim (repeat), e.g. --shim-arg=--metadata-token-required.
    #[arg(long = "shim-arg", allow_hyphen_values = true)]
    shim_args: Vec<String>,
    /// Listen beyond loopback without credentials (anyone who reaches the port is root here).
    #[arg(long)]
    insecure: bool,
}

/// The API's listeners: exposure, HTTPS, limits.
#[derive(clap::Args, Debug)]
struct ApiArgs {
    /// Listen beyond loopback (--listen, --https-listen, --fabric-listen) without an AccessKey:
    /// anyone who reaches the ports may then call everything. Refused without this flag.
    #[arg(long, env = "ENIFAB_INSECURE")]
    insecure: bool,
    /// The most connections the API serves at once (HTTP and HTTPS each); more are closed as
    /// they come [default: 1024, or half the open-files limit when lower].
    #[arg(long, env = "ENIFAB_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// How long a new connection has to send its first request's headers (TLS handshake included).
    #[arg(long, default_value_t = Limits::default().header_timeout.as_millis() as u64)]
    header_timeout_ms: u64,
    /// How long a request has to arrive whole and be answered (a stream's first message).
    #[arg(long, default_value_t = Limits::default().request_timeout.as_millis() as u64)]
    request_timeout_ms: u64,
    /// How long a connection with nothing in flight is kept.
    #[arg(long, default_value_t = Limits::default().idle_timeout.as_millis() as u64)]
    idle_timeout_ms: u64,
    /// Also serve HTTPS (OpenAPI and gRPC) here, e.g. 127.0.0.1:50443. Off by default.
    #[arg(long, env = "ENIFAB_HTTPS_LISTEN")]
    https_listen: Option<std::net::SocketAddr>,
    /// The HTTPS certificate chain (PEM); without it enifab issues one from its own CA, kept in
    /// <data-dir>/tls/ca.pem.
    #[arg(long, env = "ENIFAB_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "ENIFAB_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// More names for the certificate enifab issues (DNS names or IPs clients connect to).
    #[arg(long = "tls-san", env = "ENIFAB_TLS_SANS", value_delimiter = ',')]
    tls_sans: Vec<String>,
}

impl ApiArgs {
    fn config(self, key: &KeyArgs) -> Result<serve::ApiConfig> {
        let credentials = key.credentials()?;
        let ms = |v: u64| std::time::Duration::from_millis(v.max(1));
        let limits = Limits {
            max_connections: self.max_connections.unwrap_or_else(listener::default_max_connections).max(1),
            header_timeout: ms(self.header_timeout_ms),
            request_timeout: ms(self.request_timeout_ms),
            idle_timeout: ms(self.idle_timeout_ms),
        };
        let https = self.https_listen.map(|listen| enifab::openapi::tls::HttpsConfig {
            listen,
            cert: self.tls_cert,
            key: self.tls_key,
            sans: self.tls_sans,
        });
        let openapi = enifab::openapi::Options { credentials, node_key: None };
        Ok(serve::ApiConfig { openapi, https, limits, insecure: self.insecure })
    }
}

#[derive(Subcommand, Debug)]
enum FabricCommand {
    /// Frames, bytes and drops per port (Geneve VNI) and per drop reason.
    Counters {
        /// Only this port (VNI).
        #[arg(long)]
        port: Option<u32>,
        /// Only the port of this ENI.
        #[arg(long)]
        eni: Option<String>,
        /// Print the response as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
struct ActionArgs {
    /// How long to wait for the emulator (connection and answer), in milliseconds.
    #[arg(long, env = "ENIFAB_TIMEOUT_MS", default_value_t = cli::DEFAULT_TIMEOUT_MS)]
    timeout_ms: u64,
    /// The action, named as in the cloud's API (CreateNetworkInterface, …). Omit to list them.
    action: Option<String>,
    /// Parameters as the cloud names them: --VSwitchId vsw-… --SecurityGroupIds.1 sg-…
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    params: Vec<String>,
}

/// A CIDR block flag (`8.210.162.0/24`) with at least one address to hand out.
fn parse_cidr(s: &str) -> Result<enifab_model::Cidr, String> {
    let c: enifab_model::Cidr = s.parse().map_err(|_| format!("{s:?} is not a CIDR block like 8.210.162.0/24"))?;
    if c.usable() == 0 {
        return Err(format!("{s} has no address to hand out (a /29 or larger is needed)"));
    }
    Ok(c)
}

/// Arguments clap refuses. The action commands (`ecs|vpc|slb|emulator`) promise scripts a
/// `Code: Message` line and exit 1 for every refusal, including the ones made here (a timeout
/// that is not a number, a flag without its value); other commands keep clap's usage message
/// and exit 2. Help and version are not refusals.
fn refuse_arguments(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let action_command = std::env::args().skip(1).any(|a| matches!(a.as_str(), "ecs" | "vpc" | "slb" | "emulator"));
    let shown = matches!(
        e.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if shown || !action_command {
        e.exit();
    }
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default().trim_start_matches("error: ").trim();
    eprintln!("InvalidParameter: {first}");
    ExitCode::from(1)
}

/// `--log-format`, set once at the start of `main`.
static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

fn init_tracing(default: &str) {
    enifab::observe::logs::init(LOG_FORMAT.get().copied().unwrap_or_default(), default);
}

async fn action(endpoint: &str, service: &str, args: ActionArgs) -> ExitCode {
    let timeout_ms = args.timeout_ms;
    let Some(action) = args.action else {
        println!("{}", enifab::codec::actions(service).join("\n"));
        return ExitCode::SUCCESS;
    };
    let timeout = std::time::Duration::from_millis(timeout_ms.max(1));
    let result = async {
        let params = cli::parse_flags(&args.params)?;
        // Refused before connecting: a bad parameter is answered without an emulator.
        cli::request(service, &action, &params)?;
        let call = async {
            let channel = cli::connect(endpoint).await?;
            cli::call(endpoint, channel, service, &action, &params).await
        };
        tokio::time::timeout(timeout, call).await.unwrap_or_else(|_| {
            Err(CallError::Transport {
                endpoint: endpoint.to_string(),
                reason: format!("no answer within {timeout_ms} ms (--timeout-ms)"),
            })
        })
    }
    .await;
    match result {
        Ok(json) => {
            println!("{}", serde_json::to_string_pretty(&json).expect("JSON values print"));
            ExitCode::SUCCESS
        }
        Err(e @ CallError::Cloud { .. }) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("enifab: {e}");
            ExitCode::from(2)
        }
    }
}

async fn lab_command(endpoint: &str, key: &KeyArgs, cmd: LabCommand) -> Result<ExitCode> {
    use enifab::lab;
    let print = &mut |line: String| println!("{line}");
    match cmd {
        LabCommand::Up(a) => {
            lab::up(&a.options(endpoint)?, &a.file, print).await?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Check(a) => {
            let rows = lab::check(&a.options(endpoint)?, &a.file).await?;
            print!("{}", lab::render(&rows));
            if let Some(out) = &a.html {
                enifab::ui::report::write(endpoint, &a.file, &rows, out).await?;
                eprintln!("enifab: wrote {}", out.display());
            }
            Ok(lab::exit_code(&rows))
        }
        LabCommand::Down(a) => {
            lab::down(&a.options(endpoint)?, &a.file, print).await?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Agent(a) => {
            use enifab::lab::agent::{self, AgentOptions, supervise::Identity};
            let identity = match (a.instance_name, a.instance_id, a.external, a.external_address) {
                (Some(n), _, _, _) => Identity::InstanceName(n),
                (_, Some(id), _, _) => Identity::InstanceId(id),
                (_, _, Some(name), Some(address)) => Identity::External { name, address },
                _ => anyhow::bail!("say who the node is: --instance-name, --instance-id or --external"),
            };
            let exe = std::env::current_exe()?;
            agent::run(AgentOptions {
                endpoint: endpoint.to_string(),
                listen: a.listen.parse().map_err(anyhow::Error::msg)?,
                identity,
                netns: lab::netns::Ns::parse(&a.netns),
                underlay: a.underlay,
                shim_socket: a.shim_socket,
                cni_state_dir: a.cni_state_dir,
                log_dir: a.log_dir,
                bin_dir: exe.parent().map(PathBuf::from).unwrap_or_default(),
                shim_args: a.shim_args,
                insecure: a.insecure,
                credentials: key.credentials()?,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::ConnectRate { netns, to, secs, threads } => {
            let r = lab::rate::run(&netns, to, secs, threads)?;
            println!(
                "connections/s {:.0} completed {} failed {} connect-us {:.1}",
                r.per_sec(),
                r.completed,
                r.failed,
                r.connect_median.as_secs_f64() * 1e6
            );
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Responder { netns, name, tcp, udp, http } => {
            lab::responder::run(&netns, &name, &tcp, &udp, &http)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return refuse_arguments(e),
    };
    let _ = LOG_FORMAT.set(cli.log_format);
    match cli.key.client_key() {
        Ok(key) => {
            cli::set_access_key(key);
        }
        Err(e) => {
            eprintln!("enifab: {e:#}");
            return ExitCode::from(2);
        }
    }
    let outcome: Result<ExitCode> = match cli.command {
        Command::Serve {
            listen,
            fabric_listen,
            data_dir,
            region,
            attach_delay_ms,
            detach_delay_ms,
            delete_delay_ms,
            start_stop_delay_ms,
            no_delays,
            public_pool,
            fabric_advertise,
            fast_path,
            flow_logs,
            flow_log_window,
            api,
        } => {
            init_tracing("info");
            let delays = if no_delays {
                TransitionDelays::ZERO
            } else {
                TransitionDelays {
                    attach_ms: attach_delay_ms,
                    detach_ms: detach_delay_ms,
                    delete_ms: delete_delay_ms,
                    start_stop_ms: start_stop_delay_ms,
                }
            };
            match api.config(&cli.key) {
                Ok(api) => {
                    let cloud = serve::CloudOptions {
                        public_pool: Some(public_pool),
                        fabric_advertise,
                        fast_path_off: fast_path == "off",
                        flow_logs: Some(enifab::fabric::flowlog::FlowLogSettings {
                            enabled: flow_logs == "on",
                            window: std::time::Duration::try_from_secs_f64(flow_log_window)
                                .unwrap_or(std::time::Duration::from_secs(10))
                                .max(std::time::Duration::from_millis(100)),
                        }),
                    };
                    serve::serve(ServeConfig { listen, data_dir, region, delays, fabric_listen }, api, cloud)
                        .await
                        .map(|()| ExitCode::SUCCESS)
                }
                Err(e) => Err(e),
            }
        }
        Command::Ecs(args) => Ok(action(&cli.endpoint, "Ecs", args).await),
        Command::Vpc(args) => Ok(action(&cli.endpoint, "Vpc", args).await),
        Command::Slb(args) => Ok(action(&cli.endpoint, "Slb", args).await),
        Command::Emulator(args) => Ok(action(&cli.endpoint, "Emulator", args).await),
        Command::Fabric(FabricCommand::Counters { port, eni, json }) => {
            init_tracing("warn");
            enifab::cli::fabric_counters(&cli.endpoint, port, eni, json).await
        }
        Command::Lab(cmd) => {
            init_tracing(if matches!(cmd, LabCommand::Agent(_)) { "info" } else { "warn" });
            lab_command(&cli.endpoint, &cli.key, cmd).await
        }
        Command::Demo { vlan } => {
            init_tracing("warn");
            enifab::lab::demo::run(vlan).await
        }
        Command::Health { timeout_ms } => {
            init_tracing("warn");
            enifab::cli::health(&cli.endpoint, std::time::Duration::from_millis(timeout_ms)).await
        }
        Command::Apply { file, no_wait } => {
            init_tracing("warn");
            let wait = if no_wait { enifab::apply::Wait::NoWait } else { enifab::apply::Wait::Settle };
            enifab::apply::run(&cli.endpoint, &file, wait).await
        }
        Command::Trace { from, to, protocol, port, source_port, json } => {
            init_tracing("warn");
            let q = enifab_proto::v1::TraceFrameRequest {
                source: from,
                destination: to,
                protocol,
                port: u32::from(port),
                source_port: source_port.map(u32::from).unwrap_or_default(),
            };
            enifab::cli::trace(&cli.endpoint, q, json).await
        }
        Command::Flowlog { eni, follow, json } => {
            init_tracing("warn");
            enifab::cli::flowlog(&cli.endpoint, eni.unwrap_or_default(), follow, json).await
        }
        Command::Capture(a) => {
            init_tracing("warn");
            match a.duration.map(std::time::Duration::try_from_secs_f64).transpose() {
                Ok(duration) => {
                    let o = enifab::capture::CaptureOptions {
                        eni: a.eni,
                        node: a.node,
                        vlan: a.vlan.unwrap_or(0),
                        outer: a.outer,
                        count: a.count,
                        duration,
                        write: a.write,
                        format: a.format,
                    };
                    enifab::capture::run(&cli.endpoint, o).await
                }
                Err(e) => Err(anyhow::anyhow!("--duration: {e}")),
            }
        }
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("enifab: {e:#}");
            ExitCode::from(1)
        }
    }
}
