#!/usr/bin/env bash
# The lab with nodes that are containers, end to end, with plain `docker run` (no compose): an
# emulator container, one container per ECS instance of the SOP example and one for its internet
# client, each running `enifab lab agent`, then `enifab lab up` and `enifab lab check` from lab
# containers that share the lab's state on a volume, through the agents runtime. It passes when
# the SOP table says 0 failed; everything it made (containers, network, volume, image, build
# context) is removed on exit, also when a step fails.
#
#   bash tests/containers.sh                 # binaries from target/release
#   BIN_DIR=target/debug bash tests/containers.sh
#   TOPOLOGY=examples/terway-trunk-sop/topology-vlan.yaml bash tests/containers.sh
#
# After the table, node A's shim is killed (SIGKILL): its agent starts it again, the new shim
# rebuilds the node (TAPs, the underlay's routes, the pods' wiring) and `check` passes again.
#
# Needs the Docker engine (no registry: the image is built FROM the local base image
# enifab-base:bookworm, see docker/base-image.sh) and enifab, enifab-shim and enifab-cni built.
# Names start with a unique prefix (efbct<pid>-…), so runs can overlap.
#
# Why each node container gets what it gets (nothing more; not --privileged):
#   --cap-add NET_ADMIN      TAP devices for the ENIs, eth0 renamed aside (--underlay), addresses,
#                            routes and rules, pods' veth pairs, kube-proxy's iptables rules
#   --cap-add SYS_ADMIN      pods are network namespaces: `ip netns add` (unshare + a bind mount
#                            under /run/netns), entering them (CNI, responders, probes), and
#                            remounting /proc/sys read-write for the node's and pods' sysctls
#   --device /dev/net/tun    the TAP devices
#   (on hosts with AppArmor, Docker's default profile forbids mount: add
#    --security-opt apparmor=unconfined; this machine has no AppArmor)
# The emulator and the lab containers need no capability at all.
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=${ENIFAB_CT_PREFIX:-efbct$$}
base=${ENIFAB_BASE_IMAGE:-enifab-base:bookworm}
bin=${BIN_DIR:-target/release}
topology=${TOPOLOGY:-examples/terway-trunk-sop/topology.yaml}
image="$prefix-image:test"
net="$prefix-net"
volume="$prefix-lab"
ctx=$(mktemp -d)
# Geneve adds about 70 bytes to the VPC's 1500-byte frames: give the bridge room.
mtu=${ENIFAB_CT_MTU:-9000}

say() { printf '%s containers: %s\n' "$(date +%T)" "$*"; }
run() { docker run --label "enifab.test=$prefix" "$@"; }

teardown() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    say "failed ($rc); the containers' last words:" >&2
    for c in $(docker ps -aq --filter "label=enifab.test=$prefix"); do
      echo "--- $(docker inspect -f '{{.Name}}' "$c")" >&2
      docker logs --tail 25 "$c" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' >&2 || true
    done
  fi
  docker ps -aq --filter "label=enifab.test=$prefix" | xargs -r docker rm -f >/dev/null 2>&1 || true
  docker network rm "$net" >/dev/null 2>&1 || true
  docker volume rm "$volume" >/dev/null 2>&1 || true
  docker image rm "$image" >/dev/null 2>&1 || true
  rm -rf "$ctx"
  local left
  left=$(docker ps -aq --filter "label=enifab.test=$prefix"; docker network ls -q --filter "name=^$net\$"; \
         docker volume ls -q --filter "name=^$volume\$"; docker image ls -q "$image")
  if [ -n "$left" ]; then
    say "left behind: $left" >&2
    rc=1
  fi
  exit "$rc"
}
trap teardown EXIT

for b in enifab enifab-shim enifab-cni; do
  [ -x "$bin/$b" ] || { say "$bin/$b is missing: cargo build --release -p enifab -p enifab-shim" >&2; exit 1; }
done
docker image inspect "$base" >/dev/null 2>&1 || { say "no base image $base: bash docker/base-image.sh" >&2; exit 1; }

t0=$(date +%s)
say "image $image (FROM $base, binaries from $bin)"
cp "$bin/enifab" "$bin/enifab-shim" "$bin/enifab-cni" "$ctx/"
mkdir -p "$ctx/examples" && cp -r examples/terway-trunk-sop "$ctx/examples/"
cat >"$ctx/Dockerfile" <<EOF
FROM $base
COPY enifab enifab-shim enifab-cni /usr/local/bin/
COPY examples /enifab/examples
ENV ENIFAB_LAB_DIR=/var/lib/enifab/lab ENIFAB_ENDPOINT=http://emulator:50051
WORKDIR /enifab
ENTRYPOINT ["enifab"]
EOF
# The classic builder (no BuildKit here) warns that it is deprecated; show its output on failure only.
if ! DOCKER_BUILDKIT=0 docker build --quiet -t "$image" "$ctx" >"$ctx/build.log" 2>&1; then
  cat "$ctx/build.log" >&2
  exit 1
fi
t_image=$(date +%s)

docker network create --opt "com.docker.network.driver.mtu=$mtu" --label "enifab.test=$prefix" "$net" >/dev/null
docker volume create --label "enifab.test=$prefix" "$volume" >/dev/null

# The agents run anything as root on their nodes: they require an AccessKey, and the lab signs
# every call with it. The emulator does not require one yet (--insecure, on this test's own
# bridge): the shim and the CNI plugin do not sign their calls to it yet.
key_id=${ENIFAB_CT_ACCESS_KEY_ID:-LTAIefbct$$}
key_secret=${ENIFAB_CT_ACCESS_KEY_SECRET:-$(head -c 18 /dev/urandom | base64)}
keys=(-e "ENIFAB_ACCESS_KEY_ID=$key_id" -e "ENIFAB_ACCESS_KEY_SECRET=$key_secret")

say "emulator"
run -d --name "$prefix-emulator" --network "$net" --network-alias emulator "$image" \
  serve --listen 0.0.0.0:50051 --fabric-listen 0.0.0.0:6081 --data-dir /var/lib/enifab/emulator \
  --insecure >/dev/null

node() { # container-alias, then the agent's identity flags
  local alias=$1
  shift
  run -d --name "$prefix-$alias" --hostname "$alias" --network "$net" --network-alias "$alias" \
    --cap-add NET_ADMIN --cap-add SYS_ADMIN --device /dev/net/tun "${keys[@]}" \
    "$image" lab agent "$@" --listen 0.0.0.0:7070 --underlay underlay0 >/dev/null
}
say "nodes"
node node-a --instance-name cn-hongkong.10.0.4.22
node node-b --instance-name cn-hongkong.10.0.4.20
node node-c --instance-name cn-hongkong.10.0.4.244
node internet --external client-internet --external-address 47.100.1.10/24
t_started=$(date +%s)

lab() { run --rm --network "$net" -v "$volume:/var/lib/enifab/lab" "${keys[@]}" "$image" lab "$@"; }
# Without the key, an agent answers nothing but UNAUTHENTICATED.
if run --rm --network "$net" -v "$volume:/var/lib/enifab/lab" "$image" lab up "$topology" --agent \
  cn-hongkong.10.0.4.22=node-a:7070 >"$ctx/unsigned.log" 2>&1; then
  say "an unsigned lab up was served by the agents" >&2
  exit 1
fi
grep -q "MissingAccessKeyId" "$ctx/unsigned.log" || { cat "$ctx/unsigned.log" >&2; exit 1; }

say "lab up (through the agents)"
lab up "$topology" \
  --agent cn-hongkong.10.0.4.22=node-a:7070 \
  --agent cn-hongkong.10.0.4.20=node-b:7070 \
  --agent cn-hongkong.10.0.4.244=node-c:7070 \
  --agent client-internet=internet:7070
t_up=$(date +%s)

check() { # quiet: only the closing line
  local out rc
  out=$(lab check "$topology" 2>&1) && rc=0 || rc=$?
  [ "${1:-}" = quiet ] && out=$(tail -n 1 <<<"$out")
  printf '%s\n' "$out"
  [ "$rc" -eq 0 ] && grep -Eq '^[0-9]+ passed, 0 failed$' <<<"$out"
}
say "lab check (the state on the volume names the agents)"
check || { say "the SOP table has failures" >&2; exit 1; }
t_check=$(date +%s)

shim=$(docker top "$prefix-node-a" -o pid,args | awk '/enifab-shim/ { print $1; exit }')
say "SIGKILL to node A's shim (pid $shim on this host); checking again until it passes"
kill -KILL "$shim"
deadline=$(( $(date +%s) + 60 ))
until check quiet; do
  [ "$(date +%s)" -lt "$deadline" ] || { say "node A did not recover within 60 s" >&2; exit 1; }
  sleep 1
done
t_recovered=$(date +%s)

say "lab down"
lab down "$topology"
t_down=$(date +%s)
say "passed: image $((t_image - t0)) s, containers $((t_started - t_image)) s, up $((t_up - t_started)) s, \
check $((t_check - t_up)) s, shim killed to checked again $((t_recovered - t_check)) s, down $((t_down - t_recovered)) s"
