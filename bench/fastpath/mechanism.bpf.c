// SPDX-License-Identifier: GPL-2.0
//
// The kernel fast path's mechanism, measured before it is built (issue 11, step 1): what each
// frame of an admitted flow would cost if the kernel carried it between two nodes, with the
// work the real one must do per packet — and no more.
//
//   pod A ─veth─▶ node A: tc ingress `from_pod`
//       anti-spoof (the port's address), the flow's verdict from an LRU hash keyed by the
//       5-tuple (the slow path's decision and rewrite; here a miss installs it from a route
//       table, standing in for the upcall), 802.1Q push (the destination member ENI's VLAN,
//       as the fabric tags on delivery), tunnel key (the destination node, the VNI),
//       counters, redirect to a metadata-mode VXLAN device
//   ══ VXLAN over the underlay ══▶ node B: tc ingress `from_wire`
//       VNI + VLAN → member port, pop, MACs rewritten (gateway ee:ff:ff:ff:ff:ff → pod),
//       redirect into the pod's end of its veth
//
// bench/fastpath/mechanism.sh loads it once per node with bpftool (its maps pinned per node) and
// attaches it with tc; it is a measuring device, not the product: the shim will own its programs.
// Written in C because BPF in Rust (aya-ebpf) needs a nightly toolchain this machine lacks. The
// sections are named `classifier`, which both bpftool and aya 0.14 (the newest aya this Rust
// toolchain builds; it refuses `tc`) load as tc programs: the same object can move into the shim.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// A node's port toward a pod: who may send from it.
struct port {
    __u32 ip;          // the member ENI's address (anti-spoof), network order
};

// Where frames to an address go: what the slow path's verdict carries for a new flow.
struct route {
    __u32 remote;      // the destination node's underlay address (host order, as tunnel keys)
    __u32 vni;         // the VPC's VNI
    __u16 vlan;        // the destination member ENI's VLAN
    __u16 pad;
};

// A node's member ENI as seen from the wire.
struct member_key {
    __u32 vni;
    __u16 vlan;
    __u16 pad;
};
struct member {
    __u32 ifindex;     // the pod's veth on this node
    __u8 mac[6];       // the pod's MAC
    __u8 pad[2];
};

struct flow_key {
    __u32 src, dst;
    __u16 sport, dport;
    __u8 proto;
    __u8 pad[3];
};
struct flow {
    __u64 packets, bytes;
    struct route to;
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, __u32); // ifindex of the pod-facing veth
    __type(value, struct port);
} ports SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, __u32); // destination address, network order
    __type(value, struct route);
} routes SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, struct member_key);
    __type(value, struct member);
} members SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, struct flow_key);
    __type(value, struct flow);
} flows SEC(".maps");

// Drops by reason (0 spoofed, 1 no route, 2 no port, 3 no member, 4 malformed), to check
// that the blocked flood is blocked.
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 8);
    __type(key, __u32);
    __type(value, __u64);
} drops SEC(".maps");

// The egress device for tunnelled frames (index 0: the VXLAN device's ifindex).
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} wire SEC(".maps");

static const __u8 GATEWAY_MAC[6] = {0xee, 0xff, 0xff, 0xff, 0xff, 0xff};

static __always_inline int drop(__u32 why)
{
    __u64 *n = bpf_map_lookup_elem(&drops, &why);
    if (n)
        *n += 1;
    return TC_ACT_SHOT;
}

static __always_inline void count(struct flow *f, __u32 len)
{
    __sync_fetch_and_add(&f->packets, 1);
    __sync_fetch_and_add(&f->bytes, len);
}

SEC("classifier")
int from_pod(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return drop(4);
    if (eth->h_proto != bpf_htons(ETH_P_IP))
        return TC_ACT_OK; // ARP and the rest: the slow path's (here: the kernel's)
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end)
        return drop(4);
    __u32 ifindex = skb->ingress_ifindex;
    struct port *p = bpf_map_lookup_elem(&ports, &ifindex);
    if (!p)
        return drop(2);
    if (ip->saddr != p->ip)
        return drop(0);

    struct flow_key k = {.src = ip->saddr, .dst = ip->daddr, .proto = ip->protocol};
    if (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) {
        __u16 *ports_ = (void *)ip + ip->ihl * 4;
        if ((void *)(ports_ + 2) > end)
            return drop(4);
        k.sport = ports_[0];
        k.dport = ports_[1];
    }
    struct flow *f = bpf_map_lookup_elem(&flows, &k);
    if (!f) {
        // The upcall: the real fast path hands the frame to the slow path, whose verdict
        // installs the flow. Here every routed flow is admitted at once.
        struct route *r = bpf_map_lookup_elem(&routes, &k.dst);
        if (!r)
            return drop(1);
        struct flow fresh = {.to = *r};
        bpf_map_update_elem(&flows, &k, &fresh, BPF_NOEXIST);
        f = bpf_map_lookup_elem(&flows, &k);
        if (!f)
            return drop(4);
    }
    count(f, skb->len);

    if (bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), f->to.vlan))
        return drop(4);
    struct bpf_tunnel_key key = {.remote_ipv4 = f->to.remote, .tunnel_id = f->to.vni, .tunnel_ttl = 64};
    if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX))
        return drop(4);
    __u32 zero = 0;
    __u32 *out = bpf_map_lookup_elem(&wire, &zero);
    if (!out)
        return drop(4);
    return bpf_redirect(*out, 0);
}

SEC("classifier")
int from_wire(struct __sk_buff *skb)
{
    struct bpf_tunnel_key key = {};
    if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0))
        return drop(4);
    if (!skb->vlan_present)
        return drop(3);
    struct member_key mk = {.vni = key.tunnel_id, .vlan = skb->vlan_tci & 0x0fff};
    struct member *m = bpf_map_lookup_elem(&members, &mk);
    if (!m)
        return drop(3);
    if (bpf_skb_vlan_pop(skb))
        return drop(4);
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return drop(4);
    __builtin_memcpy(eth->h_dest, m->mac, 6);
    __builtin_memcpy(eth->h_source, GATEWAY_MAC, 6);
    // Straight into the pod's side of its veth: no second trip through the backlog queue
    // (bpf_redirect_peer works from tc ingress only, which is where this runs).
    return bpf_redirect_peer(m->ifindex, 0);
}

char LICENSE[] SEC("license") = "GPL";
