//! Running code inside a network namespace named by a path (`/run/netns/NAME` as `ip netns add`
//! makes it, or `/proc/<pid>/ns/net` as a container runtime hands it to a CNI plugin).
//!
//! [`run_in`] spawns a dedicated OS thread, enters the namespace with `setns(CLONE_NEWNET)`, runs
//! the closure and exits: namespace membership is per thread, so a thread that has moved must
//! never go back to a pool. It must not be called with work that outlives the closure (a fd
//! opened inside stays bound to the namespace, which is the point, but the thread does not).
//!
//! [`claim`] makes a namespace one shim's: an ECS instance has one set of NICs, and two shims
//! fighting over one namespace would take each other's devices and frames.

use std::fs::File;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};

use super::DriverError;

/// Where `ip netns add NAME` mounts a namespace.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// `NAME` → `/run/netns/NAME`; anything with a `/` is taken as a path already.
pub fn path_of(name_or_path: &str) -> PathBuf {
    if name_or_path.contains('/') { PathBuf::from(name_or_path) } else { Path::new(NETNS_RUN_DIR).join(name_or_path) }
}

/// The identity of a namespace: the (device, inode) of its nsfs file, equal for every path that
/// names the same namespace (`/run/netns/x` and `/proc/<pid>/ns/net` of a process inside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
}

pub fn id_of(path: &Path) -> Result<NetnsId, DriverError> {
    let m = std::fs::metadata(path).map_err(|source| DriverError::OpenNetns { path: path.to_owned(), source })?;
    Ok(NetnsId { dev: m.dev(), ino: m.ino() })
}

/// Runs `f` on a new thread inside the namespace at `path` and returns its result.
pub fn run_in<T, F>(path: &Path, f: F) -> Result<T, DriverError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, DriverError> + Send + 'static,
{
    // Opened here, not on the thread, so that a bad path fails before a thread is spawned.
    let file = File::open(path).map_err(|source| DriverError::OpenNetns { path: path.to_owned(), source })?;
    let owned = path.to_owned();
    let handle = std::thread::Builder::new()
        .name("enifab-netns".into())
        .spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| DriverError::EnterNetns { path: owned, source })?;
            f()
        })
        .map_err(|e| DriverError::Thread(e.to_string()))?;
    handle.join().map_err(|_| DriverError::Thread("panicked".into()))?
}

/// The abstract Unix socket name a shim holds in its node namespace (`ss -xlp | grep enifab`
/// shows which process).
pub const CLAIM_NAME: &str = "enifab-shim.node";

/// A namespace held by this process until the value is dropped (or the process dies: the kernel
/// closes the socket, so a killed shim never leaves a stale claim behind).
#[derive(Debug)]
pub struct NetnsClaim {
    _socket: UnixListener,
}

/// Claims the namespace at `path` with an abstract Unix socket bound inside it: abstract names
/// are per network namespace, and exactly one socket can hold one. A holder that is still going
/// away (a shim killed a moment ago, whose fds the kernel is closing) is waited for up to `wait`.
pub fn claim(path: &Path, wait: Duration) -> Result<NetnsClaim, DriverError> {
    let deadline = Instant::now() + wait;
    loop {
        let owned = path.to_owned();
        let bound = run_in(path, move || {
            let addr = SocketAddr::from_abstract_name(CLAIM_NAME.as_bytes())
                .map_err(|source| DriverError::Claim { path: owned.clone(), source })?;
            Ok(UnixListener::bind_addr(&addr))
        })?;
        match bound {
            Ok(socket) => return Ok(NetnsClaim { _socket: socket }),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                return Err(DriverError::Claimed { path: path.to_owned() });
            }
            Err(source) => return Err(DriverError::Claim { path: path.to_owned(), source }),
        }
    }
}
