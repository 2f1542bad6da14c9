"""A trunk pod's life through the official Alibaba Cloud Python SDKs, against a running enifab.

Drives `enifab serve` with the new-style SDKs from PyPI (alibabacloud-ecs20140526,
alibabacloud-vpc20160428 on alibabacloud-tea-openapi), in the order Terway's pkg/aliyun/client
calls the cloud for a trunk pod: DescribeInstanceTypes, DescribeVSwitches, CreateNetworkInterface
(Trunk), AttachNetworkInterface, Describe until InUse, CreateNetworkInterface (member, with a
ClientToken and tags), Attach with TrunkNetworkInstanceId, Describe (DeviceIndex), Detach,
Describe until Available, Delete, Describe until empty; then the error codes Terway branches on.

The SDKs sign with ACS3-HMAC-SHA256 by default; the same calls are repeated with
signature_algorithm='v2' (RPC v1, HMAC-SHA1, what the old Go SDK uses), over HTTPS when an HTTPS
endpoint and its CA are given, and with a wrong secret (which must be refused).

Environment:
  ENIFAB_ENDPOINT          host:port of the plain listener (required)
  ENIFAB_HTTPS_ENDPOINT    host:port of the HTTPS listener (optional)
  ENIFAB_CA                the CA certificate to trust for HTTPS (with ENIFAB_HTTPS_ENDPOINT)
  ENIFAB_ACCESS_KEY_ID, ENIFAB_ACCESS_KEY_SECRET   the AccessKey the server accepts
  ENIFAB_REGION            default cn-hongkong

Prints one line per check and, last, a JSON line {"trunk": ..., "member": ...} and
"N passed, 0 failed"; exits non-zero on the first failure.
"""

import json
import os
import sys
import time
import uuid

from alibabacloud_ecs20140526 import models as ecs_models
from alibabacloud_ecs20140526.client import Client as EcsClient
from alibabacloud_tea_openapi import models as open_api_models
from alibabacloud_tea_openapi import utils_models as open_api_util_models
from alibabacloud_vpc20160428 import models as vpc_models
from alibabacloud_vpc20160428.client import Client as VpcClient
from darabonba.runtime import RuntimeOptions

ENDPOINT = os.environ["ENIFAB_ENDPOINT"]
REGION = os.environ.get("ENIFAB_REGION", "cn-hongkong")
AK = os.environ["ENIFAB_ACCESS_KEY_ID"]
SECRET = os.environ["ENIFAB_ACCESS_KEY_SECRET"]
PASSED = 0


def check(what, cond, detail=""):
    global PASSED
    if not cond:
        print(f"FAIL {what} {detail}", flush=True)
        sys.exit(1)
    PASSED += 1
    print(f"ok   {what}", flush=True)


def config(endpoint=ENDPOINT, protocol="HTTP", secret=SECRET, algorithm=None, ca=None):
    return open_api_models.Config(
        access_key_id=AK,
        access_key_secret=secret,
        endpoint=endpoint,
        protocol=protocol,
        region_id=REGION,
        signature_algorithm=algorithm,
        ca=ca,
    )


def error_code(call):
    try:
        call()
    except Exception as e:  # the SDK raises ClientException / ServerException with .code
        return getattr(e, "code", None), getattr(e, "status_code", None), getattr(e, "data", None)
    return None, None, None


def setup(ecs, vpc):
    """The cloud side of one node: VPC, node and pod vSwitches, a security group, an instance."""
    vpc_id = vpc.create_vpc(vpc_models.CreateVpcRequest(region_id=REGION, cidr_block="10.0.0.0/8")).body.vpc_id

    def vswitch(cidr):
        req = vpc_models.CreateVSwitchRequest(region_id=REGION, vpc_id=vpc_id, zone_id=f"{REGION}-b", cidr_block=cidr)
        return vpc.create_vswitch(req).body.v_switch_id

    node_vsw, pod_vsw = vswitch("10.0.4.0/24"), vswitch("10.0.8.0/22")
    sg = ecs.create_security_group(ecs_models.CreateSecurityGroupRequest(region_id=REGION, vpc_id=vpc_id)).body
    sg = sg.security_group_id
    check("setup: VPC, vSwitches, security group", all([vpc_id, node_vsw, pod_vsw, sg]))
    return vpc_id, node_vsw, pod_vsw, sg


def new_node(ecs, node_vsw, sg, ip):
    """A node instance (one trunk ENI per instance). enifab's CreateInstance registers a node and
    takes SecurityGroupIds.N (the cloud's own CreateInstance has another shape), so it goes
    through the SDK's generic call."""
    params = open_api_util_models.Params(
        action="CreateInstance", version="2014-05-26", protocol="HTTP", pathname="/", method="POST",
        auth_type="AK", style="RPC", req_body_type="formData", body_type="json",
    )
    query = {"RegionId": REGION, "InstanceType": "ecs.g7.xlarge", "VSwitchId": node_vsw,
             "SecurityGroupIds.1": sg, "PrivateIpAddress": ip, "InstanceName": f"{REGION}.{ip}"}
    out = ecs.call_api(params, open_api_util_models.OpenApiRequest(query=query), RuntimeOptions())
    return out["body"]["InstanceId"]


def describe(ecs, eni):
    req = ecs_models.DescribeNetworkInterfacesRequest(region_id=REGION, network_interface_id=[eni], max_results=500)
    return ecs.describe_network_interfaces(req).body.network_interface_sets.network_interface_set


def describe_until(ecs, eni, done, what):
    deadline = time.time() + 20
    while True:
        s = describe(ecs, eni)
        if done(s):
            return s
        if time.time() > deadline:
            check(what, False, f"last answer: {[x.to_map() for x in s]}")
        time.sleep(0.1)


def trunk_pod_life(ecs, vpc, ids, label, node_ip):
    vpc_id, node_vsw, pod_vsw, sg = ids
    instance = new_node(ecs, node_vsw, sg, node_ip)
    check(f"{label}: a node at {node_ip}", instance.startswith("i-"), instance)

    types = ecs.describe_instance_types(
        ecs_models.DescribeInstanceTypesRequest(instance_types=["ecs.g7.xlarge"], max_results=100)
    ).body.instance_types.instance_type
    t = types[0]
    check(f"{label}: DescribeInstanceTypes",
          (t.instance_type_id, t.eni_quantity, t.eni_total_quantity, t.eni_trunk_supported)
          == ("ecs.g7.xlarge", 4, 20, True), t.to_map())

    vsws = vpc.describe_vswitches(vpc_models.DescribeVSwitchesRequest(region_id=REGION, v_switch_id=pod_vsw)).body
    v = vsws.v_switches.v_switch[0]
    check(f"{label}: DescribeVSwitches",
          (v.v_switch_id, v.zone_id, v.cidr_block, v.vpc_id) == (pod_vsw, f"{REGION}-b", "10.0.8.0/22", vpc_id)
          and v.available_ip_address_count > 0, v.to_map())

    trunk = ecs.create_network_interface(ecs_models.CreateNetworkInterfaceRequest(
        region_id=REGION, v_switch_id=node_vsw, security_group_ids=[sg], instance_type="Trunk",
        description="interface create by terway", source_dest_check=False,
        tag=[ecs_models.CreateNetworkInterfaceRequestTag(key="creator", value="terway")],
        client_token=str(uuid.uuid4()),
    )).body
    check(f"{label}: CreateNetworkInterface Trunk",
          trunk.type == "Trunk" and trunk.status == "Available" and trunk.mac_address.startswith("00:16:3e:")
          and trunk.private_ip_sets.private_ip_set[0].primary is True, trunk.to_map())

    ecs.attach_network_interface(ecs_models.AttachNetworkInterfaceRequest(
        region_id=REGION, instance_id=instance, network_interface_id=trunk.network_interface_id))
    s = describe_until(ecs, trunk.network_interface_id, lambda s: s and s[0].status == "InUse",
                       f"{label}: trunk InUse")
    check(f"{label}: Attach trunk, Describe until InUse",
          s[0].instance_id == instance and s[0].attachment.instance_id == instance, s[0].to_map())

    token = str(uuid.uuid4())
    member_req = ecs_models.CreateNetworkInterfaceRequest(
        region_id=REGION, v_switch_id=pod_vsw, security_group_ids=[sg],
        description="interface create by terway", source_dest_check=False, client_token=token,
        tag=[ecs_models.CreateNetworkInterfaceRequestTag(key="ack.aliyun.com", value="c0ffee"),
             ecs_models.CreateNetworkInterfaceRequestTag(key="creator", value="terway-controller")],
    )
    member = ecs.create_network_interface(member_req).body
    tags = sorted((x.tag_key, x.tag_value) for x in member.tags.tag)
    check(f"{label}: CreateNetworkInterface member with ClientToken and tags",
          member.type == "Secondary" and tags == [("ack.aliyun.com", "c0ffee"), ("creator", "terway-controller")],
          member.to_map())
    again = ecs.create_network_interface(member_req).body
    check(f"{label}: same ClientToken, same ENI", again.network_interface_id == member.network_interface_id)

    ecs.attach_network_interface(ecs_models.AttachNetworkInterfaceRequest(
        region_id=REGION, instance_id=instance, network_interface_id=member.network_interface_id,
        trunk_network_instance_id=trunk.network_interface_id))
    s = describe_until(ecs, member.network_interface_id, lambda s: s and s[0].status == "InUse",
                       f"{label}: member InUse")
    a = s[0].attachment
    check(f"{label}: Attach with TrunkNetworkInstanceId, DeviceIndex is the VLAN",
          s[0].type == "Member" and a.trunk_network_interface_id == trunk.network_interface_id
          and 1 <= a.device_index <= 4094 and a.instance_id == instance, s[0].to_map())

    ecs.detach_network_interface(ecs_models.DetachNetworkInterfaceRequest(
        region_id=REGION, instance_id=instance, network_interface_id=member.network_interface_id,
        trunk_network_instance_id=trunk.network_interface_id))
    s = describe_until(ecs, member.network_interface_id, lambda s: s and s[0].status == "Available",
                       f"{label}: member Available")
    check(f"{label}: Detach, Describe until Available", s[0].type == "Secondary" and s[0].attachment is None,
          s[0].to_map())

    ecs.delete_network_interface(ecs_models.DeleteNetworkInterfaceRequest(
        region_id=REGION, network_interface_id=member.network_interface_id))
    describe_until(ecs, member.network_interface_id, lambda s: len(s) == 0, f"{label}: member gone")
    check(f"{label}: Delete, Describe until the list is empty", True)

    code, status, data = error_code(lambda: ecs.detach_network_interface(ecs_models.DetachNetworkInterfaceRequest(
        region_id=REGION, instance_id=instance, network_interface_id=member.network_interface_id,
        trunk_network_instance_id=trunk.network_interface_id)))
    check(f"{label}: Detach of a gone ENI is InvalidEniId.NotFound", (code, status) == ("InvalidEniId.NotFound", 404),
          (code, status, data))
    code, status, _ = error_code(lambda: ecs.delete_network_interface(ecs_models.DeleteNetworkInterfaceRequest(
        region_id=REGION, network_interface_id=member.network_interface_id)))
    check(f"{label}: Delete of a gone ENI is InvalidEniId.NotFound", (code, status) == ("InvalidEniId.NotFound", 404))
    check(f"{label}: error body has the cloud's fields",
          data is not None and {"RequestId", "HostId", "Code", "Message", "Recommend"} <= set(data), data)
    return trunk.network_interface_id, member.network_interface_id, instance


def inject(ecs, target, code, count=1):
    params = open_api_util_models.Params(
        action="InjectFault", version="enifab-v1", protocol="HTTP", pathname="/", method="POST",
        auth_type="AK", style="RPC", req_body_type="formData", body_type="json",
    )
    query = {"TargetAction": target, "Code": code, "Count": str(count)}
    return ecs.call_api(params, open_api_util_models.OpenApiRequest(query=query), RuntimeOptions())["body"]


def main():
    ecs, vpc = EcsClient(config()), VpcClient(config())
    ids = setup(ecs, vpc)
    trunk, member, instance = trunk_pod_life(ecs, vpc, ids, "ACS3-HMAC-SHA256", "10.0.4.22")

    v2 = config(algorithm="v2")
    trunk_pod_life(EcsClient(v2), VpcClient(v2), ids, "HMAC-SHA1 (RPC v1)", "10.0.4.20")

    https = os.environ.get("ENIFAB_HTTPS_ENDPOINT")
    if https:
        tls = config(endpoint=https, protocol="HTTPS", ca=os.environ["ENIFAB_CA"])
        trunk_pod_life(EcsClient(tls), VpcClient(tls), ids, "HTTPS", "10.0.4.244")

    # Terway's retry paths: an injected Throttling, then an IdempotentFailed.
    _, _, pod_vsw, sg = ids
    req = ecs_models.CreateNetworkInterfaceRequest(region_id=REGION, v_switch_id=pod_vsw, security_group_ids=[sg])
    inject(ecs, "CreateNetworkInterface", "Throttling")
    code, status, _ = error_code(lambda: ecs.create_network_interface(req))
    check("injected Throttling", (code, status) == ("Throttling", 400), (code, status))
    check("the retry succeeds", ecs.create_network_interface(req).body.network_interface_id.startswith("eni-"))
    inject(ecs, "CreateNetworkInterface", "IdempotentFailed")
    req.client_token = str(uuid.uuid4())
    code, _, _ = error_code(lambda: ecs.create_network_interface(req))
    check("injected IdempotentFailed", code == "IdempotentFailed", code)

    code, status, data = error_code(lambda: EcsClient(config(secret="wrong")).describe_instance_types(
        ecs_models.DescribeInstanceTypesRequest()))
    check("a wrong secret is SignatureDoesNotMatch (ACS3)", (code, status) == ("SignatureDoesNotMatch", 400), data)
    code, status, _ = error_code(lambda: EcsClient(config(secret="wrong", algorithm="v2")).describe_instance_types(
        ecs_models.DescribeInstanceTypesRequest()))
    check("a wrong secret is SignatureDoesNotMatch (HMAC-SHA1)", (code, status) == ("SignatureDoesNotMatch", 400))

    print(json.dumps({"trunk": trunk, "member": member, "instance": instance}))
    print(f"{PASSED} passed, 0 failed")


if __name__ == "__main__":
    main()
