//! Answering neighbour discovery must not allocate: the pipeline will run it per frame, and its
//! frame path is allocation-free (the pipeline's own counting-allocator test). This proves it
//! for the etherparse-based parse and build in `wire::ipv6`.
#![allow(unsafe_code)] // a GlobalAlloc impl cannot be written without it

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::Ipv6Addr;

use enifab_net::Mac;
use enifab_net::wire::checksum;
use enifab_net::wire::ipv6::{self, NeighborAdvertisement, NeighborSolicitation, Packet};

struct Counting;

thread_local! {
    // `const` init: no lazy registration, so reading it never allocates itself.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call unchanged to the system allocator; the counter is a plain
// thread-local integer that needs no allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A solicitation for `target` from `src` to the solicited-node group, with a source
/// link-layer option; the checksum is this crate's RFC 1071 over the pseudo-header.
fn solicitation(src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let dst = ipv6::solicited_node(target);
    let mut icmp = vec![ipv6::TYPE_NEIGHBOR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[1, 1, 0x00, 0x16, 0x3e, 1, 2, 3]);
    let mut pseudo = [0u8; 40];
    pseudo[..16].copy_from_slice(&src.octets());
    pseudo[16..32].copy_from_slice(&dst.octets());
    pseudo[32..36].copy_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo[39] = ipv6::NEXT_HEADER_ICMPV6;
    let sum = checksum::internet2(&pseudo, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    ip.extend_from_slice(&[ipv6::NEXT_HEADER_ICMPV6, 255]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(&icmp);
    ip
}

#[test]
fn answering_a_solicitation_does_not_allocate() {
    let host: Ipv6Addr = "2408:4005:300:3::10".parse().unwrap();
    let gateway: Ipv6Addr = "2408:4005:300:3:ffff:ffff:ffff:fffd".parse().unwrap();
    let frame = solicitation(host, gateway);
    let mut out = [0u8; ipv6::ADVERTISEMENT_LEN];
    let before = ALLOCATIONS.with(Cell::get);
    let ip = Packet::parse(&frame).expect("parses");
    let ns = NeighborSolicitation::parse(&ip).expect("a valid solicitation");
    let n = NeighborAdvertisement::answer(ip.src, &ns, Mac::GATEWAY, true).emit(&mut out);
    let allocations = ALLOCATIONS.with(Cell::get) - before;
    assert_eq!(n, Ok(ipv6::ADVERTISEMENT_LEN));
    assert_eq!(allocations, 0);
}
