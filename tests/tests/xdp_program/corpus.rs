//! A seeded random corpus, whose verdicts and counters must add up.

use vip_common::counter;
use vip_tests::{
    frames::{Ipv4, Rng, TCP_ACK, TCP_SYN, checksum, icmp_echo, tcp},
    xdp::{
        AMQP, CLIENT, DNS_UDP, VIP, VIP_VLAN, VLAN, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX,
        arp_request, client_frame, hex, tagged, tcp_frame, test_run, udp_frame, verdict_name,
        with_fixture,
    },
};

/// Fragmentation needed quoting the backend's reply VIP:5672 -> CLIENT:44002.
fn frag_needed() -> Vec<u8> {
    let quote = Ipv4::new(VIP, CLIENT, 6).packet(&tcp(VIP, CLIENT, AMQP, 44002, TCP_ACK, b"x"));
    let mut m = vec![3, 4, 0, 0, 0, 0, 5, 0];
    m.extend_from_slice(&quote);
    let c = checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// A seeded corpus of 12 000 frames (random bytes, and valid frames with
/// random bytes flipped or cut): no run fails, every verdict is one the
/// program may give, output never grows, and the counters add up.
#[test]
fn random_corpus() {
    with_fixture(|fx| {
        fx.dp.reset_counters().unwrap();
        let seeds = [
            arp_request(VIP),
            tagged(VLAN, &arp_request(VIP_VLAN)),
            tcp_frame(VIP, 44000, AMQP, TCP_SYN, &[]),
            tagged(VLAN, &tcp_frame(VIP_VLAN, 44001, AMQP, TCP_ACK, b"data")),
            udp_frame(DNS_UDP, b"q"),
            client_frame(&Ipv4::new(CLIENT, VIP, 1), &icmp_echo(8, 1, 1, b"x")),
            client_frame(&Ipv4::new(CLIENT, VIP, 1), &frag_needed()),
        ];
        let mut rng = Rng::new(0x5eed_0001);
        let n = 12_000u64;
        let mut verdicts = [0u64; 5];
        for i in 0..n {
            let frame = if rng.below(3) == 0 {
                let len = 14 + usize::try_from(rng.below(100)).unwrap();
                let mut f: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
                // Steer a third of them into the interesting ethertypes.
                if rng.below(3) == 0 {
                    let et: [u8; 2] = [[0x08, 0x00], [0x08, 0x06], [0x81, 0x00]]
                        [usize::try_from(rng.below(3)).unwrap()];
                    f[12..14].copy_from_slice(&et);
                }
                f
            } else {
                let mut f = seeds[usize::try_from(rng.below(seeds.len() as u64)).unwrap()].clone();
                for _ in 0..=rng.below(4) {
                    let at = usize::try_from(rng.below(f.len() as u64)).unwrap();
                    f[at] = rng.byte();
                }
                if rng.below(2) == 0 {
                    let keep = 14 + usize::try_from(rng.below((f.len() - 13) as u64)).unwrap();
                    f.truncate(keep);
                }
                f
            };
            let mut out = vec![0u8; frame.len() + 512];
            let r = test_run(fx.dp.program(), &frame, &mut out, 1)
                .unwrap_or_else(|e| panic!("frame {i} failed: {e}: {}", hex(&frame)));
            assert!(
                matches!(r.return_value, XDP_DROP | XDP_PASS | XDP_TX | XDP_REDIRECT),
                "frame {i}: verdict {} for {}",
                r.return_value,
                hex(&frame)
            );
            assert_eq!(
                r.data_size_out as usize,
                frame.len(),
                "frame {i}: size changed"
            );
            verdicts[r.return_value as usize] += 1;
        }
        let c = fx.dp.counters().unwrap();
        let sum: u64 = counter::VERDICTS.map(|i| c[i as usize]).sum();
        assert_eq!(c[counter::RX as usize], n, "rx counts every frame");
        assert_eq!(sum, n, "verdict counters add up to rx: {c:?}");
        for (verdict, counters) in [
            (
                XDP_TX,
                &[
                    counter::ARP_REPLY,
                    counter::ICMP_ECHO_REPLY,
                    counter::FWD_TX,
                ][..],
            ),
            (
                XDP_DROP,
                &[
                    counter::DROP_MALFORMED,
                    counter::DROP_NO_BACKEND,
                    counter::DROP_REDIRECT,
                    counter::DROP_MARTIAN,
                ][..],
            ),
        ] {
            let counted: u64 = counters.iter().map(|i| c[*i as usize]).sum();
            assert_eq!(
                counted,
                verdicts[verdict as usize],
                "{} verdicts match their counters",
                verdict_name(verdict)
            );
        }
        eprintln!("corpus verdicts (aborted, drop, pass, tx, redirect): {verdicts:?}");
        assert!(
            verdicts[XDP_TX as usize] > 100 && verdicts[XDP_DROP as usize] > 100,
            "the corpus reaches the deep paths"
        );
    });
}
