//! What `enifab-cni` is told: the network configuration on stdin (CNI spec 1.x, with enifab's
//! own keys) and the per-pod overrides in `CNI_ARGS` / `runtimeConfig`.
//!
//! ```json
//! { "cniVersion": "1.0.0", "name": "enifab", "type": "enifab-cni",
//!   "endpoint": "127.0.0.1:50051",          // the emulator's API
//!   "instanceId": "i-…",                    // this node
//!   "trunkNetworkInterfaceId": "eni-…",     // optional: found by Type=Trunk otherwise
//!   "nodeNetns": "/var/run/netns/node-a",   // optional: the node's namespace when the plugin
//!                                           // is not run inside it (the lab runs it from the host)
//!   "shimSocket": "/run/enifab/shim-i-….sock",
//!   "datapath": "veth" | "vlan",
//!   "ipStack": "ipv4" | "dual",             // dual: the member ENI gets an IPv6 address too
//!   "vSwitchId": "vsw-…", "securityGroupIds": ["sg-…"],   // the PodNetworking defaults
//!   "clusterId": "c-…", "tags": { "k": "v" }, "mtu": 1500, "stateDir": "/var/lib/enifab-cni",
//!   "accessKeyFile": "/etc/enifab/access-key" }   // optional: see `cloud` for the key's sources
//! ```
//!
//! Per pod, like Terway's PodNetworking selection: `CNI_ARGS` keys `ENIFAB_VSWITCH`,
//! `ENIFAB_SECURITY_GROUPS` (comma-separated), `ENIFAB_IP` (the member ENI's primary IP),
//! `ENIFAB_DATAPATH`, `ENIFAB_IP_STACK` and `ENIFAB_IP6` (a dual-stack member's IPv6 address),
//! or the same under `runtimeConfig.enifab` (`vSwitchId`, `securityGroupIds`, `ip`, `datapath`,
//! `ipStack`, `ip6`). `K8S_POD_NAMESPACE`/`K8S_POD_NAME` name the pod.
//!
//! `ipStack` takes Terway's `ip_stack` values; its `ipv6` (IPv6-only pods) is refused by name:
//! enifab's pods always have IPv4.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use rscni_plugin::error::Error;
use rscni_plugin::types::NetConf;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Datapath {
    /// The seed article's: veth + policy routing on the node, VLAN pushed by source IP.
    Veth,
    /// Terway's trunk path: a VLAN sub-interface of the trunk inside the pod.
    Vlan,
}

impl Datapath {
    pub fn as_str(self) -> &'static str {
        match self {
            Datapath::Veth => "veth",
            Datapath::Vlan => "vlan",
        }
    }
}

/// Which families a pod's member ENI carries (Terway's `ip_stack`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IpStack {
    #[default]
    Ipv4,
    /// IPv4 and one IPv6 address of the vSwitch's /64.
    Dual,
}

impl IpStack {
    pub fn parse(s: &str) -> Result<IpStack, Error> {
        match s {
            "ipv4" => Ok(IpStack::Ipv4),
            "dual" => Ok(IpStack::Dual),
            "ipv6" => Err(bad("ipStack ipv6 (IPv6-only pods) is not supported: use dual")),
            other => Err(bad(format!("ipStack {other:?}: ipv4 or dual"))),
        }
    }
}

impl<'de> Deserialize<'de> for IpStack {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<IpStack, D::Error> {
        let s = String::deserialize(d)?;
        IpStack::parse(&s).map_err(|e| serde::de::Error::custom(e.details()))
    }
}

/// enifab's keys of the network configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnifabConf {
    pub endpoint: String,
    pub instance_id: String,
    #[serde(default)]
    pub trunk_network_interface_id: Option<String>,
    #[serde(default)]
    pub node_netns: Option<PathBuf>,
    pub shim_socket: PathBuf,
    #[serde(default = "default_datapath")]
    pub datapath: Datapath,
    #[serde(default)]
    pub ip_stack: IpStack,
    #[serde(default, rename = "vSwitchId")]
    pub v_switch_id: Option<String>,
    #[serde(default)]
    pub security_group_ids: Vec<String>,
    #[serde(default = "default_cluster")]
    pub cluster_id: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The AccessKey the cloud calls are signed with (`AccessKeyId AccessKeySecret`).
    #[serde(default)]
    pub access_key_file: Option<PathBuf>,
}

fn default_datapath() -> Datapath {
    Datapath::Veth
}

fn default_cluster() -> String {
    "enifab".into()
}

fn default_mtu() -> u32 {
    1500
}

/// Where the plugin keeps its per-container state unless `stateDir` says otherwise; the node
/// shim rebuilds pods from the same place (`--cni-state-dir`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/enifab-cni";

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeOverrides {
    #[serde(default, rename = "vSwitchId")]
    v_switch_id: Option<String>,
    #[serde(default)]
    security_group_ids: Option<Vec<String>>,
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    datapath: Option<Datapath>,
    #[serde(default)]
    ip_stack: Option<IpStack>,
    #[serde(default)]
    ip6: Option<String>,
}

/// Everything one pod's ADD/DEL/CHECK needs, resolved from the configuration and the args.
#[derive(Debug, Clone)]
pub struct PodRequest {
    pub conf: EnifabConf,
    pub container_id: String,
    pub pod_netns: Option<PathBuf>,
    pub ifname: String,
    pub pod: Option<String>,
    pub datapath: Datapath,
    pub v_switch_id: Option<String>,
    pub security_group_ids: Vec<String>,
    pub ip: Option<Ipv4Addr>,
    pub ip_stack: IpStack,
    /// The IPv6 address a dual-stack pod's member ENI is to hold.
    pub ip6: Option<Ipv6Addr>,
}

impl EnifabConf {
    /// The plugin's own keys of a network configuration (what GC, which names no container,
    /// needs as much as ADD).
    pub fn from_netconf(netconf: &NetConf) -> Result<EnifabConf, Error> {
        let custom = serde_json::Value::Object(netconf.custom.clone().into_iter().collect());
        let conf: EnifabConf =
            serde_json::from_value(custom).map_err(|e| bad(format!("enifab-cni configuration: {e}")))?;
        if conf.endpoint.is_empty() || conf.instance_id.is_empty() {
            return Err(bad("endpoint and instanceId are required"));
        }
        Ok(conf)
    }
}

fn bad(msg: impl Into<String>) -> Error {
    Error::InvalidNetworkConfig(msg.into())
}

/// `K1=V1;K2=V2` (the CNI_ARGS format).
pub fn parse_cni_args(args: &str) -> BTreeMap<String, String> {
    args.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

impl PodRequest {
    pub fn new(
        netconf: &NetConf,
        container_id: Option<&str>,
        pod_netns: Option<PathBuf>,
        ifname: Option<&str>,
        cni_args: Option<&str>,
    ) -> Result<PodRequest, Error> {
        let conf = EnifabConf::from_netconf(netconf)?;
        let container_id =
            container_id.ok_or_else(|| Error::InvalidEnvValue("CNI_CONTAINERID is required".into()))?.to_string();
        let args = parse_cni_args(cni_args.unwrap_or(""));
        let runtime: RuntimeOverrides = netconf
            .runtime_config
            .as_ref()
            .and_then(|r| serde_json::to_value(r).ok())
            .and_then(|v| v.get("enifab").cloned())
            .map(|v| serde_json::from_value(v).map_err(|e| bad(format!("runtimeConfig.enifab: {e}"))))
            .transpose()?
            .unwrap_or_default();
        let datapath = match (args.get("ENIFAB_DATAPATH"), runtime.datapath) {
            (Some(d), _) => match d.as_str() {
                "veth" => Datapath::Veth,
                "vlan" => Datapath::Vlan,
                other => return Err(bad(format!("ENIFAB_DATAPATH={other}: veth or vlan"))),
            },
            (None, Some(d)) => d,
            (None, None) => conf.datapath,
        };
        let v_switch_id =
            args.get("ENIFAB_VSWITCH").cloned().or(runtime.v_switch_id).or_else(|| conf.v_switch_id.clone());
        let security_group_ids = match (args.get("ENIFAB_SECURITY_GROUPS"), runtime.security_group_ids) {
            (Some(s), _) => s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_string).collect(),
            (None, Some(v)) => v,
            (None, None) => conf.security_group_ids.clone(),
        };
        let ip = match args.get("ENIFAB_IP").cloned().or(runtime.ip) {
            Some(s) => Some(s.parse().map_err(|_| bad(format!("pod IP {s:?} is not an IPv4 address")))?),
            None => None,
        };
        let ip_stack = match (args.get("ENIFAB_IP_STACK"), runtime.ip_stack) {
            (Some(s), _) => IpStack::parse(s)?,
            (None, Some(s)) => s,
            (None, None) => conf.ip_stack,
        };
        let ip6 = match args.get("ENIFAB_IP6").cloned().or(runtime.ip6) {
            Some(s) => Some(s.parse().map_err(|_| bad(format!("pod IPv6 {s:?} is not an IPv6 address")))?),
            None => None,
        };
        if ip6.is_some() && ip_stack != IpStack::Dual {
            return Err(bad("an IPv6 address (ENIFAB_IP6) needs ipStack dual"));
        }
        let pod = match (args.get("K8S_POD_NAMESPACE"), args.get("K8S_POD_NAME")) {
            (Some(ns), Some(name)) => Some(format!("{ns}/{name}")),
            (None, Some(name)) => Some(name.clone()),
            _ => None,
        };
        Ok(PodRequest {
            conf,
            container_id,
            pod_netns,
            ifname: ifname.unwrap_or("eth0").to_string(),
            pod,
            datapath,
            v_switch_id,
            security_group_ids,
            ip,
            ip_stack,
            ip6,
        })
    }

    /// The host side of the pod's veth: `cali` + 11 hex digits of the container ID, as Calico
    /// and Terway name theirs (15 characters, the kernel's limit).
    pub fn host_veth(&self) -> String {
        let h = enifab_net::fnv1a(self.container_id.as_bytes());
        format!("cali{:011x}", h & 0xfff_ffff_ffff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn netconf(extra: serde_json::Value) -> NetConf {
        let mut base = serde_json::json!({
            "cniVersion": "1.0.0", "name": "enifab", "type": "enifab-cni",
            "endpoint": "127.0.0.1:50051", "instanceId": "i-node", "shimSocket": "/run/x.sock",
            "vSwitchId": "vsw-default", "securityGroupIds": ["sg-default"]
        });
        base.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn args_override_the_configuration() {
        let r = PodRequest::new(
            &netconf(serde_json::json!({})),
            Some("c1"),
            None,
            Some("eth0"),
            Some("K8S_POD_NAMESPACE=default;K8S_POD_NAME=nginx;ENIFAB_IP=10.0.4.30;ENIFAB_SECURITY_GROUPS=sg-a,sg-b;ENIFAB_DATAPATH=vlan"),
        )
        .unwrap();
        assert_eq!(r.ip, Some(Ipv4Addr::new(10, 0, 4, 30)));
        assert_eq!(r.security_group_ids, vec!["sg-a", "sg-b"]);
        assert_eq!(r.v_switch_id.as_deref(), Some("vsw-default"));
        assert_eq!(r.datapath, Datapath::Vlan);
        assert_eq!(r.pod.as_deref(), Some("default/nginx"));
        assert_eq!(r.host_veth().len(), 15);
        assert!(r.host_veth().starts_with("cali"));
    }

    #[test]
    fn bad_configuration_is_refused() {
        let e = PodRequest::new(&netconf(serde_json::json!({"datapath": "macvlan"})), Some("c1"), None, None, None)
            .unwrap_err();
        assert!(matches!(e, Error::InvalidNetworkConfig(_)), "{e:?}");
        let e = PodRequest::new(&netconf(serde_json::json!({})), Some("c1"), None, None, Some("ENIFAB_IP=nope"))
            .unwrap_err();
        assert!(matches!(e, Error::InvalidNetworkConfig(_)), "{e:?}");
        let e = PodRequest::new(&netconf(serde_json::json!({})), None, None, None, None).unwrap_err();
        assert!(matches!(e, Error::InvalidEnvValue(_)), "{e:?}");
    }

    #[test]
    fn the_ip_stack_comes_from_the_configuration_or_the_pod() {
        let conf = netconf(serde_json::json!({"ipStack": "dual"}));
        let r = PodRequest::new(&conf, Some("c1"), None, None, None).unwrap();
        assert_eq!((r.ip_stack, r.ip6), (IpStack::Dual, None));
        let r = PodRequest::new(
            &netconf(serde_json::json!({})),
            Some("c1"),
            None,
            None,
            Some("ENIFAB_IP_STACK=dual;ENIFAB_IP6=2408:4005:3000:4::30"),
        )
        .unwrap();
        assert_eq!((r.ip_stack, r.ip6), (IpStack::Dual, Some("2408:4005:3000:4::30".parse().unwrap())));
        let r = PodRequest::new(&netconf(serde_json::json!({})), Some("c1"), None, None, None).unwrap();
        assert_eq!(r.ip_stack, IpStack::Ipv4);
    }

    #[test]
    fn an_ip_stack_enifab_cannot_give_is_refused_by_name() {
        let e = PodRequest::new(&netconf(serde_json::json!({"ipStack": "ipv6"})), Some("c1"), None, None, None)
            .unwrap_err();
        assert!(matches!(&e, Error::InvalidNetworkConfig(m) if m.contains("ipv6")), "{e:?}");
        for args in ["ENIFAB_IP_STACK=v6", "ENIFAB_IP6=2408::1", "ENIFAB_IP_STACK=dual;ENIFAB_IP6=10.0.0.1"] {
            let e = PodRequest::new(&netconf(serde_json::json!({})), Some("c1"), None, None, Some(args)).unwrap_err();
            assert!(matches!(e, Error::InvalidNetworkConfig(_)), "{args}: {e:?}");
        }
    }
}
