//! In-process health probes (no fork per check): `tcp` (a connect), `amqp`
//! (AMQP 0-9-1: the protocol header must get a `connection.start`, decoded
//! with `amq-protocol`; with a user, a whole PLAIN login, vhost open and
//! close), `http` (a GET whose status, and optionally body, must match; the
//! response parsed with `httparse`). The exchanges are generic over the
//! stream so the tests drive them over in-memory pipes; [`BackendChecks`]
//! runs one task per (service, backend) and reports state changes.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use amq_protocol::{
    frame::{AMQPFrame, WriteContext, gen_frame, parse_frame},
    protocol::{AMQPClass, connection},
    types::{FieldTable, LongString, ShortString},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
    sync::mpsc,
    task::JoinHandle,
};

use crate::{
    config::{CheckKind, Service, ServiceCheck},
    health::{RiseFall, jittered, run_exec},
};

/// The AMQP 0-9-1 protocol header a client opens with.
pub const AMQP_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
/// The largest AMQP frame or HTTP response head read.
const MAX_FRAME: usize = 128 * 1024;
/// The largest HTTP body read.
const MAX_BODY: usize = 64 * 1024;

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    /// Short and human: `connection refused`, `HTTP 503, expected 200`.
    pub reason: String,
    pub latency: Duration,
}

/// What to ask a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Tcp,
    Amqp {
        /// User, password, vhost: log in (PLAIN), open the vhost, close.
        login: Option<(String, String, String)>,
    },
    Http {
        path: String,
        expect_status: u16,
        expect_body: Option<String>,
        /// Basic auth.
        auth: Option<(String, String)>,
    },
    /// A command run with `VIP_BACKEND_ADDRESS` and `VIP_BACKEND_PORT` set.
    Exec {
        command: String,
    },
}

impl Probe {
    /// The probe a configured check describes (`[[check]]` and a service
    /// `check` carry the same keys).
    #[must_use]
    #[expect(
        clippy::too_many_arguments,
        reason = "the probe keys, borrowed from either kind of check"
    )]
    pub fn of(
        kind: CheckKind,
        command: Option<&String>,
        path: Option<&String>,
        expect_status: Option<u16>,
        expect_body: Option<&String>,
        user: Option<&String>,
        password: Option<&String>,
        vhost: Option<&String>,
    ) -> Self {
        let creds = user.zip(password).map(|(u, p)| (u.clone(), p.clone()));
        match kind {
            CheckKind::Tcp => Self::Tcp,
            CheckKind::Amqp => Self::Amqp {
                login: creds.map(|(u, p)| (u, p, vhost.cloned().unwrap_or_else(|| "/".into()))),
            },
            CheckKind::Http => Self::Http {
                path: path.cloned().unwrap_or_else(|| "/".into()),
                expect_status: expect_status.unwrap_or(200),
                expect_body: expect_body.cloned(),
                auth: creds,
            },
            CheckKind::Exec => Self::Exec {
                command: command.cloned().unwrap_or_default(),
            },
        }
    }

    /// The port probed when the config names none.
    #[must_use]
    pub fn default_port(kind: CheckKind) -> u16 {
        match kind {
            CheckKind::Http => 80,
            _ => 5672,
        }
    }
}

/// Runs `probe` against `addr`, all of it (connect and exchange) within
/// `timeout`.
pub async fn run(addr: SocketAddr, probe: &Probe, timeout: Duration) -> Outcome {
    let t0 = Instant::now();
    let result = match probe {
        Probe::Exec { command } => {
            let r = run_exec_for(command, addr, timeout).await;
            if r.ok { Ok(()) } else { Err(r.reason) }
        }
        _ => match tokio::time::timeout(timeout, exchange(addr, probe)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "timed out after {}",
                humantime::format_duration(timeout)
            )),
        },
    };
    let latency = t0.elapsed();
    match result {
        Ok(()) => Outcome {
            ok: true,
            reason: "passed".into(),
            latency,
        },
        Err(reason) => Outcome {
            ok: false,
            reason,
            latency,
        },
    }
}

async fn run_exec_for(
    command: &str,
    addr: SocketAddr,
    timeout: Duration,
) -> crate::health::ExecResult {
    // The variables go in through the shell's environment assignment, so
    // run_exec keeps its process-group handling.
    let line = format!(
        "VIP_BACKEND_ADDRESS={}; VIP_BACKEND_PORT={}; export VIP_BACKEND_ADDRESS VIP_BACKEND_PORT; {command}",
        addr.ip(),
        addr.port()
    );
    run_exec(&line, timeout).await
}

async fn exchange(addr: SocketAddr, probe: &Probe) -> Result<(), String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| connect_error(&e))?;
    // Close with an RST, as HAProxy's checks do: no TIME_WAIT per probe
    // (a thousand a second at 100 backends and 100 ms) and two packets fewer.
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    match probe {
        Probe::Tcp | Probe::Exec { .. } => Ok(()),
        Probe::Amqp { login } => amqp(&mut s, login.as_ref()).await,
        Probe::Http {
            path,
            expect_status,
            expect_body,
            auth,
        } => {
            http(
                &mut s,
                &addr.to_string(),
                path,
                *expect_status,
                expect_body.as_deref(),
                auth.as_ref(),
            )
            .await
        }
    }
}

fn connect_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => format!("cannot connect: {e}"),
    }
}

/// Reads one whole AMQP frame (or a protocol header) from `s`.
async fn read_frame<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> Result<AMQPFrame, String> {
    loop {
        // A server that does not speak 0-9-1 answers with the protocol
        // header it wants, then closes (AMQP 0-9-1 §4.2.2).
        if buf.len() >= 8 && buf.starts_with(b"AMQP") {
            return Err(format!(
                "server refused AMQP 0-9-1 and answered with protocol header AMQP {:?} (it wants that version)",
                &buf[4..8]
            ));
        }
        if buf.len() >= 8 || (!buf.is_empty() && !b"AMQP".starts_with(&buf[..buf.len().min(4)])) {
            match parse_frame(&buf[..]) {
                Ok((rest, frame)) => {
                    let used = buf.len() - rest.len();
                    buf.drain(..used);
                    return Ok(frame);
                }
                Err(e) if e.is_incomplete() => {}
                Err(e) => {
                    let shown: Vec<u8> = buf.iter().take(16).copied().collect();
                    return Err(format!("not an AMQP frame ({e}); first bytes {shown:02x?}"));
                }
            }
        }
        if buf.len() >= MAX_FRAME {
            return Err(format!("frame larger than {MAX_FRAME} bytes"));
        }
        let mut chunk = [0u8; 4096];
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        if n == 0 {
            return Err(format!(
                "server closed the connection after {} byte(s) of a frame",
                buf.len()
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn write_frame<S: AsyncWrite + Unpin>(s: &mut S, frame: &AMQPFrame) -> Result<(), String> {
    let ctx = gen_frame(frame)(WriteContext::from(Vec::new()))
        .map_err(|e| format!("cannot encode {frame}: {e:?}"))?;
    s.write_all(&ctx.write)
        .await
        .map_err(|e| format!("write failed: {e}"))
}

fn method(frame: AMQPFrame) -> Result<connection::AMQPMethod, String> {
    match frame {
        AMQPFrame::Method(0, AMQPClass::Connection(m)) => Ok(m),
        AMQPFrame::ProtocolHeader(v) => Err(format!(
            "server refused AMQP 0-9-1 and answered with protocol header {v} (it wants that version)"
        )),
        other => Err(format!("unexpected frame {other}")),
    }
}

fn refused(close: &connection::Close) -> String {
    format!(
        "server closed the connection: {} {}",
        close.reply_code,
        close.reply_text.as_str()
    )
}

/// The AMQP exchange: header, `connection.start`; with `login`, start-ok
/// (PLAIN), tune-ok, open, open-ok, close, close-ok.
pub async fn amqp<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    login: Option<&(String, String, String)>,
) -> Result<(), String> {
    s.write_all(AMQP_HEADER)
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    let mut buf = Vec::new();
    let start = match method(
        read_frame(s, &mut buf)
            .await
            .map_err(|e| format!("no connection.start: {e}"))?,
    )? {
        connection::AMQPMethod::Start(start) => start,
        other => return Err(format!("expected connection.start, got {other:?}")),
    };
    if (start.version_major, start.version_minor) != (0, 9) {
        return Err(format!(
            "connection.start for version {}-{}, not 0-9",
            start.version_major, start.version_minor
        ));
    }
    let Some((user, password, vhost)) = login else {
        return Ok(());
    };
    let mut response = vec![0u8];
    response.extend_from_slice(user.as_bytes());
    response.push(0);
    response.extend_from_slice(password.as_bytes());
    let conn = |m| AMQPFrame::Method(0, AMQPClass::Connection(m));
    write_frame(
        s,
        &conn(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: ShortString::from("PLAIN"),
            response: LongString::from(response),
            locale: ShortString::from("en_US"),
        })),
    )
    .await?;
    let tune = match method(read_frame(s, &mut buf).await?)? {
        connection::AMQPMethod::Tune(t) => t,
        connection::AMQPMethod::Close(c) => return Err(refused(&c)),
        other => return Err(format!("expected connection.tune, got {other:?}")),
    };
    write_frame(
        s,
        &conn(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: tune.channel_max,
            frame_max: tune.frame_max,
            heartbeat: 0,
        })),
    )
    .await?;
    write_frame(
        s,
        &conn(connection::AMQPMethod::Open(connection::Open {
            virtual_host: ShortString::from(vhost.as_str()),
        })),
    )
    .await?;
    match method(read_frame(s, &mut buf).await?)? {
        connection::AMQPMethod::OpenOk(_) => {}
        connection::AMQPMethod::Close(c) => return Err(refused(&c)),
        other => return Err(format!("expected connection.open-ok, got {other:?}")),
    }
    write_frame(
        s,
        &conn(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: ShortString::from("vip health check"),
            class_id: 0,
            method_id: 0,
        })),
    )
    .await?;
    match method(read_frame(s, &mut buf).await?)? {
        connection::AMQPMethod::CloseOk(_) => Ok(()),
        other => Err(format!("expected connection.close-ok, got {other:?}")),
    }
}

/// The HTTP exchange: `GET path` and the status (and body) check.
pub async fn http<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    host: &str,
    path: &str,
    expect_status: u16,
    expect_body: Option<&str>,
    auth: Option<&(String, String)>,
) -> Result<(), String> {
    use base64::Engine as _;
    use std::fmt::Write as _;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: vip-health-check\r\nAccept: */*\r\nConnection: close\r\n"
    );
    if let Some((user, password)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let _ = write!(req, "Authorization: Basic {token}\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (status, head_len, length) = loop {
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        if n == 0 {
            return Err(format!(
                "server closed the connection after {} byte(s)",
                buf.len()
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let length = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| {
                        std::str::from_utf8(h.value)
                            .ok()?
                            .trim()
                            .parse::<usize>()
                            .ok()
                    });
                break (resp.code.unwrap_or(0), len, length);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_FRAME => {}
            Ok(httparse::Status::Partial) => return Err("response head too large".into()),
            Err(e) => return Err(format!("not an HTTP response: {e}")),
        }
    };
    if status != expect_status {
        return Err(format!("HTTP {status}, expected {expect_status}"));
    }
    let Some(want) = expect_body else {
        return Ok(());
    };
    let mut body = buf.split_off(head_len);
    while body.len() < MAX_BODY && length.is_none_or(|l| body.len() < l) {
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
        if String::from_utf8_lossy(&body).contains(want) {
            return Ok(());
        }
    }
    if String::from_utf8_lossy(&body).contains(want) {
        Ok(())
    } else {
        Err(format!("HTTP {status} but the body lacks {want:?}"))
    }
}

/// A service check changed a backend's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendEvent {
    /// Index of the service in the configuration the checks started with.
    pub service: usize,
    pub backend: Ipv4Addr,
    pub up: bool,
    /// The last probe's outcome, e.g. `connection refused`.
    pub reason: String,
}

/// The running service checks: one task per (service with a check,
/// backend). Every backend starts up (keepalived's default without
/// `alpha`), so only changes are sent. Dropping this stops them.
#[derive(Debug)]
pub struct BackendChecks {
    tasks: Vec<JoinHandle<()>>,
    /// Per (service index, backend): the last probe and the counts so far.
    pub stats: crate::health::Stats<(usize, Ipv4Addr)>,
}

impl BackendChecks {
    /// Starts the checks of `services`. Must be called within a tokio runtime.
    #[must_use]
    pub fn spawn(services: &[Service]) -> (Self, mpsc::UnboundedReceiver<BackendEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = crate::health::Stats::default();
        let mut tasks = Vec::new();
        for (n, svc) in services.iter().enumerate() {
            let Some(check) = &svc.check else { continue };
            for b in &svc.backends {
                let port = check.port.unwrap_or(svc.port);
                let addr = SocketAddr::from((b.address, port));
                tasks.push(tokio::spawn(run_backend(
                    n,
                    addr,
                    check.clone(),
                    tx.clone(),
                    stats.clone(),
                )));
            }
        }
        (Self { tasks, stats }, rx)
    }
}

impl Drop for BackendChecks {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The probe of a service check.
#[must_use]
pub fn service_probe(c: &ServiceCheck) -> Probe {
    Probe::of(
        c.kind,
        c.command.as_ref(),
        c.path.as_ref(),
        c.expect_status,
        c.expect_body.as_ref(),
        c.user.as_ref(),
        c.password.as_ref(),
        c.vhost.as_ref(),
    )
}

async fn run_backend(
    service: usize,
    addr: SocketAddr,
    check: ServiceCheck,
    tx: mpsc::UnboundedSender<BackendEvent>,
    stats: crate::health::Stats<(usize, Ipv4Addr)>,
) {
    let probe = service_probe(&check);
    let SocketAddr::V4(v4) = addr else { return };
    let mut machine = RiseFall::new(check.rise, check.fall);
    let seed = u64::from(u32::from_be_bytes(match addr.ip() {
        std::net::IpAddr::V4(a) => a.octets(),
        std::net::IpAddr::V6(_) => [0; 4],
    })) ^ (u64::from(addr.port()) << 32);
    for n in 0_u64.. {
        let started = tokio::time::Instant::now();
        let outcome = run(addr, &probe, check.timeout).await;
        let changed = machine.record(outcome.ok);
        crate::health::record(
            &stats,
            &(service, *v4.ip()),
            outcome.ok,
            outcome.latency,
            machine.flaps(),
        );
        if let Some(up) = changed {
            let event = BackendEvent {
                service,
                backend: *v4.ip(),
                up,
                reason: outcome.reason,
            };
            if tx.send(event).is_err() {
                return;
            }
        }
        tokio::time::sleep_until(started + jittered(check.interval, seed.wrapping_add(n))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    fn start_frame() -> Vec<u8> {
        let frame = AMQPFrame::Method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: FieldTable::default(),
                mechanisms: LongString::from("PLAIN AMQPLAIN"),
                locales: LongString::from("en_US"),
            })),
        );
        gen_frame(&frame)(WriteContext::from(Vec::new()))
            .unwrap()
            .write
    }

    fn conn_frame(m: connection::AMQPMethod) -> Vec<u8> {
        gen_frame(&AMQPFrame::Method(0, AMQPClass::Connection(m)))(WriteContext::from(Vec::new()))
            .unwrap()
            .write
    }

    async fn read_header<S: AsyncRead + Unpin>(s: &mut S) {
        let mut h = [0u8; 8];
        s.read_exact(&mut h).await.unwrap();
        assert_eq!(&h, AMQP_HEADER);
    }

    async fn amqp_against(
        server: impl FnOnce(tokio::io::DuplexStream) -> tokio::task::JoinHandle<()>,
        login: Option<(String, String, String)>,
    ) -> Result<(), String> {
        let (mut client, srv) = duplex(1 << 16);
        let h = server(srv);
        let r = tokio::time::timeout(
            Duration::from_millis(500),
            amqp(&mut client, login.as_ref()),
        )
        .await
        .unwrap_or_else(|_| Err("timed out".into()));
        h.abort();
        r
    }

    #[tokio::test]
    async fn amqp_passes_on_connection_start_and_fails_otherwise() {
        // Answers connection.start, byte by byte.
        let r = amqp_against(
            |mut s| {
                tokio::spawn(async move {
                    read_header(&mut s).await;
                    for b in start_frame() {
                        s.write_all(&[b]).await.unwrap();
                    }
                    std::future::pending::<()>().await;
                })
            },
            None,
        )
        .await;
        assert_eq!(r, Ok(()));
        // Accepts and says nothing.
        let r = amqp_against(
            |mut s| {
                tokio::spawn(async move {
                    read_header(&mut s).await;
                    std::future::pending::<()>().await;
                })
            },
            None,
        )
        .await;
        assert_eq!(r, Err("timed out".into()));
        // Wants another protocol version.
        let r = amqp_against(
            |mut s| {
                tokio::spawn(async move {
                    read_header(&mut s).await;
                    s.write_all(b"AMQP\x01\x01\x00\x0a").await.unwrap();
                    s.shutdown().await.unwrap();
                })
            },
            None,
        )
        .await;
        let e = r.unwrap_err();
        assert!(
            e.contains("refused AMQP 0-9-1") && e.contains("protocol header"),
            "{e}"
        );
        // Closes at once.
        let r = amqp_against(|s| tokio::spawn(async move { drop(s) }), None).await;
        let e = r.unwrap_err();
        assert!(e.contains("closed") || e.contains("write failed"), "{e}");
        // Garbage.
        let r = amqp_against(
            |mut s| {
                tokio::spawn(async move {
                    read_header(&mut s).await;
                    s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                        .await
                        .unwrap();
                    std::future::pending::<()>().await;
                })
            },
            None,
        )
        .await;
        assert!(r.unwrap_err().contains("not an AMQP frame"));
    }

    #[tokio::test]
    async fn amqp_login_goes_through_open_and_close_or_says_why_not() {
        let server = |refuse: bool| {
            move |mut s: tokio::io::DuplexStream| {
                tokio::spawn(async move {
                    read_header(&mut s).await;
                    s.write_all(&start_frame()).await.unwrap();
                    let mut buf = Vec::new();
                    let f = read_frame(&mut s, &mut buf).await.unwrap();
                    let AMQPFrame::Method(
                        0,
                        AMQPClass::Connection(connection::AMQPMethod::StartOk(ok)),
                    ) = f
                    else {
                        panic!("{f}")
                    };
                    assert_eq!(ok.response.as_bytes(), b"\0guest\0secret");
                    if refuse {
                        s.write_all(&conn_frame(connection::AMQPMethod::Close(
                            connection::Close {
                                reply_code: 403,
                                reply_text: ShortString::from("ACCESS_REFUSED"),
                                class_id: 0,
                                method_id: 0,
                            },
                        )))
                        .await
                        .unwrap();
                        std::future::pending::<()>().await;
                    }
                    s.write_all(&conn_frame(connection::AMQPMethod::Tune(
                        connection::Tune {
                            channel_max: 2047,
                            frame_max: 131_072,
                            heartbeat: 60,
                        },
                    )))
                    .await
                    .unwrap();
                    let tune_ok = read_frame(&mut s, &mut buf).await.unwrap();
                    assert!(
                        matches!(
                            tune_ok,
                            AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::TuneOk(ref t))) if t.heartbeat == 0 && t.channel_max == 2047
                        ),
                        "{tune_ok}"
                    );
                    let open = read_frame(&mut s, &mut buf).await.unwrap();
                    assert!(
                        matches!(
                            open,
                            AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Open(ref o))) if o.virtual_host.as_str() == "/"
                        ),
                        "{open}"
                    );
                    s.write_all(&conn_frame(connection::AMQPMethod::OpenOk(
                        connection::OpenOk {},
                    )))
                    .await
                    .unwrap();
                    let close = read_frame(&mut s, &mut buf).await.unwrap();
                    assert!(matches!(
                        close,
                        AMQPFrame::Method(
                            0,
                            AMQPClass::Connection(connection::AMQPMethod::Close(_))
                        )
                    ));
                    s.write_all(&conn_frame(connection::AMQPMethod::CloseOk(
                        connection::CloseOk {},
                    )))
                    .await
                    .unwrap();
                    std::future::pending::<()>().await;
                })
            }
        };
        let login = Some(("guest".to_owned(), "secret".to_owned(), "/".to_owned()));
        assert_eq!(amqp_against(server(false), login.clone()).await, Ok(()));
        let e = amqp_against(server(true), login).await.unwrap_err();
        assert_eq!(e, "server closed the connection: 403 ACCESS_REFUSED");
    }

    async fn http_against(
        response: &'static [u8],
        body: Option<&str>,
    ) -> (Result<(), String>, String) {
        let (mut client, mut srv) = duplex(1 << 16);
        let h = tokio::spawn(async move {
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                let n = srv.read(&mut b).await.unwrap();
                req.extend_from_slice(&b[..n]);
            }
            // Split the response across writes.
            for part in response.chunks(7) {
                srv.write_all(part).await.unwrap();
            }
            drop(srv);
            String::from_utf8(req).unwrap()
        });
        let auth = ("guest".to_owned(), "guest".to_owned());
        let r = http(
            &mut client,
            "10.99.0.12:15672",
            "/api/health/checks/alarms",
            200,
            body,
            Some(&auth),
        )
        .await;
        (r, h.await.unwrap())
    }

    #[tokio::test]
    async fn http_checks_status_body_and_sends_basic_auth() {
        let ok: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}";
        let (r, req) = http_against(ok, None).await;
        assert_eq!(r, Ok(()));
        assert!(
            req.starts_with("GET /api/health/checks/alarms HTTP/1.1\r\nHost: 10.99.0.12:15672\r\n"),
            "{req}"
        );
        assert!(
            req.contains("\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n"),
            "{req}"
        );
        assert_eq!(http_against(ok, Some("\"ok\"")).await.0, Ok(()));
        assert_eq!(
            http_against(ok, Some("healthy")).await.0,
            Err("HTTP 200 but the body lacks \"healthy\"".into())
        );
        let failed: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(
            http_against(failed, None).await.0,
            Err("HTTP 503, expected 200".into())
        );
        let garbage: &[u8] = b"SSH-2.0-OpenSSH\r\n\r\n";
        assert!(
            http_against(garbage, None)
                .await
                .0
                .unwrap_err()
                .contains("not an HTTP response")
        );
        let short: &[u8] = b"HTTP/1.1 200";
        assert!(
            http_against(short, None)
                .await
                .0
                .unwrap_err()
                .contains("closed the connection")
        );
    }

    #[tokio::test]
    async fn run_bounds_the_whole_probe_by_the_timeout() {
        // A TEST-NET-1 address inside no namespace is never contacted: the
        // exec probe is what runs, with the variables set.
        let addr = SocketAddr::from(([192, 0, 2, 7], 5672));
        let ok = run(
            addr,
            &Probe::Exec {
                command: "test \"$VIP_BACKEND_ADDRESS:$VIP_BACKEND_PORT\" = 192.0.2.7:5672".into(),
            },
            Duration::from_secs(2),
        )
        .await;
        assert!(ok.ok, "{ok:?}");
        let slow = run(
            addr,
            &Probe::Exec {
                command: "sleep 5".into(),
            },
            Duration::from_millis(100),
        )
        .await;
        assert!(
            !slow.ok && slow.latency < Duration::from_secs(2),
            "{slow:?}"
        );
    }
}
