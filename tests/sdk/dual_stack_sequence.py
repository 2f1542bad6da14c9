"""Dual stack and prefix mode through the official Alibaba Cloud Python SDKs, against a running enifab.

The calls Terway makes in a dual-stack or prefix-mode node pool, with the SDKs' own request
models (so every parameter name is the SDK's, not ours): CreateVpc with EnableIpv6,
CreateVSwitch with Ipv6CidrBlock (the 8 bits), DescribeVpcs / DescribeVSwitches showing the
blocks, CreateNetworkInterface with Ipv6AddressCount and Ipv4PrefixCount, AssignIpv6Addresses
(addresses, then prefixes), AssignPrivateIpAddresses with Ipv4PrefixCount, the describes'
Ipv6Sets / Ipv4PrefixSets / Ipv6PrefixSets and the Ipv6Address.N filter, UnassignIpv6Addresses
and UnassignPrivateIpAddresses by prefix; then the error codes: the IPv6 quota
(InvalidOperation.Ipv6CountExceeded, which Terway branches on), and a parameter the cloud defines
but enifab does not implement (UnsupportedParameter, never a quiet success).

Environment: ENIFAB_ENDPOINT (host:port), ENIFAB_ACCESS_KEY_ID, ENIFAB_ACCESS_KEY_SECRET,
ENIFAB_REGION (default cn-hongkong). Prints one line per check, a JSON line of what it made, and
"N passed, 0 failed"; exits non-zero on the first failure.
"""

import ipaddress
import json
import os
import sys

from alibabacloud_ecs20140526 import models as ecs_models
from alibabacloud_ecs20140526.client import Client as EcsClient
from alibabacloud_tea_openapi import models as open_api_models
from alibabacloud_vpc20160428 import models as vpc_models
from alibabacloud_vpc20160428.client import Client as VpcClient

ENDPOINT = os.environ["ENIFAB_ENDPOINT"]
REGION = os.environ.get("ENIFAB_REGION", "cn-hongkong")
PASSED = 0


def check(what, cond, detail=""):
    global PASSED
    if not cond:
        print(f"FAIL {what} {detail}", flush=True)
        sys.exit(1)
    PASSED += 1
    print(f"ok   {what}", flush=True)


def error_code(call):
    try:
        call()
    except Exception as e:
        return getattr(e, "code", None), getattr(e, "status_code", None)
    return None, None


def main():
    cfg = open_api_models.Config(
        access_key_id=os.environ["ENIFAB_ACCESS_KEY_ID"],
        access_key_secret=os.environ["ENIFAB_ACCESS_KEY_SECRET"],
        endpoint=ENDPOINT, protocol="HTTP", region_id=REGION,
    )
    ecs, vpc = EcsClient(cfg), VpcClient(cfg)

    vpc_id = vpc.create_vpc(vpc_models.CreateVpcRequest(
        region_id=REGION, cidr_block="10.0.0.0/8", enable_ipv_6=True)).body.vpc_id
    got = vpc.describe_vpcs(vpc_models.DescribeVpcsRequest(region_id=REGION, vpc_id=vpc_id)).body.vpcs.vpc[0]
    block = ipaddress.ip_network(got.ipv_6cidr_block)
    check("CreateVpc EnableIpv6: DescribeVpcs shows a /56", block.prefixlen == 56 and got.enabled_ipv_6, got.to_map())

    vsw = vpc.create_vswitch(vpc_models.CreateVSwitchRequest(
        region_id=REGION, vpc_id=vpc_id, zone_id=f"{REGION}-b", cidr_block="10.0.8.0/24",
        ipv_6cidr_block=7)).body.v_switch_id
    s = vpc.describe_vswitches(vpc_models.DescribeVSwitchesRequest(
        region_id=REGION, v_switch_id=vsw)).body.v_switches.v_switch[0]
    sub = ipaddress.ip_network(s.ipv_6cidr_block)
    check("CreateVSwitch Ipv6CidrBlock=7: the VPC's 8th /64", sub.prefixlen == 64 and sub.subnet_of(block)
          and int(sub.network_address) >> 64 & 0xff == 7 and s.enabled_ipv_6, s.ipv_6cidr_block)

    sg = ecs.create_security_group(ecs_models.CreateSecurityGroupRequest(
        region_id=REGION, vpc_id=vpc_id)).body.security_group_id
    created = ecs.create_network_interface(ecs_models.CreateNetworkInterfaceRequest(
        region_id=REGION, v_switch_id=vsw, security_group_ids=[sg],
        ipv_6address_count=2, ipv_4prefix_count=1)).body
    eni = created.network_interface_id
    v6 = [x.ipv_6address for x in created.ipv_6sets.ipv_6set]
    p4 = [x.ipv_4prefix for x in created.ipv_4prefix_sets.ipv_4prefix_set]
    check("CreateNetworkInterface: two IPv6 addresses in the /64",
          len(v6) == 2 and all(ipaddress.ip_address(a) in sub for a in v6), v6)
    check("CreateNetworkInterface: one /28 IPv4 prefix in the vSwitch",
          len(p4) == 1 and ipaddress.ip_network(p4[0]).prefixlen == 28
          and ipaddress.ip_network(p4[0]).subnet_of(ipaddress.ip_network("10.0.8.0/24")), p4)

    a = ecs.assign_ipv_6addresses(ecs_models.AssignIpv6AddressesRequest(
        region_id=REGION, network_interface_id=eni, ipv_6address_count=1)).body
    check("AssignIpv6Addresses count=1", len(a.ipv_6sets.ipv_6address) == 1, a.to_map())
    more = a.ipv_6sets.ipv_6address[0]
    a = ecs.assign_ipv_6addresses(ecs_models.AssignIpv6AddressesRequest(
        region_id=REGION, network_interface_id=eni, ipv_6prefix_count=1)).body
    p6 = a.ipv_6prefix_sets.ipv_6prefix
    check("AssignIpv6Addresses Ipv6PrefixCount=1: a /80", len(p6) == 1
          and ipaddress.ip_network(p6[0]).prefixlen == 80 and ipaddress.ip_network(p6[0]).subnet_of(sub), p6)
    a = ecs.assign_private_ip_addresses(ecs_models.AssignPrivateIpAddressesRequest(
        region_id=REGION, network_interface_id=eni, ipv_4prefix_count=1)).body
    more_p4 = a.assigned_private_ip_addresses_set.ipv_4prefix_set.ipv_4prefixes
    check("AssignPrivateIpAddresses Ipv4PrefixCount=1", len(more_p4) == 1, a.to_map())

    attr = ecs.describe_network_interface_attribute(ecs_models.DescribeNetworkInterfaceAttributeRequest(
        region_id=REGION, network_interface_id=eni)).body
    check("DescribeNetworkInterfaceAttribute: Ipv6Sets", sorted(x.ipv_6address for x in attr.ipv_6sets.ipv_6set)
          == sorted(v6 + [more]), attr.to_map())
    check("DescribeNetworkInterfaceAttribute: Ipv4PrefixSets / Ipv6PrefixSets",
          sorted(x.ipv_4prefix for x in attr.ipv_4prefix_sets.ipv_4prefix_set) == sorted(p4 + more_p4)
          and [x.ipv_6prefix for x in attr.ipv_6prefix_sets.ipv_6prefix_set] == p6, attr.to_map())
    found = ecs.describe_network_interfaces(ecs_models.DescribeNetworkInterfacesRequest(
        region_id=REGION, ipv_6address=[more])).body.network_interface_sets.network_interface_set
    check("DescribeNetworkInterfaces Ipv6Address.N finds the ENI", [x.network_interface_id for x in found] == [eni])

    ecs.unassign_ipv_6addresses(ecs_models.UnassignIpv6AddressesRequest(
        region_id=REGION, network_interface_id=eni, ipv_6address=[more], ipv_6prefix=p6))
    ecs.unassign_private_ip_addresses(ecs_models.UnassignPrivateIpAddressesRequest(
        region_id=REGION, network_interface_id=eni, ipv_4prefix=more_p4))
    attr = ecs.describe_network_interface_attribute(ecs_models.DescribeNetworkInterfaceAttributeRequest(
        region_id=REGION, network_interface_id=eni)).body
    check("Unassign by address and prefix: they are gone",
          sorted(x.ipv_6address for x in attr.ipv_6sets.ipv_6set) == sorted(v6)
          and not attr.ipv_6prefix_sets.ipv_6prefix_set
          and [x.ipv_4prefix for x in attr.ipv_4prefix_sets.ipv_4prefix_set] == p4, attr.to_map())
    code, _ = error_code(lambda: ecs.unassign_ipv_6addresses(ecs_models.UnassignIpv6AddressesRequest(
        region_id=REGION, network_interface_id=eni, ipv_6address=[more])))
    check("Unassign of an address it no longer holds is InvalidIp.IpUnassigned", code == "InvalidIp.IpUnassigned", code)

    code, status = error_code(lambda: ecs.assign_ipv_6addresses(ecs_models.AssignIpv6AddressesRequest(
        region_id=REGION, network_interface_id=eni, ipv_6address_count=60)))
    check("60 more IPv6 addresses: InvalidOperation.Ipv6CountExceeded",
          (code, status) == ("InvalidOperation.Ipv6CountExceeded", 403), (code, status))
    v4only = vpc.create_vswitch(vpc_models.CreateVSwitchRequest(
        region_id=REGION, vpc_id=vpc_id, zone_id=f"{REGION}-b", cidr_block="10.0.9.0/24")).body.v_switch_id
    code, _ = error_code(lambda: ecs.create_network_interface(ecs_models.CreateNetworkInterfaceRequest(
        region_id=REGION, v_switch_id=v4only, security_group_ids=[sg], ipv_6address_count=1)))
    check("IPv6 on an IPv4-only vSwitch is refused", code == "InvalidParameter", code)
    vpc.modify_vswitch_attribute(vpc_models.ModifyVSwitchAttributeRequest(
        region_id=REGION, v_switch_id=v4only, enable_ipv_6=True))
    got6 = vpc.describe_vswitches(vpc_models.DescribeVSwitchesRequest(
        region_id=REGION, v_switch_id=v4only)).body.v_switches.v_switch[0].ipv_6cidr_block
    check("ModifyVSwitchAttribute EnableIPv6=true: a free /64 of the VPC's /56",
          ipaddress.ip_network(got6).subnet_of(block) and ipaddress.ip_network(got6) != sub, got6)
    made = ecs.create_network_interface(ecs_models.CreateNetworkInterfaceRequest(
        region_id=REGION, v_switch_id=v4only, security_group_ids=[sg], ipv_6address_count=1)).body
    check("... and its ENIs take IPv6 addresses of it",
          ipaddress.ip_address(made.ipv_6sets.ipv_6set[0].ipv_6address) in ipaddress.ip_network(got6), made.to_map())
    plain = vpc.create_vpc(vpc_models.CreateVpcRequest(region_id=REGION, cidr_block="192.168.0.0/16")).body.vpc_id
    vpc.modify_vpc_attribute(vpc_models.ModifyVpcAttributeRequest(region_id=REGION, vpc_id=plain, enable_ipv_6=True))
    later = vpc.describe_vpcs(vpc_models.DescribeVpcsRequest(region_id=REGION, vpc_id=plain)).body.vpcs.vpc[0]
    check("ModifyVpcAttribute EnableIPv6=true on an IPv4 VPC: a /56 of its own",
          later.enabled_ipv_6 and ipaddress.ip_network(later.ipv_6cidr_block).prefixlen == 56
          and ipaddress.ip_network(later.ipv_6cidr_block) != block, later.to_map())

    ecs.authorize_security_group(ecs_models.AuthorizeSecurityGroupRequest(
        region_id=REGION, security_group_id=sg, permissions=[
            ecs_models.AuthorizeSecurityGroupRequestPermissions(
                ip_protocol="TCP", port_range="443/443", ipv_6source_cidr_ip=str(block))]))
    rules = ecs.describe_security_group_attribute(ecs_models.DescribeSecurityGroupAttributeRequest(
        region_id=REGION, security_group_id=sg)).body.permissions.permission
    check("AuthorizeSecurityGroup with Ipv6SourceCidrIp: described back",
          [(r.ip_protocol, r.ipv_6source_cidr_ip, r.source_cidr_ip) for r in rules] == [("TCP", str(block), "")],
          [r.to_map() for r in rules])
    code, _ = error_code(lambda: ecs.authorize_security_group(ecs_models.AuthorizeSecurityGroupRequest(
        region_id=REGION, security_group_id=sg, permissions=[
            ecs_models.AuthorizeSecurityGroupRequestPermissions(
                ip_protocol="TCP", port_range="80/80", source_prefix_list_id="pl-123")])))
    check("a permission's SourcePrefixListId (not implemented): UnsupportedParameter", code == "UnsupportedParameter",
          code)

    before = len(ecs.describe_network_interfaces(ecs_models.DescribeNetworkInterfacesRequest(
        region_id=REGION, v_switch_id=vsw)).body.network_interface_sets.network_interface_set)
    code, status = error_code(lambda: ecs.create_network_interface(ecs_models.CreateNetworkInterfaceRequest(
        region_id=REGION, v_switch_id=vsw, security_group_ids=[sg], queue_number=8)))
    after = len(ecs.describe_network_interfaces(ecs_models.DescribeNetworkInterfacesRequest(
        region_id=REGION, v_switch_id=vsw)).body.network_interface_sets.network_interface_set)
    check("QueueNumber (defined by the cloud, not by enifab): UnsupportedParameter, nothing created",
          (code, status, after) == ("UnsupportedParameter", 400, before), (code, status, before, after))

    print(json.dumps({"vpc": vpc_id, "vswitch": vsw, "eni": eni, "ipv6": v6, "ipv4_prefixes": p4}))
    print(f"{PASSED} passed, 0 failed")


if __name__ == "__main__":
    main()
