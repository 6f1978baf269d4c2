//! The durable lease log: append-only, one fsync per batch (group commit), compacted on startup.
//!
//! An ACK may only leave after its record is on disk. A single writer thread takes every record
//! queued since its last fsync, writes them with one `write`, fsyncs once and then wakes all
//! waiters, so a boot storm costs one fsync per batch instead of one per client.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::record::Lease;
use super::table::LeaseTable;

/// First line of a fresh or compacted log; tells a reader what the file is.
const HEADER: &str =
    "# mosboot lease log v1: one record per line, newest last; edit only while serve is stopped\n";
/// Compact on open when the log holds this many more records than live addresses.
const COMPACT_SLACK: usize = 256;
/// Upper bound of records per fsync batch, to keep latency bounded under a storm.
const MAX_BATCH: usize = 512;

/// Why the lease log cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    #[error("lease file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("lease writer stopped (an earlier write to {0} failed)")]
    WriterGone(PathBuf),
    /// The write (or an earlier one: after a failure the log's tail is unknown) failed.
    #[error("lease file {path}: write failed: {source}")]
    Write { path: PathBuf, source: Arc<std::io::Error> },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LeaseError + '_ {
    move |source| LeaseError::Io { path: path.to_path_buf(), source }
}

/// Result of parsing a log's text.
struct Parsed {
    table: LeaseTable,
    records: usize,
    warnings: Vec<String>,
    /// Byte length of the well-formed prefix that ends with a newline (where appends go).
    good_len: u64,
    /// The last line has a valid record but no newline yet.
    unterminated_ok: bool,
}

fn parse_log(path: &Path, data: &[u8]) -> Parsed {
    let mut table = LeaseTable::default();
    let mut warnings = Vec::new();
    let mut records = 0;
    let mut offset = 0usize;
    let mut good_len = 0u64;
    let mut unterminated_ok = false;
    let mut lineno = 0;
    while offset < data.len() {
        lineno += 1;
        let (line, terminated, next) = match data[offset..].iter().position(|&b| b == b'\n') {
            Some(n) => (&data[offset..offset + n], true, offset + n + 1),
            None => (&data[offset..], false, data.len()),
        };
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        if text.trim().is_empty() || text.starts_with('#') {
            if terminated {
                good_len = next as u64;
            }
        } else {
            match Lease::parse_line(text) {
                Ok(lease) => {
                    table.apply(lease);
                    records += 1;
                    if terminated {
                        good_len = next as u64;
                    } else {
                        unterminated_ok = true;
                    }
                }
                Err(why) if !terminated => warnings.push(format!(
                    "{}:{lineno}: last record is torn ({why}); skipped (a crash while writing it, its client got no ACK)",
                    path.display()
                )),
                Err(why) => {
                    warnings.push(format!("{}:{lineno}: damaged record skipped: {why}", path.display()));
                    good_len = next as u64;
                }
            }
        }
        offset = next;
    }
    Parsed { table, records, warnings, good_len, unterminated_ok }
}

/// Reads a lease log without locking or changing it (for `mosboot nodes`, also while serve
/// runs). Returns every address's newest record, sorted by address, and warnings about damaged
/// lines. A missing file means no leases yet.
pub fn read_leases(path: &Path) -> Result<(Vec<Lease>, Vec<String>), LeaseError> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(io_err(path)(e)),
    };
    let p = parse_log(path, &data);
    Ok((p.table.all(), p.warnings))
}

struct Pending {
    line: String,
    done: oneshot::Sender<Result<(), Arc<std::io::Error>>>,
}

/// Handle to the lease log's writer. Cheap to clone; every clone feeds the same writer thread.
#[derive(Clone)]
pub struct LeaseStore {
    path: PathBuf,
    tx: mpsc::UnboundedSender<Pending>,
}

impl LeaseStore {
    /// Opens (creating if needed) the log, replays it, compacts it when it has grown, and starts
    /// the writer thread. Damaged lines become warnings, never an error: a server that refuses to
    /// start over one torn line would lose every other lease's owner.
    pub fn open(path: &Path) -> Result<(LeaseStore, LeaseTable, Vec<String>), LeaseError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err(path))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io_err(path))?;
        let parsed = parse_log(path, &data);
        let warnings = parsed.warnings;
        let table = parsed.table;

        let file = if data.is_empty() || parsed.records > table.len() + COMPACT_SLACK || !warnings.is_empty()
        {
            // Rewrite: fresh files get the header, grown ones shrink, damaged ones get clean.
            drop(file);
            compact(path, &table)?
        } else {
            if (data.len() as u64) > parsed.good_len {
                if parsed.unterminated_ok {
                    file.seek(SeekFrom::End(0)).map_err(io_err(path))?;
                    file.write_all(b"\n").map_err(io_err(path))?;
                } else {
                    file.set_len(parsed.good_len).map_err(io_err(path))?;
                }
                file.sync_all().map_err(io_err(path))?;
            }
            file.seek(SeekFrom::End(0)).map_err(io_err(path))?;
            file
        };

        let (tx, rx) = mpsc::unbounded_channel();
        let writer_path = path.to_path_buf();
        std::thread::Builder::new()
            .name("lease-writer".into())
            .spawn(move || writer_loop(file, writer_path, rx))
            .map_err(io_err(path))?;
        Ok((LeaseStore { path: path.to_path_buf(), tx }, table, warnings))
    }

    /// Queues a record and resolves once it (and its batch) is fsynced.
    pub async fn commit(&self, lease: &Lease) -> Result<(), LeaseError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Pending { line: lease.to_line(), done })
            .map_err(|_| LeaseError::WriterGone(self.path.clone()))?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(LeaseError::Write { path: self.path.clone(), source }),
            Err(_) => Err(LeaseError::WriterGone(self.path.clone())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Writes the table to `<path>.tmp`, fsyncs, renames over `path`, fsyncs the directory, and
/// returns the new file opened for appending. A crash at any step leaves either the old or the
/// new complete log.
fn compact(path: &Path, table: &LeaseTable) -> Result<File, LeaseError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut text = String::from(HEADER);
    for lease in table.all() {
        text.push_str(&lease.to_line());
    }
    {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(text.as_bytes()).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    File::open(&dir).and_then(|d| d.sync_all()).map_err(io_err(&dir))?;
    OpenOptions::new().append(true).open(path).map_err(io_err(path))
}

fn writer_loop(mut file: File, path: PathBuf, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::new();
    let mut buf = String::new();
    let mut broken: Option<Arc<std::io::Error>> = None;
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let result = if let Some(e) = &broken {
            Err(e.clone())
        } else {
            buf.clear();
            for p in &batch {
                buf.push_str(&p.line);
            }
            let r = file.write_all(buf.as_bytes()).and_then(|_| file.sync_data());
            r.map_err(|e| {
                // After a failed write the file's tail is unknown; refuse further commits so no
                // ACK claims durability we do not have.
                tracing::error!(file = %path.display(), error = %e, "lease log write failed; no more ACKs");
                let e = Arc::new(e);
                broken = Some(e.clone());
                e
            })
        };
        for p in batch.drain(..) {
            let _ = p.done.send(result.clone());
        }
    }
}
