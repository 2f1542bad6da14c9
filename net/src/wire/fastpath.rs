//! The fast path's control messages between the fabric and a node shim, on the same UDP path as
//! the frames: which flows a node's kernel may carry by itself (*grants*), which verdicts are no
//! longer true (*revocations*, acknowledged), and what the kernel carried (*reports*).
//!
//! ```text
//! | Geneve header: version 0, no options, O (OAM) = 1, protocol 0x88B5, VNI 0               |
//! | kind (1) | 0 0 0 | epoch (8, big endian) | count (2) | 0 0 |     = 16 bytes             |
//! | count × 40-byte records (grants: egress or ingress entries; reports: counters)          |
//! ```
//!
//! A control datagram is a Geneve packet with the OAM bit and protocol 0x88B5 (IEEE 802's
//! "local experimental" EtherType), never an Ethernet frame: [`geneve::Header::parse`] refuses it
//! (OAM and protocol), so a shim or fabric that does not know these messages drops them as it
//! drops any other stray datagram, and no tenant frame can be mistaken for one. Who may send
//! them is the receiver's check (the fabric's registered shim addresses; the shim's fabric
//! address), as for frames.
//!
//! The epoch names a configuration of the fabric (its high half changes with every emulator
//! run): an entry granted under epoch E is valid only while the node's current epoch is E, so
//! one revocation (a new epoch) invalidates every cached verdict at once.
//!
//! Pure: parsers take untrusted bytes and return values or [`Malformed`]; emitters write into
//! the caller's slice. Fixed-size records, so a message is parsed without allocating.
//!
//! [`geneve::Header::parse`]: super::geneve::Header::parse

use core::net::Ipv4Addr;

use super::ethernet::Mac;
use super::geneve::Vni;
use super::{BufferTooSmall, Malformed, check_room};

/// Protocol type of a control datagram (IEEE 802 local experimental EtherType 1).
pub const PROTOCOL_CONTROL: u16 = 0x88B5;
/// Geneve header (8) + message header (8 + 8).
pub const HEADER_LEN: usize = 24;
/// Every record, grant or report.
pub const RECORD_LEN: usize = 40;
/// Records per datagram: a message stays well under any MTU (24 + 32 × 40 = 1,304 bytes).
pub const MAX_RECORDS: usize = 32;
/// The largest control datagram.
pub const MAX_LEN: usize = HEADER_LEN + MAX_RECORDS * RECORD_LEN;

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

/// A flow's addresses as the sender's packets carry them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
}

impl Tuple {
    pub fn reversed(&self) -> Tuple {
        Tuple { protocol: self.protocol, src: self.dst, dst: self.src, sport: self.dport, dport: self.sport }
    }

    fn write(&self, b: &mut [u8]) {
        b[0] = self.protocol;
        b[1..5].copy_from_slice(&self.src.octets());
        b[5..9].copy_from_slice(&self.dst.octets());
        b[9..11].copy_from_slice(&self.sport.to_be_bytes());
        b[11..13].copy_from_slice(&self.dport.to_be_bytes());
    }

    fn read(b: &[u8]) -> Tuple {
        Tuple {
            protocol: b[0],
            src: ip(&b[1..5]),
            dst: ip(&b[5..9]),
            sport: u16::from_be_bytes([b[9], b[10]]),
            dport: u16::from_be_bytes([b[11], b[12]]),
        }
    }
}

/// On the sending node: packets of `tuple` leaving the device of port `src_vni` (member VLAN
/// `src_vlan`, 0 = the port's own ENI) go encapsulated to `peer` (the receiving node's
/// fast-path address) with VXLAN id `dst_vni`, the receiving port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressEntry {
    pub src_vni: Vni,
    pub src_vlan: u16,
    pub tuple: Tuple,
    pub peer: Ipv4Addr,
    pub dst_vni: Vni,
    /// Idle time after which the kernel stops using the entry (the flow's conntrack timeout).
    pub idle_secs: u32,
}

/// On the receiving node: packets of `tuple` arriving from `peer` with VXLAN id `dst_vni` are
/// delivered on that port, rewritten as the fabric rewrites them: source MAC the gateway's,
/// destination `dst_mac`, tagged `dst_vlan` (0 = untagged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngressEntry {
    pub dst_vni: Vni,
    pub dst_vlan: u16,
    pub dst_mac: Mac,
    pub tuple: Tuple,
    pub peer: Ipv4Addr,
    pub idle_secs: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Egress(EgressEntry),
    Ingress(IngressEntry),
}

/// What the kernel carried for one egress entry since the last report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportRecord {
    pub src_vni: Vni,
    pub src_vlan: u16,
    pub tuple: Tuple,
    pub packets: u64,
    pub bytes: u64,
}

/// A parsed control message; its records are read lazily.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: Kind,
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
        let epoch = u64::from_be_bytes(h[4..12].try_into().unwrap_or([0; 8]));
        let count = usize::from(u16::from_be_bytes([h[12], h[13]]));
        if count > MAX_RECORDS {
            return Err(Malformed("too many records"));
        }
        let records = buf.get(HEADER_LEN..HEADER_LEN + count * RECORD_LEN).ok_or(Malformed("records truncated"))?;
        if buf.len() != HEADER_LEN + count * RECORD_LEN {
            return Err(Malformed("trailing bytes after the records"));
        }
        match kind {
            Kind::Revoke | Kind::Ack if count != 0 => return Err(Malformed("records in a revocation")),
            _ => {}
        }
        Ok(Message { kind, epoch, records })
    }

    /// The entries of a grant or an eviction (empty for any other kind); a malformed record is
    /// an `Err` item, the others are still read.
    pub fn entries(&self) -> impl Iterator<Item = Result<Entry, Malformed>> + 'a {
        let records = if matches!(self.kind, Kind::Grant | Kind::Evict) { self.records } else { &[] };
        records.chunks_exact(RECORD_LEN).map(read_entry)
    }

    /// The records of a report (empty for any other kind).
    pub fn reports(&self) -> impl Iterator<Item = Result<ReportRecord, Malformed>> + 'a {
        let records = if self.kind == Kind::Report { self.records } else { &[] };
        records.chunks_exact(RECORD_LEN).map(read_report)
    }
}

/// Writes a message with no records (a revocation or an acknowledgement).
pub fn emit_bare(kind: Kind, epoch: u64, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
    emit_header(kind, epoch, 0, out)
}

/// Writes a grant of up to [`MAX_RECORDS`] entries; returns the length and how many were taken.
pub fn emit_grant(epoch: u64, entries: &[Entry], out: &mut [u8]) -> Result<(usize, usize), BufferTooSmall> {
    emit_entries(Kind::Grant, epoch, entries, out)
}

/// Writes an eviction of up to [`MAX_RECORDS`] entries; returns the length and how many were
/// taken.
pub fn emit_evict(entries: &[Entry], out: &mut [u8]) -> Result<(usize, usize), BufferTooSmall> {
    emit_entries(Kind::Evict, 0, entries, out)
}

fn emit_entries(kind: Kind, epoch: u64, entries: &[Entry], out: &mut [u8]) -> Result<(usize, usize), BufferTooSmall> {
    let n = entries.len().min(MAX_RECORDS);
    let len = emit_header(kind, epoch, n, out)?;
    for (e, rec) in entries[..n].iter().zip(out[HEADER_LEN..len].chunks_exact_mut(RECORD_LEN)) {
        write_entry(e, rec);
    }
    Ok((len, n))
}

/// Writes a report of up to [`MAX_RECORDS`] records; returns the length and how many were taken.
pub fn emit_report(records: &[ReportRecord], out: &mut [u8]) -> Result<(usize, usize), BufferTooSmall> {
    let n = records.len().min(MAX_RECORDS);
    let len = emit_header(Kind::Report, 0, n, out)?;
    for (r, rec) in records[..n].iter().zip(out[HEADER_LEN..len].chunks_exact_mut(RECORD_LEN)) {
        rec.fill(0);
        rec[0..4].copy_from_slice(&r.src_vni.get().to_be_bytes());
        rec[4..6].copy_from_slice(&r.src_vlan.to_be_bytes());
        r.tuple.write(&mut rec[6..19]);
        rec[19..27].copy_from_slice(&r.packets.to_be_bytes());
        rec[27..35].copy_from_slice(&r.bytes.to_be_bytes());
    }
    Ok((len, n))
}

fn emit_header(kind: Kind, epoch: u64, count: usize, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
    let len = HEADER_LEN + count * RECORD_LEN;
    check_room(out, len)?;
    out[..HEADER_LEN].fill(0);
    out[1] = 0x80;
    out[2..4].copy_from_slice(&PROTOCOL_CONTROL.to_be_bytes());
    out[GENEVE_LEN] = kind as u8;
    out[GENEVE_LEN + 4..GENEVE_LEN + 12].copy_from_slice(&epoch.to_be_bytes());
    out[GENEVE_LEN + 12..GENEVE_LEN + 14].copy_from_slice(&(count as u16).to_be_bytes());
    Ok(len)
}

fn write_entry(e: &Entry, rec: &mut [u8]) {
    rec.fill(0);
    match e {
        Entry::Egress(g) => {
            rec[0] = KIND_EGRESS;
            rec[1..5].copy_from_slice(&g.src_vni.get().to_be_bytes());
            rec[5..7].copy_from_slice(&g.src_vlan.to_be_bytes());
            g.tuple.write(&mut rec[7..20]);
            rec[20..24].copy_from_slice(&g.peer.octets());
            rec[24..28].copy_from_slice(&g.dst_vni.get().to_be_bytes());
            rec[28..32].copy_from_slice(&g.idle_secs.to_be_bytes());
        }
        Entry::Ingress(g) => {
            rec[0] = KIND_INGRESS;
            rec[1..5].copy_from_slice(&g.dst_vni.get().to_be_bytes());
            rec[5..7].copy_from_slice(&g.dst_vlan.to_be_bytes());
            g.tuple.write(&mut rec[7..20]);
            rec[20..24].copy_from_slice(&g.peer.octets());
            rec[24..30].copy_from_slice(&g.dst_mac.0);
            rec[30..34].copy_from_slice(&g.idle_secs.to_be_bytes());
        }
    }
}

fn read_entry(rec: &[u8]) -> Result<Entry, Malformed> {
    let vni = |b: &[u8]| Vni::new(u32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok_or(Malformed("VNI out of range"));
    let vlan = u16::from_be_bytes([rec[5], rec[6]]);
    if vlan > 4094 {
        return Err(Malformed("VLAN id out of range"));
    }
    let tuple = Tuple::read(&rec[7..20]);
    let peer = ip(&rec[20..24]);
    match rec[0] {
        KIND_EGRESS => Ok(Entry::Egress(EgressEntry {
            src_vni: vni(&rec[1..5])?,
            src_vlan: vlan,
            tuple,
            peer,
            dst_vni: vni(&rec[24..28])?,
            idle_secs: u32::from_be_bytes([rec[28], rec[29], rec[30], rec[31]]),
        })),
        KIND_INGRESS => {
            let mut dst_mac = Mac::default();
            dst_mac.0.copy_from_slice(&rec[24..30]);
            Ok(Entry::Ingress(IngressEntry {
                dst_vni: vni(&rec[1..5])?,
                dst_vlan: vlan,
                dst_mac,
                tuple,
                peer,
                idle_secs: u32::from_be_bytes([rec[30], rec[31], rec[32], rec[33]]),
            }))
        }
        _ => Err(Malformed("unknown entry kind")),
    }
}

fn read_report(rec: &[u8]) -> Result<ReportRecord, Malformed> {
    let src_vni =
        Vni::new(u32::from_be_bytes([rec[0], rec[1], rec[2], rec[3]])).ok_or(Malformed("VNI out of range"))?;
    let src_vlan = u16::from_be_bytes([rec[4], rec[5]]);
    if src_vlan > 4094 {
        return Err(Malformed("VLAN id out of range"));
    }
    let u64_at = |at: usize| u64::from_be_bytes(rec[at..at + 8].try_into().unwrap_or([0; 8]));
    Ok(ReportRecord { src_vni, src_vlan, tuple: Tuple::read(&rec[6..19]), packets: u64_at(19), bytes: u64_at(27) })
}

fn ip(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::geneve;

    fn tuple() -> Tuple {
        Tuple { protocol: 6, src: Ipv4Addr::new(10, 0, 1, 5), dst: Ipv4Addr::new(10, 0, 2, 9), sport: 40000, dport: 80 }
    }

    fn entries() -> [Entry; 2] {
        [
            Entry::Egress(EgressEntry {
                src_vni: Vni::new(7).unwrap(),
                src_vlan: 12,
                tuple: tuple(),
                peer: Ipv4Addr::new(198, 18, 0, 3),
                dst_vni: Vni::new(0xabcdef).unwrap(),
                idle_secs: 910,
            }),
            Entry::Ingress(IngressEntry {
                dst_vni: Vni::new(7).unwrap(),
                dst_vlan: 0,
                dst_mac: Mac([0, 0x16, 0x3e, 1, 2, 3]),
                tuple: tuple().reversed(),
                peer: Ipv4Addr::new(198, 18, 0, 3),
                idle_secs: 30,
            }),
        ]
    }

    #[test]
    fn grants_reports_and_revocations_read_back_as_written() {
        let mut buf = [0u8; MAX_LEN];
        let (len, n) = emit_grant(0x1234_5678_0000_0009, &entries(), &mut buf).unwrap();
        assert_eq!((len, n), (HEADER_LEN + 2 * RECORD_LEN, 2));
        let m = Message::parse(&buf[..len]).unwrap();
        assert_eq!((m.kind, m.epoch), (Kind::Grant, 0x1234_5678_0000_0009));
        assert_eq!(m.entries().collect::<Result<Vec<_>, _>>().unwrap(), entries());
        assert_eq!(m.reports().count(), 0);

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
        assert_eq!(Message::parse(&buf[..len]).unwrap(), Message { kind: Kind::Ack, epoch: 42, records: &[] });
    }

    #[test]
    fn a_control_message_is_never_a_frame_and_a_frame_never_a_control_message() {
        let mut buf = [0u8; MAX_LEN];
        let len = emit_bare(Kind::Revoke, 1, &mut buf).unwrap();
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
    }

    #[test]
    fn no_bytes_make_the_parser_panic_and_bad_counts_are_refused() {
        let mut buf = [0u8; MAX_LEN];
        let (len, _) = emit_grant(9, &entries(), &mut buf).unwrap();
        for cut in 0..len {
            let _ = Message::parse(&buf[..cut]).map(|m| m.entries().count());
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
        // Random bytes with the control marker.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..10_000 {
            let mut b = [0u8; 120];
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
            let n = (state as usize) % b.len();
            if let Ok(m) = Message::parse(&b[..n]) {
                let _ = (m.entries().count(), m.reports().count());
            }
        }
    }
}
