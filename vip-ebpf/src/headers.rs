//! Wire headers as byte arrays (alignment 1, so any offset is a valid read) and
//! the bounds-checked accessor every packet access goes through.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;

pub const ETH_P_IPV4: [u8; 2] = [0x08, 0x00];
pub const ETH_P_ARP: [u8; 2] = [0x08, 0x06];
pub const ETH_P_8021Q: [u8; 2] = [0x81, 0x00];
/// The VLAN id bits of an 802.1Q tag's TCI (the rest: priority and DEI).
pub const VLAN_VID_MASK: u16 = 0x0fff;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

pub const ARP_HTYPE_ETHER: [u8; 2] = [0x00, 0x01];
pub const ARP_OP_REQUEST: [u8; 2] = [0x00, 0x01];
pub const ARP_OP_REPLY: [u8; 2] = [0x00, 0x02];

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_TIME_EXCEEDED: u8 = 11;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ethertype: [u8; 2],
}

/// The 802.1Q tag after the source MAC; `ethertype` is the inner type.
#[repr(C)]
pub struct VlanHdr {
    pub tci: [u8; 2],
    pub ethertype: [u8; 2],
}

/// ARP for Ethernet / IPv4 (the only kind answered).
#[repr(C)]
pub struct ArpHdr {
    pub htype: [u8; 2],
    pub ptype: [u8; 2],
    pub hlen: u8,
    pub plen: u8,
    pub op: [u8; 2],
    pub sha: [u8; 6],
    pub spa: [u8; 4],
    pub tha: [u8; 6],
    pub tpa: [u8; 4],
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub ver_ihl: u8,
    pub tos: u8,
    pub tot_len: [u8; 2],
    pub id: [u8; 2],
    pub frag_off: [u8; 2],
    pub ttl: u8,
    pub proto: u8,
    pub check: [u8; 2],
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
}

#[repr(C)]
pub struct TcpHdr {
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub seq: [u8; 4],
    pub ack: [u8; 4],
    pub doff_res: u8,
    pub flags: u8,
    pub window: [u8; 2],
    pub check: [u8; 2],
    pub urg: [u8; 2],
}

#[repr(C)]
pub struct UdpHdr {
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub len: [u8; 2],
    pub check: [u8; 2],
}

#[repr(C)]
pub struct IcmpHdr {
    pub kind: u8,
    pub code: u8,
    pub check: [u8; 2],
    pub rest: [u8; 4],
}

/// A pointer to a `T` at `off` bytes into the frame, or `None` when the frame
/// is too short. The comparison against `data_end` is what the verifier needs
/// to see before any access.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}

/// RFC 1624 incremental update of an Internet checksum when one 16-bit word
/// changes from `old` to `new`.
#[inline(always)]
pub fn csum_replace(check: [u8; 2], old: u16, new: u16) -> [u8; 2] {
    let mut sum = u32::from(!u16::from_be_bytes(check)) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    #[expect(clippy::cast_possible_truncation, reason = "folded to 16 bits above")]
    (!(sum as u16)).to_be_bytes()
}

/// The checksum of a 20-byte TCP header without payload (its `check` field
/// zero) under the IPv4 pseudo-header: a fixed-size sum the verifier accepts.
#[inline(always)]
pub fn tcp_checksum(saddr: [u8; 4], daddr: [u8; 4], tcp: &TcpHdr) -> [u8; 2] {
    let w = |b: [u8; 2]| u32::from(u16::from_be_bytes(b));
    let mut sum = w([saddr[0], saddr[1]])
        + w([saddr[2], saddr[3]])
        + w([daddr[0], daddr[1]])
        + w([daddr[2], daddr[3]])
        + u32::from(IPPROTO_TCP)
        + 20;
    sum += w(tcp.sport) + w(tcp.dport);
    sum += w([tcp.seq[0], tcp.seq[1]]) + w([tcp.seq[2], tcp.seq[3]]);
    sum += w([tcp.ack[0], tcp.ack[1]]) + w([tcp.ack[2], tcp.ack[3]]);
    sum += w([tcp.doff_res, tcp.flags]) + w(tcp.window) + w(tcp.check) + w(tcp.urg);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    #[expect(clippy::cast_possible_truncation, reason = "folded to 16 bits above")]
    (!(sum as u16)).to_be_bytes()
}
