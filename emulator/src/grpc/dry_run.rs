//! Dry runs (`enifab.v1.Emulator/BeginDryRun`): a throwaway copy of the region that a client can
//! play a whole plan against before it touches the real one.
//!
//! The cloud has nothing like it for a batch of actions (its `DryRun` parameter checks one
//! request, not what the next one will find), and `enifab apply` needs exactly that to be all or
//! nothing: a file can pass every check the client can make and still fail on the server's
//! (an instance type that does not support trunks, a reserved address, a zone the region lacks).
//!
//! A call joins a dry run by carrying the metadata (or, over HTTP, the header)
//! `x-enifab-dry-run: <DryRunId>`; the middleware [`scope`] (the HTTP endpoint: [`within`]) puts
//! that session's region in a task-local, and [`super::Ctx::call`] runs
//! the model closure on it instead of sending it to the model thread. So the dry run executes the
//! same handlers and the same model methods as a real call: there is no second set of checks
//! to drift from the first. What it must never do: reach the store, the data plane's snapshot or
//! the injected faults (a dry run that used up a fault would change the real run that follows).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use enifab_model::{Millis, ModelError, Region};

use crate::actor::Clock;

/// The metadata key a call names its dry run with.
pub const HEADER: &str = "x-enifab-dry-run";

/// A dry run left alone this long is dropped: a client that died mid-plan must not pin a copy
/// of the region in memory forever.
const IDLE: Duration = Duration::from_secs(300);

/// One dry run: its copy of the region and the clock its transitions follow.
#[derive(Clone)]
pub struct Session {
    region: Arc<Mutex<Region>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl Session {
    /// Run a model closure on the copy, as the model thread runs it on the real region: time
    /// advanced first, so transitions due by now have happened.
    pub fn call<T>(&self, f: impl FnOnce(&mut Region, Millis) -> Result<T, ModelError>) -> Result<T, ModelError> {
        let mut region = self.region.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.clock.now();
        region.advance(now);
        // A panicking action leaves this copy half-changed; nothing real depends on it, and the
        // caller's session is as broken as its plan, so poisoning is not worth more than this.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut region, now)))
            .unwrap_or(Err(ModelError::InternalError))
    }
}

/// The open dry runs of a server (shared by the Emulator service and the middleware).
#[derive(Clone, Debug, Default)]
pub struct DryRuns(Arc<Mutex<HashMap<String, (Session, Instant)>>>);

impl DryRuns {
    /// Open a dry run over `region`, a copy the caller made; returns its ID.
    pub fn begin(&self, region: Region, clock: Arc<dyn Clock>) -> String {
        let id = format!("dry-{}", super::request_id().to_ascii_lowercase());
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, (_, used)| used.elapsed() < IDLE);
        open.insert(id.clone(), (Session { region: Arc::new(Mutex::new(region)), clock }, Instant::now()));
        id
    }

    pub fn end(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// The open dry run `id`, marked used.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (session, used) = open.get_mut(id)?;
        *used = Instant::now();
        Some(session.clone())
    }
}

/// A copy of `region` for a dry run, made as a restart makes one (its rows, then the indexes
/// rebuilt): the model has no other way to copy itself, and this one is known to be exact.
pub fn copy(region: &Region) -> Result<Region, ModelError> {
    Region::restore(region.config().clone(), region.export_all()).map_err(|e| {
        tracing::error!(error = %e, "the region does not copy itself");
        ModelError::InternalError
    })
}

tokio::task_local! {
    static CURRENT: Session;
}

/// The dry run the current call belongs to, if any.
pub fn current() -> Option<Session> {
    CURRENT.try_with(Session::clone).ok()
}

/// Run `f` inside the dry run `session` (what [`scope`] does for a gRPC call; the HTTP endpoint
/// calls it for a request carrying the same header).
pub async fn within<F: std::future::Future>(session: Session, f: F) -> F::Output {
    CURRENT.scope(session, f).await
}

/// The refusal of a call naming a dry run that is not open.
pub fn not_open(id: &str) -> ModelError {
    ModelError::invalid("DryRunId", format!("no dry run {id:?} is open (it ended or expired)"))
}

/// Axum middleware for the gRPC routes: a call naming a dry run runs inside it. A call naming
/// one that does not exist (ended, expired, mistyped), or a call of a service with no dry run
/// (the fabric's), is refused rather than run for real, since its caller meant it to change
/// nothing.
pub async fn scope(
    axum::extract::State(runs): axum::extract::State<DryRuns>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let Some(id) = req.headers().get(HEADER).map(|v| v.to_str().unwrap_or_default().to_string()) else {
        return next.run(req).await;
    };
    // The fabric's calls act on nodes and frames, which a copy of the region does not have.
    let cloud =
        ["Ecs", "Vpc", "Slb", "Emulator"].iter().any(|s| req.uri().path().starts_with(&format!("/enifab.v1.{s}/")));
    let refused = match runs.get(&id) {
        Some(session) if cloud => return CURRENT.scope(session, next.run(req)).await,
        Some(_) => ModelError::invalid("DryRunId", "the fabric's calls have no dry run"),
        None => not_open(&id),
    };
    let status = super::status::to_status(&refused, enifab_model::error::Product::Ecs, &super::request_id());
    status.into_http::<axum::body::Body>()
}
