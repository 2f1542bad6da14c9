//! Batched UDP: `recvmmsg` and `sendmmsg` over a std `UdpSocket`, with UDP GRO on receive and
//! UDP GSO on send.
//!
//! One system call moves up to [`BATCH`] messages in and [`SEND_BATCH`] datagrams out. That is
//! what keeps the fabric's per-frame cost low for small packets, where the syscall and the
//! per-datagram work of the kernel, not the copy, dominate. Two kernel offloads cut the latter
//! further:
//!
//! - **Receive (`UDP_GRO`)**: shims send runs of equal-sized datagrams as one UDP GSO message;
//!   with `UDP_GRO` on our socket the kernel queues such a run as one buffer (the datagrams back
//!   to back, all of the announced segment size but the last) instead of splitting it into one
//!   socket buffer per datagram. That takes the per-datagram allocation, queueing and receive
//!   buffer accounting out of the path the previous design overflowed under small packets
//!   (`RcvbufErrors`). [`RecvBatch::get`] hands the datagrams out one by one again.
//! - **Send (`UDP_SEGMENT`)**: consecutive datagrams of one size (the last of a run may be
//!   shorter) to the same peer leave as one message, one pass through the IP output path, which
//!   the receiving kernel splits again (or keeps whole for a socket with `UDP_GRO`, as the
//!   shims'). A path whose MTU refuses the segment size (a peer across a 1500-byte network;
//!   loopback never does) makes [`SendBatch::flush`] resend the run datagram by datagram and
//!   coalesce only segments that fit any Ethernet path from then on, or none.
//!
//! - **Send without copying the packet**: a datagram queued through a [`Queue`] may be two
//!   pieces, headers in the batch's own buffer and the payload borrowed from elsewhere (the
//!   fabric's receive buffer, where the forwarded packet already is): each piece is one iovec, and
//!   the kernel gathers them, also across the datagrams of one GSO message (it segments by bytes,
//!   not by iovec). The borrow is a lifetime on the queue, so the compiler sees to it that the
//!   payloads outlive the send: the receive buffers cannot be reused (`recvmmsg` again) while a
//!   queue that borrows them has anything unsent.
//!
//! What makes a GSO run, what to coalesce after a refusal, the control messages and the socket
//! options are [`enifab_udp`]'s, shared with the shims' relays; this module keeps the batches.
//!
//! The buffers are allocated once, at the largest datagram a Geneve super-frame can make, and
//! reused; nothing on this path allocates.
//!
//! This is the one module of the emulator with `unsafe`: the syscalls and the C structures
//! they fill. Each block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use enifab_udp::{
    CmsgBuf, GSO_MAX_SEGMENTS, INITIAL_MAX_SEGMENT, after_refusal, gro_segment, gso_run, segment_refused,
    set_gso_control, to_std, unspecified,
};
pub use enifab_udp::{enable_gro, set_buffers};
use nix::sys::socket::{SockaddrLike, SockaddrStorage};

/// Messages per `recvmmsg`.
pub const BATCH: usize = 32;
/// Datagrams queued per `sendmmsg`: one full GSO message's worth.
pub const SEND_BATCH: usize = GSO_MAX_SEGMENTS;
/// The largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;

/// Receive buffers for one batch.
pub struct RecvBatch {
    bufs: Vec<Box<[u8]>>,
    addrs: Vec<SockaddrStorage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// Where the kernel says a message is a GRO run (and of which segment size).
    cmsgs: Vec<CmsgBuf>,
}

// SAFETY: the raw pointers inside `iovs`/`hdrs` only ever point into `bufs`/`addrs`/`cmsgs`,
// which the batch owns and never reallocates; moving the batch to another thread moves their
// owners too.
unsafe impl Send for RecvBatch {}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> RecvBatch {
        let bufs: Vec<Box<[u8]>> = (0..BATCH).map(|_| vec![0u8; MAX_DATAGRAM].into_boxed_slice()).collect();
        // SAFETY: iovec and mmsghdr are plain C structs for which all-zero bytes are a valid
        // value.
        let zero_iov: libc::iovec = unsafe { MaybeUninit::zeroed().assume_init() };
        let zero_hdr: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
        RecvBatch {
            bufs,
            addrs: vec![unspecified(); BATCH],
            iovs: vec![zero_iov; BATCH],
            hdrs: vec![zero_hdr; BATCH],
            cmsgs: vec![[0; 4]; BATCH],
        }
    }

    /// Wait for at least one message (up to the socket's read timeout), take up to [`BATCH`].
    /// Returns how many arrived; read each with [`RecvBatch::get`]. With [`enable_gro`] on the
    /// socket, one message may hold a run of datagrams.
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        for i in 0..BATCH {
            self.iovs[i] = libc::iovec { iov_base: self.bufs[i].as_mut_ptr().cast(), iov_len: self.bufs[i].len() };
            let hdr = &mut self.hdrs[i].msg_hdr;
            hdr.msg_name = (&mut self.addrs[i] as *mut SockaddrStorage).cast();
            hdr.msg_namelen = std::mem::size_of::<SockaddrStorage>() as libc::socklen_t;
            hdr.msg_iov = &mut self.iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = self.cmsgs[i].as_mut_ptr().cast();
            hdr.msg_controllen = std::mem::size_of::<CmsgBuf>();
            hdr.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at a live iovec, address storage and control buffer owned
        // by `self`, each iovec at a live buffer of the stated length; the kernel writes only
        // within those.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
    }

    /// Message `i` of the last [`RecvBatch::recv`]: its sender and its datagrams (one, or a
    /// GRO run of several, in the order they were sent).
    pub fn get(&self, i: usize) -> Option<(SocketAddr, Datagrams<'_>)> {
        let len = self.hdrs[i].msg_len as usize;
        let from = to_std(&self.addrs[i])?;
        let data = &self.bufs[i][..len.min(self.bufs[i].len())];
        let segment = gro_segment(&self.hdrs[i].msg_hdr).unwrap_or(data.len());
        Some((from, Datagrams { data, segment, first: true }))
    }
}

/// The datagrams of one received message: `segment` bytes each, the last possibly shorter.
#[derive(Debug, Clone)]
pub struct Datagrams<'a> {
    data: &'a [u8],
    segment: usize,
    /// An empty message is still one (empty) datagram.
    first: bool,
}

impl<'a> Iterator for Datagrams<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.data.is_empty() {
            return std::mem::take(&mut self.first).then_some(self.data);
        }
        self.first = false;
        let (d, rest) = self.data.split_at(self.segment.clamp(1, self.data.len()));
        self.data = rest;
        Some(d)
    }
}

/// Outgoing datagrams of one batch, queued then sent with one `sendmmsg` (runs of equal-sized
/// datagrams to one peer coalesced into UDP GSO messages). Datagrams whose payload is borrowed
/// are queued through [`SendBatch::queue`].
pub struct SendBatch {
    bufs: Vec<Box<[u8]>>,
    /// Each datagram's whole length (what GSO coalescing compares)…
    lens: Vec<usize>,
    /// … of which the first `heads` bytes are in its buffer and the rest at `payloads`.
    heads: Vec<usize>,
    /// The borrowed rest of each datagram (null, 0 for none), valid only while the [`Queue`]
    /// it came through lives.
    payloads: Vec<(*const u8, usize)>,
    /// Some of `payloads` are set: only a live `Queue` may send them. One that was leaked
    /// (`mem::forget`) never discarded them, so anything else discards them unsent.
    borrowing: bool,
    peers: Vec<Option<SocketAddr>>,
    addrs: Vec<SockaddrStorage>,
    /// One or two per datagram (head, then any payload), in queue order: a message's datagrams
    /// are consecutive iovecs.
    iovs: Vec<libc::iovec>,
    /// One per message (at most one message per datagram).
    hdrs: Vec<libc::mmsghdr>,
    cmsgs: Vec<CmsgBuf>,
    /// Datagrams in each message.
    counts: Vec<usize>,
    queued: usize,
    /// Datagrams of at most this size are coalesced; lowered when a path refuses a size.
    max_segment: usize,
}

// SAFETY: as for RecvBatch: the raw pointers point into storage the batch owns, except the
// payloads, which are only sent while the `Queue` they came through (which borrows the batch
// mutably, and so cannot move to another thread without it) holds the borrow of what they point
// at.
unsafe impl Send for SendBatch {}

impl Default for SendBatch {
    fn default() -> Self {
        Self::new(MAX_DATAGRAM + 64)
    }
}

impl SendBatch {
    pub fn new(buf_len: usize) -> SendBatch {
        // SAFETY: plain C structs; all-zero bytes are valid values.
        let zero_iov: libc::iovec = unsafe { MaybeUninit::zeroed().assume_init() };
        let zero_hdr: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
        SendBatch {
            bufs: (0..SEND_BATCH).map(|_| vec![0u8; buf_len].into_boxed_slice()).collect(),
            lens: vec![0; SEND_BATCH],
            heads: vec![0; SEND_BATCH],
            payloads: vec![(std::ptr::null(), 0); SEND_BATCH],
            borrowing: false,
            peers: vec![None; SEND_BATCH],
            addrs: vec![unspecified(); SEND_BATCH],
            iovs: vec![zero_iov; 2 * SEND_BATCH],
            hdrs: vec![zero_hdr; SEND_BATCH],
            cmsgs: vec![[0; 4]; SEND_BATCH],
            counts: vec![0; SEND_BATCH],
            queued: 0,
            max_segment: INITIAL_MAX_SEGMENT,
        }
    }

    /// Send every datagram on its own (no UDP GSO), e.g. where the kernel lacks it.
    pub fn without_gso(mut self) -> SendBatch {
        self.max_segment = 0;
        self
    }

    pub fn is_full(&self) -> bool {
        self.queued == SEND_BATCH
    }

    /// The buffer the next datagram is written into.
    pub fn next_buf(&mut self) -> &mut [u8] {
        &mut self.bufs[self.queued]
    }

    /// Queue the first `len` bytes of [`SendBatch::next_buf`] for `to`.
    pub fn commit(&mut self, to: SocketAddr, len: usize) {
        let len = len.min(self.bufs[self.queued].len());
        self.push(to, len, (std::ptr::null(), 0));
    }

    /// A queue for datagrams that may borrow their payload for `'p`; whatever it leaves unsent
    /// when dropped is discarded.
    pub fn queue<'p>(&mut self) -> Queue<'_, 'p> {
        if self.borrowing {
            self.discard();
        }
        Queue { batch: self, payloads: PhantomData }
    }

    /// Queue `head` bytes of the next buffer followed by the `payload.1` bytes at `payload.0`.
    fn push(&mut self, to: SocketAddr, head: usize, payload: (*const u8, usize)) {
        let i = self.queued;
        self.heads[i] = head;
        self.payloads[i] = payload;
        self.lens[i] = head + payload.1;
        self.peers[i] = Some(to);
        self.addrs[i] = SockaddrStorage::from(to);
        self.queued += 1;
    }

    /// Forget everything queued, unsent.
    fn discard(&mut self) {
        self.payloads[..self.queued].fill((std::ptr::null(), 0));
        self.queued = 0;
        self.borrowing = false;
    }

    /// Send everything queued. Datagrams the kernel refuses (an unreachable shim, a full
    /// buffer) are dropped, as a switch drops what it cannot deliver; the count sent is returned.
    pub fn flush(&mut self, sock: &UdpSocket) -> usize {
        if self.borrowing {
            // Left by a leaked queue: what they point at may be gone.
            self.discard();
        }
        self.send_queued(sock)
    }

    /// [`SendBatch::flush`], for a caller that vouches for the payloads (a live [`Queue`]).
    fn send_queued(&mut self, sock: &UdpSocket) -> usize {
        let mut sent = 0;
        // `first` = the first datagram not yet sent or dropped.
        let mut first = 0;
        while first < self.queued {
            let messages = self.build_messages(first);
            // SAFETY: headers `0..messages` point at this batch's own addresses, iovecs and
            // control buffers, all alive and not otherwise borrowed during the call; the iovecs
            // point into its buffers, within their lengths, or at payloads that the `Queue` they
            // came through still borrows (a `Queue` discards them before its borrow ends).
            let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), self.hdrs.as_mut_ptr(), messages as libc::c_uint, 0) };
            if n > 0 {
                let n = n as usize;
                let datagrams: usize = self.counts[..n].iter().sum();
                sent += datagrams;
                first += datagrams;
                continue;
            }
            let errno = if n < 0 { io::Error::last_os_error().raw_os_error() } else { None };
            if errno == Some(libc::EINTR) {
                continue;
            }
            if segment_refused(errno, self.counts[0]) {
                // A GSO message refused: its segment size does not fit the path (a shim across
                // a 1500-byte network). Coalesce only what fits any Ethernet path from now on,
                // or nothing, and send the same datagrams again.
                let segment = self.lens[first];
                self.max_segment = after_refusal(segment, self.max_segment);
                tracing::debug!(segment, max_segment = self.max_segment, "UDP GSO refused; coalescing less");
                continue;
            }
            // The first pending message refused: skip its datagrams and carry on with the rest.
            first += self.counts[0];
        }
        self.discard();
        sent
    }

    /// Groups datagrams `first..queued` into messages in `hdrs[0..m]` and returns `m`.
    fn build_messages(&mut self, first: usize) -> usize {
        let mut m = 0;
        let mut i = first;
        // The next free iovec.
        let mut v = 0;
        while i < self.queued {
            let len = self.lens[i];
            let same_peer = (i + 1..self.queued).take_while(|j| self.peers[*j] == self.peers[i]);
            let count = gso_run(len, self.max_segment, same_peer.map(|j| self.lens[j]));
            let first_iov = v;
            for k in i..i + count {
                self.iovs[v] = libc::iovec { iov_base: self.bufs[k].as_mut_ptr().cast(), iov_len: self.heads[k] };
                v += 1;
                let (payload, payload_len) = self.payloads[k];
                if payload_len > 0 {
                    // The kernel only reads through iovecs given to sendmmsg.
                    self.iovs[v] = libc::iovec { iov_base: payload.cast_mut().cast(), iov_len: payload_len };
                    v += 1;
                }
            }
            self.counts[m] = count;
            let hdr = &mut self.hdrs[m];
            hdr.msg_len = 0;
            let h = &mut hdr.msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut SockaddrStorage).cast();
            h.msg_namelen = self.addrs[i].len();
            h.msg_iov = &mut self.iovs[first_iov];
            h.msg_iovlen = v - first_iov;
            h.msg_flags = 0;
            set_gso_control(h, &mut self.cmsgs[m], (count > 1).then_some(len as u16));
            m += 1;
            i += count;
        }
        m
    }
}

/// Datagrams queued on a [`SendBatch`] that may borrow their payload for `'p` (from the
/// receive buffers of the round being forwarded). Flush before the queue goes: dropping it
/// discards what it has not sent, so nothing is sent from a payload after its borrow ended (and
/// should a queue be leaked instead, the batch discards what it left before sending again).
pub struct Queue<'b, 'p> {
    batch: &'b mut SendBatch,
    payloads: PhantomData<&'p [u8]>,
}

impl<'p> Queue<'_, 'p> {
    pub fn is_full(&self) -> bool {
        self.batch.is_full()
    }

    /// The buffer the next datagram (or its headers) is written into.
    pub fn next_buf(&mut self) -> &mut [u8] {
        self.batch.next_buf()
    }

    /// Queue the first `len` bytes of [`Queue::next_buf`] for `to`.
    pub fn commit(&mut self, to: SocketAddr, len: usize) {
        self.batch.commit(to, len);
    }

    /// Queue one datagram for `to`: the first `head_len` bytes of [`Queue::next_buf`] followed
    /// by `payload`, which is sent from where it is.
    pub fn commit_split(&mut self, to: SocketAddr, head_len: usize, payload: &'p [u8]) {
        let head_len = head_len.min(self.batch.bufs[self.batch.queued].len());
        self.batch.push(to, head_len, (payload.as_ptr(), payload.len()));
        self.batch.borrowing = true;
    }

    /// Send everything queued, as [`SendBatch::flush`].
    pub fn flush(&mut self, sock: &UdpSocket) -> usize {
        self.batch.send_queued(sock)
    }
}

impl Drop for Queue<'_, '_> {
    fn drop(&mut self) {
        self.batch.discard();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_round_trips() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let mut out = SendBatch::new(2048);
        for i in 0..5u8 {
            out.next_buf()[..3].copy_from_slice(&[i, i, i]);
            out.commit(b.local_addr().unwrap(), 3);
        }
        assert_eq!(out.flush(&a), 5);
        assert_eq!(receive(&b, 5), (0..5u8).map(|i| (a.local_addr().unwrap(), vec![i, i, i])).collect::<Vec<_>>());
    }

    /// Every datagram of the next `n` that `sock` receives, with its sender.
    fn receive(sock: &UdpSocket, n: usize) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut got = Vec::new();
        let mut rx = RecvBatch::new();
        while got.len() < n {
            let k = rx.recv(sock).unwrap();
            for i in 0..k {
                let (from, datagrams) = rx.get(i).unwrap();
                got.extend(datagrams.map(|d| (from, d.to_vec())));
            }
        }
        got
    }

    /// A batch of 4 × 100 B + a 60 B tail to `b`, 2 × 100 B to `c`, 3000 B + a 100 B tail to `b`,
    /// and 40,000 B to `b` (too big to coalesce): four messages with GSO, ten without, and the
    /// same datagrams arrive either way.
    #[test]
    fn runs_to_one_peer_are_coalesced_and_arrive_as_sent() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (b, c) = (UdpSocket::bind("127.0.0.1:0").unwrap(), UdpSocket::bind("127.0.0.1:0").unwrap());
        for s in [&b, &c] {
            s.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        }
        // `b` takes runs whole (GRO), `c` one datagram at a time: both see the datagrams sent.
        assert!(enable_gro(&b).is_ok());
        let (pb, pc) = (b.local_addr().unwrap(), c.local_addr().unwrap());
        let plan = [
            (pb, 100),
            (pb, 100),
            (pb, 100),
            (pb, 100),
            (pb, 60),
            (pc, 100),
            (pc, 100),
            (pb, 3000),
            (pb, 100),
            (pb, 40_000),
        ];
        for gso in [true, false] {
            let mut out = SendBatch::new(MAX_DATAGRAM);
            if !gso {
                out = out.without_gso();
            }
            for (i, (to, len)) in plan.iter().enumerate() {
                out.next_buf()[..*len].fill(i as u8);
                out.commit(*to, *len);
            }
            assert_eq!(out.build_messages(0), if gso { 4 } else { 10 });
            assert_eq!(out.flush(&a), plan.len());
            let want = |peer| {
                plan.iter()
                    .enumerate()
                    .filter(|(_, (to, _))| *to == peer)
                    .map(|(i, (_, len))| (a.local_addr().unwrap(), vec![i as u8; *len]))
                    .collect::<Vec<_>>()
            };
            assert_eq!(receive(&b, 8), want(pb), "gso {gso}");
            assert_eq!(receive(&c, 2), want(pc), "gso {gso}");
        }
    }

    /// With UDP_GRO, a run sent as one GSO message is one message on receive, split again by
    /// [`RecvBatch::get`].
    #[test]
    fn a_coalesced_run_is_one_message_with_gro() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        assert!(enable_gro(&b).is_ok());
        let mut out = SendBatch::new(2048);
        for i in 0..5u8 {
            out.next_buf()[..100].fill(i);
            out.commit(b.local_addr().unwrap(), if i == 4 { 40 } else { 100 });
        }
        assert_eq!(out.flush(&a), 5);
        let mut rx = RecvBatch::new();
        assert_eq!(rx.recv(&b).unwrap(), 1);
        let (from, datagrams) = rx.get(0).unwrap();
        assert_eq!(from, a.local_addr().unwrap());
        let got: Vec<Vec<u8>> = datagrams.map(<[u8]>::to_vec).collect();
        let want: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; if i == 4 { 40 } else { 100 }]).collect();
        assert_eq!(got, want);
    }

    /// Datagrams in two pieces (headers in the batch, payload borrowed) among whole ones: the
    /// same plan as above, so the same four messages with GSO (a message's iovecs need not
    /// match its segments) and ten without, and every datagram arrives whole, pieces in order.
    #[test]
    fn split_datagrams_are_coalesced_and_arrive_whole() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (b, c) = (UdpSocket::bind("127.0.0.1:0").unwrap(), UdpSocket::bind("127.0.0.1:0").unwrap());
        for s in [&b, &c] {
            s.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        }
        assert!(enable_gro(&b).is_ok());
        let (pb, pc) = (b.local_addr().unwrap(), c.local_addr().unwrap());
        // (peer, head, payload): a payload of 0 is a whole datagram.
        let plan = [
            (pb, 30, 70),
            (pb, 30, 70),
            (pb, 100, 0),
            (pb, 42, 58),
            (pb, 30, 30),
            (pc, 42, 58),
            (pc, 100, 0),
            (pb, 42, 2958),
            (pb, 42, 58),
            (pb, 42, 39_958),
        ];
        // Standing in for the receive buffers the payloads live in.
        let payloads: Vec<Vec<u8>> = (0..plan.len()).map(|i| vec![0x80 | i as u8; plan[i].2]).collect();
        let datagram = |i: usize| {
            let (_, head, payload) = plan[i];
            let mut d = vec![i as u8; head];
            d.extend(std::iter::repeat_n(0x80 | i as u8, payload));
            d
        };
        for gso in [true, false] {
            let mut out = SendBatch::new(MAX_DATAGRAM);
            if !gso {
                out = out.without_gso();
            }
            let mut q = out.queue();
            for (i, (to, head, payload)) in plan.iter().enumerate() {
                q.next_buf()[..*head].fill(i as u8);
                if *payload == 0 {
                    q.commit(*to, *head);
                } else {
                    q.commit_split(*to, *head, &payloads[i]);
                }
            }
            assert_eq!(q.batch.build_messages(0), if gso { 4 } else { 10 });
            assert_eq!(q.flush(&a), plan.len());
            drop(q);
            let want = |peer| {
                (0..plan.len())
                    .filter(|i| plan[*i].0 == peer)
                    .map(|i| (a.local_addr().unwrap(), datagram(i)))
                    .collect::<Vec<_>>()
            };
            assert_eq!(receive(&b, 8), want(pb), "gso {gso}");
            assert_eq!(receive(&c, 2), want(pc), "gso {gso}");
        }
    }

    /// What a queue leaves unsent goes with it: its payloads' borrow ends there.
    #[test]
    fn a_dropped_queue_sends_nothing() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut out = SendBatch::new(2048);
        {
            let payload = vec![1u8; 100];
            let mut q = out.queue();
            q.commit_split(a.local_addr().unwrap(), 10, &payload);
            q.commit(a.local_addr().unwrap(), 10);
        }
        assert_eq!(out.queued, 0);
        assert!(out.payloads.iter().all(|p| p.1 == 0));
        assert_eq!(out.flush(&a), 0);
        // Nor does a leaked one, whose drop never ran: its payloads are discarded unsent.
        let payload = vec![1u8; 100];
        let mut q = out.queue();
        q.commit_split(a.local_addr().unwrap(), 10, &payload);
        std::mem::forget(q);
        drop(payload);
        assert_eq!(out.flush(&a), 0);
        assert_eq!(out.queued, 0);
    }

    /// The fabric's path: a run received as one GRO message, each of its datagrams forwarded with
    /// new headers and its payload straight from the receive buffer, the run coalesced again.
    #[test]
    fn forwarding_from_the_receive_buffer_keeps_runs_whole() {
        let bind = || {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
            s
        };
        let (shim_a, fabric, shim_b) = (bind(), bind(), bind());
        assert!(enable_gro(&fabric).is_ok() && enable_gro(&shim_b).is_ok());
        let lens = [200, 200, 200, 200, 120];
        let mut out = SendBatch::new(2048);
        for (i, len) in lens.iter().enumerate() {
            out.next_buf()[..*len].fill(i as u8);
            out.commit(fabric.local_addr().unwrap(), *len);
        }
        assert_eq!(out.flush(&shim_a), lens.len());

        let mut rx = RecvBatch::new();
        let mut tx = SendBatch::new(2048);
        assert_eq!(rx.recv(&fabric).unwrap(), 1, "one GRO message");
        let mut q = tx.queue();
        let (from, datagrams) = rx.get(0).unwrap();
        assert_eq!(from, shim_a.local_addr().unwrap());
        for d in datagrams {
            // New headers, 12 bytes where the datagram had 8.
            q.next_buf()[..12].fill(0xee);
            q.commit_split(shim_b.local_addr().unwrap(), 12, &d[8..]);
        }
        assert_eq!(q.batch.build_messages(0), 1, "the run leaves as one message");
        assert_eq!(q.flush(&fabric), lens.len());
        drop(q);

        assert_eq!(rx.recv(&shim_b).unwrap(), 1, "and arrives as one");
        let (from, datagrams) = rx.get(0).unwrap();
        assert_eq!(from, fabric.local_addr().unwrap());
        let got: Vec<Vec<u8>> = datagrams.map(<[u8]>::to_vec).collect();
        let want: Vec<Vec<u8>> =
            lens.iter().enumerate().map(|(i, len)| [vec![0xee; 12], vec![i as u8; len - 8]].concat()).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn an_empty_datagram_is_one_datagram() {
        let d = Datagrams { data: &[], segment: 0, first: true };
        assert_eq!(d.collect::<Vec<_>>(), vec![&[] as &[u8]]);
        let d = Datagrams { data: &[1, 2, 3, 4, 5], segment: 2, first: true };
        assert_eq!(d.collect::<Vec<_>>(), vec![&[1, 2][..], &[3, 4], &[5]]);
    }

    /// A path whose MTU is below the segment size refuses the GSO message: the same datagrams
    /// go again one by one (fragmented if need be), and coalescing stops; whole datagrams and
    /// split ones alike.
    #[test]
    fn gso_refused_by_a_small_mtu_falls_back_without_loss() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: needs root (a private network namespace)");
            return;
        }
        std::thread::spawn(|| {
            // This thread alone moves to a new, empty namespace, which dies with it.
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let up = std::process::Command::new("ip").args(["link", "set", "lo", "up", "mtu", "1200"]).status();
            assert!(up.unwrap().success());
            let a = UdpSocket::bind("127.0.0.1:0").unwrap();
            let b = UdpSocket::bind("127.0.0.1:0").unwrap();
            b.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
            let mut out = SendBatch::new(2048);
            for _ in 0..4 {
                out.next_buf()[..1300].fill(7);
                out.commit(b.local_addr().unwrap(), 1300);
            }
            assert_eq!(out.flush(&a), 4);
            assert_eq!(out.max_segment, 0, "1300-byte segments do not fit; nothing smaller is tried");
            assert_eq!(receive(&b, 4).len(), 4);
            // The same with the payloads borrowed: each datagram goes again as its two iovecs.
            let mut out = SendBatch::new(2048);
            let payload = vec![9u8; 1258];
            let mut q = out.queue();
            for _ in 0..4 {
                q.next_buf()[..42].fill(7);
                q.commit_split(b.local_addr().unwrap(), 42, &payload);
            }
            assert_eq!(q.flush(&a), 4);
            drop(q);
            assert_eq!(out.max_segment, 0);
            let want = [vec![7u8; 42], payload.clone()].concat();
            assert_eq!(receive(&b, 4), vec![(a.local_addr().unwrap(), want); 4]);
        })
        .join()
        .unwrap();
    }
}
