//! Builders for the Ethernet frames the XDP tests and benchmarks feed through
//! `BPF_PROG_TEST_RUN`: ARP, IPv4 with TCP, UDP and ICMP, optionally 802.1Q
//! tagged. Checksums are computed, so a test can check a rewritten frame by
//! recomputing them.

use std::net::Ipv4Addr;

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// The Internet checksum of `data` (RFC 1071).
#[must_use]
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    #[expect(clippy::cast_possible_truncation, reason = "folded to 16 bits")]
    !(sum as u16)
}

/// An Ethernet header (with an 802.1Q tag when `vlan` is set) followed by `payload`.
#[must_use]
pub fn ethernet(
    dst: [u8; 6],
    src: [u8; 6],
    vlan: Option<u16>,
    ethertype: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(18 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(tci) = vlan {
        f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An ARP packet for Ethernet/IPv4.
#[must_use]
pub fn arp(op: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
    let mut p = Vec::with_capacity(28);
    p.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4]);
    p.extend_from_slice(&op.to_be_bytes());
    p.extend_from_slice(&sha);
    p.extend_from_slice(&spa.octets());
    p.extend_from_slice(&tha);
    p.extend_from_slice(&tpa.octets());
    p
}

/// Fields of an IPv4 header that tests vary.
#[derive(Clone, Debug)]
pub struct Ipv4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    /// Flags and fragment offset, host order (0x2000 = more fragments).
    pub frag: u16,
    /// IP options (padded to a multiple of 4 by the caller).
    pub options: Vec<u8>,
}

impl Ipv4 {
    #[must_use]
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Self {
        Self {
            src,
            dst,
            proto,
            ttl: 64,
            frag: 0x4000, // don't fragment
            options: Vec::new(),
        }
    }

    /// The header (with a correct checksum) followed by `payload`.
    #[must_use]
    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        let hlen = 20 + self.options.len();
        assert!(hlen.is_multiple_of(4) && hlen <= 60, "bad options length");
        let total = u16::try_from(hlen + payload.len()).expect("fits an IPv4 packet");
        let mut p = Vec::with_capacity(hlen + payload.len());
        #[expect(clippy::cast_possible_truncation, reason = "hlen <= 60")]
        p.push(0x40 | (hlen / 4) as u8);
        p.push(0);
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&0x1234u16.to_be_bytes());
        p.extend_from_slice(&self.frag.to_be_bytes());
        p.push(self.ttl);
        p.push(self.proto);
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&self.src.octets());
        p.extend_from_slice(&self.dst.octets());
        p.extend_from_slice(&self.options);
        let c = checksum(&p[..hlen]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }
}

fn pseudo_sum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let mut buf = Vec::with_capacity(12 + segment.len());
    buf.extend_from_slice(&src.octets());
    buf.extend_from_slice(&dst.octets());
    buf.push(0);
    buf.push(proto);
    buf.extend_from_slice(&u16::try_from(segment.len()).expect("small").to_be_bytes());
    buf.extend_from_slice(segment);
    checksum(&buf)
}

/// A TCP segment with a 20-byte header (no options) and a correct checksum:
/// sequence number 1000, acknowledgement 2000 when `flags` has ACK (else 0),
/// window 64240.
#[must_use]
pub fn tcp(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let ack = if flags & TCP_ACK != 0 { 2000 } else { 0 };
    tcp_segment(&TcpSegment {
        src,
        dst,
        sport,
        dport,
        seq: 1000,
        ack,
        flags,
        window: 64240,
        payload,
    })
}

/// Every field of a TCP segment with a 20-byte header.
#[derive(Clone, Copy, Debug)]
pub struct TcpSegment<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub payload: &'a [u8],
}

/// The segment's bytes, with a correct checksum.
#[must_use]
pub fn tcp_segment(t: &TcpSegment<'_>) -> Vec<u8> {
    let mut s = Vec::with_capacity(20 + t.payload.len());
    s.extend_from_slice(&t.sport.to_be_bytes());
    s.extend_from_slice(&t.dport.to_be_bytes());
    s.extend_from_slice(&t.seq.to_be_bytes());
    s.extend_from_slice(&t.ack.to_be_bytes());
    s.push(5 << 4);
    s.push(t.flags);
    s.extend_from_slice(&t.window.to_be_bytes());
    s.extend_from_slice(&[0, 0, 0, 0]);
    s.extend_from_slice(t.payload);
    let c = pseudo_sum(t.src, t.dst, 6, &s);
    s[16..18].copy_from_slice(&c.to_be_bytes());
    s
}

/// A UDP datagram with a correct checksum.
#[must_use]
pub fn udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(8 + payload.len()).expect("small");
    let mut s = Vec::with_capacity(8 + payload.len());
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&len.to_be_bytes());
    s.extend_from_slice(&[0, 0]);
    s.extend_from_slice(payload);
    let c = pseudo_sum(src, dst, 17, &s);
    s[6..8].copy_from_slice(&c.to_be_bytes());
    s
}

/// An ICMP echo request (type 8) or reply (type 0) with a correct checksum.
#[must_use]
pub fn icmp_echo(kind: u8, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut s = vec![kind, 0, 0, 0];
    s.extend_from_slice(&id.to_be_bytes());
    s.extend_from_slice(&seq.to_be_bytes());
    s.extend_from_slice(payload);
    let c = checksum(&s);
    s[2..4].copy_from_slice(&c.to_be_bytes());
    s
}

/// A small deterministic PRNG (xorshift64*) for seeded corpora.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    #[expect(clippy::cast_possible_truncation, reason = "taking the low byte")]
    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
}
