#!/usr/bin/env bash
# The load-balancer benchmark: one server pod measured directly (pod → pod, across nodes) and
# through an intranet VIP of enifab's CLB (pod → VIP → the same pod), in the same run, plus the
# conntrack memory benchmark. Not part of CI. Needs root, iproute2, iperf3 and python3:
#   apt-get install -y iperf3
#
#   sudo bash bench/slb.sh              # measure and print the report
#   sudo bash bench/slb.sh --write      # … and put it into BENCHMARKS.md (load-balancer section)
#   options: --secs N    seconds per run (default 5)
#            --repeat N  runs of every number, the report shows the median (default 5)
#            --no-build  use target/release as it is
#
# What it builds, under names unique to this run, all removed on exit (also on failure or ^C):
# `enifab serve` on loopback and the lab of bench/slb-topology.yaml (two nodes, a client pod on
# node A and a server pod on node B, Terway's vlan datapath), and an intranet load balancer in
# the pods' vSwitch with three listeners, each with the server pod as its only backend: TCP 5201
# and UDP 5201 (iperf3) and TCP 7000 (the lab's tcp responder: one line, then close). The TCP
# listeners keep the cloud's default health check (TCP, every 2 s), so checks run during the
# measurements; the UDP one has its check off (iperf3 answers no UDP probe between tests).
# What it measures, each VIP number right after the direct one:
#   tcp1   iperf3 TCP, 1 stream, received Gbit/s
#   pps64  iperf3 -u -l 64 -b 0, datagrams received/s
#   cps    short TCP connections completed per second (`enifab lab connect-rate`, 2 threads:
#          connect, read the responder's line until it closes, close)
# and then `cargo bench -p enifab-dataplane --bench conntrack` (1,000,000 translated flows).
# The report ends with the ratios (VIP ÷ direct): `ratio tcp1 0.97`, pps64, cps.
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
    -h | --help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'slb-bench [%4ss] %s\n' "$SECONDS" "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, TAP devices)"
for c in ip iperf3 python3; do
  command -v "$c" >/dev/null 2>&1 || die "$c not found (apt-get install -y iproute2 iperf3 python3)"
done

BIN="$ROOT/target/release"
if ((BUILD)); then
  say "building release binaries"
  (cd "$ROOT" && cargo build --release -q -p enifab -p enifab-shim --bins) || die "cargo build failed"
fi
for b in enifab enifab-shim enifab-cni; do
  [ -x "$BIN/$b" ] || die "$BIN/$b missing: cargo build --release -p enifab -p enifab-shim --bins"
done

TMP="$(mktemp -d /tmp/enifab-slb-bench.XXXXXX)"
EMULATOR=""
SERVERS=()
EP=""
LAB_STATE="$TMP/lab"
TOPO="$TMP/topology.yaml" # a private copy: the lab's namespace names derive from its path

stop() { # pid…: TERM, up to 2 s of grace, then KILL
  local p
  for p in "$@"; do kill "$p" 2>/dev/null; done
  for p in "$@"; do
    for _ in $(seq 1 10); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$p" 2>/dev/null
  done
  return 0
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  say "cleaning up"
  ((${#SERVERS[@]})) && stop "${SERVERS[@]}"
  if [ -n "$EP" ] && [ -n "${LB:-}" ]; then
    efb slb DeleteLoadBalancer --LoadBalancerId "$LB" >/dev/null 2>&1
  fi
  if [ -n "$EP" ] && [ -f "$TOPO" ]; then
    timeout 60 "$BIN/enifab" --endpoint "$EP" lab down "$TOPO" --state-dir "$LAB_STATE" >"$TMP/down.log" 2>&1 ||
      say "lab down failed: $(tail -n 3 "$TMP/down.log")"
  fi
  [ -n "$EMULATOR" ] && stop "$EMULATOR"
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

# ---- the emulator, the lab, the load balancer ----------------------------------------------------

EP="127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$BIN/enifab" serve --listen "$EP" --fabric-listen 127.0.0.1:0 --data-dir "$TMP/data" --no-delays \
  >"$TMP/emulator.log" 2>&1 &
EMULATOR=$!
efb() { "$BIN/enifab" --endpoint "$EP" "$@"; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

cp "$ROOT/bench/slb-topology.yaml" "$TOPO"
say "lab up (emulator on $EP, state in $TMP)"
efb lab up "$TOPO" --state-dir "$LAB_STATE" >"$TMP/up.log" 2>&1 || die "lab up failed"

pod_ns() { # pod name → its namespace, from the lab's state file
  python3 -c '
import glob, json, sys
s = json.load(open(glob.glob(sys.argv[1] + "/lab-*.json")[0]))
print(s["pods"][sys.argv[2]]["netns"])' "$LAB_STATE" "$1"
}
CLIENT="$(pod_ns bench-client)"
SERVER="$(pod_ns bench-server)"
SERVER_IP=10.0.8.30

VPC="$(efb vpc DescribeVpcs --VpcName bench-vpc | json '["Vpcs"]["Vpc"][0]["VpcId"]')"
VSW="$(efb vpc DescribeVSwitches --VSwitchName vsw-bench-pods | json '["VSwitches"]["VSwitch"][0]["VSwitchId"]')"
ENI="$(efb ecs DescribeNetworkInterfaces --PrivateIpAddress.1 "$SERVER_IP" | json '["NetworkInterfaceSets"]["NetworkInterfaceSet"][0]["NetworkInterfaceId"]')"
created="$(efb slb CreateLoadBalancer --AddressType intranet --VpcId "$VPC" --VSwitchId "$VSW" --LoadBalancerName slb-bench)"
LB="$(echo "$created" | json '["LoadBalancerId"]')"
VIP="$(echo "$created" | json '["Address"]')"
listener() { # protocol port backend-port [extra params…]
  local proto="$1" port="$2" bport="$3"
  shift 3
  local vsg
  vsg="$(efb slb CreateVServerGroup --LoadBalancerId "$LB" --VServerGroupName "bench/$proto/$port" | json '["VServerGroupId"]')"
  efb slb AddVServerGroupBackendServers --VServerGroupId "$vsg" \
    --BackendServers "[{\"serverId\":\"$ENI\",\"serverIp\":\"$SERVER_IP\",\"port\":$bport,\"weight\":100,\"type\":\"eni\"}]" >/dev/null
  local create=CreateLoadBalancerTCPListener
  [ "$proto" = udp ] && create=CreateLoadBalancerUDPListener
  efb slb "$create" --LoadBalancerId "$LB" --ListenerPort "$port" --VServerGroupId "$vsg" --Bandwidth -1 "$@" >/dev/null
  efb slb StartLoadBalancerListener --LoadBalancerId "$LB" --ListenerPort "$port" --ListenerProtocol "$proto" >/dev/null
}
listener tcp 5201 5201
listener udp 5201 5201 --HealthCheckSwitch off
listener tcp 7000 7000
say "load balancer $LB at $VIP: tcp/5201, udp/5201, tcp/7000 → $SERVER_IP"

ip netns exec "$SERVER" iperf3 -s -p 5201 >"$TMP/iperf3.log" 2>&1 &
SERVERS+=($!)
sleep 1
healthy() { # every TCP listener's backend is `normal`
  efb slb DescribeHealthStatus --LoadBalancerId "$LB" |
    python3 -c 'import json,sys; b = json.load(sys.stdin)["BackendServers"]["BackendServer"]; sys.exit(0 if [x for x in b if x["Protocol"] == "tcp"] and all(x["ServerHealthStatus"] == "normal" for x in b if x["Protocol"] == "tcp") else 1)'
}
for _ in $(seq 1 50); do healthy && break; sleep 0.2; done
healthy || die "the backends did not turn healthy: $(efb slb DescribeHealthStatus --LoadBalancerId "$LB")"

# ---- measurements --------------------------------------------------------------------------------

RAW="$TMP/raw.txt" # one line per run: metric path value
: >"$RAW"
iperf() { # dst args… → iperf3's JSON; retried once (a server still busy with the last test)
  local dst="$1"
  shift
  ip netns exec "$CLIENT" iperf3 -c "$dst" -p 5201 -J "$@" 2>/dev/null ||
    { sleep 1 && ip netns exec "$CLIENT" iperf3 -c "$dst" -p 5201 -J "$@"; }
}
tcp1() {
  iperf "$1" -t "$SECS" |
    python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))'
}
pps64() {
  iperf "$1" -t "$SECS" -u -l 64 -b 0 |
    python3 -c 'import json,sys; r = json.load(sys.stdin)["end"]["sum_received"]; print("%.0f" % (r["bytes"] / 64 / r["seconds"]))'
}
cps() {
  efb lab connect-rate --netns "/run/netns/$CLIENT" --to "$1:7000" --secs "$SECS" --threads 2 |
    python3 -c 'import sys; w = sys.stdin.read().split(); print(w[1]) if int(w[5]) * 100 <= int(w[3]) else sys.exit("too many failed connections: " + " ".join(w))'
}
measure() { # metric path command…
  local v
  v="$("${@:3}")" || die "$1 over $2 failed"
  [ -n "$v" ] || die "$1 over $2 gave no number"
  echo "$1 $2 $v" >>"$RAW"
  say "$(printf '%-6s %-7s %s' "$1" "$2" "$v")"
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
say "measuring: $REPEAT runs of each number, ${SECS} s each (load average $LOAD_BEFORE)"
for r in $(seq 1 "$REPEAT"); do
  say "run $r of $REPEAT"
  for m in tcp1 pps64 cps; do
    measure "$m" direct "$m" "$SERVER_IP"
    measure "$m" vip "$m" "$VIP"
  done
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
HEALTH="$(efb slb DescribeHealthStatus --LoadBalancerId "$LB" | json '["BackendServers"]["BackendServer"]' | tr -d "'")"
say "health after the runs: $HEALTH"

say "conntrack memory (cargo bench -p enifab-dataplane --bench conntrack)"
CONNTRACK="$(cd "$ROOT" && cargo bench -q -p enifab-dataplane --bench conntrack 2>/dev/null | grep '^| [a-z]' | grep -v '^| flows')" ||
  die "the conntrack benchmark failed"

# ---- report --------------------------------------------------------------------------------------

REPORT="$TMP/report.md"
BENCH_DATE="$(date -u +%Y-%m-%d)" BENCH_CORES="$(nproc)" BENCH_KERNEL="$(uname -r)" \
  BENCH_CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
  BENCH_IPERF="$(iperf3 --version | head -1 | cut -d' ' -f1-2)" \
  BENCH_LOAD="$LOAD_BEFORE before, $LOAD_AFTER after" BENCH_REPEAT="$REPEAT" BENCH_SECS="$SECS" \
  BENCH_CONNTRACK="$CONNTRACK" python3 - "$RAW" >"$REPORT" <<'PY'
import os, statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    metric, path, value = line.split()
    runs[(metric, path)].append(float(value))
med = {k: statistics.median(v) for k, v in runs.items()}
e = os.environ
print(f"Measured {e['BENCH_DATE']} on {e['BENCH_CORES']} cores ({e['BENCH_CPU']}), Linux {e['BENCH_KERNEL']}, release")
print(f"build; {e['BENCH_IPERF']}; load average {e['BENCH_LOAD']}. Every number is the median of")
print(f"{e['BENCH_REPEAT']} runs of {e['BENCH_SECS']} s (raw runs below); each VIP run follows the direct one.")
print()
print("- **direct**: the client pod (node A) to the server pod's own address (node B): pod → shim A → the")
print("  emulator's pipeline → shim B → pod, Terway's vlan datapath.")
print("- **VIP**: the same client to an intranet load balancer's address in the pods' vSwitch, whose")
print("  listener has that same server pod as its only backend (an `eni` backend): the pipeline also")
print("  schedules, translates (VIP:port → pod:port and back, checksums updated) and tracks both tuples,")
print("  and the TCP listeners' health checks (every 2 s) run throughout.")
print("- TCP: iperf3, 1 stream, received throughput. UDP: iperf3 `-u -l 64 -b 0` (64-byte payloads, one")
print("  unlimited sender), datagrams received per second. New connections: `enifab lab connect-rate`, 2")
print("  threads of connect, read the responder's line until it closes, close with a reset (so that no")
print("  TIME_WAIT holds a port the next run reuses); completed per second.")
print()
units = {"tcp1": "Gbit/s", "pps64": "datagrams/s", "cps": "connections/s"}
names = {"tcp1": "TCP, 1 stream", "pps64": "UDP, 64-byte datagrams", "cps": "new TCP connections"}
targets = {"tcp1": 0.9, "pps64": 0.9, "cps": 0.8}
print("| | direct (pod → pod) | through the VIP | VIP ÷ direct | target |")
print("|---|---|---|---|---|")
ratios = {}
for m in ["tcp1", "pps64", "cps"]:
    d, v = med[(m, "direct")], med[(m, "vip")]
    ratios[m] = v / d
    fmt = "%.2f" if m == "tcp1" else "%.0f"
    print(f"| {names[m]} ({units[m]}) | {fmt % d} | {fmt % v} | **{v / d:.2f}** | ≥ {targets[m]} |")
print()
print("Raw runs (direct / VIP):")
print()
for m in ["tcp1", "pps64", "cps"]:
    print(f"- {m}: " + ", ".join(f"{a:g} / {b:g}" for a, b in zip(runs[(m, 'direct')], runs[(m, 'vip')])))
print()
print("Conntrack at 1,000,000 tracked flows (`cargo bench -p enifab-dataplane --bench conntrack`, one")
print("SYN per flow through `Fabric::process`, a table reserved for 1,000,000 flows, one process per")
print("row; the baseline row is untranslated flows straight to a backend). Target: resident size")
print("≤ 256 MiB at 1,000,000 translated flows. Both rows are alike because the table is reserved")
print("up front for the worst case (every flow translated, so two index entries each) and hash")
print("tables touch all their pages as they fill; the growth per flow is the whole cost of a flow.")
print()
print("| flows | RSS before | RSS, table reserved | RSS with the flows | growth per flow | flows/s admitted |")
print("|---|---|---|---|---|---|")
print(e["BENCH_CONNTRACK"])
print()
for m in ["tcp1", "pps64", "cps"]:
    print(f"ratio {m} {ratios[m]:.2f}")
PY
echo
cat "$REPORT"
if ((WRITE)); then
  python3 - "$ROOT/BENCHMARKS.md" "$REPORT" <<'PY'
import sys
path, report = sys.argv[1], open(sys.argv[2]).read()
body = "\n".join(l for l in report.splitlines() if not l.startswith("ratio "))
section = "<!-- slb:begin -->\n## Load balancer (`sudo bash bench/slb.sh`)\n\n" + body.strip() + "\n\n<!-- slb:end -->"
text = open(path).read()
if "<!-- slb:begin -->" in text:
    a = text.index("<!-- slb:begin -->")
    b = text.index("<!-- slb:end -->") + len("<!-- slb:end -->")
    text = text[:a] + section + text[b:]
else:
    text = text.rstrip() + "\n\n" + section + "\n"
open(path, "w").write(text)
PY
  say "wrote the load-balancer section of BENCHMARKS.md"
fi
