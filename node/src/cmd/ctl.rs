//! Subcommands that talk to a running daemon's control API: `members`,
//! `token create` (`status` is in `status.rs`). Output goes to stdout
//! (tables, or JSON with `--json`); errors to stderr with exit code 1.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use filesyncd::api::client;
use filesyncd::api::types::{Member, TokenCreated, TokenRequest};
use filesyncd::config::DEFAULT_API;
use filesyncd::credential;

/// How to reach the daemon.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// Control API address of the daemon.
    #[arg(long, env = "FILESYNCD_API", default_value = DEFAULT_API, value_name = "HOST:PORT")]
    pub api: String,
    /// The daemon's --api-token [default: the node's own secret, found as
    /// the daemon's user: see --data].
    #[arg(
        long,
        env = "FILESYNCD_API_TOKEN",
        value_name = "SECRET",
        conflicts_with = "api_token_file"
    )]
    pub api_token: Option<String>,
    /// File whose first line is the API token.
    #[arg(long, env = "FILESYNCD_API_TOKEN_FILE", value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// The node's data directory, where its own API secret is kept (without
    /// it: the secret the daemon published for --api in this user's runtime
    /// directory, then the default data directory's).
    #[arg(long, env = "FILESYNCD_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
}

impl ApiArgs {
    /// The secret to send (see [`filesyncd::credential`]); `None` when none
    /// is found (the API answers 401 with a hint).
    pub fn secret(&self) -> anyhow::Result<Option<String>> {
        if let Some(t) = self.api_token.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Some(t.clone()));
        }
        if let Some(p) = &self.api_token_file {
            return Ok(Some(
                credential::read_secret(p).context("--api-token-file")?,
            ));
        }
        let default = filesyncd::config::default_data().ok();
        Ok(credential::lookup(
            &self.api,
            self.data.as_deref(),
            default.as_deref(),
        ))
    }
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a single-use join token and print it (one line on stdout).
    Create {
        /// Lifetime: a number with s, m, h or d (e.g. 30m, 24h, 7d).
        #[arg(long, default_value = "24h", value_parser = parse_ttl)]
        ttl: Duration,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// Parses `90s`, `30m`, `24h`, `7d` (a bare number is seconds).
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}`: expected a number with s, m, h or d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use s, m, h or d)")),
    };
    let secs = n
        .checked_mul(mult)
        .ok_or_else(|| format!("`{s}`: too long"))?;
    if secs == 0 {
        return Err("a ttl must be positive".into());
    }
    Ok(Duration::from_secs(secs))
}

fn get(api: &ApiArgs, path: &str) -> anyhow::Result<String> {
    Ok(client::call(
        &api.api,
        "GET",
        path,
        None,
        api.secret()?.as_deref(),
    )?)
}

fn print_members(members: &[Member]) {
    println!("{:<16}  {:<7}  {:<52}  ADDR", "ID", "ROLE", "PEER");
    for m in members {
        println!("{:<16}  {:<7}  {:<52}  {}", m.id, m.role, m.peer_id, m.addr);
    }
}

pub fn members(args: StatusArgs) -> anyhow::Result<()> {
    let body = get(&args.api, "/members")?;
    if args.json {
        println!("{}", body.trim());
        return Ok(());
    }
    let m: Vec<Member> = serde_json::from_str(&body).context("unexpected /members answer")?;
    print_members(&m);
    Ok(())
}

/// `health`: exit 0 when the daemon answers `/healthz` with ok, 1 otherwise
/// (a container healthcheck for an image that has no curl).
pub fn health(args: ApiArgs) -> anyhow::Result<()> {
    let body = get(&args, "/healthz").context("daemon not healthy")?;
    println!("{}", body.trim());
    Ok(())
}

pub fn token(args: TokenArgs) -> anyhow::Result<()> {
    match args.command {
        TokenCommand::Create { ttl, api } => {
            let req = serde_json::to_string(&TokenRequest {
                ttl_secs: ttl.as_secs(),
            })?;
            let body = client::call(
                &api.api,
                "POST",
                "/token",
                Some(&req),
                api.secret()?.as_deref(),
            )?;
            let t: TokenCreated =
                serde_json::from_str(&body).context("unexpected /token answer")?;
            // stdout is the token alone (scripts capture it); the pin goes
            // to stderr with the command to paste on the new node.
            println!("{}", t.token);
            if let Some(f) = &t.cluster_fingerprint {
                eprintln!("cluster fingerprint: {f}");
                eprintln!(
                    "join a new node with: filesyncd --dir DIR --join <this node's p2p address> --token <the token above> --cluster-fingerprint {f}"
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_ttl("5m"), Ok(Duration::from_secs(300)));
        for bad in ["", "h", "0s", "1w", "-1h", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
