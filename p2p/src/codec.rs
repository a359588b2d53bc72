//! request-response codecs: length-prefixed frames with hard caps.
//!
//! Frame: `u32 LE length ‖ body`. A length above the cap is an
//! `InvalidData` error before any buffer is allocated; the body is read in
//! steps of at most [`READ_STEP`] so memory grows with bytes actually
//! received, not with what the prefix claims.

use crate::protocol::{JoinRequest, JoinResponse, MAX_JOIN_MESSAGE};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response::Codec;
use libp2p::StreamProtocol;
use std::io;

/// Largest single allocation step while reading a body.
pub const READ_STEP: usize = 1 << 20;

/// Reads one frame of at most `max` bytes.
pub async fn read_frame<T: AsyncRead + Unpin>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the cap of {max}"),
        ));
    }
    let mut buf = Vec::with_capacity(len.min(READ_STEP));
    while buf.len() < len {
        let want = (len - buf.len()).min(READ_STEP);
        let start = buf.len();
        buf.resize(start + want, 0);
        io.read_exact(&mut buf[start..]).await?;
    }
    Ok(buf)
}

/// Writes one frame, refusing bodies above `max`.
pub async fn write_frame<T: AsyncWrite + Unpin>(
    io: &mut T,
    body: &[u8],
    max: usize,
) -> io::Result<()> {
    if body.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("message of {} bytes exceeds the cap of {max}", body.len()),
        ));
    }
    let len = u32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message over 4 GiB"))?;
    io.write_all(&len.to_le_bytes()).await?;
    io.write_all(body).await?;
    io.flush().await
}

/// Opaque bytes both ways (Raft, ctl).
#[derive(Clone, Debug)]
pub struct BytesCodec {
    pub max_request: usize,
    pub max_response: usize,
}

impl Codec for BytesCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_request).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_response).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req, self.max_request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res, self.max_response).await
    }
}

/// postcard-encoded join messages, capped at [`MAX_JOIN_MESSAGE`].
#[derive(Clone, Debug, Default)]
pub struct JoinCodec;

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn encode<T: serde::Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    postcard::to_stdvec(msg).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

impl Codec for JoinCodec {
    type Protocol = StreamProtocol;
    type Request = JoinRequest;
    type Response = JoinResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<JoinRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        decode(&read_frame(io, MAX_JOIN_MESSAGE).await?)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<JoinResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        decode(&read_frame(io, MAX_JOIN_MESSAGE).await?)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: JoinRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &encode(&req)?, MAX_JOIN_MESSAGE).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: JoinResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &encode(&res)?, MAX_JOIN_MESSAGE).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RejectReason;
    use futures::executor::block_on;
    use futures::io::Cursor;
    use proptest::prelude::*;

    #[test]
    fn oversized_prefix_is_refused_before_reading_the_body() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&(u32::MAX).to_le_bytes());
        let mut cur = Cursor::new(wire);
        let err = block_on(read_frame(&mut cur, 1024)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn truncated_body_is_an_error() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&10u32.to_le_bytes());
        wire.extend_from_slice(b"short");
        let err = block_on(read_frame(&mut Cursor::new(wire), 1024)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn writer_refuses_over_cap() {
        let mut out = Cursor::new(Vec::new());
        let err = block_on(write_frame(&mut out, &[0u8; 11], 10)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(out.into_inner().is_empty());
    }

    #[test]
    fn join_messages_roundtrip() {
        let msgs = [
            JoinResponse::Challenge { nonce: [3; 32] },
            JoinResponse::Rejected {
                reason: RejectReason::Used,
                hint: b"x".to_vec(),
            },
            JoinResponse::Accepted {
                payload: vec![1, 2, 3],
                member_mac: [9; 32],
            },
        ];
        for m in msgs {
            let mut out = Cursor::new(Vec::new());
            let proto = crate::protocol::JOIN_PROTOCOL;
            block_on(JoinCodec.write_response(&proto, &mut out, m.clone())).unwrap();
            let mut inp = Cursor::new(out.into_inner());
            assert_eq!(
                block_on(JoinCodec.read_response(&proto, &mut inp)).unwrap(),
                m
            );
        }
    }

    proptest! {
        #[test]
        fn frames_roundtrip(body in proptest::collection::vec(any::<u8>(), 0..5000), cap in 0usize..6000) {
            let mut out = Cursor::new(Vec::new());
            let res = block_on(write_frame(&mut out, &body, cap));
            if body.len() > cap {
                prop_assert!(res.is_err());
            } else {
                res.unwrap();
                let mut inp = Cursor::new(out.into_inner());
                prop_assert_eq!(block_on(read_frame(&mut inp, cap)).unwrap(), body);
            }
        }

        #[test]
        fn join_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode::<JoinRequest>(&bytes);
            let _ = decode::<JoinResponse>(&bytes);
        }
    }
}
