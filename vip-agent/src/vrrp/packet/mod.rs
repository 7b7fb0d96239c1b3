//! The VRRP advertisement codec over IPv4: VRRP v3 (RFC 9568 / RFC 5798) and
//! VRRP v2 (RFC 3768, for keepalived peers with `auth_type PASS`), its checksums,
//! and the receive checks that decide whether an advert reaches the state
//! machine. It sees only the VRRP bytes (the IP payload); the socket layer owns
//! the IP header and passes the addresses and the TTL in.
//!
//! Two layers, as in smoltcp's `wire`: [`Packet`] is a view over raw bytes
//! with field accessors, and [`AdvertRepr`] is the typed advert with
//! [`AdvertRepr::parse`] (which runs every receive check) and
//! [`AdvertRepr::emit`].
//!
//! # Wire formats
//! ```text
//!  byte 0: version (high nibble) | type (low nibble, 1 = advertisement)
//!  byte 1: VRID   byte 2: priority   byte 3: Count IPvX Addrs
//!  v3: bytes 4-5: 4 reserved bits + 12-bit Max Advertise Interval (centiseconds)
//!  v2: byte 4: Auth Type (0 none, 1 simple text password)  byte 5: Adver Int (s)
//!  bytes 6-7: checksum, then 4 bytes per address,
//!  v2 only: then 8 bytes of authentication data.
//! ```
//!
//! # Checksum forms (what was found, and where)
//! VRRP v2 has one form: the Internet checksum over the VRRP message alone,
//! authentication data included (RFC 3768 §5.3.8; keepalived
//! `vrrp_build_vrrp_v2` sums `vrrp_pkt_len`, which includes `VRRP_AUTH_LEN`).
//!
//! VRRP v3 over IPv4 has three forms in the field, listed in [`ChecksumForm`]:
//! - **Pseudo-header with the real destination** ([`ChecksumForm::PseudoHeader`]):
//!   RFC 5798 §5.2.8 says "the entire VRRP message ... and a pseudo-header as
//!   defined in Section 8.1 of RFC 2460", which keepalived, FRR, Wireshark and
//!   tcpdump read as applying to IPv4 too (source, destination, zero, protocol
//!   112, VRRP length). keepalived builds it in `vrrp_build_vrrp_v3` with
//!   `ipv4_phdr.dst = ip->daddr` (224.0.0.18, or the unicast peer, the
//!   checksum being patched per peer in `vrrp_update_pkt` with
//!   `csum_incremental_update32`); this is the form since keepalived 1.3.7
//!   (commits 67275d23 and bcf29363, Aug 2017, which fixed the v3 IPv4
//!   unicast checksum) and what `vrrp_in_chk` checks first in 2.2.7.
//!   FRR (`vrrpd/vrrp_packet.c`, `vrrp_pkt_checksum`) always puts 224.0.0.18
//!   in the pseudo-header, but FRR only sends multicast, so for FRR this is
//!   the same form; it is on by default (`checksum-with-ipv4-pseudoheader`,
//!   yang default `true`).
//! - **Pseudo-header with 224.0.0.18 as destination even for unicast**
//!   ([`ChecksumForm::PseudoHeaderGroupDst`]): keepalived up to 1.3.6 used
//!   `htonl(INADDR_VRRP_GROUP)` unconditionally. keepalived since 1.3.7 (when
//!   built with the default `--enable-checksum-compat`, `OLD_CHKSUM_COMPAT` in
//!   `keepalived -v`) still sends it with `old_unicast_checksum`, and by
//!   default *accepts* it on unicast instances: `vrrp_in_chk` retries with the
//!   group address when the first sum fails (`CHKSUM_COMPATIBILITY_NONE`), and
//!   then switches its own sending to this form (`CHKSUM_COMPATIBILITY_AUTO`,
//!   `vrrp_csum_mcast`) unless `old_unicast_checksum never`. For multicast
//!   adverts it is byte-identical to the first form.
//! - **No pseudo-header** ([`ChecksumForm::MessageOnly`]): RFC 9568 §5.2.8
//!   now says that for IPv4 the checksum covers only the VRRP message, and
//!   only IPv6 prepends the RFC 8200 pseudo-header. Cisco and Juniper read
//!   RFC 5798 that way already (keepalived man page, `v3_checksum_as_v2`;
//!   FRR `doc/user/vrrp.rst`, "My router cannot interoperate with branded
//!   routers"). keepalived sends it with `v3_checksum_as_v2` (added in 2.2.8,
//!   commit b57d7d7a, Dec 2022, so not in 2.2.7), and FRR with
//!   `no vrrp N checksum-with-ipv4-pseudoheader`. (keepalived with that option
//!   does not verify received v3 checksums at all: see the
//!   `!__test_bit(VRRP_FLAG_V3_CHECKSUM_AS_V2, ...)` in `vrrp_in_chk`.)
//!
//! keepalived 2.2.7 therefore accepts the first form, and on unicast also the
//! second; it rejects the third. [`ChecksumForm::default`] is the first.
//! [`ParseOptions`] accepts all three by default: a corrupted advert then has
//! three chances in 65 536 instead of one to pass, which the IP and Ethernet
//! checksums make irrelevant.
//!
//! # Ethernet padding
//! A short advert (v3 with up to four addresses, v2 with up to two) makes an
//! Ethernet frame shorter than the 60-byte minimum, so the sender pads it; a path that takes the
//! payload from the frame rather than from the IP total length (`AF_PACKET`,
//! XDP) sees those bytes after the message. Trailing bytes beyond what
//! `count_ip_addrs` announces are therefore accepted only while the whole
//! payload is at most [`MAX_PADDED_LEN`] bytes (46-byte minimum Ethernet
//! payload minus a 20-byte IP header; with a VLAN tag inside the 60 bytes the
//! padding is smaller still). keepalived (`vrrp_in_chk`) tolerates the same
//! and additionally checks the amount modulo 4; the content of padding is
//! unspecified, so it is not looked at. Raw IP sockets never see padding:
//! the kernel trims the packet to the IP total length.
//!
//! # Receive checks
//! In this order, each a [`DropReason`]: TTL ([`check_ttl`], done by the caller,
//! which has the IP header), version, type, length, checksum, VRID, address
//! count, interval, authentication (v2), unicast source. An empty payload is
//! [`DropReason::Length`], as it has no version to check.

mod checksum;
mod repr;
mod wire;

use std::{fmt, net::Ipv4Addr};

use self::checksum::{fold, ones_sum, pseudo_sum};
pub use self::{
    checksum::{ChecksumForm, ChecksumForms},
    repr::AdvertRepr,
    wire::Packet,
};

/// IP protocol number of VRRP.
pub const PROTOCOL: u8 = 112;
/// The IPv4 multicast group adverts go to (RFC 9568 §5.1.1.2, RFC 3768 §5.2.2).
pub const MULTICAST_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The only IP TTL a receiver accepts (RFC 9568 §7.1, RFC 3768 §7.1).
pub const REQUIRED_TTL: u8 = 255;
/// The VRRP `Type` of an advertisement, the only type defined.
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Fixed header: version/type, VRID, priority, count, interval (and v2 auth
/// type), checksum.
pub const HEADER_LEN: usize = 8;
/// Bytes per IPv4 address.
pub const ADDRESS_LEN: usize = 4;
/// Bytes of v2 authentication data after the addresses.
pub const AUTH_DATA_LEN: usize = 8;
/// Longest payload that can carry Ethernet padding: the 46-byte minimum
/// Ethernet payload minus a 20-byte IP header. See the module docs.
pub const MAX_PADDED_LEN: usize = 26;
/// Largest v3 Max Advertise Interval (12 bits), in centiseconds.
pub const MAX_V3_INTERVAL_CS: u16 = 0x0fff;
/// v2 Auth Type: no authentication.
pub const AUTH_TYPE_NONE: u8 = 0;
/// v2 Auth Type: simple text password (keepalived `auth_type PASS`).
pub const AUTH_TYPE_PASSWORD: u8 = 1;

mod field {
    use std::ops::Range;

    pub const VER_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const COUNT: usize = 3;
    /// v3: 4 reserved bits and the 12-bit Max Advertise Interval.
    pub const V3_INTERVAL: Range<usize> = 4..6;
    pub const V2_AUTH_TYPE: usize = 4;
    pub const V2_INTERVAL: usize = 5;
    pub const CHECKSUM: Range<usize> = 6..8;
    pub const ADDRESSES: usize = 8;
}

/// Why a received advert was dropped: one per receive check, declared in the
/// order the checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DropReason {
    /// The IP TTL is not 255, so the advert may come from off-link.
    #[error("IP TTL is not 255")]
    Ttl,
    /// The version is neither 2 nor 3, or is not the one the instance runs.
    #[error("VRRP version is not the one this instance runs")]
    Version,
    /// The type is not 1 (advertisement).
    #[error("VRRP type is not advertisement (1)")]
    Type,
    /// Shorter than the fixed header, or the address count does not match the
    /// payload (beyond Ethernet padding).
    #[error("length does not match the header and the address count")]
    Length,
    /// The checksum is wrong in every accepted form.
    #[error("checksum is wrong in every accepted form")]
    Checksum,
    /// The VRID is not this instance's.
    #[error("VRID is not this instance's")]
    Vrid,
    /// The advert lists no address.
    #[error("advert lists no address")]
    AddressCount,
    /// The interval is zero, or (v2) differs from the configured one.
    #[error("advert interval is zero or (v2) differs from ours")]
    Interval,
    /// v2: the authentication type or the password does not match ours.
    #[error("authentication type or password does not match")]
    Auth,
    /// The advert's addresses are not the instance's VIPs (another
    /// router's instance on the same VRID: keepalived's `addr_list_err`).
    #[error("its addresses are not this instance's VIPs (another VRRP router uses the same VRID?)")]
    AddressMismatch,
    /// Unicast is configured and the source is not one of the peers.
    #[error("source is not one of the unicast peers")]
    UnicastSource,
}

impl DropReason {
    /// Every reason, in the order the checks run.
    pub const ALL: [Self; 11] = [
        Self::Ttl,
        Self::Version,
        Self::Type,
        Self::Length,
        Self::Checksum,
        Self::Vrid,
        Self::AddressCount,
        Self::Interval,
        Self::Auth,
        Self::AddressMismatch,
        Self::UnicastSource,
    ];

    /// A stable `snake_case` name for metrics and logs; never renamed.
    #[must_use]
    pub const fn counter_name(&self) -> &'static str {
        match self {
            Self::Ttl => "ttl",
            Self::Version => "version",
            Self::Type => "type",
            Self::Length => "length",
            Self::Checksum => "checksum",
            Self::Vrid => "vrid",
            Self::AddressCount => "address_count",
            Self::Interval => "interval",
            Self::Auth => "auth",
            Self::AddressMismatch => "address_mismatch",
            Self::UnicastSource => "unicast_source",
        }
    }
}

/// The first receive check, which needs the IP header the caller holds.
///
/// keepalived 2.2.7 applies it to multicast instances only (`vrrp_in_chk`:
/// "but not if unicast"), checking unicast peers against optional per-peer
/// `min_ttl`/`max_ttl` instead; it still sends unicast adverts with TTL 255
/// unless `unicast_ttl` says otherwise.
pub const fn check_ttl(ttl: u8) -> Result<(), DropReason> {
    if ttl == REQUIRED_TTL {
        Ok(())
    } else {
        Err(DropReason::Ttl)
    }
}

/// The VRRP protocol version an instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// RFC 3768; IPv4 only; interval in whole seconds; simple password auth.
    V2,
    /// RFC 9568 (obsoletes RFC 5798); interval in centiseconds; no auth.
    V3,
}

impl Version {
    /// The number in the version field.
    #[must_use]
    pub const fn number(self) -> u8 {
        match self {
            Self::V2 => 2,
            Self::V3 => 3,
        }
    }

    /// The version a version-field value names, if any.
    #[must_use]
    pub const fn from_number(n: u8) -> Option<Self> {
        match n {
            2 => Some(Self::V2),
            3 => Some(Self::V3),
            _ => None,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VRRPv{}", self.number())
    }
}

/// v2 authentication. v3 has none (RFC 9568 removed it), so v3 adverts are
/// always [`Auth::None`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Auth {
    /// Auth Type 0; the authentication data is sent as zeros and not checked.
    #[default]
    None,
    /// Auth Type 1, the password zero-padded to 8 bytes, as keepalived's
    /// `auth_pass` handler stores it (`vrrp_auth_pass_handler`: `memset` then
    /// `memcpy` of at most 8 bytes).
    Password([u8; AUTH_DATA_LEN]),
}

impl Auth {
    /// A password as keepalived sends it: zero-padded to 8 bytes. `None` when
    /// it is longer than 8 bytes (keepalived truncates with a config warning;
    /// we leave that decision to the config layer).
    #[must_use]
    pub fn password(password: impl AsRef<[u8]>) -> Option<Self> {
        let p = password.as_ref();
        if p.len() > AUTH_DATA_LEN {
            return None;
        }
        let mut data = [0; AUTH_DATA_LEN];
        data[..p.len()].copy_from_slice(p);
        Some(Self::Password(data))
    }

    /// The v2 Auth Type field value.
    #[must_use]
    pub const fn auth_type(&self) -> u8 {
        match self {
            Self::None => AUTH_TYPE_NONE,
            Self::Password(_) => AUTH_TYPE_PASSWORD,
        }
    }

    /// The 8 bytes of v2 authentication data.
    #[must_use]
    pub const fn data(&self) -> [u8; AUTH_DATA_LEN] {
        match self {
            Self::None => [0; AUTH_DATA_LEN],
            Self::Password(p) => *p,
        }
    }
}

/// What an instance expects of the adverts it receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseOptions {
    /// The version the instance runs; any other is [`DropReason::Version`].
    pub expect: Version,
    /// The instance's VRID.
    pub vrid: u8,
    /// v2 only: the configured advert interval in seconds. RFC 3768 §7.1 (and
    /// keepalived) discard an advert whose interval differs. `None` skips
    /// that comparison (v3 has none: the backup learns the master's interval).
    pub v2_interval_s: Option<u8>,
    /// v2 only: the authentication the instance uses; ignored for v3.
    pub auth: Auth,
    /// When non-empty, adverts from any other source are dropped.
    pub unicast_peers: Vec<Ipv4Addr>,
    /// The v3 checksum forms accepted; default all.
    pub checksum_forms: ChecksumForms,
    /// When non-empty, the instance's VIPs: an advert must list exactly
    /// these (in any order), as keepalived checks, or it is another router's
    /// instance on the same VRID and is dropped.
    pub addresses: Vec<Ipv4Addr>,
}

impl ParseOptions {
    /// Options for an instance with this version and VRID: no v2 interval
    /// comparison, no auth, multicast, every checksum form.
    #[must_use]
    pub fn new(expect: Version, vrid: u8) -> Self {
        Self {
            expect,
            vrid,
            v2_interval_s: None,
            auth: Auth::None,
            unicast_peers: Vec::new(),
            checksum_forms: ChecksumForms::ALL,
            addresses: Vec::new(),
        }
    }
}

/// Why an [`AdvertRepr`] cannot be put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// Receivers drop adverts without addresses.
    #[error("an advert needs at least one address")]
    NoAddresses,
    /// The count field is 8 bits.
    #[error("{count} addresses do not fit the 8-bit address count")]
    TooManyAddresses {
        /// How many addresses the advert had.
        count: usize,
    },
    /// v3: 1..=4095 cs; v2: whole seconds, 1..=255 s.
    #[error("an interval of {interval_cs} cs cannot be sent as {version}")]
    Interval {
        /// The version the advert was for.
        version: Version,
        /// The interval asked for.
        interval_cs: u16,
    },
    /// VRRP v3 has no authentication field.
    #[error("VRRPv3 has no authentication")]
    AuthOnV3,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
    const PEER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 3);
    const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);

    // v3, vrid 51, priority 100, interval 100 cs, one address 10.99.0.100,
    // 10.99.0.2 -> 224.0.0.18, pseudo-header form (both pseudo-header forms
    // are the same here: the real destination is the group).
    // Message words with the checksum zeroed:
    //   3133 + 6401 + 0064 + 0000 + 0a63 + 0064 = a05f
    // Pseudo-header words (src, dst, 0|112, length 12):
    //   0a63 + 0002 + e000 + 0012 + 0070 + 000c = eaf3
    // a05f + eaf3 = 1_8b52 -> fold 8b53 -> complement 74ac.
    const V3_MCAST: [u8; 12] = [
        0x31, 0x33, 0x64, 0x01, 0x00, 0x64, 0x74, 0xac, 0x0a, 0x63, 0x00, 0x64,
    ];
    // The same advert, message-only form (RFC 9568): complement of a05f = 5fa0.
    const V3_MCAST_MESSAGE_ONLY: [u8; 12] = [
        0x31, 0x33, 0x64, 0x01, 0x00, 0x64, 0x5f, 0xa0, 0x0a, 0x63, 0x00, 0x64,
    ];
    // The same advert unicast 10.99.0.2 -> 10.99.0.3, pseudo-header with the
    // real destination (keepalived >= 1.3.7):
    //   pseudo-header 0a63 + 0002 + 0a63 + 0003 + 0070 + 000c = 1547
    //   a05f + 1547 = b5a6 (no carry) -> complement 4a59.
    // The old form (224.0.0.18 in the pseudo-header) is V3_MCAST's bytes.
    const V3_UCAST: [u8; 12] = [
        0x31, 0x33, 0x64, 0x01, 0x00, 0x64, 0x4a, 0x59, 0x0a, 0x63, 0x00, 0x64,
    ];
    // v2, vrid 51, priority 100, auth type 1, interval 1 s, 10.99.0.100,
    // password "1111" zero-padded to 8 bytes (keepalived's sample
    // doc/samples/keepalived.conf.vrrp: vrid 51, priority 100, auth_pass 1111).
    // No pseudo-header in v2; the sum covers the auth data:
    //   2133 + 6401 + 0101 + 0000 + 0a63 + 0064 + 3131 + 3131 + 0000 + 0000
    //   = f35e (no carry) -> complement 0ca1.
    const V2_PASS: [u8; 20] = [
        0x21, 0x33, 0x64, 0x01, 0x01, 0x01, 0x0c, 0xa1, 0x0a, 0x63, 0x00, 0x64, b'1', b'1', b'1',
        b'1', 0, 0, 0, 0,
    ];
    // v3 like V3_MCAST but count 0 and no address, valid pseudo-header sum:
    //   3133 + 6400 + 0064 + 0000 = 9597; pseudo-header with length 8 = eaef;
    //   9597 + eaef = 1_8086 -> 8087 -> complement 7f78.
    const V3_COUNT_0: [u8; 8] = [0x31, 0x33, 0x64, 0x00, 0x00, 0x64, 0x7f, 0x78];
    // v3 like V3_MCAST but interval 0: message 9ffb + pseudo eaf3 = 1_8aee
    //   -> 8aef -> complement 7510.
    const V3_INTERVAL_0: [u8; 12] = [
        0x31, 0x33, 0x64, 0x01, 0x00, 0x00, 0x75, 0x10, 0x0a, 0x63, 0x00, 0x64,
    ];

    // Real captures, from the `vrrp_test.go` of gopacket's `layers` package
    // (tcpdump hex dumps of whole Ethernet frames). Here is the IP payload
    // cut out of the frame *including* the Ethernet padding at its end: the
    // frames are 60 bytes, the IP packets 40, so 6 padding bytes follow the
    // 20-byte VRRP message.
    //
    // google/gopacket `vrrpPacketPriority100`: 192.168.0.30 -> 224.0.0.18,
    // VRRPv2 vrid 1 prio 100 authtype none intvl 1s, address 192.168.0.1,
    // checksum ba52 (2101 + 6401 + 0001 + c0a8 + 0001 = 1_45ac -> 45ad -> ba52).
    const GOPACKET_V2: [u8; 26] = [
        0x21, 0x01, 0x64, 0x01, 0x00, 0x01, 0xba, 0x52, 0xc0, 0xa8, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    // A gopacket fork's `vrrpv3PacketPriority100`: 10.0.0.130 -> 224.0.0.18,
    // VRRPv3 vrid 1 prio 100 intvl 100cs, addresses 192.168.200.16-18 (the
    // VIPs of keepalived's sample keepalived.conf, so very likely keepalived),
    // checksum e54e, which holds with the IPv4 pseudo-header and not without.
    const GOPACKET_V3: [u8; 26] = [
        0x31, 0x01, 0x64, 0x03, 0x00, 0x64, 0xe5, 0x4e, 0xc0, 0xa8, 0xc8, 0x10, 0xc0, 0xa8, 0xc8,
        0x11, 0xc0, 0xa8, 0xc8, 0x12, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    fn v3_repr() -> AdvertRepr {
        AdvertRepr {
            version: Version::V3,
            vrid: 51,
            priority: 100,
            interval_cs: 100,
            addresses: vec![VIP],
            auth: Auth::None,
        }
    }

    fn v2_repr() -> AdvertRepr {
        AdvertRepr {
            version: Version::V2,
            auth: Auth::password("1111").unwrap(),
            ..v3_repr()
        }
    }

    fn v3_opts() -> ParseOptions {
        ParseOptions::new(Version::V3, 51)
    }

    fn v2_opts() -> ParseOptions {
        ParseOptions {
            v2_interval_s: Some(1),
            auth: Auth::password("1111").unwrap(),
            ..ParseOptions::new(Version::V2, 51)
        }
    }

    fn parse(
        bytes: &[u8],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        opts: &ParseOptions,
    ) -> Result<AdvertRepr, DropReason> {
        AdvertRepr::parse(&Packet::new_unchecked(bytes), src, dst, opts)
    }

    #[test]
    fn v3_multicast_both_forms_parse() {
        for bytes in [V3_MCAST, V3_MCAST_MESSAGE_ONLY] {
            assert_eq!(
                parse(&bytes, SRC, MULTICAST_GROUP, &v3_opts()),
                Ok(v3_repr())
            );
        }
        let p = Packet::new_checked(&V3_MCAST[..]).unwrap();
        assert_eq!(
            p.v3_checksum_form(SRC, MULTICAST_GROUP),
            Some(ChecksumForm::PseudoHeader)
        );
        let p = Packet::new_checked(&V3_MCAST_MESSAGE_ONLY[..]).unwrap();
        assert_eq!(
            p.v3_checksum_form(SRC, MULTICAST_GROUP),
            Some(ChecksumForm::MessageOnly)
        );
    }

    #[test]
    fn v3_multicast_emits_both_forms() {
        let r = v3_repr();
        let e = |form| r.emit(SRC, MULTICAST_GROUP, form).unwrap();
        assert_eq!(e(ChecksumForm::PseudoHeader), V3_MCAST);
        assert_eq!(e(ChecksumForm::PseudoHeaderGroupDst), V3_MCAST);
        assert_eq!(e(ChecksumForm::MessageOnly), V3_MCAST_MESSAGE_ONLY);
        assert_eq!(ChecksumForm::default(), ChecksumForm::PseudoHeader);
    }

    #[test]
    fn v3_unicast_new_and_old_keepalived_forms() {
        let r = v3_repr();
        assert_eq!(
            r.emit(SRC, PEER, ChecksumForm::PseudoHeader).unwrap(),
            V3_UCAST
        );
        assert_eq!(
            r.emit(SRC, PEER, ChecksumForm::PseudoHeaderGroupDst)
                .unwrap(),
            V3_MCAST
        );
        assert_eq!(
            r.emit(SRC, PEER, ChecksumForm::MessageOnly).unwrap(),
            V3_MCAST_MESSAGE_ONLY
        );

        let opts = ParseOptions {
            unicast_peers: vec![SRC],
            ..v3_opts()
        };
        assert_eq!(parse(&V3_UCAST, SRC, PEER, &opts), Ok(v3_repr()));
        assert_eq!(parse(&V3_MCAST, SRC, PEER, &opts), Ok(v3_repr()));
        let old = Packet::new_checked(&V3_MCAST[..]).unwrap();
        assert_eq!(
            old.v3_checksum_form(SRC, PEER),
            Some(ChecksumForm::PseudoHeaderGroupDst)
        );

        // A receiver that refuses the old form drops it.
        let strict = ParseOptions {
            checksum_forms: ChecksumForms::ALL.without(ChecksumForm::PseudoHeaderGroupDst),
            ..opts
        };
        assert_eq!(
            parse(&V3_MCAST, SRC, PEER, &strict),
            Err(DropReason::Checksum)
        );
        assert_eq!(parse(&V3_UCAST, SRC, PEER, &strict), Ok(v3_repr()));
    }

    #[test]
    fn v2_password_advert() {
        assert_eq!(
            v2_repr()
                .emit(SRC, MULTICAST_GROUP, ChecksumForm::default())
                .unwrap(),
            V2_PASS
        );
        // v2 has no pseudo-header: the form and the addresses change nothing.
        assert_eq!(
            v2_repr()
                .emit(SRC, PEER, ChecksumForm::MessageOnly)
                .unwrap(),
            V2_PASS
        );
        assert_eq!(
            parse(&V2_PASS, SRC, MULTICAST_GROUP, &v2_opts()),
            Ok(v2_repr())
        );
        assert_eq!(parse(&V2_PASS, PEER, SRC, &v2_opts()), Ok(v2_repr()));
        let p = Packet::new_checked(&V2_PASS[..]).unwrap();
        assert_eq!(p.v2_auth_type(), AUTH_TYPE_PASSWORD);
        assert_eq!(p.v2_adver_int(), 1);
        assert_eq!(p.v2_auth_data(), *b"1111\0\0\0\0");
    }

    #[test]
    fn password_is_zero_padded_and_at_most_8_bytes() {
        assert_eq!(
            Auth::password("1111"),
            Some(Auth::Password(*b"1111\0\0\0\0"))
        );
        assert_eq!(
            Auth::password("12345678"),
            Some(Auth::Password(*b"12345678"))
        );
        assert_eq!(Auth::password("123456789"), None);
        assert_eq!(Auth::None.data(), [0; 8]);
    }

    #[test]
    fn real_v2_capture_with_ethernet_padding() {
        let opts = ParseOptions {
            v2_interval_s: Some(1),
            ..ParseOptions::new(Version::V2, 1)
        };
        let r = parse(
            &GOPACKET_V2,
            Ipv4Addr::new(192, 168, 0, 30),
            MULTICAST_GROUP,
            &opts,
        )
        .unwrap();
        assert_eq!(r.priority, 100);
        assert_eq!(r.interval_cs, 100);
        assert_eq!(r.addresses, [Ipv4Addr::new(192, 168, 0, 1)]);
        assert_eq!(r.auth, Auth::None);
        assert_eq!(Packet::new_unchecked(&GOPACKET_V2[..]).message_len(), 20);
    }

    #[test]
    fn real_v3_capture_uses_the_pseudo_header() {
        let src = Ipv4Addr::new(10, 0, 0, 130);
        let r = parse(
            &GOPACKET_V3,
            src,
            MULTICAST_GROUP,
            &ParseOptions::new(Version::V3, 1),
        )
        .unwrap();
        assert_eq!(r.interval_cs, 100);
        assert_eq!(
            r.addresses,
            [16, 17, 18].map(|h| Ipv4Addr::new(192, 168, 200, h))
        );
        let p = Packet::new_checked(&GOPACKET_V3[..]).unwrap();
        assert_eq!(
            p.v3_checksum_form(src, MULTICAST_GROUP),
            Some(ChecksumForm::PseudoHeader)
        );
        let rfc9568_only = ParseOptions {
            checksum_forms: ChecksumForms::only(ChecksumForm::MessageOnly),
            ..ParseOptions::new(Version::V3, 1)
        };
        assert_eq!(
            parse(&GOPACKET_V3, src, MULTICAST_GROUP, &rfc9568_only),
            Err(DropReason::Checksum)
        );
        // Re-emitting gives the captured message back, byte for byte.
        assert_eq!(
            r.emit(src, MULTICAST_GROUP, ChecksumForm::PseudoHeader)
                .unwrap(),
            GOPACKET_V3[..20]
        );
    }

    #[test]
    fn padding_only_up_to_the_ethernet_minimum() {
        let mut padded = V3_MCAST.to_vec();
        padded.resize(MAX_PADDED_LEN, 0xaa);
        assert_eq!(
            parse(&padded, SRC, MULTICAST_GROUP, &v3_opts()),
            Ok(v3_repr())
        );
        padded.push(0);
        assert_eq!(
            parse(&padded, SRC, MULTICAST_GROUP, &v3_opts()),
            Err(DropReason::Length)
        );
    }

    #[test]
    fn drop_ttl_254() {
        assert_eq!(check_ttl(254), Err(DropReason::Ttl));
        assert_eq!(check_ttl(255), Ok(()));
    }

    #[test]
    fn drop_v2_packet_to_v3_instance() {
        assert_eq!(
            parse(&V2_PASS, SRC, MULTICAST_GROUP, &v3_opts()),
            Err(DropReason::Version)
        );
        assert_eq!(
            parse(&V3_MCAST, SRC, MULTICAST_GROUP, &v2_opts()),
            Err(DropReason::Version)
        );
        let mut v4 = V3_MCAST;
        v4[0] = 0x41;
        assert_eq!(
            parse(&v4, SRC, MULTICAST_GROUP, &v3_opts()),
            Err(DropReason::Version)
        );
    }

    #[test]
    fn drop_wrong_type() {
        let mut t = V3_MCAST;
        t[0] = 0x32;
        assert_eq!(
            parse(&t, SRC, MULTICAST_GROUP, &v3_opts()),
            Err(DropReason::Type)
        );
    }

    #[test]
    fn drop_bad_checksum_in_both_forms() {
        let mut pseudo = V3_UCAST;
        pseudo[7] ^= 1;
        assert_eq!(
            parse(&pseudo, SRC, PEER, &v3_opts()),
            Err(DropReason::Checksum)
        );
        let mut message_only = V3_MCAST_MESSAGE_ONLY;
        message_only[7] ^= 1;
        assert_eq!(
            parse(&message_only, SRC, MULTICAST_GROUP, &v3_opts()),
            Err(DropReason::Checksum)
        );
        // A right checksum in a form the instance does not accept.
        let pseudo_only = ParseOptions {
            checksum_forms: ChecksumForms::only(ChecksumForm::PseudoHeader),
            ..v3_opts()
        };
        assert_eq!(
            parse(&V3_MCAST_MESSAGE_ONLY, SRC, MULTICAST_GROUP, &pseudo_only),
            Err(DropReason::Checksum)
        );
        let message_only = ParseOptions {
            checksum_forms: ChecksumForm::MessageOnly.into(),
            ..v3_opts()
        };
        assert_eq!(
            parse(&V3_MCAST, SRC, MULTICAST_GROUP, &message_only),
            Err(DropReason::Checksum)
        );
        // The pseudo-header covers the addresses: another source fails.
        assert_eq!(
            parse(&V3_UCAST, PEER, PEER, &pseudo_only),
            Err(DropReason::Checksum)
        );
        // v2.
        let mut v2 = V2_PASS;
        v2[15] = b'2';
        assert_eq!(
            parse(&v2, SRC, MULTICAST_GROUP, &v2_opts()),
            Err(DropReason::Checksum)
        );
    }

    #[test]
    fn drop_count_0() {
        assert_eq!(
            parse(&V3_COUNT_0, SRC, MULTICAST_GROUP, &v3_opts()),
            Err(DropReason::AddressCount)
        );
    }

    #[test]
    fn drop_count_not_matching_payload() {
        let mut two = V3_MCAST;
        two[3] = 2;
        assert_eq!(
            parse(&two, SRC, MULTICAST_GROUP, &v3_opts()),
            Err(DropReason::Length)
        );
        // One address announced, a second one present: 16 bytes <= 26 reads
        // as padding, but 32 bytes cannot be.
        let mut long = V3_MCAST.to_vec();
        long.resize(32, 0);
        assert_eq!(
            parse(&long, SRC, MULTICAST_GROUP, &v3_opts()),
            Err(DropReason::Length)
        );
        // v2 without its authentication data.
        assert_eq!(
            parse(&V2_PASS[..12], SRC, MULTICAST_GROUP, &v2_opts()),
            Err(DropReason::Length)
        );
        assert_eq!(
            parse(&V3_MCAST[..7], SRC, MULTICAST_GROUP, &v3_opts()),
            Err(DropReason::Length)
        );
        assert_eq!(
            parse(&[], SRC, MULTICAST_GROUP, &v3_opts()),
            Err(DropReason::Length)
        );
        assert_eq!(
            Packet::new_checked(&V3_MCAST[..11]),
            Err(DropReason::Length)
        );
    }

    #[test]
    fn drop_interval_0_and_v2_interval_mismatch() {
        assert_eq!(
            parse(&V3_INTERVAL_0, SRC, MULTICAST_GROUP, &v3_opts()),
            Err(DropReason::Interval)
        );
        let other = ParseOptions {
            v2_interval_s: Some(2),
            ..v2_opts()
        };
        assert_eq!(
            parse(&V2_PASS, SRC, MULTICAST_GROUP, &other),
            Err(DropReason::Interval)
        );
        let any = ParseOptions {
            v2_interval_s: None,
            ..v2_opts()
        };
        assert_eq!(parse(&V2_PASS, SRC, MULTICAST_GROUP, &any), Ok(v2_repr()));
    }

    #[test]
    fn drop_wrong_vrid() {
        let opts = ParseOptions::new(Version::V3, 52);
        assert_eq!(
            parse(&V3_MCAST, SRC, MULTICAST_GROUP, &opts),
            Err(DropReason::Vrid)
        );
    }

    #[test]
    fn drop_wrong_password_or_auth_type() {
        let wrong = ParseOptions {
            auth: Auth::password("2222").unwrap(),
            ..v2_opts()
        };
        assert_eq!(
            parse(&V2_PASS, SRC, MULTICAST_GROUP, &wrong),
            Err(DropReason::Auth)
        );
        let none = ParseOptions {
            auth: Auth::None,
            ..v2_opts()
        };
        assert_eq!(
            parse(&V2_PASS, SRC, MULTICAST_GROUP, &none),
            Err(DropReason::Auth)
        );
        // A v2 advert without auth to an instance that wants a password.
        let plain = AdvertRepr {
            auth: Auth::None,
            ..v2_repr()
        }
        .emit(SRC, MULTICAST_GROUP, ChecksumForm::default())
        .unwrap();
        assert_eq!(
            parse(&plain, SRC, MULTICAST_GROUP, &v2_opts()),
            Err(DropReason::Auth)
        );
        assert!(parse(&plain, SRC, MULTICAST_GROUP, &none).is_ok());
    }

    #[test]
    fn drop_foreign_unicast_source() {
        let opts = ParseOptions {
            unicast_peers: vec![Ipv4Addr::new(10, 99, 0, 4)],
            ..v3_opts()
        };
        assert_eq!(
            parse(&V3_UCAST, SRC, PEER, &opts),
            Err(DropReason::UnicastSource)
        );
    }

    #[test]
    fn drop_an_advert_for_other_vips_on_our_vrid() {
        let other = Ipv4Addr::new(10, 99, 0, 200);
        let ours = |addresses: Vec<Ipv4Addr>| ParseOptions {
            addresses,
            ..v3_opts()
        };
        let advert = |addresses: Vec<Ipv4Addr>| {
            AdvertRepr {
                addresses,
                ..v3_repr()
            }
            .emit(SRC, MULTICAST_GROUP, ChecksumForm::default())
            .unwrap()
        };
        // Another team's router on VRID 51 for another address.
        assert_eq!(
            parse(&V3_MCAST, SRC, MULTICAST_GROUP, &ours(vec![other])),
            Err(DropReason::AddressMismatch)
        );
        // One VIP more or less than ours ("expected 2 VIPs but received 1").
        assert_eq!(
            parse(&V3_MCAST, SRC, MULTICAST_GROUP, &ours(vec![VIP, other])),
            Err(DropReason::AddressMismatch)
        );
        assert_eq!(
            parse(
                &advert(vec![VIP, other]),
                SRC,
                MULTICAST_GROUP,
                &ours(vec![VIP])
            ),
            Err(DropReason::AddressMismatch)
        );
        // The same set in another order is our peer.
        let both = parse(
            &advert(vec![other, VIP]),
            SRC,
            MULTICAST_GROUP,
            &ours(vec![VIP, other]),
        );
        assert_eq!(both.map(|a| a.addresses), Ok(vec![other, VIP]));
        // No VIPs given: no comparison (the codec alone).
        assert!(parse(&V3_MCAST, SRC, MULTICAST_GROUP, &v3_opts()).is_ok());
    }

    #[test]
    fn checks_run_in_order() {
        // Version before type.
        let mut b = V2_PASS;
        b[0] = 0x22;
        assert_eq!(
            parse(&b, SRC, MULTICAST_GROUP, &v3_opts()),
            Err(DropReason::Version)
        );
        // Type before length.
        let mut b = V3_MCAST;
        b[0] = 0x30;
        assert_eq!(
            parse(&b[..9], SRC, MULTICAST_GROUP, &v3_opts()),
            Err(DropReason::Type)
        );
        // Length before checksum.
        let mut b = V3_MCAST;
        b[3] = 2;
        b[7] ^= 1;
        assert_eq!(
            parse(&b, SRC, MULTICAST_GROUP, &v3_opts()),
            Err(DropReason::Length)
        );
        // Checksum before VRID.
        let mut b = V3_MCAST;
        b[1] = 52;
        assert_eq!(
            parse(&b, SRC, MULTICAST_GROUP, &v3_opts()),
            Err(DropReason::Checksum)
        );
        // VRID before address count.
        let wrong_vrid = ParseOptions::new(Version::V3, 52);
        assert_eq!(
            parse(&V3_COUNT_0, SRC, MULTICAST_GROUP, &wrong_vrid),
            Err(DropReason::Vrid)
        );
        // Interval before auth.
        let both = ParseOptions {
            v2_interval_s: Some(2),
            auth: Auth::password("2222").unwrap(),
            ..v2_opts()
        };
        assert_eq!(
            parse(&V2_PASS, SRC, MULTICAST_GROUP, &both),
            Err(DropReason::Interval)
        );
        // Auth before addresses, addresses before unicast source.
        let wrong_vips = ParseOptions {
            auth: Auth::password("2222").unwrap(),
            addresses: vec![PEER],
            ..v2_opts()
        };
        assert_eq!(
            parse(&V2_PASS, SRC, MULTICAST_GROUP, &wrong_vips),
            Err(DropReason::Auth)
        );
        let wrong_vips_and_source = ParseOptions {
            addresses: vec![PEER],
            unicast_peers: vec![PEER],
            ..v3_opts()
        };
        assert_eq!(
            parse(&V3_MCAST, SRC, MULTICAST_GROUP, &wrong_vips_and_source),
            Err(DropReason::AddressMismatch)
        );
        // Auth before unicast source.
        let both = ParseOptions {
            auth: Auth::password("2222").unwrap(),
            unicast_peers: vec![PEER],
            ..v2_opts()
        };
        assert_eq!(
            parse(&V2_PASS, SRC, MULTICAST_GROUP, &both),
            Err(DropReason::Auth)
        );
    }

    #[test]
    fn drop_reasons_are_listed_in_check_order_with_unique_names() {
        assert_eq!(DropReason::ALL[0], DropReason::Ttl);
        assert_eq!(DropReason::ALL[10], DropReason::UnicastSource);
        let names: Vec<_> = DropReason::ALL
            .iter()
            .map(DropReason::counter_name)
            .collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        for n in names {
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{n}");
        }
    }

    #[test]
    fn emit_refuses_what_cannot_be_sent() {
        let e = |r: AdvertRepr| r.emit(SRC, MULTICAST_GROUP, ChecksumForm::default());
        assert_eq!(
            e(AdvertRepr {
                addresses: vec![],
                ..v3_repr()
            }),
            Err(EmitError::NoAddresses)
        );
        assert_eq!(
            e(AdvertRepr {
                addresses: vec![VIP; 256],
                ..v3_repr()
            }),
            Err(EmitError::TooManyAddresses { count: 256 })
        );
        for (version, interval_cs) in [
            (Version::V3, 0),
            (Version::V3, 4096),
            (Version::V2, 0),
            (Version::V2, 150),
            (Version::V2, 25600),
        ] {
            let r = AdvertRepr {
                version,
                interval_cs,
                auth: Auth::None,
                ..v3_repr()
            };
            assert_eq!(
                e(r),
                Err(EmitError::Interval {
                    version,
                    interval_cs
                })
            );
        }
        assert_eq!(
            e(AdvertRepr {
                auth: Auth::password("x").unwrap(),
                ..v3_repr()
            }),
            Err(EmitError::AuthOnV3)
        );
        assert!(
            e(AdvertRepr {
                interval_cs: 4095,
                ..v3_repr()
            })
            .is_ok()
        );
        assert!(
            e(AdvertRepr {
                interval_cs: 25500,
                ..v2_repr()
            })
            .is_ok()
        );
    }

    #[test]
    fn v3_reserved_bits_are_ignored_on_receive() {
        let mut b = V3_MCAST_MESSAGE_ONLY;
        b[4] = 0xf0;
        // Recompute the message-only checksum over the changed byte.
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.fill_checksum(SRC, MULTICAST_GROUP, ChecksumForm::MessageOnly);
        assert_eq!(parse(&b, SRC, MULTICAST_GROUP, &v3_opts()), Ok(v3_repr()));
    }

    mod round_trip {
        use proptest::prelude::*;

        use super::*;

        fn repr() -> impl Strategy<Value = AdvertRepr> {
            let v3 = (
                any::<u8>(),
                any::<u8>(),
                1..=MAX_V3_INTERVAL_CS,
                prop::collection::vec(any::<u32>(), 1..=255),
            )
                .prop_map(|(vrid, priority, interval_cs, addrs)| AdvertRepr {
                    version: Version::V3,
                    vrid,
                    priority,
                    interval_cs,
                    addresses: addrs.into_iter().map(Ipv4Addr::from).collect(),
                    auth: Auth::None,
                });
            let v2 = (
                any::<u8>(),
                any::<u8>(),
                1..=255_u16,
                prop::collection::vec(any::<u32>(), 1..=255),
                prop::option::of(any::<[u8; 8]>()),
            )
                .prop_map(|(vrid, priority, s, addrs, pass)| AdvertRepr {
                    version: Version::V2,
                    vrid,
                    priority,
                    interval_cs: s * 100,
                    addresses: addrs.into_iter().map(Ipv4Addr::from).collect(),
                    auth: pass.map_or(Auth::None, Auth::Password),
                });
            prop_oneof![v3, v2]
        }

        fn form() -> impl Strategy<Value = ChecksumForm> {
            prop::sample::select(ChecksumForm::ALL.to_vec())
        }

        proptest! {
            #[test]
            fn emit_then_parse(r in repr(), form in form(), src in any::<u32>(), dst in any::<u32>()) {
                let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
                let bytes = r.emit(src, dst, form).unwrap();
                prop_assert_eq!(bytes.len(), r.buffer_len());
                let opts = ParseOptions {
                    v2_interval_s: u8::try_from(r.interval_cs / 100).ok(),
                    auth: r.auth,
                    unicast_peers: vec![src],
                    checksum_forms: form.into(),
                    ..ParseOptions::new(r.version, r.vrid)
                };
                prop_assert_eq!(AdvertRepr::parse(&Packet::new_unchecked(&bytes), src, dst, &opts), Ok(r));
            }

            #[test]
            fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64), v2 in any::<bool>()) {
                let opts = ParseOptions::new(if v2 { Version::V2 } else { Version::V3 }, 51);
                let _ = AdvertRepr::parse(&Packet::new_unchecked(&bytes), SRC, MULTICAST_GROUP, &opts);
            }
        }
    }
}
