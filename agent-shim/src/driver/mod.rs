//! The shim's drivers: the only code that changes kernel state (network namespaces, TAP devices,
//! links, addresses, routes, sysctls). Everything here is imperative and idempotent where it can
//! be (`ensure_*`), and knows nothing about NodeConfig or the reconcile plan: it is told "make a
//! TAP named X with MAC Y in namespace Z" and does exactly that.
//!
//! Threading rule (DEPENDENCIES.md §4): a network namespace is per-thread state, so every
//! operation runs on a fresh OS thread that entered the namespace with `setns` ([`netns`]),
//! never on a tokio worker or a `spawn_blocking` thread, which are reused. Netlink sockets and
//! `/dev/net/tun` fds belong to the namespace they were opened in, so they are opened on that
//! thread too; the resulting TAP fd keeps working from any thread afterwards.
//!
//! - [`netns`]: run a closure inside a namespace given by path.
//! - [`netlink`]: rtnetlink calls (link attributes, addresses, routes) and the IPv6 sysctl.
//! - [`tap`]: [`tap::Tap`], a TAP device configured the way an ECS NIC appears in the guest.

pub mod netlink;
pub mod netns;
pub mod tap;

use std::io;
use std::path::PathBuf;

/// Why a driver operation failed. Every variant names the object it was working on.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The namespace file (for example `/run/netns/NAME`) could not be opened.
    #[error("cannot open network namespace {path}: {source}")]
    OpenNetns { path: PathBuf, source: io::Error },
    /// `setns(CLONE_NEWNET)` refused the namespace file (not a namespace, or no privilege).
    #[error("cannot enter network namespace {path}: {source}")]
    EnterNetns { path: PathBuf, source: nix::Error },
    /// The worker thread could not be started or panicked.
    #[error("namespace worker thread: {0}")]
    Thread(String),
    /// Opening `/dev/net/tun` or one of the TAP ioctls failed.
    #[error("cannot create TAP {name}: {source}")]
    Tap { name: String, source: io::Error },
    /// A netlink request was refused by the kernel.
    #[error("netlink {op} on {link}: {source}")]
    Netlink { op: &'static str, link: String, source: io::Error },
    /// A link the operation needs does not exist (any more).
    #[error("no link named {0} in the namespace")]
    NoSuchLink(String),
    /// Writing a `/proc/sys` knob failed.
    #[error("cannot set {path}: {source}")]
    Sysctl { path: String, source: io::Error },
    /// The per-thread runtime that drives the netlink socket could not be built.
    #[error("netlink runtime: {0}")]
    Runtime(io::Error),
    /// Another live process (another shim for the same node) holds the namespace.
    #[error(
        "another enifab-shim already runs for network namespace {path} (it holds @{name}; `ss -xlp | grep enifab` shows which)",
        name = netns::CLAIM_NAME
    )]
    Claimed { path: PathBuf },
    /// The namespace's claim socket could not be made.
    #[error("cannot claim network namespace {path}: {source}")]
    Claim { path: PathBuf, source: io::Error },
    /// A step that is not the kernel's to make was handed to a kernel driver.
    #[error("not a kernel step: {0}")]
    NotAKernelStep(String),
}
