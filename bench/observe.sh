#!/usr/bin/env bash
# What seeing the fabric costs: data-plane throughput with flow logs off, on, and on with a
# packet capture running on another ENI, in one run. Not part of CI. Needs root, iproute2,
# iperf3 and python3 (apt-get install -y iperf3).
#
#   sudo bash bench/observe.sh                 # measure and print the table
#   sudo bash bench/observe.sh --write         # … and put it into BENCHMARKS.md
#   options: --secs N    seconds per iperf3 run (default 5)
#            --repeat N  interleaved rounds, the table shows the median (default 3)
#            --no-build  use target/release as it is
#
# The lab is bench/topology.yaml (two nodes, a client pod on node A and a server pod on node B,
# each on its own member ENI, Terway's `vlan` datapath). The emulator and the shims run with the
# kernel fast path off (`ENIFAB_FAST_PATH=off`), so that every packet crosses the pipeline, where
# flow logs are written and captures copy frames: the worst case for both. Each round restarts `enifab serve`
# (same data directory, same ports; the shims re-register by themselves) with `--flow-logs=off`,
# then with `--flow-logs=on`, and measures each; then, still on, starts `enifab capture` on the
# veth server's member ENI (an ENI the measured traffic never touches, on the same node and
# trunk port) writing to /dev/null, and measures again.
# Metrics: tcp1 (iperf3 TCP, 1 stream, Gbit/s received) and pps64 (iperf3 -u -l 64 -b 0,
# datagrams received per second), client → server.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECS=5
REPEAT=3
BUILD=1
WRITE=0
while (($#)); do
  case "$1" in
    --secs) SECS="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --write) WRITE=1; shift ;;
    -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
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

# Every packet through the pipeline: the emulator's switch and the shims' (the lab passes its
# environment on to them).
export ENIFAB_FAST_PATH=off
TMP="$(mktemp -d /tmp/enifab-obs.XXXXXX)"
EMULATOR=""
CAPTURE=""
SERVERS=()
EP=""
LAB_STATE="$TMP/lab"
TOPO="$TMP/topology.yaml"
RAW="$TMP/raw.txt"

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  say "cleaning up"
  [ -n "$CAPTURE" ] && stop "$CAPTURE"
  ((${#SERVERS[@]})) && stop "${SERVERS[@]}"
  if [ -n "$EP" ] && [ -f "$TOPO" ]; then
    timeout 60 "$BIN/enifab" --endpoint "$EP" lab down "$TOPO" --state-dir "$LAB_STATE" >"$TMP/down.log" 2>&1 ||
      say "lab down failed: $(tail -n 3 "$TMP/down.log")"
  fi
  if [ -n "$EMULATOR" ]; then stop "$EMULATOR" || true; fi
  if ((rc != 0)); then tail -n 15 "$TMP"/*.log >&2 2>/dev/null; fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.'"$1"'); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
EP="127.0.0.1:$(free_port SOCK_STREAM)"
FABRIC="127.0.0.1:$(free_port SOCK_DGRAM)"
efb() { "$BIN/enifab" --endpoint "$EP" "$@"; }

serve() { # on|off: (re)start the emulator with flow logs on or off, wait until it answers
  if [ -n "$EMULATOR" ]; then stop "$EMULATOR" || true; fi
  "$BIN/enifab" serve --listen "$EP" --fabric-listen "$FABRIC" --data-dir "$TMP/data" --no-delays \
 --flow-logs "$1" >>"$TMP/emulator.log" 2>&1 &
  EMULATOR=$!
  for _ in $(seq 1 50); do efb health --timeout-ms 200 >/dev/null 2>&1 && break; sleep 0.1; done
}

serve on
cp "$ROOT/bench/topology.yaml" "$TOPO"
say "lab up (emulator on $EP)"
efb lab up "$TOPO" --state-dir "$LAB_STATE" >"$TMP/up.log" 2>&1 || die "lab up failed"
pod() { # pod name field → value from the lab's state file
  python3 -c '
import glob, json, sys
s = json.load(open(glob.glob(sys.argv[1] + "/lab-*.json")[0]))
print(s["pods"][sys.argv[2]][sys.argv[3]])' "$LAB_STATE" "$1" "$2"
}
CLIENT="$(pod bench-vlan-client netns)"
SERVER="$(pod bench-vlan-server netns)"
SERVER_IP="$(pod bench-vlan-server ip)"
OTHER_ENI="$(pod bench-veth-server member_eni)"
ip netns exec "$SERVER" iperf3 -s -p 5201 >"$TMP/iperf3.log" 2>&1 &
SERVERS+=($!)

wait_path() { # until the client reaches the server again (after a restart the shims re-register)
  for _ in $(seq 1 100); do
    ip netns exec "$CLIENT" timeout 1 bash -c "exec 3<>/dev/tcp/$SERVER_IP/5201" 2>/dev/null && return 0
    sleep 0.2
  done
  die "the path did not come back after the emulator restarted"
}

round() { # config: measure tcp1 and pps64 under one configuration
  wait_path
  measure tcp1 "$1" tcp "$CLIENT" "$SERVER_IP" 1
  measure pps64 "$1" pps64 "$CLIENT" "$SERVER_IP"
}

for r in $(seq 1 "$REPEAT"); do
  say "round $r of $REPEAT"
  serve off
  round logs-off
  serve on
  round logs-on
  efb capture --eni "$OTHER_ENI" -w /dev/null >"$TMP/capture.log" 2>&1 &
  CAPTURE=$!
  sleep 1
  kill -0 "$CAPTURE" 2>/dev/null || die "enifab capture did not start: $(cat "$TMP/capture.log")"
  round logs-on+capture
  stop "$CAPTURE" || true
  CAPTURE=""
done
# The flow logs did record the measured traffic (the client's member ENI, both ways).
RECORDS="$(efb flowlog --json | grep -c '"Action":"ACCEPT"' || true)"
say "flow-log records written: $RECORDS"
((RECORDS > 0)) || die "flow logs on, yet no record"

CPU="$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
REPORT="$TMP/report.md"
python3 - "$RAW" "$CPU" "$(nproc)" "$SECS" "$REPEAT" >"$REPORT" <<'EOF'
import statistics, sys
raw, cpu, cores, secs, repeat = sys.argv[1:]
vals = {}
for line in open(raw):
    m, path, v = line.split()
    vals.setdefault((m, path), []).append(float(v))
med = {k: statistics.median(v) for k, v in vals.items()}
print(f"Machine: {cpu}, {cores} cores. One run of `bench/observe.sh` ({repeat} interleaved rounds of "
      f"{secs} s per number, medians), the `vlan` datapath, fast path off (every packet through the pipeline).\n")
print("| | flow logs off | flow logs on | on ÷ off | on + capture of another ENI | ÷ on |")
print("|---|---|---|---|---|---|")
for m, unit in (("tcp1", "Gbit/s"), ("pps64", "datagrams/s")):
    off, on, cap = med[(m, "logs-off")], med[(m, "logs-on")], med[(m, "logs-on+capture")]
    fmt = (lambda x: f"{x:.2f} {unit}") if m == "tcp1" else (lambda x: f"{x:,.0f} {unit}")
    print(f"| {m} | {fmt(off)} | {fmt(on)} | **{on / off:.2f}** | {fmt(cap)} | **{cap / on:.2f}** |")
print()
print("Every run: " + "; ".join(f"{m} {p} " + ", ".join(str(x) for x in v) for (m, p), v in sorted(vals.items())))
EOF
cat "$REPORT"
if ((WRITE)); then
  python3 - "$ROOT/BENCHMARKS.md" "$REPORT" <<'EOF'
import sys
path, report = sys.argv[1], open(sys.argv[2]).read()
head = "## Seeing the fabric: flow logs and capture"
text = open(path).read()
section = f"{head}\n\n`sudo bash bench/observe.sh --write`.\n\n{report}"
if head in text:
    before, rest = text.split(head, 1)
    after = rest[rest.find("\n## "):] if "\n## " in rest else ""
    text = before + section + after
else:
    text = text.rstrip() + "\n\n" + section
open(path, "w").write(text)
EOF
  say "BENCHMARKS.md updated"
fi
