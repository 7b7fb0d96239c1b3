//! VRRP on the wire: a raw IP-protocol-112 socket bound to the VRRP interface
//! (multicast 224.0.0.18 with the group joined there, or unicast to peers),
//! sent with TTL 255 from the interface's primary address, and gratuitous ARP
//! over `AF_PACKET`.

use std::{
    io,
    mem::MaybeUninit,
    net::{Ipv4Addr, SocketAddrV4},
    num::NonZeroU32,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::{Interest, unix::AsyncFd};

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: i32 = 112;
/// The VRRP multicast group.
pub const VRRP_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);

/// One received datagram: IPv4 header fields the receive checks need, and
/// the VRRP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub payload: Vec<u8>,
}

/// Splits a raw IPv4 datagram (raw sockets deliver the IP header) into the
/// header fields and the payload; `None` when it is not IPv4/VRRP or too short.
#[must_use]
pub fn split_ipv4(buf: &[u8]) -> Option<Received> {
    let first = *buf.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || buf.len() < ihl || buf[9] != 112 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([buf[2], buf[3]])).min(buf.len());
    if total < ihl {
        return None;
    }
    Some(Received {
        src: Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]),
        dst: Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19]),
        ttl: buf[8],
        payload: buf[ihl..total].to_vec(),
    })
}

/// The VRRP socket of one interface.
pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
}

impl VrrpSocket {
    /// Opens a raw VRRP socket on `iface` (index `ifindex`) sending from
    /// `primary`; joins 224.0.0.18 there when `multicast`. Needs `CAP_NET_RAW`.
    pub fn open(iface: &str, ifindex: u32, primary: Ipv4Addr, multicast: bool) -> io::Result<Self> {
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_VRRP)))?;
        s.bind_device(Some(iface.as_bytes()))?;
        // Not bound to `primary`: a raw socket bound to an address receives
        // only datagrams addressed to it, and adverts go to 224.0.0.18. The
        // source is `primary` anyway: IP_MULTICAST_IF below for multicast,
        // the on-link route for unicast.
        s.set_ttl(255)?;
        s.set_multicast_ttl_v4(255)?;
        s.set_multicast_loop_v4(false)?;
        s.set_multicast_if_v4(&primary)?;
        if multicast {
            let index = NonZeroU32::new(ifindex).map_or(0, NonZeroU32::get);
            s.join_multicast_v4_n(&VRRP_GROUP, &InterfaceIndexOrAddress::Index(index))?;
        }
        s.set_nonblocking(true)?;
        // Readable only: the pacer's thread sends on this socket, and with
        // writable interest too every send's completion (the send buffer
        // freed) woke the run loop, once per advert, for nothing.
        // SAFETY: `Socket` owns its descriptor, which stays open and the same
        // for as long as the AsyncFd (which owns the socket) lives.
        let fd = unsafe { AsyncFd::register_with_interest(s, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    /// Waits for the next VRRP datagram.
    pub async fn recv(&self) -> io::Result<Received> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut buf = [MaybeUninit::<u8>::uninit(); 1500];
            match guard.try_io(|s| s.get_ref().recv_from(&mut buf)) {
                Ok(Ok((n, _))) => {
                    // SAFETY: recv_from initialised the first n bytes.
                    let bytes: &[u8] =
                        unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), n) };
                    if let Some(r) = split_ipv4(bytes) {
                        return Ok(r);
                    }
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    }

    /// The next datagram already waiting in the socket, if any, without
    /// waiting (a busy loop catching up before it acts on a timer).
    #[must_use]
    pub fn try_recv(&self) -> Option<Received> {
        loop {
            let mut buf = [MaybeUninit::<u8>::uninit(); 1500];
            let (n, _) = self.fd.get_ref().recv_from(&mut buf).ok()?;
            // SAFETY: recv_from initialised the first n bytes.
            let bytes: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), n) };
            if let Some(r) = split_ipv4(bytes) {
                return Some(r);
            }
        }
    }

    /// Sends one VRRP message to `dst` (the kernel adds the IP header).
    pub fn send(&self, payload: &[u8], dst: Ipv4Addr) -> io::Result<()> {
        self.fd
            .get_ref()
            .send_to(payload, &SockAddr::from(SocketAddrV4::new(dst, 0)))?;
        Ok(())
    }
}

/// An `AF_PACKET` socket for gratuitous ARP on one interface.
pub struct GarpSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl GarpSocket {
    /// Needs `CAP_NET_RAW`.
    pub fn open(ifindex: u32) -> io::Result<Self> {
        // SAFETY: plain socket(2); the fd is owned below. Protocol 0: send only.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh fd we own.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            ifindex,
        })
    }

    /// Sends one gratuitous ARP request for `vip` from `mac` (sender and
    /// target address both the VIP, to the broadcast address), which makes
    /// every host on the segment update its entry for the VIP; on 802.1Q
    /// VLAN `vlan` (tagged in the frame itself, so it needs no VLAN
    /// interface), or untagged for 0.
    pub fn send(&self, mac: [u8; 6], vip: Ipv4Addr, vlan: u16) -> io::Result<()> {
        let frame = garp_frame(mac, vip, vlan);
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = u16::try_from(libc::AF_PACKET).expect("small");
        sll.sll_protocol = if vlan == 0 { ETH_P_ARP } else { ETH_P_8021Q }.to_be();
        sll.sll_ifindex =
            i32::try_from(self.ifindex).map_err(|_| io::Error::other("ifindex out of range"))?;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        let len = u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).expect("small");
        // SAFETY: frame and sll are valid for their lengths.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const sll).cast(),
                len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;

/// The Ethernet frame of a gratuitous ARP request for `vip` from `mac`,
/// with an 802.1Q tag for `vlan` (priority 0) unless it is 0.
#[must_use]
pub fn garp_frame(mac: [u8; 6], vip: Ipv4Addr, vlan: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(46);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    if vlan != 0 {
        f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
        f.extend_from_slice(&(vlan & 0x0fff).to_be_bytes());
    }
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&vip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&vip.octets());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_frame_bytes() {
        let f = garp_frame([2, 0x99, 0, 0, 0, 3], Ipv4Addr::new(10, 99, 0, 100), 0);
        assert_eq!(
            f,
            [
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0x99, 0, 0, 0, 3, 0x08,
                0x06, // Ethernet
                0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01, // Ethernet/IPv4, request
                2, 0x99, 0, 0, 0, 3, 10, 99, 0, 100, // sender: our MAC, the VIP
                0, 0, 0, 0, 0, 0, 10, 99, 0, 100, // target: the VIP
            ]
        );
    }

    #[test]
    fn a_vlan_garp_is_tagged_after_the_macs() {
        let untagged = garp_frame([2, 0x99, 0, 0, 0, 3], Ipv4Addr::new(10, 99, 0, 100), 0);
        let f = garp_frame([2, 0x99, 0, 0, 0, 3], Ipv4Addr::new(10, 99, 0, 100), 100);
        assert_eq!(f.len(), 46);
        assert_eq!(f[..12], untagged[..12]);
        assert_eq!(f[12..16], [0x81, 0x00, 0x00, 100], "TPID, PCP 0, VID 100");
        assert_eq!(
            f[16..],
            untagged[12..],
            "the same ARP request after the tag"
        );
        let f = garp_frame([2, 0x99, 0, 0, 0, 3], Ipv4Addr::new(10, 99, 0, 100), 4094);
        assert_eq!(f[14..16], [0x0f, 0xfe]);
    }

    #[test]
    fn split_ipv4_checks_header() {
        let mut d = vec![
            0x45, 0, 0, 32, 0, 0, 0, 0, 255, 112, 0, 0, 10, 99, 0, 2, 224, 0, 0, 18,
        ];
        d.extend_from_slice(&[0x31, 51, 100, 1, 0, 100, 0, 0, 10, 99, 0, 100]);
        let r = split_ipv4(&d).expect("vrrp");
        assert_eq!(
            (r.src, r.dst, r.ttl, r.payload.len()),
            (Ipv4Addr::new(10, 99, 0, 2), VRRP_GROUP, 255, 12)
        );
        // Trailing Ethernet padding beyond tot_len is cut off.
        let mut padded = d.clone();
        padded.extend_from_slice(&[0; 14]);
        assert_eq!(split_ipv4(&padded).unwrap().payload.len(), 12);
        d[9] = 6;
        assert!(split_ipv4(&d).is_none(), "not VRRP");
        assert!(split_ipv4(&d[..10]).is_none(), "truncated");
    }
}
