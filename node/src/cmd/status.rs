//! `filesyncd status [--watch [--interval 1s]]`: this node, its Raft view,
//! the members, and where sync stands (in sync or not, pending versions,
//! transfers with bytes, speed and ETA).
//!
//! `--json` prints the API's `/status` body (with `--watch`, one line per
//! refresh). `--watch` redraws the table every interval until Ctrl-C; a
//! daemon that stops answering meanwhile is shown as an error line and
//! retried. Exit 1 if the daemon cannot be reached at the start.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use filesyncd::api::types::{Member, Status};
use filesyncd::daemon::sync::Transfer;

use super::ctl::ApiArgs;
use super::format::{bytes, duration};
use filesyncd::now_ms;

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Print the API's JSON answer.
    #[arg(long)]
    pub json: bool,
    /// Refresh until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Time between refreshes with --watch (e.g. 500ms, 1s, 1m).
    #[arg(long, default_value = "1s", value_parser = parse_interval, requires = "watch")]
    pub interval: Duration,
}

/// `500ms`, `2s`, `1m` (a bare number is seconds); 100 ms to 1 h.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}`: expected a number with ms, s or m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s or m)")),
    };
    if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
        return Err(format!("`{s}`: pick an interval from 100ms to 1h"));
    }
    Ok(d)
}

/// Speed (bytes/s) and ETA (s) of a transfer at `now_ms`, once measurable.
pub fn speed_eta(t: &Transfer, now_ms: u64) -> (Option<f64>, Option<u64>) {
    let elapsed_ms = now_ms.saturating_sub(t.started_ms);
    if elapsed_ms == 0 || t.bytes_done == 0 {
        return (None, None);
    }
    let speed = t.bytes_done as f64 * 1000.0 / elapsed_ms as f64;
    let left = t.bytes_total.saturating_sub(t.bytes_done) as f64;
    (Some(speed), Some((left / speed).ceil() as u64))
}

fn member_rows(members: &[Member], leader: Option<&str>) -> Vec<String> {
    let mut out = vec![format!(
        "  {:<16}  {:<7}  {:<9}  {:<52}  ADDR",
        "ID", "ROLE", "REACHABLE", "PEER"
    )];
    for m in members {
        let role = if Some(m.id.as_str()) == leader {
            format!("{}*", m.role)
        } else {
            m.role.clone()
        };
        let reach = match (m.reachable, m.path.as_deref()) {
            (Some(true), Some("relayed")) => "relayed",
            (Some(true), _) => "yes",
            (Some(false), _) => "no",
            (None, _) => "?",
        };
        out.push(format!(
            "  {:<16}  {:<7}  {:<9}  {:<52}  {}",
            m.id, role, reach, m.peer_id, m.addr
        ));
    }
    out
}

/// The readable status (see the module doc).
pub fn render(s: &Status, now_ms: u64) -> Vec<String> {
    let or_dash = |v: Option<&str>| v.unwrap_or("-").to_string();
    let mut l = vec![
        format!("node        {}", s.node_id),
        format!("peer        {}", s.peer_id),
        format!(
            "raft        {}, term {}, leader {}",
            s.state,
            s.term,
            or_dash(s.leader.as_deref())
        ),
        format!(
            "applied     {} (last log {})",
            s.applied_index.map_or("-".into(), |i| i.to_string()),
            s.last_log_index.map_or("-".into(), |i| i.to_string())
        ),
        format!("cluster     {}", or_dash(s.cluster_id.as_deref())),
        format!("fingerprint {}", or_dash(s.cluster_fingerprint.as_deref())),
        format!("dir         {}", or_dash(s.dir.as_deref())),
        format!("root        cluster {}", s.cluster_root),
        format!("            local   {}", or_dash(s.local_root.as_deref())),
    ];
    if let Some(n) = &s.nat {
        let mut line = format!("reach       {}", n.reachability);
        if let Some(seen) = n.observed.first() {
            line.push_str(&format!(", seen at {seen}"));
        }
        if !n.relayed.is_empty() {
            line.push_str(&format!(", through {} member relay(s)", n.relayed.len()));
        }
        l.push(line);
    }
    if let Some(b) = &s.bulk {
        l.push(match &b.addr {
            None => "bulk        off (chunks travel over the swarm)".to_string(),
            Some(addr) => format!(
                "bulk        {addr}, {} member(s) connected, {} received over bulk, {} request(s) served",
                b.peers.len(),
                bytes(b.bytes_bulk),
                b.served_requests
            ),
        });
    }
    match &s.sync {
        None => l.push("in sync     no (the sync service is not running)".into()),
        Some(y) => {
            let state = if s.in_sync {
                "yes".to_string()
            } else if !y.started {
                "no (starting)".to_string()
            } else if s.leader.is_none() {
                "no (no leader known: this node reaches no quorum of the voters)".to_string()
            } else {
                format!(
                    "no ({} local changes to commit, {} committed versions to fetch)",
                    y.pending_local, y.pending_remote
                )
            };
            l.push(format!("in sync     {state}"));
            l.push(format!(
                "pending     {} local, {} remote",
                y.pending_local, y.pending_remote
            ));
            if let Some(h) = &y.halted {
                l.push(format!("HALTED      {h} (fix it, then `filesyncd adopt`)"));
            }
            if let Some(p) = &y.paused {
                l.push(format!(
                    "PAUSED      {p}; {} change(s) withheld (`filesyncd confirm` lets them out)",
                    y.withheld
                ));
            }
            if let Some(e) = &y.last_error {
                l.push(format!("last error  {e}"));
            }
            if y.held_back > 0 {
                l.push(format!(
                    "HELD BACK   {} file(s) larger than --max-file-size, not synced:",
                    y.held_back
                ));
                for f in &y.held_back_files {
                    let side = if f.local {
                        "here, not proposed"
                    } else {
                        "committed, not fetched"
                    };
                    l.push(format!(
                        "            {} ({}, {side})",
                        f.path,
                        bytes(f.size)
                    ));
                }
                let unlisted = y.held_back.saturating_sub(y.held_back_files.len() as u64);
                if unlisted > 0 {
                    l.push(format!("            ... and {unlisted} more"));
                }
            }
            l.push(format!(
                "totals      {} committed, {} written, {} deleted, {} conflicts, {} received in {} chunks, {} chunks reused",
                y.versions_proposed,
                y.files_written,
                y.files_deleted,
                y.conflicts,
                bytes(y.bytes_fetched),
                y.chunks_fetched,
                y.chunks_reused
            ));
        }
    }
    l.push(String::new());
    l.push(format!("members ({}, * = leader)", s.members.len()));
    l.extend(member_rows(&s.members, s.leader.as_deref()));
    let transfers: &[Transfer] = s.sync.as_ref().map_or(&[], |y| &y.transfers);
    if !transfers.is_empty() {
        l.push(String::new());
        l.push(format!("transfers ({})", transfers.len()));
        l.push(format!(
            "  {:>23}  {:>5}  {:>11}  {:>7}  PATH",
            "BYTES", "DONE", "SPEED", "ETA"
        ));
        for t in transfers {
            let (speed, eta) = speed_eta(t, now_ms);
            let pct = t
                .bytes_done
                .saturating_mul(100)
                .checked_div(t.bytes_total)
                .unwrap_or(100);
            l.push(format!(
                "  {:>23}  {:>4}%  {:>11}  {:>7}  {}",
                format!("{} / {}", bytes(t.bytes_done), bytes(t.bytes_total)),
                pct.min(100),
                speed.map_or("-".into(), |v| format!("{}/s", bytes(v as u64))),
                eta.map_or("-".into(), duration),
                t.path
            ));
        }
    }
    l
}

fn fetch(api: &ApiArgs) -> anyhow::Result<String> {
    Ok(filesyncd::api::client::call(
        &api.api,
        "GET",
        "/status",
        None,
        api.secret()?.as_deref(),
    )?)
}

fn show(args: &StatusArgs, body: &str) -> anyhow::Result<()> {
    if args.json {
        // One line per document (JSON lines while watching).
        let v: serde_json::Value =
            serde_json::from_str(body).context("unexpected /status answer")?;
        println!("{v}");
        return Ok(());
    }
    let s: Status = serde_json::from_str(body).context("unexpected /status answer")?;
    for line in render(&s, now_ms()) {
        println!("{line}");
    }
    Ok(())
}

pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let body = fetch(&args.api)?;
    if !args.watch {
        return show(&args, &body);
    }
    let redraw = !args.json && std::io::stdout().is_terminal();
    let mut body = Ok(body);
    loop {
        if redraw {
            // Clear the screen and home the cursor.
            print!("\x1b[2J\x1b[H");
        }
        match &body {
            Ok(b) => show(&args, b)?,
            Err(e) => println!("filesyncd: {e:#} (retrying)"),
        }
        if !redraw && !args.json {
            println!();
        }
        std::thread::sleep(args.interval);
        body = fetch(&args.api);
    }
}

#[cfg(test)]
mod tests {
    use filesyncd::daemon::sync::SyncStatus;

    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_interval("1m"), Ok(Duration::from_secs(60)));
        for bad in ["", "0s", "50ms", "2h", "1x", "-1s", "ms"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn transfer_speed_and_eta() {
        let t = Transfer {
            path: "big".into(),
            bytes_done: 10 << 20,
            bytes_total: 30 << 20,
            started_ms: 1_000,
        };
        let (speed, eta) = speed_eta(&t, 11_000);
        assert_eq!(speed, Some((1 << 20) as f64));
        assert_eq!(eta, Some(20));
        assert_eq!(speed_eta(&t, 1_000), (None, None), "no time elapsed yet");
        let fresh = Transfer {
            bytes_done: 0,
            ..t.clone()
        };
        assert_eq!(speed_eta(&fresh, 5_000), (None, None));
    }

    fn status() -> Status {
        Status {
            node_id: "00000000000000aa".into(),
            peer_id: "12D3KooWA".into(),
            state: "Leader".into(),
            leader: Some("00000000000000aa".into()),
            term: 3,
            last_log_index: Some(12),
            applied_index: Some(12),
            cluster_id: Some("c1".into()),
            cluster_fingerprint: None,
            cluster_root: "ab".repeat(32),
            members: vec![
                Member {
                    id: "00000000000000aa".into(),
                    peer_id: "12D3KooWA".into(),
                    addr: "/ip4/127.0.0.1/udp/7400/quic-v1".into(),
                    role: "voter".into(),
                    reachable: Some(true),
                    path: None,
                },
                Member {
                    id: "00000000000000bb".into(),
                    peer_id: "12D3KooWB".into(),
                    addr: "/ip4/127.0.0.2/udp/7400/quic-v1".into(),
                    role: "learner".into(),
                    reachable: None,
                    path: None,
                },
            ],
            dir: Some("/srv/sync".into()),
            local_root: Some("ab".repeat(32)),
            in_sync: false,
            sync: Some(SyncStatus {
                started: true,
                pending_remote: 4,
                transfers: vec![Transfer {
                    path: "big.iso".into(),
                    bytes_done: 1 << 30,
                    bytes_total: 4 << 30,
                    started_ms: 0,
                }],
                ..SyncStatus::default()
            }),
            nat: None,
            bulk: None,
        }
    }

    #[test]
    fn the_table_shows_everything_asked_for() {
        let text = render(&status(), 64_000).join("\n");
        for want in [
            "node        00000000000000aa",
            "raft        Leader, term 3, leader 00000000000000aa",
            "applied     12",
            "dir         /srv/sync",
            "in sync     no (0 local changes to commit, 4 committed versions to fetch)",
            "voter*",
            "learner",
            "/ip4/127.0.0.2/udp/7400/quic-v1",
            "1.0 GiB / 4.0 GiB",
            "25%",
            "16.0 MiB/s",
            "3m12s",
            "big.iso",
        ] {
            assert!(text.contains(want), "{want:?} missing in\n{text}");
        }
        let mut s = status();
        s.in_sync = true;
        s.sync.as_mut().unwrap().transfers.clear();
        let text = render(&s, 0).join("\n");
        assert!(text.contains("in sync     yes"));
        assert!(!text.contains("transfers"));
        s.sync = None;
        assert!(render(&s, 0)
            .join("\n")
            .contains("the sync service is not running"));
    }
}
