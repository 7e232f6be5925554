//! The server end to end on loopback, with a real engine behind it and a raw HTTP/1.1 client: every answer the
//! Python receiver gave, the limits and timeouts.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tailsample_core::Engine;
use tailsample_server::{Auth, Config, Limiter, Server};

mod common;
use common::{payload, received, target};

fn config() -> Config {
    Config {
        id: "otlp".into(),
        host: "127.0.0.1".into(),
        port: 0,
        traces_path: "/v1/traces".into(),
        max_body: 1 << 20,
        compression: vec!["".into(), "gzip".into(), "deflate".into(), "zlib".into()],
        max_connections: 100,
        read_header_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        response_headers: vec![("x-test".into(), "yes".into())],
        tls: None,
        auth: None,
        workers: 2,
        backlog: 64,
        blocking: false,
        observe_interval: Duration::from_secs(1),
    }
}

struct Running {
    server: Server,
    engine: Arc<Engine>,
    limiter: Arc<Limiter>,
}

fn start(cfg: Config) -> Running {
    let (engine, limiter, target) = target();
    let server = Server::start(cfg, vec![target], None, None).unwrap_or_else(|e| panic!("{e:?}"));
    Running {
        server,
        engine,
        limiter,
    }
}

struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

fn parse(raw: &[u8]) -> Answer {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole head")
        + 4;
    let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
    let status = head[9..12].parse().unwrap();
    Answer {
        status,
        head,
        body: raw[end..].to_vec(),
    }
}

/// One request on a new connection (`Connection: close`), the whole answer read.
fn post(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse(&raw)
}

const PB: (&str, &str) = ("Content-Type", "application/x-protobuf");

fn counter(r: &Running, name: &str) -> u64 {
    tailsample_server::snapshot(r.server.counters())[name]
}

#[test]
fn accepts_protobuf_and_json_and_answers_partial_success() {
    let r = start(config());
    let a = post(r.server.local_addr, "/v1/traces", &[PB], &payload(3, 0));
    assert_eq!(a.status, 200);
    assert!(a.body.is_empty());
    assert!(a.head.contains("x-test: yes"));
    assert_eq!(counter(&r, "accepted_spans"), 3);
    assert_eq!(received(&r.engine), 3);

    let a = post(r.server.local_addr, "/v1/traces", &[PB], &payload(2, 1));
    assert_eq!(a.status, 200);
    assert_eq!(a.body[0], 0x0a, "a partial_success");
    assert!(String::from_utf8_lossy(&a.body).contains("1 spans rejected: "));
    assert_eq!(counter(&r, "refused_spans"), 1);

    let json = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"j"}]}]}]}"#;
    let a = post(
        r.server.local_addr,
        "/v1/traces",
        &[("Content-Type", "application/json")],
        json,
    );
    assert_eq!(a.status, 200);
    assert_eq!(a.body, b"{}");
    assert_eq!(counter(&r, "accepted_spans"), 6);
}

#[test]
fn bad_requests_get_the_right_status() {
    let r = start(config());
    let addr = r.server.local_addr;
    let a = post(addr, "/v1/traces", &[PB], b"\x0a\x05\x01");
    assert_eq!(a.status, 400);
    assert!(String::from_utf8_lossy(&a.body).contains("malformed ExportTraceServiceRequest"));
    let a = post(
        addr,
        "/v1/traces",
        &[("Content-Type", "application/json")],
        b"{nope",
    );
    assert_eq!(a.status, 400);
    assert!(String::from_utf8_lossy(&a.body)
        .starts_with("{\"code\": 3, \"message\": \"malformed json body"));
    assert_eq!(
        post(addr, "/v1/traces", &[("Content-Type", "text/plain")], b"x").status,
        415
    );
    assert_eq!(
        post(addr, "/v1/traces", &[PB, ("Content-Encoding", "br")], b"x").status,
        415
    );
    let a = post(addr, "/v1/metrics", &[PB], b"");
    assert_eq!(a.status, 404);
    assert!(String::from_utf8_lossy(&a.body).contains("receives traces only"));
    assert_eq!(post(addr, "/other", &[PB], b"").status, 404);
    assert_eq!(counter(&r, "rejected:malformed"), 2);
    assert_eq!(counter(&r, "rejected:unsupported_media_type"), 1);
    assert_eq!(counter(&r, "rejected:unsupported_encoding"), 1);
    assert_eq!(counter(&r, "rejected:not_found"), 1);
}

#[test]
fn a_gzip_bomb_is_413_without_inflating_it_whole() {
    use flate2::{write::GzEncoder, Compression};
    let r = start(config());
    let mut e = GzEncoder::new(Vec::new(), Compression::best());
    e.write_all(&vec![0u8; 50 << 20]).unwrap();
    let bomb = e.finish().unwrap();
    let t = Instant::now();
    let a = post(
        r.server.local_addr,
        "/v1/traces",
        &[PB, ("Content-Encoding", "gzip")],
        &bomb,
    );
    assert_eq!(a.status, 413);
    assert!(String::from_utf8_lossy(&a.body)
        .contains("decompressed body exceeds max_request_body_size"));
    assert!(t.elapsed() < Duration::from_secs(5));
    let a = post(
        r.server.local_addr,
        "/v1/traces",
        &[PB],
        &vec![0u8; (1 << 20) + 1],
    );
    assert_eq!(a.status, 413);
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(&payload(4, 0)).unwrap();
    let a = post(
        r.server.local_addr,
        "/v1/traces",
        &[PB, ("Content-Encoding", "gzip")],
        &e.finish().unwrap(),
    );
    assert_eq!(a.status, 200);
    assert_eq!(counter(&r, "rejected:too_large"), 2);
}

#[test]
fn a_slow_body_gets_408_and_the_connection_closed() {
    let mut cfg = config();
    cfg.read_timeout = Duration::from_millis(400);
    let r = start(cfg);
    let mut s = TcpStream::connect(r.server.local_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 100\r\n\r\nabc").unwrap();
    let t = Instant::now();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap(); // ends: the server closed the connection
    let a = parse(&raw);
    assert_eq!(a.status, 408);
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(String::from_utf8_lossy(&a.body).contains("read_timeout (0.4 s)"));
    assert_eq!(counter(&r, "timed_out_read"), 1);
    assert_eq!(counter(&r, "rejected:timeout"), 1);
}

#[test]
fn slow_headers_and_idle_connections_are_closed() {
    let mut cfg = config();
    cfg.read_header_timeout = Duration::from_millis(300);
    cfg.idle_timeout = Duration::from_millis(600);
    let r = start(cfg);
    let mut s = TcpStream::connect(r.server.local_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let t = Instant::now();
    let _ = s.read_to_end(&mut raw);
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(counter(&r, "timed_out_read_header"), 1);
    // idle: a kept-alive connection after its answer
    let mut s = TcpStream::connect(r.server.local_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = payload(1, 0);
    s.write_all(format!("POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes()).unwrap();
    s.write_all(&body).unwrap();
    let t = Instant::now();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    assert_eq!(parse(&raw).status, 200);
    assert!(t.elapsed() >= Duration::from_millis(500) && t.elapsed() < Duration::from_secs(3));
    assert_eq!(
        counter(&r, "timed_out_read_header"),
        1,
        "idle is not a header timeout"
    );
}

#[test]
fn bearer_token() {
    let mut cfg = config();
    cfg.auth = Some(Arc::new(Auth::new("Bearer", Some("s3cret"), None).unwrap()));
    let r = start(cfg);
    let a = post(r.server.local_addr, "/v1/traces", &[PB], &payload(1, 0));
    assert_eq!(a.status, 401);
    assert!(a.head.contains("www-authenticate: bearer"));
    let a = post(
        r.server.local_addr,
        "/v1/traces",
        &[PB, ("Authorization", "Bearer wrong")],
        &payload(1, 0),
    );
    assert_eq!(a.status, 401);
    let a = post(
        r.server.local_addr,
        "/v1/traces",
        &[PB, ("Authorization", "Bearer s3cret")],
        &payload(1, 0),
    );
    assert_eq!(a.status, 200);
    assert_eq!(counter(&r, "rejected:unauthenticated"), 2);
}

#[test]
fn a_refusing_limiter_is_503_with_retry_after() {
    let r = start(config());
    r.limiter.set(
        true,
        "memory_limiter: memory use 9 MiB is above the soft limit 8 MiB",
    );
    let a = post(r.server.local_addr, "/v1/traces", &[PB], &payload(5, 0));
    assert_eq!(a.status, 503);
    assert!(a.head.contains("retry-after: 1"));
    assert!(String::from_utf8_lossy(&a.body).contains("soft limit 8 MiB; retry later"));
    assert_eq!(counter(&r, "refused_spans"), 5);
    assert_eq!(r.limiter.take_refused(), 1);
    assert_eq!(received(&r.engine), 0);
    r.limiter.set(false, "");
    assert_eq!(
        post(r.server.local_addr, "/v1/traces", &[PB], &payload(5, 0)).status,
        200
    );
}

#[test]
fn connections_over_the_cap_are_refused() {
    let mut cfg = config();
    cfg.max_connections = 2;
    let r = start(cfg);
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(r.server.local_addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let a = post(r.server.local_addr, "/v1/traces", &[PB], &payload(1, 0));
    assert_eq!(a.status, 503);
    assert!(a.head.contains("retry-after: 1"));
    assert_eq!(counter(&r, "open"), 2);
    assert_eq!(counter(&r, "refused_connections"), 1);
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        post(r.server.local_addr, "/v1/traces", &[PB], &payload(1, 0)).status,
        200
    );
}

#[test]
fn a_port_in_use_is_named() {
    let r = start(config());
    let mut cfg = config();
    cfg.port = r.server.local_addr.port();
    let err = Server::start(cfg, vec![], None, None)
        .err()
        .expect("in use");
    assert!(err.message.contains("is already in use"), "{}", err.message);
    assert!(err
        .message
        .contains(&format!("127.0.0.1:{}", r.server.local_addr.port())));
}

#[test]
fn stop_lets_a_request_in_flight_finish() {
    let mut r = start(config());
    let addr = r.server.local_addr;
    let body = payload(2, 0);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes()).unwrap();
    s.write_all(&body[..3]).unwrap();
    let client = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        s.write_all(&body[3..]).unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        parse(&raw).status
    });
    std::thread::sleep(Duration::from_millis(100));
    r.server.stop(Duration::from_secs(5));
    assert_eq!(client.join().unwrap(), 200);
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn a_declared_oversized_body_gets_its_413_while_the_client_is_still_sending() {
    let r = start(config());
    let mut s = TcpStream::connect(r.server.local_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let size = 8 << 20;
    s.write_all(format!("POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {size}\r\n\r\n").as_bytes()).unwrap();
    let mut w = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![0u8; 1 << 16];
        for _ in 0..size / chunk.len() {
            if w.write_all(&chunk).is_err() {
                break; // the server closed: fine, the answer came first
            }
        }
    });
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let _ = sender.join();
    assert_eq!(parse(&raw).status, 413);
}

/// Scenario: four keep-alive connections open at once on a server with two workers, three requests on each.
/// Guarantees: the connections are shared out evenly (two per worker), and each is served on one thread only.
#[test]
fn connections_are_shared_out_over_the_workers_and_stay_on_theirs() {
    let (noting, t) = common::noting(Duration::ZERO);
    let server = Server::start(config(), vec![t], None, None).unwrap_or_else(|e| panic!("{e:?}"));
    let body = payload(1, 0);
    let mut conns: Vec<TcpStream> = (0..4)
        .map(|_| {
            let s = TcpStream::connect(server.local_addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        })
        .collect();
    let mut by_conn = Vec::new();
    for s in &mut conns {
        let mut seen = Vec::new();
        for _ in 0..3 {
            s.write_all(format!("POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes()).unwrap();
            s.write_all(&body).unwrap();
            let mut raw = [0u8; 4096];
            let n = s.read(&mut raw).unwrap();
            assert_eq!(parse(&raw[..n]).status, 200);
            seen.push(*noting.threads.lock().unwrap().last().unwrap());
        }
        seen.dedup();
        assert_eq!(seen.len(), 1, "a connection moved between threads");
        by_conn.push(seen[0]);
    }
    let mut distinct = by_conn.clone();
    distinct.sort_by_key(|t| format!("{t:?}"));
    distinct.dedup();
    assert_eq!(distinct.len(), 2, "{by_conn:?}");
    for t in &distinct {
        assert_eq!(by_conn.iter().filter(|x| *x == t).count(), 2, "{by_conn:?}");
    }
    assert!(!by_conn.contains(&std::thread::current().id()));
}

/// Scenario: a chunked body over `max_body`, written in small pieces over time, the answer read only after the
/// whole request was sent (as urllib does).
/// Guarantees: the client reads its 413 (the rest of the body is read and dropped), not a reset mid-send.
#[test]
fn a_chunked_body_over_the_limit_gets_its_413_after_the_client_sent_it_all() {
    let mut cfg = config();
    cfg.max_body = 1000;
    let r = start(cfg);
    let mut s = TcpStream::connect(r.server.local_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(10));
        s.write_all(b"1f4\r\n").unwrap();
        s.write_all(&[0u8; 500]).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let mut raw = [0u8; 4096];
    let n = s.read(&mut raw).unwrap();
    assert_eq!(parse(&raw[..n]).status, 413);
    assert_eq!(counter(&r, "rejected:too_large"), 1);
}
