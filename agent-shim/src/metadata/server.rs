//! The metadata service's I/O: 100.100.100.200/32 (scope host) on the node namespace's `lo`, a TCP listener
//! on 100.100.100.200:80 bound from a thread inside that namespace, and axum serving it on the
//! shim's runtime with [`super::routes::respond`] behind every path.
//!
//! A socket belongs to the namespace it was created in, so the listener is made on a
//! [`run_in`] thread and then handed to tokio, whose workers stay in the host namespace (as
//! every thread of the shim does, DEPENDENCIES.md §4). The address is added idempotently (a shim
//! restarted after SIGKILL finds it there) and removed on [`MetadataServer::shutdown`]; `lo` is
//! brought up if it is down, as it always is in an ECS guest, and left up.
//!
//! Must not: hold a lock across an await, or touch any other address or link of the namespace.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use enifab_proto::v1 as pb;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::routes::{self, Request, TOKEN_HEADER, TOKEN_TTL_HEADER, Tokens};
use crate::driver::DriverError;
use crate::driver::netlink::Netlink;
use crate::driver::netns::run_in;

/// Where ECS serves instance metadata.
pub const METADATA_IP: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);
pub const METADATA_PORT: u16 = 80;
/// How long shutdown waits for requests in flight before it drops their connections.
const DRAIN: Duration = Duration::from_secs(2);

/// How the service runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetadataOptions {
    /// Security hardening mode only (the cloud's `HttpTokens=required`): a request without a
    /// token from `PUT /latest/api/token` gets 401.
    pub token_required: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// `lo` or its 100.100.100.200/32 could not be set up in the node's namespace.
    #[error("cannot set up 100.100.100.200 on lo in {path}: {source}")]
    Setup { path: PathBuf, source: DriverError },
    /// Port 80 of 100.100.100.200 is taken in the namespace (another shim for the same node?).
    #[error("cannot listen on 100.100.100.200:80 in {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
}

/// A running metadata service.
#[derive(Debug)]
pub struct MetadataServer {
    netns: PathBuf,
    local: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// What every request handler shares.
#[derive(Clone)]
struct Shared {
    /// The node's latest config, published by the reconcile.
    config: watch::Receiver<Option<Arc<pb::NodeConfig>>>,
    /// A `std` mutex: it is held only for one synchronous [`routes::respond`], never across an
    /// await, so a tokio mutex would buy nothing.
    tokens: Arc<Mutex<Tokens>>,
}

impl MetadataServer {
    /// Sets up the address in the namespace at `netns`, binds, and starts serving on the current
    /// tokio runtime, answering from whatever `config` holds at the time of each request.
    pub fn start(
        netns: &Path,
        config: watch::Receiver<Option<Arc<pb::NodeConfig>>>,
        opts: MetadataOptions,
    ) -> Result<MetadataServer, MetadataError> {
        let path = netns.to_path_buf();
        let listener = run_in(netns, || {
            let nl = Netlink::open()?;
            let lo = nl.index_of("lo")?;
            // A fresh `ip netns add` namespace has lo down, and an address on a down lo cannot
            // be reached even from inside.
            nl.set_up(lo, "lo", true)?;
            // Scope host: the node answers on it but never sends from it. With a global scope
            // the kernel picks it as the source of traffic that leaves with no address of its
            // own (a masqueraded packet on an address-less trunk, a node probing a pod), and
            // on a real ECS instance the address is not local at all.
            nl.ensure_host_address(lo, "lo", METADATA_IP, 32)?;
            Ok(std::net::TcpListener::bind((METADATA_IP, METADATA_PORT)))
        })
        .map_err(|source| MetadataError::Setup { path: path.clone(), source })?
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(|source| MetadataError::Bind { path: path.clone(), source })?;
        let local = listener.local_addr().map_err(|source| MetadataError::Bind { path: path.clone(), source })?;
        let shared = Shared { config, tokens: Arc::new(Mutex::new(Tokens::new(opts.token_required, minter()))) };
        let app = Router::new().fallback(handle).with_state(shared);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let until = async move {
                let _ = stopped.await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(until).await {
                tracing::error!(error = %e, "the metadata service stopped");
            }
        });
        tracing::info!(netns = %path.display(), token_required = opts.token_required, "metadata service on http://100.100.100.200/");
        Ok(MetadataServer { netns: path, local, stop: Some(stop), task })
    }

    /// `100.100.100.200:80`, inside the namespace.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops serving (requests in flight get [`DRAIN`] to finish) and removes the address.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(DRAIN, &mut self.task).await.is_err() {
            self.task.abort();
        }
        let netns = self.netns.clone();
        let removed = tokio::task::spawn_blocking(move || {
            run_in(&netns, || {
                let nl = Netlink::open()?;
                let lo = nl.index_of("lo")?;
                nl.remove_address(lo, "lo", METADATA_IP, 32)
            })
        })
        .await;
        match removed {
            Ok(Ok(())) => tracing::info!(netns = %self.netns.display(), "metadata service stopped, address removed"),
            // The namespace went first (a lab torn down in another order): nothing to remove.
            Ok(Err(DriverError::OpenNetns { .. })) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not remove 100.100.100.200 from lo"),
            Err(e) => tracing::warn!(error = %e, "metadata cleanup task failed"),
        }
    }
}

/// A server dropped without [`MetadataServer::shutdown`] (a shim that failed to start after it)
/// stops serving at once; its address stays on `lo`, where the next shim finds it.
impl Drop for MetadataServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// Every method and path: the HTTP request reduced to a [`Request`], answered by the pure part.
async fn handle(State(s): State<Shared>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    // A header that is not text is still a header that was sent: an invalid token or TTL.
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or(""));
    let req = Request {
        method: routes::Method::parse(method.as_str()),
        path: uri.path(),
        token: header(TOKEN_HEADER),
        token_ttl: header(TOKEN_TTL_HEADER),
    };
    let config = s.config.borrow().clone();
    let r = {
        let mut tokens = s.tokens.lock().unwrap_or_else(|p| p.into_inner());
        routes::respond(config.as_deref(), &req, &mut tokens, Instant::now())
    };
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static(r.content_type))], r.body).into_response()
}

/// New tokens: 256 bits, hex. Each is SipHash of a counter under the process's random hash keys
/// (std seeds `RandomState` from the OS), which no other process can predict; that is all a
/// token must be here, and it needs no extra dependency or fallible call.
fn minter() -> impl FnMut() -> String + Send + 'static {
    let keys = RandomState::new();
    let mut n: u64 = 0;
    move || {
        n += 1;
        (0..4u64)
            .map(|i| {
                let mut h = keys.build_hasher();
                h.write_u64(n);
                h.write_u64(i);
                format!("{:016x}", h.finish())
            })
            .collect()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn tokens_are_long_and_distinct() {
        let mut mint = minter();
        let (a, b) = (mint(), mint());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_ne!(minter()(), minter()(), "each store has its own keys");
    }
}
