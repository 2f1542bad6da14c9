//! The one owner of the resource model.
//!
//! Every API call, from any face (gRPC, CLI, later the cloud-compatible HTTP endpoint), becomes a
//! job sent to a single thread that owns the [`Region`] and its [`Store`]. The thread takes the
//! first waiting job and every other job already queued (group commit), runs them one after the
//! other against the model, writes everything they changed in **one** SQLite transaction, and only
//! then answers them. So each call is atomic and durable before its caller hears back, and the
//! fsync cost is shared by all the calls that arrived together: that is how a 2-core machine
//! sustains thousands of acknowledged writes per second with `synchronous=FULL`.
//!
//! It is a plain OS thread, not a tokio task: SQLite calls block, and a blocked runtime worker
//! would stall unrelated requests. It also wakes up on its own when the next transition
//! (Attaching → InUse, …) falls due, so status changes are committed and published on time even
//! when nobody is calling.
//!
//! If a commit fails, or a model action panics, the in-memory region is thrown away and reloaded
//! from the database, and every call of the batch answers `InternalError`: what the callers were
//! told always matches what is on disk, and one bad call cannot wedge the server.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use enifab_model::{Millis, ModelError, Region, RegionConfig, TransitionDelays};
use tokio::sync::{oneshot, watch};

use crate::store::{Change, Store};

/// Where time comes from. The model never reads a clock; the actor asks this.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Millis;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        Millis(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
    }
}

/// A job runs against the region and returns the function that delivers its answer once the
/// batch is committed (`true`) or has failed to commit (`false`).
type Reply = Box<dyn FnOnce(bool) + Send>;
type Job = Box<dyn FnOnce(&mut Region, Millis) -> Reply + Send>;

/// Called after each successful commit that changed something, with the region as committed.
/// The data plane and watchers hang their snapshot rebuilds here.
pub type CommitHook = Box<dyn FnMut(&Region) + Send>;

/// A clonable handle to the model thread.
#[derive(Clone)]
pub struct ModelHandle {
    tx: mpsc::Sender<Job>,
    epoch: watch::Receiver<u64>,
    region_id: Arc<str>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for ModelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelHandle").field("region_id", &self.region_id).finish()
    }
}

/// How the model thread was configured.
pub struct ModelOptions {
    pub region: String,
    pub delays: TransitionDelays,
    pub clock: Arc<dyn Clock>,
    pub hooks: Vec<CommitHook>,
    /// Where internet-facing load balancers take their addresses; `None`: the model's default.
    pub public_pool: Option<enifab_model::Cidr>,
}

const MAX_BATCH: usize = 512;

impl ModelHandle {
    /// Open the data directory (creating the database on first use) and start the model thread.
    pub fn start(data_dir: &Path, opts: ModelOptions) -> Result<ModelHandle> {
        let mut store = Store::open(data_dir)?;
        match store.setting("region")? {
            Some(r) if r != opts.region => {
                bail!("{} holds region {r}, not {}: one data directory per region", data_dir.display(), opts.region)
            }
            Some(_) => {}
            None => store.set_setting("region", &opts.region)?,
        }
        let mut config = RegionConfig::new(&opts.region);
        config.delays = opts.delays;
        if let Some(pool) = opts.public_pool {
            config.public_pool = pool;
        }
        let rows = store.load()?;
        let region = if rows.is_empty() {
            let mut seed = [0u8; 8];
            getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness for the ID seed: {e}"))?;
            let mut region = Region::new(config.clone(), u64::from_le_bytes(seed));
            let all: Vec<Change> = region.export_all().into_iter().map(|(k, id, body)| (k, id, Some(body))).collect();
            store.commit(&all)?;
            region.take_dirty();
            region
        } else {
            Region::restore(config.clone(), rows)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("loading {}", store.path().display()))?
        };
        let (tx, rx) = mpsc::channel::<Job>();
        let (epoch_tx, epoch_rx) = watch::channel(region.epoch());
        let region_id: Arc<str> = opts.region.clone().into();
        let clock = opts.clock;
        let hooks = opts.hooks;
        let thread_clock = clock.clone();
        std::thread::Builder::new()
            .name("enifab-model".into())
            .spawn(move || run(region, store, config, thread_clock, rx, epoch_tx, hooks))
            .context("starting the model thread")?;
        Ok(ModelHandle { tx, epoch: epoch_rx, region_id, clock })
    }

    pub fn region_id(&self) -> &str {
        &self.region_id
    }

    /// The clock the model thread reads, for what runs beside it on a copy (dry runs).
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// Run `f` against the model; the answer arrives after its changes are durable.
    pub async fn call<T, F>(&self, f: F) -> Result<T, ModelError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Region, Millis) -> Result<T, ModelError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |region, now| {
            let out = f(region, now);
            Box::new(move |committed| {
                let _ = tx.send(if committed { out } else { Err(ModelError::InternalError) });
            })
        });
        self.tx.send(job).map_err(|_| ModelError::InternalError)?;
        rx.await.map_err(|_| ModelError::InternalError)?
    }

    /// Read-only access without waiting for a commit of its own (still ordered after every
    /// call queued before it).
    pub async fn read<T, F>(&self, f: F) -> Result<T, ModelError>
    where
        T: Send + 'static,
        F: FnOnce(&Region) -> T + Send + 'static,
    {
        self.call(move |r, _| Ok(f(r))).await
    }

    /// Changes whenever a commit changed the model.
    pub fn epochs(&self) -> watch::Receiver<u64> {
        self.epoch.clone()
    }
}

/// The model as the database has it, after a failed commit or a panicking action left the one
/// in memory untrustworthy; `None` (logged) if even that fails, and the actor must stop.
fn reload(store: &mut Store, config: &RegionConfig) -> Option<Region> {
    match store.load().map_err(|e| e.to_string()).and_then(|rows| Region::restore(config.clone(), rows)) {
        Ok(fresh) => Some(fresh),
        Err(e) => {
            tracing::error!(error = %e, "cannot reload the model; stopping");
            None
        }
    }
}

fn run(
    mut region: Region,
    mut store: Store,
    config: RegionConfig,
    clock: Arc<dyn Clock>,
    rx: mpsc::Receiver<Job>,
    epoch_tx: watch::Sender<u64>,
    mut hooks: Vec<CommitHook>,
) {
    for hook in &mut hooks {
        hook(&region);
    }
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut replies: Vec<Reply> = Vec::with_capacity(MAX_BATCH);
    loop {
        // Sleep until a job arrives or the next transition falls due.
        let wait = match region.next_due() {
            Some(due) => Duration::from_millis(due.0.saturating_sub(clock.now().0)),
            None => Duration::from_secs(3600),
        };
        match rx.recv_timeout(wait) {
            Ok(job) => batch.push(job),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let now = clock.now();
        region.advance(now);
        let mut panicked = false;
        for job in batch.drain(..) {
            if panicked {
                // Dropping the job drops its answer channel: its caller gets InternalError.
                continue;
            }
            // A model method that panics may have changed the region halfway. Its caller's
            // channel is dropped in the unwind (InternalError); the batch is abandoned below.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut region, now))) {
                Ok(reply) => replies.push(reply),
                Err(_) => panicked = true,
            }
        }
        if panicked {
            tracing::error!("a model action panicked; reloading the model from the database and failing its batch");
            for reply in replies.drain(..) {
                reply(false);
            }
            match reload(&mut store, &config) {
                Some(fresh) => region = fresh,
                None => return,
            }
            continue;
        }
        let committed = if region.has_dirty() {
            let changes: Vec<Change> = region
                .take_dirty()
                .into_iter()
                .map(|(kind, id)| {
                    let body = region.export_row(kind, &id);
                    (kind, id, body)
                })
                .collect();
            match store.commit(&changes) {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, "commit failed; reloading the model from the database");
                    match reload(&mut store, &config) {
                        Some(fresh) => region = fresh,
                        None => {
                            for reply in replies.drain(..) {
                                reply(false);
                            }
                            return;
                        }
                    }
                    false
                }
            }
        } else {
            true
        };
        if committed && region.epoch() != *epoch_tx.borrow() {
            for hook in &mut hooks {
                hook(&region);
            }
            epoch_tx.send_replace(region.epoch());
        }
        for reply in replies.drain(..) {
            reply(committed);
        }
    }
}
