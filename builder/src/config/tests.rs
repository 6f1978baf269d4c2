use super::*;
use crate::testdata::SAMPLE;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[test]
fn parses_the_sample() {
    let cfg = Config::parse(SAMPLE, Path::new("/lab/cluster.toml")).expect("valid");
    assert_eq!(cfg.cluster.server, Ipv4Addr::new(192, 168, 0, 254));
    assert_eq!(cfg.cluster.prefix_len, 24);
    assert_eq!(cfg.cluster.pool, vec![(Ipv4Addr::new(192, 168, 0, 1), Ipv4Addr::new(192, 168, 0, 253))]);
    assert_eq!(cfg.cluster.lease_time, Duration::from_secs(43200));
    assert_eq!(cfg.image.kernel, PathBuf::from("/lab/kernels/bzImage"));
    assert_eq!(cfg.image.out, PathBuf::from("/lab/mosboot-out"));
    assert_eq!(cfg.line_of("cluster.pool"), 6);
    assert!(cfg.openmosix.lstay);
}

#[test]
fn reports_every_problem_with_its_line() {
    let text = r#"
[cluster]
interface = "eth1"
server = "192.168.0.254"
pool = "192.168.0.1-192.168.0.253"
lease_time = "forever"
colour = "blue"
dhcp = "maybe"

[image]
initrd = 5
"#;
    let err = Config::parse(text, Path::new("c.toml")).expect_err("invalid");
    let lines: Vec<(usize, &str)> = err.items.iter().map(|d| (d.line, d.key.as_str())).collect();
    assert!(lines.contains(&(4, "cluster.server")), "{err}");
    assert!(lines.contains(&(6, "cluster.lease_time")), "{err}");
    assert!(lines.contains(&(7, "cluster.colour")), "{err}");
    assert!(lines.contains(&(8, "cluster.dhcp")), "{err}");
    assert!(lines.contains(&(11, "image.initrd")), "{err}");
    assert_eq!(err.len(), 5, "{err}");
}

#[test]
fn syntax_errors_name_the_line() {
    let err = Config::parse("[cluster]\nname = = 3\n", Path::new("c.toml")).expect_err("bad");
    assert_eq!(err.items[0].line, 2, "{err}");
}

#[test]
fn pinned_nodes_are_parsed() {
    let text = format!(
        "{SAMPLE}\n[[node]]\nmac = \"00:0c:29:aa:bb:01\"\nip = \"192.168.0.101\"\nhostname = \"mosix1\"\nyardstick = \"P/133\"\n[[node]]\nmac = \"nope\"\nip = \"192.168.0.102\"\n"
    );
    let err = Config::parse(&text, Path::new("c.toml")).expect_err("bad mac");
    assert_eq!(err.items.len(), 1);
    assert_eq!(err.items[0].key, "node[2].mac");
}

#[test]
fn versions() {
    assert_eq!(parse_version("2.4.26-om1"), Some((2, 4, 26)));
    assert_eq!(parse_version("2.6"), Some((2, 6, 0)));
    assert_eq!(parse_version("two"), None);
    for bad in ["2.4.26-x\ntouch /p\n#", "2.4.26 x", "2.4.26-", "2.4.26-a'b", "+2.4.26", "2.4.26.1", "2..4"] {
        assert_eq!(parse_version(bad), None, "{bad:?}");
    }
    assert_eq!(parse_version("2.4.26-om1.2_x"), Some((2, 4, 26)));
}

#[test]
fn serve_status_is_off_unless_set_and_checked() {
    let cfg = Config::parse(SAMPLE, Path::new("/lab/cluster.toml")).expect("valid");
    assert_eq!(cfg.serve.status, None);
    let text = format!("{SAMPLE}\n[serve]\nstatus = \"127.0.0.1:8067\"\n");
    let cfg = Config::parse(&text, Path::new("/lab/cluster.toml")).expect("valid");
    assert_eq!(cfg.serve.status, Some("127.0.0.1:8067".parse().unwrap()));
    assert_eq!(cfg.serve.multicast, None);
    let text = format!("{SAMPLE}\n[serve]\nmulticast = \"239.255.69.1\"\n");
    let cfg = Config::parse(&text, Path::new("/lab/cluster.toml")).expect("valid");
    assert_eq!(cfg.serve.multicast, Some("239.255.69.1:1758".parse().unwrap()));
    let text = format!("{SAMPLE}\n[serve]\nmulticast = \"239.1.2.3:5000\"\n");
    let cfg = Config::parse(&text, Path::new("/lab/cluster.toml")).expect("valid");
    assert_eq!(cfg.serve.multicast, Some("239.1.2.3:5000".parse().unwrap()));
    for bad in ["224.0.0.1", "192.168.0.1", "239.1.2.3:80", "239.1.2.3:65530", "nope"] {
        let text = format!("{SAMPLE}\n[serve]\nmulticast = \"{bad}\"\n");
        let err = Config::parse(&text, Path::new("c.toml")).expect_err(bad).to_string();
        assert!(err.contains("c.toml:18: serve.multicast"), "{bad}: {err}");
    }
    let text = format!("{SAMPLE}\n[serve]\nstatus = \"localhost\"\nstatuss = 1\n");
    let err = Config::parse(&text, Path::new("c.toml")).expect_err("invalid").to_string();
    assert!(err.contains("serve.status") && err.contains("serve.statuss"), "{err}");
}

#[test]
fn serve_http_and_http_url_are_checked_with_their_line() {
    let cfg = Config::parse(SAMPLE, Path::new("c.toml")).expect("valid");
    assert_eq!((cfg.serve.http, cfg.serve.http_url), (None, None));
    let text =
        format!("{SAMPLE}\n[serve]\nhttp = \"0.0.0.0:8080\"\nhttp_url = \"http://boot.example:81/lab/\"\n");
    let cfg = Config::parse(&text, Path::new("c.toml")).expect("valid");
    assert_eq!(cfg.serve.http, Some("0.0.0.0:8080".parse().unwrap()));
    assert_eq!(cfg.serve.http_url.as_deref(), Some("http://boot.example:81/lab/"));
    for (value, why) in [
        ("http = \"8080\"", "not an IPv4 address:port"),
        ("http = \"127.0.0.1:8080\"", "cannot be reached by the nodes"),
        ("http = \"0.0.0.0:0\"", "needs a port"),
        ("http_url = \"ftp://x/\"", "must start with http://"),
        ("http_url = \"http://x/lab\"", "must end with '/'"),
        ("http_url = \"http://x/${net0/ip}/\"", "which iPXE would not pass through"),
        ("http_url = \"http://x/a b/\"", "which iPXE would not pass through"),
        ("http_url = \"http:///\"", "names no host"),
    ] {
        let text = format!("{SAMPLE}\n[serve]\n{value}\n");
        let err = Config::parse(&text, Path::new("c.toml")).expect_err(value).to_string();
        let line = SAMPLE.lines().count() + 3;
        assert!(err.contains(why) && err.contains(&format!("c.toml:{line}")), "{value}: {err}");
    }
}

#[test]
fn dhcp_new_mac_limits_default_to_256_then_20_and_are_checked_with_their_line() {
    let cfg = Config::parse(SAMPLE, Path::new("c.toml")).expect("valid");
    assert_eq!(cfg.serve.dhcp_new_macs, netboot::dhcp::NewMacLimits { burst: 256, per_sec: 20 });
    let text = format!("{SAMPLE}\n[serve]\ndhcp_new_mac_burst = 4096\ndhcp_new_macs_per_second = 100\n");
    let cfg = Config::parse(&text, Path::new("c.toml")).expect("valid");
    assert_eq!(cfg.serve.dhcp_new_macs, netboot::dhcp::NewMacLimits { burst: 4096, per_sec: 100 });
    let plan = crate::plan::Plan::new(&cfg).expect("plan");
    assert_eq!(plan.new_macs, cfg.serve.dhcp_new_macs, "the plan carries the limit to serve");
    // The rate alone may be raised up to the default burst.
    let text = format!("{SAMPLE}\n[serve]\ndhcp_new_macs_per_second = 200\n");
    let cfg = Config::parse(&text, Path::new("c.toml")).expect("valid");
    assert_eq!(cfg.serve.dhcp_new_macs, netboot::dhcp::NewMacLimits { burst: 256, per_sec: 200 });
    let line = SAMPLE.lines().count() + 3;
    for (value, key, why) in [
        (
            "dhcp_new_mac_burst = 0",
            "serve.dhcp_new_mac_burst",
            "must be from 1 to 1000000 (0 would answer no PC",
        ),
        ("dhcp_new_mac_burst = -5", "serve.dhcp_new_mac_burst", "must be from 1 to 1000000"),
        ("dhcp_new_mac_burst = 1000001", "serve.dhcp_new_mac_burst", "must be from 1 to 1000000"),
        ("dhcp_new_mac_burst = \"4000\"", "serve.dhcp_new_mac_burst", "must be a whole number, not string"),
        (
            "dhcp_new_macs_per_second = 2.5",
            "serve.dhcp_new_macs_per_second",
            "must be a whole number, not float",
        ),
        (
            "dhcp_new_macs_per_second = 300",
            "serve.dhcp_new_macs_per_second",
            "300 is more than dhcp_new_mac_burst (256)",
        ),
    ] {
        let text = format!("{SAMPLE}\n[serve]\n{value}\n");
        let err = Config::parse(&text, Path::new("c.toml")).expect_err(value).to_string();
        assert!(err.contains(&format!("c.toml:{line}: {key}")) && err.contains(why), "{value}: {err}");
    }
}
