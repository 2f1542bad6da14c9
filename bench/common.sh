# Shared by the data-plane benchmarks (bench/dataplane.sh, bench/fastpath/mechanism.sh): the
# kernel VXLAN baseline and the traffic tools, so that every script measures the same thing the
# same way. Sourced, not run. The caller defines `say` and `die` and sets SECS (seconds a run)
# and RAW (the file `measure` appends `metric path value` lines to).

# vxlan_baseline NS_A NS_B: two existing namespaces joined by a veth (the underlay, MTU 1550),
# a kernel VXLAN device in each (MTU 1500, as the ENIs) carrying 10.0.8.20 (A) and 10.0.8.30 (B).
vxlan_baseline() {
  local ns local remote overlay
  ip -n "$1" link add u0 mtu 1550 type veth peer name u0 netns "$2" mtu 1550
  for spec in "$1 192.168.77.1 192.168.77.2 10.0.8.20" "$2 192.168.77.2 192.168.77.1 10.0.8.30"; do
    read -r ns local remote overlay <<<"$spec"
    ip -n "$ns" addr add "$local/30" dev u0
    ip -n "$ns" link set u0 up
    ip -n "$ns" link add vx0 mtu 1500 type vxlan id 100 local "$local" remote "$remote" dstport 4789 dev u0
    ip -n "$ns" addr add "$overlay/24" dev vx0
    ip -n "$ns" link set vx0 up
  done
}
VX_S_IP=10.0.8.30

stop() { # pid…: TERM, up to 2 s of grace, then KILL
  local p
  for p in "$@"; do kill "$p" 2>/dev/null; done
  for p in "$@"; do
    for _ in $(seq 1 10); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$p" 2>/dev/null
  done
  return 0
}

iperf() { # ns dst args… → iperf3's JSON; retried once (a server still busy with the last test)
  local ns="$1" dst="$2"
  shift 2
  ip netns exec "$ns" iperf3 -c "$dst" -p 5201 -J "$@" 2>/dev/null ||
    { sleep 1 && ip netns exec "$ns" iperf3 -c "$dst" -p 5201 -J "$@"; }
}
tcp() { # ns dst streams → Gbit/s received
  iperf "$1" "$2" -t "$SECS" -P "$3" |
    python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))'
}
pps64() { # ns dst → 64-byte datagrams received per second
  iperf "$1" "$2" -t "$SECS" -u -l 64 -b 0 |
    python3 -c 'import json,sys; r = json.load(sys.stdin)["end"]["sum_received"]; print("%.0f" % (r["bytes"] / 64 / r["seconds"]))'
}
udprr() { # ns dst → average RTT in µs of a back-to-back UDP ping-pong, 64-byte messages
  ip netns exec "$1" sockperf ping-pong -i "$2" -p 11111 -m 64 -t "$SECS" --full-rtt 2>&1 |
    python3 -c 'import re,sys; print("%.1f" % float(re.search(r"avg-rtt=([0-9.]+)", sys.stdin.read()).group(1)))'
}
measure() { # metric path command…: runs the command and records its one number
  local v
  v="$("${@:3}")" || die "$1 over $2 failed"
  [ -n "$v" ] || die "$1 over $2 gave no number"
  echo "$1 $2 $v" >>"$RAW"
  say "$(printf '%-7s %-12s %s' "$1" "$2" "$v")"
}
