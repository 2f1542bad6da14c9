//! Byte-level views of every header the fabric touches: Geneve with the virtio-net option, the
//! virtio-net header itself, Ethernet and 802.1Q, ARP, IPv4 and the first bytes of TCP/UDP/ICMP,
//! the records of the nodes' fast-path maps, and IPv6 with neighbour discovery ([`ipv6`], built
//! on etherparse; everything else here is hand-written, see ARCHITECTURE §6).
//!
//! This layer is shared by the pipeline (`enifab-dataplane`, which re-exports it as its `wire`)
//! and the node shim (`agent-shim`), which uses [`geneve`] to talk to the emulator and [`vlan`]
//! for its userspace 802.1Q emulation, so it must stay free of any policy:
//! no knowledge of ports, ENIs or security groups here, only "is this well formed and what does
//! it say".
//!
//! Contract, in the spirit of smoltcp's `wire`: every parser takes untrusted bytes and either
//! returns a checked view or an error value; no accessor and no emitter panics, whatever the
//! input or buffer size. Parsers borrow the input and never allocate. Emitters write into a
//! caller-provided slice and report the length they wrote.
//!
//! Specs: RFC 8926 (Geneve), virtio 1.2 §5.1.6 (`virtio_net_hdr`), IEEE 802.1Q, RFC 826 (ARP),
//! RFC 791 (IPv4), RFC 793/768/792 (TCP/UDP/ICMP), RFC 1071 (Internet checksum), RFC 8200 (IPv6),
//! RFC 4443 (ICMPv6), RFC 4861 (neighbour discovery).

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod fastpath;
pub mod geneve;
pub mod ipv4;
pub mod ipv6;
pub mod l4;
pub mod vlan;
pub mod vnet;

use core::fmt;

/// A header was too short or internally inconsistent. The string names what was wrong; it is
/// meant for humans (drop reasons, traces), the protocol layer is given by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The output slice cannot hold what the emitter has to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferTooSmall {
    pub needed: usize,
    pub available: usize,
}

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "buffer too small: need {} bytes, have {}", self.needed, self.available)
    }
}

/// Reads a big-endian u16 at `at`; callers have checked the length first, `None` keeps that
/// promise honest without a panic path.
#[inline]
pub fn be16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

#[inline]
pub fn ipv4_at(buf: &[u8], at: usize) -> Option<core::net::Ipv4Addr> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(core::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]))
}

#[inline]
pub fn check_room(buf: &[u8], needed: usize) -> Result<(), BufferTooSmall> {
    if buf.len() < needed { Err(BufferTooSmall { needed, available: buf.len() }) } else { Ok(()) }
}
