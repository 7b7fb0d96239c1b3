//! Pins of another map layout: refused when loading, with what differs.

use vip_agent::dataplane::Dataplane;
use vip_common::counter;
use vip_tests::kit::is_root;

/// `union bpf_attr` for `BPF_MAP_CREATE` (the fields used).
#[repr(C)]
struct Create {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}
/// `union bpf_attr` for `BPF_OBJ_PIN`.
#[repr(C)]
struct Pin {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// Pins left by a build with another map layout (here a 16-entry COUNTERS,
/// as before the `tcp_reset` counter) are refused with a message that says
/// what differs and what to do, instead of being mis-read.
#[test]
fn pins_of_another_layout_are_refused() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let dir = std::env::temp_dir().join(format!("vip-pins-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    vip_tests::sys::mount_bpffs(&dir).expect("mount a bpffs");
    let pins = dir.join("vip").join("old");
    std::fs::create_dir_all(&pins).unwrap();
    // BPF_MAP_CREATE a per-CPU array of 16 u64 and BPF_OBJ_PIN it as COUNTERS.
    let create = Create {
        map_type: 6,
        key_size: 4,
        value_size: 8,
        max_entries: 16,
        map_flags: 0,
    };
    // SAFETY: a valid attr of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0,
            (&raw const create).cast::<u8>(),
            std::mem::size_of::<Create>(),
        )
    };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    let path = std::ffi::CString::new(pins.join("COUNTERS").to_str().unwrap()).unwrap();
    let pin = Pin {
        pathname: path.as_ptr() as u64,
        bpf_fd: u32::try_from(fd).unwrap(),
        file_flags: 0,
    };
    // SAFETY: as above; `path` outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            6,
            (&raw const pin).cast::<u8>(),
            std::mem::size_of::<Pin>(),
        )
    };
    assert_eq!(rc, 0, "BPF_OBJ_PIN: {}", std::io::Error::last_os_error());
    // SAFETY: our fd.
    unsafe { libc::close(i32::try_from(fd).unwrap()) };
    let loaded = Dataplane::load(Some(&pins), vip_agent::config::DEFAULT_FLOW_TABLE_SIZE).map(drop);
    let _ = vip_tests::sys::unmount_lazy(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let err = loaded
        .expect_err("pins of another layout were adopted")
        .to_string();
    assert!(err.contains("COUNTERS"), "{err}");
    assert!(
        err.contains("4-byte keys, 8-byte values and 16 entries")
            && err.contains(&format!("and {} entries", counter::COUNT)),
        "{err}"
    );
    assert!(err.contains("SIGTERM"), "{err}");
}
