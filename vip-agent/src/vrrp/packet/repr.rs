//! The typed view: an advertisement parsed from, and emitted into, a buffer
//! with every receive check in its documented order.

use std::net::Ipv4Addr;

use super::{
    ADDRESS_LEN, AUTH_DATA_LEN, Auth, ChecksumForm, DropReason, EmitError, HEADER_LEN,
    MAX_V3_INTERVAL_CS, Packet, ParseOptions, TYPE_ADVERTISEMENT, Version,
};

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
        if !opts.addresses.is_empty() {
            let count = usize::from(packet.count_ip_addrs());
            if count != opts.addresses.len()
                || !opts
                    .addresses
                    .iter()
                    .all(|a| packet.addresses().any(|b| b == *a))
            {
                return Err(DropReason::AddressMismatch);
            }
        }
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

/// Compares without an early exit, so the time taken says nothing about how
/// much of a password matched (keepalived: `memcmp_constant_time`).
pub(super) fn same_bytes(a: [u8; AUTH_DATA_LEN], b: [u8; AUTH_DATA_LEN]) -> bool {
    a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}
