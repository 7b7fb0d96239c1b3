//! The VRRP checksum: v2's over the message, v3's with or without the IPv4
//! pseudo-header (see the module docs of [`super`] for who sends which).

use std::net::Ipv4Addr;

use super::{MULTICAST_GROUP, PROTOCOL};

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
    pub(super) const fn pseudo_dst(self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
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

/// The one's-complement sum of the IPv4 pseudo-header, or 0 without one.
pub(super) fn pseudo_sum(src: Ipv4Addr, dst: Option<Ipv4Addr>, len: usize) -> u32 {
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
pub(super) fn ones_sum(mut acc: u32, data: &[u8]) -> u32 {
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
pub(super) fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    u16::try_from(acc).unwrap_or(u16::MAX)
}
