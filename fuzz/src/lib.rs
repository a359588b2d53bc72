//! Helpers shared by the fuzz targets (docs/FUZZING.md).
//!
//! The targets themselves are in `fuzz_targets/`; this crate holds what
//! several of them need: a reader that turns fuzz bytes into structured
//! choices ([`Bytes`]), a current-thread Tokio runtime for decoders that
//! are async, and a scratch directory on tmpfs for the snapshot target.

pub mod samples;

use std::path::PathBuf;
use std::sync::OnceLock;

/// Takes structured values off the front of the fuzz input; once it is
/// exhausted every read returns zeros (so any input is a valid program).
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn rest(&self) -> &'a [u8] {
        self.data
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    /// A slice whose length is the next byte (at most `max`).
    pub fn short(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.u8()) % (max + 1);
        self.take(n)
    }

    /// 32 bytes, zero-padded at the end of the input.
    pub fn array32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        let src = self.take(32);
        out[..src.len()].copy_from_slice(src);
        out
    }

    /// A small path-like key over a tiny alphabet, so that keys collide,
    /// sort next to each other and nest (`a`, `a/b`, `a.b`).
    pub fn key(&mut self) -> String {
        const ALPHABET: &[u8] = b"ab/.-_\0\xc3";
        let n = usize::from(self.u8() % 8);
        let bytes: Vec<u8> = (0..n)
            .map(|_| ALPHABET[usize::from(self.u8()) % ALPHABET.len()])
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// A current-thread Tokio runtime with time, shared by every run of a
/// target (building one per input would dominate the run time).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime")
    })
}

/// A scratch directory for targets that must touch files, on tmpfs where
/// there is one (`/dev/shm`), unique per process.
pub fn scratch_dir(name: &str) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("filesyncd-fuzz-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the scratch dir");
    dir
}

/// The environment variable that makes a target write its seed inputs
/// instead of fuzzing (`run.sh --seed`).
pub const SEEDS_ENV: &str = "FILESYNCD_FUZZ_SEEDS";

/// The `init` of every target: when [`SEEDS_ENV`] names a directory, writes
/// the target's seeds there (valid encodings built through the crates'
/// public APIs, one file each, named by content) and exits. Seeds live next
/// to the harness that reads them, so their layout cannot drift apart.
pub fn write_seeds_if_asked(seeds: impl FnOnce() -> Vec<Vec<u8>>) {
    let Some(dir) = std::env::var_os(SEEDS_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("create the corpus dir");
    let seeds = seeds();
    for s in &seeds {
        let name = blake3::hash(s).to_hex();
        std::fs::write(dir.join(&name[..16]), s).expect("write a seed");
    }
    eprintln!("wrote {} seeds to {}", seeds.len(), dir.display());
    std::process::exit(0);
}
