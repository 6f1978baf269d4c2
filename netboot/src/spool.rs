//! Output written by a dedicated thread through a bounded queue (log lines, the stage log).
//!
//! A `write` to a file can wait for the disk: on a busy ext4 an append blocks behind the journal
//! commit that another process's (or our own lease log's) `fsync` forces, for hundreds of ms. The
//! threads that answer DHCP must never wait like that, so they only queue bytes here and carry
//! on; one thread per spool does the writing, several queued chunks at a time. When the queue is
//! full the chunk is dropped and counted, never waited for: the sink is told how many were lost
//! once it can write again, so the loss is visible (a summary line) instead of a stall.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

/// Where a spool's thread puts the bytes.
pub trait Sink: Send + 'static {
    /// Writes one batch of queued chunks (whole lines, concatenated).
    fn write(&mut self, data: &[u8]);
    /// `n` chunks were dropped because the queue was full (called before the next batch).
    fn dropped(&mut self, n: u64);
}

enum Msg {
    Data(Vec<u8>),
    /// Answered once everything queued before it is written.
    Flush(SyncSender<()>),
}

/// The queueing end of a spool; cheap to clone, never blocks.
#[derive(Clone)]
pub struct Spool {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

/// Upper bound of bytes gathered into one write.
const MAX_BATCH_BYTES: usize = 256 << 10;
/// After writing a batch the thread lets the next one gather this long: under load it then
/// wakes a few hundred times a second instead of once per line (each wake-up is a context
/// switch on the core that also answers DHCP).
const GATHER: Duration = Duration::from_millis(4);

impl Spool {
    /// Starts the writer thread `name` for `sink`, with room for `queue` chunks.
    pub fn start(name: &str, queue: usize, sink: impl Sink) -> io::Result<Spool> {
        let (tx, rx) = sync_channel(queue);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        std::thread::Builder::new().name(name.into()).spawn(move || writer(rx, counter, sink))?;
        Ok(Spool { tx, dropped })
    }

    /// Queues `data` (whole lines); false if it was dropped (queue full or writer gone).
    pub fn write(&self, data: Vec<u8>) -> bool {
        match self.tx.try_send(Msg::Data(data)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Waits (at most `limit`) until everything queued so far is written: for the end of the
    /// program, not for the hot path.
    pub fn flush(&self, limit: Duration) {
        let (done, wait) = sync_channel(1);
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(limit);
        }
    }

    /// Chunks dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn writer(rx: Receiver<Msg>, dropped: Arc<AtomicU64>, mut sink: impl Sink) {
    let mut buf = Vec::new();
    let mut reported = 0u64;
    let mut flushes = Vec::new();
    loop {
        // Wake at least once a second, so drops are reported even when nothing else comes.
        let first = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut next = first;
        while let Some(m) = next {
            match m {
                Msg::Data(d) => buf.extend_from_slice(&d),
                Msg::Flush(done) => flushes.push(done),
            }
            next = if buf.len() < MAX_BATCH_BYTES { rx.try_recv().ok() } else { None };
        }
        let total = dropped.load(Ordering::Relaxed);
        if total > reported {
            sink.dropped(total - reported);
            reported = total;
        }
        let wrote = !buf.is_empty();
        if wrote {
            sink.write(&buf);
            buf.clear();
        }
        for f in flushes.drain(..) {
            let _ = f.send(());
        }
        if wrote {
            std::thread::sleep(GATHER);
        }
    }
}

/// A [`Sink`] writing to stderr: `serve`'s log output (a file or the journal's pipe).
#[derive(Debug, Default)]
pub struct Stderr;

impl Sink for Stderr {
    fn write(&mut self, data: &[u8]) {
        // Nowhere to report a failing stderr.
        let _ = io::Write::write_all(&mut io::stderr().lock(), data);
    }

    fn dropped(&mut self, n: u64) {
        let line = format!("mosboot: {n} log lines dropped (the log output could not keep up)\n");
        self.write(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records what it is given; blocks while `gate` is held (a stalled disk).
    #[derive(Clone, Default)]
    struct Probe {
        out: Arc<Mutex<Vec<u8>>>,
        lost: Arc<AtomicU64>,
        gate: Arc<Mutex<()>>,
        /// Batches the writer thread has started to write.
        entered: Arc<AtomicU64>,
    }

    impl Sink for Probe {
        fn write(&mut self, data: &[u8]) {
            self.entered.fetch_add(1, Ordering::SeqCst);
            let _held = self.gate.lock().unwrap();
            self.out.lock().unwrap().extend_from_slice(data);
        }
        fn dropped(&mut self, n: u64) {
            self.lost.fetch_add(n, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_stalled_sink_never_blocks_the_writer_and_drops_are_counted() {
        let probe = Probe::default();
        let spool = Spool::start("spool-test", 4, probe.clone()).unwrap();
        let stall = probe.gate.lock().unwrap();
        assert!(spool.write(b"first\n".to_vec()));
        while probe.entered.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // The writer thread is stuck in the sink: 4 chunks fit in the queue, the rest are dropped.
        let t = std::time::Instant::now();
        let queued = (0..100).filter(|i| spool.write(format!("line {i}\n").into_bytes())).count() as u64;
        assert!(t.elapsed() < Duration::from_millis(500), "write waited for the sink");
        assert_eq!(queued, 4);
        assert_eq!(spool.dropped(), 96);
        drop(stall);
        // Once the disk is back (the queue drained), lines are taken again.
        spool.flush(Duration::from_secs(5));
        assert!(spool.write(b"after\n".to_vec()));
        spool.flush(Duration::from_secs(5));
        let out = String::from_utf8(probe.out.lock().unwrap().clone()).unwrap();
        assert_eq!(out, "first\nline 0\nline 1\nline 2\nline 3\nafter\n");
        assert_eq!(probe.lost.load(Ordering::Relaxed), 96);
    }
}
