//! Keeps checks running: one tokio task per node check and per (service,
//! backend), each probing on its [`Schedule`] (jittered), feeding the
//! rise/fall machine and reporting only state changes. Node and service
//! checks share the one loop, [`keep_probing`]; they differ in the key they
//! are known by and the event they send.
//!
//! While the node's own link is down ([`LinkGate`] closed), the network
//! probes pause: a connect that fails then measures our link, not the
//! backend, and recording it would mark every backend down. A node that
//! took the VIP back as soon as its link returned would then reset every
//! flow it forwards (seen in the `RabbitMQ` cluster test: both clients
//! reconnected). Exec checks run on: they probe this host.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{sync::mpsc, task::JoinHandle};

use super::{CheckKind, Probe, Schedule};
use crate::{
    config::{Check, Service},
    health::{RiseFall, fnv1a, jittered},
};

/// A node check changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckEvent {
    /// The `[[check]]` name.
    pub name: String,
    /// The new state.
    pub up: bool,
    /// The last result's reason, e.g. `exit status 1`.
    pub reason: String,
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

/// A node check that [`NodeChecks::spawn`] cannot run (config validation
/// prevents it).
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("{kind} check {name:?} (line {line}) has no address to probe")]
    NoAddress {
        name: String,
        kind: CheckKind,
        line: usize,
    },
}

/// Whether network probes run: open while the interface's link is up.
/// Cloned into every check task; the agent sets it on each link event.
#[derive(Clone, Debug)]
pub struct LinkGate(Arc<AtomicBool>);

impl LinkGate {
    /// A gate open when `up`.
    #[must_use]
    pub fn new(up: bool) -> Self {
        Self(Arc::new(AtomicBool::new(up)))
    }

    /// Opens (the link is up) or closes the gate.
    pub fn set(&self, up: bool) {
        self.0.store(up, Ordering::Relaxed);
    }

    /// Whether probes may run and count.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for LinkGate {
    fn default() -> Self {
        Self::new(true)
    }
}

/// What a check's task has seen so far; for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeStats {
    /// Probes run, and how many failed.
    pub probes: u64,
    pub failures: u64,
    /// State changes (up to down and back).
    pub flaps: u64,
    /// How long the last probe took.
    pub last_latency: Duration,
}

/// Shared [`ProbeStats`] by check.
pub type Stats<K> = Arc<Mutex<BTreeMap<K, ProbeStats>>>;

/// Running checks known by `K`: a node check by its name, a service check
/// by (service index, backend). Every check starts up (see
/// [`RiseFall::new`]), so only changes are sent. Dropping this stops them.
#[derive(Debug)]
pub struct Checks<K> {
    tasks: Vec<JoinHandle<()>>,
    /// Per check: the last probe and the counts so far.
    pub stats: Stats<K>,
}

/// The running `[[check]]`s.
pub type NodeChecks = Checks<String>;
/// The running service checks.
pub type BackendChecks = Checks<(usize, Ipv4Addr)>;

impl<K> Drop for Checks<K> {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Checks<String> {
    /// Starts a task for each check. Must be called within a tokio runtime.
    ///
    /// Fails, starting nothing, if a probe has no address. Network probes
    /// pause while `gate` is closed.
    pub fn spawn(
        checks: &[Check],
        gate: &LinkGate,
    ) -> Result<(Self, mpsc::UnboundedReceiver<CheckEvent>), HealthError> {
        let mut targets = Vec::with_capacity(checks.len());
        for check in checks {
            let addr = match (&check.probe, check.address) {
                (Probe::Exec { .. }, _) => None,
                (_, Some(address)) => {
                    let port = check.port.or(check.probe.kind().default_port());
                    Some(SocketAddr::from((address, port.unwrap_or_default())))
                }
                (probe, None) => {
                    return Err(HealthError::NoAddress {
                        name: check.name.clone(),
                        kind: probe.kind(),
                        line: check.line,
                    });
                }
            };
            targets.push((check, addr));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Stats::default();
        let tasks = targets
            .into_iter()
            .map(|(check, addr)| {
                let tx = tx.clone();
                let name = check.name.clone();
                let seed = fnv1a(&name);
                let report = move |up: bool, reason: String| {
                    tracing::info!(check = %name, up, %reason, "node check changed state");
                    tx.send(CheckEvent {
                        name: name.clone(),
                        up,
                        reason,
                    })
                    .is_ok()
                };
                tokio::spawn(keep_probing(
                    check.name.clone(),
                    addr,
                    check.probe.clone(),
                    check.schedule,
                    (seed, addr.map(|_| gate.clone())),
                    stats.clone(),
                    report,
                ))
            })
            .collect();
        Ok((Self { tasks, stats }, rx))
    }
}

impl Checks<(usize, Ipv4Addr)> {
    /// Starts the checks of `services`: one task per backend of a service
    /// with a check, probing the check's port (default: the service's).
    /// Must be called within a tokio runtime. The probes pause while `gate`
    /// is closed.
    #[must_use]
    pub fn spawn(
        services: &[Service],
        gate: &LinkGate,
    ) -> (Self, mpsc::UnboundedReceiver<BackendEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Stats::default();
        let mut tasks = Vec::new();
        for (service, svc) in services.iter().enumerate() {
            let Some(check) = &svc.check else { continue };
            for b in &svc.backends {
                let addr = SocketAddr::from((b.address, check.port.unwrap_or(svc.port)));
                let seed = u64::from(u32::from(b.address)) ^ (u64::from(addr.port()) << 32);
                let tx = tx.clone();
                let backend = b.address;
                let report = move |up: bool, reason: String| {
                    tx.send(BackendEvent {
                        service,
                        backend,
                        up,
                        reason,
                    })
                    .is_ok()
                };
                tasks.push(tokio::spawn(keep_probing(
                    (service, backend),
                    Some(addr),
                    check.probe.clone(),
                    check.schedule,
                    (seed, Some(gate.clone())),
                    stats.clone(),
                    report,
                )));
            }
        }
        (Self { tasks, stats }, rx)
    }
}

/// The one check loop: probe, record, report a change (`report` returns
/// false once nobody listens, which ends the loop), sleep the jittered rest
/// of the interval. With a gate, a probe runs only while it is open, and
/// its result counts only if it still is when the probe ends.
async fn keep_probing<K: Ord + Clone>(
    key: K,
    addr: Option<SocketAddr>,
    probe: Probe,
    schedule: Schedule,
    (seed, gate): (u64, Option<LinkGate>),
    stats: Stats<K>,
    report: impl Fn(bool, String) -> bool,
) {
    let mut machine = RiseFall::new(schedule.rise, schedule.fall);
    let open = || gate.as_ref().is_none_or(LinkGate::is_open);
    for n in 0_u64.. {
        let started = tokio::time::Instant::now();
        let pause = jittered(schedule.interval, seed.wrapping_add(n));
        if !open() {
            tokio::time::sleep_until(started + pause).await;
            continue;
        }
        let outcome = super::run(addr, &probe, schedule.timeout).await;
        if !open() {
            tokio::time::sleep_until(started + pause).await;
            continue;
        }
        let changed = machine.record(outcome.ok);
        if let Ok(mut map) = stats.lock() {
            let e = map.entry(key.clone()).or_default();
            e.probes += 1;
            e.failures += u64::from(!outcome.ok);
            e.flaps = machine.flaps();
            e.last_latency = outcome.latency;
        }
        if let Some(up) = changed
            && !report(up, outcome.reason)
        {
            return;
        }
        tokio::time::sleep_until(started + pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file unique to one test.
    fn temp_file(test: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("vip-runner-{}-{test}", std::process::id()))
    }

    fn exec_check(name: &str, command: &str) -> Check {
        Check {
            name: name.to_owned(),
            address: None,
            port: None,
            probe: Probe::Exec {
                command: command.to_owned(),
            },
            schedule: Schedule {
                interval: Duration::from_millis(20),
                timeout: Duration::from_secs(1),
                rise: 1,
                fall: 2,
            },
            line: 1,
        }
    }

    #[tokio::test]
    async fn a_failing_check_reports_down_once() {
        let (checks, mut rx) = NodeChecks::spawn(
            &[exec_check("good", "true"), exec_check("bad", "exit 4")],
            &LinkGate::default(),
        )
        .expect("exec checks run");
        let event = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event in time")
            .expect("channel open");
        assert_eq!(
            event,
            CheckEvent {
                name: "bad".to_owned(),
                up: false,
                reason: "exit status 4".to_owned(),
            }
        );
        // Neither check changes again.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), rx.recv())
                .await
                .is_err()
        );
        drop(checks);
    }

    #[tokio::test]
    async fn a_check_comes_back_up() {
        let file = temp_file("flag");
        std::fs::write(&file, "").expect("temp file");
        // Fails while the file exists.
        let cmd = format!("test ! -e {}", file.display());
        let (_checks, mut rx) =
            NodeChecks::spawn(&[exec_check("flag", &cmd)], &LinkGate::default()).expect("spawn");
        let next = async |rx: &mut mpsc::UnboundedReceiver<CheckEvent>| {
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("an event in time")
                .expect("channel open")
        };
        assert!(!next(&mut rx).await.up);
        std::fs::remove_file(&file).expect("remove");
        let up = next(&mut rx).await;
        assert!(up.up);
        assert_eq!(up.reason, "exit 0");
    }

    #[tokio::test]
    async fn dropping_stops_the_checks() {
        let file = temp_file("runs");
        let cmd = format!("echo run >> {}", file.display());
        let (checks, _rx) =
            NodeChecks::spawn(&[exec_check("count", &cmd)], &LinkGate::default()).expect("spawn");
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(checks);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let runs = std::fs::read_to_string(&file)
            .expect("it ran")
            .lines()
            .count();
        assert!(runs >= 1);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let later = std::fs::read_to_string(&file)
            .expect("file")
            .lines()
            .count();
        std::fs::remove_file(&file).ok();
        assert_eq!(runs, later, "no runs after drop");
    }

    /// A TCP check of a port nobody listens on (connection refused at once).
    fn refused_check() -> Check {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let mut c = exec_check("refused", "true");
        c.probe = Probe::Tcp;
        c.address = Some(Ipv4Addr::LOCALHOST);
        c.port = Some(port);
        c
    }

    #[tokio::test]
    async fn network_probes_pause_while_the_link_is_down() {
        let gate = LinkGate::new(false);
        let (checks, mut rx) =
            NodeChecks::spawn(&[refused_check(), exec_check("local", "exit 3")], &gate)
                .expect("spawn");
        // The exec check runs on and falls; the TCP probe neither runs nor
        // counts while the gate is closed.
        let event = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event in time")
            .expect("channel open");
        assert_eq!((event.name.as_str(), event.up), ("local", false));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(rx.try_recv().is_err(), "the paused probe reported");
        let probes = |c: &NodeChecks| {
            c.stats
                .lock()
                .unwrap()
                .get("refused")
                .map_or(0, |s| s.probes)
        };
        assert_eq!(probes(&checks), 0);
        // Link back: it probes, and falls after `fall` refusals.
        gate.set(true);
        let event = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event in time")
            .expect("channel open");
        assert_eq!((event.name.as_str(), event.up), ("refused", false));
        assert!(probes(&checks) >= 2);
    }

    #[tokio::test]
    async fn a_probe_without_an_address_is_refused() {
        let mut tcp = exec_check("port", "true");
        tcp.probe = Probe::Tcp;
        tcp.line = 12;
        let err =
            NodeChecks::spawn(&[exec_check("ok", "true"), tcp], &LinkGate::default()).unwrap_err();
        assert!(matches!(err, HealthError::NoAddress { ref name, .. } if name == "port"));
        let msg = err.to_string();
        assert!(msg.contains("\"port\"") && msg.contains("line 12"), "{msg}");
    }
}
