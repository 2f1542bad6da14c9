//! Parameters the cloud defines but enifab does not implement: refused by name, never dropped.
//!
//! The endpoint decodes leniently, because the cloud ignores a parameter it does not know (SDKs
//! send `RegionId`, `OwnerId`, `ResourceOwnerAccount`… to every action). But a parameter the
//! cloud *does* define for an action, silently ignored here, would let a caller believe it got
//! what it asked for: an ENI "created" with `QueueNumber=8` that has one queue, a VPC "created"
//! from an IPAM pool that it never came from. Those answer `UnsupportedParameter` (HTTP 400,
//! the code the model already uses for `AclStatus=on`), naming the parameter, and nothing runs.
//!
//! The lists come from the API references of the actions Terway and the cloud-controller-manager
//! call (ECS `2014-05-26`, VPC `2016-04-28`): every request parameter they document, minus those
//! the proto carries (a test checks the two never overlap, so implementing a parameter means
//! moving it out of here). A parameter whose only effect is on something the emulator has no
//! notion of and whose value is a no-op here (`DryRun=false`) is still listed: a caller sending
//! it expects its effect.

use super::dispatch::Api;

/// `(action, parameters)`: the first segment of a flat name (`ConnectionTrackingConfiguration`
/// covers `ConnectionTrackingConfiguration.TcpClosedAndTimeWaitTimeout`).
const UNIMPLEMENTED: &[(Api, &str, &[&str])] = &[
    (
        Api::Ecs,
        "CreateNetworkInterface",
        &[
            "Ipv4Prefix",
            "Ipv6Prefix",
            "QueueNumber",
            "QueuePairNumber",
            "RxQueueSize",
            "TxQueueSize",
            "ConnectionTrackingConfiguration",
            "NetworkInterfaceTrafficConfig",
            "EnhancedNetwork",
        ],
    ),
    (
        Api::Ecs,
        "ModifyNetworkInterfaceAttribute",
        &[
            "QueueNumber",
            "RxQueueSize",
            "TxQueueSize",
            "ConnectionTrackingConfiguration",
            "NetworkInterfaceTrafficConfig",
            "EnhancedNetwork",
        ],
    ),
    (Api::Ecs, "DescribeNetworkInterfaces", &["ServiceManaged", "Ipv4Prefix", "Ipv6Prefix"]),
    (
        Api::Ecs,
        "DescribeInstanceTypes",
        &[
            "InstanceFamilyLevel",
            "CpuArchitecture",
            "GPUSpec",
            "InstanceCategory",
            "LocalStorageCategory",
            "MinimumCpuCoreCount",
            "MaximumCpuCoreCount",
            "MinimumMemorySize",
            "MaximumMemorySize",
            "MinimumEniQuantity",
            "MinimumEniPrivateIpAddressQuantity",
            "MinimumEniIpv6AddressQuantity",
            "NvmeSupport",
            "ProcessorModel",
        ],
    ),
    (
        Api::Vpc,
        "CreateVpc",
        &[
            "DryRun",
            "EnableDnsHostname",
            "UserCidr",
            "Ipv4IpamPoolId",
            "Ipv4CidrMask",
            "Ipv6IpamPoolId",
            "Ipv6CidrMask",
        ],
    ),
    (Api::Vpc, "CreateVSwitch", &["VpcIpv6CidrBlock", "Ipv6CidrBlockMask", "EnableIpv6"]),
    (Api::Vpc, "DescribeVSwitches", &["EnableIpv6", "IsDefault", "RouteTableId", "DryRun", "VSwitchOwnerId"]),
    (Api::Vpc, "DescribeVpcs", &["IsDefault", "DhcpOptionsSetId", "DryRun", "VpcOwnerId", "Tag"]),
];

/// The first parameter of `params` that `action` defines in the cloud but enifab does not
/// implement, if any.
pub fn unimplemented<'a>(api: Api, action: &str, params: &'a [(String, String)]) -> Option<&'a str> {
    let listed = UNIMPLEMENTED.iter().find(|(a, name, _)| *a == api && *name == action)?.2;
    params
        .iter()
        .map(|(k, _)| k.as_str())
        .find(|key| listed.iter().any(|p| key == p || key.strip_prefix(p).is_some_and(|rest| rest.starts_with('.'))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn listed_parameters_are_named_and_others_pass() {
        let p = params(&[("VSwitchId", "vsw-1"), ("QueueNumber", "8")]);
        assert_eq!(unimplemented(Api::Ecs, "CreateNetworkInterface", &p), Some("QueueNumber"));
        let p = params(&[("ConnectionTrackingConfiguration.TcpEstablishedTimeout", "900")]);
        assert_eq!(
            unimplemented(Api::Ecs, "CreateNetworkInterface", &p),
            Some("ConnectionTrackingConfiguration.TcpEstablishedTimeout")
        );
        // Unknown to the cloud too (or common to every action): ignored, as the cloud ignores it.
        let p = params(&[("OwnerAccount", "x"), ("QueueNumberish", "1"), ("Ipv6AddressCount", "2")]);
        assert_eq!(unimplemented(Api::Ecs, "CreateNetworkInterface", &p), None);
        assert_eq!(unimplemented(Api::Ecs, "DeleteNetworkInterface", &params(&[("QueueNumber", "1")])), None);
    }

    /// A parameter the proto implements must not also be refused: implementing one means
    /// taking it off the list.
    #[test]
    fn no_listed_parameter_is_implemented() {
        for (api, action, listed) in UNIMPLEMENTED {
            let method = codec::method(api.service(), action).unwrap_or_else(|| panic!("{action} is an action"));
            for p in *listed {
                let implemented = method.input().fields().any(|f| codec::pascal(f.name()) == *p);
                assert!(!implemented, "{action}: {p} is implemented but listed");
            }
        }
    }
}
