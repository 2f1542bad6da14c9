//! The region: every resource of one emulated cloud region, its indexes, its clock-driven
//! transitions, ClientToken idempotency and the hooks persistence uses.
//!
//! One server emulates one region (flag `--region`, default `cn-hongkong`). Every action is a
//! method on [`Region`] (implemented next to its resource, in `vpc.rs`, `eni.rs`, …) that
//! **validates everything first and changes state only after**: a failed action leaves the region
//! exactly as it was, which is what lets the server commit a call atomically.
//!
//! Asynchronous cloud operations (attach, detach, delete, start, stop) set a transitional status
//! and a due time computed from the caller's `now` and [`TransitionDelays`]; [`Region::advance`]
//! completes whatever is due. With a delay of zero the transition completes inside the call.
//! Because a pending transition is stored as its due time, a transition in flight when the
//! process dies finishes on the first `advance` after [`Region::restore`].
//!
//! Persistence is the caller's: every mutation marks the resource it touched; after a call the
//! server drains [`Region::take_dirty`] and writes [`Region::export_row`] of each key (or deletes
//! the row when the resource is gone) in one transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::catalog::{InstanceType, builtin_types};
use crate::eni::{Attachment, Eni, EniStatus, EniType};
use crate::error::ModelError;
use crate::ids::{IdGen, IdKind};
use crate::instance::Instance;
use crate::ipam::{Ipam, Ipam6};
use crate::net::Cidr;
use crate::net::Mac;
use crate::security_group::SecurityGroup;
use crate::slb::{LoadBalancer, VServerGroup};
use crate::time::Millis;
use crate::vpc::{VSwitch, Vpc};
use crate::{Result, Tag};

/// How long the cloud's asynchronous operations take. The reference measures Terway's polling
/// (2–3 s sleeps, then backoff), so anything up to about a second is realistic; tests use zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionDelays {
    pub attach_ms: u64,
    pub detach_ms: u64,
    pub delete_ms: u64,
    pub start_stop_ms: u64,
}

impl TransitionDelays {
    pub const ZERO: TransitionDelays = TransitionDelays { attach_ms: 0, detach_ms: 0, delete_ms: 0, start_stop_ms: 0 };
}

impl Default for TransitionDelays {
    fn default() -> Self {
        TransitionDelays { attach_ms: 600, detach_ms: 400, delete_ms: 300, start_stop_ms: 800 }
    }
}

/// Quotas the cloud lets accounts raise; defaults are the documented ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Security groups per ENI (5 by default, raisable to 10/16).
    pub security_groups_per_eni: usize,
    /// Rules per security group, ingress and egress together (100 to 200 depending on the doc's year).
    pub rules_per_security_group: usize,
    /// vSwitches per VPC.
    pub vswitches_per_vpc: usize,
    /// Private IPv4 addresses an ENI may hold while not attached (`SecondaryPrivateIpAddressCount`
    /// is documented as 1–49, plus the primary).
    pub ips_per_unattached_eni: u32,
    /// ClientToken records are kept this long.
    pub client_token_ttl_ms: u64,
    /// `BackendServers` entries one SLB call may carry. The API reference says 20, the
    /// cloud-controller-manager sends batches of 40 (its `--sg-batch-size` default), so the
    /// emulator takes 40.
    pub backend_servers_per_call: usize,
    /// Backend servers of one load balancer, all its vServer groups together (ACK's
    /// troubleshooting guide: 200 by default); past it `InstanceBackendServerNumberOverLimit`.
    pub backend_servers_per_load_balancer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            security_groups_per_eni: 5,
            rules_per_security_group: 200,
            vswitches_per_vpc: 150,
            ips_per_unattached_eni: 50,
            client_token_ttl_ms: 24 * 3600 * 1000,
            backend_servers_per_call: 40,
            backend_servers_per_load_balancer: 200,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionConfig {
    pub region_id: String,
    pub zones: Vec<String>,
    pub delays: TransitionDelays,
    pub limits: Limits,
    /// Where internet-facing load balancers take their public address from (the emulator's
    /// stand-in for the region's public IP inventory; `--public-pool`).
    pub public_pool: Cidr,
}

/// The default public pool: a /24 of Alibaba Cloud Hong Kong's public range that holds the seed
/// article's SLB address 8.210.162.178.
pub const DEFAULT_PUBLIC_POOL: &str = "8.210.162.0/24";

impl RegionConfig {
    /// A region with the cloud's zone names for well-known regions (`cn-hongkong-b/c/d`), or
    /// `<region>-a/b/c` otherwise.
    pub fn new(region_id: &str) -> RegionConfig {
        let suffixes: &[&str] = match region_id {
            "cn-hongkong" => &["b", "c", "d"],
            "cn-hangzhou" => &["b", "g", "h", "i", "j", "k"],
            "cn-beijing" => &["a", "c", "g", "h", "i"],
            _ => &["a", "b", "c"],
        };
        RegionConfig {
            region_id: region_id.to_string(),
            zones: suffixes.iter().map(|s| format!("{region_id}-{s}")).collect(),
            delays: TransitionDelays::default(),
            limits: Limits::default(),
            public_pool: DEFAULT_PUBLIC_POOL.parse().expect("a valid constant"),
        }
    }
}

/// The kinds of persisted rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Vpc,
    VSwitch,
    SecurityGroup,
    Instance,
    Eni,
    InstanceType,
    ClientToken,
    Meta,
    /// A CLB instance with its listeners and tags (one row).
    LoadBalancer,
    VServerGroup,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Vpc,
        Kind::VSwitch,
        Kind::SecurityGroup,
        Kind::Instance,
        Kind::Eni,
        Kind::InstanceType,
        Kind::ClientToken,
        Kind::Meta,
        Kind::LoadBalancer,
        Kind::VServerGroup,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Vpc => "vpc",
            Kind::VSwitch => "vswitch",
            Kind::SecurityGroup => "security_group",
            Kind::Instance => "instance",
            Kind::Eni => "eni",
            Kind::InstanceType => "instance_type",
            Kind::ClientToken => "client_token",
            Kind::Meta => "meta",
            Kind::LoadBalancer => "load_balancer",
            Kind::VServerGroup => "vserver_group",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

const META_IDGEN: &str = "idgen";

/// What a ClientToken remembers: which request it came with and what it answered.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenRecord {
    pub params_hash: u64,
    pub result: serde_json::Value,
    pub at: Millis,
}

/// One region's resources. Fields are crate-visible so each resource module implements its own
/// actions (moto's backend mixins); everything outside the crate goes through methods.
#[derive(Debug)]
pub struct Region {
    pub(crate) config: RegionConfig,
    pub(crate) vpcs: BTreeMap<String, Vpc>,
    pub(crate) vswitches: BTreeMap<String, VSwitch>,
    pub(crate) sgs: BTreeMap<String, SecurityGroup>,
    pub(crate) instances: BTreeMap<String, Instance>,
    pub(crate) enis: BTreeMap<String, Eni>,
    pub(crate) types: BTreeMap<String, InstanceType>,
    pub(crate) tokens: BTreeMap<String, TokenRecord>,
    pub(crate) load_balancers: BTreeMap<String, LoadBalancer>,
    pub(crate) vserver_groups: BTreeMap<String, VServerGroup>,
    pub(crate) idgen: IdGen,

    // Indexes, rebuilt on restore, never persisted.
    pub(crate) ipam: HashMap<String, Ipam>,
    /// The IPv6 allocators of the vSwitches that have a /64.
    pub(crate) ipam6: HashMap<String, Ipam6>,
    /// Every ENI IPv6 address to the ENI holding it (addresses are unique region-wide: each VPC
    /// has its own /56).
    pub(crate) ip6_owners: HashMap<Ipv6Addr, String>,
    /// Every private IP to the ENIs holding it (one per VPC at most).
    pub(crate) ip_owners: HashMap<Ipv4Addr, Vec<String>>,
    pub(crate) macs: HashSet<Mac>,
    /// Security group → ENIs in it.
    pub(crate) sg_members: HashMap<String, BTreeSet<String>>,
    /// Instance → DeviceIndex → ENI, for the instance's own NICs (primary, secondary, trunk).
    pub(crate) nics: HashMap<String, BTreeMap<u32, String>>,
    /// Trunk ENI → VLAN id (= the member's DeviceIndex) → member ENI.
    pub(crate) members: HashMap<String, BTreeMap<u32, String>>,
    /// Fabric port (Geneve VNI) → the NIC it carries.
    pub(crate) ports: HashMap<u32, String>,
    /// Transitions waiting for their due time.
    pub(crate) pending: BTreeSet<(Millis, Kind, String)>,
    pub(crate) token_expiry: BTreeSet<(Millis, String)>,
    /// The public pool's allocator: addresses held by internet-facing load balancers.
    pub(crate) public_ipam: Ipam,

    dirty: BTreeSet<(Kind, String)>,
    epoch: u64,
}

impl Region {
    /// An empty region. `seed` makes its IDs and MACs differ from other data directories'.
    pub fn new(config: RegionConfig, seed: u64) -> Region {
        let mut r = Region::empty(config, IdGen::new(seed));
        r.mark(Kind::Meta, META_IDGEN);
        r
    }

    fn empty(config: RegionConfig, idgen: IdGen) -> Region {
        Region {
            public_ipam: Ipam::new(config.public_pool),
            config,
            vpcs: BTreeMap::new(),
            vswitches: BTreeMap::new(),
            sgs: BTreeMap::new(),
            instances: BTreeMap::new(),
            enis: BTreeMap::new(),
            types: builtin_types().into_iter().map(|t| (t.instance_type_id.clone(), t)).collect(),
            tokens: BTreeMap::new(),
            load_balancers: BTreeMap::new(),
            vserver_groups: BTreeMap::new(),
            idgen,
            ipam: HashMap::new(),
            ipam6: HashMap::new(),
            ip6_owners: HashMap::new(),
            ip_owners: HashMap::new(),
            macs: HashSet::new(),
            sg_members: HashMap::new(),
            nics: HashMap::new(),
            members: HashMap::new(),
            ports: HashMap::new(),
            pending: BTreeSet::new(),
            token_expiry: BTreeSet::new(),
            dirty: BTreeSet::new(),
            epoch: 0,
        }
    }

    pub fn config(&self) -> &RegionConfig {
        &self.config
    }

    pub fn region_id(&self) -> &str {
        &self.config.region_id
    }

    /// Change the transition delays of a running region (they are configuration, not state).
    pub fn set_delays(&mut self, delays: TransitionDelays) {
        self.config.delays = delays;
    }

    /// A counter that moves on every change; watchers compare it to know when to look again.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    // ---- persistence ------------------------------------------------------------------------

    pub(crate) fn mark(&mut self, kind: Kind, id: &str) {
        self.epoch += 1;
        self.dirty.insert((kind, id.to_string()));
    }

    /// The keys changed since the last call. For each, [`Region::export_row`] gives the row to
    /// write, or `None` when the resource is gone and its row must be deleted.
    pub fn take_dirty(&mut self) -> Vec<(Kind, String)> {
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// The JSON body stored for one resource.
    pub fn export_row(&self, kind: Kind, id: &str) -> Option<String> {
        fn json<T: Serialize>(v: Option<&T>) -> Option<String> {
            v.map(|v| serde_json::to_string(v).expect("model types serialize"))
        }
        match kind {
            Kind::Vpc => json(self.vpcs.get(id)),
            Kind::VSwitch => json(self.vswitches.get(id)),
            Kind::SecurityGroup => json(self.sgs.get(id)),
            Kind::Instance => json(self.instances.get(id)),
            Kind::Eni => json(self.enis.get(id)),
            Kind::InstanceType => json(self.types.get(id).filter(|t| t.custom)),
            Kind::ClientToken => json(self.tokens.get(id)),
            Kind::Meta if id == META_IDGEN => json(Some(&self.idgen)),
            Kind::Meta => None,
            Kind::LoadBalancer => json(self.load_balancers.get(id)),
            Kind::VServerGroup => json(self.vserver_groups.get(id)),
        }
    }

    /// Every row, as the first write of a new data directory or for a full dump.
    pub fn export_all(&self) -> Vec<(Kind, String, String)> {
        let mut keys: Vec<(Kind, String)> = Vec::new();
        keys.extend(self.vpcs.keys().map(|k| (Kind::Vpc, k.clone())));
        keys.extend(self.vswitches.keys().map(|k| (Kind::VSwitch, k.clone())));
        keys.extend(self.sgs.keys().map(|k| (Kind::SecurityGroup, k.clone())));
        keys.extend(self.instances.keys().map(|k| (Kind::Instance, k.clone())));
        keys.extend(self.enis.keys().map(|k| (Kind::Eni, k.clone())));
        keys.extend(self.types.values().filter(|t| t.custom).map(|t| (Kind::InstanceType, t.instance_type_id.clone())));
        keys.extend(self.tokens.keys().map(|k| (Kind::ClientToken, k.clone())));
        keys.extend(self.load_balancers.keys().map(|k| (Kind::LoadBalancer, k.clone())));
        keys.extend(self.vserver_groups.keys().map(|k| (Kind::VServerGroup, k.clone())));
        keys.push((Kind::Meta, META_IDGEN.to_string()));
        keys.into_iter().filter_map(|(k, id)| self.export_row(k, &id).map(|body| (k, id, body))).collect()
    }

    /// Rebuild a region from stored rows. Fails on a row that does not parse, or on rows that
    /// break an invariant (two ENIs with one IP, …): a corrupt store is reported, not patched.
    pub fn restore(
        config: RegionConfig,
        rows: impl IntoIterator<Item = (Kind, String, String)>,
    ) -> Result<Region, String> {
        fn parse<T: DeserializeOwned>(kind: Kind, id: &str, body: &str) -> Result<T, String> {
            serde_json::from_str(body).map_err(|e| format!("{} row {id}: {e}", kind.as_str()))
        }
        let mut r = Region::empty(config, IdGen::default());
        let mut have_meta = false;
        for (kind, id, body) in rows {
            match kind {
                Kind::Vpc => {
                    r.vpcs.insert(id.clone(), parse(kind, &id, &body)?);
                }
                Kind::VSwitch => {
                    r.vswitches.insert(id.clone(), parse(kind, &id, &body)?);
                }
                Kind::SecurityGroup => {
                    r.sgs.insert(id.clone(), parse(kind, &id, &body)?);
                }
                Kind::Instance => {
                    r.instances.insert(id.clone(), parse(kind, &id, &body)?);
                }
                Kind::Eni => {
                    r.enis.insert(id.clone(), parse(kind, &id, &body)?);
                }
                Kind::InstanceType => {
                    r.types.insert(id.clone(), parse(kind, &id, &body)?);
                }
                Kind::ClientToken => {
                    r.tokens.insert(id.clone(), parse(kind, &id, &body)?);
                }
                Kind::Meta if id == META_IDGEN => {
                    r.idgen = parse(kind, &id, &body)?;
                    have_meta = true;
                }
                Kind::Meta => {}
                Kind::LoadBalancer => {
                    r.load_balancers.insert(id.clone(), parse(kind, &id, &body)?);
                }
                Kind::VServerGroup => {
                    r.vserver_groups.insert(id.clone(), parse(kind, &id, &body)?);
                }
            }
        }
        if !have_meta && (!r.enis.is_empty() || !r.load_balancers.is_empty()) {
            return Err("the store has resources but no id generator state".into());
        }
        r.rebuild_indexes()?;
        Ok(r)
    }

    fn rebuild_indexes(&mut self) -> Result<(), String> {
        for (id, vsw) in &self.vswitches {
            self.ipam.insert(id.clone(), Ipam::new(vsw.cidr));
            if let Some(c6) = vsw.ipv6_cidr {
                self.ipam6.insert(id.clone(), Ipam6::new(c6));
            }
        }
        for (id, inst) in &self.instances {
            self.nics.entry(id.clone()).or_default();
            if let Some(due) = inst.transition_due {
                self.pending.insert((due, Kind::Instance, id.clone()));
            }
        }
        for (id, eni) in &self.enis {
            let ipam = self
                .ipam
                .get_mut(&eni.v_switch_id)
                .ok_or_else(|| format!("ENI {id} is in unknown vSwitch {}", eni.v_switch_id))?;
            for ip in eni.ips() {
                if !ipam.reserve(ip) {
                    return Err(format!("ENI {id}: IP {ip} is held twice or is outside its vSwitch"));
                }
                self.ip_owners.entry(ip).or_default().push(id.clone());
            }
            for p in &eni.ipv4_prefixes {
                if !ipam.is_block_free(*p) {
                    return Err(format!("ENI {id}: prefix {p} is held twice or is outside its vSwitch"));
                }
                ipam.reserve_block(*p);
            }
            if !eni.ipv6_addresses.is_empty() || !eni.ipv6_prefixes.is_empty() {
                let ipam6 = self
                    .ipam6
                    .get_mut(&eni.v_switch_id)
                    .ok_or_else(|| format!("ENI {id} holds IPv6 in IPv4-only vSwitch {}", eni.v_switch_id))?;
                for ip in &eni.ipv6_addresses {
                    if !ipam6.reserve(*ip) {
                        return Err(format!("ENI {id}: IPv6 {ip} is held twice or is outside its vSwitch"));
                    }
                    self.ip6_owners.insert(*ip, id.clone());
                }
                for p in &eni.ipv6_prefixes {
                    if !ipam6.reserve_prefix(*p) {
                        return Err(format!("ENI {id}: prefix {p} is held twice or is outside its vSwitch"));
                    }
                }
            }
            if !self.macs.insert(eni.mac_address) {
                return Err(format!("ENI {id}: MAC {} is held twice", eni.mac_address));
            }
            for sg in &eni.security_group_ids {
                self.sg_members.entry(sg.clone()).or_default().insert(id.clone());
            }
            if let Some(due) = eni.transition_due {
                self.pending.insert((due, Kind::Eni, id.clone()));
            }
        }
        let attachments: Vec<(String, Attachment)> =
            self.enis.iter().filter_map(|(id, e)| Some((id.clone(), e.attachment.clone()?))).collect();
        for (id, att) in &attachments {
            self.index_attachment(id, att)?;
        }
        for (key, t) in &self.tokens {
            self.token_expiry.insert((t.at, key.clone()));
        }
        // After the ENIs: a load balancer's address must be free of them.
        self.rebuild_slb_indexes()
    }

    // ---- time -------------------------------------------------------------------------------

    /// Complete every transition due at `now` and forget expired ClientTokens. Every action
    /// calls this first, so state always reflects the caller's clock.
    pub fn advance(&mut self, now: Millis) {
        while let Some((due, kind, id)) = self.pending.first().cloned() {
            if due > now {
                break;
            }
            self.pending.pop_first();
            match kind {
                Kind::Eni => self.complete_eni_transition(&id, due),
                Kind::Instance => self.complete_instance_transition(&id, due),
                _ => {}
            }
        }
        let ttl = self.config.limits.client_token_ttl_ms;
        while let Some((at, key)) = self.token_expiry.first().cloned() {
            if at.saturating_add_ms(ttl) > now {
                break;
            }
            self.token_expiry.pop_first();
            self.tokens.remove(&key);
            self.mark(Kind::ClientToken, &key);
        }
    }

    /// The earliest pending transition, so the server can wake up for it.
    pub fn next_due(&self) -> Option<Millis> {
        self.pending.first().map(|(due, _, _)| *due)
    }

    pub(crate) fn schedule(&mut self, kind: Kind, id: &str, due: Millis) {
        self.pending.insert((due, kind, id.to_string()));
    }

    // ---- identifiers ------------------------------------------------------------------------

    pub(crate) fn new_id(&mut self, kind: IdKind) -> String {
        let id = self.idgen.next_id(kind, &self.config.region_id);
        self.mark(Kind::Meta, META_IDGEN);
        id
    }

    pub(crate) fn new_port(&mut self) -> u32 {
        self.mark(Kind::Meta, META_IDGEN);
        let ports = &self.ports;
        self.idgen.next_port(|p| ports.contains_key(&p))
    }

    pub(crate) fn new_mac(&mut self) -> Mac {
        self.mark(Kind::Meta, META_IDGEN);
        loop {
            let mac = self.idgen.next_mac();
            if !self.macs.contains(&mac) {
                return mac;
            }
        }
    }

    // ---- idempotency ------------------------------------------------------------------------

    /// Runs `action` under the request's ClientToken (reference §4): the same token with the
    /// same request replays the first answer without doing anything; with a different request it
    /// is `IdempotentParameterMismatch`. Failures are not remembered, so a retry after
    /// `InvalidVSwitchId.IpNotEnough` can succeed with the same token, as Terway expects. Without
    /// a token it just runs. Brings the clock to `now` first, as every action does.
    pub(crate) fn idempotent<P, T>(
        &mut self,
        action: &str,
        req: P,
        now: Millis,
        run: impl FnOnce(&mut Region, P) -> Result<T>,
    ) -> Result<T>
    where
        P: ClientToken + Serialize,
        T: Serialize + DeserializeOwned,
    {
        self.advance(now);
        let Some(token) = req.client_token().filter(|t| !t.is_empty()) else {
            return run(self, req);
        };
        if token.len() > 64 || !token.is_ascii() {
            return Err(ModelError::InvalidClientToken(token.to_string()));
        }
        let key = format!("{action}/{token}");
        // Only hashed when a token asks for it: it serializes the whole request.
        let hash = request_hash(&req);
        if let Some(rec) = self.tokens.get(&key) {
            if rec.params_hash != hash {
                return Err(ModelError::IdempotentParameterMismatch);
            }
            return serde_json::from_value(rec.result.clone()).map_err(|_| ModelError::InternalError);
        }
        let out = run(self, req)?;
        let result = serde_json::to_value(&out).expect("responses serialize");
        self.tokens.insert(key.clone(), TokenRecord { params_hash: hash, result, at: now });
        self.token_expiry.insert((now, key.clone()));
        self.mark(Kind::ClientToken, &key);
        Ok(out)
    }
    // ---- shared lookups and checks ------------------------------------------------------------

    pub(crate) fn check_zone(&self, zone: &str) -> Result<()> {
        if self.config.zones.iter().any(|z| z == zone) {
            Ok(())
        } else {
            Err(ModelError::ZoneNotFound(zone.to_string()))
        }
    }

    pub fn instance_type(&self, id: &str) -> Option<&InstanceType> {
        self.types.get(id)
    }

    /// Validate a security-group set for one ENI: every group exists, is in `vpc_id`, appears
    /// once, the set is within the per-ENI quota and does not mix basic and enterprise groups.
    pub(crate) fn check_security_groups(&self, vpc_id: &str, ids: &[String]) -> Result<()> {
        if ids.len() > self.config.limits.security_groups_per_eni {
            return Err(ModelError::JoinedGroupLimitExceed(format!(
                "an ENI can join at most {} security groups",
                self.config.limits.security_groups_per_eni
            )));
        }
        let mut seen = HashSet::new();
        let mut kinds = HashSet::new();
        for id in ids {
            if !seen.insert(id) {
                return Err(ModelError::SecurityGroupIdRepeated);
            }
            let sg = self.sgs.get(id).ok_or_else(|| ModelError::SecurityGroupNotFound(id.clone()))?;
            if sg.vpc_id != vpc_id {
                return Err(ModelError::VpcMismatch(format!("security group {id} is in {}, not {vpc_id}", sg.vpc_id)));
            }
            kinds.insert(sg.security_group_type);
        }
        if kinds.len() > 1 {
            return Err(ModelError::MultiGroupType);
        }
        Ok(())
    }

    pub(crate) fn join_groups(&mut self, eni_id: &str, ids: &[String]) {
        for sg in ids {
            self.sg_members.entry(sg.clone()).or_default().insert(eni_id.to_string());
        }
    }

    pub(crate) fn leave_groups(&mut self, eni_id: &str, ids: &[String]) {
        for sg in ids {
            if let Some(set) = self.sg_members.get_mut(sg) {
                set.remove(eni_id);
                if set.is_empty() {
                    self.sg_members.remove(sg);
                }
            }
        }
    }

    /// Every IPv6 address of the region to its ENI (read-only, for the fabric's snapshot).
    pub fn ip6_owners(&self) -> impl Iterator<Item = (&Ipv6Addr, &String)> {
        self.ip6_owners.iter()
    }

    /// Who holds `ip` inside `vpc_id`, if anyone.
    pub fn ip_owner_in_vpc(&self, vpc_id: &str, ip: Ipv4Addr) -> Option<&str> {
        self.ip_owners
            .get(&ip)?
            .iter()
            .find(|eni| self.enis.get(eni.as_str()).is_some_and(|e| e.vpc_id == vpc_id))
            .map(String::as_str)
    }

    pub(crate) fn hold_ip(&mut self, vswitch_id: &str, eni_id: &str, ip: Ipv4Addr) {
        if let Some(ipam) = self.ipam.get_mut(vswitch_id) {
            ipam.reserve(ip);
        }
        self.ip_owners.entry(ip).or_default().push(eni_id.to_string());
    }

    pub(crate) fn free_ip(&mut self, vswitch_id: &str, eni_id: &str, ip: Ipv4Addr) {
        if let Some(ipam) = self.ipam.get_mut(vswitch_id) {
            ipam.release(ip);
        }
        if let Some(owners) = self.ip_owners.get_mut(&ip) {
            owners.retain(|e| e != eni_id);
            if owners.is_empty() {
                self.ip_owners.remove(&ip);
            }
        }
    }

    /// Check the consistency of every index against the resources. Used by tests (and by the
    /// crash test, through the server) to prove no call was half-applied.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut ips: HashMap<(String, Ipv4Addr), &str> = HashMap::new();
        let mut macs = HashSet::new();
        let mut held_per_vsw: HashMap<&str, usize> = HashMap::new();
        for (id, eni) in &self.enis {
            let vsw = self.vswitches.get(&eni.v_switch_id).ok_or(format!("{id}: vSwitch gone"))?;
            if vsw.vpc_id != eni.vpc_id {
                return Err(format!("{id}: VPC differs from its vSwitch's"));
            }
            for ip in eni.ips() {
                if !vsw.cidr.contains(ip) || vsw.cidr.is_reserved(ip) {
                    return Err(format!("{id}: {ip} outside {} or reserved", vsw.cidr));
                }
                if let Some(other) = ips.insert((eni.vpc_id.clone(), ip), id) {
                    return Err(format!("{ip} held by {other} and {id}"));
                }
                if self.ip_owner_in_vpc(&eni.vpc_id, ip) != Some(id.as_str()) {
                    return Err(format!("{id}: IP index disagrees for {ip}"));
                }
                *held_per_vsw.entry(&eni.v_switch_id).or_default() += 1;
            }
            for p in &eni.ipv4_prefixes {
                if !vsw.cidr.covers(p) {
                    return Err(format!("{id}: prefix {p} outside {}", vsw.cidr));
                }
                *held_per_vsw.entry(&eni.v_switch_id).or_default() += p.size() as usize;
            }
            for ip in &eni.ipv6_addresses {
                if !vsw.ipv6_cidr.is_some_and(|c| c.contains(*ip) && !c.is_reserved(*ip)) {
                    return Err(format!("{id}: {ip} outside the vSwitch's IPv6 block or reserved"));
                }
                if self.ip6_owners.get(ip) != Some(id) {
                    return Err(format!("{id}: IPv6 index disagrees for {ip}"));
                }
                let in_prefix = self.enis.values().flat_map(|e| &e.ipv6_prefixes).any(|p| p.contains(*ip));
                if in_prefix {
                    return Err(format!("{id}: {ip} lies in a prefix"));
                }
            }
            for p in &eni.ipv6_prefixes {
                if !vsw.ipv6_cidr.is_some_and(|c| c.covers(p)) {
                    return Err(format!("{id}: prefix {p} outside the vSwitch's IPv6 block"));
                }
            }
            if !macs.insert(eni.mac_address) || !self.macs.contains(&eni.mac_address) {
                return Err(format!("{id}: MAC {} duplicated or unindexed", eni.mac_address));
            }
            for sg in &eni.security_group_ids {
                if !self.sgs.contains_key(sg) || !self.sg_members.get(sg).is_some_and(|m| m.contains(id)) {
                    return Err(format!("{id}: group {sg} missing or unindexed"));
                }
            }
            match (&eni.attachment, eni.eni_type) {
                (Some(att), _) => {
                    let inst =
                        self.instances.get(&att.instance_id).ok_or(format!("{id}: attached to a missing instance"))?;
                    let slot = match &att.trunk_network_interface_id {
                        Some(trunk) => {
                            let t = self.enis.get(trunk).ok_or(format!("{id}: trunk {trunk} missing"))?;
                            if t.eni_type != EniType::Trunk
                                || t.attachment.as_ref().map(|a| &a.instance_id) != Some(&att.instance_id)
                            {
                                return Err(format!("{id}: trunk {trunk} is not a trunk of {}", inst.instance_id));
                            }
                            if !(1..=4094).contains(&att.device_index) {
                                return Err(format!("{id}: VLAN {} out of range", att.device_index));
                            }
                            self.members.get(trunk)
                        }
                        None => self.nics.get(&att.instance_id),
                    };
                    if slot.and_then(|s| s.get(&att.device_index)) != Some(id) {
                        return Err(format!("{id}: device index {} unindexed", att.device_index));
                    }
                    let is_member = att.trunk_network_interface_id.is_some();
                    if is_member != (att.port_id == 0) || (!is_member && self.ports.get(&att.port_id) != Some(id)) {
                        return Err(format!("{id}: fabric port {} wrong or unindexed", att.port_id));
                    }
                }
                (None, EniType::Primary | EniType::Member) => {
                    return Err(format!("{id}: a {:?} ENI without attachment", eni.eni_type));
                }
                (None, _) => {
                    if matches!(eni.status, EniStatus::InUse | EniStatus::Attaching) {
                        return Err(format!("{id}: {:?} without attachment", eni.status));
                    }
                }
            }
        }
        // Intranet load balancers hold their address in their vSwitch's allocator too.
        self.check_slb_invariants(&mut held_per_vsw)?;
        for (vsw, ipam) in &self.ipam {
            let held = held_per_vsw.get(vsw.as_str()).copied().unwrap_or(0) as u64;
            if ipam.available() != ipam.cidr().usable() - held {
                return Err(format!("{vsw}: IPAM count {} disagrees with {held} held", ipam.available()));
            }
        }
        for (inst_id, inst) in &self.instances {
            match self.enis.get(&inst.primary_eni_id) {
                Some(p) if p.eni_type == EniType::Primary => {}
                _ => return Err(format!("{inst_id}: primary ENI missing")),
            }
            if let Some(t) = self.types.get(&inst.instance_type) {
                let nics = self.nics.get(inst_id).map_or(0, BTreeMap::len) as u32;
                if nics > t.eni_quantity {
                    return Err(format!("{inst_id}: {nics} NICs over EniQuantity {}", t.eni_quantity));
                }
                let members: u32 =
                    self.trunks_of(inst_id).map(|trunk| self.members.get(trunk).map_or(0, BTreeMap::len) as u32).sum();
                if members > t.member_eni_limit() {
                    return Err(format!("{inst_id}: {members} members over the limit {}", t.member_eni_limit()));
                }
            }
        }
        Ok(())
    }

    /// Trunk ENIs attached to an instance (at most one in practice).
    pub(crate) fn trunks_of<'a>(&'a self, instance_id: &str) -> impl Iterator<Item = &'a String> + 'a {
        self.nics
            .get(instance_id)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|e| self.enis.get(e.as_str()).is_some_and(|e| e.eni_type == EniType::Trunk))
    }
}

/// A name or description as the cloud takes it: at most `max` characters, and not starting with
/// `http://` or `https://` (the cloud's rule for every resource name and description). A name
/// also holds no control characters: the API references give names as letters, digits and a few
/// punctuation marks (`.`, `_`, `-`, `:`), and a name with a newline or an escape would print as
/// something else in every console and log that shows it.
pub(crate) fn check_text(param: &'static str, s: &str, max: usize) -> Result<()> {
    if s.chars().count() > max || s.starts_with("http://") || s.starts_with("https://") {
        return Err(ModelError::invalid(
            param,
            format!("at most {max} characters, not starting with http:// or https://"),
        ));
    }
    if param.ends_with("Name") && s.chars().any(char::is_control) {
        return Err(ModelError::invalid(param, "a name holds no control characters"));
    }
    Ok(())
}

/// Validate `Tag.N.Key/Value` the way the cloud does: at most 20, keys non-empty, at most 128
/// characters, not starting with `aliyun` or `acs:`, no key twice.
pub(crate) fn check_tags(tags: &[Tag]) -> Result<()> {
    if tags.len() > 20 {
        return Err(ModelError::invalid("Tag.N", "at most 20 tags"));
    }
    let mut keys = HashSet::new();
    for t in tags {
        if t.key.is_empty() || t.key.chars().count() > 128 || t.key.starts_with("aliyun") || t.key.starts_with("acs:") {
            return Err(ModelError::InvalidTagKey(t.key.clone()));
        }
        if t.value.chars().count() > 128 {
            return Err(ModelError::invalid("Tag.N.Value", "at most 128 characters"));
        }
        if !keys.insert(&t.key) {
            return Err(ModelError::DuplicateTagKey);
        }
    }
    Ok(())
}

/// Whether `have` carries every tag of `want` (the cloud's `Tag.N` filter semantics).
pub(crate) fn has_all_tags(have: &[Tag], want: &[Tag]) -> bool {
    want.iter().all(|w| have.iter().any(|h| h.key == w.key && (w.value.is_empty() || h.value == w.value)))
}

/// The fingerprint of a request a ClientToken remembers.
/// A request that may carry a `ClientToken` (see [`Region::idempotent`]).
pub(crate) trait ClientToken {
    fn client_token(&self) -> Option<&str>;
}

macro_rules! client_token_requests {
    ($($t:ty),* $(,)?) => {$(
        impl ClientToken for $t {
            fn client_token(&self) -> Option<&str> {
                self.client_token.as_deref()
            }
        }
    )*};
}

client_token_requests!(
    crate::vpc::CreateVpc,
    crate::vpc::CreateVSwitch,
    crate::instance::CreateInstance,
    crate::eni::CreateNetworkInterface,
    crate::eni::AssignPrivateIpAddresses,
    crate::eni::AssignIpv6Addresses,
    crate::security_group::CreateSecurityGroup,
    crate::security_group::AuthorizeSecurityGroup,
    crate::slb::load_balancer::CreateLoadBalancer,
);

pub(crate) fn request_hash<P: Serialize>(req: &P) -> u64 {
    fnv1a(serde_json::to_string(req).expect("requests serialize").as_bytes())
}

/// Stable across processes and releases, unlike `DefaultHasher`: ClientToken records outlive
/// the process that wrote them.
pub(crate) use enifab_net::fnv1a;

/// Parse an IPv4 address parameter.
pub(crate) fn parse_ip(s: &str) -> Result<Ipv4Addr> {
    s.trim().parse().map_err(|_| ModelError::InvalidPrivateIpMalformed(s.to_string()))
}
