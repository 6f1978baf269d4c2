//! Checks that a binary (busybox, userland tools) can run on the nodes: 32-bit little-endian
//! i386 and static, since the node root carries no dynamic loader or libc.

use crate::error::ImageError;

const EM_386: u16 = 3;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const PT_INTERP: u32 = 3;

fn machine_name(machine: u16) -> &'static str {
    match machine {
        3 => "i386",
        8 => "MIPS",
        20 => "PowerPC",
        21 => "PowerPC64",
        40 => "ARM",
        62 => "x86-64",
        183 => "AArch64",
        243 => "RISC-V",
        _ => "an unknown machine",
    }
}

/// Like [`check_static_i386_named`] with the generic name "file".
pub fn check_static_i386(bytes: &[u8]) -> Result<(), ImageError> {
    check_static_i386_named("file", bytes)
}

/// Errors read "<name> is a 64-bit ELF (x86-64); the nodes are i386" and the like.
pub fn check_static_i386_named(name: &str, bytes: &[u8]) -> Result<(), ImageError> {
    let fail = |reason: String| ImageError::Elf { name: name.to_string(), reason };
    if bytes.len() < 52 || &bytes[..4] != b"\x7fELF" {
        return Err(fail("is not an ELF executable".to_string()));
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let class = bytes[4];
    let data = bytes[5];
    if data != 1 {
        return Err(fail("is a big-endian ELF; the nodes are i386 (little-endian)".to_string()));
    }
    let machine = u16_at(18);
    if class == 2 {
        return Err(fail(format!("is a 64-bit ELF ({}); the nodes are i386", machine_name(machine))));
    }
    if class != 1 {
        return Err(fail(format!("has an invalid ELF class {class}")));
    }
    if machine != EM_386 {
        return Err(fail(format!(
            "is an ELF for {} (e_machine {machine}); the nodes are i386",
            machine_name(machine)
        )));
    }
    let kind = u16_at(16);
    if kind != ET_EXEC && kind != ET_DYN {
        return Err(fail(format!(
            "is not an executable (ELF type {kind}, e.g. an object file or core dump)"
        )));
    }
    let phoff = u32_at(28) as usize;
    let phentsize = u16_at(42) as usize;
    let phnum = u16_at(44) as usize;
    if phnum == 0 {
        return Err(fail("has no program headers, so it cannot be run".to_string()));
    }
    if phentsize < 32 {
        return Err(fail(format!("has a bad program header size {phentsize}")));
    }
    for i in 0..phnum {
        let off = phoff + i * phentsize;
        let Some(ph) = bytes.get(off..off + 32) else {
            return Err(fail(format!("is truncated: program header {i} at offset {off} is past the end")));
        };
        let p_type = u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]);
        if p_type == PT_INTERP {
            let p_offset = u32::from_le_bytes([ph[4], ph[5], ph[6], ph[7]]) as usize;
            let p_filesz = u32::from_le_bytes([ph[16], ph[17], ph[18], ph[19]]) as usize;
            let interp = bytes
                .get(p_offset..p_offset.saturating_add(p_filesz))
                .map(|s| String::from_utf8_lossy(s).trim_end_matches('\0').to_string())
                .unwrap_or_else(|| "?".to_string());
            return Err(fail(format!(
                "is dynamically linked (PT_INTERP {interp}); the node root has no libc, \
                 use a static build"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF header with `phdrs` program headers of the given types.
    fn elf(class: u8, machine: u16, kind: u16, phdrs: &[u32]) -> Vec<u8> {
        let mut b = vec![0u8; 52 + 32 * phdrs.len() + 32];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = class;
        b[5] = 1;
        b[16..18].copy_from_slice(&kind.to_le_bytes());
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b[28..32].copy_from_slice(&52u32.to_le_bytes());
        b[42..44].copy_from_slice(&32u16.to_le_bytes());
        b[44..46].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        let interp_at = 52 + 32 * phdrs.len();
        b[interp_at..interp_at + 19].copy_from_slice(b"/lib/ld-linux.so.2\0");
        for (i, t) in phdrs.iter().enumerate() {
            let o = 52 + 32 * i;
            b[o..o + 4].copy_from_slice(&t.to_le_bytes());
            b[o + 4..o + 8].copy_from_slice(&(interp_at as u32).to_le_bytes());
            b[o + 16..o + 20].copy_from_slice(&19u32.to_le_bytes());
        }
        b
    }

    #[test]
    fn accepts_static_i386_and_static_pie() {
        check_static_i386(&elf(1, 3, ET_EXEC, &[1, 1])).unwrap();
        check_static_i386(&elf(1, 3, ET_DYN, &[1])).unwrap();
    }

    #[test]
    fn names_the_problem() {
        let e = check_static_i386_named("busybox", &elf(2, 62, ET_EXEC, &[1])).unwrap_err().to_string();
        assert_eq!(e, "busybox is a 64-bit ELF (x86-64); the nodes are i386");
        let e = check_static_i386_named("busybox", &elf(1, 3, ET_EXEC, &[6, 3, 1])).unwrap_err().to_string();
        assert!(e.starts_with("busybox is dynamically linked (PT_INTERP /lib/ld-linux.so.2)"), "{e}");
        let e = check_static_i386(&elf(1, 40, ET_EXEC, &[1])).unwrap_err().to_string();
        assert!(e.contains("ARM (e_machine 40)"), "{e}");
        let e = check_static_i386(b"#!/bin/sh\n").unwrap_err().to_string();
        assert!(e.contains("not an ELF"), "{e}");
        let mut truncated = elf(1, 3, ET_EXEC, &[1, 1]);
        truncated.truncate(60);
        let e = check_static_i386(&truncated).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }
}
