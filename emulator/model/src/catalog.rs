//! Instance types: the figures DescribeInstanceTypes returns and that bound attach operations.
//!
//! Terway derives every node limit from these fields (`pkg/aliyun/client/limit.go`):
//! ENIs per instance = `EniQuantity` (the primary ENI included), IPv4 per ENI =
//! `EniPrivateIpAddressQuantity` (the primary IP included), member ENIs per instance =
//! `EniTotalQuantity − EniQuantity` and only when `EniTrunkSupported`.
//!
//! Sources of the built-in figures: `ecs.g7.xlarge`, `ecs.g6.16xlarge` and `ecs.u1-c1m4.xlarge`
//! are copied field by field from real DescribeInstanceTypes responses kept in public test
//! fixtures. For the other types the ENI and IP counts are those of the instance-family tables;
//! their `EniTotalQuantity` was not found in a captured response and is an estimate in line with
//! the family (marked `estimated` below). Custom types can be added at run time
//! (`enifab.v1.Emulator/CreateInstanceType`, or `instanceTypes:` in an apply file).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceType {
    pub instance_type_id: String,
    pub instance_type_family: String,
    pub cpu_core_count: u32,
    pub memory_size_gib: f32,
    pub eni_quantity: u32,
    pub eni_private_ip_address_quantity: u32,
    pub eni_ipv6_address_quantity: u32,
    pub eni_total_quantity: u32,
    pub eni_trunk_supported: bool,
    pub instance_bandwidth_rx_kbps: u64,
    pub instance_bandwidth_tx_kbps: u64,
    pub instance_pps_rx: u64,
    pub instance_pps_tx: u64,
    /// Added by a user rather than built in.
    #[serde(default)]
    pub custom: bool,
}

impl InstanceType {
    /// Member ENIs this type can carry on its trunk (Terway's formula).
    pub fn member_eni_limit(&self) -> u32 {
        if self.eni_trunk_supported { self.eni_total_quantity.saturating_sub(self.eni_quantity) } else { 0 }
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    id: &str,
    cpu: u32,
    mem: f32,
    enis: u32,
    ips: u32,
    ipv6: u32,
    total: u32,
    trunk: bool,
    bw_kbps: u64,
    pps: u64,
) -> InstanceType {
    let family = id.rsplit_once('.').map(|(f, _)| f).unwrap_or(id).to_string();
    InstanceType {
        instance_type_id: id.to_string(),
        instance_type_family: family,
        cpu_core_count: cpu,
        memory_size_gib: mem,
        eni_quantity: enis,
        eni_private_ip_address_quantity: ips,
        eni_ipv6_address_quantity: ipv6,
        eni_total_quantity: total,
        eni_trunk_supported: trunk,
        instance_bandwidth_rx_kbps: bw_kbps,
        instance_bandwidth_tx_kbps: bw_kbps,
        instance_pps_rx: pps,
        instance_pps_tx: pps,
        custom: false,
    }
}

/// The built-in catalogue, sorted by id.
pub fn builtin_types() -> Vec<InstanceType> {
    let mut v = vec![
        // g7 (Ice Lake). g7.xlarge is a captured response; the others follow the family table.
        builtin("ecs.g7.large", 2, 8.0, 3, 6, 6, 11, true, 2_048_000, 900_000), // total estimated
        builtin("ecs.g7.xlarge", 4, 16.0, 4, 15, 15, 20, true, 3_072_000, 1_100_000),
        builtin("ecs.g7.2xlarge", 8, 32.0, 4, 15, 15, 27, true, 5_120_000, 1_600_000), // total estimated
        builtin("ecs.g7.4xlarge", 16, 64.0, 8, 30, 30, 38, true, 10_240_000, 3_000_000), // total estimated
        // g6 (Cascade Lake). g6.16xlarge is a captured response.
        builtin("ecs.g6.large", 2, 8.0, 2, 6, 1, 2, false, 1_024_000, 300_000),
        builtin("ecs.g6.xlarge", 4, 16.0, 3, 10, 1, 13, true, 1_536_000, 500_000), // total estimated
        builtin("ecs.g6.2xlarge", 8, 32.0, 4, 10, 1, 20, true, 2_560_000, 800_000), // total estimated
        builtin("ecs.g6.16xlarge", 64, 256.0, 8, 20, 1, 60, true, 20_480_000, 4_000_000),
        // u1: a captured response.
        builtin("ecs.u1-c1m4.xlarge", 4, 16.0, 3, 10, 1, 6, true, 1_536_000, 500_000),
        // An entry-level type without trunking, for "this node cannot do trunk pods" cases.
        builtin("ecs.t6-c1m2.large", 2, 4.0, 2, 2, 0, 2, false, 102_400, 50_000),
    ];
    v.sort_by(|a, b| a.instance_type_id.cmp(&b.instance_type_id));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_limit_follows_terway() {
        let all = builtin_types();
        let g7 = all.iter().find(|t| t.instance_type_id == "ecs.g7.xlarge").unwrap();
        assert_eq!(g7.member_eni_limit(), 16);
        let g6 = all.iter().find(|t| t.instance_type_id == "ecs.g6.large").unwrap();
        assert_eq!(g6.member_eni_limit(), 0);
        assert_eq!(g7.instance_type_family, "ecs.g7");
    }
}
