//! Builds the XDP program (`vip-ebpf`) for `bpfel-unknown-none` with aya-build
//! and leaves the object in `OUT_DIR/vip`, where `dataplane` embeds it.
//!
//! The eBPF build needs the nightly toolchain with `rust-src` and `bpf-linker`;
//! `cargo xtask build` installs both. bpf-linker is looked up on `PATH`, then in
//! the place xtask installs it (`$CARGO_HOME/vip-bpf-linker/bin`).
//!
//! With `AYA_BUILD_SKIP=1` (aya-build's own switch) it builds no program and
//! leaves an empty object instead, which `dataplane` refuses to load with a
//! clear error: the fuzz targets (`tests/fuzz`) link this library for its
//! parsers only, and so need neither the eBPF toolchain nor its build time.

use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        let out = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR is not set")?);
        fs::write(out.join("vip"), b"").context("cannot write the empty XDP object")?;
        return Ok(());
    }
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let linker_dir = cargo_home.join("vip-bpf-linker").join("bin");
    if linker_dir.join("bpf-linker").exists() {
        let mut paths = vec![linker_dir];
        paths.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
        // SAFETY: build scripts are single-threaded here.
        unsafe { env::set_var("PATH", env::join_paths(paths)?) };
    } else if which_bpf_linker().is_none() {
        return Err(anyhow!(
            "bpf-linker not found on PATH or in {}: run `cargo xtask build` once to install the eBPF toolchain",
            linker_dir.display()
        ));
    }

    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "vip-ebpf")
        .ok_or_else(|| anyhow!("vip-ebpf package not found in the workspace"))?;
    let root = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}

fn which_bpf_linker() -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|p| p.join("bpf-linker"))
        .find(|p| p.exists())
}
