//! `cargo xtask deb`: the Debian package `vip`, built by cargo-deb from
//! `[package.metadata.deb]` in vip-agent/Cargo.toml, then held to Debian
//! policy by lintian (an error fails the command). `cargo xtask test`
//! builds it too: the package tests unpack and run what it installs.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use vip_tests::programs;

use crate::{bootstrap, cargo, root, status};

/// Builds the package and returns its path (under target/debian/).
pub fn build() -> Result<PathBuf> {
    let cargo_deb = bootstrap::cargo_deb()?;
    bootstrap::ebpf_toolchain()?;
    // The packaged binaries and vip-docs, optimised.
    let mut c = cargo()?;
    c.args(["build", "--release", "-p", "vip-agent", "--bins"]);
    status(c)?;
    let release = root().join("target/release");
    let docs = release.join("docs");
    if docs.exists() {
        std::fs::remove_dir_all(&docs).with_context(|| format!("removing {}", docs.display()))?;
    }
    let mut c = programs::command(release.join("vip-docs"))?;
    c.arg(&docs);
    status(c).context("writing the man pages and completions")?;

    let out_dir = root().join("target/debian");
    let mut c = programs::command(&cargo_deb)?;
    c.current_dir(root())
        .args(["deb", "-p", "vip-agent", "--no-build", "--output"])
        .arg(&out_dir);
    let out = c.output().context("cannot run cargo-deb")?;
    if !out.status.success() {
        bail!(
            "cargo-deb failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // cargo-deb prints the package's path last.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let deb = PathBuf::from(
        stdout
            .lines()
            .rev()
            .find(|l| std::path::Path::new(l.trim()).extension() == Some("deb".as_ref()))
            .with_context(|| format!("cargo-deb named no .deb: {stdout}"))?
            .trim(),
    );

    let mut c = programs::command("lintian")?;
    c.args(["--fail-on", "error"]).arg(&deb);
    status(c).context("lintian found errors in the package (listed above)")?;
    println!("package: {}", deb.display());
    Ok(deb)
}
