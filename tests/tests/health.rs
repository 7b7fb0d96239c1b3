//! Service health checks against real `RabbitMQ` brokers in the lab: an `amqp`
//! check takes a stopped broker out of the lookup table within
//! `interval × fall` (plus jitter and 50 ms), a hung one too, and XDP resets
//! a connection still open on it at its next packet; a broker rejoins after
//! `rise` passes; an `http` check of the management API's alarms endpoint
//! fails while a memory alarm is forced.
#![allow(
    clippy::too_many_lines,
    reason = "scenario tests read best as one story"
)]

use vip_tests::kit as common;

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::PathBuf,
    time::{Duration, Instant},
};

use common::{Agent, VIP, config, is_root, wait_for};
use vip_agent::config::Probe;
use vip_tests::{
    broker::{self, Broker, BrokerOptions},
    lab::{Lab, LabOptions},
};

const INTERVAL_MS: u64 = 100;
const FALL: u64 = 2;
/// `health::jittered` spreads each interval by up to this fraction.
const JITTER: f64 = 0.1;

/// Which broker answers a fresh AMQP connection through the VIP, and the
/// open connection (waiting for our `connection.start-ok`).
fn amqp_via_vip(timeout: Duration) -> std::io::Result<(String, TcpStream)> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::from((VIP, 5672)), timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(broker::AMQP_HEADER)?;
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    loop {
        let n = s.read(&mut buf[got..])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
        let text = String::from_utf8_lossy(&buf[..got]);
        if let Some(at) = text.find("vip_b") {
            return Ok((text[at + 4..at + 6].to_owned(), s));
        }
        if got == buf.len() {
            return Err(std::io::Error::other("no node name in connection.start"));
        }
    }
}

fn backend_of(node: &str) -> Ipv4Addr {
    format!("10.99.0.1{}", &node[1..]).parse().unwrap()
}

/// Whether `addr` is in the live lookup table, per the pinned maps.
fn in_table(agent: &Agent, addr: Ipv4Addr) -> bool {
    let maps = agent.maps();
    let key = vip_agent::agent::service_key(VIP, 5672, vip_common::Proto::Tcp);
    let Ok(table) = maps.live_table(&key) else {
        return false;
    };
    let backends = maps.backends().unwrap();
    table.iter().any(|id| {
        backends
            .get(*id as usize)
            .is_some_and(|b| Ipv4Addr::from(b.addr.to_ne_bytes()) == addr)
    })
}

fn start_brokers(lab: &Lab) -> Vec<Broker> {
    std::thread::scope(|s| {
        let handles: Vec<_> = ["b1", "b2", "b3"]
            .into_iter()
            .map(|node| {
                s.spawn(move || {
                    let opts = BrokerOptions {
                        management: node == "b2",
                    };
                    broker::start(lab, node, &opts).expect("broker starts")
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn amqp_checks_steer_real_brokers_and_reset_stale_connections() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let mut opts = LabOptions::unique("hc");
    opts.start_backends = false;
    let lab = Lab::up(opts).expect("lab up");
    let t0 = Instant::now();
    let mut brokers = start_brokers(&lab);
    eprintln!(
        "brokers up in {:?} ({:?})",
        t0.elapsed(),
        brokers.iter().map(Broker::started_in).collect::<Vec<_>>()
    );
    let _dir = common::DirGuard::new(PathBuf::from(format!("/run/vip-test/{}-hc", lab.prefix())));
    let mut cfg = config::node(
        &lab,
        "lb1",
        &[("10.99.0.11", 1), ("10.99.0.12", 1), ("10.99.0.13", 1)],
    );
    let mut amqp = config::amqp_check();
    amqp.schedule.interval = Duration::from_millis(INTERVAL_MS);
    amqp.schedule.timeout = Duration::from_millis(300);
    amqp.schedule.fall = u32::try_from(FALL).expect("small");
    cfg.services[0].check = Some(amqp);
    let mut alarms = config::check(
        "b2-alarms",
        Probe::Http {
            path: "/api/health/checks/alarms".to_owned(),
            expect_status: 200,
            expect_body: None,
            auth: Some(("guest".to_owned(), "guest".to_owned())),
        },
    );
    alarms.address = Some(Ipv4Addr::new(10, 99, 0, 12));
    alarms.port = Some(15672);
    alarms.schedule.interval = Duration::from_millis(200);
    alarms.schedule.rise = 1;
    alarms.schedule.fall = 1;
    cfg.checks.push(alarms);
    let lb1 = Agent::start_config(&lab, "lb1", cfg);
    wait_for(
        "every backend up and in the table",
        Duration::from_secs(10),
        || {
            lb1.status().services[0]
                .backends
                .iter()
                .all(|b| b.up && b.in_table)
                .then_some(())
        },
    );

    // 1. A hung broker (SIGSTOP: sockets open, nothing answers). A
    // connection open on it is reset by XDP at its next packet once the
    // check has declared it down.
    let (held_on, mut held) = wait_for("an AMQP connection on b1", Duration::from_secs(10), || {
        lab.run_in("client", || {
            (0..20).find_map(|_| {
                let (who, s) = amqp_via_vip(Duration::from_secs(2)).ok()?;
                (who == "b1").then_some((who, s))
            })
        })
    });
    assert_eq!(held_on, "b1");
    let b1 = &brokers[0];
    let beam: Vec<i32> = b1
        .processes()
        .iter()
        .filter(|p| p.comm.starts_with("beam"))
        .map(|p| p.pid)
        .collect();
    assert!(!beam.is_empty(), "b1's beam.smp");
    for pid in &beam {
        // SAFETY: signalling the broker this test started, by PID.
        assert_eq!(unsafe { libc::kill(*pid, libc::SIGSTOP) }, 0);
    }
    let hung_at = Instant::now();
    let b1_addr = backend_of("b1");
    wait_for("hung b1 out of the table", Duration::from_secs(5), || {
        (!in_table(&lb1, b1_addr)).then_some(())
    });
    eprintln!("hung broker left the table after {:?}", hung_at.elapsed());
    let resets_before = lb1.status().counters["tcp_reset"];
    let (reset_after, err) = lab.run_in("client", || {
        held.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let sent = Instant::now();
        held.write_all(&[1, 0, 0, 0, 0, 0, 4, 0, 10, 0, 11, 0xce])
            .expect("send on the held connection");
        let mut b = [0u8; 16];
        let r = held.read(&mut b);
        (sent.elapsed(), r)
    });
    let err = err.expect_err("the held connection must be reset");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    assert!(
        reset_after < Duration::from_millis(50),
        "RST after {reset_after:?}"
    );
    eprintln!("held connection reset {reset_after:?} after its next packet");
    assert!(lb1.status().counters["tcp_reset"] > resets_before);
    for pid in &beam {
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(*pid, libc::SIGCONT) }, 0);
    }
    wait_for("b1 back after rise", Duration::from_secs(10), || {
        in_table(&lb1, b1_addr).then_some(())
    });

    // 2. A stopped broker: out of the table within interval × fall (plus
    // jitter and 50 ms) of its port closing; no new connection reaches it.
    let b3_addr = backend_of("b3");
    let b3_sock = SocketAddr::from((b3_addr, 5672));
    let stopper = {
        let b3 = &mut brokers[2];
        std::thread::scope(|s| {
            let h = s.spawn(|| b3.stop());
            let closed = wait_for("b3's port to close", Duration::from_secs(30), || {
                lab.run_in("client", || {
                    TcpStream::connect_timeout(&b3_sock, Duration::from_millis(100))
                        .is_err()
                        .then(Instant::now)
                })
            });
            let gone = wait_for("b3 out of the table", Duration::from_secs(5), || {
                (!in_table(&lb1, b3_addr)).then(Instant::now)
            });
            h.join().unwrap().expect("b3 stops");
            gone.saturating_duration_since(closed)
        })
    };
    let bound =
        Duration::from_millis(INTERVAL_MS * FALL).mul_f64(1.0 + JITTER) + Duration::from_millis(50);
    eprintln!("stopped broker left the table {stopper:?} after its port closed (bound {bound:?})");
    assert!(stopper <= bound, "{stopper:?} > {bound:?}");
    let st = lb1.status();
    let b3 = st.services[0]
        .backends
        .iter()
        .find(|b| b.address == b3_addr)
        .unwrap();
    assert!(!b3.up && !b3.in_table && !b3.reason.is_empty(), "{b3:?}");
    lab.run_in("client", || {
        for _ in 0..30 {
            let (who, _) = amqp_via_vip(Duration::from_secs(2)).expect("AMQP via the VIP");
            assert_ne!(who, "b3");
        }
    });
    brokers[2].start_again().expect("b3 starts again");
    wait_for("b3 back after rise", Duration::from_secs(10), || {
        in_table(&lb1, b3_addr).then_some(())
    });

    // 3. The alarms endpoint under a forced memory alarm fails the http check.
    let check = |lb: &Agent| {
        lb.status()
            .checks
            .into_iter()
            .find(|c| c.name == "b2-alarms")
            .unwrap()
    };
    assert!(check(&lb1).up);
    brokers[1].set_memory_alarm(true).expect("alarm on");
    let down = wait_for("the alarms check down", Duration::from_secs(5), || {
        let c = check(&lb1);
        (!c.up).then_some(c)
    });
    assert!(down.reason.contains("503"), "{down:?}");
    brokers[1].set_memory_alarm(false).expect("alarm off");
    wait_for("the alarms check up", Duration::from_secs(5), || {
        check(&lb1).up.then_some(())
    });
    drop(lb1);
    drop(brokers);
}
