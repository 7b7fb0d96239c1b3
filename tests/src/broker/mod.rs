//! Real `RabbitMQ` brokers (Debian's `rabbitmq-server`, 3.10 on Erlang 25) in
//! the lab's backend namespaces, for tests that need a real AMQP peer behind
//! the VIP.
//!
//! Each [`Broker`] runs `/usr/lib/rabbitmq/bin/rabbitmq-server` (not
//! `/usr/sbin/rabbitmq-server`, which does `su rabbitmq` and drops the
//! environment) in one backend node, with everything in its own directory
//! under the temp dir: `HOME` (and the Erlang cookie in it), node name
//! `vip_<node>@localhost` (the UTS hostname is shared by all namespaces;
//! `localhost` resolves without DNS), mnesia, logs, PID file, `rabbitmq.conf`,
//! `advanced.config`, `enabled_plugins` and an empty `rabbitmq-env.conf`
//! (without it `/etc/rabbitmq/rabbitmq-env.conf` is sourced). It listens on
//! 0.0.0.0:5672 in that namespace, and with [`BrokerOptions::management`] on
//! 0.0.0.0:15672 (HTTP API, user guest/guest, which may log in from other
//! hosts: `loopback_users.guest = false`). `rabbitmqctl` runs in the same
//! namespace with the same `HOME`. See `../shared/design/PEERS.md`,
//! "`RabbitMQ` in a netns".
//!
//! Cleanup: Erlang starts an `epmd` per network namespace that outlives the
//! node, and [`Lab`]'s drop stops only the processes it spawned itself (it
//! does not sweep its namespaces; a process left in a deleted namespace keeps
//! running there). So [`Broker`]'s drop stops the broker and then kills, by
//! PID, every process that is still in the broker's namespace and carries its
//! marker (the environment variable `VIP_BROKER_DIR=<its dir>`, inherited by
//! `beam.smp`, `erl_child_setup`, `inet_gethost` and the daemonised `epmd`),
//! and removes the directory. It finds them through a file descriptor of the
//! namespace opened at start, so this works even when the lab (and the
//! namespace's name) went first. Nothing is killed by name, and nothing
//! outside the lab's namespace.

use std::{
    fmt::Write as _,
    fs::File,
    io::{self, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};

use crate::{lab::Lab, netns::NetNs};

mod cluster;

pub use cluster::{Cluster, start_cluster};

/// The broker's start script, which runs Erlang as the calling user.
pub const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
/// `rabbitmqctl`, next to it.
pub const RABBITMQCTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";
/// `rabbitmq-upgrade` (maintenance mode: `drain`, `revive`).
pub const RABBITMQ_UPGRADE: &str = "/usr/lib/rabbitmq/bin/rabbitmq-upgrade";
/// The AMQP port, on 0.0.0.0 in the broker's namespace.
pub const AMQP_PORT: u16 = 5672;
/// The management plugin's HTTP port, on 0.0.0.0 in the broker's namespace.
pub const MANAGEMENT_PORT: u16 = 15672;
/// What an AMQP 0-9-1 client sends first.
pub const AMQP_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
/// `guest:guest` in base64, for HTTP basic auth.
const GUEST_BASIC_AUTH: &str = "Z3Vlc3Q6Z3Vlc3Q=";
/// The environment variable that marks every process of a broker.
const MARKER: &str = "VIP_BROKER_DIR";

/// How long a broker gets to answer AMQP after its start.
const READY_LIMIT: Duration = Duration::from_mins(1);
/// How long it gets to exit after SIGTERM (3.10 with management takes ~8 s:
/// the plugin waits 5 s for its statistics collectors).
const STOP_LIMIT: Duration = Duration::from_mins(1);
/// How long `rabbitmqctl` and the alarm checks may take.
const CTL_LIMIT: Duration = Duration::from_mins(1);
const ALARM_LIMIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
/// The memory high watermark: `RabbitMQ`'s default, and one far below what an
/// idle node uses (about 2.5 kB of 24 GB), which raises the memory alarm.
const WATERMARK_NORMAL: &str = "0.4";
const WATERMARK_ALARM: &str = "0.0000001";

/// How to start a [`Broker`].
#[derive(Clone, Debug, Default)]
pub struct BrokerOptions {
    /// Enable the `rabbitmq_management` plugin: HTTP API on port 15672.
    pub management: bool,
}

/// A reply to [`Broker::http_get`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpReply {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The body (de-chunked), lossily as UTF-8.
    pub body: String,
}

/// A process found in a namespace (see [`live_processes_in`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsProcess {
    pub pid: i32,
    /// `/proc/PID/comm`, e.g. `beam.smp` or `epmd`.
    pub comm: String,
    /// Field 22 of `/proc/PID/stat`: tells a PID's process from a later one.
    start_time: u64,
}

impl NsProcess {
    /// Whether it still runs: same PID and start time, and no zombie.
    #[must_use]
    pub fn alive(&self) -> bool {
        is_alive(self)
    }
}

/// A `RabbitMQ` node in a lab backend namespace; stopped, its processes
/// killed and its directory removed on drop (see the module doc).
pub struct Broker {
    node: String,
    addr: Ipv4Addr,
    ns: NetNs,
    /// Keeps the namespace's identity valid after the lab deletes its name.
    _ns_fd: File,
    ns_id: (u64, u64),
    dir: PathBuf,
    nodename: String,
    management: bool,
    /// Set for a member of a [`Cluster`].
    membership: Option<Membership>,
    child: Option<Child>,
    started_in: Duration,
}

/// What a cluster member shares with the others.
#[derive(Clone, Debug)]
struct Membership {
    /// The one Erlang cookie of the cluster.
    cookie: String,
    /// Every member's node name (`rabbit@<address>`), this one included.
    nodes: Vec<String>,
}

/// Starts a broker in the backend node `node` (e.g. `"b1"`) of `lab` and
/// returns once it answers the AMQP protocol header with a method frame on
/// `<node address>:5672`, asked from inside the namespace (at most 60 s).
/// Port 5672 must be free there: build the lab with
/// `start_backends = false` (or other `backend_tcp_ports`).
pub fn start(lab: &Lab, node: &str, opts: &BrokerOptions) -> Result<Broker> {
    let mut broker = prepare(lab, node, opts, None)?;
    broker.launch()?;
    Ok(broker)
}

/// A broker of `node` with its directory written, not started yet.
fn prepare(
    lab: &Lab,
    node: &str,
    opts: &BrokerOptions,
    membership: Option<Membership>,
) -> Result<Broker> {
    for program in [SERVER, RABBITMQCTL] {
        crate::programs::check(program.as_ref())?;
    }
    if !node.starts_with('b') {
        bail!("brokers run in backend nodes (b1, b2...), not in {node:?}");
    }
    let ns_name = lab.try_ns(node)?.name().to_owned();
    let addr = lab.addr(node);
    let ns = NetNs::open(&ns_name)?;
    let ns_fd =
        File::open(ns.path()).with_context(|| format!("cannot open {}", ns.path().display()))?;
    let meta = ns_fd
        .metadata()
        .with_context(|| format!("cannot stat {}", ns.path().display()))?;
    let amqp = SocketAddr::from((addr, AMQP_PORT));
    if ns
        .try_run_in(|| TcpStream::connect_timeout(&amqp, Duration::from_millis(500)))?
        .is_ok()
    {
        bail!(
            "{amqp} already accepts connections in {ns_name}: is the lab's vip-lab-backend on it? \
             (build the lab with start_backends = false or other backend_tcp_ports)"
        );
    }
    let dir = std::env::temp_dir().join(format!("vip-broker-{ns_name}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove the old {}", dir.display()))?;
    }
    // A cluster member is `rabbit@<address>` (long names: no name
    // resolution, and the namespaces' shared hostname does not matter).
    let nodename = if membership.is_some() {
        format!("rabbit@{addr}")
    } else {
        format!("vip_{node}@localhost")
    };
    let broker = Broker {
        node: node.to_owned(),
        addr,
        ns,
        _ns_fd: ns_fd,
        ns_id: (meta.dev(), meta.ino()),
        dir,
        nodename,
        management: opts.management,
        membership,
        child: None,
        started_in: Duration::ZERO,
    };
    // From here on, a failure drops `broker`, which cleans up.
    broker.write_files()?;
    Ok(broker)
}

impl Broker {
    /// The lab node it runs in, e.g. `b1`.
    #[must_use]
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The node's address (the broker listens on 0.0.0.0 there).
    #[must_use]
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// `<node address>:5672`.
    #[must_use]
    pub fn amqp_addr(&self) -> SocketAddr {
        SocketAddr::from((self.addr, AMQP_PORT))
    }

    /// The Erlang node name: `vip_<node>@localhost`, or `rabbit@<address>`
    /// in a [`Cluster`].
    #[must_use]
    pub fn nodename(&self) -> &str {
        &self.nodename
    }

    /// Its directory (HOME, mnesia, logs, config).
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How long the latest start ([`start`] or [`Broker::start_again`]) took,
    /// from spawning the server to its first AMQP answer.
    #[must_use]
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// Whether the server script still runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// How many established TCP connections to port 5672 in the broker's
    /// namespace come from `client` (read from `/proc/thread-self/net/tcp`
    /// there): which broker a client's connections landed on.
    pub fn connections_from(&self, client: Ipv4Addr) -> Result<usize> {
        let table = self
            .ns
            .try_run_in(|| std::fs::read_to_string("/proc/thread-self/net/tcp"))?
            .context("cannot read /proc/thread-self/net/tcp")?;
        Ok(count_established(&table, AMQP_PORT, client))
    }

    /// The processes of this broker still alive (not zombies) in its
    /// namespace: the start script, `beam.smp`, `erl_child_setup`, `epmd`...
    #[must_use]
    pub fn processes(&self) -> Vec<NsProcess> {
        let marker = self.marker();
        live_processes_in(self.ns_id)
            .into_iter()
            .filter(|p| has_env(p.pid, marker.as_bytes()))
            .collect()
    }

    /// Stops the broker (SIGTERM to the start script, which stops the node
    /// cleanly) and waits until it and `beam.smp` are gone; `epmd` stays for
    /// [`Broker::start_again`]. Afterwards its port refuses connections.
    /// Returns how long stopping took. Does nothing if it is not running.
    pub fn stop(&mut self) -> Result<Duration> {
        let started = Instant::now();
        let Some(mut child) = self.child.take() else {
            return Ok(Duration::ZERO);
        };
        if let Ok(None) = child.try_wait()
            && let Ok(pid) = i32::try_from(child.id())
        {
            // SAFETY: kill(2) on our own child, not reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = started + STOP_LIMIT;
        let status = wait_child(&mut child, deadline);
        // The script waits for beam.smp; check anyway, and leave no node.
        while self.processes().iter().any(|p| p.comm != "epmd") && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        let left: Vec<NsProcess> = self
            .processes()
            .into_iter()
            .filter(|p| p.comm != "epmd")
            .collect();
        match status {
            Some(_) if left.is_empty() => Ok(started.elapsed()),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                kill_all(&left);
                bail!(
                    "broker {} in {} did not stop within {STOP_LIMIT:?} of SIGTERM (killed: {left:?})\n{}",
                    self.nodename,
                    self.ns.name(),
                    self.log_tail(30)
                )
            }
        }
    }

    /// Starts the stopped broker again with the same directories (a warm
    /// restart: its mnesia, definitions and cookie are kept) and waits as
    /// [`start`] does.
    pub fn start_again(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("broker {} is still running", self.nodename);
        }
        self.child = None;
        self.launch()
    }

    /// Raises (`on`) or clears `RabbitMQ`'s memory alarm on the running broker,
    /// the real way: `rabbitmqctl set_vm_memory_high_watermark 0.0000001`
    /// puts the limit at about 2.5 kB, below what any node uses, and the
    /// memory monitor raises the alarm at once (publishers are blocked);
    /// `... 0.4` (the default, and this broker's config) clears it. Then
    /// waits (at most 30 s) until the alarm shows: with management, until
    /// `GET /api/health/checks/alarms` answers 503 (on) or 200 (off), see
    /// [`Broker::alarms_health`]; without, until `rabbit_alarm:get_alarms()`
    /// lists the memory alarm or not.
    pub fn set_memory_alarm(&self, on: bool) -> Result<()> {
        let watermark = if on {
            WATERMARK_ALARM
        } else {
            WATERMARK_NORMAL
        };
        self.rabbitmqctl(&["set_vm_memory_high_watermark", watermark])?;
        let deadline = Instant::now() + ALARM_LIMIT;
        let want = if on { 503 } else { 200 };
        loop {
            let (done, seen) = if self.management {
                let reply = self.alarms_health()?;
                (
                    reply.status == want,
                    format!("HTTP {}: {}", reply.status, reply.body),
                )
            } else {
                let alarms = self.rabbitmqctl(&["eval", "rabbit_alarm:get_alarms()."])?;
                (alarms.contains("resource_limit,memory") == on, alarms)
            };
            if done {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the memory alarm of {} is not {} after {ALARM_LIMIT:?}: {seen}",
                    self.nodename,
                    if on { "on" } else { "off" }
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// `GET /api/health/checks/alarms` (management only), as guest.
    /// `RabbitMQ` 3.10.8 answers, without an alarm, `200` with
    /// `{"status":"ok"}`; with the memory alarm on, `503 Service
    /// Unavailable` with `{"alarms":[{"node":"vip_b2@localhost",
    /// "resource":"memory"}],"reason":"There are alarms in effect in the
    /// cluster","status":"failed"}`.
    pub fn alarms_health(&self) -> Result<HttpReply> {
        self.http_get("/api/health/checks/alarms")
    }

    /// `GET path` from the management API on `<node address>:15672`, as
    /// guest, from inside the namespace.
    pub fn http_get(&self, path: &str) -> Result<HttpReply> {
        if !self.management {
            bail!(
                "broker {} runs without the management plugin",
                self.nodename
            );
        }
        let addr = SocketAddr::from((self.addr, MANAGEMENT_PORT));
        self.ns
            .try_run_in(|| http_get(addr, path))?
            .with_context(|| format!("GET http://{addr}{path} in {}", self.ns.name()))
    }

    /// Runs `rabbitmqctl ARGS...` against this broker (in its namespace,
    /// with its `HOME` and node name); returns stdout, or fails with the
    /// output after a non-zero exit or 60 s.
    pub fn rabbitmqctl(&self, args: &[&str]) -> Result<String> {
        self.cli(RABBITMQCTL, args)
    }

    /// Runs `rabbitmq-upgrade ARGS...` (`drain`, `revive`) as
    /// [`Broker::rabbitmqctl`] runs `rabbitmqctl`.
    pub fn rabbitmq_upgrade(&self, args: &[&str]) -> Result<String> {
        self.cli(RABBITMQ_UPGRADE, args)
    }

    /// SIGKILL to the Erlang VM (`beam.smp`), as a crash or the OOM killer
    /// would; the start script then exits too. Waits (at most 10 s) until the
    /// VM is gone. `epmd` stays, as after a real crash.
    pub fn kill9(&mut self) -> Result<()> {
        self.signal_vm(libc::SIGKILL)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.vm().is_some() {
            if Instant::now() >= deadline {
                bail!("beam.smp of {} outlived SIGKILL by 10 s", self.nodename);
            }
            std::thread::sleep(POLL / 10);
        }
        if let Some(child) = self.child.as_mut() {
            let _ = wait_child(child, deadline);
        }
        Ok(())
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) to the Erlang VM: a hung node
    /// whose sockets stay open.
    pub fn freeze(&self, stopped: bool) -> Result<()> {
        self.signal_vm(if stopped {
            libc::SIGSTOP
        } else {
            libc::SIGCONT
        })
    }

    /// The running Erlang VM of this broker.
    fn vm(&self) -> Option<NsProcess> {
        self.processes().into_iter().find(|p| p.comm == "beam.smp")
    }

    fn signal_vm(&self, signal: i32) -> Result<()> {
        let vm = self
            .vm()
            .with_context(|| format!("broker {} has no running beam.smp", self.nodename))?;
        // SAFETY: kill(2) on the PID we found in the broker's namespace with
        // its marker, checked alive (same start time) just before.
        if is_alive(&vm) && unsafe { libc::kill(vm.pid, signal) } == 0 {
            Ok(())
        } else {
            bail!("cannot signal beam.smp ({}) of {}", vm.pid, self.nodename)
        }
    }

    fn cli(&self, program: &str, args: &[&str]) -> Result<String> {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Files, not pipes: nothing to drain while waiting with a deadline.
        let out_path = self.dir.join(format!("ctl-{n}.out"));
        let err_path = self.dir.join(format!("ctl-{n}.err"));
        let mut cmd = crate::programs::command(program)?;
        let name = Path::new(program)
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        cmd.arg("-n").arg(&self.nodename).args(args);
        self.environment(&mut cmd);
        cmd.stdin(Stdio::null())
            .stdout(File::create(&out_path).context("cannot create rabbitmqctl's output")?)
            .stderr(File::create(&err_path).context("cannot create rabbitmqctl's output")?);
        let mut child = self.ns.spawn(cmd)?;
        let status = wait_child(&mut child, Instant::now() + CTL_LIMIT);
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let out = std::fs::read_to_string(&out_path).unwrap_or_default();
        let err = std::fs::read_to_string(&err_path).unwrap_or_default();
        let _ = std::fs::remove_file(&out_path);
        let _ = std::fs::remove_file(&err_path);
        match status {
            Some(st) if st.success() => Ok(out),
            Some(st) => bail!(
                "`{name} {}` in {} failed ({st}): {}{}",
                args.join(" "),
                self.ns.name(),
                out.trim(),
                err.trim()
            ),
            None => bail!(
                "`{name} {}` in {} did not finish within {CTL_LIMIT:?}: {}{}",
                args.join(" "),
                self.ns.name(),
                out.trim(),
                err.trim()
            ),
        }
    }

    /// The last `lines` lines of the broker's log and of its console output.
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        let mut s = String::new();
        for path in [
            self.dir.join("log").join(format!("{}.log", self.nodename)),
            self.dir.join("stdout.log"),
        ] {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            writeln!(s, "--- last {} lines of {}:", tail.len(), path.display())
                .expect("write to String");
            for line in tail {
                writeln!(s, "{line}").expect("write to String");
            }
        }
        s
    }

    fn marker(&self) -> String {
        format!("{MARKER}={}", self.dir.display())
    }

    fn write_files(&self) -> Result<()> {
        for sub in ["home", "mnesia", "log"] {
            let path = self.dir.join(sub);
            std::fs::create_dir_all(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
        }
        let mut conf = format!(
            "listeners.tcp.1 = 0.0.0.0:{AMQP_PORT}\n\
             loopback_users.guest = false\n\
             vm_memory_high_watermark.relative = {WATERMARK_NORMAL}\n\
             log.file.level = info\n"
        );
        if let Some(m) = &self.membership {
            // Classic peer discovery: all members start at once and form the
            // cluster with no ctl step (../shared/design/RABBITMQ.md).
            conf.push_str(
                "cluster_name = vip-lab\n\
                 cluster_formation.peer_discovery_backend = classic_config\n\
                 cluster_formation.discovery_retry_limit = 2\n\
                 cluster_partition_handling = pause_minority\n\
                 net_ticktime = 10\n",
            );
            for (i, node) in m.nodes.iter().enumerate() {
                writeln!(
                    conf,
                    "cluster_formation.classic_config.nodes.{} = {node}",
                    i + 1
                )
                .expect("write to String");
            }
        }
        let plugins = if self.management {
            write!(
                conf,
                "management.tcp.ip = 0.0.0.0\nmanagement.tcp.port = {MANAGEMENT_PORT}\n"
            )
            .expect("write to String");
            "[rabbitmq_management].\n"
        } else {
            "[].\n"
        };
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let cookie = self.membership.as_ref().map_or_else(
            || format!("VIPLAB{nanos:X}{:X}", std::process::id()),
            |m| m.cookie.clone(),
        );
        let files = [
            ("rabbitmq.conf", conf.as_str()),
            ("advanced.config", "[].\n"),
            ("enabled_plugins", plugins),
            ("rabbitmq-env.conf", ""),
            ("home/.erlang.cookie", cookie.as_str()),
        ];
        for (name, text) in files {
            let path = self.dir.join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        // Erlang refuses a cookie that others may read.
        let cookie = self.dir.join("home/.erlang.cookie");
        std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400))
            .with_context(|| format!("cannot chmod {}", cookie.display()))?;
        Ok(())
    }

    /// A clean environment: only what the broker and `rabbitmqctl` need, all
    /// paths inside the broker's directory (the working directory too), and
    /// the marker.
    fn environment(&self, cmd: &mut Command) {
        let d = |p: &str| self.dir.join(p);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .env("LC_ALL", "C.UTF-8")
            .env("HOME", d("home"))
            .env(MARKER, &self.dir)
            .env("RABBITMQ_NODENAME", &self.nodename)
            .env(
                "RABBITMQ_USE_LONGNAME",
                if self.membership.is_some() {
                    "true"
                } else {
                    "false"
                },
            )
            .env("RABBITMQ_MNESIA_BASE", d("mnesia"))
            .env("RABBITMQ_LOG_BASE", d("log"))
            .env("RABBITMQ_PID_FILE", d("rabbitmq.pid"))
            .env("RABBITMQ_CONFIG_FILE", d("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", d("advanced.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins"))
            .env("RABBITMQ_CONF_ENV_FILE", d("rabbitmq-env.conf"))
            // Erlang writes a crash dump to the working directory otherwise.
            .env("ERL_CRASH_DUMP", d("log/erl_crash.dump"))
            .current_dir(&self.dir);
    }

    /// Spawns the server and waits until it answers AMQP.
    fn launch(&mut self) -> Result<()> {
        let console = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stdout.log"))
            .context("cannot open the broker's stdout.log")?;
        let mut cmd = crate::programs::command(SERVER)?;
        self.environment(&mut cmd);
        cmd.stdin(Stdio::null())
            .stdout(
                console
                    .try_clone()
                    .context("cannot duplicate a file descriptor")?,
            )
            .stderr(console);
        let started = Instant::now();
        self.child = Some(self.ns.spawn(cmd)?);
        let amqp = self.amqp_addr();
        let deadline = started + READY_LIMIT;
        let child = self.child.as_mut().expect("just set");
        let outcome = self.ns.try_run_in(|| {
            loop {
                let last = match amqp_greeting(amqp, Duration::from_secs(2)) {
                    Ok(frame) if frame.first() == Some(&1) => return Ok(()),
                    Ok(frame) => format!("an answer that is no method frame: {frame:02x?}"),
                    Err(e) => e.to_string(),
                };
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "the server exited with {status} (last probe: {last})"
                    ));
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "no AMQP answer within {READY_LIMIT:?} (last probe: {last})"
                    ));
                }
                std::thread::sleep(POLL);
            }
        })?;
        match outcome {
            Ok(()) => {
                self.started_in = started.elapsed();
                Ok(())
            }
            Err(why) => bail!(
                "RabbitMQ {} in {} ({amqp}): {why}\n{}",
                self.nodename,
                self.ns.name(),
                self.log_tail(40)
            ),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // A frozen VM (see `freeze`) cannot stop.
        if self.vm().is_some() {
            let _ = self.freeze(false);
        }
        if let Err(e) = self.stop() {
            eprintln!("warning: {e:#}");
        }
        // epmd, and whatever else is left: SIGTERM, then SIGKILL.
        let left = self.processes();
        kill_all(&left);
        let still = self.processes();
        if !still.is_empty() {
            eprintln!(
                "warning: broker {} left processes in {}: {still:?}",
                self.nodename,
                self.ns.name()
            );
        }
        // For a developer's post-mortem: VIP_KEEP_BROKER_LOGS=DIR keeps
        // each broker's log there.
        if let Some(keep) = std::env::var_os("VIP_KEEP_BROKER_LOGS") {
            let from = self.dir.join("log").join(format!("{}.log", self.nodename));
            let to = Path::new(&keep).join(format!("{}-{}.log", self.ns.name(), self.node));
            if let Err(e) = std::fs::copy(&from, &to) {
                eprintln!("warning: cannot keep {}: {e}", from.display());
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            eprintln!("warning: cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// Connects to `addr`, sends [`AMQP_HEADER`] and returns the first frame the
/// server sends back, whole: type (1 = method), channel (2 bytes), payload
/// size (4 bytes, big-endian), payload, frame end (0xCE). Call it from inside
/// a namespace that reaches `addr`. A server that speaks another protocol
/// version answers with its own protocol header instead (8 bytes, returned
/// as they are).
pub fn amqp_greeting(addr: SocketAddr, timeout: Duration) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(AMQP_HEADER)?;
    let mut head = [0u8; 7];
    stream.read_exact(&mut head)?;
    if head.starts_with(b"AMQP") {
        let mut frame = head.to_vec();
        frame.push(0);
        stream.read_exact(&mut frame[7..])?;
        return Ok(frame);
    }
    let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]);
    if size > 1 << 20 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame header {head:02x?} announces {size} bytes"),
        ));
    }
    let mut frame = head.to_vec();
    frame.resize(7 + size as usize + 1, 0);
    stream.read_exact(&mut frame[7..])?;
    Ok(frame)
}

/// A plain HTTP/1.1 GET with basic auth guest/guest and `Connection: close`.
fn http_get(addr: SocketAddr, path: &str) -> Result<HttpReply> {
    let timeout = Duration::from_secs(10);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).context("connect")?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {GUEST_BASIC_AUTH}\r\n\
         Accept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).context("send")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).context("read")?;
    parse_http_reply(&raw)
}

fn parse_http_reply(raw: &[u8]) -> Result<HttpReply> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("no end of headers in {:?}", String::from_utf8_lossy(raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok(HttpReply {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&body[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// Established entries of a `/proc/net/tcp` table whose local port is
/// `port` and whose remote address is `remote`.
fn count_established(table: &str, port: u16, remote: Ipv4Addr) -> usize {
    // Addresses are the raw u32 in host (little-endian) order, ports big.
    let remote = format!("{:08X}", u32::from_ne_bytes(remote.octets()));
    let port = format!("{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > 3
                && f[1].rsplit(':').next() == Some(port.as_str())
                && f[2].split(':').next() == Some(remote.as_str())
                && f[3] == "01"
        })
        .count()
}

/// Waits for `child` until `deadline`; `None` if it still runs then.
fn wait_child(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL / 2),
            Ok(None) | Err(_) => return None,
        }
    }
}

/// The namespace (device and inode of its nsfs file) that `path` (a
/// `/run/netns/<name>` bind mount or `/proc/PID/ns/net`) refers to.
pub fn netns_id(path: &Path) -> io::Result<(u64, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// Processes whose network namespace is `ns` ([`netns_id`]), zombies left
/// out, found in `/proc`.
#[must_use]
pub fn live_processes_in(ns: (u64, u64)) -> Vec<NsProcess> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            // Processes that exit meanwhile just fail here.
            (netns_id(&e.path().join("ns/net")).ok()? == ns).then_some(())?;
            let (comm, start_time) = proc_identity(pid)?;
            Some(NsProcess {
                pid,
                comm,
                start_time,
            })
        })
        .collect()
}

/// The command name and start time of `pid`; `None` if it is gone or a
/// zombie.
fn proc_identity(pid: i32) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z" | &"X")) {
        return None;
    }
    Some((comm, fields.get(19)?.parse().ok()?))
}

fn is_alive(p: &NsProcess) -> bool {
    proc_identity(p.pid).is_some_and(|(_, start)| start == p.start_time)
}

/// Whether `pid`'s initial environment holds the entry `entry` (`K=V`).
fn has_env(pid: i32, entry: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|e| e == entry))
}

/// SIGTERM to each process still alive (same PID and start time), SIGKILL
/// after 2 s, then waits up to 1 s for them to go.
fn kill_all(procs: &[NsProcess]) {
    let signal = |sig| {
        for p in procs.iter().filter(|p| is_alive(p)) {
            // SAFETY: kill(2) on a PID whose start time is that of the
            // process we found in the broker's namespace with its marker.
            unsafe { libc::kill(p.pid, sig) };
        }
    };
    let wait = |limit: Duration| {
        let deadline = Instant::now() + limit;
        while procs.iter().any(is_alive) && Instant::now() < deadline {
            std::thread::sleep(POLL / 10);
        }
    };
    if procs.is_empty() {
        return;
    }
    signal(libc::SIGTERM);
    wait(Duration::from_secs(2));
    signal(libc::SIGKILL);
    wait(Duration::from_secs(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn established_connections_count_by_port_and_peer() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1628 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 6400630A:1628 0A00630A:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 6400630A:1628 0A00630A:D432 01 00000000:00000000 00:00000000 00000000     0        0 3 1
   3: 6400630A:1628 0A00630A:D433 06 00000000:00000000 00:00000000 00000000     0        0 4 1
   4: 0B00630A:1629 0A00630A:D434 01 00000000:00000000 00:00000000 00000000     0        0 5 1
   5: 6400630A:1628 0200630A:D435 01 00000000:00000000 00:00000000 00000000     0        0 6 1
";
        let client = Ipv4Addr::new(10, 99, 0, 10);
        assert_eq!(count_established(table, 5672, client), 2);
        assert_eq!(count_established(table, 5673, client), 1);
        assert_eq!(
            count_established(table, 5672, Ipv4Addr::new(10, 99, 0, 2)),
            1
        );
    }

    #[test]
    fn http_replies_parse() {
        let r =
            parse_http_reply(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nnope")
                .unwrap();
        assert_eq!((r.status, r.body.as_str()), (503, "nope"));
        let r = parse_http_reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"s\r\n2;x=y\r\n\"}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "{\"s\"}"));
        assert!(parse_http_reply(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
