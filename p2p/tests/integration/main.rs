//! Two- and three-node tests on 127.0.0.1 (random ports), all in one process.

mod bulk;
mod chunks;
mod common;
mod compression;
mod gating;
mod identity;
mod join;
mod raft;
