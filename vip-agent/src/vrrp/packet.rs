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

use std::{fmt, net::Ipv4Addr};

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
    /// Unicast is configured and the source is not one of the peers.
    #[error("source is not one of the unicast peers")]
    UnicastSource,
}

impl DropReason {
    /// Every reason, in the order the checks run.
    pub const ALL: [Self; 10] = [
        Self::Ttl,
        Self::Version,
        Self::Type,
        Self::Length,
        Self::Checksum,
        Self::Vrid,
        Self::AddressCount,
        Self::Interval,
        Self::Auth,
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

/// How a VRRP v3 checksum over IPv4 is computed. VRRP v2 ignores this: its
/// checksum never has a pseudo-header. See the module docs for the sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChecksumForm {
    /// IPv4 pseudo-header (source, the packet's real destination, zero,
    /// protocol 112, VRRP length) plus the message: RFC 5798 as keepalived
    /// (since 1.3.7), FRR, Wireshark and tcpdump read it. The form keepalived
    /// 2.2.7 sends and accepts by default, hence the default.
    #[default]
    PseudoHeader,
    /// The pseudo-header with 224.0.0.18 as destination whatever the real one:
    /// keepalived up to 1.3.6, and later keepalived with
    /// `old_unicast_checksum` or after auto-detecting an old peer. Identical
    /// to [`ChecksumForm::PseudoHeader`] for multicast adverts.
    PseudoHeaderGroupDst,
    /// The VRRP message alone, as RFC 9568 §5.2.8 specifies for IPv4: Cisco,
    /// Juniper, keepalived ≥ 2.2.8 `v3_checksum_as_v2`, FRR
    /// `no checksum-with-ipv4-pseudoheader`.
    MessageOnly,
}

impl ChecksumForm {
    /// Every form, in the order [`Packet::v3_checksum_form`] tries them.
    pub const ALL: [Self; 3] = [
        Self::PseudoHeader,
        Self::PseudoHeaderGroupDst,
        Self::MessageOnly,
    ];

    /// The destination the pseudo-header carries, if there is one.
    const fn pseudo_dst(self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        match self {
            Self::PseudoHeader => Some(dst),
            Self::PseudoHeaderGroupDst => Some(MULTICAST_GROUP),
            Self::MessageOnly => None,
        }
    }

    const fn bit(self) -> u8 {
        match self {
            Self::PseudoHeader => 1,
            Self::PseudoHeaderGroupDst => 2,
            Self::MessageOnly => 4,
        }
    }
}

/// A set of [`ChecksumForm`]s a receiver accepts for VRRP v3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChecksumForms(u8);

impl ChecksumForms {
    /// Every known form: the default.
    pub const ALL: Self = Self(7);
    /// No form: every v3 advert fails the checksum check.
    pub const EMPTY: Self = Self(0);

    /// Just `form`.
    #[must_use]
    pub const fn only(form: ChecksumForm) -> Self {
        Self(form.bit())
    }

    /// This set and `form`.
    #[must_use]
    pub const fn with(self, form: ChecksumForm) -> Self {
        Self(self.0 | form.bit())
    }

    /// This set without `form`.
    #[must_use]
    pub const fn without(self, form: ChecksumForm) -> Self {
        Self(self.0 & !form.bit())
    }

    /// Whether `form` is in the set.
    #[must_use]
    pub const fn contains(self, form: ChecksumForm) -> bool {
        self.0 & form.bit() != 0
    }

    /// The forms in the set, in [`ChecksumForm::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = ChecksumForm> {
        ChecksumForm::ALL
            .into_iter()
            .filter(move |f| self.contains(*f))
    }
}

impl Default for ChecksumForms {
    fn default() -> Self {
        Self::ALL
    }
}

impl From<ChecksumForm> for ChecksumForms {
    fn from(form: ChecksumForm) -> Self {
        Self::only(form)
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

/// A read (and, over mutable bytes, write) view of a VRRP message: the IP
/// payload of a protocol-112 packet.
///
/// Accessors panic on a buffer [`Packet::check_len`] would refuse; build with
/// [`Packet::new_checked`] to rule that out, or hand an unchecked packet to
/// [`AdvertRepr::parse`], which runs the length check itself, in its place in
/// the order of receive checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// A view without any length check.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view whose accessors cannot panic: see [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// `Ok` when the buffer holds the fixed header and everything the address
    /// count announces (plus, for version 2, the authentication data), with
    /// extra trailing bytes only as Ethernet padding (the whole payload at
    /// most [`MAX_PADDED_LEN`] bytes).
    pub fn check_len(&self) -> Result<(), DropReason> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(DropReason::Length);
        }
        let want = self.message_len();
        if len < want || (len > want && len > MAX_PADDED_LEN) {
            return Err(DropReason::Length);
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The version field (high nibble of byte 0).
    #[must_use]
    pub fn version(&self) -> u8 {
        self.bytes()[field::VER_TYPE] >> 4
    }

    /// The type field (low nibble of byte 0).
    #[must_use]
    pub fn msg_type(&self) -> u8 {
        self.bytes()[field::VER_TYPE] & 0x0f
    }

    /// The virtual router ID.
    #[must_use]
    pub fn vrid(&self) -> u8 {
        self.bytes()[field::VRID]
    }

    /// The sender's priority (0: the master is leaving; 255: address owner).
    #[must_use]
    pub fn priority(&self) -> u8 {
        self.bytes()[field::PRIORITY]
    }

    /// The `Count IPvX Addrs` field.
    #[must_use]
    pub fn count_ip_addrs(&self) -> u8 {
        self.bytes()[field::COUNT]
    }

    /// v3: the Max Advertise Interval in centiseconds (the 4 reserved bits
    /// are ignored, as RFC 9568 §5.2.6 asks of receivers).
    #[must_use]
    pub fn v3_max_adver_int(&self) -> u16 {
        let b = &self.bytes()[field::V3_INTERVAL];
        u16::from_be_bytes([b[0], b[1]]) & MAX_V3_INTERVAL_CS
    }

    /// v2: the Auth Type.
    #[must_use]
    pub fn v2_auth_type(&self) -> u8 {
        self.bytes()[field::V2_AUTH_TYPE]
    }

    /// v2: the Adver Int in seconds.
    #[must_use]
    pub fn v2_adver_int(&self) -> u8 {
        self.bytes()[field::V2_INTERVAL]
    }

    /// The checksum field.
    #[must_use]
    pub fn checksum(&self) -> u16 {
        let b = &self.bytes()[field::CHECKSUM];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The length the header announces: fixed header, addresses and, for
    /// version 2, authentication data. Ethernet padding is not part of it.
    #[must_use]
    pub fn message_len(&self) -> usize {
        let auth = if self.version() == 2 {
            AUTH_DATA_LEN
        } else {
            0
        };
        HEADER_LEN + usize::from(self.count_ip_addrs()) * ADDRESS_LEN + auth
    }

    /// The message without any padding.
    #[must_use]
    pub fn message(&self) -> &[u8] {
        &self.bytes()[..self.message_len()]
    }

    /// Address number `index` (from 0).
    #[must_use]
    pub fn address(&self, index: usize) -> Ipv4Addr {
        let at = field::ADDRESSES + index * ADDRESS_LEN;
        let b = &self.bytes()[at..at + ADDRESS_LEN];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The addresses, in order.
    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        (0..usize::from(self.count_ip_addrs())).map(|i| self.address(i))
    }

    /// v2: the 8 bytes of authentication data after the addresses.
    #[must_use]
    pub fn v2_auth_data(&self) -> [u8; AUTH_DATA_LEN] {
        let at = field::ADDRESSES + usize::from(self.count_ip_addrs()) * ADDRESS_LEN;
        let mut data = [0; AUTH_DATA_LEN];
        data.copy_from_slice(&self.bytes()[at..at + AUTH_DATA_LEN]);
        data
    }

    /// Whether the checksum is right in `form` (ignored for version 2, whose
    /// checksum covers the message alone).
    #[must_use]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr, form: ChecksumForm) -> bool {
        let form = if self.version() == 2 {
            ChecksumForm::MessageOnly
        } else {
            form
        };
        let message = self.message();
        let sum = ones_sum(
            pseudo_sum(src, form.pseudo_dst(dst), message.len()),
            message,
        );
        fold(sum) == 0xffff
    }

    /// The first form in [`ChecksumForm::ALL`] in which a VRRP v3 checksum is
    /// right, if any. A multicast advert in the RFC 5798 form matches
    /// [`ChecksumForm::PseudoHeader`]; a unicast one from keepalived ≤ 1.3.6
    /// (or `old_unicast_checksum`) matches
    /// [`ChecksumForm::PseudoHeaderGroupDst`], which a caller can use to
    /// answer in kind, as keepalived does.
    #[must_use]
    pub fn v3_checksum_form(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Option<ChecksumForm> {
        ChecksumForm::ALL
            .into_iter()
            .find(|f| self.verify_checksum(src, dst, *f))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets the version and type nibbles.
    pub fn set_version_type(&mut self, version: u8, msg_type: u8) {
        self.bytes_mut()[field::VER_TYPE] = (version << 4) | (msg_type & 0x0f);
    }

    /// Sets the VRID.
    pub fn set_vrid(&mut self, vrid: u8) {
        self.bytes_mut()[field::VRID] = vrid;
    }

    /// Sets the priority.
    pub fn set_priority(&mut self, priority: u8) {
        self.bytes_mut()[field::PRIORITY] = priority;
    }

    /// Sets the `Count IPvX Addrs` field.
    pub fn set_count_ip_addrs(&mut self, count: u8) {
        self.bytes_mut()[field::COUNT] = count;
    }

    /// v3: sets the Max Advertise Interval, reserved bits zero (values above
    /// 12 bits are masked).
    pub fn set_v3_max_adver_int(&mut self, interval_cs: u16) {
        let v = (interval_cs & MAX_V3_INTERVAL_CS).to_be_bytes();
        self.bytes_mut()[field::V3_INTERVAL].copy_from_slice(&v);
    }

    /// v2: sets the Auth Type.
    pub fn set_v2_auth_type(&mut self, auth_type: u8) {
        self.bytes_mut()[field::V2_AUTH_TYPE] = auth_type;
    }

    /// v2: sets the Adver Int in seconds.
    pub fn set_v2_adver_int(&mut self, seconds: u8) {
        self.bytes_mut()[field::V2_INTERVAL] = seconds;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, checksum: u16) {
        self.bytes_mut()[field::CHECKSUM].copy_from_slice(&checksum.to_be_bytes());
    }

    /// Sets address number `index`.
    pub fn set_address(&mut self, index: usize, address: Ipv4Addr) {
        let at = field::ADDRESSES + index * ADDRESS_LEN;
        self.bytes_mut()[at..at + ADDRESS_LEN].copy_from_slice(&address.octets());
    }

    /// v2: sets the authentication data after the addresses (place the
    /// address count first).
    pub fn set_v2_auth_data(&mut self, data: [u8; AUTH_DATA_LEN]) {
        let at = field::ADDRESSES + usize::from(self.count_ip_addrs()) * ADDRESS_LEN;
        self.bytes_mut()[at..at + AUTH_DATA_LEN].copy_from_slice(&data);
    }

    /// Computes and stores the checksum over the message as it stands (every
    /// other field set first). `form` is ignored for version 2.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr, form: ChecksumForm) {
        self.set_checksum(0);
        let form = if self.version() == 2 {
            ChecksumForm::MessageOnly
        } else {
            form
        };
        let message = self.message();
        let sum = ones_sum(
            pseudo_sum(src, form.pseudo_dst(dst), message.len()),
            message,
        );
        self.set_checksum(!fold(sum));
    }
}

/// A VRRP advertisement, typed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AdvertRepr {
    /// The protocol version.
    pub version: Version,
    /// Virtual router ID.
    pub vrid: u8,
    /// Sender priority.
    pub priority: u8,
    /// The advert interval in centiseconds: v3's Max Advertise Interval, or
    /// v2's Adver Int × 100, so the two are comparable.
    pub interval_cs: u16,
    /// The virtual addresses.
    pub addresses: Vec<Ipv4Addr>,
    /// v2 authentication; always [`Auth::None`] for v3.
    pub auth: Auth,
}

impl AdvertRepr {
    /// Runs every receive check after the TTL (see the module docs for the
    /// order) and returns the advert. `src` and `dst` are the IP header's
    /// addresses; the checksum needs them.
    pub fn parse<T: AsRef<[u8]>>(
        packet: &Packet<T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        opts: &ParseOptions,
    ) -> Result<Self, DropReason> {
        if packet.bytes().is_empty() {
            return Err(DropReason::Length);
        }
        let version = match Version::from_number(packet.version()) {
            Some(v) if v == opts.expect => v,
            _ => return Err(DropReason::Version),
        };
        if packet.msg_type() != TYPE_ADVERTISEMENT {
            return Err(DropReason::Type);
        }
        packet.check_len()?;
        let checksum_ok = match version {
            Version::V2 => packet.verify_checksum(src, dst, ChecksumForm::MessageOnly),
            Version::V3 => opts
                .checksum_forms
                .iter()
                .any(|f| packet.verify_checksum(src, dst, f)),
        };
        if !checksum_ok {
            return Err(DropReason::Checksum);
        }
        if packet.vrid() != opts.vrid {
            return Err(DropReason::Vrid);
        }
        if packet.count_ip_addrs() == 0 {
            return Err(DropReason::AddressCount);
        }
        let interval_cs = match version {
            Version::V3 => packet.v3_max_adver_int(),
            Version::V2 => {
                let s = packet.v2_adver_int();
                if opts.v2_interval_s.is_some_and(|want| want != s) {
                    return Err(DropReason::Interval);
                }
                u16::from(s) * 100
            }
        };
        if interval_cs == 0 {
            return Err(DropReason::Interval);
        }
        let auth = match version {
            Version::V3 => Auth::None,
            Version::V2 => {
                if packet.v2_auth_type() != opts.auth.auth_type() {
                    return Err(DropReason::Auth);
                }
                match opts.auth {
                    // RFC 3768 §5.3.10: the data is ignored with Auth Type 0.
                    Auth::None => Auth::None,
                    Auth::Password(want) => {
                        if !same_bytes(packet.v2_auth_data(), want) {
                            return Err(DropReason::Auth);
                        }
                        Auth::Password(want)
                    }
                }
            }
        };
        if !opts.unicast_peers.is_empty() && !opts.unicast_peers.contains(&src) {
            return Err(DropReason::UnicastSource);
        }
        Ok(Self {
            version,
            vrid: packet.vrid(),
            priority: packet.priority(),
            interval_cs,
            addresses: packet.addresses().collect(),
            auth,
        })
    }

    /// The length of the emitted message.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        let auth = match self.version {
            Version::V2 => AUTH_DATA_LEN,
            Version::V3 => 0,
        };
        HEADER_LEN + self.addresses.len() * ADDRESS_LEN + auth
    }

    /// The message to send from `src` to `dst` (224.0.0.18 or a unicast
    /// peer), its v3 checksum in `form` (v2 ignores `form`).
    pub fn emit(
        &self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        form: ChecksumForm,
    ) -> Result<Vec<u8>, EmitError> {
        if self.addresses.is_empty() {
            return Err(EmitError::NoAddresses);
        }
        let count =
            u8::try_from(self.addresses.len()).map_err(|_| EmitError::TooManyAddresses {
                count: self.addresses.len(),
            })?;
        let bad_interval = EmitError::Interval {
            version: self.version,
            interval_cs: self.interval_cs,
        };
        let mut buf = vec![0; self.buffer_len()];
        let mut packet = Packet::new_unchecked(&mut buf[..]);
        packet.set_version_type(self.version.number(), TYPE_ADVERTISEMENT);
        packet.set_vrid(self.vrid);
        packet.set_priority(self.priority);
        packet.set_count_ip_addrs(count);
        match self.version {
            Version::V3 => {
                if self.auth != Auth::None {
                    return Err(EmitError::AuthOnV3);
                }
                if self.interval_cs == 0 || self.interval_cs > MAX_V3_INTERVAL_CS {
                    return Err(bad_interval);
                }
                packet.set_v3_max_adver_int(self.interval_cs);
            }
            Version::V2 => {
                if self.interval_cs == 0 || !self.interval_cs.is_multiple_of(100) {
                    return Err(bad_interval);
                }
                let seconds = u8::try_from(self.interval_cs / 100).map_err(|_| bad_interval)?;
                packet.set_v2_auth_type(self.auth.auth_type());
                packet.set_v2_adver_int(seconds);
            }
        }
        for (i, a) in self.addresses.iter().enumerate() {
            packet.set_address(i, *a);
        }
        if self.version == Version::V2 {
            packet.set_v2_auth_data(self.auth.data());
        }
        packet.fill_checksum(src, dst, form);
        Ok(buf)
    }
}

/// The one's-complement sum of the IPv4 pseudo-header, or 0 without one.
fn pseudo_sum(src: Ipv4Addr, dst: Option<Ipv4Addr>, len: usize) -> u32 {
    let Some(dst) = dst else { return 0 };
    // The message is at most 8 + 255 * 4 + 8 bytes, so this never saturates.
    let len = u16::try_from(len).unwrap_or(u16::MAX);
    let mut header = [0; 12];
    header[..4].copy_from_slice(&src.octets());
    header[4..8].copy_from_slice(&dst.octets());
    header[9] = PROTOCOL;
    header[10..].copy_from_slice(&len.to_be_bytes());
    ones_sum(0, &header)
}

/// Adds `data` as big-endian 16-bit words (RFC 1071) to `acc`, unfolded; the
/// messages here are far too short to overflow a `u32`.
fn ones_sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

/// Folds the carries back in: the 16-bit one's-complement sum.
fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    u16::try_from(acc).unwrap_or(u16::MAX)
}

/// Compares without an early exit, so the time taken says nothing about how
/// much of a password matched (keepalived: `memcmp_constant_time`).
fn same_bytes(a: [u8; AUTH_DATA_LEN], b: [u8; AUTH_DATA_LEN]) -> bool {
    a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
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
        assert_eq!(DropReason::ALL[9], DropReason::UnicastSource);
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
