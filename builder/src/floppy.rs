//! `mosboot floppy`: a 1.44 MB boot floppy for PCs whose NIC has no PXE ROM. SYSLINUX on FAT12
//! loads iPXE (`ipxe.lkrn`), which does DHCP and then follows the same path as a PXE ROM that
//! already runs iPXE: the server hands it `boot.ipxe`, which loads our kernel and initrd.
//!
//! Only a post-2021 iPXE is accepted: older builds (Debian 12's, from 2019) execute FXSAVE and
//! hang on CPUs without FXSR, which is every 486 and Pentium this tool is for.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::Failure;

/// Where an ipxe.lkrn may be found when `--ipxe` is not given, best first.
const LKRN_SEARCH: &[&str] = &["/usr/lib/ipxe/ipxe.lkrn", "/usr/share/ipxe/ipxe.lkrn"];

/// The first iPXE build date known not to hang on FXSR-less CPUs (a conservative bound).
const MIN_IPXE_DATE: u32 = 20_210_101;

/// Reads the Debian-style version (`1.21.1+git20250501...`) out of an iPXE binary and returns
/// the git date as YYYYMMDD.
pub fn ipxe_build_date(bin: &[u8]) -> Option<u32> {
    let pat = b"+git";
    let mut from = 0;
    while let Some(pos) = bin[from..].windows(pat.len()).position(|w| w == pat) {
        let at = from + pos + pat.len();
        let rest = &bin[at..bin.len().min(at + 10)];
        let digits: Vec<u8> = rest.iter().copied().skip_while(|&b| b == b'-').take(8).collect();
        if digits.len() == 8
            && digits.iter().all(u8::is_ascii_digit)
            && let Some(d) = std::str::from_utf8(&digits).ok().and_then(|s| s.parse().ok())
        {
            return Some(d);
        }
        from = at;
    }
    None
}

fn tool(cmd: &mut Command, what: &str) -> Result<(), Failure> {
    let out = cmd.output().map_err(|e| {
        Failure::runtime(what, format!("{e} (install Debian's dosfstools, mtools and syslinux)"))
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Failure::runtime(what, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Finds and checks the iPXE image to put on the floppy.
pub fn find_lkrn(given: Option<&Path>) -> Result<(PathBuf, Vec<u8>), Failure> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os("MOSBOOT_IPXE_LKRN")
            .map(PathBuf::from)
            .or_else(|| LKRN_SEARCH.iter().map(PathBuf::from).find(|p| p.is_file()))
            .ok_or_else(|| Failure::Usage("no ipxe.lkrn found: pass --ipxe FILE (a post-2021 iPXE, e.g. Debian 13's ipxe package; `make kit-paths` shows the kit's)".into()))?,
    };
    let bin = std::fs::read(&path).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
    match ipxe_build_date(&bin) {
        Some(d) if d >= MIN_IPXE_DATE => Ok((path, bin)),
        Some(d) => Err(Failure::Usage(format!(
            "{} is an iPXE from {d}; builds before 2021 hang on 486 and Pentium CPUs (no FXSR). Use a newer one (Debian 13's ipxe package)",
            path.display()
        ))),
        None => Err(Failure::Usage(format!(
            "{} does not look like an iPXE image (no version string found)",
            path.display()
        ))),
    }
}

/// Writes the floppy image to `out` (through a temporary file, renamed when complete).
pub fn run(out: &Path, ipxe: Option<&Path>) -> Result<String, Failure> {
    let (lkrn_path, _) = find_lkrn(ipxe)?;
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".mosboot-floppy-")
        .tempdir_in(dir)
        .map_err(|e| Failure::runtime(format!("create a temporary folder in {}", dir.display()), e))?;
    let img = tmp.path().join("floppy.img");
    // --invariant and a fixed volume id: the same inputs give the same image.
    tool(
        Command::new("mkfs.fat")
            .args(["-C", "--invariant", "-i", "4d4f5342", "-n", "MOSBOOT", "-F", "12"])
            .arg(&img)
            .arg("1440"),
        "make the FAT12 filesystem (mkfs.fat)",
    )?;
    tool(Command::new("syslinux").arg("--install").arg(&img), "install SYSLINUX (syslinux --install)")?;
    let cfg = tmp.path().join("syslinux.cfg");
    std::fs::write(&cfg, "DEFAULT ipxe\nPROMPT 0\nTIMEOUT 0\nLABEL ipxe\n  KERNEL ipxe.lkr\n")
        .map_err(|e| Failure::runtime("write syslinux.cfg", e))?;
    // 8.3 names keep old BIOSes and SYSLINUX's FAT driver happy.
    let lkrn_copy = tmp.path().join("ipxe.lkr");
    std::fs::copy(&lkrn_path, &lkrn_copy)
        .map_err(|e| Failure::runtime(format!("copy {}", lkrn_path.display()), e))?;
    for f in [&cfg, &lkrn_copy] {
        tool(
            Command::new("mcopy")
                .env("MTOOLS_SKIP_CHECK", "1")
                .arg("-o")
                .arg("-m")
                .arg("-i")
                .arg(&img)
                .arg(f)
                .arg("::"),
            "copy files onto the floppy (mcopy)",
        )?;
    }
    let size = std::fs::metadata(&img).map_err(|e| Failure::runtime("stat the floppy image", e))?.len();
    if size != 1_474_560 {
        return Err(Failure::runtime("make the floppy image", format!("it is {size} bytes, not 1474560")));
    }
    std::fs::rename(&img, out)
        .map_err(|e| Failure::runtime(format!("move the image to {}", out.display()), e))?;
    Ok(format!(
        "wrote {} (1.44 MB FAT12: SYSLINUX + {}); boot a PC from it and it network-boots like a PXE ROM",
        out.display(),
        lkrn_path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_debian_ipxe_versions() {
        assert_eq!(ipxe_build_date(b"xx1.21.1+git20250501.dad20602+dfsg-1\0"), Some(20250501));
        assert_eq!(ipxe_build_date(b"v 1.0.0+git-20190125.36a4c85-5.1\0"), Some(20190125));
        assert_eq!(ipxe_build_date(b"no version"), None);
        assert_eq!(ipxe_build_date(b"+git"), None);
    }
}
