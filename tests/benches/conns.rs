//! New TCP connections per second through the load balancer: wrk (one
//! thread, 50 connections, `Connection: close`, so that every request is a
//! new connection) against one nginx backend (b1, one single-process
//! server), all in the netns lab on this machine, over four paths, each
//! run once per trial in turn (interleaved trials, so that every path sees
//! the same machine noise):
//! - **direct**: the client to b1's own address, over the switch; no load
//!   balancer hop (the other paths add client -> lb -> switch on the way
//!   in);
//! - **minimal forwarder**: the client to the VIP, through lb1, whose eth0
//!   runs `vip_min_fwd` (backend 0's MACs written, `XDP_TX`, no parsing),
//!   backend 0 provisioned by the agent's own plan and apply; b1 answers
//!   from the VIP on its `lo` (direct server return);
//! - **vip**: the same through the real vip-agent on lb1, VRRP master
//!   (1 s adverts), a TCP service VIP:5672 over b1;
//! - **`HAProxy`** 2.6 (`mode tcp`) on lb2, listening on the VIP: it
//!   proxies, so both directions and two TCP connections per client
//!   connection go through it.
//!
//! The client's neighbour entry for the VIP (permanent) names the node of
//! the path: lb1 for the forwarders and vip, lb2 for `HAProxy`. b1 and lb2
//! keep no `TIME_WAIT` sockets (`tcp_max_tw_buckets = 0`): one client's
//! ports come round every few seconds, and a SYN meeting a `TIME_WAIT` socket
//! of the run before would cost the path that runs next. Each run is
//! checked: wrk exited 0, no socket errors and no non-2xx answers, enough
//! requests, and the frames went the path's way (lb1's `XDP_TX` counter
//! moved for the forwarders and vip, and not otherwise). The goals: vip at
//! least 97 % of the minimal forwarder, and at least 1.8 times `HAProxy`.
//!
//! Run with `cargo xtask bench` (it builds the release agent); the markdown
//! goes to stdout and is appended to `VIP_BENCH_REPORT` when set.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use aya::programs::xdp::{XdpLinkId, XdpMode};
use vip_agent::{
    agent::{Ids, Resolved, Steering, apply, plan, service_ident},
    dataplane::Dataplane,
    net::Iface,
};
use vip_tests::plot::{Bar, Tone};
use vip_tests::{
    kit::{Agent, DirGuard, Haproxy, Setup, Vrrp, config, is_root, poll, signal, wait_for},
    lab::{Lab, LabOptions, VIP, format_mac},
    programs::{self, Job},
};

/// Trials unless `VIP_BENCH_TRIALS` says otherwise.
const TRIALS: usize = 5;
/// One wrk run.
const RUN: Duration = Duration::from_secs(5);
/// The runs of the warm-up trial, not counted.
const WARMUP: Duration = Duration::from_secs(2);
const CONNECTIONS: u32 = 50;
/// The port nginx serves on (the kit's service and `HAProxy` port).
const PORT: u16 = 5672;
const BACKEND: &str = "b1";
const ADVERT: Duration = Duration::from_secs(1);
/// A run with fewer requests a second than this failed.
const MIN_RATE: u64 = 200;
/// The most a wrk run may take beyond its duration.
const WRK_SLACK: Duration = Duration::from_secs(15);
const BODY: &str = "ok\n";
/// wrk runs on CPU 0, nginx on CPU 1 (on every path); `HAProxy` and the
/// agent where the scheduler puts them.
const WRK_CPU: usize = 0;
const NGINX_CPU: usize = 1;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Route {
    Direct,
    MinFwd,
    Vip,
    Haproxy,
}

impl Route {
    const ALL: [Self; 4] = [Self::Direct, Self::MinFwd, Self::Vip, Self::Haproxy];

    fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct (b1's own address, no LB hop)",
            Self::MinFwd => "minimal forwarder (`vip_min_fwd`, XDP_TX)",
            Self::Vip => "vip (agent, VRRP master)",
            Self::Haproxy => "HAProxy 2.6 (mode tcp, proxying)",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::MinFwd => "minimal forwarder",
            Self::Vip => "vip",
            Self::Haproxy => "HAProxy",
        }
    }

    /// The node the client's neighbour entry for the VIP names.
    fn lb(self) -> Option<&'static str> {
        match self {
            Self::Direct => None,
            Self::MinFwd | Self::Vip => Some("lb1"),
            Self::Haproxy => Some("lb2"),
        }
    }

    /// Whether its frames cross lb1's XDP (`XDP_TX`).
    fn via_xdp(self) -> bool {
        matches!(self, Self::MinFwd | Self::Vip)
    }
}

/// A server the bench started, stopped by PID on drop (also on a panic):
/// SIGTERM, SIGKILL after 2 s.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = signal(self.child.id(), libc::SIGTERM);
        let child = &mut self.child;
        let gone = poll(Duration::from_secs(2), Duration::from_millis(10), || {
            matches!(child.try_wait(), Ok(Some(_)) | Err(_)).then_some(())
        });
        if gone.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// nginx in one process (`master_process off`), its files in `dir`,
/// answering `ok` on b1's address and on the VIP (on b1's `lo`).
fn nginx_conf(dir: &Path, backend: Ipv4Addr) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         events {{\n    worker_connections 4096;\n}}\n\
         http {{\n    access_log off;\n    default_type text/plain;\n\
         \x20   client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n\
         \x20   fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n\
         \x20   scgi_temp_path {d}/scgi;\n\
         \x20   server {{\n        listen {backend}:{PORT} backlog=4096;\n\
         \x20       listen {VIP}:{PORT} backlog=4096;\n\
         \x20       location / {{\n            return 200 \"ok\\n\";\n        }}\n    }}\n}}\n"
    )
}

/// Starts nginx in b1 and waits (at most 5 s) until it listens on both
/// addresses.
fn start_nginx(lab: &Lab, dir: &Path) -> Daemon {
    let backend = lab.addr(BACKEND);
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(dir, backend)).expect("write nginx.conf");
    let log = dir.join("nginx.out");
    let out = std::fs::File::create(&log).expect("nginx's log");
    let err = out.try_clone().expect("a second handle on the log");
    let mut cmd = programs::command("nginx").unwrap_or_else(|e| panic!("{e:#}"));
    cmd.arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    pin(&mut cmd, NGINX_CPU);
    let child = lab
        .spawn_unmanaged(BACKEND, cmd)
        .unwrap_or_else(|e| panic!("cannot start nginx in {BACKEND}: {e:#}"));
    let mut nginx = Daemon { child, log };
    let want = [format!("{backend}:{PORT}"), format!("{VIP}:{PORT}")];
    let listening = poll(Duration::from_secs(5), Duration::from_millis(10), || {
        if let Ok(Some(st)) = nginx.child.try_wait() {
            panic!(
                "nginx exited with {st}:\n{}\n{}",
                nginx.log_tail(),
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
        }
        let ss = lab
            .ns(BACKEND)
            .run("ss", &["-Hltn", &format!("sport = :{PORT}")])
            .unwrap_or_default();
        want.iter().all(|w| ss.contains(w.as_str())).then_some(())
    });
    assert!(
        listening.is_some(),
        "nginx does not listen on {want:?} after 5 s:\n{}",
        nginx.log_tail()
    );
    nginx
}

/// Pins the program `cmd` starts to CPU `cpu` (from before it runs, so its
/// threads too), on a machine with more than one.
fn pin(cmd: &mut std::process::Command, cpu: usize) {
    use std::os::unix::process::CommandExt as _;
    if std::thread::available_parallelism().map_or(1, std::num::NonZero::get) < 2 {
        return;
    }
    // SAFETY: the closure only calls sched_setaffinity(2) on a set built on
    // its stack, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set)
                == 0
            {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).expect("an interface name");
    // SAFETY: a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no interface {name}");
    i
}

/// The minimal forwarder, loaded with backend 0 provisioned the way the
/// agent provisions it (its config, ids, plan and apply); attached to lb1's
/// eth0 while `link` is set, detached on drop.
struct MinFwd {
    dp: Dataplane,
    link: Option<XdpLinkId>,
}

impl MinFwd {
    fn load(lab: &Lab) -> Self {
        let b1 = lab.addr(BACKEND);
        let cfg = config::node(lab, "lb1", &[(&b1.to_string(), 1)]);
        let mut ids = Ids::default();
        ids.assign(&cfg).expect("one service, one backend");
        let sid = ids
            .service(&service_ident(&cfg.services[0]))
            .expect("the service's id");
        assert_eq!(ids.backend(sid, b1), Some(0), "b1 is not backend 0");
        let index = lab.run_in("lb1", || ifindex("eth0"));
        let iface = Iface {
            index,
            name: "eth0".into(),
            mac: lab.mac("lb1"),
            addrs: vec![(lab.addr("lb1"), 24)],
        };
        let macs = BTreeMap::from([(
            b1,
            Resolved {
                ifindex: index,
                mac: lab.mac(BACKEND),
                src_mac: lab.mac("lb1"),
                local: false,
            },
        )]);
        let plan = plan(
            &cfg,
            &ids,
            &iface,
            std::slice::from_ref(&iface),
            &macs,
            &BTreeMap::new(),
            &Steering::default(),
        );
        let mut dp = Dataplane::load(None, cfg.node.flow_table_size).expect("load the XDP object");
        apply(&mut dp, None, &plan).expect("apply the plan");
        let b = dp.backends().expect("read BACKENDS")[0];
        assert_eq!(
            (b.mac, b.src_mac),
            (lab.mac(BACKEND), lab.mac("lb1")),
            "backend 0's MACs (destination b1, source lb1)"
        );
        Self { dp, link: None }
    }

    /// Attaches `vip_min_fwd` to lb1's eth0 in native mode (as the agent's
    /// `xdp_mode = "auto"` gets on a veth).
    fn attach(&mut self, lab: &Lab) {
        let dp = &mut self.dp;
        let id = lab
            .run_in("lb1", || {
                dp.min_fwd_program().attach("eth0", XdpMode::Driver)
            })
            .expect("attach vip_min_fwd to lb1's eth0 (native)");
        self.link = Some(id);
    }

    fn detach(&mut self) {
        if let Some(id) = self.link.take() {
            self.dp
                .min_fwd_program()
                .detach(id)
                .expect("detach vip_min_fwd");
        }
    }
}

impl Drop for MinFwd {
    fn drop(&mut self) {
        if let Some(id) = self.link.take() {
            let _ = self.dp.min_fwd_program().detach(id);
        }
    }
}

/// What one wrk run said.
#[derive(Clone, Copy, Debug, Default)]
struct Wrk {
    requests: u64,
    secs: f64,
    /// `Requests/sec`: here new connections a second.
    rate: f64,
    /// Socket errors: connect, read, write, timeout.
    errors: [u64; 4],
    non_2xx: u64,
}

/// wrk's "5.00s", "1.00m", "900.00ms".
fn parse_secs(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Some(v) = s.strip_suffix("ms") {
        return v.parse::<f64>().ok().map(|v| v / 1e3);
    }
    if let Some(v) = s.strip_suffix('s') {
        return v.parse().ok();
    }
    s.strip_suffix('m')
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v * 60.0)
}

fn parse_wrk(out: &str) -> Result<Wrk, String> {
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    let (requests, secs) = lines
        .iter()
        .find_map(|l| {
            let (n, rest) = l.split_once(" requests in ")?;
            Some((n.parse().ok()?, parse_secs(rest.split(',').next()?)?))
        })
        .ok_or("no \"N requests in T\" line")?;
    let rate = lines
        .iter()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or("no \"Requests/sec:\" line")?;
    let mut errors = [0; 4];
    if let Some(rest) = lines.iter().find_map(|l| l.strip_prefix("Socket errors:")) {
        // "connect 0, read 0, write 0, timeout 0"
        for (i, kind) in ["connect", "read", "write", "timeout"].iter().enumerate() {
            errors[i] = rest
                .split(',')
                .find_map(|p| p.trim().strip_prefix(kind))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| format!("no {kind} count in \"Socket errors:{rest}\""))?;
        }
    }
    let non_2xx = match lines.iter().find_map(|l| l.strip_prefix("Non-2xx")) {
        Some(rest) => rest
            .rsplit(':')
            .next()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("cannot read \"Non-2xx{rest}\""))?,
        None => 0,
    };
    Ok(Wrk {
        requests,
        secs,
        rate,
        errors,
        non_2xx,
    })
}

/// One wrk run from the client to `target`, killed if it takes more than
/// `run` + 15 s; checked for errors and a plausible request count.
fn wrk(lab: &Lab, target: Ipv4Addr, run: Duration) -> Wrk {
    let mut cmd = programs::command("wrk").unwrap_or_else(|e| panic!("{e:#}"));
    cmd.args([
        "-t1".to_owned(),
        format!("-c{CONNECTIONS}"),
        format!("-d{}s", run.as_secs()),
        "--timeout".to_owned(),
        "2s".to_owned(),
        "-H".to_owned(),
        "Connection: close".to_owned(),
        format!("http://{target}:{PORT}/"),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    pin(&mut cmd, WRK_CPU);
    let mut child = lab
        .spawn_unmanaged("client", cmd)
        .unwrap_or_else(|e| panic!("cannot start wrk: {e:#}"));
    let limit = run + WRK_SLACK;
    let status = poll(limit, Duration::from_millis(20), || {
        child.try_wait().ok().flatten()
    });
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("wrk to {target} did not finish within {limit:?}");
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    assert!(status.success(), "wrk exited with {status}:\n{out}\n{err}");
    let w = parse_wrk(&out).unwrap_or_else(|e| panic!("wrk's output: {e}:\n{out}\n{err}"));
    assert_eq!(
        (w.errors, w.non_2xx),
        ([0; 4], 0),
        "wrk to {target}: socket errors (connect, read, write, timeout) or non-2xx answers:\n{out}"
    );
    assert!(
        w.requests >= MIN_RATE * run.as_secs(),
        "wrk to {target}: only {} requests in {run:?}:\n{out}",
        w.requests
    );
    w
}

/// One request to `target` with `Connection: close`; whether nginx's 200
/// `ok` came back.
fn http_ok(target: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(1))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    if answer.starts_with("HTTP/1.1 200") && answer.ends_with(BODY) {
        Ok(())
    } else {
        Err(format!("unexpected answer {answer:?}"))
    }
}

/// Waits (at most 5 s) until the client gets nginx's answer from `target`.
fn wait_http(lab: &Lab, route: Route, target: Ipv4Addr) {
    let addr = SocketAddr::from((target, PORT));
    let mut last = String::new();
    let ok = lab.run_in("client", || {
        poll(Duration::from_secs(5), Duration::from_millis(50), || {
            http_ok(addr).map_err(|e| last = e).ok()
        })
    });
    assert!(
        ok.is_some(),
        "{}: no answer from {addr} within 5 s: {last}",
        route.short()
    );
}

/// Frames lb1's eth0 sent back with `XDP_TX`, over its rx queues.
fn lb1_xdp_tx(lab: &Lab) -> u64 {
    lab.run_in("lb1", || vip_tests::sys::nic_stats("eth0"))
        .unwrap_or_else(|e| panic!("{e:#}"))
        .iter()
        .filter(|(k, _)| k.starts_with("rx_queue_") && k.ends_with("_xdp_tx"))
        .map(|(_, v)| *v)
        .sum()
}

/// One wrk run over `route` (whose load balancer is in place), checked.
fn measure(lab: &Lab, route: Route, run: Duration) -> Wrk {
    let target = match route.lb() {
        None => lab.addr(BACKEND),
        Some(node) => {
            let mac = format_mac(lab.mac(node));
            let vip = VIP.to_string();
            lab.ns("client")
                .ip(&[
                    "neigh",
                    "replace",
                    &vip,
                    "lladdr",
                    &mac,
                    "dev",
                    "eth0",
                    "nud",
                    "permanent",
                ])
                .expect("the client's neighbour entry for the VIP");
            VIP
        }
    };
    wait_http(lab, route, target);
    let before = lb1_xdp_tx(lab);
    let w = wrk(lab, target, run);
    let tx = lb1_xdp_tx(lab) - before;
    if route.via_xdp() {
        // Each connection sends at least SYN, ACK + request, FIN and ACK.
        assert!(
            tx >= 3 * w.requests,
            "{}: lb1's XDP sent back {tx} frames for {} connections",
            route.short(),
            w.requests
        );
    } else {
        assert_eq!(tx, 0, "{}: frames crossed lb1's XDP", route.short());
    }
    eprintln!(
        "  {:<18} {:>9.0} conn/s ({} requests in {:.2} s)",
        route.short(),
        w.rate,
        w.requests,
        w.secs
    );
    w
}

/// vip-agent on lb1 with the service VIP:5672 over b1 and a VRRP instance
/// for the VIP, once it is master.
fn start_agent(lab: &Lab) -> Agent {
    let b1 = lab.addr(BACKEND).to_string();
    let mut cfg = config::node(lab, "lb1", &[(&b1, 1)]);
    cfg.vrrp.push(Vrrp::v3(150, ADVERT).agent_vrrp());
    let agent = Agent::start_full(lab, "lb1", cfg, Setup::logged());
    wait_for(
        "vip-agent on lb1 to become master",
        Duration::from_secs(10),
        || (agent.status().instances[0].state == "master").then_some(()),
    );
    agent
}

/// On-CPU nanoseconds of `pid` so far, summed over its threads.
fn cpu_ns(pid: u32) -> u64 {
    let dir = format!("/proc/{pid}/task");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// One trial: every route once, in turn, each run `run` long.
struct Trial {
    runs: Vec<Wrk>,
    /// vip-agent's own CPU during its run, % of one core.
    agent_cpu_pct: f64,
}

fn trial(lab: &Lab, min_fwd: &mut MinFwd, run: Duration) -> Trial {
    let mut agent_cpu_pct = 0.0;
    let runs = Route::ALL
        .iter()
        .map(|&route| match route {
            Route::Direct | Route::Haproxy => measure(lab, route, run),
            Route::MinFwd => {
                min_fwd.attach(lab);
                let w = measure(lab, route, run);
                min_fwd.detach();
                w
            }
            Route::Vip => {
                let mut agent = start_agent(lab);
                let pid = agent.child.as_ref().expect("running").id();
                let (t0, cpu0) = (Instant::now(), cpu_ns(pid));
                let w = measure(lab, route, run);
                #[expect(clippy::cast_precision_loss, reason = "nanoseconds")]
                let busy = (cpu_ns(pid) - cpu0) as f64 / 1e9;
                agent_cpu_pct = busy / t0.elapsed().as_secs_f64() * 100.0;
                let st = agent.stop();
                assert!(
                    st.success(),
                    "vip-agent exited with {st}:\n{}",
                    agent.log_tail(20)
                );
                w
            }
        })
        .collect();
    Trial {
        runs,
        agent_cpu_pct,
    }
}

/// The lab: one backend (nginx instead of the lab's backend), permanent
/// neighbour entries so that no ARP broadcast crosses the forwarders, wide
/// ephemeral port ranges, no `TIME_WAIT` sockets on b1 and lb2, and the VIP
/// on lb2's eth0 for `HAProxy`.
fn lab_up() -> Lab {
    let mut opts = LabOptions::unique("conn");
    opts.backends = 1;
    opts.start_backends = false;
    let lab = Lab::up(opts).expect("lab up");
    let neigh = |node: &str, of: &str| {
        let (addr, mac) = (lab.addr(of).to_string(), format_mac(lab.mac(of)));
        lab.ns(node)
            .ip(&[
                "neigh",
                "replace",
                &addr,
                "lladdr",
                &mac,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ])
            .expect("a permanent neighbour entry");
    };
    neigh(BACKEND, "client");
    neigh("client", BACKEND);
    neigh("lb2", BACKEND);
    for node in ["client", "lb2"] {
        lab.ns(node)
            .sysctl("net.ipv4.ip_local_port_range", "1024 65000")
            .expect("ephemeral port range");
    }
    // One client's ports come round every few seconds: a SYN that met a
    // TIME_WAIT socket of the run before would cost whichever path runs
    // next. The side that closes first (nginx; HAProxy towards the client)
    // keeps none.
    for node in [BACKEND, "lb2"] {
        lab.ns(node)
            .sysctl("net.ipv4.tcp_max_tw_buckets", "0")
            .expect("no TIME_WAIT sockets");
    }
    lab.ns("lb2")
        .ip(&["addr", "add", &format!("{VIP}/32"), "dev", "eth0"])
        .expect("the VIP on lb2");
    lab
}

/// Min, median and max.
fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        f64::midpoint(s[n / 2 - 1], s[n / 2])
    };
    (s[0], median, s[n - 1])
}

fn version_line(program: &str, arg: &str) -> String {
    programs::command(program)
        .and_then(|mut c| Ok(c.arg(arg).output()?))
        .map(|o| {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            text.lines().next().unwrap_or_default().trim().to_owned()
        })
        .unwrap_or_default()
}

fn goal(what: &str, ratio: f64, want: f64) -> String {
    let verdict = if ratio >= want { "met" } else { "missed" };
    format!("- {what}: measured {ratio:.3} (goal >= {want}): **{verdict}**\n")
}

/// How the figures were taken, for the report.
fn method(trials: usize) -> String {
    format!(
        "wrk (1 thread, {CONNECTIONS} connections, `-H \"Connection: close\"`: one new TCP \
         connection per request, {run}-second runs) in the client namespace against one nginx \
         (one process, `return 200 \"ok\\n\"`, access log off) in b1, everything on this \
         machine; wrk pinned to CPU {WRK_CPU} and nginx to CPU {NGINX_CPU} on every path \
         (HAProxy and vip-agent unpinned). {trials} trials after a warm-up trial of \
         {warmup}-second runs; each trial runs every path once, in the table's order. \
         direct: client -> switch -> b1 and back, no load-balancer hop. minimal forwarder and \
         vip: client -> switch -> lb1 (XDP_TX) -> switch -> b1, and b1 answers from the VIP on \
         its `lo` straight to the client (DSR); the minimal forwarder is `vip_min_fwd` \
         (backend 0's MACs, no parsing) in native mode on lb1's eth0; vip is vip-agent as VRRP \
         master (1 s adverts), restarted for each trial. HAProxy: `mode tcp` on lb2 (default \
         threads, one per CPU), client -> lb2 -> b1 and back through lb2, two TCP connections \
         per request. The client's permanent neighbour entry for the VIP names the path's \
         node. No TIME_WAIT sockets on b1 and lb2 (`net.ipv4.tcp_max_tw_buckets = 0` in their \
         namespaces): the one client's ports come round every few seconds, and a SYN that met \
         a TIME_WAIT socket of the run before would cost whichever path runs next.\n\n",
        run = RUN.as_secs(),
        warmup = WARMUP.as_secs(),
    )
}

fn report(trials: &[Trial], took: Duration) -> String {
    let rates = |i: usize| -> Vec<f64> { trials.iter().map(|t| t.runs[i].rate).collect() };
    let medians: Vec<f64> = (0..Route::ALL.len()).map(|i| stats(&rates(i)).1).collect();
    let base = medians[1];
    let mut md = String::from("\n# vip benchmark: new TCP connections per second\n\n");
    let _ = writeln!(md, "Machine: {}.", vip_tests::machine_summary());
    let _ = writeln!(
        md,
        "{}; {}; {}.\n",
        version_line("wrk", "-v"),
        version_line("nginx", "-v"),
        version_line("haproxy", "-v")
    );
    md.push_str(&method(trials.len()));
    md.push_str(
        "| path | conn/s (min / median / max) | ratio to the minimal forwarder (medians) |\n|---|---|---|\n",
    );
    for (i, route) in Route::ALL.iter().enumerate() {
        let (lo, med, hi) = stats(&rates(i));
        let _ = writeln!(
            md,
            "| {} | {lo:.0} / {med:.0} / {hi:.0} | {:.3} |",
            route.name(),
            med / base
        );
    }
    md.push_str("\nGoals (medians):\n\n");
    md.push_str(&goal(
        "vip >= 97 % of the minimal forwarder",
        medians[2] / base,
        0.97,
    ));
    md.push_str(&goal("vip >= 1.8 x HAProxy", medians[2] / medians[3], 1.8));
    md.push_str(
        "\nPer trial: conn/s (requests in the run, its seconds as wrk measured them):\n\n| trial |",
    );
    for route in Route::ALL {
        let _ = write!(md, " {} |", route.short());
    }
    md.push_str(
        " vip-agent process's CPU in its run (XDP is softirq time, not in it) |\n\
         |---|---|---|---|---|---|\n",
    );
    for (n, t) in trials.iter().enumerate() {
        let _ = write!(md, "| {} |", n + 1);
        for w in &t.runs {
            let _ = write!(md, " {:.0} ({}, {:.2} s) |", w.rate, w.requests, w.secs);
        }
        let _ = writeln!(md, " {:.1} % |", t.agent_cpu_pct);
    }
    let _ = writeln!(
        md,
        "\nEvery run: wrk exited 0, no socket errors (connect, read, write, timeout), no non-2xx \
         answer. Bench time {:.0} s.",
        took.as_secs_f64()
    );
    let bars: Vec<Bar> = Route::ALL
        .iter()
        .enumerate()
        .map(|(i, route)| {
            let (min, med, max) = stats(&rates(i));
            Bar {
                label: route.short().to_owned(),
                tone: match route {
                    Route::Vip => Tone::Vip,
                    Route::Haproxy => Tone::Peer,
                    _ => Tone::Baseline,
                },
                min: min / 1000.0,
                med: med / 1000.0,
                max: max / 1000.0,
            }
        })
        .collect();
    md.push_str(&vip_tests::plot::bars(
        "conns.svg",
        "New TCP connections per second (wrk, Connection: close, one nginx)",
        "thousand connections per second (bar: median; whisker: min to max)",
        &bars,
    ));
    md
}

fn main() {
    if !is_root() {
        eprintln!(
            "skipping: the conns bench needs root (network namespaces, XDP): run `cargo xtask bench`"
        );
        return;
    }
    programs::set_job(Job::Bench);
    for program in ["wrk", "nginx", "haproxy"] {
        if let Err(e) = programs::check(program.as_ref()) {
            eprintln!("conns bench: {e:#}");
            std::process::exit(1);
        }
    }
    let started = Instant::now();
    // Drop order (reverse): the forwarder, HAProxy, nginx, its directory,
    // then the lab.
    let lab = lab_up();
    let dir = DirGuard::for_lab(&lab, "nginx");
    let _nginx = start_nginx(&lab, &dir.0);
    let _haproxy = Haproxy::start(&lab, "lb2", &[(&lab.addr(BACKEND).to_string(), 1)]);
    let mut min_fwd = MinFwd::load(&lab);
    eprintln!("warm-up ({} s runs)", WARMUP.as_secs());
    trial(&lab, &mut min_fwd, WARMUP);
    let count = std::env::var("VIP_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(TRIALS);
    let mut trials = Vec::new();
    for n in 1..=count {
        eprintln!(
            "trial {n}/{count} [{:.0} s]",
            started.elapsed().as_secs_f64()
        );
        trials.push(trial(&lab, &mut min_fwd, RUN));
    }
    let md = report(&trials, started.elapsed());
    vip_tests::publish(&md);
}
