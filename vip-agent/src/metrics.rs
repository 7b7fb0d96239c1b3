//! Prometheus metrics on `[node] metrics = "addr:port"`: `GET /metrics`
//! answers the `OpenMetrics` text format (prometheus-client), built from one
//! [`Status`] the agent loop hands out, so every sample of a scrape belongs
//! to the same instant. Scrapes share a status at most [`STATUS_MAX_AGE`]
//! old: however many come, the loop builds at most one per that age.
//!
//! Names follow Prometheus conventions: a `vip_` prefix, `_total` on
//! counters, seconds and bytes as units, enum states as one gauge per state
//! (1 for the current one).

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc, oneshot},
};

use crate::control::{Call, Command, Status};

type Labels = Vec<(&'static str, String)>;
type Seconds = Gauge<f64, AtomicU64>;

/// The VRRP states exported by `vip_vrrp_state`.
const STATES: [&str; 4] = ["init", "backup", "master", "fault"];

fn counters(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    registry.register(name, help, f.clone());
    f
}

fn gauges(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    registry.register(name, help, f.clone());
    f
}

fn seconds(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Seconds> {
    let f = Family::<Labels, Seconds>::default();
    registry.register_with_unit(name, help, Unit::Seconds, f.clone());
    f
}

fn set(f: &Family<Labels, Gauge>, labels: &Labels, v: i64) {
    f.get_or_create(labels).set(v);
}

fn add(f: &Family<Labels, Counter>, labels: &Labels, v: u64) {
    f.get_or_create(labels).inc_by(v);
}

/// The metrics of `status` in the `OpenMetrics` text format.
#[must_use]
pub fn encode_status(status: &Status) -> String {
    let mut r = Registry::with_prefix("vip");

    let one_seconds = |r: &mut Registry, name: &str, help: &str, v: f64| {
        let g = Seconds::default();
        g.set(v);
        r.register_with_unit(name, help, Unit::Seconds, g);
    };
    let one_counter = |r: &mut Registry, name: &str, help: &str, v: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        r.register(name, help, c);
    };
    one_seconds(
        &mut r,
        "agent_uptime",
        "Time since the agent started",
        status.uptime_s,
    );
    one_seconds(
        &mut r,
        "heartbeat_age",
        "Age of the heartbeat XDP checks; past the dead time the node stops forwarding",
        status.heartbeat_age_ms / 1000.0,
    );
    one_seconds(
        &mut r,
        "heartbeat_dead_time",
        "How old the heartbeat may get",
        status.dead_time_ms / 1000.0,
    );
    one_counter(
        &mut r,
        "reloads",
        "Configuration reloads applied",
        status.reloads,
    );
    one_counter(
        &mut r,
        "table_rebuilds",
        "Lookup-table switches",
        status.table_rebuilds,
    );
    #[expect(clippy::cast_precision_loss, reason = "microseconds fit f64")]
    one_seconds(
        &mut r,
        "table_rebuild_last_duration",
        "Duration of the last lookup-table rebuild and switch",
        status.last_rebuild_us as f64 / 1e6,
    );

    encode_vrrp(&mut r, status);

    let check_up = gauges(&mut r, "check_up", "Node check state: 1 up, 0 down");
    let check_probes = counters(&mut r, "check_probes", "Node check probes run");
    let check_failures = counters(&mut r, "check_failures", "Node check probes that failed");
    let check_flaps = counters(&mut r, "check_flaps", "Node check state changes");
    let check_latency = seconds(
        &mut r,
        "check_latency",
        "Duration of the node check's last probe",
    );
    for c in &status.checks {
        let l: Labels = vec![("check", c.name.clone()), ("kind", c.kind.clone())];
        set(&check_up, &l, i64::from(c.up));
        add(&check_probes, &l, c.probes);
        add(&check_failures, &l, c.failures);
        add(&check_flaps, &l, c.flaps);
        check_latency.get_or_create(&l).set(c.latency_ms / 1e3);
    }

    encode_backends(&mut r, status);

    let verdicts = counters(
        &mut r,
        "packets",
        "Packets seen by XDP, by verdict (rx: all of them)",
    );
    for (name, v) in &status.counters {
        add(&verdicts, &vec![("verdict", name.clone())], *v);
    }

    let mut out = String::new();
    encode(&mut out, &r).expect("writing to a String cannot fail");
    out
}

fn encode_vrrp(r: &mut Registry, status: &Status) {
    let state = gauges(
        r,
        "vrrp_state",
        "VRRP instance state: 1 for the current state",
    );
    let prio = gauges(r, "vrrp_priority", "Effective VRRP priority");
    let base = gauges(r, "vrrp_base_priority", "Configured VRRP priority");
    let trans = counters(r, "vrrp_transitions", "VRRP state changes");
    let sent = counters(r, "vrrp_adverts_sent", "VRRP adverts sent");
    let recv = counters(
        r,
        "vrrp_adverts_received",
        "VRRP adverts received and accepted",
    );
    let dropped = counters(
        r,
        "vrrp_adverts_dropped",
        "VRRP adverts dropped, by receive check",
    );
    let unknown = Counter::<u64>::default();
    r.register(
        "vrrp_adverts_unknown_vrid",
        "VRRP adverts for a VRID no instance here runs",
        unknown.clone(),
    );
    unknown.inc_by(status.vrrp_unknown_vrid);
    for i in &status.instances {
        let l: Labels = vec![("instance", i.name.clone()), ("vrid", i.vrid.to_string())];
        for s in STATES {
            let mut ls = l.clone();
            ls.push(("state", s.to_owned()));
            set(&state, &ls, i64::from(i.state == s));
        }
        set(&prio, &l, i64::from(i.priority));
        set(&base, &l, i64::from(i.base_priority));
        add(&trans, &l, i.transitions);
        add(&sent, &l, i.adverts_sent);
        add(&recv, &l, i.adverts_received);
        for (reason, n) in &i.adverts_dropped {
            let mut ls = l.clone();
            ls.push(("reason", reason.clone()));
            add(&dropped, &ls, *n);
        }
    }
}

fn encode_backends(r: &mut Registry, status: &Status) {
    let up = gauges(r, "backend_up", "Backend health: 1 up, 0 down");
    let weight = gauges(r, "backend_weight", "Configured backend weight");
    let draining = gauges(
        r,
        "backend_draining",
        "1 while the backend is drained (keeps its flows, takes no new ones)",
    );
    let in_table = gauges(
        r,
        "backend_in_table",
        "1 while the backend has slots in the live lookup table",
    );
    let packets = counters(r, "backend_packets", "Packets forwarded to the backend");
    let bytes = Family::<Labels, Counter>::default();
    r.register_with_unit(
        "backend",
        "Bytes forwarded to the backend",
        Unit::Bytes,
        bytes.clone(),
    );
    let probes = counters(
        r,
        "backend_check_probes",
        "Service check probes of the backend",
    );
    let flaps = counters(
        r,
        "backend_check_flaps",
        "Service check state changes of the backend",
    );
    let latency = seconds(
        r,
        "backend_check_latency",
        "Duration of the backend's last service-check probe",
    );
    for s in &status.services {
        let service = format!("{}:{}/{}", s.vip, s.port, s.protocol);
        for b in &s.backends {
            let l: Labels = vec![
                ("service", service.clone()),
                ("backend", b.address.to_string()),
            ];
            set(&up, &l, i64::from(b.up));
            set(&weight, &l, i64::from(b.weight));
            set(&draining, &l, i64::from(b.draining));
            set(&in_table, &l, i64::from(b.in_table));
            add(&packets, &l, b.packets);
            add(&bytes, &l, b.bytes);
            if s.check.is_some() {
                add(&probes, &l, b.check_probes);
                add(&flaps, &l, b.check_flaps);
                latency.get_or_create(&l).set(b.check_latency_ms / 1e3);
            }
        }
    }
}

/// Serves `/metrics` on `addr`, asking the agent loop for a status per
/// scrape. Must be called within a tokio runtime.
pub async fn serve(
    addr: SocketAddr,
    calls: mpsc::Sender<Call>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    Ok(serve_on(TcpListener::bind(addr).await?, calls))
}

/// How old a status a scrape may be answered with.
pub const STATUS_MAX_AGE: Duration = Duration::from_millis(100);

/// A status and when the loop handed it out.
type Stamped = (tokio::time::Instant, Arc<Status>);

/// The last status the loop handed out, shared by scrapes; one asks the
/// loop at a time, the others wait for its answer.
#[derive(Clone)]
struct Latest {
    calls: mpsc::Sender<Call>,
    last: Arc<tokio::sync::Mutex<Option<Stamped>>>,
}

impl Latest {
    /// A status at most [`STATUS_MAX_AGE`] old, or `None` when the agent
    /// is shutting down.
    async fn get(&self) -> Option<Arc<Status>> {
        let mut last = self.last.lock().await;
        if let Some((at, status)) = last.as_ref()
            && at.elapsed() < STATUS_MAX_AGE
        {
            return Some(Arc::clone(status));
        }
        let (tx, rx) = oneshot::channel();
        self.calls.send((Command::Status, tx)).await.ok()?;
        let status: Arc<Status> = Arc::from(rx.await.ok()?.status?);
        *last = Some((tokio::time::Instant::now(), Arc::clone(&status)));
        Some(status)
    }
}

/// [`serve`] on a bound listener.
fn serve_on(listener: TcpListener, calls: mpsc::Sender<Call>) -> tokio::task::JoinHandle<()> {
    let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let calls = Latest {
        calls,
        last: Arc::default(),
    };
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            // Past the limit a connection is closed at once: idle or slow
            // clients cannot pile up tasks and buffers on the agent.
            let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let calls = calls.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(REQUEST_TIME, answer(stream, calls)).await;
                drop(permit);
            });
        }
    })
}

/// Connections served at once; Prometheus needs one per scraper.
pub const MAX_CONNECTIONS: usize = 64;
/// How long one connection may take, request and answer.
const REQUEST_TIME: Duration = Duration::from_secs(10);

/// The longest request head read.
const MAX_HEAD: usize = 8192;
/// How long a client may take to send its request head: an idle
/// connection gives its place up after this.
const HEAD_TIME: Duration = Duration::from_secs(2);

async fn answer(mut stream: TcpStream, calls: Latest) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_by = tokio::time::Instant::now() + HEAD_TIME;
    let (method, path) = loop {
        let Ok(n) = tokio::time::timeout_at(head_by, stream.read(&mut chunk)).await else {
            return Ok(());
        };
        let n = n?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                break (
                    req.method.unwrap_or_default().to_owned(),
                    req.path.unwrap_or_default().to_owned(),
                );
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            _ => {
                return respond(
                    &mut stream,
                    "400 Bad Request",
                    "text/plain",
                    "bad request\n",
                )
                .await;
            }
        }
    };
    if method != "GET" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n",
        )
        .await;
    }
    if path != "/metrics" {
        return respond(&mut stream, "404 Not Found", "text/plain", "try /metrics\n").await;
    }
    match calls.get().await {
        Some(status) => {
            respond(
                &mut stream,
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                &encode_status(&status),
            )
            .await
        }
        None => {
            respond(
                &mut stream,
                "503 Service Unavailable",
                "text/plain",
                "the agent is shutting down\n",
            )
            .await
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, net::Ipv4Addr};

    use super::*;
    use crate::control::{BackendStatus, CheckStatus, InstanceStatus, ServiceStatus};

    /// Whether the server closes `s` (rather than keeping it open or
    /// answering) within a second.
    async fn closed(s: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), s.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn connections_past_the_limit_are_closed_and_a_freed_place_is_served() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut calls) = mpsc::channel::<Call>(4);
        // The agent's side: every status request is refused, which the
        // endpoint answers with an HTTP error: an answer all the same.
        tokio::spawn(async move {
            while let Some((_, reply)) = calls.recv().await {
                let _ = reply.send(crate::control::Reply::error("not now", 1));
            }
        });
        let server = serve_on(listener, tx);
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut over = TcpStream::connect(addr).await.unwrap();
        assert!(
            closed(&mut over).await,
            "connection {} was kept",
            MAX_CONNECTIONS + 1
        );
        assert!(
            !closed(&mut idle[0]).await,
            "an idle connection within the limit is kept"
        );
        tokio::time::sleep(HEAD_TIME).await;
        assert!(
            closed(&mut idle[1]).await,
            "an idle connection gives its place up after {HEAD_TIME:?}"
        );

        drop(idle.pop());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let answer = loop {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut got = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut got)).await;
            if !got.is_empty() || tokio::time::Instant::now() > deadline {
                break String::from_utf8_lossy(&got).into_owned();
            }
        };
        assert!(
            answer.starts_with("HTTP/1.1 "),
            "the freed place is served: {answer:?}"
        );
        server.abort();
    }

    #[tokio::test]
    async fn a_scrape_flood_costs_the_loop_one_status_per_max_age() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut calls) = mpsc::channel::<Call>(4);
        let asked = Arc::new(std::sync::atomic::AtomicU64::new(0));
        tokio::spawn({
            let asked = Arc::clone(&asked);
            async move {
                while let Some((_, reply)) = calls.recv().await {
                    asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let _ = reply.send(crate::control::Reply::status(Status::default()));
                }
            }
        });
        let server = serve_on(listener, tx);
        let start = tokio::time::Instant::now();
        let mut answered = 0;
        for _ in 0..300 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            if got.starts_with(b"HTTP/1.1 200 OK") {
                answered += 1;
            }
        }
        let took = start.elapsed();
        let asked = asked.load(std::sync::atomic::Ordering::Relaxed);
        let most = took.as_millis() / STATUS_MAX_AGE.as_millis() + 1;
        assert_eq!(answered, 300);
        assert!(
            (1..=u64::try_from(most).unwrap()).contains(&asked),
            "{asked} statuses built for 300 scrapes in {took:?}"
        );
        server.abort();
    }

    #[test]
    fn a_status_encodes_to_conventional_names_and_values() {
        let status = Status {
            uptime_s: 12.5,
            heartbeat_age_ms: 3.0,
            dead_time_ms: 45.0,
            table_rebuilds: 4,
            instances: vec![InstanceStatus {
                name: "VI_1".into(),
                vrid: 51,
                state: "master".into(),
                priority: 150,
                base_priority: 150,
                adverts_sent: 99,
                adverts_dropped: BTreeMap::from([("ttl".to_owned(), 2)]),
                ..InstanceStatus::default()
            }],
            checks: vec![CheckStatus {
                name: "local-broker".into(),
                kind: "exec".into(),
                up: false,
                reason: "exit status 1".into(),
                probes: 12,
                failures: 3,
                flaps: 1,
                latency_ms: 2.5,
            }],
            services: vec![ServiceStatus {
                vip: Ipv4Addr::new(10, 99, 0, 100),
                port: 5672,
                protocol: "tcp".into(),
                check: None,
                backends: vec![BackendStatus {
                    address: Ipv4Addr::new(10, 99, 0, 11),
                    id: 0,
                    weight: 2,
                    up: true,
                    draining: false,
                    in_table: true,
                    mac: None,
                    reason: String::new(),
                    packets: 7,
                    bytes: 700,
                    check_probes: 0,
                    check_failures: 0,
                    check_flaps: 0,
                    check_latency_ms: 0.0,
                }],
            }],
            counters: BTreeMap::from([
                ("rx".to_owned(), 10),
                ("fwd_tx".to_owned(), 7),
                ("flow_miss".to_owned(), 5),
                ("icmp_to_backend".to_owned(), 2),
                ("drop_martian".to_owned(), 1),
                ("pass_icmp_other".to_owned(), 4),
            ]),
            vrrp_unknown_vrid: 3,
            ..Status::default()
        };
        let text = encode_status(&status);
        for line in [
            "vip_vrrp_adverts_unknown_vrid_total 3",
            "vip_agent_uptime_seconds 12.5",
            "vip_heartbeat_age_seconds 0.003",
            "vip_table_rebuilds_total 4",
            r#"vip_vrrp_state{instance="VI_1",vrid="51",state="master"} 1"#,
            r#"vip_vrrp_state{instance="VI_1",vrid="51",state="backup"} 0"#,
            r#"vip_vrrp_adverts_sent_total{instance="VI_1",vrid="51"} 99"#,
            r#"vip_vrrp_adverts_dropped_total{instance="VI_1",vrid="51",reason="ttl"} 2"#,
            r#"vip_check_up{check="local-broker",kind="exec"} 0"#,
            r#"vip_check_probes_total{check="local-broker",kind="exec"} 12"#,
            r#"vip_check_failures_total{check="local-broker",kind="exec"} 3"#,
            r#"vip_check_flaps_total{check="local-broker",kind="exec"} 1"#,
            r#"vip_check_latency_seconds{check="local-broker",kind="exec"} 0.0025"#,
            r#"vip_backend_weight{service="10.99.0.100:5672/tcp",backend="10.99.0.11"} 2"#,
            r#"vip_backend_packets_total{service="10.99.0.100:5672/tcp",backend="10.99.0.11"} 7"#,
            r#"vip_backend_bytes_total{service="10.99.0.100:5672/tcp",backend="10.99.0.11"} 700"#,
            r#"vip_packets_total{verdict="fwd_tx"} 7"#,
            r#"vip_packets_total{verdict="flow_miss"} 5"#,
            r#"vip_packets_total{verdict="icmp_to_backend"} 2"#,
            r#"vip_packets_total{verdict="drop_martian"} 1"#,
            r#"vip_packets_total{verdict="pass_icmp_other"} 4"#,
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
