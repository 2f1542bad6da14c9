"""The report of bench/fastpath.sh, and its place in BENCHMARKS.md.

    python3 bench/fastpath/report.py RAW                      # RAW: "metric path value" lines → Markdown
    python3 bench/fastpath/report.py --write BENCHMARKS.md REPORT
                                                              # REPORT replaces the fast path section

The machine and the run's parameters come from BENCH_* environment variables (set by the script).
"""

import os
import statistics
import sys
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from dataplane_report import write  # noqa: E402  (one way of replacing a section)

BEGIN, END = "<!-- fast-path:begin -->", "<!-- fast-path:end -->"

# metric, label, number format, higher is better
ROWS = [
    ("tcp1", "TCP, 1 stream (Gbit/s)", "%.2f", True),
    ("tcp4", "TCP, 4 streams (Gbit/s)", "%.2f", True),
    ("pps64", "UDP 64 B, received (datagrams/s)", "%.0f", True),
    ("udprr", "UDP ping-pong, average RTT (µs)", "%.1f", False),
]
PATHS = ["vxlan", "vxlan-veth", "fast", "fast-dev", "fast-veth", "slow", "ovs"]


def report(raw_path):
    env = os.environ.get
    runs = defaultdict(list)
    for line in open(raw_path):
        metric, path, value = line.split()
        runs[(metric, path)].append(float(value))
    med = {k: statistics.median(v) for k, v in runs.items()}

    def ratio(metric, path, base="vxlan"):
        return med[(metric, path)] / med[(metric, base)]

    out = []
    w = out.append
    w("## Fast path (`sudo bash bench/fastpath.sh`)")
    w("")
    w(f"Measured {env('BENCH_DATE')} on {env('BENCH_CORES')} cores ({env('BENCH_CPU')}), Linux {env('BENCH_KERNEL')},")
    w(f"release build; {env('BENCH_OVS')}; load average {env('BENCH_LOAD')}.")
    w(f"Every number is the median of {env('BENCH_REPEAT')} runs of {env('BENCH_SECS')} s (raw runs below), the paths measured")
    w("one after the other within each run.")
    w("")
    w("- **enifab fast**: the lab of `bench/fastpath/topology.yaml` (two nodes, client pods on node A, servers")
    w("  on node B, each on its own member ENI with its security groups), shims with their kernel fast path:")
    w("  after a flow's first packets through the emulator's pipeline, node A's kernel carries it (BPF: device")
    w("  + 5-tuple entry, epoch; the program pushes the VXLAN headers and sends the frame out of the node's")
    w("  underlay NIC) over the lab's underlay to node B's kernel (a program on its underlay NIC: entry, epoch,")
    w("  VXLAN popped, the pipeline's MAC rewrite); SG verdict, VLAN mapping and anti-spoof are the")
    w("  pipeline's, cached. `vlan` datapath (the pod's eth0 is the member's sub-interface: a veth pair whose")
    w("  node end meets the fast path first); `veth`: Terway's veth + policy routing, through both nodes'")
    w("  stacks. Ratios use `vlan`. **VXLAN device**: the same `vlan` lab with `ENIFAB_FAST_PATH_ENCAP=device`:")
    w("  the kernel's VXLAN device (metadata mode, a tunnel key set by the program) builds and takes apart")
    w("  every carried frame, the fast path's first design.")
    w("- **enifab slow**: the same lab (`vlan`) with `--fast-path=off`: every packet through shim A, the pipeline,")
    w("  shim B (the numbers of the data-plane section, measured again here).")
    w("- **kernel VXLAN**: two namespaces, a veth pair, a vxlan device in each (`bench/common.sh`); **with pods**:")
    w("  the same with a pod behind a veth on each side, routed by the kernel (the hops a trunk pod's packet")
    w("  takes anyway, nothing of enifab's).")
    w("- **Open vSwitch**: Debian's ovs-vswitchd, datapath `netdev` (userspace), userspace TSO on, in its own")
    w("  namespace, two namespaces plugged in by veth pairs; OpenFlow rules push a VLAN tag, run every")
    w("  packet through conntrack (commit new flows, pass established ones), pop the tag, output: one")
    w("  process, one hop.")
    w("")
    w("| | kernel VXLAN | kernel VXLAN, with pods | enifab fast vlan | enifab fast vlan, VXLAN device | enifab fast veth | enifab slow vlan | Open vSwitch | fast ÷ VXLAN | fast ÷ VXLAN with pods | fast ÷ VXLAN device | fast ÷ slow | fast ÷ OVS |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for metric, label, fmt, _ in ROWS:
        cells = [fmt % med[(metric, p)] for p in PATHS]
        w(
            f"| {label} | {' | '.join(cells)} | {ratio(metric, 'fast'):.2f} | {ratio(metric, 'fast', 'vxlan-veth'):.2f} "
            f"| {ratio(metric, 'fast', 'fast-dev'):.2f} | {ratio(metric, 'fast', 'slow'):.2f} | {ratio(metric, 'fast', 'ovs'):.2f} |"
        )
    w("")
    w("Flow setup (the handshake and the close go through the pipeline on both; with the fast path, the")
    w("grant's control datagrams and map updates come on top):")
    w("")
    w("| | enifab fast | enifab slow | fast ÷ slow |")
    w("|---|---|---|---|")
    w(f"| new TCP connections/s (1 thread) | {med[('cps', 'fast')]:.0f} | {med[('cps', 'slow')]:.0f} | {ratio('cps', 'fast', 'slow'):.2f} |")
    w(
        f"| median TCP connect time (µs) | {med[('connect', 'fast')]:.1f} | {med[('connect', 'slow')]:.1f} "
        f"| {ratio('connect', 'fast', 'slow'):.2f} |"
    )
    w("")
    sg10, sg1k = med[("sg10", "fast")], med[("sg1000", "fast")]
    w(f"Security groups, enifab fast, TCP 1 stream: {sg10:.2f} Gbit/s to a server with 10 ingress rules, {sg1k:.2f}")
    w(f"with 1,000 (1,000 ÷ 10 = {sg1k / sg10:.2f}; rules are checked when a flow starts).")
    w("")
    arrived = max(runs[("blocked_arrived", "fast")])
    w(f"A flood the server's group drops (UDP to port 9, a drop rule): {med[('blocked', 'fast')]:.0f} datagrams/s sent,")
    w(f"{arrived:.0f} reached the server pod's interface in any run (the flow is never granted: every datagram")
    w("meets the pipeline, which drops it).")
    w("")

    def verdict(name, value, at_least=None, at_most=None):
        ok = value >= at_least if at_least is not None else value <= at_most
        bound = f"≥ {at_least:g}" if at_least is not None else f"≤ {at_most:g}"
        return f"{name} {value:.2f} {'met' if ok else 'MISSED'} ({bound})"

    verdicts = [
        verdict("tcp1", ratio("tcp1", "fast"), at_least=0.85),
        verdict("tcp4", ratio("tcp4", "fast"), at_least=0.8),
        verdict("pps64", ratio("pps64", "fast"), at_least=0.8),
        verdict("latency", ratio("udprr", "fast"), at_most=1.3),
        verdict("sg1000", sg1k / sg10, at_least=0.9),
    ]
    beats = [m for m, _, _, higher in ROWS if (med[(m, "fast")] > med[(m, "ovs")]) == higher]
    w("Targets (issue 11): " + "; ".join(verdicts) + f"; faster than Open vSwitch on {len(beats)} of {len(ROWS)} rows"
      + (f" ({', '.join(beats)})" if beats else "") + f"; blocked flood reached the pod: {arrived:.0f}.")
    w("")
    w("Where the small packets go. With one unlimited sender, a 64-byte datagram's whole way runs in")
    w("the sender's `sendmsg` on one core: pod → node A's end of the pod's veth (the program: entry, VXLAN")
    w("pushed) → node A's underlay NIC → the lab's bridge (a veth in, a veth out) → node B's underlay NIC (the")
    w("program: entry, VXLAN popped) → into the pod → the receiver's socket. Kernel VXLAN has one device hop")
    w("and its two tunnel ends in the IP stack. Building the VXLAN in the program instead of the kernel's")
    w("VXLAN device saves a route lookup, the node's netfilter hooks and a socket on the way out, and the IP")
    w(f"stack, a socket and a GRO cell on the way in: {ratio('pps64', 'fast', 'fast-dev'):.2f} × the device's packet rate here. The pod's")
    w("`eth0` also asks for room in front of each packet for the encapsulation (`fastpath::HEADROOM_BRIDGE`);")
    w("without it every datagram is copied to make room (measured apart on the same machine: 113 k/s")
    w("without, 126 k/s with, kernel VXLAN 125 and 128 k/s in the same two runs). The `veth` datapath goes")
    w("through both nodes' IP stacks (routing, the policy rules), and its pods' veths, made by the CNI plugin")
    w("as Terway makes them, have no such room. On real hosts node B's half would run on another machine;")
    w("here both nodes share the two cores.")
    w("")
    w("Raw runs:")
    w("")
    w("```")
    for (metric, path), values in runs.items():
        w(f"{metric:<15} {path:<10} {' '.join('%g' % v for v in values)}")
    w("```")
    w("")
    for metric in ["tcp1", "tcp4", "pps64"]:
        w(f"ratio {metric} {ratio(metric, 'fast'):.2f}")
    w(f"ratio latency {ratio('udprr', 'fast'):.2f}")
    w(f"ratio sg1000 {sg1k / sg10:.2f}")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--write":
        write(sys.argv[2], sys.argv[3], BEGIN, END)
    elif len(sys.argv) == 2:
        sys.stdout.write(report(sys.argv[1]))
    else:
        sys.exit(__doc__)
