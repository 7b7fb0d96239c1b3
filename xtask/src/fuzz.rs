//! `cargo xtask fuzz [TARGET] [--seconds N]`, and the quick run at the end
//! of `cargo xtask test`: builds the cargo-fuzz targets of `tests/fuzz`
//! (their own crate, outside the workspace), runs each for N seconds on its
//! committed seed corpus, prints per target libFuzzer's execution count
//! (`stat::number_of_executed_units`) and the time taken, and fails if any
//! target crashed, hung or ran out of memory.
//!
//! One build serves both runs, so CI (a clean clone) compiles the targets
//! once: `cargo fuzz build -O -a --sanitizer none`, that is release code
//! (cargo-fuzz's one codegen unit, so the coverage passes do not stop
//! inlining) with debug assertions and overflow checks, and no sanitizer.
//! The code under test is safe Rust, where an out-of-bounds access already
//! panics; what a sanitizer would add is a slower build and runs at about
//! half the speed. What matters here are panics and arithmetic overflow
//! (an `Instant` plus an absurd duration, a length computed past its
//! buffer), which overflow checks turn into crashes. `AYA_BUILD_SKIP=1`
//! leaves the XDP program out of vip-agent's build: the targets never load
//! it, and so need neither bpf-linker nor its build.
//!
//! libFuzzer writes the inputs it finds into the first corpus directory it
//! is given: that is a scratch copy under `target/fuzz/corpus/<target>`
//! (emptied before each run), followed by the committed
//! `tests/fuzz/corpus/<target>`, which is only read. A crash input lands in
//! `tests/fuzz/artifacts/<target>/` (ignored by git), where cargo-fuzz's
//! "Reproduce with" line finds it; libFuzzer's whole output goes to
//! `target/fuzz/logs/<target>.log`.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use vip_tests::programs;

use crate::{bootstrap, root};

/// Every target, in the order they run (`tests/fuzz/fuzz_targets/*.rs`).
pub const TARGETS: [&str; 6] = ["vrrp", "config", "import", "control", "http", "amqp"];
/// Seconds per target of `cargo xtask fuzz`.
pub const LONG_SECONDS: u64 = 300;
/// Seconds per target of `cargo xtask test`'s run.
pub const QUICK_SECONDS: u64 = 10;
/// One input running longer than this is a hang, and fails the run.
const INPUT_TIMEOUT_S: u64 = 10;
/// The flags of the one build; `cargo fuzz run` must get the same ones or
/// it builds again.
const BUILD_FLAGS: [&str; 8] = [
    "--fuzz-dir",
    "tests/fuzz",
    "-O",
    "--debug-assertions",
    "--sanitizer",
    "none",
    "--target-dir",
    "target/fuzz",
];

/// How one target's run went.
struct Outcome {
    target: &'static str,
    executions: Option<u64>,
    took: Duration,
    failure: Option<String>,
}

/// Builds the targets and runs each of `targets` for `seconds`.
pub fn run(targets: &[&'static str], seconds: u64) -> Result<()> {
    bootstrap::cargo_fuzz()?;
    let started = Instant::now();
    let mut build = cargo_fuzz()?;
    build.arg("build").args(BUILD_FLAGS);
    crate::status(build).context("building the fuzz targets")?;
    println!(
        "fuzz: targets built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let mut outcomes = Vec::new();
    for target in targets {
        outcomes.push(run_one(target, seconds)?);
    }
    println!("fuzz: target     executions      time  result");
    for o in &outcomes {
        let execs = o
            .executions
            .map_or_else(|| "?".to_owned(), |n| n.to_string());
        let result = o.failure.as_deref().unwrap_or("ok");
        println!(
            "fuzz: {:<8} {execs:>12} {:>7.1} s  {result}",
            o.target,
            o.took.as_secs_f64()
        );
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.failure.is_some())
        .map(|o| o.target)
        .collect();
    if !failed.is_empty() {
        bail!(
            "fuzz target(s) {} failed: see their output above; a crash is a bug to fix in vip-agent, \
             with a unit test reproducing it, and its input goes to tests/fuzz/corpus/<target>/",
            failed.join(", ")
        );
    }
    Ok(())
}

/// `cargo +nightly fuzz` from the workspace root, with cargo-fuzz on `PATH`.
fn cargo_fuzz() -> Result<Command> {
    // The rustup proxy (not $CARGO, the toolchain's own cargo running
    // xtask), which understands `+nightly`.
    let mut c = programs::command("cargo")?;
    c.current_dir(root())
        .args(["+nightly", "fuzz"])
        .env(
            "PATH",
            bootstrap::path_with(&[bootstrap::cargo_fuzz_home().join("bin")]),
        )
        .env("AYA_BUILD_SKIP", "1");
    Ok(c)
}

fn run_one(target: &'static str, seconds: u64) -> Result<Outcome> {
    let root = root();
    let fuzz = root.join("target/fuzz");
    let scratch = fuzz.join("corpus").join(target);
    let committed = root.join("tests/fuzz/corpus").join(target);
    let logs = fuzz.join("logs");
    let log_path = logs.join(format!("{target}.log"));
    let tmp = scratch_dir(target);
    for dir in [&scratch, &tmp] {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let log =
        File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
    println!(
        "fuzz: {target} for {seconds} s on {} (output: {})",
        shown(&committed),
        shown(&log_path)
    );
    let mut c = cargo_fuzz()?;
    c.arg("run")
        .args(BUILD_FLAGS)
        .arg(target)
        .arg(&scratch)
        .arg(&committed)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_S}"))
        .arg("-print_final_stats=1")
        .env("VIP_FUZZ_TMP", &tmp)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("cannot share the log file")?)
        .stderr(log);
    let started = Instant::now();
    let st = c
        .status()
        .with_context(|| format!("cannot run the fuzz target {target}"))?;
    let took = started.elapsed();
    let _ = std::fs::remove_dir_all(&tmp);
    // This run's directory on the tmpfs, once its last target is gone.
    if let Some(base) = tmp.parent() {
        let _ = std::fs::remove_dir(base);
    }
    let text = std::fs::read_to_string(&log_path)
        .with_context(|| format!("cannot read {}", log_path.display()))?;
    let executions = text.lines().rev().find_map(|l| {
        l.strip_prefix("stat::number_of_executed_units:")
            .and_then(|n| n.trim().parse().ok())
    });
    let failure = if st.success() {
        None
    } else {
        // The end of libFuzzer's report and cargo-fuzz's "Failing input"
        // and "Reproduce with" lines.
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("fuzz: {target} failed ({st}); the end of its output:");
        for l in &lines[lines.len().saturating_sub(60)..] {
            eprintln!("  {l}");
        }
        Some(format!("FAILED ({st}), output in {}", shown(&log_path)))
    };
    Ok(Outcome {
        target,
        executions,
        took,
        failure,
    })
}

/// Where the import target writes the files of each input: on a tmpfs
/// when there is one (file creation on disk would cost more than the
/// import itself), else under target/fuzz. Absolute, as the target wants.
fn scratch_dir(target: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.join(format!("vip-fuzz-{}", std::process::id()))
    } else {
        root().join("target/fuzz/tmp")
    };
    base.join(target)
}

/// `path` relative to the workspace root, when it is inside it.
fn shown(path: &Path) -> String {
    let root = root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}
