//! The `exec` probe (keepalived's `vrrp_script` and `MISC_CHECK`): a command
//! run with `/bin/sh -c`, exit status 0 a pass, in a process group of its
//! own that a timeout kills whole.

use std::{net::SocketAddr, time::Duration};

pub use crate::scripts::ExecResult;

/// The shell that runs `exec` commands: keepalived runs a script path with
/// arguments, and `sh -c` runs that as well as a one-line pipeline.
const SHELL: &str = "/bin/sh";

/// Runs `command` with `/bin/sh -c` as a script (`crate::scripts`: the
/// script user, no capabilities, its own process group, killed whole on a
/// timeout or when the future is dropped); exit status 0 is a pass. Never
/// fails: a command that cannot be started is a failed check with the
/// cause in `reason`.
pub async fn run_exec(command: &str, timeout: Duration) -> ExecResult {
    run_in(SHELL, command, timeout).await
}

async fn run_in(shell: &str, command: &str, timeout: Duration) -> ExecResult {
    let mut cmd = crate::scripts::command(shell);
    cmd.arg("-c").arg(command);
    crate::scripts::run(cmd, timeout).await
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
    use std::time::Instant;

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
