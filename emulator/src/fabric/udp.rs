//! Batched UDP: `recvmmsg` and `sendmmsg` over a std `UdpSocket`.
//!
//! One system call moves up to [`BATCH`] datagrams each way. That is what keeps the fabric's
//! per-frame cost low for small packets, where the syscall, not the copy, dominates. The
//! buffers are allocated once, at the largest datagram a Geneve super-frame can make, and
//! reused; nothing on this path allocates.
//!
//! This is the one module of the emulator with `unsafe`: the two syscalls and the C structures
//! they fill. Each block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// The largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;

/// Receive buffers for one batch.
pub struct RecvBatch {
    bufs: Vec<Box<[u8]>>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside `iovs`/`hdrs` only ever point into `bufs`/`addrs`, which the
// batch owns and never reallocates; moving the batch to another thread moves its owners too.
unsafe impl Send for RecvBatch {}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> RecvBatch {
        let bufs: Vec<Box<[u8]>> = (0..BATCH).map(|_| vec![0u8; MAX_DATAGRAM].into_boxed_slice()).collect();
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which all-zero
        // bytes are a valid value.
        let zero_addr: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
        let zero_iov: libc::iovec = unsafe { MaybeUninit::zeroed().assume_init() };
        let zero_hdr: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
        RecvBatch { bufs, addrs: vec![zero_addr; BATCH], iovs: vec![zero_iov; BATCH], hdrs: vec![zero_hdr; BATCH] }
    }

    /// Wait for at least one datagram (up to the socket's read timeout), take up to [`BATCH`].
    /// Returns how many arrived; read each with [`RecvBatch::get`].
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        for i in 0..BATCH {
            self.iovs[i] = libc::iovec { iov_base: self.bufs[i].as_mut_ptr().cast(), iov_len: self.bufs[i].len() };
            let hdr = &mut self.hdrs[i].msg_hdr;
            hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &mut self.iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at a live iovec and sockaddr_storage owned by `self`, each
        // iovec at a live buffer of the stated length; the kernel writes only within those.
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

    /// Datagram `i` of the last [`RecvBatch::recv`]: its sender and bytes.
    pub fn get(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        let len = self.hdrs[i].msg_len as usize;
        let from = from_storage(&self.addrs[i])?;
        Some((from, &self.bufs[i][..len.min(self.bufs[i].len())]))
    }
}

/// Outgoing datagrams of one batch, queued then sent with one `sendmmsg`.
pub struct SendBatch {
    bufs: Vec<Box<[u8]>>,
    lens: Vec<usize>,
    addrs: Vec<libc::sockaddr_storage>,
    addr_lens: Vec<libc::socklen_t>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    queued: usize,
}

// SAFETY: as for RecvBatch: the raw pointers only point into storage the batch owns.
unsafe impl Send for SendBatch {}

impl Default for SendBatch {
    fn default() -> Self {
        Self::new(MAX_DATAGRAM + 64)
    }
}

impl SendBatch {
    pub fn new(buf_len: usize) -> SendBatch {
        // SAFETY: plain C structs; all-zero bytes are valid values.
        let zero_addr: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
        let zero_iov: libc::iovec = unsafe { MaybeUninit::zeroed().assume_init() };
        let zero_hdr: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
        SendBatch {
            bufs: (0..BATCH).map(|_| vec![0u8; buf_len].into_boxed_slice()).collect(),
            lens: vec![0; BATCH],
            addrs: vec![zero_addr; BATCH],
            addr_lens: vec![0; BATCH],
            iovs: vec![zero_iov; BATCH],
            hdrs: vec![zero_hdr; BATCH],
            queued: 0,
        }
    }

    pub fn is_full(&self) -> bool {
        self.queued == BATCH
    }

    /// The buffer the next datagram is written into.
    pub fn next_buf(&mut self) -> &mut [u8] {
        &mut self.bufs[self.queued]
    }

    /// Queue the first `len` bytes of [`SendBatch::next_buf`] for `to`.
    pub fn commit(&mut self, to: SocketAddr, len: usize) {
        let i = self.queued;
        self.lens[i] = len;
        self.addr_lens[i] = to_storage(to, &mut self.addrs[i]);
        self.queued += 1;
    }

    /// Send everything queued. Datagrams the kernel refuses (an unreachable shim, a full
    /// buffer) are dropped, as a switch drops what it cannot deliver; the count sent is returned.
    pub fn flush(&mut self, sock: &UdpSocket) -> usize {
        let mut sent = 0;
        while sent < self.queued {
            for i in sent..self.queued {
                self.iovs[i] = libc::iovec { iov_base: self.bufs[i].as_mut_ptr().cast(), iov_len: self.lens[i] };
                let hdr = &mut self.hdrs[i].msg_hdr;
                hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
                hdr.msg_namelen = self.addr_lens[i];
                hdr.msg_iov = &mut self.iovs[i];
                hdr.msg_iovlen = 1;
                hdr.msg_control = std::ptr::null_mut();
                hdr.msg_controllen = 0;
                hdr.msg_flags = 0;
            }
            // SAFETY: headers `sent..queued` point at live iovecs, addresses and buffers owned by
            // `self`, with lengths within the buffers.
            let n = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    self.hdrs[sent..].as_mut_ptr(),
                    (self.queued - sent) as libc::c_uint,
                    0,
                )
            };
            if n <= 0 {
                // Skip the datagram that failed and carry on with the rest.
                sent += 1;
            } else {
                sent += n as usize;
            }
        }
        let done = self.queued;
        self.queued = 0;
        done
    }
}

fn to_storage(addr: SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the kernel wrote a sockaddr_in here.
            let sin: &libc::sockaddr_in = unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the kernel wrote a sockaddr_in6 here.
            let sin6: &libc::sockaddr_in6 = unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Ask for big socket buffers: a burst of super-frames must not overflow them. As root the
/// `*FORCE` variants pass the system limits; otherwise the plain ones are capped, which is fine.
pub fn set_buffers(sock: &UdpSocket, bytes: usize) {
    let fd = sock.as_raw_fd();
    let v = bytes as libc::c_int;
    for (force, plain) in [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)] {
        // SAFETY: setsockopt reads exactly size_of::<c_int>() bytes from a live c_int.
        let ok = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                force,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if ok != 0 {
            // SAFETY: as above.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    plain,
                    (&v as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
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
        let mut got = Vec::new();
        let mut rx = RecvBatch::new();
        while got.len() < 5 {
            let n = rx.recv(&b).unwrap();
            for i in 0..n {
                let (from, data) = rx.get(i).unwrap();
                assert_eq!(from, a.local_addr().unwrap());
                got.push(data.to_vec());
            }
        }
        assert_eq!(got, (0..5u8).map(|i| vec![i, i, i]).collect::<Vec<_>>());
    }
}
