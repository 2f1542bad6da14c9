#!/usr/bin/env bash
# A k3s node on an emulated ECS instance (NOT TESTED here, see README.md): first the node agent,
# which waits for the instance named $ENIFAB_INSTANCE_NAME, moves Docker's eth0 aside
# (underlay0) and supervises the shim that makes eth0 the primary ENI; then k3s on that eth0,
# so the cluster's own traffic (API server, kubelet) crosses the emulated VPC like on ECS.
set -euo pipefail
: "${ENIFAB_INSTANCE_NAME:?the ECS instance this node is}"
: "${K3S_ROLE:=agent}"   # server on one node, agent on the others (with K3S_URL, K3S_TOKEN)

enifab lab agent --instance-name "$ENIFAB_INSTANCE_NAME" --listen 0.0.0.0:7070 --underlay underlay0 &
agent=$!
trap 'kill -TERM $agent 2>/dev/null; wait $agent' EXIT

# eth0 with the ENI's address: what kubelet advertises and Terway's metadata calls match.
for _ in $(seq 120); do
  ip=$(ip -4 -o addr show dev eth0 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}')
  [ -n "${ip:-}" ] && break
  kill -0 $agent 2>/dev/null || { echo "the node agent died" >&2; exit 1; }
  sleep 1
done
[ -n "${ip:-}" ] || { echo "eth0 has no address after 120 s: is the topology applied?" >&2; exit 1; }

# No flannel, no network policy, no service load balancer, no built-in cloud controller:
# Terway is the CNI and Alibaba's cloud-controller-manager (pointed at enifab) makes the SLBs.
common=(--node-ip "$ip" --node-name "$ENIFAB_INSTANCE_NAME" --kubelet-arg=cloud-provider=external)
if [ "$K3S_ROLE" = server ]; then
  k3s server "${common[@]}" --flannel-backend=none --disable-network-policy \
    --disable=traefik,servicelb --disable-cloud-controller \
    --cluster-cidr 10.0.0.0/8 --service-cidr "${K3S_SERVICE_CIDR:-192.168.0.0/16}" &
else
  k3s agent "${common[@]}" &
fi
wait -n
