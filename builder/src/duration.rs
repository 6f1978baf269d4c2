//! The one duration syntax of the whole tool (`lease_time`, `serve --probe`): a whole number and
//! a unit, so a config and a command line read the same way.

use std::time::Duration;

/// `500ms`, `45s`, `30m`, `12h`, `1d`, or a plain number of seconds. `None` for anything else,
/// including a number too large to hold.
pub fn parse(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let secs = |mult: u64| n.checked_mul(mult).map(Duration::from_secs);
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_unit() {
        for (text, want) in [
            ("500ms", Duration::from_millis(500)),
            ("0ms", Duration::ZERO),
            ("3s", Duration::from_secs(3)),
            ("90", Duration::from_secs(90)),
            ("30m", Duration::from_secs(1800)),
            ("12h", Duration::from_secs(43_200)),
            ("1d", Duration::from_secs(86_400)),
            (" 2h ", Duration::from_secs(7200)),
        ] {
            assert_eq!(parse(text), Some(want), "{text}");
        }
    }

    #[test]
    fn rejects_what_it_does_not_document() {
        for text in ["", "ms", "1w", "1.5h", "-3s", "3 s", "3S", "1e3", "18446744073709551615d"] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }
}
