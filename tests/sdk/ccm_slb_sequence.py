"""The cloud-controller-manager's reconcile of one LoadBalancer Service with ENI backends, through
the official Alibaba Cloud Python SDKs, against a running enifab.

The SLB calls go through alibabacloud-slb20140515 (the ECS and VPC ones through the SDKs
terway_sequence.py uses), in the order notes/research-ccm-slb.md §2 and §7 give for the CCM:

  create:   DescribeNetworkInterfaces (pod IPs -> member ENIs), DescribeVpcAttribute,
            DescribeLoadBalancers by tag, then by name, CreateLoadBalancer (tags, delete
            protection, ClientToken), DescribeLoadBalancerAttribute, CreateVServerGroup (empty),
            AddVServerGroupBackendServers (lower-camel JSON with the CCM's own extra keys),
            CreateLoadBalancerTCPListener with VServerGroupId (the SDK sends healthCheckInterval),
            StartLoadBalancerListener
  update:   DescribeLoadBalancers by tag, ListTagResources, DescribeVServerGroups,
            DescribeVServerGroupAttribute, DescribeLoadBalancerListeners; a pod goes and another
            comes (Remove/Add), a weight changes (SetVServerGroupAttribute); the Service port
            changes (a new group and listener, the old listener and group deleted)
  delete:   DeleteLoadBalancer refused while protected, SetLoadBalancerDeleteProtection off,
            DeleteLoadBalancer, and the "LoadBalancerId does not exist" the CCM then matches

The sequence runs signed with HMAC-SHA1 (RPC v1, what the CCM's old Go SDK signs with) and again
with ACS3-HMAC-SHA256 (the SDK's default); then an intranet load balancer on a full vSwitch must
answer VSwitchAvailableIpNotExist, which the CCM answers by trying another vSwitch.

Environment: ENIFAB_ENDPOINT (host:port, required), ENIFAB_ACCESS_KEY_ID,
ENIFAB_ACCESS_KEY_SECRET, ENIFAB_REGION (default cn-hongkong).

Prints one line per check and, last, a JSON line of what it made and "N passed, 0 failed"; exits
non-zero on the first failure.
"""

import json
import os
import sys
import time
import uuid

from alibabacloud_ecs20140526 import models as ecs_models
from alibabacloud_ecs20140526.client import Client as EcsClient
from alibabacloud_slb20140515 import models as slb_models
from alibabacloud_slb20140515.client import Client as SlbClient
from alibabacloud_tea_openapi import models as open_api_models
from alibabacloud_tea_openapi import utils_models as open_api_util_models
from alibabacloud_vpc20160428 import models as vpc_models
from alibabacloud_vpc20160428.client import Client as VpcClient
from darabonba.runtime import RuntimeOptions

ENDPOINT = os.environ["ENIFAB_ENDPOINT"]
REGION = os.environ.get("ENIFAB_REGION", "cn-hongkong")
AK = os.environ["ENIFAB_ACCESS_KEY_ID"]
SECRET = os.environ["ENIFAB_ACCESS_KEY_SECRET"]
CLUSTER = "c0ffee"
PASSED = 0


def check(what, cond, detail=""):
    global PASSED
    if not cond:
        print(f"FAIL {what} {detail}", flush=True)
        sys.exit(1)
    PASSED += 1
    print(f"ok   {what}", flush=True)


def config(algorithm=None):
    return open_api_models.Config(
        access_key_id=AK, access_key_secret=SECRET, endpoint=ENDPOINT, protocol="HTTP", region_id=REGION,
        signature_algorithm=algorithm,
    )


def error_of(call):
    try:
        call()
    except Exception as e:  # ClientException / ServerException, with .code, .status_code, .data
        return getattr(e, "code", None), getattr(e, "status_code", None), getattr(e, "data", None) or {}
    return None, None, {}


def setup(ecs, vpc):
    """The cloud side of one node with a trunk ENI and three trunk pods (member ENIs, InUse)."""
    vpc_id = vpc.create_vpc(vpc_models.CreateVpcRequest(region_id=REGION, cidr_block="10.0.0.0/8")).body.vpc_id

    def vswitch(cidr):
        req = vpc_models.CreateVSwitchRequest(region_id=REGION, vpc_id=vpc_id, zone_id=f"{REGION}-b", cidr_block=cidr)
        return vpc.create_vswitch(req).body.v_switch_id

    node_vsw, pod_vsw, small_vsw = vswitch("10.0.4.0/24"), vswitch("10.0.8.0/22"), vswitch("10.0.12.0/29")
    sg = ecs.create_security_group(ecs_models.CreateSecurityGroupRequest(region_id=REGION, vpc_id=vpc_id)).body
    sg = sg.security_group_id
    params = open_api_util_models.Params(
        action="CreateInstance", version="2014-05-26", protocol="HTTP", pathname="/", method="POST",
        auth_type="AK", style="RPC", req_body_type="formData", body_type="json",
    )
    query = {"RegionId": REGION, "InstanceType": "ecs.g7.xlarge", "VSwitchId": node_vsw,
             "SecurityGroupIds.1": sg, "PrivateIpAddress": "10.0.4.22", "InstanceName": f"{REGION}.10.0.4.22"}
    node = ecs.call_api(params, open_api_util_models.OpenApiRequest(query=query), RuntimeOptions())["body"]
    node = node["InstanceId"]
    trunk = ecs.create_network_interface(ecs_models.CreateNetworkInterfaceRequest(
        region_id=REGION, v_switch_id=node_vsw, security_group_ids=[sg], instance_type="Trunk")).body
    ecs.attach_network_interface(ecs_models.AttachNetworkInterfaceRequest(
        region_id=REGION, instance_id=node, network_interface_id=trunk.network_interface_id))
    wait_in_use(ecs, trunk.network_interface_id)
    pods = []
    for _ in range(3):
        m = ecs.create_network_interface(ecs_models.CreateNetworkInterfaceRequest(
            region_id=REGION, v_switch_id=pod_vsw, security_group_ids=[sg])).body
        ecs.attach_network_interface(ecs_models.AttachNetworkInterfaceRequest(
            region_id=REGION, instance_id=node, network_interface_id=m.network_interface_id,
            trunk_network_instance_id=trunk.network_interface_id))
        wait_in_use(ecs, m.network_interface_id)
        pods.append(m.private_ip_address)
    check("setup: a node with a trunk and three trunk pods", len(pods) == 3 and node.startswith("i-"))
    return vpc_id, small_vsw, pods


def wait_in_use(ecs, eni):
    deadline = time.time() + 20
    while time.time() < deadline:
        req = ecs_models.DescribeNetworkInterfacesRequest(region_id=REGION, network_interface_id=[eni])
        s = ecs.describe_network_interfaces(req).body.network_interface_sets.network_interface_set
        if s and s[0].status == "InUse":
            return
        time.sleep(0.1)
    check(f"{eni} InUse", False)


def eni_of_pods(ecs, vpc, vpc_id, ips, label):
    """The CCM's local model: pod IPs to ENI IDs (every IP is inside PrivateIpSets)."""
    req = ecs_models.DescribeNetworkInterfacesRequest(
        region_id=REGION, vpc_id=vpc_id, status="InUse", private_ip_address=ips, max_results=100)
    body = ecs.describe_network_interfaces(req).body
    by_ip = {}
    for e in body.network_interface_sets.network_interface_set:
        for p in e.private_ip_sets.private_ip_set:
            by_ip[p.private_ip_address] = e.network_interface_id
    check(f"{label}: DescribeNetworkInterfaces maps every pod IP to its member ENI",
          sorted(by_ip) == sorted(ips) and all(v.startswith("eni-") for v in by_ip.values()), by_ip)
    attr = vpc.describe_vpc_attribute(vpc_models.DescribeVpcAttributeRequest(region_id=REGION, vpc_id=vpc_id)).body
    check(f"{label}: DescribeVpcAttribute gives the VPC's CIDR blocks",
          attr.cidr_block == "10.0.0.0/8" and attr.secondary_cidr_blocks is not None, attr.to_map())
    return by_ip


def backends(by_ip, ips, port, weight=100):
    """BackendServers as the CCM marshals model.BackendAttribute: lower camel, numbers, extras."""
    return json.dumps([{
        "IsUserManaged": False, "NodeName": f"{REGION}.10.0.4.22",
        "description": f"k8s/{port}/web/default/{CLUSTER}", "serverId": by_ip[ip], "serverIp": ip,
        "weight": weight, "port": port, "type": "eni",
        "TargetRef": {"kind": "Pod", "namespace": "default", "name": f"web-{ip}"}, "Invalid": False,
    } for ip in ips])


def find(slb, name):
    tags = json.dumps([{"TagValue": name, "TagKey": "kubernetes.do.not.delete"}])
    return slb.describe_load_balancers(slb_models.DescribeLoadBalancersRequest(region_id=REGION, tags=tags)).body


def listeners_of(slb, lb):
    req = slb_models.DescribeLoadBalancerListenersRequest(region_id=REGION, load_balancer_id=[lb], max_results=50)
    return slb.describe_load_balancer_listeners(req).body


def group_of(slb, g):
    req = slb_models.DescribeVServerGroupAttributeRequest(region_id=REGION, vserver_group_id=g)
    return slb.describe_vserver_group_attribute(req).body


def listener(slb, lb, port, group, health_interval=None):
    slb.create_load_balancer_tcplistener(slb_models.CreateLoadBalancerTCPListenerRequest(
        region_id=REGION, load_balancer_id=lb, listener_port=port, vserver_group_id=group,
        description=f"k8s/{port}/web/default/{CLUSTER}", bandwidth=-1, scheduler="rr",
        health_check_interval=health_interval))
    slb.start_load_balancer_listener(slb_models.StartLoadBalancerListenerRequest(
        region_id=REGION, load_balancer_id=lb, listener_port=port, listener_protocol="tcp"))


def service_life(ecs, vpc, slb, vpc_id, pods, label):
    name = "a" + uuid.uuid4().hex[:31]  # the CCM's default name: "a" + the Service UID, 32 characters
    by_ip = eni_of_pods(ecs, vpc, vpc_id, pods, label)
    a, b, c = pods

    # -- create --
    check(f"{label}: DescribeLoadBalancers by tag finds nothing", find(slb, name).total_count == 0)
    by_name = slb.describe_load_balancers(slb_models.DescribeLoadBalancersRequest(
        region_id=REGION, load_balancer_name=name)).body
    check(f"{label}: DescribeLoadBalancers by name finds nothing", by_name.load_balancers.load_balancer == [])
    create = slb_models.CreateLoadBalancerRequest(
        region_id=REGION, address_type="internet", load_balancer_name=name, instance_charge_type="PayByCLCU",
        delete_protection="on", modification_protection_status="ConsoleProtection",
        modification_protection_reason="managed.by.ack", client_token=str(uuid.uuid4()),
        tag=[slb_models.CreateLoadBalancerRequestTag(key="kubernetes.do.not.delete", value=name),
             slb_models.CreateLoadBalancerRequestTag(key="ack.aliyun.com", value=CLUSTER)])
    created = slb.create_load_balancer(create).body
    lb = created.load_balancer_id
    check(f"{label}: CreateLoadBalancer answers LoadBalancerId and Address",
          lb.startswith("lb-") and created.address.count(".") == 3, created.to_map())
    again = slb.create_load_balancer(create).body
    check(f"{label}: the same ClientToken, the same load balancer", again.load_balancer_id == lb)
    attr = slb.describe_load_balancer_attribute(slb_models.DescribeLoadBalancerAttributeRequest(
        region_id=REGION, load_balancer_id=lb)).body
    tags = {t.tag_key: t.tag_value for t in attr.tags.tag}
    check(f"{label}: DescribeLoadBalancerAttribute echoes what was created",
          (attr.load_balancer_id, attr.address, attr.address_type, attr.load_balancer_name,
           attr.instance_charge_type, attr.delete_protection, attr.modification_protection_status, attr.bandwidth)
          == (lb, created.address, "internet", name, "PayByCLCU", "on", "ConsoleProtection", -1)
          and tags == {"kubernetes.do.not.delete": name, "ack.aliyun.com": CLUSTER}, attr.to_map())

    g = slb.create_vserver_group(slb_models.CreateVServerGroupRequest(
        region_id=REGION, load_balancer_id=lb, vserver_group_name=f"k8s/80/web/default/{CLUSTER}")).body
    check(f"{label}: CreateVServerGroup, empty", g.vserver_group_id.startswith("rsp-"), g.to_map())
    g = g.vserver_group_id
    added = slb.add_vserver_group_backend_servers(slb_models.AddVServerGroupBackendServersRequest(
        region_id=REGION, vserver_group_id=g, backend_servers=backends(by_ip, [a, b], 80))).body
    # Add answers the group's backends without their addresses (as the cloud's model has it);
    # DescribeVServerGroupAttribute has them.
    got = sorted((s.server_id, s.port, s.weight, s.type) for s in added.backend_servers.backend_server)
    check(f"{label}: AddVServerGroupBackendServers with the CCM's JSON",
          got == sorted((by_ip[ip], 80, 100, "eni") for ip in [a, b]), added.to_map())
    stored = group_of(slb, g)
    got = sorted((s.server_id, s.server_ip, s.port, s.description) for s in stored.backend_servers.backend_server)
    check(f"{label}: DescribeVServerGroupAttribute returns the backends as sent",
          got == sorted((by_ip[ip], ip, 80, f"k8s/80/web/default/{CLUSTER}") for ip in [a, b]), stored.to_map())

    listener(slb, lb, 80, g, health_interval=3)
    tcp = slb.describe_load_balancer_tcplistener_attribute(slb_models.DescribeLoadBalancerTCPListenerAttributeRequest(
        region_id=REGION, load_balancer_id=lb, listener_port=80)).body
    check(f"{label}: CreateLoadBalancerTCPListener (healthCheckInterval) and StartLoadBalancerListener",
          (tcp.status, tcp.vserver_group_id, tcp.scheduler, tcp.health_check_interval, tcp.bandwidth)
          == ("running", g, "rr", 3, -1), tcp.to_map())

    # -- a later reconcile --
    found = find(slb, name).load_balancers.load_balancer
    check(f"{label}: found by tag, with DeleteProtection",
          len(found) == 1 and found[0].load_balancer_id == lb and found[0].delete_protection == "on",
          [x.to_map() for x in found])
    tagged = slb.list_tag_resources(slb_models.ListTagResourcesRequest(
        region_id=REGION, resource_type="instance", resource_id=[lb])).body
    check(f"{label}: ListTagResources",
          tagged.next_token == "" and {(t.tag_key, t.tag_value) for t in tagged.tag_resources.tag_resource}
          == {("kubernetes.do.not.delete", name), ("ack.aliyun.com", CLUSTER)}, tagged.to_map())
    groups = slb.describe_vserver_groups(slb_models.DescribeVServerGroupsRequest(
        region_id=REGION, load_balancer_id=lb)).body.vserver_groups.vserver_group
    check(f"{label}: DescribeVServerGroups", [(x.vserver_group_id, x.vserver_group_name) for x in groups]
          == [(g, f"k8s/80/web/default/{CLUSTER}")], [x.to_map() for x in groups])
    ls = listeners_of(slb, lb)
    check(f"{label}: DescribeLoadBalancerListeners (flat list, empty NextToken on the last page)",
          ls.next_token == "" and [(x.listener_port, x.listener_protocol, x.status, x.vserver_group_id)
                                   for x in ls.listeners] == [(80, "tcp", "running", g)]
          and ls.listeners[0].tcplistener_config.health_check_interval == 3, ls.to_map())

    slb.remove_vserver_group_backend_servers(slb_models.RemoveVServerGroupBackendServersRequest(
        region_id=REGION, vserver_group_id=g, backend_servers=backends(by_ip, [b], 80)))
    slb.add_vserver_group_backend_servers(slb_models.AddVServerGroupBackendServersRequest(
        region_id=REGION, vserver_group_id=g, backend_servers=backends(by_ip, [c], 80)))
    slb.set_vserver_group_attribute(slb_models.SetVServerGroupAttributeRequest(
        region_id=REGION, vserver_group_id=g, backend_servers=backends(by_ip, [c], 80, weight=50)))
    got = sorted((s.server_ip, s.weight) for s in group_of(slb, g).backend_servers.backend_server)
    check(f"{label}: a pod goes, another comes, a weight changes", got == sorted([(a, 100), (c, 50)]), got)
    health = slb.describe_health_status(slb_models.DescribeHealthStatusRequest(
        region_id=REGION, load_balancer_id=lb)).body.backend_servers.backend_server
    check(f"{label}: DescribeHealthStatus lists each backend",
          sorted(h.server_ip for h in health) == sorted([a, c])
          and all(h.server_health_status in ("normal", "abnormal", "unavailable") for h in health),
          [h.to_map() for h in health])

    g2 = slb.create_vserver_group(slb_models.CreateVServerGroupRequest(
        region_id=REGION, load_balancer_id=lb, vserver_group_name=f"k8s/8080/web/default/{CLUSTER}")).body
    g2 = g2.vserver_group_id
    slb.add_vserver_group_backend_servers(slb_models.AddVServerGroupBackendServersRequest(
        region_id=REGION, vserver_group_id=g2, backend_servers=backends(by_ip, [a, c], 8080)))
    listener(slb, lb, 8080, g2)
    code, status, _ = error_of(lambda: slb.delete_vserver_group(slb_models.DeleteVServerGroupRequest(
        region_id=REGION, vserver_group_id=g)))
    check(f"{label}: a group in use cannot go (RspoolVipExist)", (code, status) == ("RspoolVipExist", 400))
    slb.delete_load_balancer_listener(slb_models.DeleteLoadBalancerListenerRequest(
        region_id=REGION, load_balancer_id=lb, listener_port=80, listener_protocol="tcp"))
    slb.delete_vserver_group(slb_models.DeleteVServerGroupRequest(region_id=REGION, vserver_group_id=g))
    ls = listeners_of(slb, lb)
    check(f"{label}: the port changed: one listener on 8080 with the new group",
          [(x.listener_port, x.vserver_group_id, x.status) for x in ls.listeners] == [(8080, g2, "running")],
          ls.to_map())

    # -- delete --
    code, status, data = error_of(lambda: slb.delete_load_balancer(slb_models.DeleteLoadBalancerRequest(
        region_id=REGION, load_balancer_id=lb)))
    check(f"{label}: DeleteLoadBalancer refused while protected",
          (code, status) == ("OperationDenied.DeleteProtectionIsOn", 400)
          and data.get("HostId") == "slb.aliyuncs.com", (code, status, data))
    slb.set_load_balancer_delete_protection(slb_models.SetLoadBalancerDeleteProtectionRequest(
        region_id=REGION, load_balancer_id=lb, delete_protection="off"))
    slb.delete_load_balancer(slb_models.DeleteLoadBalancerRequest(region_id=REGION, load_balancer_id=lb))
    code, status, data = error_of(lambda: slb.describe_load_balancer_attribute(
        slb_models.DescribeLoadBalancerAttributeRequest(region_id=REGION, load_balancer_id=lb)))
    check(f"{label}: gone: InvalidLoadBalancerId.NotFound, 'LoadBalancerId does not exist'",
          (code, status) == ("InvalidLoadBalancerId.NotFound", 404)
          and "LoadBalancerId does not exist" in data.get("Message", ""), (code, status, data))
    check(f"{label}: DescribeLoadBalancers by tag finds nothing again", find(slb, name).total_count == 0)
    return lb


def full_vswitch(slb, vsw):
    """Intranet load balancers until the vSwitch is full: the code the CCM's fallback matches."""
    made = []
    for _ in range(4):  # a /29 has four usable addresses
        made.append(slb.create_load_balancer(slb_models.CreateLoadBalancerRequest(
            region_id=REGION, address_type="intranet", v_switch_id=vsw)).body)
    code, status, data = error_of(lambda: slb.create_load_balancer(slb_models.CreateLoadBalancerRequest(
        region_id=REGION, address_type="intranet", v_switch_id=vsw)))
    check("a full vSwitch is VSwitchAvailableIpNotExist", (code, status) == ("VSwitchAvailableIpNotExist", 400),
          (code, status, data))
    check("intranet addresses come from the vSwitch", all(m.address.startswith("10.0.12.") for m in made),
          [m.to_map() for m in made])
    for m in made:
        slb.delete_load_balancer(slb_models.DeleteLoadBalancerRequest(region_id=REGION, load_balancer_id=m.load_balancer_id))


def main():
    v1 = config(algorithm="v2")  # RPC v1 signatures (HMAC-SHA1), what the CCM's Go SDK sends
    ecs, vpc = EcsClient(v1), VpcClient(v1)
    vpc_id, small_vsw, pods = setup(ecs, vpc)
    first = service_life(ecs, vpc, SlbClient(v1), vpc_id, pods, "HMAC-SHA1 (RPC v1)")
    acs3 = config()
    second = service_life(EcsClient(acs3), VpcClient(acs3), SlbClient(acs3), vpc_id, pods, "ACS3-HMAC-SHA256")
    full_vswitch(SlbClient(v1), small_vsw)
    print(json.dumps({"vpc": vpc_id, "load_balancers": [first, second]}))
    print(f"{PASSED} passed, 0 failed")


if __name__ == "__main__":
    main()
