//! `--as-of`: a point of the cluster's history, given as a log index
//! (`1234`) or an RFC 3339 time (`2026-12-06T01:02:03Z`,
//! `2026-12-06T02:02:03.5+01:00`), parsed the same way by the CLI (to fail
//! early, exit 2) and by the daemon (400). A time is read against the
//! entry clock the leader stamps on every log entry (ms since the Unix
//! epoch); the state machine resolves it ([`SmReader::resolve_as_of`]).
//!
//! [`SmReader::resolve_as_of`]: filesyncd_raft::state_machine::SmReader::resolve_as_of

use axum::http::StatusCode;
use filesyncd_raft::history::{AsOf, AsOfSpec};
use filesyncd_raft::state_machine::SmError;

use super::types::AsOfDesc;
use crate::api::{internal, ApiError};

/// Parses `--as-of`: a plain integer is a log index, anything else must be
/// an RFC 3339 time.
pub fn parse_as_of(s: &str) -> Result<AsOfSpec, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(AsOfSpec::Index)
            .map_err(|_| format!("--as-of {s:?}: log index out of range"));
    }
    rfc3339_ms(s).map(AsOfSpec::Time).map_err(|e| {
        format!(
            "--as-of {s:?}: {e} (expected a log index such as 1234, or an RFC 3339 time such as \
             2026-12-06T01:02:03Z or 2026-12-06T02:02:03+01:00)"
        )
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// An RFC 3339 date-time (`T`, `t` or a space between date and time;
/// fractions of a second kept to the millisecond; `Z` or `±HH:MM`) in ms
/// since the Unix epoch. A leap second (`:60`) counts as `:59.999`.
pub fn rfc3339_ms(s: &str) -> Result<u64, String> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Result<u32, String> {
        let part = b.get(from..from + len).ok_or("too short")?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(format!("expected digits at position {}", from + 1));
        }
        std::str::from_utf8(part)
            .map_err(|e| e.to_string())?
            .parse()
            .map_err(|e: std::num::ParseIntError| e.to_string())
    };
    let sep = |at: usize, allowed: &[u8]| -> Result<(), String> {
        match b.get(at) {
            Some(c) if allowed.contains(c) => Ok(()),
            _ => Err(format!(
                "expected {:?} at position {}",
                allowed.iter().map(|c| *c as char).collect::<String>(),
                at + 1
            )),
        }
    };
    let year = num(0, 4)?;
    sep(4, b"-")?;
    let month = num(5, 2)?;
    sep(7, b"-")?;
    let day = num(8, 2)?;
    sep(10, b"Tt ")?;
    let hour = num(11, 2)?;
    sep(13, b":")?;
    let min = num(14, 2)?;
    sep(16, b":")?;
    let sec = num(17, 2)?;
    let y = i64::from(year);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(y, month) {
        return Err("no such date".into());
    }
    if hour > 23 || min > 59 || sec > 60 {
        return Err("no such time of day".into());
    }
    let mut i = 19;
    let mut ms = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                ms = ms * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return Err("expected digits after the decimal point".into());
        }
        for _ in (i - start)..3 {
            ms *= 10;
        }
    }
    let offset_min: i64 =
        match b.get(i) {
            Some(b'Z' | b'z') if i + 1 == b.len() => 0,
            Some(c @ (b'+' | b'-')) if i + 6 == b.len() => {
                let oh = num(i + 1, 2)?;
                sep(i + 3, b":")?;
                let om = num(i + 4, 2)?;
                if oh > 23 || om > 59 {
                    return Err("no such UTC offset".into());
                }
                let o = i64::from(oh * 60 + om);
                if *c == b'-' {
                    -o
                } else {
                    o
                }
            }
            _ => return Err(
                "expected `Z` or a UTC offset such as +01:00 after the time of day (nothing else)"
                    .into(),
            ),
        };
    let (sec, ms) = if sec == 60 { (59, 999) } else { (sec, ms) };
    let secs = days_from_civil(y, month, day) * 86_400
        + i64::from(hour) * 3600
        + i64::from(min) * 60
        + i64::from(sec)
        - offset_min * 60;
    let total = secs
        .checked_mul(1000)
        .and_then(|v| v.checked_add(i64::from(ms)))
        .ok_or("out of range")?;
    u64::try_from(total).map_err(|_| "before 1970-01-01T00:00:00Z".into())
}

/// What the answer says about the point it read the tree at.
pub fn describe(given: &str, at: &AsOf) -> AsOfDesc {
    AsOfDesc {
        given: given.trim().to_owned(),
        index: at.time_ms.is_none().then_some(at.index),
        time_ms: at.time_ms,
        applied: at.index,
        floor: at.floor,
    }
}

/// A failed resolution or read, as the API answers it: outside retention
/// and not yet applied are 404 with the reason, anything else 500.
pub(in crate::api) fn as_of_error(given: &str, e: SmError) -> ApiError {
    match e {
        SmError::OutsideRetention { horizon, .. } => ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "as of {given}: outside retention: the history is exact only from log index \
                 {horizon} on (older versions were pruned by --keep-versions/--keep-days); \
                 pick a later time or index"
            ),
        ),
        SmError::NotYetApplied { applied, .. } => ApiError(
            StatusCode::NOT_FOUND,
            format!("as of {given}: beyond the last applied log index {applied}"),
        ),
        other => internal(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        let t = |s: &str| rfc3339_ms(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(t("1970-01-01T00:00:00Z"), 0);
        assert_eq!(t("2026-12-06T01:02:03Z"), 1_796_518_923_000);
        assert_eq!(t("2026-12-06T02:02:03+01:00"), 1_796_518_923_000);
        assert_eq!(t("2026-12-05T23:32:03-01:30"), 1_796_518_923_000);
        assert_eq!(t("2026-12-06t01:02:03.5z"), 1_796_518_923_500);
        assert_eq!(t("2026-12-06 01:02:03.123456Z"), 1_796_518_923_123);
        assert_eq!(t("2024-02-29T00:00:00Z"), 1_709_164_800_000);
        assert_eq!(t("2016-12-31T23:59:60Z"), 1_483_228_799_999);
        for bad in [
            "",
            "2026-12-06",
            "2026-12-06T01:02:03",
            "2026-12-06T01:02:03+0100",
            "2026-12-06T01:02:03Z ",
            "2026-13-06T01:02:03Z",
            "2025-02-29T00:00:00Z",
            "2026-12-06T24:00:00Z",
            "2026-12-06T01:02:03.Z",
            "1969-12-31T23:59:59Z",
            "26-12-06T01:02:03Z",
            "yesterday",
        ] {
            assert!(rfc3339_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn indexes_and_times() {
        assert_eq!(parse_as_of("1234"), Ok(AsOfSpec::Index(1234)));
        assert_eq!(parse_as_of(" 7 "), Ok(AsOfSpec::Index(7)));
        assert_eq!(
            parse_as_of("1970-01-01T00:00:01Z"),
            Ok(AsOfSpec::Time(1000))
        );
        let e = parse_as_of("12.3").unwrap_err();
        assert!(e.contains("RFC 3339") && e.contains("log index"), "{e}");
        assert!(parse_as_of("99999999999999999999999").is_err());
        assert!(parse_as_of("-5").is_err());
    }
}
