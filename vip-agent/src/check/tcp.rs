//! The `tcp` probe: a connect. Every in-process probe starts with it.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _},
    net::TcpStream,
};

/// Connects to `addr`; the stream closes with an RST, as `HAProxy`'s checks
/// do: no `TIME_WAIT` per probe (a thousand a second at 100 backends and
/// 100 ms) and two packets fewer.
pub async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect(addr).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        _ => format!("cannot connect: {e}"),
    })?;
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    Ok(s)
}

/// Reads what `s` has next onto the end of `buf`; `false` at end of stream.
/// The error reads "read failed: ...".
pub async fn read_more<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Result<bool, String> {
    let mut chunk = [0u8; 4096];
    let n = s
        .read(&mut chunk)
        .await
        .map_err(|e| format!("read failed: {e}"))?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}
