//! The netns lab: a switch namespace whose bridge joins a client, two load
//! balancers and the backends (DSR: the VIP on their `lo`), each in its own
//! network namespace on 10.99.0.0/24. [`Lab`] builds it, runs processes and
//! threads in its nodes, and removes everything it made on drop, also when a
//! test panics; [`Lab::persist`] hands it to `cargo xtask lab up|down|status`.
//!
//! | node | address | MAC of `eth0` |
//! |---|---|---|
//! | client | 10.99.0.10/24 | 02:99:00:00:00:0a |
//! | lb1, lb2 | .2, .3 | 02:99:00:00:00:02, :03 |
//! | b1, b2, b3... | .11, .12, .13... (+ VIP/32 on lo) | 02:99:00:00:00:0b, :0c, :0d... |
//! | VIP | 10.99.0.100 | |
//!
//! Nothing touches the root namespace: the veths are created inside the
//! switch namespace with their `eth0` end moved straight into the node, and
//! deleting the switch namespace deletes them.

use std::{
    io,
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU32, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

mod inspect;
mod persist;

use self::{inspect::describe, persist::ProcIdentity};

use anyhow::{Context as _, Result, bail};

use crate::{netns::NetNs, sys};

/// The service address the load balancers announce; on `lo` of every backend.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
/// The lab's subnet, 10.99.0.0/24.
pub const SUBNET: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 0);
/// The node [`Lab::add_far_client`] adds, one routed hop behind the client.
pub const FAR: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 2);
/// The client's address on the far node's link, its router.
pub const FAR_ROUTER: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 1);
/// The far node's subnet, 10.97.0.0/24.
pub const FAR_SUBNET: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 0);
/// The prefix of `cargo xtask lab`'s persistent lab.
pub const PERSISTENT_PREFIX: &str = "vip";
/// Where [`Lab::persist`] writes `<prefix>.state`.
pub const STATE_DIR: &str = "/run/vip-lab";
/// The most backends a lab can have (.11 up to .90, below the VIP).
pub const MAX_BACKENDS: usize = 80;

/// How long backends get to listen, and processes to exit on SIGTERM.
const BACKEND_READY_LIMIT: Duration = Duration::from_secs(5);
const TERM_GRACE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(10);

/// The address of a lab node's `eth0`: client .10, lb1 .2, lb2 .3, bN .(10+N);
/// `None` for the switch or an unknown name.
#[must_use]
pub fn node_addr(node: &str) -> Option<Ipv4Addr> {
    let last = match node {
        "client" => 10,
        "lb1" => 2,
        "lb2" => 3,
        _ => {
            let digits = node.strip_prefix('b')?;
            if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n: usize = digits.parse().ok()?;
            if n == 0 || n > MAX_BACKENDS {
                return None;
            }
            10 + u8::try_from(n).ok()?
        }
    };
    Some(Ipv4Addr::new(10, 99, 0, last))
}

/// The MAC of a lab node's `eth0`: 02:99:00:00:00 and the last octet of its
/// address (lb1 02:99:00:00:00:02, b1 02:99:00:00:00:0b).
#[must_use]
pub fn node_mac(node: &str) -> Option<[u8; 6]> {
    node_addr(node).map(|a| [0x02, 0x99, 0, 0, 0, a.octets()[3]])
}

/// The MAC of an end of a [`Lab::add_direct_peer`] link: 02:96 and the
/// four octets of its address.
#[must_use]
pub fn direct_mac(addr: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = addr.octets();
    [0x02, 0x96, a, b, c, d]
}

/// `aa:bb:cc:dd:ee:ff`.
#[must_use]
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The config of a lab load balancer: `[node]` on `eth0` named `name`, pins
/// under `bpffs`, its control socket `<name>.sock` beside `bpffs`, and one
/// TCP service on VIP:5672 over `backends` (address, weight), as text: for
/// xtask (the demo and `lab up`), which links this library without
/// vip-agent. The tests build the same config through vip-agent's types
/// (`kit::config::node`).
#[must_use]
pub fn agent_config(name: &str, bpffs: &Path, backends: &[(&str, u32)]) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|(a, w)| format!("  {{ address = \"{a}\", weight = {w} }},"))
        .collect();
    format!(
        "[node]\ninterface = \"eth0\"\nname = \"{name}\"\nbpffs = \"{}\"\ncontrol_socket = \"{}\"\n\n[[service]]\nvip = \"{VIP}\"\nport = 5672\nprotocol = \"tcp\"\nbackends = [\n{}\n]\n",
        bpffs.display(),
        control_socket(name, bpffs).display(),
        list.join("\n")
    )
}

/// Where [`agent_config`] puts the control socket.
#[must_use]
pub fn control_socket(name: &str, bpffs: &Path) -> PathBuf {
    bpffs
        .parent()
        .unwrap_or(Path::new("/run"))
        .join(format!("{name}.sock"))
}

/// How to build a [`Lab`].
#[derive(Clone, Debug)]
pub struct LabOptions {
    /// Namespace names are `<prefix>-sw`, `<prefix>-client`, ...; lowercase
    /// letters and digits, at most 16.
    pub prefix: String,
    /// Backend nodes b1..bN (1 to [`MAX_BACKENDS`]; default 3).
    pub backends: usize,
    /// TCP ports each backend's `vip-lab-backend` listens on (default 5672).
    pub backend_tcp_ports: Vec<u16>,
    /// UDP ports each backend answers on (default none).
    pub backend_udp_ports: Vec<u16>,
    /// Start `vip-lab-backend` in every backend node (default true).
    pub start_backends: bool,
    /// The `vip-lab-backend` binary (default: next to the running executable).
    pub backend_bin: PathBuf,
    /// Where backend output goes: `<dir>/<node>.log`. `None` (the default):
    /// stdout is discarded and stderr inherited.
    pub log_dir: Option<PathBuf>,
}

impl LabOptions {
    /// Defaults with a prefix unique to this process and call, made of `tag`
    /// (its first 4 letters or digits), the PID, a counter and a few bits of
    /// the clock, e.g. `vtfwd0012ab00c`.
    #[must_use]
    pub fn unique(tag: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xff;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let noise = (nanos ^ (nanos >> 10) ^ (nanos >> 20)) & 0xf;
        let tag: String = tag
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(4)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let prefix = format!("vt{tag}{:06x}{n:02x}{noise:x}", std::process::id());
        Self::with_prefix(&prefix)
    }

    /// Defaults for `cargo xtask lab`'s persistent lab, prefix `vip`.
    #[must_use]
    pub fn persistent() -> Self {
        Self::with_prefix(PERSISTENT_PREFIX)
    }

    /// Defaults with the given prefix.
    #[must_use]
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            backends: 3,
            backend_tcp_ports: vec![5672],
            backend_udp_ports: Vec::new(),
            start_backends: true,
            backend_bin: default_backend_bin(),
            log_dir: None,
        }
    }
}

impl Default for LabOptions {
    fn default() -> Self {
        Self::unique("lab")
    }
}

/// `vip-lab-backend` next to the running executable, or next to its parent
/// directory (a test binary runs from `target/<profile>/deps`).
#[must_use]
pub fn default_backend_bin() -> PathBuf {
    const NAME: &str = "vip-lab-backend";
    let Ok(exe) = std::env::current_exe() else {
        return PathBuf::from(NAME);
    };
    let Some(dir) = exe.parent() else {
        return PathBuf::from(NAME);
    };
    let here = dir.join(NAME);
    if !here.exists()
        && dir.file_name().is_some_and(|n| n == "deps")
        && let Some(up) = dir.parent()
    {
        return up.join(NAME);
    }
    here
}

/// A process the lab started and stops on drop.
struct Managed {
    node: String,
    child: Child,
    identity: Option<ProcIdentity>,
}

/// The running lab. Dropping it stops every process it started (SIGTERM,
/// SIGKILL after 2 s, by PID) and deletes its namespaces.
pub struct Lab {
    prefix: String,
    backends: usize,
    /// Node name and its namespace; the switch first.
    namespaces: Vec<(String, NetNs)>,
    children: Mutex<Vec<Managed>>,
    /// Node, interface and program id of each pass-only XDP attachment.
    xdp: Vec<(String, String, u32)>,
    setup_time: Duration,
    options: LabOptions,
}

impl Lab {
    /// The service address, [`VIP`].
    pub const VIP: Ipv4Addr = VIP;

    /// Builds the lab and, if asked, starts the backends and waits until each
    /// listens (at most 5 s). Fails if namespaces with this prefix exist
    /// already, saying how to remove them; on any failure, whatever was
    /// built is removed again.
    pub fn up(opts: LabOptions) -> Result<Self> {
        check_prefix(&opts.prefix)?;
        if opts.backends == 0 || opts.backends > MAX_BACKENDS {
            bail!(
                "a lab has 1 to {MAX_BACKENDS} backends, not {}",
                opts.backends
            );
        }
        if opts.start_backends && !opts.backend_bin.is_file() {
            bail!(
                "the backend binary {} does not exist: build it first (`cargo build -p vip-tests --bins`)",
                opts.backend_bin.display()
            );
        }
        check_leftovers(&opts.prefix)?;
        let started = Instant::now();
        let mut lab = Self {
            prefix: opts.prefix.clone(),
            backends: opts.backends,
            namespaces: Vec::new(),
            children: Mutex::new(Vec::new()),
            xdp: Vec::new(),
            setup_time: Duration::ZERO,
            options: opts,
        };
        let opts = lab.options.clone();
        lab.build(&opts)
            .with_context(|| format!("cannot build lab {}", opts.prefix))?;
        lab.setup_time = started.elapsed();
        Ok(lab)
    }

    fn build(&mut self, opts: &LabOptions) -> Result<()> {
        let nodes = node_names(opts.backends);
        for node in &nodes {
            let ns = NetNs::create(&format!("{}-{node}", self.prefix))?;
            self.namespaces.push((node.clone(), ns));
        }

        // Before any interface exists, so `default` covers them: no IPv6 (no
        // DAD or MLD noise), and DSR ARP behaviour on the backends.
        let ipv6 = Path::new("/proc/sys/net/ipv6").exists();
        self.each_ns(|node, ns| {
            let mut settings = Vec::new();
            if ipv6 {
                settings.push(("net.ipv6.conf.default.disable_ipv6".to_owned(), "1"));
                settings.push(("net.ipv6.conf.all.disable_ipv6".to_owned(), "1"));
            }
            if is_backend(node) {
                for scope in ["default", "all"] {
                    settings.extend(
                        DSR_ARP_SYSCTLS
                            .iter()
                            .map(|(k, v)| (k.replace("IF", scope), *v)),
                    );
                }
            }
            ns.sysctls(&settings)
        })?;

        let sw = self.ns("sw").name().to_owned();
        let mut batch = vec![
            "link add br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0".to_owned(),
            "link set br0 up".into(),
        ];
        for node in nodes.iter().filter(|n| *n != "sw") {
            let mac = format_mac(node_mac(node).expect("lab node"));
            let peer_ns = self.ns(node).name();
            batch.push(format!(
                "link add sw-{node} type veth peer name eth0 address {mac} netns {peer_ns}"
            ));
            batch.push(format!("link set sw-{node} master br0 up"));
        }
        batch.push("link set lo up".into());
        self.ns("sw")
            .ip_batch(&batch)
            .with_context(|| format!("cannot build the switch in {sw}"))?;

        self.each_ns(|node, ns| {
            if node == "sw" {
                return Ok(());
            }
            let addr = node_addr(node).expect("lab node");
            let mut batch = vec![
                "link set lo up".to_owned(),
                format!("addr add {addr}/24 dev eth0"),
                "link set eth0 up".into(),
            ];
            if is_backend(node) {
                batch.push(format!("addr add {VIP}/32 dev lo"));
            }
            ns.ip_batch(&batch).map(drop)
        })?;

        // XDP forwards frames as raw bytes, so they must leave with full
        // checksums: no tx checksum offload on any veth end.
        self.each_ns(|node, ns| {
            let ifaces: Vec<String> = if node == "sw" {
                nodes
                    .iter()
                    .filter(|n| *n != "sw")
                    .map(|n| format!("sw-{n}"))
                    .collect()
            } else {
                vec!["eth0".to_owned()]
            };
            if is_backend(node) {
                let eth0: Vec<(String, &str)> = DSR_ARP_SYSCTLS
                    .iter()
                    .map(|(k, v)| (k.replace("IF", "eth0"), *v))
                    .collect();
                ns.sysctls(&eth0)?;
            }
            ns.try_run_in(|| {
                for ifname in &ifaces {
                    sys::set_tx_checksum(ifname, false)
                        .with_context(|| format!("in {}", ns.name()))?;
                }
                Ok::<(), anyhow::Error>(())
            })?
        })?;

        // Frames that lb1/lb2 send back with XDP_TX land on sw-lb1/sw-lb2,
        // and a veth drops them unless it has NAPI, i.e. an XDP program.
        for lb in ["lb1", "lb2"] {
            let ifname = format!("sw-{lb}");
            let id = Self::attach_pass_xdp(self.ns("sw"), &ifname)?;
            self.xdp.push(("sw".to_owned(), ifname, id));
        }

        if opts.start_backends {
            self.start_backends(opts)?;
        }
        Ok(())
    }

    /// Runs `f` for every node, each on its own thread, and returns the first
    /// error (naming the node).
    fn each_ns(&self, f: impl Fn(&str, &NetNs) -> Result<()> + Sync) -> Result<()> {
        let f = &f;
        std::thread::scope(|scope| {
            let threads: Vec<_> = self
                .namespaces
                .iter()
                .map(|(node, ns)| (node, scope.spawn(move || f(node, ns))))
                .collect();
            for (node, thread) in threads {
                match thread.join() {
                    Ok(r) => r.with_context(|| format!("setting up node {node}"))?,
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            Ok(())
        })
    }

    fn start_backends(&self, opts: &LabOptions) -> Result<()> {
        if let Some(dir) = &opts.log_dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut pids = Vec::new();
        for i in 1..=opts.backends {
            let node = format!("b{i}");
            let mut cmd = crate::programs::command(&opts.backend_bin)?;
            cmd.arg("--name").arg(&node).stdin(Stdio::null());
            for port in &opts.backend_tcp_ports {
                cmd.arg("--tcp").arg(format!("0.0.0.0:{port}"));
            }
            for port in &opts.backend_udp_ports {
                cmd.arg("--udp").arg(format!("0.0.0.0:{port}"));
            }
            if let Some(dir) = &opts.log_dir {
                let path = dir.join(format!("{node}.log"));
                let log = std::fs::File::create(&path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                cmd.stdout(
                    log.try_clone()
                        .context("cannot duplicate a file descriptor")?,
                )
                .stderr(log);
            } else {
                cmd.stdout(Stdio::null());
            }
            pids.push((node.clone(), self.spawn(&node, cmd)?));
        }
        let deadline = Instant::now() + BACKEND_READY_LIMIT;
        for (node, pid) in pids {
            self.wait_backend(&node, pid, opts, deadline)?;
        }
        Ok(())
    }

    /// Polls, from inside the backend's namespace, until it accepts TCP on
    /// 127.0.0.1 and answers UDP there on every port.
    fn wait_backend(
        &self,
        node: &str,
        pid: u32,
        opts: &LabOptions,
        deadline: Instant,
    ) -> Result<()> {
        let ns = self.ns(node);
        ns.try_run_in(|| {
            let mut waiting: Vec<(&str, u16)> = opts.backend_tcp_ports.iter().map(|p| ("tcp", *p)).collect();
            waiting.extend(opts.backend_udp_ports.iter().map(|p| ("udp", *p)));
            loop {
                waiting.retain(|(proto, port)| {
                    if *proto == "tcp" { !probe_tcp(*port) } else { !probe_udp(*port, node) }
                });
                let Some((proto, port)) = waiting.first() else { return Ok(()) };
                if let Some(status) = self.exited(pid)? {
                    bail!("backend {node} (pid {pid}) exited with {status} before it listened on {proto} port {port}");
                }
                if Instant::now() >= deadline {
                    bail!(
                        "backend {node} (pid {pid}) does not answer on {proto} 127.0.0.1:{port} after {BACKEND_READY_LIMIT:?}"
                    );
                }
                std::thread::sleep(POLL);
            }
        })?
    }

    /// `Some(status)` if the managed process `pid` has exited.
    fn exited(&self, pid: u32) -> Result<Option<ExitStatus>> {
        let mut children = self.children();
        let Some(m) = children.iter_mut().find(|m| m.child.id() == pid) else {
            bail!("pid {pid} is not a process of lab {}", self.prefix)
        };
        m.child
            .try_wait()
            .with_context(|| format!("cannot check on pid {pid}"))
    }

    fn children(&self) -> MutexGuard<'_, Vec<Managed>> {
        self.children
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The namespace prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The options the lab was built with.
    #[must_use]
    pub fn options(&self) -> &LabOptions {
        &self.options
    }

    /// How long [`Lab::up`] took.
    #[must_use]
    pub fn setup_time(&self) -> Duration {
        self.setup_time
    }

    /// The nodes: `sw`, `client`, `lb1`, `lb2`, `b1`...
    #[must_use]
    pub fn nodes(&self) -> Vec<&str> {
        self.namespaces.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The backend nodes, `b1`...
    #[must_use]
    pub fn backend_nodes(&self) -> Vec<String> {
        (1..=self.backends).map(|i| format!("b{i}")).collect()
    }

    /// Adds the node `far` ([`FAR`], 10.97.0.2/24) one routed hop behind the
    /// client: the client namespace becomes its router (10.97.0.1, IPv4
    /// forwarding on), every backend routes 10.97.0.0/24 through the client
    /// (10.99.0.10), and the router's route towards `far` has MTU `hop_mtu`
    /// (locked) while every interface keeps 1500. Both ends then agree on a
    /// 1460-byte MSS and a backend's full-sized replies with DF set meet a
    /// hop that answers with ICMP fragmentation needed, sent to the VIP they
    /// came from: the path-MTU case of direct server return. Removed with
    /// the lab.
    pub fn add_far_client(&mut self, hop_mtu: u32) -> Result<()> {
        let ns = NetNs::create(&format!("{}-far", self.prefix))?;
        let far = ns.name().to_owned();
        self.namespaces.push(("far".to_owned(), ns));
        if Path::new("/proc/sys/net/ipv6").exists() {
            self.ns("far").sysctls(&[
                ("net.ipv6.conf.default.disable_ipv6", "1"),
                ("net.ipv6.conf.all.disable_ipv6", "1"),
            ])?;
        }
        let router = self.ns("client");
        router.ip_batch(&[
            format!("link add rt0 type veth peer name eth0 netns {far}"),
            format!("addr add {FAR_ROUTER}/24 dev rt0"),
            "link set rt0 up".to_owned(),
            format!("route replace {FAR_SUBNET}/24 dev rt0 src {FAR_ROUTER} mtu lock {hop_mtu}"),
        ])?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        self.ns("far").ip_batch(&[
            "link set lo up".to_owned(),
            format!("addr add {FAR}/24 dev eth0"),
            "link set eth0 up".to_owned(),
            format!("route add default via {FAR_ROUTER}"),
        ])?;
        // The far client's segments cross XDP after one routed hop: full
        // checksums on both ends of the new link.
        for (node, ifname) in [("client", "rt0"), ("far", "eth0")] {
            let ns = self.ns(node);
            ns.try_run_in(|| sys::set_tx_checksum(ifname, false))?
                .with_context(|| format!("in {}", ns.name()))?;
        }
        let via = node_addr("client").expect("lab node");
        for b in self.backend_nodes() {
            self.ns(&b).ip(&[
                "route",
                "add",
                &format!("{FAR_SUBNET}/24"),
                "via",
                &via.to_string(),
            ])?;
        }
        Ok(())
    }

    /// Adds node `peer`: a namespace joined to `node` by a veth of its own,
    /// `ifname` in `node` (`addr`/24) and `eth0` in `peer` (`peer_addr`/24),
    /// outside the bridge; each end's MAC is [`direct_mac`] of its address.
    /// The bridge moves 802.1Q tags into packet
    /// metadata, where XDP does not see them; on this link a tag sent in
    /// the frame reaches `node`'s XDP as sent. `peer`'s end has a pass-only
    /// XDP program, so that `XDP_TX` from `node` reaches it. Removed with
    /// the lab.
    pub fn add_direct_peer(
        &mut self,
        node: &str,
        ifname: &str,
        addr: Ipv4Addr,
        peer_addr: Ipv4Addr,
    ) -> Result<()> {
        let ns = NetNs::create(&format!("{}-peer", self.prefix))?;
        let peer = ns.name().to_owned();
        self.namespaces.push(("peer".to_owned(), ns));
        if Path::new("/proc/sys/net/ipv6").exists() {
            self.ns("peer").sysctls(&[
                ("net.ipv6.conf.default.disable_ipv6", "1"),
                ("net.ipv6.conf.all.disable_ipv6", "1"),
            ])?;
        }
        let (mac, peer_mac) = (
            format_mac(direct_mac(addr)),
            format_mac(direct_mac(peer_addr)),
        );
        self.try_ns(node)?.ip_batch(&[
            format!(
                "link add {ifname} address {mac} type veth peer name eth0 address {peer_mac} netns {peer}"
            ),
            format!("addr add {addr}/24 dev {ifname}"),
            format!("link set {ifname} up"),
        ])?;
        self.ns("peer").ip_batch(&[
            "link set lo up".to_owned(),
            format!("addr add {peer_addr}/24 dev eth0"),
            "link set eth0 up".to_owned(),
        ])?;
        Self::attach_pass_xdp(self.ns("peer"), "eth0")?;
        Ok(())
    }

    /// The namespace of `node`; panics on a name that is not a node here.
    #[must_use]
    pub fn ns(&self, node: &str) -> &NetNs {
        self.try_ns(node).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The namespace of `node`, or an error naming the nodes there are.
    pub fn try_ns(&self, node: &str) -> Result<&NetNs> {
        match self.namespaces.iter().find(|(n, _)| n == node) {
            Some((_, ns)) => Ok(ns),
            None => bail!(
                "lab {} has no node {node:?} (nodes: {})",
                self.prefix,
                self.nodes().join(", ")
            ),
        }
    }

    /// The address of `node`'s `eth0`; panics for `sw` or an unknown node.
    #[must_use]
    pub fn addr(&self, node: &str) -> Ipv4Addr {
        self.try_ns(node)
            .and_then(|_| node_addr(node).context("the switch has no address"))
            .unwrap_or_else(|e| panic!("no address for {node}: {e}"))
    }

    /// The MAC of `node`'s `eth0`; panics for `sw` or an unknown node.
    #[must_use]
    pub fn mac(&self, node: &str) -> [u8; 6] {
        let a = self.addr(node);
        [0x02, 0x99, 0, 0, 0, a.octets()[3]]
    }

    /// Starts `cmd` in `node` (network namespace only) and keeps it: the lab
    /// stops it on drop. Returns its PID (see [`Lab::stop`]).
    pub fn spawn(&self, node: &str, cmd: Command) -> Result<u32> {
        let child = self.try_ns(node)?.spawn(cmd)?;
        let pid = child.id();
        let identity = ProcIdentity::read(pid);
        self.children().push(Managed {
            node: node.to_owned(),
            child,
            identity,
        });
        Ok(pid)
    }

    /// Stops the managed process `pid` now: SIGTERM, SIGKILL after 2 s.
    pub fn stop(&self, pid: u32) -> Result<ExitStatus> {
        let managed = {
            let mut children = self.children();
            let Some(i) = children.iter().position(|m| m.child.id() == pid) else {
                bail!("pid {pid} is not a process of lab {}", self.prefix)
            };
            children.remove(i)
        };
        let mut stopped = terminate(vec![managed]);
        stopped
            .pop()
            .expect("one")
            .1
            .with_context(|| format!("cannot stop pid {pid}"))
    }

    /// The managed processes: node and PID.
    #[must_use]
    pub fn processes(&self) -> Vec<(String, u32)> {
        self.children()
            .iter()
            .map(|m| (m.node.clone(), m.child.id()))
            .collect()
    }

    /// Starts `cmd` in `node`; the caller owns the child and must stop it.
    pub fn spawn_unmanaged(&self, node: &str, cmd: Command) -> Result<Child> {
        self.try_ns(node)?.spawn(cmd)
    }

    /// Runs `f` on a thread inside `node`'s namespace (see [`NetNs::run_in`]).
    pub fn run_in<T: Send>(&self, node: &str, f: impl FnOnce() -> T + Send) -> T {
        self.ns(node).run_in(f)
    }

    /// Starts a thread inside `node`'s namespace; panics if it cannot.
    pub fn spawn_thread_in<T: Send + 'static>(
        &self,
        node: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        self.ns(node)
            .spawn_thread_in(f)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Attaches a pass-only XDP program in native mode to `ifname` in `ns`:
    /// loaded by bpf(2), attached by rtnetlink, so it stays until the
    /// interface goes. Checks that `ip link` shows it; returns its id.
    pub fn attach_pass_xdp(ns: &NetNs, ifname: &str) -> Result<u32> {
        let id = ns
            .try_run_in(|| -> Result<u32> {
                let prog = sys::load_pass_xdp()?;
                let index = sys::ifindex(ifname)?;
                sys::attach_xdp(index, prog.as_fd(), sys::XDP_FLAGS_DRV_MODE)
                    .with_context(|| format!("cannot attach XDP in native mode to {ifname}"))?;
                sys::prog_id(prog.as_fd())
            })?
            .with_context(|| format!("pass-only XDP on {ifname} in {}", ns.name()))?;
        let shown = ns.ip(&["-d", "link", "show", "dev", ifname])?;
        if !shown.contains(&format!("prog/xdp id {id} ")) {
            bail!(
                "XDP program {id} was attached to {ifname} in {} but `ip link` does not show it:\n{shown}",
                ns.name()
            );
        }
        Ok(id)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let children = std::mem::take(&mut *self.children());
        for (pid, result) in terminate(children) {
            if let Err(e) = result {
                eprintln!("warning: lab {}: cannot stop pid {pid}: {e}", self.prefix);
            }
        }
        // Nodes first, the switch (and with it the veths) last.
        while let Some((_, ns)) = self.namespaces.pop() {
            drop(ns);
        }
    }
}

/// `net.ipv4.conf.IF.*` settings that keep backends from answering ARP for
/// the VIP on `lo` or using it as an ARP source.
const DSR_ARP_SYSCTLS: [(&str, &str); 2] = [
    ("net.ipv4.conf.IF.arp_ignore", "1"),
    ("net.ipv4.conf.IF.arp_announce", "2"),
];

fn is_backend(node: &str) -> bool {
    node.starts_with('b') && node_addr(node).is_some()
}

fn node_names(backends: usize) -> Vec<String> {
    let mut nodes: Vec<String> = ["sw", "client", "lb1", "lb2"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    nodes.extend((1..=backends).map(|i| format!("b{i}")));
    nodes
}

fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty()
        || prefix.len() > 16
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        bail!("lab prefix {prefix:?} must be 1 to 16 lowercase letters or digits");
    }
    Ok(())
}

/// Whether `name` is a lab namespace of `prefix`.
fn is_lab_ns(prefix: &str, name: &str) -> bool {
    let Some(node) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    node == "sw" || node == "far" || node_addr(node).is_some()
}

fn lab_namespaces(prefix: &str) -> Result<Vec<String>> {
    Ok(NetNs::list()?
        .into_iter()
        .filter(|n| is_lab_ns(prefix, n))
        .collect())
}

fn check_leftovers(prefix: &str) -> Result<()> {
    let found = lab_namespaces(prefix)?;
    if found.is_empty() {
        return Ok(());
    }
    let how = if prefix == PERSISTENT_PREFIX {
        "`cargo xtask lab down`".to_owned()
    } else {
        format!(
            "`for ns in {}; do ip netns pids $ns | xargs -r kill; ip netns del $ns; done` \
             (or vip_tests::lab::Lab::down_by_prefix({prefix:?}))",
            found.join(" ")
        )
    };
    bail!(
        "namespaces of an earlier lab {prefix} exist ({}): remove them with {how}",
        found.join(", ")
    );
}

fn probe_tcp(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

fn probe_udp(port: u16, name: &str) -> bool {
    let answer = || -> io::Result<bool> {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        sock.connect((Ipv4Addr::LOCALHOST, port))?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        sock.send(b"ready?")?;
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf)?;
        Ok(buf[..n].starts_with(format!("{name} ").as_bytes()))
    };
    answer().unwrap_or(false)
}

/// Stops children: SIGTERM to each, SIGKILL to those still running after
/// 2 s, and reaps them all. Returns each PID with how it ended.
fn terminate(mut children: Vec<Managed>) -> Vec<(u32, io::Result<ExitStatus>)> {
    for m in &mut children {
        if let Ok(None) = m.child.try_wait() {
            // The child is not reaped yet, so its PID is still ours.
            if let Ok(pid) = i32::try_from(m.child.id()) {
                // SAFETY: kill(2) on our own unreaped child.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
    }
    let deadline = Instant::now() + TERM_GRACE;
    let mut done: Vec<(u32, io::Result<ExitStatus>)> = Vec::new();
    while !children.is_empty() {
        let mut i = 0;
        while i < children.len() {
            match children[i].child.try_wait() {
                Ok(Some(st)) => done.push((children[i].child.id(), Ok(st))),
                Ok(None) => {
                    i += 1;
                    continue;
                }
                Err(e) => done.push((children[i].child.id(), Err(e))),
            }
            children.swap_remove(i);
        }
        if Instant::now() >= deadline {
            for mut m in children.drain(..) {
                let pid = m.child.id();
                let _ = m.child.kill();
                done.push((pid, m.child.wait()));
            }
            break;
        }
        if !children.is_empty() {
            std::thread::sleep(POLL);
        }
    }
    done
}
