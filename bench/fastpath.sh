#!/usr/bin/env bash
# The kernel fast path's benchmark (issue 11): enifab with its fast path, enifab with every frame
# through the emulator (the slow path, as before the fast path), kernel VXLAN, and Open
# vSwitch's userspace datapath, side by side, interleaved, in one run. Not part of CI. Needs
# root, iproute2, iperf3, sockperf, ping, python3 and Debian's openvswitch-switch:
#   apt-get install -y iperf3 sockperf iputils-ping openvswitch-switch
#
#   sudo bash bench/fastpath.sh              # measure and print the report
#   sudo bash bench/fastpath.sh --write      # … and put it into BENCHMARKS.md (fast path section)
#   options: --secs N    seconds per iperf3/sockperf run (default 5)
#            --repeat N  runs of every number, the report shows the median (default 3)
#            --no-build  use target/release as it is
#            --only M,…  measure only these of tcp1 tcp4 pps64 udprr cps sg blocked (to try a
#                        change quickly; the report then lacks the others, so not with --write)
#
# What it builds, under names unique to this run, all removed on exit (also on failure or ^C):
#   * fast:  `enifab serve` and the lab of bench/fastpath/topology.yaml: two nodes (a namespace,
#     an enifab-shim with its fast path on an underlay link, a trunk ENI each), client pods on
#     node A, server pods on node B, on Terway's vlan datapath (the pod's eth0 is the member's
#     sub-interface) and veth datapath (`fast-veth`: veth + policy routing through the node's
#     stack), member ENIs with their security groups. After a flow's first packets (through the
#     pipeline), packets go pod → node A's kernel (BPF: flow entry, epoch, tunnel key) → VXLAN
#     → node B's kernel → pod.
#   * fast-dev: the same lab with ENIFAB_FAST_PATH_ENCAP=device: the kernel's VXLAN device builds and
#     takes apart every carried frame instead of the programs (the fast path's first design).
#   * slow:  the same lab again, with `enifab serve --fast-path=off` and `ENIFAB_FAST_PATH=off`
#     for its shims: every packet pod → shim A → the emulator's pipeline → shim B → pod.
#   * vxlan: two namespaces joined by a veth pair, a kernel VXLAN device in each (bench/common.sh).
#   * vxlan-veth: the same, with a pod behind a veth on each side routed by the kernel: the
#     kernel doing the hops a trunk pod's packet takes anyway, without anything of enifab's.
#   * ovs:   ovsdb-server and ovs-vswitchd (datapath `netdev`, userspace TSO on) inside a namespace
#     of their own, two namespaces plugged into its bridge by veth pairs; OpenFlow rules push a
#     VLAN tag, send every packet through conntrack (commit new flows, pass established ones),
#     pop the tag and output: the per-packet work of a userspace virtual switch doing what
#     enifab's slow path does, in one process and one hop.
# What it measures, client → server, each path right after the other:
#   tcp1/tcp4  iperf3 TCP, 1 and 4 streams, received Gbit/s
#   pps64      iperf3 -u -l 64 -b 0, datagrams received/s
#   udprr      sockperf UDP ping-pong, 64-byte messages, average RTT in µs
#   cps        new TCP connections per second (`enifab lab connect-rate`, 1 thread: connect,
#              read the responder's line, reset) and connect-us, the median connect() time
#              (enifab fast and slow only: the flow setup)
#   sg10/sg1000  TCP, 1 stream, to servers whose member ENIs have 10 and 1,000 ingress rules
#              (fast path)
#   blocked    a UDP flood to a port the server's group drops: datagrams sent/s, and how many
#              reached the server pod's interface (must be 0), fast path
# The report ends with the ratios, one per line: `ratio tcp1 0.93` … (fast ÷ kernel VXLAN).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECS=5
REPEAT=3
BUILD=1
WRITE=0
ONLY=""
while (($#)); do
  case "$1" in
    --secs) SECS="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --write) WRITE=1; shift ;;
    --only) ONLY=",$2,"; shift 2 ;;
    -h | --help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'bench [%4ss] %s\n' "$SECONDS" "$*" >&2; }
wanted() { [ -z "$ONLY" ] || [[ "$ONLY" == *",$1,"* ]]; }
die() { say "error: $*"; exit 1; }
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"
[ -n "$ONLY" ] && ((WRITE)) && die "--only leaves numbers out of the report: not with --write"

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, TAP devices, BPF)"
for c in ip iperf3 sockperf ping python3 ovsdb-server ovs-vswitchd ovs-vsctl ovs-ofctl ovsdb-tool; do
  command -v "$c" >/dev/null 2>&1 ||
    die "$c not found (apt-get install -y iproute2 iperf3 sockperf iputils-ping python3 openvswitch-switch)"
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

TMP="$(mktemp -d /tmp/enifab-fpbench.XXXXXX)"
RUN="$(basename "$TMP" | sed 's/^enifab-fpbench\.//' | tr 'A-Z' 'a-z')"
VXA="effp-$RUN-vxa"
VXB="effp-$RUN-vxb"
PXA="effp-$RUN-pxa" # pods behind veths on the VXLAN namespaces
PXB="effp-$RUN-pxb"
OVS="effp-$RUN-ovs" # the switch's own namespace
OVA="effp-$RUN-ova"
OVB="effp-$RUN-ovb"
PIDS=() # emulators, servers, OVS daemons
declare -A EP=() # path → the emulator's API endpoint

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  say "cleaning up"
  local p
  for p in fast fastdev slow; do
    [ -n "${EP[$p]:-}" ] && [ -f "$TMP/$p/topology.yaml" ] &&
      timeout 60 "$BIN/enifab" --endpoint "${EP[$p]}" lab down "$TMP/$p/topology.yaml" --state-dir "$TMP/$p/lab" \
        >"$TMP/$p-down.log" 2>&1
  done
  ((${#PIDS[@]})) && stop "${PIDS[@]}"
  local ns
  for ns in "$VXA" "$VXB" "$PXA" "$PXB" "$OVS" "$OVA" "$OVB"; do [ -e "/var/run/netns/$ns" ] && ip netns del "$ns"; done
  if ((rc != 0)); then
    say "failed (exit $rc); the logs' last lines:"
    tail -n 15 "$TMP"/*.log "$TMP"/*/lab/*.log 2>/dev/null >&2
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---- the two labs --------------------------------------------------------------------------------

for p in fast fastdev slow; do
  mkdir -p "$TMP/$p"
  EP[$p]="127.0.0.1:$(free_port)"
  mode=on
  [ "$p" = slow ] && mode=off
  encap=program
  [ "$p" = fastdev ] && encap=device
  ENIFAB_FAST_PATH=$mode "$BIN/enifab" serve --listen "${EP[$p]}" --fabric-listen 127.0.0.1:0 \
    --data-dir "$TMP/$p/data" --no-delays --fast-path "$mode" >"$TMP/$p-emulator.log" 2>&1 &
  PIDS+=($!)
  cp "$ROOT/bench/fastpath/topology.yaml" "$TMP/$p/topology.yaml"
  say "lab $p up (emulator on ${EP[$p]}, fast path $mode, VXLAN by the $encap)"
  ENIFAB_FAST_PATH=$mode ENIFAB_FAST_PATH_ENCAP=$encap "$BIN/enifab" --endpoint "${EP[$p]}" lab up "$TMP/$p/topology.yaml" \
    --state-dir "$TMP/$p/lab" >"$TMP/$p-up.log" 2>&1 || die "lab $p up failed"
done
efb() { local p="$1"; shift; "$BIN/enifab" --endpoint "${EP[$p]}" "$@"; }
pod_ns() { # path pod → its namespace, from the lab's state file
  python3 -c '
import glob, json, sys
s = json.load(open(glob.glob(sys.argv[1] + "/lab-*.json")[0]))
print(s["pods"][sys.argv[2]]["netns"])' "$TMP/$1/lab" "$2"
}
for p in fast fastdev; do
  grep -q "kernel fast path on" "$TMP"/$p/lab/*.log || die "the $p lab's shims did not start their fast path"
done
if grep -q "kernel fast path on" "$TMP"/slow/lab/*.log; then die "the slow lab's shims run a fast path"; fi
declare -A CLIENT=() SERVER=() SERVER1K=()
for p in fast fastdev slow; do
  CLIENT[$p]="$(pod_ns "$p" bench-client)"
  SERVER[$p]="$(pod_ns "$p" bench-server)"
  SERVER1K[$p]="$(pod_ns "$p" bench-server-1k)"
done
VETH_C="$(pod_ns fast bench-veth-client)"
VETH_S="$(pod_ns fast bench-veth-server)"
S_IP=10.0.8.30
VETH_S_IP=10.0.8.31
S1K_IP=10.0.8.32

# Security groups, as bench/dataplane.sh makes them: rules that never match at priority 1, so
# every new flow is checked against all of them first (10 on the server's ENI, 1,000 on the 1k
# server's, over five groups of 200); and on the server's group a drop rule for UDP 9 (the
# blocked flood).
group_id() {
  efb fast ecs DescribeSecurityGroups --SecurityGroupName "$1" |
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
        "--Permissions.$n.Priority" 1 "--Permissions.$n.Policy" accept)
    done
    efb fast ecs AuthorizeSecurityGroup --SecurityGroupId "$sg" "${args[@]}" >/dev/null
  done
}
SG10="$(group_id sg-bench-server)"
add_unmatched_rules "$SG10" 8 0
efb fast ecs AuthorizeSecurityGroup --SecurityGroupId "$SG10" --IpProtocol udp --PortRange 9/9 \
  --SourceCidrIp 10.0.8.0/24 --Priority 1 --Policy drop >/dev/null
i=0
for g in sg-bench-server-1k sg-bench-server-1k-2 sg-bench-server-1k-3 sg-bench-server-1k-4 sg-bench-server-1k-5; do
  add_unmatched_rules "$(group_id "$g")" $((i == 0 ? 199 : 200)) $((i * 200))
  i=$((i + 1))
done

# ---- kernel VXLAN, and Open vSwitch's userspace datapath -----------------------------------------

say "kernel VXLAN between $VXA and $VXB"
for ns in "$VXA" "$VXB" "$PXA" "$PXB" "$OVS" "$OVA" "$OVB"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
vxlan_baseline "$VXA" "$VXB"
mac() { ip -n "$1" -j link show dev "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])'; }
PX_A=10.0.8.120
PX_B=10.0.8.130
for spec in "$VXA $PXA $PX_A $PX_B 10.0.8.30" "$VXB $PXB $PX_B $PX_A 10.0.8.20"; do
  read -r node pod ip peer via <<<"$spec"
  ip netns exec "$node" sysctl -qw net.ipv4.ip_forward=1
  ip -n "$node" link add vethp type veth peer name eth0 netns "$pod"
  ip -n "$node" link set vethp up
  ip -n "$pod" addr add "$ip/32" dev eth0
  ip -n "$pod" link set eth0 up
  ip -n "$pod" route add default via 169.254.1.1 dev eth0 onlink
  ip -n "$pod" neigh replace 169.254.1.1 lladdr "$(mac "$node" vethp)" dev eth0 nud permanent
  ip -n "$node" route add "$ip/32" dev vethp
  ip -n "$node" route add "$peer/32" via "$via" dev vx0
done

say "Open vSwitch (netdev datapath, userspace TSO) in $OVS"
OVS_DIR="$TMP/ovs"
mkdir -p "$OVS_DIR"
export OVS_RUNDIR="$OVS_DIR" OVS_DBDIR="$OVS_DIR" OVS_LOGDIR="$OVS_DIR" OVS_PKGDATADIR=/usr/share/openvswitch
ovsdb-tool create "$OVS_DIR/conf.db" /usr/share/openvswitch/vswitch.ovsschema
ip netns exec "$OVS" ovsdb-server "$OVS_DIR/conf.db" --remote="punix:$OVS_DIR/db.sock" \
  --pidfile="$OVS_DIR/ovsdb.pid" --unixctl="$OVS_DIR/ovsdb.ctl" --log-file="$OVS_DIR/ovsdb.log" >/dev/null 2>&1 &
PIDS+=($!)
vsctl() { ovs-vsctl --db="unix:$OVS_DIR/db.sock" --timeout=10 "$@"; }
for _ in $(seq 1 50); do [ -S "$OVS_DIR/db.sock" ] && break; sleep 0.1; done
vsctl --no-wait init
vsctl --no-wait set Open_vSwitch . other_config:userspace-tso-enable=true
ip netns exec "$OVS" ovs-vswitchd "unix:$OVS_DIR/db.sock" --pidfile="$OVS_DIR/vswitchd.pid" \
  --unixctl="$OVS_DIR/vswitchd.ctl" --log-file="$OVS_DIR/vswitchd.log" >/dev/null 2>&1 &
PIDS+=($!)
vsctl add-br br0 -- set bridge br0 datapath_type=netdev
for spec in "$OVA port-a 10.0.8.20" "$OVB port-b 10.0.8.30"; do
  read -r ns port ip <<<"$spec"
  ip -n "$ns" link add eth0 mtu 1500 type veth peer name "$port" netns "$OVS" mtu 1500
  ip -n "$ns" addr add "$ip/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$OVS" link set "$port" up
  vsctl add-port br0 "$port" -- set Interface "$port" "ofport_request=$([ "$port" = port-a ] && echo 1 || echo 2)"
done
cat >"$TMP/flows.txt" <<'EOF'
table=0,priority=10,arp,in_port=1,actions=output:2
table=0,priority=10,arp,in_port=2,actions=output:1
table=0,priority=10,ip,in_port=1,actions=mod_vlan_vid:100,resubmit(,1)
table=0,priority=10,ip,in_port=2,actions=mod_vlan_vid:200,resubmit(,1)
table=1,priority=10,ip,actions=ct(table=2,zone=1)
table=2,priority=10,ct_state=+trk+new,ip,dl_vlan=100,actions=ct(commit,zone=1),strip_vlan,output:2
table=2,priority=10,ct_state=+trk+new,ip,dl_vlan=200,actions=ct(commit,zone=1),strip_vlan,output:1
table=2,priority=10,ct_state=+trk+est,ip,dl_vlan=100,actions=strip_vlan,output:2
table=2,priority=10,ct_state=+trk+est,ip,dl_vlan=200,actions=strip_vlan,output:1
EOF
ip netns exec "$OVS" ovs-ofctl del-flows br0
ip netns exec "$OVS" ovs-ofctl add-flows br0 "$TMP/flows.txt"
OV_S_IP=10.0.8.30

# ---- servers, reachability -----------------------------------------------------------------------

SERVER_NS=("$VXB" "$PXB" "$OVB" "${SERVER[fast]}" "${SERVER[fastdev]}" "${SERVER[slow]}" "${SERVER1K[fast]}" "$VETH_S")
for ns in "${SERVER_NS[@]}"; do
  ip netns exec "$ns" iperf3 -s -p 5201 >"$TMP/iperf3-$ns.log" 2>&1 &
  PIDS+=($!)
done
for ns in "$VXB" "$PXB" "$OVB" "${SERVER[fast]}" "${SERVER[fastdev]}" "${SERVER[slow]}" "$VETH_S"; do
  ip netns exec "$ns" sockperf server -i 0.0.0.0 -p 11111 >"$TMP/sockperf-$ns.log" 2>&1 &
  PIDS+=($!)
done
reach() { # ns ip
  local i
  for i in $(seq 1 50); do
    ip netns exec "$1" ping -c 1 -W 1 "$2" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "$1 cannot reach $2"
}
reach "$VXA" "$VX_S_IP"
reach "$PXA" "$PX_B"
reach "$OVA" "$OV_S_IP"
for p in fast fastdev slow; do reach "${CLIENT[$p]}" "$S_IP"; done
reach "${CLIENT[fast]}" "$S1K_IP"
reach "$VETH_C" "$VETH_S_IP"
sleep 0.5

# ---- measurements --------------------------------------------------------------------------------

RAW="$TMP/raw.txt"
: >"$RAW"
cps() { # path → "connections/s connect-us"
  efb "$1" lab connect-rate --netns "/run/netns/${CLIENT[$1]}" --to "$S_IP:7000" --secs "$SECS" --threads 1 |
    python3 -c 'import sys; w = sys.stdin.read().split(); print(w[1], w[7]) if int(w[5]) * 100 <= int(w[3]) else sys.exit("too many failed connections: " + " ".join(w))'
}
record_cps() { # path
  local v
  v="$(cps "$1")" || die "cps over $1 failed"
  echo "cps $1 ${v% *}" >>"$RAW"
  echo "connect $1 ${v#* }" >>"$RAW"
  say "$(printf '%-7s %-12s %s connections/s, connect %s µs' cps "$1" "${v% *}" "${v#* }")"
}
blocked() { # → "sent/s arrived": a UDP flood from the fast lab's client to UDP 9 on the server
  local before after sent
  before="$(ip -n "${SERVER[fast]}" -s -j link show eth0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["rx"]["packets"])')"
  sent="$(ip netns exec "${CLIENT[fast]}" python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end, n, d = time.time() + float(sys.argv[2]), 0, b"x" * 18
while time.time() < end:
    for _ in range(256):
        try:
            s.sendto(d, (sys.argv[1], 9)); n += 1
        except OSError:
            pass
print("%.0f" % (n / float(sys.argv[2])))' "$S_IP" "$SECS")"
  sleep 0.5
  after="$(ip -n "${SERVER[fast]}" -s -j link show eth0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["rx"]["packets"])')"
  echo "$sent $((after - before))"
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
say "measuring: $REPEAT runs of each number, ${SECS} s each (load average $LOAD_BEFORE)"
for r in $(seq 1 "$REPEAT"); do
  say "run $r of $REPEAT"
  for m in tcp1 tcp4 pps64 udprr; do
    wanted "$m" || continue
    case "$m" in
      tcp1) cmd=(tcp) extra=(1) ;;
      tcp4) cmd=(tcp) extra=(4) ;;
      *) cmd=("$m") extra=() ;;
    esac
    measure "$m" vxlan "${cmd[@]}" "$VXA" "$VX_S_IP" "${extra[@]}"
    measure "$m" vxlan-veth "${cmd[@]}" "$PXA" "$PX_B" "${extra[@]}"
    measure "$m" fast "${cmd[@]}" "${CLIENT[fast]}" "$S_IP" "${extra[@]}"
    measure "$m" fast-dev "${cmd[@]}" "${CLIENT[fastdev]}" "$S_IP" "${extra[@]}"
    measure "$m" fast-veth "${cmd[@]}" "$VETH_C" "$VETH_S_IP" "${extra[@]}"
    measure "$m" slow "${cmd[@]}" "${CLIENT[slow]}" "$S_IP" "${extra[@]}"
    measure "$m" ovs "${cmd[@]}" "$OVA" "$OV_S_IP" "${extra[@]}"
  done
  if wanted cps; then
    record_cps fast
    record_cps slow
  fi
  if wanted sg; then
    measure sg10 fast tcp "${CLIENT[fast]}" "$S_IP" 1
    measure sg1000 fast tcp "${CLIENT[fast]}" "$S1K_IP" 1
  fi
  if wanted blocked; then
    v="$(blocked)"
    echo "blocked fast ${v% *}" >>"$RAW"
    echo "blocked_arrived fast ${v#* }" >>"$RAW"
    say "blocked flood: ${v% *} datagrams/s sent, ${v#* } reached the server"
  fi
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
CARRIED="$(grep -h "fast path" "$TMP"/fast/lab/*.log | tail -n 3 | sed 's/\x1b\[[0-9;]*m//g' | tr '\n' ' ')"

# ---- report --------------------------------------------------------------------------------------

REPORT="$TMP/report.md"
if [ -n "$ONLY" ]; then
  say "--only: the raw numbers, no report"
  sort -s -k1,2 "$RAW"
  exit 0
fi
BENCH_DATE="$(date -u +%Y-%m-%d)" BENCH_CORES="$(nproc)" BENCH_KERNEL="$(uname -r)" \
  BENCH_CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
  BENCH_OVS="$(ovs-vswitchd --version | head -1)" \
  BENCH_LOAD="$LOAD_BEFORE before, $LOAD_AFTER after" BENCH_REPEAT="$REPEAT" BENCH_SECS="$SECS" \
  python3 "$ROOT/bench/fastpath/report.py" "$RAW" >"$REPORT"
echo
cat "$REPORT"
if ((WRITE)); then
  python3 "$ROOT/bench/fastpath/report.py" --write "$ROOT/BENCHMARKS.md" "$REPORT"
  say "wrote the fast path section of BENCHMARKS.md"
fi
