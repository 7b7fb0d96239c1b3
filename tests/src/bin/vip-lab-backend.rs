//! `vip-lab-backend --name b1 [--tcp ADDR:PORT]... [--udp ADDR:PORT]...`: the
//! lab's backend server, which tells every client who it is.
//!
//! TCP: greets each connection with `<name>\n`, then answers every line with
//! `<name> <line>\n` (so a client can ask an open connection where it went),
//! and closes on EOF. UDP: answers each datagram with `<name> <payload>`, from
//! the address the datagram was sent to (a VIP on `lo` in DSR), not from
//! whatever address routing would pick. A thread per connection; exits 0 on
//! SIGTERM or SIGINT, ignores SIGHUP (a persistent lab outlives its terminal).

use std::{
    io::{self, BufRead as _, BufReader, Write as _},
    mem::{size_of, zeroed},
    net::{SocketAddrV4, TcpListener, TcpStream},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    process::ExitCode,
    sync::Arc,
};

/// Listen backlog: 2000 quick connects must not overflow it (the kernel caps
/// it at `net.core.somaxconn`, 4096 by default).
const BACKLOG: libc::c_int = 4096;
const THREAD_STACK: usize = 128 * 1024;

struct Args {
    name: String,
    tcp: Vec<SocketAddrV4>,
    udp: Vec<SocketAddrV4>,
}

const USAGE: &str = "usage: vip-lab-backend --name NAME [--tcp ADDR:PORT]... [--udp ADDR:PORT]...";

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut name, mut tcp, mut udp) = (None, Vec::new(), Vec::new());
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--name" => name = Some(value()?),
            "--tcp" | "--udp" => {
                let v = value()?;
                let addr: SocketAddrV4 = v
                    .parse()
                    .map_err(|e| format!("{flag} {v}: not an IPv4 ADDR:PORT ({e})"))?;
                if flag == "--tcp" {
                    tcp.push(addr);
                } else {
                    udp.push(addr);
                }
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let name = name.ok_or_else(|| format!("--name is required\n{USAGE}"))?;
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("--name {name:?}: must be one word"));
    }
    if tcp.is_empty() && udp.is_empty() {
        return Err(format!("nothing to serve: give --tcp or --udp\n{USAGE}"));
    }
    Ok(Args { name, tcp, udp })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(io::stderr(), "vip-lab-backend: {e}");
            return ExitCode::from(2);
        }
    };
    raise_fd_limit();
    // Block the stop signals in every thread (threads inherit the mask) and
    // take them synchronously in main with sigwait.
    let stop = stop_signals();
    // SAFETY: plain sigprocmask-style calls on a valid set.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &raw const stop, std::ptr::null_mut());
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let name: Arc<str> = Arc::from(args.name.as_str());
    for addr in &args.tcp {
        let listener = match tcp_listener(*addr) {
            Ok(l) => l,
            Err(e) => return fail(&format!("cannot listen on tcp {addr}: {e}")),
        };
        let name = Arc::clone(&name);
        std::thread::spawn(move || serve_tcp(&name, &listener));
    }
    for addr in &args.udp {
        let sock = match udp_socket(*addr) {
            Ok(s) => s,
            Err(e) => return fail(&format!("cannot bind udp {addr}: {e}")),
        };
        let name = Arc::clone(&name);
        std::thread::spawn(move || serve_udp(&name, &sock));
    }
    let mut sig: libc::c_int = 0;
    // SAFETY: waits for one of the blocked signals in `stop`.
    unsafe { libc::sigwait(&raw const stop, &raw mut sig) };
    ExitCode::SUCCESS
}

/// A socket and a thread per connection: thousands of open connections need
/// more than the usual soft limit of 1024 descriptors.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim);
        }
    }
}

fn fail(msg: &str) -> ExitCode {
    let _ = writeln!(io::stderr(), "vip-lab-backend: {msg}");
    ExitCode::FAILURE
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set; sigaddset on valid signals.
    unsafe {
        let mut set: libc::sigset_t = zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGTERM);
        libc::sigaddset(&raw mut set, libc::SIGINT);
        set
    }
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut sa: libc::sockaddr_in = unsafe { zeroed() };
    sa.sin_family = libc::sa_family_t::try_from(libc::AF_INET).expect("small");
    sa.sin_port = addr.port().to_be();
    sa.sin_addr.s_addr = u32::from(*addr.ip()).to_be();
    sa
}

/// A socket with `SO_REUSEADDR` bound to `addr`.
fn bound_socket(kind: libc::c_int, addr: SocketAddrV4) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, kind | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int_option(&sock, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    let sa = sockaddr(addr);
    // SAFETY: sa is a valid sockaddr_in of the size given.
    let rc = unsafe { libc::bind(fd, (&raw const sa).cast(), socklen::<libc::sockaddr_in>()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

fn set_int_option(
    sock: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a valid int option value and its length.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            socklen::<libc::c_int>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn socklen<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(size_of::<T>()).expect("small")
}

fn tcp_listener(addr: SocketAddrV4) -> io::Result<TcpListener> {
    let sock = bound_socket(libc::SOCK_STREAM, addr)?;
    // SAFETY: listen(2) on our bound socket.
    if unsafe { libc::listen(sock.as_raw_fd(), BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpListener::from(sock))
}

fn serve_tcp(name: &Arc<str>, listener: &TcpListener) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let name = Arc::clone(name);
                let spawned = std::thread::Builder::new()
                    .stack_size(THREAD_STACK)
                    .spawn(move || handle_tcp(&name, stream));
                if let Err(e) = spawned {
                    let _ = writeln!(
                        io::stderr(),
                        "vip-lab-backend: cannot start a thread, dropping a connection: {e}"
                    );
                }
            }
            // Out of fds or memory for a moment: back off instead of spinning.
            Err(e) => {
                let _ = writeln!(io::stderr(), "vip-lab-backend: accept: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

/// Greets, then echoes each line prefixed with the name, until EOF or an error.
fn handle_tcp(name: &str, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut out = stream;
    if out.write_all(format!("{name}\n").as_bytes()).is_err() {
        return;
    }
    let mut reader = BufReader::new(read_half);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        let mut reply = Vec::with_capacity(name.len() + line.len() + 2);
        reply.extend_from_slice(name.as_bytes());
        reply.push(b' ');
        reply.extend_from_slice(&line);
        reply.push(b'\n');
        if out.write_all(&reply).is_err() {
            return;
        }
    }
}

fn udp_socket(addr: SocketAddrV4) -> io::Result<OwnedFd> {
    let sock = bound_socket(libc::SOCK_DGRAM, addr)?;
    // Learn each datagram's destination address, to answer from it.
    set_int_option(&sock, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
    Ok(sock)
}

fn serve_udp(name: &str, sock: &OwnedFd) {
    let mut buf = vec![0u8; 65536];
    let prefix_len = name.len() + 1;
    buf[..name.len()].copy_from_slice(name.as_bytes());
    buf[name.len()] = b' ';
    loop {
        match recv_with_dst(sock, &mut buf[prefix_len..]) {
            Ok((n, peer, dst)) => {
                if let Err(e) = send_from(sock, &buf[..prefix_len + n], &peer, dst) {
                    let _ = writeln!(io::stderr(), "vip-lab-backend: udp reply: {e}");
                }
            }
            Err(e) => {
                let _ = writeln!(io::stderr(), "vip-lab-backend: udp receive: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

/// Control-message space for one `in_pktinfo`, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

/// Receives a datagram into `buf`: its length, sender and destination address.
fn recv_with_dst(
    sock: &OwnedFd,
    buf: &mut [u8],
) -> io::Result<(usize, libc::sockaddr_in, Option<libc::in_addr>)> {
    // SAFETY: all-zero is valid for these C structs.
    let mut peer: libc::sockaddr_in = unsafe { zeroed() };
    let mut cbuf = CmsgBuf([0; 64]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&raw mut peer).cast();
    msg.msg_namelen = socklen::<libc::sockaddr_in>();
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    msg.msg_controllen = cbuf.0.len();
    // SAFETY: msg points at live buffers of the lengths it states.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &raw mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut dst = None;
    // SAFETY: walking the control messages the kernel wrote into cbuf.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_PKTINFO {
                let info: libc::in_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                dst = Some(info.ipi_addr);
            }
            c = libc::CMSG_NXTHDR(&raw const msg, c);
        }
    }
    Ok((usize::try_from(n).expect("non-negative"), peer, dst))
}

/// Sends `data` to `peer` with source address `src` (when known).
fn send_from(
    sock: &OwnedFd,
    data: &[u8],
    peer: &libc::sockaddr_in,
    src: Option<libc::in_addr>,
) -> io::Result<()> {
    let mut cbuf = CmsgBuf([0; 64]);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // SAFETY: all-zero is valid for msghdr.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = std::ptr::from_ref(peer).cast_mut().cast();
    msg.msg_namelen = socklen::<libc::sockaddr_in>();
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    if let Some(src) = src {
        let info = libc::in_pktinfo {
            ipi_ifindex: 0,
            ipi_spec_dst: src,
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        // SAFETY: cbuf has room for one in_pktinfo control message (CMSG_SPACE
        // of 12 bytes is 32 < 64) and is aligned for cmsghdr.
        unsafe {
            let space =
                libc::CMSG_SPACE(u32::try_from(size_of::<libc::in_pktinfo>()).expect("small"));
            msg.msg_control = cbuf.0.as_mut_ptr().cast();
            msg.msg_controllen = space as usize;
            let c = libc::CMSG_FIRSTHDR(&raw const msg);
            (*c).cmsg_level = libc::IPPROTO_IP;
            (*c).cmsg_type = libc::IP_PKTINFO;
            (*c).cmsg_len =
                libc::CMSG_LEN(u32::try_from(size_of::<libc::in_pktinfo>()).expect("small"))
                    as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), info);
        }
    }
    // SAFETY: msg points at live buffers of the lengths it states.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &raw const msg, 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
