//! Path-MTU discovery through direct server return, in the netns lab: a
//! client one routed hop away whose router's link towards it has a lower
//! MTU than the LAN. A backend's full-sized reply (DF set, Linux's default)
//! meets that hop, and the router's ICMP "fragmentation needed" goes to the
//! VIP the reply came from. XDP on lb1 must send it on to the backend that
//! owns the flow, or the reply black-holes.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use vip_common::counter;
use vip_tests::{
    kit::{Agent, VIP, is_root, lab},
    lab::FAR,
};

/// The router's MTU towards the far client (IPv6's minimum, a common tunnel MTU).
const HOP_MTU: u32 = 1280;
/// The line the client sends; the backend answers `<name> <line>\n`.
const LINE: usize = 20_000;
/// How long the reply may take: with PMTU working it takes milliseconds;
/// a black hole never finishes (the backend retransmits full-sized
/// segments with backoff, and Linux does no MTU probing by default).
const REPLY_LIMIT: Duration = Duration::from_secs(10);

/// Connects to VIP:5672, reads the greeting, sends a 20 KB line and reads
/// the reply within [`REPLY_LIMIT`]; returns the backend's name and how long
/// the reply took, or what went wrong with how much had arrived.
fn big_reply() -> Result<(String, Duration), String> {
    let addr = SocketAddr::from((VIP, 5672));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let started = Instant::now();
    let mut buf = [0u8; 16384];
    // The greeting, then the answer to the line.
    let mut sent = false;
    loop {
        if started.elapsed() > REPLY_LIMIT {
            return Err(format!(
                "no whole reply after {REPLY_LIMIT:?}: {} bytes arrived ({:?}...)",
                got.len(),
                String::from_utf8_lossy(&got[..got.len().min(16)])
            ));
        }
        match s.read(&mut buf) {
            Ok(0) => return Err(format!("closed after {} bytes", got.len())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
        let Some(nl) = got.iter().position(|b| *b == b'\n') else {
            continue;
        };
        let name = String::from_utf8_lossy(&got[..nl]).into_owned();
        if !sent {
            let mut line = vec![b'x'; LINE];
            line.push(b'\n');
            s.write_all(&line).map_err(|e| format!("write: {e}"))?;
            sent = true;
        }
        let want = nl + 1 + name.len() + 1 + LINE + 1;
        if got.len() >= want {
            let reply = &got[nl + 1..want];
            if !reply.starts_with(format!("{name} ").as_bytes()) || reply[reply.len() - 1] != b'\n'
            {
                return Err(format!("odd reply from {name}"));
            }
            return Ok((name, started.elapsed()));
        }
    }
}

/// A 20 KB reply from a backend reaches a client behind a 1280-byte hop:
/// the hop's fragmentation-needed messages to the VIP reach the backend
/// through XDP (counted as `icmp_to_backend`), which lowers its path MTU to
/// the client and resends. Before XDP steered them, lb1's own stack got
/// them and the reply never arrived.
#[test]
fn a_large_reply_crosses_a_lower_mtu_hop() {
    if !is_root() {
        eprintln!("skipping: netns tests need root");
        return;
    }
    let mut lab = lab("pmtu");
    lab.add_far_client(HOP_MTU)
        .expect("a client behind a router");
    let agent = Agent::start(
        &lab,
        "lb1",
        "lb1",
        &[("10.99.0.11", 1), ("10.99.0.12", 1), ("10.99.0.13", 1)],
    );
    let before = agent.maps().counters().expect("counters");

    let result = lab.run_in("far", big_reply);
    let c = agent.maps().counters().expect("counters");
    let moved = |i: u32| c[i as usize] - before[i as usize];
    let (name, took) = result.unwrap_or_else(|e| {
        panic!(
            "the reply through the {HOP_MTU}-byte hop: {e}; icmp_to_backend {}, pass_icmp_other {}, pass_other {}",
            moved(counter::ICMP_TO_BACKEND),
            moved(counter::PASS_ICMP_OTHER),
            moved(counter::PASS_OTHER)
        )
    });
    eprintln!("{LINE}-byte reply from {name} in {took:?}");
    assert!(
        moved(counter::ICMP_TO_BACKEND) >= 1,
        "the hop's ICMP went to the backend through XDP: {c:?}"
    );
    // The backend learnt the path MTU to the client from it.
    let route = lab
        .ns(&name)
        .ip(&["route", "get", &FAR.to_string()])
        .expect("ip route get");
    assert!(
        route.contains(&format!("mtu {HOP_MTU}")),
        "{name} caches the path MTU to {FAR}: {route:?}"
    );
}
