//! TAP devices that look like ECS NICs from inside a namespace: an Ethernet device with the
//! ENI's MAC, MTU 1500, up, IPv6 off, and — for the primary ENI — its address and default route.
//!
//! The TAP is opened with `IFF_VNET_HDR` (10-byte `virtio_net_hdr` before every frame) and
//! `TUNSETOFFLOAD` CSUM|TSO4|TSO6|TSO_ECN, so the kernel hands the relay whole TSO super-frames
//! with partial checksums and accepts them back the same way (the 10× lever of ARCHITECTURE.md
//! §3). Its `gso_max_size` is capped ([`super::netlink::GSO_MAX_SIZE`]) so that every super-frame
//! still fits one Geneve datagram. The device is not persistent: it exists exactly as long as
//! the [`Tap`] (its fd) does, which is how the shim removes devices — by dropping them — and why
//! nothing is left behind when the shim dies.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use super::DriverError;
use super::netlink::{LinkAttrs, Netlink, disable_ipv6, enable_ipv6_static};
use super::netns::{self, NetnsId};
use crate::sys;
use crate::view::{Ipv4Setup, Ipv6Setup, Mac};

/// How a TAP should look when created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapSetup {
    pub name: String,
    pub mac: Mac,
    pub mtu: u32,
    /// DHCP-like configuration (primary ENI only); `None` leaves the device without address.
    pub ipv4: Option<Ipv4Setup>,
    /// The same for IPv6; `None` turns IPv6 off on the device.
    pub ipv6: Option<Ipv6Setup>,
}

/// An open TAP device. Dropping it removes the device from its namespace.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    ifindex: u32,
    netns: NetnsId,
}

impl Tap {
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The namespace the device was created in.
    pub fn netns(&self) -> NetnsId {
        self.netns
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Creates the TAP in the namespace at `netns_path` and configures it:
///
/// ```text
/// ip tuntap add NAME mode tap vnet_hdr          (not persistent: bound to the returned fd)
/// sysctl net.ipv6.conf.NAME.disable_ipv6=1
/// ip link set NAME address MAC mtu MTU txqueuelen 2000 gso_max_size 65000 up
/// ip addr replace IP/PREFIX dev NAME; ip route replace default via GW dev NAME   (primary)
/// ```
///
/// On any error the half-made device is removed (its fd is dropped).
pub fn create(netns_path: &Path, setup: &TapSetup) -> Result<Tap, DriverError> {
    let netns = netns::id_of(netns_path)?;
    let setup = setup.clone();
    netns::run_in(netns_path, move || {
        let name = &setup.name;
        let fd = sys::open_tap(name).map_err(|source| DriverError::Tap { name: name.clone(), source })?;
        // The kernel may have been given a name it changed (a `%d` pattern); use its own.
        let actual = sys::tap_name(fd.as_fd()).map_err(|source| DriverError::Tap { name: name.clone(), source })?;
        let nl = Netlink::open()?;
        let ifindex = nl.index_of(&actual)?;
        // Before `up`, so that no IPv6 router solicitation ever leaves: IPv6 off, or on with
        // its address and route set statically (no RA, no autoconf, no DAD).
        match setup.ipv6 {
            None => disable_ipv6(&actual)?,
            Some(_) => enable_ipv6_static(&actual)?,
        }
        nl.set_attrs(ifindex, &actual, LinkAttrs { mac: setup.mac, mtu: setup.mtu })?;
        nl.set_up(ifindex, &actual, true)?;
        if setup.ipv4.is_some() {
            nl.ensure_ipv4(ifindex, &actual, None, setup.ipv4)?;
        }
        if setup.ipv6.is_some() {
            nl.ensure_ipv6(ifindex, &actual, None, setup.ipv6)?;
        }
        Ok(Tap { fd, ifindex, netns })
    })
}

/// Renames the TAP (`ip link set FROM down; ip link set FROM name TO; ip link set TO up`) and
/// puts its IPv4 setup back (taking a link down drops its routes). A refused rename (the name
/// is taken by a link we did not make) leaves the TAP up under its old name, as it was, so a
/// retry does not cut the node off in the meantime.
pub fn rename(
    netns_path: &Path,
    tap: &Tap,
    from: &str,
    to: &str,
    ipv4: Option<Ipv4Setup>,
    ipv6: Option<Ipv6Setup>,
) -> Result<(), DriverError> {
    let (index, from, to) = (tap.ifindex, from.to_string(), to.to_string());
    netns::run_in(netns_path, move || {
        let nl = Netlink::open()?;
        let restore = |name: &str| {
            nl.set_up(index, name, true)?;
            if ipv4.is_some() {
                // The address survived; the default route went down with the link.
                nl.ensure_ipv4(index, name, None, ipv4)?;
            }
            if ipv6.is_some() {
                // IPv6 addresses go with the link too (`keep_addr_on_down` is off by default).
                nl.ensure_ipv6(index, name, None, ipv6)?;
            }
            Ok::<(), DriverError>(())
        };
        nl.set_up(index, &from, false)?;
        if let Err(e) = nl.rename(index, &from, &to) {
            let _ = restore(&from);
            return Err(e);
        }
        restore(&to)
    })
}

/// Moves the TAP's IPv4 setup from `old` to `want` (see [`Netlink::ensure_ipv4`]).
pub fn ensure_ipv4(
    netns_path: &Path,
    tap: &Tap,
    name: &str,
    old: Option<Ipv4Setup>,
    want: Option<Ipv4Setup>,
) -> Result<(), DriverError> {
    let (index, name) = (tap.ifindex, name.to_string());
    netns::run_in(netns_path, move || Netlink::open()?.ensure_ipv4(index, &name, old, want))
}

/// Moves the TAP's IPv6 setup from `old` to `want`: on (statically, see
/// [`super::netlink::enable_ipv6_static`]) with the address and default route, or off.
pub fn ensure_ipv6(
    netns_path: &Path,
    tap: &Tap,
    name: &str,
    old: Option<Ipv6Setup>,
    want: Option<Ipv6Setup>,
) -> Result<(), DriverError> {
    let (index, name) = (tap.ifindex, name.to_string());
    netns::run_in(netns_path, move || {
        if want.is_none() {
            // Turning IPv6 off removes its addresses and routes with it.
            return disable_ipv6(&name);
        }
        enable_ipv6_static(&name)?;
        Netlink::open()?.ensure_ipv6(index, &name, old, want)
    })
}
