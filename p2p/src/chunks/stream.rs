//! The stream one fetch batch runs on: a bulk stream when a bulk
//! connection to the holder is up (`crate::bulk`), else a libp2p-stream
//! stream of `/filesyncd/chunks/1`. Both carry the same request and
//! frames ([`super::wire`]); the fetcher reads frames through
//! [`futures::AsyncRead`] either way.
//!
//! The difference is the end of a request: a libp2p stream carries one
//! request, so the fetcher half-closes it after writing; a bulk stream
//! carries one request after another, so it stays open, and goes back to
//! the pool ([`ChunkStream::done`]) only once every frame of the response
//! was read. Dropped earlier (a fault, an I/O error, a cancelled fetch),
//! either kind is reset.

use super::fetch::FetchShared;
use crate::bulk::dialer::Lease;
use crate::bulk::Counters;
use crate::protocol::CHUNKS_PROTOCOL;
use futures::AsyncWriteExt;
use libp2p::PeerId;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

pub(crate) enum ChunkStream {
    Libp2p(libp2p::Stream),
    Bulk(Lease),
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "bulk stream released")
}

impl ChunkStream {
    /// A bulk stream if a bulk connection to `peer` is up, else a
    /// libp2p-stream stream (opened within `chunk_io_timeout`).
    pub(crate) async fn open(shared: &FetchShared, peer: PeerId) -> io::Result<ChunkStream> {
        if let Some(bulk) = &shared.bulk {
            if let Some(lease) = bulk.lease(peer).await {
                Counters::bump(&shared.counters.requests_bulk, 1);
                return Ok(ChunkStream::Bulk(lease));
            }
        }
        let mut control = shared.control.clone();
        let t = shared.limits.chunk_io_timeout;
        let stream = tokio::time::timeout(t, control.open_stream(peer, CHUNKS_PROTOCOL))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
            .map_err(|e| io::Error::new(io::ErrorKind::ConnectionRefused, e.to_string()))?;
        Counters::bump(&shared.counters.requests_libp2p, 1);
        Ok(ChunkStream::Libp2p(stream))
    }

    pub(crate) fn is_bulk(&self) -> bool {
        matches!(self, ChunkStream::Bulk(_))
    }

    /// Writes the request; a libp2p stream is half-closed after it.
    pub(crate) async fn send_request(&mut self, request: &[u8]) -> io::Result<()> {
        match self {
            ChunkStream::Libp2p(s) => {
                s.write_all(request).await?;
                s.close().await
            }
            ChunkStream::Bulk(lease) => lease
                .send()
                .ok_or_else(gone)?
                .write_all(request)
                .await
                .map_err(io::Error::from),
        }
    }

    /// Every frame of the response was read.
    pub(crate) fn done(self) {
        match self {
            ChunkStream::Libp2p(s) => drop(s),
            ChunkStream::Bulk(lease) => lease.release(),
        }
    }
}

impl futures::AsyncRead for ChunkStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ChunkStream::Libp2p(s) => futures::AsyncRead::poll_read(Pin::new(s), cx, buf),
            ChunkStream::Bulk(lease) => match lease.recv() {
                Some(r) => futures::AsyncRead::poll_read(Pin::new(r), cx, buf),
                None => Poll::Ready(Err(gone())),
            },
        }
    }
}
