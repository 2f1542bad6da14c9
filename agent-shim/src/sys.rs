//! The shim's raw syscalls, and the only `unsafe` code of the crate: TAP ioctls (`TUNSETIFF`,
//! `TUNSETVNETHDRSZ`, `TUNSETOFFLOAD`), scatter/gather I/O on TAP fds, `recvmmsg`/`sendmmsg` on
//! the Geneve socket (with UDP GSO on send and UDP GRO on receive), `poll` and `eventfd`.
//!
//! Each wrapper is small, takes Rust types in, returns `io::Result`, and never keeps a raw
//! pointer past the call, except [`MmsgBatch`], which owns both the buffers and the headers that
//! point into them. Policy (which device, which frame) lives elsewhere: nothing here knows about
//! ENIs or VLANs. Kernel behaviour followed: `Documentation/networking/tuntap.rst` and
//! `drivers/net/tun.c` (vnet header before every frame once `IFF_VNET_HDR` is set; the device
//! lives in the network namespace of the thread that *opened* `/dev/net/tun`). The UDP GSO/GRO
//! rules and control messages are [`enifab_udp`]'s, the same the emulator's fabric socket uses.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

pub use enifab_udp::enable_gro;
use enifab_udp::{CmsgBuf, INITIAL_MAX_SEGMENT, after_refusal, gro_segment, gso_run, segment_refused, set_gso_control};
use nix::sys::socket::{SockaddrLike, SockaddrStorage};
use std::time::Duration;

/// Largest interface name the kernel takes, without the NUL.
pub const IFNAMSIZ_MAX: usize = libc::IFNAMSIZ - 1;

/// Opens `/dev/net/tun` and creates a new TAP named `name` with `IFF_VNET_HDR` and a 10-byte
/// header, offloads on (partial checksums, TSO for IPv4/IPv6, ECN). The device is created in the
/// network namespace of the calling thread, down, and vanishes when the returned fd is closed.
/// A name already in use fails with `EBUSY`.
pub fn open_tap(name: &str) -> io::Result<OwnedFd> {
    if name.is_empty() || name.len() > IFNAMSIZ_MAX || name.as_bytes().contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"));
    }
    let path = c"/dev/net/tun";
    // SAFETY: `path` is a valid NUL-terminated string; `open` has no other preconditions.
    let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a freshly opened descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };

    // SAFETY: `ifreq` is plain old data; all-zero is a valid value (empty name, no flags).
    let mut ifr: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    // IFF_TUN_EXCL: fail with EBUSY if any device has this name, rather than attaching to an
    // existing (persistent) TAP someone else made.
    let flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_TUN_EXCL;
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `ifr` is, for the duration of
    // the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr as *mut libc::ifreq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let hdr_len: libc::c_int = enifab_net::wire::vnet::LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ copies one `int` from the pointer, which points at `hdr_len`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len as *const libc::c_int) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
    // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long of TUN_F_* bits); no
    // memory is passed.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, offloads as libc::c_ulong) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// The name the kernel gave the TAP behind `fd` (`TUNGETIFF`).
pub fn tap_name(fd: BorrowedFd<'_>) -> io::Result<String> {
    // SAFETY: all-zero is a valid `ifreq`.
    let mut ifr: libc::ifreq = unsafe { mem::zeroed() };
    // SAFETY: TUNGETIFF writes one `struct ifreq` into `ifr`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETIFF, &mut ifr as *mut libc::ifreq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let bytes: Vec<u8> = ifr.ifr_name.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
    String::from_utf8(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "non-UTF-8 interface name"))
}

/// `readv` into two buffers: the vnet header, then the frame. Returns the bytes read in all.
pub fn read2(fd: RawFd, a: &mut [u8], b: &mut [u8]) -> io::Result<usize> {
    let iov = [
        libc::iovec { iov_base: a.as_mut_ptr().cast(), iov_len: a.len() },
        libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() },
    ];
    // SAFETY: both iovecs describe live, exclusively borrowed buffers of the given lengths.
    let n = unsafe { libc::readv(fd, iov.as_ptr(), 2) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// `writev` of two buffers: the vnet header, then the frame.
pub fn write2(fd: RawFd, a: &[u8], b: &[u8]) -> io::Result<usize> {
    let iov = [
        libc::iovec { iov_base: a.as_ptr() as *mut libc::c_void, iov_len: a.len() },
        libc::iovec { iov_base: b.as_ptr() as *mut libc::c_void, iov_len: b.len() },
    ];
    // SAFETY: both iovecs describe live buffers of the given lengths; `writev` only reads them.
    let n = unsafe { libc::writev(fd, iov.as_ptr(), 2) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// `poll(2)` on `fds` for at most `timeout`; returns how many have events.
pub fn poll(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<usize> {
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `fds` is a live, exclusively borrowed array of `fds.len()` pollfd structs.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// A non-blocking `eventfd`, used to wake a thread sleeping in `poll`.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes no pointers.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(raw) }))
    }

    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64. A full counter (EAGAIN) still leaves it readable,
        // which is all a wake-up needs, so the result is ignored.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; EAGAIN (nothing pending) is fine.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

/// A socket address in the kernel's layout, for `msg_name`.
#[derive(Clone, Copy)]
pub struct RawSockAddr(SockaddrStorage);

impl std::fmt::Debug for RawSockAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_std())
    }
}

impl RawSockAddr {
    pub fn from_std(addr: SocketAddr) -> RawSockAddr {
        RawSockAddr(SockaddrStorage::from(addr))
    }

    /// `None` for families other than IPv4/IPv6.
    pub fn to_std(self) -> Option<SocketAddr> {
        enifab_udp::to_std(&self.0)
    }
}

/// A batch of datagram slots for `recvmmsg`/`sendmmsg`: `slots` buffers of `slot_len` bytes,
/// each with its own address storage and one iovec. Built once per I/O thread and reused, so the
/// hot path allocates nothing. Not `Send` (it holds pointers into itself), which is why each
/// relay thread builds its own.
pub struct MmsgBatch {
    bufs: Vec<u8>,
    slot_len: usize,
    names: Vec<SockaddrStorage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// One `UDP_SEGMENT` control message per outgoing message, or room for the `UDP_GRO` one of
    /// a received message (u64s for cmsghdr alignment).
    cmsgs: Vec<CmsgBuf>,
    /// Datagrams in each outgoing message.
    counts: Vec<usize>,
}

/// Which datagrams [`MmsgBatch::send`] may coalesce with UDP GSO: those of at most `max_segment`
/// bytes. Lowered when the kernel refuses a size (a path MTU below it), 0 = never.
#[derive(Debug, Clone, Copy)]
pub struct Gso {
    pub max_segment: usize,
}

impl Default for Gso {
    fn default() -> Self {
        Gso { max_segment: INITIAL_MAX_SEGMENT }
    }
}

/// What one [`MmsgBatch::send`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    pub datagrams: usize,
    pub dropped: usize,
}

impl MmsgBatch {
    pub fn new(slots: usize, slot_len: usize) -> MmsgBatch {
        let mut b = MmsgBatch {
            bufs: vec![0u8; slots * slot_len],
            slot_len,
            names: vec![enifab_udp::unspecified(); slots],
            iovs: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; slots],
            // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths); every pointer
            // is set below before any syscall sees it.
            hdrs: (0..slots).map(|_| unsafe { mem::zeroed::<libc::mmsghdr>() }).collect(),
            cmsgs: vec![[0; 4]; slots],
            counts: vec![0; slots],
        };
        for i in 0..slots {
            b.reset_slot(i);
        }
        b
    }

    pub fn slots(&self) -> usize {
        self.hdrs.len()
    }

    /// Buffer of slot `i`.
    pub fn buf_mut(&mut self, i: usize) -> &mut [u8] {
        let l = self.slot_len;
        &mut self.bufs[i * l..(i + 1) * l]
    }

    /// Points slot `i` at its whole buffer and its address storage (for receiving).
    fn reset_slot(&mut self, i: usize) {
        let l = self.slot_len;
        self.iovs[i] = libc::iovec { iov_base: self.bufs[i * l..].as_mut_ptr().cast(), iov_len: l };
        let h = &mut self.hdrs[i];
        h.msg_hdr.msg_name = (&mut self.names[i] as *mut SockaddrStorage).cast();
        h.msg_hdr.msg_namelen = mem::size_of::<SockaddrStorage>() as libc::socklen_t;
        h.msg_hdr.msg_iov = &mut self.iovs[i];
        h.msg_hdr.msg_iovlen = 1;
        // Room for a UDP_GRO control message on receive.
        h.msg_hdr.msg_control = self.cmsgs[i].as_mut_ptr().cast();
        h.msg_hdr.msg_controllen = mem::size_of::<CmsgBuf>();
        h.msg_hdr.msg_flags = 0;
        h.msg_len = 0;
    }

    /// Receives up to `slots()` messages: blocks (up to the socket's read timeout) for the first,
    /// then takes what is already queued (`MSG_WAITFORONE`). Returns how many arrived; slot `i`
    /// then holds [`MmsgBatch::received`]`(i)`. On a socket with [`enable_gro`], a message may be
    /// a run of datagrams of [`MmsgBatch::segment`]`(i)` bytes each (the last possibly shorter).
    pub fn recv(&mut self, sock: RawFd) -> io::Result<usize> {
        for i in 0..self.slots() {
            self.reset_slot(i);
        }
        // SAFETY: every header points at this batch's own iovec, buffer, name storage and control
        // buffer, which live as long as `self` and are not otherwise borrowed during the call.
        let n = unsafe {
            libc::recvmmsg(
                sock,
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
    }

    /// Slot `i` after [`MmsgBatch::recv`]: the sender and the datagram (mutable, so that a VLAN
    /// tag can be popped in place). `MSG_TRUNC` datagrams report `None` as sender.
    pub fn received(&mut self, i: usize) -> (Option<SocketAddr>, &mut [u8]) {
        let h = &self.hdrs[i];
        let len = (h.msg_len as usize).min(self.slot_len);
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let from = if truncated { None } else { enifab_udp::to_std(&self.names[i]) };
        let l = self.slot_len;
        (from, &mut self.bufs[i * l..i * l + len])
    }

    /// The segment size of message `i` after [`MmsgBatch::recv`] when the kernel delivered a run
    /// of datagrams as one (`UDP_GRO`), else `None`.
    pub fn segment(&self, i: usize) -> Option<usize> {
        gro_segment(&self.hdrs[i].msg_hdr)
    }

    /// Sets slot `i` up to send `buf[start..end]` of its own buffer to `to`.
    pub fn set_send(&mut self, i: usize, start: usize, end: usize, to: &RawSockAddr) {
        let l = self.slot_len;
        let end = end.min(l);
        let start = start.min(end);
        self.names[i] = to.0;
        self.iovs[i] = libc::iovec { iov_base: self.bufs[i * l + start..].as_mut_ptr().cast(), iov_len: end - start };
    }

    /// Sends slots `0..n` (set up with [`MmsgBatch::set_send`], all to one address) with as few
    /// `sendmmsg` calls as the kernel allows. Runs of datagrams of one size (the last of a run may
    /// be shorter) go as one UDP GSO message (`UDP_SEGMENT`): one pass through the IP output
    /// path for up to 64 datagrams, which the receiving kernel splits back into the original
    /// datagrams before any socket sees them. A run whose segment size the path refuses goes
    /// again with less coalescing ([`enifab_udp::after_refusal`]); datagrams the kernel refuses
    /// for themselves are counted as dropped.
    pub fn send(&mut self, sock: RawFd, n: usize, gso: &mut Gso) -> Sent {
        let n = n.min(self.slots());
        let mut sent = Sent::default();
        // `first` = the first slot not yet sent or dropped.
        let mut first = 0;
        while first < n {
            let messages = self.build_messages(first, n, gso);
            // SAFETY: headers `0..messages` point at this batch's own names, iovecs and control
            // buffers (set by `build_messages`), all alive and unborrowed for the call.
            let r = unsafe { libc::sendmmsg(sock, self.hdrs.as_mut_ptr(), messages as libc::c_uint, 0) };
            if r > 0 {
                let datagrams: usize = self.counts[..r as usize].iter().sum();
                sent.datagrams += datagrams;
                first += datagrams;
                continue;
            }
            let errno = if r < 0 { io::Error::last_os_error().raw_os_error() } else { None };
            if errno == Some(libc::EINTR) {
                continue;
            }
            if segment_refused(errno, self.counts[0]) {
                // A fabric across a 1500-byte network (loopback never refuses): coalesce only
                // what fits any Ethernet path from now on, or nothing, and send the same
                // datagrams again.
                gso.max_segment = after_refusal(self.iovs[first].iov_len, gso.max_segment);
                continue;
            }
            // The first pending message refused for itself: skip it and carry on.
            sent.dropped += self.counts[0];
            first += self.counts[0];
        }
        sent
    }

    /// Groups slots `first..n` into messages in `hdrs[0..m]` and returns `m`.
    fn build_messages(&mut self, first: usize, n: usize, gso: &Gso) -> usize {
        let mut m = 0;
        let mut i = first;
        while i < n {
            let len = self.iovs[i].iov_len;
            let count = gso_run(len, gso.max_segment, self.iovs[i + 1..n].iter().map(|v| v.iov_len));
            self.counts[m] = count;
            let h = &mut self.hdrs[m];
            h.msg_hdr.msg_name = (&mut self.names[i] as *mut SockaddrStorage).cast();
            h.msg_hdr.msg_namelen = self.names[i].len();
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = count;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
            set_gso_control(&mut h.msg_hdr, &mut self.cmsgs[m], (count > 1).then_some(len as u16));
            m += 1;
            i += count;
        }
        m
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn sockaddr_round_trip() {
        for a in ["127.0.0.1:6081", "[::1]:9", "10.1.2.3:65535"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(RawSockAddr::from_std(a).to_std(), Some(a));
        }
    }

    #[test]
    fn eventfd_wakes_poll() {
        let e = EventFd::new().unwrap();
        let mut fds = [libc::pollfd { fd: e.raw(), events: libc::POLLIN, revents: 0 }];
        assert_eq!(poll(&mut fds, Duration::ZERO).unwrap(), 0);
        e.wake();
        assert_eq!(poll(&mut fds, Duration::ZERO).unwrap(), 1);
        e.drain();
        fds[0].revents = 0;
        assert_eq!(poll(&mut fds, Duration::ZERO).unwrap(), 0);
    }

    #[test]
    fn mmsg_loopback_with_gso_keeps_datagram_boundaries() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let to = RawSockAddr::from_std(b.local_addr().unwrap());
        // Three runs: 5 × 100 B + a 60 B tail, one 3000 B, then 2 × 100 B.
        let lens = [100, 100, 100, 100, 100, 60, 3000, 100, 100];
        let mut tx = MmsgBatch::new(16, 4096);
        for (i, len) in lens.iter().enumerate() {
            tx.buf_mut(i)[8..8 + len].fill(i as u8);
            tx.set_send(i, 8, 8 + len, &to);
        }
        let mut gso = Gso::default();
        assert_eq!(tx.build_messages(0, lens.len(), &gso), 3, "coalesced into three messages");
        let sent = tx.send(a.as_raw_fd(), lens.len(), &mut gso);
        assert_eq!(sent, Sent { datagrams: lens.len(), dropped: 0 });
        let mut rx = MmsgBatch::new(16, 4096);
        let mut got = Vec::new();
        while got.len() < lens.len() {
            let n = rx.recv(b.as_raw_fd()).unwrap();
            for i in 0..n {
                let (from, d) = rx.received(i);
                assert_eq!(from, Some(a.local_addr().unwrap()));
                got.push(d.to_vec());
            }
        }
        for (i, (d, len)) in got.iter().zip(lens).enumerate() {
            assert_eq!(d, &vec![i as u8; len], "datagram {i} intact and in order");
        }
    }

    /// A path whose MTU is below the segment size refuses the GSO send: that batch is lost
    /// (counted), coalescing stops, and the next datagrams go one by one (fragmented if need be).
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
            let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let to = RawSockAddr::from_std(b.local_addr().unwrap());
            let mut tx = MmsgBatch::new(4, 2048);
            let mut gso = Gso::default();
            for i in 0..4 {
                tx.set_send(i, 0, 1300, &to);
            }
            // The run is refused as one message, then goes again datagram by datagram: no loss.
            assert_eq!(tx.send(a.as_raw_fd(), 4, &mut gso), Sent { datagrams: 4, dropped: 0 });
            assert_eq!(gso.max_segment, 0, "1300-byte segments do not fit; nothing smaller is tried");
            assert_eq!(tx.send(a.as_raw_fd(), 4, &mut gso), Sent { datagrams: 4, dropped: 0 });
            let mut buf = [0u8; 2048];
            for _ in 0..8 {
                assert_eq!(b.recv(&mut buf).unwrap(), 1300);
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn without_gso_every_datagram_is_its_own_message() {
        let to = RawSockAddr::from_std("127.0.0.1:9".parse().unwrap());
        let mut tx = MmsgBatch::new(4, 256);
        for i in 0..4 {
            tx.set_send(i, 0, 50, &to);
        }
        assert_eq!(tx.build_messages(0, 4, &Gso { max_segment: 0 }), 4);
        assert_eq!(tx.build_messages(0, 4, &Gso { max_segment: 49 }), 4);
        assert_eq!(tx.build_messages(0, 4, &Gso { max_segment: 50 }), 1);
    }
}
