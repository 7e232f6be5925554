//! The gRPC server end to end on loopback, with a real engine behind it and a minimal hyper HTTP/2 client: the
//! answers the grpcio receiver gave (status in trailers), the message limit, gzip, auth, backpressure, keepalive.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tailsample_core::Engine;
use tailsample_server::grpc::{self, EXPORT_PATH};
use tailsample_server::{Auth, GrpcConfig, GrpcServer, Keepalive, Limiter};

mod common;
use common::{payload, received, target};

fn framed(compressed: bool, message: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::from(compressed)];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn config() -> GrpcConfig {
    GrpcConfig {
        id: "otlp".into(),
        host: "127.0.0.1".into(),
        port: 0,
        max_message: 1 << 20,
        max_concurrent_streams: 0,
        max_connections: 100,
        handshake_timeout: Duration::from_secs(5),
        keepalive: Keepalive::default(),
        tls: None,
        auth: None,
        workers: 2,
        backlog: 64,
        blocking: false,
        observe_interval: Duration::from_secs(1),
    }
}

struct Running {
    server: GrpcServer,
    engine: Arc<Engine>,
    limiter: Arc<Limiter>,
}

fn start(cfg: GrpcConfig) -> Running {
    let (engine, limiter, target) = target();
    let server =
        GrpcServer::start(cfg, vec![target], None, None).unwrap_or_else(|e| panic!("{e:?}"));
    Running {
        server,
        engine,
        limiter,
    }
}

/// What came back: the HTTP status, the headers, the body, and the status (from trailers or trailers-only).
struct Answer {
    http: u16,
    headers: HeaderMap,
    body: Bytes,
    status: u64,
    message: String,
    trailers: HeaderMap,
}

fn status_of(h: &HeaderMap) -> Option<u64> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An HTTP/2 client connection to the server: the request sender and the connection's task.
async fn h2<B>(
    addr: std::net::SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<B>,
    tokio::task::JoinHandle<hyper::Result<()>>,
)
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    (send, tokio::spawn(conn))
}

async fn call(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let (mut send, _conn) = h2(addr).await;
    let mut req = Request::post(format!("http://127.0.0.1{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let http = resp.status().as_u16();
    let headers = resp.headers().clone();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let body = collected.to_bytes();
    let src = if headers.contains_key("grpc-status") {
        &headers
    } else {
        &trailers
    };
    Answer {
        http,
        status: status_of(src).expect("a grpc-status"),
        message: src
            .get("grpc-message")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default(),
        headers,
        body,
        trailers,
    }
}

#[test]
fn export_ok_partial_malformed_unknown_method() {
    let r = start(config());
    let addr = r.server.local_addr;
    rt().block_on(async {
        let a = call(addr, EXPORT_PATH, &[], framed(false, &payload(3, 0))).await;
        assert_eq!((a.http, a.status), (200, grpc::OK));
        assert_eq!(&a.body[..], &[0, 0, 0, 0, 0]); // one empty ExportTraceServiceResponse
        assert_eq!(status_of(&a.trailers), Some(0));
        assert_eq!(a.headers["content-type"], "application/grpc");

        let a = call(addr, EXPORT_PATH, &[], framed(false, &payload(1, 2))).await;
        assert_eq!(a.status, grpc::OK);
        let resp = &a.body[5..];
        assert_eq!(resp[0], 0x0a, "partial_success");
        assert!(String::from_utf8_lossy(resp).contains("2 spans rejected"));

        let a = call(addr, EXPORT_PATH, &[], framed(false, b"\x0a\xff\xff\xff")).await;
        assert_eq!(a.status, grpc::INVALID_ARGUMENT);
        assert!(
            a.message.starts_with("malformed ExportTraceServiceRequest"),
            "{}",
            a.message
        );
        assert!(a.body.is_empty());

        let a = call(addr, EXPORT_PATH, &[], vec![0, 0, 0]).await;
        assert_eq!(a.status, grpc::INVALID_ARGUMENT, "a truncated prefix");

        let a = call(
            addr,
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            &[],
            framed(false, b""),
        )
        .await;
        assert_eq!(a.status, grpc::UNIMPLEMENTED);
    });
    assert_eq!(received(&r.engine), 4);
    let c = tailsample_server::snapshot(r.server.counters());
    assert_eq!(c["accepted_spans"], 4);
    assert_eq!(c["refused_spans"], 2);
    assert_eq!(c["rejected:malformed"], 2);
}

#[test]
fn oversized_message_is_refused_from_its_prefix() {
    let r = start(config());
    let addr = r.server.local_addr;
    rt().block_on(async {
        // the prefix announces 8 MiB; only the prefix is sent: the answer cannot wait for the rest
        let mut body = vec![0u8];
        body.extend_from_slice(&(8u32 << 20).to_be_bytes());
        let a = call(addr, EXPORT_PATH, &[], body).await;
        assert_eq!(a.status, grpc::RESOURCE_EXHAUSTED);
        assert_eq!(
            a.message,
            "Received message larger than max (8388608 vs. 1048576)"
        );
    });
    let c = tailsample_server::snapshot(r.server.counters());
    assert_eq!(c["rejected:too_large"], 1);
    assert_eq!(received(&r.engine), 0);
}

#[test]
fn gzip_messages_and_a_bounded_inflation() {
    let r = start(config());
    let addr = r.server.local_addr;
    rt().block_on(async {
        let gz = [("grpc-encoding", "gzip")];
        let a = call(addr, EXPORT_PATH, &gz, framed(true, &gzip(&payload(5, 0)))).await;
        assert_eq!(a.status, grpc::OK, "{}", a.message);
        let bomb = gzip(&vec![0u8; 8 << 20]);
        let a = call(addr, EXPORT_PATH, &gz, framed(true, &bomb)).await;
        assert_eq!(a.status, grpc::RESOURCE_EXHAUSTED, "{}", a.message);
        let a = call(addr, EXPORT_PATH, &gz, framed(true, b"not gzip")).await;
        assert_eq!(a.status, grpc::INTERNAL);
        let a = call(
            addr,
            EXPORT_PATH,
            &[("grpc-encoding", "snappy")],
            framed(true, b"x"),
        )
        .await;
        assert_eq!(a.status, grpc::UNIMPLEMENTED);
    });
    assert_eq!(received(&r.engine), 5);
}

#[test]
fn bearer_token() {
    let mut cfg = config();
    cfg.auth = Some(Arc::new(Auth::new("Bearer", Some("s3cret"), None).unwrap()));
    let r = start(cfg);
    let addr = r.server.local_addr;
    rt().block_on(async {
        let a = call(addr, EXPORT_PATH, &[], framed(false, &payload(1, 0))).await;
        assert_eq!(a.status, grpc::UNAUTHENTICATED);
        let a = call(
            addr,
            EXPORT_PATH,
            &[("authorization", "Bearer nope")],
            framed(false, &payload(1, 0)),
        )
        .await;
        assert_eq!(a.status, grpc::UNAUTHENTICATED);
        let a = call(
            addr,
            EXPORT_PATH,
            &[("authorization", "Bearer s3cret")],
            framed(false, &payload(1, 0)),
        )
        .await;
        assert_eq!(a.status, grpc::OK);
    });
    assert_eq!(received(&r.engine), 1);
    assert_eq!(
        tailsample_server::snapshot(r.server.counters())["rejected:unauthenticated"],
        2
    );
}

fn b64decode(s: &str) -> Vec<u8> {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        bits = (bits << 6) | T.iter().position(|t| *t == c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

#[test]
fn backpressure_carries_retry_info() {
    let r = start(config());
    let addr = r.server.local_addr;
    r.limiter.set(true, "memory_limiter: over the hard limit");
    rt().block_on(async {
        let a = call(addr, EXPORT_PATH, &[], framed(false, &payload(4, 0))).await;
        assert_eq!(a.status, grpc::RESOURCE_EXHAUSTED);
        assert_eq!(
            a.message,
            "memory_limiter: over the hard limit; retry later"
        );
        let details = b64decode(a.headers["grpc-status-details-bin"].to_str().unwrap());
        let want = tailsample_server::wire::encode_status(8, &a.message, Some(1));
        assert_eq!(details, want);
    });
    r.limiter.set(false, "");
    assert_eq!(received(&r.engine), 0);
    assert_eq!(
        tailsample_server::snapshot(r.server.counters())["refused_spans"],
        4
    );
    assert_eq!(r.limiter.take_refused(), 1);
}

/// True when the peer closes the connection within `within`.
fn closed_within(s: &mut std::net::TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
        if start.elapsed() > within {
            return false;
        }
    }
}

#[test]
fn handshake_timeout_and_max_connections() {
    let mut cfg = config();
    cfg.handshake_timeout = Duration::from_millis(300);
    cfg.max_connections = 1;
    let r = start(cfg);
    let addr = r.server.local_addr;
    let mut first = std::net::TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let mut second = std::net::TcpStream::connect(addr).unwrap();
    assert!(
        closed_within(&mut second, Duration::from_millis(200)),
        "over max_connections: closed at once"
    );
    assert!(
        closed_within(&mut first, Duration::from_secs(3)),
        "no preface: closed after the handshake timeout"
    );
    let c = tailsample_server::snapshot(r.server.counters());
    assert_eq!(c["refused_connections"], 1);
    assert_eq!(c["timed_out_read_header"], 1);
}

#[test]
fn idle_connection_gets_goaway() {
    let mut cfg = config();
    cfg.keepalive = Keepalive {
        max_connection_idle: Some(Duration::from_millis(300)),
        ..Keepalive::default()
    };
    let r = start(cfg);
    let addr = r.server.local_addr;
    rt().block_on(async {
        let (mut send, done) = h2(addr).await;
        let req = Request::post(format!("http://127.0.0.1{EXPORT_PATH}"))
            .header("content-type", "application/grpc")
            .body(Full::new(Bytes::from(framed(false, &payload(1, 0)))))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        resp.into_body().collect().await.unwrap();
        let started = Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(5), done).await;
        assert!(ended.is_ok(), "the idle connection was closed");
        assert!(started.elapsed() >= Duration::from_millis(200));
    });
    assert_eq!(received(&r.engine), 1);
}

#[test]
fn bind_error_names_the_address() {
    let r = start(config());
    let mut cfg = config();
    cfg.port = r.server.local_addr.port();
    let Err(e) = GrpcServer::start(cfg, vec![], None, None) else {
        panic!("a second server on the same port")
    };
    assert!(
        e.message.contains("otlp (grpc): 127.0.0.1:"),
        "{}",
        e.message
    );
    assert!(e.message.contains("already in use"), "{}", e.message);
}

/// A raw HTTP/2 client that sends the preface and empty SETTINGS, then never answers anything (no PING ack).
fn silent_h2_client(addr: std::net::SocketAddr) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    s
}

#[test]
fn unanswered_server_pings_close_the_connection() {
    let mut cfg = config();
    cfg.keepalive = Keepalive {
        time: Some(Duration::from_millis(200)),
        timeout: Some(Duration::from_millis(200)),
        ..Keepalive::default()
    };
    let r = start(cfg);
    let mut s = silent_h2_client(r.server.local_addr);
    let started = Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(5)),
        "no PING ack: closed"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[test]
fn max_connection_age_sends_goaway_then_closes_after_the_grace() {
    let mut cfg = config();
    cfg.keepalive = Keepalive {
        max_connection_age: Some(Duration::from_millis(300)),
        max_connection_age_grace: Some(Duration::from_millis(300)),
        ..Keepalive::default()
    };
    let r = start(cfg);
    let mut s = silent_h2_client(r.server.local_addr);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let elapsed = started.elapsed();
    // frames: 9-byte headers; a GOAWAY is type 7
    let mut pos = 0;
    let mut goaway = false;
    while pos + 9 <= seen.len() {
        let len = u32::from_be_bytes([0, seen[pos], seen[pos + 1], seen[pos + 2]]) as usize;
        goaway |= seen[pos + 3] == 7;
        pos += 9 + len;
    }
    assert!(goaway, "a GOAWAY before the close");
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(4),
        "closed at its age: {elapsed:?}"
    );
}

/// A request body that sends its first bytes and then never ends (a call stuck in flight).
struct Stuck(Option<Bytes>);

impl hyper::body::Body for Stuck {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        match self.0.take() {
            Some(b) => std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(b)))),
            None => std::task::Poll::Pending,
        }
    }
}

#[test]
fn a_call_in_flight_gets_the_age_grace_then_the_connection_closes() {
    let mut cfg = config();
    cfg.keepalive = Keepalive {
        max_connection_idle: Some(Duration::from_millis(100)), // not while a call is in flight
        max_connection_age: Some(Duration::from_millis(300)),
        max_connection_age_grace: Some(Duration::from_millis(700)),
        ..Keepalive::default()
    };
    let r = start(cfg);
    let addr = r.server.local_addr;
    rt().block_on(async {
        let (mut send, done) = h2(addr).await;
        let started = Instant::now();
        let req = Request::post(format!("http://127.0.0.1{EXPORT_PATH}"))
            .header("content-type", "application/grpc")
            .body(Stuck(Some(Bytes::from_static(&[0, 0, 0, 0, 9]))))
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), send.send_request(req)).await;
        assert!(
            matches!(answer, Ok(Err(_))),
            "the stuck call ends with the connection"
        );
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(900),
            "age + grace: {elapsed:?}"
        );
        assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
        let _ = tokio::time::timeout(Duration::from_secs(2), done).await;
    });
}

fn noting_server(hold: Duration) -> (GrpcServer, Arc<common::Noting>) {
    let (noting, t) = common::noting(hold);
    let server =
        GrpcServer::start(config(), vec![t], None, None).unwrap_or_else(|e| panic!("{e:?}"));
    (server, noting)
}

fn distinct(threads: &[std::thread::ThreadId]) -> usize {
    let mut d: Vec<String> = threads.iter().map(|t| format!("{t:?}")).collect();
    d.sort();
    d.dedup();
    d.len()
}

/// Scenario: one HTTP/2 connection (a gRPC channel), first calls one after another, then eight at once, each
/// ingest taking 20 ms, on a server with two workers.
/// Guarantees: calls in turn run on the connection's own worker (a trickle never crosses threads); calls that
/// overlap are spread over both workers, so one channel still gets both cores.
#[test]
fn one_channel_keeps_a_trickle_home_and_spreads_overlapping_calls() {
    let (server, noting) = noting_server(Duration::from_millis(20));
    let addr = server.local_addr;
    rt().block_on(async {
        let (send, _conn) = h2::<Full<Bytes>>(addr).await;
        let request = || {
            Request::post(format!("http://127.0.0.1{EXPORT_PATH}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Full::new(Bytes::from(framed(false, &payload(1, 0)))))
                .unwrap()
        };
        for _ in 0..4 {
            let resp = send.clone().send_request(request()).await.unwrap();
            resp.into_body().collect().await.unwrap();
        }
        let in_turn = noting.threads.lock().unwrap().clone();
        assert_eq!(
            distinct(&in_turn),
            1,
            "calls in turn crossed threads: {in_turn:?}"
        );

        let calls: Vec<_> = (0..8)
            .map(|_| {
                let mut send = send.clone();
                let req = request();
                tokio::spawn(async move {
                    let resp = send.send_request(req).await.unwrap();
                    resp.into_body().collect().await.unwrap();
                })
            })
            .collect();
        for c in calls {
            c.await.unwrap();
        }
    });
    let all = noting.threads.lock().unwrap().clone();
    assert_eq!(
        distinct(&all[4..]),
        2,
        "overlapping calls stayed on one thread: {all:?}"
    );
    assert!(!all.contains(&std::thread::current().id()));
    assert_eq!(received(&noting.engine), 12);
}
