//! Benchmark helper: forwards Ethernet frames between two tap devices that live in two network
//! namespaces, holding each frame for a fixed time. This kernel has no `sch_netem`, so this is how
//! `make bench` adds one-way delay to a link (DOMAIN.md §7).
//!
//! Usage: mosboot-delayfwd --a NETNS:TAP --b NETNS:TAP --delay-us N
//!
//! The taps must exist already (`ip tuntap add dev TAP mode tap` inside each namespace). Prints
//! `forwarding` once both are attached; runs until killed.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// `TUNSETIFF` from <linux/if_tun.h>: attach this fd to the named tun/tap device.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
/// Large enough for any frame a 1500-MTU tap hands us (plus slack for VLAN tags).
const FRAME_MAX: usize = 2048;

struct Args {
    a: (String, String),
    b: (String, String),
    delay: Duration,
}

fn parse_end(v: &str) -> anyhow::Result<(String, String)> {
    let (ns, tap) = v.split_once(':').with_context(|| format!("'{v}' is not NETNS:TAP"))?;
    if tap.is_empty() || tap.len() > 15 {
        bail!("tap name '{tap}' must be 1 to 15 bytes");
    }
    Ok((ns.to_string(), tap.to_string()))
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = None;
    let mut b = None;
    let mut delay = Duration::from_millis(1);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--a" => a = Some(parse_end(&value)?),
            "--b" => b = Some(parse_end(&value)?),
            "--delay-us" => delay = Duration::from_micros(value.parse().context("--delay-us")?),
            other => bail!("unknown flag {other} (usage: --a NS:TAP --b NS:TAP --delay-us N)"),
        }
    }
    Ok(Args { a: a.context("--a is required")?, b: b.context("--b is required")?, delay })
}

/// Enters namespace `ns` and attaches to tap `name` there. A tap fd stays bound to its device
/// wherever the thread goes afterwards, so both ends can be opened from one process.
fn open_tap(ns: &str, name: &str) -> anyhow::Result<File> {
    let ns_file = File::open(format!("/var/run/netns/{ns}")).with_context(|| format!("open netns {ns}"))?;
    // SAFETY: setns on a valid namespace fd; only this thread changes namespace.
    if unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {ns}: {}", std::io::Error::last_os_error());
    }
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .context("open /dev/net/tun")?;
    // struct ifreq: 16 bytes of name, then the flags short.
    let mut req = [0u8; 40];
    req[..name.len()].copy_from_slice(name.as_bytes());
    req[16..18].copy_from_slice(&(IFF_TAP | IFF_NO_PI).to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `req` is large enough to hold.
    if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, req.as_mut_ptr()) } != 0 {
        bail!("attach tap {name} in {ns}: {}", std::io::Error::last_os_error());
    }
    Ok(tun)
}

fn dup(f: &File) -> anyhow::Result<File> {
    // SAFETY: duplicating an fd we own; the new fd is owned by the returned File.
    let fd = unsafe { libc::dup(f.as_raw_fd()) };
    if fd < 0 {
        bail!("dup: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// One direction: a reader stamps each frame with its release time; a writer sleeps until then.
/// The delay is constant, so a FIFO keeps frames in order.
fn pump(mut from: File, mut to: File, delay: Duration, label: &'static str) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buf = [0u8; FRAME_MAX];
        loop {
            match from.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("delayfwd {label}: read: {e}");
                    return;
                }
            }
        }
    });
    thread::spawn(move || {
        while let Ok((due, frame)) = rx.recv() {
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            // A full tap queue drops the frame, as a real link would.
            let _ = to.write(&frame);
        }
    });
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    // Sleep precision matters at 1 ms: ask for 1 µs timer slack instead of the default 50 µs.
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong) };
    let a = open_tap(&args.a.0, &args.a.1)?;
    let b = open_tap(&args.b.0, &args.b.1)?;
    pump(dup(&a)?, dup(&b)?, args.delay, "a->b");
    pump(b, a, args.delay, "b->a");
    println!("forwarding");
    std::io::stdout().flush()?;
    loop {
        thread::park();
    }
}
