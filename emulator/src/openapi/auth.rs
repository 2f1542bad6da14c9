//! Who may call: AccessKey signatures, timestamps and replayed nonces, checked the way the
//! cloud's API gateway checks them, for both faces of the API (the HTTP endpoint and gRPC) with
//! one checker and one memory of nonces.
//!
//! With no credentials configured, every request is accepted, signed or not; the AccessKeyId it
//! names is logged at debug level and nothing else is checked. With credentials configured
//! (`--access-key-id`/`--access-key-secret`, `--access-key-file`), a request must be signed with
//! one of them: over HTTP by RPC v1 HMAC-SHA1 (parameters `AccessKeyId`, `Signature`,
//! `Timestamp`, `SignatureNonce`) or ACS3-HMAC-SHA256 (`Authorization`, `x-acs-date`,
//! `x-acs-signature-nonce`); over gRPC by ENIFAB-HMAC-SHA256 (metadata `x-enifab-*`); see `sign`
//! and, for the gRPC scheme, `enifab_proto::auth` (the clients' own code) for the arithmetic. Checks run in this order, and the first failure answers:
//!
//! | check | code | HTTP |
//! |---|---|---|
//! | an AccessKeyId is given | `MissingAccessKeyId` | 400 |
//! | it is known | `InvalidAccessKeyId.NotFound` | 404 |
//! | a well-formed signature is given | `IncompleteSignature` | 400 |
//! | it matches | `SignatureDoesNotMatch` (message carries the server's string to sign) | 400 |
//! | a timestamp is given | `IllegalTimestamp` | 400 |
//! | it parses (`YYYY-MM-DDThh:mm:ss[.fff]Z`) | `InvalidTimeStamp.Format` | 400 |
//! | it is within 15 minutes of the server's clock | `InvalidTimeStamp.Expired` | 400 |
//! | a nonce is given | `MissingParameter` | 400 |
//! | the nonce was not used by this AccessKey within the timestamp's validity | `SignatureNonceUsed` | 400 |
//!
//! Codes, messages and statuses are the gateway's as seen in SDK issue reports; the order of the
//! checks and the codes for a missing AccessKeyId, timestamp or nonce are our choice (not
//! documented). A nonce is remembered until its timestamp leaves the 15-minute window, after
//! which the timestamp check refuses a replay anyway. The model and the handlers never see any
//! of this.
//!
//! **Nodes are principals of their own** (the cloud has no such thing; ECS instances get RAM
//! roles instead). Over gRPC only, the AccessKeyId `node:<instance-id>` names instance
//! `<instance-id>`'s shim, and its secret is the instance's *node token*,
//! hex(HMAC-SHA256(node key, `enifab-node-token-v1\n<instance-id>`)): derived, so nothing is stored
//! per node; the node key is 32 random bytes kept in `<data-dir>/node-token.key` (0600), so tokens
//! survive restarts, and replacing the file revokes them all. `IssueNodeToken` (AccessKey
//! callers only) hands a token out. What a node may do is decided by the gRPC face
//! (`grpc::auth`): RegisterNode and WatchNode of its own instance, nothing else. The HTTP face
//! accepts AccessKeys only.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, bail};
use axum::http::HeaderMap;
use enifab_proto::auth as grpc;
pub use enifab_proto::auth::{NODE_PREFIX, format_timestamp, parse_timestamp};

use super::error::ApiError;
use super::sign;
use super::wire::RpcRequest;

/// How far a request's timestamp may be from the server's clock, either way.
pub const MAX_CLOCK_SKEW_SECS: i64 = 15 * 60;
/// The most nonces remembered at once; past it the oldest are forgotten first.
const MAX_NONCES: usize = 1 << 20;

/// AccessKey pairs the server accepts (none: accept everyone).
#[derive(Clone, Default)]
pub struct Credentials {
    keys: BTreeMap<String, String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret.
        f.debug_struct("Credentials").field("access_key_ids", &self.keys.keys().collect::<Vec<_>>()).finish()
    }
}

impl Credentials {
    pub fn new<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Credentials {
        Credentials { keys: pairs.into_iter().collect() }
    }

    /// A keys file as every client reads it too (`enifab_proto::auth::parse_keys`): one
    /// `AccessKeyId AccessKeySecret` pair per line (a `:` or `=` also separates them); blank
    /// lines and `#` comments are skipped.
    pub fn parse(text: &str) -> anyhow::Result<Credentials> {
        Ok(Credentials::new(grpc::parse_keys(text)?))
    }

    pub fn load(path: &Path) -> anyhow::Result<Credentials> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Credentials::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn extend(&mut self, other: Credentials) {
        self.keys.extend(other.keys);
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The AccessKeyIds, for checks and logs.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    fn secret(&self, access_key_id: &str) -> Option<&str> {
        self.keys.get(access_key_id).map(String::as_str)
    }

    /// Whether `secret` is the secret of `access_key_id` (HTTP Basic auth, `observe::gate`).
    /// The comparison takes the same time wherever the two differ: both are hashed first, so
    /// neither their contents nor the secret's length leak through timing.
    pub fn accepts(&self, access_key_id: &str, secret: &str) -> bool {
        use sha2::{Digest, Sha256};
        use subtle::ConstantTimeEq;
        let Some(expected) = self.secret(access_key_id) else { return false };
        let (a, b) = (Sha256::digest(expected.as_bytes()), Sha256::digest(secret.as_bytes()));
        a.as_slice().ct_eq(b.as_slice()).into()
    }
}

/// Who a request was accepted as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No credentials are configured; the AccessKeyId the request named, if any.
    Anyone { access_key_id: Option<String> },
    /// A valid signature by this AccessKey.
    Signed { access_key_id: String, scheme: &'static str },
    /// A valid gRPC signature by this instance's node token.
    Node { instance_id: String },
}

/// The secret node tokens are derived from. Never printed.
#[derive(Clone)]
pub struct NodeKey([u8; 32]);

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeKey(..)")
    }
}

impl Default for NodeKey {
    fn default() -> NodeKey {
        NodeKey::random()
    }
}

impl NodeKey {
    /// A fresh key: its tokens die with the process (in-process servers without a data
    /// directory of their own for it).
    pub fn random() -> NodeKey {
        let mut k = [0u8; 32];
        // Without the OS's randomness there is no key worth having; the process cannot go on
        // serving tokens anyone could guess.
        getrandom::fill(&mut k).expect("the operating system's random number generator");
        NodeKey(k)
    }

    /// The key in `path` (64 hex digits), made on first use (mode 0600).
    pub fn load_or_create(path: &Path) -> anyhow::Result<NodeKey> {
        match std::fs::read_to_string(path) {
            Ok(text) => NodeKey::parse(text.trim()).with_context(|| format!("in {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = NodeKey::random();
                let hex: String = key.0.iter().map(|b| format!("{b:02x}")).collect();
                super::tls::write_file(path, &format!("{hex}\n"), true)?;
                Ok(key)
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn parse(hex: &str) -> anyhow::Result<NodeKey> {
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("expected 64 hex digits");
        }
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("checked hex");
        }
        Ok(NodeKey(k))
    }

    /// The node token of `instance_id` (64 hex digits).
    pub fn token(&self, instance_id: &str) -> String {
        grpc::hmac_sha256_hex(&self.0, &format!("enifab-node-token-v1\n{instance_id}"))
    }
}

/// The checker: credentials, the node key, and the nonces seen.
#[derive(Debug, Default)]
pub struct Auth {
    credentials: Credentials,
    node_key: NodeKey,
    nonces: Mutex<Nonces>,
}

impl Auth {
    /// A checker with a node key of its own (tokens die with it).
    pub fn new(credentials: Credentials) -> Auth {
        Auth::with_node_key(credentials, NodeKey::random())
    }

    pub fn with_node_key(credentials: Credentials, node_key: NodeKey) -> Auth {
        Auth { credentials, node_key, nonces: Mutex::default() }
    }

    /// The node token of `instance_id`.
    pub fn node_token(&self, instance_id: &str) -> String {
        self.node_key.token(instance_id)
    }

    pub fn enabled(&self) -> bool {
        !self.credentials.is_empty()
    }

    /// Check `req` at server time `now` (seconds since the epoch).
    pub fn verify(&self, req: &RpcRequest, now: i64) -> Result<Caller, ApiError> {
        let acs3 = req.header("authorization").filter(|a| a.trim_start().starts_with("ACS3-"));
        if !self.enabled() {
            let access_key_id = match acs3 {
                Some(a) => sign::parse_acs3_authorization(a).map(|a| a.access_key_id),
                None => req.param("AccessKeyId").map(str::to_string),
            };
            return Ok(Caller::Anyone { access_key_id });
        }
        let (access_key_id, timestamp, nonce, scheme) = match acs3 {
            Some(header) => {
                let ak = self.verify_acs3(req, header)?;
                (ak, req.header("x-acs-date"), req.header("x-acs-signature-nonce"), "ACS3-HMAC-SHA256")
            }
            None => {
                let ak = self.verify_rpc(req)?;
                (ak, req.param("Timestamp"), req.param("SignatureNonce"), "HMAC-SHA1")
            }
        };
        self.admit_once(&access_key_id, timestamp, nonce, "SignatureNonce", now)?;
        Ok(Caller::Signed { access_key_id, scheme })
    }

    /// Check a gRPC call to `path` by its `x-enifab-*` metadata at server time `now`. AccessKeys
    /// and node tokens are both accepted here; what each may call is the gRPC face's business.
    pub fn verify_grpc(&self, headers: &HeaderMap, path: &str, now: i64) -> Result<Caller, ApiError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
        let access_key_id = header(grpc::ACCESS_KEY_ID);
        if !self.enabled() {
            return Ok(Caller::Anyone { access_key_id: access_key_id.map(str::to_string) });
        }
        let id = access_key_id.ok_or_else(missing_access_key)?;
        let node_secret;
        let (secret, caller) = match id.strip_prefix(NODE_PREFIX) {
            Some(instance_id) if !instance_id.is_empty() => {
                node_secret = self.node_key.token(instance_id);
                (node_secret.as_str(), Caller::Node { instance_id: instance_id.to_string() })
            }
            Some(_) => return Err(not_found()),
            None => {
                let (id, secret) = self.secret_of(Some(id))?;
                (secret, Caller::Signed { access_key_id: id, scheme: grpc::ALGORITHM })
            }
        };
        let signature = header(grpc::SIGNATURE).ok_or_else(|| incomplete("no x-enifab-signature"))?;
        let (timestamp, nonce) = (header(grpc::TIMESTAMP), header(grpc::NONCE));
        let sts = grpc::string_to_sign(id, path, timestamp.unwrap_or(""), nonce.unwrap_or(""));
        if !grpc::verify(secret, &sts, signature) {
            return Err(ApiError::new(
                400,
                "SignatureDoesNotMatch",
                format!("Specified signature does not match our calculation. server StringToSign is [{sts}]"),
            ));
        }
        self.admit_once(id, timestamp, nonce, grpc::NONCE, now)?;
        Ok(caller)
    }

    /// The last checks of every scheme: the timestamp is in the window, and the nonce is new.
    fn admit_once(
        &self,
        access_key_id: &str,
        timestamp: Option<&str>,
        nonce: Option<&str>,
        nonce_name: &str,
        now: i64,
    ) -> Result<(), ApiError> {
        let ts = check_timestamp(timestamp, now)?;
        let nonce = nonce.filter(|n| !n.is_empty()).ok_or_else(|| ApiError::missing(nonce_name))?;
        let fresh = self.nonces.lock().unwrap_or_else(|p| p.into_inner()).insert(
            access_key_id,
            nonce,
            ts + MAX_CLOCK_SKEW_SECS,
            now,
        );
        if !fresh {
            return Err(ApiError::new(400, "SignatureNonceUsed", "Specified signature nonce was used already."));
        }
        Ok(())
    }

    fn secret_of(&self, access_key_id: Option<&str>) -> Result<(String, &str), ApiError> {
        let id = access_key_id.filter(|a| !a.is_empty()).ok_or_else(missing_access_key)?;
        let secret = self.credentials.secret(id).ok_or_else(not_found)?;
        Ok((id.to_string(), secret))
    }

    /// RPC v1: `Signature` over every query and form parameter.
    fn verify_rpc(&self, req: &RpcRequest) -> Result<String, ApiError> {
        let (id, secret) = self.secret_of(req.param("AccessKeyId"))?;
        let signature = req.param("Signature").filter(|s| !s.is_empty()).ok_or_else(|| incomplete("no Signature"))?;
        match req.param("SignatureMethod") {
            Some(m) if m.eq_ignore_ascii_case("HMAC-SHA1") => {}
            other => return Err(incomplete(&format!("SignatureMethod {other:?} is not HMAC-SHA1"))),
        }
        let sts = sign::rpc_string_to_sign(req.method.as_str(), req.query.iter().chain(&req.form));
        if !sign::rpc_verify(secret, &sts, signature) {
            return Err(ApiError::new(
                400,
                "SignatureDoesNotMatch",
                format!("Specified signature is not matched with our calculation. server string to sign is:{sts}"),
            ));
        }
        Ok(id)
    }

    /// ACS3-HMAC-SHA256: the `Authorization` header over the canonical request.
    fn verify_acs3(&self, req: &RpcRequest, header: &str) -> Result<String, ApiError> {
        let auth = sign::parse_acs3_authorization(header).ok_or_else(|| incomplete("malformed Authorization"))?;
        if auth.algorithm != sign::ACS3_ALGORITHM {
            return Err(incomplete(&format!("the algorithm {} is not supported", auth.algorithm)));
        }
        let (id, secret) = self.secret_of(Some(&auth.access_key_id))?;
        // The headers that carry the call's meaning must be covered by the signature.
        let unsigned = req
            .headers
            .keys()
            .map(|k| k.as_str())
            .filter(|k| k.starts_with("x-acs-"))
            .chain(std::iter::once("host"))
            .find(|k| !auth.signed_headers.iter().any(|s| s == k));
        if let Some(h) = unsigned {
            return Err(incomplete(&format!("the header {h} is not signed")));
        }
        let headers: Vec<(String, Vec<String>)> = auth
            .signed_headers
            .iter()
            .map(|name| {
                let mut values: Vec<String> = req
                    .headers
                    .get_all(name.as_str())
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .map(str::to_string)
                    .collect();
                // HTTP/2 carries the host as the :authority pseudo-header.
                if values.is_empty() && name == "host" {
                    values.extend(req.authority.clone());
                }
                (name.clone(), values)
            })
            .collect();
        let canonical = sign::acs3_canonical_request(
            req.method.as_str(),
            &req.path,
            &req.query,
            &headers,
            &sign::sha256_hex(&req.body),
        );
        let sts = sign::acs3_string_to_sign(&canonical);
        if !sign::acs3_verify(secret, &sts, &auth.signature) {
            tracing::debug!(canonical_request = %canonical, "ACS3 signature mismatch");
            return Err(ApiError::new(
                400,
                "SignatureDoesNotMatch",
                format!("Specified signature does not match our calculation. server StringToSign is [{sts}]"),
            ));
        }
        Ok(id)
    }
}

fn not_found() -> ApiError {
    ApiError::new(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
}

fn missing_access_key() -> ApiError {
    ApiError::new(400, "MissingAccessKeyId", "AccessKeyId is mandatory for this action.")
}

fn incomplete(why: &str) -> ApiError {
    ApiError::new(
        400,
        "IncompleteSignature",
        format!("The request signature does not conform to Aliyun standards ({why})."),
    )
}

/// The request time in seconds since the epoch, if present, well-formed and within the skew.
fn check_timestamp(value: Option<&str>, now: i64) -> Result<i64, ApiError> {
    let value = value.filter(|v| !v.is_empty()).ok_or_else(|| {
        ApiError::new(
            400,
            "IllegalTimestamp",
            "The input parameter \"Timestamp\" that is mandatory for processing this request is not supplied.",
        )
    })?;
    let ts = parse_timestamp(value).ok_or_else(|| {
        ApiError::new(400, "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted.")
    })?;
    if (now - ts).abs() > MAX_CLOCK_SKEW_SECS {
        return Err(ApiError::new(400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired."));
    }
    Ok(ts)
}

/// Nonces seen, each until its request's timestamp leaves the validity window. What is kept is
/// a keyed 64-bit hash of (AccessKeyId, nonce), not the strings: under thousands of signed calls
/// a second the memory reaches its cap within minutes, and an entry is then two 16-byte pairs
/// rather than two heap copies of both strings. The hash key is this process's secret, so no
/// caller can make two nonces collide on purpose;
/// an accidental collision refuses one honest request as a replay, about once in 10^13 requests
/// with the memory full.
#[derive(Debug, Default)]
struct Nonces {
    hasher: std::hash::RandomState,
    expiry: HashMap<u64, i64>,
    by_expiry: BTreeSet<(i64, u64)>,
}

impl Nonces {
    /// Record the nonce of `access_key_id` until `expires`; false if it is already recorded (a
    /// replay).
    fn insert(&mut self, access_key_id: &str, nonce: &str, expires: i64, now: i64) -> bool {
        // A nonce expiring at `now` is kept: a timestamp exactly at the edge of the window is
        // still accepted, so its nonce must still be refused.
        while let Some(&(at, old)) = self.by_expiry.first() {
            if at >= now && self.expiry.len() < MAX_NONCES {
                break;
            }
            self.by_expiry.pop_first();
            self.expiry.remove(&old);
        }
        let key = std::hash::BuildHasher::hash_one(&self.hasher, (access_key_id, nonce));
        if self.expiry.contains_key(&key) {
            return false;
        }
        self.expiry.insert(key, expires);
        self.by_expiry.insert((expires, key));
        true
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, Method};

    use super::*;

    #[test]
    fn credentials_files_parse_and_never_print_secrets() {
        let c = Credentials::parse("# keys\nLTAIterway  s3cret\nLTAIccm:other\n\n").unwrap();
        assert_eq!(c.secret("LTAIterway"), Some("s3cret"));
        assert_eq!(c.secret("LTAIccm"), Some("other"));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(Credentials::parse("lonely").is_err());
    }

    #[test]
    fn nonces_expire_and_replays_are_refused() {
        let mut n = Nonces::default();
        assert!(n.insert("AK", "a", 100, 0));
        assert!(!n.insert("AK", "a", 100, 50));
        assert!(n.insert("AK2", "a", 100, 50), "a nonce is one AccessKey's");
        assert!(n.insert("AK", "a\nb", 100, 50) && n.insert("AK\na", "b", 100, 50), "the pair, not its text");
        assert!(!n.insert("AK", "a", 100, 100), "still refused at the very edge of the window");
        assert!(n.insert("AK", "a", 300, 101), "forgotten once its timestamp is out of the window");
        assert_eq!(n.expiry.len(), 1);
    }

    fn rpc(params: &[(&str, &str)]) -> RpcRequest {
        let mut query: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let sts = sign::rpc_string_to_sign("POST", &query);
        query.push(("Signature".into(), sign::rpc_signature("secret", &sts)));
        RpcRequest {
            method: Method::POST,
            path: "/".into(),
            authority: None,
            query,
            form: vec![],
            headers: HeaderMap::new(),
            body: vec![],
        }
    }

    #[test]
    fn rpc_v1_checks_in_the_gateways_order() {
        let auth = Auth::new(Credentials::new([("AK".to_string(), "secret".to_string())]));
        let now = parse_timestamp("2026-11-27T03:45:23Z").unwrap();
        let base = [
            ("AccessKeyId", "AK"),
            ("Action", "DescribeVSwitches"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "n-1"),
            ("Timestamp", "2026-11-27T03:40:00Z"),
        ];
        let ok = rpc(&base);
        assert_eq!(auth.verify(&ok, now), Ok(Caller::Signed { access_key_id: "AK".into(), scheme: "HMAC-SHA1" }));
        assert_eq!(auth.verify(&ok, now).unwrap_err().code, "SignatureNonceUsed");

        let code = |params: &[(&str, &str)]| auth.verify(&rpc(params), now).unwrap_err().code;
        fn with<'a>(base: &[(&'a str, &'a str)], k: &str, v: &'a str) -> Vec<(&'a str, &'a str)> {
            base.iter().map(|&(bk, bv)| if bk == k { (bk, v) } else { (bk, bv) }).collect()
        }
        let with = |k: &str, v: &'static str| with(&base, k, v);
        let without = |k: &str| -> Vec<(&str, &str)> { base.iter().copied().filter(|(bk, _)| *bk != k).collect() };
        assert_eq!(code(&with("AccessKeyId", "nobody")), "InvalidAccessKeyId.NotFound");
        assert_eq!(code(&with("Timestamp", "2026-11-27T03:20:00Z")), "InvalidTimeStamp.Expired");
        assert_eq!(code(&with("Timestamp", "yesterday")), "InvalidTimeStamp.Format");
        assert_eq!(code(&without("Timestamp")), "IllegalTimestamp");
        assert_eq!(code(&without("SignatureNonce")), "MissingParameter");
        assert_eq!(code(&with("SignatureMethod", "HMAC-MD5")), "IncompleteSignature");

        let mut tampered = rpc(&with("SignatureNonce", "n-2"));
        tampered.query.push(("VSwitchId".into(), "vsw-added-later".into()));
        let e = auth.verify(&tampered, now).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (400, "SignatureDoesNotMatch"));
        assert!(e.message.contains("server string to sign is:POST&%2F&AccessKeyId%3DAK"), "{}", e.message);

        let mut unsigned = rpc(&base);
        unsigned.query.retain(|(k, _)| k != "Signature" && k != "AccessKeyId");
        assert_eq!(auth.verify(&unsigned, now).unwrap_err().code, "MissingAccessKeyId");
    }

    /// What a client sends (the clients' own code makes it), at a chosen time and nonce.
    fn grpc_headers(id: &str, secret: &str, path: &str, ts: &str, nonce: &str) -> HeaderMap {
        let key = grpc::AccessKey { id: id.into(), secret: secret.into() };
        let mut h = HeaderMap::new();
        for (k, v) in key.metadata(path, ts, nonce) {
            h.insert(k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn grpc_calls_are_checked_like_http_ones_and_nodes_sign_with_their_token() {
        let auth = Auth::new(Credentials::new([("AK".to_string(), "secret".to_string())]));
        let now = parse_timestamp("2026-11-27T03:45:23Z").unwrap();
        let (path, ts) = ("/enifab.v1.Vpc/DescribeVpcs", "2026-11-27T03:45:00Z");
        let ok = grpc_headers("AK", "secret", path, ts, "n-1");
        let signed = Caller::Signed { access_key_id: "AK".into(), scheme: grpc::ALGORITHM };
        assert_eq!(auth.verify_grpc(&ok, path, now), Ok(signed));
        let code = |h: &HeaderMap, p: &str| auth.verify_grpc(h, p, now).unwrap_err().code;
        assert_eq!(code(&ok, path), "SignatureNonceUsed");
        assert_eq!(code(&HeaderMap::new(), path), "MissingAccessKeyId");
        assert_eq!(code(&grpc_headers("nobody", "secret", path, ts, "n-2"), path), "InvalidAccessKeyId.NotFound");
        assert_eq!(code(&grpc_headers("AK", "wrong", path, ts, "n-3"), path), "SignatureDoesNotMatch");
        let other_method = grpc_headers("AK", "secret", path, ts, "n-4");
        assert_eq!(code(&other_method, "/enifab.v1.Vpc/DeleteVpc"), "SignatureDoesNotMatch", "the path is signed");
        let old = grpc_headers("AK", "secret", path, "2026-11-27T03:20:00Z", "n-5");
        assert_eq!(code(&old, path), "InvalidTimeStamp.Expired");
        let mut unsigned = grpc_headers("AK", "secret", path, ts, "n-6");
        unsigned.remove(grpc::SIGNATURE);
        assert_eq!(code(&unsigned, path), "IncompleteSignature");
        assert_eq!(code(&grpc_headers("AK", "secret", path, ts, ""), path), "MissingParameter");

        // A node signs with its token, as `node:<instance-id>`; another's token does not do.
        let node_path = "/enifab.v1.Fabric/RegisterNode";
        let token = auth.node_token("i-a");
        assert_eq!(token.len(), 64);
        let h = grpc_headers("node:i-a", &token, node_path, ts, "n-7");
        assert_eq!(auth.verify_grpc(&h, node_path, now), Ok(Caller::Node { instance_id: "i-a".into() }));
        let h = grpc_headers("node:i-b", &token, node_path, ts, "n-8");
        assert_eq!(code(&h, node_path), "SignatureDoesNotMatch");
        assert_eq!(
            code(&grpc_headers("node:", &token, node_path, ts, "n-9"), node_path),
            "InvalidAccessKeyId.NotFound"
        );
        // Tokens come from the node key: another server's key, another token.
        let other = Auth::new(Credentials::new([("AK".to_string(), "secret".to_string())]));
        assert_ne!(other.node_token("i-a"), token);
    }

    #[test]
    fn node_keys_are_kept_in_a_private_file_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node-token.key");
        let a = NodeKey::load_or_create(&path).unwrap();
        let b = NodeKey::load_or_create(&path).unwrap();
        assert_eq!(a.token("i-x"), b.token("i-x"));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!format!("{a:?}").contains(&a.token("i-x")[..8]));
        std::fs::write(&path, "short").unwrap();
        assert!(NodeKey::load_or_create(&path).is_err());
    }

    #[test]
    fn without_credentials_anyone_is_accepted() {
        let auth = Auth::new(Credentials::default());
        let mut r = rpc(&[("AccessKeyId", "whoever")]);
        r.query.retain(|(k, _)| k != "Signature");
        assert_eq!(auth.verify(&r, 0), Ok(Caller::Anyone { access_key_id: Some("whoever".into()) }));
        assert_eq!(
            auth.verify_grpc(&HeaderMap::new(), "/enifab.v1.Vpc/DeleteVpc", 0),
            Ok(Caller::Anyone { access_key_id: None })
        );
    }
}
