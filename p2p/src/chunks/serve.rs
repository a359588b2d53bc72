//! The serving side of `/filesyncd/chunks/1` over libp2p-stream, and the
//! parts the bulk endpoint shares ([`ServeShared`]'s permits,
//! [`write_frames`]).
//!
//! Inbound chunk streams reach us only on member connections (the gate does
//! not offer the protocol to strangers); membership is checked again here,
//! since it may have changed since the connection was established, and a
//! stranger's stream is dropped (reset) unread.
//!
//! Each stream waits for a per-peer, then a global permit
//! (`serve_streams_per_peer`, `serve_streams_global`: a peer's queued
//! streams hold no global permit while they wait), reads the request
//! (bounded count, checked before the hashes are read), then a blocking
//! thread asks the [`ChunkProvider`] for each chunk and frames it for this
//! peer ([`Compressor::frame`]: zstd where it pays on this link, a cached
//! frame where there is one) while the async side writes the previous
//! frame (a 2-frame pipeline). Each frame's write is timed: that is how
//! the [`Compressor`] learns what the link drains. A chunk the provider
//! does not give, or one larger than `max_chunk_len`, goes out as
//! "absent".

use super::compressor::Compressor;
use super::wire::{self, Frame};
use super::PerPeer;
use crate::config::Limits;
use crate::gate::Membership;
use crate::hooks::ChunkProvider;
use filesyncd_merkle::Hash;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream};
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Frames prepared ahead of the writer.
const PIPELINE: usize = 2;

pub(crate) struct ServeShared {
    pub limits: Limits,
    pub membership: Membership,
    pub provider: Arc<dyn ChunkProvider>,
    pub global: Arc<Semaphore>,
    pub per_peer: PerPeer,
    /// The zstd choice and the frame cache, for both paths.
    pub compressor: Arc<Compressor>,
}

/// Accepts chunk streams until the swarm is gone.
pub(crate) async fn serve_loop(
    mut incoming: libp2p_stream::IncomingStreams,
    shared: Arc<ServeShared>,
) {
    while let Some((peer, stream)) = incoming.next().await {
        if !shared.membership.is_member(&peer) {
            tracing::debug!(%peer, "chunk stream from a non-member: reset");
            drop(stream);
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_stream(&shared, peer, stream).await {
                tracing::debug!(%peer, "chunk stream ended: {e}");
            }
        });
    }
}

async fn serve_stream(shared: &ServeShared, peer: PeerId, mut stream: Stream) -> io::Result<()> {
    let limits = &shared.limits;
    let t = limits.chunk_io_timeout;
    // Permits before the request is read: a stream is one request here.
    let _permits = shared.permits(peer).await?;
    let (accept_zstd, hashes) = tokio::time::timeout(t, read_request(&mut stream, limits))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    write_frames(shared, peer, hashes, accept_zstd, &mut stream).await?;
    tokio::time::timeout(t, stream.close())
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

/// Where response frames go: a libp2p-stream stream, or a bulk stream
/// (`crate::bulk`), which hands the body over without a copy.
pub(crate) trait FrameSink: Send {
    fn write_frame(&mut self, frame: Frame) -> impl Future<Output = io::Result<()>> + Send;
}

impl FrameSink for Stream {
    async fn write_frame(&mut self, frame: Frame) -> io::Result<()> {
        self.write_all(&frame.header.encode()).await?;
        self.write_all(&frame.body).await
    }
}

/// A served stream's permits: the peer's own, then a global one.
pub(crate) struct Permits {
    _local: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

impl ServeShared {
    /// Waits for the peer's own permit first: its queued requests wait on
    /// it without holding global permits, so one peer cannot starve the
    /// others. The same permits bound both paths (libp2p-stream and bulk).
    pub(crate) async fn permits(&self, peer: PeerId) -> io::Result<Permits> {
        let closed = || io::Error::new(io::ErrorKind::BrokenPipe, "semaphore closed");
        let local = self
            .per_peer
            .get(peer)
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        let global = self
            .global
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        Ok(Permits {
            _local: local,
            _global: global,
        })
    }
}

/// Answers one request of `peer`: a blocking thread asks the provider for
/// each chunk and frames it for `peer` while `sink` takes the previous
/// frame (a 2-frame pipeline). Each frame is written within
/// `chunk_io_timeout`, and its write time told to the compressor. The
/// stream is not closed here.
pub(crate) async fn write_frames<S: FrameSink>(
    shared: &ServeShared,
    peer: PeerId,
    hashes: Vec<Hash>,
    accept_zstd: bool,
    sink: &mut S,
) -> io::Result<()> {
    let t = shared.limits.chunk_io_timeout;
    let (tx, mut rx) = mpsc::channel::<Frame>(PIPELINE);
    let provider = shared.provider.clone();
    let compressor = shared.compressor.clone();
    let max_chunk = shared.limits.max_chunk_len;
    let producer = tokio::task::spawn_blocking(move || {
        for hash in hashes {
            let frame = match provider.get(&hash) {
                Some(data) if data.len() <= max_chunk => {
                    compressor.frame(peer, hash, data, accept_zstd)
                }
                Some(data) => {
                    tracing::warn!(
                        ?hash,
                        len = data.len(),
                        "provider chunk over max_chunk_len: sent as absent"
                    );
                    Frame::absent(hash)
                }
                None => Frame::absent(hash),
            };
            if tx.blocking_send(frame).is_err() {
                return; // the writer gave up
            }
        }
    });
    let written = async {
        while let Some(frame) = rx.recv().await {
            let bytes = wire::HEADER_LEN + frame.body.len();
            let absent = frame.header.kind == wire::Kind::Absent;
            let t0 = Instant::now();
            tokio::time::timeout(t, sink.write_frame(frame))
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            if !absent {
                shared.compressor.record_write(peer, bytes, t0.elapsed());
            }
        }
        Ok(())
    }
    .await;
    drop(rx);
    let _ = producer.await;
    written
}

/// Reads a chunk request off `stream` (the server's side of the protocol):
/// the 4-byte head, checked against `limits` before the hashes are read,
/// then the hashes. Returns (accepts zstd, hashes).
pub async fn read_request<R: futures::AsyncRead + Unpin>(
    stream: &mut R,
    limits: &Limits,
) -> io::Result<(bool, Vec<filesyncd_merkle::Hash>)> {
    let mut head = [0u8; wire::REQUEST_HEAD_LEN];
    stream.read_exact(&mut head).await?;
    let (accept_zstd, count) = wire::decode_request_head(head, limits.max_chunks_per_request)?;
    let mut raw = vec![0u8; count * 32];
    stream.read_exact(&mut raw).await?;
    Ok((accept_zstd, wire::decode_hashes(&raw)))
}
