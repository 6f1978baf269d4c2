//! Test-only TFTP daemon: runs the library's `TftpServer` so tests can start it as a real process
//! (in a namespace, with signals) before `mosboot serve` exists. Prints `listening ADDR` once
//! bound, then one stdout line per boot event: `fetched IP PATH` or `joined IP TEXT`.
//!
//! Usage: mosboot-test-tftpd --bind ADDR --root DIR [--timeout-ms N] [--retries N]
//!        [--max-blksize N] [--max-windowsize N] [--max-transfers N] [--max-per-source N]
//!        [--lifetime-ms N] [--multicast GROUP:PORT]
//! With --multicast, each finished session prints
//! `multicast FILE clients=N completed=N blocks=N sent=N passes=N`.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use netboot::events::Stage;
use netboot::tftp::{MulticastConfig, TftpConfig, TftpServer};

fn parse_args() -> anyhow::Result<TftpConfig> {
    // The test daemon's clients all share one loopback address: no per-source limit unless asked.
    let mut cfg = TftpConfig { max_per_source: usize::MAX, ..TftpConfig::default() };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--bind" => cfg.bind = value.parse().context("--bind")?,
            "--root" => cfg.root = value.into(),
            "--timeout-ms" => cfg.timeout = Duration::from_millis(value.parse()?),
            "--retries" => cfg.retries = value.parse()?,
            "--max-blksize" => cfg.max_blksize = value.parse()?,
            "--max-windowsize" => cfg.max_windowsize = value.parse()?,
            "--max-transfers" => cfg.max_transfers = value.parse()?,
            "--max-per-source" => cfg.max_per_source = value.parse()?,
            "--lifetime-ms" => cfg.lifetime = Duration::from_millis(value.parse()?),
            "--multicast" => {
                let addr: std::net::SocketAddrV4 = value.parse().context("--multicast GROUP:PORT")?;
                // MTFTP only when asked for (--mtftp-port), so parallel tests never share a port.
                cfg.multicast = Some(MulticastConfig {
                    mtftp_port: None,
                    ..MulticastConfig::new(*addr.ip(), addr.port())
                });
            }
            "--mtftp-port" => match cfg.multicast.as_mut() {
                Some(mc) => mc.mtftp_port = Some(value.parse().context("--mtftp-port")?),
                None => bail!("--mtftp-port needs --multicast first"),
            },
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(cfg)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let cfg = parse_args()?;
    let (tx, mut rx) = netboot::events::channel();
    let server = TftpServer::bind(cfg, Some(tx))?;
    println!("listening {}", server.local_addr());
    if let Some(log) = server.multicast_log() {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                for s in log.take() {
                    println!(
                        "multicast {} clients={} completed={} blocks={} sent={} passes={}",
                        s.file, s.clients, s.completed, s.blocks, s.data_sent, s.passes
                    );
                }
                let _ = std::io::stdout().flush();
            }
        });
    }
    std::io::stdout().flush()?;
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            let line = match ev.stage {
                Stage::Fetched(path) => format!("fetched {} {path}", ev.ip),
                Stage::Joined(text) => format!("joined {} {text}", ev.ip),
                other => format!("other {} {}", ev.ip, other.label()),
            };
            println!("{line}");
            let _ = std::io::stdout().flush();
        }
    });
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    server.run(stop).await?;
    Ok(())
}
