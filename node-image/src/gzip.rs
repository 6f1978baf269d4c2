//! gzip with every header field fixed (mtime 0, no file name, OS "Unix"), so that two builds
//! of the same initrd give byte-identical files and identical sha256 sums in the manifest.

use std::io::Write;

use flate2::{Compression, GzBuilder};

/// The gzip header's OS byte for Unix (RFC 1952).
const OS_UNIX: u8 = 3;

/// Compresses `data` at `level` (0-9, clamped) into a reproducible gzip member.
pub fn gzip_deterministic(data: &[u8], level: u32) -> Vec<u8> {
    let mut encoder =
        GzBuilder::new().mtime(0).operating_system(OS_UNIX).write(Vec::new(), Compression::new(level.min(9)));
    // Writing into a Vec cannot fail; flate2 only reports errors of the sink.
    encoder.write_all(data).expect("gzip into a Vec cannot fail");
    encoder.finish().expect("gzip into a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn reproducible_and_round_trips() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let a = gzip_deterministic(&data, 9);
        let b = gzip_deterministic(&data, 9);
        assert_eq!(a, b);
        assert_eq!(&a[..4], &[0x1f, 0x8b, 8, 0], "no FNAME flag");
        assert_eq!(&a[4..8], &[0, 0, 0, 0], "mtime 0");
        assert_eq!(a[9], OS_UNIX);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&a[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
    }
}
