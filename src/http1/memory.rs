//! [`MemoryStream`]: a byte stream with no socket under it, for the differential fuzz target:
//! each read returns (at most) the next of the pieces it was given, then the end of the stream
//! — or, if the peer is to stay open, nothing ever again (`Pending`). As from a server, nothing
//! arrives before a request has been written. Writes are taken and dropped. Compiled only under
//! `cfg(fuzzing)`.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// See the module docs.
pub(crate) struct MemoryStream {
    pieces: VecDeque<Vec<u8>>,
    /// After the pieces: the end of the stream (`true`), or a peer that stays open and quiet.
    eof: bool,
    /// A request has been written: the server's bytes may come.
    asked: bool,
}

impl MemoryStream {
    pub(crate) fn new(pieces: Vec<Vec<u8>>, eof: bool) -> Self {
        MemoryStream {
            pieces: pieces.into_iter().filter(|p| !p.is_empty()).collect(),
            eof,
            asked: false,
        }
    }

    /// No byte is waiting and the peer has not closed: an idle connection still alive.
    pub(crate) fn quiet(&self) -> bool {
        self.pieces.is_empty() && !self.eof
    }
}

impl AsyncRead for MemoryStream {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.asked {
            return Poll::Pending;
        }
        let Some(piece) = this.pieces.front_mut() else {
            return if this.eof {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            };
        };
        let n = piece.len().min(buf.remaining());
        buf.put_slice(&piece[..n]);
        piece.drain(..n);
        if piece.is_empty() {
            this.pieces.pop_front();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for MemoryStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().asked = true;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
