//! Command-line interface: one subcommand per SPEC command, each a thin call into the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::error::Failure;
use crate::pipeline::BuildOptions;
use crate::plan::Plan;

#[derive(Parser, Debug)]
#[command(
    name = "mosboot",
    version,
    about = "Turn diskless PCs into an openMosix cluster that boots from the network"
)]
pub struct Cli {
    /// The cluster description.
    #[arg(short = 'c', long = "config", global = true, default_value = "cluster.toml")]
    pub config: PathBuf,
    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write a commented cluster.toml filled from this machine's lab interface.
    Init {
        /// The lab NIC (default: the only interface with an IPv4 address).
        #[arg(long)]
        interface: Option<String>,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Validate the config and every input; print all problems at once.
    Check {
        /// A folder whose files replace built-in templates (overrides [image] templates).
        #[arg(long)]
        templates: Option<PathBuf>,
    },
    /// Build the output tree: boot files, kernel, initrd, map files, manifest.
    Build {
        /// Output folder (overrides [image] out).
        #[arg(long)]
        out: Option<PathBuf>,
        /// A folder whose files replace built-in templates (overrides [image] templates).
        #[arg(long)]
        templates: Option<PathBuf>,
    },
    /// Run DHCP (full or proxy) and TFTP for the output tree until SIGINT/SIGTERM.
    Serve(crate::serve::ServeArgs),
    /// Table of nodes: number, hostname, IP, MAC, lease state/expiry, last boot stage and when.
    Nodes(crate::nodes::NodesArgs),
    /// Print the cluster map exactly as written to the nodes.
    Map,
    /// Write a 1.44 MB boot floppy for PCs whose NIC has no boot ROM (ISA cards included): it
    /// fetches the server's current node image at every boot.
    Floppy {
        /// The image file to write.
        #[arg(long, default_value = "mosboot-floppy.img")]
        out: PathBuf,
        /// The card: auto (every built-in driver probes), ne2000[:io=0x300,irq=9], 3c509,
        /// wd[:io=..,irq=..,mem=..], ultra[:io=..,irq=..], or pci (= ipxe: SYSLINUX + iPXE).
        #[arg(long, default_value = "auto", value_parser = crate::floppy::Nic::parse)]
        nic: crate::floppy::Nic,
        /// The floppy kernel (default: $MOSBOOT_FLOPPY_KERNEL; the kit's is KIT_FLOPPY_KERNEL).
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// The stage-1's static i386 busybox (default: $MOSBOOT_FLOPPY_BUSYBOX; the kit's is
        /// KIT_BUSYBOX_STAGE1).
        #[arg(long)]
        busybox: Option<PathBuf>,
        /// Stage-1 format: auto (ext2 for a 2.4 kernel, else cpio), cpio or ext2.
        #[arg(long, value_enum, default_value = "auto")]
        initrd: crate::floppy::Stage1Format,
        /// Extra kernel command line (e.g. mosboot.server=IP).
        #[arg(long)]
        append: Option<String>,
        /// For --nic pci/ipxe: the iPXE image (a post-2021 ipxe.lkrn; default: $MOSBOOT_IPXE_LKRN or
        /// /usr/lib/ipxe/ipxe.lkrn).
        #[arg(long)]
        ipxe: Option<PathBuf>,
    },
    /// Print an equivalent dnsmasq or ISC dhcpd config, for a site that keeps its own server.
    Export {
        /// The server program to write the config for.
        #[arg(value_parser = ["dnsmasq", "isc-dhcpd"])]
        format: String,
    },
    /// Print a merged kernel config fragment from kernel-configs/.
    KernelConfig {
        /// CPU class of the nodes.
        #[arg(long, value_parser = ["486", "586", "686"])]
        cpu: String,
        /// NIC drivers, comma-separated (e.g. ne2000,rtl8139).
        #[arg(long, value_delimiter = ',', required = true)]
        nic: Vec<String>,
        /// Add the openMosix 2.4 options.
        #[arg(long)]
        openmosix: bool,
        /// Read fragments from this folder instead of the built-in ones.
        #[arg(long)]
        fragments: Option<PathBuf>,
    },
}

/// Where `serve` queues its log lines (see [`init_logging`]); empty for other commands.
static LOG_SPOOL: std::sync::OnceLock<netboot::spool::Spool> = std::sync::OnceLock::new();
/// Log lines that may wait for stderr; beyond this they are dropped (and counted), not waited for.
const LOG_QUEUE: usize = 16384;

/// Logs go to stderr; `RUST_LOG` overrides the -v level. A daemon (`spooled`: serve) hands its
/// lines to a writer thread, so no thread that answers DHCP or TFTP waits for the log's disk.
pub fn init_logging(verbose: u8, spooled: bool) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_target(false);
    let spool = if spooled {
        netboot::spool::Spool::start("log-writer", LOG_QUEUE, netboot::spool::Stderr).ok()
    } else {
        None
    };
    match spool {
        Some(spool) => {
            if builder.with_writer(SpoolWriter(spool.clone())).try_init().is_ok() {
                let _ = LOG_SPOOL.set(spool);
            }
        }
        None => {
            let _ = builder.with_writer(std::io::stderr).try_init();
        }
    }
}

/// Writes out what the log spool still holds (before the process exits).
pub fn flush_logs() {
    if let Some(spool) = LOG_SPOOL.get() {
        spool.flush(std::time::Duration::from_secs(2));
    }
}

/// tracing's writer for a spool: each event is formatted into one buffer, queued when dropped.
struct SpoolWriter(netboot::spool::Spool);

/// One log event on its way to the spool.
struct SpoolLine<'a> {
    spool: &'a netboot::spool::Spool,
    buf: Vec<u8>,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for SpoolWriter {
    type Writer = SpoolLine<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        SpoolLine { spool: &self.0, buf: Vec::with_capacity(160) }
    }
}

impl std::io::Write for SpoolLine<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SpoolLine<'_> {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.spool.write(std::mem::take(&mut self.buf));
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Init { interface, force } => {
            let msg = crate::init::run(&cli.config, interface.as_deref(), force)?;
            println!("{msg}");
            Ok(())
        }
        Command::Check { templates } => {
            let (_, plan, prep) = crate::check::full(&cli.config, &BuildOptions { templates })?;
            println!(
                "{}: ok ({} nodes in the map, {} map lines, kernel {}, {} initrd)",
                cli.config.display(),
                plan.node_count(),
                plan.map.len(),
                prep.summary.kernel_release,
                prep.summary.initrd_format
            );
            Ok(())
        }
        Command::Build { out, templates } => {
            let (cfg, plan, prep) = crate::check::full(&cli.config, &BuildOptions { templates })?;
            let out = out.unwrap_or_else(|| cfg.image.out.clone());
            crate::pipeline::write_tree(&prep, &out)?;
            let s = &prep.summary;
            println!("built {} for cluster '{}'", out.display(), plan.cluster);
            println!(
                "  map:     {} nodes in {} line(s) (server {} is node 1)",
                s.nodes_in_map, s.map_lines, plan.server
            );
            println!("  kernel:  {} ({} KiB)", s.kernel_release, s.kernel_bytes.div_ceil(1024));
            println!(
                "  initrd:  {}, {} KiB gzip'd ({} KiB unpacked, {} entries)",
                s.initrd_format,
                s.initrd_bytes.div_ceil(1024),
                s.initrd_uncompressed_bytes.div_ceil(1024),
                s.root_files
            );
            let served = netboot::dhcp::BootFiles::default();
            println!(
                "  boot:    {}/{}, {}, pxelinux.cfg/default, {}",
                crate::pipeline::TFTP_DIR,
                served.pxe,
                crate::pipeline::LDLINUX_FILE,
                served.ipxe
            );
            println!("  server:  server/ (map files, hosts block, NOTES), manifest.json");
            Ok(())
        }
        Command::Serve(args) => crate::serve::run(&cli.config, &args),
        Command::Nodes(args) => {
            crate::nodes::run(&cli.config, &args)?;
            Ok(())
        }
        Command::Floppy { out, nic, kernel, busybox, initrd, append, ipxe } => {
            let opts = crate::floppy::FloppyOptions { out, nic, kernel, busybox, ipxe, initrd, append };
            println!("{}", crate::floppy::run(&opts)?);
            Ok(())
        }
        Command::Map => {
            let cfg = Config::load(&cli.config)?;
            let plan = Plan::new(&cfg)?;
            print!("{}", plan.map_text());
            Ok(())
        }
        Command::Export { format } => {
            print!("{}", crate::export::run(&cli.config, &format)?);
            Ok(())
        }
        Command::KernelConfig { cpu, nic, openmosix, fragments } => {
            print!("{}", crate::kernel_config::run(&cpu, &nic, openmosix, fragments.as_deref())?);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;

    fn probe(args: &[&str]) -> Result<Duration, clap::Error> {
        let cli = Cli::try_parse_from([&["mosboot", "serve"], args].concat())?;
        match cli.command {
            Command::Serve(a) => Ok(a.probe),
            other => panic!("parsed as {other:?}"),
        }
    }

    /// `--probe` takes what its help promises ("like 3s or 500ms"), in the one duration syntax.
    #[test]
    fn serve_probe_takes_milliseconds_and_seconds() {
        assert_eq!(probe(&[]).expect("default"), Duration::from_secs(3));
        assert_eq!(probe(&["--probe", "500ms"]).expect("500ms"), Duration::from_millis(500));
        assert_eq!(probe(&["--probe", "3s"]).expect("3s"), Duration::from_secs(3));
        assert_eq!(probe(&["--probe", "1m"]).expect("1m"), Duration::from_secs(60));
        let e = probe(&["--probe", "2x"]).expect_err("2x").to_string();
        assert!(e.contains("'2x' is not a duration like 3s or 500ms"), "{e}");
    }
}
