//! An RPC-style request off the wire: parameters from the query string and the url-encoded form
//! body, the action and version from the parameters or the new SDKs' `x-acs-action` /
//! `x-acs-version` headers, and the common parameters set apart from the action's own.
//!
//! Pure: no I/O, no signatures (see `auth`), no knowledge of what an action means. It follows
//! the two request shapes of reference §1.2: the old Go SDK (`POST /?Action=…&Version=…&…` with
//! every parameter in the query, an empty form body, `Content-Type:
//! application/x-www-form-urlencoded`) and the tea/darabonba SDKs (`POST /?<action params>` with
//! `x-acs-*` headers and `Authorization: ACS3-HMAC-SHA256 …`). `GET` works the same way.
//!
//! Decoding is strict: `+` is a space (form encoding, what both SDKs send for spaces), `%XX` must
//! be a valid escape, and the result must be UTF-8; anything else is `InvalidParameter`, so a
//! malformed request changes nothing. So is an `Action` or `Version` given twice (in the query,
//! the form, or both), or a header `x-acs-action`/`x-acs-version` that contradicts the
//! parameter: which one "wins" would otherwise be a guess, and the signature checker and the
//! router could guess differently.

use axum::http::{HeaderMap, Method, Uri};

use super::error::ApiError;

/// The most bytes a form body may carry (the cloud documents no figure; CLB's `BackendServers`
/// JSON, the largest parameter we know of, stays far below).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// The longest single parameter value accepted.
pub const MAX_VALUE_BYTES: usize = 32 * 1024;
/// The most parameters one request may carry (query and body together).
pub const MAX_PARAMS: usize = 2048;

/// Parameters every request may carry that belong to the gateway, not to the action: they are
/// checked (signatures, timestamps) or ignored, and never reach a handler. `RegionId` is not one
/// of them: every action takes it and the handlers check it against the server's region.
pub const COMMON_PARAMS: &[&str] = &[
    "Action",
    "Version",
    "Format",
    "Timestamp",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "SignatureType",
    "Signature",
    "AccessKeyId",
    "SecurityToken",
    "BearerToken",
];

/// A decoded request, before authentication and dispatch.
#[derive(Clone, Debug)]
pub struct RpcRequest {
    pub method: Method,
    pub path: String,
    /// The URI's authority (HTTP/2 carries the host here rather than in a `Host` header).
    pub authority: Option<String>,
    /// Query parameters in wire order (decoded).
    pub query: Vec<(String, String)>,
    /// Form-body parameters in wire order (decoded).
    pub form: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl RpcRequest {
    /// Decode the query string and body. The body must be a url-encoded form (or empty).
    pub fn decode(method: Method, uri: &Uri, headers: HeaderMap, body: Vec<u8>) -> Result<RpcRequest, ApiError> {
        let query = decode_pairs(uri.query().unwrap_or(""))?;
        let form = if body.is_empty() {
            Vec::new()
        } else {
            let ctype = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
            if !ctype.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded") {
                return Err(ApiError::invalid(
                    "Content-Type",
                    format!("A request body must be application/x-www-form-urlencoded, not {ctype:?}."),
                ));
            }
            let text = std::str::from_utf8(&body).map_err(|_| ApiError::invalid("Body", "It is not UTF-8."))?;
            decode_pairs(text)?
        };
        if query.len() + form.len() > MAX_PARAMS {
            return Err(ApiError::invalid("Parameters", format!("At most {MAX_PARAMS} parameters are accepted.")));
        }
        let authority = uri.authority().map(|a| a.to_string());
        Ok(RpcRequest { method, path: uri.path().to_string(), authority, query, form, headers, body })
    }

    /// The first value of `name` among the query and form parameters.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().chain(&self.form).find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `Action`, from the parameters or the `x-acs-action` header; `None` when neither gives
    /// one.
    pub fn action(&self) -> Result<Option<&str>, ApiError> {
        self.one_of("Action", "x-acs-action")
    }

    /// `Version`, from the parameters or the `x-acs-version` header.
    pub fn version(&self) -> Result<Option<&str>, ApiError> {
        self.one_of("Version", "x-acs-version")
    }

    /// The one value of parameter `param` and header `header`: each at most once, and the same
    /// where both are given.
    fn one_of(&self, param: &str, header: &str) -> Result<Option<&str>, ApiError> {
        let mut params = self.query.iter().chain(&self.form).filter(|(k, _)| k == param).map(|(_, v)| v.as_str());
        let from_param = params.next();
        if params.next().is_some() {
            return Err(ApiError::invalid(param, "It is given more than once."));
        }
        let mut headers = self.headers.get_all(header).iter();
        let from_header = match headers.next() {
            Some(v) => Some(v.to_str().map_err(|_| ApiError::invalid(header, "It is not visible ASCII."))?),
            None => None,
        };
        if headers.next().is_some() {
            return Err(ApiError::invalid(header, "It is given more than once."));
        }
        match (from_param, from_header) {
            (Some(p), Some(h)) if p != h => {
                Err(ApiError::invalid(param, format!("It is {p:?}, but the {header} header says {h:?}.")))
            }
            (p, h) => Ok(p.or(h).filter(|v| !v.is_empty())),
        }
    }

    /// The action's own parameters: query then form, common parameters left out.
    pub fn action_params(&self) -> Vec<(String, String)> {
        self.query.iter().chain(&self.form).filter(|(k, _)| !COMMON_PARAMS.contains(&k.as_str())).cloned().collect()
    }
}

/// `a=1&b=x+y&c=%2F` → `[(a, 1), (b, "x y"), (c, "/")]`. Empty segments are skipped; a name
/// without `=` has an empty value.
pub fn decode_pairs(s: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for seg in s.split('&').filter(|seg| !seg.is_empty()) {
        let (k, v) = seg.split_once('=').unwrap_or((seg, ""));
        let key =
            decode_component(k).ok_or_else(|| ApiError::invalid(k, "The name is not valid percent-encoded UTF-8."))?;
        let value = decode_component(v)
            .ok_or_else(|| ApiError::invalid(&key, "The value is not valid percent-encoded UTF-8."))?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(ApiError::invalid(&key, format!("The value is longer than {MAX_VALUE_BYTES} bytes.")));
        }
        out.push((key, value));
    }
    Ok(out)
}

/// Decode one form component: `+` → space, `%XX` → byte, strictly.
fn decode_component(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                // Two hex digits exactly (`from_str_radix` alone would take "+F").
                let hex = bytes.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn pairs_decode_like_a_form() {
        let p = decode_pairs(
            "Action=CreateNetworkInterface&Description=interface+create+by+terway&Tag.1.Key=a%2Fb&Empty=&Bare&&",
        )
        .unwrap();
        assert_eq!(p[0], ("Action".into(), "CreateNetworkInterface".into()));
        assert_eq!(p[1].1, "interface create by terway");
        assert_eq!(p[2], ("Tag.1.Key".into(), "a/b".into()));
        assert_eq!(p[3], ("Empty".into(), String::new()));
        assert_eq!(p[4], ("Bare".into(), String::new()));
        assert_eq!(p.len(), 5);
    }

    #[test]
    fn bad_encodings_are_invalid_parameters() {
        for bad in ["A=%", "A=%zz", "A=%C3%28", "%FF=1", "A=%+F", "A=%-1"] {
            let e = decode_pairs(bad).unwrap_err();
            assert_eq!((e.status, e.code.as_str()), (400, "InvalidParameter"), "{bad}");
        }
        let long = format!("A={}", "x".repeat(MAX_VALUE_BYTES + 1));
        assert_eq!(decode_pairs(&long).unwrap_err().code, "InvalidParameter");
    }

    #[test]
    fn action_and_version_come_from_params_or_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-acs-action", HeaderValue::from_static("DescribeVSwitches"));
        h.insert("x-acs-version", HeaderValue::from_static("2016-04-28"));
        let r = RpcRequest::decode(Method::POST, &uri("/?VSwitchId=vsw-1&RegionId=cn-hongkong"), h, vec![]).unwrap();
        assert_eq!((r.action().unwrap(), r.version().unwrap()), (Some("DescribeVSwitches"), Some("2016-04-28")));
        assert_eq!(r.action_params().len(), 2, "RegionId is an action parameter");

        let r = RpcRequest::decode(
            Method::POST,
            &uri("/?Action=DeleteNetworkInterface&Version=2014-05-26&Format=JSON&Signature=x&NetworkInterfaceId=eni-1"),
            HeaderMap::new(),
            vec![],
        )
        .unwrap();
        assert_eq!(r.action().unwrap(), Some("DeleteNetworkInterface"));
        assert_eq!(r.action_params(), vec![("NetworkInterfaceId".to_string(), "eni-1".to_string())]);
    }

    #[test]
    fn an_action_or_version_given_twice_or_contradicted_is_invalid() {
        let decode = |uri_s: &str, headers: &[(&'static str, &'static str)], body: &str| {
            let mut h = HeaderMap::new();
            for (k, v) in headers {
                h.append(*k, HeaderValue::from_static(v));
            }
            h.insert("content-type", HeaderValue::from_static("application/x-www-form-urlencoded"));
            RpcRequest::decode(Method::POST, &uri(uri_s), h, body.as_bytes().to_vec()).unwrap()
        };
        let invalid = |r: &RpcRequest| {
            let e = r.action().and_then(|_| r.version()).unwrap_err();
            assert_eq!((e.status, e.code.as_str()), (400, "InvalidParameter"));
            e.message
        };
        let twice = decode("/?Action=DescribeVpcs&Action=DeleteVpc&Version=2016-04-28", &[], "");
        assert!(invalid(&twice).contains("\"Action\""));
        let query_and_form = decode("/?Action=DescribeVpcs&Version=2016-04-28", &[], "Action=DeleteVpc");
        invalid(&query_and_form);
        let versions = decode("/?Action=DescribeVpcs&Version=2016-04-28&Version=2014-05-26", &[], "");
        assert!(invalid(&versions).contains("\"Version\""));
        let contradicted = decode("/?Action=DescribeVpcs&Version=2016-04-28", &[("x-acs-action", "DeleteVpc")], "");
        assert!(invalid(&contradicted).contains("x-acs-action"));
        let two_headers =
            decode("/?Version=2016-04-28", &[("x-acs-action", "DescribeVpcs"), ("x-acs-action", "DeleteVpc")], "");
        invalid(&two_headers);
        let agreeing = decode("/?Action=DescribeVpcs", &[("x-acs-action", "DescribeVpcs")], "");
        assert_eq!(agreeing.action().unwrap(), Some("DescribeVpcs"));
        assert_eq!(agreeing.version().unwrap(), None);
    }

    #[test]
    fn a_body_must_be_a_form() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        let e = RpcRequest::decode(Method::POST, &uri("/"), h.clone(), b"{}".to_vec()).unwrap_err();
        assert_eq!(e.code, "InvalidParameter");
        h.insert("content-type", HeaderValue::from_static("application/x-www-form-urlencoded; charset=UTF-8"));
        let r = RpcRequest::decode(Method::POST, &uri("/?Action=X"), h, b"VSwitchId=vsw-1".to_vec()).unwrap();
        assert_eq!(r.param("VSwitchId"), Some("vsw-1"));
    }
}
