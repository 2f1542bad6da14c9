//! Geneve (RFC 8926) as used between a node shim and the emulator: one UDP datagram carries one
//! Ethernet frame of one ENI device, named by the VNI (the *port id* the emulator assigned).
//!
//! ```text
//!  0                   1                   2                   3
//! |Ver|  Opt Len  |O|C|    Rsvd.  |   Protocol Type = 0x6558      |
//! |        Virtual Network Identifier (VNI)       |    Reserved   |
//! | Option Class = 0xFF45         | Type = 0x01 |R|R|R| Len = 3   |
//! | virtio_net_hdr (10 bytes)                     | pad 0 0       |
//! | Ethernet frame ...
//! ```
//!
//! The only option we define carries the frame's `virtio_net_hdr` (class 0xFF45 is in the
//! experimental range of RFC 8926 §4.3.1). Absent option = plain frame. Unknown options are
//! skipped unless their critical bit is set (RFC 8926 §3.5: a tunnel endpoint must drop a packet
//! with a critical option it does not understand). Only protocol 0x6558 (Transparent Ethernet
//! Bridging) and version 0 are accepted. This module knows nothing about what a VNI maps to.

use core::fmt;

use super::vnet::{self, VnetHdr};
use super::{BufferTooSmall, be16, check_room};

/// The IANA port for Geneve; the emulator's default data-plane port.
pub const UDP_PORT: u16 = 6081;
/// Fixed part of the header, before options.
pub const HEADER_LEN: usize = 8;
/// Transparent Ethernet Bridging: the payload is an Ethernet frame.
pub const PROTOCOL_ETHERNET: u16 = 0x6558;
/// Option class of the virtio-net header option (experimental range).
pub const VNET_OPTION_CLASS: u16 = 0xFF45;
/// Option type of the virtio-net header option (not critical).
pub const VNET_OPTION_TYPE: u8 = 0x01;
/// Whole option on the wire: 4-byte option header + 10-byte header + 2 zero bytes.
pub const VNET_OPTION_LEN: usize = 16;
/// Largest header [`Header::emit`] writes.
pub const MAX_EMIT_LEN: usize = HEADER_LEN + VNET_OPTION_LEN;

const CRITICAL: u8 = 0x80;

/// A 24-bit Virtual Network Identifier: the emulator's id for one ENI device of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vni(u32);

impl Vni {
    pub const MAX: u32 = 0xff_ffff;

    /// `None` when `v` does not fit in 24 bits.
    pub const fn new(v: u32) -> Option<Vni> {
        if v <= Self::MAX { Some(Vni(v)) } else { None }
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Vni {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a datagram is not a Geneve packet we can use. Each variant is a distinct drop reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than the fixed header, or than the option length it announces.
    Truncated,
    /// Version other than 0.
    Version(u8),
    /// An option's header or data runs past the options area.
    OptionOverrun,
    /// Our virtio-net option with a length other than 3 words, or present twice.
    BadVnetOption,
    /// An option we do not understand, with the critical bit set.
    CriticalOption { class: u16, kind: u8 },
    /// Payload is not Ethernet.
    Protocol(u16),
}

impl fmt::Display for Error {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => f.write_str("geneve header truncated"),
            Error::Version(v) => write!(f, "geneve version {v} not supported"),
            Error::OptionOverrun => f.write_str("geneve option runs past the options area"),
            Error::BadVnetOption => f.write_str("virtio-net option has a bad length or repeats"),
            Error::CriticalOption { class, kind } => {
                write!(f, "unknown critical geneve option class {class:#06x} type {kind:#04x}")
            }
            Error::Protocol(p) => write!(f, "geneve protocol {p:#06x} is not Ethernet"),
        }
    }
}

/// The meaning of a Geneve header as far as enifab is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub vni: Vni,
    /// OAM (control) packet: never a tenant frame.
    pub oam: bool,
    /// `Some` when the virtio-net option was present (even if all zero); kept so that the
    /// output mirrors the input.
    pub vnet: Option<VnetHdr>,
}

impl Header {
    /// Parses the header and returns it with the inner Ethernet frame.
    #[inline]
    pub fn parse(buf: &[u8]) -> Result<(Header, &[u8]), Error> {
        if buf.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let version = buf[0] >> 6;
        if version != 0 {
            return Err(Error::Version(version));
        }
        let opt_len = usize::from(buf[0] & 0x3f) * 4;
        let oam = buf[1] & 0x80 != 0;
        let protocol = u16::from_be_bytes([buf[2], buf[3]]);
        let vni = Vni(u32::from_be_bytes([0, buf[4], buf[5], buf[6]]));
        let total = HEADER_LEN + opt_len;
        let (options, payload) = match (buf.get(HEADER_LEN..total), buf.get(total..)) {
            (Some(o), Some(p)) => (o, p),
            _ => return Err(Error::Truncated),
        };
        // Options are checked before the protocol: a critical option we do not know may change
        // how the rest must be read (RFC 8926 §3.5).
        let vnet = parse_options(options)?;
        if protocol != PROTOCOL_ETHERNET {
            return Err(Error::Protocol(protocol));
        }
        Ok((Header { vni, oam, vnet }, payload))
    }

    /// Bytes [`Header::emit`] will write.
    #[inline]
    pub fn len(&self) -> usize {
        HEADER_LEN + if self.vnet.is_some() { VNET_OPTION_LEN } else { 0 }
    }

    /// Never zero; present for clippy's `len_without_is_empty`.
    #[inline]
    pub fn is_empty(&self) -> bool {
        false
    }

    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let len = self.len();
        check_room(buf, len)?;
        let opt_words = (len - HEADER_LEN) / 4;
        buf[0] = opt_words as u8; // version 0 in the top bits
        buf[1] = if self.oam { 0x80 } else { 0 }; // C = 0: our only option is not critical
        buf[2..4].copy_from_slice(&PROTOCOL_ETHERNET.to_be_bytes());
        buf[4..7].copy_from_slice(&self.vni.0.to_be_bytes()[1..]);
        buf[7] = 0;
        if let Some(v) = &self.vnet {
            let o = &mut buf[HEADER_LEN..len];
            o[0..2].copy_from_slice(&VNET_OPTION_CLASS.to_be_bytes());
            o[2] = VNET_OPTION_TYPE;
            o[3] = ((VNET_OPTION_LEN - 4) / 4) as u8;
            o[4..4 + vnet::LEN].copy_from_slice(&v.to_bytes());
            o[4 + vnet::LEN..].fill(0);
        }
        Ok(len)
    }
}

#[inline]
fn parse_options(mut options: &[u8]) -> Result<Option<VnetHdr>, Error> {
    let mut vnet = None;
    while !options.is_empty() {
        let (Some(class), Some(&kind), Some(&len)) = (be16(options, 0), options.get(2), options.get(3)) else {
            return Err(Error::OptionOverrun);
        };
        let whole = 4 + usize::from(len & 0x1f) * 4;
        let Some(data) = options.get(4..whole) else {
            return Err(Error::OptionOverrun);
        };
        if class == VNET_OPTION_CLASS && kind & !CRITICAL == VNET_OPTION_TYPE {
            if whole != VNET_OPTION_LEN || vnet.is_some() {
                return Err(Error::BadVnetOption);
            }
            vnet = VnetHdr::parse(data).ok();
        } else if kind & CRITICAL != 0 {
            return Err(Error::CriticalOption { class, kind });
        }
        options = &options[whole..];
    }
    Ok(vnet)
}

/// Writes `header` followed by `frame` into `out`: what a shim does for every frame it reads
/// from a TAP.
#[inline]
pub fn encapsulate(header: &Header, frame: &[u8], out: &mut [u8]) -> Result<usize, BufferTooSmall> {
    let h = header.len();
    check_room(out, h + frame.len())?;
    header.emit(out)?;
    out[h..h + frame.len()].copy_from_slice(frame);
    Ok(h + frame.len())
}

#[cfg(test)]
mod test {
    use super::*;

    /// VNI 100, no options, a 14-byte Ethernet header as payload.
    static PLAIN: [u8; 22] = [
        0x00, 0x00, 0x65, 0x58, // ver 0, opt len 0, flags 0, protocol 0x6558
        0x00, 0x00, 0x64, 0x00, // VNI 100, reserved
        0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x16, 0x3e, 0x00, 0x00, 0x01, 0x08, 0x00,
    ];

    /// VNI 300 with the virtio-net option: TCPv4 GSO, NEEDS_CSUM, hdr_len 66, gso_size 1448,
    /// csum_start 34, csum_offset 16.
    static WITH_VNET: [u8; 38] = [
        0x04, 0x00, 0x65, 0x58, // opt len 4 words
        0x00, 0x01, 0x2c, 0x00, // VNI 300
        0xff, 0x45, 0x01, 0x03, // class 0xFF45, type 1, length 3 words
        0x01, 0x01, 0x42, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00, 0x00, 0x00, // hdr + pad
        0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x16, 0x3e, 0x00, 0x00, 0x01, 0x08, 0x00,
    ];

    fn tso() -> VnetHdr {
        VnetHdr {
            flags: vnet::F_NEEDS_CSUM,
            gso_type: vnet::GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        }
    }

    #[test]
    fn test_parse_plain() {
        let (h, payload) = Header::parse(&PLAIN).unwrap();
        assert_eq!(h, Header { vni: Vni::new(100).unwrap(), oam: false, vnet: None });
        assert_eq!(payload, &PLAIN[8..]);
    }

    #[test]
    fn test_parse_vnet() {
        let (h, payload) = Header::parse(&WITH_VNET).unwrap();
        assert_eq!(h, Header { vni: Vni::new(300).unwrap(), oam: false, vnet: Some(tso()) });
        assert_eq!(payload, &WITH_VNET[24..]);
    }

    #[test]
    fn test_emit_round_trip() {
        for fixture in [&PLAIN[..], &WITH_VNET[..]] {
            let (h, payload) = Header::parse(fixture).unwrap();
            let mut out = [0xaa; 64];
            let n = encapsulate(&h, payload, &mut out).unwrap();
            assert_eq!(&out[..n], fixture);
        }
    }

    #[test]
    fn emit_into_short_buffer_fails() {
        let h = Header { vni: Vni::new(1).unwrap(), oam: false, vnet: Some(tso()) };
        assert!(h.emit(&mut [0; 23]).is_err());
        assert_eq!(h.emit(&mut [0; 24]), Ok(24));
    }

    #[test]
    fn unknown_non_critical_option_is_skipped() {
        let mut d = Vec::from(&WITH_VNET[..24]);
        d[0] = 0x06; // 6 words: an extra 8-byte option in front of ours
        d.splice(8..8, [0x01, 0x02, 0x33, 0x01, 9, 9, 9, 9]);
        d.extend_from_slice(&PLAIN[8..]);
        let (h, _) = Header::parse(&d).unwrap();
        assert_eq!(h.vnet, Some(tso()));
    }

    #[test]
    fn unknown_critical_option_is_refused() {
        let mut d = Vec::from(&PLAIN[..8]);
        d[0] = 0x01;
        d[1] = 0x40; // C bit
        d.extend_from_slice(&[0x01, 0x02, 0x83, 0x00]);
        assert_eq!(Header::parse(&d), Err(Error::CriticalOption { class: 0x0102, kind: 0x83 }));
    }

    #[test]
    fn bad_headers() {
        assert_eq!(Header::parse(&PLAIN[..7]), Err(Error::Truncated));
        let mut v1 = PLAIN;
        v1[0] = 0x40;
        assert_eq!(Header::parse(&v1), Err(Error::Version(1)));
        let mut ipv4 = PLAIN;
        ipv4[2..4].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(Header::parse(&ipv4), Err(Error::Protocol(0x0800)));
        // Opt len says 4 words but only 3 are there.
        assert_eq!(Header::parse(&WITH_VNET[..20]), Err(Error::Truncated));
        // Our option claims 4 words inside a 4-word area: runs over.
        let mut over = WITH_VNET;
        over[11] = 0x04;
        assert_eq!(Header::parse(&over), Err(Error::OptionOverrun));
        // Our option with 2 words (and a 4-word area holding 2 options).
        let mut short = WITH_VNET;
        short[11] = 0x02;
        assert_eq!(Header::parse(&short), Err(Error::BadVnetOption));
        // Option header cut in the middle.
        let mut cut = Vec::from(&PLAIN[..8]);
        cut[0] = 0x01;
        cut.extend_from_slice(&[0xff, 0x45, 0x01, 0x03]);
        assert_eq!(Header::parse(&cut), Err(Error::OptionOverrun));
    }

    #[test]
    fn duplicate_vnet_option_is_refused() {
        let mut d = Vec::from(&WITH_VNET[..24]);
        d[0] = 0x08;
        d.extend_from_slice(&WITH_VNET[8..24]);
        assert_eq!(Header::parse(&d), Err(Error::BadVnetOption));
    }

    #[test]
    fn oam_bit_is_reported() {
        let mut d = PLAIN;
        d[1] = 0x80;
        assert!(Header::parse(&d).unwrap().0.oam);
    }

    #[test]
    fn vni_is_24_bits() {
        assert!(Vni::new(0xff_ffff).is_some());
        assert!(Vni::new(0x100_0000).is_none());
    }
}
