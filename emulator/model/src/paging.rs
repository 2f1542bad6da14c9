//! Paging as the cloud does it: `PageNumber`/`PageSize` (with `TotalCount`) or
//! `MaxResults`/`NextToken` (with an opaque token, empty on the last page).
//!
//! Results are ordered by resource ID, which is stable across calls and restarts; the token
//! encodes the last ID returned, so a page never skips or repeats an item that existed across
//! both calls.

use serde::{Deserialize, Serialize};

use crate::{ModelError, Result};

/// The paging parameters of a Describe request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    pub page_number: Option<u32>,
    pub page_size: Option<u32>,
    pub max_results: Option<u32>,
    pub next_token: Option<String>,
}

/// Bounds of one Describe action's page sizes.
#[derive(Clone, Copy, Debug)]
pub struct PageBounds {
    pub default_size: u32,
    pub max_page_size: u32,
    pub min_results: u32,
    pub max_results: u32,
}

/// What a page says about itself, in the cloud's fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageInfo {
    pub total_count: u32,
    pub page_number: u32,
    pub page_size: u32,
    pub next_token: String,
}

fn encode_token(last_id: &str) -> String {
    last_id.bytes().map(|b| format!("{:02x}", b ^ 0x5a)).collect()
}

fn decode_token(token: &str) -> Result<String> {
    if !token.len().is_multiple_of(2) || token.len() > 256 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ModelError::InvalidNextToken);
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok().map(|b| b ^ 0x5a))
        .collect();
    bytes.and_then(|b| String::from_utf8(b).ok()).ok_or(ModelError::InvalidNextToken)
}

/// Cut one page out of `items`, which must be sorted by `id`. Token mode is chosen when the
/// request has `MaxResults` or `NextToken`; `MaxResults` is clamped into the action's range
/// (out-of-range values are corrected, not rejected, as the cloud does).
pub fn paginate<T>(
    items: Vec<T>,
    id: impl Fn(&T) -> &str,
    req: &PageRequest,
    b: PageBounds,
) -> Result<(Vec<T>, PageInfo)> {
    let total = items.len() as u32;
    let token_mode = req.max_results.is_some() || req.next_token.as_deref().is_some_and(|t| !t.is_empty());
    if token_mode {
        let size =
            req.max_results.unwrap_or(b.default_size.max(b.min_results)).clamp(b.min_results, b.max_results) as usize;
        let start = match req.next_token.as_deref().filter(|t| !t.is_empty()) {
            Some(tok) => {
                let after = decode_token(tok)?;
                items.partition_point(|it| id(it) <= after.as_str())
            }
            None => 0,
        };
        let end = (start + size).min(items.len());
        let next_token =
            if end < items.len() && end > start { encode_token(id(&items[end - 1])) } else { String::new() };
        let page: Vec<T> = items.into_iter().skip(start).take(end - start).collect();
        Ok((page, PageInfo { total_count: total, page_number: 0, page_size: size as u32, next_token }))
    } else {
        let number = req.page_number.unwrap_or(1);
        if number == 0 {
            return Err(ModelError::invalid("PageNumber", "must be at least 1"));
        }
        let size = req.page_size.unwrap_or(b.default_size);
        if size == 0 || size > b.max_page_size {
            return Err(ModelError::invalid("PageSize", format!("must be 1 to {}", b.max_page_size)));
        }
        let start = ((number - 1) as usize).saturating_mul(size as usize);
        let page: Vec<T> = items.into_iter().skip(start).take(size as usize).collect();
        Ok((page, PageInfo { total_count: total, page_number: number, page_size: size, next_token: String::new() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: PageBounds = PageBounds { default_size: 10, max_page_size: 100, min_results: 10, max_results: 500 };

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("eni-{i:04}")).collect()
    }

    #[test]
    fn token_pages_cover_everything_once() {
        let all = ids(1234);
        let mut seen = Vec::new();
        let mut req = PageRequest { max_results: Some(500), ..Default::default() };
        loop {
            let (page, info) = paginate(all.clone(), |s| s, &req, B).unwrap();
            assert!(page.len() <= 500);
            seen.extend(page);
            if info.next_token.is_empty() {
                break;
            }
            req.next_token = Some(info.next_token);
        }
        assert_eq!(seen, all);
    }

    #[test]
    fn max_results_is_clamped_and_bad_tokens_refused() {
        let (page, info) =
            paginate(ids(50), |s| s, &PageRequest { max_results: Some(3), ..Default::default() }, B).unwrap();
        assert_eq!((page.len(), info.page_size), (10, 10));
        let (page, _) =
            paginate(ids(900), |s| s, &PageRequest { max_results: Some(9999), ..Default::default() }, B).unwrap();
        assert_eq!(page.len(), 500);
        let bad = PageRequest { next_token: Some("zz".into()), ..Default::default() };
        assert_eq!(paginate(ids(5), |s| s, &bad, B).unwrap_err().code(), "InvalidNextToken.Malformed");
    }

    #[test]
    fn page_numbers() {
        let (page, info) = paginate(
            ids(25),
            |s| s,
            &PageRequest { page_number: Some(3), page_size: Some(10), ..Default::default() },
            B,
        )
        .unwrap();
        assert_eq!(page, vec!["eni-0020", "eni-0021", "eni-0022", "eni-0023", "eni-0024"]);
        assert_eq!(info.total_count, 25);
        assert!(paginate(ids(5), |s| s, &PageRequest { page_size: Some(101), ..Default::default() }, B).is_err());
    }
}
