//! The durable lease log: append-only, one fsync per batch (group commit), compacted in place.
//!
//! An ACK may only leave after its record is on disk. A single writer thread takes every record
//! queued since its last fsync, writes them with one `write`, fsyncs once and then wakes all
//! waiters, so a boot storm costs one fsync per batch instead of one per client.
//!
//! Both files (`leases` and its journal `leases.tmp`) are opened once, through
//! [`StateDir::open_file`] (no symlinks, no hard links), before `mosboot serve` drops root; the
//! writer then works only through those descriptors, so compaction cannot rename. Instead it is
//! journalled: the snapshot goes to the journal with an end marker and is fsynced, then the log
//! is rewritten in place and fsynced, then the journal is emptied. A crash leaves either the old
//! log (journal without end marker) or a complete journal, which the next start copies back.
//! A failed write (disk full) truncates the log back to its last fsynced length, so the next
//! batch can succeed once there is space again: no restart needed, and no ACK without a record.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::record::Lease;
use super::table::LeaseTable;
use crate::statedir::{StateDir, StateError};

/// First line of a fresh or compacted log; tells a reader what the file is.
const HEADER: &str =
    "# mosboot lease log v1: one record per line, newest last; edit only while serve is stopped\n";
/// Compact on open when the log holds this many more records than live addresses.
const COMPACT_SLACK: usize = 256;
/// Upper bound of records per fsync batch, to keep latency bounded under a storm.
const MAX_BATCH: usize = 512;
/// Records waiting for the writer; a full queue makes committers wait (back-pressure).
const QUEUE: usize = 4096;
/// Last line of a complete compaction journal.
const JOURNAL_END: &str = "# end of snapshot\n";
/// Name of the journal beside the log.
const JOURNAL_SUFFIX: &str = ".tmp";

/// Why the lease log cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    #[error("lease file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("lease writer stopped (an earlier write to {0} failed)")]
    WriterGone(PathBuf),
    /// The write failed (ACKs are withheld until the log can be written again).
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
    Ok(parse_leases(path, &data))
}

/// Parses lease-log text (as [`read_leases`] does after reading `path`, which only names the
/// file in warnings).
pub fn parse_leases(path: &Path, data: &[u8]) -> (Vec<Lease>, Vec<String>) {
    let p = parse_log(path, data);
    (p.table.all(), p.warnings)
}

struct Pending {
    lease: Lease,
    done: oneshot::Sender<Result<(), Arc<std::io::Error>>>,
}

/// Handle to the lease log's writer. Cheap to clone; every clone feeds the same writer thread.
#[derive(Clone)]
pub struct LeaseStore {
    path: PathBuf,
    tx: mpsc::Sender<Pending>,
}

/// The log and its journal, both opened before privileges are dropped.
struct Files {
    log: File,
    journal: File,
    path: PathBuf,
}

impl LeaseStore {
    /// Opens (creating if needed) the log `path` and its journal, finishes an interrupted
    /// compaction, replays the log, compacts it when it has grown, and starts the writer thread.
    /// Damaged lines become warnings, never an error: a server that refuses to start over one
    /// torn line would lose every other lease's owner.
    pub fn open(path: &Path) -> Result<(LeaseStore, LeaseTable, Vec<String>), LeaseError> {
        let (dir, name) = StateDir::open_parent(path)?;
        LeaseStore::open_in(&dir, &name)
    }

    /// Like [`LeaseStore::open`], for the file `name` inside an already opened folder.
    pub fn open_in(dir: &StateDir, name: &str) -> Result<(LeaseStore, LeaseTable, Vec<String>), LeaseError> {
        let path = dir.path().join(name);
        let mut files = Files {
            log: dir.open_file(name, true)?,
            journal: dir.open_file(&format!("{name}{JOURNAL_SUFFIX}"), true)?,
            path: path.clone(),
        };
        let mut warnings = Vec::new();
        let journal = read_all(&mut files.journal, &path)?;
        if journal.ends_with(JOURNAL_END.as_bytes()) {
            // A compaction was interrupted after its snapshot was safe: the snapshot is the truth.
            let parsed = parse_log(&path, &journal);
            warnings.push(format!("{}: finished an interrupted compaction", path.display()));
            files.rewrite(&parsed.table).map_err(io_err(&path))?;
        } else if !journal.is_empty() {
            files.journal.set_len(0).map_err(io_err(&path))?;
        }
        let data = read_all(&mut files.log, &path)?;
        let parsed = parse_log(&path, &data);
        let damaged = !parsed.warnings.is_empty();
        warnings.extend(parsed.warnings);
        let table = parsed.table;
        let mut records = parsed.records;
        if data.is_empty() || parsed.records > table.len() + COMPACT_SLACK || damaged {
            // Rewrite: fresh files get the header, grown ones shrink, damaged ones get clean.
            files.rewrite(&table).map_err(io_err(&path))?;
            records = table.len();
        } else if (data.len() as u64) > parsed.good_len {
            if parsed.unterminated_ok {
                files.log.write_all(b"\n").map_err(io_err(&path))?;
            } else {
                files.log.set_len(parsed.good_len).map_err(io_err(&path))?;
            }
            files.log.sync_all().map_err(io_err(&path))?;
        }
        dir.sync().map_err(io_err(&path))?;

        let (tx, rx) = mpsc::channel(QUEUE);
        let writer_table = table.clone();
        std::thread::Builder::new()
            .name("lease-writer".into())
            .spawn(move || writer_loop(files, writer_table, records, rx))
            .map_err(io_err(&path))?;
        Ok((LeaseStore { path, tx }, table, warnings))
    }

    /// Queues a record and resolves once it (and its batch) is fsynced. Waits while the queue
    /// is full.
    pub async fn commit(&self, lease: &Lease) -> Result<(), LeaseError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Pending { lease: lease.clone(), done })
            .await
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

fn read_all(f: &mut File, path: &Path) -> Result<Vec<u8>, LeaseError> {
    let mut data = Vec::new();
    f.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    f.read_to_end(&mut data).map_err(io_err(path))?;
    Ok(data)
}

fn snapshot(table: &LeaseTable) -> String {
    let mut text = String::from(HEADER);
    for lease in table.all() {
        text.push_str(&lease.to_line());
    }
    text
}

impl Files {
    /// Journalled in-place compaction (see the module comment). On error the log is either
    /// untouched or the journal holds the complete snapshot for the next attempt or start.
    fn rewrite(&mut self, table: &LeaseTable) -> std::io::Result<()> {
        let text = snapshot(table);
        // Both files are O_APPEND: after truncation, writes start at offset 0.
        self.journal.set_len(0)?;
        let journalled = self
            .journal
            .write_all(text.as_bytes())
            .and_then(|_| self.journal.write_all(JOURNAL_END.as_bytes()))
            .and_then(|_| self.journal.sync_data());
        if let Err(e) = journalled {
            // The log was not touched; drop the partial journal so it is never taken for a snapshot.
            let _ = self.journal.set_len(0);
            return Err(e);
        }
        self.log.set_len(0)?;
        self.log.write_all(text.as_bytes())?;
        self.log.sync_data()?;
        self.journal.set_len(0)?;
        self.journal.sync_data()
    }
}

/// `records`: how many records the log holds now (for deciding when to compact).
fn writer_loop(mut files: Files, mut table: LeaseTable, mut records: usize, mut rx: mpsc::Receiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::new();
    let mut buf = String::new();
    // The length known to be on disk.
    let mut good_len = files.log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut failing = false;
    // A compaction that failed half-way (log not rewritten yet): retried before the next append.
    let mut must_rewrite = false;
    let path = files.path.clone();
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let mut result: std::io::Result<()> = Ok(());
        if must_rewrite {
            result = files.rewrite(&table);
            if result.is_ok() {
                must_rewrite = false;
                records = table.len();
                good_len = files.log.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        if result.is_ok() {
            buf.clear();
            for p in &batch {
                buf.push_str(&p.lease.to_line());
            }
            result = files.log.write_all(buf.as_bytes()).and_then(|_| files.log.sync_data());
            if result.is_err() {
                // The tail is unknown: cut it back to what is known to be on disk, so a later
                // batch appends on a clean line.
                let _ = files.log.set_len(good_len).and_then(|_| files.log.sync_data());
            }
        }
        let outcome = match result {
            Ok(()) => {
                if failing {
                    tracing::info!(file = %path.display(), "lease log writable again; ACKs resume");
                    failing = false;
                }
                good_len += buf.len() as u64;
                records += batch.len();
                for p in &batch {
                    table.apply(p.lease.clone());
                }
                Ok(())
            }
            Err(e) => {
                if !failing {
                    tracing::error!(
                        file = %path.display(),
                        error = %e,
                        "lease log write failed: ACKs are withheld until it can be written (OFFERs and TFTP go on)"
                    );
                    failing = true;
                }
                Err(Arc::new(e))
            }
        };
        for p in batch.drain(..) {
            let _ = p.done.send(outcome.clone());
        }
        // Compaction while running, so the log stays proportional to the live addresses.
        if !failing && records > table.len() * 2 + COMPACT_SLACK {
            match files.rewrite(&table) {
                Ok(()) => {
                    records = table.len();
                    good_len = files.log.metadata().map(|m| m.len()).unwrap_or(0);
                    tracing::debug!(file = %path.display(), records, "lease log compacted");
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "lease log compaction failed; retried later");
                    // If the journal is complete but the log was cut, the log must be rewritten
                    // before anything is appended.
                    must_rewrite = files.log.metadata().map(|m| m.len() != good_len).unwrap_or(true);
                }
            }
        }
    }
}
