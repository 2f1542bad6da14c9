#!/usr/bin/env bash
# The data-plane benchmark: enifab's member-ENI path against kernel VXLAN, side by side, in one
# run. Not part of CI. Needs root, iproute2, iperf3, sockperf, ping (iputils) and python3:
#   apt-get install -y iperf3 sockperf iputils-ping
#
#   sudo bash bench/dataplane.sh              # measure and print the report
#   sudo bash bench/dataplane.sh --write      # … and put it into BENCHMARKS.md (data-plane section)
#   options: --secs N    seconds per iperf3/sockperf run (default 5)
#            --repeat N  runs of every number, the report shows the median (default 5)
#            --no-build  use target/release as it is
#
# What it builds, under names unique to this run, all removed on exit (also on failure or ^C):
#   * enifab: `enifab serve` on loopback (free ports, a temporary data directory) and the lab of
#     bench/topology.yaml (`enifab lab up`): two nodes (a namespace and an enifab-shim each) with
#     a trunk ENI each, client pods on node A and server pods on node B, each pod on its own
#     member ENI, on Terway's `vlan` datapath (the pod's eth0 is the trunk's VLAN sub-interface)
#     and on the `veth` datapath (veth + policy routing, tag pushed by source IP). Every packet
#     goes pod → shim A → the emulator's pipeline (conntrack, security groups) → shim B → pod.
#   * the baseline: two namespaces joined by a veth pair (the underlay, MTU 1550) with a kernel
#     VXLAN device in each (MTU 1500, as the ENIs) carrying the overlay addresses.
# What it measures, client → server, each enifab number right after the VXLAN one:
#   tcp1/tcp4  iperf3 TCP, 1 and 4 streams, received Gbit/s
#   pps64      iperf3 -u -l 64 -b 0 (64-byte payloads, one unlimited sender), datagrams received/s
#   udprr      UDP ping-pong between the two pods (sockperf, 64-byte messages), average RTT in µs
#   rtt        ping -i 0.0005, average RTT in µs (for reference; see the report's note)
#   sg10/sg1000  TCP, 1 stream, to servers whose member ENIs have 10 and 1,000 ingress rules
# The report ends with the ratios, one per line: `ratio tcp1 0.62`, tcp4, pps64, latency (RTT ÷
# RTT of the UDP ping-pong) — enifab `vlan` ÷ kernel VXLAN — and sg1000 (1,000 rules ÷ 10).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECS=5
REPEAT=5
BUILD=1
WRITE=0
while (($#)); do
  case "$1" in
    --secs) SECS="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --write) WRITE=1; shift ;;
    -h | --help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'bench [%4ss] %s\n' "$SECONDS" "$*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, TAP devices)"
for c in ip iperf3 sockperf ping python3; do
  command -v "$c" >/dev/null 2>&1 || die "$c not found (apt-get install -y iproute2 iperf3 sockperf iputils-ping python3)"
done

BIN="$ROOT/target/release"
if ((BUILD)); then
  say "building release binaries"
  (cd "$ROOT" && cargo build --release -q -p enifab -p enifab-shim --bins) || die "cargo build failed"
fi
for b in enifab enifab-shim enifab-cni; do
  [ -x "$BIN/$b" ] || die "$BIN/$b missing: cargo build --release -p enifab -p enifab-shim --bins"
done

# ---- what this run makes, and how it goes away ---------------------------------------------------

TMP="$(mktemp -d /tmp/enifab-bench.XXXXXX)"
RUN="$(basename "$TMP" | sed 's/^enifab-bench\.//' | tr 'A-Z' 'a-z')"
VXA="efbench-$RUN-vxa" # the VXLAN namespaces
VXB="efbench-$RUN-vxb"
EMULATOR="" # pid of `enifab serve`
SERVERS=()  # pids of the iperf3 and sockperf servers
EP=""       # the emulator's API endpoint
LAB_STATE="$TMP/lab"
TOPO="$TMP/topology.yaml" # a private copy: the lab's namespace names derive from its path

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  say "cleaning up"
  ((${#SERVERS[@]})) && stop "${SERVERS[@]}"
  # The lab: `lab down` stops its shims and deletes its namespaces and cloud resources.
  local down_ok=0
  if [ -n "$EP" ] && [ -f "$TOPO" ] &&
    timeout 60 "$BIN/enifab" --endpoint "$EP" lab down "$TOPO" --state-dir "$LAB_STATE" >"$TMP/down.log" 2>&1; then
    down_ok=1
  fi
  # If it could not: what its state file names, processes only while they are still ours.
  local st kind what
  for st in "$LAB_STATE"/lab-*.json; do
    ((down_ok)) && break
    [ -f "$st" ] || continue
    say "lab down failed; removing what $(basename "$st") names"
    while read -r kind what; do
      case "$kind" in
        pid) grep -qs "$TMP" "/proc/$what/cmdline" && stop "$what" ;;
        netns) [ -e "/var/run/netns/$what" ] && ip netns del "$what" ;;
      esac
    done < <(python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
for n in s.get("nodes", {}).values():
    print("pid", n.get("shim_pid", 0))
for r in s.get("responders", []):
    print("pid", r.get("pid", 0))
for x in list(s.get("nodes", {}).values()) + list(s.get("pods", {}).values()):
    print("netns", x["netns"])' "$st")
  done
  [ -n "$EMULATOR" ] && stop "$EMULATOR"
  local ns
  for ns in "$VXA" "$VXB"; do [ -e "/var/run/netns/$ns" ] && ip netns del "$ns"; done
  if ((rc != 0)); then
    say "failed (exit $rc); the logs' last lines:"
    tail -n 15 "$TMP"/*.log "$LAB_STATE"/*.log 2>/dev/null >&2
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the emulator and the lab --------------------------------------------------------------------

EP="127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$BIN/enifab" serve --listen "$EP" --fabric-listen 127.0.0.1:0 --data-dir "$TMP/data" --no-delays \
  >"$TMP/emulator.log" 2>&1 &
EMULATOR=$!
efb() { "$BIN/enifab" --endpoint "$EP" "$@"; }

cp "$ROOT/bench/topology.yaml" "$TOPO"
say "lab up (emulator on $EP, state in $TMP)"
efb lab up "$TOPO" --state-dir "$LAB_STATE" >"$TMP/up.log" 2>&1 || die "lab up failed"

pod_ns() { # pod name → its namespace, from the lab's state file
  python3 -c '
import glob, json, sys
s = json.load(open(glob.glob(sys.argv[1] + "/lab-*.json")[0]))
print(s["pods"][sys.argv[2]]["netns"])' "$LAB_STATE" "$1"
}
VLAN_C="$(pod_ns bench-vlan-client)"
VETH_C="$(pod_ns bench-veth-client)"
VLAN_S="$(pod_ns bench-vlan-server)"
VETH_S="$(pod_ns bench-veth-server)"
VLAN_S1K="$(pod_ns bench-vlan-server-1k)"
VLAN_S_IP=10.0.8.30
VETH_S_IP=10.0.8.31
VLAN_S1K_IP=10.0.8.32

# Security groups: ingress rules that never match the benchmark's traffic (any protocol from
# addresses outside the VPC) at priority 1, so that every new flow is checked against all of
# them before the topology's allow rule (priority 100) admits it; 100 per AuthorizeSecurityGroup
# call. A group holds at most 200 rules (the cloud's quota, which the emulator enforces), so the
# 1,000-rule server's rules are spread over the five groups its member ENI is in.
group_id() {
  efb ecs DescribeSecurityGroups --SecurityGroupName "$1" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["SecurityGroups"]["SecurityGroup"][0]["SecurityGroupId"])'
}
add_unmatched_rules() { # group count first-address-index
  local sg="$1" count="$2" base="$3" done=0
  while ((done < count)); do
    local args=() n=0 a
    while ((n < 100 && done < count)); do
      n=$((n + 1))
      a=$((base + done))
      done=$((done + 1))
      args+=("--Permissions.$n.IpProtocol" ALL "--Permissions.$n.PortRange=-1/-1"
        "--Permissions.$n.SourceCidrIp" "172.16.$((a / 250)).$((a % 250 + 1))/32"
        "--Permissions.$n.Priority" 1 "--Permissions.$n.Policy" accept
        "--Permissions.$n.Description" "bench: never matches")
    done
    efb ecs AuthorizeSecurityGroup --SecurityGroupId "$sg" "${args[@]}" >/dev/null
  done
}
ingress_rules() { # group → its number of ingress rules
  efb ecs DescribeSecurityGroupAttribute --SecurityGroupId "$1" --Direction ingress |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)["Permissions"]["Permission"]))'
}
SG10="$(group_id sg-bench-server)"
add_unmatched_rules "$SG10" 9 0
RULES10="$(ingress_rules "$SG10")"
RULES1K=0
i=0
for g in sg-bench-server-1k sg-bench-server-1k-2 sg-bench-server-1k-3 sg-bench-server-1k-4 sg-bench-server-1k-5; do
  sg="$(group_id "$g")"
  add_unmatched_rules "$sg" $((i == 0 ? 199 : 200)) $((i * 200))
  RULES1K=$((RULES1K + $(ingress_rules "$sg")))
  i=$((i + 1))
done
say "ingress rules: $RULES10 on the sg10 server's member ENI, $RULES1K on the sg1000 one's"
((RULES10 == 10 && RULES1K == 1000)) || die "expected 10 and 1000 rules"

# ---- the baseline: kernel VXLAN between two namespaces -----------------------------------------

say "kernel VXLAN between $VXA and $VXB"
for ns in "$VXA" "$VXB"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
vxlan_baseline "$VXA" "$VXB"

# ---- servers, reachability -----------------------------------------------------------------------

for ns in "$VXB" "$VLAN_S" "$VETH_S" "$VLAN_S1K"; do
  ip netns exec "$ns" iperf3 -s -p 5201 >"$TMP/iperf3-$ns.log" 2>&1 &
  SERVERS+=($!)
done
for ns in "$VXB" "$VLAN_S" "$VETH_S"; do
  ip netns exec "$ns" sockperf server -i 0.0.0.0 -p 11111 >"$TMP/sockperf-$ns.log" 2>&1 &
  SERVERS+=($!)
done
reach() { # ns ip: ping until an echo comes back
  local i
  for i in $(seq 1 50); do
    ip netns exec "$1" ping -c 1 -W 1 "$2" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "$1 cannot reach $2"
}
reach "$VXA" "$VX_S_IP"
reach "$VLAN_C" "$VLAN_S_IP"
reach "$VETH_C" "$VETH_S_IP"
reach "$VLAN_C" "$VLAN_S1K_IP"
sleep 0.5 # the servers are listening by now

# ---- measurements --------------------------------------------------------------------------------

RAW="$TMP/raw.txt" # one line per run: metric path value
: >"$RAW"

rtt() { # ns dst → average ping RTT in µs (2,000 echoes, 0.5 ms apart)
  ip netns exec "$1" ping -q -c 2000 -i 0.0005 "$2" |
    python3 -c 'import re,sys; print("%.1f" % (float(re.search(r"= [0-9.]+/([0-9.]+)/", sys.stdin.read()).group(1)) * 1000))'
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
say "measuring: $REPEAT runs of each number, ${SECS} s each (load average $LOAD_BEFORE)"
for r in $(seq 1 "$REPEAT"); do
  say "run $r of $REPEAT"
  for m in tcp1 tcp4 pps64 udprr rtt; do
    case "$m" in
      tcp1) cmd=(tcp) extra=(1) ;;
      tcp4) cmd=(tcp) extra=(4) ;;
      *) cmd=("$m") extra=() ;;
    esac
    measure "$m" vxlan "${cmd[@]}" "$VXA" "$VX_S_IP" "${extra[@]}"
    measure "$m" enifab-vlan "${cmd[@]}" "$VLAN_C" "$VLAN_S_IP" "${extra[@]}"
    measure "$m" enifab-veth "${cmd[@]}" "$VETH_C" "$VETH_S_IP" "${extra[@]}"
  done
  measure sg10 enifab-vlan tcp "$VLAN_C" "$VLAN_S_IP" 1
  measure sg1000 enifab-vlan tcp "$VLAN_C" "$VLAN_S1K_IP" 1
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---- report --------------------------------------------------------------------------------------

REPORT="$TMP/report.md"
BENCH_DATE="$(date -u +%Y-%m-%d)" BENCH_CORES="$(nproc)" BENCH_KERNEL="$(uname -r)" \
  BENCH_CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
  BENCH_IPERF="$(iperf3 --version | head -1 | cut -d' ' -f1-2)" BENCH_SOCKPERF="$(sockperf --version 2>&1 | head -1 | sed 's/, version / /; s/-no\.git//')" \
  BENCH_LOAD="$LOAD_BEFORE before, $LOAD_AFTER after" BENCH_REPEAT="$REPEAT" BENCH_SECS="$SECS" \
  BENCH_RULES="$RULES10 $RULES1K" \
  python3 "$ROOT/bench/dataplane_report.py" "$RAW" >"$REPORT"
echo
cat "$REPORT"
if ((WRITE)); then
  python3 "$ROOT/bench/dataplane_report.py" --write "$ROOT/BENCHMARKS.md" "$REPORT"
  say "wrote the data-plane section of BENCHMARKS.md"
fi
