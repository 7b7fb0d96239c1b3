//! `cargo xtask build | run | lab | test | bench | fuzz | deb`: what a build script
//! cannot do. Installs the eBPF toolchain (nightly `rust-src`, bpf-linker
//! built against the nightly's own LLVM), cargo-fuzz, and the Debian packages
//! of the programs the command starts (`vip_tests::programs`), runs the
//! privileged test suite (after `cargo fmt --check` and clippy, and before a
//! short run of each fuzz target), the netns lab, the benchmarks and the
//! fuzz targets, and builds the Debian package.
//!
//! Every step is idempotent: a second run finds what the first installed.
//! Every program started goes through `vip_tests::programs::command`, so it
//! is one this command declared and installed.

mod bootstrap;
mod cluster_demo;
mod deb;
mod demo;
mod fuzz;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use vip_tests::programs::{self, Job};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "vip's build, test, lab and bench runner"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the eBPF toolchain if missing, then build every binary.
    Build {
        /// Build with --release.
        #[arg(long)]
        release: bool,
    },
    /// With no arguments: a live demo in the netns lab (a `RabbitMQ` quorum
    /// cluster behind two vip nodes, failovers under an AMQP workload).
    /// `--quick`: the plain-TCP demo, without `RabbitMQ`. With `-- --config
    /// FILE [--iface IF]`: run the agent for real on this host.
    Run {
        /// Arguments for vip-agent (after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The netns lab on its own: up, down or status.
    Lab {
        #[arg(value_parser = ["up", "down", "status"])]
        action: String,
    },
    /// Everything a contributor must pass: unit, `BPF_PROG_TEST_RUN` and netns tests.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmarks, each beside a baseline measured in the same run.
    Bench,
    /// Builds the cargo-fuzz targets (tests/fuzz) and runs each on its seed
    /// corpus; fails on a crash.
    Fuzz {
        /// One target (default: all).
        #[arg(value_parser = fuzz::TARGETS)]
        target: Option<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = fuzz::LONG_SECONDS)]
        seconds: u64,
    },
    /// The Debian package (target/debian/vip_*.deb), checked by lintian.
    Deb,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    programs::set_job(match &cli.cmd {
        Cmd::Build { .. } => Job::Build,
        Cmd::Run { .. } => Job::Run,
        Cmd::Lab { .. } => Job::Lab,
        Cmd::Test { .. } => Job::Test,
        Cmd::Bench => Job::Bench,
        Cmd::Fuzz { .. } => Job::Fuzz,
        Cmd::Deb => Job::Deb,
    });
    let result = match cli.cmd {
        Cmd::Build { release } => build(release).map(|_| ()),
        Cmd::Run { args } => run(&args),
        Cmd::Lab { action } => lab(&action),
        Cmd::Test { args } => test(&args),
        Cmd::Bench => bench(),
        Cmd::Fuzz { target, seconds } => {
            let targets: Vec<&'static str> = fuzz::TARGETS
                .into_iter()
                .filter(|t| target.as_deref().is_none_or(|want| want == *t))
                .collect();
            fuzz::run(&targets, seconds)
        }
        Cmd::Deb => bootstrap::apt_packages(&programs::packages(Job::Deb))
            .and_then(|()| deb::build())
            .map(|_| ()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (this crate's parent).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

fn cargo() -> Result<Command> {
    let mut c = programs::command(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))?;
    c.current_dir(root());
    c.env("PATH", bootstrap::path_with_linker());
    Ok(c)
}

fn status(mut cmd: Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let st = cmd
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !st.success() {
        bail!("{shown} failed ({st})");
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Installs the toolchain and builds every binary; returns the target dir
/// holding them.
fn build(release: bool) -> Result<PathBuf> {
    bootstrap::ebpf_toolchain()?;
    let mut c = cargo()?;
    c.args(["build", "--bins"]);
    if release {
        c.arg("--release");
    }
    status(c)?;
    Ok(root()
        .join("target")
        .join(if release { "release" } else { "debug" }))
}

fn run(args: &[String]) -> Result<()> {
    let bins = build(false)?;
    let quick = args == ["--quick"];
    if args.is_empty() || quick {
        if !is_root() {
            bail!(
                "the lab demo needs root (network namespaces, XDP): run `sudo -E cargo xtask run`"
            );
        }
        let mut packages = programs::packages(Job::Run);
        if quick {
            // The plain-TCP demo runs no broker.
            packages.retain(|p| *p != "rabbitmq-server");
            bootstrap::apt_packages(&packages)?;
            return demo::run(&bins);
        }
        bootstrap::apt_packages(&packages)?;
        return cluster_demo::run(&bins);
    }
    let mut c = programs::command(bins.join("vip-agent"))?;
    c.args(args);
    status(c)
}

fn lab(action: &str) -> Result<()> {
    if !is_root() {
        bail!("the lab needs root (network namespaces): run `sudo -E cargo xtask lab {action}`");
    }
    match action {
        "up" => {
            let bins = build(false)?;
            bootstrap::apt_packages(&programs::packages(Job::Lab))?;
            demo::lab_up(&bins)
        }
        "down" => demo::lab_down(),
        _ => demo::lab_status(),
    }
}

fn test(args: &[String]) -> Result<()> {
    if !is_root() {
        bail!(
            "the test suite needs root (BPF_PROG_TEST_RUN, network namespaces, XDP): run `sudo -E cargo xtask test`; \
             unprivileged unit tests alone: `cargo test -p vip-agent`"
        );
    }
    bootstrap::apt_packages(&programs::packages(Job::Test))?;
    build(false)?;
    lint()?;
    // The package tests (tests/tests/package.rs) unpack and run this one.
    let deb = deb::build()?;
    let mut c = cargo()?;
    c.env("VIP_DEB", &deb);
    // Unit, integration and binary tests; benches run only under `xtask bench`.
    c.args(["test", "--no-fail-fast", "--lib", "--bins", "--tests"]);
    if !args.is_empty() {
        c.arg("--").args(args);
    }
    run_tests(c)?;
    if args.is_empty() {
        // Each fuzz target briefly on its corpus: a crash fails the command.
        fuzz::run(&fuzz::TARGETS, fuzz::QUICK_SECONDS)?;
    } else {
        println!("fuzz: skipped (a test filter was given); `cargo xtask fuzz` runs the targets");
    }
    Ok(())
}

/// `cargo fmt --check` and `cargo clippy --all-targets -- -D warnings`: style
/// drift fails the test command before any test runs.
fn lint() -> Result<()> {
    bootstrap::lint_components()?;
    let mut fmt = cargo()?;
    fmt.args(["fmt", "--all", "--check"]);
    status(fmt).context("the code is not formatted as rustfmt would: run `cargo fmt --all`")?;
    let mut clippy = cargo()?;
    clippy.args(["clippy", "--all-targets", "--", "-D", "warnings"]);
    status(clippy)
        .context("clippy has warnings (shown above): fix them, they fail the test command")?;
    Ok(())
}

/// Runs `cargo test`, echoing its output, and ends with one summary line
/// (`summary: N passed, N failed`) over every test binary.
fn run_tests(mut c: Command) -> Result<()> {
    use std::io::{BufRead as _, BufReader};
    c.stdout(std::process::Stdio::piped());
    let mut child = c.spawn().context("cannot run cargo test")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let num = |word: &str| -> u64 {
                rest.split(';')
                    .find_map(|part| {
                        part.trim()
                            .trim_start_matches("ok. ")
                            .trim_start_matches("FAILED. ")
                            .strip_suffix(word)
                    })
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0)
            };
            passed += num("passed");
            failed += num("failed");
            ignored += num("ignored");
        }
    }
    let st = child.wait().context("waiting for cargo test")?;
    println!("summary: {passed} passed, {failed} failed, {ignored} skipped");
    if !st.success() || failed > 0 {
        bail!("tests failed ({st})");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

fn bench() -> Result<()> {
    if !is_root() {
        bail!(
            "the benchmarks need root (BPF_PROG_TEST_RUN, network namespaces): run `sudo -E cargo xtask bench`"
        );
    }
    bootstrap::apt_packages(&programs::packages(Job::Bench))?;
    build(true)?;
    let report = root().join("bench-report.md");
    // xdp writes the report; the others append to it. The plots go to
    // docs/bench/, which the README shows.
    for bench in [
        "xdp",
        "conns",
        "throughput",
        "failover",
        "checks",
        "tables",
        "vrrp_cost",
        "amqp",
        "loop_load",
        "soak",
    ] {
        let mut c = cargo()?;
        c.args(["bench", "-p", "vip-tests", "--bench", bench]);
        c.env("VIP_BENCH_REPORT", &report);
        c.env("VIP_BENCH_PLOTS", root().join("docs/bench"));
        status(c)?;
    }
    println!("report: {}", report.display());
    Ok(())
}
