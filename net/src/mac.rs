//! Ethernet MAC addresses as the VPC hands them out and as frames carry them.
//!
//! Cloud behaviour followed: ENIs get addresses in Alibaba's OUI `00:16:3e`, and the VPC's
//! virtual gateway is `ee:ff:ff:ff:ff:ff`: it answers every ARP request (and, for IPv6, every
//! neighbour solicitation) with that address and is the source of every delivered frame.
//!
//! Must not: allocate to display (the pipeline's traces format MACs per frame) or accept
//! anything but six `:`-separated pairs of hex digits (either case) when parsing.

use core::fmt;
use core::str::FromStr;

/// A MAC address; `.0` is the six bytes as a frame carries them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The first three bytes of every ENI's MAC.
    pub const ALIBABA_OUI: [u8; 3] = [0x00, 0x16, 0x3e];
    /// The VPC gateway's MAC: every ARP/NDP answer and the source of every delivered frame.
    pub const GATEWAY: Mac = Mac([0xee, 0xff, 0xff, 0xff, 0xff, 0xff]);
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    pub const fn octets(self) -> [u8; 6] {
        self.0
    }

    /// Group bit: broadcast and multicast destinations, which a VPC never floods.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }
}

impl From<[u8; 6]> for Mac {
    fn from(b: [u8; 6]) -> Mac {
        Mac(b)
    }
}

/// Fixtures compare a parsed MAC with a literal byte array.
impl PartialEq<[u8; 6]> for Mac {
    fn eq(&self, other: &[u8; 6]) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A string that is not `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadMac;

impl fmt::Display for BadMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a MAC address (aa:bb:cc:dd:ee:ff)")
    }
}

impl std::error::Error for BadMac {}

impl FromStr for Mac {
    type Err = BadMac;

    fn from_str(s: &str) -> Result<Mac, BadMac> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let p = parts.next().ok_or(BadMac)?;
            // `from_str_radix` alone would take "+f".
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(BadMac);
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| BadMac)?;
        }
        if parts.next().is_some() {
            return Err(BadMac);
        }
        Ok(Mac(out))
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(|_| serde::de::Error::custom(format!("bad MAC {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let m: Mac = "00:16:3e:0a:1b:2c".parse().unwrap();
        assert_eq!(m.to_string(), "00:16:3e:0a:1b:2c");
        assert_eq!("EE:ff:ff:ff:ff:ff".parse(), Ok(Mac::GATEWAY));
        for bad in [
            "00:16:3e:0a:1b",
            "00:16:3e:0a:1b:2c:00",
            "e:ff:ff:ff:ff:fff",
            "+e:ff:ff:ff:ff:ff",
            "",
            "zz:ff:ff:ff:ff:ff",
        ] {
            assert_eq!(bad.parse::<Mac>(), Err(BadMac), "{bad}");
        }
    }

    #[test]
    fn multicast_bit() {
        assert!(Mac::BROADCAST.is_multicast());
        assert!(Mac([0x01, 0x00, 0x5e, 0, 0, 1]).is_multicast());
        assert!(!Mac::GATEWAY.is_multicast());
        assert_eq!(format!("{:?}", Mac::GATEWAY), "ee:ff:ff:ff:ff:ff");
    }
}
