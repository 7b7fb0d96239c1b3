//! The node's view of its network: interfaces with their MAC and IPv4
//! addresses (rtnetlink), the kernel's neighbour table, and ARP resolution of
//! backends over an `AF_PACKET` socket when the kernel has no entry.

use std::{
    collections::BTreeMap,
    io,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use futures::TryStreamExt as _;
use netlink_packet_route::{
    address::AddressAttribute,
    link::LinkAttribute,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState},
};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot open a netlink socket")]
    Socket(#[source] io::Error),
    #[error("netlink request failed: {what}")]
    Netlink {
        what: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("interface {0} does not exist (check [node] interface; `ip link` lists interfaces)")]
    NoInterface(String),
}

/// One interface: index, name, MAC and IPv4 addresses with prefix lengths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    pub index: u32,
    pub name: String,
    pub mac: [u8; 6],
    pub addrs: Vec<(Ipv4Addr, u8)>,
}

impl Iface {
    /// Whether `addr` is on one of this interface's subnets.
    #[must_use]
    pub fn on_link(&self, addr: Ipv4Addr) -> bool {
        self.source_for(addr).is_some()
    }

    /// The first IPv4 address on `addr`'s subnet (the source for ARP).
    #[must_use]
    pub fn source_for(&self, addr: Ipv4Addr) -> Option<Ipv4Addr> {
        self.addrs
            .iter()
            .find(|&&(a, len)| {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                u32::from(a) & mask == u32::from(addr) & mask
            })
            .map(|&(a, _)| a)
    }
}

/// An rtnetlink handle (its connection runs on the current tokio runtime).
#[derive(Clone)]
pub struct Net {
    handle: rtnetlink::Handle,
}

impl Net {
    /// Opens the netlink connection; must be called inside a tokio runtime.
    pub fn new() -> Result<Self, NetError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetError::Socket)?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// Every interface with its MAC and IPv4 addresses.
    pub async fn interfaces(&self) -> Result<Vec<Iface>, NetError> {
        let mut out = Vec::new();
        let mut links = self.handle.link().get().execute();
        while let Some(msg) = links.try_next().await.map_err(|source| NetError::Netlink {
            what: "list links",
            source,
        })? {
            let mut name = String::new();
            let mut mac = [0u8; 6];
            for attr in &msg.attributes {
                match attr {
                    LinkAttribute::IfName(n) => name.clone_from(n),
                    LinkAttribute::Address(a) if a.len() == 6 => mac.copy_from_slice(a),
                    _ => {}
                }
            }
            out.push(Iface {
                index: msg.header.index,
                name,
                mac,
                addrs: Vec::new(),
            });
        }
        let mut addrs = self.handle.address().get().execute();
        while let Some(msg) = addrs.try_next().await.map_err(|source| NetError::Netlink {
            what: "list addresses",
            source,
        })? {
            let addr = msg
                .attributes
                .iter()
                .find_map(|a| match a {
                    AddressAttribute::Local(std::net::IpAddr::V4(v4)) => Some(*v4),
                    _ => None,
                })
                .or_else(|| {
                    msg.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Address(std::net::IpAddr::V4(v4)) => Some(*v4),
                        _ => None,
                    })
                });
            if let (Some(addr), Some(iface)) =
                (addr, out.iter_mut().find(|i| i.index == msg.header.index))
            {
                iface.addrs.push((addr, msg.header.prefix_len));
            }
        }
        Ok(out)
    }

    /// The interface named `name`.
    pub async fn interface(&self, name: &str) -> Result<Iface, NetError> {
        self.interfaces()
            .await?
            .into_iter()
            .find(|i| i.name == name)
            .ok_or_else(|| NetError::NoInterface(name.to_owned()))
    }

    /// The kernel's usable neighbour entries: (ifindex, IPv4 address) -> MAC.
    pub async fn neighbours(&self) -> Result<BTreeMap<(u32, Ipv4Addr), [u8; 6]>, NetError> {
        let mut out = BTreeMap::new();
        let mut neigh = self.handle.neighbours().get().execute();
        while let Some(msg) = neigh.try_next().await.map_err(|source| NetError::Netlink {
            what: "list neighbours",
            source,
        })? {
            if !matches!(
                msg.header.state,
                NeighbourState::Reachable
                    | NeighbourState::Stale
                    | NeighbourState::Delay
                    | NeighbourState::Probe
                    | NeighbourState::Permanent
                    | NeighbourState::Noarp
            ) {
                continue;
            }
            let dst = msg.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(*v4),
                _ => None,
            });
            let mac = msg.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::LinkLocalAddress(m) if m.len() == 6 => {
                    Some([m[0], m[1], m[2], m[3], m[4], m[5]])
                }
                _ => None,
            });
            if let (Some(dst), Some(mac)) = (dst, mac) {
                out.insert((msg.header.ifindex, dst), mac);
            }
        }
        Ok(out)
    }
}

const ETH_P_ARP: u16 = 0x0806;

/// Asks `target` for its MAC with ARP requests from (`src_mac`, `src_ip`) on
/// `ifindex`, `tries` times `wait` apart. Blocking: run it off the runtime.
pub fn arp_resolve(
    ifindex: u32,
    src_mac: [u8; 6],
    src_ip: Ipv4Addr,
    target: Ipv4Addr,
    tries: u32,
    wait: Duration,
) -> io::Result<Option<[u8; 6]>> {
    // SAFETY: plain socket(2) call; the fd is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            i32::from(ETH_P_ARP.to_be()),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor we own.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = u16::try_from(libc::AF_PACKET).expect("small");
    sll.sll_protocol = ETH_P_ARP.to_be();
    sll.sll_ifindex =
        i32::try_from(ifindex).map_err(|_| io::Error::other("ifindex out of range"))?;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    let len = u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).expect("small");
    // SAFETY: sll is a valid sockaddr_ll of `len` bytes.
    if unsafe { libc::bind(raw, (&raw const sll).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut req = Vec::with_capacity(28);
    req.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    req.extend_from_slice(&src_mac);
    req.extend_from_slice(&src_ip.octets());
    req.extend_from_slice(&[0; 6]);
    req.extend_from_slice(&target.octets());
    for _ in 0..tries {
        // SAFETY: req and sll are valid for the given lengths.
        let sent = unsafe {
            libc::sendto(
                raw,
                req.as_ptr().cast(),
                req.len(),
                0,
                (&raw const sll).cast(),
                len,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let mut pfd = libc::pollfd {
                fd: raw,
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
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
                break;
            }
            let mut buf = [0u8; 64];
            // SAFETY: buf is valid for its length.
            let got =
                unsafe { libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            let Ok(got) = usize::try_from(got) else {
                continue;
            };
            if got >= 28 && buf[6..8] == [0, 2] && buf[14..18] == target.octets() {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(&buf[8..14]);
                return Ok(Some(mac));
            }
        }
    }
    Ok(None)
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
#[must_use]
pub fn fmt_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Watches the link state of `ifindex` through rtnetlink notifications
/// (`RTMGRP_LINK`) and sends `true` (administratively up with carrier) or
/// `false` on every change. Must be called inside a tokio runtime.
pub fn watch_link(ifindex: u32) -> Result<tokio::sync::mpsc::UnboundedReceiver<bool>, NetError> {
    use futures::StreamExt as _;
    use netlink_packet_core::NetlinkPayload;
    use netlink_packet_route::{RouteNetlinkMessage, link::LinkFlag};
    use netlink_sys::AsyncSocket as _;

    let (mut conn, _handle, mut messages) =
        rtnetlink::new_connection().map_err(NetError::Socket)?;
    conn.socket_mut()
        .socket_mut()
        .bind(&netlink_sys::SocketAddr::new(
            0,
            rtnetlink::constants::RTMGRP_LINK,
        ))
        .map_err(NetError::Socket)?;
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut last = None;
        while let Some((msg, _)) = messages.next().await {
            if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) = msg.payload
                && link.header.index == ifindex
            {
                let up = link.header.flags.contains(&LinkFlag::Up)
                    && link.header.flags.contains(&LinkFlag::LowerUp);
                if last != Some(up) {
                    last = Some(up);
                    if tx.send(up).is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(rx)
}

/// Whether `ifname` strips 802.1Q tags on receive into packet metadata
/// (`ethtool -k IF`'s `rx-vlan-offload`, the legacy `ETHTOOL_GFLAGS` flag
/// `ETH_FLAG_RXVLAN`, which the kernel reports from the device's active
/// features). XDP then sees such frames untagged, so a VLAN VIP is not
/// answered on them: the agent warns (it does not change the NIC).
pub fn rx_vlan_stripping(ifname: &str) -> io::Result<bool> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GFLAGS: u32 = 0x25;
    const ETH_FLAG_RXVLAN: u32 = 1 << 8;
    /// `struct ethtool_value`.
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    /// `struct ifreq` with its `ifr_data` member (the union is 24 bytes).
    #[repr(C)]
    struct IfreqData {
        name: [u8; libc::IFNAMSIZ],
        data: *mut libc::c_void,
        _pad: [u8; 16],
    }
    if ifname.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GFLAGS,
        data: 0,
    };
    let mut ifr = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: (&raw mut value).cast(),
        _pad: [0; 16],
    };
    ifr.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: plain socket(2); owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nothing else owns.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: `ifr` and the `value` it points to outlive the call, sized as
    // the kernel reads and writes them for ETHTOOL_GFLAGS.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            SIOCETHTOOL,
            &raw mut ifr,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value.data & ETH_FLAG_RXVLAN != 0)
}

/// At start, when a VIP names a VLAN: a warning that says what to run when
/// `ifname` strips tags before XDP (nothing when it does not, or when no
/// VIP names a VLAN).
pub fn warn_if_vlan_stripped(ifname: &str, vlan_vips: &[(Ipv4Addr, u16)]) {
    if vlan_vips.is_empty() {
        return;
    }
    let vips: Vec<String> = vlan_vips
        .iter()
        .map(|(a, v)| format!("{a} on VLAN {v}"))
        .collect();
    match rx_vlan_stripping(ifname) {
        Ok(false) => {}
        Ok(true) => tracing::warn!(
            iface = ifname,
            vips = %vips.join(", "),
            "rx VLAN offload is on: {ifname} may move 802.1Q tags out of the frame before XDP sees it, and then VLAN VIPs are not answered or forwarded on tagged traffic (counted as vlan_mismatch); run `ethtool -K {ifname} rxvlan off` (vip does not change the NIC's settings)"
        ),
        Err(e) => tracing::info!(
            iface = ifname,
            error = %e,
            "cannot read whether {ifname} strips VLAN tags on receive (ETHTOOL_GFLAGS); if it does, run `ethtool -K {ifname} rxvlan off` for VLAN VIPs"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rx_vlan_stripping_reads_a_device_and_names_a_missing_one() {
        // `lo` has no VLAN offload; reading needs no privilege.
        assert!(!rx_vlan_stripping("lo").expect("ETHTOOL_GFLAGS on lo"));
        let e = rx_vlan_stripping("vip-no-such0").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV), "{e}");
        assert!(rx_vlan_stripping("a-name-longer-than-ifnamsiz").is_err());
    }
}
