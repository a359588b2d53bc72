//! Single-threaded streaming chunker over any `std::io::Read`.
//!
//! One reusable buffer (at least `2 * max_size`, 1 MiB by default); every
//! byte is read from the source exactly once. When fewer than `max_size`
//! bytes remain past the current chunk start, the tail (< `max_size` bytes)
//! is moved to the front and the buffer refilled, so [`Chunker::cut`] always
//! sees either `max_size` bytes or the true end of the stream: boundaries
//! do not depend on how the source splits its reads.

use std::io::{ErrorKind, Read};

use super::rabin::Chunker;
use super::ReadError;

/// Minimum buffer size of a [`ChunkReader`].
pub const DEFAULT_BUFFER: usize = 1 << 20;

/// One chunk borrowed from the reader's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// Offset of the chunk's first byte in the stream.
    pub offset: u64,
    pub data: &'a [u8],
}

/// Streams chunks out of a reader (a lending iterator: call
/// [`next_chunk`](Self::next_chunk) until it returns `None`).
pub struct ChunkReader<R> {
    reader: R,
    chunker: Chunker,
    buf: Vec<u8>,
    /// Start of the next chunk in `buf`.
    start: usize,
    /// End of the valid bytes in `buf`.
    end: usize,
    /// Stream offset of `buf[start]`.
    offset: u64,
    eof: bool,
}

impl<R: Read> ChunkReader<R> {
    pub fn new(reader: R, chunker: Chunker) -> Self {
        Self::with_buffer_size(reader, chunker, DEFAULT_BUFFER)
    }

    /// `size` is raised to `2 * max_size` if smaller.
    pub fn with_buffer_size(reader: R, chunker: Chunker, size: usize) -> Self {
        let size = size.max(2 * chunker.max_size());
        ChunkReader {
            reader,
            chunker,
            buf: vec![0; size],
            start: 0,
            end: 0,
            offset: 0,
            eof: false,
        }
    }

    /// The next chunk, or `None` at the end of the stream (an empty stream
    /// yields no chunk).
    pub fn next_chunk(&mut self) -> Result<Option<Chunk<'_>>, ReadError> {
        let max = self.chunker.max_size();
        if self.end - self.start < max && !self.eof {
            if self.buf.len() - self.start < max {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let stream_end = self.offset + (self.end - self.start) as u64;
            let filled = fill(&mut self.reader, &mut self.buf[self.end..], stream_end)?;
            self.end += filled.len;
            self.eof = filled.eof;
        }
        let len = self.chunker.cut(&self.buf[self.start..self.end]);
        if len == 0 {
            return Ok(None);
        }
        let chunk = Chunk {
            offset: self.offset,
            data: &self.buf[self.start..self.start + len],
        };
        self.start += len;
        self.offset += len as u64;
        Ok(Some(chunk))
    }

    pub fn into_inner(self) -> R {
        self.reader
    }
}

/// Result of [`fill`].
pub(super) struct Filled {
    pub len: usize,
    pub eof: bool,
}

/// Reads until `dst` is full or the reader reports end of stream.
/// `stream_offset` (offset of `dst[0]`) only labels errors.
pub(super) fn fill<R: Read>(
    reader: &mut R,
    dst: &mut [u8],
    stream_offset: u64,
) -> Result<Filled, ReadError> {
    let mut len = 0;
    while len < dst.len() {
        match reader.read(&mut dst[len..]) {
            Ok(0) => return Ok(Filled { len, eof: true }),
            Ok(n) => len += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(ReadError::Io {
                    offset: stream_offset + len as u64,
                    source,
                })
            }
        }
    }
    Ok(Filled { len, eof: false })
}
