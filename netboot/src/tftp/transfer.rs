//! One read transfer: OACK handshake, then DATA windows with retransmission, on the transfer's
//! own socket (connected to the client, so the kernel drops strangers and reports a closed client
//! port as `ConnectionRefused`, which ends the transfer at once instead of after all retries).

use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::options::Negotiated;
use super::packet::{self, Mode, Packet};

/// Where the bytes come from: a file under the root or a small in-memory reply.
#[derive(Clone, Debug)]
pub enum Source {
    File(Arc<std::fs::File>),
    /// Node reports no longer run as transfers (server.rs answers them from port 69); kept for
    /// small in-memory replies and the reader's tests.
    #[cfg_attr(not(test), allow(dead_code))]
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
        }
    }

    /// The next block of up to `blksize` bytes; shorter means it is the last one.
    async fn next_block(&mut self, blksize: usize) -> io::Result<Vec<u8>> {
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
        let block = self.buf[self.pos..end].to_vec();
        self.pos = end;
        Ok(block)
    }

    async fn read_raw(&mut self) -> io::Result<Vec<u8>> {
        match &self.source {
            Source::Memory(data) => {
                let start = usize::try_from(self.offset).unwrap_or(usize::MAX).min(data.len());
                let end = start.saturating_add(self.chunk).min(data.len());
                Ok(data[start..end].to_vec())
            }
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

/// Reads up to `len` bytes at `offset` (fewer only at the end of the file).
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

/// What one wait for the client produced.
enum Heard {
    /// The client sent its read request again (it never got our OACK): see `handshake`.
    Again,
    Ack(u16),
    Error(u16, String),
    Timeout,
    PortClosed,
}

/// A transfer in progress.
pub struct Transfer {
    socket: UdpSocket,
    negotiated: Negotiated,
    retries: u32,
    reader: BlockReader,
    recv_buf: Vec<u8>,
    /// Signalled by the request socket when this client repeats its request.
    again: Arc<tokio::sync::Notify>,
}

impl Transfer {
    /// `socket` must already be connected to the client.
    pub fn new(socket: UdpSocket, source: Source, mode: Mode, negotiated: Negotiated, retries: u32) -> Self {
        let window_bytes = usize::from(negotiated.blksize) * usize::from(negotiated.windowsize);
        let chunk = window_bytes.clamp(16 * 1024, 1024 * 1024);
        Transfer {
            socket,
            negotiated,
            retries,
            reader: BlockReader::new(source, mode, chunk),
            recv_buf: vec![0u8; 2048],
            again: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Where the request socket signals that the client repeated its request.
    pub fn with_again(mut self, again: Arc<tokio::sync::Notify>) -> Self {
        self.again = again;
        self
    }

    /// Runs the transfer to its end. I/O errors other than a closed client port are returned.
    pub async fn run(mut self) -> io::Result<Outcome> {
        if !self.negotiated.oack.is_empty() {
            let oack = Packet::Oack { options: self.negotiated.oack.clone() }.encode();
            if let Some(outcome) = self.handshake(&oack).await? {
                return Ok(outcome);
            }
        }
        self.send_data().await
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
        let budget = (self.negotiated.timeout * (self.retries + 1)).max(LINGER);
        let mut deadline = Instant::now() + budget;
        let again = Arc::clone(&self.again);
        loop {
            let heard = tokio::select! {
                h = self.hear(deadline) => h?,
                () = again.notified() => Heard::Again,
            };
            match heard {
                Heard::Ack(0) => return Ok(None),
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

    async fn send_data(&mut self) -> io::Result<Outcome> {
        let blksize = usize::from(self.negotiated.blksize);
        let windowsize = usize::from(self.negotiated.windowsize);
        // Encoded DATA packets not yet acknowledged; `base` is the sequence number (from 1,
        // never wrapping) of the first. The wire block number is the sequence modulo 2^16, so a
        // file of more than 65535 blocks rolls over to block 0 as most clients expect.
        let mut window: VecDeque<(Vec<u8>, usize)> = VecDeque::with_capacity(windowsize);
        let mut base: u64 = 1;
        let mut read_all = false;
        let mut acked_bytes: u64 = 0;
        let mut tries = 0u32;
        let mut lingered = false;
        // Whether the window was already resent for a repeated ACK of the block before it since
        // the window last moved or the timer last fired (see the use).
        let mut resent_for_repeat = false;
        loop {
            while window.len() < windowsize && !read_all {
                let seq = base + window.len() as u64;
                let data = self.reader.next_block(blksize).await?;
                read_all = data.len() < blksize;
                let mut pkt = Vec::with_capacity(4 + data.len());
                packet::encode_data_into(&mut pkt, wire(seq), &data);
                window.push_back((pkt, data.len()));
            }
            if window.is_empty() {
                return Ok(Outcome::Complete { bytes: acked_bytes, final_ack: true });
            }
            // Every (re)start of the wait sends the whole window: it is either new, or the
            // client's ACK said it is missing from the first unacknowledged block on.
            for (pkt, _) in &window {
                if !self.send(pkt).await? {
                    return Ok(gave_up(acked_bytes, "client port closed"));
                }
            }
            let mut deadline = Instant::now() + self.negotiated.timeout;
            // Wait until the client moves the window (or we give up).
            loop {
                let closed = match self.hear(deadline).await? {
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
                                for _ in 0..k {
                                    if let Some((_, len)) = window.pop_front() {
                                        acked_bytes += len as u64;
                                    }
                                }
                                base += k as u64;
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
                    Heard::Timeout | Heard::Again => false,
                };
                let only_last_left = read_all && window.len() == 1;
                if !closed && !only_last_left && tries >= self.retries && !lingered {
                    // Stay quiet but listening for a while before giving up: atftp answers a
                    // repeated block with one extra ACK only, and re-ACKs again only after its
                    // own timer saw silence. If that extra ACK was lost, our silence is what
                    // lets the transfer go on (and it lasts three of its rounds, see LINGER).
                    lingered = true;
                    deadline = Instant::now() + self.negotiated.timeout.max(LINGER);
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
                for (pkt, _) in &window {
                    if !self.send(pkt).await? {
                        return Ok(gave_up(acked_bytes, "client port closed"));
                    }
                }
                deadline = Instant::now() + self.negotiated.timeout;
            }
        }
    }

    /// Sends one packet; `false` when the client's port is known to be closed.
    async fn send(&self, pkt: &[u8]) -> io::Result<bool> {
        match self.socket.send(pkt).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits for a packet that matters until `deadline`. Malformed packets and packets that are
    /// neither ACK nor ERROR are dropped.
    async fn hear(&mut self, deadline: Instant) -> io::Result<Heard> {
        loop {
            let received = tokio::time::timeout_at(deadline, self.socket.recv(&mut self.recv_buf));
            let n = match received.await {
                Err(_) => return Ok(Heard::Timeout),
                Ok(Ok(n)) => n,
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Ok(Heard::PortClosed);
                }
                Ok(Err(e)) => return Err(e),
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
    fn block_numbers_roll_over_to_zero() {
        assert_eq!(wire(65535), 65535);
        assert_eq!(wire(65536), 0);
        assert_eq!(wire(65537), 1);
    }
}
