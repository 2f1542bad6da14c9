//! A gate for read-only HTTP pages (`/metrics`, and later the topology page): open when the
//! server has no AccessKey (the loopback default, where every API call is open too), HTTP Basic
//! authentication with an AccessKey otherwise: the AccessKeyId as user, its secret as password,
//! which is what Prometheus's `basic_auth` scrape setting sends.
//!
//! Must not: let node principals in (their tokens open gRPC's RegisterNode/WatchNode only), or
//! compare secrets in a time that depends on where they differ ([`Credentials::accepts`]).
//!
//! The cloud's API gateway wants signed requests; a scraper cannot sign, so Basic auth over the
//! same AccessKeys is the emulator's own choice for these pages. A refusal is 401 with
//! `WWW-Authenticate: Basic realm="enifab"` (RFC 7617), so a browser asks for the key.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::openapi::auth::Credentials;

/// The realm a browser shows when it asks for the key.
pub const REALM: &str = "enifab";

/// Who may read the gated pages.
#[derive(Clone, Debug, Default)]
pub struct Gate {
    credentials: Credentials,
}

impl Gate {
    /// A gate for the server's AccessKeys; none: open.
    pub fn new(credentials: Credentials) -> Arc<Gate> {
        Arc::new(Gate { credentials })
    }

    /// Whether anyone may pass.
    pub fn is_open(&self) -> bool {
        self.credentials.is_empty()
    }

    /// Whether a request with `headers` may pass.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        if self.is_open() {
            return true;
        }
        match basic_credentials(headers) {
            Some((id, secret)) => self.credentials.accepts(&id, &secret),
            None => false,
        }
    }
}

/// `Authorization: Basic base64(id:secret)`, decoded; `None` for anything else.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    // The user id cannot hold a colon (RFC 7617 §2); the password can.
    let (id, secret) = text.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

/// Axum middleware: pass the request on when `gate` admits it, else 401 asking for Basic auth.
pub async fn require(State(gate): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    if gate.admits(req.headers()) {
        return next.run(req).await;
    }
    let mut resp =
        (StatusCode::UNAUTHORIZED, "401 Unauthorized: use HTTP Basic auth with an AccessKey\n").into_response();
    let challenge = HeaderValue::from_static(r#"Basic realm="enifab", charset="UTF-8""#);
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    fn basic(user_pass: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_pass))
    }

    #[test]
    fn an_open_gate_admits_everyone_a_closed_one_only_the_right_key() {
        assert!(Gate::default().admits(&headers(None)));
        let gate = Gate::new(Credentials::new([("AK".to_string(), "s3:cret".to_string())]));
        assert!(!gate.is_open());
        assert!(gate.admits(&headers(Some(&basic("AK:s3:cret")))), "a colon in the secret is the secret's");
        assert!(gate.admits(&headers(Some(&basic("AK:s3:cret").replace("Basic", "basic")))));
        for refused in [
            None,
            Some(basic("AK:wrong")),
            Some(basic("AK:s3:cre")),
            Some(basic("other:s3:cret")),
            Some(basic("AK")),
            Some("Bearer AK:s3:cret".to_string()),
            Some("Basic !!!not base64".to_string()),
        ] {
            assert!(!gate.admits(&headers(refused.as_deref())), "{refused:?}");
        }
    }
}
