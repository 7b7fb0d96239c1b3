//! The pin root: a bpffs, mounted by the agent when the configured directory
//! is not one yet (the host has none at /sys/fs/bpf until someone mounts it).

use std::{
    ffi::CString,
    io,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

/// Why the pin root is not usable: what failed, on which directory.
#[derive(Debug, thiserror::Error)]
#[error("{}: {what}", path.display())]
pub struct BpffsError {
    pub what: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// `BPF_FS_MAGIC` from `linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether `dir` is the root of (or inside) a bpffs.
pub fn is_bpffs(dir: &Path) -> io::Result<bool> {
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: zeroed statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &raw mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type == BPF_FS_MAGIC)
}

/// Creates `dir` and mounts a bpffs on it unless it already is one.
pub fn ensure_mounted(dir: &Path) -> Result<(), BpffsError> {
    let io_err = |what: &'static str, source| BpffsError {
        what,
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| io_err("cannot create the bpffs directory ([node] bpffs)", e))?;
    if is_bpffs(dir).map_err(|e| io_err("cannot stat the bpffs directory", e))? {
        return Ok(());
    }
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io_err("bad path", io::Error::other(e)))?;
    // SAFETY: valid C strings; no data argument.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io_err(
            "is not a bpffs and mounting one there failed (needs CAP_SYS_ADMIN, or mount it beforehand: mount -t bpf bpf DIR)",
            io::Error::last_os_error(),
        ));
    }
    tracing::info!(dir = %dir.display(), "mounted a bpffs");
    Ok(())
}
