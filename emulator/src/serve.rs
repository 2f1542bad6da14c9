//! `enifab serve`: the emulator process. Binds the API port (gRPC with reflection and health,
//! plus plain HTTP routes on the same port) and runs until asked to stop.
//!
//! The plain HTTP routes are the cloud-compatible OpenAPI endpoint (`crate::openapi`): `/` with
//! `?Action=…&Version=…` serves ECS `2014-05-26`, VPC `2016-04-28` and SLB `2014-05-15` to
//! Terway, the CCM and the official SDKs, through the same handlers as gRPC. `--https-listen` adds a TLS listener that
//! serves the same router (OpenAPI and gRPC). `GET /metrics` is the Prometheus exposition
//! (`crate::observe`). Any other path answers the cloud's 404
//! (`InvalidAction.NotFound`), or gRPC's UNIMPLEMENTED to a gRPC client.
//!
//! Who may call is decided once for both faces (`openapi::auth`, `grpc::auth`): with an AccessKey
//! configured every `enifab.v1` call must be signed, and nodes sign with node tokens. Loopback is
//! the default listen address, and listening beyond it (API, HTTPS or the fabric's UDP socket)
//! without credentials is refused unless `--insecure` says it is meant: anyone who reaches an open
//! port could create and delete resources or redirect a node's frames. Connections are bounded
//! and timed out by `openapi::listener`.
//!
//! Must not: decide anything about resources or frames; it wires the model, the data plane and
//! the faces together and owns their sockets.

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
use crate::observe;
use crate::openapi::auth::NodeKey;
use crate::openapi::listener::{self, Limits};
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

impl ServeConfig {
    /// An in-process emulator (the demo, tests, benchmarks): the API and the fabric on loopback
    /// ports the kernel picks, region cn-hongkong, no transition delays. Change a field with
    /// `ServeConfig { delays, ..ServeConfig::loopback(dir) }`.
    pub fn loopback(data_dir: impl Into<PathBuf>) -> ServeConfig {
        let any_port = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
        ServeConfig {
            listen: any_port,
            data_dir: data_dir.into(),
            region: "cn-hongkong".into(),
            delays: TransitionDelays::ZERO,
            fabric_listen: any_port,
        }
    }
}

/// Where the node key lives in the data directory (see `openapi::auth`).
pub const NODE_KEY_FILE: &str = "node-token.key";

/// How `enifab serve` configures its faces (kept apart from [`ServeConfig`], which in-process
/// servers build field by field).
#[derive(Clone, Debug, Default)]
pub struct ApiConfig {
    /// Who may call (both faces).
    pub openapi: openapi::Options,
    /// The HTTPS listener, off unless asked for.
    pub https: Option<tls::HttpsConfig>,
    /// Connection limits and timeouts of every listener.
    pub limits: Limits,
    /// Listen beyond loopback without credentials (`--insecure`).
    pub insecure: bool,
}

/// What `enifab serve` configures of the emulated cloud beyond [`ServeConfig`]; in-process
/// servers take the defaults.
#[derive(Clone, Debug, Default)]
pub struct CloudOptions {
    /// The public address pool of internet-facing load balancers (`--public-pool`); `None`: the
    /// model's default, 8.210.162.0/24.
    pub public_pool: Option<enifab_model::Cidr>,
    /// The Geneve address shims are told (`--fabric-advertise`); `None`: see
    /// [`FabricShell::address_for`].
    pub fabric_advertise: Option<SocketAddr>,
    /// `--fast-path=off`: nothing is granted to the nodes' kernels. In-process emulators (the
    /// demo, the lab, tests) read `ENIFAB_FAST_PATH=off` as the same switch.
    pub fast_path_off: bool,
    /// `--flow-logs` / `--flow-log-window`; `None`: `ENIFAB_FLOW_LOGS` and
    /// `ENIFAB_FLOW_LOG_WINDOW`, else on with a 10-second window.
    pub flow_logs: Option<crate::fabric::flowlog::FlowLogSettings>,
}

/// `ENIFAB_FAST_PATH=off` in the environment: the whole suite's switch to the slow path only.
pub fn fast_path_off_by_env() -> bool {
    std::env::var("ENIFAB_FAST_PATH").is_ok_and(|v| v == "off")
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
    /// What node tokens are derived from, kept in the data directory ([`NODE_KEY_FILE`]).
    pub node_key: NodeKey,
}

impl Emulator {
    /// Bind the fabric socket, open the data directory, and connect the two.
    pub fn open(cfg: &ServeConfig, clock: Arc<dyn Clock>) -> Result<Emulator> {
        Emulator::open_with(cfg, clock, &CloudOptions::default())
    }

    /// [`Emulator::open`] with the cloud configured by `cloud`.
    pub fn open_with(cfg: &ServeConfig, clock: Arc<dyn Clock>, cloud: &CloudOptions) -> Result<Emulator> {
        let fast_path = !(cloud.fast_path_off || fast_path_off_by_env());
        let logs = cloud.flow_logs.unwrap_or_else(crate::fabric::flowlog::FlowLogSettings::from_env);
        let (fabric, hook) = FabricShell::start_with(cfg.fabric_listen, cloud.fabric_advertise, fast_path, logs)?;
        let model = open_model_with(cfg, clock, vec![hook], cloud)?;
        let node_key = NodeKey::load_or_create(&cfg.data_dir.join(NODE_KEY_FILE))?;
        Ok(Emulator { model, fabric, node_key })
    }

    /// Serve the API (with the Fabric service) on `listener` until `shutdown` completes; no
    /// credentials, default limits.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        self.run_with(listener, ApiConfig::default(), shutdown).await
    }

    /// [`Emulator::run`] with the faces configured by `api` (credentials, limits; node tokens
    /// from this emulator's node key unless `api` has one). `api.https` is `serve`'s business.
    pub async fn run_with(
        self,
        listener: TcpListener,
        mut api: ApiConfig,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let fabric = self.fabric.clone();
        api.openapi.node_key.get_or_insert(self.node_key);
        let app = router_with(self.model, Some(self.fabric), api.openapi).await?;
        let shutdown = async move {
            shutdown.await;
            // Node watches end, so that connections can close.
            fabric.close();
        };
        listener::serve(listener, app, api.limits, None, shutdown).await;
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
    // One fault registry for every service and face (`InjectFault`), one checker of callers.
    let faults = Faults::default();
    let auth = api.auth();
    let calls = observe::metrics::ApiMetrics::new();
    let scrape = observe::metrics::Scrape { api: calls.clone(), model: model.clone(), fabric: fabric.clone() };
    let ctx = |product| Ctx { model: model.clone(), product, faults: faults.clone() };
    let ecs = EcsService { ctx: ctx(Product::Ecs) };
    let vpc = VpcService { ctx: ctx(Product::Vpc) };
    let slb = SlbService { ctx: ctx(Product::Slb), health };
    let dry_runs = grpc::dry_run::DryRuns::default();
    let emu = EmulatorService { ctx: ctx(Product::Ecs), auth: auth.clone(), dry_runs: dry_runs.clone() };
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
    let ui = crate::ui::router(model.clone(), fabric.clone());
    if let Some(shell) = fabric {
        reporter.set_serving::<FabricServer<FabricService>>().await;
        routes = routes.add_service(FabricServer::new(FabricService { model, shell }));
    }
    // gRPC handlers run inside their action's scope, so injected faults reach them too; before
    // that (the outer layer), the caller must prove who it is.
    let grpc_routes = routes
        .into_axum_router()
        .layer(axum::middleware::from_fn(grpc::action_scope))
        .layer(axum::middleware::from_fn_with_state(dry_runs, grpc::dry_run::scope))
        .layer(axum::middleware::from_fn_with_state(auth.clone(), grpc::auth::authenticate))
        .layer(axum::middleware::from_fn_with_state(calls.clone(), observe::metrics::count_grpc))
        .layer(axum::middleware::from_fn(grpc_only));
    // The HTTP endpoint counts its calls itself (it knows the action once it has parsed it).
    let openapi = openapi::router(services, auth).layer(axum::Extension(calls));
    // `/metrics` and `/ui/` are read-only, open without an AccessKey as the API is, Basic auth
    // with one (a browser asks for it; Prometheus has `basic_auth`).
    let gate = observe::gate::Gate::new(api.credentials);
    let metrics = observe::metrics::router(scrape)
        .layer(axum::middleware::from_fn_with_state(gate.clone(), observe::gate::require));
    let ui = ui.layer(axum::middleware::from_fn_with_state(gate, observe::gate::require));
    Ok(grpc_routes.merge(openapi).merge(metrics).merge(ui).fallback(no_route))
}

/// The gRPC paths answer gRPC clients (by content type); anyone else (a browser's `GET
/// /enifab.v1.Vpc/DescribeVpcs`) gets the cloud's 404, as on any path the API does not have.
async fn grpc_only(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    if listener::is_grpc(req.headers()) {
        return next.run(req).await;
    }
    let host = req.headers().get("host").and_then(|h| h.to_str().ok());
    openapi::not_found(host)
}

/// A path that is neither `/` nor a gRPC service: UNIMPLEMENTED for a gRPC client, the cloud's
/// 404 for anyone else (rather than an empty `200 application/grpc`).
async fn no_route(req: axum::extract::Request) -> axum::response::Response {
    use axum::response::IntoResponse;
    if listener::is_grpc(req.headers()) {
        let status = tonic::Status::unimplemented(format!("no method {}", req.uri().path()));
        return status.into_http::<axum::body::Body>().into_response();
    }
    let host = req.headers().get("host").and_then(|h| h.to_str().ok());
    openapi::not_found(host)
}

/// Serve the API alone (no data plane) on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    model: ModelHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = router(model, None).await?;
    listener::serve(listener, app, Limits::default(), None, shutdown).await;
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
    listener::serve(listener, app, Limits::default(), None, shutdown).await;
    Ok(())
}

/// `enifab serve`: open the model, bind, serve until Ctrl-C or SIGTERM.
pub async fn serve(cfg: ServeConfig, mut api: ApiConfig, cloud: CloudOptions) -> Result<()> {
    let exposed = exposed(&cfg, &api);
    let open = api.openapi.credentials.is_empty();
    if !exposed.is_empty() && open && !api.insecure {
        anyhow::bail!(
            "refusing to listen beyond loopback ({}) without credentials: anyone who reaches the port could create \
             and delete resources and take nodes' traffic. Set an AccessKey (--access-key-id with \
             --access-key-secret, --access-key-file, or ENIFAB_ACCESS_KEY_ID/ENIFAB_ACCESS_KEY_SECRET), or say \
             --insecure if that is really meant",
            exposed.join(", ")
        );
    }
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
    let advertised = match emulator.fabric.advertised() {
        Some(a) => a.to_string(),
        None => "the address that routes to each shim".to_string(),
    };
    eprintln!(
        "enifab: region {} serving on {}, fabric (Geneve/UDP) on {} (shims are told {advertised}), data in {}",
        cfg.region,
        listener.local_addr()?,
        emulator.fabric.bound(),
        cfg.data_dir.display()
    );
    let addr = listener.local_addr()?;
    let checks = if open { "signatures not checked" } else { "signatures required, gRPC too" };
    eprintln!(
        "enifab: ECS/VPC/SLB OpenAPI on the same port, plain HTTP ({checks}): ECS_ENDPOINT={addr} VPC_ENDPOINT={addr} SLB_ENDPOINT={addr} ALICLOUD_CLIENT_SCHEME=HTTP"
    );
    if !exposed.is_empty() && open {
        let warning = format!(
            "INSECURE: listening beyond loopback ({}) with no credentials (--insecure): anyone who can reach these \
             ports can call every API, inject faults and redirect nodes' frames",
            exposed.join(", ")
        );
        tracing::warn!("{warning}");
        eprintln!("enifab: *** {warning} ***");
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
    api.openapi.node_key.get_or_insert(emulator.node_key.clone());
    let limits = api.limits;
    let app = router_with(emulator.model.clone(), Some(emulator.fabric.clone()), api.openapi).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let tls_task = https.map(|(l, config, _)| {
        let mut stopped = stopped.clone();
        tokio::spawn(tls::serve(l, config, app.clone(), limits, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }))
    });
    let fabric = emulator.fabric.clone();
    let stop_all = async move {
        shutdown_signal().await;
        fabric.close();
        let _ = stop.send(true);
    };
    listener::serve(listener, app, limits, None, stop_all).await;
    if let Some(task) = tls_task {
        task.await.context("the HTTPS listener")??;
    }
    Ok(())
}

/// The listen addresses beyond loopback: the API, HTTPS and the fabric's UDP socket.
fn exposed(cfg: &ServeConfig, api: &ApiConfig) -> Vec<String> {
    let mut v = Vec::new();
    let mut check = |what: &str, a: SocketAddr| {
        if !a.ip().is_loopback() {
            v.push(format!("{what} {a}"));
        }
    };
    check("API", cfg.listen);
    if let Some(h) = &api.https {
        check("HTTPS", h.listen);
    }
    check("fabric", cfg.fabric_listen);
    v
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
