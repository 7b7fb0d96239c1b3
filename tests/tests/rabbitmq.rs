//! Real `RabbitMQ` brokers (Debian's rabbitmq-server, installed by `cargo
//! xtask test`) in the lab's backend namespaces: they answer AMQP from the
//! client, stop and start again, raise and clear a memory alarm that the
//! management API reports; and nothing of them is left afterwards.
#![allow(
    clippy::too_many_lines,
    reason = "scenario tests read best as one story"
)]

use std::{
    io,
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use vip_tests::{
    broker::{self, BrokerOptions, amqp_greeting, live_processes_in, netns_id},
    kit::{is_root, wait_for},
    lab::{Lab, LabOptions},
};

/// Asks `addr` from the client namespace for its first frame and checks it
/// is AMQP 0-9-1's `connection.start`: a method frame (type 1) on channel 0
/// whose payload, of the size announced, starts with class 10 method 10 and
/// version 0-9, and which ends with 0xCE.
fn assert_connection_start(lab: &Lab, addr: SocketAddr) {
    let frame = lab
        .run_in("client", move || {
            amqp_greeting(addr, Duration::from_secs(5))
        })
        .unwrap_or_else(|e| panic!("no AMQP answer from {addr} in the client namespace: {e}"));
    assert!(frame.len() >= 8, "{addr}: short frame {frame:02x?}");
    let (kind, channel) = (frame[0], u16::from_be_bytes([frame[1], frame[2]]));
    let size = u32::from_be_bytes([frame[3], frame[4], frame[5], frame[6]]) as usize;
    assert_eq!(kind, 1, "{addr}: not a method frame: {frame:02x?}");
    assert_eq!(channel, 0, "{addr}: not channel 0");
    assert_eq!(frame.len(), 7 + size + 1, "{addr}: payload size {size}");
    let payload = &frame[7..7 + size];
    assert_eq!(
        payload[..4],
        [0x00, 0x0a, 0x00, 0x0a],
        "{addr}: not connection.start (class 10, method 10)"
    );
    assert_eq!(payload[4..6], [0, 9], "{addr}: not version 0-9");
    assert_eq!(frame.last(), Some(&0xce), "{addr}: no frame end");
}

#[test]
fn brokers_answer_restart_and_report_a_memory_alarm() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    // Two backends, no vip-lab-backend: the brokers take port 5672.
    let mut opts = LabOptions::unique("rmq");
    opts.backends = 2;
    opts.start_backends = false;
    let lab = Lab::up(opts).expect("lab up");
    let prefix = lab.prefix().to_owned();
    // Open, so their identity (nsfs inode) cannot go to a new namespace
    // while the test checks them after the lab is gone.
    let namespaces: Vec<(std::fs::File, (u64, u64))> = lab
        .nodes()
        .iter()
        .map(|n| {
            let path = lab.ns(n).path();
            let id = netns_id(&path).expect("stat namespace");
            (std::fs::File::open(&path).expect("open namespace"), id)
        })
        .collect();

    // Both at once: each takes several seconds of CPU.
    let (mut b1, b2) = std::thread::scope(|s| {
        let b1 = s.spawn(|| broker::start(&lab, "b1", &BrokerOptions { management: false }));
        let b2 = s.spawn(|| broker::start(&lab, "b2", &BrokerOptions { management: true }));
        (
            b1.join().unwrap().expect("broker in b1"),
            b2.join().unwrap().expect("broker in b2"),
        )
    });
    eprintln!(
        "started in parallel: b1 in {:?}, b2 (management) in {:?}",
        b1.started_in(),
        b2.started_in()
    );
    let dirs = [b1.dir().to_owned(), b2.dir().to_owned()];
    assert_connection_start(&lab, b1.amqp_addr());
    assert_connection_start(&lab, b2.amqp_addr());

    // b1 down: its port refuses connections; b2 still answers.
    let stopped_in = b1.stop().expect("stop b1");
    eprintln!("b1 stopped in {stopped_in:?}");
    let b1_addr = b1.amqp_addr();
    let refused = lab.run_in("client", move || {
        TcpStream::connect_timeout(&b1_addr, Duration::from_secs(2)).map(drop)
    });
    assert_eq!(
        refused.as_ref().map_err(io::Error::kind),
        Err(io::ErrorKind::ConnectionRefused),
        "{b1_addr} after stop: {refused:?}"
    );
    assert!(
        !b1.processes().iter().any(|p| p.comm.starts_with("beam")),
        "beam.smp still runs in b1: {:?}",
        b1.processes()
    );
    assert_connection_start(&lab, b2.amqp_addr());

    // b1 up again, warm (same mnesia).
    b1.start_again().expect("start b1 again");
    eprintln!("b1 restarted (warm) in {:?}", b1.started_in());
    assert_connection_start(&lab, b1.amqp_addr());

    // The memory alarm on b2, as its management API reports it.
    let limit = Duration::from_secs(30);
    let health = |want: u16| {
        wait_for(&format!("alarms health check {want}"), limit, || {
            let reply = b2.alarms_health().expect("GET alarms");
            (reply.status == want).then_some(reply)
        })
    };
    let ok = health(200);
    eprintln!("no alarm: {} {}", ok.status, ok.body);
    assert_eq!(ok.body, r#"{"status":"ok"}"#);
    let started = Instant::now();
    b2.set_memory_alarm(true).expect("raise the memory alarm");
    let alarmed = health(503);
    eprintln!(
        "memory alarm (set in {:?}): {} {}",
        started.elapsed(),
        alarmed.status,
        alarmed.body
    );
    assert!(
        alarmed.body.contains(r#""resource":"memory""#)
            && alarmed.body.contains(r#""node":"vip_b2@localhost""#)
            && alarmed.body.contains(r#""status":"failed""#),
        "{}",
        alarmed.body
    );
    let started = Instant::now();
    b2.set_memory_alarm(false).expect("clear the memory alarm");
    let cleared = health(200);
    eprintln!(
        "alarm cleared (in {:?}): {} {}",
        started.elapsed(),
        cleared.status,
        cleared.body
    );
    assert_eq!(cleared.body, r#"{"status":"ok"}"#);
    // An alarm on b2 is b2's alone: b1 has none.
    let b1_alarms = b1
        .rabbitmqctl(&["eval", "rabbit_alarm:get_alarms()."])
        .expect("b1 alarms");
    assert_eq!(b1_alarms.trim(), "[]");
    // Without management the alarm is checked through rabbitmqctl.
    let started = Instant::now();
    b1.set_memory_alarm(true).expect("raise b1's memory alarm");
    b1.set_memory_alarm(false).expect("clear b1's memory alarm");
    eprintln!(
        "b1 memory alarm on and off (rabbitmqctl only) in {:?}",
        started.elapsed()
    );

    // What ran: the brokers' processes, epmd among them.
    let pids: Vec<_> = b1.processes().into_iter().chain(b2.processes()).collect();
    eprintln!(
        "broker processes: {:?}",
        pids.iter()
            .map(|p| format!("{} {}", p.pid, p.comm))
            .collect::<Vec<_>>()
    );
    for comm in ["beam.smp", "epmd"] {
        assert_eq!(
            pids.iter().filter(|p| p.comm == comm).count(),
            2,
            "one {comm} per broker: {pids:?}"
        );
    }

    // Stop both at once, then drop the lab: nothing may be left.
    let started = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| drop(b1));
        s.spawn(|| drop(b2));
    });
    eprintln!("brokers dropped in {:?}", started.elapsed());
    drop(lab);
    for (_fd, ns) in &namespaces {
        let left = live_processes_in(*ns);
        assert!(
            left.is_empty(),
            "processes left in a namespace of lab {prefix}: {left:?}"
        );
    }
    drop(namespaces);
    // Orphans (epmd) are reaped by init: a zombie counts as gone.
    let alive: Vec<_> = pids.iter().filter(|p| p.alive()).collect();
    assert!(alive.is_empty(), "broker processes still run: {alive:?}");
    for dir in dirs {
        assert!(!dir.exists(), "{} was not removed", dir.display());
    }
    let listed = vip_tests::netns::NetNs::list().unwrap();
    assert!(
        !listed.iter().any(|n| n.starts_with(&prefix)),
        "namespaces left: {listed:?}"
    );
}

/// A broker cannot take a port the lab's backend holds: `start` says so at
/// once, and leaves nothing behind.
#[test]
fn a_taken_amqp_port_fails_start_clearly() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let mut opts = LabOptions::unique("rmqp");
    opts.backends = 1;
    opts.backend_bin = env!("CARGO_BIN_EXE_vip-lab-backend").into();
    let lab = Lab::up(opts).expect("lab up");
    let err = broker::start(&lab, "b1", &BrokerOptions::default())
        .err()
        .expect("5672 is taken by vip-lab-backend");
    let err = format!("{err:#}");
    eprintln!("{err}");
    assert!(err.contains("already accepts connections"), "{err}");
    let ns = netns_id(&lab.ns("b1").path()).unwrap();
    let procs = live_processes_in(ns);
    assert_eq!(procs.len(), 1, "only vip-lab-backend runs in b1: {procs:?}");
}

/// A broker that dies while starting (here: its Erlang distribution port is
/// taken) fails `start` with its exit status and the tail of its log, and
/// leaves no process behind.
#[test]
fn a_failing_broker_reports_its_log() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let mut opts = LabOptions::unique("rmqf");
    opts.backends = 1;
    opts.start_backends = false;
    let lab = Lab::up(opts).expect("lab up");
    // RabbitMQ's distribution port is the AMQP port + 20000.
    let blocker = lab.run_in("b1", || {
        std::net::TcpListener::bind("0.0.0.0:25672").unwrap()
    });
    let ns_file = std::fs::File::open(lab.ns("b1").path()).unwrap();
    let ns = netns_id(&lab.ns("b1").path()).unwrap();
    let started = Instant::now();
    let err = broker::start(&lab, "b1", &BrokerOptions::default())
        .err()
        .expect("no broker without its distribution port");
    let err = format!("{err:#}");
    eprintln!("failed in {:?}:\n{err}", started.elapsed());
    assert!(err.contains("exited with"), "{err}");
    assert!(err.contains("--- last"), "{err}");
    let procs = live_processes_in(ns);
    assert!(procs.is_empty(), "left in b1: {procs:?}");
    drop((blocker, ns_file));
}
