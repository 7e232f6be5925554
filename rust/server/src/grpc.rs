//! The OTLP/gRPC receiver of `tailsample serve`: unary `TraceService/Export` on hyper's HTTP/2 (no tonic, no
//! prost: a unary call is one length-prefixed message each way, the status goes in trailers), answering as the
//! grpcio receiver did (`tailsample.receivers.otlp_grpc_receiver`) and feeding the same engines, limiters,
//! counters and hook as the HTTP server.
//!
//! Per call: method path, `content-type: application/grpc`, the bearer token (`authorization` metadata), the
//! 5-byte prefix's length against `max_recv_msg_size` (RESOURCE_EXHAUSTED before the message is read, as grpcio
//! words it), `grpc-encoding` (gzip, deflate; inflated in bounded steps), then the limiters and engines. Per
//! connection: `max_connections` (closed at once over it, as grpcio), the handshake timeout, `max_concurrent_streams`,
//! keepalive (`max_connection_idle`/`max_connection_age` close with GOAWAY, server pings `time`/`timeout`).
//! h2 answers pings itself and has no ping policing: `min_time`/`permit_without_stream` are not enforced.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::body::Gathered;
use crate::listener::{self, Calls, Listening, OnRead, Protocol, Tapped};
use crate::{
    inflate, observe_due, take, wire, Auth, BodyError, Counters, Hook, Intake, Purge, StartError,
    Taken, Target,
};

pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// What a refused client is told to wait (seconds), in the RetryInfo detail.
pub const RETRY_AFTER_S: u64 = 1;
/// An HTTP/2 connection must send its preface within this (grpcio's default is 120 s).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const PREFACE_LEN: u64 = 24;
/// The largest DATA frame a client may send (SETTINGS_MAX_FRAME_SIZE; HTTP/2's default is 16 KiB). Clients that
/// honour it (grpcio, grpc-java, Node's) send an OTLP request in one or a few frames instead of one per 16 KiB:
/// fewer frames to parse and account for, and the message is usually the frame itself, taken without a copy. A
/// frame is buffered whole before it is read, so this bounds a connection's read buffer as well.
const MAX_FRAME_SIZE: u32 = 1 << 20;

// gRPC status codes
pub const OK: u64 = 0;
pub const INVALID_ARGUMENT: u64 = 3;
pub const RESOURCE_EXHAUSTED: u64 = 8;
pub const UNIMPLEMENTED: u64 = 12;
pub const INTERNAL: u64 = 13;
pub const UNAUTHENTICATED: u64 = 16;

/// The collector's `keepalive` of a gRPC server; `None` is off (grpcio's defaults are applied by the caller).
#[derive(Clone, Default)]
pub struct Keepalive {
    pub max_connection_idle: Option<Duration>,
    pub max_connection_age: Option<Duration>,
    pub max_connection_age_grace: Option<Duration>,
    pub time: Option<Duration>,
    pub timeout: Option<Duration>,
}

/// The server's settings (`receivers.otlp.protocols.grpc`).
pub struct GrpcConfig {
    /// `<receiver id>`, for messages; the listener is `<id>/grpc`.
    pub id: String,
    pub host: String,
    pub port: u16,
    /// `max_recv_msg_size_mib`, in bytes: the largest message, and the bound on its inflation.
    pub max_message: usize,
    /// 0: h2's default.
    pub max_concurrent_streams: u32,
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub keepalive: Keepalive,
    /// PEM certificate chain and private key (ALPN h2).
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    pub auth: Option<Arc<Auth>>,
    pub workers: usize,
    pub backlog: u32,
    pub blocking: bool,
    pub observe_interval: Duration,
}

struct Shared {
    cfg: GrpcConfig,
    targets: Vec<Target>,
    hook: Option<Arc<dyn Hook>>,
    counters: Arc<Counters>,
    tls: Option<TlsAcceptor>,
    started: Instant,
    observe_due_ms: AtomicU64,
    active: AtomicUsize,
}

/// A running gRPC server; `stop` it (dropping it stops it too, without the grace).
pub struct GrpcServer {
    listening: Listening<Shared>,
    pub local_addr: SocketAddr,
}

impl GrpcServer {
    /// Binds (errors name the address) and starts serving on `cfg.workers` threads.
    pub fn start(
        cfg: GrpcConfig,
        targets: Vec<Target>,
        hook: Option<Arc<dyn Hook>>,
        purge: Option<Purge>,
    ) -> Result<GrpcServer, StartError> {
        let tls = listener::tls(&cfg.tls, true)?;
        let bound = listener::bind_threads(
            &cfg.id,
            "grpc",
            &cfg.host,
            cfg.port,
            cfg.backlog,
            cfg.workers,
            purge,
        )?;
        let local_addr = bound.local_addr;
        let listening = bound.serve(Shared {
            cfg,
            targets,
            hook,
            counters: Arc::new(Counters::default()),
            tls,
            started: Instant::now(),
            observe_due_ms: AtomicU64::new(0),
            active: AtomicUsize::new(0),
        });
        Ok(GrpcServer {
            listening,
            local_addr,
        })
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.listening.shared.counters
    }

    /// Stops accepting, sends every connection a GOAWAY, lets calls in flight finish (within `grace`).
    pub fn stop(&mut self, grace: Duration) {
        self.listening.stop(grace);
    }
}

impl Protocol for Shared {
    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn active(&self) -> &AtomicUsize {
        &self.active
    }

    fn max_connections(&self) -> usize {
        self.cfg.max_connections
    }

    /// As grpc.max_allowed_incoming_connections: closed as soon as accepted.
    fn over_cap(self: &Arc<Self>, stream: TcpStream) {
        drop(stream);
    }

    async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        shutdown: watch::Receiver<bool>,
        calls: Calls,
    ) {
        serve_connection(stream, &self, shutdown, calls).await;
    }
}

/// Per connection: bytes read (for the preface deadline), calls in flight and when the last one ended (idle).
struct ConnState {
    read: AtomicU64,
    calls: AtomicUsize,
    idle_since: Mutex<Instant>,
}

/// The preface's bytes are counted (up to its length) for its deadline.
impl OnRead for ConnState {
    fn on_read(&self, n: usize) {
        if self.read.load(Ordering::Relaxed) < PREFACE_LEN {
            self.read.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    shared: &Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    calls: Calls,
) {
    let accepted = Instant::now();
    let deadline = shared.cfg.handshake_timeout;
    match &shared.tls {
        Some(acceptor) => {
            let Ok(Ok(tls)) = tokio::time::timeout(deadline, acceptor.accept(stream)).await else {
                shared
                    .counters
                    .timed_out_header
                    .fetch_add(1, Ordering::Relaxed);
                return; // a failed or slow TLS handshake: nothing to answer
            };
            drive(tls, shared, accepted, shutdown, calls).await;
        }
        None => drive(stream, shared, accepted, shutdown, calls).await,
    }
}

/// Why the watchdog ends a connection.
enum End {
    Handshake,
    Idle,
    Age,
}

async fn drive<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: T,
    shared: &Arc<Shared>,
    accepted: Instant,
    mut shutdown: watch::Receiver<bool>,
    calls: Calls,
) {
    let cfg = &shared.cfg;
    let state = Arc::new(ConnState {
        read: AtomicU64::new(0),
        calls: AtomicUsize::new(0),
        idle_since: Mutex::new(Instant::now()),
    });
    let svc_shared = shared.clone();
    let svc_state = state.clone();
    let svc = service_fn(move |req| {
        let shared = svc_shared.clone();
        let state = svc_state.clone();
        async move {
            state.calls.fetch_add(1, Ordering::AcqRel);
            let r = handle(&shared, req).await;
            *state.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            state.calls.fetch_sub(1, Ordering::AcqRel);
            Ok::<_, std::convert::Infallible>(r)
        }
    });
    let io = TokioIo::new(Tapped {
        inner: io,
        state: state.clone(),
    });
    let mut builder = http2::Builder::new(calls);
    builder.timer(TokioTimer::new());
    builder.max_frame_size(MAX_FRAME_SIZE);
    if cfg.max_concurrent_streams > 0 {
        builder.max_concurrent_streams(cfg.max_concurrent_streams);
    }
    let k = &cfg.keepalive;
    if let Some(t) = k.time {
        builder.keep_alive_interval(t);
        builder.keep_alive_timeout(k.timeout.unwrap_or(Duration::from_secs(20)));
    }
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let dog = watchdog(
        state,
        accepted,
        cfg.handshake_timeout,
        k.max_connection_idle,
        k.max_connection_age,
    );
    tokio::pin!(dog);
    let end = tokio::select! {
        _ = conn.as_mut() => return,
        end = &mut dog => end,
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(10), conn.as_mut()).await;
            return;
        }
    };
    match end {
        End::Handshake => {
            shared
                .counters
                .timed_out_header
                .fetch_add(1, Ordering::Relaxed);
            // dropped: closed without an answer
        }
        End::Idle => {
            conn.as_mut().graceful_shutdown(); // GOAWAY; no call is in flight
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await;
        }
        End::Age => {
            conn.as_mut().graceful_shutdown(); // GOAWAY; calls in flight get the grace
            let grace = k
                .max_connection_age_grace
                .unwrap_or(Duration::from_secs(3600 * 24 * 365));
            let _ = tokio::time::timeout(grace, conn.as_mut()).await;
        }
    }
}

async fn watchdog(
    state: Arc<ConnState>,
    accepted: Instant,
    handshake: Duration,
    idle: Option<Duration>,
    age: Option<Duration>,
) -> End {
    // Looked at once a tick, not woken by every call (that would cost each call a wake-up).
    let tick = [Some(handshake), idle, age]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(Duration::from_secs(1))
        .min(Duration::from_secs(1));
    loop {
        let now = Instant::now();
        if state.read.load(Ordering::Relaxed) < PREFACE_LEN && now >= accepted + handshake {
            return End::Handshake;
        }
        if let Some(a) = age {
            if now >= accepted + a {
                return End::Age;
            }
        }
        if let Some(i) = idle {
            let since = *state.idle_since.lock().unwrap_or_else(|e| e.into_inner());
            if state.calls.load(Ordering::Acquire) == 0 && now >= since + i {
                return End::Idle;
            }
        }
        tokio::time::sleep(tick).await;
    }
}

/// A unary gRPC answer: one message (with the OK trailers), or a trailers-only error.
pub struct GrpcBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

type Resp = Response<GrpcBody>;

fn base_response(body: GrpcBody) -> Resp {
    let mut r = Response::new(body);
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    r
}

/// `grpc-message`: percent-encoded outside printable ASCII (and `%` itself), as the gRPC spec asks.
pub fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Standard base64 without padding (`-bin` metadata; gRPC accepts both).
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn status_headers(h: &mut HeaderMap, code: u64, message: &str, details: Option<Vec<u8>>) {
    h.insert("grpc-status", HeaderValue::from(code));
    if !message.is_empty() {
        if let Ok(v) = HeaderValue::try_from(percent_encode(message)) {
            h.insert("grpc-message", v);
        }
    }
    if let Some(d) = details {
        if let Ok(v) = HeaderValue::try_from(base64(&d)) {
            h.insert("grpc-status-details-bin", v);
        }
    }
}

/// Trailers-only: the status in the response headers, no message.
fn fail(code: u64, message: &str, details: Option<Vec<u8>>) -> Resp {
    let mut r = base_response(GrpcBody {
        data: None,
        trailers: None,
    });
    status_headers(r.headers_mut(), code, message, details);
    r
}

fn ok(message: &[u8]) -> Resp {
    let mut data = BytesMut::with_capacity(5 + message.len());
    data.extend_from_slice(&[0]);
    data.extend_from_slice(&(message.len() as u32).to_be_bytes());
    data.extend_from_slice(message);
    let mut trailers = HeaderMap::new();
    status_headers(&mut trailers, OK, "", None);
    base_response(GrpcBody {
        data: Some(data.freeze()),
        trailers: Some(trailers),
    })
}

/// Why a call failed before its spans could be counted: code, message, the `reason` label (if counted).
struct Reject(u64, String, Option<&'static str>);

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Resp {
    if req.uri().path() != EXPORT_PATH {
        let message = format!("Method not found: {}", req.uri().path());
        return fail(UNIMPLEMENTED, &message, None);
    }
    let ctype = req
        .headers()
        .get("content-type")
        .map(|v| v.as_bytes())
        .unwrap_or(b"");
    if !ctype.starts_with(b"application/grpc") {
        let mut r = fail(INTERNAL, "content-type must be application/grpc", None);
        *r.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return r;
    }
    let payload = match read_message(shared, req).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            shared.counters.aborted.fetch_add(1, Ordering::Relaxed);
            return fail(INTERNAL, "request aborted", None); // nobody may be listening any more
        }
        Err(Reject(code, message, reason)) => {
            if let Some(r) = reason {
                shared.counters.reject(r);
            }
            return fail(code, &message, None);
        }
    };
    consume(shared, payload).await
}

/// The request's message, or why not; `Ok(None)` when the client went away mid-message.
async fn read_message(shared: &Shared, req: Request<Incoming>) -> Result<Option<Bytes>, Reject> {
    let cfg = &shared.cfg;
    let h = req.headers();
    if let Some(auth) = &cfg.auth {
        if !auth.authenticate(h.get("authorization").map(|v| v.as_bytes())) {
            return Err(Reject(
                UNAUTHENTICATED,
                "missing or invalid bearer token in the authorization metadata".into(),
                Some("unauthenticated"),
            ));
        }
    }
    let encoding = h
        .get("grpc-encoding")
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let max = cfg.max_message;
    let mut body = req.into_body();
    // Most messages are one frame, from clients that honour MAX_FRAME_SIZE: taken as they came, without a copy.
    let mut message_so_far = Gathered::default();
    let mut want: Option<(bool, usize)> = None;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Ok(None);
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        message_so_far.push(data, want.map_or(0, |(_, len)| len + 5));
        let so_far = message_so_far.as_slice();
        if want.is_none() && so_far.len() >= 5 {
            let len = u32::from_be_bytes([so_far[1], so_far[2], so_far[3], so_far[4]]) as usize;
            if len > max {
                // grpcio's words, before the message is read
                return Err(Reject(
                    RESOURCE_EXHAUSTED,
                    format!("Received message larger than max ({len} vs. {max})"),
                    Some("too_large"),
                ));
            }
            want = Some((so_far[0] != 0, len));
        }
        if let Some((_, len)) = want {
            if so_far.len() > len + 5 {
                return Err(Reject(
                    UNIMPLEMENTED,
                    "a unary call takes a single request message".into(),
                    Some("malformed"),
                ));
            }
        }
    }
    let buf = message_so_far.freeze();
    let Some((compressed, len)) = want else {
        return Err(Reject(
            INVALID_ARGUMENT,
            if buf.is_empty() {
                "no request message".into()
            } else {
                "truncated gRPC message prefix".into()
            },
            Some("malformed"),
        ));
    };
    if buf.len() < len + 5 {
        return Err(Reject(
            INVALID_ARGUMENT,
            format!(
                "truncated request message: {} of {len} bytes",
                buf.len() - 5
            ),
            Some("malformed"),
        ));
    }
    let message = buf.slice(5..);
    if !compressed {
        return Ok(Some(message));
    }
    let algo = match encoding.as_str() {
        "gzip" => "gzip",
        "deflate" => "deflate",
        "" | "identity" => {
            return Err(Reject(
                INTERNAL,
                "compressed message without grpc-encoding".into(),
                Some("malformed"),
            ))
        }
        other => {
            return Err(Reject(
                UNIMPLEMENTED,
                format!("unsupported grpc-encoding '{other}'; supported: gzip, deflate, identity"),
                Some("unsupported_encoding"),
            ))
        }
    };
    match inflate(&message, algo, max) {
        Ok(b) => Ok(Some(Bytes::from(b))),
        Err(BodyError::TooLarge) => Err(Reject(
            RESOURCE_EXHAUSTED,
            format!("Received message larger than max (decompressed past {max})"),
            Some("too_large"),
        )),
        Err(BodyError::Invalid(m)) => Err(Reject(
            INTERNAL,
            format!("invalid {algo} message: {m}"),
            Some("malformed"),
        )),
        Err(_) => Err(Reject(
            INTERNAL,
            format!("truncated {algo} message"),
            Some("malformed"),
        )),
    }
}

impl Intake for Shared {
    fn targets(&self) -> &[Target] {
        &self.targets
    }

    fn hook(&self) -> Option<&Arc<dyn Hook>> {
        self.hook.as_ref()
    }

    fn blocking(&self) -> bool {
        self.cfg.blocking
    }

    fn observe_due(&self) -> bool {
        observe_due(
            self.started,
            &self.observe_due_ms,
            self.cfg.observe_interval,
        )
    }
}

async fn consume(shared: &Arc<Shared>, payload: Bytes) -> Resp {
    match take(shared, &payload).await {
        Taken::Malformed(message) => fail(INVALID_ARGUMENT, &message, None),
        Taken::Refused(message) => {
            let details = wire::encode_status(RESOURCE_EXHAUSTED, &message, Some(RETRY_AFTER_S));
            fail(RESOURCE_EXHAUSTED, &message, Some(details))
        }
        Taken::Partial(n, message) => ok(&wire::encode_partial_success(n, &message)),
        Taken::All => ok(&[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_percent_encoding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg");
        assert_eq!(base64(b"fo"), "Zm8");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg");
        assert_eq!(percent_encode("a b%c\né"), "a b%25c%0A%C3%A9");
    }
}
