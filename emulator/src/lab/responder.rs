//! The lab's built-in servers, so a topology needs no external program: `tcp` writes one line
//! `enifab <name> <local address> from <client address>` and closes, `udp` echoes each datagram
//! prefixed with the name, `http` answers every request with `200 OK` and the body
//! `<name> <local address> from <client address>`. Saying whom they saw makes address
//! translation visible in a check: a masqueraded client shows as its node, a client of a layer-4
//! CLB as itself. Run as `enifab lab responder` (a hidden subcommand) in a child process that
//! enters the pod's or node's namespace before it binds anything. Each server answers on both
//! families: one socket on `0.0.0.0`, one IPv6-only on `[::]` (see [`bind_both`]).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;

use anyhow::{Context, Result};
use nix::sched::{CloneFlags, setns};
use socket2::{Domain, Socket, Type};

/// Serve forever inside `netns` (a path). Each listener gets its own thread.
pub fn run(netns: &Path, name: &str, tcp: &[u16], udp: &[u16], http: &[u16]) -> Result<()> {
    let file = std::fs::File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
    // The main thread enters the namespace before any other thread exists, so every thread and
    // socket of this process lives there.
    setns(&file, CloneFlags::CLONE_NEWNET).context("entering the namespace")?;
    let mut threads = Vec::new();
    for &port in tcp {
        for l in bind_both(port, Type::STREAM).with_context(|| format!("tcp {port}"))? {
            let (l, name) = (TcpListener::from(l), name.to_string());
            threads.push(std::thread::spawn(move || {
                for mut conn in l.incoming().flatten() {
                    let (local, peer) = ends(&conn);
                    let _ = writeln!(conn, "enifab {name} {local} from {peer}");
                }
            }));
        }
    }
    for &port in http {
        for l in bind_both(port, Type::STREAM).with_context(|| format!("http {port}"))? {
            let (l, name) = (TcpListener::from(l), name.to_string());
            threads.push(std::thread::spawn(move || {
                for conn in l.incoming().flatten() {
                    let name = name.clone();
                    std::thread::spawn(move || serve_http(conn, &name));
                }
            }));
        }
    }
    for &port in udp {
        for s in bind_both(port, Type::DGRAM).with_context(|| format!("udp {port}"))? {
            let (s, name) = (UdpSocket::from(s), name.to_string());
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok((n, from)) = s.recv_from(&mut buf) {
                    let mut reply = format!("enifab {name}: ").into_bytes();
                    reply.extend_from_slice(&buf[..n]);
                    let _ = s.send_to(&reply, from);
                }
            }));
        }
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// One HTTP exchange: read the request head (at most 16 KiB, 5 s), answer 200 with the body
/// `<name> <local address> from <client address>`, close.
fn serve_http(mut conn: TcpStream, name: &str) {
    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let (local, peer) = ends(&conn);
    let body = format!("{name} {local} from {peer}\n");
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Sockets bound to `port` on every address of both families: `0.0.0.0`, and `[::]` made
/// IPv6-only, so the IPv4 socket stays as it was and its clients keep their plain addresses (a
/// dual-stack socket would see them as `::ffff:a.b.c.d`, and answers name whom they saw). A
/// kernel without IPv6 gets the IPv4 one alone; a namespace whose IPv6 is merely switched off
/// still binds `[::]`, which then never receives anything.
fn bind_both(port: u16, ty: Type) -> Result<Vec<Socket>> {
    let mut out = Vec::new();
    for ip in [IpAddr::from(Ipv4Addr::UNSPECIFIED), IpAddr::from(Ipv6Addr::UNSPECIFIED)] {
        let at = SocketAddr::new(ip, port);
        let s = match Socket::new(Domain::for_address(at), ty, None) {
            Ok(s) => s,
            Err(e) if ip.is_ipv6() && e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                eprintln!("no IPv6 in this kernel: port {port} answers IPv4 only");
                continue;
            }
            Err(e) => return Err(e).context("a socket"),
        };
        if ip.is_ipv6() {
            s.set_only_v6(true).context("IPV6_V6ONLY")?;
        }
        // As std's listeners do: a restarted responder binds again at once.
        if ty == Type::STREAM {
            s.set_reuse_address(true).context("SO_REUSEADDR")?;
        }
        s.bind(&at.into()).with_context(|| format!("binding {at}"))?;
        if ty == Type::STREAM {
            s.listen(1024).context("listen")?;
        }
        out.push(s);
    }
    Ok(out)
}

/// The connection's local and peer addresses (without ports).
fn ends(conn: &TcpStream) -> (String, String) {
    let ip = |a: std::io::Result<SocketAddr>| a.map(|a| a.ip().to_string()).unwrap_or_default();
    (ip(conn.local_addr()), ip(conn.peer_addr()))
}

/// What a responder's answer says: its name, the address it was reached at, and the client's
/// address it saw. `None` for other text (a UDP echo, another program).
pub fn parse_answer(text: &str) -> Option<(&str, &str, &str)> {
    let text = text.trim().strip_prefix("enifab ").unwrap_or(text.trim());
    match text.split_whitespace().collect::<Vec<_>>()[..] {
        [name, local, "from", peer] => Some((name, local, peer)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_answer;

    #[test]
    fn answers_name_the_server_and_the_client_it_saw() {
        assert_eq!(
            parse_answer("enifab nginx 10.0.4.30 from 47.100.1.10\n"),
            Some(("nginx", "10.0.4.30", "47.100.1.10"))
        );
        assert_eq!(parse_answer("nginx 10.0.4.30 from 10.0.4.20"), Some(("nginx", "10.0.4.30", "10.0.4.20")));
        assert_eq!(parse_answer("enifab nginx: hello"), None);
    }
}
