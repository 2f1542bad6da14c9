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
    },
    /// Call an ECS action: `enifab ecs DescribeNetworkInterfaces --InstanceId i-…`.
    Ecs(ActionArgs),
    /// Call a VPC action: `enifab vpc DescribeVSwitches --VSwitchId vsw-…`.
    Vpc(ActionArgs),
    /// Call an emulator-only action: `enifab emulator CreateInstanceType --InstanceTypeId …`.
    Emulator(ActionArgs),
    /// Look at the data plane.
    #[command(subcommand)]
    Fabric(FabricCommand),
    /// Create the cloud side of a topology file (VPCs, vSwitches, groups, instances, trunks).
    Apply {
        /// The topology file (YAML).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
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
            serve::serve(ServeConfig { listen, data_dir, region, delays, fabric_listen })
                .await
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Ecs(args) => Ok(action(&cli.endpoint, "Ecs", args).await),
        Command::Vpc(args) => Ok(action(&cli.endpoint, "Vpc", args).await),
        Command::Emulator(args) => Ok(action(&cli.endpoint, "Emulator", args).await),
        Command::Fabric(FabricCommand::Counters { port, eni, json }) => {
            init_tracing("warn");
            enifab::cli::fabric_counters(&cli.endpoint, port, eni, json).await
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
