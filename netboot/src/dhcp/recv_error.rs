//! What a receive error on a DHCP socket means for the server.
//!
//! A lab LAN produces errors that say nothing about the server's health: a full socket or
//! kernel buffer (ENOBUFS, ENOMEM), a signal (EINTR), an ICMP error a client's stack sent back
//! that the kernel surfaces on the next `recv` (ECONNREFUSED, EHOSTUNREACH, ...), the interface
//! bouncing while a cable is replugged (ENETDOWN). None of them may take the lab down, so they are
//! logged (rate-limited: a storm of them must not fill the disk) and the loop carries on. Only an
//! error that says the socket itself is unusable (EBADF, ENOTSOCK, EFAULT, EINVAL, ...) ends
//! `serve`: retrying it would spin for ever on the same answer.

use std::io;
use std::time::{Duration, Instant};

/// Whether the receive loop can go on after `e`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecvError {
    /// Log (rate-limited) and receive again.
    Transient,
    /// The socket cannot be used any more: stop serving with this error.
    Fatal,
}

/// Sorts a receive error into transient or fatal. Unknown errors count as transient: a server
/// that keeps answering beats one that stops on a surprise, and [`RecvErrorLog`] keeps a
/// persistent one from spinning or flooding the log.
pub(crate) fn classify(e: &io::Error) -> RecvError {
    match e.raw_os_error() {
        Some(libc::EBADF | libc::ENOTSOCK | libc::EFAULT | libc::EINVAL | libc::EOPNOTSUPP) => {
            RecvError::Fatal
        }
        Some(_) => RecvError::Transient,
        // Errors made in Rust rather than by the kernel: only the ones a retry can fix.
        None => match e.kind() {
            io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::OutOfMemory => RecvError::Transient,
            _ => RecvError::Fatal,
        },
    }
}

/// Rate-limited logging of transient receive errors, and a short pause once they repeat so a
/// persistent one cannot turn the loop into a busy spin.
#[derive(Debug)]
pub(crate) struct RecvErrorLog {
    /// When the last line was logged; `None` before the first error.
    last_logged: Option<Instant>,
    /// Errors since that line that were not logged.
    suppressed: u64,
    /// Errors in a row without a datagram in between.
    in_a_row: u32,
}

/// At most one log line per this interval (the first error of a burst is always logged).
const LOG_EVERY: Duration = Duration::from_secs(10);
/// After this many errors in a row, each further one waits [`PAUSE`] before the next `recv`.
const PAUSE_AFTER: u32 = 16;
const PAUSE: Duration = Duration::from_millis(50);

impl RecvErrorLog {
    pub(crate) fn new() -> Self {
        RecvErrorLog { last_logged: None, suppressed: 0, in_a_row: 0 }
    }

    /// A datagram arrived: the next error starts a new run.
    pub(crate) fn received(&mut self) {
        self.in_a_row = 0;
    }

    /// Records a transient error at `now`. Returns the text to log, if one is due (the error plus
    /// how many were not logged since the last line), and how long to wait before receiving again.
    pub(crate) fn transient(&mut self, e: &io::Error, now: Instant) -> (Option<String>, Duration) {
        self.in_a_row = self.in_a_row.saturating_add(1);
        let due = self.last_logged.is_none_or(|t| now.duration_since(t) >= LOG_EVERY);
        let line = if due {
            let line = if self.suppressed > 0 {
                format!("{e} ({} more since the last report)", self.suppressed)
            } else {
                e.to_string()
            };
            self.last_logged = Some(now);
            self.suppressed = 0;
            Some(line)
        } else {
            self.suppressed += 1;
            None
        };
        let pause = if self.in_a_row > PAUSE_AFTER { PAUSE } else { Duration::ZERO };
        (line, pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lan_errors_are_transient_and_a_dead_socket_is_fatal() {
        for errno in [
            libc::ENOBUFS,
            libc::ENOMEM,
            libc::EINTR,
            libc::EAGAIN,
            libc::ECONNREFUSED,
            libc::EHOSTUNREACH,
            libc::ENETUNREACH,
            libc::ENETDOWN,
            libc::EHOSTDOWN,
            libc::EPROTO,
            libc::ETIMEDOUT,
            libc::EMSGSIZE,
        ] {
            let e = io::Error::from_raw_os_error(errno);
            assert_eq!(classify(&e), RecvError::Transient, "{e}");
        }
        for errno in [libc::EBADF, libc::ENOTSOCK, libc::EFAULT, libc::EINVAL, libc::EOPNOTSUPP] {
            let e = io::Error::from_raw_os_error(errno);
            assert_eq!(classify(&e), RecvError::Fatal, "{e}");
        }
        assert_eq!(classify(&io::Error::from(io::ErrorKind::Interrupted)), RecvError::Transient);
        assert_eq!(classify(&io::Error::other("socket gone")), RecvError::Fatal);
    }

    #[test]
    fn a_storm_of_errors_logs_one_line_per_interval_and_pauses() {
        let mut log = RecvErrorLog::new();
        let e = io::Error::from_raw_os_error(libc::ENOBUFS);
        let t0 = Instant::now();
        let (first, pause) = log.transient(&e, t0);
        assert!(first.is_some_and(|l| l.contains("No buffer space")));
        assert_eq!(pause, Duration::ZERO);
        let mut lines = 0;
        let mut last_pause = Duration::ZERO;
        for i in 1..1000u32 {
            let (line, pause) = log.transient(&e, t0 + Duration::from_millis(u64::from(i)));
            lines += usize::from(line.is_some());
            last_pause = pause;
        }
        assert_eq!(lines, 0, "one line per {LOG_EVERY:?}, not one per error");
        assert_eq!(last_pause, PAUSE, "a persistent error does not spin");
        let (line, _) = log.transient(&e, t0 + LOG_EVERY + Duration::from_secs(1));
        assert!(line.is_some_and(|l| l.contains("999 more")), "the summary counts what it skipped");
        // A datagram in between: no pause for the next error.
        log.received();
        assert_eq!(log.transient(&e, t0 + LOG_EVERY * 3).1, Duration::ZERO);
    }
}
