//! The fixture table: one frame in, the verdict, the output bytes and the
//! verdict counter it must give.

use vip_common::counter;

use super::{Fixture, hex, verdict_name};

/// Expected outcome of one fixture.
pub enum Out {
    /// Verdict with the frame unchanged.
    Same(u32),
    /// Verdict with these exact bytes.
    Bytes(u32, Vec<u8>),
}

pub struct Case {
    pub what: &'static str,
    pub frame: Vec<u8>,
    pub out: Out,
    /// The one verdict counter (`counter::*`) the frame moves.
    pub counter: u32,
}

/// Runs `case` on `fx`: its verdict, its exact output bytes, its verdict
/// counter and no other, and the rx counter.
pub fn check(fx: &mut Fixture, case: &Case) {
    let (verdict, out, moved) = fx.run(&case.frame);
    let (want_verdict, want_bytes) = match &case.out {
        Out::Same(v) => (*v, case.frame.clone()),
        Out::Bytes(v, b) => (*v, b.clone()),
    };
    let replay = format!("\n  input  {}\n  output {}", hex(&case.frame), hex(&out));
    assert_eq!(
        verdict_name(verdict),
        verdict_name(want_verdict),
        "{}: verdict{replay}",
        case.what
    );
    assert_eq!(
        hex(&out),
        hex(&want_bytes),
        "{}: output bytes{replay}",
        case.what
    );
    let verdicts: Vec<usize> = moved
        .iter()
        .filter(|(i, _)| counter::VERDICTS.contains(&u32::try_from(*i).unwrap()))
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(
        verdicts
            .iter()
            .map(|i| counter::NAMES[*i])
            .collect::<Vec<_>>(),
        vec![counter::NAMES[case.counter as usize]],
        "{}: verdict counters{replay}",
        case.what
    );
    assert!(
        moved.contains(&(counter::RX as usize, 1)),
        "{}: rx counter",
        case.what
    );
}
