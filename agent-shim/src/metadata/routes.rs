//! What the instance metadata service answers: one pure function, [`respond`], from the node's
//! latest `NodeConfig`, a request, the token store and the current time to the status, content
//! type and body ECS answers with at `http://100.100.100.200/` (reference §10; the items of
//! ECS's "Instance metadata items" page that this VPC has data for).
//!
//! Pure: no sockets, no clock, no randomness. Time is an argument and new tokens come from the
//! minter [`Tokens`] was built with, so formats and expiry are tested without a namespace;
//! [`super::server`] is the I/O around it. It must not answer for another instance than the
//! config's, list anything it would answer 404 for, or invent values the emulator does not have
//! (an item without data is left out, not filled with a placeholder).
//!
//! Formats follow Terway's `pkg/aliyun/metadata/metadata.go`, the client that must be satisfied:
//! - a value is the bare string, without a trailing newline (Terway keeps the first line);
//! - a directory lists one entry per line, sub-directories with a trailing `/`, and no newline
//!   after the last entry: Terway splits `network/interfaces/macs/` on `\n` and trims `/` from
//!   each line, so a final newline would hand it an empty MAC;
//! - `private-ipv4s` is a JSON array (`["10.0.4.22","10.0.4.30"]`, primary first), parsed with
//!   `json.Unmarshal`;
//! - `ipv6s` is a bracketed, comma-separated list without quotes (`[2408:4005::1,2408:4005::2]`):
//!   Terway strips the brackets and splits on commas. A NIC without IPv6 addresses has no
//!   `ipv6s`, and a NIC on an IPv4-only vSwitch no `ipv6-gateway` or `vswitch-ipv6-cidr-block`
//!   either: 404, which Terway reads as "no IPv6";
//! - `ipv6-gateway` is the vSwitch /64's last address minus two, the value Terway derives itself
//!   (`DeriveGatewayIP`) where it does not ask;
//! - `ipv4-prefixes` / `ipv6-prefixes` list the NIC's prefixes as `private-ipv4s` lists addresses
//!   (a JSON array). Terway's metadata client does not read them and ECS's metadata page does not
//!   show their format, so the shape is the one its sibling item has (inferred);
//! - `network/interfaces/macs/` lists the instance's `InUse` NICs (primary, secondary, trunk) in
//!   DeviceIndex order; trunk members are not NICs of the guest and are never listed
//!   (reference §6, inferred). An `Attaching` NIC has no entry yet, a `Detaching` one no more,
//!   as it has no device in the guest.
//!
//! Tokens ("security hardening mode"): `PUT /latest/api/token` with
//! `X-aliyun-ecs-metadata-token-ttl-seconds: 1..=21600` answers a plain-text token; a missing or
//! out-of-range TTL is 400. A request that sends `X-aliyun-ecs-metadata-token` must send a live
//! token, else 401, in both modes: a client that sends a token has opted into the hardened mode,
//! and a stale one must make it re-fetch (Terway re-fetches once on 401). This is inferred from
//! the mode's design (the cloud's `HttpTokens=optional|required`, as IMDSv2); ECS's documents
//! do not say what an invalid token gets in normal mode. With tokens required, a request
//! without one is 401 too.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use enifab_net::{Cidr, Mac};
use enifab_proto::v1 as pb;

use crate::view::IN_USE;

/// The header that carries a token.
pub const TOKEN_HEADER: &str = "x-aliyun-ecs-metadata-token";
/// The header of `PUT /latest/api/token` that sets the token's lifetime in seconds.
pub const TOKEN_TTL_HEADER: &str = "x-aliyun-ecs-metadata-token-ttl-seconds";
/// Where tokens are issued.
pub const TOKEN_PATH: &str = "/latest/api/token";
/// The longest lifetime ECS grants a token (6 h); Terway asks for exactly this.
pub const MAX_TOKEN_TTL_SECS: u64 = 21_600;
/// Live tokens kept at most; past it the one closest to expiry goes first. Bounds the memory a
/// process that PUTs in a loop can take.
pub const MAX_LIVE_TOKENS: usize = 1024;

const TEXT: &str = "text/plain";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Put,
    Other,
}

impl Method {
    pub fn parse(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "PUT" => Method::Put,
            _ => Method::Other,
        }
    }
}

/// The parts of an HTTP request the service looks at.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: Method,
    /// The path without the query, as sent: `/latest/meta-data/instance-id`.
    pub path: &'a str,
    /// [`TOKEN_HEADER`], when present (a value that is not text counts as `""`, an invalid token).
    pub token: Option<&'a str>,
    /// [`TOKEN_TTL_HEADER`], when present.
    pub token_ttl: Option<&'a str>,
}

impl<'a> Request<'a> {
    pub fn get(path: &'a str) -> Request<'a> {
        Request { method: Method::Get, path, token: None, token_ttl: None }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    fn ok(body: String) -> Response {
        Response { status: 200, content_type: TEXT, body }
    }

    fn error(status: u16) -> Response {
        let reason = match status {
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            405 => "Method Not Allowed",
            503 => "Service Unavailable",
            _ => "Error",
        };
        Response { status, content_type: TEXT, body: reason.to_string() }
    }
}

/// The tokens issued so far, each with its expiry, and whether requests must carry one.
pub struct Tokens {
    required: bool,
    live: HashMap<String, Instant>,
    mint: Box<dyn FnMut() -> String + Send>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("required", &self.required).field("live", &self.live.len()).finish()
    }
}

impl Tokens {
    /// `required`: the hardened-only mode (a request without a token is 401). `mint` makes a new
    /// unguessable token each call.
    pub fn new(required: bool, mint: impl FnMut() -> String + Send + 'static) -> Tokens {
        Tokens { required, live: HashMap::new(), mint: Box::new(mint) }
    }

    pub fn required(&self) -> bool {
        self.required
    }

    /// Tokens not yet known to be expired (expired ones are dropped lazily).
    pub fn live(&self) -> usize {
        self.live.len()
    }

    fn issue(&mut self, ttl: Duration, now: Instant) -> String {
        if self.live.len() >= MAX_LIVE_TOKENS {
            self.live.retain(|_, expiry| *expiry > now);
        }
        if self.live.len() >= MAX_LIVE_TOKENS
            && let Some(oldest) = self.live.iter().min_by_key(|(_, e)| **e).map(|(t, _)| t.clone())
        {
            self.live.remove(&oldest);
        }
        let token = (self.mint)();
        self.live.insert(token.clone(), now + ttl);
        token
    }

    /// Whether `token` was issued and has not expired at `now` (a token lives for
    /// `[issued, issued + ttl)`).
    fn valid(&mut self, token: &str, now: Instant) -> bool {
        match self.live.get(token) {
            Some(expiry) if *expiry > now => true,
            Some(_) => {
                self.live.remove(token);
                false
            }
            None => false,
        }
    }
}

/// The answer to `req` for the instance `config` describes (`None`: the shim has not received
/// its config yet, so there is nothing to answer with but 503, which Terway retries).
pub fn respond(config: Option<&pb::NodeConfig>, req: &Request<'_>, tokens: &mut Tokens, now: Instant) -> Response {
    if req.path == TOKEN_PATH {
        return match req.method {
            Method::Put => issue_token(req, tokens, now),
            _ => Response::error(405),
        };
    }
    if !matches!(req.method, Method::Get | Method::Head) {
        return Response::error(405);
    }
    match req.token {
        Some(t) if !tokens.valid(t, now) => return Response::error(401),
        None if tokens.required => return Response::error(401),
        _ => {}
    }
    let Some(config) = config else { return Response::error(503) };
    resolve(&tree(config), req.path)
}

fn issue_token(req: &Request<'_>, tokens: &mut Tokens, now: Instant) -> Response {
    let ttl = req.token_ttl.and_then(|v| v.trim().parse::<u64>().ok());
    match ttl {
        Some(secs @ 1..=MAX_TOKEN_TTL_SECS) => Response::ok(tokens.issue(Duration::from_secs(secs), now)),
        _ => Response::error(400),
    }
}

/// A node of the metadata tree: a value, or a directory whose entries keep the order in which
/// they are listed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Value(String),
    Dir(Vec<(String, Item)>),
}

/// Builds a directory, leaving out values the emulator has no data for (so what is listed is
/// exactly what answers 200).
#[derive(Default)]
struct Dir(Vec<(String, Item)>);

impl Dir {
    fn value(mut self, name: &str, value: impl Into<String>) -> Dir {
        let value = value.into();
        if !value.is_empty() {
            self.0.push((name.to_string(), Item::Value(value)));
        }
        self
    }

    fn dir(mut self, name: &str, dir: Dir) -> Dir {
        self.0.push((name.to_string(), dir.done()));
        self
    }

    fn done(self) -> Item {
        Item::Dir(self.0)
    }
}

/// A NIC as the guest sees it: `InUse`, with a MAC in ECS's lower-case form.
struct GuestNic<'a> {
    mac: String,
    nic: &'a pb::NodeNic,
}

fn guest_nics(c: &pb::NodeConfig) -> Vec<GuestNic<'_>> {
    c.nics
        .iter()
        .filter(|n| n.status == IN_USE)
        .filter_map(|nic| {
            let mac = nic.mac_address.parse::<Mac>().ok()?.to_string();
            Some(GuestNic { mac, nic })
        })
        .collect()
}

/// `10.0.4.0/24` → `255.255.255.0`.
fn netmask(cidr: &str) -> String {
    Cidr::parse_lenient(cidr).map(|c| c.netmask().to_string()).unwrap_or_default()
}

/// The NIC's addresses, primary first, as a JSON array.
fn private_ipv4s(nic: &pb::NodeNic) -> String {
    let mut ips: Vec<&str> = nic.private_ip_addresses.iter().map(String::as_str).collect();
    if ips.is_empty() && !nic.primary_ip_address.is_empty() {
        ips.push(&nic.primary_ip_address);
    }
    if ips.is_empty() {
        return String::new();
    }
    serde_json::to_string(&ips).unwrap_or_default()
}

/// `[a,b]`, or nothing for no addresses (the item is then absent).
fn ipv6s(nic: &pb::NodeNic) -> String {
    if nic.ipv6_addresses.is_empty() {
        return String::new();
    }
    format!("[{}]", nic.ipv6_addresses.join(","))
}

/// A JSON array of `items`, or nothing when there are none.
fn json_list(items: &[String]) -> String {
    if items.is_empty() { String::new() } else { serde_json::to_string(items).unwrap_or_default() }
}

/// `network/interfaces/macs/<mac>/`.
fn per_mac(c: &pb::NodeConfig, nic: &pb::NodeNic) -> Dir {
    Dir::default()
        .value("gateway", &nic.gateway)
        .value("ipv4-prefixes", json_list(&nic.ipv4_prefixes))
        .value("ipv6-gateway", &nic.ipv6_gateway)
        .value("ipv6-prefixes", json_list(&nic.ipv6_prefixes))
        .value("ipv6s", ipv6s(nic))
        .value("netmask", netmask(&nic.v_switch_cidr_block))
        .value("network-interface-id", &nic.network_interface_id)
        .value("primary-ip-address", &nic.primary_ip_address)
        .value("private-ipv4s", private_ipv4s(nic))
        .value("vpc-cidr-block", &c.vpc_cidr_block)
        .value("vpc-id", &c.vpc_id)
        .value("vswitch-cidr-block", &nic.v_switch_cidr_block)
        .value("vswitch-id", &nic.v_switch_id)
        .value("vswitch-ipv6-cidr-block", &nic.v_switch_ipv6_cidr_block)
}

/// `dynamic/instance-identity/document`: ECS's JSON keys (`instance-id`, `region-id`, …). The
/// emulator has no account, image or serial number, so `owner-account-id`, `image-id` and
/// `serial-number` are left out rather than made up.
fn identity_document(c: &pb::NodeConfig, primary: Option<&GuestNic<'_>>) -> String {
    let mut doc = serde_json::Map::new();
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            doc.insert(k.to_string(), serde_json::Value::String(v.to_string()));
        }
    };
    put("instance-id", &c.instance_id);
    put("instance-type", &c.instance_type);
    put("mac", primary.map_or("", |p| p.mac.as_str()));
    put("private-ipv4", primary.map_or("", |p| p.nic.primary_ip_address.as_str()));
    put("region-id", &c.region_id);
    put("zone-id", &c.zone_id);
    serde_json::Value::Object(doc).to_string()
}

/// Everything the service serves for this instance, rooted at `/`.
fn tree(c: &pb::NodeConfig) -> Item {
    let nics = guest_nics(c);
    // The instance-level `mac`, `private-ipv4` and `vswitch-*` items are eth0's.
    let primary = nics.iter().find(|n| n.nic.r#type == "Primary");
    let field = |f: fn(&pb::NodeNic) -> &str| primary.map_or(String::new(), |p| f(p.nic).to_string());
    let macs = nics.iter().fold(Dir::default(), |d, n| d.dir(&n.mac, per_mac(c, n.nic)));
    let meta = Dir::default()
        .value("hostname", &c.host_name)
        .dir(
            "instance",
            Dir::default().value("instance-name", &c.instance_name).value("instance-type", &c.instance_type),
        )
        .value("instance-id", &c.instance_id)
        .value("mac", primary.map_or(String::new(), |p| p.mac.clone()))
        .dir("network", Dir::default().dir("interfaces", Dir::default().dir("macs", macs)))
        .value("network-type", "vpc")
        .value("private-ipv4", field(|n| n.primary_ip_address.as_str()))
        .value("region-id", &c.region_id)
        .value("vpc-cidr-block", &c.vpc_cidr_block)
        .value("vpc-id", &c.vpc_id)
        .value("vswitch-cidr-block", field(|n| n.v_switch_cidr_block.as_str()))
        .value("vswitch-id", field(|n| n.v_switch_id.as_str()))
        .value("zone-id", &c.zone_id);
    let dynamic =
        Dir::default().dir("instance-identity", Dir::default().value("document", identity_document(c, primary)));
    let latest = Dir::default().dir("dynamic", dynamic).dir("meta-data", meta);
    Dir::default().dir("latest", latest).done()
}

/// Walks `path` down the tree. A directory answers its listing with or without a trailing `/`;
/// a value only without one; an empty segment (`a//b`) names nothing.
fn resolve(root: &Item, path: &str) -> Response {
    let Some(rest) = path.strip_prefix('/') else { return Response::error(404) };
    let (rest, dir_wanted) = match rest.strip_suffix('/') {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let mut node = root;
    if !rest.is_empty() {
        for seg in rest.split('/') {
            let Item::Dir(entries) = node else { return Response::error(404) };
            let Some((_, child)) = entries.iter().find(|(name, _)| name == seg) else {
                return Response::error(404);
            };
            node = child;
        }
    }
    match node {
        Item::Value(v) if !dir_wanted => Response::ok(v.clone()),
        Item::Value(_) => Response::error(404),
        Item::Dir(entries) => Response::ok(
            entries
                .iter()
                .map(|(name, item)| match item {
                    Item::Dir(_) => format!("{name}/"),
                    Item::Value(_) => name.clone(),
                })
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    }
}

#[cfg(test)]
mod test {
    use std::net::Ipv4Addr;

    use super::*;

    const BASE: &str = "/latest/meta-data/";
    const ETH0: &str = "00:16:3e:00:00:01";
    const ETH1: &str = "00:16:3e:00:00:02";
    const ETH2: &str = "00:16:3e:00:00:03";
    const NODE_VSW: (&str, &str, &str) = ("vsw-node", "10.0.4.0/24", "10.0.4.253");

    /// A NIC on the vSwitch `(id, cidr, gateway)`.
    fn nic(
        id: &str,
        kind: &str,
        index: u32,
        mac: &str,
        ips: &[&str],
        (vsw, cidr, gw): (&str, &str, &str),
    ) -> pb::NodeNic {
        pb::NodeNic {
            network_interface_id: id.into(),
            r#type: kind.into(),
            status: IN_USE.into(),
            mac_address: mac.into(),
            device_index: index,
            vni: 10 + index,
            primary_ip_address: ips[0].into(),
            private_ip_addresses: ips.iter().map(|s| s.to_string()).collect(),
            v_switch_id: vsw.into(),
            v_switch_cidr_block: cidr.into(),
            gateway: gw.into(),
            security_group_ids: vec!["sg-1".into()],
            members: vec![],
            ..Default::default()
        }
    }

    /// The seed's node: eth0 (primary, 10.0.4.22), eth1 the trunk with a member on VLAN 5, eth2
    /// a secondary ENI with two addresses, and an ENI still attaching.
    fn config() -> pb::NodeConfig {
        let mut trunk = nic("eni-trunk", "Trunk", 1, ETH1, &["10.0.4.23"], NODE_VSW);
        trunk.members.push(pb::NodeMember {
            network_interface_id: "eni-member".into(),
            status: IN_USE.into(),
            vlan_id: 5,
            mac_address: "00:16:3e:00:aa:01".into(),
            primary_ip_address: "10.0.8.5".into(),
            private_ip_addresses: vec!["10.0.8.5".into()],
            v_switch_id: "vsw-pod".into(),
            v_switch_cidr_block: "10.0.8.0/24".into(),
            gateway: "10.0.8.253".into(),
            security_group_ids: vec![],
            ..Default::default()
        });
        let attaching = pb::NodeNic {
            status: "Attaching".into(),
            ..nic("eni-att", "Secondary", 3, "00:16:3e:00:00:04", &["10.0.4.40"], NODE_VSW)
        };
        pb::NodeConfig {
            epoch: 7,
            region_id: "cn-hongkong".into(),
            zone_id: "cn-hongkong-b".into(),
            instance_id: "i-node1".into(),
            instance_name: "cn-hongkong.10.0.4.22".into(),
            instance_type: "ecs.g7.xlarge".into(),
            host_name: "iZnode1Z".into(),
            status: "Running".into(),
            vpc_id: "vpc-1".into(),
            vpc_cidr_block: "10.0.0.0/8".into(),
            fabric_address: "127.0.0.1:6081".into(),
            nics: vec![
                nic("eni-prim", "Primary", 0, ETH0, &["10.0.4.22"], NODE_VSW),
                trunk,
                nic(
                    "eni-sec",
                    "Secondary",
                    2,
                    "00:16:3E:00:00:03",
                    &["10.0.16.7", "10.0.16.8"],
                    ("vsw-sec", "10.0.16.0/20", "10.0.31.253"),
                ),
                attaching,
            ],
        }
    }

    fn open() -> Tokens {
        let mut n = 0;
        Tokens::new(false, move || {
            n += 1;
            format!("token-{n}")
        })
    }

    fn hardened() -> Tokens {
        let mut t = open();
        t.required = true;
        t
    }

    fn get(c: &pb::NodeConfig, path: &str) -> Response {
        respond(Some(c), &Request::get(path), &mut open(), Instant::now())
    }

    /// 200 and the body.
    fn body(c: &pb::NodeConfig, path: &str) -> String {
        let r = get(c, path);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(r.content_type, "text/plain");
        r.body
    }

    fn status(c: &pb::NodeConfig, path: &str) -> u16 {
        get(c, path).status
    }

    #[test]
    fn every_path_terway_reads() {
        let c = config();
        let m = |p: &str| body(&c, &format!("{BASE}{p}"));
        assert_eq!(m("instance-id"), "i-node1");
        assert_eq!(m("instance/instance-type"), "ecs.g7.xlarge");
        assert_eq!(m("region-id"), "cn-hongkong");
        assert_eq!(m("zone-id"), "cn-hongkong-b");
        assert_eq!(m("vswitch-id"), "vsw-node");
        assert_eq!(m("vpc-id"), "vpc-1");
        assert_eq!(m("vpc-cidr-block"), "10.0.0.0/8");
        assert_eq!(m("mac"), ETH0);
        // The primary, the trunk and the secondary in DeviceIndex order, each a directory; the
        // member and the attaching ENI are not NICs of the guest (yet). No final newline.
        assert_eq!(m("network/interfaces/macs/"), format!("{ETH0}/\n{ETH1}/\n{ETH2}/"));
        for (mac, id, primary, ips, vsw, cidr, gw) in [
            (ETH0, "eni-prim", "10.0.4.22", r#"["10.0.4.22"]"#, "vsw-node", "10.0.4.0/24", "10.0.4.253"),
            (ETH1, "eni-trunk", "10.0.4.23", r#"["10.0.4.23"]"#, "vsw-node", "10.0.4.0/24", "10.0.4.253"),
            (ETH2, "eni-sec", "10.0.16.7", r#"["10.0.16.7","10.0.16.8"]"#, "vsw-sec", "10.0.16.0/20", "10.0.31.253"),
        ] {
            let n = |p: &str| m(&format!("network/interfaces/macs/{mac}/{p}"));
            assert_eq!(n("network-interface-id"), id);
            assert_eq!(n("primary-ip-address"), primary);
            assert_eq!(n("private-ipv4s"), ips);
            assert_eq!(n("gateway"), gw);
            assert_eq!(n("vswitch-id"), vsw);
            assert_eq!(n("vswitch-cidr-block"), cidr);
            assert_eq!(n("vpc-id"), "vpc-1");
            assert_eq!(n("vpc-cidr-block"), "10.0.0.0/8");
            for v6 in ["ipv6s", "ipv6-gateway", "vswitch-ipv6-cidr-block"] {
                assert_eq!(status(&c, &format!("{BASE}network/interfaces/macs/{mac}/{v6}")), 404, "{mac} {v6}");
            }
        }
        assert_eq!(m(&format!("network/interfaces/macs/{ETH0}/netmask")), "255.255.255.0");
        assert_eq!(m(&format!("network/interfaces/macs/{ETH2}/netmask")), "255.255.240.0");
    }

    /// A dual-stack NIC with prefixes: the items Terway's dual-stack code reads, parsed the way
    /// it parses them (brackets stripped, split on commas), and the prefix lists.
    #[test]
    fn a_dual_stack_nic_answers_its_ipv6_items() {
        let mut c = config();
        let sec = &mut c.nics[2];
        sec.ipv6_addresses = vec!["2408:4005:3000:4::1".into(), "2408:4005:3000:4::2".into()];
        sec.v_switch_ipv6_cidr_block = "2408:4005:3000:4::/64".into();
        sec.ipv6_gateway = "2408:4005:3000:4:ffff:ffff:ffff:fffd".into();
        sec.ipv4_prefixes = vec!["10.0.16.16/28".into()];
        sec.ipv6_prefixes = vec!["2408:4005:3000:4:1::/80".into()];
        let n = |p: &str| body(&c, &format!("{BASE}network/interfaces/macs/{ETH2}/{p}"));
        let v6 = n("ipv6s");
        let parsed: Vec<std::net::Ipv6Addr> =
            v6.replace(['[', ']'], "").split(',').map(|s| s.trim().parse().expect("an IPv6 address")).collect();
        assert_eq!(parsed.len(), 2, "{v6}");
        assert_eq!(n("ipv6-gateway"), "2408:4005:3000:4:ffff:ffff:ffff:fffd");
        assert_eq!(n("vswitch-ipv6-cidr-block"), "2408:4005:3000:4::/64");
        assert_eq!(n("ipv4-prefixes"), r#"["10.0.16.16/28"]"#);
        assert_eq!(n("ipv6-prefixes"), r#"["2408:4005:3000:4:1::/80"]"#);
        // The IPv4-only NICs beside it still have none.
        assert_eq!(status(&c, &format!("{BASE}network/interfaces/macs/{ETH0}/ipv6s")), 404);
        assert_eq!(status(&c, &format!("{BASE}network/interfaces/macs/{ETH0}/ipv4-prefixes")), 404);
    }

    /// What Terway does with the bodies (metadata.go `getValue`/`getArray`): the first line with
    /// `/` trimmed, or every line with `/` trimmed; `private-ipv4s` through a JSON decoder.
    #[test]
    fn bodies_parse_the_way_terway_parses_them() {
        let c = config();
        let listing = body(&c, &format!("{BASE}network/interfaces/macs/"));
        let macs: Vec<&str> = listing.split('\n').map(|l| l.trim_matches('/')).collect();
        assert_eq!(macs, [ETH0, ETH1, ETH2], "no empty entry from a trailing newline");
        for mac in macs {
            let ips = body(&c, &format!("{BASE}network/interfaces/macs/{mac}/private-ipv4s"));
            let parsed: Vec<Ipv4Addr> = serde_json::from_str(&ips).expect("a JSON array of addresses");
            assert!(!parsed.is_empty());
            let gw = body(&c, &format!("{BASE}network/interfaces/macs/{mac}/gateway"));
            assert!(gw.split('\n').next().unwrap().parse::<Ipv4Addr>().is_ok(), "{gw}");
        }
    }

    #[test]
    fn listings() {
        let c = config();
        assert_eq!(body(&c, "/"), "latest/");
        assert_eq!(body(&c, "/latest/"), "dynamic/\nmeta-data/");
        let top = "hostname\ninstance/\ninstance-id\nmac\nnetwork/\nnetwork-type\nprivate-ipv4\nregion-id\n\
                   vpc-cidr-block\nvpc-id\nvswitch-cidr-block\nvswitch-id\nzone-id";
        assert_eq!(body(&c, BASE), top);
        // A directory without its trailing slash still lists.
        assert_eq!(body(&c, "/latest/meta-data"), top);
        assert_eq!(body(&c, &format!("{BASE}instance/")), "instance-name\ninstance-type");
        assert_eq!(body(&c, &format!("{BASE}network/")), "interfaces/");
        assert_eq!(body(&c, &format!("{BASE}network/interfaces/")), "macs/");
        assert_eq!(
            body(&c, &format!("{BASE}network/interfaces/macs/{ETH1}/")),
            "gateway\nnetmask\nnetwork-interface-id\nprimary-ip-address\nprivate-ipv4s\nvpc-cidr-block\nvpc-id\n\
             vswitch-cidr-block\nvswitch-id"
        );
        assert_eq!(body(&c, "/latest/dynamic/"), "instance-identity/");
        assert_eq!(body(&c, "/latest/dynamic/instance-identity/"), "document");
        // Everything listed answers, recursively.
        fn walk(c: &pb::NodeConfig, dir: &str, seen: &mut usize) {
            for entry in body(c, dir).split('\n') {
                *seen += 1;
                if entry.ends_with('/') {
                    walk(c, &format!("{dir}{entry}"), seen);
                } else {
                    assert_eq!(status(c, &format!("{dir}{entry}")), 200, "{dir}{entry}");
                }
            }
        }
        let mut seen = 0;
        walk(&c, "/", &mut seen);
        assert!(seen > 40, "{seen}");
    }

    #[test]
    fn instance_level_items() {
        let c = config();
        assert_eq!(body(&c, &format!("{BASE}private-ipv4")), "10.0.4.22");
        assert_eq!(body(&c, &format!("{BASE}hostname")), "iZnode1Z");
        assert_eq!(body(&c, &format!("{BASE}instance/instance-name")), "cn-hongkong.10.0.4.22");
        assert_eq!(body(&c, &format!("{BASE}vswitch-cidr-block")), "10.0.4.0/24");
        assert_eq!(body(&c, &format!("{BASE}network-type")), "vpc");
        let doc: serde_json::Value =
            serde_json::from_str(&body(&c, "/latest/dynamic/instance-identity/document")).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "instance-id": "i-node1", "instance-type": "ecs.g7.xlarge", "mac": ETH0,
                "private-ipv4": "10.0.4.22", "region-id": "cn-hongkong", "zone-id": "cn-hongkong-b",
            })
        );
    }

    #[test]
    fn unknown_paths_are_404() {
        let c = config();
        for p in [
            "/latest/meta-data/nothing",
            "/latest/meta-data/instance-id/",
            "/latest/meta-data/instance-id/more",
            "/latest/meta-data//instance-id",
            "/latest/user-data",
            "/latest/meta-data/network/interfaces/macs/00:16:3e:00:aa:01/network-interface-id",
            "/latest/meta-data/network/interfaces/macs/00:16:3e:00:00:04/",
            "/latest/meta-data/network/interfaces/macs/00:16:3e:99:99:99/gateway",
            "/latest/meta-data/ram/security-credentials/",
            "/2016-01-01/meta-data/instance-id",
            "/meta-data/instance-id",
            "latest/meta-data/instance-id",
            "",
        ] {
            assert_eq!(status(&c, p), 404, "{p:?}");
        }
    }

    #[test]
    fn empty_fields_are_neither_listed_nor_served() {
        let mut c = config();
        c.host_name.clear();
        c.nics[0].gateway.clear();
        assert_eq!(status(&c, &format!("{BASE}hostname")), 404);
        assert!(!body(&c, BASE).contains("hostname"));
        assert_eq!(status(&c, &format!("{BASE}network/interfaces/macs/{ETH0}/gateway")), 404);
        assert!(!body(&c, &format!("{BASE}network/interfaces/macs/{ETH0}/")).contains("gateway"));
    }

    #[test]
    fn attach_detach_assign_and_unassign_change_the_answers() {
        let mut c = config();
        c.nics[3].status = IN_USE.into();
        assert!(body(&c, &format!("{BASE}network/interfaces/macs/")).ends_with("\n00:16:3e:00:00:04/"));
        c.nics[2].private_ip_addresses.pop();
        assert_eq!(body(&c, &format!("{BASE}network/interfaces/macs/{ETH2}/private-ipv4s")), r#"["10.0.16.7"]"#);
        c.nics[2].status = "Detaching".into();
        assert_eq!(status(&c, &format!("{BASE}network/interfaces/macs/{ETH2}/network-interface-id")), 404);
        assert!(!body(&c, &format!("{BASE}network/interfaces/macs/")).contains(ETH2));
    }

    #[test]
    fn no_config_yet_is_503() {
        let r = respond(None, &Request::get("/latest/meta-data/instance-id"), &mut open(), Instant::now());
        assert_eq!(r.status, 503);
    }

    #[test]
    fn methods() {
        let c = config();
        for m in [Method::Put, Method::Other] {
            let r = respond(
                Some(&c),
                &Request { method: m, ..Request::get("/latest/meta-data/instance-id") },
                &mut open(),
                Instant::now(),
            );
            assert_eq!(r.status, 405, "{m:?}");
        }
        let head = Request { method: Method::Head, ..Request::get("/latest/meta-data/instance-id") };
        assert_eq!(respond(Some(&c), &head, &mut open(), Instant::now()).status, 200);
        let get_token = Request { token_ttl: Some("60"), ..Request::get(TOKEN_PATH) };
        assert_eq!(respond(Some(&c), &get_token, &mut open(), Instant::now()).status, 405);
        assert_eq!(Method::parse("GET"), Method::Get);
        assert_eq!(Method::parse("get"), Method::Other, "methods are case-sensitive");
    }

    fn put_token(tokens: &mut Tokens, ttl: Option<&str>, now: Instant) -> Response {
        let req = Request { method: Method::Put, path: TOKEN_PATH, token: None, token_ttl: ttl };
        respond(None, &req, tokens, now)
    }

    fn get_with(c: &pb::NodeConfig, tokens: &mut Tokens, token: Option<&str>, now: Instant) -> u16 {
        let req = Request { token, ..Request::get("/latest/meta-data/instance-id") };
        respond(Some(c), &req, tokens, now).status
    }

    #[test]
    fn token_ttl_header() {
        let mut t = open();
        let now = Instant::now();
        for bad in [None, Some(""), Some("0"), Some("21601"), Some("-1"), Some("1.5"), Some("sixty")] {
            assert_eq!(put_token(&mut t, bad, now).status, 400, "{bad:?}");
        }
        assert_eq!(t.live(), 0);
        for good in ["1", "21600", " 60 "] {
            let r = put_token(&mut t, Some(good), now);
            assert_eq!((r.status, r.content_type), (200, "text/plain"), "{good}");
            assert!(r.body.starts_with("token-"));
        }
        assert_eq!(t.live(), 3);
    }

    #[test]
    fn hardened_mode_needs_a_live_token() {
        let c = config();
        let mut t = hardened();
        let t0 = Instant::now();
        assert_eq!(get_with(&c, &mut t, None, t0), 401, "no token");
        assert_eq!(get_with(&c, &mut t, Some("forged"), t0), 401, "unknown token");
        let token = put_token(&mut t, Some("60"), t0).body;
        assert_eq!(get_with(&c, &mut t, Some(&token), t0), 200);
        assert_eq!(get_with(&c, &mut t, Some(&token), t0 + Duration::from_secs(59)), 200);
        assert_eq!(get_with(&c, &mut t, Some(&token), t0 + Duration::from_secs(60)), 401, "expired");
        assert_eq!(t.live(), 0, "an expired token is forgotten");
        // Terway's recovery: on 401, fetch a new token and retry once.
        let fresh = put_token(&mut t, Some("21600"), t0 + Duration::from_secs(60)).body;
        assert_ne!(fresh, token);
        assert_eq!(get_with(&c, &mut t, Some(&fresh), t0 + Duration::from_secs(61)), 200);
        // The token endpoint itself needs no token, and 401 comes before 404.
        let req = Request { token: Some("forged"), ..Request::get("/latest/meta-data/nothing") };
        assert_eq!(respond(Some(&c), &req, &mut t, t0).status, 401);
    }

    #[test]
    fn normal_mode_answers_without_a_token_but_not_with_a_bad_one() {
        let c = config();
        let mut t = open();
        let t0 = Instant::now();
        assert_eq!(get_with(&c, &mut t, None, t0), 200);
        assert_eq!(get_with(&c, &mut t, Some("forged"), t0), 401);
        assert_eq!(get_with(&c, &mut t, Some(""), t0), 401);
        let token = put_token(&mut t, Some("1"), t0).body;
        assert_eq!(get_with(&c, &mut t, Some(&token), t0), 200);
        assert_eq!(get_with(&c, &mut t, Some(&token), t0 + Duration::from_secs(1)), 401, "expired");
        assert_eq!(get_with(&c, &mut t, None, t0 + Duration::from_secs(1)), 200);
    }

    #[test]
    fn live_tokens_are_bounded() {
        let mut t = open();
        let t0 = Instant::now();
        let first = put_token(&mut t, Some("10"), t0).body;
        for i in 1..MAX_LIVE_TOKENS {
            put_token(&mut t, Some("100"), t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(t.live(), MAX_LIVE_TOKENS);
        // Full: the token closest to expiry (the 10 s one) makes room for the new one.
        let newest = put_token(&mut t, Some("100"), t0 + Duration::from_secs(1)).body;
        assert_eq!(t.live(), MAX_LIVE_TOKENS);
        let c = config();
        assert_eq!(get_with(&c, &mut t, Some(&first), t0 + Duration::from_secs(2)), 401);
        assert_eq!(get_with(&c, &mut t, Some(&newest), t0 + Duration::from_secs(2)), 200);
        // Once they have expired, they are swept before anything live is evicted.
        put_token(&mut t, Some("5"), t0 + Duration::from_secs(200));
        assert_eq!(t.live(), 1);
    }
}
