//! Human-readable numbers and times for the CLI tables.

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a time in ms since the Unix epoch.
pub fn utc_ms(ms: u64) -> String {
    let s = filesyncd_raft::paths::utc_stamp(ms);
    // `YYYYMMDD-HHMMSS`
    format!(
        "{}-{}-{} {}:{}:{}",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15]
    )
}

/// [`utc_ms`] of a file mtime in ns; `-` before the epoch.
pub fn utc_ns(ns: i64) -> String {
    u64::try_from(ns).map_or_else(|_| "-".to_string(), |n| utc_ms(n / 1_000_000))
}

/// Bytes with a binary unit: `999 B`, `1.5 KiB`, `12.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A duration in whole seconds: `45s`, `3m05s`, `2h07m`, `3d04h`.
pub fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// The first 16 hex digits of a hash, enough to tell versions apart.
pub fn short(hex: &str) -> &str {
    hex.get(..16).unwrap_or(hex)
}

/// A path as the user typed it, made an index path: `.`/empty is the
/// synced directory itself (`""`), a leading `./` and trailing `/` are
/// dropped. Everything else is left for the daemon to judge.
pub fn index_path(p: &str) -> String {
    let mut s = p;
    while let Some(rest) = s.strip_prefix("./") {
        s = rest;
    }
    if s.len() > 1 {
        s = s.trim_end_matches('/');
    }
    if s == "." {
        s = "";
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(utc_ms(1_735_689_599_000), "2024-12-31 23:59:59");
        assert_eq!(utc_ms(0), "1970-01-01 00:00:00");
        assert_eq!(utc_ns(1_735_689_599_123_456_789), "2024-12-31 23:59:59");
        assert_eq!(utc_ns(-5), "-");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(12 << 20), "12.0 MiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(185), "3m05s");
        assert_eq!(duration(7620), "2h07m");
        assert_eq!(duration(273_600), "3d04h");
        assert_eq!(short("0123456789abcdef0123"), "0123456789abcdef");
        assert_eq!(short("ab"), "ab");
    }

    #[test]
    fn index_paths() {
        assert_eq!(index_path("."), "");
        assert_eq!(index_path(""), "");
        assert_eq!(index_path("./docs/"), "docs");
        assert_eq!(index_path("docs//"), "docs");
        assert_eq!(index_path("a/b"), "a/b");
        assert_eq!(index_path("/"), "/", "left for the daemon to refuse");
        assert_eq!(index_path("../x"), "../x");
    }
}
