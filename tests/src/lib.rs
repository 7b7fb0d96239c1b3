//! The netns lab and what vip's privileged tests share: [`netns`] (network
//! namespaces as RAII guards, entering only the network namespace), [`lab`]
//! (the client / lb1 / lb2 / backends topology on a bridge, used by the tests,
//! `cargo xtask lab|run` and the benchmarks), [`frames`] (test frames for
//! `BPF_PROG_TEST_RUN`) and [`xdp`] (the XDP program's fixture, provisioned
//! by the agent's plan and apply, for its tests and benchmark).
//!
//! Without its `agent` feature ([`kit`] and [`xdp`], on by default) this
//! library does not depend on vip-agent or aya: xtask links it that way,
//! before the eBPF toolchain is installed.

pub mod broker;
pub mod frames;
#[cfg(feature = "agent")]
pub mod kit;
pub mod lab;
pub mod netns;
#[cfg(feature = "agent")]
pub mod plot;
pub mod programs;
pub mod sys;
pub mod workload;
#[cfg(feature = "agent")]
pub mod xdp;

/// Prints a benchmark's markdown section and appends it to the report
/// named by `VIP_BENCH_REPORT` (`cargo xtask bench` sets it), when set.
///
/// # Panics
/// When the report cannot be opened or written.
pub fn publish(md: &str) {
    use std::io::Write as _;
    println!("{md}");
    if let Some(path) = std::env::var_os("VIP_BENCH_REPORT") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open the report");
        f.write_all(md.as_bytes()).expect("append to the report");
    }
}

/// "N CPU(s), <model>; kernel <release>": printed beside benchmark numbers.
#[must_use]
pub fn machine_summary() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    format!(
        "{} CPU(s), {cpu}; kernel {}",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        kernel.trim()
    )
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead as _, BufReader, Write as _},
        net::{SocketAddr, TcpStream, UdpSocket},
        os::{fd::AsFd as _, unix::fs::MetadataExt as _},
        time::Duration,
    };

    use crate::{
        lab::{Lab, LabOptions, default_backend_bin},
        netns::NetNs,
    };

    fn is_root() -> bool {
        // SAFETY: no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// Connects to `addr:port`, returns the greeting and the answer to "x".
    fn greet_and_ask(addr: SocketAddr) -> (String, String) {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut greeting = String::new();
        reader.read_line(&mut greeting).expect("greeting");
        (&stream).write_all(b"x\n").expect("send");
        let mut reply = String::new();
        reader.read_line(&mut reply).expect("reply");
        (greeting, reply)
    }

    fn udp_ask(addr: SocketAddr) -> String {
        let sock = UdpSocket::bind("10.99.0.10:0").expect("bind");
        sock.connect(addr).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        sock.send(b"hi").expect("send");
        let mut buf = [0u8; 64];
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no UDP answer from {addr}: {e}"));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Opens `n` connections to `addr` from 4 threads, then reads every
    /// greeting; returns how many were greeted.
    fn burst(addr: SocketAddr, n: usize) -> usize {
        let streams: Vec<TcpStream> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(move || {
                        (0..n / 4)
                            .map(|_| {
                                TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                                    .expect("connect")
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect()
        });
        streams
            .into_iter()
            .filter(|s| {
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut line = String::new();
                BufReader::new(s).read_line(&mut line).is_ok() && line == "b1\n"
            })
            .count()
    }

    /// A lab with UDP on 5673 too, or `None` (after saying why) when not root.
    fn test_lab(tag: &str) -> Option<Lab> {
        if !is_root() {
            eprintln!("skipping: need root");
            return None;
        }
        let bin = default_backend_bin();
        assert!(
            bin.is_file(),
            "{} is missing: run `cargo build -p vip-tests --bins` first",
            bin.display()
        );
        let mut opts = LabOptions::unique(tag);
        opts.backend_udp_ports = vec![5673];
        Some(Lab::up(opts).expect("lab up"))
    }

    /// The topology as built: reachability, the VIP on the backends, XDP on
    /// the switch ports of lb1 and lb2, MACs, offloads; and no namespace
    /// left after drop.
    #[test]
    fn lab_up_reach_and_down() {
        let Some(lab) = test_lab("smk") else { return };
        let prefix = lab.prefix().to_owned();
        eprintln!("lab {prefix} up in {:?}", lab.setup_time());
        assert!(
            lab.setup_time() < Duration::from_secs(2),
            "lab setup took {:?}",
            lab.setup_time()
        );
        eprintln!("{}", lab.status());

        // Client to b1 by its own address: greeting, then an echoed line.
        let b1 = SocketAddr::from((lab.addr("b1"), 5672));
        let (greeting, reply) = lab.run_in("client", || greet_and_ask(b1));
        assert_eq!((greeting.as_str(), reply.as_str()), ("b1\n", "b1 x\n"));

        // UDP answers come from the address asked, here b2's.
        let b2_udp = SocketAddr::from((lab.addr("b2"), 5673));
        assert_eq!(lab.run_in("client", || udp_ask(b2_udp)), "b2 hi");

        // The backends have the VIP on lo and answer to it locally.
        let vip = SocketAddr::from((Lab::VIP, 5672));
        let (greeting, _) = lab.run_in("b3", || greet_and_ask(vip));
        assert_eq!(greeting, "b3\n");

        // lb1 reaches b2 over the bridge.
        let b2 = SocketAddr::from((lab.addr("b2"), 5672));
        let (greeting, _) = lab.run_in("lb1", || greet_and_ask(b2));
        assert_eq!(greeting, "b2\n");

        // The pass-only XDP programs on the switch ports of lb1 and lb2.
        for port in ["sw-lb1", "sw-lb2"] {
            let shown = lab
                .ns("sw")
                .ip(&["-d", "link", "show", port])
                .expect("ip link");
            assert!(
                shown.contains("prog/xdp id"),
                "{port} has no XDP program: {shown}"
            );
        }
        // Deterministic MACs and no tx checksum offload.
        let eth0 = lab
            .ns("lb1")
            .ip(&["link", "show", "eth0"])
            .expect("ip link");
        assert!(eth0.contains("link/ether 02:99:00:00:00:02 "), "{eth0}");
        assert_eq!(lab.mac("b1"), [0x02, 0x99, 0, 0, 0, 0x0b]);
        let tx_csum = lab
            .run_in("client", || crate::sys::tx_checksum("eth0"))
            .expect("read tx checksum offload");
        assert!(!tx_csum, "the client's eth0 still offloads tx checksums");
        let ipv6 = lab
            .ns("client")
            .read_sysctl("net.ipv6.conf.all.disable_ipv6");
        assert_eq!(ipv6.expect("read sysctl"), "1");

        let names: Vec<String> = lab
            .nodes()
            .iter()
            .map(|n| lab.ns(n).name().to_owned())
            .collect();
        assert_eq!(names.len(), 7);
        drop(lab);
        let left: Vec<String> = NetNs::list()
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect();
        assert!(left.is_empty(), "namespaces left after drop: {left:?}");
        let listed = crate::netns::run_ip(&["netns", "list"]).unwrap();
        assert!(
            !listed.contains(&prefix),
            "ip netns list still shows {prefix}: {listed}"
        );
    }

    /// DSR as the load balancer will use it, with a static neighbour entry
    /// standing in for lb1; and a burst of connections.
    #[test]
    fn backends_answer_from_the_vip_and_take_a_burst() {
        let Some(lab) = test_lab("dsr") else { return };
        let b1 = SocketAddr::from((lab.addr("b1"), 5672));
        let vip = SocketAddr::from((Lab::VIP, 5672));
        // DSR without a load balancer: point the client's neighbour entry
        // for the VIP at b1. b1 takes VIP traffic locally and answers from
        // the VIP, over TCP and over UDP.
        let b1_mac = crate::lab::format_mac(lab.mac("b1"));
        let vip_s = Lab::VIP.to_string();
        let neigh = [
            "neigh",
            "replace",
            &vip_s,
            "lladdr",
            &b1_mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ];
        lab.ns("client").ip(&neigh).expect("static neighbour");
        let (greeting, reply) = lab.run_in("client", || greet_and_ask(vip));
        assert_eq!((greeting.as_str(), reply.as_str()), ("b1\n", "b1 x\n"));
        let vip_udp = SocketAddr::from((Lab::VIP, 5673));
        let answer = lab.run_in("client", || udp_ask(vip_udp));
        assert_eq!(answer, "b1 hi");

        // A burst of 2000 connections, all open before any greeting is read,
        // must not overflow the listen backlog.
        let started = std::time::Instant::now();
        let greeted = lab.run_in("client", || burst(b1, 2000));
        eprintln!("2000 concurrent connections in {:?}", started.elapsed());
        assert_eq!(greeted, 2000);
        let nstat = lab
            .ns("b1")
            .run(
                "nstat",
                &["-az", "TcpExtListenOverflows", "TcpExtListenDrops"],
            )
            .expect("nstat");
        eprintln!("{nstat}");
        let counters: Vec<&str> = nstat.lines().filter(|l| l.starts_with("TcpExt")).collect();
        assert_eq!(counters.len(), 2, "{nstat}");
        for line in counters {
            let count: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
            assert_eq!(count, 0, "{line}");
        }
    }

    /// Processes started in a node enter its network namespace only, and
    /// stop on SIGTERM; backends exit 0 then.
    #[test]
    fn spawned_processes_keep_our_mounts_and_stop() {
        let Some(lab) = test_lab("prc") else { return };
        // Processes enter the network namespace only: same mounts as ours.
        let mut sleep = crate::programs::command("sleep").expect("sleep");
        sleep.arg("30");
        let pid = lab.spawn("client", sleep).expect("spawn sleep");
        let ns_of = |pid: &str, ns: &str| {
            std::fs::metadata(format!("/proc/{pid}/ns/{ns}"))
                .unwrap()
                .ino()
        };
        let client_net = std::fs::metadata(lab.ns("client").path()).unwrap().ino();
        assert_eq!(ns_of(&pid.to_string(), "net"), client_net);
        assert_eq!(ns_of(&pid.to_string(), "mnt"), ns_of("self", "mnt"));
        assert!(
            !lab.stop(pid).expect("stop sleep").success(),
            "sleep dies of SIGTERM"
        );

        // Backends exit cleanly on SIGTERM.
        let (_, b3_pid) = lab
            .processes()
            .into_iter()
            .find(|(n, _)| n == "b3")
            .expect("b3 runs");
        let status = lab.stop(b3_pid).expect("stop b3");
        assert!(status.success(), "b3 exited with {status}");
    }

    /// What the pass-only programs on sw-lb1/sw-lb2 are for: a frame that
    /// lb1's XDP sends back with `XDP_TX` reaches the switch. An XDP program
    /// on lb1's eth0 that bounces everything stands in for the agent.
    #[test]
    fn xdp_tx_from_lb1_reaches_the_switch() {
        let Some(lab) = test_lab("xtx") else { return };
        lab.run_in("lb1", || {
            let prog = crate::sys::load_verdict_xdp(3).expect("load XDP_TX program");
            let index = crate::sys::ifindex("eth0").expect("eth0");
            crate::sys::attach_xdp(index, prog.as_fd(), crate::sys::XDP_FLAGS_DRV_MODE)
                .expect("attach to lb1 eth0");
        });
        let lb1_mac = crate::lab::format_mac(lab.mac("lb1"));
        let neigh = [
            "neigh",
            "replace",
            "10.99.0.2",
            "lladdr",
            &lb1_mac,
            "dev",
            "eth0",
        ];
        lab.ns("client").ip(&neigh).expect("static neighbour");
        let stats = |node: &str, ifname: &str| {
            lab.run_in(node, || crate::sys::nic_stats(ifname))
                .unwrap_or_else(|e| panic!("{e:#}"))
        };
        let stat = |node: &str, ifname: &str, key: &str| -> u64 {
            let all = stats(node, ifname);
            all.iter()
                .find_map(|(name, v)| (name == key).then_some(*v))
                .unwrap_or_else(|| panic!("no {key} among the statistics of {ifname}: {all:?}"))
        };
        let before = stat("sw", "sw-lb1", "rx_queue_0_xdp_packets");
        lab.run_in("client", || {
            let sock = UdpSocket::bind("10.99.0.10:0").expect("bind");
            for _ in 0..10 {
                sock.send_to(b"bounce", "10.99.0.2:9").expect("send");
            }
        });
        let arrived = (0..200)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(5));
                stat("sw", "sw-lb1", "rx_queue_0_xdp_packets") - before
            })
            .find(|n| *n >= 10);
        assert!(
            arrived.is_some(),
            "XDP_TX frames did not reach sw-lb1:\nlb1 eth0 {:?}\nsw sw-lb1 {:?}",
            stats("lb1", "eth0"),
            stats("sw", "sw-lb1"),
        );
        assert!(stat("lb1", "eth0", "rx_queue_0_xdp_tx") >= 10);
    }

    /// A panicking test still removes its lab (the guard runs on unwind).
    #[test]
    fn lab_is_removed_when_a_test_panics() {
        if !is_root() {
            eprintln!("skipping: need root");
            return;
        }
        let mut opts = LabOptions::unique("pan");
        opts.start_backends = false;
        opts.backends = 1;
        let prefix = opts.prefix.clone();
        let result = std::panic::catch_unwind(|| {
            let _lab = Lab::up(opts).expect("lab up");
            panic!("deliberate panic: the lab must still be removed");
        });
        assert!(result.is_err());
        let left: Vec<String> = NetNs::list()
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect();
        assert!(left.is_empty(), "namespaces left after a panic: {left:?}");
    }

    /// A backend that dies at once fails `Lab::up` with its exit status, and
    /// what was built is removed.
    #[test]
    fn a_dead_backend_fails_up_and_leaves_nothing() {
        if !is_root() {
            eprintln!("skipping: need root");
            return;
        }
        let mut opts = LabOptions::unique("bad");
        opts.backends = 1;
        opts.backend_bin = "/bin/false".into();
        let prefix = opts.prefix.clone();
        let err = format!("{:#}", Lab::up(opts).err().expect("up fails"));
        eprintln!("{err}");
        assert!(
            err.contains("backend b1") && err.contains("exit status: 1"),
            "{err}"
        );
        let left: Vec<String> = NetNs::list()
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect();
        assert!(
            left.is_empty(),
            "namespaces left after a failed up: {left:?}"
        );
    }

    /// A lab made persistent survives its guard; `down_persistent` removes
    /// it, its backends included; an existing prefix is refused meanwhile.
    #[test]
    fn persistent_lab_up_status_down() {
        if !is_root() {
            eprintln!("skipping: need root");
            return;
        }
        let opts = LabOptions::unique("per");
        let prefix = opts.prefix.clone();
        let lab = Lab::up(opts.clone()).expect("lab up");
        let pids: Vec<u32> = lab.processes().iter().map(|(_, p)| *p).collect();
        let state = lab.persist().expect("persist");
        assert!(state.exists());
        assert!(NetNs::exists(&format!("{prefix}-sw")));

        let again = Lab::up(opts).err().expect("same prefix refused");
        assert!(format!("{again:#}").contains("ip netns del"), "{again:#}");

        let status = Lab::status_persistent(&prefix).expect("status");
        eprintln!("{status}");
        assert!(
            status.contains("b1 pid") && status.contains("running"),
            "{status}"
        );
        assert!(
            status.contains("02:99:00:00:00:0b") && status.contains("10.99.0.100/32"),
            "{status}"
        );
        assert!(status.contains("xdp native prog"), "{status}");

        Lab::down_persistent(&prefix).expect("down");
        assert!(!state.exists());
        for pid in pids {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Our own children linger as zombies until this process exits.
            assert!(
                stat.is_empty() || stat.contains(") Z "),
                "backend {pid} still runs: {stat}"
            );
        }
        let left: Vec<String> = NetNs::list()
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect();
        assert!(left.is_empty(), "namespaces left after down: {left:?}");
        assert!(Lab::status_persistent(&prefix).unwrap().contains("no lab"));
    }
}
