//! The `exec` probe (keepalived's `vrrp_script` and `MISC_CHECK`): a command
//! run with `/bin/sh -c`, exit status 0 a pass, in a process group of its
//! own that a timeout kills whole.

use std::{
    io,
    net::SocketAddr,
    os::unix::process::ExitStatusExt as _,
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

/// The shell that runs `exec` commands: keepalived runs a script path with
/// arguments, and `sh -c` runs that as well as a one-line pipeline.
const SHELL: &str = "/bin/sh";

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
    let mut cmd = tokio::process::Command::new(shell);
    crate::caps::without_privileges(&mut cmd);
    let spawned = cmd
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

/// Runs a service check's `command` for the backend `addr`, with
/// `VIP_BACKEND_ADDRESS` and `VIP_BACKEND_PORT` set.
pub async fn run_for_backend(command: &str, addr: SocketAddr, timeout: Duration) -> ExecResult {
    // The variables go in through the shell's environment assignment, so
    // run_exec keeps its process-group handling.
    let line = format!(
        "VIP_BACKEND_ADDRESS={}; VIP_BACKEND_PORT={}; export VIP_BACKEND_ADDRESS VIP_BACKEND_PORT; {command}",
        addr.ip(),
        addr.port()
    );
    run_exec(&line, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The `Cap*` and `NoNewPrivs` lines a script sees, as `name value`.
    async fn script_privileges() -> Vec<(String, String)> {
        let out = std::env::temp_dir().join(format!("vip-exec-caps-{}", std::process::id()));
        let r = run_exec(
            &format!(
                "grep -E '^(Cap|NoNewPrivs)' /proc/self/status > {}",
                out.display()
            ),
            Duration::from_secs(5),
        )
        .await;
        assert!(r.ok, "{r:?}");
        let text = std::fs::read_to_string(&out).expect("the script wrote its status");
        let _ = std::fs::remove_file(&out);
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn a_script_holds_no_capability_and_cannot_gain_one() {
        let seen = script_privileges().await;
        let get = |k: &str| {
            seen.iter()
                .find(|(n, _)| n == k)
                .map_or_else(|| panic!("no {k} in {seen:?}"), |(_, v)| v.as_str())
        };
        for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
            assert_eq!(get(set), "0000000000000000", "{set}: {seen:?}");
        }
        assert_eq!(get("NoNewPrivs"), "1");
        // Emptied as far as the agent may: a root agent (CAP_SETPCAP) leaves
        // its scripts nothing to regain on exec.
        if crate::caps::effective().is_ok_and(|e| e & (1 << 8) != 0) {
            assert_eq!(get("CapBnd"), "0000000000000000");
        }
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
        let mut m = crate::health::RiseFall::new(1, 1);
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
}
