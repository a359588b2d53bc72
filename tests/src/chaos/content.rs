//! Self-describing file contents: a header line, then the payload.
//!
//! ```text
//! FSDCHAOS1 id=n2-000017 path=w2/d1/f5.dat len=5120 b3=<64 hex>\n
//! <len bytes of payload>
//! ```
//!
//! `id` is unique per write (writer node and its sequence number), `path`
//! is where the writer put it, `b3` is blake3 of the payload. A file whose
//! header does not parse, whose payload is not exactly `len` bytes or does
//! not hash to `b3` is partial or corrupt: [`parse`] says which.

use std::fmt;

const MAGIC: &str = "FSDCHAOS1";
/// Longest header line accepted by [`parse`].
const MAX_HEADER: usize = 4096;

/// What a header says about its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub id: String,
    pub path: String,
    pub len: u64,
    pub b3: String,
}

/// Why bytes are not a complete workload file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bad {
    /// No header line, or one that does not parse.
    NoHeader(String),
    /// The payload is shorter or longer than the header says.
    Length { id: String, want: u64, got: u64 },
    /// The payload has the right length and the wrong hash.
    Checksum { id: String },
}

impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bad::NoHeader(why) => write!(f, "no valid header ({why})"),
            Bad::Length { id, want, got } => {
                write!(f, "{id}: payload of {got} bytes, header says {want}")
            }
            Bad::Checksum { id } => write!(f, "{id}: payload does not match its blake3"),
        }
    }
}

/// The whole file for a write: header line + payload.
pub fn encode(id: &str, path: &str, payload: &[u8]) -> Vec<u8> {
    let b3 = blake3::hash(payload).to_hex();
    let mut out = format!(
        "{MAGIC} id={id} path={path} len={} b3={b3}\n",
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Parses and verifies a whole file.
pub fn parse(bytes: &[u8]) -> Result<Header, Bad> {
    let nl = bytes
        .iter()
        .take(MAX_HEADER)
        .position(|b| *b == b'\n')
        .ok_or_else(|| Bad::NoHeader(format!("no newline in the first {MAX_HEADER} bytes")))?;
    let line = std::str::from_utf8(&bytes[..nl])
        .map_err(|_| Bad::NoHeader("header is not UTF-8".into()))?;
    let h = parse_header(line).map_err(Bad::NoHeader)?;
    let payload = &bytes[nl + 1..];
    if payload.len() as u64 != h.len {
        return Err(Bad::Length {
            id: h.id,
            want: h.len,
            got: payload.len() as u64,
        });
    }
    if blake3::hash(payload).to_hex().as_str() != h.b3 {
        return Err(Bad::Checksum { id: h.id });
    }
    Ok(h)
}

fn parse_header(line: &str) -> Result<Header, String> {
    let mut words = line.split(' ');
    if words.next() != Some(MAGIC) {
        return Err(format!("does not start with {MAGIC}"));
    }
    let (mut id, mut path, mut len, mut b3) = (None, None, None, None);
    for w in words {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| format!("bad field {w:?}"))?;
        match k {
            "id" => id = Some(v.to_string()),
            "path" => path = Some(v.to_string()),
            "len" => len = Some(v.parse::<u64>().map_err(|e| format!("len: {e}"))?),
            "b3" => b3 = Some(v.to_string()),
            _ => return Err(format!("unknown field {k:?}")),
        }
    }
    let b3 = b3.ok_or("no b3")?;
    if b3.len() != 64 || !b3.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err("b3 is not 64 hex digits".into());
    }
    Ok(Header {
        id: id.ok_or("no id")?,
        path: path.ok_or("no path")?,
        len: len.ok_or("no len")?,
        b3,
    })
}

/// Whether `name` (a file name) is a conflict copy of `orig` (a file name
/// in the same directory): `<stem>.sync-conflict-<stamp>-<node>[-n].<ext>`,
/// the extension after the last dot unless that dot starts or ends the name.
pub fn is_conflict_copy_of(name: &str, orig: &str) -> bool {
    let (stem, ext) = match orig.rfind('.') {
        Some(i) if i > 0 && i + 1 < orig.len() => (&orig[..i], &orig[i..]),
        _ => (orig, ""),
    };
    let Some(rest) = name.strip_prefix(stem) else {
        return false;
    };
    let Some(rest) = rest.strip_prefix(".sync-conflict-") else {
        return false;
    };
    rest.ends_with(ext) && rest.len() > ext.len()
}

/// Whether `path` is `orig` itself or a conflict copy of it (same directory).
pub fn is_path_or_copy(path: &str, orig: &str) -> bool {
    if path == orig {
        return true;
    }
    let (d1, n1) = split_dir(path);
    let (d2, n2) = split_dir(orig);
    d1 == d2 && is_conflict_copy_of(n1, n2)
}

/// (parent directory, file name); the parent is `""` at the root.
pub fn split_dir(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// A small seeded generator (splitmix64): reproducible workloads without
/// pulling in a crate.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`lo` if the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }

    /// A payload size: mostly small files, some spanning several chunks.
    pub fn payload_len(&mut self) -> usize {
        let r = self.range(0, 100);
        (if r < 60 {
            self.range(0, 4096)
        } else if r < 92 {
            self.range(4096, 100_000)
        } else {
            self.range(100_000, 600_000)
        }) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let f = encode("n1-000001", "w1/a.dat", b"hello");
        let h = parse(&f).unwrap();
        assert_eq!(h.id, "n1-000001");
        assert_eq!(h.path, "w1/a.dat");
        assert_eq!(h.len, 5);
        let empty = encode("n1-000002", "w1/b.dat", b"");
        assert_eq!(parse(&empty).unwrap().len, 0);
    }

    #[test]
    fn truncated_extended_and_flipped_are_caught() {
        let mut rng = Rng::new(7);
        let mut payload = vec![0u8; 10_000];
        rng.fill(&mut payload);
        let f = encode("n3-000009", "shared/c1.dat", &payload);
        for cut in [0, 10, f.len() - 10_000, f.len() - 1] {
            assert!(parse(&f[..cut]).is_err(), "cut at {cut} accepted");
        }
        let mut longer = f.clone();
        longer.push(0);
        assert!(matches!(parse(&longer), Err(Bad::Length { .. })));
        let mut flipped = f.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(parse(&flipped), Err(Bad::Checksum { .. })));
        assert!(matches!(parse(&[0u8; 100]), Err(Bad::NoHeader(_))));
    }

    #[test]
    fn conflict_copy_names() {
        let c = "f1.sync-conflict-20261122-084612-bfef6d5eb05c0a35.dat";
        assert!(is_conflict_copy_of(c, "f1.dat"));
        assert!(is_conflict_copy_of(
            "f1.sync-conflict-20261122-084612-bfef6d5eb05c0a35-2.dat",
            "f1.dat"
        ));
        assert!(!is_conflict_copy_of(c, "f11.dat"));
        assert!(!is_conflict_copy_of("f1.dat", "f1.dat"));
        assert!(!is_conflict_copy_of(c, "f1.txt"));
        assert!(is_conflict_copy_of("noext.sync-conflict-x-1", "noext"));
        assert!(is_path_or_copy(&format!("shared/{c}"), "shared/f1.dat"));
        assert!(!is_path_or_copy(&format!("other/{c}"), "shared/f1.dat"));
        assert!(is_path_or_copy("shared/f1.dat", "shared/f1.dat"));
    }

    #[test]
    fn rng_is_reproducible_and_spread() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut big = 0;
        for _ in 0..1000 {
            let n = a.payload_len();
            assert!(n < 600_000);
            if n >= 100_000 {
                big += 1;
            }
        }
        assert!(big > 0, "no multi-chunk payloads");
    }
}
