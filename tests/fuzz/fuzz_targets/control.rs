//! The control socket's line protocol (`vip_agent::control`): the input is
//! what a client writes, cut into lines as the socket task cuts it (at
//! `\n`, at most `MAX_REQUEST` bytes a line, blank lines skipped), and each
//! line goes through `control::parse`.
//!
//! Asserts: parsing never panics; a request that parses, written again as
//! the client library writes it, parses to the same command; a refused one
//! gets an error reply (`ok` false, a message, exit code 2) that is one
//! JSON line and reads back as itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vip_agent::control::{MAX_REQUEST, Reply, Request, VERSION, parse};

fuzz_target!(|data: &[u8]| {
    for line in data.split(|b| *b == b'\n') {
        let body = &line[..line.len().min(MAX_REQUEST)];
        if body.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse(body) {
            Ok(command) => {
                let again = serde_json::to_vec(&Request {
                    v: VERSION,
                    command: command.clone(),
                })
                .expect("a request serializes");
                assert_eq!(parse(&again), Ok(command), "written as {again:?}");
            }
            Err(reply) => {
                assert!(!reply.ok, "an error reply says ok: {reply:?}");
                assert!(
                    reply.error.as_deref().is_some_and(|e| !e.is_empty()),
                    "an error reply without a message: {reply:?}"
                );
                assert_eq!(reply.exit_code, Some(2), "{reply:?}");
                let wire = serde_json::to_vec(&reply).expect("a reply serializes");
                assert!(
                    !wire.contains(&b'\n'),
                    "the reply is not one line: {wire:?}"
                );
                let back: Reply = serde_json::from_slice(&wire).expect("a reply reads back");
                assert_eq!(back, reply);
            }
        }
    }
});
