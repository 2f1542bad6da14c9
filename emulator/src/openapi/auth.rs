//! Who may call: AccessKey signatures, timestamps and replayed nonces, checked the way the
//! cloud's API gateway checks them.
//!
//! With no credentials configured, every request is accepted, signed or not; the AccessKeyId it
//! names is logged at debug level and nothing else is checked. With credentials configured
//! (`--access-key-id`/`--access-key-secret`, `--access-key-file`), a request must be signed with
//! one of them, by RPC v1 HMAC-SHA1 (parameters `AccessKeyId`, `Signature`, `Timestamp`,
//! `SignatureNonce`) or ACS3-HMAC-SHA256 (`Authorization`, `x-acs-date`,
//! `x-acs-signature-nonce`); see `sign` for the arithmetic. Checks run in this order, and the
//! first failure answers:
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, bail};

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

    /// One `AccessKeyId AccessKeySecret` pair per line (a `:` or `=` also separates them);
    /// blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> anyhow::Result<Credentials> {
        let mut keys = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((id, secret)) = line.split_once(|c: char| c.is_whitespace() || c == ':' || c == '=') else {
                bail!("line {}: expected `AccessKeyId AccessKeySecret`", n + 1);
            };
            let (id, secret) = (id.trim(), secret.trim());
            if id.is_empty() || secret.is_empty() {
                bail!("line {}: expected `AccessKeyId AccessKeySecret`", n + 1);
            }
            keys.insert(id.to_string(), secret.to_string());
        }
        Ok(Credentials { keys })
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

    fn secret(&self, access_key_id: &str) -> Option<&str> {
        self.keys.get(access_key_id).map(String::as_str)
    }
}

/// Who a request was accepted as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No credentials are configured; the AccessKeyId the request named, if any.
    Anyone { access_key_id: Option<String> },
    /// A valid signature by this AccessKey.
    Signed { access_key_id: String, scheme: &'static str },
}

/// The checker: credentials plus the nonces seen.
#[derive(Debug, Default)]
pub struct Auth {
    credentials: Credentials,
    nonces: Mutex<Nonces>,
}

impl Auth {
    pub fn new(credentials: Credentials) -> Auth {
        Auth { credentials, nonces: Mutex::default() }
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
        let ts = check_timestamp(timestamp, now)?;
        let nonce = nonce.filter(|n| !n.is_empty()).ok_or_else(|| ApiError::missing("SignatureNonce"))?;
        let fresh = self.nonces.lock().unwrap_or_else(|p| p.into_inner()).insert(
            format!("{access_key_id}\n{nonce}"),
            ts + MAX_CLOCK_SKEW_SECS,
            now,
        );
        if !fresh {
            return Err(ApiError::new(400, "SignatureNonceUsed", "Specified signature nonce was used already."));
        }
        Ok(Caller::Signed { access_key_id, scheme })
    }

    fn secret_of(&self, access_key_id: Option<&str>) -> Result<(String, &str), ApiError> {
        let id = access_key_id.filter(|a| !a.is_empty()).ok_or_else(missing_access_key)?;
        let secret = self
            .credentials
            .secret(id)
            .ok_or_else(|| ApiError::new(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found."))?;
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

/// `2026-11-27T03:45:23Z` (fractional seconds allowed) → seconds since the epoch, UTC.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let time = time
        .split_once('.')
        .map_or(time, |(t, frac)| if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) { "" } else { t });
    let num = |t: &str, len: usize| {
        (t.len() == len && t.bytes().all(|b| b.is_ascii_digit())).then(|| t.parse::<i64>().ok()).flatten()
    };
    let mut d = date.split('-');
    let (y, mo, day) = (num(d.next()?, 4)?, num(d.next()?, 2)?, num(d.next()?, 2)?);
    let mut t = time.split(':');
    let (h, mi, sec) = (num(t.next()?, 2)?, num(t.next()?, 2)?, num(t.next()?, 2)?);
    if d.next().is_some() || t.next().is_some() {
        return None;
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, day) * 86_400 + h * 3600 + mi * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Nonces seen, each until its request's timestamp leaves the validity window.
#[derive(Debug, Default)]
struct Nonces {
    expiry: HashMap<String, i64>,
    by_expiry: BTreeSet<(i64, String)>,
}

impl Nonces {
    /// Record `key` until `expires`; false if it is already recorded (a replay).
    fn insert(&mut self, key: String, expires: i64, now: i64) -> bool {
        // A nonce expiring at `now` is kept: a timestamp exactly at the edge of the window is
        // still accepted, so its nonce must still be refused.
        while let Some((at, _)) = self.by_expiry.first() {
            if *at >= now && self.expiry.len() < MAX_NONCES {
                break;
            }
            let (_, old) = self.by_expiry.pop_first().expect("checked above");
            self.expiry.remove(&old);
        }
        if self.expiry.contains_key(&key) {
            return false;
        }
        self.expiry.insert(key.clone(), expires);
        self.by_expiry.insert((expires, key));
        true
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, Method};

    use super::*;

    #[test]
    fn timestamps_parse_in_the_cloud_format() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_timestamp("2026-11-27T03:45:23Z"), Some(1_795_751_123));
        assert_eq!(parse_timestamp("2026-11-27T03:45:23.312Z"), Some(1_795_751_123));
        assert_eq!(parse_timestamp("2024-02-29T00:00:00Z"), Some(1_709_164_800));
        for bad in ["2026-11-27 03:45:23Z", "2026-11-27T03:45:23", "2026-13-01T00:00:00Z", "x", "2026-11-27T03:45:23.Z"]
        {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

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
        assert!(n.insert("a".into(), 100, 0));
        assert!(!n.insert("a".into(), 100, 50));
        assert!(!n.insert("a".into(), 100, 100), "still refused at the very edge of the window");
        assert!(n.insert("a".into(), 300, 101), "forgotten once its timestamp is out of the window");
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

    #[test]
    fn without_credentials_anyone_is_accepted() {
        let auth = Auth::new(Credentials::default());
        let mut r = rpc(&[("AccessKeyId", "whoever")]);
        r.query.retain(|(k, _)| k != "Signature");
        assert_eq!(auth.verify(&r, 0), Ok(Caller::Anyone { access_key_id: Some("whoever".into()) }));
    }
}
