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

/// Creates a map (`BPF_MAP_CREATE`) of this type and layout and pins it at
/// `path` (`BPF_OBJ_PIN`), as an agent of another build would have left it.
fn pin_map(path: &std::path::Path, map_type: u32, key_size: u32, value_size: u32, entries: u32) {
    let create = Create {
        map_type,
        key_size,
        value_size,
        max_entries: entries,
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
    let path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
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
}

/// Loads the data plane over one map pinned by `pin` in a fresh bpffs;
/// the load's error.
fn load_over(name: &str, pin: impl FnOnce(&std::path::Path)) -> String {
    let dir = std::env::temp_dir().join(format!("vip-pins-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    vip_tests::sys::mount_bpffs(&dir).expect("mount a bpffs");
    let pins = dir.join("vip").join("old");
    std::fs::create_dir_all(&pins).unwrap();
    pin(&pins);
    let loaded = Dataplane::load(Some(&pins), vip_agent::config::DEFAULT_FLOW_TABLE_SIZE).map(drop);
    let _ = vip_tests::sys::unmount_lazy(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    loaded
        .expect_err("pins of another layout were adopted")
        .to_string()
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
    // A per-CPU array of 16 u64.
    let err = load_over("counters", |pins| {
        pin_map(&pins.join("COUNTERS"), 6, 4, 8, 16);
    });
    assert!(err.contains("COUNTERS"), "{err}");
    assert!(
        err.contains("4-byte keys, 8-byte values and 16 entries")
            && err.contains(&format!("and {} entries", counter::COUNT)),
        "{err}"
    );
    assert!(err.contains("SIGTERM"), "{err}");
}

/// The VIP table of a build before VLAN VIPs (8-byte values: MAC, active,
/// padding) is refused too: read as today's 10-byte `VipState` it would
/// lose every VIP's VLAN.
#[test]
fn a_vip_table_from_before_vlans_is_refused() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    // A hash map of u32 -> 8 bytes, 64 entries.
    let err = load_over("vips", |pins| pin_map(&pins.join("VIPS"), 1, 4, 8, 64));
    assert_eq!(std::mem::size_of::<vip_common::VipState>(), 10);
    assert!(err.contains("VIPS"), "{err}");
    assert!(
        err.contains("4-byte keys, 8-byte values and 64 entries")
            && err.contains("4-byte keys, 10-byte values and 64 entries"),
        "{err}"
    );
}
