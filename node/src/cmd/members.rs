//! `filesyncd remove <NODE>`: remove a member from the cluster through a
//! running daemon's control API (`DELETE /members/{node}`). NODE is a node
//! id as `filesyncd members` prints it, or a peer id. Prints the members
//! left (or the JSON answer with `--json`); exit 1 on any failure.

use anyhow::Context;
use clap::Args;
use filesyncd::api::client;
use filesyncd::api::members::Removed;

use super::ctl::ApiArgs;

#[derive(Args, Debug)]
pub struct RemoveArgs {
    /// Node id (16 hex digits, as `members` prints it) or peer id.
    #[arg(value_name = "NODE")]
    pub node: String,
    #[command(flatten)]
    pub api: ApiArgs,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn remove(args: RemoveArgs) -> anyhow::Result<()> {
    // Node ids are hex and peer ids base58: nothing to escape in the path.
    if args.node.is_empty() || !args.node.bytes().all(|b| b.is_ascii_alphanumeric()) {
        anyhow::bail!(
            "`{}` is not a node id or peer id (see `filesyncd members`)",
            args.node
        );
    }
    let body = client::call(
        &args.api.api,
        "DELETE",
        &format!("/members/{}", args.node),
        None,
        args.api.secret()?.as_deref(),
    )?;
    if args.json {
        println!("{}", body.trim());
        return Ok(());
    }
    let r: Removed = serde_json::from_str(&body).context("unexpected /members answer")?;
    println!("removed {} ({})", r.id, r.peer_id);
    println!("{} members left", r.members.len());
    for m in &r.members {
        println!("{:<16}  {:<7}  {}", m.id, m.role, m.peer_id);
    }
    Ok(())
}
