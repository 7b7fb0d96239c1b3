//! Weighted Maglev lookup tables: the backend a new flow goes to.
//!
//! This module owns one pure function of the configuration: given a service's
//! backends (a stable identity, a weight and the id the data plane knows them
//! by) and a prime table size `M`, [`build`] returns the `M` slots the XDP
//! program indexes with `flow_hash % M`. It does no I/O; the agent writes the
//! result into the idle half of the service's lookup map and flips to it.
//!
//! # Algorithm
//!
//! Maglev hashing as in D. E. Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016, §3.4 (Pseudocode 1): every
//! backend has a preference list over the slots,
//!
//! ```text
//! offset         = h1(identity) % M
//! skip           = h2(identity) % (M - 1) + 1
//! permutation[j] = (offset + j * skip) % M        (a permutation, M prime)
//! ```
//!
//! and the backends take turns claiming the next still-free slot of their own
//! list until the table is full. That gives every backend `⌊M/N⌋` or `⌈M/N⌉`
//! slots, and adding or removing one backend moves few of the other backends'
//! slots.
//!
//! Weights follow Katran's `MaglevHashV2` (facebookincubator/katran,
//! `katran/lib/MaglevHashV2.cpp`): in every turn each backend adds its weight
//! to a credit and claims a slot only when the credit reaches the largest
//! weight (which it then pays back), so a backend of weight `w` claims
//! `w / max_weight` slots per round and the slot counts are proportional to
//! the weights. The credits make the result invariant under scaling all
//! weights by the same factor. A backend whose weight is tiny next to the
//! others gets no slot at all once `Σ weights / its weight` exceeds about `M`
//! (with `M = 65 537`: e.g. weight 1 next to 255 backends of weight 300).
//!
//! # Determinism
//!
//! Two nodes with the same configuration must build byte-identical tables, so
//! the result depends only on the entries (as a multiset) and `M`:
//!
//! * Entries are processed in a canonical order, sorted by
//!   `(identity, id, weight)`, never in the caller's order.
//! * `h1` and `h2` are written out below (64-bit FNV-1a with two different
//!   offset bases, each followed by the `fmix64` finaliser of `MurmurHash3`);
//!   no `std` hasher (randomly seeded, and free to change between Rust
//!   releases) is involved, and all arithmetic is on fixed-width integers.
//!
//! The golden tests at the bottom pin both the hashes and the first slots of a
//! table; if they fail, the table layout changed and every flow of a rolling
//! upgrade would be rehashed — change them only on purpose.
//!
//! # Cost
//!
//! Finding free slots along the permutations takes `O(M log M)` expected
//! steps (the paper's analysis), whatever the weights. On top of that every
//! round costs one credit update per backend, and there are about
//! `M · max_weight / Σ weights` rounds: `M / N` for equal weights, at worst
//! `M` (one heavy backend among light ones), i.e. at most `N · M` additions.
//! No allocation per slot: a table, a bitmap of taken slots and one small
//! cursor per backend. For `M = 65 537` and 256 backends a build takes a few
//! milliseconds (see the `build_time_65537_x_256` test).

use std::collections::BTreeMap;

/// One backend as the table builder sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Stable identity (e.g. the IPv4 address octets, optionally + port): the
    /// only input of the backend's permutation, so it must not depend on
    /// anything that differs between nodes.
    pub identity: &'a [u8],
    /// Relative share of the slots; 0 = not in the table (e.g. draining).
    pub weight: u32,
    /// The value written into the backend's slots.
    pub id: u32,
}

/// Builds a Maglev table of `size` slots.
///
/// Every slot holds the `id` of an entry with `weight > 0`; the number of slots
/// per entry is proportional to its weight. If no entry has `weight > 0` (or
/// `entries` is empty), every slot holds `empty` (callers pass
/// [`vip_common::NO_BACKEND`]). The result does not depend on the order of
/// `entries`. Entries with equal identities get equal permutations; they still
/// each get their share, but disruption is only minimal for distinct identities.
///
/// # Panics
///
/// If `size` is not prime (checked with [`is_prime`] in every build profile):
/// the permutations are only permutations for a prime size.
#[must_use]
pub fn build(entries: &[Entry<'_>], size: u32, empty: u32) -> Vec<u32> {
    assert!(
        is_prime(size),
        "maglev table size {size} is not prime (the permutations need a prime size)"
    );
    let len = size as usize;

    let mut live: Vec<&Entry<'_>> = entries.iter().filter(|e| e.weight > 0).collect();
    let Some(max_weight) = live.iter().map(|e| u64::from(e.weight)).max() else {
        return vec![empty; len];
    };
    live.sort_unstable_by(|a, b| {
        a.identity
            .cmp(b.identity)
            .then(a.id.cmp(&b.id))
            .then(a.weight.cmp(&b.weight))
    });
    let mut cursors: Vec<Cursor> = live.iter().map(|e| Cursor::new(e, size)).collect();

    let mut table = vec![empty; len];
    let mut taken = vec![false; len];
    let mut filled: u32 = 0;
    // Terminates: an entry of weight `max_weight` claims a slot every round,
    // and each claim finds a free slot because a permutation visits them all.
    loop {
        for c in &mut cursors {
            c.credit += c.weight;
            if c.credit < max_weight {
                continue;
            }
            c.credit -= max_weight;
            while taken[c.pos as usize] {
                c.advance(size);
            }
            taken[c.pos as usize] = true;
            table[c.pos as usize] = c.id;
            c.advance(size);
            filled += 1;
            if filled == size {
                return table;
            }
        }
    }
}

/// Slots per id in `table` (for reports and `vipctl`): `(id, slots)` sorted by
/// id, ids absent from the table omitted. An `empty` marker counts like any id.
#[must_use]
pub fn shares(table: &[u32]) -> Vec<(u32, u32)> {
    let mut counts: BTreeMap<u32, u32> = BTreeMap::new();
    for &id in table {
        *counts.entry(id).or_insert(0) += 1;
    }
    counts.into_iter().collect()
}

/// Whether `n` is prime (trial division; at most ~33 000 steps for a `u32`).
#[must_use]
pub fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    let n = u64::from(n);
    let mut d: u64 = 5;
    while d * d <= n {
        if n.is_multiple_of(d) || n.is_multiple_of(d + 2) {
            return false;
        }
        d += 6;
    }
    true
}

/// A backend's walk along its permutation plus its weight credit.
struct Cursor {
    /// `permutation[j]` for the next `j` to try.
    pos: u32,
    skip: u32,
    id: u32,
    weight: u64,
    credit: u64,
}

impl Cursor {
    fn new(e: &Entry<'_>, size: u32) -> Self {
        let (offset, skip) = offset_skip(e.identity, size);
        Self {
            pos: offset,
            skip,
            id: e.id,
            weight: u64::from(e.weight),
            credit: 0,
        }
    }

    /// `j += 1`: `pos = (pos + skip) % size`, which equals
    /// `(offset + j * skip) % size` without a multiplication, and without
    /// overflow (`pos < size`, `1 <= skip < size`).
    fn advance(&mut self, size: u32) {
        let room = size - self.skip;
        self.pos = if self.pos >= room {
            self.pos - room
        } else {
            self.pos + self.skip
        };
    }
}

/// The permutation parameters of `identity` for a table of `size` slots:
/// `offset = h1 % size` in `0..size`, `skip = h2 % (size - 1) + 1` in
/// `1..size`.
fn offset_skip(identity: &[u8], size: u32) -> (u32, u32) {
    let size = u64::from(size);
    let offset = h1(identity) % size;
    let skip = h2(identity) % (size - 1) + 1;
    (narrow(offset), narrow(skip))
}

/// A value reduced modulo a `u32` back to `u32`.
fn narrow(v: u64) -> u32 {
    u32::try_from(v).expect("reduced modulo a u32")
}

/// The 64-bit FNV-1a prime, 2^40 + 2^8 + 0xb3.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// The standard 64-bit FNV-1a offset basis: the seed of [`h1`].
const H1_SEED: u64 = 0xcbf2_9ce4_8422_2325;
/// The seed of [`h2`]: the FNV offset basis XOR the 64-bit golden ratio
/// (`0x9e37_79b9_7f4a_7c15`), so `h2` and `h1` are unrelated.
const H2_SEED: u64 = H1_SEED ^ 0x9e37_79b9_7f4a_7c15;

/// The offset hash: [`fnv1a_fmix`] seeded with [`H1_SEED`].
fn h1(identity: &[u8]) -> u64 {
    fnv1a_fmix(H1_SEED, identity)
}

/// The skip hash: [`fnv1a_fmix`] seeded with [`H2_SEED`].
fn h2(identity: &[u8]) -> u64 {
    fnv1a_fmix(H2_SEED, identity)
}

/// 64-bit FNV-1a over `bytes` starting from `seed` (for each byte:
/// `h ^= byte; h *= FNV_PRIME`), then `MurmurHash3`'s `fmix64` finaliser so
/// every input bit reaches every output bit (plain FNV mixes short inputs,
/// like 4-byte addresses, poorly into the low bits used by `% size`).
fn fnv1a_fmix(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const M: u32 = 65_537;
    const EMPTY: u32 = u32::MAX;

    /// `n` distinct identities: 10.0.x.y port 80, as address + port octets.
    fn identities(n: usize) -> Vec<[u8; 6]> {
        (0..n)
            .map(|i| {
                let [.., hi, lo] = u32::try_from(i + 1).unwrap().to_be_bytes();
                [10, 0, hi, lo, 0, 80]
            })
            .collect()
    }

    /// Entries over `idents` with ids 100, 101, … and the given weights.
    fn entries<'a>(idents: &'a [[u8; 6]], weights: &[u32]) -> Vec<Entry<'a>> {
        idents
            .iter()
            .zip(weights)
            .enumerate()
            .map(|(i, (ident, &weight))| Entry {
                identity: ident,
                weight,
                id: 100 + u32::try_from(i).unwrap(),
            })
            .collect()
    }

    fn equal(idents: &[[u8; 6]]) -> Vec<Entry<'_>> {
        entries(idents, &vec![1; idents.len()])
    }

    fn slots_of(table: &[u32], id: u32) -> usize {
        table.iter().filter(|&&s| s == id).count()
    }

    #[test]
    fn primes() {
        let small: Vec<u32> = (0..60).filter(|&n| is_prime(n)).collect();
        assert_eq!(
            small,
            [
                2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59
            ]
        );
        for p in [251, 4093, 65_537, 2_147_483_647, 4_294_967_291] {
            assert!(is_prime(p), "{p}");
        }
        // 65 536 = 2^16, 4 294 967 295 = 3·5·17·257·65 537, 25 = 5², 49 = 7²,
        // 4 294 836 225 = 65 535².
        for c in [0, 1, 4, 25, 49, 4_093 * 2, 65_536, 4_294_836_225, u32::MAX] {
            assert!(!is_prime(c), "{c}");
        }
    }

    #[test]
    fn permutation_walk_is_the_paper_formula() {
        for size in [2, 13, 251, M] {
            for ident in identities(5) {
                let (offset, skip) = offset_skip(&ident, size);
                assert!(offset < size && (1..size).contains(&skip));
                let mut c = Cursor {
                    pos: offset,
                    skip,
                    id: 0,
                    weight: 1,
                    credit: 0,
                };
                let mut seen = vec![false; size as usize];
                for j in 0..u64::from(size) {
                    let want = (u64::from(offset) + j * u64::from(skip)) % u64::from(size);
                    assert_eq!(u64::from(c.pos), want, "size {size} j {j}");
                    assert!(!seen[c.pos as usize], "not a permutation");
                    seen[c.pos as usize] = true;
                    c.advance(size);
                }
                assert_eq!(c.pos, offset, "cycle length is size");
            }
        }
    }

    #[test]
    fn every_slot_filled_with_a_live_id() {
        for size in [13, 251, M] {
            for n in [1, 3, 10, 256] {
                let idents = identities(n + 1);
                // One extra entry with weight 0 that must never appear.
                let mut weights = vec![1; n];
                weights.push(0);
                let e = entries(&idents, &weights);
                let table = build(&e, size, EMPTY);
                assert_eq!(table.len(), size as usize);
                let dead = e[n].id;
                for &s in &table {
                    assert!(s != dead && (100..100 + u32::try_from(n).unwrap()).contains(&s));
                }
                if n <= size as usize {
                    for x in &e[..n] {
                        assert!(slots_of(&table, x.id) > 0, "size {size} n {n}");
                    }
                }
            }
        }
    }

    #[test]
    fn no_live_entries_means_all_empty() {
        assert_eq!(build(&[], 13, EMPTY), vec![EMPTY; 13]);
        assert_eq!(build(&[], M, 7), vec![7; M as usize]);
        let idents = identities(3);
        let e = entries(&idents, &[0, 0, 0]);
        assert_eq!(build(&e, 251, EMPTY), vec![EMPTY; 251]);
    }

    #[test]
    #[should_panic(expected = "not prime")]
    fn non_prime_size_panics() {
        let idents = identities(3);
        let _ = build(&equal(&idents), 65_536, EMPTY);
    }

    #[test]
    #[should_panic(expected = "not prime")]
    fn zero_size_panics() {
        let _ = build(&[], 0, EMPTY);
    }

    #[test]
    fn deterministic_and_order_independent() {
        let idents = identities(10);
        let e = entries(&idents, &[1, 2, 3, 1, 5, 1, 1, 7, 1, 2]);
        let a = build(&e, M, EMPTY);
        assert_eq!(a, build(&e, M, EMPTY));
        let mut rev = e.clone();
        rev.reverse();
        assert_eq!(a, build(&rev, M, EMPTY));
        let mut rot = e.clone();
        rot.rotate_left(3);
        rot.swap(0, 7);
        assert_eq!(a, build(&rot, M, EMPTY));
    }

    #[test]
    fn golden_hashes() {
        // Pins h1/h2 (and so every table) across toolchains and platforms.
        let got = [h1(b""), h2(b""), h1(&[10, 0, 0, 1]), h2(&[10, 0, 0, 1])];
        println!("golden hashes: {got:#018x?}");
        assert_eq!(got, GOLDEN_HASHES);
    }

    // Cross-checked against an independent Python implementation.
    const GOLDEN_HASHES: [u64; 4] = [
        0xefd0_1f60_ba99_2926,
        0x6bcb_9d63_eb8e_ab8b,
        0x251c_e681_282f_daa9,
        0x6a61_8d34_5f87_bd2c,
    ];

    #[test]
    fn golden_table() {
        let idents = [[10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 3]];
        let e: Vec<Entry<'_>> = idents
            .iter()
            .zip([7, 8, 9])
            .map(|(ident, id)| Entry {
                identity: ident,
                weight: 1,
                id,
            })
            .collect();
        let table = build(&e, M, EMPTY);
        println!("golden: {:?}", &table[..16]);
        assert_eq!(table[..16], GOLDEN_FIRST_16);
    }

    // Cross-checked against an independent Python implementation of the
    // paper's Pseudocode 1 with the same hashes.
    const GOLDEN_FIRST_16: [u32; 16] = [7, 9, 7, 7, 7, 7, 9, 9, 8, 7, 9, 7, 9, 7, 7, 7];

    #[test]
    fn equal_weights_balance() {
        for n in [3, 10, 100] {
            let idents = identities(n);
            let table = build(&equal(&idents), M, EMPTY);
            let fair = f64::from(M) / f64::from(u32::try_from(n).unwrap());
            for (id, slots) in shares(&table) {
                let dev = (f64::from(slots) - fair).abs();
                assert!(
                    dev <= 0.01 * fair,
                    "n {n} id {id}: {slots} slots, fair {fair:.1}"
                );
            }
            assert_eq!(shares(&table).len(), n);
        }
    }

    #[test]
    fn weights_are_proportional() {
        let idents = identities(3);
        let table = build(&entries(&idents, &[1, 2, 1]), M, EMPTY);
        let want = [0.25, 0.5, 0.25];
        let got = shares(&table);
        assert_eq!(got.len(), 3);
        for ((id, slots), w) in got.into_iter().zip(want) {
            let expect = w * f64::from(M);
            assert!(
                (f64::from(slots) - expect).abs() <= 0.02 * expect,
                "id {id}: {slots} slots, want {expect:.0}"
            );
        }
        // Scaling every weight changes nothing.
        assert_eq!(table, build(&entries(&idents, &[3, 6, 3]), M, EMPTY));
    }

    #[test]
    fn shares_counts_per_id_sorted() {
        assert_eq!(shares(&[]), vec![]);
        assert_eq!(
            shares(&[5, 3, 5, EMPTY, 3, 5]),
            vec![(3, 2), (5, 3), (EMPTY, 1)]
        );
    }

    /// Slots that changed between `old` and `new`, ignoring those that hold
    /// `ignore` in either table (the backend that came or went).
    fn moved(old: &[u32], new: &[u32], ignore: u32) -> usize {
        old.iter()
            .zip(new)
            .filter(|&(&a, &b)| a != ignore && b != ignore && a != b)
            .count()
    }

    #[test]
    fn minimal_disruption() {
        for n in [3_usize, 5, 10, 50] {
            let idents = identities(n + 1);
            let all = equal(&idents);
            let base = &all[..n];
            let old = build(base, M, EMPTY);
            let bound = 2.0 * f64::from(M) / f64::from(u32::try_from(n).unwrap());
            // Asserted exactly in integers: changed < (2 / n) * M.
            for victim in [0, n / 2, n - 1] {
                let mut rest = base.to_vec();
                let gone = rest.remove(victim);
                let new = build(&rest, M, EMPTY);
                assert_eq!(slots_of(&new, gone.id), 0);
                let changed = moved(&old, &new, gone.id);
                println!(
                    "n {n}: removing #{victim} moved {changed} other slots (bound {bound:.0})"
                );
                assert!(
                    changed * n < 2 * M as usize,
                    "n {n} victim {victim}: {changed} >= {bound:.0}"
                );
                // Adding it back restores the table exactly.
                rest.push(gone);
                assert_eq!(build(&rest, M, EMPTY), old);
            }
            // Adding a new backend.
            let grown = build(&all, M, EMPTY);
            let added = all[n].id;
            assert!(slots_of(&grown, added) > 0);
            let changed = moved(&old, &grown, added);
            println!("n {n}: adding one moved {changed} other slots (bound {bound:.0})");
            assert!(
                changed * n < 2 * M as usize,
                "n {n} add: {changed} >= {bound:.0}"
            );
        }
    }

    /// Median of 5 builds of `e` at size [`M`].
    fn median_build_time(e: &[Entry<'_>]) -> std::time::Duration {
        let mut times: Vec<_> = (0..5)
            .map(|_| {
                let t = std::time::Instant::now();
                let table = std::hint::black_box(build(std::hint::black_box(e), M, EMPTY));
                let elapsed = t.elapsed();
                assert_eq!(table.len(), M as usize);
                elapsed
            })
            .collect();
        times.sort();
        times[2]
    }

    /// Run alone for a clean number:
    /// `cargo test --release -p vip-agent --lib maglev::tests::build_time -- --nocapture`.
    #[test]
    fn build_time_65537_x_256() {
        let idents = identities(256);
        let e = equal(&idents);
        let mut mixed = e.clone();
        for (i, x) in mixed.iter_mut().enumerate() {
            x.weight = u32::try_from(i % 10 + 1).unwrap();
        }
        // The slow case for the credit rounds: ~M rounds of N credit updates.
        let mut skewed = e.clone();
        skewed[0].weight = 1000;
        let times = [e, mixed, skewed].map(|e| median_build_time(&e));
        println!(
            "build 65537 slots x 256 backends, median of 5: equal weights {:?}, \
             weights 1..10 {:?}, one 1000 + 255 x 1 {:?}",
            times[0], times[1], times[2]
        );
        if !cfg!(debug_assertions) {
            for t in times {
                assert!(t.as_millis() < 50, "{t:?}");
            }
        }
    }

    /// A direct transcription of the weighted population (Katran's
    /// `MaglevHashV2::generateHashRing`) over the canonically sorted entries,
    /// with `permutation[j] = (offset + j * skip) % size` in `u64`: the model
    /// [`build`] must agree with.
    fn reference(entries: &[Entry<'_>], size: u32, empty: u32) -> Vec<u32> {
        let mut live: Vec<&Entry<'_>> = entries.iter().filter(|e| e.weight > 0).collect();
        live.sort_by_key(|e| (e.identity, e.id, e.weight));
        let mut table = vec![empty; size as usize];
        let Some(max) = live.iter().map(|e| e.weight).max() else {
            return table;
        };
        let m = u64::from(size);
        let perm: Vec<(u64, u64)> = live
            .iter()
            .map(|e| (h1(e.identity) % m, h2(e.identity) % (m - 1) + 1))
            .collect();
        let mut next = vec![0_u64; live.len()];
        let mut cum = vec![0_u64; live.len()];
        let mut taken = vec![false; size as usize];
        let mut runs = 0;
        loop {
            for i in 0..live.len() {
                cum[i] += u64::from(live[i].weight);
                if cum[i] < u64::from(max) {
                    continue;
                }
                cum[i] -= u64::from(max);
                let (offset, skip) = perm[i];
                let mut cur = usize::try_from((offset + next[i] * skip) % m).unwrap();
                while taken[cur] {
                    next[i] += 1;
                    cur = usize::try_from((offset + next[i] * skip) % m).unwrap();
                }
                taken[cur] = true;
                table[cur] = live[i].id;
                next[i] += 1;
                runs += 1;
                if runs == size {
                    return table;
                }
            }
        }
    }

    #[test]
    fn matches_reference_at_full_size() {
        let idents = identities(256);
        let weights: Vec<u32> = (0..256).map(|i| i % 7).collect();
        let e = entries(&idents, &weights);
        assert_eq!(build(&e, M, EMPTY), reference(&e, M, EMPTY));
    }

    proptest! {
        #[test]
        fn matches_reference(
            backends in prop::collection::vec(
                (prop::collection::vec(any::<u8>(), 0..6), 0_u32..=20, any::<u32>()),
                0..30,
            ),
            size in prop::sample::select(vec![2_u32, 3, 13, 251, 4093]),
        ) {
            let e: Vec<Entry<'_>> = backends
                .iter()
                .map(|(ident, weight, id)| Entry { identity: ident, weight: *weight, id: *id })
                .collect();
            prop_assert_eq!(build(&e, size, EMPTY), reference(&e, size, EMPTY));
        }

        #[test]
        fn random_backends_all_valid(
            backends in prop::collection::vec(
                (prop::collection::vec(any::<u8>(), 1..8), 1_u32..=10),
                1..40,
            ),
        ) {
            let e: Vec<Entry<'_>> = backends
                .iter()
                .enumerate()
                .map(|(i, (ident, w))| Entry {
                    identity: ident,
                    weight: *w,
                    id: u32::try_from(i).unwrap(),
                })
                .collect();
            let table = build(&e, 4093, EMPTY);
            prop_assert_eq!(table.len(), 4093);
            for &s in &table {
                prop_assert!((s as usize) < e.len());
            }
            let owned = shares(&table);
            prop_assert_eq!(owned.len(), e.len(), "every backend owns a slot");
        }

        #[test]
        fn input_order_never_matters(
            (backends, shuffled) in prop::collection::vec(
                (prop::collection::vec(any::<u8>(), 1..6), 0_u32..=4),
                0..20,
            )
            .prop_flat_map(|v| {
                let s = Just(v.clone()).prop_shuffle();
                (Just(v), s)
            }),
        ) {
            let mk = |v: &[(Vec<u8>, u32)]| -> Vec<u32> {
                let e: Vec<Entry<'_>> = v
                    .iter()
                    .map(|(ident, w)| Entry { identity: ident, weight: *w, id: u32::from(ident[0]) })
                    .collect();
                build(&e, 251, EMPTY)
            };
            prop_assert_eq!(mk(&backends), mk(&shuffled));
        }
    }
}
