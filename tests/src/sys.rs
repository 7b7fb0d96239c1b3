//! The raw kernel calls the lab needs, made here rather than through a tool
//! a new machine may lack: loading a pass-only XDP program (bpf(2)),
//! attaching XDP by rtnetlink, tx checksum offload and a NIC's statistics
//! (the ethtool ioctl: `ethtool -K IF tx off`, `ethtool -k`, `ethtool -S`),
//! mounting a bpffs, and sending and receiving raw Ethernet frames
//! (`AF_PACKET`, tags included).
//!
//! Everything here acts on the calling thread's network namespace.

use std::{
    ffi::CString,
    io,
    mem::size_of,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `XDP_PASS`.
pub(crate) const XDP_PASS: i32 = 2;

/// The `BPF_PROG_LOAD` part of `union bpf_attr` (up to `expected_attach_type`;
/// the kernel zero-fills the rest).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_OBJ_GET_INFO_BY_FD` part of `union bpf_attr`.
#[repr(C)]
struct InfoByFdAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The start of `struct bpf_prog_info`: enough for the id.
#[repr(C)]
#[derive(Default)]
struct ProgInfoHead {
    prog_type: u32,
    id: u32,
}

/// Loads `r0 = XDP_PASS; exit` as an XDP program named `vip_lab_pass`.
pub(crate) fn load_pass_xdp() -> Result<OwnedFd> {
    load_verdict_xdp(XDP_PASS)
}

/// Loads `r0 = verdict; exit` as an XDP program named `vip_lab_pass`.
pub(crate) fn load_verdict_xdp(verdict: i32) -> Result<OwnedFd> {
    let imm = verdict.to_ne_bytes();
    // struct bpf_insn { u8 code; u8 dst_reg:4, src_reg:4; s16 off; s32 imm; }
    let insns: [[u8; 8]; 2] = [
        // BPF_ALU64 | BPF_MOV | BPF_K, dst r0
        [0x07 | 0xb0, 0, 0, 0, imm[0], imm[1], imm[2], imm[3]],
        // BPF_JMP | BPF_EXIT
        [0x05 | 0x90, 0, 0, 0, 0, 0, 0, 0],
    ];
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut name = [0u8; 16];
    name[..12].copy_from_slice(b"vip_lab_pass");
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: 2,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: u32::try_from(log.len()).expect("small log"),
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        ..ProgLoadAttr::default()
    };
    // SAFETY: attr points to valid instructions, license and log buffer that
    // outlive the call.
    let fd = unsafe { bpf(BPF_PROG_LOAD, &attr) };
    if let Err(err) = fd {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let hint = if err.raw_os_error() == Some(libc::EPERM) {
            " (need root or CAP_BPF)"
        } else {
            ""
        };
        return Err(err).with_context(|| {
            format!(
                "cannot load an XDP program returning {verdict}{hint}; verifier log: {:?}",
                String::from_utf8_lossy(&log[..end])
            )
        });
    }
    let fd = RawFd::try_from(fd.expect("checked")).expect("fd fits an int");
    // SAFETY: bpf(2) returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// bpf(2) with `attr`, its size being `T`'s; the return value, or the error.
///
/// # Safety
/// Every pointer in `attr` must be valid for what `cmd` does with it.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<i64> {
    // SAFETY: `attr` is a live `T` of the size passed; the caller vouches
    // for the pointers inside it.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_ref(attr), size_of::<T>()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The kernel's id of the BPF program `fd` (what `ip link` shows).
pub(crate) fn prog_id(fd: BorrowedFd<'_>) -> Result<u32> {
    let mut info = ProgInfoHead::default();
    let attr = InfoByFdAttr {
        bpf_fd: u32::try_from(fd.as_raw_fd()).expect("fd is non-negative"),
        info_len: u32::try_from(size_of::<ProgInfoHead>()).expect("small"),
        info: (&raw mut info) as u64,
    };
    // SAFETY: attr points to `info`, which outlives the call.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) }.context("cannot read the BPF program's info")?;
    Ok(info.id)
}

/// The index of interface `ifname` in the calling thread's namespace.
pub(crate) fn ifindex(ifname: &str) -> Result<u32> {
    let c = CString::new(ifname).with_context(|| format!("bad interface name {ifname:?}"))?;
    // SAFETY: a valid C string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("interface {ifname} does not exist"));
    }
    Ok(index)
}

const RTM_SETLINK: u16 = 19;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLMSG_ERROR: u16 = 2;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_FLAGS: u16 = 3;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_EXT_ACK: libc::c_int = 11;
/// Attach in native (driver) mode; fail rather than fall back to generic.
pub(crate) const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// Attaches the XDP program `prog` to interface `ifindex` with `flags`, by
/// `RTM_SETLINK` with a nested `IFLA_XDP`, and waits for the kernel's ack.
/// Such an attachment lasts until the interface goes, not just while `prog`
/// is open.
pub(crate) fn attach_xdp(ifindex: u32, prog: BorrowedFd<'_>, flags: u32) -> Result<()> {
    const SEQ: u32 = 1;
    let mut msg = Vec::with_capacity(52);
    // struct nlmsghdr: len (patched below), type, flags, seq, pid
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&RTM_SETLINK.to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg.extend_from_slice(&SEQ.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    // struct ifinfomsg: family, pad, type, index, flags, change
    msg.extend_from_slice(&[u8::try_from(libc::AF_UNSPEC).expect("small"), 0, 0, 0]);
    msg.extend_from_slice(
        &i32::try_from(ifindex)
            .context("interface index")?
            .to_ne_bytes(),
    );
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    // IFLA_XDP { IFLA_XDP_FD, IFLA_XDP_FLAGS }: each rtattr is len, type, value.
    msg.extend_from_slice(&20u16.to_ne_bytes());
    msg.extend_from_slice(&(IFLA_XDP | NLA_F_NESTED).to_ne_bytes());
    msg.extend_from_slice(&8u16.to_ne_bytes());
    msg.extend_from_slice(&IFLA_XDP_FD.to_ne_bytes());
    msg.extend_from_slice(&prog.as_raw_fd().to_ne_bytes());
    msg.extend_from_slice(&8u16.to_ne_bytes());
    msg.extend_from_slice(&IFLA_XDP_FLAGS.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    let len = u32::try_from(msg.len()).expect("small message");
    msg[..4].copy_from_slice(&len.to_ne_bytes());

    let sock = netlink_socket()?;
    // SAFETY: a zeroed sockaddr_nl with the family set addresses the kernel.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::sa_family_t::try_from(libc::AF_NETLINK).expect("small");
    // SAFETY: msg and kernel are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&raw const kernel).cast(),
            u32::try_from(size_of::<libc::sockaddr_nl>()).expect("small"),
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error()).context("cannot send RTM_SETLINK");
    }

    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error())
                .context("no answer from the kernel to RTM_SETLINK");
        }
        let data = &buf[..usize::try_from(n).expect("non-negative")];
        let mut off = 0;
        while off + 16 <= data.len() {
            let mlen = u32_at(data, off) as usize;
            let mtype = u16_at(data, off + 4);
            let mflags = u16_at(data, off + 6);
            let mseq = u32_at(data, off + 8);
            if mlen < 16 || off + mlen > data.len() {
                bail!("malformed netlink answer to RTM_SETLINK");
            }
            if mtype == NLMSG_ERROR && mseq == SEQ {
                return ack_result(&data[off..off + mlen], mflags);
            }
            off += align4(mlen);
        }
    }
}

/// Interprets an `NLMSG_ERROR` message: 0 is the ack, else `-errno` and,
/// with extended acks, the kernel's message.
fn ack_result(m: &[u8], flags: u16) -> Result<()> {
    if m.len() < 20 {
        bail!("short netlink error message");
    }
    let errno = -i32::from_ne_bytes(m[16..20].try_into().expect("4 bytes"));
    if errno == 0 {
        return Ok(());
    }
    let mut text = None;
    if flags & NLM_F_ACK_TLVS != 0 && m.len() >= 36 {
        // After the error code comes the request's header (and its payload
        // unless capped), then attributes.
        let echoed = if flags & NLM_F_CAPPED != 0 {
            16
        } else {
            align4(u32_at(m, 20) as usize)
        };
        let mut off = 20 + echoed;
        while off + 4 <= m.len() {
            let alen = usize::from(u16_at(m, off));
            let atype = u16_at(m, off + 2);
            if alen < 4 || off + alen > m.len() {
                break;
            }
            if atype == NLMSGERR_ATTR_MSG {
                let v = &m[off + 4..off + alen];
                let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
                text = Some(String::from_utf8_lossy(&v[..end]).into_owned());
            }
            off += align4(alen);
        }
    }
    let err = io::Error::from_raw_os_error(errno);
    match text {
        Some(t) => Err(err).with_context(|| format!("the kernel refused: {t}")),
        None => Err(err.into()),
    }
}

fn netlink_socket() -> Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("cannot open a NETLINK_ROUTE socket");
    }
    // SAFETY: a new fd that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // Best effort: extended acks carry the kernel's reason for a refusal.
    let one: libc::c_int = 1;
    // SAFETY: valid option value and length.
    unsafe {
        libc::setsockopt(
            fd,
            SOL_NETLINK,
            NETLINK_EXT_ACK,
            (&raw const one).cast(),
            u32::try_from(size_of::<libc::c_int>()).expect("small"),
        );
    }
    set_recv_timeout(&sock, Duration::from_secs(5))?;
    Ok(sock)
}

fn set_recv_timeout(sock: &OwnedFd, timeout: Duration) -> Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).expect("small timeout"),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
    };
    // SAFETY: valid option value and length.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            u32::try_from(size_of::<libc::timeval>()).expect("small"),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).context("cannot set SO_RCVTIMEO");
    }
    Ok(())
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSTATS: u32 = 0x1d;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
/// `ETH_SS_STATS`: the string set naming `ETHTOOL_GSTATS`' counters.
const ETH_SS_STATS: u32 = 1;
const ETH_GSTRING_LEN: usize = 32;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with the `ifr_data` member.
#[repr(C)]
struct IfreqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// Switches tx checksum offload of `ifname` on or off (`ethtool -K IF tx
/// on|off`), then reads it back to check.
pub(crate) fn set_tx_checksum(ifname: &str, on: bool) -> Result<()> {
    let set = ethtool_value(ifname, ETHTOOL_STXCSUM, u32::from(on)).with_context(|| {
        format!(
            "cannot switch tx checksum offload of {ifname} {}",
            if on { "on" } else { "off" }
        )
    });
    set?;
    let now = tx_checksum(ifname)?;
    if now != on {
        bail!(
            "tx checksum offload of {ifname} is still {}",
            if now { "on" } else { "off" }
        );
    }
    Ok(())
}

/// Whether tx checksum offload of `ifname` is on (`ethtool -k IF`'s
/// `tx-checksumming`).
pub fn tx_checksum(ifname: &str) -> Result<bool> {
    let v = ethtool_value(ifname, ETHTOOL_GTXCSUM, 0)
        .with_context(|| format!("cannot read tx checksum offload of {ifname}"))?;
    Ok(v != 0)
}

/// The driver's statistics of `ifname` by name, in the driver's order
/// (`ethtool -S IF`; veth has `rx_queue_0_xdp_packets`, `rx_queue_0_xdp_tx`...).
pub fn nic_stats(ifname: &str) -> Result<Vec<(String, u64)>> {
    let what = || format!("cannot read the statistics of {ifname} (ethtool ioctl)");
    // The structs are built in u64 buffers (8-byte aligned) through their
    // bytes, in native byte order.
    // struct ethtool_sset_info { u32 cmd, reserved; u64 sset_mask; u32 data[1] }
    let mut sset = [0u64; 3];
    {
        let b = as_bytes(&mut sset);
        put_u32(b, 0, ETHTOOL_GSSET_INFO);
        b[8..16].copy_from_slice(&(1u64 << ETH_SS_STATS).to_ne_bytes());
    }
    ethtool_ioctl(ifname, sset.as_mut_ptr().cast()).with_context(what)?;
    if sset[1] & (1 << ETH_SS_STATS) == 0 {
        return Ok(Vec::new());
    }
    let n = u32_at(as_bytes(&mut sset), 16);
    let count = usize::try_from(n).expect("u32 fits usize");
    // struct ethtool_gstrings { u32 cmd, string_set, len; u8 data[len * 32] }
    let mut strings = vec![0u64; (12 + count * ETH_GSTRING_LEN).div_ceil(8)];
    {
        let b = as_bytes(&mut strings);
        put_u32(b, 0, ETHTOOL_GSTRINGS);
        put_u32(b, 4, ETH_SS_STATS);
        put_u32(b, 8, n);
    }
    ethtool_ioctl(ifname, strings.as_mut_ptr().cast()).with_context(what)?;
    // struct ethtool_stats { u32 cmd, n_stats; u64 data[n_stats] }
    let mut stats = vec![0u64; 1 + count];
    {
        let b = as_bytes(&mut stats);
        put_u32(b, 0, ETHTOOL_GSTATS);
        put_u32(b, 4, n);
    }
    ethtool_ioctl(ifname, stats.as_mut_ptr().cast()).with_context(what)?;
    let names = &as_bytes(&mut strings)[12..];
    Ok(names
        .chunks_exact(ETH_GSTRING_LEN)
        .zip(&stats[1..])
        .map(|(name, value)| {
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            (String::from_utf8_lossy(&name[..end]).into_owned(), *value)
        })
        .collect())
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

/// A `u64` buffer seen as its bytes (8-byte aligned for the ioctl structs).
fn as_bytes(words: &mut [u64]) -> &mut [u8] {
    let len = std::mem::size_of_val(words);
    // SAFETY: any bytes are valid u8s; the length and lifetime are the slice's.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast(), len) }
}

fn ethtool_value(ifname: &str, cmd: u32, data: u32) -> io::Result<u32> {
    let mut value = EthtoolValue { cmd, data };
    ethtool_ioctl(ifname, (&raw mut value).cast())?;
    Ok(value.data)
}

/// `ioctl(SIOCETHTOOL)` on `ifname` with the ethtool command struct at `data`
/// (which the kernel reads and writes).
fn ethtool_ioctl(ifname: &str, data: *mut libc::c_void) -> io::Result<()> {
    if ifname.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    let mut ifr = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data,
        _pad: [0; 16],
    };
    ifr.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifr and the struct it points to outlive the call; the caller
    // sized that struct for its command.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &raw mut ifr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Mounts a bpffs at `dir` (`mount -t bpf bpf DIR`).
pub fn mount_bpffs(dir: &Path) -> Result<()> {
    let target = CString::new(dir.as_os_str().as_encoded_bytes())
        .with_context(|| format!("bad path {}", dir.display()))?;
    // SAFETY: valid C strings; no data argument.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("cannot mount a bpffs at {}", dir.display()));
    }
    Ok(())
}

/// Detaches the mount at `dir` (`umount -l DIR`).
pub fn unmount_lazy(dir: &Path) -> Result<()> {
    let target = CString::new(dir.as_os_str().as_encoded_bytes())
        .with_context(|| format!("bad path {}", dir.display()))?;
    // SAFETY: a valid C string.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("cannot unmount {}", dir.display()));
    }
    Ok(())
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes(b[off..off + 2].try_into().expect("2 bytes"))
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// An `AF_PACKET` socket that sends whole Ethernet frames out of one
/// interface of the calling thread's network namespace (protocol 0: it
/// receives nothing). For floods of crafted frames in the lab.
#[derive(Debug)]
pub struct PacketSender {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSender {
    /// Opens the socket on `ifname`.
    pub fn open(ifname: &str) -> Result<Self> {
        let name = CString::new(ifname).context("interface name")?;
        // SAFETY: a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {ifname}: {}", io::Error::last_os_error());
        }
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("socket(AF_PACKET)");
        }
        Ok(Self {
            // SAFETY: a fresh fd nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            ifindex: i32::try_from(ifindex).context("ifindex")?,
        })
    }

    /// Sends `frame` (from its destination MAC on) as it is.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        if frame.len() < 14 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "shorter than an Ethernet header",
            ));
        }
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        #[expect(clippy::cast_possible_truncation, reason = "AF_PACKET is 17")]
        {
            addr.sll_family = libc::AF_PACKET as u16;
        }
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: the buffer and the address are valid for the call.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                #[expect(clippy::cast_possible_truncation, reason = "a small struct")]
                {
                    size_of::<libc::sockaddr_ll>() as u32
                },
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// An `AF_PACKET` socket that receives every frame arriving on one
/// interface of the calling thread's network namespace (not those it
/// sends), with any 802.1Q tag the kernel moved into the packet's metadata
/// put back after the MACs, as `tcpdump` shows it: the kernel untags a
/// frame before packet sockets see it, and reports the tag in
/// `PACKET_AUXDATA`.
#[derive(Debug)]
pub struct PacketReceiver {
    fd: OwnedFd,
}

/// `struct tpacket_auxdata` (the kernel's field names).
#[repr(C)]
#[expect(clippy::struct_field_names, reason = "the kernel's names")]
#[derive(Clone, Copy, Default)]
struct TpacketAuxdata {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

impl PacketReceiver {
    /// Opens the socket on `ifname` (`ETH_P_ALL`, with `PACKET_AUXDATA`).
    pub fn open(ifname: &str) -> Result<Self> {
        let index = ifindex(ifname)?;
        #[expect(clippy::cast_possible_truncation, reason = "ETH_P_ALL is 3")]
        let all = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(all),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("socket(AF_PACKET)");
        }
        // SAFETY: a fresh fd nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        #[expect(clippy::cast_possible_truncation, reason = "AF_PACKET is 17")]
        {
            addr.sll_family = libc::AF_PACKET as u16;
        }
        addr.sll_protocol = all;
        addr.sll_ifindex = i32::try_from(index).context("ifindex")?;
        #[expect(clippy::cast_possible_truncation, reason = "a small struct")]
        let len = size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: a valid address of the size passed.
        if unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) } != 0 {
            return Err(io::Error::last_os_error()).with_context(|| format!("bind to {ifname}"));
        }
        let on: libc::c_int = 1;
        #[expect(clippy::cast_possible_truncation, reason = "an int")]
        let int_len = size_of::<libc::c_int>() as u32;
        // SAFETY: an int option of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_AUXDATA,
                (&raw const on).cast(),
                int_len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error()).context("PACKET_AUXDATA");
        }
        Ok(Self { fd })
    }

    /// The next frame that arrived, waiting at most `timeout`; `None` when
    /// none came in time.
    pub fn recv(&self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&raw mut pfd, 1, ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Ok(None);
            }
            if let Some(frame) = self.recv_one()? {
                return Ok(Some(frame));
            }
            if left.is_zero() {
                return Ok(None);
            }
        }
    }

    /// One datagram without waiting; `None` for one this host sent.
    fn recv_one(&self) -> io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; 2048];
        let mut control = [0u64; 16];
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: all-zero is a valid msghdr; the pointers are set below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&raw mut from).cast();
        #[expect(clippy::cast_possible_truncation, reason = "a small struct")]
        {
            msg.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
        }
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of::<[u64; 16]>();
        // SAFETY: every buffer msg points to lives across the call.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &raw mut msg, libc::MSG_DONTWAIT) };
        let Ok(n) = usize::try_from(n) else {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                Err(e)
            };
        };
        if from.sll_pkttype == libc::PACKET_OUTGOING {
            return Ok(None);
        }
        buf.truncate(n);
        let mut aux = TpacketAuxdata::default();
        // SAFETY: the kernel filled msg's control buffer; the CMSG_* walk
        // stays inside msg_controllen.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA {
                    aux = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<TpacketAuxdata>());
                }
                c = libc::CMSG_NXTHDR(&raw const msg, c);
            }
        }
        if aux.tp_status & TP_STATUS_VLAN_VALID != 0 && buf.len() >= 12 {
            let tpid = if aux.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
                aux.tp_vlan_tpid
            } else {
                0x8100
            };
            let mut tag = tpid.to_be_bytes().to_vec();
            tag.extend_from_slice(&aux.tp_vlan_tci.to_be_bytes());
            buf.splice(12..12, tag);
        }
        Ok(Some(buf))
    }
}

/// Makes `cmd` start in a mount namespace of its own in which
/// `/run/systemd/journal` is `dir`: a datagram socket `dir/socket` then
/// receives what the program sends to journald (the journal's native
/// protocol), and nothing reaches the host's journal. The namespace holds a
/// tmpfs over `/run/systemd`, so only the program sees the change; on a host
/// without `/run/systemd` (no systemd) an empty one is made to mount over.
pub fn with_journal_at(cmd: &mut std::process::Command, dir: &Path) -> Result<()> {
    use std::os::unix::process::CommandExt as _;
    let systemd = Path::new("/run/systemd");
    if !systemd.is_dir() {
        std::fs::create_dir_all(systemd)
            .with_context(|| format!("cannot make {} to mount over", systemd.display()))?;
    }
    let source = CString::new(dir.as_os_str().as_encoded_bytes())
        .with_context(|| format!("bad path {}", dir.display()))?;
    // SAFETY: the closure makes only system calls (async-signal-safe) on C
    // strings made before the fork, and allocates nothing: the error is the
    // bare errno (spawn's error names the command).
    unsafe {
        cmd.pre_exec(move || {
            let none = std::ptr::null();
            let private = libc::MS_REC | libc::MS_PRIVATE;
            let journal = c"/run/systemd/journal".as_ptr();
            let ok = libc::unshare(libc::CLONE_NEWNS) == 0
                && libc::mount(none, c"/".as_ptr(), none, private, none.cast()) == 0
                && libc::mount(
                    c"tmpfs".as_ptr(),
                    c"/run/systemd".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    none.cast(),
                ) == 0
                && libc::mkdir(journal, 0o755) == 0
                && libc::mount(source.as_ptr(), journal, none, libc::MS_BIND, none.cast()) == 0;
            if ok {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
    Ok(())
}

/// One entry of the journal's native protocol
/// (<https://systemd.io/JOURNAL_NATIVE_PROTOCOL>): `NAME=value\n` lines, or for a
/// value with a newline `NAME\n`, its length as a little-endian u64, the
/// value and `\n`. `None` when the datagram is not well formed.
#[must_use]
pub fn journal_fields(mut datagram: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut fields = Vec::new();
    while !datagram.is_empty() {
        let end = datagram.iter().position(|&b| b == b'\n')?;
        let line = &datagram[..end];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            fields.push((
                String::from_utf8(line[..eq].to_vec()).ok()?,
                line[eq + 1..].to_vec(),
            ));
            datagram = &datagram[end + 1..];
        } else {
            let name = String::from_utf8(line.to_vec()).ok()?;
            let rest = &datagram[end + 1..];
            let len = usize::try_from(u64::from_le_bytes(rest.get(..8)?.try_into().ok()?)).ok()?;
            let value = rest.get(8..8 + len)?;
            if rest.get(8 + len) != Some(&b'\n') {
                return None;
            }
            fields.push((name, value.to_vec()));
            datagram = &rest[8 + len + 1..];
        }
    }
    Some(fields)
}

#[cfg(test)]
mod journal_tests {
    use super::journal_fields;

    #[test]
    fn both_encodings_of_the_native_protocol_are_read() {
        let mut d = b"MESSAGE=hello\nPRIORITY=6\n".to_vec();
        d.extend(b"VIP_TEXT\n");
        d.extend(5u64.to_le_bytes());
        d.extend(b"a\nb c\n");
        let f = journal_fields(&d).expect("well formed");
        assert_eq!(
            f,
            vec![
                ("MESSAGE".into(), b"hello".to_vec()),
                ("PRIORITY".into(), b"6".to_vec()),
                ("VIP_TEXT".into(), b"a\nb c".to_vec()),
            ]
        );
        assert_eq!(journal_fields(b"MESSAGE=no newline"), None);
        assert_eq!(journal_fields(b"NAME\n\x09\0\0\0\0\0\0\0short\n"), None);
    }
}
