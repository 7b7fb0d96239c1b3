//! The `http` probe's response reader (`vip_agent::check::http::http`),
//! against a server that answers with the input.
//!
//! Input: one header line `STATUS CHUNK [BODY]` (the check's
//! `expect_status`, the largest read the server hands out, 0 for any, and
//! the check's `expect_body`, if any), then the server's bytes. Anything
//! unreadable in the header falls back to `200 0`.
//!
//! Asserts: the reader never panics and never waits on the closed stream;
//! its verdict does not depend on how the response is cut into reads (the
//! same response whole and in `CHUNK`-byte reads); a pass means the bytes
//! hold a complete HTTP response head with the expected status.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vip_agent::check::http::http;
use vip_fuzz::{Script, finish, header};

fuzz_target!(|data: &[u8]| {
    let (head, response) = header(data);
    let mut words = head.splitn(3, ' ');
    let status = words.next().and_then(|w| w.parse().ok()).unwrap_or(200);
    let chunk = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    let body = words.next().filter(|b| !b.is_empty());
    let auth = ("guest".to_owned(), "guest".to_owned());
    let probe = |chunk| {
        finish(http(
            &mut Script::new(response, chunk),
            "10.99.0.12:15672",
            "/api/health/checks/alarms",
            status,
            body,
            Some(&auth),
        ))
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
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        assert!(
            matches!(resp.parse(response), Ok(httparse::Status::Complete(_))),
            "passed without a complete response head"
        );
        assert_eq!(resp.code, Some(status), "passed with another status");
    }
});
