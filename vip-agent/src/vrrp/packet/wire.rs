//! The wire view: a buffer read and written field by field, in place.

use std::{net::Ipv4Addr, ops::Range};

use super::{
    ADDRESS_LEN, AUTH_DATA_LEN, ChecksumForm, DropReason, HEADER_LEN, MAX_PADDED_LEN,
    MAX_V3_INTERVAL_CS, field, fold, ones_sum, pseudo_sum,
};

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

    pub(super) fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The big-endian 16-bit field at `at`.
    fn u16_at(&self, at: Range<usize>) -> u16 {
        let b = &self.bytes()[at];
        u16::from_be_bytes([b[0], b[1]])
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
        self.u16_at(field::V3_INTERVAL) & MAX_V3_INTERVAL_CS
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
        self.u16_at(field::CHECKSUM)
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
        self.addresses_end() + auth
    }

    /// The message without any padding.
    #[must_use]
    pub fn message(&self) -> &[u8] {
        &self.bytes()[..self.message_len()]
    }

    /// Address number `index` (from 0).
    #[must_use]
    pub fn address(&self, index: usize) -> Ipv4Addr {
        let b = &self.bytes()[address_at(index)];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The addresses, in order.
    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        (0..usize::from(self.count_ip_addrs())).map(|i| self.address(i))
    }

    /// v2: the 8 bytes of authentication data after the addresses.
    #[must_use]
    pub fn v2_auth_data(&self) -> [u8; AUTH_DATA_LEN] {
        let at = self.addresses_end();
        let mut data = [0; AUTH_DATA_LEN];
        data.copy_from_slice(&self.bytes()[at..at + AUTH_DATA_LEN]);
        data
    }

    /// Where the addresses end (and v2's authentication data starts).
    fn addresses_end(&self) -> usize {
        address_at(usize::from(self.count_ip_addrs())).start
    }

    /// The folded one's-complement sum of the message, checksum field
    /// included, and of the pseudo-header `form` asks for (none for version
    /// 2, whose checksum covers the message alone).
    fn sum(&self, src: Ipv4Addr, dst: Ipv4Addr, form: ChecksumForm) -> u16 {
        let form = if self.version() == 2 {
            ChecksumForm::MessageOnly
        } else {
            form
        };
        let message = self.message();
        fold(ones_sum(
            pseudo_sum(src, form.pseudo_dst(dst), message.len()),
            message,
        ))
    }

    /// Whether the checksum is right in `form` (ignored for version 2, whose
    /// checksum covers the message alone).
    #[must_use]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr, form: ChecksumForm) -> bool {
        self.sum(src, dst, form) == 0xffff
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
        self.bytes_mut()[address_at(index)].copy_from_slice(&address.octets());
    }

    /// v2: sets the authentication data after the addresses (place the
    /// address count first).
    pub fn set_v2_auth_data(&mut self, data: [u8; AUTH_DATA_LEN]) {
        let at = self.addresses_end();
        self.bytes_mut()[at..at + AUTH_DATA_LEN].copy_from_slice(&data);
    }

    /// Computes and stores the checksum over the message as it stands (every
    /// other field set first). `form` is ignored for version 2.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr, form: ChecksumForm) {
        self.set_checksum(0);
        let sum = self.sum(src, dst, form);
        self.set_checksum(!sum);
    }
}

/// The bytes of address number `index` (from 0).
const fn address_at(index: usize) -> Range<usize> {
    let at = field::ADDRESSES + index * ADDRESS_LEN;
    at..at + ADDRESS_LEN
}
