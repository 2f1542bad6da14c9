//! Resource identifiers and MAC addresses.
//!
//! Cloud IDs look like `eni-j6c8ozr0e4b3rbvbpzmf`: a type prefix, then 20 lowercase alphanumerics
//! whose first characters name the region (`j6c` is Hong Kong, `bp1` Hangzhou). Terway routes IDs
//! that start with `leni-`/`hdeni-` to other APIs, so ENIs must start with `eni-`.
//!
//! The generator is deterministic: a seed chosen once when the data directory is created and a
//! counter persisted with the state. Each ID embeds a bijective scramble of the counter, so two IDs
//! can never collide, yet they look random like the cloud's. MACs take 24 bits of another scramble
//! under the `00:16:3e` OUI; the region checks them against the MACs in use.

use serde::{Deserialize, Serialize};

use crate::net::Mac;

/// What an ID names; the prefix is the cloud's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    Vpc,
    VRouter,
    RouteTable,
    VSwitch,
    SecurityGroup,
    SecurityGroupRule,
    Instance,
    Eni,
    /// A CLB instance (`lb-…`).
    LoadBalancer,
    /// A CLB vServer group (`rsp-…`, the cloud's "real server pool").
    VServerGroup,
}

impl IdKind {
    pub fn prefix(self) -> &'static str {
        match self {
            IdKind::Vpc => "vpc",
            IdKind::VRouter => "vrt",
            IdKind::RouteTable => "vtb",
            IdKind::VSwitch => "vsw",
            IdKind::SecurityGroup => "sg",
            IdKind::SecurityGroupRule => "sgr",
            IdKind::Instance => "i",
            IdKind::Eni => "eni",
            IdKind::LoadBalancer => "lb",
            IdKind::VServerGroup => "rsp",
        }
    }
}

/// The highest fabric port the model hands out. The VNIs above it belong to the running
/// server's own ports (the internet side's hosts), which are not resources of the model.
pub const MAX_PORT: u32 = 0xEF_FFFF;

/// The persisted state of the generator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdGen {
    pub seed: u64,
    pub counter: u64,
    /// The last fabric port number handed out (see [`IdGen::next_port`]).
    #[serde(default)]
    pub last_port: u32,
}

/// The region code real IDs start with; unknown regions get none.
fn region_code(region: &str) -> &'static str {
    match region {
        "cn-hongkong" => "j6c",
        "cn-hangzhou" => "bp1",
        "cn-beijing" => "2ze",
        "cn-shanghai" => "uf6",
        "cn-shenzhen" => "wz9",
        "cn-qingdao" => "m5e",
        "ap-southeast-1" => "t4n",
        "us-west-1" => "rj9",
        "eu-central-1" => "gw8",
        _ => "",
    }
}

/// A bijection on u64 (xor-shift and odd-multiply steps are each invertible), so distinct
/// counters give distinct outputs.
fn scramble(mut x: u64) -> u64 {
    x ^= x >> 31;
    x = x.wrapping_mul(0x7fb5_d329_728e_a185);
    x ^= x >> 27;
    x = x.wrapping_mul(0x81da_def4_bc2d_d44d);
    x ^ (x >> 33)
}

const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

fn base36(mut x: u64, width: usize, out: &mut String) {
    let mut buf = vec![b'0'; width];
    for slot in buf.iter_mut().rev() {
        *slot = ALPHABET[(x % 36) as usize];
        x /= 36;
    }
    out.push_str(std::str::from_utf8(&buf).expect("alphabet is ASCII"));
}

impl IdGen {
    pub fn new(seed: u64) -> IdGen {
        IdGen { seed, counter: 0, last_port: 0 }
    }

    /// The next fabric port number (a Geneve VNI: 24 bits, never 0, below [`MAX_PORT`]) that
    /// `in_use` does not hold. Numbers are not reused until the space wraps, so a shim that
    /// still knows an old port cannot reach the ENI that came after it.
    pub fn next_port(&mut self, in_use: impl Fn(u32) -> bool) -> u32 {
        loop {
            self.last_port = if self.last_port >= MAX_PORT { 1 } else { self.last_port + 1 };
            if !in_use(self.last_port) {
                return self.last_port;
            }
        }
    }

    fn next_value(&mut self) -> u64 {
        self.counter += 1;
        scramble(self.counter ^ self.seed)
    }

    /// A new ID, e.g. `eni-j6c3k9…` (prefix, dash, 20 characters).
    pub fn next_id(&mut self, kind: IdKind, region: &str) -> String {
        let unique = self.next_value();
        let code = region_code(region);
        let mut id = String::with_capacity(24);
        id.push_str(kind.prefix());
        id.push('-');
        id.push_str(code);
        // 13 base-36 digits hold any u64, so this part alone is unique; the rest is filler
        // that makes every ID 20 characters long like the cloud's.
        base36(unique, 13, &mut id);
        let filler = 20 - code.len() - 13;
        base36(scramble(unique ^ 0x5bd1_e995) % 36u64.pow(filler as u32), filler, &mut id);
        id
    }

    /// A MAC candidate in the Alibaba OUI. Unique for the first 2^24 calls; the caller still
    /// checks it against the MACs in use.
    pub fn next_mac(&mut self) -> Mac {
        self.counter += 1;
        // A bijection on 24 bits: multiply by an odd constant modulo 2^24, then xor the seed.
        let low = (self.counter.wrapping_mul(0x9e_3779) ^ self.seed) & 0xff_ffff;
        let [_, a, b, c] = (low as u32).to_be_bytes();
        let o = Mac::ALIBABA_OUI;
        Mac([o[0], o[1], o[2], a, b, c])
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_look_like_the_cloud_and_never_repeat() {
        let mut g = IdGen::new(0xdead_beef);
        let mut seen = HashSet::new();
        for _ in 0..20_000 {
            let id = g.next_id(IdKind::Eni, "cn-hongkong");
            assert!(id.starts_with("eni-j6c"), "{id}");
            assert_eq!(id.len(), 4 + 20, "{id}");
            assert!(id[4..].bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
            assert!(seen.insert(id));
        }
        let other = g.next_id(IdKind::Instance, "xx-unknown-1");
        assert!(other.starts_with("i-") && other.len() == 22, "{other}");
    }

    #[test]
    fn macs_are_in_the_oui_and_distinct() {
        let mut g = IdGen::new(7);
        let mut seen = HashSet::new();
        for _ in 0..50_000 {
            let m = g.next_mac();
            assert_eq!(&m.0[..3], &Mac::ALIBABA_OUI);
            assert!(seen.insert(m));
        }
    }

    #[test]
    fn ports_wrap_below_the_servers_own_range() {
        let mut g = IdGen { last_port: MAX_PORT - 1, ..IdGen::new(1) };
        assert_eq!(g.next_port(|_| false), MAX_PORT);
        assert_eq!(g.next_port(|_| false), 1);
        assert_eq!(g.next_port(|p| p == 2), 3);
    }
}
