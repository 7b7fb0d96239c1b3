//! The `tcp` probe: a connect. Every in-process probe starts with it.

use std::{net::SocketAddr, time::Duration};

use tokio::net::TcpStream;

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
