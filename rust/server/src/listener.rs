//! What the HTTP and gRPC servers share around their connections: the worker threads, TLS, the bind, the accept
//! loop (accept errors, the connection cap, the open and refused counters), the stop, and the socket wrapper that
//! tells a connection's state about the bytes read. Each protocol keeps what it does with a connection.
//!
//! Each worker thread runs its own current-thread runtime: a connection is accepted on worker 0 and handed to the
//! least loaded worker, where it stays (its socket, tasks and timers). tokio's multi-thread runtime spent a fifth
//! of the server's CPU in the kernel waking parked workers for work they then did not get (issue 24).

use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

use crate::{Counters, Purge, StartError, ACCEPT_ERRORS};

/// A protocol's state shared by its connections, as the accept loop and the stop need it.
pub(crate) trait Protocol: Send + Sync + 'static {
    fn counters(&self) -> &Counters;
    /// Connections being served (the cap counts them; the stop waits for them).
    fn active(&self) -> &AtomicUsize;
    /// 0: no cap.
    fn max_connections(&self) -> usize;
    /// A connection accepted over `max_connections` (already counted as refused).
    fn over_cap(self: &Arc<Self>, stream: TcpStream);
    /// Serves one connection until it closes or `shutdown` ends it.
    fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        shutdown: watch::Receiver<bool>,
        calls: Calls,
    ) -> impl Future<Output = ()> + Send;
}

/// One worker thread: its own current-thread runtime (its own epoll and timers), so a connection's readiness,
/// its tasks and its timers never cross threads and a worker never wakes another for work it does not get.
struct Worker {
    target: Target,
    thread: Option<JoinHandle<()>>,
}

/// A worker as the accept loop and the call spreading see it.
#[derive(Clone)]
pub(crate) struct Target {
    handle: Handle,
    /// Connections being served on it (the accept loop hands the next one to the least loaded).
    load: Arc<AtomicUsize>,
    /// HTTP/2 calls running on it (`Calls`).
    calls: Arc<AtomicUsize>,
}

/// Where an HTTP/2 connection's calls run (hyper's executor for its streams): on the connection's own worker
/// while that worker runs no other call, else on the worker running the fewest. A trickle of calls never crosses
/// threads, and one connection whose calls overlap (a gRPC channel from a collector with several export
/// consumers) still gets both cores.
#[derive(Clone)]
pub(crate) struct Calls {
    targets: Arc<[Target]>,
    home: usize,
}

impl Calls {
    fn pick(&self) -> usize {
        let home = self.home;
        if self.targets[home].calls.load(Ordering::Acquire) == 0 {
            return home;
        }
        least(&self.targets, home, |t| &t.calls)
    }
}

/// Counts a call out of its worker when its task ends (or is dropped with the runtime).
struct CallDone(Arc<AtomicUsize>);

impl Drop for CallDone {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<F> hyper::rt::Executor<F> for Calls
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        let target = &self.targets[self.pick()];
        target.calls.fetch_add(1, Ordering::AcqRel);
        let done = CallDone(target.calls.clone());
        target.handle.spawn(async move {
            let _done = done;
            fut.await;
        });
    }
}

/// The worker threads and the bound socket, before serving.
pub(crate) struct Bound {
    workers: Vec<Worker>,
    /// Ends every worker's runtime (after the grace).
    halt: watch::Sender<bool>,
    listener: TcpListener,
    pub(crate) local_addr: SocketAddr,
}

/// Starts `workers` threads (named `<id>/<proto>`) and binds `host:port` (errors name the address).
pub(crate) fn bind_threads(
    id: &str,
    proto: &str,
    host: &str,
    port: u16,
    backlog: u32,
    workers: usize,
    purge: Option<Purge>,
) -> Result<Bound, StartError> {
    let (halt, _) = watch::channel(false);
    let mut started = Vec::new();
    let workers = workers.max(1);
    for _ in 0..workers {
        // the blocking pools (ingest waiting on an fsync) share 64 threads
        let blocking = (64 / workers).max(1);
        match worker(id, proto, blocking, purge.clone(), halt.subscribe()) {
            Ok(w) => started.push(w),
            Err(e) => {
                stop_workers(&halt, &mut started);
                return Err(e);
            }
        }
    }
    // The listener lives on worker 0's reactor; its accept loop runs there.
    let bound = {
        let _guard = started[0].target.handle.enter();
        bind(id, proto, host, port, backlog).and_then(|l| {
            let addr = l.local_addr().map_err(|e| StartError {
                errno: e.raw_os_error(),
                message: e.to_string(),
                config: false,
            })?;
            Ok((l, addr))
        })
    };
    match bound {
        Ok((listener, local_addr)) => Ok(Bound {
            workers: started,
            halt,
            listener,
            local_addr,
        }),
        Err(e) => {
            stop_workers(&halt, &mut started);
            Err(e)
        }
    }
}

impl Bound {
    /// Accepts connections for `shared` from now on.
    pub(crate) fn serve<S: Protocol>(self, shared: S) -> Listening<S> {
        let shared = Arc::new(shared);
        let (shutdown, rx) = watch::channel(false);
        let targets: Arc<[Target]> = self.workers.iter().map(|w| w.target.clone()).collect();
        self.workers[0].target.handle.spawn(accept_loop(
            self.listener,
            shared.clone(),
            rx,
            targets,
        ));
        Listening {
            workers: self.workers,
            halt: self.halt,
            shutdown,
            shared,
        }
    }
}

/// A running server's threads and state; dropping it stops it, without the grace.
pub(crate) struct Listening<S: Protocol> {
    workers: Vec<Worker>,
    halt: watch::Sender<bool>,
    shutdown: watch::Sender<bool>,
    pub(crate) shared: Arc<S>,
}

impl<S: Protocol> Listening<S> {
    /// Stops accepting, tells the connections (each protocol closes its own way), lets what is in flight finish
    /// (within `grace`), then stops the threads.
    pub(crate) fn stop(&mut self, grace: Duration) {
        let _ = self.shutdown.send(true);
        if self.workers.is_empty() {
            return;
        }
        let end = Instant::now() + grace;
        while self.shared.active().load(Ordering::Acquire) > 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        stop_workers(&self.halt, &mut self.workers);
    }
}

impl<S: Protocol> Drop for Listening<S> {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        let _ = self.halt.send(true);
        // not joined: each thread drops its runtime (and its connections) on its own
        self.workers.clear();
    }
}

/// Halts every worker's runtime and waits for its thread.
fn stop_workers(halt: &watch::Sender<bool>, workers: &mut Vec<Worker>) {
    let _ = halt.send(true);
    for mut w in workers.drain(..) {
        if let Some(t) = w.thread.take() {
            let _ = t.join();
        }
    }
}

/// The worker to take the next connection: the least loaded, ties taken in turn (`turn` advances).
fn pick(loads: &[Target], turn: &mut usize) -> usize {
    let first = *turn % loads.len();
    *turn = turn.wrapping_add(1);
    least(loads, first, |t| &t.load)
}

/// The worker whose `count` is lowest; of those tied, the first from `first` on (in turn, wrapping).
fn least(targets: &[Target], first: usize, count: impl Fn(&Target) -> &AtomicUsize) -> usize {
    let n = targets.len();
    (0..n)
        .map(|k| (first + k) % n)
        .min_by_key(|&i| count(&targets[i]).load(Ordering::Acquire))
        .unwrap_or(first)
}

async fn accept_loop<S: Protocol>(
    listener: TcpListener,
    shared: Arc<S>,
    mut shutdown: watch::Receiver<bool>,
    workers: Arc<[Target]>,
) {
    let mut turn = 0usize;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                let code = e.raw_os_error().unwrap_or(0);
                if let Some(i) = ACCEPT_ERRORS.iter().position(|(c, _)| *c == code) {
                    shared.counters().accept_errors[i].fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_secs(1)).await; // as asyncio: descriptors free up
                } else {
                    // a connection reset before it was accepted, say: next; never a busy loop on a lasting error
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let cap = shared.max_connections();
        if cap > 0 && shared.active().load(Ordering::Acquire) >= cap {
            shared
                .counters()
                .refused_connections
                .fetch_add(1, Ordering::Relaxed);
            shared.over_cap(stream);
            continue;
        }
        let i = pick(&workers, &mut turn);
        // Handed over as a plain socket, registered with its worker's reactor there (this one is worker 0's).
        let stream = if i == 0 {
            Ok(stream)
        } else {
            match stream.into_std() {
                Ok(s) => Err(s),
                Err(_) => continue, // deregistering failed: dropped, as a reset before the accept
            }
        };
        shared.active().fetch_add(1, Ordering::AcqRel);
        shared.counters().open.fetch_add(1, Ordering::Relaxed);
        let load = workers[i].load.clone();
        load.fetch_add(1, Ordering::AcqRel);
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let calls = Calls {
            targets: workers.clone(),
            home: i,
        };
        workers[i].handle.spawn(async move {
            let stream = match stream {
                Ok(s) => Some(s),
                Err(s) => TcpStream::from_std(s).ok(),
            };
            if let Some(stream) = stream {
                shared.clone().serve(stream, shutdown, calls).await;
            }
            shared.counters().open.fetch_sub(1, Ordering::Relaxed);
            shared.active().fetch_sub(1, Ordering::AcqRel);
            load.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// A PEM certificate chain and key (`cfg.tls`) as an acceptor; `h2`: ALPN h2 (gRPC clients insist on it).
pub(crate) fn tls(
    pem: &Option<(Vec<u8>, Vec<u8>)>,
    h2: bool,
) -> Result<Option<TlsAcceptor>, StartError> {
    let Some((cert, key)) = pem else {
        return Ok(None);
    };
    tls_acceptor(cert, key, h2)
        .map(Some)
        .map_err(|message| StartError {
            errno: None,
            message,
            config: true,
        })
}

fn tls_acceptor(cert: &[u8], key: &[u8], h2: bool) -> Result<TlsAcceptor, String> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &cert[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls: cannot read cert_file: {e}"))?;
    if certs.is_empty() {
        return Err("tls: cert_file holds no PEM certificate".into());
    }
    let key = rustls_pemfile::private_key(&mut &key[..])
        .map_err(|e| format!("tls: cannot read key_file: {e}"))?
        .ok_or("tls: key_file holds no PEM private key")?;
    // ring, not aws-lc-rs: no cmake or C toolchain to build (its post-quantum key exchange is not needed here)
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls: cert_file and key_file: {e}"))?;
    if h2 {
        config.alpn_protocols = vec![b"h2".to_vec()]; // gRPC clients insist on it
    }
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// One worker thread and its runtime, running until `halt`; `purge` runs on it the next time it parks after its
/// epoch changes.
fn worker(
    id: &str,
    proto: &str,
    blocking: usize,
    purge: Option<Purge>,
    mut halt: watch::Receiver<bool>,
) -> Result<Worker, StartError> {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder
        .max_blocking_threads(blocking)
        .thread_name(format!("{id}/{proto}")) // its blocking pool's
        .enable_io()
        .enable_time();
    if let Some((epoch, purge)) = purge {
        builder.on_thread_park(move || {
            thread_local!(static SEEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) });
            let now = epoch.load(Ordering::Relaxed);
            if SEEN.with(|s| s.replace(now)) != now {
                purge();
            }
        });
    }
    let error = |e: io::Error| StartError {
        errno: e.raw_os_error(),
        message: format!("{id}/{proto}: cannot start its threads: {e}"),
        config: false,
    };
    let runtime = builder.build().map_err(error)?;
    let handle = runtime.handle().clone();
    let thread = std::thread::Builder::new()
        .name(format!("{id}/{proto}"))
        .spawn(move || {
            runtime.block_on(async move {
                while !*halt.borrow_and_update() {
                    if halt.changed().await.is_err() {
                        break;
                    }
                }
            });
            // connections still open past the grace are dropped (closed) here
            runtime.shutdown_timeout(Duration::from_millis(200));
        })
        .map_err(error)?;
    Ok(Worker {
        target: Target {
            handle,
            load: Arc::new(AtomicUsize::new(0)),
            calls: Arc::new(AtomicUsize::new(0)),
        },
        thread: Some(thread),
    })
}

fn bind(
    id: &str,
    proto: &str,
    host: &str,
    port: u16,
    backlog: u32,
) -> Result<tokio::net::TcpListener, StartError> {
    let shown = if host.is_empty() { "*" } else { host };
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    let os = |e: io::Error| {
        let message = if e.raw_os_error() == Some(libc::EADDRINUSE) {
            format!(
                "{id} ({proto}): {shown}:{port} is already in use (another process listens there: stop it, or \
                 change the receiver's endpoint)"
            )
        } else {
            format!("{id} ({proto}): cannot listen on {shown}:{port}: {e}")
        };
        StartError {
            errno: e.raw_os_error(),
            message,
            config: false,
        }
    };
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs().map_err(os)?.collect();
    let mut last = io::Error::new(io::ErrorKind::AddrNotAvailable, "no address");
    for addr in addrs {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        };
        let attempt = socket.and_then(|s| {
            s.set_reuseaddr(true)?;
            s.bind(addr)?;
            s.listen(backlog.max(8))
        });
        match attempt {
            Ok(l) => return Ok(l),
            Err(e) => last = e,
        }
    }
    Err(os(last))
}

/// What a connection's state does with the bytes read from its socket (`n` > 0).
pub(crate) trait OnRead {
    fn on_read(&self, n: usize);
}

/// A connection's socket (or TLS stream), telling its state about every read.
pub(crate) struct Tapped<T, S> {
    pub(crate) inner: T,
    pub(crate) state: Arc<S>,
}

impl<T: AsyncRead + Unpin, S: OnRead> AsyncRead for Tapped<T, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.state.on_read(n);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin, S> AsyncWrite for Tapped<T, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
