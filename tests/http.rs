//! HTTP for iPXE nodes (issue 14 §2): `mosboot serve` with `[serve] http` and, for sites that
//! outgrow one boot server, Debian's nginx serving a copy of `out/tftpboot/` (the README recipe),
//! both in namespaces this test creates and both fetched with curl from a client namespace:
//! byte-identical files, a `Content-Length` on every answer, never a `Content-Encoding` (even
//! when asked for gzip), HEAD; mosboot refuses traversal and a symlink out of its root, and a
//! fetch shows up as the same boot stage as a TFTP fetch. The built boot.ipxe names the sources
//! in order: the site's web server, mosboot's HTTP, then TFTP.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::{ChildGuard, Lab, Netns, fake_busybox, fake_bzimage, wait_until};

const SERVER: &str = "192.168.0.254";
const WEB: &str = "192.168.0.250";
const CLIENT: &str = "192.168.0.10";
/// What the test's nginx serves `out/tftpboot/` as.
const WEB_URL: &str = "http://192.168.0.250/lab/";

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The README's nginx recipe, with the test's folders for everything nginx writes.
fn nginx_conf(dir: &Path, tftpboot: &Path) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log info;\n\
         user nobody nogroup;\nevents {{ worker_connections 64; }}\nhttp {{\n\
         access_log {d}/nginx-access.log;\nclient_body_temp_path {d}/ngx/body;\nproxy_temp_path {d}/ngx/proxy;\n\
         fastcgi_temp_path {d}/ngx/fastcgi;\nuwsgi_temp_path {d}/ngx/uwsgi;\nscgi_temp_path {d}/ngx/scgi;\n\
         {recipe}}}\n",
        recipe = recipe(tftpboot)
    )
}

/// The part of the config README shows: one location, files as they are.
fn recipe(tftpboot: &Path) -> String {
    format!(
        "server {{\n  listen {WEB}:80;\n  location /lab/ {{\n    alias {}/;\n    types {{ }}\n    \
         default_type application/octet-stream;\n    gzip off;\n    autoindex off;\n    \
         disable_symlinks on;\n  }}\n}}\n",
        tftpboot.display()
    )
}

/// curl from the client namespace: (status, lowercased headers, body file).
fn curl(lab: &Lab, args: &[&str], url: &str, tag: &str) -> (u32, String, PathBuf) {
    let (head, body) =
        (lab.dir.path().join(format!("{tag}.head")), lab.dir.path().join(format!("{tag}.body")));
    let o = lab
        .cli
        .command("curl")
        .args(["-sS", "--path-as-is", "--max-time", "10", "-D"])
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .arg("-w")
        .arg("%{http_code}")
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let code = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap_or(0);
    (code, read(&head).to_ascii_lowercase(), body)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| l.strip_prefix(&format!("{name}:")).map(str::trim))
}

#[test]
fn mosboot_and_nginx_serve_the_tree_to_curl() {
    harness::require_root("network namespaces");
    let mut lab = Lab::new("ht", &format!("{SERVER}/24"));
    let p = lab.dir.path().to_path_buf();
    for d in ["kernels", "node-kit"] {
        std::fs::create_dir_all(p.join(d)).unwrap();
    }
    // A kernel big enough to take many body chunks.
    let mut kernel = fake_bzimage("6.1.0");
    kernel.extend(harness::random_bytes(3 << 20, 14));
    std::fs::write(p.join("kernels/bzImage"), kernel).unwrap();
    std::fs::write(p.join("node-kit/busybox"), fake_busybox()).unwrap();
    let cfg = p.join("cluster.toml");
    let serve_section = format!("\n[serve]\nhttp = \"0.0.0.0:8080\"\nhttp_url = \"{WEB_URL}\"\n");
    std::fs::write(&cfg, harness::sample_cluster(&[("cluster.interface", "\"br0\"")], &serve_section))
        .unwrap();
    let o = Command::new(harness::mosboot_bin()).arg("-c").arg(&cfg).arg("build").output().unwrap();
    assert!(o.status.success(), "mosboot build: {}", String::from_utf8_lossy(&o.stderr));
    let tftpboot = p.join("mosboot-out/tftpboot");

    // boot.ipxe tries the site's web server, then mosboot's HTTP, then TFTP, in that order.
    let script = read(&tftpboot.join("boot.ipxe"));
    let at = |s: &str| script.find(s).unwrap_or_else(|| panic!("boot.ipxe lacks {s:?}:\n{script}"));
    assert!(
        at(&format!("kernel {WEB_URL}vmlinuz")) < at("kernel http://192.168.0.254:8080/vmlinuz")
            && at("kernel http://192.168.0.254:8080/vmlinuz") < at("kernel vmlinuz "),
        "{script}"
    );

    // What must never be sent: a file beside the tree, and a link to it planted inside.
    std::fs::write(p.join("secret"), b"not for the LAN\n").unwrap();
    std::os::unix::fs::symlink(p.join("secret"), tftpboot.join("escape")).unwrap();

    let log = p.join("serve.log");
    let mut cmd = lab.srv.command(harness::mosboot_bin());
    cmd.arg("-c").arg(&cfg).arg("serve").arg("--state").arg(p.join("state")).arg("--force");
    cmd.args(["--status", "127.0.0.1:8067"]);
    cmd.env("RUST_LOG", "info").stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
    let mut srv = ChildGuard::spawn(&mut cmd);
    let up = wait_until(Duration::from_secs(15), || {
        read(&log).contains("HTTP for iPXE on") || matches!(srv.child.try_wait(), Ok(Some(_)))
    });
    assert!(up && srv.child.try_wait().unwrap().is_none(), "serve did not start:\n{}", read(&log));

    // nginx in its own namespace on the same segment, serving the tree as the README says.
    let web = Netns::new("htw");
    harness::veth(&web, "w0", &lab.srv, "pw");
    lab.srv.ip(&["link", "set", "pw", "master", "br0"]);
    web.addr("w0", &format!("{WEB}/24"));
    for d in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        std::fs::create_dir_all(p.join("ngx").join(d)).unwrap();
    }
    std::fs::write(p.join("nginx.conf"), nginx_conf(&p, &tftpboot)).unwrap();
    let mut ngx = web.command("nginx");
    ngx.arg("-c").arg(p.join("nginx.conf")).arg("-p").arg(&p);
    ngx.stdout(Stdio::null()).stderr(std::fs::File::create(p.join("nginx.out")).unwrap());
    let _nginx = ChildGuard::spawn(&mut ngx);

    let c = lab.client("02:00:00:00:14:01");
    lab.cli.addr(&c, &format!("{CLIENT}/24"));
    let ready = wait_until(Duration::from_secs(10), || {
        curl(&lab, &["-I"], &format!("{WEB_URL}boot.ipxe"), "probe").0 == 200
    });
    assert!(
        ready,
        "nginx did not answer: {}{}",
        read(&p.join("nginx.out")),
        read(&p.join("nginx-error.log"))
    );

    let mosboot_url = "http://192.168.0.254:8080/";
    let files = ["vmlinuz", "initrd.gz", "boot.ipxe", "pxelinux.cfg/default", "pxelinux.0"];
    for (who, base) in [("mosboot", mosboot_url), ("nginx", WEB_URL)] {
        for f in files {
            let tag = format!("{who}-{}", f.replace('/', "_"));
            let want = std::fs::read(tftpboot.join(f)).unwrap();
            let (code, head, body) =
                curl(&lab, &["-H", "Accept-Encoding: gzip, deflate"], &format!("{base}{f}"), &tag);
            assert_eq!(code, 200, "{who} {f}: {head}");
            assert!(std::fs::read(&body).unwrap() == want, "{who} {f}: bytes differ from the tree");
            let len = want.len().to_string();
            assert_eq!(header(&head, "content-length"), Some(len.as_str()), "{who} {f}: {head}");
            assert_eq!(header(&head, "content-encoding"), None, "{who} {f}: {head}");
            assert_eq!(header(&head, "transfer-encoding"), None, "{who} {f}: {head}");
            let (code, head, body) = curl(&lab, &["-I"], &format!("{base}{f}"), &format!("{tag}-head"));
            assert_eq!((code, header(&head, "content-length")), (200, Some(len.as_str())), "{who} HEAD {f}");
            // With -I curl writes the headers to -o as well: nothing else may be there.
            assert_eq!(read(&body).to_ascii_lowercase(), head, "{who} HEAD {f} has a body");
        }
        // A planted link out of the root is refused by both (nginx by `disable_symlinks on`).
        let (code, _, body) = curl(&lab, &[], &format!("{base}escape"), &format!("{who}-escape"));
        assert!(code == 403 || code == 404, "{who}: the escaping link gave {code}");
        assert!(!read(&body).contains("not for the LAN"), "{who} sent the secret");
    }
    // Traversal, raw and percent-encoded, and what else mosboot never does.
    for (path, want) in [
        ("../secret", 403),
        ("%2e%2e/secret", 403),
        ("pxelinux.cfg/..%2f..%2fsecret", 403),
        ("pxelinux.cfg", 403),
        ("missing", 404),
    ] {
        let (code, _, body) = curl(&lab, &[], &format!("{mosboot_url}{path}"), "trav");
        assert_eq!(code, want, "{path}");
        assert!(!read(&body).contains("not for the LAN"), "{path} sent the secret");
    }
    let (code, head, _) = curl(&lab, &["-X", "PUT", "--data", "x"], &format!("{mosboot_url}vmlinuz"), "put");
    assert!(code == 405 || code == 400, "PUT gave {code}: {head}");
    let (code, head, body) = curl(&lab, &["-r", "100-199"], &format!("{mosboot_url}vmlinuz"), "range");
    assert_eq!((code, header(&head, "content-length")), (206, Some("100")), "{head}");
    assert!(std::fs::read(body).unwrap() == std::fs::read(tftpboot.join("vmlinuz")).unwrap()[100..200]);

    // The fetches are boot stages, as TFTP fetches are: in serve's log and `mosboot nodes`.
    let logged = wait_until(Duration::from_secs(5), || {
        let l = read(&log);
        l.contains(&format!("ip={CLIENT} mac=- stage=fetched vmlinuz"))
            && l.contains(&format!("ip={CLIENT} mac=- stage=fetched initrd.gz"))
    });
    assert!(logged, "no fetched stages for the HTTP client:\n{}", read(&log));
    assert!(read(&log).contains("http: sent"), "{}", read(&log));
    // The status page's stage list has them too.
    let api = lab.srv.sh("curl -sS --max-time 5 http://127.0.0.1:8067/api/events");
    let api = String::from_utf8_lossy(&api.stdout);
    assert!(api.contains(&format!("\"ip\":\"{CLIENT}\"")) && api.contains("fetched initrd.gz"), "{api}");
    let stages = read(&p.join("state/stages.log"));
    assert!(
        stages.contains(&format!("ip={CLIENT} ")) && stages.contains("stage=fetched vmlinuz"),
        "{stages}"
    );

    // Reload: a rebuild (here without http_url) is served over HTTP from the next request on...
    std::fs::write(
        &cfg,
        harness::sample_cluster(&[("cluster.interface", "\"br0\"")], "\n[serve]\nhttp = \"0.0.0.0:8080\"\n"),
    )
    .unwrap();
    let o = Command::new(harness::mosboot_bin()).arg("-c").arg(&cfg).arg("build").output().unwrap();
    assert!(o.status.success(), "mosboot build: {}", String::from_utf8_lossy(&o.stderr));
    assert!(wait_until(Duration::from_secs(5), || read(&log).contains("reloaded: ")), "{}", read(&log));
    let (code, _, body) = curl(&lab, &[], &format!("{mosboot_url}boot.ipxe"), "rebuilt");
    let rebuilt = read(&tftpboot.join("boot.ipxe"));
    assert!(code == 200 && read(&body) == rebuilt && !rebuilt.contains(WEB_URL), "{rebuilt}");
    // ...and moving the HTTP server needs a restart: refused, the old one keeps serving.
    std::fs::write(
        &cfg,
        harness::sample_cluster(&[("cluster.interface", "\"br0\"")], "\n[serve]\nhttp = \"0.0.0.0:8081\"\n"),
    )
    .unwrap();
    srv.signal(libc::SIGHUP);
    let refused = "serve.http changed from 0.0.0.0:8080 to 0.0.0.0:8081: that needs a restart";
    assert!(wait_until(Duration::from_secs(5), || read(&log).contains(refused)), "{}", read(&log));
    assert_eq!(curl(&lab, &["-I"], &format!("{mosboot_url}vmlinuz"), "after").0, 200);
    srv.signal(libc::SIGTERM);
    assert!(srv.wait_timeout(Duration::from_secs(10)).is_some_and(|s| s.success()), "{}", read(&log));
}
