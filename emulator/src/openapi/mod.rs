//! The cloud-compatible endpoint: Alibaba Cloud's RPC-style OpenAPI for ECS (`2014-05-26`), VPC
//! (`2016-04-28`) and SLB (`2014-05-15`) over HTTP(S), so Terway, the cloud-controller-manager and
//! the official SDKs can be pointed at enifab (`ECS_ENDPOINT`, `VPC_ENDPOINT`, `SLB_ENDPOINT`) and
//! run unchanged (reference §1).
//!
//! It is a face, like the gRPC services and the CLI, and holds no logic of its own about
//! resources: a request is decoded ([`wire`]), authenticated ([`auth`], [`sign`]), routed by
//! `Version` and `Action` and handed to the **same** gRPC handlers ([`dispatch`]), whose answer is
//! rendered as the cloud's JSON by the shared descriptor codec (`crate::codec`). Failures become
//! the cloud's error JSON with the cloud's HTTP status ([`error`]). It is served on the gRPC port
//! (`POST /` and `GET /`; gRPC uses `/enifab.v1.*/…` paths, so the two never meet) and, with
//! `--https-listen`, over TLS too ([`tls`]).
//!
//! ```text
//! POST /?Action=CreateNetworkInterface&Version=2014-05-26&VSwitchId=…&Signature=…
//!   → wire::RpcRequest → auth::Auth::verify → dispatch::Api (by Version)
//!   → gaps::unimplemented (a parameter the cloud defines and enifab lacks → UnsupportedParameter)
//!   → codec::params_to_message (lenient: unknown parameters are ignored, as the cloud does)
//!   → grpc::as_action(Action, EcsService::create_network_interface)   ← faults apply here
//!   → 200 codec::to_json(response)  |  4xx/5xx {RequestId, HostId, Code, Message, Recommend}
//! ```
//!
//! Gateway errors (before a handler runs): no `Action` or `Version` → `MissingParameter` (400);
//! either given twice, or contradicted by its `x-acs-*` header → `InvalidParameter` (400);
//! a version no product has → `InvalidVersion` (400); an action the product lacks, or a method
//! other than GET/POST → `InvalidAction.NotFound` (404); a body over 1 MiB, a value over 32 KiB,
//! bad percent-encoding, a bad list index or a value of the wrong type → `InvalidParameter` (400).
//! None of them reaches the model, so a malformed request changes nothing. Responses are always
//! JSON (`Format=XML` is not supported).

pub mod auth;
pub mod dispatch;
pub mod error;
pub mod gaps;
pub mod listener;
pub mod sign;
pub mod tls;
pub mod wire;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::any;

use self::auth::{Auth, Caller, Credentials, NodeKey};
use self::dispatch::{Api, Services};
use self::error::{ApiError, json_response};
use self::wire::{MAX_BODY_BYTES, RpcRequest};
use crate::{codec, grpc};

/// Who may call the API, on every face (this endpoint and gRPC).
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// AccessKeys whose signatures are accepted; empty: accept every request unsigned.
    pub credentials: Credentials,
    /// What node tokens are derived from; `None`: a key of this process only (tokens do not
    /// survive a restart).
    pub node_key: Option<NodeKey>,
}

impl Options {
    /// The checker both faces share (one memory of nonces).
    pub fn auth(&self) -> Arc<Auth> {
        Arc::new(Auth::with_node_key(self.credentials.clone(), self.node_key.clone().unwrap_or_default()))
    }
}

/// The endpoint's state: the handlers and the signature checker.
#[derive(Debug)]
pub struct OpenApi {
    services: Services,
    auth: Arc<Auth>,
}

/// The routes of the endpoint (`/`, any method), to merge with the gRPC routes.
pub fn router(services: Services, auth: Arc<Auth>) -> axum::Router {
    let state = Arc::new(OpenApi { services, auth });
    axum::Router::new().route("/", any(handle)).with_state(state)
}

/// The cloud's answer to a path it has no API at (`/favicon.ico`, `/latest/meta-data/`).
pub fn not_found(host: Option<&str>) -> Response {
    let host = host.map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name)).unwrap_or("enifab");
    ApiError::new(404, "InvalidAction.NotFound", "Specified api is not found, please check your url and method.")
        .into_response(&grpc::request_id(), host, "Ecs")
}

async fn handle(State(api): State<Arc<OpenApi>>, req: Request) -> Response {
    let request_id = grpc::request_id();
    let start = std::time::Instant::now();
    let (parts, body) = req.into_parts();
    // Present when the server counts its calls (`observe::metrics`, put there by serve.rs).
    let metrics = parts.extensions.get::<Arc<crate::observe::metrics::ApiMetrics>>().cloned();
    let mut seen = Seen::default();
    let host = parts
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name).to_string())
        .unwrap_or_else(|| "enifab".to_string());
    let outcome = match read_body(body).await {
        Ok(body) => api.serve(parts.method, &parts.uri, parts.headers, body, &mut seen).await,
        Err(e) => Err((None, e)),
    };
    if let Some(m) = metrics {
        let code = match &outcome {
            Ok(_) => crate::observe::metrics::OK,
            Err((_, e)) => e.code.as_str(),
        };
        let product = seen.api.map_or("", Api::service);
        m.record(product, seen.action.as_deref().unwrap_or(""), code, start.elapsed());
    }
    match outcome {
        Ok(json) => {
            let rid = json.get("RequestId").and_then(|r| r.as_str()).unwrap_or(&request_id).to_string();
            json_response(StatusCode::OK, &rid, &json)
        }
        Err((product, e)) => {
            tracing::debug!(code = %e.code, status = e.status, "OpenAPI call failed");
            match product {
                Some(p) => e.into_response(&request_id, p.host_id(), p.product_code()),
                None => e.into_response(&request_id, &host, "Ecs"),
            }
        }
    }
}

/// Past this many bytes an oversized body is no longer read, and the connection is dropped
/// after the answer; below it the rest is read and discarded, so the client gets to read the
/// error instead of a reset connection.
const MAX_DRAIN_BYTES: usize = 16 * MAX_BODY_BYTES;

/// The body, at most [`MAX_BODY_BYTES`] of it.
async fn read_body(body: axum::body::Body) -> Result<Vec<u8>, ApiError> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let (mut buf, mut total) = (Vec::new(), 0usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::invalid("Body", format!("It could not be read: {e}.")))?;
        total += chunk.len();
        if total <= MAX_BODY_BYTES {
            buf.extend_from_slice(&chunk);
        } else if total > MAX_DRAIN_BYTES {
            break;
        }
    }
    if total > MAX_BODY_BYTES {
        return Err(ApiError::invalid("Body", format!("A request body may carry at most {MAX_BODY_BYTES} bytes.")));
    }
    Ok(buf)
}

type Failure = (Option<Api>, ApiError);

/// How far a request got in being named: its product and action, for the call counters.
#[derive(Debug, Default)]
struct Seen {
    api: Option<Api>,
    action: Option<String>,
}

impl OpenApi {
    async fn serve(
        &self,
        method: Method,
        uri: &axum::http::Uri,
        headers: axum::http::HeaderMap,
        body: Vec<u8>,
        seen: &mut Seen,
    ) -> Result<serde_json::Value, Failure> {
        let req = RpcRequest::decode(method, uri, headers, body).map_err(|e| (None, e))?;
        let action = req.action().map_err(|e| (None, e))?.ok_or_else(|| (None, ApiError::missing("Action")))?;
        let action = action.to_string();
        seen.action = Some(action.clone());
        let version = req.version().map_err(|e| (None, e))?.ok_or_else(|| (None, ApiError::missing("Version")))?;
        let api = Api::from_version(version)
            .ok_or_else(|| (None, ApiError::new(400, "InvalidVersion", "Specified parameter Version is not valid.")))?;
        seen.api = Some(api);
        let fail = |e: ApiError| (Some(api), e);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        match self.auth.verify(&req, now).map_err(fail)? {
            Caller::Anyone { access_key_id } => {
                tracing::debug!(%action, access_key_id = access_key_id.as_deref().unwrap_or(""), "accepted without a signature check (no credentials configured)");
            }
            Caller::Signed { access_key_id, scheme } => {
                tracing::debug!(%action, %access_key_id, scheme, "signature verified")
            }
            // `verify` accepts AccessKeys only; a node has nothing to call here.
            Caller::Node { .. } => return Err(fail(ApiError::new(403, "Forbidden.RAM", "Nodes call gRPC only."))),
        }
        let not_found = || {
            ApiError::new(
                404,
                "InvalidAction.NotFound",
                "Specified api is not found, please check your url and method.",
            )
        };
        if req.method != Method::GET && req.method != Method::POST {
            return Err(fail(not_found()));
        }
        let method = codec::method(api.service(), &action).ok_or_else(|| fail(not_found()))?;
        let params = req.action_params();
        if let Some(p) = gaps::unimplemented(api, &action, &method.input(), &params) {
            return Err(fail(ApiError::new(
                400,
                "UnsupportedParameter",
                format!(
                    "The parameter \"{p}\" of {action} is defined by the cloud but not implemented by enifab; nothing was done."
                ),
            )));
        }
        let message = codec::params_to_message(&method.input(), &params, false).map_err(|e| fail(e.into()))?;
        // The API references mark `RegionId` required on every action enifab serves, and the
        // cloud's gateway refuses a call without a mandatory parameter of that kind as
        // `Missing<Name>`, "<Name> is mandatory for this action." (seen for CS's `region` in
        // aliyun/aliyun-cli issue #417: `Missingregion`, "region is mandatory for this action.");
        // hence `MissingRegionId`. gRPC callers may leave it empty: that face is enifab's, one
        // region per server. Emulator-only actions have no region.
        let takes_region = method.input().get_field_by_name("region_id").is_some() && !gaps::regionless(api, &action);
        let has_region = params.iter().any(|(k, v)| k == "RegionId" && !v.is_empty());
        if api != dispatch::Api::Emulator && takes_region && !has_region {
            return Err(fail(ApiError::new(400, "MissingRegionId", "RegionId is mandatory for this action.")));
        }
        let call = grpc::as_action(&action, self.services.call(api, &action, message));
        let answer = match req.headers.get(grpc::dry_run::HEADER) {
            None => call.await,
            Some(id) => {
                let id = id.to_str().unwrap_or_default();
                match self.services.emulator.dry_runs.get(id) {
                    Some(session) => grpc::dry_run::within(session, call).await,
                    // Meant to change nothing: never run for real.
                    None => return Err(fail(ApiError::from_model(&grpc::dry_run::not_open(id)))),
                }
            }
        };
        answer.map_err(|status| fail(ApiError::from_status(&status)))
    }
}
