//! What ADD made for a container, kept in a small JSON file (`<stateDir>/<container>.json`), so
//! DEL can undo it even when the cloud has already forgotten the ENI, and CHECK knows what to
//! look for. Written atomically (temp file + rename).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use rscni_plugin::error::Error;
use serde::{Deserialize, Serialize};

use super::conf::Datapath;

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
