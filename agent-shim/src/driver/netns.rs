//! Running code inside a network namespace named by a path (`/run/netns/NAME` as `ip netns add`
//! makes it, or `/proc/<pid>/ns/net` as a container runtime hands it to a CNI plugin).
//!
//! [`run_in`] spawns a dedicated OS thread, enters the namespace with `setns(CLONE_NEWNET)`, runs
//! the closure and exits: namespace membership is per thread, so a thread that has moved must
//! never go back to a pool. It must not be called with work that outlives the closure (a fd
//! opened inside stays bound to the namespace, which is the point, but the thread does not).

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
