//! `enifab serve`: the emulator process. Binds the API port (gRPC with reflection and health,
//! plus plain HTTP routes on the same port) and runs until asked to stop.
//!
//! The plain HTTP routes are the cloud-compatible OpenAPI endpoint (`crate::openapi`): `/` with
//! `?Action=…&Version=…` serves ECS `2014-05-26`, VPC `2016-04-28` and SLB `2014-05-15` to
//! Terway, the CCM and the official SDKs, through the same handlers as gRPC. `--https-listen` adds a TLS listener that
//! serves the same router (OpenAPI and gRPC).
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
use enifab_proto::v1::slb_server::SlbServer;
use enifab_proto::v1::vpc_server::VpcServer;
use tokio::net::TcpListener;

use crate::actor::{Clock, CommitHook, ModelHandle, ModelOptions, SystemClock};
use crate::fabric::FabricShell;
use crate::fabric::service::FabricService;
use crate::grpc::ecs::EcsService;
use crate::grpc::emulator::EmulatorService;
use crate::grpc::slb::{HealthSource, SlbService};
use crate::grpc::vpc::VpcService;
use crate::grpc::{self, Ctx, Faults};
use crate::openapi::{self, tls};

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

/// How `enifab serve` configures the cloud-compatible endpoint (kept apart from [`ServeConfig`],
/// which in-process servers build field by field).
#[derive(Clone, Debug, Default)]
pub struct ApiConfig {
    pub openapi: openapi::Options,
    /// The HTTPS listener, off unless asked for.
    pub https: Option<tls::HttpsConfig>,
}

/// What `enifab serve` configures of the emulated cloud beyond [`ServeConfig`]; in-process
/// servers take the defaults.
#[derive(Clone, Debug, Default)]
pub struct CloudOptions {
    /// The public address pool of internet-facing load balancers (`--public-pool`); `None`: the
    /// model's default, 8.210.162.0/24.
    pub public_pool: Option<enifab_model::Cidr>,
}

/// Open the model for `cfg` (loading the data directory).
pub fn open_model(cfg: &ServeConfig, clock: Arc<dyn Clock>, hooks: Vec<CommitHook>) -> Result<ModelHandle> {
    open_model_with(cfg, clock, hooks, &CloudOptions::default())
}

/// [`open_model`] with the cloud configured by `cloud`.
pub fn open_model_with(
    cfg: &ServeConfig,
    clock: Arc<dyn Clock>,
    hooks: Vec<CommitHook>,
    cloud: &CloudOptions,
) -> Result<ModelHandle> {
    let opts =
        ModelOptions { region: cfg.region.clone(), delays: cfg.delays, clock, hooks, public_pool: cloud.public_pool };
    ModelHandle::start(&cfg.data_dir, opts)
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
        Emulator::open_with(cfg, clock, &CloudOptions::default())
    }

    /// [`Emulator::open`] with the cloud configured by `cloud`.
    pub fn open_with(cfg: &ServeConfig, clock: Arc<dyn Clock>, cloud: &CloudOptions) -> Result<Emulator> {
        let (fabric, hook) = FabricShell::start(cfg.fabric_listen)?;
        let model = open_model_with(cfg, clock, vec![hook], cloud)?;
        Ok(Emulator { model, fabric })
    }

    /// Serve the API (with the Fabric service) on `listener` until `shutdown` completes.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let fabric = self.fabric.clone();
        let app = router(self.model, Some(self.fabric)).await?;
        let shutdown = async move {
            shutdown.await;
            fabric.close();
        };
        axum::serve(no_delay(listener), app).with_graceful_shutdown(shutdown).await.context("serving")?;
        Ok(())
    }
}

/// Build the router: the API services (and the Fabric service when a fabric runs), reflection
/// (v1 and v1alpha), health, and the cloud-compatible endpoint (no signature checks).
pub async fn router(model: ModelHandle, fabric: Option<Arc<FabricShell>>) -> Result<axum::Router> {
    router_with(model, fabric, openapi::Options::default()).await
}

/// [`router`] with the cloud-compatible endpoint configured by `api`.
pub async fn router_with(
    model: ModelHandle,
    fabric: Option<Arc<FabricShell>>,
    api: openapi::Options,
) -> Result<axum::Router> {
    // With a data plane, its health checker tells DescribeHealthStatus how backends are;
    // without one every backend is `unavailable`.
    let health = fabric.as_ref().map(|f| f.clone() as Arc<dyn HealthSource>);
    router_with_health(model, fabric, api, health).await
}

/// [`router_with`] with the source of backends' live health for DescribeHealthStatus.
pub async fn router_with_health(
    model: ModelHandle,
    fabric: Option<Arc<FabricShell>>,
    api: openapi::Options,
    health: Option<Arc<dyn HealthSource>>,
) -> Result<axum::Router> {
    // One fault registry for every service and face (`InjectFault`).
    let faults = Faults::default();
    let ctx = |product| Ctx { model: model.clone(), product, faults: faults.clone() };
    let ecs = EcsService { ctx: ctx(Product::Ecs) };
    let vpc = VpcService { ctx: ctx(Product::Vpc) };
    let slb = SlbService { ctx: ctx(Product::Slb), health };
    let emu = EmulatorService { ctx: ctx(Product::Ecs) };
    let services =
        openapi::dispatch::Services { ecs: ecs.clone(), vpc: vpc.clone(), slb: slb.clone(), emulator: emu.clone() };
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(enifab_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<EcsServer<EcsService>>().await;
    reporter.set_serving::<VpcServer<VpcService>>().await;
    reporter.set_serving::<SlbServer<SlbService>>().await;
    reporter.set_serving::<EmulatorServer<EmulatorService>>().await;
    let mut routes = tonic::service::Routes::new(EcsServer::new(ecs))
        .add_service(VpcServer::new(vpc))
        .add_service(SlbServer::new(slb))
        .add_service(EmulatorServer::new(emu))
        .add_service(reflection().build_v1().context("reflection v1")?)
        .add_service(reflection().build_v1alpha().context("reflection v1alpha")?)
        .add_service(health);
    if let Some(shell) = fabric {
        reporter.set_serving::<FabricServer<FabricService>>().await;
        routes = routes.add_service(FabricServer::new(FabricService { model, shell }));
    }
    // gRPC handlers run inside their action's scope, so injected faults reach them too.
    let grpc_routes = routes.into_axum_router().layer(axum::middleware::from_fn(grpc::action_scope));
    Ok(grpc_routes.merge(openapi::router(services, api)))
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

/// [`run`] with the cloud-compatible endpoint configured by `api` (signature checks).
pub async fn run_with(
    listener: TcpListener,
    model: ModelHandle,
    api: openapi::Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = router_with(model, None, api).await?;
    axum::serve(no_delay(listener), app).with_graceful_shutdown(shutdown).await.context("serving")?;
    Ok(())
}

/// `enifab serve`: open the model, bind, serve until Ctrl-C or SIGTERM.
pub async fn serve(cfg: ServeConfig, api: ApiConfig, cloud: CloudOptions) -> Result<()> {
    let emulator = Emulator::open_with(&cfg, Arc::new(SystemClock), &cloud)?;
    let listener = TcpListener::bind(cfg.listen).await.with_context(|| format!("binding {}", cfg.listen))?;
    let https = match &api.https {
        Some(h) => {
            let files = h.cert_files(&cfg.data_dir)?;
            let config = tls::server_config(&files)?;
            let l = TcpListener::bind(h.listen).await.with_context(|| format!("binding {}", h.listen))?;
            Some((l, config, files))
        }
        None => None,
    };
    tracing::info!(listen = %listener.local_addr()?, data_dir = %cfg.data_dir.display(), region = %cfg.region, "enifab serving");
    eprintln!(
        "enifab: region {} serving on {}, fabric (Geneve/UDP) on {}, data in {}",
        cfg.region,
        listener.local_addr()?,
        emulator.fabric.addr(),
        cfg.data_dir.display()
    );
    let addr = listener.local_addr()?;
    let checks = if api.openapi.credentials.is_empty() { "signatures not checked" } else { "signatures required" };
    eprintln!(
        "enifab: ECS/VPC/SLB OpenAPI on the same port, plain HTTP ({checks}): ECS_ENDPOINT={addr} VPC_ENDPOINT={addr} SLB_ENDPOINT={addr} ALICLOUD_CLIENT_SCHEME=HTTP"
    );
    if !addr.ip().is_loopback() && api.openapi.credentials.is_empty() {
        tracing::warn!(%addr, "listening beyond loopback with no credentials: anyone who can reach it can call the API");
    }
    if let Some((l, _, files)) = &https {
        match &files.ca {
            Some(ca) => {
                eprintln!(
                    "enifab: HTTPS (OpenAPI and gRPC) on {}; clients must trust {}",
                    l.local_addr()?,
                    ca.display()
                )
            }
            None => eprintln!("enifab: HTTPS (OpenAPI and gRPC) on {} with {}", l.local_addr()?, files.cert.display()),
        }
    }
    let app = router_with(emulator.model.clone(), Some(emulator.fabric.clone()), api.openapi).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let tls_task = https.map(|(l, config, _)| {
        let mut stopped = stopped.clone();
        tokio::spawn(tls::serve(l, config, app.clone(), async move {
            let _ = stopped.wait_for(|s| *s).await;
        }))
    });
    let fabric = emulator.fabric.clone();
    let stop_all = async move {
        shutdown_signal().await;
        fabric.close();
        let _ = stop.send(true);
    };
    axum::serve(no_delay(listener), app).with_graceful_shutdown(stop_all).await.context("serving")?;
    if let Some(task) = tls_task {
        task.await.context("the HTTPS listener")??;
    }
    Ok(())
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
