//! Time as the model sees it: milliseconds since the Unix epoch, handed in by the caller.
//!
//! The model never reads a clock. Formatting follows the cloud: `CreationTime` of ENIs, vSwitches,
//! VPCs and security groups is `YYYY-MM-DDThh:mm:ssZ` (Terway's GC parses it with the layout
//! `2006-01-02T15:04:05Z`); instances use the minute precision `YYYY-MM-DDThh:mmZ` seen in
//! DescribeInstances responses.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Millis(pub u64);

impl Millis {
    pub const ZERO: Millis = Millis(0);

    pub fn saturating_add_ms(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }

    /// `2026-11-27T03:45:23Z`
    pub fn to_cloud_seconds(self) -> String {
        let (y, mo, d, h, mi, s) = civil(self.0 / 1000);
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    }

    /// `2026-11-27T03:45Z`, the precision DescribeInstances uses.
    pub fn to_cloud_minutes(self) -> String {
        let (y, mo, d, h, mi, _) = civil(self.0 / 1000);
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}Z")
    }
}

/// Seconds since the epoch to (year, month, day, hour, minute, second), proleptic Gregorian.
fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, mi, s) = ((rem / 3600) as u32, ((rem % 3600) / 60) as u32, (rem % 60) as u32);
    // Howard Hinnant's days-to-civil algorithm: eras of 400 years keep the arithmetic exact.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, h, mi, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_cloud() {
        assert_eq!(Millis(0).to_cloud_seconds(), "1970-01-01T00:00:00Z");
        // 2026-11-27T03:45:23Z
        assert_eq!(Millis(1_795_751_123_000).to_cloud_seconds(), "2026-11-27T03:45:23Z");
        assert_eq!(Millis(1_795_751_123_000).to_cloud_minutes(), "2026-11-27T03:45Z");
        // A leap day.
        assert_eq!(Millis(1_709_164_800_000).to_cloud_seconds(), "2024-02-29T00:00:00Z");
    }
}
