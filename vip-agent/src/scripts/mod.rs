//! How the agent runs other programs: exec checks and notify hooks.
//!
//! Every script runs
//! - as the node's script user ([`user`]: `[node] script_user`, else the
//!   agent's own user, else for a root agent `vip-script` when it exists),
//! - with every capability set empty and `no_new_privs` (`caps`),
//! - in a process group of its own that a timeout kills whole, stdin,
//!   stdout and stderr on `/dev/null`, always reaped.
//!
//! Before the agent (or `--check`) accepts a configuration, [`safety`]
//! refuses a script that anyone other than root or the agent's user could
//! rewrite (keepalived's `enable_script_security`), unless
//! `[node] script_security = false`.
//!
//! Who scripts run as is a property of the process, like its capabilities:
//! the agent sets it once at start-up and on a reload ([`set_identity`]),
//! and every command built afterwards captures it.

pub mod safety;
pub mod user;

use std::{
    ffi::OsStr,
    io,
    os::unix::process::ExitStatusExt as _,
    process::{ExitStatus, Stdio},
    sync::RwLock,
    time::{Duration, Instant},
};

pub use self::user::{Identity, resolve};
use crate::caps::SwitchTo;

/// The user scripts become; `None`: the agent's own.
static SWITCH: RwLock<Option<SwitchTo>> = RwLock::new(None);

/// Makes every script started from now on run as `identity`.
pub fn set_identity(identity: &Identity) {
    let switch = identity.switch();
    *SWITCH
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = switch;
}

fn switch() -> Option<SwitchTo> {
    *SWITCH
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `program` as a script: the script user, no capabilities, no standard
/// streams, a process group of its own, killed if the command is dropped.
pub fn command(program: impl AsRef<OsStr>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    crate::caps::without_privileges(&mut cmd, switch());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        // Should the future be dropped, tokio kills and reaps the child.
        .kill_on_drop(true);
    cmd
}

/// The outcome of one script run.
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

/// Runs `cmd` (built by [`command`]) to its end or for at most `timeout`.
///
/// When it outlives `timeout`, or when the future is dropped (a check task
/// aborted), the whole process group is killed with `SIGKILL`, so a
/// script's own children go too; the direct child is always reaped, never
/// left a zombie. Never fails: a command that cannot be started is a failed
/// run with the cause in `reason`.
pub async fn run(mut cmd: tokio::process::Command, timeout: Duration) -> ExecResult {
    let start = Instant::now();
    let result = |ok: bool, reason: String| ExecResult {
        ok,
        reason,
        took: start.elapsed(),
    };
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return result(false, format!("cannot run {program}: {e}")),
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
                tracing::debug!(pgid, error = %e, "cannot kill a script's process group");
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

/// Scripts of one owner (a VRRP instance's notify calls) run one at a time,
/// in the order given, each for at most `timeout`: two never overlap, and a
/// hung one holds the rest back no longer than its timeout. At most
/// [`Serial::BACKLOG`] wait; one more is dropped with a warning.
pub struct Serial {
    timeout: Duration,
    tx: Option<tokio::sync::mpsc::Sender<(tokio::process::Command, String)>>,
}

impl Serial {
    /// Calls that may wait behind a running one.
    pub const BACKLOG: usize = 16;

    #[must_use]
    pub fn new(timeout: Duration) -> Self {
        Self { timeout, tx: None }
    }

    /// Queues `cmd` (built by [`command`]); `what` names it in logs. The
    /// runner task starts with the first call and ends when `self` is
    /// dropped and the queue is empty.
    pub fn push(&mut self, cmd: tokio::process::Command, what: String) {
        let timeout = self.timeout;
        let tx = self.tx.get_or_insert_with(|| {
            let (tx, mut rx) =
                tokio::sync::mpsc::channel::<(tokio::process::Command, String)>(Self::BACKLOG);
            tokio::spawn(async move {
                while let Some((cmd, what)) = rx.recv().await {
                    let r = run(cmd, timeout).await;
                    if !r.ok {
                        tracing::warn!(script = %what, reason = %r.reason, "script failed");
                    }
                }
            });
            tx
        });
        if let Err(e) = tx.try_send((cmd, what)) {
            let (_, what) = e.into_inner();
            tracing::warn!(script = %what, backlog = Self::BACKLOG, "scripts are queued up; this call is dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(line: &str) -> tokio::process::Command {
        let mut c = command("/bin/sh");
        c.arg("-c").arg(line);
        c
    }

    #[tokio::test]
    async fn serial_calls_run_one_at_a_time_in_order_each_bounded() {
        let log = std::env::temp_dir().join(format!("vip-serial-{}", std::process::id()));
        let _ = std::fs::remove_file(&log);
        let mut serial = Serial::new(Duration::from_millis(300));
        let start = Instant::now();
        // The first hangs past its timeout; the second is slow; neither may
        // overlap the next.
        serial.push(
            shell(&format!(
                "echo start-a >> {0}; sleep 5; echo end-a >> {0}",
                log.display()
            )),
            "a".into(),
        );
        serial.push(
            shell(&format!(
                "echo start-b >> {0}; sleep 0.1; echo end-b >> {0}",
                log.display()
            )),
            "b".into(),
        );
        serial.push(
            shell(&format!(
                "echo start-c >> {0}; echo end-c >> {0}",
                log.display()
            )),
            "c".into(),
        );
        let want = "start-a\nstart-b\nend-b\nstart-c\nend-c\n";
        let deadline = Instant::now() + Duration::from_secs(5);
        let text = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.len() >= want.len() || Instant::now() > deadline {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let _ = std::fs::remove_file(&log);
        assert_eq!(text, want, "a killed at its timeout, then b, then c");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(3),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn a_full_backlog_drops_the_newest_call() {
        let mut serial = Serial::new(Duration::from_secs(5));
        let log = std::env::temp_dir().join(format!("vip-backlog-{}", std::process::id()));
        let _ = std::fs::remove_file(&log);
        // One runs, BACKLOG wait behind it, the rest are dropped.
        for i in 0..Serial::BACKLOG + 5 {
            serial.push(
                shell(&format!("echo {i} >> {}; sleep 0.05", log.display())),
                format!("call {i}"),
            );
        }
        drop(serial);
        let deadline = Instant::now() + Duration::from_secs(5);
        let ran = loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let n = text.lines().count();
            if n >= Serial::BACKLOG || Instant::now() > deadline {
                // Let any stray extra call show itself.
                tokio::time::sleep(Duration::from_millis(200)).await;
                break std::fs::read_to_string(&log).unwrap_or_default();
            }
        };
        let _ = std::fs::remove_file(&log);
        let got: Vec<usize> = ran.lines().map(|l| l.parse().unwrap()).collect();
        // The runner may or may not have taken the first call off the queue
        // before the rest arrived: BACKLOG or BACKLOG + 1 ran, in order.
        assert!(
            got.len() == Serial::BACKLOG || got.len() == Serial::BACKLOG + 1,
            "{got:?}"
        );
        assert_eq!(got, (0..got.len()).collect::<Vec<_>>());
    }
}
