//! The OTLP/HTTP receiver of `tailsample serve`, off the GIL: an HTTP/1.1 server (hyper + tokio, rustls for TLS)
//! on its own worker threads that answers `POST <traces path>` exactly as the Python receiver did
//! (`tailsample.receivers.otlp_http_receiver`) and hands each payload to the engines of its pipelines. Python only
//! configures it, sets the memory limiters' flags, reads the counters, and runs decisions and exports.
//!
//! Per request: path and method, bearer token, Content-Type, Content-Length against `max_body`, Content-Encoding,
//! the body within `read_timeout` of the request's start (408 and close past it), bounded inflation, JSON to
//! protobuf (the core's `otlp::json`), the memory limiters, every pipeline's engine, and the answer (200, a
//! partial success, or a `google.rpc.Status`). Per connection: `max_connections` (over it, a 503 from a few
//! refusal slots, or closed at once), the header and idle timeouts, TLS.
//!
//! The OTLP/gRPC receiver (`grpc`) shares the listener, TLS, auth, limiters, engines, counters and hook.

mod body;
pub mod grpc;
mod listener;
pub mod wire;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tailsample_core::{Engine, Error as CoreError, Ingested};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use listener::{Listening, OnRead, Protocol, Tapped};

pub use body::{inflate, BodyError};
pub use grpc::{GrpcConfig, GrpcServer, Keepalive};

pub const PROTOBUF: &str = "application/x-protobuf";
pub const JSON: &str = "application/json";
/// What a refused client is told to wait (seconds); decisions free room within a tick.
pub const RETRY_AFTER_S: u64 = 1;
/// Connections over the cap answered 503 at once; beyond, closed without an answer.
pub const REFUSAL_SLOTS: usize = 16;
/// How long a refused connection may take to send its headers.
pub const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);
const SIGNALS: [&str; 3] = ["/v1/metrics", "/v1/logs", "/v1/profiles"];

/// Why a request was answered with an error before its spans could be counted (the `reason` label).
pub const REJECT_REASONS: [&str; 7] = [
    "malformed",
    "too_large",
    "unauthenticated",
    "unsupported_media_type",
    "unsupported_encoding",
    "not_found",
    "timeout",
];
/// accept() failures counted by name.
pub const ACCEPT_ERRORS: [(i32, &str); 4] = [
    (libc::EMFILE, "EMFILE"),
    (libc::ENFILE, "ENFILE"),
    (libc::ENOBUFS, "ENOBUFS"),
    (libc::ENOMEM, "ENOMEM"),
];

fn reason_index(reason: &str) -> usize {
    REJECT_REASONS
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(0)
}

/// The receiver's and listener's counters, read by Python at scrape time.
#[derive(Default)]
pub struct Counters {
    pub accepted_spans: AtomicU64,
    pub refused_spans: AtomicU64,
    pub aborted: AtomicU64,
    pub rejected: [AtomicU64; REJECT_REASONS.len()],
    pub open: AtomicI64,
    pub refused_connections: AtomicU64,
    pub timed_out_header: AtomicU64,
    pub timed_out_read: AtomicU64,
    pub accept_errors: [AtomicU64; ACCEPT_ERRORS.len()],
}

impl Counters {
    pub(crate) fn reject(&self, reason: &str) {
        self.rejected[reason_index(reason)].fetch_add(1, Ordering::Relaxed);
    }
}

/// A `memory_limiter`'s verdict, set by Python at every check and read here without the GIL.
#[derive(Default)]
pub struct Limiter {
    refusing: AtomicBool,
    message: Mutex<String>,
    /// Payloads refused here since Python last took the count (it adds them to the limiter's metric).
    refused: AtomicU64,
}

impl Limiter {
    pub fn set(&self, refusing: bool, message: &str) {
        if refusing {
            *self.message.lock().unwrap_or_else(|e| e.into_inner()) = message.to_string();
        }
        self.refusing.store(refusing, Ordering::Release);
    }

    pub fn take_refused(&self) -> u64 {
        self.refused.swap(0, Ordering::AcqRel)
    }

    fn check(&self) -> Result<(), String> {
        if !self.refusing.load(Ordering::Acquire) {
            return Ok(());
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        Err(self
            .message
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }
}

/// An engine the server feeds: owned, or held by someone else (the binding's Python object).
pub trait EngineRef: Send + Sync + 'static {
    fn engine(&self) -> &Engine;
}

impl EngineRef for Engine {
    fn engine(&self) -> &Engine {
        self
    }
}

/// One pipeline behind the receiver: its memory limiters (checked first) and its engine.
pub struct Target {
    pub engine: Arc<dyn EngineRef>,
    /// The engine's clock: wall time (tail storage, archive) or the monotonic clock.
    pub wall_clock: bool,
    pub limiters: Vec<Arc<Limiter>>,
}

/// What Python still does with an accepted payload: a what-if recording (every payload, when on), the attribute
/// inventory (one payload per interval), the log line about spans rejected alone.
pub trait Hook: Send + Sync + 'static {
    fn every_payload(&self) -> bool;
    fn accepted(&self, payload: &[u8], got: &Ingested, observe: bool);
}

/// `bearertokenauth`: the expected `Authorization` value, from the configuration or a file read again when it
/// changes (as the collector's extension watches its file).
pub struct Auth {
    scheme: String,
    file: Option<PathBuf>,
    state: RwLock<(Vec<u8>, Option<SystemTime>)>,
}

impl Auth {
    pub fn new(scheme: &str, token: Option<&str>, file: Option<PathBuf>) -> io::Result<Auth> {
        let auth = Auth {
            scheme: scheme.to_string(),
            file,
            state: RwLock::new((Vec::new(), None)),
        };
        match token {
            Some(t) => auth.state.write().unwrap_or_else(|e| e.into_inner()).0 = auth.header(t),
            None => auth.reload(true)?,
        }
        Ok(auth)
    }

    fn header(&self, token: &str) -> Vec<u8> {
        if self.scheme.is_empty() {
            token.as_bytes().to_vec()
        } else {
            format!("{} {}", self.scheme, token).into_bytes()
        }
    }

    fn reload(&self, required: bool) -> io::Result<()> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let read = || -> io::Result<Option<(String, SystemTime)>> {
            let mtime = std::fs::metadata(path)?.modified()?;
            if self.state.read().unwrap_or_else(|e| e.into_inner()).1 == Some(mtime) {
                return Ok(None);
            }
            Ok(Some((
                std::fs::read_to_string(path)?.trim().to_string(),
                mtime,
            )))
        };
        match read() {
            Ok(Some((token, mtime))) => {
                if token.is_empty() && required {
                    return Err(io::Error::other(format!("{} is empty", path.display())));
                }
                *self.state.write().unwrap_or_else(|e| e.into_inner()) =
                    (self.header(&token), Some(mtime));
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) if required => Err(e),
            Err(_) => Ok(()), // keep the previous token (Python logs this case)
        }
    }

    /// True when `header` carries the expected token (compared in constant time).
    pub fn authenticate(&self, header: Option<&[u8]>) -> bool {
        let _ = self.reload(false);
        let Some(header) = header else {
            return false;
        };
        let header = header.trim_ascii();
        if header.is_empty() {
            return false;
        }
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        constant_time_eq(header, &state.0)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The server's settings (`receivers.otlp.protocols.http`); a zero timeout is off.
pub struct Config {
    /// `<receiver id>`, for messages; the listener is `<id>/http`.
    pub id: String,
    pub host: String,
    pub port: u16,
    pub traces_path: String,
    pub max_body: usize,
    pub compression: Vec<String>,
    pub max_connections: usize,
    pub read_header_timeout: Duration,
    pub read_timeout: Duration,
    pub idle_timeout: Duration,
    pub response_headers: Vec<(String, String)>,
    /// PEM certificate chain and private key.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    pub auth: Option<Arc<Auth>>,
    pub workers: usize,
    pub backlog: u32,
    /// Ingest waits on the disk (tail storage with fsync): run it on the blocking pool, not the reactor.
    pub blocking: bool,
    pub observe_interval: Duration,
}

/// Why the server did not start.
#[derive(Debug)]
pub struct StartError {
    pub errno: Option<i32>,
    pub message: String,
    /// A configuration problem (certificates), not the OS.
    pub config: bool,
}

struct Shared {
    cfg: Config,
    targets: Vec<Target>,
    hook: Option<Arc<dyn Hook>>,
    counters: Arc<Counters>,
    headers: Vec<(HeaderName, HeaderValue)>,
    tls: Option<TlsAcceptor>,
    started: Instant,
    observe_due_ms: AtomicU64,
    refusing: AtomicUsize,
    active: AtomicUsize,
}

/// The purge epoch and what to run on each worker thread when it changes.
pub type Purge = (Arc<AtomicU64>, Arc<dyn Fn() + Send + Sync>);

/// A running server; `stop` it (dropping it stops it too, without the grace).
pub struct Server {
    listening: Listening<Shared>,
    pub local_addr: SocketAddr,
}

impl Server {
    /// Binds (errors name the address) and starts serving on `cfg.workers` threads. `purge` runs on every
    /// worker thread the next time it parks after `purge_epoch` changes (mimalloc collects per thread).
    pub fn start(
        cfg: Config,
        targets: Vec<Target>,
        hook: Option<Arc<dyn Hook>>,
        purge: Option<Purge>,
    ) -> Result<Server, StartError> {
        let tls = listener::tls(&cfg.tls, false)?;
        let mut headers = Vec::new();
        for (k, v) in &cfg.response_headers {
            let name = HeaderName::try_from(k.as_str());
            let value = HeaderValue::try_from(v.as_str());
            match (name, value) {
                (Ok(n), Ok(v)) => headers.push((n, v)),
                _ => {
                    return Err(StartError {
                        errno: None,
                        message: format!("response_headers: invalid header {k:?}: {v:?}"),
                        config: true,
                    })
                }
            }
        }
        let bound = listener::bind_threads(
            &cfg.id,
            "http",
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
            headers,
            tls,
            started: Instant::now(),
            observe_due_ms: AtomicU64::new(0),
            refusing: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
        });
        Ok(Server {
            listening,
            local_addr,
        })
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.listening.shared.counters
    }

    /// Stops accepting, lets requests in flight finish (within `grace`), then stops the threads.
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

    /// A 503 from one of a few refusal slots; with none left, closed at once.
    fn over_cap(self: &Arc<Self>, stream: TcpStream) {
        if self.refusing.fetch_add(1, Ordering::AcqRel) >= REFUSAL_SLOTS {
            self.refusing.fetch_sub(1, Ordering::AcqRel);
            drop(stream); // no refusal slot left: closed at once
            return;
        }
        let shared = self.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REFUSAL_TIMEOUT, refuse(stream, &shared)).await;
            shared.refusing.fetch_sub(1, Ordering::AcqRel);
        });
    }

    /// HTTP/1.1 answers a connection's requests in turn: its calls are never spread.
    async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        shutdown: watch::Receiver<bool>,
        _calls: listener::Calls,
    ) {
        serve_connection(stream, &self, shutdown).await;
    }
}

/// A connection over `max_connections`: 503 with Retry-After to its first request, then closed.
async fn refuse(stream: TcpStream, shared: &Arc<Shared>) {
    let text = format!(
        "{}/http: too many connections open; retry later\n",
        shared.cfg.id
    );
    let svc = service_fn(move |_req: Request<Incoming>| {
        let text = text.clone();
        async move {
            let mut r = Response::new(Full::new(Bytes::from(text)));
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            let h = r.headers_mut();
            h.insert(
                "content-type",
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            h.insert("retry-after", HeaderValue::from(RETRY_AFTER_S));
            h.insert("connection", HeaderValue::from_static("close"));
            Ok::<_, std::convert::Infallible>(r)
        }
    });
    let mut builder = http1::Builder::new();
    builder.keep_alive(false).title_case_headers(true);
    match &shared.tls {
        Some(acceptor) => {
            if let Ok(tls) = acceptor.accept(stream).await {
                let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
            }
        }
        None => {
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        }
    }
}

/// Where a connection is between requests, for its header and idle timers.
#[derive(Clone, Copy)]
enum Phase {
    /// Reading a request's headers since then (the accept, or the next request's first byte).
    Headers(Instant),
    /// In the handler; `read_timeout` is its own.
    Request,
    Idle(Instant),
}

struct ConnState {
    phase: Mutex<Phase>,
}

impl ConnState {
    fn set(&self, p: Phase) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = p;
    }

    fn get(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The request's start (for its `read_timeout` deadline); the connection is in a request from now.
    fn begin(&self) -> Instant {
        let mut p = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        let started = match *p {
            Phase::Headers(t) => t,
            _ => Instant::now(),
        };
        *p = Phase::Request;
        started
    }
}

/// The next request's first byte ends the idle time.
impl OnRead for ConnState {
    fn on_read(&self, _n: usize) {
        let mut p = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        if let Phase::Idle(_) = *p {
            *p = Phase::Headers(Instant::now());
        }
    }
}

fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// Resolves when the connection has been waiting too long for headers (true) or idle too long (false).
async fn watchdog(state: Arc<ConnState>, header: Option<Duration>, idle: Option<Duration>) -> bool {
    // How often the phase is looked at again: a change of phase does not wake this task (that would cost every
    // request a wake-up), so no deadline is missed by more than this.
    let tick = [header, idle]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(Duration::from_secs(1))
        .min(Duration::from_secs(1));
    loop {
        let now = Instant::now();
        let (deadline, is_header) = match state.get() {
            Phase::Headers(t) => (header.map(|d| t + d), true),
            Phase::Idle(t) => (idle.map(|d| t + d), false),
            Phase::Request => (None, false),
        };
        if let Some(d) = deadline {
            if now >= d {
                return is_header;
            }
        }
        let wake = deadline.map_or(now + tick, |d| d.min(now + tick));
        tokio::time::sleep_until(wake.into()).await;
    }
}

async fn serve_connection(
    stream: TcpStream,
    shared: &Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let cfg = &shared.cfg;
    let header = nonzero(cfg.read_header_timeout).or(nonzero(cfg.read_timeout));
    // a zero idle_timeout takes read_timeout; both zero: an hour, as aiohttp's own default
    let idle = nonzero(cfg.idle_timeout)
        .or(nonzero(cfg.read_timeout))
        .unwrap_or(Duration::from_secs(3630));
    let state = Arc::new(ConnState {
        phase: Mutex::new(Phase::Headers(Instant::now())),
    });
    match &shared.tls {
        Some(acceptor) => {
            let handshake = header.unwrap_or(Duration::from_secs(60));
            let Ok(Ok(tls)) = tokio::time::timeout(handshake, acceptor.accept(stream)).await else {
                return; // a failed or slow handshake: nothing to answer
            };
            drive(tls, shared, state, header, idle, &mut shutdown).await;
        }
        None => drive(stream, shared, state, header, idle, &mut shutdown).await,
    }
}

async fn drive<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: T,
    shared: &Arc<Shared>,
    state: Arc<ConnState>,
    header: Option<Duration>,
    idle: Duration,
    shutdown: &mut watch::Receiver<bool>,
) {
    let svc_shared = shared.clone();
    let svc_state = state.clone();
    let svc = service_fn(move |req| {
        let shared = svc_shared.clone();
        let state = svc_state.clone();
        async move {
            let started = state.begin();
            let r = handle(&shared, req, started).await;
            state.set(Phase::Idle(Instant::now()));
            Ok::<_, std::convert::Infallible>(r)
        }
    });
    let io = TokioIo::new(Tapped {
        inner: io,
        state: state.clone(),
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        // the watchdog keeps the header deadline; hyper's own (30 s by default) would arm a timer per request
        .header_read_timeout(None)
        .title_case_headers(true) // as aiohttp wrote them: some clients compare names case-sensitively
        .keep_alive(true)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    let dog = watchdog(state, header, Some(idle));
    tokio::pin!(dog);
    tokio::select! {
        _ = conn.as_mut() => {}
        is_header = &mut dog => {
            if is_header {
                shared.counters.timed_out_header.fetch_add(1, Ordering::Relaxed);
            }
            // dropping the connection closes it
        }
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(10), conn.as_mut()).await;
        }
    }
}

/// An error answer: status, gRPC code, message, the `reason` label.
struct Reject {
    status: StatusCode,
    code: u64,
    message: String,
    reason: &'static str,
}

impl Reject {
    fn new(status: StatusCode, message: String, reason: &'static str) -> Reject {
        Reject {
            status,
            code: wire::INVALID_ARGUMENT,
            message,
            reason,
        }
    }
}

type Resp = Response<Full<Bytes>>;

fn respond(shared: &Shared, status: StatusCode, body: Vec<u8>, ctype: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static(ctype));
    for (k, v) in &shared.headers {
        h.insert(k.clone(), v.clone());
    }
    r
}

fn error(shared: &Shared, status: StatusCode, code: u64, message: &str, json: bool) -> Resp {
    let retry = (status == StatusCode::SERVICE_UNAVAILABLE).then_some(RETRY_AFTER_S);
    let (body, ctype) = if json {
        (wire::status_json(code, message), JSON)
    } else {
        (wire::encode_status(code, message, retry), PROTOBUF)
    };
    let mut r = respond(shared, status, body, ctype);
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert("www-authenticate", HeaderValue::from_static("Bearer"));
    }
    if let Some(s) = retry {
        r.headers_mut().insert("retry-after", HeaderValue::from(s));
    }
    r
}

fn plain(shared: &Shared, status: StatusCode, text: &str) -> Resp {
    respond(
        shared,
        status,
        text.as_bytes().to_vec(),
        "text/plain; charset=utf-8",
    )
}

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>, started: Instant) -> Resp {
    let cfg = &shared.cfg;
    let path = req.uri().path();
    if path != cfg.traces_path {
        if SIGNALS.contains(&path) && req.method() == Method::POST {
            shared.counters.reject("not_found");
            let message =
                format!("{path}: tailsample receives traces only; send them to /v1/traces");
            return error(
                shared,
                StatusCode::NOT_FOUND,
                wire::INVALID_ARGUMENT,
                &message,
                false,
            );
        }
        return plain(shared, StatusCode::NOT_FOUND, "404: Not Found");
    }
    if req.method() != Method::POST {
        let mut r = plain(
            shared,
            StatusCode::METHOD_NOT_ALLOWED,
            "405: Method Not Allowed",
        );
        r.headers_mut()
            .insert("allow", HeaderValue::from_static("POST"));
        return r;
    }
    let mut json = false;
    let payload = match read_request(shared, req, started, &mut json).await {
        Ok(p) => p,
        Err(Ok(reject)) => {
            shared.counters.reject(reject.reason);
            let mut r = error(shared, reject.status, reject.code, &reject.message, json);
            if reject.status == StatusCode::REQUEST_TIMEOUT {
                r.headers_mut()
                    .insert("connection", HeaderValue::from_static("close"));
            }
            return r;
        }
        Err(Err(())) => {
            shared.counters.aborted.fetch_add(1, Ordering::Relaxed);
            return plain(shared, StatusCode::BAD_REQUEST, "request aborted"); // nobody may be listening any more
        }
    };
    consume(shared, payload, json).await
}

/// The request's payload (protobuf), or why not: `Err(Ok(()))` when the client went away mid-body.
async fn read_request(
    shared: &Shared,
    req: Request<Incoming>,
    started: Instant,
    json: &mut bool,
) -> Result<Bytes, Result<Reject, ()>> {
    let cfg = &shared.cfg;
    let h = req.headers();
    if let Some(auth) = &cfg.auth {
        if !auth.authenticate(h.get("authorization").map(|v| v.as_bytes())) {
            return Err(Ok(Reject {
                status: StatusCode::UNAUTHORIZED,
                code: wire::UNAUTHENTICATED,
                message: "missing or invalid bearer token in the Authorization header".into(),
                reason: "unauthenticated",
            }));
        }
    }
    let ctype = h
        .get("content-type")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let media = ctype
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media == JSON {
        *json = true;
    } else if media != PROTOBUF {
        let shown = if media.is_empty() { "(none)" } else { &media };
        return Err(Ok(Reject::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported Content-Type '{shown}'; send {PROTOBUF} or {JSON}"),
            "unsupported_media_type",
        )));
    }
    let limit = cfg.max_body;
    let length = h
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = length {
        if n > limit as u64 {
            return Err(Ok(Reject::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body of {n} bytes exceeds max_request_body_size ({limit} bytes)"),
                "too_large",
            )));
        }
    }
    let encoding = h
        .get("content-encoding")
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let allowed = &cfg.compression;
    let ok = allowed.contains(&encoding)
        || (encoding == "identity" && allowed.iter().any(|a| a.is_empty()));
    if !ok {
        let supported: Vec<&str> = allowed
            .iter()
            .filter(|a| !a.is_empty())
            .map(String::as_str)
            .collect();
        let supported = if supported.is_empty() {
            "none".to_string()
        } else {
            supported.join(", ")
        };
        return Err(Ok(Reject::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported Content-Encoding '{encoding}'; supported: {supported} (or none)"),
            "unsupported_encoding",
        )));
    }
    let read = body::collect(req.into_body(), limit, length);
    let raw = match nonzero(cfg.read_timeout) {
        None => read.await,
        Some(t) => match tokio::time::timeout_at((started + t).into(), read).await {
            Ok(r) => r,
            Err(_) => {
                shared
                    .counters
                    .timed_out_read
                    .fetch_add(1, Ordering::Relaxed);
                return Err(Ok(Reject::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "request body not received within read_timeout ({} s)",
                        cfg.read_timeout.as_secs_f64()
                    ),
                    "timeout",
                )));
            }
        },
    };
    let raw = match raw {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return Err(Ok(Reject::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body exceeds max_request_body_size ({limit} bytes)"),
                "too_large",
            )))
        }
        Err(_) => return Err(Err(())),
    };
    let body = if encoding.is_empty() || encoding == "identity" {
        raw
    } else {
        match inflate(&raw, &encoding, limit) {
            Ok(b) => Bytes::from(b),
            Err(BodyError::TooLarge) => {
                return Err(Ok(Reject::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("decompressed body exceeds max_request_body_size ({limit} bytes)"),
                    "too_large",
                )))
            }
            Err(BodyError::Invalid(m)) => {
                return Err(Ok(Reject::new(
                    StatusCode::BAD_REQUEST,
                    format!("invalid {encoding} body: {m}"),
                    "malformed",
                )))
            }
            Err(BodyError::Truncated) => {
                return Err(Ok(Reject::new(
                    StatusCode::BAD_REQUEST,
                    format!("truncated {encoding} body"),
                    "malformed",
                )))
            }
            Err(BodyError::Aborted) => return Err(Err(())),
        }
    };
    if *json {
        return match tailsample_core::otlp::json::json_to_proto(&body) {
            Ok(p) => Ok(Bytes::from(p)),
            Err(e) => Err(Ok(Reject::new(
                StatusCode::BAD_REQUEST,
                format!("malformed json body: {e}"),
                "malformed",
            ))),
        };
    }
    Ok(body)
}

fn now_ns(wall: bool) -> i64 {
    if wall {
        return SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
    }
    // Python's time.monotonic(): CLOCK_MONOTONIC, the engine's clock without tail storage
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    #[allow(clippy::unnecessary_cast)] // time_t and c_long are not i64 everywhere
    let ns = ts.tv_sec as i64 * 1_000_000_000 + ts.tv_nsec as i64;
    ns
}

pub(crate) enum Refusal {
    Limiter(String),
    Engine(CoreError),
}

/// Every limiter first (a refusal takes nothing), then every engine.
pub(crate) fn ingest_all(targets: &[Target], payload: &[u8]) -> Result<Ingested, Refusal> {
    for t in targets {
        for l in &t.limiters {
            l.check().map_err(Refusal::Limiter)?;
        }
    }
    let mut got = Ingested::default();
    for t in targets {
        got = t
            .engine
            .engine()
            .ingest_report(payload, now_ns(t.wall_clock))
            .map_err(Refusal::Engine)?;
    }
    Ok(got)
}

/// What the pipelines need of a server's state to take a payload.
pub(crate) trait Intake: Protocol {
    fn targets(&self) -> &[Target];
    fn hook(&self) -> Option<&Arc<dyn Hook>>;
    /// Ingest on the blocking pool (`block_on_overflow`: an engine may wait for room).
    fn blocking(&self) -> bool;
    /// True for one payload per `observe_interval`.
    fn observe_due(&self) -> bool;
}

/// What became of a payload handed to the pipelines (counted), for each protocol to answer in its own words.
pub(crate) enum Taken {
    All,
    /// Taken but for this many spans rejected alone, and why.
    Partial(u64, String),
    /// Not an ExportTraceServiceRequest: nothing taken.
    Malformed(String),
    /// Backpressure from a limiter or an engine: nothing taken, the client retries.
    Refused(String),
}

/// The payload to every pipeline (limiters first), counted, and to the hook when it wants it.
pub(crate) async fn take<S: Intake>(shared: &Arc<S>, payload: &Bytes) -> Taken {
    let result = if shared.blocking() {
        let s = shared.clone();
        let p = payload.clone();
        match tokio::task::spawn_blocking(move || ingest_all(s.targets(), &p)).await {
            Ok(r) => r,
            Err(e) => Err(Refusal::Engine(CoreError::Storage {
                path: String::new(),
                message: format!("ingest failed: {e}"),
            })),
        }
    } else {
        ingest_all(shared.targets(), payload)
    };
    let c = shared.counters();
    let got = match result {
        Ok(got) => got,
        Err(Refusal::Engine(e @ CoreError::Decode { .. })) => {
            c.reject("malformed");
            return Taken::Malformed(format!("malformed ExportTraceServiceRequest: {e}"));
        }
        Err(refusal) => {
            let spans = tailsample_core::inspect(payload).map_or(0, |s| s.spans);
            c.refused_spans.fetch_add(spans, Ordering::Relaxed);
            let why = match refusal {
                Refusal::Limiter(m) => m,
                Refusal::Engine(e) => e.to_string(),
            };
            return Taken::Refused(format!("{why}; retry later"));
        }
    };
    c.accepted_spans
        .fetch_add(got.spans as u64, Ordering::Relaxed);
    if let Some(hook) = shared.hook() {
        let observe = shared.observe_due();
        if observe || got.rejected_spans > 0 || hook.every_payload() {
            // Python waits for the GIL: on the blocking pool, so the worker's other connections go on meanwhile
            let (hook, p, g) = (hook.clone(), payload.clone(), got.clone());
            let _ = tokio::task::spawn_blocking(move || hook.accepted(&p, &g, observe)).await;
        }
    }
    if got.rejected_spans > 0 {
        c.refused_spans
            .fetch_add(got.rejected_spans as u64, Ordering::Relaxed);
        let message = format!(
            "{} spans rejected: {}",
            got.rejected_spans,
            got.rejection.as_deref().unwrap_or("")
        );
        return Taken::Partial(got.rejected_spans as u64, message);
    }
    Taken::All
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

async fn consume(shared: &Arc<Shared>, payload: Bytes, json: bool) -> Resp {
    match take(shared, &payload).await {
        Taken::Malformed(message) => error(
            shared,
            StatusCode::BAD_REQUEST,
            wire::INVALID_ARGUMENT,
            &message,
            json,
        ),
        Taken::Refused(message) => error(
            shared,
            StatusCode::SERVICE_UNAVAILABLE,
            wire::UNAVAILABLE,
            &message,
            json,
        ),
        Taken::Partial(n, message) if json => respond(
            shared,
            StatusCode::OK,
            wire::partial_success_json(n, &message),
            JSON,
        ),
        Taken::Partial(n, message) => respond(
            shared,
            StatusCode::OK,
            wire::encode_partial_success(n, &message),
            PROTOBUF,
        ),
        Taken::All if json => respond(shared, StatusCode::OK, b"{}".to_vec(), JSON),
        Taken::All => respond(shared, StatusCode::OK, Vec::new(), PROTOBUF),
    }
}

/// True for one payload per `observe_interval` (the attribute inventory samples).
pub(crate) fn observe_due(started: Instant, due_ms: &AtomicU64, interval: Duration) -> bool {
    let now = started.elapsed().as_millis() as u64;
    let due = due_ms.load(Ordering::Relaxed);
    now >= due
        && due_ms
            .compare_exchange(
                due,
                now + interval.as_millis() as u64,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
}

/// Counters by name, for the binding: (accepted, refused, aborted, rejected by reason, open, refused
/// connections, timed out (read_header, read), accept errors by name).
pub fn snapshot(c: &Counters) -> HashMap<String, u64> {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut m: HashMap<String, u64> = [
        ("accepted_spans", load(&c.accepted_spans)),
        ("refused_spans", load(&c.refused_spans)),
        ("aborted", load(&c.aborted)),
        ("open", c.open.load(Ordering::Relaxed).max(0) as u64),
        ("refused_connections", load(&c.refused_connections)),
        ("timed_out_read_header", load(&c.timed_out_header)),
        ("timed_out_read", load(&c.timed_out_read)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (i, r) in REJECT_REASONS.iter().enumerate() {
        m.insert(
            format!("rejected:{r}"),
            c.rejected[i].load(Ordering::Relaxed),
        );
    }
    for (i, (_, name)) in ACCEPT_ERRORS.iter().enumerate() {
        m.insert(
            format!("accept_error:{name}"),
            c.accept_errors[i].load(Ordering::Relaxed),
        );
    }
    m
}
