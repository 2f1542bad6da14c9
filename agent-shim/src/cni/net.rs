//! The CNI plugin's netlink driver: the `ensure_*` operations a pod's plan is made of (veth,
//! moves, addresses, neighbours, routes, rules) and their removal, each idempotent so ADD and
//! DEL can run twice, as methods of the shim's [`Netlink`] socket. A socket lives on a thread
//! that entered one namespace (see [`crate::driver::netns::run_in`]) and belongs to it.
//!
//! It knows nothing of ENIs or plans: it is told "route X via Y dev Z table T" and makes it so.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::neighbour::NeighbourState;
use rtnetlink::packet_route::route::{RouteAttribute, RouteScope};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute};
use rtnetlink::{IpVersion, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::driver::DriverError;
use crate::driver::netlink::{GSO_MAX_SIZE, Netlink, errno_of, nl_err};

/// A rule as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    pub priority: u32,
    pub from: Option<IpAddr>,
    pub to: Option<IpAddr>,
    pub table: u32,
}

/// A route as the kernel lists it, of either family (`A` = `IpAddr`) or of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo<A = IpAddr> {
    pub dst: A,
    pub prefix: u8,
    pub gateway: Option<A>,
    pub oif: Option<u32>,
    pub table: u32,
}

impl RouteInfo {
    /// The route, if it is an IPv4 one.
    pub fn v4(self) -> Option<RouteInfo<Ipv4Addr>> {
        let v4 = |ip: IpAddr| match ip {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        };
        let gateway = match self.gateway {
            Some(g) => Some(v4(g)?),
            None => None,
        };
        Some(RouteInfo { dst: v4(self.dst)?, prefix: self.prefix, gateway, oif: self.oif, table: self.table })
    }
}

/// A route message builder refused its input (an address of the wrong family).
fn invalid_route(link: &str, e: impl std::fmt::Display) -> DriverError {
    DriverError::Netlink {
        op: "route",
        link: link.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
    }
}

impl Netlink {
    /// The MAC of a link.
    pub fn mac(&self, name: &str) -> Result<[u8; 6], DriverError> {
        let h = self.handle.clone();
        let msg = self
            .rt
            .block_on(async move { h.link().get().match_name(name.to_string()).execute().try_next().await })
            .map_err(|e| nl_err("get", name, e))?
            .ok_or_else(|| DriverError::NoSuchLink(name.to_string()))?;
        msg.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(m) if m.len() == 6 => Some([m[0], m[1], m[2], m[3], m[4], m[5]]),
                _ => None,
            })
            .ok_or_else(|| DriverError::NoSuchLink(format!("{name} (no MAC)")))
    }

    /// `ip link add HOST type veth peer name PEER gso_max_size 65000 gso_ipv4_max_size 65000`,
    /// unless HOST exists. The GSO limit is the shim's TAP limit: a pod whose super-frames are
    /// bigger than the trunk TAP takes gets every one cut into MTU frames by the node kernel, a
    /// six-fold loss of throughput.
    pub fn ensure_veth(&self, host: &str, peer: &str) -> Result<(), DriverError> {
        if self.index(host)?.is_none() {
            let h = self.handle.clone();
            let r = self.rt.block_on(async move { h.link().add(LinkVeth::new(host, peer).build()).execute().await });
            match r {
                Ok(()) => {}
                Err(e) if errno_of(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(nl_err("add veth", host, e)),
            }
        }
        for name in [host, peer] {
            // The peer may already be in the pod (a repeated ADD): nothing to do for it here.
            let Some(index) = self.index(name)? else { continue };
            let h = self.handle.clone();
            let msg = LinkUnspec::new_with_index(index)
                .append_extra_attribute(LinkAttribute::GsoMaxSize(GSO_MAX_SIZE))
                .append_extra_attribute(LinkAttribute::GsoIpv4MaxSize(GSO_MAX_SIZE))
                .build();
            self.rt
                .block_on(async move { h.link().set(msg).execute().await })
                .map_err(|e| nl_err("set gso", name, e))?;
        }
        Ok(())
    }

    /// `ip link set NAME netns <fd>`; a link already gone from here has been moved before.
    pub fn move_to(&self, name: &str, netns_fd: RawFd) -> Result<(), DriverError> {
        let Some(index) = self.index(name)? else { return Ok(()) };
        let h = self.handle.clone();
        self.rt
            .block_on(async move {
                h.link().set(LinkUnspec::new_with_index(index).setns_by_fd(netns_fd).build()).execute().await
            })
            .map_err(|e| nl_err("set netns", name, e))
    }

    /// `ip link set FROM name TO up`; if TO exists already, just make sure it is up.
    pub fn rename_up(&self, from: &str, to: &str) -> Result<(), DriverError> {
        if self.index(to)?.is_some() {
            return self.set_up(self.index_of(to)?, to, true);
        }
        let index = self.index_of(from)?;
        let h = self.handle.clone();
        self.rt
            .block_on(async move {
                h.link().set(LinkUnspec::new_with_index(index).name(to.to_string()).up().build()).execute().await
            })
            .map_err(|e| nl_err("rename", from, e))
    }

    /// `ip link del NAME`, if it exists (a veth's peer goes with it).
    pub fn delete_link(&self, name: &str) -> Result<(), DriverError> {
        let Some(index) = self.index(name)? else { return Ok(()) };
        let h = self.handle.clone();
        match self.rt.block_on(async move { h.link().del(index).execute().await }) {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(nl_err("del", name, e)),
        }
    }

    /// `ip addr add IP/PREFIX dev NAME`, unless present.
    pub fn ensure_addr(&self, name: &str, ip: IpAddr, prefix: u8) -> Result<(), DriverError> {
        let index = self.index_of(name)?;
        let h = self.handle.clone();
        match self.rt.block_on(async move { h.address().add(index, ip, prefix).execute().await }) {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(nl_err("addr add", name, e)),
        }
    }

    /// The addresses of both families on a link, with prefixes.
    pub fn addrs(&self, name: &str) -> Result<Vec<(IpAddr, u8)>, DriverError> {
        let index = self.index_of(name)?;
        let h = self.handle.clone();
        let msgs: Vec<_> = self
            .rt
            .block_on(async move { h.address().get().set_link_index_filter(index).execute().try_collect().await })
            .map_err(|e| nl_err("addr get", name, e))?;
        Ok(msgs
            .into_iter()
            .flat_map(|m| {
                let prefix = m.header.prefix_len;
                m.attributes.into_iter().filter_map(move |a| match a {
                    rtnetlink::packet_route::address::AddressAttribute::Address(ip) => Some((ip, prefix)),
                    _ => None,
                })
            })
            .collect())
    }

    /// `ip neigh replace IP lladdr MAC dev NAME nud permanent`.
    pub fn replace_neigh(&self, name: &str, ip: IpAddr, mac: [u8; 6]) -> Result<(), DriverError> {
        let index = self.index_of(name)?;
        let h = self.handle.clone();
        self.rt
            .block_on(async move {
                h.neighbours()
                    .add(index, ip)
                    .link_layer_address(&mac)
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await
            })
            .map_err(|e| nl_err("neigh replace", name, e))
    }

    /// `ip [-6] route replace DST/PREFIX [via GW] dev NAME [scope link] [onlink] [table T]`; `via`
    /// is of `dst`'s family. An IPv6 route has no scope of its own.
    #[allow(clippy::too_many_arguments)]
    pub fn replace_route(
        &self,
        dst: IpAddr,
        prefix: u8,
        via: Option<IpAddr>,
        dev: &str,
        table: Option<u32>,
        onlink: bool,
    ) -> Result<(), DriverError> {
        let index = self.index_of(dev)?;
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst, prefix)
            .map_err(|e| invalid_route(dev, e))?
            .output_interface(index);
        b = match via {
            Some(gw) => b.gateway(gw).map_err(|e| invalid_route(dev, e))?,
            None if dst.is_ipv4() => b.scope(RouteScope::Link),
            None => b,
        };
        if let Some(t) = table {
            b = b.table_id(t);
        }
        if onlink {
            b = b.onlink();
        }
        let msg = b.build();
        let h = self.handle.clone();
        self.rt
            .block_on(async move { h.route().add(msg).replace().execute().await })
            .map_err(|e| nl_err("route replace", dev, e))
    }

    /// Every route of `table` (254 is main), both families.
    pub fn routes(&self, table: u32) -> Result<Vec<RouteInfo>, DriverError> {
        let mut out = Vec::new();
        for mut req in [RouteMessageBuilder::<Ipv4Addr>::new().build(), RouteMessageBuilder::<Ipv6Addr>::new().build()]
        {
            req.header.table = 0;
            let h = self.handle.clone();
            let unspecified = if req.header.address_family == rtnetlink::packet_route::AddressFamily::Inet6 {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            };
            let msgs: Vec<_> = self
                .rt
                .block_on(async move { h.route().get(req).execute().try_collect().await })
                .map_err(|e| nl_err("route get", "all", e))?;
            for m in msgs {
                let mut info = RouteInfo {
                    dst: unspecified,
                    prefix: m.header.destination_prefix_length,
                    gateway: None,
                    oif: None,
                    table: u32::from(m.header.table),
                };
                for a in &m.attributes {
                    match a {
                        RouteAttribute::Destination(d) => info.dst = route_address(d).unwrap_or(info.dst),
                        RouteAttribute::Gateway(g) => info.gateway = route_address(g),
                        RouteAttribute::Oif(i) => info.oif = Some(*i),
                        RouteAttribute::Table(t) => info.table = *t,
                        _ => {}
                    }
                }
                if info.table == table {
                    out.push(info);
                }
            }
        }
        Ok(out)
    }

    /// Remove every route of `table`.
    pub fn flush_table(&self, table: u32) -> Result<(), DriverError> {
        for r in self.routes(table)? {
            let mut b = RouteMessageBuilder::<IpAddr>::new()
                .destination_prefix(r.dst, r.prefix)
                .map_err(|e| invalid_route("table", e))?
                .table_id(table);
            if let Some(oif) = r.oif {
                b = b.output_interface(oif);
            }
            let msg = b.build();
            let h = self.handle.clone();
            match self.rt.block_on(async move { h.route().del(msg).execute().await }) {
                Ok(()) => {}
                Err(e) if errno_of(&e) == Some(libc::ESRCH) => {}
                Err(e) => return Err(nl_err("route del", "table", e)),
            }
        }
        Ok(())
    }

    /// Every rule, both families.
    pub fn rules(&self) -> Result<Vec<RuleInfo>, DriverError> {
        Ok(self
            .rule_messages()?
            .into_iter()
            .map(|m| {
                let mut r = RuleInfo { priority: 0, from: None, to: None, table: u32::from(m.header.table) };
                for a in &m.attributes {
                    match a {
                        RuleAttribute::Priority(p) => r.priority = *p,
                        RuleAttribute::Source(ip) => r.from = Some(*ip),
                        RuleAttribute::Destination(ip) => r.to = Some(*ip),
                        RuleAttribute::Table(t) => r.table = *t,
                        _ => {}
                    }
                }
                r
            })
            .collect())
    }

    fn rule_messages(&self) -> Result<Vec<rtnetlink::packet_route::rule::RuleMessage>, DriverError> {
        let mut all = Vec::new();
        for version in [IpVersion::V4, IpVersion::V6] {
            let h = self.handle.clone();
            let msgs: Vec<_> = self
                .rt
                .block_on(async move { h.rule().get(version).execute().try_collect().await })
                .map_err(|e| nl_err("rule get", "all", e))?;
            all.extend(msgs);
        }
        Ok(all)
    }

    /// `ip [-6] rule add [from IP/32|128] [to IP/32|128] lookup TABLE pref PRIORITY`, unless an
    /// identical rule exists (the kernel would happily add a duplicate). `from` and `to` are of
    /// one family.
    pub fn ensure_rule(
        &self,
        priority: u32,
        from: Option<IpAddr>,
        to: Option<IpAddr>,
        table: u32,
    ) -> Result<(), DriverError> {
        let want = RuleInfo { priority, from, to, table };
        if self.rules()?.contains(&want) {
            return Ok(());
        }
        let h = self.handle.clone();
        let mixed = || DriverError::Netlink {
            op: "rule add",
            link: "rule".into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "from and to of different families"),
        };
        let ipv6 = match (from, to) {
            (Some(a), Some(b)) if a.is_ipv6() != b.is_ipv6() => return Err(mixed()),
            (Some(ip), _) | (None, Some(ip)) => ip.is_ipv6(),
            (None, None) => false,
        };
        self.rt
            .block_on(async move {
                let req = h.rule().add().priority(priority).table_id(table).action(RuleAction::ToTable);
                if ipv6 {
                    let mut req = req.v6();
                    if let Some(IpAddr::V6(ip)) = from {
                        req = req.source_prefix(ip, 128);
                    }
                    if let Some(IpAddr::V6(ip)) = to {
                        req = req.destination_prefix(ip, 128);
                    }
                    req.execute().await
                } else {
                    let mut req = req.v4();
                    if let Some(IpAddr::V4(ip)) = from {
                        req = req.source_prefix(ip, 32);
                    }
                    if let Some(IpAddr::V4(ip)) = to {
                        req = req.destination_prefix(ip, 32);
                    }
                    req.execute().await
                }
            })
            .map_err(|e| nl_err("rule add", "rule", e))
    }

    /// Remove the rules at `priority` that name `ip` as source or destination.
    pub fn delete_rules_for(&self, priority: u32, ip: IpAddr) -> Result<(), DriverError> {
        for m in self.rule_messages()? {
            let mine = m.attributes.contains(&RuleAttribute::Priority(priority))
                && m.attributes
                    .iter()
                    .any(|a| matches!(a, RuleAttribute::Source(x) | RuleAttribute::Destination(x) if *x == ip));
            if mine {
                let h = self.handle.clone();
                match self.rt.block_on(async move { h.rule().del(m).execute().await }) {
                    Ok(()) => {}
                    Err(e) if errno_of(&e) == Some(libc::ENOENT) => {}
                    Err(e) => return Err(nl_err("rule del", "rule", e)),
                }
            }
        }
        Ok(())
    }
}

/// The address of a route's destination or gateway attribute, of either family.
fn route_address(a: &rtnetlink::packet_route::route::RouteAddress) -> Option<IpAddr> {
    match a {
        rtnetlink::packet_route::route::RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        rtnetlink::packet_route::route::RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}
