//! `enifab serve`: the emulator process. Binds the API port (gRPC with reflection and health,
//! plus plain HTTP routes on the same port) and runs until asked to stop.
//!
//! Loopback is the default listen address: an emulator of a cloud control plane has no
//! authentication of its own, so exposing it is an explicit choice (`--listen 0.0.0.0:50051`).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use enifab_model::TransitionDelays;
use enifab_model::error::Product;
use enifab_proto::v1::ecs_server::EcsServer;
use enifab_proto::v1::emulator_server::EmulatorServer;
use enifab_proto::v1::fabric_server::FabricServer;
use enifab_proto::v1::vpc_server::VpcServer;
use tokio::net::TcpListener;

use crate::actor::{Clock, CommitHook, ModelHandle, ModelOptions, SystemClock};
use crate::fabric::FabricShell;
use crate::fabric::service::FabricService;
use crate::grpc::Ctx;
use crate::grpc::ecs::EcsService;
use crate::grpc::emulator::EmulatorService;
use crate::grpc::vpc::VpcService;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Geneve's IANA port, on loopback.
pub const DEFAULT_FABRIC_LISTEN: &str = "127.0.0.1:6081";

/// Everything `enifab serve` is configured with.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub region: String,
    pub delays: TransitionDelays,
    /// The Geneve UDP socket the node shims talk to.
    pub fabric_listen: SocketAddr,
}

/// Open the model for `cfg` (loading the data directory).
pub fn open_model(cfg: &ServeConfig, clock: Arc<dyn Clock>, hooks: Vec<CommitHook>) -> Result<ModelHandle> {
    ModelHandle::start(&cfg.data_dir, ModelOptions { region: cfg.region.clone(), delays: cfg.delays, clock, hooks })
}

/// The whole emulator: the model and the data plane wired together.
#[derive(Clone, Debug)]
pub struct Emulator {
    pub model: ModelHandle,
    pub fabric: Arc<FabricShell>,
}

impl Emulator {
    /// Bind the fabric socket, open the data directory, and connect the two.
    pub fn open(cfg: &ServeConfig, clock: Arc<dyn Clock>) -> Result<Emulator> {
        let (fabric, hook) = FabricShell::start(cfg.fabric_listen)?;
        let model = open_model(cfg, clock, vec![hook])?;
        Ok(Emulator { model, fabric })
    }

    /// Serve the API (with the Fabric service) on `listener` until `shutdown` completes.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let app = router(self.model, Some(self.fabric)).await?;
        axum::serve(no_delay(listener), app).with_graceful_shutdown(shutdown).await.context("serving")?;
        Ok(())
    }
}

/// Build the router: the API services (and the Fabric service when a fabric runs), reflection
/// (v1 and v1alpha) and health.
pub async fn router(model: ModelHandle, fabric: Option<Arc<FabricShell>>) -> Result<axum::Router> {
    let ecs = EcsService { ctx: Ctx { model: model.clone(), product: Product::Ecs } };
    let vpc = VpcService { ctx: Ctx { model: model.clone(), product: Product::Vpc } };
    let emu = EmulatorService { ctx: Ctx { model: model.clone(), product: Product::Ecs } };
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(enifab_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<EcsServer<EcsService>>().await;
    reporter.set_serving::<VpcServer<VpcService>>().await;
    reporter.set_serving::<EmulatorServer<EmulatorService>>().await;
    let mut routes = tonic::service::Routes::new(EcsServer::new(ecs))
        .add_service(VpcServer::new(vpc))
        .add_service(EmulatorServer::new(emu))
        .add_service(reflection().build_v1().context("reflection v1")?)
        .add_service(reflection().build_v1alpha().context("reflection v1alpha")?)
        .add_service(health);
    if let Some(shell) = fabric {
        reporter.set_serving::<FabricServer<FabricService>>().await;
        routes = routes.add_service(FabricServer::new(FabricService { model, shell }));
    }
    Ok(routes.into_axum_router())
}

/// Serve the API alone (no data plane) on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    model: ModelHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = router(model, None).await?;
    axum::serve(no_delay(listener), app).with_graceful_shutdown(shutdown).await.context("serving")?;
    Ok(())
}

/// `enifab serve`: open the model, bind, serve until Ctrl-C or SIGTERM.
pub async fn serve(cfg: ServeConfig) -> Result<()> {
    let emulator = Emulator::open(&cfg, Arc::new(SystemClock))?;
    let listener = TcpListener::bind(cfg.listen).await.with_context(|| format!("binding {}", cfg.listen))?;
    tracing::info!(listen = %listener.local_addr()?, data_dir = %cfg.data_dir.display(), region = %cfg.region, "enifab serving");
    eprintln!(
        "enifab: region {} serving on {}, fabric (Geneve/UDP) on {}, data in {}",
        cfg.region,
        listener.local_addr()?,
        emulator.fabric.addr(),
        cfg.data_dir.display()
    );
    emulator.run(listener, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Answers must leave at once: without TCP_NODELAY, a reply that is ready a moment after the
/// request (any call that waits for the model thread's commit) sits behind Nagle's algorithm
/// until the client's delayed ACK, 40 ms later.
fn no_delay(listener: TcpListener) -> impl axum::serve::Listener<Addr = SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
    })
}
