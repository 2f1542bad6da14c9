//! Who may call over gRPC. Once credentials are configured, every `enifab.v1` method (Ecs, Vpc,
//! Slb, Emulator, Fabric) needs a signature in its metadata (`x-enifab-*`, see
//! `openapi::sign`), checked by the same checker as the HTTP endpoint (`openapi::auth::Auth`,
//! one memory of nonces for both faces); health (`grpc.health.v1`) and reflection stay open,
//! since they tell nothing about the VPC. Without credentials everyone may call everything, as
//! the HTTP endpoint accepts everyone.
//!
//! | caller | may call |
//! |---|---|
//! | an AccessKey | every method but RegisterNode, and WatchNode only for external hosts |
//! | a node (`node:<instance-id>`, signed with its node token) | RegisterNode and WatchNode of that instance |
//!
//! So a node is its own principal: only the holder of an instance's token can say where that
//! instance's frames go, or watch its network; an AccessKey holder can issue the token
//! (`IssueNodeToken`) and so act as the node, but only by saying so. Refusals are the gateway's:
//! `UNAUTHENTICATED` with `MissingAccessKeyId`, `InvalidAccessKeyId.NotFound`,
//! `IncompleteSignature`, `SignatureDoesNotMatch`, `IllegalTimestamp`, `InvalidTimeStamp.*`,
//! `MissingParameter` (no nonce) or `SignatureNonceUsed`; `PERMISSION_DENIED` with
//! `Forbidden.RAM` for a caller that is who it says but may not call that; each with the cloud
//! code in a `google.rpc.ErrorInfo` as every other error of this face ([`super::status`]).
//!
//! This layer checks who calls and which method; which instance a node call is about is in the
//! message, so the Fabric handlers make that check ([`check_node`]) with the [`Caller`] this
//! layer leaves in the request's extensions. Must not: look at messages, or hold state (the
//! checker does).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use enifab_model::error::Product;
use tonic::Code;

use super::{request_id, status};
use crate::openapi::auth::{Auth, Caller};
use crate::openapi::error::ApiError;

/// Services anyone may call: they describe the server, not the VPC.
const OPEN: &[&str] =
    &["/grpc.health.v1.Health/", "/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/"];

/// What a node may call (and then only for its own instance).
pub const NODE_METHODS: &[&str] = &["/enifab.v1.Fabric/RegisterNode", "/enifab.v1.Fabric/WatchNode"];

/// Axum middleware for the gRPC routes: authenticate, keep nodes to their methods, and leave
/// the [`Caller`] for the handlers.
pub async fn authenticate(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if OPEN.iter().any(|p| path.starts_with(p)) {
        return next.run(req).await;
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let caller = match auth.verify_grpc(req.headers(), &path, now) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%path, code = %e.code, "gRPC call refused");
            return refuse(&e, Code::Unauthenticated, &path);
        }
    };
    if let Caller::Node { instance_id } = &caller
        && !NODE_METHODS.contains(&path.as_str())
    {
        let e = forbidden(format!("A node credential ({instance_id}) may call RegisterNode and WatchNode only."));
        return refuse(&e, Code::PermissionDenied, &path);
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// `Forbidden.RAM` (403): the caller is who it says, but may not do this.
pub fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(403, "Forbidden.RAM", message)
}

/// Whether `caller` may act as the node of instance `instance_id` (register it, watch it).
pub fn check_node(caller: Option<&Caller>, instance_id: &str) -> Result<(), ApiError> {
    match caller {
        Some(Caller::Anyone { .. }) => Ok(()),
        Some(Caller::Node { instance_id: own }) if own == instance_id => Ok(()),
        Some(Caller::Node { instance_id: own }) => {
            Err(forbidden(format!("The node credential of {own} does not speak for {instance_id}.")))
        }
        Some(Caller::Signed { access_key_id, .. }) => Err(forbidden(format!(
            "The node {instance_id} speaks for itself: sign with its node token (AccessKeyId node:{instance_id}, \
             from IssueNodeToken), not with the AccessKey {access_key_id}."
        ))),
        // Only a router without this layer leaves no caller; refuse rather than guess.
        None => Err(forbidden("The caller is unknown.")),
    }
}

/// Whether `caller` may call methods meant for AccessKey holders (external hosts).
pub fn check_account(caller: Option<&Caller>) -> Result<(), ApiError> {
    match caller {
        Some(Caller::Anyone { .. } | Caller::Signed { .. }) => Ok(()),
        Some(Caller::Node { instance_id }) => {
            Err(forbidden(format!("A node credential ({instance_id}) cannot speak for an external host.")))
        }
        None => Err(forbidden("The caller is unknown.")),
    }
}

/// The product whose error domain a method answers in.
pub fn product_of(path: &str) -> Product {
    match path.strip_prefix("/enifab.v1.").and_then(|p| p.split_once('/')).map(|(s, _)| s) {
        Some("Vpc") => Product::Vpc,
        Some("Slb") => Product::Slb,
        _ => Product::Ecs,
    }
}

fn refuse(e: &ApiError, code: Code, path: &str) -> Response {
    status::refusal(e, code, product_of(path), &request_id()).into_http::<axum::body::Body>().into_response()
}
