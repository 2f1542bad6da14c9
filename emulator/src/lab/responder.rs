//! The lab's built-in servers, so a topology needs no external program: `tcp` writes one line
//! naming the host and closes, `udp` echoes each datagram prefixed with the name, `http` answers
//! every request with `200 OK` and the name. Run as `enifab lab responder` (a hidden subcommand)
//! in a child process that enters the pod's or node's namespace before it binds anything.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::Path;

use anyhow::{Context, Result};
use nix::sched::{CloneFlags, setns};

/// Serve forever inside `netns` (a path). Each listener gets its own thread.
pub fn run(netns: &Path, name: &str, tcp: &[u16], udp: &[u16], http: &[u16]) -> Result<()> {
    let file = std::fs::File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
    // The main thread enters the namespace before any other thread exists, so every thread and
    // socket of this process lives there.
    setns(&file, CloneFlags::CLONE_NEWNET).context("entering the namespace")?;
    let mut threads = Vec::new();
    for &port in tcp {
        let l = TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("tcp {port}"))?;
        let name = name.to_string();
        threads.push(std::thread::spawn(move || {
            for mut conn in l.incoming().flatten() {
                let local = conn.local_addr().map(|a| a.ip().to_string()).unwrap_or_default();
                let _ = writeln!(conn, "enifab {name} {local}");
            }
        }));
    }
    for &port in http {
        let l = TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("http {port}"))?;
        let name = name.to_string();
        threads.push(std::thread::spawn(move || {
            for mut conn in l.incoming().flatten() {
                let name = name.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let body = format!("{name}\n");
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        }));
    }
    for &port in udp {
        let s = UdpSocket::bind(("0.0.0.0", port)).with_context(|| format!("udp {port}"))?;
        let name = name.to_string();
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                let mut reply = format!("enifab {name}: ").into_bytes();
                reply.extend_from_slice(&buf[..n]);
                let _ = s.send_to(&reply, from);
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}
