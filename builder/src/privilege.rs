//! Giving up privileges once `serve` has bound its sockets and opened its files.
//!
//! Started as root: drop the capability bounding set, switch to the unprivileged user, then
//! clear every capability set. Started as a plain user with capabilities (systemd's
//! `AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW`): clear them all. Either way
//! `PR_SET_NO_NEW_PRIVS` is set, so no later exec can gain anything back, and the result is
//! checked: serve refuses to run with a capability left.

use nix::unistd::{Uid, User, setgid, setgroups, setuid};

use crate::error::Failure;

/// `struct __user_cap_header_struct` and `__user_cap_data_struct` of capget/capset(2).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

fn capget() -> std::io::Result<[CapData; 2]> {
    let mut header = CapHeader { version: CAP_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget with a v3 header and room for its two data structs.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header as *mut CapHeader, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(data)
}

fn clear_capability_sets() -> std::io::Result<()> {
    let mut header = CapHeader { version: CAP_VERSION_3, pid: 0 };
    let data = [CapData::default(); 2];
    // SAFETY: capset with a v3 header and two zeroed data structs (dropping is always allowed).
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn prctl(op: libc::c_int, arg: libc::c_ulong) -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(op, arg, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Empties the bounding set; needs CAP_SETPCAP (root has it, a capability-only start does not,
/// and there NO_NEW_PRIVS with empty permitted/effective sets already rules out regaining).
fn drop_bounding_set() -> bool {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<libc::c_ulong>().ok())
        .unwrap_or(40);
    (0..=last).all(|cap| prctl(libc::PR_CAPBSET_DROP, cap).is_ok())
}

/// Switches to `user` when root (its primary group only) and ends with no capability at all.
pub fn drop_privileges(user: &str) -> Result<(), Failure> {
    let root = Uid::effective().is_root();
    let _ = prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong);
    let bounding_empty = drop_bounding_set();
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map_err(|e| Failure::runtime("set no_new_privs", e))?;
    if root && user != "root" {
        let u = User::from_name(user)
            .map_err(|e| Failure::runtime(format!("look up user '{user}'"), e))?
            .ok_or_else(|| Failure::Usage(format!("user '{user}' does not exist (pass --user NAME)")))?;
        setgroups(&[u.gid]).map_err(|e| Failure::runtime("drop supplementary groups", e))?;
        setgid(u.gid).map_err(|e| Failure::runtime(format!("switch to group of '{user}'"), e))?;
        setuid(u.uid).map_err(|e| Failure::runtime(format!("switch to user '{user}'"), e))?;
        if setuid(Uid::from_raw(0)).is_ok() {
            return Err(Failure::runtime("drop root", "could regain uid 0"));
        }
        tracing::info!(user, uid = u.uid.as_raw(), "dropped root privileges");
    }
    clear_capability_sets().map_err(|e| Failure::runtime("drop capabilities", e))?;
    let left = capget().map_err(|e| Failure::runtime("check capabilities", e))?;
    if left.iter().any(|d| d.effective | d.permitted | d.inheritable != 0) {
        return Err(Failure::runtime("drop capabilities", "some are still held"));
    }
    tracing::info!(bounding_set_emptied = bounding_empty, "dropped every capability");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use netboot::dhcp::{DHCP_RCVBUF, RcvBuf, grow_rcvbuf};

    const CAP_NET_ADMIN: u32 = 12;

    fn udp() -> std::net::UdpSocket {
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap()
    }

    /// The DHCP socket's receive buffer is forced while serve still has CAP_NET_ADMIN (it binds
    /// before the drop) and falls back to the `rmem_max`-capped size without it.
    #[test]
    fn dhcp_rcvbuf_is_forced_with_cap_net_admin_and_capped_without() {
        if capget().unwrap()[0].effective & (1 << CAP_NET_ADMIN) != 0 {
            let got = grow_rcvbuf(&udp(), DHCP_RCVBUF).unwrap();
            assert!(matches!(got, RcvBuf::Forced { .. }), "{got:?}");
            assert!(got.bytes() >= DHCP_RCVBUF, "{got:?}");
        }
        // Capabilities are per thread: this one gives up all of its own, as serve does.
        let got = std::thread::spawn(|| {
            clear_capability_sets().unwrap();
            assert_eq!(capget().unwrap()[0].effective, 0);
            grow_rcvbuf(&udp(), DHCP_RCVBUF).unwrap()
        })
        .join()
        .unwrap();
        let rmem_max: usize =
            std::fs::read_to_string("/proc/sys/net/core/rmem_max").unwrap().trim().parse().unwrap();
        assert!(matches!(got, RcvBuf::Capped { .. }), "{got:?}");
        assert!(got.bytes() <= 2 * rmem_max, "{got:?} (rmem_max {rmem_max})");
    }
}
