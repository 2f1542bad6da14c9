//! `enifab lab check --html FILE`: the check table and the topology as one self-contained HTML
//! file (the page's stylesheet and script inlined, the data embedded), for a CI artifact or a
//! mail. The topology and the counters are read from the emulator's `/ui/api/` endpoints at the
//! end of the check, so the report shows what the page would have shown then.
//!
//! Must not: need anything beyond the API port; it speaks plain HTTP/1.1 to it (with the
//! process's AccessKey as Basic credentials when one is configured, for the gate in front of
//! `/ui/`). An `https://` endpoint is refused with a clear message.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::lab::check::CheckRow;

/// The rows as the page's report table reads them.
pub fn rows_json(rows: &[CheckRow]) -> serde_json::Value {
    serde_json::Value::Array(
        rows.iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name, "scenario": r.scenario, "what": r.what, "path": r.path,
                    "expected": r.expected, "got": r.got, "passed": r.passed, "detail": r.detail,
                    "answered": r.answered,
                })
            })
            .collect(),
    )
}

/// Write the report of `rows` (checks of `topology_file`) with the emulator at `endpoint`'s
/// topology and counters to `out`.
pub async fn write(endpoint: &str, topology_file: &Path, rows: &[CheckRow], out: &Path) -> Result<()> {
    let topology = get_json(endpoint, "/ui/api/topology").await?;
    // Counters are a nicety: a report is still worth writing without them.
    let counters = get_json(endpoint, "/ui/api/counters").await.ok();
    let report = serde_json::json!({
        "file": topology_file.display().to_string(),
        "rows": rows_json(rows),
    });
    let html = super::report_html(&topology, &report, counters.as_ref());
    std::fs::write(out, html).with_context(|| format!("writing {}", out.display()))
}

/// `GET path` on the API port, answered with JSON.
pub async fn get_json(endpoint: &str, path: &str) -> Result<serde_json::Value> {
    let host = match endpoint.split_once("://") {
        None => endpoint,
        Some(("http", rest)) => rest.trim_end_matches('/'),
        Some((scheme, _)) => {
            bail!("the HTML report reads {path} over plain HTTP; {scheme}:// endpoints are not supported")
        }
    };
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(host).await.with_context(|| format!("connecting to {host}"))?;
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n");
        if let Some(k) = crate::cli::access_key() {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", k.id, k.secret));
            req.push_str(&format!("Authorization: Basic {token}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.take(64 << 20).read_to_end(&mut buf).await?;
        Ok::<_, anyhow::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .map_err(|_| anyhow!("{endpoint}{path} did not answer within 10 s"))??;
    let body = parse_response(&buf).with_context(|| format!("GET {endpoint}{path}"))?;
    serde_json::from_slice(&body).with_context(|| format!("GET {endpoint}{path}: not JSON"))
}

/// The body of a `200` HTTP/1.1 answer (plain or chunked).
fn parse_response(buf: &[u8]) -> Result<Vec<u8>> {
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| anyhow!("no complete HTTP answer"))?;
    let head = std::str::from_utf8(&buf[..split]).map_err(|_| anyhow!("an HTTP head that is not text"))?;
    let body = &buf[split + 4..];
    let status = head.lines().next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        bail!("answered {status:?}: {text}");
    }
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
        })
    });
    if !chunked {
        return Ok(body.to_vec());
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n").ok_or_else(|| anyhow!("a chunk without its size"))?;
        let size = std::str::from_utf8(&rest[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or_default().trim(), 16).ok())
            .ok_or_else(|| anyhow!("a chunk size that is not hexadecimal"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or_else(|| anyhow!("a chunk cut short"))?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::parse_response;

    #[test]
    fn answers_plain_chunked_and_refused() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), b"{}");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), b"{\"a\":1}");
        let refused = b"HTTP/1.1 401 Unauthorized\r\n\r\nno";
        assert!(parse_response(refused).unwrap_err().to_string().contains("401"));
        assert!(parse_response(b"HTTP/1.1 200").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
    }
}
