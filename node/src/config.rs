//! Daemon configuration in two phases.
//!
//! 1. [`RunArgs`]: what the operator typed: clap flags, each with a
//!    `FILESYNCD_*` environment variable, plus an optional TOML file
//!    (`--config FILE`, [`FileConfig`], unknown keys refused). Precedence:
//!    flag > environment > file > default.
//! 2. [`Config`]: the validated result, which cannot be invalid: the synced
//!    directory exists and is a directory, the listen address parsed to a
//!    multiaddr, the API address parsed to a socket address, a non-loopback
//!    API only with `--api-allow-remote` AND an access token, `--join` only
//!    with `--token` (and a well-formed one).
//!
//! Defaults:
//! - `--listen 0.0.0.0:7400` (QUIC over UDP; `HOST:PORT` or a multiaddr).
//! - `--api 127.0.0.1:7401` (HTTP/JSON control API, TCP).
//! - `--max-voters 5`: this node, when it leads, promotes caught-up learners
//!   to voters while the cluster has fewer voters than this (at least 1).
//! - `--join-timeout 30` (seconds): how long `--join` keeps trying to reach
//!   and be admitted by the cluster before giving up (at least 1).
//! - `--data`: `$XDG_STATE_HOME/filesyncd` if `XDG_STATE_HOME` is set, else
//!   `$HOME/.local/state/filesyncd`, else `/var/lib/filesyncd`. Created if
//!   missing. It must not lie inside `--dir` (it would be synced).
//! - `--keep-versions` / `--keep-days`: the retention of a cluster this node
//!   creates (ignored when joining or resuming: the cluster's own applies).
//!   Unset: every version is kept. The version store of every node drops the
//!   chunks of versions outside retention at its next sweep.
//! - `--gc-interval 3600` (seconds): how often that sweep runs.
//! - `--max-file-size 64GiB`: a larger file is not synced. On disk here it
//!   is held back (never read, proposed or taken as deleted); a committed
//!   version of it is not fetched. Both are listed on `status`. At most
//!   192 GiB (what the in-memory chunk list of one file is sized for).
//! - `--safe-links` off: symlinks are synced whatever their target (never
//!   followed by filesyncd). On, a link whose target is absolute or climbs
//!   above the synced directory is neither proposed nor made, as rsync's
//!   `--safe-links`.
//! - The mass-change guard on: a step that would replace or delete more
//!   than `--guard-percent 30` of a folder's committed files, in a folder
//!   of at least `--guard-min-files 100`, is held here (reported on
//!   `status` and `/metrics`) until `filesyncd confirm`; the rest of the
//!   tree keeps syncing. `--no-guard` (`guard = false`) turns it off.
//! - NAT traversal on (`--no-relay`, `--no-hole-punch`, `--no-upnp`, or
//!   `relay`/`hole_punch`/`upnp = false` in the file, turn pieces off):
//!   relay for members and through members, AutoNAT, DCUtR, UPnP (never
//!   on a loopback listen address).
//! - The bulk chunk endpoint on (`--no-bulk` or `bulk = false` turn it
//!   off: chunks then travel over the swarm's libp2p streams only). Its UDP
//!   port: `--bulk-port` (`bulk_port`); by default the listen port + 1 when
//!   the listen port is fixed and that one is free, else an ephemeral port.
//!   Members learn it from identify; a firewall must let it through beside
//!   the listen port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use filesyncd_p2p::{parse_addr, Fingerprint, Multiaddr, Token};
use filesyncd_raft::command::Retention;

use crate::engine::plan::{MassChangeGuard, DEFAULT_MAX_FILE_SIZE, MAX_MAX_FILE_SIZE};
use serde::Deserialize;

pub const DEFAULT_LISTEN: &str = "0.0.0.0:7400";
pub const DEFAULT_API: &str = "127.0.0.1:7401";
pub const DEFAULT_MAX_VOTERS: usize = 5;
pub const DEFAULT_JOIN_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_GC_INTERVAL_SECS: u64 = 3600;
/// Default of `--snapshot-logs`.
pub const DEFAULT_SNAPSHOT_LOGS: u64 = 10_000;

/// How logs are written to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Flags of `filesyncd run` (also accepted without the `run` word).
#[derive(Args, Debug, Default, Clone)]
pub struct RunArgs {
    /// The directory kept identical on every node.
    #[arg(long, env = "FILESYNCD_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Where the node keeps its state (identity, Raft log, index).
    #[arg(long, env = "FILESYNCD_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Peer-to-peer listen address, HOST:PORT or multiaddr (QUIC over UDP) [default: 0.0.0.0:7400].
    #[arg(long, env = "FILESYNCD_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// The peer-to-peer address other members should dial, HOST:PORT (an IP
    /// or a DNS name) or multiaddr [default: the listen address, or with an
    /// unspecified one (0.0.0.0) the first non-loopback address it has].
    /// A member that starts with another one than the cluster records
    /// updates its record through Raft.
    #[arg(long, env = "FILESYNCD_ADVERTISE", value_name = "ADDR")]
    pub advertise: Option<String>,
    /// Control API address, HOST:PORT (TCP) [default: 127.0.0.1:7401].
    #[arg(long, env = "FILESYNCD_API", value_name = "HOST:PORT")]
    pub api: Option<String>,
    /// Allow a non-loopback control API address (requires --api-token).
    #[arg(long, env = "FILESYNCD_API_ALLOW_REMOTE")]
    pub api_allow_remote: bool,
    /// Bearer token the control API requires (required with --api-allow-remote)
    /// [default: a secret kept in DATA/api-token, for the CLI of the same user].
    #[arg(
        long,
        env = "FILESYNCD_API_TOKEN",
        value_name = "SECRET",
        conflicts_with = "api_token_file"
    )]
    pub api_token: Option<String>,
    /// File whose first line is --api-token (keeps the secret out of the process list).
    #[arg(long, env = "FILESYNCD_API_TOKEN_FILE", value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Join the cluster of the member at this address (HOST:PORT or multiaddr).
    #[arg(long, env = "FILESYNCD_JOIN", value_name = "ADDR")]
    pub join: Option<String>,
    /// Join token (from `filesyncd token create` on a member).
    #[arg(
        long,
        env = "FILESYNCD_TOKEN",
        value_name = "TOKEN",
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// File whose first line is --token (keeps the secret out of the process list).
    #[arg(long, env = "FILESYNCD_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// With --join: the fingerprint `token create` printed (blake3:...);
    /// the join is refused unless the admitting cluster proves it holds that key.
    #[arg(
        long,
        env = "FILESYNCD_CLUSTER_FINGERPRINT",
        value_name = "FINGERPRINT"
    )]
    pub cluster_fingerprint: Option<String>,
    /// When leading, promote learners to voters while there are fewer voters than this [default: 5].
    #[arg(long, env = "FILESYNCD_MAX_VOTERS", value_name = "N")]
    pub max_voters: Option<usize>,
    /// Seconds --join keeps trying to reach and be admitted by the cluster [default: 30].
    #[arg(long, env = "FILESYNCD_JOIN_TIMEOUT", value_name = "SECS")]
    pub join_timeout: Option<u64>,
    /// When this node creates the cluster: keep at most N versions of each
    /// path (the current one included) [default: no count limit].
    #[arg(long, env = "FILESYNCD_KEEP_VERSIONS", value_name = "N")]
    pub keep_versions: Option<u32>,
    /// When this node creates the cluster: keep a replaced or deleted
    /// version for D days after it stopped being current [default: forever].
    /// With both limits, a version goes once it is outside both.
    #[arg(long, env = "FILESYNCD_KEEP_DAYS", value_name = "D")]
    pub keep_days: Option<u32>,
    /// Seconds between sweeps that remove stored chunks no retained
    /// version needs [default: 3600].
    #[arg(long, env = "FILESYNCD_GC_INTERVAL", value_name = "SECS")]
    pub gc_interval: Option<u64>,
    /// Raft log entries between two snapshots of the committed state; a
    /// tenth of it (at most 1,000) stays in the log after a snapshot for
    /// followers a little behind [default: 10000].
    #[arg(long, env = "FILESYNCD_SNAPSHOT_LOGS", value_name = "N")]
    pub snapshot_logs: Option<u64>,
    /// Largest file synced, in bytes or with a unit (K, M, G, T = KiB..TiB;
    /// KB, MB, GB, TB = powers of 1000); a larger file is held back and
    /// listed on `status` [default: 64GiB; at most 192GiB].
    #[arg(long, env = "FILESYNCD_MAX_FILE_SIZE", value_name = "SIZE")]
    pub max_file_size: Option<String>,
    /// Ignore symlinks that can lead outside the synced directory (an
    /// absolute target, or `..` climbing above it), as rsync's
    /// --safe-links: not synced from here, not made here.
    #[arg(long, env = "FILESYNCD_SAFE_LINKS")]
    pub safe_links: bool,
    /// Hold a step that would replace or delete more than this percent of
    /// a folder's files at once until `filesyncd confirm` (1-100)
    /// [default: 30].
    #[arg(long, env = "FILESYNCD_GUARD_PERCENT", value_name = "PERCENT")]
    pub guard_percent: Option<u32>,
    /// ... in a folder (any depth, the root included) of at least this
    /// many files [default: 100].
    #[arg(long, env = "FILESYNCD_GUARD_MIN_FILES", value_name = "N")]
    pub guard_min_files: Option<usize>,
    /// No mass-change guard: every local change goes out as it is seen
    /// (a mass delete of the whole tree still waits for a confirmation).
    #[arg(long, env = "FILESYNCD_NO_GUARD", conflicts_with_all = ["guard_percent", "guard_min_files"])]
    pub no_guard: bool,
    /// Neither relay for other members nor reserve a slot on a member
    /// relay when members cannot dial this node (behind NAT); also turns
    /// off the AutoNAT probes and hole punching.
    #[arg(long, env = "FILESYNCD_NO_RELAY")]
    pub no_relay: bool,
    /// Keep a relayed member connection relayed: no DCUtR hole punching.
    #[arg(long, env = "FILESYNCD_NO_HOLE_PUNCH")]
    pub no_hole_punch: bool,
    /// Do not ask the router to map the listen port (UPnP IGD, PCP,
    /// NAT-PMP).
    #[arg(long, env = "FILESYNCD_NO_UPNP")]
    pub no_upnp: bool,
    /// No bulk chunk endpoint (a QUIC endpoint of its own beside the
    /// swarm): chunks travel over the swarm's streams only.
    #[arg(long, env = "FILESYNCD_NO_BULK", conflicts_with = "bulk_port")]
    pub no_bulk: bool,
    /// UDP port of the bulk chunk endpoint (0: any free port) [default:
    /// the listen port + 1 when the listen port is fixed and that port is
    /// free, else any free port].
    #[arg(long, env = "FILESYNCD_BULK_PORT", value_name = "PORT")]
    pub bulk_port: Option<u16>,
    /// TOML file with any of the settings above (flags and env win).
    #[arg(long, env = "FILESYNCD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format on stderr (filter with RUST_LOG) [default: text].
    #[arg(long, env = "FILESYNCD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// The TOML file: same names as the flags, with `_` for `-`.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub dir: Option<PathBuf>,
    pub data: Option<PathBuf>,
    pub listen: Option<String>,
    pub advertise: Option<String>,
    pub api: Option<String>,
    pub api_allow_remote: Option<bool>,
    pub api_token: Option<String>,
    pub api_token_file: Option<PathBuf>,
    pub join: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub cluster_fingerprint: Option<String>,
    pub max_voters: Option<usize>,
    pub join_timeout: Option<u64>,
    pub keep_versions: Option<u32>,
    pub keep_days: Option<u32>,
    pub gc_interval: Option<u64>,
    pub snapshot_logs: Option<u64>,
    /// A number of bytes or a string with a unit, as the flag.
    pub max_file_size: Option<SizeSetting>,
    pub safe_links: Option<bool>,
    /// `guard = false` is `--no-guard`.
    pub guard: Option<bool>,
    pub guard_percent: Option<u32>,
    pub guard_min_files: Option<usize>,
    /// `relay = false` is `--no-relay`.
    pub relay: Option<bool>,
    /// `hole_punch = false` is `--no-hole-punch`.
    pub hole_punch: Option<bool>,
    /// `upnp = false` is `--no-upnp`.
    pub upnp: Option<bool>,
    /// `bulk = false` is `--no-bulk`.
    pub bulk: Option<bool>,
    pub bulk_port: Option<u16>,
    pub log_format: Option<LogFormat>,
}

/// `max_file_size` in the TOML file: `1048576` or `"64GiB"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SizeSetting {
    Bytes(u64),
    Text(String),
}

/// Where to join and with what.
#[derive(Clone, Debug)]
pub struct JoinTarget {
    /// As typed (HOST:PORT or multiaddr), already checked to parse.
    pub addr: String,
    pub token: Token,
    /// `--cluster-fingerprint`: the cluster the joiner means to join.
    pub fingerprint: Option<Fingerprint>,
    /// `--advertise`: sent with the join, recorded as this node's address.
    pub advertise: Option<Multiaddr>,
}

/// A validated daemon configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub dir: PathBuf,
    pub data: PathBuf,
    pub listen: Multiaddr,
    /// `--advertise`, parsed (never an unspecified IP).
    pub advertise: Option<Multiaddr>,
    pub api: SocketAddr,
    pub api_token: Option<String>,
    pub join: Option<JoinTarget>,
    /// At least 1.
    pub max_voters: usize,
    /// At least 1 s.
    pub join_timeout: std::time::Duration,
    /// The retention a cluster this node creates gets (fixed at creation).
    pub retention: Retention,
    /// At least 1 s.
    pub gc_interval: std::time::Duration,
    /// At least 1: Raft entries between snapshots.
    pub snapshot_logs: u64,
    /// 1 ..= [`MAX_MAX_FILE_SIZE`] bytes.
    pub max_file_size: u64,
    /// `--safe-links`.
    pub safe_links: bool,
    /// The mass-change guard; `None`: `--no-guard`.
    pub guard: Option<MassChangeGuard>,
    /// Relay for members and through members (not `--no-relay`).
    pub relay: bool,
    /// DCUtR hole punching (not `--no-hole-punch`).
    pub hole_punch: bool,
    /// UPnP port mapping (not `--no-upnp`).
    pub upnp: bool,
    /// The bulk chunk endpoint (not `--no-bulk`).
    pub bulk: bool,
    /// `--bulk-port`; `None`: the listen port + 1 if free, else ephemeral.
    pub bulk_port: Option<u16>,
    pub log_format: LogFormat,
}

/// Why a configuration was refused (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--dir is required (the directory to sync)")]
    MissingDir,
    #[error("--dir {0}: no such directory")]
    DirMissing(PathBuf),
    #[error("--dir {0}: not a directory")]
    NotADirectory(PathBuf),
    #[error("--data {0}: not a directory")]
    DataNotADirectory(PathBuf),
    #[error("--data {data} lies inside --dir {dir}: it would be synced")]
    DataInsideDir { data: PathBuf, dir: PathBuf },
    #[error("no --data given and neither XDG_STATE_HOME nor HOME is set")]
    NoDataDefault,
    #[error("--advertise {addr}: {reason}")]
    Advertise { addr: String, reason: String },
    #[error("--listen {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("--api {0}: expected HOST:PORT with an IP address or localhost")]
    Api(String),
    #[error("--api {0} is not a loopback address: pass --api-allow-remote and --api-token")]
    ApiRemote(SocketAddr),
    #[error("--api-allow-remote requires --api-token")]
    RemoteWithoutToken,
    #[error("--join {addr}: {reason}")]
    Join { addr: String, reason: String },
    #[error("--join requires --token")]
    JoinWithoutToken,
    #[error("--token given without --join")]
    TokenWithoutJoin,
    #[error("--cluster-fingerprint {0:?}: {1}")]
    BadFingerprint(String, filesyncd_p2p::FingerprintParseError),
    #[error("--cluster-fingerprint needs --join")]
    FingerprintWithoutJoin,
    #[error("--token: {0}")]
    BadToken(String),
    #[error("--{flag} and --{flag}-file both given: pass one")]
    SecretTwice { flag: &'static str },
    #[error("--{flag}-file: {source}")]
    SecretFile {
        flag: &'static str,
        #[source]
        source: crate::credential::CredentialError,
    },
    #[error("--max-voters must be at least 1")]
    MaxVoters,
    #[error("--join-timeout must be at least 1 second")]
    JoinTimeout,
    #[error("--keep-versions must be at least 1 (the current version is always kept)")]
    KeepVersions,
    #[error("--gc-interval must be at least 1 second")]
    GcInterval,
    #[error("--snapshot-logs must be at least 1")]
    SnapshotLogs,
    #[error("--max-file-size {0:?}: {1}")]
    MaxFileSize(String, String),
    #[error("--guard-percent must be 1 to 100 (got {0})")]
    GuardPercent(u32),
    #[error("--guard-min-files must be at least 1")]
    GuardMinFiles,
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

impl FileConfig {
    /// Reads and parses a TOML file (unknown keys are errors).
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        FileConfig::parse(&text).map_err(|reason| ConfigError::File {
            path: path.to_path_buf(),
            reason,
        })
    }

    pub fn parse(text: &str) -> Result<FileConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim().to_string())
    }
}

/// Parses `HOST:PORT` where HOST is an IP address or `localhost`.
pub fn parse_api_addr(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    (host == "localhost").then(|| SocketAddr::from(([127, 0, 0, 1], port)))
}

pub fn default_data() -> Result<PathBuf, ConfigError> {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x).join("filesyncd"));
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(h).join(".local/state/filesyncd"));
    }
    Err(ConfigError::NoDataDefault)
}

impl RunArgs {
    /// Merges the file (if any) under the flags and validates everything.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        validate(self, file)
    }
}

/// `v`, unless it is zero.
/// `--advertise`: what `--join` accepts, and never an unspecified IP
/// (0.0.0.0 or ::), which no peer can dial.
fn parse_advertise(text: &str) -> Result<Multiaddr, ConfigError> {
    let bad = |reason: String| ConfigError::Advertise {
        addr: text.to_owned(),
        reason,
    };
    let addr = parse_addr(text).map_err(|e| bad(e.to_string()))?;
    let unspecified = addr.iter().any(|p| match p {
        filesyncd_p2p::Protocol::Ip4(ip) => ip.is_unspecified(),
        filesyncd_p2p::Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    });
    if unspecified {
        return Err(bad(
            "an unspecified address cannot be dialed: name this host's address".into(),
        ));
    }
    Ok(addr)
}

fn check_max_file_size(typed: &str, n: u64) -> Result<u64, ConfigError> {
    if n == 0 {
        return Err(ConfigError::MaxFileSize(
            typed.to_owned(),
            "must be at least 1 byte".into(),
        ));
    }
    if n > MAX_MAX_FILE_SIZE {
        return Err(ConfigError::MaxFileSize(
            typed.to_owned(),
            format!("at most {MAX_MAX_FILE_SIZE} bytes (192GiB) is supported"),
        ));
    }
    Ok(n)
}

/// Parses a size: digits, then optionally a unit, case-insensitive, with
/// or without a space: `B`; `K`/`KiB`, `M`/`MiB`, `G`/`GiB`, `T`/`TiB`
/// (powers of 1024); `KB`, `MB`, `GB`, `TB` (powers of 1000, as rsync's
/// `--max-size` reads them).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits == 0 {
        return Err("expected a number of bytes, optionally with a unit (e.g. 64GiB)".into());
    }
    let n: u64 = t[..digits]
        .parse()
        .map_err(|_| "the number is too large".to_string())?;
    let unit = t[digits..].trim().to_ascii_lowercase();
    let mult: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown unit {other:?} (use B, K, M, G, T, KiB..TiB or KB..TB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| "the size is too large".to_string())
}

fn nonzero<T: Default + PartialEq>(v: T, zero: ConfigError) -> Result<T, ConfigError> {
    if v == T::default() {
        Err(zero)
    } else {
        Ok(v)
    }
}

/// A secret given as a value or as a file (the file's first line), by the
/// flags (and env) or else by the config file; one source gives at most
/// one of the two. An empty value is unset.
fn secret(
    flag: &'static str,
    args: (Option<String>, Option<PathBuf>),
    file: (Option<String>, Option<PathBuf>),
) -> Result<Option<String>, ConfigError> {
    let pick = |(value, path): (Option<String>, Option<PathBuf>)| match (
        value.filter(|t| !t.trim().is_empty()),
        path,
    ) {
        (Some(_), Some(_)) => Err(ConfigError::SecretTwice { flag }),
        (Some(v), None) => Ok(Some(v)),
        (None, Some(p)) => crate::credential::read_secret(&p)
            .map(Some)
            .map_err(|source| ConfigError::SecretFile { flag, source }),
        (None, None) => Ok(None),
    };
    match pick(args)? {
        Some(v) => Ok(Some(v)),
        None => pick(file),
    }
}

/// Phase two: `args` (flags + env) over `file`, checked.
pub fn validate(args: RunArgs, file: FileConfig) -> Result<Config, ConfigError> {
    let dir = args.dir.or(file.dir).ok_or(ConfigError::MissingDir)?;
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(ConfigError::NotADirectory(dir)),
        Err(_) => return Err(ConfigError::DirMissing(dir)),
    }
    let dir = std::fs::canonicalize(&dir).map_err(|_| ConfigError::DirMissing(dir.clone()))?;
    let data = match args.data.or(file.data) {
        Some(d) => d,
        None => default_data()?,
    };
    if data.exists() && !data.is_dir() {
        return Err(ConfigError::DataNotADirectory(data));
    }
    let data_abs = std::fs::canonicalize(&data).unwrap_or_else(|_| data.clone());
    if data_abs.starts_with(&dir) {
        return Err(ConfigError::DataInsideDir { data, dir });
    }
    let listen_s = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let listen = parse_addr(&listen_s).map_err(|e| ConfigError::Listen {
        addr: listen_s.clone(),
        reason: e.to_string(),
    })?;
    let advertise = match args.advertise.or(file.advertise) {
        Some(a) if !a.trim().is_empty() => Some(parse_advertise(&a)?),
        _ => None,
    };
    let api_s = args
        .api
        .or(file.api)
        .unwrap_or_else(|| DEFAULT_API.to_string());
    let api = parse_api_addr(&api_s).ok_or(ConfigError::Api(api_s))?;
    let allow_remote = args.api_allow_remote || file.api_allow_remote.unwrap_or(false);
    let api_token = secret(
        "api-token",
        (args.api_token, args.api_token_file),
        (file.api_token, file.api_token_file),
    )?;
    if allow_remote && api_token.is_none() {
        return Err(ConfigError::RemoteWithoutToken);
    }
    if !api.ip().is_loopback() && !allow_remote {
        return Err(ConfigError::ApiRemote(api));
    }
    // An empty value (`FILESYNCD_JOIN=` in a compose file) means unset.
    let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let token = secret(
        "token",
        (args.token, args.token_file),
        (file.token, file.token_file),
    )?;
    let fingerprint = nonempty(args.cluster_fingerprint)
        .or(nonempty(file.cluster_fingerprint))
        .map(|f| {
            f.parse::<Fingerprint>()
                .map_err(|e| ConfigError::BadFingerprint(f.clone(), e))
        })
        .transpose()?;
    let join = match (nonempty(args.join).or(nonempty(file.join)), token) {
        (None, None) if fingerprint.is_some() => return Err(ConfigError::FingerprintWithoutJoin),
        (None, None) => None,
        (Some(_), None) => return Err(ConfigError::JoinWithoutToken),
        (None, Some(_)) => return Err(ConfigError::TokenWithoutJoin),
        (Some(addr), Some(t)) => {
            parse_addr(&addr).map_err(|e| ConfigError::Join {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
            let token = Token::parse(&t).map_err(|e| ConfigError::BadToken(e.to_string()))?;
            Some(JoinTarget {
                addr,
                token,
                fingerprint,
                advertise: advertise.clone(),
            })
        }
    };
    let max_voters = nonzero(
        args.max_voters
            .or(file.max_voters)
            .unwrap_or(DEFAULT_MAX_VOTERS),
        ConfigError::MaxVoters,
    )?;
    let join_timeout = nonzero(
        args.join_timeout
            .or(file.join_timeout)
            .unwrap_or(DEFAULT_JOIN_TIMEOUT_SECS),
        ConfigError::JoinTimeout,
    )?;
    let retention = Retention {
        keep_versions: args
            .keep_versions
            .or(file.keep_versions)
            .map(|n| nonzero(n, ConfigError::KeepVersions))
            .transpose()?,
        keep_days: args.keep_days.or(file.keep_days),
    };
    let gc_interval = nonzero(
        args.gc_interval
            .or(file.gc_interval)
            .unwrap_or(DEFAULT_GC_INTERVAL_SECS),
        ConfigError::GcInterval,
    )?;
    let snapshot_logs = nonzero(
        args.snapshot_logs
            .or(file.snapshot_logs)
            .unwrap_or(DEFAULT_SNAPSHOT_LOGS),
        ConfigError::SnapshotLogs,
    )?;
    let max_file_size = match args
        .max_file_size
        .map(SizeSetting::Text)
        .or(file.max_file_size)
    {
        None => DEFAULT_MAX_FILE_SIZE,
        Some(SizeSetting::Bytes(n)) => check_max_file_size(&n.to_string(), n)?,
        Some(SizeSetting::Text(t)) => {
            let n = parse_size(&t).map_err(|e| ConfigError::MaxFileSize(t.clone(), e))?;
            check_max_file_size(&t, n)?
        }
    };
    let guard = if args.no_guard || file.guard == Some(false) {
        None
    } else {
        let d = MassChangeGuard::default();
        let percent = args.guard_percent.or(file.guard_percent);
        let share = match percent {
            None => d.share,
            Some(p @ 1..=100) => f64::from(p) / 100.0,
            Some(p) => return Err(ConfigError::GuardPercent(p)),
        };
        let min_files = nonzero(
            args.guard_min_files
                .or(file.guard_min_files)
                .unwrap_or(d.min_files),
            ConfigError::GuardMinFiles,
        )?;
        Some(MassChangeGuard { share, min_files })
    };
    Ok(Config {
        guard,
        max_file_size,
        safe_links: args.safe_links || file.safe_links.unwrap_or(false),
        relay: !args.no_relay && file.relay.unwrap_or(true),
        hole_punch: !args.no_hole_punch && file.hole_punch.unwrap_or(true),
        upnp: !args.no_upnp && file.upnp.unwrap_or(true),
        bulk: !args.no_bulk && file.bulk.unwrap_or(true),
        bulk_port: args.bulk_port.or(file.bulk_port),
        dir,
        data,
        listen,
        advertise,
        api,
        api_token,
        join,
        max_voters,
        join_timeout: std::time::Duration::from_secs(join_timeout),
        retention,
        gc_interval: std::time::Duration::from_secs(gc_interval),
        snapshot_logs,
        log_format: args
            .log_format
            .or(file.log_format)
            .unwrap_or(LogFormat::Text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path, data: &Path) -> RunArgs {
        RunArgs {
            dir: Some(dir.to_path_buf()),
            data: Some(data.to_path_buf()),
            ..RunArgs::default()
        }
    }

    #[test]
    fn defaults_and_precedence() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        let data = t.path().join("data");
        let c = validate(args(&dir, &data), FileConfig::default()).unwrap();
        assert_eq!(c.listen.to_string(), "/ip4/0.0.0.0/udp/7400/quic-v1");
        assert_eq!(c.api.to_string(), DEFAULT_API);
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(c.join.is_none());
        assert_eq!(c.max_voters, DEFAULT_MAX_VOTERS);
        assert_eq!(c.join_timeout.as_secs(), DEFAULT_JOIN_TIMEOUT_SECS);
        let file = FileConfig::parse("max_voters = 3\njoin_timeout = 7\n").unwrap();
        let mut a = args(&dir, &data);
        a.join_timeout = Some(9);
        let c = validate(a, file).unwrap();
        assert_eq!((c.max_voters, c.join_timeout.as_secs()), (3, 9));
        let file = FileConfig::parse(
            "listen = \"/ip4/127.0.0.1/udp/9/quic-v1\"\napi = \"localhost:9\"\nlog_format = \"json\"\n",
        )
        .unwrap();
        let mut a = args(&dir, &data);
        a.listen = Some("127.0.0.1:8".into());
        let c = validate(a, file).unwrap();
        assert_eq!(c.listen.to_string(), "/ip4/127.0.0.1/udp/8/quic-v1");
        assert_eq!(c.api.to_string(), "127.0.0.1:9");
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn nat_traversal_is_on_unless_a_flag_or_the_file_turns_it_off() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        let data = t.path().join("data");
        let c = validate(args(&dir, &data), FileConfig::default()).unwrap();
        assert_eq!((c.relay, c.hole_punch, c.upnp), (true, true, true));
        let file = FileConfig::parse("relay = false\nupnp = false\n").unwrap();
        let c = validate(args(&dir, &data), file).unwrap();
        assert_eq!((c.relay, c.hole_punch, c.upnp), (false, true, false));
        let mut a = args(&dir, &data);
        a.no_hole_punch = true;
        let file = FileConfig::parse("hole_punch = true\n").unwrap();
        let c = validate(a, file).unwrap();
        assert_eq!((c.relay, c.hole_punch, c.upnp), (true, false, true));
        assert!(FileConfig::parse("relay = \"no\"\n").is_err());
    }

    #[test]
    fn bulk_endpoint_is_on_unless_turned_off_and_its_port_is_settable() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        let data = t.path().join("data");
        let c = validate(args(&dir, &data), FileConfig::default()).unwrap();
        assert_eq!((c.bulk, c.bulk_port), (true, None));
        let file = FileConfig::parse("bulk = false\n").unwrap();
        let c = validate(args(&dir, &data), file).unwrap();
        assert!(!c.bulk);
        let mut a = args(&dir, &data);
        a.bulk_port = Some(7600);
        let file = FileConfig::parse("bulk_port = 7500\n").unwrap();
        let c = validate(a, file).unwrap();
        assert_eq!((c.bulk, c.bulk_port), (true, Some(7600)));
        let mut a = args(&dir, &data);
        a.no_bulk = true;
        assert!(!validate(a, FileConfig::default()).unwrap().bulk);
        assert!(FileConfig::parse("bulk_port = 70000\n").is_err());
        assert!(FileConfig::parse("bulk_port = -1\n").is_err());
    }

    #[test]
    fn unknown_keys_and_bad_toml_are_refused() {
        let e = FileConfig::parse("dir = \"/x\"\nlisten_addr = \"1\"\n").unwrap_err();
        assert!(e.contains("listen_addr"), "{e}");
        assert!(FileConfig::parse("dir = ").is_err());
        assert!(FileConfig::parse("log_format = \"xml\"").is_err());
    }

    #[test]
    fn refusals() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        let file = t.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let data = t.path().join("data");
        let none = FileConfig::default;
        let run = |a: RunArgs| validate(a, none()).unwrap_err();
        assert!(matches!(run(RunArgs::default()), ConfigError::MissingDir));
        assert!(matches!(
            run(args(&t.path().join("nope"), &data)),
            ConfigError::DirMissing(_)
        ));
        assert!(matches!(
            run(args(&file, &data)),
            ConfigError::NotADirectory(_)
        ));
        assert!(matches!(
            run(args(&dir, &file)),
            ConfigError::DataNotADirectory(_)
        ));
        assert!(matches!(
            run(args(&dir, &dir.join("state"))),
            ConfigError::DataInsideDir { .. }
        ));
        let mut a = args(&dir, &data);
        a.listen = Some("nowhere".into());
        assert!(matches!(run(a), ConfigError::Listen { .. }));
        let mut a = args(&dir, &data);
        a.api = Some("example.com:80".into());
        assert!(matches!(run(a), ConfigError::Api(_)));
        let mut a = args(&dir, &data);
        a.api = Some("0.0.0.0:7401".into());
        assert!(matches!(run(a.clone()), ConfigError::ApiRemote(_)));
        a.api_allow_remote = true;
        assert!(matches!(run(a.clone()), ConfigError::RemoteWithoutToken));
        a.api_token = Some("s3cret".into());
        assert!(validate(a, none()).is_ok());
        let mut a = args(&dir, &data);
        a.join = Some("127.0.0.1:7400".into());
        assert!(matches!(run(a.clone()), ConfigError::JoinWithoutToken));
        a.token = Some("short".into());
        assert!(matches!(run(a.clone()), ConfigError::BadToken(_)));
        a.token = Some("abcdef.0123456789abcdef".into());
        let c = validate(a.clone(), none()).unwrap();
        assert_eq!(c.join.unwrap().token.id(), "abcdef");
        a.cluster_fingerprint = Some("blake3:12".into());
        assert!(matches!(run(a.clone()), ConfigError::BadFingerprint(..)));
        let pin = format!("blake3:{}", "ab".repeat(32));
        a.cluster_fingerprint = Some(pin.clone());
        let c = validate(a.clone(), none()).unwrap();
        assert_eq!(
            c.join.unwrap().fingerprint.map(|f| f.to_string()),
            Some(pin.clone())
        );
        let file = FileConfig::parse(&format!("cluster_fingerprint = {pin:?}\n")).unwrap();
        a.cluster_fingerprint = None;
        let c = validate(a.clone(), file).unwrap();
        assert_eq!(
            c.join.unwrap().fingerprint.map(|f| f.to_string()),
            Some(pin.clone())
        );
        let mut b = args(&dir, &data);
        b.cluster_fingerprint = Some(pin);
        assert!(matches!(run(b), ConfigError::FingerprintWithoutJoin));
        let mut a = args(&dir, &data);
        a.token = Some("abcdef.0123456789abcdef".into());
        assert!(matches!(run(a), ConfigError::TokenWithoutJoin));
        let mut a = args(&dir, &data);
        a.max_voters = Some(0);
        assert!(matches!(run(a), ConfigError::MaxVoters));
        let mut a = args(&dir, &data);
        a.join_timeout = Some(0);
        assert!(matches!(run(a), ConfigError::JoinTimeout));
        let mut a = args(&dir, &data);
        a.keep_versions = Some(0);
        assert!(matches!(run(a), ConfigError::KeepVersions));
        let mut a = args(&dir, &data);
        a.gc_interval = Some(0);
        assert!(matches!(run(a), ConfigError::GcInterval));
        let mut a = args(&dir, &data);
        a.snapshot_logs = Some(0);
        assert!(matches!(run(a), ConfigError::SnapshotLogs));
    }

    #[test]
    fn advertise_takes_an_address_or_a_name_never_an_unspecified_one() {
        let t = tempfile::tempdir().unwrap();
        let (dir, data) = (t.path().join("d"), t.path().join("data"));
        std::fs::create_dir(&dir).unwrap();
        let with = |flag: Option<&str>, file: &str| {
            let mut a = args(&dir, &data);
            a.advertise = flag.map(str::to_owned);
            validate(a, FileConfig::parse(file).unwrap())
        };
        assert_eq!(with(None, "").unwrap().advertise, None);
        let c = with(Some("192.0.2.7:7400"), "").unwrap();
        assert_eq!(
            c.advertise.unwrap().to_string(),
            "/ip4/192.0.2.7/udp/7400/quic-v1"
        );
        let c = with(None, "advertise = \"nas.example.org:7400\"\n").unwrap();
        assert_eq!(
            c.advertise.unwrap().to_string(),
            "/dns4/nas.example.org/udp/7400/quic-v1"
        );
        // The flag wins over the file.
        let c = with(
            Some("/ip4/10.0.0.2/udp/9/quic-v1"),
            "advertise = \"a.b:1\"\n",
        )
        .unwrap();
        assert_eq!(
            c.advertise.unwrap().to_string(),
            "/ip4/10.0.0.2/udp/9/quic-v1"
        );
        for bad in [
            "0.0.0.0:7400",
            "[::]:7400",
            "/ip4/0.0.0.0/udp/1/quic-v1",
            "nowhere",
            "h:port",
        ] {
            assert!(
                matches!(with(Some(bad), ""), Err(ConfigError::Advertise { .. })),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn max_file_size_parses_units_and_is_bounded() {
        for (text, n) in [
            ("1", 1),
            ("4096", 4096),
            ("1K", 1024),
            ("1 kib", 1024),
            ("3MiB", 3 << 20),
            ("64GiB", 64 << 30),
            ("64g", 64 << 30),
            ("1TiB", 1 << 40),
            ("5KB", 5_000),
            ("2 MB", 2_000_000),
            ("1gb", 1_000_000_000),
            ("7b", 7),
        ] {
            assert_eq!(parse_size(text), Ok(n), "{text}");
        }
        for bad in [
            "",
            "GiB",
            "-1",
            "1.5G",
            "1 PB",
            "12 parsecs",
            "99999999999999999999",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse_size("20000000T").is_err(), "overflow");

        let t = tempfile::tempdir().unwrap();
        let (dir, data) = (t.path().join("d"), t.path().join("data"));
        std::fs::create_dir(&dir).unwrap();
        let c = validate(args(&dir, &data), FileConfig::default()).unwrap();
        assert_eq!(c.max_file_size, DEFAULT_MAX_FILE_SIZE);
        let with = |flag: Option<&str>, file: &str| {
            let mut a = args(&dir, &data);
            a.max_file_size = flag.map(str::to_owned);
            validate(a, FileConfig::parse(file).unwrap())
        };
        assert_eq!(with(Some("1M"), "").unwrap().max_file_size, 1 << 20);
        assert_eq!(
            with(None, "max_file_size = 4096\n").unwrap().max_file_size,
            4096
        );
        assert_eq!(
            with(None, "max_file_size = \"2GiB\"\n")
                .unwrap()
                .max_file_size,
            2 << 30
        );
        // The flag wins over the file.
        let c = with(Some("10K"), "max_file_size = \"2GiB\"\n").unwrap();
        assert_eq!(c.max_file_size, 10 << 10);
        for bad in [Some("0"), Some("1TiB"), Some("lots")] {
            let e = with(bad, "").unwrap_err();
            assert!(matches!(e, ConfigError::MaxFileSize(..)), "{bad:?}: {e}");
        }
        assert!(matches!(
            with(None, "max_file_size = 0\n").unwrap_err(),
            ConfigError::MaxFileSize(..)
        ));
        assert_eq!(
            with(Some("192GiB"), "").unwrap().max_file_size,
            MAX_MAX_FILE_SIZE
        );
    }

    #[test]
    fn secrets_come_from_files_too() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        let data = t.path().join("data");
        let (api_f, join_f) = (t.path().join("api"), t.path().join("join"));
        std::fs::write(&api_f, "s3cret\n").unwrap();
        std::fs::write(&join_f, "abcdef.0123456789abcdef\n").unwrap();
        let mut a = args(&dir, &data);
        a.api_token_file = Some(api_f.clone());
        a.join = Some("127.0.0.1:7400".into());
        a.token_file = Some(join_f.clone());
        let c = validate(a.clone(), FileConfig::default()).unwrap();
        assert_eq!(c.api_token.as_deref(), Some("s3cret"));
        assert_eq!(c.join.unwrap().token.id(), "abcdef");
        // Flags over the config file, even when the file names a file.
        let file = FileConfig::parse("api_token = \"other\"\n").unwrap();
        let c = validate(a.clone(), file).unwrap();
        assert_eq!(c.api_token.as_deref(), Some("s3cret"));
        let file = FileConfig::parse(&format!("api_token_file = {:?}\n", api_f)).unwrap();
        let c = validate(args(&dir, &data), file).unwrap();
        assert_eq!(c.api_token.as_deref(), Some("s3cret"));
        // Both forms from one source, a missing or empty file: refused.
        let mut b = a.clone();
        b.api_token = Some("x".into());
        assert!(matches!(
            validate(b, FileConfig::default()),
            Err(ConfigError::SecretTwice { flag: "api-token" })
        ));
        let mut b = a.clone();
        b.token_file = Some(t.path().join("missing"));
        let e = validate(b, FileConfig::default()).unwrap_err();
        assert!(
            matches!(e, ConfigError::SecretFile { flag: "token", .. }),
            "{e}"
        );
        std::fs::write(&api_f, "\n").unwrap();
        let e = validate(a, FileConfig::default()).unwrap_err();
        assert!(
            e.to_string().contains("--api-token-file") && e.to_string().contains("empty"),
            "{e}"
        );
    }

    #[test]
    fn retention_and_sweep_interval() {
        let t = tempfile::tempdir().unwrap();
        let (dir, data) = (t.path().join("d"), t.path().join("s"));
        std::fs::create_dir(&dir).unwrap();
        let c = validate(args(&dir, &data), FileConfig::default()).unwrap();
        assert_eq!(c.retention, Retention::default(), "keep everything");
        assert_eq!(c.gc_interval.as_secs(), DEFAULT_GC_INTERVAL_SECS);
        let file =
            FileConfig::parse("keep_versions = 5\nkeep_days = 30\ngc_interval = 60\n").unwrap();
        let mut a = args(&dir, &data);
        a.keep_days = Some(7);
        let c = validate(a, file).unwrap();
        assert_eq!(
            c.retention,
            Retention {
                keep_versions: Some(5),
                keep_days: Some(7)
            }
        );
        assert_eq!(c.gc_interval.as_secs(), 60);
    }

    #[test]
    fn mass_change_guard_settings() {
        let t = tempfile::tempdir().unwrap();
        let (dir, data) = (t.path().join("d"), t.path().join("s"));
        std::fs::create_dir(&dir).unwrap();
        let c = validate(args(&dir, &data), FileConfig::default()).unwrap();
        assert_eq!(c.guard, Some(MassChangeGuard::default()));
        let file = FileConfig::parse("guard_percent = 50\nguard_min_files = 10\n").unwrap();
        let mut a = args(&dir, &data);
        a.guard_percent = Some(20);
        let c = validate(a, file).unwrap();
        assert_eq!(
            c.guard,
            Some(MassChangeGuard {
                share: 0.2,
                min_files: 10
            })
        );
        let file = FileConfig::parse("guard = false\n").unwrap();
        assert_eq!(validate(args(&dir, &data), file).unwrap().guard, None);
        let mut a = args(&dir, &data);
        a.no_guard = true;
        assert_eq!(validate(a, FileConfig::default()).unwrap().guard, None);
        for bad in [0, 101] {
            let mut a = args(&dir, &data);
            a.guard_percent = Some(bad);
            let e = validate(a, FileConfig::default()).unwrap_err();
            assert!(matches!(e, ConfigError::GuardPercent(b) if b == bad), "{e}");
        }
        let mut a = args(&dir, &data);
        a.guard_min_files = Some(0);
        assert!(matches!(
            validate(a, FileConfig::default()),
            Err(ConfigError::GuardMinFiles)
        ));
    }
}
