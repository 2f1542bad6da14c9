//! `enifab lab connect-rate` (hidden; for `bench/slb.sh`): how many short TCP connections per
//! second a namespace completes to an address. Each of `threads` threads, inside the namespace,
//! connects, reads until the server closes (the lab's `tcp` responder writes one line and
//! closes), closes, and starts again, for `secs` seconds; the count of completed connections
//! over the elapsed time is printed as `connections/s <n> completed <c> failed <m> connect-us
//! <median>`, the last the median time `connect` took (the handshake's round trip through
//! whatever carries it).
//!
//! The client closes after the server with a reset (`SO_LINGER` 0), so neither side keeps the
//! connection in TIME_WAIT: the same client ports are soon used again, to the backend directly
//! and through a VIP, and a backend holding a TIME_WAIT for a port would refuse the new SYN
//! whose timestamps (offset per destination address) look older — a real NAT artifact, but not
//! what this counts.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sched::{CloneFlags, setns};

/// Connect times kept per thread.
const SAMPLE: usize = 100_000;

/// Completed and failed connections over the run, and its length.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub completed: u64,
    pub failed: u64,
    pub elapsed: Duration,
    /// The median time a successful `connect` took.
    pub connect_median: Duration,
}

impl Rate {
    pub fn per_sec(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs the loop from inside `netns` (a path) against `to`.
pub fn run(netns: &Path, to: SocketAddr, secs: u64, threads: usize) -> Result<Rate> {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    let start = Instant::now();
    for _ in 0..threads.max(1) {
        let ns = std::fs::File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
        let (done, failed, stop) = (done.clone(), failed.clone(), stop.clone());
        handles.push(std::thread::spawn(move || -> Result<Vec<Duration>> {
            // A thread of its own enters the namespace; sockets it opens live there.
            setns(&ns, CloneFlags::CLONE_NEWNET).context("entering the namespace")?;
            let mut buf = [0u8; 256];
            // Connect times, a bounded sample (the first ones; enough for a median).
            let mut times = Vec::with_capacity(SAMPLE);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
                    Ok(mut s) => {
                        if times.len() < SAMPLE {
                            times.push(t.elapsed());
                        }
                        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                        let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                        let ok = loop {
                            match s.read(&mut buf) {
                                Ok(0) => break true,
                                Ok(_) => {}
                                Err(_) => break false,
                            }
                        };
                        if ok { &done } else { &failed }.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok(times)
        }));
    }
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    let mut times = Vec::new();
    for h in handles {
        times.extend(h.join().map_err(|_| anyhow::anyhow!("a connecting thread panicked"))??);
    }
    times.sort();
    let connect_median = times.get(times.len() / 2).copied().unwrap_or_default();
    Ok(Rate {
        completed: done.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        elapsed,
        connect_median,
    })
}
