//! `enifab ecs|vpc|slb|emulator <Action> --Param value …`: the aliyun-CLI-shaped client.
//!
//! Any action of `enifab.v1` can be called by name with the cloud's flat parameters; the
//! response prints as the cloud's JSON (PascalCase, double-wrapped lists). A cloud error prints
//! `Code: Message` on stderr and exits 1, so scripts can branch on the code like Terway does.
//!
//! Every call is signed (enifab's gRPC scheme, `enifab_proto::auth`) when the process has an
//! AccessKey: the one `main` was given (`--access-key-id`/`--access-key-secret`,
//! `--access-key-file`, or `ENIFAB_ACCESS_KEY_ID`/`ENIFAB_ACCESS_KEY_SECRET`/`ENIFAB_ACCESS_KEY_FILE`,
//! the variables `enifab serve` reads), so `apply` and `lab` sign as the CLI does ([`Clients::new`]).

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use enifab_proto::v1 as pb;
use tonic::codegen::http;
use tonic::transport::{Channel, Endpoint};

use crate::codec::{self, dynamic::DynCodec};
use crate::grpc::status::cloud_error;

/// What a client signs with; the one implementation the shim and the CNI plugin sign with too,
/// and the emulator checks against.
pub use enifab_proto::auth::AccessKey;

static PROCESS_KEY: OnceLock<Option<AccessKey>> = OnceLock::new();

/// Make `key` the process's AccessKey (what [`Clients::new`], [`call`] and
/// [`fabric_counters`] sign with). `main` calls it once, before any client; false if the key
/// was already settled.
pub fn set_access_key(key: Option<AccessKey>) -> bool {
    PROCESS_KEY.set(key).is_ok()
}

/// The process's AccessKey: the one [`set_access_key`] gave, else the environment's.
pub fn access_key() -> Option<AccessKey> {
    PROCESS_KEY
        .get_or_init(|| {
            AccessKey::from_env().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "the AccessKey in the environment cannot be read; calls go unsigned");
                None
            })
        })
        .clone()
}

/// A channel whose calls carry a signature when it has a key (a tonic interceptor cannot: it does
/// not see the method path, which is signed).
#[derive(Clone, Debug)]
pub struct SignedChannel {
    channel: Channel,
    key: Option<Arc<AccessKey>>,
    /// The dry run every call joins (`x-enifab-dry-run`), if any.
    dry_run: Option<http::HeaderValue>,
}

impl SignedChannel {
    pub fn new(channel: Channel, key: Option<AccessKey>) -> SignedChannel {
        SignedChannel { channel, key: key.map(Arc::new), dry_run: None }
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for SignedChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = <Channel as tower::Service<http::Request<tonic::body::Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.channel, cx)
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        if let Some(id) = &self.dry_run {
            req.headers_mut().insert(crate::grpc::dry_run::HEADER, id.clone());
        }
        if let Some(key) = &self.key {
            let path = req.uri().path().to_string();
            key.sign(req.headers_mut(), &path);
        }
        tower::Service::call(&mut self.channel, req)
    }
}

/// The endpoint clients use when neither `--endpoint` nor `ENIFAB_ENDPOINT` is given.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:50051";

/// What can go wrong when calling an action.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Refused: by the cloud, or by the CLI itself for a parameter the cloud would refuse the
    /// same way (a non-number, an index out of range, an unknown parameter or action), with the
    /// code the HTTP endpoint answers for it. Scripts branch on the code either way.
    #[error("{code}: {message}")]
    Cloud { code: String, message: String },
    #[error("cannot reach the emulator at {endpoint}: {reason}")]
    Transport { endpoint: String, reason: String },
}

impl CallError {
    fn invalid(message: impl Into<String>) -> CallError {
        CallError::Cloud { code: "InvalidParameter".into(), message: message.into() }
    }
}

impl From<codec::ParamError> for CallError {
    fn from(e: codec::ParamError) -> CallError {
        // The HTTP endpoint's answer for the same parameter, so both faces say the same thing.
        let e = crate::openapi::error::ApiError::from(e);
        CallError::Cloud { code: e.code, message: e.message }
    }
}

/// How long the CLI waits for an answer when not told (`--timeout-ms`): long enough for any
/// action of a loaded emulator, short enough that a wedged one does not hang a script.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// Connect to `endpoint` (`host:port` or a URL).
pub async fn connect(endpoint: &str) -> Result<Channel, CallError> {
    let url = if endpoint.contains("://") { endpoint.to_string() } else { format!("http://{endpoint}") };
    let transport = |reason: String| CallError::Transport { endpoint: endpoint.to_string(), reason };
    Endpoint::from_shared(url)
        .map_err(|e| transport(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| transport(format!("{e}")))
}

/// `enifab health`: whether the emulator at `endpoint` answers `grpc.health.v1.Health/Check`
/// with SERVING within `timeout`. Health is open (no credentials), so a container's health
/// check needs no key; the answer is printed, and the exit code says it.
pub async fn health(endpoint: &str, timeout: Duration) -> anyhow::Result<std::process::ExitCode> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let check = async {
        let channel = connect(endpoint).await.map_err(|e| e.to_string())?;
        let r = HealthClient::new(channel)
            .check(HealthCheckRequest { service: String::new() })
            .await
            .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
        Ok::<_, String>(r.into_inner().status())
    };
    let (ok, said) = match tokio::time::timeout(timeout, check).await {
        Ok(Ok(status)) => (status == ServingStatus::Serving, status.as_str_name().to_string()),
        Ok(Err(e)) => (false, e),
        Err(_) => (false, format!("no answer within {} ms", timeout.as_millis())),
    };
    println!("{endpoint}: {said}");
    Ok(if ok { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(1) })
}

/// Connect, retrying for up to `patience` while the emulator is still starting.
pub async fn connect_patiently(endpoint: &str, patience: Duration) -> Result<Channel, CallError> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match connect(endpoint).await {
            Ok(c) => return Ok(c),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// `--Key value` and `--Key=value` pairs, in order.
pub fn parse_flags(args: &[String]) -> Result<Vec<(String, String)>, CallError> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let Some(key) = arg.strip_prefix("--") else {
            return Err(CallError::invalid(format!("Expected --Parameter value, got {arg:?}.")));
        };
        match key.split_once('=') {
            Some((k, v)) => out.push((k.to_string(), v.to_string())),
            None => {
                let v =
                    it.next().ok_or_else(|| CallError::invalid(format!("The parameter \"{key}\" has no value.")))?;
                out.push((key.to_string(), v.clone()));
            }
        }
    }
    Ok(out)
}

/// The request for `<service>.<action>` from flat cloud parameters, or the cloud's refusal of
/// them: checked before any connection, so a typo is answered even with no emulator running.
pub fn request(
    service: &str,
    action: &str,
    params: &[(String, String)],
) -> Result<(prost_reflect::MethodDescriptor, prost_reflect::DynamicMessage), CallError> {
    let method = codec::method(service, action).ok_or_else(|| CallError::Cloud {
        code: "InvalidAction.NotFound".into(),
        message: format!("{service} has no action {action:?}; actions: {}", codec::actions(service).join(", ")),
    })?;
    let request = codec::params_to_message(&method.input(), params, true)?;
    Ok((method, request))
}

/// Call `/enifab.v1.<service>/<action>` at `endpoint` (reached over `channel`) with flat cloud
/// parameters; return the cloud's JSON.
pub async fn call(
    endpoint: &str,
    channel: Channel,
    service: &str,
    action: &str,
    params: &[(String, String)],
) -> Result<serde_json::Value, CallError> {
    let (method, request) = self::request(service, action, params)?;
    let path = format!("/enifab.v1.{service}/{action}").parse().expect("a valid path");
    let transport = |reason: String| CallError::Transport { endpoint: endpoint.to_string(), reason };
    let mut grpc = tonic::client::Grpc::new(SignedChannel::new(channel, access_key()));
    grpc.ready().await.map_err(|e| transport(e.to_string()))?;
    let response = grpc.unary(tonic::Request::new(request), path, DynCodec { output: method.output() }).await;
    match response {
        Ok(r) => Ok(codec::message_to_json(&r.into_inner())),
        Err(status) => Err(match cloud_error(&status) {
            Some((code, message)) => CallError::Cloud { code, message },
            None => transport(status.to_string()),
        }),
    }
}

/// Typed clients for code that knows what it calls (apply, lab, tests). Cheap to clone: they
/// share one channel.
#[derive(Clone, Debug)]
pub struct Clients {
    pub ecs: pb::ecs_client::EcsClient<SignedChannel>,
    pub vpc: pb::vpc_client::VpcClient<SignedChannel>,
    pub slb: pb::slb_client::SlbClient<SignedChannel>,
    pub emulator: pb::emulator_client::EmulatorClient<SignedChannel>,
    pub fabric: pb::fabric_client::FabricClient<SignedChannel>,
    channel: SignedChannel,
}

impl Clients {
    /// Clients that sign with the process's AccessKey ([`access_key`]), if it has one.
    pub fn new(channel: Channel) -> Clients {
        Clients::signed(channel, access_key())
    }

    /// Clients that sign with `key` (`None`: unsigned).
    pub fn signed(channel: Channel, key: Option<AccessKey>) -> Clients {
        Clients::over(SignedChannel::new(channel, key))
    }

    fn over(channel: SignedChannel) -> Clients {
        Clients {
            ecs: pb::ecs_client::EcsClient::new(channel.clone()),
            vpc: pb::vpc_client::VpcClient::new(channel.clone()),
            slb: pb::slb_client::SlbClient::new(channel.clone()),
            emulator: pb::emulator_client::EmulatorClient::new(channel.clone()),
            fabric: pb::fabric_client::FabricClient::new(channel.clone()),
            channel,
        }
    }

    /// The same clients, every call of theirs made inside the dry run `id`
    /// (`enifab.v1.Emulator/BeginDryRun`): they change a copy of the region, never the region.
    pub fn in_dry_run(&self, id: &str) -> anyhow::Result<Clients> {
        let mut channel = self.channel.clone();
        channel.dry_run = Some(id.parse().map_err(|_| anyhow::anyhow!("dry run ID {id:?} is not a header value"))?);
        Ok(Clients::over(channel))
    }
}

/// A status as `Code: Message`, using the cloud code when the status carries one.
pub fn describe_status(status: &tonic::Status) -> String {
    match cloud_error(status) {
        Some((code, message)) => format!("{code}: {message}"),
        None => format!("{:?}: {}", status.code(), status.message()),
    }
}

/// `enifab fabric counters`: the pipeline's counters as a table (or JSON).
pub async fn fabric_counters(
    endpoint: &str,
    port: Option<u32>,
    eni: Option<String>,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let channel = connect(endpoint).await?;
    let mut client = pb::fabric_client::FabricClient::new(SignedChannel::new(channel, access_key()));
    let r = client
        .describe_fabric_counters(pb::DescribeFabricCountersRequest {
            vni: port,
            network_interface_id: eni.unwrap_or_default(),
        })
        .await
        .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
        .into_inner();
    if json {
        println!("{}", serde_json::to_string_pretty(&codec::to_json(&r)).expect("JSON values print"));
        return Ok(std::process::ExitCode::SUCCESS);
    }
    print!("{}", counters_table(&r));
    Ok(std::process::ExitCode::SUCCESS)
}

/// `enifab trace`: the hops as text (or JSON). Exit 0 when the packet would be delivered or
/// answered, 1 when it would be dropped, so scripts can assert either.
pub async fn trace(endpoint: &str, q: pb::TraceFrameRequest, json: bool) -> anyhow::Result<std::process::ExitCode> {
    let channel = connect(endpoint).await?;
    let mut client = pb::fabric_client::FabricClient::new(SignedChannel::new(channel, access_key()));
    let (from, to) = (q.source.clone(), q.destination.clone());
    let r = client.trace_frame(q).await.map_err(|s| anyhow::anyhow!(describe_status(&s)))?.into_inner();
    if json {
        println!("{}", serde_json::to_string_pretty(&codec::to_json(&r)).expect("JSON values print"));
    } else {
        print!("{}", crate::trace::render(&r, &from, &to));
    }
    Ok(std::process::ExitCode::from(if r.verdict == "dropped" { 1 } else { 0 }))
}

/// `enifab flowlog`: the records as lines (`start end eni vlan direction src dst protocol
/// action rule packets bytes`) or JSON objects, until the stream ends (or Ctrl-C with
/// `--follow`).
pub async fn flowlog(endpoint: &str, eni: String, follow: bool, json: bool) -> anyhow::Result<std::process::ExitCode> {
    use std::io::Write;
    let channel = connect(endpoint).await?;
    let mut client = pb::fabric_client::FabricClient::new(SignedChannel::new(channel, access_key()));
    let mut stream = client
        .describe_flow_logs(pb::DescribeFlowLogsRequest { network_interface_id: eni, follow })
        .await
        .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
        .into_inner();
    let mut out = std::io::stdout().lock();
    if !json {
        writeln!(out, "{}", flowlog_header())?;
    }
    while let Some(r) = stream.message().await.map_err(|s| anyhow::anyhow!(describe_status(&s)))? {
        if json {
            writeln!(out, "{}", codec::to_json(&r))?;
        } else {
            writeln!(out, "{}", flowlog_line(&r))?;
        }
        out.flush()?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn flowlog_header() -> String {
    format!(
        "{:<13} {:<13} {:<24} {:>4} {:<3} {:<21} {:<21} {:>5} {:<6} {:<26} {:>7} {:>9}",
        "START", "END", "ENI", "VLAN", "DIR", "SRC", "DST", "PROTO", "ACTION", "RULE", "PACKETS", "BYTES"
    )
}

/// One record on one line (times in milliseconds since the Unix epoch, as the RPC gives them).
pub fn flowlog_line(r: &pb::FlowLogRecord) -> String {
    format!(
        "{:<13} {:<13} {:<24} {:>4} {:<3} {:<21} {:<21} {:>5} {:<6} {:<26} {:>7} {:>9}",
        r.start_ms,
        r.end_ms,
        r.network_interface_id,
        if r.vlan == 0 { "-".to_string() } else { r.vlan.to_string() },
        r.direction,
        format!("{}:{}", r.src_addr, r.src_port),
        format!("{}:{}", r.dst_addr, r.dst_port),
        r.protocol,
        r.action,
        r.security_group_rule_id,
        r.packets,
        r.bytes
    )
}

/// The counters as a fixed-width table: one row per port, then the drop totals.
pub fn counters_table(r: &pb::DescribeFabricCountersResponse) -> String {
    let mut out = format!("config epoch {}, {} tracked flows\n\n", r.config_epoch, r.conntrack_entries);
    out.push_str(&format!(
        "{:>8}  {:<26} {:<24} {:>10} {:>12} {:>10} {:>12} {:>9}  drops\n",
        "VNI", "ENI", "INSTANCE", "RX FRAMES", "RX BYTES", "TX FRAMES", "TX BYTES", "HEALTH"
    ));
    for p in &r.ports {
        let drops: Vec<String> = p.drops.iter().map(|d| format!("{}={}", d.reason, d.frames)).collect();
        out.push_str(&format!(
            "{:>8}  {:<26} {:<24} {:>10} {:>12} {:>10} {:>12} {:>9}  {}\n",
            p.vni,
            p.network_interface_id,
            p.instance_id,
            p.rx_frames,
            p.rx_bytes,
            p.tx_frames,
            p.tx_bytes,
            p.health_check_frames,
            if drops.is_empty() { "-".to_string() } else { drops.join(" ") }
        ));
    }
    let members: Vec<&pb::EniCounters> = r.network_interfaces.iter().filter(|e| e.vlan != 0).collect();
    if !members.is_empty() {
        out.push_str(&format!(
            "\nmember ENIs (counted apart from their trunk's port)\n{:>8}  {:>4}  {:<26} {:<24} {:>10} {:>12} {:>10} {:>12}  drops\n",
            "VNI", "VLAN", "ENI", "INSTANCE", "RX FRAMES", "RX BYTES", "TX FRAMES", "TX BYTES"
        ));
        for e in members {
            let drops: Vec<String> = e.drops.iter().map(|d| format!("{}={}", d.reason, d.frames)).collect();
            out.push_str(&format!(
                "{:>8}  {:>4}  {:<26} {:<24} {:>10} {:>12} {:>10} {:>12}  {}\n",
                e.vni,
                e.vlan,
                e.network_interface_id,
                e.instance_id,
                e.rx_frames,
                e.rx_bytes,
                e.tx_frames,
                e.tx_bytes,
                if drops.is_empty() { "-".to_string() } else { drops.join(" ") }
            ));
        }
    }
    if !r.drops.is_empty() {
        out.push_str("\ndrops by reason (all ports)\n");
        for d in &r.drops {
            out.push_str(&format!("  {:<32} {:>10} frames {:>12} bytes\n", d.reason, d.frames, d.bytes));
        }
    }
    out
}
