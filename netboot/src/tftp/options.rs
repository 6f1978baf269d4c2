//! Option negotiation (RFC 2347 framework; blksize RFC 2348, timeout/tsize RFC 2349, windowsize
//! RFC 7440). The server grants what it can and acknowledges only what it granted, because PXE
//! ROMs abort on an OACK option they did not ask for.

use std::time::Duration;

use super::packet::Mode;

/// Block size when the client asks for nothing (RFC 1350).
pub const DEFAULT_BLKSIZE: u16 = 512;
/// RFC 2348's lower bound.
pub const MIN_BLKSIZE: u16 = 8;
/// RFC 2348's upper bound (65535 minus IP and UDP headers).
pub const MAX_BLKSIZE: u16 = 65464;

/// The server's limits that negotiation works within.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_blksize: u16,
    pub max_windowsize: u16,
    pub default_timeout: Duration,
}

/// What a transfer runs with, and the OACK (empty = send no OACK, start with DATA 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: u16,
    pub windowsize: u16,
    pub timeout: Duration,
    pub oack: Vec<(String, String)>,
    /// Options that were ignored, with the reason, for the log.
    pub ignored: Vec<String>,
}

/// Negotiates the client's options. `size` is the file's size in transfer mode when known (it
/// is not known up front for netascii, so tsize is then not acknowledged).
pub fn negotiate(requested: &[(String, String)], limits: Limits, mode: Mode, size: u64) -> Negotiated {
    let mut n = Negotiated {
        blksize: DEFAULT_BLKSIZE,
        windowsize: 1,
        timeout: limits.default_timeout,
        oack: Vec::new(),
        ignored: Vec::new(),
    };
    let own_timeout_secs = limits.default_timeout.as_secs_f64().ceil().max(1.0) as u64;
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in requested {
        if seen.contains(&name.as_str()) {
            n.ignored.push(format!("{name}: repeated"));
            continue;
        }
        seen.push(name);
        let number = value.trim().parse::<u64>();
        match (name.as_str(), number) {
            ("blksize", Ok(asked)) if asked >= u64::from(MIN_BLKSIZE) => {
                let cap = limits.max_blksize.clamp(MIN_BLKSIZE, MAX_BLKSIZE);
                n.blksize = u16::try_from(asked).unwrap_or(u16::MAX).min(cap);
                n.oack.push((name.clone(), n.blksize.to_string()));
            }
            ("windowsize", Ok(asked)) if asked >= 1 => {
                let cap = limits.max_windowsize.max(1);
                n.windowsize = u16::try_from(asked).unwrap_or(u16::MAX).min(cap);
                n.oack.push((name.clone(), n.windowsize.to_string()));
            }
            // In lock-step TFTP the server's timer is what recovers a lost DATA or ACK, so a
            // longer timeout than ours only stalls the boot on every loss (curl asks for 6 s).
            // RFC 2349 lets us leave it out of the OACK; shorter or equal ones are granted.
            ("timeout", Ok(asked)) if (1..=own_timeout_secs).contains(&asked) => {
                n.timeout = Duration::from_secs(asked);
                n.oack.push((name.clone(), asked.to_string()));
            }
            ("timeout", Ok(asked)) if (1..=255).contains(&asked) => {
                n.ignored.push(format!("timeout: {asked} s is longer than the server's {own_timeout_secs} s"))
            }
            // curl (7.88 at least) rejects "tsize 0" in an OACK as invalid and fails the
            // transfer, so an empty file's size is left unsaid; the DATA says it anyway.
            ("tsize", Ok(_)) if size == 0 => n.ignored.push("tsize: empty file".into()),
            ("tsize", Ok(_)) if mode == Mode::Octet => {
                n.oack.push((name.clone(), size.to_string()));
            }
            ("tsize", Ok(_)) => n.ignored.push("tsize: unknown size in netascii mode".into()),
            ("blksize" | "windowsize" | "timeout" | "tsize", _) => {
                n.ignored.push(format!("{name}: bad value '{value}'"));
            }
            _ => n.ignored.push(format!("{name}: unsupported")),
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits =
        Limits { max_blksize: 1468, max_windowsize: 8, default_timeout: Duration::from_secs(1) };

    fn opts(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn nothing_asked_means_no_oack_and_512() {
        let n = negotiate(&[], LIMITS, Mode::Octet, 10);
        assert_eq!(n.blksize, 512);
        assert_eq!(n.windowsize, 1);
        assert_eq!(n.timeout, Duration::from_secs(1));
        assert!(n.oack.is_empty());
    }

    #[test]
    fn blksize_is_clamped_and_acknowledged() {
        let n = negotiate(&opts(&[("blksize", "65464")]), LIMITS, Mode::Octet, 0);
        assert_eq!(n.blksize, 1468);
        assert_eq!(n.oack, opts(&[("blksize", "1468")]));
        let n = negotiate(&opts(&[("blksize", "1456")]), LIMITS, Mode::Octet, 0);
        assert_eq!(n.blksize, 1456);
        let n = negotiate(&opts(&[("blksize", "99999999999999999999")]), LIMITS, Mode::Octet, 0);
        assert_eq!(n.blksize, 512, "unparseable number is ignored");
        assert!(n.oack.is_empty());
        let n = negotiate(&opts(&[("blksize", "7")]), LIMITS, Mode::Octet, 0);
        assert_eq!(n.blksize, 512, "below RFC minimum is ignored");
        assert!(n.oack.is_empty());
    }

    #[test]
    fn tsize_reports_the_real_size_in_octet_mode_only() {
        let n = negotiate(&opts(&[("tsize", "0"), ("blksize", "1456")]), LIMITS, Mode::Octet, 12345);
        assert_eq!(n.oack, opts(&[("tsize", "12345"), ("blksize", "1456")]));
        let n = negotiate(&opts(&[("tsize", "0")]), LIMITS, Mode::Netascii, 12345);
        assert!(n.oack.is_empty());
        let n = negotiate(&opts(&[("tsize", "0")]), LIMITS, Mode::Octet, 0);
        assert!(n.oack.is_empty(), "curl refuses tsize 0");
    }

    #[test]
    fn timeout_and_windowsize_are_bounded() {
        let patient = Limits { default_timeout: Duration::from_secs(5), ..LIMITS };
        let n = negotiate(&opts(&[("timeout", "3"), ("windowsize", "64")]), patient, Mode::Octet, 0);
        assert_eq!(n.timeout, Duration::from_secs(3));
        assert_eq!(n.windowsize, 8);
        assert_eq!(n.oack, opts(&[("timeout", "3"), ("windowsize", "8")]));
        let n = negotiate(
            &opts(&[("timeout", "0"), ("timeout", "300"), ("windowsize", "0")]),
            LIMITS,
            Mode::Octet,
            0,
        );
        assert_eq!(n.timeout, Duration::from_secs(1));
        assert_eq!(n.windowsize, 1);
        assert!(n.oack.is_empty());
        // curl asks for 6 s; with our 1 s it is not granted and our timer stays.
        let n = negotiate(&opts(&[("timeout", "6")]), LIMITS, Mode::Octet, 0);
        assert_eq!(n.timeout, Duration::from_secs(1));
        assert!(n.oack.is_empty());
        let n = negotiate(&opts(&[("timeout", "1")]), LIMITS, Mode::Octet, 0);
        assert_eq!(n.oack, opts(&[("timeout", "1")]));
    }

    #[test]
    fn unknown_bad_and_repeated_options_are_not_acknowledged() {
        let n = negotiate(
            &opts(&[("multicast", ""), ("blksize", "abc"), ("tsize", "-1"), ("blksize", "1024")]),
            LIMITS,
            Mode::Octet,
            5,
        );
        assert!(n.oack.is_empty());
        assert_eq!(n.blksize, 512);
        assert_eq!(n.ignored.len(), 4);
    }
}
