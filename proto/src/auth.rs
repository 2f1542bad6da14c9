//! enifab's gRPC request signature, ENIFAB-HMAC-SHA256, and the AccessKey that makes it: the one
//! implementation that every client signs with (the CLI, `apply`, `lab` and its agents' clients,
//! the node shim, the CNI plugin) and the emulator checks with (`enifab::openapi::auth`), so a
//! client and the server cannot drift apart.
//!
//! The scheme is enifab's own (the cloud has none for gRPC): metadata `x-enifab-access-key-id`,
//! `x-enifab-timestamp` (`2026-11-27T03:45:23Z`), `x-enifab-signature-nonce` and
//! `x-enifab-signature`; the string to sign is
//! `ENIFAB-HMAC-SHA256\n<access key id>\n<method path>\n<timestamp>\n<nonce>` (the path as on the
//! wire, `/enifab.v1.Ecs/CreateNetworkInterface`); the signature is
//! hex(HMAC-SHA256(secret, string to sign)), as the cloud's ACS3's. It signs who, what, when and
//! once; not the message (a gRPC client cannot easily hash what it is about to encode), which is
//! why the emulator's HTTPS listener exists for networks that are not trusted. A node signs as
//! the AccessKeyId `node:<instance-id>` with its node token as the secret ([`AccessKey::node`]).
//!
//! Keys files (`enifab serve --access-key-file`, the clients' `--access-key-file`, the CNI
//! plugin's `accessKeyFile`) are read by [`parse_keys`] for all of them; a client signs with the
//! file's first key.
//!
//! Must not: decide whether a call is allowed (the emulator's `openapi::auth` and `grpc::auth`
//! do). Only [`AccessKey::sign`] and the constructors that read files or the environment touch
//! the world (the clock, randomness, the file system); everything else is pure, which is what
//! lets the known answers below pin it.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tonic::codegen::http;
use tonic::metadata::MetadataMap;

/// The algorithm name (the first line of the string to sign).
pub const ALGORITHM: &str = "ENIFAB-HMAC-SHA256";
/// The metadata the signature travels in.
pub const ACCESS_KEY_ID: &str = "x-enifab-access-key-id";
pub const TIMESTAMP: &str = "x-enifab-timestamp";
pub const NONCE: &str = "x-enifab-signature-nonce";
pub const SIGNATURE: &str = "x-enifab-signature";
/// The AccessKeyId prefix that names a node: `node:i-…`.
pub const NODE_PREFIX: &str = "node:";

/// The string to sign: who, which method (`/enifab.v1.Ecs/DescribeVpcs`), when, once.
pub fn string_to_sign(access_key_id: &str, path: &str, timestamp: &str, nonce: &str) -> String {
    format!("{ALGORITHM}\n{access_key_id}\n{path}\n{timestamp}\n{nonce}")
}

/// The signature of `string_to_sign` with `secret` (lower-case hex).
pub fn signature(secret: &str, string_to_sign: &str) -> String {
    hmac_sha256_hex(secret.as_bytes(), string_to_sign)
}

/// Whether `signature` (hex) is the signature of `string_to_sign` with `secret`, compared in
/// constant time.
pub fn verify(secret: &str, string_to_sign: &str, signature: &str) -> bool {
    hmac_sha256_verify(secret.as_bytes(), string_to_sign, signature)
}

fn hmac_sha256(key: &[u8], message: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message.as_bytes());
    mac
}

/// hex(HMAC-SHA256(key, message)): this scheme's signature, and also the cloud's ACS3 signature
/// and the emulator's node tokens, which is why it takes any key.
pub fn hmac_sha256_hex(key: &[u8], message: &str) -> String {
    hex(&hmac_sha256(key, message).finalize().into_bytes())
}

/// Whether `signature` (hex, either case) is hex(HMAC-SHA256(key, message)), in constant time.
pub fn hmac_sha256_verify(key: &[u8], message: &str, signature: &str) -> bool {
    let sig = signature.trim();
    if !sig.len().is_multiple_of(2) || !sig.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    let given: Option<Vec<u8>> =
        (0..sig.len()).step_by(2).map(|i| u8::from_str_radix(&sig[i..i + 2], 16).ok()).collect();
    match given {
        Some(given) => hmac_sha256(key, message).verify_slice(&given).is_ok(),
        None => false,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seconds since the epoch → `2026-11-27T03:45:23Z`, the format [`parse_timestamp`] reads.
pub fn format_timestamp(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days, the inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `2026-11-27T03:45:23Z` (fractional seconds allowed) → seconds since the epoch, UTC. The
/// cloud's format, so the emulator reads the HTTP schemes' timestamps with it too.
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

/// A keys-file line that is not `AccessKeyId AccessKeySecret` (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("line {0}: expected `AccessKeyId AccessKeySecret`")]
pub struct BadLine(pub usize);

/// The pairs of a keys file: one `AccessKeyId AccessKeySecret` per line (a `:` or `=` also
/// separates them), blank lines and `#` comments skipped, any other line an error. In the order
/// the ids first appear; an id given again keeps its place and takes the later secret, as the
/// server's map of the file does, so a client signing with the first pair signs with the secret
/// the server holds for it.
pub fn parse_keys(text: &str) -> Result<Vec<(String, String)>, BadLine> {
    let mut keys: Vec<(String, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (id, secret) = line
            .split_once(|c: char| c.is_whitespace() || c == ':' || c == '=')
            .map(|(id, secret)| (id.trim(), secret.trim()))
            .filter(|(id, secret)| !id.is_empty() && !secret.is_empty())
            .ok_or(BadLine(n + 1))?;
        match keys.iter_mut().find(|(k, _)| k == id) {
            Some(known) => known.1 = secret.to_string(),
            None => keys.push((id.to_string(), secret.to_string())),
        }
    }
    Ok(keys)
}

/// Why a client's keys file gives no key.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    // The I/O error is part of the message, not a `source`: callers print one line.
    #[error("reading {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("in {}: {line}", path.display())]
    Line { path: PathBuf, line: BadLine },
    #[error("{} holds no `AccessKeyId AccessKeySecret` line", path.display())]
    Empty { path: PathBuf },
}

/// What a client signs with: an AccessKey, or a node's token (id `node:<instance-id>`).
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret.
        f.debug_struct("AccessKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl AccessKey {
    /// The key a node signs with, from its token.
    pub fn node(instance_id: &str, token: &str) -> AccessKey {
        AccessKey { id: format!("{NODE_PREFIX}{instance_id}"), secret: token.trim().to_string() }
    }

    /// The first pair of the keys file at `path` ([`parse_keys`]).
    pub fn first_in_file(path: &Path) -> Result<AccessKey, KeyFileError> {
        let text =
            std::fs::read_to_string(path).map_err(|error| KeyFileError::Read { path: path.to_path_buf(), error })?;
        let keys = parse_keys(&text).map_err(|line| KeyFileError::Line { path: path.to_path_buf(), line })?;
        let (id, secret) = keys.into_iter().next().ok_or_else(|| KeyFileError::Empty { path: path.to_path_buf() })?;
        Ok(AccessKey { id, secret })
    }

    /// The id/secret pair if both are given, else the first pair of `file`; `None` if neither.
    pub fn from_parts(
        id: Option<String>,
        secret: Option<String>,
        file: Option<&Path>,
    ) -> Result<Option<AccessKey>, KeyFileError> {
        match (id, secret, file) {
            (Some(id), Some(secret), _) => Ok(Some(AccessKey { id, secret })),
            (_, _, Some(f)) => AccessKey::first_in_file(f).map(Some),
            _ => Ok(None),
        }
    }

    /// From `ENIFAB_ACCESS_KEY_ID`/`ENIFAB_ACCESS_KEY_SECRET`, else `ENIFAB_ACCESS_KEY_FILE` (the
    /// variables `enifab serve` reads); empty variables count as unset.
    pub fn from_env() -> Result<Option<AccessKey>, KeyFileError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let file = var("ENIFAB_ACCESS_KEY_FILE").map(PathBuf::from);
        AccessKey::from_parts(var("ENIFAB_ACCESS_KEY_ID"), var("ENIFAB_ACCESS_KEY_SECRET"), file.as_deref())
    }

    /// The four metadata of a call to `path` made at `timestamp` with `nonce`, signature last.
    pub fn metadata(&self, path: &str, timestamp: &str, nonce: &str) -> [(&'static str, String); 4] {
        let signature = signature(&self.secret, &string_to_sign(&self.id, path, timestamp, nonce));
        [
            (ACCESS_KEY_ID, self.id.clone()),
            (TIMESTAMP, timestamp.to_string()),
            (NONCE, nonce.to_string()),
            (SIGNATURE, signature),
        ]
    }

    /// Sign a call to `path` (`/enifab.v1.Ecs/DescribeVpcs`) now: its `x-enifab-*` headers.
    pub fn sign(&self, headers: &mut http::HeaderMap, path: &str) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let mut n = [0u8; 16];
        // A failed random read makes a nonce guessable, not reused: the timestamp still moves.
        let _ = getrandom::fill(&mut n);
        for (name, value) in self.metadata(path, &format_timestamp(now), &hex(&n)) {
            // An id that cannot be a header value goes unsent; the server says what is missing.
            if let Ok(v) = http::HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
    }

    /// [`AccessKey::sign`] for a tonic request's metadata (an interceptor's, a client's).
    pub fn sign_metadata(&self, metadata: &mut MetadataMap, path: &str) {
        let mut headers = std::mem::take(metadata).into_headers();
        self.sign(&mut headers, path);
        *metadata = MetadataMap::from_headers(headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected value computed with Python's `hmac.new(b"testsecret", sts, hashlib.sha256)`, the
    /// way the README's grpcio example signs.
    #[test]
    fn the_signature_is_hmac_sha256_over_five_lines() {
        let sts = string_to_sign("LTAIenifab", "/enifab.v1.Vpc/DescribeVpcs", "2026-11-27T03:45:23Z", "n-1");
        assert_eq!(sts, "ENIFAB-HMAC-SHA256\nLTAIenifab\n/enifab.v1.Vpc/DescribeVpcs\n2026-11-27T03:45:23Z\nn-1");
        let sig = signature("testsecret", &sts);
        assert_eq!(sig, "50a42631573dafc427f2cc0a7397b00f9f3804ddf761d07804a75d773ddf4a6f");
        assert!(verify("testsecret", &sts, &sig));
        assert!(verify("testsecret", &sts, &sig.to_uppercase()));
        assert!(!verify("other", &sts, &sig));
        assert!(!verify("testsecret", &sts, "not hex"));
        assert!(!verify("testsecret", &sts, &sig[1..]));

        let key = AccessKey { id: "LTAIenifab".into(), secret: "testsecret".into() };
        let md = key.metadata("/enifab.v1.Vpc/DescribeVpcs", "2026-11-27T03:45:23Z", "n-1");
        assert_eq!(md[3], (SIGNATURE, sig));
    }

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
    fn timestamps_format_as_they_parse() {
        for t in [0, 1_795_751_123, 1_709_164_800, 951_782_400, 4_102_444_799] {
            assert_eq!(parse_timestamp(&format_timestamp(t)), Some(t), "{}", format_timestamp(t));
        }
        assert_eq!(format_timestamp(1_795_751_123), "2026-11-27T03:45:23Z");
        assert_eq!(format_timestamp(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn calls_are_signed_now_in_both_kinds_of_map() {
        let key = AccessKey::node("i-a", " token\n");
        assert_eq!((key.id.as_str(), key.secret.as_str()), ("node:i-a", "token"));
        assert!(!format!("{key:?}").contains("token\""), "{key:?}");

        let path = "/enifab.v1.Fabric/RegisterNode";
        let mut md = MetadataMap::new();
        md.insert("x-other", "kept".parse().unwrap());
        key.sign_metadata(&mut md, path);
        let get = |name: &str| md.get(name).unwrap().to_str().unwrap().to_string();
        assert_eq!(get("x-other"), "kept");
        assert_eq!(get(ACCESS_KEY_ID), "node:i-a");
        assert_eq!(get(NONCE).len(), 32);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        assert!((parse_timestamp(&get(TIMESTAMP)).unwrap() - now).abs() < 60);
        let sts = string_to_sign("node:i-a", path, &get(TIMESTAMP), &get(NONCE));
        assert!(verify("token", &sts, &get(SIGNATURE)));

        let mut headers = http::HeaderMap::new();
        key.sign(&mut headers, path);
        assert_eq!(headers.len(), 4);
        assert_ne!(headers[NONCE], get(NONCE), "a nonce per call");
        // An id no header can carry is left out; the server answers MissingAccessKeyId.
        let mut headers = http::HeaderMap::new();
        AccessKey { id: "new\nline".into(), secret: "s".into() }.sign(&mut headers, path);
        assert!(headers.get(ACCESS_KEY_ID).is_none() && headers.get(SIGNATURE).is_some());
    }

    #[test]
    fn keys_files_give_their_first_pair() {
        let keys = parse_keys("# keys\nLTAIterway  s3cret\nLTAIccm:other\n\nLTAIterway=later\nLTAIa\tb\n").unwrap();
        let want = [("LTAIterway", "later"), ("LTAIccm", "other"), ("LTAIa", "b")];
        assert_eq!(keys, want.map(|(a, b)| (a.to_string(), b.to_string())));
        assert_eq!(parse_keys("ok 1\nlonely\n"), Err(BadLine(2)));
        assert_eq!(parse_keys("id:\n"), Err(BadLine(1)));
        assert_eq!(parse_keys("# nothing\n").unwrap(), vec![]);

        let dir = std::env::temp_dir().join(format!("enifab-proto-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let good = file("good", "zz first\naa second\n");
        assert_eq!(AccessKey::first_in_file(&good).unwrap(), AccessKey { id: "zz".into(), secret: "first".into() });
        let empty = file("empty", "# none yet\n");
        let e = AccessKey::first_in_file(&empty).unwrap_err().to_string();
        assert!(e.ends_with("holds no `AccessKeyId AccessKeySecret` line"), "{e}");
        let bad = file("bad", "zz first\nlonely\n");
        let e = AccessKey::first_in_file(&bad).unwrap_err().to_string();
        assert!(e.ends_with("bad: line 2: expected `AccessKeyId AccessKeySecret`"), "{e}");
        let e = AccessKey::first_in_file(&dir.join("missing")).unwrap_err().to_string();
        assert!(e.starts_with("reading ") && e.contains("missing: "), "{e}");

        let given = AccessKey::from_parts(Some("id".into()), Some("s".into()), Some(&good)).unwrap();
        assert_eq!(given.unwrap().id, "id", "a given pair comes before the file");
        assert_eq!(AccessKey::from_parts(Some("id".into()), None, Some(&good)).unwrap().unwrap().id, "zz");
        assert_eq!(AccessKey::from_parts(Some("id".into()), None, None).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
