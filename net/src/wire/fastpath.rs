//! The fast path's control messages between the fabric and a node shim, on the same UDP path as
//! the frames: which flows a node's kernel may carry by itself (*grants*), which verdicts are no
//! longer true (*revocations*, acknowledged), and what the kernel carried (*reports*).
//!
//! ```text
//! | Geneve header: version 0, no options, O (OAM) = 1, protocol 0x88B5, VNI 0               |
//! | kind (1) | family (1) | 0 0 | epoch (8, big endian) | count (2) | 0 0 |     = 16 bytes    |
//! | count × records of the family's size (grants: egress or ingress entries; reports)       |
//! ```
//!
//! A control datagram is a Geneve packet with the OAM bit and protocol 0x88B5 (IEEE 802's
//! "local experimental" EtherType), never an Ethernet frame: [`geneve::Header::parse`] refuses it
//! (OAM and protocol), so a shim or fabric that does not know these messages drops them as it
//! drops any other stray datagram, and no tenant frame can be mistaken for one. Who may send
//! them is the receiver's check (the fabric's registered shim addresses; the shim's fabric
//! address), as for frames.
//!
//! One message carries the flows of one address family, named by the family byte: 0 for IPv4
//! (40-byte records; the byte was reserved as 0 before IPv6, so IPv4 messages are unchanged), 6
//! for IPv6 (64-byte records: the same fields at the same places relative to the tuple, which
//! is 37 bytes instead of 13). Both families fill a datagram to the same [`MAX_LEN`]. The nodes'
//! underlay stays IPv4: only the tuples grow. Revocations and acknowledgements name no family
//! (0): an epoch covers every family.
//!
//! The epoch names a configuration of the fabric (its high half changes with every emulator
//! run): an entry granted under epoch E is valid only while the node's current epoch is E, so
//! one revocation (a new epoch) invalidates every cached verdict at once, of either family.
//!
//! Pure: parsers take untrusted bytes and return values or [`Malformed`]; emitters write into
//! the caller's slice. Fixed-size records per family, so a message is parsed without
//! allocating.
//!
//! [`geneve::Header::parse`]: super::geneve::Header::parse

use core::fmt::Debug;
use core::hash::Hash;
use core::net::{Ipv4Addr, Ipv6Addr};

use super::ethernet::Mac;
use super::geneve::Vni;
use super::{BufferTooSmall, Malformed, check_room};

/// Protocol type of a control datagram (IEEE 802 local experimental EtherType 1).
pub const PROTOCOL_CONTROL: u16 = 0x88B5;
/// Geneve header (8) + message header (8 + 8).
pub const HEADER_LEN: usize = 24;
/// Every IPv4 record, grant or report.
pub const RECORD_LEN: usize = 40;
/// IPv4 records per datagram: a message stays well under any MTU (24 + 32 × 40 = 1,304 bytes).
pub const MAX_RECORDS: usize = 32;
/// Every IPv6 record, grant or report (58 bytes used at most, rounded up).
pub const RECORD_LEN6: usize = 64;
/// IPv6 records per datagram: 24 + 20 × 64 = 1,304 bytes, as for IPv4.
pub const MAX_RECORDS6: usize = 20;
/// The largest control datagram, of either family.
pub const MAX_LEN: usize = HEADER_LEN + MAX_RECORDS * RECORD_LEN;

const _: () = assert!(HEADER_LEN + MAX_RECORDS6 * RECORD_LEN6 <= MAX_LEN);

const GENEVE_LEN: usize = 8;
const KIND_EGRESS: u8 = 1;
const KIND_INGRESS: u8 = 2;

/// What a control message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Fabric → shim: the configuration is now `epoch`; nothing granted under another holds.
    Revoke = 1,
    /// Shim → fabric: the node's kernel now checks against `epoch`.
    Ack = 2,
    /// Fabric → shim: entries the node's kernel may use while its epoch is `epoch`.
    Grant = 3,
    /// Shim → fabric: packets and bytes the kernel carried per flow since the last report.
    Report = 4,
    /// Fabric → shim: entries to forget now (a flow that closed, or that conntrack no longer
    /// knows); only their keys count.
    Evict = 5,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Revoke,
            2 => Kind::Ack,
            3 => Kind::Grant,
            4 => Kind::Report,
            5 => Kind::Evict,
            _ => return None,
        })
    }
}

/// The address family of a message's records (its family byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4 = 0,
    Ipv6 = 6,
}

impl Family {
    fn from_u8(v: u8) -> Option<Family> {
        match v {
            0 => Some(Family::Ipv4),
            6 => Some(Family::Ipv6),
            _ => None,
        }
    }

    /// Bytes per record of this family.
    pub const fn record_len(self) -> usize {
        match self {
            Family::Ipv4 => RECORD_LEN,
            Family::Ipv6 => RECORD_LEN6,
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for core::net::Ipv4Addr {}
    impl Sealed for core::net::Ipv6Addr {}
}

/// An address type a record can carry: [`Ipv4Addr`] or [`Ipv6Addr`] (sealed). Everything in
/// this module is generic over it, with IPv4 the default, so `Tuple` alone still means IPv4.
pub trait Addr: Copy + Eq + Ord + Hash + Debug + sealed::Sealed + 'static {
    const FAMILY: Family;
    /// Bytes of one address.
    const LEN: usize;
    /// Records of this family per datagram.
    const MAX_RECORDS: usize;
    /// Reads an address from `b`, which holds [`Addr::LEN`] bytes.
    fn read(b: &[u8]) -> Self;
    /// Writes the address into `b`, which holds [`Addr::LEN`] bytes.
    fn write(&self, b: &mut [u8]);
}

impl Addr for Ipv4Addr {
    const FAMILY: Family = Family::Ipv4;
    const LEN: usize = 4;
    const MAX_RECORDS: usize = MAX_RECORDS;

    fn read(b: &[u8]) -> Ipv4Addr {
        Ipv4Addr::from(<[u8; 4]>::try_from(&b[..4]).unwrap_or([0; 4]))
    }

    fn write(&self, b: &mut [u8]) {
        b[..4].copy_from_slice(&self.octets());
    }
}

impl Addr for Ipv6Addr {
    const FAMILY: Family = Family::Ipv6;
    const LEN: usize = 16;
    const MAX_RECORDS: usize = MAX_RECORDS6;

    fn read(b: &[u8]) -> Ipv6Addr {
        Ipv6Addr::from(<[u8; 16]>::try_from(&b[..16]).unwrap_or([0; 16]))
    }

    fn write(&self, b: &mut [u8]) {
        b[..16].copy_from_slice(&self.octets());
    }
}

/// A flow's addresses as the sender's packets carry them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple<A = Ipv4Addr> {
    pub protocol: u8,
    pub src: A,
    pub dst: A,
    pub sport: u16,
    pub dport: u16,
}

/// An IPv6 flow's tuple.
pub type Tuple6 = Tuple<Ipv6Addr>;

impl<A: Addr> Tuple<A> {
    /// Bytes of a tuple on the wire: protocol, two addresses, two ports.
    const LEN: usize = 1 + 2 * A::LEN + 4;

    pub fn reversed(&self) -> Tuple<A> {
        Tuple { protocol: self.protocol, src: self.dst, dst: self.src, sport: self.dport, dport: self.sport }
    }

    fn write(&self, b: &mut [u8]) {
        let n = A::LEN;
        b[0] = self.protocol;
        self.src.write(&mut b[1..1 + n]);
        self.dst.write(&mut b[1 + n..1 + 2 * n]);
        b[1 + 2 * n..3 + 2 * n].copy_from_slice(&self.sport.to_be_bytes());
        b[3 + 2 * n..5 + 2 * n].copy_from_slice(&self.dport.to_be_bytes());
    }

    fn read(b: &[u8]) -> Tuple<A> {
        let n = A::LEN;
        Tuple {
            protocol: b[0],
            src: A::read(&b[1..1 + n]),
            dst: A::read(&b[1 + n..1 + 2 * n]),
            sport: u16::from_be_bytes([b[1 + 2 * n], b[2 + 2 * n]]),
            dport: u16::from_be_bytes([b[3 + 2 * n], b[4 + 2 * n]]),
        }
    }
}

/// On the sending node: packets of `tuple` leaving the device of port `src_vni` (member VLAN
/// `src_vlan`, 0 = the port's own ENI) go encapsulated to `peer` (the receiving node's
/// fast-path address) with VXLAN id `dst_vni`, the receiving port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressEntry<A = Ipv4Addr> {
    pub src_vni: Vni,
    pub src_vlan: u16,
    pub tuple: Tuple<A>,
    pub peer: Ipv4Addr,
    pub dst_vni: Vni,
    /// Idle time after which the kernel stops using the entry (the flow's conntrack timeout).
    pub idle_secs: u32,
}

/// On the receiving node: packets of `tuple` arriving from `peer` with VXLAN id `dst_vni` are
/// delivered on that port, rewritten as the fabric rewrites them: source MAC the gateway's,
/// destination `dst_mac`, tagged `dst_vlan` (0 = untagged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngressEntry<A = Ipv4Addr> {
    pub dst_vni: Vni,
    pub dst_vlan: u16,
    pub dst_mac: Mac,
    pub tuple: Tuple<A>,
    pub peer: Ipv4Addr,
    pub idle_secs: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<A = Ipv4Addr> {
    Egress(EgressEntry<A>),
    Ingress(IngressEntry<A>),
}

/// An entry of an IPv6 flow.
pub type Entry6 = Entry<Ipv6Addr>;
pub type EgressEntry6 = EgressEntry<Ipv6Addr>;
pub type IngressEntry6 = IngressEntry<Ipv6Addr>;

impl<A: Copy> Entry<A> {
    /// The flow's tuple in the direction the entry carries.
    pub fn tuple(&self) -> Tuple<A> {
        match self {
            Entry::Egress(e) => e.tuple,
            Entry::Ingress(e) => e.tuple,
        }
    }
}

/// What the kernel carried for one egress entry since the last report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportRecord<A = Ipv4Addr> {
    pub src_vni: Vni,
    pub src_vlan: u16,
    pub tuple: Tuple<A>,
    pub packets: u64,
    pub bytes: u64,
}

/// What the kernel carried of an IPv6 flow.
pub type ReportRecord6 = ReportRecord<Ipv6Addr>;

/// A parsed control message; its records are read lazily.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: Kind,
    /// The family of its records (IPv4 for a revocation or an acknowledgement).
    pub family: Family,
    pub epoch: u64,
    records: &'a [u8],
}

/// Is this datagram a control message (rather than a frame)? Cheap enough for every datagram.
pub fn is_control(buf: &[u8]) -> bool {
    buf.len() >= GENEVE_LEN && buf[1] & 0x80 != 0 && u16::from_be_bytes([buf[2], buf[3]]) == PROTOCOL_CONTROL
}

impl<'a> Message<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, Malformed> {
        if !is_control(buf) {
            return Err(Malformed("not a control message"));
        }
        if buf[0] != 0 || buf[4..8] != [0; 4] {
            return Err(Malformed("control message with options, a version or a VNI"));
        }
        let h = buf.get(GENEVE_LEN..HEADER_LEN).ok_or(Malformed("control header truncated"))?;
        let kind = Kind::from_u8(h[0]).ok_or(Malformed("unknown control message"))?;
        let family = Family::from_u8(h[1]).ok_or(Malformed("unknown address family"))?;
        let epoch = u64::from_be_bytes(h[4..12].try_into().unwrap_or([0; 8]));
        let count = usize::from(u16::from_be_bytes([h[12], h[13]]));
        let max = match family {
            Family::Ipv4 => MAX_RECORDS,
            Family::Ipv6 => MAX_RECORDS6,
        };
        if count > max {
            return Err(Malformed("too many records"));
        }
        let len = HEADER_LEN + count * family.record_len();
        let records = buf.get(HEADER_LEN..len).ok_or(Malformed("records truncated"))?;
        if buf.len() != len {
            return Err(Malformed("trailing bytes after the records"));
        }
        match kind {
            Kind::Revoke | Kind::Ack if count != 0 => return Err(Malformed("records in a revocation")),
            Kind::Revoke | Kind::Ack if family != Family::Ipv4 => {
                return Err(Malformed("a family in a revocation"));
            }
            _ => {}
        }
        Ok(Message { kind, family, epoch, records })
    }

    /// The IPv4 entries of a grant or an eviction (empty for any other kind or family); a
    /// malformed record is an `Err` item, the others are still read.
    pub fn entries(&self) -> impl Iterator<Item = Result<Entry, Malformed>> + 'a {
        self.entries_of::<Ipv4Addr>()
    }

    /// The IPv6 entries of a grant or an eviction (empty for any other kind or family).
    pub fn entries6(&self) -> impl Iterator<Item = Result<Entry6, Malformed>> + 'a {
        self.entries_of::<Ipv6Addr>()
    }

    /// The entries of family `A` of a grant or an eviction (empty for any other kind or family).
    pub fn entries_of<A: Addr>(&self) -> impl Iterator<Item = Result<Entry<A>, Malformed>> + 'a {
        let ours = matches!(self.kind, Kind::Grant | Kind::Evict) && self.family == A::FAMILY;
        let records = if ours { self.records } else { &[] };
        records.chunks_exact(A::FAMILY.record_len()).map(read_entry::<A>)
    }

    /// The IPv4 records of a report (empty for any other kind or family).
    pub fn reports(&self) -> impl Iterator<Item = Result<ReportRecord, Malformed>> + 'a {
        self.reports_of::<Ipv4Addr>()
    }

    /// The IPv6 records of a report (empty for any other kind or family).
    pub fn reports6(&self) -> impl Iterator<Item = Result<ReportRecord6, Malformed>> + 'a {
        self.reports_of::<Ipv6Addr>()
    }

    /// The records of family `A` of a report (empty for any other kind or family).
    pub fn reports_of<A: Addr>(&self) -> impl Iterator<Item = Result<ReportRecord<A>, Malformed>> + 'a {
        let ours = self.kind == Kind::Report && self.family == A::FAMILY;
        let records = if ours { self.records } else { &[] };
        records.chunks_exact(A::FAMILY.record_len()).map(read_report::<A>)
    }
}

/// Writes a message with no records (a revocation or an acknowledgement).
pub fn emit_bare(kind: Kind, epoch: u64, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
    emit_header(kind, Family::Ipv4, epoch, 0, out)
}

/// Writes a grant of up to `A::MAX_RECORDS` entries of one family; returns the length and how
/// many were taken.
pub fn emit_grant<A: Addr>(epoch: u64, entries: &[Entry<A>], out: &mut [u8]) -> Result<(usize, usize), BufferTooSmall> {
    emit_entries(Kind::Grant, epoch, entries, out)
}

/// Writes an eviction of up to `A::MAX_RECORDS` entries of one family; returns the length and
/// how many were taken.
pub fn emit_evict<A: Addr>(entries: &[Entry<A>], out: &mut [u8]) -> Result<(usize, usize), BufferTooSmall> {
    emit_entries(Kind::Evict, 0, entries, out)
}

fn emit_entries<A: Addr>(
    kind: Kind,
    epoch: u64,
    entries: &[Entry<A>],
    out: &mut [u8],
) -> Result<(usize, usize), BufferTooSmall> {
    let n = entries.len().min(A::MAX_RECORDS);
    let len = emit_header(kind, A::FAMILY, epoch, n, out)?;
    for (e, rec) in entries[..n].iter().zip(out[HEADER_LEN..len].chunks_exact_mut(A::FAMILY.record_len())) {
        write_entry(e, rec);
    }
    Ok((len, n))
}

/// Writes a report of up to `A::MAX_RECORDS` records of one family; returns the length and
/// how many were taken.
pub fn emit_report<A: Addr>(records: &[ReportRecord<A>], out: &mut [u8]) -> Result<(usize, usize), BufferTooSmall> {
    let n = records.len().min(A::MAX_RECORDS);
    let len = emit_header(Kind::Report, A::FAMILY, 0, n, out)?;
    let t = Tuple::<A>::LEN;
    for (r, rec) in records[..n].iter().zip(out[HEADER_LEN..len].chunks_exact_mut(A::FAMILY.record_len())) {
        rec.fill(0);
        rec[0..4].copy_from_slice(&r.src_vni.get().to_be_bytes());
        rec[4..6].copy_from_slice(&r.src_vlan.to_be_bytes());
        r.tuple.write(&mut rec[6..6 + t]);
        rec[6 + t..14 + t].copy_from_slice(&r.packets.to_be_bytes());
        rec[14 + t..22 + t].copy_from_slice(&r.bytes.to_be_bytes());
    }
    Ok((len, n))
}

fn emit_header(kind: Kind, family: Family, epoch: u64, count: usize, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
    let len = HEADER_LEN + count * family.record_len();
    check_room(out, len)?;
    out[..HEADER_LEN].fill(0);
    out[1] = 0x80;
    out[2..4].copy_from_slice(&PROTOCOL_CONTROL.to_be_bytes());
    out[GENEVE_LEN] = kind as u8;
    out[GENEVE_LEN + 1] = family as u8;
    out[GENEVE_LEN + 4..GENEVE_LEN + 12].copy_from_slice(&epoch.to_be_bytes());
    out[GENEVE_LEN + 12..GENEVE_LEN + 14].copy_from_slice(&(count as u16).to_be_bytes());
    Ok(len)
}

// A record's layout, `t` being the tuple's length (13 for IPv4, 37 for IPv6):
//   egress:  kind | src VNI (4) | src VLAN (2) | tuple | peer (4) | dst VNI (4) | idle (4)
//   ingress: kind | dst VNI (4) | dst VLAN (2) | tuple | peer (4) | dst MAC (6) | idle (4)
//   report:  src VNI (4) | src VLAN (2) | tuple | packets (8) | bytes (8)
// the rest of the record zero.
fn write_entry<A: Addr>(e: &Entry<A>, rec: &mut [u8]) {
    let p = 7 + Tuple::<A>::LEN;
    rec.fill(0);
    match e {
        Entry::Egress(g) => {
            rec[0] = KIND_EGRESS;
            rec[1..5].copy_from_slice(&g.src_vni.get().to_be_bytes());
            rec[5..7].copy_from_slice(&g.src_vlan.to_be_bytes());
            g.tuple.write(&mut rec[7..p]);
            rec[p..p + 4].copy_from_slice(&g.peer.octets());
            rec[p + 4..p + 8].copy_from_slice(&g.dst_vni.get().to_be_bytes());
            rec[p + 8..p + 12].copy_from_slice(&g.idle_secs.to_be_bytes());
        }
        Entry::Ingress(g) => {
            rec[0] = KIND_INGRESS;
            rec[1..5].copy_from_slice(&g.dst_vni.get().to_be_bytes());
            rec[5..7].copy_from_slice(&g.dst_vlan.to_be_bytes());
            g.tuple.write(&mut rec[7..p]);
            rec[p..p + 4].copy_from_slice(&g.peer.octets());
            rec[p + 4..p + 10].copy_from_slice(&g.dst_mac.0);
            rec[p + 10..p + 14].copy_from_slice(&g.idle_secs.to_be_bytes());
        }
    }
}

fn read_entry<A: Addr>(rec: &[u8]) -> Result<Entry<A>, Malformed> {
    let p = 7 + Tuple::<A>::LEN;
    let vni = |b: &[u8]| Vni::new(u32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok_or(Malformed("VNI out of range"));
    let u32_at = |at: usize| u32::from_be_bytes([rec[at], rec[at + 1], rec[at + 2], rec[at + 3]]);
    let vlan = u16::from_be_bytes([rec[5], rec[6]]);
    if vlan > 4094 {
        return Err(Malformed("VLAN id out of range"));
    }
    let tuple = Tuple::read(&rec[7..p]);
    let peer = ip(&rec[p..p + 4]);
    match rec[0] {
        KIND_EGRESS => Ok(Entry::Egress(EgressEntry {
            src_vni: vni(&rec[1..5])?,
            src_vlan: vlan,
            tuple,
            peer,
            dst_vni: vni(&rec[p + 4..p + 8])?,
            idle_secs: u32_at(p + 8),
        })),
        KIND_INGRESS => {
            let mut dst_mac = Mac::default();
            dst_mac.0.copy_from_slice(&rec[p + 4..p + 10]);
            Ok(Entry::Ingress(IngressEntry {
                dst_vni: vni(&rec[1..5])?,
                dst_vlan: vlan,
                dst_mac,
                tuple,
                peer,
                idle_secs: u32_at(p + 10),
            }))
        }
        _ => Err(Malformed("unknown entry kind")),
    }
}

fn read_report<A: Addr>(rec: &[u8]) -> Result<ReportRecord<A>, Malformed> {
    let t = Tuple::<A>::LEN;
    let src_vni =
        Vni::new(u32::from_be_bytes([rec[0], rec[1], rec[2], rec[3]])).ok_or(Malformed("VNI out of range"))?;
    let src_vlan = u16::from_be_bytes([rec[4], rec[5]]);
    if src_vlan > 4094 {
        return Err(Malformed("VLAN id out of range"));
    }
    let u64_at = |at: usize| u64::from_be_bytes(rec[at..at + 8].try_into().unwrap_or([0; 8]));
    Ok(ReportRecord {
        src_vni,
        src_vlan,
        tuple: Tuple::read(&rec[6..6 + t]),
        packets: u64_at(6 + t),
        bytes: u64_at(14 + t),
    })
}

fn ip(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

#[cfg(test)]
mod test {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::geneve;

    fn tuple() -> Tuple {
        Tuple { protocol: 6, src: Ipv4Addr::new(10, 0, 1, 5), dst: Ipv4Addr::new(10, 0, 2, 9), sport: 40000, dport: 80 }
    }

    fn tuple6() -> Tuple6 {
        Tuple {
            protocol: 17,
            src: "2408:4005:3000:1::11".parse().unwrap(),
            dst: "2408:4005:3000:1:5::7".parse().unwrap(),
            sport: 40000,
            dport: 53,
        }
    }

    fn entries_of<A: Addr>(t: Tuple<A>) -> [Entry<A>; 2] {
        [
            Entry::Egress(EgressEntry {
                src_vni: Vni::new(7).unwrap(),
                src_vlan: 12,
                tuple: t,
                peer: Ipv4Addr::new(198, 18, 0, 3),
                dst_vni: Vni::new(0xabcdef).unwrap(),
                idle_secs: 910,
            }),
            Entry::Ingress(IngressEntry {
                dst_vni: Vni::new(7).unwrap(),
                dst_vlan: 0,
                dst_mac: Mac([0, 0x16, 0x3e, 1, 2, 3]),
                tuple: t.reversed(),
                peer: Ipv4Addr::new(198, 18, 0, 3),
                idle_secs: 30,
            }),
        ]
    }

    fn entries() -> [Entry; 2] {
        entries_of(tuple())
    }

    fn entries6() -> [Entry6; 2] {
        entries_of(tuple6())
    }

    #[test]
    fn grants_reports_and_revocations_read_back_as_written() {
        let mut buf = [0u8; MAX_LEN];
        let (len, n) = emit_grant(0x1234_5678_0000_0009, &entries(), &mut buf).unwrap();
        assert_eq!((len, n), (HEADER_LEN + 2 * RECORD_LEN, 2));
        let m = Message::parse(&buf[..len]).unwrap();
        assert_eq!((m.kind, m.family, m.epoch), (Kind::Grant, Family::Ipv4, 0x1234_5678_0000_0009));
        assert_eq!(m.entries().collect::<Result<Vec<_>, _>>().unwrap(), entries());
        assert_eq!(m.reports().count(), 0);
        assert_eq!(m.entries6().count(), 0, "an IPv4 grant has no IPv6 entries");

        let r = ReportRecord { src_vni: Vni::new(7).unwrap(), src_vlan: 3, tuple: tuple(), packets: 5, bytes: 1 << 40 };
        let (len, _) = emit_report(&[r, r], &mut buf).unwrap();
        let m = Message::parse(&buf[..len]).unwrap();
        assert_eq!(m.reports().collect::<Result<Vec<_>, _>>().unwrap(), [r, r]);

        let (len, _) = emit_evict(&entries()[..1], &mut buf).unwrap();
        let m = Message::parse(&buf[..len]).unwrap();
        assert_eq!(
            (m.kind, m.entries().collect::<Result<Vec<_>, _>>().unwrap()),
            (Kind::Evict, entries()[..1].to_vec())
        );

        let len = emit_bare(Kind::Ack, 42, &mut buf).unwrap();
        assert_eq!(
            Message::parse(&buf[..len]).unwrap(),
            Message { kind: Kind::Ack, family: Family::Ipv4, epoch: 42, records: &[] }
        );
    }

    #[test]
    fn ipv6_grants_reports_and_evictions_read_back_as_written_in_messages_of_their_own() {
        let mut buf = [0u8; MAX_LEN];
        let (len, n) = emit_grant(9, &entries6(), &mut buf).unwrap();
        assert_eq!((len, n), (HEADER_LEN + 2 * RECORD_LEN6, 2));
        let m = Message::parse(&buf[..len]).unwrap();
        assert_eq!((m.kind, m.family, m.epoch), (Kind::Grant, Family::Ipv6, 9));
        assert_eq!(m.entries6().collect::<Result<Vec<_>, _>>().unwrap(), entries6());
        assert_eq!(m.entries().count(), 0, "an IPv6 grant has no IPv4 entries");
        assert_eq!(m.reports6().count(), 0);

        let r = ReportRecord {
            src_vni: Vni::new(Vni::MAX).unwrap(),
            src_vlan: 4094,
            tuple: tuple6(),
            packets: u64::MAX,
            bytes: 1 << 40,
        };
        let (len, _) = emit_report(&[r, r, r], &mut buf).unwrap();
        assert_eq!(len, HEADER_LEN + 3 * RECORD_LEN6);
        let m = Message::parse(&buf[..len]).unwrap();
        assert_eq!(m.reports6().collect::<Result<Vec<_>, _>>().unwrap(), [r, r, r]);
        assert_eq!(m.reports().count(), 0);

        let (len, _) = emit_evict(&entries6()[1..], &mut buf).unwrap();
        let m = Message::parse(&buf[..len]).unwrap();
        assert_eq!(
            (m.kind, m.entries6().collect::<Result<Vec<_>, _>>().unwrap()),
            (Kind::Evict, entries6()[1..].to_vec())
        );
    }

    /// An IPv4 grant's bytes, as they were before IPv6 (so an IPv4 message does not change):
    /// one egress entry.
    #[rustfmt::skip]
    static IPV4_GRANT: [u8; HEADER_LEN + RECORD_LEN] = [
        0x00, 0x80, 0x88, 0xb5, 0, 0, 0, 0,             // Geneve: OAM, protocol 0x88B5, VNI 0
        3, 0, 0, 0,                                     // grant, family 0 (IPv4), reserved
        0, 0, 0, 0, 0, 0, 0, 9,                         // epoch 9
        0, 1, 0, 0,                                     // one record
        1, 0, 0, 0, 7, 0, 12,                           // egress, src VNI 7, VLAN 12
        6, 10, 0, 1, 5, 10, 0, 2, 9, 0x9c, 0x40, 0, 80, // TCP 10.0.1.5:40000 → 10.0.2.9:80
        198, 18, 0, 3,                                  // peer
        0, 0xab, 0xcd, 0xef,                            // dst VNI
        0, 0, 0x03, 0x8e,                               // idle 910 s
        0, 0, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn an_ipv4_grant_is_byte_for_byte_what_it_was() {
        let mut buf = [0u8; MAX_LEN];
        let (len, _) = emit_grant(9, &entries()[..1], &mut buf).unwrap();
        assert_eq!(buf[..len], IPV4_GRANT);
        let m = Message::parse(&IPV4_GRANT).unwrap();
        assert_eq!(m.entries().collect::<Result<Vec<_>, _>>().unwrap(), entries()[..1]);
    }

    #[test]
    fn an_ipv6_record_keeps_the_ipv4_fields_in_order_after_its_longer_tuple() {
        let mut buf = [0u8; MAX_LEN];
        let (len, _) = emit_grant(9, &entries6(), &mut buf).unwrap();
        let (egress, ingress) = (&buf[HEADER_LEN..HEADER_LEN + 64], &buf[HEADER_LEN + 64..len]);
        assert_eq!(buf[GENEVE_LEN + 1], 6, "family byte");
        assert_eq!(egress[..7], [1, 0, 0, 0, 7, 0, 12]);
        assert_eq!(egress[7], 17);
        assert_eq!(egress[8..24], tuple6().src.octets());
        assert_eq!(egress[24..40], tuple6().dst.octets());
        assert_eq!(egress[40..44], [0x9c, 0x40, 0, 53]);
        assert_eq!(egress[44..56], [198, 18, 0, 3, 0, 0xab, 0xcd, 0xef, 0, 0, 0x03, 0x8e]);
        assert!(egress[56..].iter().all(|b| *b == 0));
        assert_eq!(ingress[44..58], [198, 18, 0, 3, 0, 0x16, 0x3e, 1, 2, 3, 0, 0, 0, 30]);
    }

    #[test]
    fn a_control_message_is_never_a_frame_and_a_frame_never_a_control_message() {
        let mut buf = [0u8; MAX_LEN];
        let len = emit_bare(Kind::Revoke, 1, &mut buf).unwrap();
        assert!(geneve::Header::parse(&buf[..len]).is_err());
        let (len, _) = emit_grant(1, &entries6(), &mut buf).unwrap();
        assert!(geneve::Header::parse(&buf[..len]).is_err());
        let mut frame = [0u8; 64];
        let h = geneve::Header { vni: Vni::new(5).unwrap(), oam: false, vnet: None };
        let n = geneve::encapsulate(&h, &[0xaa; 40], &mut frame).unwrap();
        assert!(!is_control(&frame[..n]));
        assert!(Message::parse(&frame[..n]).is_err());
    }

    #[test]
    fn more_entries_than_fit_are_left_for_the_next_datagram() {
        let many = [entries()[0]; MAX_RECORDS + 5];
        let mut buf = [0u8; MAX_LEN];
        assert_eq!(emit_grant(1, &many, &mut buf).unwrap(), (MAX_LEN, MAX_RECORDS));
        assert!(emit_grant(1, &many, &mut buf[..MAX_LEN - 1]).is_err());
        let many = [entries6()[0]; MAX_RECORDS6 + 5];
        let full6 = HEADER_LEN + MAX_RECORDS6 * RECORD_LEN6;
        assert_eq!(emit_grant(1, &many, &mut buf).unwrap(), (full6, MAX_RECORDS6));
        assert!(emit_grant(1, &many, &mut buf[..full6 - 1]).is_err());
        let r = ReportRecord { src_vni: Vni::new(1).unwrap(), src_vlan: 0, tuple: tuple6(), packets: 1, bytes: 1 };
        assert_eq!(emit_report(&[r; 40], &mut buf).unwrap(), (full6, MAX_RECORDS6));
        assert_eq!(Message::parse(&buf[..full6]).unwrap().reports6().count(), MAX_RECORDS6);
    }

    /// Random bytes after a control marker: the parser and every record reader run on them.
    fn shake(b: &[u8]) {
        if let Ok(m) = Message::parse(b) {
            let _ = (m.entries().count(), m.reports().count(), m.entries6().count(), m.reports6().count());
        }
    }

    #[test]
    fn no_bytes_make_the_parser_panic_and_bad_counts_are_refused() {
        let mut buf = [0u8; MAX_LEN];
        let (len, _) = emit_grant(9, &entries(), &mut buf).unwrap();
        for cut in 0..len {
            shake(&buf[..cut]);
            assert!(Message::parse(&buf[..cut]).is_err());
        }
        let mut bad = buf;
        bad[GENEVE_LEN + 13] = 3; // says 3 records, carries 2
        assert!(Message::parse(&bad[..len]).is_err());
        let mut bad = buf;
        bad[HEADER_LEN] = 9; // unknown entry kind
        let m = Message::parse(&bad[..len]).unwrap();
        assert!(m.entries().next().unwrap().is_err());
        let mut bad = buf;
        bad[GENEVE_LEN] = 2; // an ack with records
        assert!(Message::parse(&bad[..len]).is_err());
        let mut bad = buf;
        bad[GENEVE_LEN + 1] = 4; // no such family
        assert_eq!(Message::parse(&bad[..len]), Err(Malformed("unknown address family")));
        let mut bad = buf;
        bad[GENEVE_LEN + 1] = 6; // IPv4 records said to be IPv6: the length disagrees
        assert!(Message::parse(&bad[..len]).is_err());

        let (len, _) = emit_grant(9, &entries6(), &mut buf).unwrap();
        for cut in 0..len {
            shake(&buf[..cut]);
            assert!(Message::parse(&buf[..cut]).is_err());
        }
        let mut bad = buf;
        bad[GENEVE_LEN + 1] = 0; // IPv6 records said to be IPv4
        assert!(Message::parse(&bad[..len]).is_err());
        let mut bad = buf;
        bad[HEADER_LEN + 5..HEADER_LEN + 7].copy_from_slice(&4095u16.to_be_bytes());
        let m = Message::parse(&bad[..len]).unwrap();
        let read: Vec<_> = m.entries6().collect();
        assert_eq!((read[0], read[1].is_ok()), (Err(Malformed("VLAN id out of range")), true));
        let mut bad = buf;
        bad[HEADER_LEN + 1] = 1; // a VNI above 24 bits
        assert!(Message::parse(&bad[..len]).unwrap().entries6().next().unwrap().is_err());
        // 21 IPv6 records are more than a datagram holds.
        let mut big = vec![0u8; HEADER_LEN + 21 * RECORD_LEN6];
        big[..HEADER_LEN].copy_from_slice(&buf[..HEADER_LEN]);
        big[GENEVE_LEN + 12..GENEVE_LEN + 14].copy_from_slice(&21u16.to_be_bytes());
        assert_eq!(Message::parse(&big), Err(Malformed("too many records")));
        // A revocation names no family.
        let len = emit_bare(Kind::Revoke, 3, &mut buf).unwrap();
        buf[GENEVE_LEN + 1] = 6;
        assert!(Message::parse(&buf[..len]).is_err());

        // Random bytes with the control marker, each family.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..20_000 {
            let mut b = [0u8; 200];
            for x in b.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *x = state as u8;
            }
            b[0] = 0;
            b[1] = 0x80;
            b[2..4].copy_from_slice(&PROTOCOL_CONTROL.to_be_bytes());
            b[4..8].fill(0);
            b[GENEVE_LEN] = 1 + (b[GENEVE_LEN] % 5);
            b[GENEVE_LEN + 1] = if i % 2 == 0 { 0 } else { 6 };
            b[GENEVE_LEN + 12] = 0;
            b[GENEVE_LEN + 13] %= 4;
            let n = (state as usize) % b.len();
            shake(&b[..n]);
            // The length its count asks for, so some of them parse and their records are read.
            let fam = Family::from_u8(b[GENEVE_LEN + 1]).unwrap();
            shake(&b[..(HEADER_LEN + usize::from(b[GENEVE_LEN + 13]) * fam.record_len()).min(b.len())]);
        }
    }

    fn arb_entry<A: Addr>(addr: impl Strategy<Value = A> + Clone) -> impl Strategy<Value = Entry<A>> {
        let vni = (0..=Vni::MAX).prop_map(|v| Vni::new(v).unwrap());
        let tuple = (any::<u8>(), addr.clone(), addr, any::<u16>(), any::<u16>())
            .prop_map(|(protocol, src, dst, sport, dport)| Tuple { protocol, src, dst, sport, dport });
        let peer = any::<u32>().prop_map(Ipv4Addr::from);
        (any::<bool>(), vni.clone(), vni, 0u16..=4094, tuple, peer, any::<[u8; 6]>(), any::<u32>()).prop_map(
            |(egress, a, b, vlan, tuple, peer, mac, idle_secs)| {
                if egress {
                    Entry::Egress(EgressEntry { src_vni: a, src_vlan: vlan, tuple, peer, dst_vni: b, idle_secs })
                } else {
                    Entry::Ingress(IngressEntry {
                        dst_vni: a,
                        dst_vlan: vlan,
                        dst_mac: Mac(mac),
                        tuple,
                        peer,
                        idle_secs,
                    })
                }
            },
        )
    }

    fn round_trip<A: Addr>(entries: &[Entry<A>], epoch: u64) {
        let mut buf = [0u8; MAX_LEN];
        let (len, n) = emit_grant(epoch, entries, &mut buf).unwrap();
        assert_eq!(n, entries.len().min(A::MAX_RECORDS));
        let m = Message::parse(&buf[..len]).unwrap();
        assert_eq!(m.epoch, epoch);
        let back: Vec<Entry<A>> = m.entries_of::<A>().collect::<Result<_, _>>().unwrap();
        assert_eq!(back, entries[..n]);
        let reports: Vec<ReportRecord<A>> = entries
            .iter()
            .map(|e| match e {
                Entry::Egress(g) => ReportRecord {
                    src_vni: g.src_vni,
                    src_vlan: g.src_vlan,
                    tuple: g.tuple,
                    packets: u64::from(g.idle_secs),
                    bytes: u64::from(g.idle_secs) << 20,
                },
                Entry::Ingress(g) => {
                    ReportRecord { src_vni: g.dst_vni, src_vlan: g.dst_vlan, tuple: g.tuple, packets: 0, bytes: 1 }
                }
            })
            .collect();
        let (len, n) = emit_report(&reports, &mut buf).unwrap();
        let back: Vec<ReportRecord<A>> =
            Message::parse(&buf[..len]).unwrap().reports_of::<A>().collect::<Result<_, _>>().unwrap();
        assert_eq!(back, reports[..n]);
    }

    proptest! {
        #[test]
        fn any_ipv4_entries_read_back_as_written(es in prop::collection::vec(arb_entry(any::<u32>().prop_map(Ipv4Addr::from)), 0..40), epoch in any::<u64>()) {
            round_trip(&es, epoch);
        }

        #[test]
        fn any_ipv6_entries_read_back_as_written(es in prop::collection::vec(arb_entry(any::<u128>().prop_map(Ipv6Addr::from)), 0..30), epoch in any::<u64>()) {
            round_trip(&es, epoch);
        }
    }
}
