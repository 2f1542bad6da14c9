//! The two request-signature schemes of Alibaba Cloud's RPC-style API, as pure functions.
//!
//! - **RPC v1, HMAC-SHA1** (the old Go SDK Terway uses, reference §1.2): every query and form
//!   parameter except `Signature`, sorted by name, each name and value percent-encoded (RFC 3986:
//!   only `A–Z a–z 0–9 - _ . ~` stay literal), joined `k=v&…`; the string to sign is
//!   `METHOD&%2F&` + percent-encode(that); the signature is
//!   base64(HMAC-SHA1(key = secret + "&", string to sign)).
//! - **ACS3-HMAC-SHA256** (the tea/darabonba SDKs): a canonical request
//!   `METHOD\nPATH\nQUERY\nHEADERS\nSIGNED_HEADERS\nhex(sha256(body))`, where QUERY is the sorted,
//!   percent-encoded query, HEADERS one `name:value\n` line per signed header (lower-case names,
//!   trimmed values, several values sorted and joined by `,`); the string to sign is
//!   `ACS3-HMAC-SHA256\n` + hex(sha256(canonical request)); the signature is
//!   hex(HMAC-SHA256(secret, string to sign)).
//!
//! enifab's own gRPC scheme, ENIFAB-HMAC-SHA256, is not here: it lives with the clients that sign
//! with it, in `enifab_proto::auth`, which the gRPC check (`auth::Auth::verify_grpc`) calls, and
//! whose HMAC-SHA256 ACS3 shares.
//!
//! Nothing here decides whether a request is allowed (see `auth`); known-answer tests pin both
//! schemes to what the official SDK's own signer produces for the same input.

use base64::Engine;
use enifab_proto::auth::{hmac_sha256_hex, hmac_sha256_verify};
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Everything but RFC 3986's unreserved characters is escaped.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Percent-encode as both schemes do (`' '` → `%20`, `*` → `%2A`, `~` literal).
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, RFC3986).to_string()
}

/// Sorted `k=v&…` of `pairs`, names and values encoded; the sort is by raw name, then value.
fn canonical_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut v: Vec<(&str, &str)> = pairs.collect();
    v.sort();
    v.iter().map(|(k, val)| format!("{}={}", encode(k), encode(val))).collect::<Vec<_>>().join("&")
}

/// RPC v1's string to sign over `params` (query and form together); `Signature` is left out.
pub fn rpc_string_to_sign<'a>(method: &str, params: impl IntoIterator<Item = &'a (String, String)>) -> String {
    let canonical =
        canonical_pairs(params.into_iter().filter(|(k, _)| k != "Signature").map(|(k, v)| (k.as_str(), v.as_str())));
    format!("{method}&{}&{}", encode("/"), encode(&canonical))
}

/// RPC v1's HMAC-SHA1 over `string_to_sign`, keyed with `secret&`.
fn rpc_mac(secret: &str, string_to_sign: &str) -> Hmac<Sha1> {
    let mut mac = Hmac::<Sha1>::new_from_slice(format!("{secret}&").as_bytes()).expect("HMAC takes any key length");
    mac.update(string_to_sign.as_bytes());
    mac
}

/// RPC v1's signature of `string_to_sign` with `secret`.
pub fn rpc_signature(secret: &str, string_to_sign: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(rpc_mac(secret, string_to_sign).finalize().into_bytes())
}

/// Whether `signature` (base64) is RPC v1's signature of `string_to_sign`, compared in constant
/// time.
pub fn rpc_verify(secret: &str, string_to_sign: &str, signature: &str) -> bool {
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    rpc_mac(secret, string_to_sign).verify_slice(&given).is_ok()
}

/// The algorithm name ACS3 signs with.
pub const ACS3_ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// `hex(sha256(bytes))`, ACS3's payload hash.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// ACS3's canonical request. `headers` are the signed headers' (lower-case name, values) in the
/// order of `signed_headers`.
pub fn acs3_canonical_request(
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(String, Vec<String>)],
    payload_hash: &str,
) -> String {
    let canonical_query = canonical_pairs(query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut canonical_headers = String::new();
    for (name, values) in headers {
        let mut vals: Vec<&str> = values.iter().map(|v| v.trim()).collect();
        vals.sort_unstable();
        canonical_headers.push_str(&format!("{name}:{}\n", vals.join(",")));
    }
    let signed: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    let path = if path.is_empty() { "/" } else { path };
    format!("{method}\n{path}\n{canonical_query}\n{canonical_headers}\n{}\n{payload_hash}", signed.join(";"))
}

/// ACS3's string to sign for a canonical request.
pub fn acs3_string_to_sign(canonical_request: &str) -> String {
    format!("{ACS3_ALGORITHM}\n{}", sha256_hex(canonical_request.as_bytes()))
}

/// ACS3's signature (lower-case hex).
pub fn acs3_signature(secret: &str, string_to_sign: &str) -> String {
    hmac_sha256_hex(secret.as_bytes(), string_to_sign)
}

/// Whether `signature` (hex) is ACS3's signature of `string_to_sign`, in constant time.
pub fn acs3_verify(secret: &str, string_to_sign: &str, signature: &str) -> bool {
    hmac_sha256_verify(secret.as_bytes(), string_to_sign, signature)
}

/// The parts of an `Authorization: ACS3-HMAC-SHA256 Credential=…,SignedHeaders=…,Signature=…`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acs3Authorization {
    pub algorithm: String,
    pub access_key_id: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Parse an ACS3 `Authorization` header; `None` if it is not one.
pub fn parse_acs3_authorization(value: &str) -> Option<Acs3Authorization> {
    let (algorithm, rest) = value.trim().split_once(' ')?;
    if !algorithm.starts_with("ACS3-") {
        return None;
    }
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Credential" => credential = Some(v.to_string()),
            "SignedHeaders" => signed = Some(v.split(';').map(|h| h.trim().to_ascii_lowercase()).collect()),
            "Signature" => signature = Some(v.to_string()),
            _ => {}
        }
    }
    Some(Acs3Authorization {
        algorithm: algorithm.to_string(),
        access_key_id: credential?,
        signed_headers: signed?,
        signature: signature?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn encoding_is_rfc3986() {
        assert_eq!(encode("a b*c~d/e:f-_."), "a%20b%2Ac~d%2Fe%3Af-_.");
        assert_eq!(encode("é"), "%C3%A9");
    }

    /// Expected value computed by `alibabacloud_tea_openapi.utils.Utils.get_rpcsignature`
    /// (alibabacloud-tea-openapi 0.4.6) for the same parameters, method and secret.
    #[test]
    fn rpc_v1_matches_the_sdk_signer() {
        let params = p(&[
            ("AccessKeyId", "testid"),
            ("Action", "DescribeNetworkInterfaces"),
            ("Format", "JSON"),
            ("RegionId", "cn-hongkong"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("SignatureType", ""),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2026-11-27T03:45:23Z"),
            ("Version", "2014-05-26"),
            ("Tag.1.Key", "creator"),
            ("Tag.1.Value", "terway controller*~"),
        ]);
        let sts = rpc_string_to_sign("POST", &params);
        assert!(sts.starts_with("POST&%2F&AccessKeyId%3Dtestid%26Action%3D"), "{sts}");
        assert!(sts.contains("SignatureType%3D%26"), "empty values are signed: {sts}");
        assert_eq!(rpc_signature("testsecret", &sts), "olGnPoXSYsl5aOSiDjvv4AUwzH4=");
        assert!(rpc_verify("testsecret", &sts, "olGnPoXSYsl5aOSiDjvv4AUwzH4="));
        assert!(!rpc_verify("other", &sts, "olGnPoXSYsl5aOSiDjvv4AUwzH4="));
        assert!(!rpc_verify("testsecret", &sts, "not base64!"));
        let mut with_sig = params.clone();
        with_sig.push(("Signature".into(), "ignored".into()));
        assert_eq!(rpc_string_to_sign("POST", &with_sig), sts, "Signature itself is not signed");
    }

    /// Expected value computed by `alibabacloud_tea_openapi.utils.Utils.get_authorization`
    /// (alibabacloud-tea-openapi 0.4.6) for the same request and secret.
    #[test]
    fn acs3_matches_the_sdk_signer() {
        let query = p(&[("RegionId", "cn-hongkong"), ("NetworkInterfaceId.1", "eni-abc"), ("Description", "a b/c*~")]);
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(sha256_hex(b""), empty);
        let headers: Vec<(String, Vec<String>)> = [
            ("accept", "application/json"),
            ("host", "127.0.0.1:50051"),
            ("x-acs-action", "DescribeNetworkInterfaces"),
            ("x-acs-content-sha256", empty),
            ("x-acs-date", "2026-11-27T03:45:23Z"),
            ("x-acs-signature-nonce", "abc123"),
            ("x-acs-version", "2014-05-26"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
        .collect();
        let canonical = acs3_canonical_request("POST", "/", &query, &headers, empty);
        let sts = acs3_string_to_sign(&canonical);
        let expected = "61681f00a69f2bb0cf867f390ad1b0324a67eaf00cff92a482efe014bb110c20";
        assert_eq!(acs3_signature("testsecret", &sts), expected);
        assert!(acs3_verify("testsecret", &sts, expected));
        assert!(!acs3_verify("testsecret", &sts, &expected.replace('6', "7")));
        assert!(!acs3_verify("testsecret", &sts, "zz"));
    }

    #[test]
    fn authorization_headers_parse() {
        let a = parse_acs3_authorization(
            "ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=host;x-acs-action;X-Acs-Date,Signature=00ff",
        )
        .unwrap();
        assert_eq!(a.algorithm, "ACS3-HMAC-SHA256");
        assert_eq!(a.access_key_id, "AK");
        assert_eq!(a.signed_headers, vec!["host", "x-acs-action", "x-acs-date"]);
        assert_eq!(a.signature, "00ff");
        assert_eq!(parse_acs3_authorization("Bearer xyz"), None);
        assert_eq!(parse_acs3_authorization("ACS3-HMAC-SHA256 Credential=AK"), None);
    }
}
