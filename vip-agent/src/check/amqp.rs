//! The `amqp` probe: the AMQP 0-9-1 protocol header must get a
//! `connection.start` (decoded with `amq-protocol`); with a user, a whole
//! PLAIN login, vhost open and close. Generic over the stream, so the tests
//! drive it over in-memory pipes.

use amq_protocol::{
    frame::{AMQPFrame, WriteContext, gen_frame, parse_frame},
    protocol::{AMQPClass, connection},
    types::{FieldTable, LongString, ShortString},
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};

/// The AMQP 0-9-1 protocol header a client opens with.
pub const AMQP_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
/// The largest AMQP frame read.
const MAX_FRAME: usize = 128 * 1024;

/// Reads one whole AMQP frame (or a protocol header) from `s`.
async fn read_frame<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> Result<AMQPFrame, String> {
    loop {
        // A server that does not speak 0-9-1 answers with the protocol
        // header it wants, then closes (AMQP 0-9-1 §4.2.2).
        if buf.len() >= 8 && buf.starts_with(b"AMQP") {
            return Err(format!(
                "server refused AMQP 0-9-1 and answered with protocol header AMQP {:?} (it wants that version)",
                &buf[4..8]
            ));
        }
        if buf.len() >= 8 || (!buf.is_empty() && !b"AMQP".starts_with(&buf[..buf.len().min(4)])) {
            match parse_frame(&buf[..]) {
                Ok((rest, frame)) => {
                    let used = buf.len() - rest.len();
                    buf.drain(..used);
                    return Ok(frame);
                }
                Err(e) if e.is_incomplete() => {}
                Err(e) => {
                    let shown: Vec<u8> = buf.iter().take(16).copied().collect();
                    return Err(format!("not an AMQP frame ({e}); first bytes {shown:02x?}"));
                }
            }
        }
        if buf.len() >= MAX_FRAME {
            return Err(format!("frame larger than {MAX_FRAME} bytes"));
        }
        if !super::tcp::read_more(s, buf).await? {
            return Err(format!(
                "server closed the connection after {} byte(s) of a frame",
                buf.len()
            ));
        }
    }
}

async fn write_frame<S: AsyncWrite + Unpin>(s: &mut S, frame: &AMQPFrame) -> Result<(), String> {
    let ctx = gen_frame(frame)(WriteContext::from(Vec::new()))
        .map_err(|e| format!("cannot encode {frame}: {e:?}"))?;
    s.write_all(&ctx.write)
        .await
        .map_err(|e| format!("write failed: {e}"))
}

fn method(frame: AMQPFrame) -> Result<connection::AMQPMethod, String> {
    match frame {
        AMQPFrame::Method(0, AMQPClass::Connection(m)) => Ok(m),
        AMQPFrame::ProtocolHeader(v) => Err(format!(
            "server refused AMQP 0-9-1 and answered with protocol header {v} (it wants that version)"
        )),
        other => Err(format!("unexpected frame {other}")),
    }
}

fn refused(close: &connection::Close) -> String {
    format!(
        "server closed the connection: {} {}",
        close.reply_code,
        close.reply_text.as_str()
    )
}

/// The AMQP exchange: header, `connection.start`; with `login`, start-ok
/// (PLAIN), tune-ok, open, open-ok, close, close-ok.
pub async fn amqp<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    login: Option<&(String, String, String)>,
) -> Result<(), String> {
    s.write_all(AMQP_HEADER)
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    let mut buf = Vec::new();
    let start = match method(
        read_frame(s, &mut buf)
            .await
            .map_err(|e| format!("no connection.start: {e}"))?,
    )? {
        connection::AMQPMethod::Start(start) => start,
        other => return Err(format!("expected connection.start, got {other:?}")),
    };
    if (start.version_major, start.version_minor) != (0, 9) {
        return Err(format!(
            "connection.start for version {}-{}, not 0-9",
            start.version_major, start.version_minor
        ));
    }
    let Some((user, password, vhost)) = login else {
        return Ok(());
    };
    let mut response = vec![0u8];
    response.extend_from_slice(user.as_bytes());
    response.push(0);
    response.extend_from_slice(password.as_bytes());
    let conn = |m| AMQPFrame::Method(0, AMQPClass::Connection(m));
    write_frame(
        s,
        &conn(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: ShortString::from("PLAIN"),
            response: LongString::from(response),
            locale: ShortString::from("en_US"),
        })),
    )
    .await?;
    let tune = match method(read_frame(s, &mut buf).await?)? {
        connection::AMQPMethod::Tune(t) => t,
        connection::AMQPMethod::Close(c) => return Err(refused(&c)),
        other => return Err(format!("expected connection.tune, got {other:?}")),
    };
    write_frame(
        s,
        &conn(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: tune.channel_max,
            frame_max: tune.frame_max,
            heartbeat: 0,
        })),
    )
    .await?;
    write_frame(
        s,
        &conn(connection::AMQPMethod::Open(connection::Open {
            virtual_host: ShortString::from(vhost.as_str()),
        })),
    )
    .await?;
    match method(read_frame(s, &mut buf).await?)? {
        connection::AMQPMethod::OpenOk(_) => {}
        connection::AMQPMethod::Close(c) => return Err(refused(&c)),
        other => return Err(format!("expected connection.open-ok, got {other:?}")),
    }
    write_frame(
        s,
        &conn(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: ShortString::from("vip health check"),
            class_id: 0,
            method_id: 0,
        })),
    )
    .await?;
    match method(read_frame(s, &mut buf).await?)? {
        connection::AMQPMethod::CloseOk(_) => Ok(()),
        other => Err(format!("expected connection.close-ok, got {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, duplex};

    use super::*;

    fn start_frame() -> Vec<u8> {
        let frame = AMQPFrame::Method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: FieldTable::default(),
                mechanisms: LongString::from("PLAIN AMQPLAIN"),
                locales: LongString::from("en_US"),
            })),
        );
        gen_frame(&frame)(WriteContext::from(Vec::new()))
            .unwrap()
            .write
    }

    fn conn_frame(m: connection::AMQPMethod) -> Vec<u8> {
        gen_frame(&AMQPFrame::Method(0, AMQPClass::Connection(m)))(WriteContext::from(Vec::new()))
            .unwrap()
            .write
    }

    async fn read_header<S: AsyncRead + Unpin>(s: &mut S) {
        let mut h = [0u8; 8];
        s.read_exact(&mut h).await.unwrap();
        assert_eq!(&h, AMQP_HEADER);
    }

    async fn amqp_against(
        server: impl FnOnce(tokio::io::DuplexStream) -> tokio::task::JoinHandle<()>,
        login: Option<(String, String, String)>,
    ) -> Result<(), String> {
        let (mut client, srv) = duplex(1 << 16);
        let h = server(srv);
        let r = tokio::time::timeout(
            Duration::from_millis(500),
            amqp(&mut client, login.as_ref()),
        )
        .await
        .unwrap_or_else(|_| Err("timed out".into()));
        h.abort();
        r
    }

    #[tokio::test]
    async fn amqp_passes_on_connection_start_and_fails_otherwise() {
        // Answers connection.start, byte by byte.
        let r = amqp_against(
            |mut s| {
                tokio::spawn(async move {
                    read_header(&mut s).await;
                    for b in start_frame() {
                        s.write_all(&[b]).await.unwrap();
                    }
                    std::future::pending::<()>().await;
                })
            },
            None,
        )
        .await;
        assert_eq!(r, Ok(()));
        // Accepts and says nothing.
        let r = amqp_against(
            |mut s| {
                tokio::spawn(async move {
                    read_header(&mut s).await;
                    std::future::pending::<()>().await;
                })
            },
            None,
        )
        .await;
        assert_eq!(r, Err("timed out".into()));
        // Wants another protocol version.
        let r = amqp_against(
            |mut s| {
                tokio::spawn(async move {
                    read_header(&mut s).await;
                    s.write_all(b"AMQP\x01\x01\x00\x0a").await.unwrap();
                    s.shutdown().await.unwrap();
                })
            },
            None,
        )
        .await;
        let e = r.unwrap_err();
        assert!(
            e.contains("refused AMQP 0-9-1") && e.contains("protocol header"),
            "{e}"
        );
        // Closes at once.
        let r = amqp_against(|s| tokio::spawn(async move { drop(s) }), None).await;
        let e = r.unwrap_err();
        assert!(e.contains("closed") || e.contains("write failed"), "{e}");
        // Garbage.
        let r = amqp_against(
            |mut s| {
                tokio::spawn(async move {
                    read_header(&mut s).await;
                    s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                        .await
                        .unwrap();
                    std::future::pending::<()>().await;
                })
            },
            None,
        )
        .await;
        assert!(r.unwrap_err().contains("not an AMQP frame"));
    }

    #[tokio::test]
    async fn amqp_login_goes_through_open_and_close_or_says_why_not() {
        let server = |refuse: bool| {
            move |mut s: tokio::io::DuplexStream| {
                tokio::spawn(async move {
                    read_header(&mut s).await;
                    s.write_all(&start_frame()).await.unwrap();
                    let mut buf = Vec::new();
                    let f = read_frame(&mut s, &mut buf).await.unwrap();
                    let AMQPFrame::Method(
                        0,
                        AMQPClass::Connection(connection::AMQPMethod::StartOk(ok)),
                    ) = f
                    else {
                        panic!("{f}")
                    };
                    assert_eq!(ok.response.as_bytes(), b"\0guest\0secret");
                    if refuse {
                        s.write_all(&conn_frame(connection::AMQPMethod::Close(
                            connection::Close {
                                reply_code: 403,
                                reply_text: ShortString::from("ACCESS_REFUSED"),
                                class_id: 0,
                                method_id: 0,
                            },
                        )))
                        .await
                        .unwrap();
                        std::future::pending::<()>().await;
                    }
                    s.write_all(&conn_frame(connection::AMQPMethod::Tune(
                        connection::Tune {
                            channel_max: 2047,
                            frame_max: 131_072,
                            heartbeat: 60,
                        },
                    )))
                    .await
                    .unwrap();
                    let tune_ok = read_frame(&mut s, &mut buf).await.unwrap();
                    assert!(
                        matches!(
                            tune_ok,
                            AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::TuneOk(ref t))) if t.heartbeat == 0 && t.channel_max == 2047
                        ),
                        "{tune_ok}"
                    );
                    let open = read_frame(&mut s, &mut buf).await.unwrap();
                    assert!(
                        matches!(
                            open,
                            AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Open(ref o))) if o.virtual_host.as_str() == "/"
                        ),
                        "{open}"
                    );
                    s.write_all(&conn_frame(connection::AMQPMethod::OpenOk(
                        connection::OpenOk {},
                    )))
                    .await
                    .unwrap();
                    let close = read_frame(&mut s, &mut buf).await.unwrap();
                    assert!(matches!(
                        close,
                        AMQPFrame::Method(
                            0,
                            AMQPClass::Connection(connection::AMQPMethod::Close(_))
                        )
                    ));
                    s.write_all(&conn_frame(connection::AMQPMethod::CloseOk(
                        connection::CloseOk {},
                    )))
                    .await
                    .unwrap();
                    std::future::pending::<()>().await;
                })
            }
        };
        let login = Some(("guest".to_owned(), "secret".to_owned(), "/".to_owned()));
        assert_eq!(amqp_against(server(false), login.clone()).await, Ok(()));
        let e = amqp_against(server(true), login).await.unwrap_err();
        assert_eq!(e, "server closed the connection: 403 ACCESS_REFUSED");
    }
}
