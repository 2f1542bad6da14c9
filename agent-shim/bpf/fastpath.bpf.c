// SPDX-License-Identifier: GPL-2.0
//
// enifab's kernel fast path on a node (issue 11): carries the flows the emulator's pipeline
// admitted, and nothing else. Owned and loaded by enifab-shim (agent-shim/src/fastpath.rs); its
// maps are filled only from the fabric's grants.
//
//   node device (eth0, eth1, a sub-interface in the node namespace): tc egress `fp_egress`
//       an untagged IPv4 TCP (not SYN/FIN/RST) or UDP packet to the gateway's MAC (the
//       pipeline takes no other), not a fragment, whose
//       (device, 5-tuple) has an egress entry of the node's current epoch, not idle past its
//       timeout → counted, tunnel key (destination node, destination port as VXLAN id),
//       redirected to the node's metadata-mode VXLAN device. An untagged IPv6 packet whose
//       next header is TCP (not SYN/FIN/RST) or UDP itself, by the same rules, in maps of its
//       own (`egress6`, `ingress6`: 16-byte addresses; the IPv4 keys keep their size); one
//       with any extension header (hop-by-hop, routing, fragment, ...) is not for the fast
//       path. Anything else: TC_ACT_OK, the frame goes on to the TAP and the shim relays it to
//       the pipeline (the slow path).
//   member sub-interface (the VLAN datapath's, a veth pair: the pod's end in its namespace,
//   the node's end here, and a TAP in the node namespace the shim relays): tc ingress on the
//   node's end `fp_member_out`: as fp_egress, and what is not carried goes to the TAP's egress
//   (the shim reads it); tc ingress on that TAP `fp_member_in`: what the shim writes goes to
//   the node's end's egress (into the pod). So the pod's frames never meet the node's stack,
//   as a real VLAN sub-interface's never do.
//   VXLAN device: tc ingress `fp_ingress` (into a member's pod with bpf_redirect_peer)
//       (VXLAN id, 5-tuple), parsed as on egress (IPv4, or IPv6 with TCP/UDP as its next
//       header), must have an ingress entry in its family's map, of the current epoch, from
//       the node it was granted for (outer source), not idle → MACs rewritten as the pipeline rewrites
//       them (gateway ee:ff:ff:ff:ff:ff → the port's MAC), the member's tag pushed if the
//       port keeps tags, redirected into the device's ingress as if the fabric had written it.
//       Anything else is dropped and counted: nothing reaches a node that no verdict of the
//       current configuration admitted.
//
//   underlay device: the fast path's own VXLAN, both ways. A carried frame is encapsulated here
//       (outer IPv4/UDP/VXLAN, inner Ethernet, as the kernel's VXLAN device would build it) and
//       sent out of the underlay device with bpf_redirect_neigh; tc ingress `fp_wire` takes
//       apart a VXLAN datagram addressed to this node and judges its inner frame as
//       `fp_ingress` does. The kernel's VXLAN device costs a route lookup, the node's netfilter
//       hooks and a UDP socket on the way out, and the IP stack, a UDP socket and a GRO cell on
//       the way in, per packet: for small packets that is most of the fast path's cost. The
//       VXLAN device stays for what this does not do: a frame that would not fit the underlay
//       encapsulated (the device fragments), a flow between two ports of this node (the device
//       sends it to itself), no underlay device, and on the way in anything
//       but a plain unfragmented datagram: a GSO aggregate above all, whose tunnel offload
//       state only the device's decapsulation resets on this kernel (bpf_skb_adjust_room
//       learns to reset it with BPF_F_ADJ_ROOM_DECAP_L4_UDP, after 6.18).
//
// Sections are named `classifier` (what aya 0.14 loads as tc programs). Written in C: BPF in
// Rust needs a nightly toolchain.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// Keep in step with agent-shim/src/fastpath.rs.
struct egress_key {
    __u32 ifindex;
    __u8 proto;
    __u8 pad[3];
    __u32 src, dst;      // network order
    __u16 sport, dport;  // network order
};
struct egress_val {
    __u64 epoch;
    __u64 idle_ns;
    __u64 last_ns;       // the last packet's time, or (until the first) the grant's, a second early
    __u64 packets;
    __u64 bytes;
    __u32 remote;        // destination node's fast-path address, host order (tunnel key)
    __u32 vni;           // destination port
};
struct ingress_key {
    __u32 vni;
    __u8 proto;
    __u8 pad[3];
    __u32 src, dst;
    __u16 sport, dport;
};
struct ingress_val {
    __u64 epoch;
    __u64 idle_ns;
    __u64 last_ns;       // as egress_val's
    __u32 peer;          // the sending node's fast-path address, host order
    __u32 ifindex;       // the device to deliver into
    __u8 mac[6];         // destination MAC (the pipeline's rewrite)
    __u16 vlan;          // tag to push, 0 = none
    __u32 flags;         // DELIVER_EGRESS: out of `ifindex` (a member's veth), not into it
    __u32 pad;
};
#define DELIVER_EGRESS 1
// IPv6 flows: the same values, keys with 16-byte addresses.
struct egress6_key {
    __u32 ifindex;
    __u8 proto;
    __u8 pad[3];
    __u8 src[16], dst[16];
    __u16 sport, dport;  // network order
};
struct ingress6_key {
    __u32 vni;
    __u8 proto;
    __u8 pad[3];
    __u8 src[16], dst[16];
    __u16 sport, dport;
};
struct state {
    __u64 epoch;         // the node's current epoch; 0 = nothing is valid
    __u32 vxlan_ifindex;
    __u32 underlay_ifindex; // 0 = send through the VXLAN device only
    __u32 local;         // the node's underlay address, network order
    __u16 port;          // the VXLAN port, network order
    __u16 pad;
};
// The sizes fastpath.rs asserts too: a key laid out differently there would never match.
_Static_assert(sizeof(struct egress_key) == 20 && sizeof(struct ingress_key) == 20, "IPv4 keys");
_Static_assert(sizeof(struct egress6_key) == 44 && sizeof(struct ingress6_key) == 44, "IPv6 keys");
_Static_assert(sizeof(struct egress_val) == 48 && sizeof(struct ingress_val) == 48, "values");
_Static_assert(sizeof(struct state) == 24, "state");

// Counters (per CPU), read by the shim.
enum { C_CARRIED, C_SLOW, C_DELIVERED, C_REFUSED, C_MAX };

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, struct egress_key);
    __type(value, struct egress_val);
} egress SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, struct ingress_key);
    __type(value, struct ingress_val);
} ingress SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, struct egress6_key);
    __type(value, struct egress_val);
} egress6 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, struct ingress6_key);
    __type(value, struct ingress_val);
} ingress6 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct state);
} config SEC(".maps");

// A member sub-interface's two node-side devices, each → the other.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);
    __type(value, __u32);
} patch SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, C_MAX);
    __type(key, __u32);
    __type(value, __u64);
} counters SEC(".maps");

static const __u8 gateway_mac[6] = {0xee, 0xff, 0xff, 0xff, 0xff, 0xff};

static __always_inline int is_gateway(const __u8 *mac) {
    int same = 1;
#pragma unroll
    for (int i = 0; i < 6; i++)
        same &= mac[i] == gateway_mac[i];
    return same;
}

static __always_inline void count(__u32 which) {
    __u64 *c = bpf_map_lookup_elem(&counters, &which);
    if (c)
        *c += 1;
}

// The ports of a TCP/UDP header at `l4`; TCP segments that move conntrack's state (SYN, FIN,
// RST) are not for the fast path. Returns 0 when it is one. Read with bpf_skb_load_bytes, not
// direct access: a TCP segment on its way out is a clone (TCP keeps the original for
// retransmission), and making its head writable to read it would copy it.
static __always_inline int ports(struct __sk_buff *skb, __u32 l4, __u8 proto, __u16 *sport, __u16 *dport) {
    if (proto == IPPROTO_TCP) {
        struct tcphdr t;
        if (bpf_skb_load_bytes(skb, l4, &t, sizeof(t)) || t.syn || t.fin || t.rst)
            return -1;
        *sport = t.source;
        *dport = t.dest;
    } else if (proto == IPPROTO_UDP) {
        struct udphdr u;
        if (bpf_skb_load_bytes(skb, l4, &u, sizeof(u)))
            return -1;
        *sport = u.source;
        *dport = u.dest;
    } else {
        return -1;
    }
    return 0;
}

// The EtherType of an untagged frame at `eth` (network order), 0 when unreadable.
static __always_inline __u16 ethertype(struct __sk_buff *skb, __u32 eth) {
    __u16 proto;
    if (bpf_skb_load_bytes(skb, eth + __builtin_offsetof(struct ethhdr, h_proto), &proto, sizeof(proto)))
        return 0;
    return proto;
}

// The 5-tuple of an untagged IPv4 TCP/UDP frame at `eth`, not a fragment. Returns 0 when it is
// one.
static __always_inline int tuple(struct __sk_buff *skb, __u32 eth, __u8 *proto, __u32 *src, __u32 *dst,
                                 __u16 *sport, __u16 *dport) {
    struct iphdr ip;
    if (bpf_skb_load_bytes(skb, eth + sizeof(struct ethhdr), &ip, sizeof(ip)) || ip.version != 4 || ip.ihl < 5)
        return -1;
    if (ip.frag_off & bpf_htons(0x3fff))
        return -1;
    if (ports(skb, eth + sizeof(struct ethhdr) + ip.ihl * 4, ip.protocol, sport, dport))
        return -1;
    *proto = ip.protocol;
    *src = ip.saddr;
    *dst = ip.daddr;
    return 0;
}

// The 5-tuple of an untagged IPv6 frame whose next header is TCP or UDP itself: an extension
// header (a fragment's included) sends it to the slow path, which walks the chain. Returns 0
// when it is one.
static __always_inline int tuple6(struct __sk_buff *skb, __u32 eth, __u8 *proto, __u8 *src, __u8 *dst,
                                  __u16 *sport, __u16 *dport) {
    struct ipv6hdr ip;
    if (bpf_skb_load_bytes(skb, eth + sizeof(struct ethhdr), &ip, sizeof(ip)) || ip.version != 6)
        return -1;
    if (ports(skb, eth + sizeof(struct ethhdr) + sizeof(ip), ip.nexthdr, sport, dport))
        return -1;
    *proto = ip.nexthdr;
    __builtin_memcpy(src, &ip.saddr, 16);
    __builtin_memcpy(dst, &ip.daddr, 16);
    return 0;
}

// The egress entry of a frame leaving device `ifindex`, of either family: NULL when it has
// none; *eligible says whether the frame was one the fast path could carry at all.
static __always_inline struct egress_val *egress_entry(struct __sk_buff *skb, int *eligible) {
    *eligible = 0;
    // Only what the pipeline would take: it drops unicast to any MAC but the gateway's as not
    // for it, and so must the cache (by leaving such a frame to it).
    struct ethhdr eth;
    if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) || !is_gateway(eth.h_dest))
        return NULL;
    __u16 proto = eth.h_proto;
    if (proto == bpf_htons(ETH_P_IP)) {
        struct egress_key k = {.ifindex = skb->ifindex};
        if (tuple(skb, 0, &k.proto, &k.src, &k.dst, &k.sport, &k.dport))
            return NULL;
        *eligible = 1;
        return bpf_map_lookup_elem(&egress, &k);
    }
    if (proto == bpf_htons(ETH_P_IPV6)) {
        struct egress6_key k = {.ifindex = skb->ifindex};
        if (tuple6(skb, 0, &k.proto, k.src, k.dst, &k.sport, &k.dport))
            return NULL;
        *eligible = 1;
        return bpf_map_lookup_elem(&egress6, &k);
    }
    return NULL;
}

// What the fast path's VXLAN puts before a frame: outer Ethernet (the neighbour's, filled in on
// the way out), IPv4, UDP, VXLAN.
#define ENCAP_LEN 50
// A GSO aggregate is encapsulated here only when its segments surely fit: its inner headers are
// taken at their largest (IPv6 or IPv4 with options, TCP with options).
#define MAX_INNER_HEADERS 120
#define VXLAN_FLAG_VNI bpf_htonl(0x08000000)
// Not in every uapi header this is built against; the kernel has had it since 6.3.
#define ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)

struct vxlan_headers {
    struct ethhdr eth;
    struct iphdr ip;
    struct udphdr udp;
    __u32 flags, vni;
} __attribute__((packed));
_Static_assert(sizeof(struct vxlan_headers) == ENCAP_LEN, "the fast path's VXLAN headers");

static __always_inline __u16 ip_checksum(const struct iphdr *ip) {
    const __u16 *w = (const __u16 *)ip;
    __u32 sum = 0;
#pragma unroll
    for (int i = 0; i < (int)(sizeof(*ip) / 2); i++)
        sum += w[i];
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return ~sum;
}

// Encapsulates the frame for entry `v` and sends it out of the underlay device: >= 0 = sent
// (the redirect's verdict), -1 = left as it was, for the VXLAN device.
static __always_inline int encap(struct __sk_buff *skb, const struct state *st, const struct egress_val *v) {
    // No underlay device; or a flow between two ports of this node, whose datagrams the
    // underlay would never bring back (the VXLAN device hands them to itself).
    if (!st->underlay_ifindex || bpf_htonl(v->remote) == st->local)
        return -1;
    // Too big for the underlay once encapsulated (the device would fragment it), or no such
    // device (re-created under another index): the VXLAN device's way.
    __u32 mtu = 0;
    if (bpf_check_mtu(skb, st->underlay_ifindex, &mtu, ENCAP_LEN, 0))
        return -1;
    if (skb->gso_size && skb->gso_size + ENCAP_LEN + MAX_INNER_HEADERS > mtu)
        return -1;
    __u32 len = skb->len;
    struct ethhdr inner;
    if (bpf_skb_load_bytes(skb, 0, &inner, sizeof(inner)))
        return -1;
    // Room after the Ethernet header, marked as a UDP tunnel with an inner Ethernet header so
    // that a GSO aggregate is segmented as the VXLAN device's would be.
    __u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP |
                  BPF_F_ADJ_ROOM_ENCAP_L2_ETH | BPF_F_ADJ_ROOM_ENCAP_L2(sizeof(struct ethhdr));
    if (bpf_skb_adjust_room(skb, ENCAP_LEN, BPF_ADJ_ROOM_MAC, flags))
        return -1;
    struct iphdr ip = {
        .version = 4,
        .ihl = 5,
        .tot_len = bpf_htons(len + ENCAP_LEN - sizeof(struct ethhdr)),
        .frag_off = bpf_htons(0x4000), // DF: what does not fit was left to the device above
        .ttl = 64,
        .protocol = IPPROTO_UDP,
        .saddr = st->local,
        .daddr = bpf_htonl(v->remote),
    };
    ip.check = ip_checksum(&ip);
    struct {
        struct vxlan_headers outer;
        struct ethhdr inner;
    } __attribute__((packed)) h = {
        // The MACs are the neighbour's, filled in by bpf_redirect_neigh; the destination must
        // only not be a multicast one.
        .outer.eth.h_proto = bpf_htons(ETH_P_IP),
        .outer.ip = ip,
        // The source port spreads flows over the underlay's paths, as the VXLAN device's does.
        .outer.udp = {.source = bpf_htons(0xc000 | (bpf_get_hash_recalc(skb) & 0x3fff)),
                      .dest = st->port,
                      .len = bpf_htons(len + ENCAP_LEN - sizeof(struct ethhdr) - sizeof(struct iphdr))},
        .outer.flags = VXLAN_FLAG_VNI,
        .outer.vni = bpf_htonl(v->vni << 8),
        .inner = inner,
    };
    // From here on the frame is encapsulated: a failure drops it rather than send it on as a
    // half-made one.
    if (bpf_skb_store_bytes(skb, 0, &h, sizeof(h), 0))
        return TC_ACT_SHOT;
    return bpf_redirect_neigh(st->underlay_ifindex, NULL, 0, 0);
}

// The fast path for a frame leaving a node device: >= 0 = carried (the redirect's verdict),
// -1 = for the slow path.
static __always_inline int carry(struct __sk_buff *skb) {
    __u32 zero = 0;
    struct state *st = bpf_map_lookup_elem(&config, &zero);
    if (!st || !st->epoch || skb->vlan_present)
        return -1;
    int eligible;
    struct egress_val *v = egress_entry(skb, &eligible);
    if (!eligible)
        return -1;
    __u64 now = bpf_ktime_get_ns();
    // Idle since the last packet, or since the grant for an entry not used yet: an entry of a
    // direction that never sends must end with its flow too. (A last_ns ahead of the clock
    // wraps to idle: on the slow path, never carried.)
    if (!v || v->epoch != st->epoch || now - v->last_ns > v->idle_ns) {
        count(C_SLOW);
        return -1;
    }
    __u32 len = skb->len;
    int sent = encap(skb, st, v);
    if (sent < 0) {
        struct bpf_tunnel_key tk = {.remote_ipv4 = v->remote, .tunnel_id = v->vni, .tunnel_ttl = 64};
        if (bpf_skb_set_tunnel_key(skb, &tk, sizeof(tk), 0))
            return -1;
        sent = bpf_redirect(st->vxlan_ifindex, 0);
    }
    if (sent == TC_ACT_SHOT)
        return sent;
    v->last_ns = now;
    __sync_fetch_and_add(&v->packets, 1);
    __sync_fetch_and_add(&v->bytes, len);
    count(C_CARRIED);
    return sent;
}

SEC("classifier")
int fp_egress(struct __sk_buff *skb) {
    int carried = carry(skb);
    return carried >= 0 ? carried : TC_ACT_OK;
}

// Frames of a member's pod, at the node's end of its veth.
SEC("classifier")
int fp_member_out(struct __sk_buff *skb) {
    int carried = carry(skb);
    if (carried >= 0)
        return carried;
    __u32 key = skb->ifindex;
    __u32 *tap = bpf_map_lookup_elem(&patch, &key);
    return tap ? bpf_redirect(*tap, 0) : TC_ACT_SHOT;
}

// Frames the shim writes to a member's TAP: into the pod.
SEC("classifier")
int fp_member_in(struct __sk_buff *skb) {
    __u32 key = skb->ifindex;
    __u32 *veth = bpf_map_lookup_elem(&patch, &key);
    return veth ? bpf_redirect(*veth, 0) : TC_ACT_SHOT;
}

// The ingress entry of a frame at `eth` that arrived with VXLAN id `vni`, of either family, or
// NULL; *proto is its EtherType.
static __always_inline struct ingress_val *ingress_entry(struct __sk_buff *skb, __u32 eth, __u32 vni, __u16 *proto) {
    *proto = ethertype(skb, eth);
    if (*proto == bpf_htons(ETH_P_IP)) {
        struct ingress_key k = {.vni = vni};
        if (tuple(skb, eth, &k.proto, &k.src, &k.dst, &k.sport, &k.dport))
            return NULL;
        return bpf_map_lookup_elem(&ingress, &k);
    }
    if (*proto == bpf_htons(ETH_P_IPV6)) {
        struct ingress6_key k = {.vni = vni};
        if (tuple6(skb, eth, &k.proto, k.src, k.dst, &k.sport, &k.dport))
            return NULL;
        return bpf_map_lookup_elem(&ingress6, &k);
    }
    return NULL;
}

// Whether entry `v` admits a frame from node `peer` (host order) now.
static __always_inline int admits(const struct state *st, const struct ingress_val *v, __u32 peer, __u64 now) {
    return v && v->epoch == st->epoch && v->peer == peer && now - v->last_ns <= v->idle_ns;
}

// Delivers a decapsulated frame (Ethernet header first, `proto` its EtherType) as entry `v`
// says: the pipeline's MACs, the member's tag, into the device.
static __always_inline int deliver(struct __sk_buff *skb, struct ingress_val *v, __u16 proto, __u64 now) {
    struct ethhdr eth = {.h_proto = proto};
    __builtin_memcpy(eth.h_dest, v->mac, 6);
    __builtin_memcpy(eth.h_source, gateway_mac, 6);
    if (bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0))
        return -1;
    if (v->vlan && bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), v->vlan))
        return -1;
    v->last_ns = now;
    count(C_DELIVERED);
    // A member's veth: straight into the pod's end, in the pod's namespace (no pass through
    // the node's end and a backlog queue), as bpf_redirect_peer allows from a tc ingress hook.
    if (v->flags & DELIVER_EGRESS)
        return bpf_redirect_peer(v->ifindex, 0);
    return bpf_redirect(v->ifindex, BPF_F_INGRESS);
}

SEC("classifier")
int fp_ingress(struct __sk_buff *skb) {
    __u32 zero = 0;
    struct state *st = bpf_map_lookup_elem(&config, &zero);
    struct bpf_tunnel_key tk = {};
    if (!st || !st->epoch || bpf_skb_get_tunnel_key(skb, &tk, sizeof(tk), 0))
        goto refuse;
    __u16 proto;
    struct ingress_val *v = ingress_entry(skb, 0, tk.tunnel_id, &proto);
    __u64 now = bpf_ktime_get_ns();
    if (!admits(st, v, tk.remote_ipv4, now))
        goto refuse;
    int delivered = deliver(skb, v, proto, now);
    if (delivered >= 0)
        return delivered;
refuse:
    count(C_REFUSED);
    return TC_ACT_SHOT;
}

// A datagram arriving on the underlay device: the fast path's VXLAN for this node is judged
// and delivered here as fp_ingress would (see the top); anything else goes on to the stack.
SEC("classifier")
int fp_wire(struct __sk_buff *skb) {
    __u32 zero = 0;
    struct state *st = bpf_map_lookup_elem(&config, &zero);
    // A GSO aggregate, and anything not plainly ours, takes the VXLAN device's way.
    if (!st || skb->gso_size)
        return TC_ACT_OK;
    struct vxlan_headers h;
    if (bpf_skb_load_bytes(skb, 0, &h, sizeof(h)))
        return TC_ACT_OK;
    if (h.eth.h_proto != bpf_htons(ETH_P_IP) || h.ip.version != 4 || h.ip.ihl != 5 ||
        h.ip.protocol != IPPROTO_UDP || (h.ip.frag_off & bpf_htons(0x3fff)) || h.ip.daddr != st->local ||
        h.udp.dest != st->port || h.flags != VXLAN_FLAG_VNI)
        return TC_ACT_OK;
    // A damaged outer header is for the IP stack to drop, as it would have.
    struct iphdr outer = h.ip;
    if (ip_checksum(&outer))
        return TC_ACT_OK;
    if (!st->epoch)
        goto refuse;
    __u16 proto;
    struct ingress_val *v = ingress_entry(skb, ENCAP_LEN, bpf_ntohl(h.vni) >> 8, &proto);
    __u64 now = bpf_ktime_get_ns();
    if (!admits(st, v, bpf_ntohl(h.ip.saddr), now))
        goto refuse;
    // Unchanged when it fails (a kernel without the flag): the device takes it apart instead.
    __u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO | (proto == bpf_htons(ETH_P_IPV6) ? ADJ_ROOM_DECAP_L3_IPV6 : 0);
    if (bpf_skb_adjust_room(skb, -ENCAP_LEN, BPF_ADJ_ROOM_MAC, flags))
        return TC_ACT_OK;
    int delivered = deliver(skb, v, proto, now);
    if (delivered >= 0)
        return delivered;
refuse:
    count(C_REFUSED);
    return TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "GPL";
