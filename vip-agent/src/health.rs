//! Node-level health checks (`[[check]]`, keepalived's `vrrp_script`): the
//! sans-IO rise/fall machine, the keepalived-compatible `exec` checker, the
//! async shell that runs one task per check, and the `track` rule that turns
//! check states into an effective VRRP priority.
//!
//! Only `exec` checks run here so far; `tcp`, `amqp` and `http` come with the
//! in-process checkers.

use std::{
    io,
    os::unix::process::ExitStatusExt as _,
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use tokio::{sync::mpsc, task::JoinHandle};

use crate::config::{Check, CheckKind, Track};

/// The shell that runs `exec` commands: keepalived runs a script path with
/// arguments, and `sh -c` runs that as well as a one-line pipeline.
const SHELL: &str = "/bin/sh";

/// A check's state from its results: it goes down after `fall` failures in a
/// row while up, and up after `rise` successes in a row while down. A result
/// that agrees with the current state resets the count towards a change, so
/// results that alternate faster than the thresholds never change it.
///
/// A timeout is a failure: the caller records `false` for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    up: bool,
    /// Consecutive results that disagree with `up`.
    streak: u32,
    flaps: u64,
}

impl RiseFall {
    /// A machine that starts up, so a node's priority does not dip while its
    /// checks run for the first time; it needs `fall` failures to go down.
    ///
    /// keepalived's default (no `init_fail`) also leaves the priority alone
    /// until the first result, but then lets that first result decide at
    /// once; here a freshly started check is treated like one that has been
    /// passing. A threshold of 0 is taken as 1.
    #[must_use]
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            up: true,
            streak: 0,
            flaps: 0,
        }
    }

    /// A machine that starts down and needs `rise` successes to go up
    /// (keepalived's `init_fail`).
    #[must_use]
    pub fn new_down(rise: u32, fall: u32) -> Self {
        Self {
            up: false,
            ..Self::new(rise, fall)
        }
    }

    /// Records one result (`false` for a failure or a timeout). Returns the
    /// new state exactly when this result changes it.
    #[must_use]
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let threshold = if self.up { self.fall } else { self.rise };
        if self.streak < threshold {
            return None;
        }
        self.up = ok;
        self.streak = 0;
        self.flaps += 1;
        Some(ok)
    }

    /// Whether the check is currently considered up.
    #[must_use]
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// How many times the state has changed since the machine was made.
    #[must_use]
    pub fn flaps(&self) -> u64 {
        self.flaps
    }
}

/// `interval` moved by up to ±10 %, chosen by a cheap deterministic hash of
/// `seed`, so checks that start together do not stay in lockstep. The result
/// lies in `[0.9 × interval, 1.1 × interval]` (to the nanosecond).
#[must_use]
pub fn jittered(interval: Duration, seed: u64) -> Duration {
    let nanos = interval.as_nanos();
    // 0..=2000 steps of 0.01 % each: 0 % to +20 % on top of -10 %.
    let step = u128::from(splitmix64(seed) % 2001);
    let total = nanos - nanos / 10 + nanos * step / 10_000;
    let secs = u64::try_from(total / 1_000_000_000).unwrap_or(u64::MAX);
    let sub = u32::try_from(total % 1_000_000_000).expect("below one second");
    Duration::new(secs, sub)
}

/// splitmix64's finaliser: a well-mixed 64-bit hash of a counter.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a, to give each check its own jitter sequence from its name.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The outcome of one `exec` run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    /// Exit status 0.
    pub ok: bool,
    /// Why, for logs and events: `exit 0`, `exit status 1`,
    /// `killed by signal 9`, `timed out after 300ms`, `cannot run …`.
    pub reason: String,
    /// From spawn to reaped.
    pub took: Duration,
}

/// Runs `command` with `/bin/sh -c`, stdin, stdout and stderr on
/// `/dev/null`; exit status 0 is a pass.
///
/// The command runs in a process group of its own. When it outlives
/// `timeout`, or when the future is dropped (a check task aborted), the
/// whole group is killed with `SIGKILL`, so a script's own children go too;
/// the direct child is always reaped, never left a zombie. Never fails: a
/// command that cannot be started is a failed check with the cause in
/// `reason`.
pub async fn run_exec(command: &str, timeout: Duration) -> ExecResult {
    run_in(SHELL, command, timeout).await
}

async fn run_in(shell: &str, command: &str, timeout: Duration) -> ExecResult {
    let start = Instant::now();
    let result = |ok: bool, reason: String| ExecResult {
        ok,
        reason,
        took: start.elapsed(),
    };
    let spawned = tokio::process::Command::new(shell)
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        // Should the future be dropped, tokio kills and reaps the child.
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return result(false, format!("cannot run {shell}: {e}")),
    };
    // Declared after `child`, so it is dropped first: on an abort the group
    // dies, then tokio's kill-on-drop reaps the leader.
    let mut group = GroupKiller(child.id().and_then(|p| libc::pid_t::try_from(p).ok()));
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => {
            // The leader is reaped: its id may be reused, so never signal it.
            group.0 = None;
            result(status.success(), describe(status))
        }
        Ok(Err(e)) => {
            group.kill();
            result(false, format!("cannot wait for the command: {e}"))
        }
        Err(_) => {
            group.kill();
            let reason = format!("timed out after {}", humantime::format_duration(timeout));
            if let Err(e) = child.wait().await {
                return result(false, format!("{reason}; cannot reap it: {e}"));
            }
            result(false, reason)
        }
    }
}

/// Kills a process group with `SIGKILL` when told to or when dropped.
struct GroupKiller(Option<libc::pid_t>);

impl GroupKiller {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // SAFETY: kill(2) takes plain integers and touches no memory of
            // ours. The group leader is our unreaped child, so the id still
            // names its group.
            let rc = unsafe { libc::kill(-pgid, libc::SIGKILL) };
            if rc != 0 {
                let e = io::Error::last_os_error();
                tracing::debug!(pgid, error = %e, "cannot kill a check's process group");
            }
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(0), _) => "exit 0".to_owned(),
        (Some(126), _) => "exit status 126 (command not executable)".to_owned(),
        (Some(127), _) => "exit status 127 (command not found)".to_owned(),
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => format!("ended with {status}"),
    }
}

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

/// A check that [`NodeChecks::spawn`] cannot run (config validation
/// prevents both).
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("exec check {name:?} (line {line}) has no command")]
    NoCommand { name: String, line: usize },
    #[error("{kind} check {name:?} (line {line}) has no address to probe")]
    NoAddress {
        name: String,
        kind: CheckKind,
        line: usize,
    },
}

/// The running `[[check]]`s: one tokio task per check, each running its
/// command every (jittered) interval and reporting state changes on the
/// channel returned by [`NodeChecks::spawn`]. Every check starts up (see
/// [`RiseFall::new`]), so only changes are sent. Dropping this stops them.
#[derive(Debug)]
pub struct NodeChecks {
    tasks: Vec<JoinHandle<()>>,
    /// Per check, by name: the last probe and the counts so far.
    pub stats: Stats<String>,
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
    pub last_latency: std::time::Duration,
}

/// Shared [`ProbeStats`] by check.
pub type Stats<K> = std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<K, ProbeStats>>>;

/// Records one probe of `key` in `stats`.
pub fn record<K: Ord + Clone>(
    stats: &Stats<K>,
    key: &K,
    ok: bool,
    latency: std::time::Duration,
    flaps: u64,
) {
    if let Ok(mut map) = stats.lock() {
        let e = map.entry(key.clone()).or_default();
        e.probes += 1;
        e.failures += u64::from(!ok);
        e.flaps = flaps;
        e.last_latency = latency;
    }
}

impl NodeChecks {
    /// Starts a task for each check. Must be called within a tokio runtime.
    ///
    /// Fails, starting nothing, if an `exec` check has no command or a
    /// probe has no address.
    pub fn spawn(
        checks: &[Check],
    ) -> Result<(Self, mpsc::UnboundedReceiver<CheckEvent>), HealthError> {
        let mut runnable = Vec::with_capacity(checks.len());
        for check in checks {
            let how = if check.kind == CheckKind::Exec {
                let Some(command) = check.command.clone() else {
                    return Err(HealthError::NoCommand {
                        name: check.name.clone(),
                        line: check.line,
                    });
                };
                How::Exec(command)
            } else {
                let Some(address) = check.address else {
                    return Err(HealthError::NoAddress {
                        name: check.name.clone(),
                        kind: check.kind,
                        line: check.line,
                    });
                };
                let port = check
                    .port
                    .unwrap_or_else(|| crate::probe::Probe::default_port(check.kind));
                let probe = crate::probe::Probe::of(
                    check.kind,
                    check.command.as_ref(),
                    check.path.as_ref(),
                    check.expect_status,
                    check.expect_body.as_ref(),
                    check.user.as_ref(),
                    check.password.as_ref(),
                    check.vhost.as_ref(),
                );
                How::Probe(std::net::SocketAddr::from((address, port)), probe)
            };
            runnable.push((check.clone(), how));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Stats::default();
        let tasks = runnable
            .into_iter()
            .map(|(check, how)| tokio::spawn(run_check(check, how, tx.clone(), stats.clone())))
            .collect();
        Ok((Self { tasks, stats }, rx))
    }
}

/// How a node check probes.
enum How {
    Exec(String),
    Probe(std::net::SocketAddr, crate::probe::Probe),
}

impl Drop for NodeChecks {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn run_check(
    check: Check,
    how: How,
    tx: mpsc::UnboundedSender<CheckEvent>,
    stats: Stats<String>,
) {
    let mut machine = RiseFall::new(check.rise, check.fall);
    let seed = fnv1a(&check.name);
    for n in 0_u64.. {
        let started = tokio::time::Instant::now();
        let result = match &how {
            How::Exec(command) => run_exec(command, check.timeout).await,
            How::Probe(addr, probe) => {
                let o = crate::probe::run(*addr, probe, check.timeout).await;
                ExecResult {
                    ok: o.ok,
                    reason: o.reason,
                    took: o.latency,
                }
            }
        };
        let changed = machine.record(result.ok);
        record(&stats, &check.name, result.ok, result.took, machine.flaps());
        if let Some(up) = changed {
            tracing::info!(check = %check.name, up, reason = %result.reason, "node check changed state");
            let event = CheckEvent {
                name: check.name.clone(),
                up,
                reason: result.reason,
            };
            if tx.send(event).is_err() {
                return;
            }
        }
        tokio::time::sleep_until(started + jittered(check.interval, seed.wrapping_add(n))).await;
    }
}

/// An instance's priority under its `track` list, by keepalived's rule
/// (`vrrp_set_effective_priority`): a positive weight is added while its
/// check passes, a negative weight while it fails; a weight of 0 never moves
/// the priority (a failing check with weight 0 puts the instance in Fault
/// instead, see [`tracked_fault`]). The sum is clamped to `1..=254`, and an
/// address owner (`base` 255) is never changed.
///
/// `down` says whether the named check is currently down.
#[must_use]
pub fn effective_priority(base: u8, track: &[Track], down: &dyn Fn(&str) -> bool) -> u8 {
    if base == u8::MAX {
        return base;
    }
    let total = track.iter().fold(i64::from(base), |sum, t| {
        let failing = down(&t.check);
        match t.weight {
            w if w > 0 && !failing => sum + i64::from(w),
            w if w < 0 && failing => sum + i64::from(w),
            _ => sum,
        }
    });
    u8::try_from(total.clamp(1, 254)).expect("clamped to a u8")
}

/// Whether a tracked check with weight 0 is down, which in keepalived puts
/// the instance in Fault whatever its priority.
#[must_use]
pub fn tracked_fault(track: &[Track], down: &dyn Fn(&str) -> bool) -> bool {
    track.iter().any(|t| t.weight == 0 && down(&t.check))
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- rise/fall ----

    fn feed(m: &mut RiseFall, results: &[bool]) -> Vec<Option<bool>> {
        results.iter().map(|&ok| m.record(ok)).collect()
    }

    #[test]
    fn starts_up_and_falls_after_exactly_fall_failures() {
        let mut m = RiseFall::new(2, 3);
        assert!(m.is_up());
        assert_eq!(feed(&mut m, &[false, false]), [None, None]);
        assert!(m.is_up());
        assert_eq!(m.record(false), Some(false));
        assert!(!m.is_up());
        assert_eq!(m.record(false), None, "already down: no second event");
    }

    #[test]
    fn rises_after_exactly_rise_successes() {
        let mut m = RiseFall::new_down(3, 2);
        assert!(!m.is_up());
        assert_eq!(feed(&mut m, &[true, true]), [None, None]);
        assert_eq!(m.record(true), Some(true));
        assert!(m.is_up());
        assert_eq!(m.record(true), None);
    }

    #[test]
    fn one_and_one_follows_every_result() {
        let mut m = RiseFall::new(1, 1);
        assert_eq!(
            feed(&mut m, &[false, true, true, false, false, true]),
            [Some(false), Some(true), None, Some(false), None, Some(true)]
        );
        assert_eq!(m.flaps(), 4);
    }

    #[test]
    fn alternating_results_never_flip_two_and_two() {
        for mut m in [RiseFall::new(2, 2), RiseFall::new_down(2, 2)] {
            let was = m.is_up();
            for i in 0..100 {
                assert_eq!(m.record(i % 2 == 0), None, "result {i}");
            }
            assert_eq!(m.is_up(), was);
            assert_eq!(m.flaps(), 0);
        }
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let mut m = RiseFall::new(2, 3);
        assert_eq!(feed(&mut m, &[false, false, true, false, false]), [None; 5]);
        assert_eq!(m.record(false), Some(false));
    }

    #[test]
    fn flaps_count_every_change() {
        let mut m = RiseFall::new(2, 2);
        for _ in 0..5 {
            assert_eq!(feed(&mut m, &[false, false]), [None, Some(false)]);
            assert_eq!(feed(&mut m, &[true, true]), [None, Some(true)]);
        }
        assert_eq!(m.flaps(), 10);
        assert!(m.is_up());
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let mut m = RiseFall::new(0, 0);
        assert_eq!(m.record(false), Some(false));
        assert_eq!(m.record(true), Some(true));
    }

    // ---- jitter ----

    #[test]
    fn jitter_stays_within_ten_percent() {
        for interval in [
            Duration::from_millis(1),
            Duration::from_millis(100),
            Duration::from_secs(1),
            Duration::from_secs(4000),
            Duration::from_nanos(7),
        ] {
            let n = interval.as_nanos();
            let (lo, hi) = (n - n / 10, n + n / 10 + 1);
            let mut seen_below = false;
            let mut seen_above = false;
            for seed in 0..10_000 {
                let j = jittered(interval, seed).as_nanos();
                assert!((lo..=hi).contains(&j), "{interval:?} seed {seed}: {j}ns");
                seen_below |= j < n;
                seen_above |= j > n;
            }
            if n >= 100 {
                assert!(
                    seen_below && seen_above,
                    "{interval:?} is jittered both ways"
                );
            }
        }
        assert_eq!(jittered(Duration::ZERO, 42), Duration::ZERO);
    }

    #[test]
    fn jitter_is_deterministic_and_spread() {
        let i = Duration::from_secs(1);
        assert_eq!(jittered(i, 7), jittered(i, 7));
        let distinct: std::collections::HashSet<_> = (0..100).map(|s| jittered(i, s)).collect();
        assert!(
            distinct.len() > 90,
            "only {} distinct values",
            distinct.len()
        );
    }

    // ---- exec ----

    /// `(state, ppid)` of a process, from `/proc/<pid>/stat`.
    fn proc_stat(pid: i32) -> Option<(char, i32)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let mut fields = stat[stat.rfind(')')? + 2..].split(' ');
        let state = fields.next()?.chars().next()?;
        let parent = fields.next()?.parse().ok()?;
        Some((state, parent))
    }

    fn our_pid() -> i32 {
        i32::try_from(std::process::id()).expect("a pid")
    }

    /// A pid file unique to one test.
    fn pid_file(test: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("vip-health-{}-{test}", std::process::id()))
    }

    fn read_pids(path: &std::path::Path) -> Vec<i32> {
        let text = std::fs::read_to_string(path).expect("the command wrote its pid file");
        std::fs::remove_file(path).ok();
        text.lines()
            .map(|l| l.trim().parse().expect("a pid"))
            .collect()
    }

    #[tokio::test]
    async fn true_passes() {
        let r = run_exec("true", Duration::from_secs(5)).await;
        assert!(r.ok, "{r:?}");
        assert_eq!(r.reason, "exit 0");
        assert!(r.took < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn false_fails_with_its_status() {
        let r = run_exec("false", Duration::from_secs(5)).await;
        assert!(!r.ok);
        assert_eq!(r.reason, "exit status 1");
        let r = run_exec("exit 3", Duration::from_secs(5)).await;
        assert_eq!(r.reason, "exit status 3");
    }

    #[tokio::test]
    async fn a_script_with_arguments_runs() {
        let r = run_exec("test 2 -gt 1 && test -d /", Duration::from_secs(5)).await;
        assert!(r.ok, "{r:?}");
    }

    #[tokio::test]
    async fn a_killed_command_names_the_signal() {
        let r = run_exec("kill -9 $$", Duration::from_secs(5)).await;
        assert!(!r.ok);
        assert_eq!(r.reason, "killed by signal 9");
    }

    #[tokio::test]
    async fn a_hung_command_times_out_and_leaves_no_zombie() {
        let file = pid_file("timeout");
        let cmd = format!("echo $$ > {}; exec sleep 5", file.display());
        let start = Instant::now();
        let r = run_exec(&cmd, Duration::from_millis(200)).await;
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "took {:?}",
            start.elapsed()
        );
        assert!(!r.ok);
        assert_eq!(r.reason, "timed out after 200ms");
        assert!(r.took >= Duration::from_millis(200));
        let pid = read_pids(&file)[0];
        // Reaped: gone, or (pid reused) no longer our child.
        if let Some((state, ppid)) = proc_stat(pid) {
            assert_ne!(
                ppid,
                our_pid(),
                "pid {pid} still our child in state {state}"
            );
        }
        // A timeout is a failure to the machine.
        let mut m = RiseFall::new(1, 1);
        assert_eq!(m.record(r.ok), Some(false));
    }

    #[tokio::test]
    async fn a_timeout_kills_the_scripts_own_children() {
        let file = pid_file("group");
        let cmd = format!(
            "echo $$ > {f}; sleep 5 & echo $! >> {f}; wait",
            f = file.display()
        );
        let start = Instant::now();
        let r = run_exec(&cmd, Duration::from_millis(200)).await;
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(r.reason.starts_with("timed out"), "{r:?}");
        let pids = read_pids(&file);
        assert_eq!(pids.len(), 2);
        if let Some((state, ppid)) = proc_stat(pids[0]) {
            assert_ne!(ppid, our_pid(), "leader {} left in state {state}", pids[0]);
        }
        // The background sleep was killed with the group (it may linger
        // briefly as its new parent's zombie, never as a running process).
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match proc_stat(pids[1]) {
                None | Some(('Z' | 'X', _)) => break,
                Some((state, _)) if Instant::now() > deadline => {
                    panic!("grandchild {} still alive in state {state}", pids[1])
                }
                Some(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    #[tokio::test]
    async fn a_missing_command_says_so() {
        let r = run_exec("/nonexistent/vip-check", Duration::from_secs(5)).await;
        assert!(!r.ok);
        assert_eq!(r.reason, "exit status 127 (command not found)");
    }

    #[tokio::test]
    async fn a_missing_shell_cannot_run() {
        let r = run_in("/nonexistent/sh", "true", Duration::from_secs(5)).await;
        assert!(!r.ok);
        assert!(
            r.reason.starts_with("cannot run /nonexistent/sh: ")
                && r.reason.contains("No such file"),
            "{}",
            r.reason
        );
    }

    // ---- node checks ----

    fn exec_check(name: &str, command: &str) -> Check {
        Check {
            name: name.to_owned(),
            kind: CheckKind::Exec,
            command: Some(command.to_owned()),
            address: None,
            port: None,
            path: None,
            expect_status: None,
            expect_body: None,
            user: None,
            password: None,
            vhost: None,
            interval: Duration::from_millis(20),
            timeout: Duration::from_secs(1),
            rise: 1,
            fall: 2,
            line: 1,
        }
    }

    #[tokio::test]
    async fn a_failing_check_reports_down_once() {
        let (checks, mut rx) =
            NodeChecks::spawn(&[exec_check("good", "true"), exec_check("bad", "exit 4")])
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
        let file = pid_file("flag");
        std::fs::write(&file, "").expect("temp file");
        // Fails while the file exists.
        let cmd = format!("test ! -e {}", file.display());
        let (_checks, mut rx) = NodeChecks::spawn(&[exec_check("flag", &cmd)]).expect("spawn");
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
        let file = pid_file("runs");
        let cmd = format!("echo run >> {}", file.display());
        let (checks, _rx) = NodeChecks::spawn(&[exec_check("count", &cmd)]).expect("spawn");
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

    #[tokio::test]
    async fn a_probe_without_an_address_is_refused() {
        let mut tcp = exec_check("port", "true");
        tcp.kind = CheckKind::Tcp;
        tcp.command = None;
        tcp.line = 12;
        let err = NodeChecks::spawn(&[exec_check("ok", "true"), tcp]).unwrap_err();
        assert!(matches!(err, HealthError::NoAddress { ref name, .. } if name == "port"));
        let msg = err.to_string();
        assert!(msg.contains("\"port\"") && msg.contains("line 12"), "{msg}");
    }

    // ---- priority ----

    fn track(check: &str, weight: i32) -> Track {
        Track {
            check: check.to_owned(),
            weight,
        }
    }

    fn downs<'a>(names: &'a [&'a str]) -> impl Fn(&str) -> bool + 'a {
        move |n| names.contains(&n)
    }

    #[test]
    fn negative_weight_applies_while_failing() {
        // keepalived's usual example: master 101, backup 100, `weight -2`;
        // the master's check fails and the backup wins.
        let t = [track("chk_haproxy", -2)];
        assert_eq!(effective_priority(101, &t, &downs(&[])), 101);
        assert_eq!(effective_priority(101, &t, &downs(&["chk_haproxy"])), 99);
        assert!(effective_priority(101, &t, &downs(&["chk_haproxy"])) < 100);
    }

    #[test]
    fn positive_weight_applies_while_passing() {
        // keepalived: "weight 2": priority rises by 2 while the script succeeds.
        let t = [track("chk", 2)];
        assert_eq!(effective_priority(100, &t, &downs(&[])), 102);
        assert_eq!(effective_priority(100, &t, &downs(&["chk"])), 100);
    }

    #[test]
    fn weights_add_up() {
        let t = [track("a", -60), track("b", -10), track("c", 5)];
        assert_eq!(effective_priority(150, &t, &downs(&[])), 155);
        assert_eq!(effective_priority(150, &t, &downs(&["a"])), 95);
        assert_eq!(effective_priority(150, &t, &downs(&["a", "b", "c"])), 80);
    }

    #[test]
    fn priority_is_clamped_to_1_through_254() {
        assert_eq!(
            effective_priority(10, &[track("a", -60)], &downs(&["a"])),
            1
        );
        assert_eq!(
            effective_priority(1, &[track("a", -254)], &downs(&["a"])),
            1
        );
        assert_eq!(effective_priority(250, &[track("a", 10)], &downs(&[])), 254);
        assert_eq!(
            effective_priority(254, &[track("a", 254)], &downs(&[])),
            254
        );
    }

    #[test]
    fn the_owner_is_never_moved() {
        let t = [track("a", -100), track("b", 50)];
        assert_eq!(effective_priority(255, &t, &downs(&["a"])), 255);
        assert_eq!(effective_priority(255, &t, &downs(&[])), 255);
    }

    #[test]
    fn weight_zero_means_fault_not_priority() {
        let t = [track("a", 0), track("b", -5)];
        assert_eq!(effective_priority(100, &t, &downs(&["a"])), 100);
        assert!(tracked_fault(&t, &downs(&["a"])));
        assert!(!tracked_fault(&t, &downs(&["b"])));
        assert!(!tracked_fault(&[], &downs(&["a"])));
    }
}
