//! Read-only HTTP/1.1 file server for iPXE nodes: the TFTP tree, GET and HEAD only.
//!
//! Why: TFTP is lockstep (one block per round trip), HTTP streams over TCP; a 3 MB kernel over a
//! 1 ms link takes seconds by TFTP and a fraction of a second by HTTP. iPXE speaks both.
//!
//! The same root confinement as TFTP ([`crate::tftp::path::Root`]: normalised name, no `..`,
//! symlinks only inside the root, regular files only, `O_NOFOLLOW`). Every answer carries a
//! `Content-Length` (iPXE presizes its buffer from it) and the file's bytes as they are: no
//! on-the-fly compression, whatever the request asks. A single `Range` is honoured.
//!
//! The LAN is untrusted, so nothing a client does can hold the server: connections are bounded in
//! total and per source address; the request head must arrive within the header timeout (which
//! also ends idle keep-alive connections); a connection lives at most [`HttpConfig::lifetime`]
//! plus the time its answers take at [`MIN_RATE`] (a client that stops reading is cut off);
//! request heads are capped in size and requests with a body are refused.
//! A completed GET of a whole file becomes the same [`crate::events::Stage::Fetched`] event as a
//! TFTP transfer.
//!
//! Nothing here shapes the TCP stream (the kernel's defaults, as for any web server): iPXE on
//! QEMU's `pcnet` stops receiving after the first lost segment whoever sends, nginx included, and
//! neither a small send buffer nor a 10 Mbit/s link avoids it (README, HTTP for iPXE nodes).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{self, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, ReadBuf};

use crate::events::{BootEvent, EventSender, Stage};
use crate::tftp::path::{Refusal, Root};

/// The slowest rate a body is sent at before the connection is ended (as TFTP's hard lifetime).
pub const MIN_RATE: u64 = 16 * 1024;
/// Bytes read from the file per body frame.
const CHUNK: usize = 64 * 1024;
/// Largest request head hyper buffers (its minimum); a boot client's head is ~200 bytes.
const MAX_HEAD: usize = 8192;

/// What the HTTP server serves and how patiently.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Where connections are taken (e.g. the server's address, port 80 or 8080).
    pub bind: SocketAddr,
    /// The directory served (`out/tftpboot`); nothing outside it is ever sent.
    pub root: PathBuf,
    /// Open connections beyond which new ones are closed at once.
    pub max_connections: usize,
    /// Open connections per client address (iPXE uses one at a time).
    pub max_per_source: usize,
    /// Time for a whole request head to arrive, and the longest idle keep-alive wait.
    pub header_timeout: Duration,
    /// Base lifetime of a connection, extended for each answer by its size at `min_rate`.
    pub lifetime: Duration,
    /// Bytes per second an answer is allowed to be as slow as ([`MIN_RATE`]).
    pub min_rate: u64,
    /// Bind the listener to this interface (SO_BINDTODEVICE), so nothing is answered elsewhere.
    pub interface: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            bind: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80)),
            root: PathBuf::from("tftpboot"),
            max_connections: 512,
            max_per_source: 8,
            header_timeout: Duration::from_secs(10),
            lifetime: Duration::from_secs(30),
            min_rate: MIN_RATE,
            interface: None,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    #[error("HTTP root {path}: {source}")]
    Root { path: PathBuf, source: io::Error },
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot bind the HTTP socket to interface {interface}: {source}")]
    BindToDevice { interface: String, source: io::Error },
    #[error("HTTP socket: {0}")]
    Io(#[from] io::Error),
}

/// What the server did since it started (for logs, tests and the lab's proof).
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Connections accepted and served.
    pub connections: AtomicU64,
    /// Connections closed at once: too many in total or from one address.
    pub busy: AtomicU64,
    /// Requests answered (any status).
    pub requests: AtomicU64,
    /// Whole files sent by GET.
    pub files: AtomicU64,
    /// Body bytes sent.
    pub bytes: AtomicU64,
    /// Requests refused (not found, outside the root, bad method, bad name).
    pub refused: AtomicU64,
    /// Connections ended by the header timeout or the lifetime.
    pub timed_out: AtomicU64,
}

/// The server, bound and ready to run (bound before `serve` drops privileges).
pub struct HttpServer {
    listener: std::net::TcpListener,
    local: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    cfg: HttpConfig,
    root: Root,
    events: Option<EventSender>,
    stats: Arc<HttpStats>,
    /// Open connections per source address; the sum is the total.
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl Shared {
    fn new(cfg: HttpConfig, root: Root, events: Option<EventSender>) -> Arc<Shared> {
        Arc::new(Shared {
            cfg,
            root,
            events,
            stats: Arc::new(HttpStats::default()),
            open: Mutex::new(HashMap::new()),
        })
    }
}

/// The server's request handling without a socket: whole connections over an in-memory
/// stream, through the same parser, limits, name rules and range logic as a client on the LAN
/// gets. For the `http` fuzz target (`netboot::fuzzing::http`) and its corpus replay.
pub struct InMemory {
    shared: Arc<Shared>,
}

impl InMemory {
    /// Checks the root like [`HttpServer::bind`]; binds nothing.
    pub fn new(cfg: HttpConfig) -> Result<InMemory, HttpError> {
        let root =
            Root::new(&cfg.root).map_err(|source| HttpError::Root { path: cfg.root.clone(), source })?;
        Ok(InMemory { shared: Shared::new(cfg, root, None) })
    }

    /// One connection: the client sends `request` and closes its side; returns every byte the
    /// server answered (empty when the connection limits refuse it).
    pub async fn exchange(&self, request: &[u8]) -> Vec<u8> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let peer = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 7), 1024));
        let Some(slot) = Slot::take(&self.shared, peer.ip()) else { return Vec::new() };
        let (client, server) = tokio::io::duplex(16 * 1024);
        let conn = tokio::spawn(connection(self.shared.clone(), server, peer, slot, true));
        let (mut rd, mut wr) = tokio::io::split(client);
        let send = async {
            let _ = wr.write_all(request).await;
            let _ = wr.shutdown().await;
        };
        let mut out = Vec::new();
        let _ = tokio::join!(send, rd.read_to_end(&mut out));
        let _ = conn.await;
        out
    }
}

impl HttpServer {
    /// Checks the root and binds the listener now.
    pub fn bind(cfg: HttpConfig, events: Option<EventSender>) -> Result<Self, HttpError> {
        let root =
            Root::new(&cfg.root).map_err(|source| HttpError::Root { path: cfg.root.clone(), source })?;
        let addr = cfg.bind;
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if let Some(iface) = &cfg.interface {
            socket
                .bind_device(Some(iface.as_bytes()))
                .map_err(|source| HttpError::BindToDevice { interface: iface.clone(), source })?;
        }
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into()).map_err(|source| HttpError::Bind { addr, source })?;
        socket.listen(1024).map_err(|source| HttpError::Bind { addr, source })?;
        let listener: std::net::TcpListener = socket.into();
        let local = listener.local_addr()?;
        Ok(HttpServer { listener, local, shared: Shared::new(cfg, root, events) })
    }

    /// The address connections are taken on (useful when bound to port 0 in tests).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The server's counters, shared with the running server.
    pub fn stats(&self) -> Arc<HttpStats> {
        self.shared.stats.clone()
    }

    /// Serves until `shutdown` completes; running connections are ended with it.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), HttpError> {
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        let shared = self.shared;
        tracing::info!(addr = %self.local, root = %shared.root.path().display(), "http: serving");
        let mut connections = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Some(slot) = Slot::take(&shared, peer.ip()) else {
                            shared.stats.busy.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, "http: too many connections; closed");
                            // Best effort, never waits: the client learns why.
                            let _ = stream.try_write(BUSY);
                            continue;
                        };
                        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                        let _ = stream.set_nodelay(true);
                        connections.spawn(connection(shared.clone(), stream, peer, slot, false));
                    }
                    Err(e) => {
                        // Out of descriptors and the like: wait instead of spinning.
                        tracing::warn!(error = %e, "http: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        connections.shutdown().await;
        let s = &shared.stats;
        tracing::info!(
            files = s.files.load(Ordering::Relaxed),
            bytes = s.bytes.load(Ordering::Relaxed),
            requests = s.requests.load(Ordering::Relaxed),
            "http: stopped"
        );
        Ok(())
    }
}

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// One connection's place in the limits; given back when the connection ends in any way.
struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Slot {
    fn take(shared: &Arc<Shared>, ip: IpAddr) -> Option<Slot> {
        let mut open = shared.open.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = open.values().sum();
        let mine = open.get(&ip).copied().unwrap_or(0);
        if total >= shared.cfg.max_connections || mine >= shared.cfg.max_per_source {
            return None;
        }
        open.insert(ip, mine + 1);
        Some(Slot { shared: shared.clone(), ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.shared.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Serves one connection until the client closes it, a timeout ends it or the lifetime runs out.
/// `half_close`: answer what was asked before the client shut its sending side (the in-memory
/// client does that to mark the end of its input; iPXE never does).
async fn connection<S>(shared: Arc<Shared>, stream: S, peer: SocketAddr, _slot: Slot, half_close: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let deadline = Arc::new(Deadline {
        at: Mutex::new(Instant::now() + shared.cfg.header_timeout + shared.cfg.lifetime),
        moved: tokio::sync::Notify::new(),
    });
    let svc = {
        let (shared, deadline) = (shared.clone(), deadline.clone());
        hyper::service::service_fn(move |req| {
            let (shared, deadline) = (shared.clone(), deadline.clone());
            async move { Ok::<_, Infallible>(answer(&shared, peer, req, &deadline).await) }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(shared.cfg.header_timeout)
        .max_buf_size(MAX_HEAD)
        .half_close(half_close)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
    tokio::pin!(conn);
    loop {
        let until = deadline.get();
        tokio::select! {
            () = deadline.moved.notified() => {}
            result = &mut conn => {
                if let Err(e) = result {
                    if e.is_timeout() {
                        shared.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::debug!(%peer, error = %e, "http: connection ended");
                }
                return;
            }
            _ = tokio::time::sleep_until(until.into()) => {
                if deadline.get() <= Instant::now() {
                    shared.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "http: connection ended: too slow (lifetime)");
                    return;
                }
            }
        }
    }
}

/// When a connection is ended; each answer sets it anew and wakes the connection's timer.
struct Deadline {
    at: Mutex<Instant>,
    moved: tokio::sync::Notify,
}

impl Deadline {
    fn get(&self) -> Instant {
        *self.at.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, at: Instant) {
        *self.at.lock().unwrap_or_else(|p| p.into_inner()) = at;
        self.moved.notify_one();
    }
}

/// Answers one request; never fails (every problem is a status code).
async fn answer(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
    deadline: &Deadline,
) -> Response<Body> {
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        return refuse(shared, StatusCode::METHOD_NOT_ALLOWED, "GET and HEAD only\n");
    }
    // A boot client never sends a body; refusing it keeps the connection's state simple.
    if req.headers().contains_key(header::TRANSFER_ENCODING)
        || req.headers().get(header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0")
    {
        return refuse(shared, StatusCode::BAD_REQUEST, "a request body is not accepted\n");
    }
    let Some(name) = percent_decode(req.uri().path()) else {
        return refuse(shared, StatusCode::BAD_REQUEST, "bad percent-encoding in the path\n");
    };
    let opened = match shared.root.normalize(&name) {
        Ok(rel) => {
            let root = shared.root.clone();
            tokio::task::spawn_blocking(move || root.open(&rel).map(|o| (o, rel)))
                .await
                .unwrap_or_else(|e| Err(Refusal::Denied(format!("open task failed: {e}"))))
        }
        Err(r) => Err(r),
    };
    let (opened, rel) = match opened {
        Ok(o) => o,
        Err(Refusal::NotFound(why)) => {
            tracing::debug!(%peer, ?name, why, "http: not found");
            return refuse(shared, StatusCode::NOT_FOUND, "not found\n");
        }
        Err(Refusal::Denied(why)) => {
            tracing::warn!(%peer, ?name, why, "http: refused");
            return refuse(shared, StatusCode::FORBIDDEN, "forbidden\n");
        }
    };
    let size = opened.size;
    let range = match req.headers().get(header::RANGE).map(|v| parse_range(v.as_bytes(), size)) {
        None | Some(RangeAsk::Ignore) => None,
        Some(RangeAsk::Unsatisfiable) => {
            let mut r = refuse(shared, StatusCode::RANGE_NOT_SATISFIABLE, "");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
        Some(RangeAsk::Bytes(start, end)) => Some((start, end)),
    };
    let (start, len) = range.map_or((0, size), |(s, e)| (s, e - s + 1));
    // This answer's own time (the head's wait is over); hyper's header timeout covers the next.
    deadline
        .set(Instant::now() + shared.cfg.lifetime + Duration::from_secs(len / shared.cfg.min_rate.max(1)));
    let mut response = Response::new(Body::Empty);
    if let Some((s, e)) = range {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {s}-{e}/{size}")) {
            response.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    let h = response.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if head {
        return response;
    }
    let mut file = opened.file;
    if start > 0
        && let Err(e) = file.seek(SeekFrom::Start(start))
    {
        tracing::warn!(%peer, path = rel, error = %e, "http: seek failed");
        return refuse(shared, StatusCode::INTERNAL_SERVER_ERROR, "read error\n");
    }
    let whole = range.is_none();
    *response.body_mut() = Body::File(Box::new(FileBody {
        file: tokio::fs::File::from_std(file),
        remaining: len,
        buf: vec![0; CHUNK.min(len as usize)],
        done: Some(Done { shared: shared.clone(), peer, path: rel, whole, started: Instant::now(), len }),
    }));
    response
}

fn refuse(shared: &Shared, status: StatusCode, text: &'static str) -> Response<Body> {
    shared.stats.refused.fetch_add(1, Ordering::Relaxed);
    let mut r = Response::new(if text.is_empty() {
        Body::Empty
    } else {
        Body::Text(Some(Bytes::from_static(text.as_bytes())))
    });
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    r
}

/// Decodes `%XX` escapes; `None` for a broken escape or a name that is not UTF-8. A decoded
/// `/`, `\` or `..` is then judged by the root's rules like any other.
fn percent_decode(path: &str) -> Option<String> {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[derive(Debug, PartialEq, Eq)]
enum RangeAsk {
    /// Not a single byte range we understand: send the whole file (RFC 9110 allows it).
    Ignore,
    Unsatisfiable,
    /// First and last byte, inclusive.
    Bytes(u64, u64),
}

/// `bytes=A-B`, `bytes=A-` or `bytes=-N`, one range only.
fn parse_range(v: &[u8], size: u64) -> RangeAsk {
    let Some(spec) = std::str::from_utf8(v).ok().and_then(|s| s.trim().strip_prefix("bytes=")) else {
        return RangeAsk::Ignore;
    };
    let Some((a, b)) = spec.trim().split_once('-') else { return RangeAsk::Ignore };
    if spec.contains(',') {
        return RangeAsk::Ignore;
    }
    let num = |s: &str| if s.is_empty() { Some(None) } else { s.parse::<u64>().ok().map(Some) };
    let (Some(a), Some(b)) = (num(a.trim()), num(b.trim())) else { return RangeAsk::Ignore };
    match (a, b) {
        (None, None) => RangeAsk::Ignore,
        (None, Some(0)) => RangeAsk::Unsatisfiable,
        (None, Some(_)) if size == 0 => RangeAsk::Unsatisfiable,
        (None, Some(n)) => RangeAsk::Bytes(size.saturating_sub(n), size - 1),
        (Some(a), _) if a >= size => RangeAsk::Unsatisfiable,
        (Some(a), None) => RangeAsk::Bytes(a, size - 1),
        (Some(a), Some(b)) if b < a => RangeAsk::Ignore,
        (Some(a), Some(b)) => RangeAsk::Bytes(a, b.min(size - 1)),
    }
}

/// An answer's body: nothing, a short text, or a file streamed in [`CHUNK`]s.
pub enum Body {
    Empty,
    Text(Option<Bytes>),
    File(Box<FileBody>),
}

/// Streams `remaining` bytes of an opened file; the first bytes of memory a connection holds are
/// one chunk, however large the file.
pub struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    buf: Vec<u8>,
    /// Reported once the last byte is handed to the connection.
    done: Option<Done>,
}

struct Done {
    shared: Arc<Shared>,
    peer: SocketAddr,
    path: String,
    whole: bool,
    started: Instant,
    len: u64,
}

impl Done {
    fn report(self) {
        let stats = &self.shared.stats;
        let ms = self.started.elapsed().as_millis() as u64;
        if !self.whole {
            tracing::debug!(peer = %self.peer, path = self.path, bytes = self.len, ms, "http: sent a range");
            return;
        }
        stats.files.fetch_add(1, Ordering::Relaxed);
        tracing::info!(peer = %self.peer, path = self.path, bytes = self.len, ms, "http: sent");
        let ip = match self.peer.ip() {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(ip) => ip.to_ipv4_mapped(),
        };
        if let (Some(tx), Some(ip)) = (&self.shared.events, ip) {
            crate::events::emit(
                tx,
                BootEvent { at: SystemTime::now(), ip, mac: None, stage: Stage::Fetched(self.path) },
            );
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Text(t) => Poll::Ready(t.take().map(|b| Ok(Frame::data(b)))),
            Body::File(f) => f.poll_chunk(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Text(t) => t.is_none(),
            Body::File(f) => f.remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Text(t) => SizeHint::with_exact(t.as_ref().map_or(0, |b| b.len() as u64)),
            Body::File(f) => SizeHint::with_exact(f.remaining),
        }
    }
}

impl FileBody {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = self.buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let mut rb = ReadBuf::new(&mut self.buf[..want]);
        match Pin::new(&mut self.file).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {
                let got = rb.filled().len();
                if got == 0 {
                    // The file shrank under us: the promised length cannot be kept.
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shorter than its Content-Length",
                    ))));
                }
                let chunk = Bytes::copy_from_slice(rb.filled());
                self.remaining -= got as u64;
                if let Some(d) = &self.done {
                    d.shared.stats.bytes.fetch_add(got as u64, Ordering::Relaxed);
                }
                if self.remaining == 0
                    && let Some(done) = self.done.take()
                {
                    done.report();
                }
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Running {
        addr: SocketAddr,
        events: crate::events::EventReceiver,
        stats: Arc<HttpStats>,
        _root: tempfile::TempDir,
        _stop: tokio::sync::oneshot::Sender<()>,
    }

    async fn start(cfg: impl FnOnce(HttpConfig) -> HttpConfig) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(dir.path().join("secret"), b"outside").unwrap();
        std::fs::write(root.join("vmlinuz"), (0..200_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>())
            .unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("out")).unwrap();
        let base = HttpConfig { bind: "127.0.0.1:0".parse().unwrap(), root, ..HttpConfig::default() };
        let (tx, rx) = crate::events::channel();
        let server = HttpServer::bind(cfg(base), Some(tx)).unwrap();
        let (addr, stats) = (server.local_addr(), server.stats());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run(async {
            let _ = stop_rx.await;
        }));
        Running { addr, events: rx, stats, _root: dir, _stop: stop_tx }
    }

    #[tokio::test]
    async fn a_root_that_is_not_a_folder_is_named_as_the_http_root() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tftpboot");
        std::fs::write(&file, b"not a folder").unwrap();
        let cfg =
            HttpConfig { bind: "127.0.0.1:0".parse().unwrap(), root: file.clone(), ..HttpConfig::default() };
        let err = HttpServer::bind(cfg, None).err().expect("a file is no root").to_string();
        assert_eq!(err, format!("HTTP root {}: not a directory", file.display()));
        let cfg = HttpConfig { root: dir.path().join("missing"), ..HttpConfig::default() };
        let err = HttpServer::bind(cfg, None).err().expect("no root").to_string();
        assert!(err.starts_with("HTTP root ") && !err.contains("TFTP"), "{err}");
    }

    /// Sends raw bytes, returns everything the server says until it closes or 2 s pass.
    async fn raw(addr: SocketAddr, request: &[u8]) -> String {
        String::from_utf8_lossy(&raw_bytes(addr, request).await).into_owned()
    }

    async fn raw_bytes(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
        out
    }

    #[tokio::test]
    async fn get_sends_the_file_with_its_length_and_emits_fetched() {
        let mut s = start(|c| c).await;
        let got = raw_bytes(
            s.addr,
            b"GET /vmlinuz HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
        )
        .await;
        let split = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let (head, body) = (String::from_utf8_lossy(&got[..split]).to_ascii_lowercase(), &got[split + 4..]);
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("content-length: 200000"), "{head}");
        assert!(!head.contains("content-encoding") && !head.contains("chunked"), "{head}");
        assert_eq!(body, std::fs::read(s._root.path().join("root/vmlinuz")).unwrap());
        let ev = tokio::time::timeout(Duration::from_secs(2), s.events.recv()).await.unwrap().unwrap();
        assert_eq!((ev.ip, ev.stage), (Ipv4Addr::LOCALHOST, Stage::Fetched("vmlinuz".into())));
        assert_eq!(s.stats.files.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn head_range_and_refusals() {
        let mut s = start(|c| c).await;
        let head = raw(s.addr, b"HEAD /vmlinuz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(
            head.starts_with("HTTP/1.1 200") && head.to_ascii_lowercase().contains("content-length: 200000")
        );
        assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head:?}");
        let part = raw(
            s.addr,
            b"GET /vmlinuz HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\nConnection: close\r\n\r\n",
        )
        .await;
        let lower = part.to_ascii_lowercase();
        assert!(
            lower.starts_with("http/1.1 206") && lower.contains("content-range: bytes 10-19/200000"),
            "{part}"
        );
        assert!(lower.contains("content-length: 10"), "{part}");
        let bad_range = raw(
            s.addr,
            b"GET /vmlinuz HTTP/1.1\r\nHost: x\r\nRange: bytes=300000-\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(bad_range.starts_with("HTTP/1.1 416"), "{bad_range}");
        for (req, status) in [
            ("GET /../secret", "403"),
            ("GET /%2e%2e/secret", "403"),
            ("GET /out", "403"),
            ("GET /missing", "404"),
            ("GET /%zz", "400"),
            ("GET /", "403"),
            ("POST /vmlinuz", "405"),
            ("DELETE /vmlinuz", "405"),
        ] {
            let got =
                raw(s.addr, format!("{req} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
                    .await;
            assert!(got.starts_with(&format!("HTTP/1.1 {status}")), "{req}: {got}");
            assert!(!got.contains("outside"), "{req} leaked: {got}");
        }
        assert!(s.events.try_recv().is_err(), "HEAD, ranges and refusals are no fetches");
    }

    #[tokio::test]
    async fn slow_and_greedy_clients_cannot_hold_the_server() {
        let s = start(|c| HttpConfig { header_timeout: Duration::from_millis(300), max_per_source: 2, ..c })
            .await;
        // Slowloris: a head that never ends is cut off by the header timeout.
        let mut slow = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        slow.write_all(b"GET /vmlinuz HTTP/1.1\r\nX-a: b\r\n").await.unwrap();
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut buf)).await;
        assert!(r.is_ok(), "the slow head was not ended");
        // Per-source limit: two held connections, the third is answered 503 and closed.
        let _a = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let _b = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let third = raw(s.addr, b"GET /vmlinuz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(third.starts_with("HTTP/1.1 503"), "{third}");
        assert!(s.stats.busy.load(Ordering::Relaxed) >= 1);
        // Once the idle ones time out, the source is served again.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let ok = raw(s.addr, b"HEAD /vmlinuz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        // An oversized head is refused, not buffered.
        let huge = format!("GET /vmlinuz HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(64 * 1024));
        let got = raw(s.addr, huge.as_bytes()).await;
        assert!(!got.starts_with("HTTP/1.1 200"), "{got}");
    }

    /// A client that asks for a big file and never reads it is cut off at the lifetime, and its
    /// slot is free again.
    #[tokio::test]
    async fn a_client_that_stops_reading_is_ended_at_its_lifetime() {
        let s = start(|c| HttpConfig {
            lifetime: Duration::from_millis(500),
            min_rate: 1 << 40,
            max_per_source: 1,
            ..c
        })
        .await;
        std::fs::write(s._root.path().join("root/big"), vec![7u8; 32 << 20]).unwrap();
        let mut stuck = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        stuck.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let ended = wait(Duration::from_secs(5), || s.stats.timed_out.load(Ordering::Relaxed) >= 1).await;
        assert!(ended, "a stalled reader was not ended");
        let ok = raw(s.addr, b"HEAD /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "the slot was not given back: {ok}");
        drop(stuck);
    }

    async fn wait(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if cond() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cond()
    }

    #[test]
    fn ranges_parse_as_rfc_9110_says() {
        assert_eq!(parse_range(b"bytes=0-9", 100), RangeAsk::Bytes(0, 9));
        assert_eq!(parse_range(b"bytes=90-", 100), RangeAsk::Bytes(90, 99));
        assert_eq!(parse_range(b"bytes=-10", 100), RangeAsk::Bytes(90, 99));
        assert_eq!(parse_range(b"bytes=-1000", 100), RangeAsk::Bytes(0, 99));
        assert_eq!(parse_range(b"bytes=50-1000", 100), RangeAsk::Bytes(50, 99));
        assert_eq!(parse_range(b"bytes=100-", 100), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=0-1,5-6", 100), RangeAsk::Ignore);
        assert_eq!(parse_range(b"items=0-1", 100), RangeAsk::Ignore);
        assert_eq!(parse_range(b"bytes=9-1", 100), RangeAsk::Ignore);
        assert_eq!(parse_range(b"bytes=-", 100), RangeAsk::Ignore);
        assert_eq!(percent_decode("/a%20b").as_deref(), Some("/a b"));
        assert_eq!(percent_decode("/%ff"), None);
        assert_eq!(percent_decode("/%4"), None);
    }
}
