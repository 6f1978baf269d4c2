//! The systemd readiness protocol (`sd_notify(3)`): one datagram to `$NOTIFY_SOCKET`. A unit
//! with `Type=notify` counts as started only when `READY=1` arrives, so `systemctl start`
//! returns once every socket is bound, not when the process has merely been forked.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sent once every socket is bound and privileges are dropped.
pub const READY: &str = "READY=1";
/// Sent when shutdown begins.
pub const STOPPING: &str = "STOPPING=1";

/// Sent when a reload begins (READY=1 follows when it is done). systemd 253+ wants the
/// CLOCK_MONOTONIC time with it (`Type=notify-reload`); older ones ignore the extra field.
pub fn reloading() -> String {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let usec = if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } == 0 {
        ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
    } else {
        0
    };
    format!("RELOADING=1\nMONOTONIC_USEC={usec}")
}

/// Tells the service manager `state` (e.g. [`READY`]); a no-op outside systemd. Failures are
/// logged, never fatal: serving matters more than the manager's bookkeeping.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    if let Err(e) = send_to(&path.to_string_lossy(), state) {
        tracing::warn!(error = %e, socket = %path.to_string_lossy(), "cannot notify systemd");
    }
}

/// Sends `state` to the notify socket `path` ("@name" is the abstract namespace).
pub fn send_to(path: &str, state: &str) -> std::io::Result<()> {
    let addr = match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        }
        None => SocketAddr::from_pathname(path)?,
    };
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_one_datagram_to_a_path_and_an_abstract_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        send_to(&path.to_string_lossy(), READY).expect("send");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("mosboot-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let listener = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        send_to(&format!("@{name}"), STOPPING).expect("send abstract");
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
