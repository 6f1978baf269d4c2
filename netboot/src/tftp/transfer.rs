//! One read transfer: OACK handshake, then DATA windows with retransmission, on the transfer's
//! own socket (connected to the client, so the kernel drops strangers and reports a closed client
//! port as `ConnectionRefused`, which ends the transfer at once instead of after all retries).

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::{Instant, Sleep};

use super::options::Negotiated;
use super::packet::{self, Mode, Packet};

/// Where the bytes come from: a file under the root, read in chunks, or a whole copy in memory
/// (the shared file cache, see `cache`).
#[derive(Clone, Debug)]
pub enum Source {
    File(Arc<std::fs::File>),
    Memory(Arc<[u8]>),
}

/// How a transfer ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every block was sent; `final_ack` tells whether the client acknowledged the last one
    /// (some ROMs never do: after the retries the transfer counts as complete anyway).
    Complete { bytes: u64, final_ack: bool },
    /// The client sent an ERROR (the PXE tsize probe does this right after the OACK).
    ClientError { code: u16, message: String, bytes: u64 },
    /// No answer after all retries, or the client's port is closed.
    GaveUp { bytes: u64, reason: &'static str },
}

/// Reads blocks from a source in chunks, so memory per transfer stays at one chunk plus one
/// window no matter how large the file is.
struct BlockReader {
    source: Source,
    netascii: bool,
    offset: u64,
    chunk: usize,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
    /// Read files in place (the transfer runs on a thread of its own, see [`Blocking`]).
    blocking: bool,
}

impl BlockReader {
    fn new(source: Source, mode: Mode, chunk: usize) -> Self {
        BlockReader {
            source,
            netascii: mode == Mode::Netascii,
            offset: 0,
            chunk,
            buf: Vec::new(),
            pos: 0,
            eof: false,
            blocking: false,
        }
    }

    /// Appends the next block of up to `blksize` bytes to `out` and returns its length; shorter
    /// than `blksize` means it is the last one. An octet-mode copy in memory (the shared file
    /// cache) is sliced directly, without the chunk buffer.
    async fn next_block_into(&mut self, blksize: usize, out: &mut Vec<u8>) -> io::Result<usize> {
        if let (Source::Memory(data), false) = (&self.source, self.netascii) {
            let start = usize::try_from(self.offset).unwrap_or(usize::MAX).min(data.len());
            let end = start.saturating_add(blksize).min(data.len());
            out.extend_from_slice(&data[start..end]);
            self.offset = end as u64;
            return Ok(end - start);
        }
        while self.buf.len() - self.pos < blksize && !self.eof {
            self.buf.drain(..self.pos);
            self.pos = 0;
            let raw = self.read_raw().await?;
            if raw.is_empty() {
                self.eof = true;
            }
            self.offset += raw.len() as u64;
            if self.netascii {
                for b in raw {
                    match b {
                        b'\n' => self.buf.extend_from_slice(b"\r\n"),
                        b'\r' => self.buf.extend_from_slice(b"\r\0"),
                        b => self.buf.push(b),
                    }
                }
            } else {
                self.buf.extend_from_slice(&raw);
            }
        }
        let end = (self.pos + blksize).min(self.buf.len());
        out.extend_from_slice(&self.buf[self.pos..end]);
        let len = end - self.pos;
        self.pos = end;
        Ok(len)
    }

    #[cfg(test)]
    async fn next_block(&mut self, blksize: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.next_block_into(blksize, &mut out).await?;
        Ok(out)
    }

    async fn read_raw(&mut self) -> io::Result<Vec<u8>> {
        match &self.source {
            Source::Memory(data) => {
                let start = usize::try_from(self.offset).unwrap_or(usize::MAX).min(data.len());
                let end = start.saturating_add(self.chunk).min(data.len());
                Ok(data[start..end].to_vec())
            }
            Source::File(file) if self.blocking => read_full_at(file, self.offset, self.chunk),
            Source::File(file) => {
                let file = Arc::clone(file);
                let (offset, chunk) = (self.offset, self.chunk);
                tokio::task::spawn_blocking(move || read_full_at(&file, offset, chunk))
                    .await
                    .map_err(io::Error::other)?
            }
        }
    }
}

/// Up to `len` bytes from `offset`: fewer only at the end of the file.
pub(super) fn read_full_at(file: &std::fs::File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut v = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match file.read_at(&mut v[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    v.truncate(got);
    Ok(v)
}

/// The retransmit timer of atftp (0.8.0), the strictest client seen: it re-ACKs a repeated
/// block once only, then waits for this much silence before it re-sends its last ACK.
const STRICT_CLIENT_TIMER: Duration = Duration::from_secs(5);

/// How long a transfer listens in silence after its last retransmission before giving up (see
/// the use): three rounds of the strict client's timer, so two of its re-ACKs in a row may be
/// lost too (with two rounds, 1 run in 20 of the 5 %-loss test lost the atftp leg that way).
/// A dead client's transfer thus lives 16 s longer; the per-source limit and the hard lifetime
/// bound what that costs.
const LINGER: Duration = Duration::from_secs(3 * STRICT_CLIENT_TIMER.as_secs() + 1);

/// Floor of the early retransmission (see [`Rtt`]): a loaded host or a slow ROM may take tens of
/// milliseconds to answer one block, and each early retransmission it did not need is a
/// duplicate on the wire (strict test clients count them as strays).
const MIN_RTO: Duration = Duration::from_millis(200);

/// Round-trip estimate of one lock-step transfer (RFC 6298's smoothing), for one early
/// retransmission of a block before the full timeout. In lock-step only the server's timer
/// recovers a lost DATA or ACK, and with the usual 1 s timeout 1 % loss each way cost ~40 s per
/// 3 MB at blksize 1468 (atftp, whose own timer is 5 s). Only the first retransmission is
/// early; the timer rounds, the retry budget and the time to give up are unchanged. Samples come
/// only from blocks sent once (Karn), and every early retransmission doubles the next one until a
/// clean sample comes, so a client slower than the estimate costs a few duplicates, never a
/// stream. Windows (RFC 7440) are left to their own recovery: the client's repeated ACK.
#[derive(Debug, Default)]
struct Rtt {
    /// Smoothed round trip and its variation; `None` until the first sample.
    srtt: Option<(Duration, Duration)>,
    backoff: u32,
}

impl Rtt {
    fn sample(&mut self, rtt: Duration) {
        self.srtt = Some(match self.srtt {
            None => (rtt, rtt / 2),
            Some((srtt, var)) => {
                let diff = srtt.abs_diff(rtt);
                ((srtt * 7 + rtt) / 8, (var * 3 + diff) / 4)
            }
        });
        self.backoff = 0;
    }

    /// When to retransmit early, if that is sooner than half the timeout.
    fn early(&self, timeout: Duration) -> Option<Duration> {
        let (srtt, var) = self.srtt?;
        let rto = (srtt + var * 4).max(MIN_RTO).checked_mul(1 << self.backoff.min(16))?;
        (rto < timeout / 2).then_some(rto)
    }
}

/// What one wait for the client produced.
enum Heard {
    /// The client sent its read request again (it never got our OACK): see `handshake`.
    Again,
    Ack(u16),
    Error(u16, String),
    Timeout,
    PortClosed,
}

/// What one receive on the transfer's socket produced.
enum Received {
    Bytes(usize),
    Timeout,
    PortClosed,
}

/// How the transfer's socket is driven: by the TFTP thread's reactor, or blocking on a thread
/// of its own (see [`Transfer::into_blocking`]). Only `send` and `recv` differ; every transfer
/// rule above them is the same code.
enum Link {
    Reactor {
        socket: UdpSocket,
        /// One timer for the whole transfer, moved lazily (see `recv`).
        timer: Pin<Box<Sleep>>,
    },
    Blocking(Blocking),
}

/// A blocking socket connected to the client, with the receive timeout (`SO_RCVTIMEO`) it has
/// now: a lock-step block then costs one `send` and one `recv`, against an `epoll_wait` (the
/// thread sleeping in the reactor, woken by the ACK) and the `recv` through the reactor.
struct Blocking {
    socket: Arc<std::net::UdpSocket>,
    stop: Arc<AtomicBool>,
    rcvtimeo: Option<Duration>,
}

/// Ends a transfer running on its own thread when dropped (the server aborted the task that
/// waits for it, or its hard lifetime ran out): the thread sees the flag, and its blocked
/// `recv` returns at once because the socket is shut for reading.
pub struct Stop {
    socket: Arc<std::net::UdpSocket>,
    stop: Arc<AtomicBool>,
}

impl Drop for Stop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = socket2::SockRef::from(&*self.socket).shutdown(std::net::Shutdown::Read);
    }
}

/// The error a stopped thread's transfer ends with (nobody waits for it any more).
fn stopped() -> io::Error {
    io::Error::other("transfer stopped")
}

impl Link {
    async fn send(&self, pkt: &[u8]) -> io::Result<usize> {
        match self {
            Link::Reactor { socket, .. } => socket.send(pkt).await,
            Link::Blocking(b) => b.socket.send(pkt),
        }
    }

    /// The client acknowledged everything sent, so it sends nothing until the next DATA: the
    /// reactor's next `recv` would be a syscall that finds nothing (about one per block). This
    /// clears the socket's readiness without it; an event that comes after the one last seen is
    /// kept (tokio clears only that one), and whatever arrived with it and is still queued (a
    /// duplicate ACK, an ERROR) is read with the next datagram or at the timeout.
    fn assume_drained(&self) {
        if let Link::Reactor { socket, .. } = self {
            let _ = socket
                .try_io(tokio::io::Interest::READABLE, || Err::<(), _>(io::ErrorKind::WouldBlock.into()));
        }
    }

    /// One datagram from the client, or why none came before `deadline`.
    async fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<Received> {
        let received = match self {
            Link::Reactor { socket, timer } => loop {
                // The timer is moved only when it would fire late. Deadlines mostly move later
                // (each ACK restarts the wait), so it is left where it is and, when it fires
                // early, set to the real deadline: a timer operation about once per timeout
                // instead of twice per block.
                if timer.deadline() > deadline {
                    timer.as_mut().reset(deadline);
                }
                tokio::select! {
                    biased;
                    r = socket.recv(buf) => break r,
                    () = timer.as_mut() => {
                        if Instant::now() >= deadline {
                            // A datagram queued while the readiness was cleared by
                            // `assume_drained` raised no new event: look once, with a syscall.
                            match (&*socket2::SockRef::from(&*socket)).read(buf) {
                                Ok(n) => break Ok(n),
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                                Err(e) => break Err(e),
                            }
                            return Ok(Received::Timeout);
                        }
                        timer.as_mut().reset(deadline);
                    }
                }
            },
            Link::Blocking(b) => loop {
                if b.stop.load(Ordering::Relaxed) {
                    return Err(stopped());
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(Received::Timeout);
                }
                // Like the reactor's timer, the timeout is changed only when it is far off:
                // waking up to 1/16 late or early is harmless, and in lock-step every wait is
                // about as long as the one before, so this is no syscall per block.
                let fits = b.rcvtimeo.is_some_and(|t| t >= left / 2 && t <= left + left / 16);
                if !fits {
                    b.socket.set_read_timeout(Some(left))?;
                    b.rcvtimeo = Some(left);
                }
                match b.socket.recv(buf) {
                    Ok(_) if b.stop.load(Ordering::Relaxed) => return Err(stopped()),
                    Ok(n) => break Ok(n),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => break Err(e),
                }
            },
        };
        match received {
            Ok(n) => Ok(Received::Bytes(n)),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(Received::PortClosed),
            Err(e) => Err(e),
        }
    }
}

/// Drives a future whose every await completes at once (a transfer on a [`Link::Blocking`]:
/// its I/O blocks the thread instead of returning `Pending`).
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        // Not reached by the blocking link; a guard against spinning if an await ever pends.
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A transfer in progress.
pub struct Transfer {
    link: Link,
    negotiated: Negotiated,
    retries: u32,
    reader: BlockReader,
    recv_buf: Vec<u8>,
    /// Signalled by the request socket when this client repeats its request.
    again: Arc<tokio::sync::Notify>,
    rtt: Rtt,
    /// Whether the client chose the retransmit timeout itself (RFC 2349): then it is kept
    /// exactly, without early retransmissions.
    timeout_asked: bool,
}

impl Transfer {
    /// `socket` must already be connected to the client.
    pub fn new(socket: UdpSocket, source: Source, mode: Mode, negotiated: Negotiated, retries: u32) -> Self {
        let window_bytes = usize::from(negotiated.blksize) * usize::from(negotiated.windowsize);
        let chunk = window_bytes.clamp(16 * 1024, 1024 * 1024);
        let timeout_asked = negotiated.oack.iter().any(|(name, _)| name == "timeout");
        Transfer {
            link: Link::Reactor { socket, timer: Box::pin(tokio::time::sleep(Duration::ZERO)) },
            negotiated,
            retries,
            reader: BlockReader::new(source, mode, chunk),
            recv_buf: vec![0u8; 2048],
            again: Arc::new(tokio::sync::Notify::new()),
            rtt: Rtt::default(),
            timeout_asked,
        }
    }

    /// Where the request socket signals that the client repeated its request.
    pub fn with_again(mut self, again: Arc<tokio::sync::Notify>) -> Self {
        self.again = again;
        self
    }

    /// The OACK handshake, when options were granted; `Some` ends the transfer. Then
    /// [`send_data`](Self::send_data) or [`into_blocking`](Self::into_blocking) goes on. I/O
    /// errors other than a closed client port are returned, here and in the data phase.
    pub async fn open(&mut self) -> io::Result<Option<Outcome>> {
        if self.negotiated.oack.is_empty() {
            return Ok(None);
        }
        let oack = Packet::Oack { options: self.negotiated.oack.clone() }.encode();
        self.handshake(&oack).await
    }

    /// Whether the data phase is lock-step (one block per window).
    pub fn lock_step(&self) -> bool {
        self.negotiated.windowsize <= 1
    }

    /// Moves the data phase onto a blocking socket, for a thread of its own
    /// ([`run_blocking`](Self::run_blocking)); the [`Stop`] ends it from outside. Meant for after
    /// [`open`](Self::open): a repeated request (`again`) is not heard any more.
    pub fn into_blocking(mut self) -> io::Result<(Self, Stop)> {
        let Link::Reactor { socket, .. } = self.link else {
            return Err(io::Error::other("transfer already blocking"));
        };
        let socket = socket.into_std()?;
        socket.set_nonblocking(false)?;
        let socket = Arc::new(socket);
        let stop = Arc::new(AtomicBool::new(false));
        self.link =
            Link::Blocking(Blocking { socket: Arc::clone(&socket), stop: Arc::clone(&stop), rcvtimeo: None });
        self.reader.blocking = true;
        Ok((self, Stop { socket, stop }))
    }

    /// Runs the data phase of a transfer made by [`into_blocking`](Self::into_blocking) on the
    /// calling thread.
    pub fn run_blocking(mut self) -> io::Result<Outcome> {
        if !matches!(self.link, Link::Blocking(_)) {
            return Err(io::Error::other("transfer not blocking"));
        }
        block_on(self.send_data())
    }

    /// Sends the OACK and waits for the client's ACK 0. `Some` ends the transfer.
    ///
    /// The OACK is sent again only when the client repeats its request, which says it never got
    /// the first one; never on our own timer. atftp (0.8.0, Debian 12) aborts with "unexpected
    /// OACK" when an OACK arrives after it sent its ACK 0, so if that ACK (and its retry on the
    /// client's 5 s timer) was lost, an OACK of ours would kill the transfer, while waiting lets
    /// the client's next ACK 0 through. Every client retransmits its last packet: the RRQ when
    /// it heard nothing, the ACK 0 when it heard the OACK. The wait is bounded like the linger.
    async fn handshake(&mut self, oack: &[u8]) -> io::Result<Option<Outcome>> {
        let mut tries = 0;
        if !self.send(oack).await? {
            return Ok(Some(gave_up(0, "client port closed")));
        }
        // The OACK's round trip is the first estimate, unless it had to be sent again.
        let sent = Instant::now();
        let budget = (self.negotiated.timeout * (self.retries + 1)).max(LINGER);
        let mut deadline = sent + budget;
        let again = Arc::clone(&self.again);
        loop {
            let heard = tokio::select! {
                h = self.hear(deadline) => h?,
                () = again.notified() => Heard::Again,
            };
            match heard {
                Heard::Ack(0) => {
                    if tries == 0 {
                        self.rtt.sample(sent.elapsed());
                    }
                    return Ok(None);
                }
                Heard::Ack(_) => {}
                Heard::Again => {
                    if tries >= self.retries {
                        return Ok(Some(gave_up(0, "no ACK for OACK")));
                    }
                    tries += 1;
                    if !self.send(oack).await? {
                        return Ok(Some(gave_up(0, "client port closed")));
                    }
                    deadline = Instant::now() + budget;
                }
                Heard::Error(code, message) => {
                    return Ok(Some(Outcome::ClientError { code, message, bytes: 0 }));
                }
                Heard::PortClosed => return Ok(Some(gave_up(0, "client port closed"))),
                Heard::Timeout => return Ok(Some(gave_up(0, "no ACK for OACK"))),
            }
        }
    }

    /// The data phase: every block sent and acknowledged, with retransmissions.
    pub async fn send_data(&mut self) -> io::Result<Outcome> {
        let blksize = usize::from(self.negotiated.blksize);
        let windowsize = usize::from(self.negotiated.windowsize);
        let timeout = self.negotiated.timeout;
        // Encoded DATA packets not yet acknowledged, with their payload length; `base` is the
        // sequence number (from 1, never wrapping) of the first. The wire block number is the
        // sequence modulo 2^16, so a file of more than 65535 blocks rolls over to block 0 as
        // most clients expect. Acknowledged packets' buffers are reused (`spare`): no
        // allocation per block.
        let mut window: VecDeque<(Vec<u8>, usize)> = VecDeque::with_capacity(windowsize);
        let mut spare: Vec<Vec<u8>> = Vec::with_capacity(windowsize);
        let mut base: u64 = 1;
        let mut read_all = false;
        let mut acked_bytes: u64 = 0;
        let mut tries = 0u32;
        let mut lingered = false;
        // Whether the window was already resent for a repeated ACK of the block before it since
        // the window last moved or the timer last fired (see the use).
        let mut resent_for_repeat = false;
        // Whether the window moved since it was last sent (else its next send is a resend).
        let mut window_moved = true;
        loop {
            while window.len() < windowsize && !read_all {
                let seq = base + window.len() as u64;
                let mut pkt = spare.pop().unwrap_or_else(|| Vec::with_capacity(4 + blksize));
                packet::encode_data_into(&mut pkt, wire(seq), &[]);
                let len = self.reader.next_block_into(blksize, &mut pkt).await?;
                read_all = len < blksize;
                window.push_back((pkt, len));
            }
            if window.is_empty() {
                return Ok(Outcome::Complete { bytes: acked_bytes, final_ack: true });
            }
            // Every (re)start of the wait sends the whole window: it is either new, or the
            // client's ACK said it is missing from the first unacknowledged block on.
            if !self.send_window(&window).await? {
                return Ok(gave_up(acked_bytes, "client port closed"));
            }
            let sent = Instant::now();
            let mut deadline = sent + timeout;
            // The early retransmission still ahead for this window, and whether the window went
            // out more than once (then its ACK says nothing about the round trip).
            let mut early = if self.timeout_asked || windowsize > 1 {
                None
            } else {
                self.rtt.early(timeout).map(|rto| sent + rto)
            };
            let mut resent = !window_moved;
            window_moved = false;
            // Wait until the client moves the window (or we give up).
            loop {
                let closed = match self.hear(early.map_or(deadline, |e| e.min(deadline))).await? {
                    Heard::Ack(block) => {
                        let moved = (0..=window.len()).find(|k| wire(base - 1 + *k as u64) == block);
                        match moved {
                            // A stale ACK from before the window: ignore.
                            None => continue,
                            // A repeated ACK of the block before the window while we linger in
                            // silence: the client's own timer, so it is alive and still wants
                            // the window's start. Resend it once, then linger again.
                            Some(0) if lingered => {
                                lingered = false;
                                break;
                            }
                            // Otherwise, with one block per window, answering it would double
                            // every later packet (Sorcerer's Apprentice), so the timeout alone
                            // retransmits.
                            Some(0) if windowsize == 1 => continue,
                            // With a window, RFC 7440 clients send it when they missed the
                            // window's start, but also (atftp) when a duplicate of an earlier
                            // block arrives. Answering every one resends whole windows into a
                            // link that already carries duplicates, each making the client ACK
                            // again: a storm under loss, uncounted, that outlived the retry
                            // budget. So: one resend per window move or timer round, counted
                            // as a retry; further repeats wait for the timer.
                            Some(0) => {
                                if resent_for_repeat || tries >= self.retries {
                                    continue;
                                }
                                resent_for_repeat = true;
                                tries += 1;
                                break;
                            }
                            Some(k) => {
                                if !resent {
                                    self.rtt.sample(sent.elapsed());
                                }
                                for _ in 0..k {
                                    if let Some((pkt, len)) = window.pop_front() {
                                        acked_bytes += len as u64;
                                        spare.push(pkt);
                                    }
                                }
                                base += k as u64;
                                if window.is_empty() {
                                    self.link.assume_drained();
                                }
                                window_moved = true;
                                tries = 0;
                                lingered = false;
                                resent_for_repeat = false;
                                break;
                            }
                        }
                    }
                    Heard::Error(code, message) => {
                        return Ok(Outcome::ClientError { code, message, bytes: acked_bytes });
                    }
                    Heard::PortClosed => true,
                    Heard::Timeout if early.is_some_and(|e| e < deadline) => {
                        // The early retransmission: not a retry, the timer round goes on.
                        early = None;
                        resent = true;
                        self.rtt.backoff = self.rtt.backoff.saturating_add(1);
                        if !self.send_window(&window).await? {
                            return Ok(gave_up(acked_bytes, "client port closed"));
                        }
                        continue;
                    }
                    Heard::Timeout | Heard::Again => false,
                };
                early = None;
                resent = true;
                let only_last_left = read_all && window.len() == 1;
                if !closed && !only_last_left && tries >= self.retries && !lingered {
                    // Stay quiet but listening for a while before giving up: atftp answers a
                    // repeated block with one extra ACK only, and re-ACKs again only after its
                    // own timer saw silence. If that extra ACK was lost, our silence is what
                    // lets the transfer go on (and it lasts three of its rounds, see LINGER).
                    lingered = true;
                    deadline = Instant::now() + timeout.max(LINGER);
                    continue;
                }
                if closed || tries >= self.retries {
                    if only_last_left {
                        let last = window.front().map_or(0, |(_, len)| *len as u64);
                        return Ok(Outcome::Complete { bytes: acked_bytes + last, final_ack: false });
                    }
                    let reason = if closed { "client port closed" } else { "client stopped answering" };
                    return Ok(gave_up(acked_bytes, reason));
                }
                tries += 1;
                resent_for_repeat = false;
                if !self.send_window(&window).await? {
                    return Ok(gave_up(acked_bytes, "client port closed"));
                }
                deadline = Instant::now() + timeout;
            }
        }
    }

    /// Sends every packet of the window; `false` when the client's port is known to be closed.
    async fn send_window(&self, window: &VecDeque<(Vec<u8>, usize)>) -> io::Result<bool> {
        for (pkt, _) in window {
            if !self.send(pkt).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Sends one packet; `false` when the client's port is known to be closed.
    async fn send(&self, pkt: &[u8]) -> io::Result<bool> {
        match self.link.send(pkt).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits for a packet that matters until `deadline`. Malformed packets and packets that are
    /// neither ACK nor ERROR are dropped.
    async fn hear(&mut self, deadline: Instant) -> io::Result<Heard> {
        loop {
            let n = match self.link.recv(&mut self.recv_buf, deadline).await? {
                Received::Bytes(n) => n,
                Received::Timeout => return Ok(Heard::Timeout),
                Received::PortClosed => return Ok(Heard::PortClosed),
            };
            match Packet::parse(&self.recv_buf[..n]) {
                Ok(Packet::Ack { block }) => return Ok(Heard::Ack(block)),
                Ok(Packet::Error { code, message }) => return Ok(Heard::Error(code, message)),
                Ok(other) => {
                    tracing::debug!(packet = other.kind(), "tftp: ignored packet in transfer")
                }
                Err(e) => tracing::debug!(error = %e, "tftp: dropped malformed packet in transfer"),
            }
        }
    }
}

fn wire(seq: u64) -> u16 {
    (seq & 0xFFFF) as u16
}

fn gave_up(bytes: u64, reason: &'static str) -> Outcome {
    Outcome::GaveUp { bytes, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reader_chunks_and_converts_netascii() {
        let data: Arc<[u8]> = Arc::from(&b"a\nb\rc"[..]);
        let mut r = BlockReader::new(Source::Memory(data), Mode::Netascii, 2);
        assert_eq!(r.next_block(4).await.unwrap(), b"a\r\nb");
        assert_eq!(r.next_block(4).await.unwrap(), b"\r\0c");
        assert_eq!(r.next_block(4).await.unwrap(), b"");

        let file = tempfile::tempfile().unwrap();
        let content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all_at(&content, 0).unwrap();
        let mut r = BlockReader::new(Source::File(Arc::new(file)), Mode::Octet, 16 * 1024);
        let mut got = Vec::new();
        loop {
            let b = r.next_block(512).await.unwrap();
            got.extend_from_slice(&b);
            assert!(r.buf.capacity() <= 64 * 1024, "reader memory stays bounded");
            if b.len() < 512 {
                break;
            }
        }
        assert_eq!(got, content);
    }

    #[test]
    fn early_retransmission_follows_the_round_trip_and_backs_off() {
        let second = Duration::from_secs(1);
        let mut rtt = Rtt::default();
        assert_eq!(rtt.early(second), None, "no estimate, no early retransmission");
        for _ in 0..20 {
            rtt.sample(Duration::from_micros(100));
        }
        assert_eq!(rtt.early(second), Some(MIN_RTO), "a LAN round trip is floored");
        rtt.backoff = 1;
        assert_eq!(rtt.early(second), Some(MIN_RTO * 2));
        rtt.backoff = 2;
        assert_eq!(rtt.early(second), None, "never later than half the timeout");
        rtt.sample(Duration::from_micros(100));
        assert_eq!(rtt.early(second), Some(MIN_RTO), "a clean sample ends the backoff");
        for _ in 0..50 {
            rtt.sample(Duration::from_millis(300));
        }
        let slow = rtt.early(second).unwrap();
        assert!(slow > Duration::from_millis(300) && slow < Duration::from_millis(450), "{slow:?}");
        assert_eq!(rtt.early(Duration::from_millis(600)), None);
    }

    /// The blocking link gives the same transfer as the reactor, and a dropped [`Stop`] ends it
    /// at once even while it waits in `recv` for an ACK that never comes.
    #[tokio::test]
    async fn blocking_transfer_completes_and_stops_when_told() {
        let negotiated = || Negotiated {
            blksize: 512,
            windowsize: 1,
            timeout: Duration::from_secs(5),
            oack: Vec::new(),
            ignored: Vec::new(),
        };
        let data: Arc<[u8]> = (0..2000u32).map(|i| (i % 253) as u8).collect::<Vec<u8>>().into();
        let pair = || async {
            let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            server.connect(client.local_addr().unwrap()).await.unwrap();
            client.connect(server.local_addr().unwrap()).unwrap();
            client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            (server, client)
        };

        let (server, client) = pair().await;
        let t = Transfer::new(server, Source::Memory(Arc::clone(&data)), Mode::Octet, negotiated(), 3);
        let (t, _stop) = t.into_blocking().unwrap();
        let run = std::thread::spawn(move || t.run_blocking());
        let (mut got, mut buf) = (Vec::new(), [0u8; 600]);
        loop {
            let n = client.recv(&mut buf).unwrap();
            let Ok(Packet::Data { block, data }) = Packet::parse(&buf[..n]) else { panic!("not DATA") };
            got.extend_from_slice(&data);
            client.send(&Packet::Ack { block }.encode()).unwrap();
            if data.len() < 512 {
                break;
            }
        }
        assert_eq!(got, &data[..]);
        let outcome = run.join().unwrap().unwrap();
        assert_eq!(outcome, Outcome::Complete { bytes: 2000, final_ack: true });

        let (server, client) = pair().await;
        let t = Transfer::new(server, Source::Memory(data), Mode::Octet, negotiated(), 3);
        let (t, stop) = t.into_blocking().unwrap();
        let run = std::thread::spawn(move || t.run_blocking());
        let n = client.recv(&mut buf).unwrap();
        assert!(matches!(Packet::parse(&buf[..n]), Ok(Packet::Data { block: 1, .. })));
        let started = std::time::Instant::now();
        drop(stop);
        assert!(run.join().unwrap().is_err(), "a stopped transfer ends with an error");
        assert!(started.elapsed() < Duration::from_secs(2), "stopped at once, not after the timeout");
    }

    /// `assume_drained` clears the reactor's readiness without looking; a datagram that was
    /// queued under that readiness raises no new event, so the wait must still find it, at its
    /// deadline, instead of reporting a timeout (the transfer would then resend the block until
    /// the retries are spent, though the client's ERROR or ACK sat in the queue).
    #[tokio::test]
    async fn a_datagram_queued_when_the_readiness_was_cleared_is_read_at_the_deadline() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        server.connect(client.local_addr().unwrap()).await.unwrap();
        client.connect(server.local_addr().unwrap()).await.unwrap();
        client.send(&Packet::Ack { block: 1 }.encode()).await.unwrap();
        server.readable().await.unwrap();
        let mut link = Link::Reactor { socket: server, timer: Box::pin(tokio::time::sleep(Duration::ZERO)) };
        link.assume_drained();
        let mut buf = [0u8; 16];
        let started = Instant::now();
        let wait = Duration::from_millis(200);
        let got = link.recv(&mut buf, started + wait).await.unwrap();
        assert!(matches!(got, Received::Bytes(4)), "the queued ACK is read, not a timeout");
        assert!(started.elapsed() >= wait, "the readiness was cleared: found at the deadline");
        assert_eq!(Packet::parse(&buf[..4]), Ok(Packet::Ack { block: 1 }));
    }

    #[test]
    fn block_numbers_roll_over_to_zero() {
        assert_eq!(wire(65535), 65535);
        assert_eq!(wire(65536), 0);
        assert_eq!(wire(65537), 1);
    }
}
