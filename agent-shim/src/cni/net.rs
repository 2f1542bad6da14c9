//! The CNI plugin's netlink driver: the `ensure_*` operations a pod's plan is made of (veth,
//! moves, addresses, neighbours, routes, rules) and their removal, each idempotent so ADD and
//! DEL can run twice, as methods of the shim's [`Netlink`] socket. A socket lives on a thread
//! that entered one namespace (see [`crate::driver::netns::run_in`]) and belongs to it.
//!
//! It knows nothing of ENIs or plans: it is told "route X via Y dev Z table T" and makes it so.

use std::net::{IpAddr, Ipv4Addr};
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
    pub from: Option<Ipv4Addr>,
    pub to: Option<Ipv4Addr>,
    pub table: u32,
}

/// A route as the kernel lists it (IPv4 only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub table: u32,
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
    pub fn ensure_addr(&self, name: &str, ip: Ipv4Addr, prefix: u8) -> Result<(), DriverError> {
        let index = self.index_of(name)?;
        let h = self.handle.clone();
        match self.rt.block_on(async move { h.address().add(index, IpAddr::V4(ip), prefix).execute().await }) {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(nl_err("addr add", name, e)),
        }
    }

    /// IPv4 addresses on a link, with prefixes.
    pub fn addrs(&self, name: &str) -> Result<Vec<(Ipv4Addr, u8)>, DriverError> {
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
                    rtnetlink::packet_route::address::AddressAttribute::Address(IpAddr::V4(ip)) => Some((ip, prefix)),
                    _ => None,
                })
            })
            .collect())
    }

    /// `ip neigh replace IP lladdr MAC dev NAME nud permanent`.
    pub fn replace_neigh(&self, name: &str, ip: Ipv4Addr, mac: [u8; 6]) -> Result<(), DriverError> {
        let index = self.index_of(name)?;
        let h = self.handle.clone();
        self.rt
            .block_on(async move {
                h.neighbours()
                    .add(index, IpAddr::V4(ip))
                    .link_layer_address(&mac)
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await
            })
            .map_err(|e| nl_err("neigh replace", name, e))
    }

    /// `ip route replace DST/PREFIX [via GW] dev NAME [scope link] [onlink] [table T]`.
    #[allow(clippy::too_many_arguments)]
    pub fn replace_route(
        &self,
        dst: Ipv4Addr,
        prefix: u8,
        via: Option<Ipv4Addr>,
        dev: &str,
        table: Option<u32>,
        onlink: bool,
    ) -> Result<(), DriverError> {
        let index = self.index_of(dev)?;
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(dst, prefix).output_interface(index);
        b = match via {
            Some(gw) => b.gateway(gw),
            None => b.scope(RouteScope::Link),
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

    /// Every IPv4 route of `table` (254 is main).
    pub fn routes(&self, table: u32) -> Result<Vec<RouteInfo>, DriverError> {
        let h = self.handle.clone();
        let msgs: Vec<_> = self
            .rt
            .block_on(async move {
                let mut req = RouteMessageBuilder::<Ipv4Addr>::new().build();
                req.header.table = 0;
                h.route().get(req).execute().try_collect().await
            })
            .map_err(|e| nl_err("route get", "all", e))?;
        let mut out = Vec::new();
        for m in msgs {
            let mut info = RouteInfo {
                dst: Ipv4Addr::UNSPECIFIED,
                prefix: m.header.destination_prefix_length,
                gateway: None,
                oif: None,
                table: u32::from(m.header.table),
            };
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(rtnetlink::packet_route::route::RouteAddress::Inet(ip)) => {
                        info.dst = *ip
                    }
                    RouteAttribute::Gateway(rtnetlink::packet_route::route::RouteAddress::Inet(ip)) => {
                        info.gateway = Some(*ip)
                    }
                    RouteAttribute::Oif(i) => info.oif = Some(*i),
                    RouteAttribute::Table(t) => info.table = *t,
                    _ => {}
                }
            }
            if info.table == table {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Remove every route of `table`.
    pub fn flush_table(&self, table: u32) -> Result<(), DriverError> {
        for r in self.routes(table)? {
            let mut b = RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(r.dst, r.prefix).table_id(table);
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

    /// Every IPv4 rule.
    pub fn rules(&self) -> Result<Vec<RuleInfo>, DriverError> {
        let h = self.handle.clone();
        let msgs: Vec<_> = self
            .rt
            .block_on(async move { h.rule().get(IpVersion::V4).execute().try_collect().await })
            .map_err(|e| nl_err("rule get", "all", e))?;
        Ok(msgs
            .into_iter()
            .map(|m| {
                let mut r = RuleInfo { priority: 0, from: None, to: None, table: u32::from(m.header.table) };
                for a in &m.attributes {
                    match a {
                        RuleAttribute::Priority(p) => r.priority = *p,
                        RuleAttribute::Source(IpAddr::V4(ip)) => r.from = Some(*ip),
                        RuleAttribute::Destination(IpAddr::V4(ip)) => r.to = Some(*ip),
                        RuleAttribute::Table(t) => r.table = *t,
                        _ => {}
                    }
                }
                r
            })
            .collect())
    }

    /// `ip rule add [from IP/32] [to IP/32] lookup TABLE pref PRIORITY`, unless an identical
    /// rule exists (the kernel would happily add a duplicate).
    pub fn ensure_rule(
        &self,
        priority: u32,
        from: Option<Ipv4Addr>,
        to: Option<Ipv4Addr>,
        table: u32,
    ) -> Result<(), DriverError> {
        let want = RuleInfo { priority, from, to, table };
        if self.rules()?.contains(&want) {
            return Ok(());
        }
        let h = self.handle.clone();
        self.rt
            .block_on(async move {
                let mut req = h.rule().add().v4().priority(priority).table_id(table).action(RuleAction::ToTable);
                if let Some(ip) = from {
                    req = req.source_prefix(ip, 32);
                }
                if let Some(ip) = to {
                    req = req.destination_prefix(ip, 32);
                }
                req.execute().await
            })
            .map_err(|e| nl_err("rule add", "rule", e))
    }

    /// Remove the rules at `priority` that name `ip` as source or destination.
    pub fn delete_rules_for(&self, priority: u32, ip: Ipv4Addr) -> Result<(), DriverError> {
        let h = self.handle.clone();
        let msgs: Vec<_> = self
            .rt
            .block_on(async move { h.rule().get(IpVersion::V4).execute().try_collect().await })
            .map_err(|e| nl_err("rule get", "all", e))?;
        for m in msgs {
            let mine = m.attributes.contains(&RuleAttribute::Priority(priority))
                && m.attributes.iter().any(|a| matches!(a, RuleAttribute::Source(IpAddr::V4(x)) | RuleAttribute::Destination(IpAddr::V4(x)) if *x == ip));
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
