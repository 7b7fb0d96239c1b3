//! The VRRP codec past the checksum (`vip_agent::vrrp::packet`, and the
//! receive path's `transport::split_ipv4` and `check_ttl` before it, as
//! `Instance::receive` runs them).
//!
//! Structure-aware: the input describes a *valid* advert, which the
//! encoder turns into a frame (right checksum, v2 password), then
//! mutations of that frame and of the receiver's expectations; the checksum
//! is computed again after the mutations unless the input asks otherwise
//! (one time in four), so most mutated frames get past the checksum check
//! to the ones after it.
//!
//! Input, byte by byte (missing bytes read as 0, the common case):
//! ```text
//! 0     flags: bit 0 v2, 1 unicast, 2 v2 password, 3 receiver block,
//!       4 IP block, 5 leave the checksum stale (with bit 6 too)
//! 1     checksum form: PseudoHeader, PseudoHeaderGroupDst, MessageOnly (mod 3)
//! 2 3   VRID, priority
//! 4-5   interval: v3 1 + n % 4095 cs, v2 1 + n % 255 s (big-endian)
//! 6-9   source address   10-13 unicast destination (multicast: 224.0.0.18)
//! 14    address count - 1 (1 + n % 255 addresses), then 4 bytes each
//!       v2 password: 8 bytes
//!       receiver block: 1 byte saying which fields follow (bit 0 VRID,
//!       1 version flipped, 2 v2 interval (s, 0 = not compared), 3 auth
//!       (password, 8 bytes; all 0 = none), 4 peers (count, 4 bytes each),
//!       5 checksum forms (bits), 6 addresses (count, 4 bytes each; none =
//!       not compared)), each then in that order
//!       IP block: TTL (255 - n), IP options (n % 11 words), Ethernet
//!       padding (n % 32 bytes after the total length), total length
//!       change (signed), protocol (112 ^ n), version/IHL byte (^ n)
//! rest  mutations of the VRRP message, 3 bytes each: op, a, b
//! ```
//!
//! Asserts: an advert the encoder made parses back to the same advert, as
//! a bare message and through the IP datagram; parsing a mutated frame
//! never panics, and `Packet::new_checked` makes every accessor safe; what
//! parses meets every receive check (version, VRID, a non-zero count and
//! interval, v2 interval and password, addresses, unicast source) and,
//! encoded again, parses to the same advert and is the same message up to
//! the fields receivers ignore (the checksum, v3's reserved bits, v2 auth
//! data without auth).

#![no_main]

use std::{collections::BTreeSet, net::Ipv4Addr};

use libfuzzer_sys::{arbitrary::Unstructured, fuzz_target};
use vip_agent::vrrp::{
    packet::{
        AUTH_DATA_LEN, AdvertRepr, Auth, ChecksumForm, ChecksumForms, HEADER_LEN, MULTICAST_GROUP,
        PROTOCOL, Packet, ParseOptions, Version, check_ttl,
    },
    transport::{Received, split_ipv4},
};

/// Reads fields front to back; past the end every field is 0.
struct Reader<'a>(Unstructured<'a>);

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        self.0.arbitrary().unwrap_or(0)
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        std::array::from_fn(|_| self.u8())
    }

    fn addr(&mut self) -> Ipv4Addr {
        Ipv4Addr::from(self.array::<4>())
    }

    fn addrs(&mut self, count: usize) -> Vec<Ipv4Addr> {
        (0..count).map(|_| self.addr()).collect()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

struct Ip {
    ttl: u8,
    option_words: usize,
    padding: usize,
    total_change: i8,
    protocol: u8,
    version_ihl_xor: u8,
}

impl Ip {
    const UNCHANGED: Self = Self {
        ttl: 255,
        option_words: 0,
        padding: 0,
        total_change: 0,
        protocol: PROTOCOL,
        version_ihl_xor: 0,
    };

    /// The IPv4 datagram a raw socket would deliver with `payload`.
    fn datagram(&self, src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
        let ihl = 20 + 4 * self.option_words;
        let total = (ihl + payload.len()).saturating_add_signed(self.total_change.into());
        let mut d = vec![0; ihl];
        d[0] = (0x40 | u8::try_from(ihl / 4).expect("at most 15 words")) ^ self.version_ihl_xor;
        d[2..4].copy_from_slice(&u16::try_from(total).unwrap_or(u16::MAX).to_be_bytes());
        d[8] = self.ttl;
        d[9] = self.protocol;
        d[12..16].copy_from_slice(&src.octets());
        d[16..20].copy_from_slice(&dst.octets());
        d.extend_from_slice(payload);
        d.resize(d.len() + self.padding, 0);
        d
    }
}

/// The checks `split_ipv4` promises, written out again.
fn expected_split(d: &[u8]) -> Option<Received> {
    let ihl = usize::from(d.first()? & 0x0f) * 4;
    if d[0] >> 4 != 4 || ihl < 20 || d.len() < ihl || d[9] != PROTOCOL {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([d[2], d[3]])).min(d.len());
    (total >= ihl).then(|| Received {
        src: Ipv4Addr::new(d[12], d[13], d[14], d[15]),
        dst: Ipv4Addr::new(d[16], d[17], d[18], d[19]),
        ttl: d[8],
        payload: d[ihl..total].to_vec(),
    })
}

fn mutate(m: &mut Vec<u8>, op: u8, a: u8, b: u8) {
    let at = |m: &Vec<u8>| {
        if m.is_empty() {
            0
        } else {
            usize::from(a) % m.len()
        }
    };
    match op % 10 {
        0 if !m.is_empty() => {
            let i = at(m);
            m[i] = b;
        }
        1 if !m.is_empty() => {
            let i = at(m);
            m[i] ^= b | 1;
        }
        2 => m.truncate(usize::from(a)),
        3 => m.extend(std::iter::repeat_n(b, usize::from(a % 8) + 1)),
        4 => {
            let i = at(m);
            m.splice(i..i, [b; 4]);
        }
        5 => {
            let i = at(m);
            let end = (i + usize::from(b % 8) + 1).min(m.len());
            m.drain(i..end);
        }
        6 if m.len() > 3 => m[3] = a,
        7 if !m.is_empty() => m[0] = a,
        8 if m.len() > 5 => m[4..6].copy_from_slice(&[a, b]),
        9 if m.len() > 4 => m[4] = a,
        _ => {}
    }
}

/// `bytes` with what receivers ignore set to zero: the checksum, v3's
/// reserved bits, v2's auth data when there is no auth.
fn canonical(bytes: &[u8], adv: &AdvertRepr) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[6..8].fill(0);
    match adv.version {
        Version::V3 => b[4] &= 0x0f,
        Version::V2 if adv.auth == Auth::None => {
            let n = b.len();
            b[n - AUTH_DATA_LEN..].fill(0);
        }
        Version::V2 => {}
    }
    b
}

/// What every advert that passed the checks must be.
fn check_passed(adv: &AdvertRepr, packet: &Packet<&[u8]>, src: Ipv4Addr, opts: &ParseOptions) {
    assert_eq!(adv.version, opts.expect);
    assert_eq!(adv.vrid, opts.vrid);
    assert!(!adv.addresses.is_empty());
    assert_eq!(adv.addresses, packet.addresses().collect::<Vec<_>>());
    assert!(adv.interval_cs > 0);
    match adv.version {
        Version::V3 => {
            assert!(adv.interval_cs <= 0x0fff);
            assert_eq!(adv.auth, Auth::None);
        }
        Version::V2 => {
            assert_eq!(adv.interval_cs % 100, 0);
            if let Some(s) = opts.v2_interval_s {
                assert_eq!(adv.interval_cs, u16::from(s) * 100);
            }
            assert_eq!(adv.auth, opts.auth);
        }
    }
    if !opts.addresses.is_empty() {
        let theirs: BTreeSet<_> = adv.addresses.iter().collect();
        let ours: BTreeSet<_> = opts.addresses.iter().collect();
        assert_eq!(theirs, ours, "addresses not ours passed");
    }
    if !opts.unicast_peers.is_empty() {
        assert!(opts.unicast_peers.contains(&src), "a non-peer passed");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader(Unstructured::new(data));
    let flags = r.u8();
    let form = ChecksumForm::ALL[usize::from(r.u8() % 3)];
    let version = if flags & 1 != 0 {
        Version::V2
    } else {
        Version::V3
    };
    let (vrid, priority, interval) = (r.u8(), r.u8(), r.u16());
    let interval_cs = match version {
        Version::V3 => 1 + interval % 4095,
        Version::V2 => (1 + interval % 255) * 100,
    };
    let src = r.addr();
    let peer = r.addr();
    let unicast = flags & 2 != 0;
    let dst = if unicast { peer } else { MULTICAST_GROUP };
    let count = 1 + usize::from(r.u8() % 255);
    // A configured instance's VIPs are distinct (config refuses repeats).
    let mut addresses = r.addrs(count);
    let mut seen = BTreeSet::new();
    addresses.retain(|a| seen.insert(*a));
    let auth = if version == Version::V2 && flags & 4 != 0 {
        Auth::Password(r.array())
    } else {
        Auth::None
    };
    let advert = AdvertRepr {
        version,
        vrid,
        priority,
        interval_cs,
        addresses: addresses.clone(),
        auth,
    };
    let bytes = advert.emit(src, dst, form).expect("a valid advert encodes");
    assert_eq!(bytes.len(), advert.buffer_len());

    // The receiver the sender was configured for.
    let opts = ParseOptions {
        v2_interval_s: (version == Version::V2).then(|| u8::try_from(interval_cs / 100).unwrap()),
        auth,
        unicast_peers: if unicast { vec![src] } else { Vec::new() },
        addresses,
        ..ParseOptions::new(version, vrid)
    };
    let packet = Packet::new_checked(&bytes[..]).expect("an encoded advert has its length");
    assert!(packet.verify_checksum(src, dst, form));
    if version == Version::V3 {
        assert!(packet.v3_checksum_form(src, dst).is_some());
    }
    assert_eq!(
        AdvertRepr::parse(&packet, src, dst, &opts),
        Ok(advert.clone())
    );
    let datagram = Ip::UNCHANGED.datagram(src, dst, &bytes);
    let rx = split_ipv4(&datagram).expect("a VRRP datagram splits");
    assert_eq!(
        (rx.src, rx.dst, rx.ttl, &rx.payload),
        (src, dst, 255, &bytes)
    );

    // The receiver as the input changes it.
    let mut opts2 = opts.clone();
    if flags & 8 != 0 {
        let which = r.u8();
        if which & 1 != 0 {
            opts2.vrid = r.u8();
        }
        if which & 2 != 0 {
            opts2.expect = match version {
                Version::V2 => Version::V3,
                Version::V3 => Version::V2,
            };
        }
        if which & 4 != 0 {
            opts2.v2_interval_s = Some(r.u8()).filter(|s| *s != 0);
        }
        if which & 8 != 0 {
            let p: [u8; 8] = r.array();
            opts2.auth = if p == [0; 8] {
                Auth::None
            } else {
                Auth::Password(p)
            };
        }
        if which & 16 != 0 {
            let n = usize::from(r.u8() % 8);
            opts2.unicast_peers = r.addrs(n);
        }
        if which & 32 != 0 {
            let bits = r.u8();
            opts2.checksum_forms = ChecksumForm::ALL
                .into_iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .fold(ChecksumForms::EMPTY, |set, (_, f)| set.with(f));
        }
        if which & 64 != 0 {
            let n = usize::from(r.u8() % 8);
            let mut vips = r.addrs(n);
            vips.sort_unstable();
            vips.dedup();
            opts2.addresses = vips;
        }
    }
    let ip = if flags & 16 == 0 {
        Ip::UNCHANGED
    } else {
        Ip {
            ttl: 255 - r.u8(),
            option_words: usize::from(r.u8() % 11),
            padding: usize::from(r.u8() % 32),
            total_change: r.u8().cast_signed(),
            protocol: PROTOCOL ^ r.u8(),
            version_ihl_xor: r.u8(),
        }
    };
    let mut m = bytes;
    while !r.is_empty() {
        let (op, a, b) = (r.u8(), r.u8(), r.u8());
        mutate(&mut m, op, a, b);
    }
    let stale = flags & 0x60 == 0x60;
    if !stale && m.len() >= HEADER_LEN && Packet::new_unchecked(&m[..]).message_len() <= m.len() {
        Packet::new_unchecked(&mut m[..]).fill_checksum(src, dst, form);
    }

    // As Instance::receive runs the checks, after the socket's split.
    let datagram = ip.datagram(src, dst, &m);
    let Some(rx) = split_ipv4(&datagram) else {
        assert_eq!(expected_split(&datagram), None);
        return;
    };
    assert_eq!(Some(&rx), expected_split(&datagram).as_ref());
    // Every accessor of a packet that passes the length check is safe, and
    // a packet that passes it parses as it would have without it.
    if let Ok(packet) = Packet::new_checked(&rx.payload[..]) {
        let _ = (packet.priority(), packet.checksum(), packet.message());
        let _ = (
            packet.v3_max_adver_int(),
            packet.v2_adver_int(),
            packet.v2_auth_type(),
        );
        let _ = (
            packet.addresses().count(),
            packet.v3_checksum_form(rx.src, rx.dst),
        );
        if packet.version() == 2 {
            let _ = packet.v2_auth_data();
        }
        assert_eq!(
            AdvertRepr::parse(&packet, rx.src, rx.dst, &opts2),
            AdvertRepr::parse(
                &Packet::new_unchecked(&rx.payload[..]),
                rx.src,
                rx.dst,
                &opts2
            ),
        );
    }
    let verdict = check_ttl(rx.ttl).and_then(|()| {
        AdvertRepr::parse(
            &Packet::new_unchecked(&rx.payload[..]),
            rx.src,
            rx.dst,
            &opts2,
        )
    });
    let Ok(adv) = verdict else {
        return;
    };
    let packet = Packet::new_checked(&rx.payload[..]).expect("it parsed");
    check_passed(&adv, &packet, rx.src, &opts2);
    // Encoded again in a form the receiver accepts, it is the same advert.
    let form = match adv.version {
        Version::V2 => ChecksumForm::MessageOnly,
        Version::V3 => opts2
            .checksum_forms
            .iter()
            .find(|f| packet.verify_checksum(rx.src, rx.dst, *f))
            .expect("it passed the checksum in some accepted form"),
    };
    let again = adv.emit(rx.src, rx.dst, form).expect("what parsed encodes");
    assert_eq!(
        AdvertRepr::parse(&Packet::new_unchecked(&again[..]), rx.src, rx.dst, &opts2),
        Ok(adv.clone())
    );
    assert_eq!(
        canonical(&again, &adv),
        canonical(packet.message(), &adv),
        "two different messages parse to the same advert"
    );
});
