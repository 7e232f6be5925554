//! What the HTTP and gRPC servers share around their connections: the worker threads, TLS, the bind, the accept
//! loop (accept errors, the connection cap, the open and refused counters), the stop, and the socket wrapper that
//! tells a connection's state about the bytes read. Each protocol keeps what it does with a connection.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Runtime;
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
    ) -> impl Future<Output = ()> + Send;
}

/// The worker threads and the bound socket, before serving.
pub(crate) struct Bound {
    runtime: Runtime,
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
    let runtime = runtime(id, proto, workers, purge)?;
    let listener = {
        let _guard = runtime.enter();
        bind(id, proto, host, port, backlog)?
    };
    let local_addr = listener.local_addr().map_err(|e| StartError {
        errno: e.raw_os_error(),
        message: e.to_string(),
        config: false,
    })?;
    Ok(Bound {
        runtime,
        listener,
        local_addr,
    })
}

impl Bound {
    /// Accepts connections for `shared` from now on.
    pub(crate) fn serve<S: Protocol>(self, shared: S) -> Listening<S> {
        let shared = Arc::new(shared);
        let (shutdown, rx) = watch::channel(false);
        self.runtime
            .spawn(accept_loop(self.listener, shared.clone(), rx));
        Listening {
            runtime: Some(self.runtime),
            shutdown,
            shared,
        }
    }
}

/// A running server's threads and state; dropping it stops it, without the grace.
pub(crate) struct Listening<S: Protocol> {
    runtime: Option<Runtime>,
    shutdown: watch::Sender<bool>,
    pub(crate) shared: Arc<S>,
}

impl<S: Protocol> Listening<S> {
    /// Stops accepting, tells the connections (each protocol closes its own way), lets what is in flight finish
    /// (within `grace`), then stops the threads.
    pub(crate) fn stop(&mut self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        let shared = self.shared.clone();
        runtime.block_on(async move {
            let end = Instant::now() + grace;
            while shared.active().load(Ordering::Acquire) > 0 && Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        runtime.shutdown_timeout(Duration::from_millis(200));
    }
}

impl<S: Protocol> Drop for Listening<S> {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            let _ = self.shutdown.send(true);
            rt.shutdown_background();
        }
    }
}

async fn accept_loop<S: Protocol>(
    listener: TcpListener,
    shared: Arc<S>,
    mut shutdown: watch::Receiver<bool>,
) {
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
        shared.active().fetch_add(1, Ordering::AcqRel);
        shared.counters().open.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shared.clone().serve(stream, shutdown).await;
            shared.counters().open.fetch_sub(1, Ordering::Relaxed);
            shared.active().fetch_sub(1, Ordering::AcqRel);
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

/// The server's worker threads; `purge` runs on each the next time it parks after its epoch changes.
fn runtime(
    id: &str,
    proto: &str,
    workers: usize,
    purge: Option<Purge>,
) -> Result<Runtime, StartError> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .worker_threads(workers.max(1))
        .max_blocking_threads(64)
        .thread_name(format!("{id}/{proto}"))
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
    builder.build().map_err(|e| StartError {
        errno: e.raw_os_error(),
        message: format!("{id}/{proto}: cannot start its threads: {e}"),
        config: false,
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
