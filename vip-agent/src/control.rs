//! The agent's control socket: a Unix stream socket (mode 0600, path
//! `[node] control_socket`) speaking JSON lines, one request and one reply
//! per line, versioned by `"v"`.
//!
//! ```text
//! → {"v":1,"cmd":"status"}
//! ← {"v":1,"ok":true,"status":{...}}
//! → {"v":1,"cmd":"drain","address":"10.99.0.12"}
//! ← {"v":1,"ok":true,"message":"10.99.0.12 drained in 1 service(s)"}
//! → {"v":1,"cmd":"reload"}
//! ← {"v":1,"ok":false,"error":"/etc/vip/vip.toml:12: vrrp[0].vrid: ...","exit_code":2}
//! ```
//!
//! A malformed, unknown or oversized request gets an error reply (an
//! oversized one also closes the connection); nothing a client sends can
//! stop the agent. The socket task never touches agent state itself: it
//! hands each request to the agent loop ([`Call`]) and writes back what the
//! loop answers, so every reply is consistent with one instant of the loop.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    net::Ipv4Addr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
/// The longest request line accepted, newline included.
pub const MAX_REQUEST: usize = 64 * 1024;

/// A request, tagged by `cmd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase", deny_unknown_fields)]
pub enum Command {
    /// The node's state: instances, checks, services, backends, counters.
    Status,
    /// Weight 0 for this backend address in every service: its flows stay,
    /// new ones go elsewhere. Lasts until `undrain` or an agent restart.
    Drain { address: Ipv4Addr },
    /// Undoes `drain`.
    Undrain { address: Ipv4Addr },
    /// Re-reads the configuration file (as SIGHUP does) and says how it went.
    Reload,
}

/// The envelope of a request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    #[serde(flatten)]
    pub command: Command,
}

/// A reply line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub v: u32,
    pub ok: bool,
    /// What went wrong, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The exit code a CLI should use for this failure (2: configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// A human sentence about what was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Box<Status>>,
}

impl Reply {
    #[must_use]
    pub fn ok(message: impl Into<String>) -> Self {
        Self {
            v: VERSION,
            ok: true,
            error: None,
            exit_code: None,
            message: Some(message.into()),
            status: None,
        }
    }

    #[must_use]
    pub fn error(error: impl Into<String>, exit_code: i32) -> Self {
        Self {
            v: VERSION,
            ok: false,
            error: Some(error.into()),
            exit_code: Some(exit_code),
            message: None,
            status: None,
        }
    }

    #[must_use]
    pub fn status(status: Status) -> Self {
        Self {
            v: VERSION,
            ok: true,
            error: None,
            exit_code: None,
            message: None,
            status: Some(Box::new(status)),
        }
    }
}

/// The node's state, as `vipctl status --json` prints it. Field names are
/// stable: extend, never rename.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub node: String,
    pub interface: String,
    /// `native` or `generic`.
    pub xdp_mode: String,
    pub pid: u32,
    pub uptime_s: f64,
    /// Age of the heartbeat stamp XDP checks, and how old it may get.
    pub heartbeat_age_ms: f64,
    pub dead_time_ms: f64,
    pub instances: Vec<InstanceStatus>,
    pub checks: Vec<CheckStatus>,
    pub services: Vec<ServiceStatus>,
    /// Data-plane counters by name (`vip_common::counter::NAMES`), summed
    /// over CPUs.
    pub counters: BTreeMap<String, u64>,
    /// Lookup-table switches since start, and the last one's duration.
    pub table_rebuilds: u64,
    pub last_rebuild_us: u64,
    pub reloads: u64,
    /// VRRP adverts for a VRID no instance here runs (another router's
    /// instances on this link).
    #[serde(default)]
    pub vrrp_unknown_vrid: u64,
}

/// One VRRP instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub name: String,
    pub vrid: u8,
    /// `init`, `backup`, `master` or `fault`.
    pub state: String,
    /// Effective priority (moved by tracked checks) and the configured one.
    pub priority: u8,
    pub base_priority: u8,
    pub vips: Vec<Ipv4Addr>,
    /// The 802.1Q VLAN of each VIP that names one (the others are untagged).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vlans: BTreeMap<Ipv4Addr, u16>,
    /// Seconds in the current state.
    pub since_s: f64,
    pub transitions: u64,
    pub adverts_sent: u64,
    /// As master: the longest time between two adverts it sent.
    #[serde(default)]
    pub longest_advert_gap_ms: f64,
    /// As backup: the longest time between two adverts it took from the
    /// master.
    #[serde(default)]
    pub longest_heard_gap_ms: f64,
    pub adverts_received: u64,
    /// Dropped adverts by reason (`ttl`, `checksum`, `vrid`, ...).
    pub adverts_dropped: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_group: Option<String>,
}

/// One `[[check]]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckStatus {
    pub name: String,
    pub kind: String,
    pub up: bool,
    /// The last state change's reason, e.g. `exit status 1`.
    pub reason: String,
    /// Probes run and failed, state changes, and the last probe's duration.
    #[serde(default)]
    pub probes: u64,
    #[serde(default)]
    pub failures: u64,
    #[serde(default)]
    pub flaps: u64,
    #[serde(default)]
    pub latency_ms: f64,
}

/// One `[[service]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub vip: Ipv4Addr,
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The check kind, if the service has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    pub backends: Vec<BackendStatus>,
}

/// One backend of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub address: Ipv4Addr,
    /// Data-plane id (`vipctl backends`).
    pub id: u32,
    /// Configured weight.
    pub weight: u32,
    /// Health: false while the service's check says it is down.
    pub up: bool,
    /// Drained by `vipctl drain` (or weight 0 in the config).
    pub draining: bool,
    /// Has slots in the live lookup table.
    pub in_table: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Why it is down, from the last check.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub packets: u64,
    pub bytes: u64,
    /// The service check's counts for this backend (zero without a check).
    #[serde(default)]
    pub check_probes: u64,
    #[serde(default)]
    pub check_failures: u64,
    #[serde(default)]
    pub check_flaps: u64,
    #[serde(default)]
    pub check_latency_ms: f64,
}

/// A request handed to the agent loop, with where to send its reply.
pub type Call = (Command, oneshot::Sender<Reply>);

/// Errors of the socket's setup.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "another agent is listening on the control socket {0}; stop it first or set a different [node] control_socket"
    )]
    InUse(PathBuf),
    #[error("cannot create the control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The listening socket; removed from the file system on drop.
#[derive(Debug)]
pub struct Server {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Binds `path` (mode 0600, parent directory created 0700 if missing;
    /// a stale socket left by a dead agent is replaced) and serves requests
    /// by sending them on `calls`. Must be called within a tokio runtime.
    pub fn start(path: &Path, calls: mpsc::Sender<Call>) -> Result<Self, ControlError> {
        let io = |source| ControlError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.exists()
        {
            std::fs::create_dir_all(dir).map_err(io)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ControlError::InUse(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(io)?;
        }
        let listener = UnixListener::bind(path).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        let open = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        // Past the limit a connection is refused with a
                        // reply: callers looping on vipctl fail themselves,
                        // never the agent.
                        let Ok(permit) = std::sync::Arc::clone(&open).try_acquire_owned() else {
                            tokio::spawn(refuse(stream));
                            continue;
                        };
                        let calls = calls.clone();
                        tokio::spawn(async move {
                            serve(stream, calls).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(Self {
            path: path.to_owned(),
            task,
        })
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Parses one request line into a command, or the error reply for it.
pub fn parse(line: &[u8]) -> Result<Command, Reply> {
    let value: serde_json::Value = serde_json::from_slice(line)
        .map_err(|e| Reply::error(format!("request is not JSON: {e}"), 2))?;
    match value.get("v").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(VERSION) => {}
        Some(v) => {
            return Err(Reply::error(
                format!("protocol version {v} is not spoken here; this agent speaks {VERSION}"),
                2,
            ));
        }
        None => return Err(Reply::error("request has no \"v\" (protocol version)", 2)),
    }
    let request = serde_json::from_value::<Request>(value.clone())
        .map_err(|e| Reply::error(format!("bad request: {e}"), 2))?;
    // serde cannot deny unknown fields through `flatten`: compare the keys
    // with what the parsed request has.
    let known = serde_json::to_value(&request).unwrap_or_default();
    if let (Some(sent), Some(known)) = (value.as_object(), known.as_object())
        && let Some(extra) = sent.keys().find(|k| !known.contains_key(*k))
    {
        return Err(Reply::error(
            format!("bad request: unknown field {extra:?} for \"cmd\""),
            2,
        ));
    }
    Ok(request.command)
}

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// How long a connection may wait between requests, and a request for the
/// agent's answer, before it is closed.
pub const IDLE: Duration = Duration::from_secs(30);

/// Tells a connection past [`MAX_CONNECTIONS`] so, then closes it.
async fn refuse(stream: UnixStream) {
    let (_, mut write) = stream.into_split();
    let reply = Reply::error(
        format!(
            "the agent serves at most {MAX_CONNECTIONS} control connections at once; try again"
        ),
        1,
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), write_reply(&mut write, &reply)).await;
}

async fn serve(stream: UnixStream, calls: mpsc::Sender<Call>) {
    let (read, mut write) = stream.into_split();
    let mut read = tokio::io::BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        // Read at most MAX_REQUEST bytes of one line.
        let mut limited = (&mut read).take(MAX_REQUEST as u64);
        match tokio::time::timeout(IDLE, limited.read_until(b'\n', &mut line)).await {
            Ok(Ok(0) | Err(_)) | Err(_) => return,
            Ok(Ok(_)) => {}
        }
        let complete = line.last() == Some(&b'\n');
        if !complete && line.len() >= MAX_REQUEST {
            let reply = Reply::error(
                format!("request longer than {MAX_REQUEST} bytes; connection closed"),
                2,
            );
            let _ = write_reply(&mut write, &reply).await;
            return;
        }
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        if body.iter().all(u8::is_ascii_whitespace) {
            if complete {
                continue;
            }
            return;
        }
        let reply = match parse(body) {
            Err(reply) => reply,
            Ok(command) => {
                let (tx, rx) = oneshot::channel();
                if calls.send((command, tx)).await.is_err() {
                    Reply::error("the agent is shutting down", 1)
                } else {
                    match tokio::time::timeout(IDLE, rx).await {
                        Ok(Ok(reply)) => reply,
                        Ok(Err(_)) => Reply::error("the agent dropped the request", 1),
                        Err(_) => Reply::error(
                            format!("the agent did not answer within {}s", IDLE.as_secs()),
                            1,
                        ),
                    }
                }
            }
        };
        if write_reply(&mut write, &reply).await.is_err() || !complete {
            return;
        }
    }
}

async fn write_reply(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    reply: &Reply,
) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await
}

/// What [`request`] can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "the agent is not running: nothing listens on {path} ({source}); start vip-agent, or pass --socket if it uses another path"
    )]
    NotRunning {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the agent on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent sent a reply this vipctl cannot read: {0}")]
    BadReply(String),
}

/// Sends one request and waits (up to `timeout`) for its reply. Blocking:
/// for `vipctl`.
pub fn request(path: &Path, command: Command, timeout: Duration) -> Result<Reply, ClientError> {
    let stream = std::os::unix::net::UnixStream::connect(path).map_err(|source| {
        ClientError::NotRunning {
            path: path.to_owned(),
            source,
        }
    })?;
    let io = |source| ClientError::Io {
        path: path.to_owned(),
        source,
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_vec(&Request {
        v: VERSION,
        command,
    })
    .map_err(|e| ClientError::BadReply(e.to_string()))?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(io)?;
    let mut reply = Vec::new();
    BufReader::new(&stream)
        .read_until(b'\n', &mut reply)
        .map_err(io)?;
    serde_json::from_slice(&reply)
        .map_err(|e| ClientError::BadReply(format!("{e}: {:?}", String::from_utf8_lossy(&reply))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_shows_its_vlans_and_an_older_status_without_them_reads() {
        let vip = Ipv4Addr::new(10, 99, 0, 101);
        let i = InstanceStatus {
            name: "VI_1".into(),
            vips: vec![Ipv4Addr::new(10, 99, 0, 100), vip],
            vlans: BTreeMap::from([(vip, 100)]),
            ..InstanceStatus::default()
        };
        let json = serde_json::to_value(&i).unwrap();
        assert_eq!(json["vlans"], serde_json::json!({ "10.99.0.101": 100 }));
        assert_eq!(serde_json::from_value::<InstanceStatus>(json).unwrap(), i);
        let mut old = serde_json::to_value(InstanceStatus::default()).unwrap();
        assert!(old.get("vlans").is_none(), "untagged: no key");
        old.as_object_mut().unwrap().remove("vlans");
        let read: InstanceStatus = serde_json::from_value(old).unwrap();
        assert!(read.vlans.is_empty());
    }

    #[test]
    fn requests_parse_and_bad_ones_say_why() {
        assert_eq!(parse(br#"{"v":1,"cmd":"status"}"#), Ok(Command::Status));
        assert_eq!(
            parse(br#"{"v":1,"cmd":"drain","address":"10.99.0.12"}"#),
            Ok(Command::Drain {
                address: Ipv4Addr::new(10, 99, 0, 12)
            })
        );
        let err = |line: &[u8]| parse(line).unwrap_err().error.unwrap();
        assert!(err(b"status").contains("not JSON"), "{}", err(b"status"));
        assert!(err(br#"{"cmd":"status"}"#).contains("no \"v\""));
        assert!(err(br#"{"v":2,"cmd":"status"}"#).contains("version 2"));
        assert!(err(br#"{"v":1,"cmd":"explode"}"#).contains("bad request"));
        assert!(err(br#"{"v":1,"cmd":"drain"}"#).contains("address"));
        assert!(err(br#"{"v":1,"cmd":"drain","address":"10.99.0.300"}"#).contains("bad request"));
        assert!(err(br#"{"v":1,"cmd":"status","x":1}"#).contains("unknown field \"x\""));
        assert!(err(b"[1,2]").contains("no \"v\""));
    }

    #[tokio::test]
    async fn connections_past_the_limit_are_refused_with_a_reply() {
        let dir = std::env::temp_dir().join(format!("vip-control-cap-{}", std::process::id()));
        let path = dir.join("c.sock");
        let (tx, mut rx) = mpsc::channel::<Call>(8);
        let server = Server::start(&path, tx).unwrap();
        tokio::spawn(async move {
            while let Some((_, reply)) = rx.recv().await {
                let _ = reply.send(Reply::status(Status::default()));
            }
        });
        let p = path.clone();
        tokio::task::spawn_blocking(move || {
            let connect = || {
                let s = std::os::unix::net::UnixStream::connect(&p).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                s
            };
            let ask = |s: &std::os::unix::net::UnixStream| {
                (&*s).write_all(b"{\"v\":1,\"cmd\":\"status\"}\n").unwrap();
                let mut reply = String::new();
                BufReader::new(s).read_line(&mut reply).unwrap();
                serde_json::from_str::<Reply>(&reply).unwrap()
            };
            // MAX_CONNECTIONS held open, each answered.
            let held: Vec<_> = (0..MAX_CONNECTIONS).map(|_| connect()).collect();
            for s in &held {
                assert!(ask(s).ok);
            }
            // One more: told why, and closed.
            let over = connect();
            let mut reply = String::new();
            BufReader::new(&over).read_line(&mut reply).unwrap();
            assert!(reply.contains("at most 16 control connections"), "{reply}");
            // A freed place is served again.
            drop(held);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let s = connect();
                (&s).write_all(b"{\"v\":1,\"cmd\":\"status\"}\n").unwrap();
                let mut reply = String::new();
                BufReader::new(&s).read_line(&mut reply).unwrap();
                if serde_json::from_str::<Reply>(&reply).unwrap().ok {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "never served again");
                std::thread::sleep(Duration::from_millis(10));
            }
        })
        .await
        .unwrap();
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A server whose "agent" answers status with an empty one; the fuzz
    /// sends random bytes, oversized lines and valid requests, and the
    /// server must answer every complete line and survive.
    #[tokio::test]
    async fn the_socket_survives_garbage_and_oversized_requests() {
        let dir = std::env::temp_dir().join(format!("vip-control-{}", std::process::id()));
        let path = dir.join("sub").join("c.sock");
        let (tx, mut rx) = mpsc::channel::<Call>(8);
        let server = Server::start(&path, tx).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        tokio::spawn(async move {
            while let Some((cmd, reply)) = rx.recv().await {
                let _ = reply.send(match cmd {
                    Command::Status => Reply::status(Status::default()),
                    other => Reply::ok(format!("{other:?}")),
                });
            }
        });
        let p = path.clone();
        tokio::task::spawn_blocking(move || {
            let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            for round in 0..200 {
                let mut s = std::os::unix::net::UnixStream::connect(&p).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let len = usize::try_from(next() % 300).unwrap();
                let mut junk: Vec<u8> = (0..len)
                    .map(|_| u8::try_from(next() % 256).unwrap())
                    .filter(|b| *b != b'\n')
                    .collect();
                if round % 3 == 0 {
                    junk = br#"{"v":1,"cmd":"#.to_vec();
                    junk.extend((0..len).map(|_| b'x'));
                }
                if junk.iter().all(u8::is_ascii_whitespace) {
                    junk.push(b'x');
                }
                junk.push(b'\n');
                s.write_all(&junk).unwrap();
                let mut reply = String::new();
                BufReader::new(&s).read_line(&mut reply).unwrap();
                let r: Reply = serde_json::from_str(&reply).unwrap();
                assert!(!r.ok, "junk accepted: {junk:?} -> {reply}");
            }
            // Oversized: an error reply, then the connection closes.
            let mut s = std::os::unix::net::UnixStream::connect(&p).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.write_all(&vec![b'{'; MAX_REQUEST + 10]);
            let mut reply = String::new();
            BufReader::new(&s).read_line(&mut reply).unwrap();
            assert!(reply.contains("longer than"), "{reply}");
            // Still serving, and a good request gets its answer.
            let r = request(&p, Command::Status, Duration::from_secs(5)).unwrap();
            assert!(r.ok && r.status.is_some(), "{r:?}");
            let r = request(
                &p,
                Command::Drain {
                    address: Ipv4Addr::new(10, 99, 0, 12),
                },
                Duration::from_secs(5),
            )
            .unwrap();
            assert_eq!(r.message.as_deref(), Some("Drain { address: 10.99.0.12 }"));
        })
        .await
        .unwrap();
        drop(server);
        assert!(!path.exists(), "socket removed on drop");
        let e = request(&path, Command::Status, Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("not running"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
