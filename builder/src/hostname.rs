//! Hostname rules: the LTSP `ws001` preset, the `mosix<N>` preset, or a user template.

use std::net::Ipv4Addr;

use netboot::mac::MacAddr;

use crate::config::HostnameRule;

/// Renders a hostname for one node. Errors are messages for the `cluster.hostname` key.
pub fn render(rule: &HostnameRule, ip: Ipv4Addr, node: u32, mac: Option<MacAddr>) -> Result<String, String> {
    let name = match rule {
        HostnameRule::Ltsp => format!("ws{:03}", ip.octets()[3]),
        HostnameRule::Mosix => format!("mosix{node}"),
        HostnameRule::Template(src) => {
            let env = minijinja::Environment::new();
            let octets: Vec<u8> = ip.octets().to_vec();
            let ctx = minijinja::context! {
                ip => ip.to_string(),
                octets => octets,
                node => node,
                mac => mac.map(|m| m.to_string()).unwrap_or_default(),
            };
            env.render_str(src, ctx)
                .map_err(|e| format!("the hostname template fails: {e}"))?
                .trim()
                .to_string()
        }
    };
    validate(&name)?;
    Ok(name)
}

/// RFC 1123 host name: dot-separated labels of letters, digits and hyphens, 1-63 bytes each, not
/// starting or ending with a hyphen; 253 bytes at most. openMosix tools and /etc/hosts need no less.
pub fn validate(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("renders an empty hostname".into());
    }
    if name.len() > 253 {
        let head: String = name.chars().take(20).collect();
        return Err(format!("hostname '{head}…' is longer than 253 characters"));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "'{name}' is not a valid hostname (RFC 1123: letters, digits, '-', labels of 1-63)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_non_ascii_name_is_an_error_not_a_panic() {
        let name = "é".repeat(200);
        let err = validate(&name).unwrap_err();
        assert!(err.contains("longer than 253"), "{err}");
    }

    #[test]
    fn ltsp_preset_pads_the_last_octet() {
        let r = HostnameRule::Ltsp;
        assert_eq!(render(&r, Ipv4Addr::new(192, 168, 0, 1), 2, None).as_deref(), Ok("ws001"));
        assert_eq!(render(&r, Ipv4Addr::new(192, 168, 0, 12), 13, None).as_deref(), Ok("ws012"));
        assert_eq!(render(&r, Ipv4Addr::new(192, 168, 0, 254), 1, None).as_deref(), Ok("ws254"));
    }

    #[test]
    fn mosix_preset_uses_the_node_number() {
        assert_eq!(
            render(&HostnameRule::Mosix, Ipv4Addr::new(10, 0, 0, 9), 7, None).as_deref(),
            Ok("mosix7")
        );
    }

    #[test]
    fn templates_see_ip_octets_node_mac() {
        let r = HostnameRule::Template("n{{ node }}-{{ octets[2] }}-{{ octets[3] }}".into());
        assert_eq!(render(&r, Ipv4Addr::new(10, 1, 2, 3), 4, None).as_deref(), Ok("n4-2-3"));
        let bad = HostnameRule::Template("{{ ip }}_x".into());
        assert!(render(&bad, Ipv4Addr::new(10, 1, 2, 3), 4, None).is_err());
        let broken = HostnameRule::Template("{{ ".into());
        assert!(render(&broken, Ipv4Addr::new(10, 1, 2, 3), 4, None).is_err());
    }

    #[test]
    fn rfc1123() {
        assert!(validate("ws001").is_ok());
        assert!(validate("a.b-c").is_ok());
        for bad in ["", "-a", "a-", "a_b", "a..b", "é"] {
            assert!(validate(bad).is_err(), "{bad}");
        }
        assert!(validate(&"a".repeat(64)).is_err());
    }
}
