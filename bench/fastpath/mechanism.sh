#!/usr/bin/env bash
# The kernel fast path's mechanism, measured before the fast path is built (issue 11, step 1):
# two nodes whose pods talk through tc BPF programs (mechanism.bpf.c: anti-spoof, a 5-tuple flow
# lookup with counters, 802.1Q push/pop, a tunnel key, redirects) over a metadata-mode VXLAN
# device, against plain kernel VXLAN, interleaved in one run. Not part of CI. Needs root,
# iproute2, clang, bpftool, iperf3, sockperf, python3:
#   apt-get install -y clang llvm libbpf-dev bpftool iperf3 sockperf
#
#   sudo bash bench/fastpath/mechanism.sh [--secs N] [--repeat N]
#
# What it builds, under names unique to this run, all removed on exit (also on failure or ^C):
#   * "bpf": namespaces node A and node B joined by a veth underlay (MTU 1600), a pod namespace
#     on each behind a veth, and `vx0` (VXLAN, external/metadata mode) in each node. Pods resolve
#     every neighbour to the gateway MAC ee:ff:ff:ff:ff:ff (what the fabric's proxy ARP answers),
#     so every frame they send is IPv4 to the node's veth, where `from_pod` runs (tc ingress);
#     `from_wire` runs on vx0's ingress of the other node.
#   * the baseline: two namespaces joined by a veth (MTU 1550) with a kernel VXLAN device in each
#     (MTU 1500), iperf3 directly on the overlay — the baseline of bench/dataplane.sh; and the same
#     two namespaces with a pod behind a veth on each side, routed by the kernel: the bpf path's
#     topology without the programs, which tells the veth hop's cost from theirs.
# What it measures, client → server, each bpf number right after the VXLAN one: TCP 1 and 4
# streams (Gbit/s), 64-byte UDP datagrams received/s, UDP ping-pong RTT (µs); then a flood from
# a spoofed source on the bpf path, which must reach nothing (the drop counter and the server's
# received count say so).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SECS=5
REPEAT=3
while (($#)); do
  case "$1" in
    --secs) SECS="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    -h | --help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'mechanism [%4ss] %s\n' "$SECONDS" "$*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=bench/common.sh
. "$HERE/../common.sh"

[ "$(id -u)" = 0 ] || die "needs root (namespaces, BPF)"
for c in ip tc clang bpftool iperf3 sockperf python3; do
  command -v "$c" >/dev/null 2>&1 || die "$c not found (apt-get install -y clang llvm libbpf-dev bpftool iperf3 sockperf)"
done

# No dot in the path: libbpf turns dots of pin paths into underscores.
TMP="$(mktemp -d /tmp/enifab-mechanism-XXXXXX)"
RUN="$(basename "$TMP" | sed 's/^enifab-mechanism-//' | tr 'A-Z' 'a-z')"
NA="efm-$RUN-na" NB="efm-$RUN-nb" PA="efm-$RUN-pa" PB="efm-$RUN-pb"
VXA="efm-$RUN-vxa" VXB="efm-$RUN-vxb" PXA="efm-$RUN-pxa" PXB="efm-$RUN-pxb"
NSS=("$NA" "$NB" "$PA" "$PB" "$VXA" "$VXB" "$PXA" "$PXB")
BPF="$TMP/bpffs"
SERVERS=()

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  ((${#SERVERS[@]})) && kill "${SERVERS[@]}" 2>/dev/null && wait "${SERVERS[@]}" 2>/dev/null
  local ns
  for ns in "${NSS[@]}"; do [ -e "/var/run/netns/$ns" ] && ip netns del "$ns"; done
  mountpoint -q "$BPF" && umount "$BPF" # the pins go with it
  ((rc != 0)) && tail -n 5 "$TMP"/*.log 2>/dev/null >&2
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "compiling mechanism.bpf.c ($(clang --version | head -1))"
clang -O2 -g -Wall -target bpf -I/usr/include/"$(uname -m)"-linux-gnu \
  -c "$HERE/mechanism.bpf.c" -o "$TMP/mechanism.bpf.o"
mkdir -p "$BPF"
mount -t bpf bpf "$BPF"

for ns in "${NSS[@]}"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done

# ---- the bpf path -----------------------------------------------------------------------------
UNDERLAY_A=192.168.78.1 UNDERLAY_B=192.168.78.2 VNI=4242
POD_A=10.0.4.30 POD_B=10.0.4.50 VLAN_A=1001 VLAN_B=1002
ip -n "$NA" link add ul0 mtu 1600 type veth peer name ul0 netns "$NB" mtu 1600
# node ns pod address vlan
for spec in "$NA $PA $POD_A $UNDERLAY_A" "$NB $PB $POD_B $UNDERLAY_B"; do
  read -r node pod ip underlay <<<"$spec"
  ip -n "$node" addr add "$underlay/24" dev ul0
  ip -n "$node" link set ul0 up
  ip -n "$node" link add vx0 mtu 1550 type vxlan external dstport 4789
  ip -n "$node" link set vx0 up
  ip -n "$node" link add cali0 type veth peer name eth0 netns "$pod"
  ip -n "$node" link set cali0 up
  ip -n "$pod" addr add "$ip/24" dev eth0
  ip -n "$pod" link set eth0 up
  ip -n "$pod" route add default via 10.0.4.253 dev eth0 onlink
  for other in 10.0.4.253 "$POD_A" "$POD_B"; do
    [ "$other" = "$ip" ] || ip -n "$pod" neigh replace "$other" lladdr ee:ff:ff:ff:ff:ff dev eth0 nud permanent
  done
done

ifindex() { ip -n "$1" -j link show dev "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["ifindex"])'; }
mac() { ip -n "$1" -j link show dev "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])'; }
hexbytes() { # python struct format, values… → "hex aa bb …" for bpftool
  python3 -c '
import socket, struct, sys
fmt, vals = sys.argv[1], []
for v in sys.argv[2:]:
    if v.startswith("h:"): vals.append(struct.unpack("!I", socket.inet_aton(v[2:]))[0])  # host order
    elif v.count(".") == 3: vals.append(socket.inet_aton(v))  # network order
    elif v.count(":") == 5: vals.append(bytes.fromhex(v.replace(":", "")))
    else: vals.append(int(v))
print("hex " + " ".join("%02x" % b for b in struct.pack(fmt, *vals)))' "$@"
}
# Each node loads its own copy (maps pinned under its name), attaches it and fills its maps:
# its pod's port and member ENI, and the route to the other pod (the slow path's verdict).
# name node pod pod-ip pod-vlan | peer-pod-ip peer-vlan peer-underlay
for spec in "a $NA $PA $POD_A $VLAN_A $POD_B $VLAN_B $UNDERLAY_B" "b $NB $PB $POD_B $VLAN_B $POD_A $VLAN_A $UNDERLAY_A"; do
  read -r name node pod ip vlan peer peer_vlan remote <<<"$spec"
  mkdir -p "$BPF/$name"
  bpftool prog loadall "$TMP/mechanism.bpf.o" "$BPF/$name/progs" type tc pinmaps "$BPF/$name/maps" 2>"$TMP/load-$name.log" ||
    die "loading the programs for node $name: $(cat "$TMP/load-$name.log")"
  for dev_prog in "cali0 from_pod" "vx0 from_wire"; do
    read -r dev prog <<<"$dev_prog"
    ip netns exec "$node" tc qdisc add dev "$dev" clsact
    ip netns exec "$node" tc filter add dev "$dev" ingress bpf da pinned "$BPF/$name/progs/$prog"
  done
  m="$BPF/$name/maps"
  # shellcheck disable=SC2046 # the hex bytes are words on purpose
  {
    bpftool map update pinned "$m/wire" key hex 00 00 00 00 value $(hexbytes "=I" "$(ifindex "$node" vx0)")
    bpftool map update pinned "$m/ports" key $(hexbytes "=I" "$(ifindex "$node" cali0)") value $(hexbytes "=4s" "$ip")
    bpftool map update pinned "$m/routes" key $(hexbytes "=4s" "$peer") \
      value $(hexbytes "=IIHH" "h:$remote" "$VNI" "$peer_vlan" 0)
    bpftool map update pinned "$m/members" key $(hexbytes "=IHH" "$VNI" "$vlan" 0) \
      value $(hexbytes "=I6s2x" "$(ifindex "$node" cali0)" "$(mac "$pod" eth0)")
  }
done

# ---- the baseline -------------------------------------------------------------------------------
vxlan_baseline "$VXA" "$VXB"
# The same baseline with the bpf path's topology: a pod behind a veth on each side, routed by
# the kernel (/32 routes, the peer's address via the overlay), to tell the veth hop's cost from
# the programs'.
PX_A=10.0.8.120 PX_B=10.0.8.130
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

# ---- measuring ------------------------------------------------------------------------------------
for ns in "$VXB" "$PB" "$PXB"; do
  ip netns exec "$ns" iperf3 -s -p 5201 >"$TMP/iperf3-$ns.log" 2>&1 &
  SERVERS+=($!)
  ip netns exec "$ns" sockperf server -i 0.0.0.0 -p 11111 >"$TMP/sockperf-$ns.log" 2>&1 &
  SERVERS+=($!)
done
reach() { # ns ip: TCP connects to the iperf3 port (no ping needed)
  local i
  for i in $(seq 1 50); do
    ip netns exec "$1" python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], 5201), 1).close()' "$2" \
      2>/dev/null && return 0
    sleep 0.2
  done
  die "$1 cannot reach $2"
}
reach "$VXA" "$VX_S_IP"
reach "$PA" "$POD_B"
reach "$PXA" "$PX_B"

RAW="$TMP/raw.txt"
: >"$RAW"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$REPEAT"); do
  say "run $r of $REPEAT"
  measure tcp1 vxlan tcp "$VXA" "$VX_S_IP" 1
  measure tcp1 vxpods tcp "$PXA" "$PX_B" 1
  measure tcp1 bpf tcp "$PA" "$POD_B" 1
  measure tcp4 vxlan tcp "$VXA" "$VX_S_IP" 4
  measure tcp4 vxpods tcp "$PXA" "$PX_B" 4
  measure tcp4 bpf tcp "$PA" "$POD_B" 4
  measure pps64 vxlan pps64 "$VXA" "$VX_S_IP"
  measure pps64 vxpods pps64 "$PXA" "$PX_B"
  measure pps64 bpf pps64 "$PA" "$POD_B"
  measure udprr vxlan udprr "$VXA" "$VX_S_IP"
  measure udprr vxpods udprr "$PXA" "$PX_B"
  measure udprr bpf udprr "$PA" "$POD_B"
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

# A flood from an address pod A does not own: dropped by from_pod, never seen by pod B.
ip -n "$PA" addr add 10.0.4.99/32 dev eth0
ip netns exec "$PB" timeout $((SECS + 5)) python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 5999)); s.settimeout(float(sys.argv[1]) + 2)
n = 0
try:
    while True: s.recv(2048); n += 1
except OSError: pass
print(n)' "$SECS" >"$TMP/spoof-received" 2>/dev/null &
receiver=$!
sleep 0.3
spoof_sent="$(ip netns exec "$PA" python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("10.0.4.99", 0))
end, n, msg = time.monotonic() + float(sys.argv[2]), 0, bytes(64)
while time.monotonic() < end:
    for _ in range(256): s.sendto(msg, (sys.argv[1], 5999))
    n += 256
print(n)' "$POD_B" "$SECS")"
wait "$receiver" || true
spoof_received="$(cat "$TMP/spoof-received")"
spoof_dropped="$(bpftool -j map lookup pinned "$BPF/a/maps/drops" key hex 00 00 00 00 |
  python3 -c '
import json, sys
# One value per CPU: a number when bpftool has the map'"'"'s BTF, else its bytes in hex.
num = lambda v: v if isinstance(v, int) else int.from_bytes(bytes(int(b, 16) for b in v), "little")
print(sum(num(v["value"]) for v in json.load(sys.stdin)["values"]))')"

python3 - "$RAW" <<EOF
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    m, path, v = line.split()
    runs.setdefault((m, path), []).append(float(v))
med = lambda m, p: statistics.median(runs[(m, p)])
print("Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), Linux $(uname -r);")
print("$(clang --version | head -1), medians of $REPEAT runs of $SECS s, load average $LOAD_BEFORE before, $LOAD_AFTER after.")
print()
print("| | kernel VXLAN | kernel VXLAN, pods behind veths | tc BPF fast path (mechanism) | bpf ÷ VXLAN | bpf ÷ VXLAN with pods |")
print("|---|---|---|---|---|---|")
for m, label, unit, inverse in [("tcp1", "TCP, 1 stream", "Gbit/s", False), ("tcp4", "TCP, 4 streams", "Gbit/s", False),
                                ("pps64", "UDP 64 B", "datagrams/s", False), ("udprr", "UDP ping-pong RTT", "µs", True)]:
    a, p, b = med(m, "vxlan"), med(m, "vxpods"), med(m, "bpf")
    fmt = (lambda x: "%.0f" % x) if m == "pps64" else (lambda x: "%.1f" % x if m == "udprr" else "%.2f" % x)
    x = " ×" if inverse else ""
    print("| %s (%s) | %s | %s | %s | %.2f%s | %.2f%s |" % (label, unit, fmt(a), fmt(p), fmt(b), b / a, x, b / p, x))
print()
runs_of = lambda m, p: " ".join("%g" % x for x in runs[(m, p)])
print("Raw runs (vxlan / vxlan with pods / bpf): " + "; ".join(
    "%s %s / %s / %s" % (m, runs_of(m, "vxlan"), runs_of(m, "vxpods"), runs_of(m, "bpf")) for m in ["tcp1", "tcp4", "pps64", "udprr"]))
print()
print("Spoofed 64-byte flood from pod A (source 10.0.4.99): $spoof_sent datagrams sent, $spoof_dropped dropped")
print("by from_pod as spoofed, $spoof_received received by pod B.")
EOF
