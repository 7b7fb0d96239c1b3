//! The `http` probe: a `GET` whose status, and optionally body, must match;
//! the response parsed with `httparse`. Generic over the stream, so the
//! tests drive it over in-memory pipes.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};

use super::tcp::read_more;

/// The largest HTTP response head read.
const MAX_HEAD: usize = 128 * 1024;
/// The largest HTTP body read.
const MAX_BODY: usize = 64 * 1024;

/// The HTTP exchange: `GET path` and the status (and body) check.
pub async fn http<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    host: &str,
    path: &str,
    expect_status: u16,
    expect_body: Option<&str>,
    auth: Option<&(String, String)>,
) -> Result<(), String> {
    use base64::Engine as _;
    use std::fmt::Write as _;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: vip-health-check\r\nAccept: */*\r\nConnection: close\r\n"
    );
    if let Some((user, password)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let _ = write!(req, "Authorization: Basic {token}\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    let mut buf = Vec::new();
    let (status, head_len, length) = loop {
        if !read_more(s, &mut buf).await? {
            return Err(format!(
                "server closed the connection after {} byte(s)",
                buf.len()
            ));
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let length = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| {
                        std::str::from_utf8(h.value)
                            .ok()?
                            .trim()
                            .parse::<usize>()
                            .ok()
                    });
                break (resp.code.unwrap_or(0), len, length);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Err("response head too large".into()),
            Err(e) => return Err(format!("not an HTTP response: {e}")),
        }
    };
    if status != expect_status {
        return Err(format!("HTTP {status}, expected {expect_status}"));
    }
    let Some(want) = expect_body else {
        return Ok(());
    };
    // The body is what Content-Length says (at most MAX_BODY): bytes after
    // it are not looked at, so the verdict does not depend on how the
    // response arrived in reads.
    let limit = length.map_or(MAX_BODY, |l| l.min(MAX_BODY));
    let mut body = buf.split_off(head_len);
    body.truncate(limit);
    while body.len() < limit && !contains(&body, want) {
        if !read_more(s, &mut body).await? {
            break;
        }
        body.truncate(limit);
    }
    if contains(&body, want) {
        Ok(())
    } else {
        Err(format!("HTTP {status} but the body lacks {want:?}"))
    }
}

/// Whether `want` occurs in `body`, compared as bytes: a read that ends
/// inside a UTF-8 sequence must not make a difference.
fn contains(body: &[u8], want: &str) -> bool {
    want.is_empty() || body.windows(want.len()).any(|w| w == want.as_bytes())
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, duplex};

    use super::*;

    async fn http_against(
        response: &'static [u8],
        body: Option<&str>,
    ) -> (Result<(), String>, String) {
        http_in_reads(response, 7, body).await
    }

    /// The exchange against `response`, written `chunk` bytes at a time.
    async fn http_in_reads(
        response: &'static [u8],
        chunk: usize,
        body: Option<&str>,
    ) -> (Result<(), String>, String) {
        let (mut client, mut srv) = duplex(1 << 16);
        let h = tokio::spawn(async move {
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                let n = srv.read(&mut b).await.unwrap();
                req.extend_from_slice(&b[..n]);
            }
            // Split the response across writes.
            for part in response.chunks(chunk) {
                srv.write_all(part).await.unwrap();
            }
            drop(srv);
            String::from_utf8(req).unwrap()
        });
        let auth = ("guest".to_owned(), "guest".to_owned());
        let r = http(
            &mut client,
            "10.99.0.12:15672",
            "/api/health/checks/alarms",
            200,
            body,
            Some(&auth),
        )
        .await;
        (r, h.await.unwrap())
    }

    #[tokio::test]
    async fn http_checks_status_body_and_sends_basic_auth() {
        let ok: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}";
        let (r, req) = http_against(ok, None).await;
        assert_eq!(r, Ok(()));
        assert!(
            req.starts_with("GET /api/health/checks/alarms HTTP/1.1\r\nHost: 10.99.0.12:15672\r\n"),
            "{req}"
        );
        assert!(
            req.contains("\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n"),
            "{req}"
        );
        assert_eq!(http_against(ok, Some("\"ok\"")).await.0, Ok(()));
        assert_eq!(
            http_against(ok, Some("healthy")).await.0,
            Err("HTTP 200 but the body lacks \"healthy\"".into())
        );
        let failed: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(
            http_against(failed, None).await.0,
            Err("HTTP 503, expected 200".into())
        );
        let garbage: &[u8] = b"SSH-2.0-OpenSSH\r\n\r\n";
        assert!(
            http_against(garbage, None)
                .await
                .0
                .unwrap_err()
                .contains("not an HTTP response")
        );
        let short: &[u8] = b"HTTP/1.1 200";
        assert!(
            http_against(short, None)
                .await
                .0
                .unwrap_err()
                .contains("closed the connection")
        );
    }

    /// Found by the http fuzz target: bytes after Content-Length counted
    /// when they came in the same read as the head, and not when they came
    /// later, so one response passed or failed by how TCP cut it.
    #[tokio::test]
    async fn the_body_ends_at_content_length_however_it_is_read() {
        let response: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokXYZ";
        for chunk in [1, 7, response.len()] {
            assert_eq!(
                http_in_reads(response, chunk, Some("XY")).await.0,
                Err("HTTP 200 but the body lacks \"XY\"".into()),
                "{chunk}-byte writes"
            );
            assert_eq!(http_in_reads(response, chunk, Some("ok")).await.0, Ok(()));
        }
    }
}
