//! The `amqp` probe's reader (`vip_agent::check::amqp::amqp`), against a
//! server that answers with the input whatever the probe sends.
//!
//! Input: one header line `LOGIN CHUNK` (`-` for a probe without login, or
//! `user:password@vhost`, the vhost 1 to 255 bytes as config allows; the
//! largest read the server hands out, 0 for
//! any), then the server's bytes. Anything unreadable in the header falls
//! back to `- 0`.
//!
//! Asserts: the reader never panics and never waits on the closed stream;
//! its verdict (and its reason, but for the bytes it quotes) does not
//! depend on how the bytes are cut into reads; a pass
//! means the bytes begin with the frames of a good exchange
//! (`connection.start` for 0-9, and with a login `tune`, `open-ok` and
//! `close-ok` after it).

#![no_main]

use amq_protocol::{
    frame::{AMQPFrame, parse_frame},
    protocol::{AMQPClass, connection::AMQPMethod},
};
use libfuzzer_sys::fuzz_target;
use vip_agent::check::amqp::amqp;
use vip_fuzz::{Script, finish, header};

fuzz_target!(|data: &[u8]| {
    let (head, server) = header(data);
    let mut words = head.splitn(2, ' ');
    let login = words.next().and_then(|w| {
        let (user, rest) = w.split_once(':')?;
        let (password, vhost) = rest.split_once('@')?;
        // What config allows (1 to 255 bytes, an AMQP short string).
        if !(1..=255).contains(&vhost.len()) {
            return None;
        }
        Some((user.to_owned(), password.to_owned(), vhost.to_owned()))
    });
    let chunk = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    // An error quotes the first bytes it had read when it gave up; how many
    // those are depends on the reads, the rest of it must not.
    let probe = |chunk| {
        finish(amqp(&mut Script::new(server, chunk), login.as_ref())).map_err(|e| {
            e.split("; first bytes")
                .next()
                .unwrap_or_default()
                .to_owned()
        })
    };
    let whole = probe(0);
    if chunk > 0 {
        assert_eq!(
            probe(chunk),
            whole,
            "the verdict depends on the reads: {chunk}-byte reads against whole ones"
        );
    }
    if whole.is_ok() {
        let mut rest = server;
        let mut next = || {
            let (after, frame) = parse_frame(rest).expect("passed without a whole frame");
            rest = after;
            match frame {
                AMQPFrame::Method(0, AMQPClass::Connection(m)) => m,
                other => panic!("passed on frame {other}"),
            }
        };
        match next() {
            AMQPMethod::Start(s) => assert_eq!((s.version_major, s.version_minor), (0, 9)),
            other => panic!("passed on {other:?} for connection.start"),
        }
        if login.is_some() {
            assert!(matches!(next(), AMQPMethod::Tune(_)), "no connection.tune");
            assert!(matches!(next(), AMQPMethod::OpenOk(_)), "no open-ok");
            assert!(matches!(next(), AMQPMethod::CloseOk(_)), "no close-ok");
        }
    }
});
