//! What ADD made for a container, kept in a small JSON file (`<stateDir>/<container>.json`), so
//! DEL can undo it even when the cloud has already forgotten the ENI, CHECK knows what to look
//! for, and a restarted node shim can make again what died with its predecessor
//! ([`crate::rebuild`] reads them all with [`load_all`]). Written atomically (temp file +
//! rename). Fields added after the first release are `#[serde(default)]`, so files written by an
//! older plugin still load.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use rscni_plugin::error::Error;
use serde::{Deserialize, Serialize};

use super::conf::Datapath;
use super::plan::PodIpv6;
use crate::driver::netns::NetnsId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodState {
    pub container_id: String,
    pub member: String,
    pub vlan: u32,
    pub pod_ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub datapath: Datapath,
    pub host_veth: String,
    pub trunk_dev: String,
    pub ifname: String,
    pub table: u32,
    /// The node (instance) the pod is on: one state directory may serve several node shims.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// The pod's namespace as the runtime named it (`CNI_NETNS`).
    #[serde(default)]
    pub pod_netns: Option<PathBuf>,
    /// The identity of that namespace at ADD, so that a path now naming another namespace (a
    /// recycled `/proc/<pid>/ns/net`) is not mistaken for the pod's.
    #[serde(default)]
    pub pod_netns_id: Option<NetnsId>,
    /// The pod interface's MTU (the vlan datapath's sub-interface is made with it).
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// A dual-stack pod's IPv6 side.
    #[serde(default)]
    pub ipv6: Option<PodIpv6>,
}

fn default_mtu() -> u32 {
    crate::view::DEFAULT_MTU
}

fn path(dir: &Path, container: &str) -> PathBuf {
    // Container IDs are restricted to [A-Za-z0-9_.-] by the spec; keep the file name safe anyway.
    let safe: String =
        container.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    dir.join(format!("{safe}.json"))
}

pub fn load(dir: &Path, container: &str) -> Result<Option<PodState>, Error> {
    match std::fs::read(path(dir, container)) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::FailedToDecode(format!("state of {container}: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::IOFailure(e.to_string())),
    }
}

/// Every state file in `dir` (`*.json`, sorted by name), each parsed on its own so one that is
/// corrupted or truncated costs only itself. A missing directory holds none.
pub fn load_all(dir: &Path) -> Vec<(PathBuf, Result<PodState, String>)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let parsed = std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<PodState>(&b).map_err(|e| e.to_string()));
            (p, parsed)
        })
        .collect()
}

pub fn save(dir: &Path, s: &PodState) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::IOFailure(format!("{}: {e}", dir.display())))?;
    let p = path(dir, &s.container_id);
    let tmp = p.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(s).map_err(|e| Error::FailedToDecode(e.to_string()))?)
        .map_err(|e| Error::IOFailure(e.to_string()))?;
    std::fs::rename(&tmp, &p).map_err(|e| Error::IOFailure(e.to_string()))
}

pub fn remove(dir: &Path, container: &str) -> Result<(), Error> {
    match std::fs::remove_file(path(dir, container)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::IOFailure(e.to_string())),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn state(container: &str) -> PodState {
        PodState {
            container_id: container.into(),
            member: "eni-m".into(),
            vlan: 3,
            pod_ip: Ipv4Addr::new(10, 0, 4, 30),
            prefix: 24,
            gateway: Ipv4Addr::new(10, 0, 4, 253),
            datapath: Datapath::Vlan,
            host_veth: "cali0123456789a".into(),
            trunk_dev: "eth1".into(),
            ifname: "eth0".into(),
            table: 1003,
            instance_id: Some("i-node".into()),
            pod_netns: Some("/run/netns/pod".into()),
            pod_netns_id: Some(NetnsId { dev: 4, ino: 4026532000 }),
            mtu: 1400,
            ipv6: None,
        }
    }

    #[test]
    fn a_file_from_before_the_rebuild_fields_still_loads() {
        let old = r#"{ "container_id": "c-old", "member": "eni-m", "vlan": 3, "pod_ip": "10.0.4.30",
            "prefix": 24, "gateway": "10.0.4.253", "datapath": "veth", "host_veth": "cali0123456789a",
            "trunk_dev": "eth1", "ifname": "eth0", "table": 1003 }"#;
        let s: PodState = serde_json::from_str(old).unwrap();
        assert_eq!((s.instance_id, s.pod_netns, s.pod_netns_id, s.mtu, s.ipv6), (None, None, None, 1500, None));
    }

    #[test]
    fn every_file_loads_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &state("c-a")).unwrap();
        save(dir.path(), &state("c-c")).unwrap();
        let whole = serde_json::to_vec_pretty(&state("c-b")).unwrap();
        std::fs::write(dir.path().join("c-b.json"), &whole[..whole.len() / 2]).unwrap();
        std::fs::write(dir.path().join("c-d.json.tmp"), b"half").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"not a state").unwrap();
        let all = load_all(dir.path());
        let names: Vec<_> = all.iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["c-a.json", "c-b.json", "c-c.json"]);
        assert_eq!(all[0].1.as_ref().unwrap(), &state("c-a"));
        assert!(all[1].1.is_err(), "the truncated one fails alone");
        assert_eq!(all[2].1.as_ref().unwrap().container_id, "c-c");
        assert!(load_all(&dir.path().join("missing")).is_empty());
    }
}
