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
use enifab_proto::v1::vpc_server::VpcServer;
use tokio::net::TcpListener;

use crate::actor::{Clock, CommitHook, ModelHandle, ModelOptions, SystemClock};
use crate::grpc::Ctx;
use crate::grpc::ecs::EcsService;
use crate::grpc::emulator::EmulatorService;
use crate::grpc::vpc::VpcService;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

/// Everything `enifab serve` is configured with.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub region: String,
    pub delays: TransitionDelays,
}

/// Open the model for `cfg` (loading the data directory).
pub fn open_model(cfg: &ServeConfig, clock: Arc<dyn Clock>, hooks: Vec<CommitHook>) -> Result<ModelHandle> {
    ModelHandle::start(&cfg.data_dir, ModelOptions { region: cfg.region.clone(), delays: cfg.delays, clock, hooks })
}

/// Build the router: the three API services, reflection (v1 and v1alpha) and health.
pub async fn router(model: ModelHandle) -> Result<axum::Router> {
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
    let routes = tonic::service::Routes::new(EcsServer::new(ecs))
        .add_service(VpcServer::new(vpc))
        .add_service(EmulatorServer::new(emu))
        .add_service(reflection().build_v1().context("reflection v1")?)
        .add_service(reflection().build_v1alpha().context("reflection v1alpha")?)
        .add_service(health);
    Ok(routes.into_axum_router())
}

/// Serve on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    model: ModelHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = router(model).await?;
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.context("serving")?;
    Ok(())
}

/// `enifab serve`: open the model, bind, serve until Ctrl-C or SIGTERM.
pub async fn serve(cfg: ServeConfig) -> Result<()> {
    let model = open_model(&cfg, Arc::new(SystemClock), Vec::new())?;
    let listener = TcpListener::bind(cfg.listen).await.with_context(|| format!("binding {}", cfg.listen))?;
    tracing::info!(listen = %listener.local_addr()?, data_dir = %cfg.data_dir.display(), region = %cfg.region, "enifab serving");
    eprintln!(
        "enifab: region {} serving on {} (data in {})",
        cfg.region,
        listener.local_addr()?,
        cfg.data_dir.display()
    );
    run(listener, model, shutdown_signal()).await
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
