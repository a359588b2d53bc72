//! Snapshot files: built and installed STREAMING (one record in memory at a time).
//!
//! # Format (version 1)
//! ```text
//! magic    8 bytes  "FSDSNAP\0"
//! version  u32 LE   = 1
//! frames   repeated: u32 LE length, then that many bytes of postcard
//!            frame 0:   SnapHeader { last_log_id, membership, snapshot_id, root, state }
//!            frame 1..: SnapRecord (History, Token, TokenId, Dedup, Hint), in table key order
//!            last:      SnapRecord::End { counts }
//! trailer  32 bytes  blake3 of every byte before it
//! ```
//! The `live` and `changed` tables are not written: install derives them from the history
//! (the newest record of each path: its `changed` key, and its live record unless a
//! tombstone), rebuilds the cluster tree and refuses the snapshot unless its root equals the
//! header's.
//!
//! # Install
//! The received file is copied into `<snapshots>/install-*.tmp` while nothing else changes;
//! its checksum is verified in a first streaming pass BEFORE any state is touched; a second
//! pass replaces every replicated table and the meta in ONE redb write transaction (so a
//! crash leaves either the old state or the new one). The file then becomes the current
//! snapshot.
//!
//! # Files
//! `<snapshots>/snap-<index, 20 digits>-<nonce>.snap` is the current snapshot (the highest
//! index wins; the others are deleted once a newer one is durable). Temp files end in
//! `.tmp` (being built/installed) or `.part` (being received) and are removed on open.

mod file;
mod install;

use crate::state_machine::error::SmError;

pub use file::{
    build, current, open_for_read, read_header, verify, SnapHeader, SnapRecord, FORMAT_VERSION,
    MAGIC,
};
pub use install::{install, repair_current};

/// Reads a snapshot stream with the frame reader `install` uses: the magic
/// and version, the header, then records up to `End` (included), at most
/// `max_records`. Returns the header, the records read, and the error that
/// stopped the reading, if any. What a leader streams in InstallSnapshot
/// chunks is read by this code; exposed for the fuzz targets (`fuzz/`).
#[doc(hidden)]
pub fn read_stream<R: std::io::Read>(
    r: R,
    max_records: usize,
) -> Result<(SnapHeader, Vec<SnapRecord>, Option<SmError>), SmError> {
    let mut frames = file::FrameReader::new(r)?;
    let header: SnapHeader = frames.next()?;
    let mut records = Vec::new();
    while records.len() < max_records {
        match frames.next::<SnapRecord>() {
            Ok(rec) => {
                let end = matches!(rec, SnapRecord::End { .. });
                records.push(rec);
                if end {
                    break;
                }
            }
            Err(e) => return Ok((header, records, Some(e))),
        }
    }
    Ok((header, records, None))
}
