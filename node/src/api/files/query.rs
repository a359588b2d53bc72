//! Query strings of the GET routes (`?path=a%2Fb&after=…`), encoded by the
//! CLI and decoded by the server: RFC 3986 percent-encoding, UTF-8. (axum's
//! `Query` extractor is not compiled in; these two functions are all the
//! routes need.)

/// Percent-encodes `s` for a query value: everything but unreserved
/// characters (`A-Z a-z 0-9 - . _ ~`) becomes `%XX`.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes one percent-encoded value (`+` is a space, as forms send it);
/// `None` if an escape is malformed or the bytes are not UTF-8.
pub fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The decoded `key=value` pairs of a query string, in order; `Err` names
/// the first pair that does not decode.
pub fn parse(query: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let Some(q) = query else {
        return Ok(Vec::new());
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match (decode(k), decode(v)) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(format!("malformed query parameter {pair:?}")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in ["", "a/b c.txt", "ü/日本 & =?#%+", "x~y_z-1.2"] {
            assert_eq!(decode(&encode(s)).as_deref(), Some(s), "{s}");
        }
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn parses_pairs_and_refuses_bad_escapes() {
        assert_eq!(
            parse(Some("path=a%2Fb&recursive=1&flag")).unwrap(),
            vec![
                ("path".into(), "a/b".into()),
                ("recursive".into(), "1".into()),
                ("flag".into(), String::new()),
            ]
        );
        assert_eq!(parse(None).unwrap(), vec![]);
        assert_eq!(parse(Some("a=b+c")).unwrap()[0].1, "b c");
        for bad in ["path=%", "path=%zz", "path=%ff", "path=%2"] {
            assert!(parse(Some(bad)).is_err(), "{bad}");
        }
    }
}
