//! The gRPC face: `enifab.v1.Vpc`, `enifab.v1.Ecs`, `enifab.v1.Slb` and `enifab.v1.Emulator`.
//!
//! Handlers only translate: a proto request becomes the model's request struct, the model
//! method runs on the model thread ([`ModelHandle::call`]), and its result is rendered into the
//! proto response with the cloud's field layout. No handler keeps state or makes a decision the
//! model could make, so every face that calls these handlers (the CLI, the HTTP endpoint)
//! behaves the same.
//!
//! Who may call is settled before any handler runs ([`auth`]: signatures, node principals); a
//! handler sees only calls that got through, and the Fabric handlers check which node a node
//! caller is.
//!
//! Injected faults (`enifab.v1.Emulator/InjectFault`) are applied in one place, [`Ctx::call`],
//! which every handler goes through. It learns which action it serves from [`as_action`]: the
//! gRPC routes are wrapped in [`action_scope`] (serve.rs), the HTTP endpoint wraps its dispatch.

pub mod auth;
pub mod dry_run;
pub mod ecs;
pub mod emulator;
pub mod render;
pub mod slb;
pub mod status;
pub mod vpc;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use enifab_model::error::Product;
use enifab_model::paging::PageRequest;
use enifab_model::{Millis, ModelError, Region, Tag};
use enifab_proto::v1 as pb;
use tonic::Status;

use crate::actor::ModelHandle;

/// What every handler needs: the model, which product's error domain it answers in, and the
/// faults armed for the server (shared by every service).
#[derive(Clone, Debug)]
pub struct Ctx {
    pub model: ModelHandle,
    pub product: Product,
    pub faults: Faults,
}

impl Ctx {
    /// Fail with an injected fault if one is armed for the current action; check `RegionId`
    /// (empty means the server's region); then run `f` on the model thread.
    pub async fn call<T, F>(&self, request_id: &str, region_id: &str, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&mut Region, Millis) -> Result<T, ModelError> + Send + 'static,
    {
        self.admit(request_id, region_id)?;
        let out = match dry_run::current() {
            Some(session) => session.call(f),
            None => self.model.call(f).await,
        };
        out.map_err(|e| status::to_status(&e, self.product, request_id))
    }

    /// [`Ctx::call`] for a request whose conversion into the model's can fail (lists in JSON,
    /// negative counts): `build` runs here, after the gateway's checks and before the model
    /// thread, which then only runs `f`.
    pub async fn call_with<R, T, F>(
        &self,
        request_id: &str,
        region_id: &str,
        build: impl FnOnce() -> Result<R, ModelError>,
        f: F,
    ) -> Result<T, Status>
    where
        R: Send + 'static,
        T: Send + 'static,
        F: FnOnce(&mut Region, Millis, R) -> Result<T, ModelError> + Send + 'static,
    {
        self.admit(request_id, region_id)?;
        let req = build().map_err(|e| status::to_status(&e, self.product, request_id))?;
        let out = match dry_run::current() {
            Some(session) => session.call(move |r, now| f(r, now, req)),
            None => self.model.call(move |r, now| f(r, now, req)).await,
        };
        out.map_err(|e| status::to_status(&e, self.product, request_id))
    }

    /// What the cloud's gateway checks before any validation: an injected fault for this action
    /// (throttled or failed calls are refused first), then `RegionId` (empty means ours).
    fn admit(&self, request_id: &str, region_id: &str) -> Result<(), Status> {
        // A dry run must leave the faults armed for the real run it rehearses.
        let dry = dry_run::current().is_some();
        let fault = if dry { None } else { ACTION.try_with(|a| self.faults.take(a)).ok().flatten() };
        if let Some(e) = fault {
            tracing::debug!(code = e.code(), request_id, "injected fault");
            return Err(status::to_status(&e, self.product, request_id));
        }
        if !region_id.is_empty() && region_id != self.model.region_id() {
            return Err(status::to_status(
                &ModelError::RegionNotFound(region_id.to_string()),
                self.product,
                request_id,
            ));
        }
        Ok(())
    }
}

/// Faults armed by `InjectFault`: action name (or `*`) → the error and how many calls it fails.
/// State of the running server only, never persisted: the model knows nothing of it.
#[derive(Clone, Debug, Default)]
pub struct Faults(Arc<Mutex<HashMap<String, (ModelError, u32)>>>);

impl Faults {
    /// Fail the next `count` calls of `action` (`*`: of every action) with `error`; 0 disarms.
    /// Returns the calls still to fail.
    pub fn arm(&self, action: &str, error: ModelError, count: u32) -> u32 {
        let mut armed = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if count == 0 {
            armed.remove(action);
        } else {
            armed.insert(action.to_string(), (error, count));
        }
        count
    }

    /// The error the current call of `action` fails with, counting the fault down. A fault for
    /// the action itself fires before a `*` one.
    pub fn take(&self, action: &str) -> Option<ModelError> {
        let mut armed = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = if armed.contains_key(action) { action } else { "*" };
        let (error, left) = armed.get_mut(key)?;
        let error = error.clone();
        *left -= 1;
        if *left == 0 {
            armed.remove(key);
        }
        Some(error)
    }
}

tokio::task_local! {
    /// The action the current task is serving, as the cloud names it.
    static ACTION: Arc<str>;
}

/// Run `call` as a call of `action`, so [`Ctx::call`] applies the faults armed for it.
pub async fn as_action<F: Future>(action: &str, call: F) -> F::Output {
    ACTION.scope(Arc::from(action), call).await
}

/// Axum middleware for the gRPC routes: `/enifab.v1.Ecs/CreateNetworkInterface` runs as
/// `CreateNetworkInterface`. A unary handler runs inside the service future, so inside the scope.
pub async fn action_scope(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    match req.uri().path().strip_prefix("/enifab.v1.").and_then(|p| p.split_once('/')) {
        Some((_, action)) => {
            let action = action.to_string();
            as_action(&action, next.run(req)).await
        }
        None => next.run(req).await,
    }
}

/// A request ID in the cloud's shape: `473469C7-AA6F-4DC5-B3DB-A3DC0DE3C83E`.
pub fn request_id() -> String {
    let mut b = [0u8; 16];
    // A failed random read only makes request IDs less unique; it is not worth failing a call.
    let _ = getrandom::fill(&mut b);
    // The cloud's shape: upper-case hex, 8-4-4-4-12.
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut id = String::with_capacity(36);
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            id.push('-');
        }
        id.push(char::from(HEX[usize::from(x >> 4)]));
        id.push(char::from(HEX[usize::from(x & 0xf)]));
    }
    id
}

/// Empty strings are how proto3 says "not given".
pub(crate) fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

pub(crate) fn tags(t: Vec<pb::Tag>) -> Vec<Tag> {
    t.into_iter().map(|t| Tag { key: t.key, value: t.value }).collect()
}

/// Counts arrive as int32; negative values are invalid parameters, not huge unsigned ones.
pub(crate) fn count(param: &'static str, v: Option<i32>) -> Result<Option<u32>, ModelError> {
    match v {
        None => Ok(None),
        Some(n) if n >= 0 => Ok(Some(n as u32)),
        Some(_) => Err(ModelError::invalid(param, "must not be negative")),
    }
}

/// The paging parameters of a Describe call, for every product alike.
pub(crate) fn page(
    page_number: Option<i32>,
    page_size: Option<i32>,
    max_results: Option<i64>,
    next_token: String,
) -> PageRequest {
    // Negative sizes become 0, which paging rejects or clamps like any other bad size.
    let nn = |v: i64| v.max(0) as u32;
    PageRequest {
        page_number: page_number.map(|v| nn(v.into())),
        page_size: page_size.map(|v| nn(v.into())),
        max_results: max_results.map(nn),
        next_token: opt(next_token),
    }
}

/// A comma-separated ID list (`VpcId=vpc-1,vpc-2`).
pub(crate) fn comma_list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_have_the_clouds_shape() {
        let (a, b) = (super::request_id(), super::request_id());
        assert_ne!(a, b);
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{a}");
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_digit() || c.is_ascii_uppercase()), "{a}");
    }
}
