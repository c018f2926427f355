//! Where a blob's bytes go while it is fetched: a file that can start
//! over when a fetch is tried again, through a counter that adds them to
//! the pull's progress and refuses more than the manifest said.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWriteExt as _;

use super::progress::Progress;

/// A sink that can start over (a retried blob).
pub(super) trait Restart: tokio::io::AsyncWrite + Unpin + Send {
    fn restart(&mut self) -> impl std::future::Future<Output = std::io::Result<()>> + Send;
}

impl Restart for tokio::io::BufWriter<tokio::fs::File> {
    async fn restart(&mut self) -> std::io::Result<()> {
        use tokio::io::AsyncSeekExt as _;
        self.flush().await?;
        let file = self.get_mut();
        file.set_len(0).await?;
        file.seek(std::io::SeekFrom::Start(0)).await?;
        Ok(())
    }
}

/// Counts what passes into the pull's progress.
pub(super) struct Counting<'a, W> {
    pub(super) inner: &'a mut W,
    pub(super) progress: Arc<Progress>,
    /// Bytes counted since the last start.
    pub(super) counted: u64,
    /// Most bytes taken: what the manifest says the blob weighs.
    pub(super) limit: u64,
}

impl<W: Restart> Restart for Counting<'_, W> {
    async fn restart(&mut self) -> std::io::Result<()> {
        self.progress.take_bytes(std::mem::take(&mut self.counted));
        self.inner.restart().await
    }
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counting<'_, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.counted + buf.len() as u64 > this.limit {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "a blob larger than the {} bytes its manifest says",
                    this.limit
                ),
            )));
        }
        let polled = Pin::new(&mut *this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            this.counted += *n as u64;
            this.progress.add_bytes(*n as u64);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}
