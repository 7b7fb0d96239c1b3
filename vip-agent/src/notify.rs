//! systemd's readiness protocol (`sd_notify`): with `Type=notify`, the agent
//! says `READY=1` once XDP is attached and the maps are written, and
//! `STOPPING=1` when it starts a clean shutdown. Tests use the same socket to
//! wait for readiness instead of guessing.

use std::{io, os::unix::net::UnixDatagram};

/// Sends `state` to `$NOTIFY_SOCKET` if it is set (a no-op otherwise).
/// Abstract sockets (`@name`) are supported.
pub fn notify(state: &str) -> io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt as _;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), &path)?;
    }
    Ok(())
}
