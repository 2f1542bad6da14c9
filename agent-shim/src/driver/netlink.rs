//! rtnetlink calls for the shim's devices, made from the thread that is inside the target
//! namespace (see [`super::netns`]): link attributes (MAC, MTU, GSO limits, queue length, up),
//! rename, the IPv4 address and default route of a NIC, the per-device IPv6 switch, a plain
//! address on a link (the metadata service's 100.100.100.200/32 on `lo`), and the listings and
//! route removal the underlay step ([`crate::underlay`]) observes and acts with.
//!
//! Each call is the `ip` command written next to it, and the `ensure_*` ones are idempotent so a
//! reconcile can repeat them. The netlink socket is driven by a current-thread tokio runtime
//! owned by [`Netlink`], private to the namespace thread: rtnetlink is async, but nothing here
//! may run on the shim's main runtime (its threads are in the host namespace). It must not
//! touch links it was not named.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressScope};
use rtnetlink::packet_route::link::{LinkAttribute, LinkInfo};
use rtnetlink::{LinkUnspec, RouteMessageBuilder};

use super::DriverError;
use crate::view::{Ipv4Setup, Ipv6Setup, Mac};

/// A GSO super-frame the kernel hands a TAP, plus the 18-byte tagged Ethernet header, the
/// 24-byte Geneve header with its virtio-net option, and UDP/IP, must fit one UDP datagram on
/// loopback (65 507 bytes of payload), or the relay would have to drop it. 65 000 leaves room.
pub const GSO_MAX_SIZE: u32 = 65_000;
/// Frames the kernel queues for the relay before dropping (`ip link set … txqueuelen`); the
/// tun default of 500 overflows under TCP bursts while the relay thread is descheduled.
pub const TX_QUEUE_LEN: u32 = 2000;

/// The attributes a shim device gets, set in one `RTM_SETLINK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkAttrs {
    pub mac: Mac,
    pub mtu: u32,
}

/// A link as `ip -d link show` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEntry {
    pub index: u32,
    pub name: String,
    /// The driver kind (`veth`, `tun` for TAP and TUN devices, …); `None` for a physical NIC
    /// or loopback.
    pub kind: Option<String>,
    pub mac: Option<Mac>,
}

/// An IPv4 address as `ip -4 addr show` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrEntry {
    pub index: u32,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
}

/// A netlink socket in the calling thread's namespace. The CNI plugin's operations on it are in
/// [`crate::cni::net`].
pub struct Netlink {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) handle: rtnetlink::Handle,
}

pub(crate) fn nl_err(op: &'static str, link: &str, e: rtnetlink::Error) -> DriverError {
    let source = match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => io::Error::other(other.to_string()),
    };
    DriverError::Netlink { op, link: link.to_string(), source }
}

pub(crate) fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

impl Netlink {
    /// Opens a socket in the namespace of the calling thread.
    pub fn open() -> Result<Netlink, DriverError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().map_err(DriverError::Runtime)?;
        let handle = rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection().map_err(DriverError::Runtime)?;
            tokio::spawn(conn);
            Ok::<_, DriverError>(handle)
        })?;
        Ok(Netlink { rt, handle })
    }

    /// `ip link show NAME` → its ifindex, if it exists here.
    pub fn index(&self, name: &str) -> Result<Option<u32>, DriverError> {
        let h = self.handle.clone();
        let found =
            self.rt.block_on(async move { h.link().get().match_name(name.to_string()).execute().try_next().await });
        match found {
            Ok(msg) => Ok(msg.map(|m| m.header.index)),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(nl_err("get", name, e)),
        }
    }

    /// `ip -d link show`: every link of the namespace.
    pub fn links(&self) -> Result<Vec<LinkEntry>, DriverError> {
        let h = self.handle.clone();
        let msgs: Vec<_> = self
            .rt
            .block_on(async move { h.link().get().execute().try_collect().await })
            .map_err(|e| nl_err("get", "all", e))?;
        Ok(msgs
            .into_iter()
            .map(|m| {
                let mut l = LinkEntry { index: m.header.index, name: String::new(), kind: None, mac: None };
                for a in m.attributes {
                    match a {
                        LinkAttribute::IfName(n) => l.name = n,
                        LinkAttribute::Address(m) if m.len() == 6 => {
                            l.mac = Some(Mac([m[0], m[1], m[2], m[3], m[4], m[5]]));
                        }
                        LinkAttribute::LinkInfo(infos) => {
                            l.kind = infos.iter().find_map(|i| match i {
                                LinkInfo::Kind(k) => Some(k.to_string()),
                                _ => None,
                            });
                        }
                        _ => {}
                    }
                }
                l
            })
            .collect())
    }

    /// `ip -4 addr show`: every IPv4 address of the namespace.
    pub fn ipv4_addrs(&self) -> Result<Vec<AddrEntry>, DriverError> {
        let h = self.handle.clone();
        let msgs: Vec<_> = self
            .rt
            .block_on(async move { h.address().get().execute().try_collect().await })
            .map_err(|e| nl_err("addr get", "all", e))?;
        Ok(msgs
            .into_iter()
            .flat_map(|m| {
                let (index, prefix_len) = (m.header.index, m.header.prefix_len);
                m.attributes.into_iter().filter_map(move |a| match a {
                    AddressAttribute::Address(IpAddr::V4(address)) => Some(AddrEntry { index, address, prefix_len }),
                    _ => None,
                })
            })
            .collect())
    }

    /// `ip route del DST/PREFIX [via GW] dev INDEX table TABLE`; a route already gone is fine.
    pub fn delete_route(
        &self,
        dst: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
        index: u32,
        table: u32,
    ) -> Result<(), DriverError> {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, prefix)
            .output_interface(index)
            .table_id(table);
        if let Some(gw) = gateway {
            b = b.gateway(gw);
        }
        let msg = b.build();
        let h = self.handle.clone();
        match self.rt.block_on(async move { h.route().del(msg).execute().await }) {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(nl_err("route del", &format!("{dst}/{prefix}"), e)),
        }
    }

    /// `ip link show NAME` → its ifindex; a missing link is an error.
    pub fn index_of(&self, name: &str) -> Result<u32, DriverError> {
        self.index(name)?.ok_or_else(|| DriverError::NoSuchLink(name.to_string()))
    }

    /// `ip link set NAME address MAC mtu MTU txqueuelen 2000 gso_max_size 65000
    /// gso_ipv4_max_size 65000`.
    pub fn set_attrs(&self, index: u32, name: &str, a: LinkAttrs) -> Result<(), DriverError> {
        let msg = LinkUnspec::new_with_index(index)
            .address(a.mac.0.to_vec())
            .mtu(a.mtu)
            .txqueuelen(TX_QUEUE_LEN)
            .append_extra_attribute(LinkAttribute::GsoMaxSize(GSO_MAX_SIZE))
            .append_extra_attribute(LinkAttribute::GsoIpv4MaxSize(GSO_MAX_SIZE))
            .build();
        let h = self.handle.clone();
        self.rt.block_on(async move { h.link().set(msg).execute().await }).map_err(|e| nl_err("set", name, e))
    }

    /// `ip link set NAME up|down`.
    pub fn set_up(&self, index: u32, name: &str, up: bool) -> Result<(), DriverError> {
        let b = LinkUnspec::new_with_index(index);
        let msg = if up { b.up() } else { b.down() }.build();
        let h = self.handle.clone();
        self.rt.block_on(async move { h.link().set(msg).execute().await }).map_err(|e| nl_err("set up/down", name, e))
    }

    /// `ip link set FROM name TO` (the link must be down).
    pub fn rename(&self, index: u32, from: &str, to: &str) -> Result<(), DriverError> {
        let msg = LinkUnspec::new_with_index(index).name(to).build();
        let h = self.handle.clone();
        self.rt.block_on(async move { h.link().set(msg).execute().await }).map_err(|e| nl_err("rename", from, e))
    }

    /// Moves the link's DHCP-like setup from `old` to `want`:
    /// `ip addr del OLD dev NAME` (only the address the shim configured before, never one someone
    /// else added), then `ip addr replace ADDR/LEN dev NAME; ip route replace default via GW dev
    /// NAME`. Either side may be `None` (nothing configured before / remove it).
    pub fn ensure_ipv4(
        &self,
        index: u32,
        name: &str,
        old: Option<Ipv4Setup>,
        want: Option<Ipv4Setup>,
    ) -> Result<(), DriverError> {
        let old = old.map(|o| (IpAddr::V4(o.address), o.prefix_len));
        let want = want.map(|w| (IpAddr::V4(w.address), w.prefix_len, w.gateway.map(IpAddr::V4)));
        self.ensure_setup(index, name, old, want)
    }

    /// The same for IPv6 (`ip -6 addr …`, `ip -6 route replace default …`).
    pub fn ensure_ipv6(
        &self,
        index: u32,
        name: &str,
        old: Option<Ipv6Setup>,
        want: Option<Ipv6Setup>,
    ) -> Result<(), DriverError> {
        let old = old.map(|o| (IpAddr::V6(o.address), o.prefix_len));
        let want = want.map(|w| (IpAddr::V6(w.address), w.prefix_len, w.gateway.map(IpAddr::V6)));
        self.ensure_setup(index, name, old, want)
    }

    /// [`Netlink::ensure_ipv4`] for either family: `old` is (address, length), `want` also the
    /// default route's gateway.
    fn ensure_setup(
        &self,
        index: u32,
        name: &str,
        old: Option<(IpAddr, u8)>,
        want: Option<(IpAddr, u8, Option<IpAddr>)>,
    ) -> Result<(), DriverError> {
        let h = self.handle.clone();
        self.rt.block_on(async move {
            if let Some((addr, len)) = old.filter(|o| want.is_none_or(|(a, l, _)| (a, l) != *o)) {
                del_address(&h, index, name, addr, len).await?;
            }
            let Some((addr, len, gateway)) = want else { return Ok(()) };
            h.address()
                .add(index, addr, len)
                .replace()
                .execute()
                .await
                .map_err(|e| nl_err("address replace", name, e))?;
            let route = match gateway {
                None => return Ok(()),
                Some(IpAddr::V4(gw)) => RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
                    .gateway(gw)
                    .output_interface(index)
                    .build(),
                Some(IpAddr::V6(gw)) => RouteMessageBuilder::<Ipv6Addr>::new()
                    .destination_prefix(Ipv6Addr::UNSPECIFIED, 0)
                    .gateway(gw)
                    .output_interface(index)
                    .build(),
            };
            h.route().add(route).replace().execute().await.map_err(|e| nl_err("default route replace", name, e))
        })
    }

    /// `ip addr replace ADDR/LEN dev NAME`: idempotent, an address that is already there stays.
    pub fn ensure_address(&self, index: u32, name: &str, addr: Ipv4Addr, prefix_len: u8) -> Result<(), DriverError> {
        self.ensure_address_scoped(index, name, addr, prefix_len, AddressScope::Universe)
    }

    /// `ip addr replace ADDR/LEN dev NAME scope host`: an address the namespace answers on but
    /// never picks as the source of what it sends elsewhere (the instance metadata service's).
    pub fn ensure_host_address(
        &self,
        index: u32,
        name: &str,
        addr: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), DriverError> {
        self.ensure_address_scoped(index, name, addr, prefix_len, AddressScope::Host)
    }

    fn ensure_address_scoped(
        &self,
        index: u32,
        name: &str,
        addr: Ipv4Addr,
        prefix_len: u8,
        scope: AddressScope,
    ) -> Result<(), DriverError> {
        let h = self.handle.clone();
        self.rt
            .block_on(async move {
                let mut req = h.address().add(index, IpAddr::V4(addr), prefix_len).replace();
                req.message_mut().header.scope = scope;
                req.execute().await
            })
            .map_err(|e| nl_err("address replace", name, e))
    }

    /// `ip addr del ADDR/LEN dev NAME`; an address that is not there is fine.
    pub fn remove_address(&self, index: u32, name: &str, addr: Ipv4Addr, prefix_len: u8) -> Result<(), DriverError> {
        let h = self.handle.clone();
        self.rt.block_on(del_address(&h, index, name, IpAddr::V4(addr), prefix_len))
    }
}

/// `ip addr del ADDR/LEN dev NAME`: exactly that address and length, and one already gone (with
/// the routes through it) is fine.
async fn del_address(
    h: &rtnetlink::Handle,
    index: u32,
    name: &str,
    addr: IpAddr,
    prefix_len: u8,
) -> Result<(), DriverError> {
    let current: Vec<_> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .set_address_filter(addr)
        .execute()
        .try_collect()
        .await
        .map_err(|e| nl_err("address get", name, e))?;
    for msg in current.into_iter().filter(|m| m.header.prefix_len == prefix_len) {
        if let Err(e) = h.address().del(msg).execute().await
            && errno_of(&e) != Some(libc::EADDRNOTAVAIL)
        {
            return Err(nl_err("address del", name, e));
        }
    }
    Ok(())
}

/// IPv6 on, configured statically as ECS's DHCPv6 would: no router advertisements accepted, no
/// address autoconfiguration, no duplicate address detection (the VPC owns every address, and
/// the fabric leaves DAD unanswered, so it would only delay the address by a second). Written
/// before `disable_ipv6=0`, so that nothing is sent in between. A kernel without IPv6 has no
/// such files: that is an error here, since the VPC gave the NIC an IPv6 address.
pub fn enable_ipv6_static(name: &str) -> Result<(), DriverError> {
    for (key, value) in [("accept_ra", b"0"), ("autoconf", b"0"), ("accept_dad", b"0"), ("disable_ipv6", b"0")] {
        let path = format!("/proc/sys/net/ipv6/conf/{name}/{key}");
        std::fs::write(&path, value).map_err(|source| DriverError::Sysctl { path, source })?;
    }
    Ok(())
}

/// `sysctl -w net.ipv6.conf.NAME.disable_ipv6=1` in the calling thread's namespace. The VPC is
/// IPv4 here, and a TAP with IPv6 on sends router solicitations and DAD probes that the fabric
/// would only count as drops. A kernel without IPv6 has no such file, which is fine.
pub fn disable_ipv6(name: &str) -> Result<(), DriverError> {
    // /proc/sys/net resolves against the namespace of the thread that opens it.
    let path = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    match std::fs::write(&path, b"1") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DriverError::Sysctl { path, source }),
    }
}
