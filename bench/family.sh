#!/usr/bin/env bash
# The dual-stack benchmark: the same pods over IPv4 and over IPv6, pod → pod across nodes, in one
# run, so that the ratio IPv6 ÷ IPv4 is the cost of the second family alone. Not part of CI.
# Needs root, iproute2, iperf3 and python3:
#   apt-get install -y iperf3
#
#   sudo bash bench/family.sh              # measure and print the report
#   options: --secs N    seconds per iperf3 run (default 5)
#            --repeat N  runs of every number, the report shows the median (default 3)
#            --no-build  use target/release as it is
#
# The lab is bench/topology-dual.yaml (two nodes, a client pod on node A and a server pod on
# node B on each datapath, all dual stack), brought up twice: with the emulator's kernel fast
# path on (the default: admitted IPv4 flows are carried node to node by the nodes' kernels,
# IPv6 ones still go through the emulator's pipeline), then with `--fast-path off` (every frame
# of both families through the pipeline). What it measures, client → server, IPv4 then IPv6:
#   tcp1   iperf3 TCP, 1 stream, received Gbit/s
#   pps64  iperf3 -u -l 64 -b 0 (64-byte payloads, one unlimited sender), datagrams received/s
# The report gives medians and the ratios IPv6 ÷ IPv4 per datapath and mode.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECS=5
REPEAT=3
BUILD=1
while (($#)); do
  case "$1" in
    --secs) SECS="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'bench [%4ss] %s\n' "$SECONDS" "$*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"

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

TMP="$(mktemp -d /tmp/enifab-family.XXXXXX)"
EMULATOR="" # pid of the current `enifab serve`
SERVERS=()  # pids of the iperf3 servers
EP=""
TOPO="$TMP/topology.yaml" # a private copy: the lab's namespace names derive from its path
LAB_STATE="$TMP/lab"
RAW="$TMP/raw.txt" # one line per run: metric path value, the path naming mode and family
: >"$RAW"

lab_down() { # the current lab and emulator, also half made
  # `stop` ends on a `kill -9` that fails for a process already gone: called outside an `||`,
  # `set -e` would end the script there.
  if ((${#SERVERS[@]})); then stop "${SERVERS[@]}" || true; fi
  SERVERS=()
  if [ -n "$EP" ] && [ -f "$TOPO" ]; then
    timeout 60 "$BIN/enifab" --endpoint "$EP" lab down "$TOPO" --state-dir "$LAB_STATE" >>"$TMP/down.log" 2>&1 ||
      say "lab down failed (see $TMP/down.log)"
  fi
  if [ -n "$EMULATOR" ]; then stop "$EMULATOR" || true; fi
  EMULATOR=""
  EP=""
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  say "cleaning up"
  lab_down
  if ((rc != 0)); then
    say "failed (exit $rc); the logs' last lines:"
    tail -n 15 "$TMP"/*.log 2>/dev/null >&2
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pod_ns() { # pod name → its namespace, from the lab's state file
  python3 -c '
import glob, json, sys
s = json.load(open(glob.glob(sys.argv[1] + "/lab-*.json")[0]))
print(s["pods"][sys.argv[2]]["netns"])' "$LAB_STATE" "$1"
}
reach() { # ns ip: ping until an echo comes back
  local i
  for i in $(seq 1 50); do
    ip netns exec "$1" ping -c 1 -W 1 "$2" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "$1 cannot reach $2"
}

run_mode() { # on|off: a lab with the fast path so, measured
  local mode="$1"
  EP="127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  "$BIN/enifab" serve --listen "$EP" --fabric-listen 127.0.0.1:0 --data-dir "$TMP/data-$mode" --no-delays \
    --fast-path "$mode" >"$TMP/emulator-$mode.log" 2>&1 &
  EMULATOR=$!
  cp "$ROOT/bench/topology-dual.yaml" "$TOPO"
  say "lab up, fast path $mode (emulator on $EP)"
  ENIFAB_FAST_PATH="$mode" "$BIN/enifab" --endpoint "$EP" lab up "$TOPO" --state-dir "$LAB_STATE" \
    >"$TMP/up-$mode.log" 2>&1 || die "lab up failed"
  local vlan_c veth_c vlan_s veth_s
  vlan_c="$(pod_ns bench-vlan-client)"
  veth_c="$(pod_ns bench-veth-client)"
  vlan_s="$(pod_ns bench-vlan-server)"
  veth_s="$(pod_ns bench-veth-server)"
  for ns in "$vlan_s" "$veth_s"; do
    ip netns exec "$ns" iperf3 -s -p 5201 >"$TMP/iperf3-$ns.log" 2>&1 &
    SERVERS+=($!)
  done
  local path c ip4 ip6
  for spec in "vlan $vlan_c 10.0.8.30 2408:4005:3000:8::30" "veth $veth_c 10.0.8.31 2408:4005:3000:8::31"; do
    read -r path c ip4 ip6 <<<"$spec"
    reach "$c" "$ip4"
    reach "$c" "$ip6"
  done
  sleep 0.5
  for r in $(seq 1 "$REPEAT"); do
    say "fast path $mode: run $r of $REPEAT"
    for spec in "vlan $vlan_c 10.0.8.30 2408:4005:3000:8::30" "veth $veth_c 10.0.8.31 2408:4005:3000:8::31"; do
      read -r path c ip4 ip6 <<<"$spec"
      measure tcp1 "$mode/$path/ipv4" tcp "$c" "$ip4" 1
      measure tcp1 "$mode/$path/ipv6" tcp "$c" "$ip6" 1
      measure pps64 "$mode/$path/ipv4" pps64 "$c" "$ip4"
      measure pps64 "$mode/$path/ipv6" pps64 "$c" "$ip6"
    done
  done
  lab_down
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
run_mode on
run_mode off
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

BENCH_CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
  BENCH_LOAD="$LOAD_BEFORE before, $LOAD_AFTER after" python3 - "$RAW" "$REPEAT" "$SECS" <<'PY'
import collections, os, statistics, sys, datetime
raw, repeat, secs = sys.argv[1], sys.argv[2], sys.argv[3]
runs = collections.defaultdict(list)
for line in open(raw):
    metric, path, value = line.split()
    runs[(metric, path)].append(float(value))
med = {k: statistics.median(v) for k, v in runs.items()}
print(f"Dual stack, pod → pod across nodes ({datetime.date.today()}, {os.environ['BENCH_CPU']}, "
      f"{os.cpu_count()} cores; median of {repeat} runs of {secs} s; load {os.environ['BENCH_LOAD']})\n")
print("| fast path | datapath | metric | IPv4 | IPv6 | IPv6 ÷ IPv4 |")
print("|---|---|---|---:|---:|---:|")
for mode in ("on", "off"):
    for path in ("vlan", "veth"):
        for metric, unit in (("tcp1", "Gbit/s"), ("pps64", "datagrams/s")):
            v4, v6 = med.get((metric, f"{mode}/{path}/ipv4")), med.get((metric, f"{mode}/{path}/ipv6"))
            if v4 is None or v6 is None:
                continue
            fmt = (lambda x: f"{x:.2f}") if metric == "tcp1" else (lambda x: f"{x:,.0f}")
            print(f"| {mode} | {path} | {metric} ({unit}) | {fmt(v4)} | {fmt(v6)} | {v6 / v4:.2f} |")
PY
