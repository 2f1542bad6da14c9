//! The frame path must not allocate. A counting global allocator (test binary only) proves it
//! for the common verdicts: established flow, new flow, ARP reply, gateway echo, drops, through
//! `process` and `process_split`.
#![allow(unsafe_code)] // a GlobalAlloc impl cannot be written without it

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use super::*;
use crate::wire::l4::{ICMP_ECHO_REQUEST, TCP_ACK, TCP_SYN};

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

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn the_frame_path_does_not_allocate() {
    let mut h = Harness::new(&Lab::with_load_balancers());
    let vip = VIP_INTRA;
    let frames = [
        (TRUNK_A, tcp_datagram(&TRUNK_A, POD_B1.ip, 40000, 80, TCP_SYN)), // new flow
        (POD_B1, tcp_datagram(&POD_B1, TRUNK_A.ip, 80, 40000, TCP_SYN | TCP_ACK)), // reply
        (TRUNK_A, tcp_datagram(&TRUNK_A, POD_B1.ip, 40000, 80, TCP_ACK)), // established
        (POD_A1, arp_request(&POD_A1, POD_GW)),
        (POD_A1, echo_datagram(&POD_A1, POD_GW, ICMP_ECHO_REQUEST, 1)),
        (POD_A1, tcp_datagram(&POD_A1, POD_B1.ip, 1, 22, TCP_SYN)), // SG drop
        (TRUNK_A, tcp_datagram(&TRUNK_A, [10, 9, 9, 9].into(), 1, 22, TCP_SYN)), // no route
        (TRUNK_A, vec![0u8; 5]),                                    // malformed
        (PRIMARY_B, tcp_datagram(&PRIMARY_B, vip, 41000, 80, TCP_SYN)), // new flow through a VIP
        (POD_A1, tcp_datagram(&POD_A1, PRIMARY_B.ip, 80, 41000, TCP_SYN | TCP_ACK)), // un-translated reply
        (PRIMARY_B, tcp_datagram(&PRIMARY_B, vip, 41000, 80, TCP_ACK)), // translated, established
        (PRIMARY_B, tcp_datagram(&PRIMARY_B, vip, 41000, 81, TCP_SYN)), // no listener
    ];
    let Harness { fabric, out, .. } = &mut h;
    for (i, (from, d)) in frames.iter().enumerate() {
        let mut verdict = None;
        let n = allocations_during(|| verdict = Some(fabric.process(Instant(i as u64), from.peer, d, out)));
        assert_eq!(n, 0, "frame {i} allocated: {verdict:?}");
    }
    // The same through the split path, on a fabric of its own (fresh flows again).
    let mut split = Fabric::new(Arc::new(Lab::with_load_balancers().build(1)), FabricOptions::new(RandomState::new()));
    for (i, (from, d)) in frames.iter().enumerate() {
        let mut verdict = None;
        let n = allocations_during(|| verdict = Some(split.process_split(Instant(i as u64), from.peer, d, out)));
        assert_eq!(n, 0, "frame {i} allocated on the split path: {verdict:?}");
    }
    assert_eq!(split.stats().conntrack_entries, 2);
    assert_eq!(fabric.stats().conntrack_entries, 2);
    // The counter does see allocations: a trace builds a Vec.
    let (from, d) = &frames[2];
    assert!(allocations_during(|| drop(fabric.trace(Instant(9), from.peer, d))) > 0);
}
