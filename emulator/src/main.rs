//! `enifab`: the VPC emulator (`enifab serve`) and its command-line client.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use enifab::cli::{self, CallError};
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
    #[command(subcommand)]
    command: Command,
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
    /// Create the cloud side of a topology file (VPCs, vSwitches, groups, instances, trunks).
    Apply {
        /// The topology file (YAML).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum LabCommand {
    /// Create the topology: cloud resources, node namespaces with their shims, pods, servers.
    Up(LabArgs),
    /// Run the topology's checks and print the table; exit 1 on any mismatch.
    Check(LabArgs),
    /// Remove everything `up` made, also after a crash.
    Down(LabArgs),
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
}

/// The cloud-compatible endpoint (ECS/VPC/SLB OpenAPI): who may call, and HTTPS.
#[derive(clap::Args, Debug)]
struct ApiArgs {
    /// Require requests signed with this AccessKey (with --access-key-secret); without any
    /// credentials, every request is accepted unsigned.
    #[arg(long, env = "ENIFAB_ACCESS_KEY_ID", requires = "access_key_secret")]
    access_key_id: Option<String>,
    /// The secret of --access-key-id (prefer the environment or --access-key-file: flags show in `ps`).
    #[arg(long, env = "ENIFAB_ACCESS_KEY_SECRET", hide_env_values = true, requires = "access_key_id")]
    access_key_secret: Option<String>,
    /// A file of AccessKeys, one `AccessKeyId AccessKeySecret` pair per line.
    #[arg(long, env = "ENIFAB_ACCESS_KEY_FILE")]
    access_key_file: Option<PathBuf>,
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
    fn config(self) -> Result<serve::ApiConfig> {
        use enifab::openapi::auth::Credentials;
        let mut credentials = Credentials::default();
        if let (Some(id), Some(secret)) = (self.access_key_id, self.access_key_secret) {
            credentials.extend(Credentials::new([(id, secret)]));
        }
        if let Some(file) = &self.access_key_file {
            credentials.extend(Credentials::load(file)?);
        }
        let https = self.https_listen.map(|listen| enifab::openapi::tls::HttpsConfig {
            listen,
            cert: self.tls_cert,
            key: self.tls_key,
            sans: self.tls_sans,
        });
        Ok(serve::ApiConfig { openapi: enifab::openapi::Options { credentials }, https })
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
    /// The action, named as in the cloud's API (CreateNetworkInterface, …). Omit to list them.
    action: Option<String>,
    /// Parameters as the cloud names them: --VSwitchId vsw-… --SecurityGroupIds.1 sg-…
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    params: Vec<String>,
}

/// A CIDR block flag (`8.210.162.0/24`) with at least one address to hand out.
fn parse_cidr(s: &str) -> Result<enifab_model::Cidr, String> {
    let c: enifab_model::Cidr = s.parse().map_err(|()| format!("{s:?} is not a CIDR block like 8.210.162.0/24"))?;
    if c.usable() == 0 {
        return Err(format!("{s} has no address to hand out (a /29 or larger is needed)"));
    }
    Ok(c)
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

async fn action(endpoint: &str, service: &str, args: ActionArgs) -> ExitCode {
    let Some(action) = args.action else {
        println!("{}", enifab::codec::actions(service).join("\n"));
        return ExitCode::SUCCESS;
    };
    let result = async {
        let params = cli::parse_flags(&args.params)?;
        let channel = cli::connect(endpoint).await?;
        cli::call(channel, service, &action, &params).await
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

async fn lab_command(endpoint: &str, cmd: LabCommand) -> Result<ExitCode> {
    use enifab::lab::{self, LabOptions};
    let print = &mut |line: String| println!("{line}");
    match cmd {
        LabCommand::Up(a) => {
            lab::up(&LabOptions::new(endpoint, &a.state_dir)?, &a.file, print).await?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Check(a) => {
            let rows = lab::check(&LabOptions::new(endpoint, &a.state_dir)?, &a.file).await?;
            print!("{}", lab::render(&rows));
            Ok(lab::exit_code(&rows))
        }
        LabCommand::Down(a) => {
            lab::down(&LabOptions::new(endpoint, &a.state_dir)?, &a.file, print).await?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::ConnectRate { netns, to, secs, threads } => {
            let r = lab::rate::run(&netns, to, secs, threads)?;
            println!("connections/s {:.0} completed {} failed {}", r.per_sec(), r.completed, r.failed);
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
    let cli = Cli::parse();
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
            match api.config() {
                Ok(api) => {
                    let cloud = serve::CloudOptions { public_pool: Some(public_pool) };
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
            init_tracing("warn");
            lab_command(&cli.endpoint, cmd).await
        }
        Command::Demo { vlan } => {
            init_tracing("warn");
            enifab::lab::demo::run(vlan).await
        }
        Command::Apply { file } => {
            init_tracing("warn");
            enifab::apply::run(&cli.endpoint, &file).await
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
