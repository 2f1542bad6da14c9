//! The API's listeners, plain and TLS: how connections are accepted, bounded and timed out, so
//! that a port facing a network cannot be held by clients that connect and never finish.
//!
//! Every connection (HTTP/1.1 or HTTP/2, sniffed; gRPC and the OpenAPI endpoint alike) lives
//! under these rules ([`Limits`]):
//!
//! - at most `max_connections` at once; one more is accepted and closed at once, so that it
//!   costs a descriptor for a moment, not for as long as it likes (the default leaves half of
//!   the process's descriptor limit to everything else);
//! - the TLS handshake and the first request's head must arrive within `header_timeout` of the
//!   accept (an HTTP/2 preface with no request, half a header line, silence: all the same);
//!   later HTTP/1.1 heads get the same time from hyper's own header timer;
//! - a request must arrive whole and be answered (the head of the answer; a stream such as
//!   WatchNode then flows for as long as it likes) within `request_timeout`: a body sent byte by
//!   byte is cut off with `408 RequestTimeout` (OpenAPI) or `DEADLINE_EXCEEDED` (gRPC);
//! - a connection with no request in flight for `idle_timeout` is asked to close (HTTP/2
//!   GOAWAY, which clients such as tonic's channels follow by reconnecting when they next call);
//! - when the server stops, every connection is asked to close, given [`DRAIN_TIMEOUT`], and then
//!   dropped.
//!
//! A connection asked to close gets [`GRACE`] to finish what it is writing, then it is dropped.
//! Must not: know about actions, signatures or the model; it moves requests to the router and
//! answers to the peer, and decides only how long that may take.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::error::ApiError;

/// How long open connections get to finish when the server stops.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection asked to close may take to do so.
const GRACE: Duration = Duration::from_secs(1);

/// What one connection may take (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: default_max_connections(),
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// 1024, or half the process's soft limit on open files when that is lower: a flood of
/// connections must leave descriptors for the data directory, the fabric and the connections
/// that are let in.
pub fn default_max_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("Max open files"))?;
        line.trim_start_matches("Max open files").split_whitespace().next()?.parse::<usize>().ok()
    });
    match soft {
        Some(n) => (n / 2).clamp(16, 1024),
        None => 1024,
    }
}

/// Serve `app` on `listener` (over TLS with `tls`) under `limits` until `shutdown` completes,
/// then close every connection (see the module docs).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    // Pings find peers that vanished without closing (a node host powered off): their streams
    // (WatchNode) would otherwise count as in flight forever.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let mut last_refusal_warning: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Dropping the stream closes it: the client learns at once instead of waiting.
            if last_refusal_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                tracing::warn!(%peer, max = limits.max_connections, "connection limit reached; refusing connections");
                last_refusal_warning = Some(Instant::now());
            }
            continue;
        };
        let (builder, app, tls, stopping) = (builder.clone(), app.clone(), tls.clone(), stopping.clone());
        connections.spawn(async move {
            connection(tcp, peer, tls, builder, app, limits, stopping).await;
            drop(slot);
        });
    }
    drop(listener);
    stop.send_replace(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async { while connections.join_next().await.is_some() {} });
    if drained.await.is_err() {
        tracing::debug!(left = connections.len(), "connections still open after the drain timeout; dropping them");
        connections.shutdown().await;
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
    app: axum::Router,
    limits: Limits,
    stopping: watch::Receiver<bool>,
) {
    // Answers must leave at once: without TCP_NODELAY, a reply that is ready a moment after the
    // request (any call that waits for the model thread's commit) sits behind Nagle's algorithm
    // until the client's delayed ACK, 40 ms later.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY");
    }
    let first_request_by = Instant::now() + limits.header_timeout;
    match tls {
        None => drive(tcp, peer, builder, app, limits, first_request_by, stopping).await,
        Some(acceptor) => match tokio::time::timeout_at(first_request_by, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => drive(tls, peer, builder, app, limits, first_request_by, stopping).await,
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        },
    }
}

/// Serve one connection, watching over it: the first request's deadline, idleness, shutdown.
async fn drive<I>(
    io: I,
    peer: SocketAddr,
    builder: auto::Builder<TokioExecutor>,
    app: axum::Router,
    limits: Limits,
    first_request_by: Instant,
    mut stopping: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let service = tracked(app, activity.clone(), limits.request_timeout);
    let io = CloudRefusals { inner: io, pending: Vec::new() };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(conn);
    // Set once the connection was asked to close: by then it must be gone.
    let mut gone_by: Option<Instant> = None;
    let tick = (limits.header_timeout.min(limits.idle_timeout) / 4).clamp(Duration::from_millis(20), GRACE);
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stopping.wait_for(|s| *s), if gone_by.is_none() => {
                conn.as_mut().graceful_shutdown();
                gone_by = Some(Instant::now() + GRACE);
            }
            () = tokio::time::sleep(tick) => {
                let now = Instant::now();
                if gone_by.is_some_and(|t| now >= t) {
                    return;
                }
                let why = if activity.requests() == 0 && now >= first_request_by {
                    Some("no request within the header timeout")
                } else if activity.idle_for(now) >= Some(limits.idle_timeout) {
                    Some("idle")
                } else {
                    None
                };
                if let (Some(why), None) = (why, gone_by) {
                    tracing::debug!(%peer, why, "closing the connection");
                    conn.as_mut().graceful_shutdown();
                    gone_by = Some(now + GRACE);
                }
            }
        }
    }
}

/// The connection's bytes, with hyper's own refusals put in the cloud's words.
///
/// A request hyper cannot parse (a URI or a head too long, bytes a header may not hold) never
/// reaches the router: hyper answers it itself, `400`/`414`/`431` with an empty body, and closes
/// the connection. Clients of the cloud read `Code` from a JSON body whatever the status, so
/// that answer is swapped, as it is written, for the cloud's error shape with the same status.
/// hyper's refusal is told apart from the router's answers by what it lacks: every answer of the
/// router that carries a status like these has a body and a `content-type`.
struct CloudRefusals<I> {
    inner: I,
    /// Bytes of a swapped answer not yet written (the caller was told they were).
    pending: Vec<u8>,
}

impl<I: AsyncWrite + Unpin> CloudRefusals<I> {
    /// The cloud-shaped answer for `head`, if it is one of hyper's refusals.
    fn swap(head: &[u8]) -> Option<Vec<u8>> {
        let text = std::str::from_utf8(head.get(..head.len().min(512))?).ok()?.to_ascii_lowercase();
        let (code, message) = if text.starts_with("http/1.1 400 ") {
            ("BadRequest", "The request could not be read: its request line or a header is malformed.")
        } else if text.starts_with("http/1.1 414 ") {
            ("RequestURITooLong", "The request's URI is too long; send the parameters in a form body.")
        } else if text.starts_with("http/1.1 431 ") {
            ("RequestHeaderFieldsTooLarge", "The request's header fields are too large.")
        } else {
            return None;
        };
        if !text.contains("content-length: 0\r\n") || text.contains("content-type") {
            return None;
        }
        let status = text[9..12].parse().ok()?;
        // The cloud documents no codes for requests its gateway cannot read; these name the
        // HTTP status, which is what such a client can act on.
        let e = ApiError::new(status, code, message);
        Some(e.to_http1_bytes(&crate::grpc::request_id(), "enifab", "Ecs"))
    }

    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.pending.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for CloudRefusals<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for CloudRefusals<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.drain(cx))?;
        if let Some(answer) = Self::swap(buf) {
            self.pending = answer;
            // Told written now; `drain` finishes it before anything else goes out.
            let _ = self.drain(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.drain(cx))?;
        if let Some(answer) = bufs.iter().find(|b| !b.is_empty()).and_then(|first| Self::swap(first)) {
            self.pending = answer;
            let _ = self.drain(cx)?;
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a connection is doing: requests seen, requests in flight (until their answer's body is
/// done), and since when none is.
#[derive(Debug)]
struct Activity {
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            requests: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// How long nothing has been in flight, as of `now`; `None` while something is.
    fn idle_for(&self, now: Instant) -> Option<Duration> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        Some(now.saturating_duration_since(*self.idle_since.lock().unwrap_or_else(|p| p.into_inner())))
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// One request in flight; it ends when this is dropped (with the answer's body).
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An answer's body that keeps its request in flight until it is done.
struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The router as a connection's service: each request counted in flight, and cut off when it
/// is not answered within `timeout`.
fn tracked<B>(
    app: axum::Router,
    activity: Arc<Activity>,
    timeout: Duration,
) -> impl tower::Service<
    axum::http::Request<B>,
    Response = Response,
    Error = Infallible,
    Future = impl Future<Output = Result<Response, Infallible>> + Send,
> + Clone
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    tower::service_fn(move |req: axum::http::Request<B>| {
        let (app, in_flight) = (app.clone(), activity.begin());
        async move {
            let (grpc, http1) = (is_grpc(req.headers()), req.version() <= axum::http::Version::HTTP_11);
            match tokio::time::timeout(timeout, app.oneshot(req.map(Body::new))).await {
                Ok(Ok(response)) => Ok(response.map(|body| Body::new(TrackedBody { body, _in_flight: in_flight }))),
                Ok(Err(never)) => match never {},
                Err(_) => Ok(too_slow(grpc, http1, timeout)),
            }
        }
    })
}

/// Whether a request is gRPC (by its content type, as gRPC defines it).
pub fn is_grpc(headers: &axum::http::HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with("application/grpc"))
}

/// The answer to a request that did not arrive (or was not answered) in time. Over HTTP/1.1 the
/// connection closes after it, since what is left of the request on the wire cannot be read as
/// the next one; over HTTP/2 only that stream is reset.
fn too_slow(grpc: bool, http1: bool, timeout: Duration) -> Response {
    let message = format!("The request was not received and answered within {} s.", timeout.as_secs_f64());
    let mut response = if grpc {
        tonic::Status::deadline_exceeded(message).into_http::<Body>().into_response()
    } else {
        ApiError::new(408, "RequestTimeout", message).into_response(&crate::grpc::request_id(), "enifab", "Ecs")
    };
    if http1 {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_connection_limit_leaves_descriptors_spare() {
        let n = default_max_connections();
        assert!((16..=1024).contains(&n), "{n}");
    }

    #[test]
    fn a_request_in_flight_is_not_idle() {
        let a = Arc::new(Activity::new());
        let now = Instant::now();
        assert_eq!(a.requests(), 0);
        let r = a.begin();
        assert_eq!((a.requests(), a.idle_for(now)), (1, None));
        drop(r);
        assert!(a.idle_for(Instant::now() + Duration::from_secs(2)).unwrap() >= Duration::from_secs(1));
    }
}
