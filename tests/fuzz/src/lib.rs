//! What the fuzz targets share: an in-memory server for the probe readers
//! (a script of bytes handed out in chunks, never blocking), a poll that
//! insists a future over it finishes at once, and the split of a target's
//! input into its one-line header and the bytes after it.

use std::{
    future::Future,
    io,
    pin::{Pin, pin},
    task::{Context, Poll, Waker},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A server that answers whatever is written with `script`, at most `chunk`
/// bytes per read (0: as much as the reader asks for), then end of stream.
/// Writes are taken and dropped. It is never `Pending`.
#[derive(Debug)]
pub struct Script<'a> {
    rest: &'a [u8],
    chunk: usize,
}

impl<'a> Script<'a> {
    #[must_use]
    pub fn new(script: &'a [u8], chunk: usize) -> Self {
        Self {
            rest: script,
            chunk,
        }
    }
}

impl AsyncRead for Script<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut n = self.rest.len().min(buf.remaining());
        if self.chunk > 0 {
            n = n.min(self.chunk);
        }
        let (now, later) = self.rest.split_at(n);
        buf.put_slice(now);
        self.rest = later;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Script<'_> {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Polls `f` once: over a [`Script`] nothing ever waits, so a future that
/// is not done after one poll waits for something that never comes (a
/// reader that hangs on a closed stream), which is a bug.
pub fn finish<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the reader waits although the stream never blocks"),
    }
}

/// The input's first line (without its `\n`, lossily as text) and the
/// bytes after it; without a `\n`, an empty header and the whole input.
#[must_use]
pub fn header(data: &[u8]) -> (String, &[u8]) {
    match data.iter().position(|b| *b == b'\n') {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => (String::new(), data),
    }
}
