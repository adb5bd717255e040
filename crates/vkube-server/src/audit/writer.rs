//! The log backend: events go through a bounded queue to one writer thread, which appends them
//! as JSON lines to `--audit-log-path` (or stdout for `-`), rotating the file as lumberjack
//! (kube-apiserver's rotating writer) does: past `--audit-log-maxsize` megabytes the file is
//! renamed `NAME-<UTC time 2006-01-02T15-04-05.000>.EXT` and a new one started; then backups
//! beyond `--audit-log-maxbackup` and older than `--audit-log-maxage` days are removed.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use super::event::Event;

/// Upstream's buffer for its log backend's batch mode: events queued before writes wait.
const QUEUE: usize = 10_000;
const MEGABYTE: u64 = 1024 * 1024;
/// lumberjack's size when none is set.
const DEFAULT_MAX_MB: u64 = 100;

/// `--audit-log-mode`: `blocking` (default) waits for room in the queue when the disk falls
/// behind; `batch` drops the event instead and counts it. Upstream's `blocking-strict` is
/// read as `blocking`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Blocking,
    Batch,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "blocking" | "blocking-strict" => Ok(Mode::Blocking),
            "batch" => Ok(Mode::Batch),
            _ => Err(format!(
                "invalid audit log mode {s}, allowed modes are \"batch,blocking,blocking-strict\""
            )),
        }
    }
}

/// The `--audit-log-*` flags.
#[derive(Clone, Debug, PartialEq)]
pub struct LogOptions {
    /// A file, or `-` for standard output.
    pub path: PathBuf,
    /// Days to keep rotated files; 0 keeps them whatever their age.
    pub max_age_days: u64,
    /// Rotated files to keep; 0 keeps all.
    pub max_backups: usize,
    /// Megabytes before the file is rotated; 0 means lumberjack's 100.
    pub max_size_mb: u64,
    pub mode: Mode,
}

/// Where events go: the queue to the writer thread.
pub struct Sink {
    tx: mpsc::Sender<Event>,
    mode: Mode,
    dropped: AtomicU64,
}

impl Sink {
    /// Opens the log (so a path that cannot be written refuses startup) and starts the writer.
    pub fn start(options: &LogOptions) -> io::Result<Sink> {
        let mut out: Box<dyn Output> = if options.path.as_os_str() == "-" {
            Box::new(io::stdout())
        } else {
            let max_size = match options.max_size_mb {
                0 => DEFAULT_MAX_MB,
                n => n,
            } * MEGABYTE;
            let max_age = Duration::from_secs(options.max_age_days * 24 * 3600);
            Box::new(RotatingFile::open(
                &options.path,
                max_size,
                max_age,
                options.max_backups,
            )?)
        };
        let (tx, mut rx) = mpsc::channel::<Event>(QUEUE);
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || {
                while let Some(event) = rx.blocking_recv() {
                    if let Err(err) = out.write_line(event.to_line().as_bytes()) {
                        tracing::error!(%err, audit_id = event.audit_id, "writing the audit log");
                    }
                    // Lines reach the file once the queue is drained, not one write per event.
                    if rx.is_empty()
                        && let Err(err) = out.flush_lines()
                    {
                        tracing::error!(%err, "flushing the audit log");
                    }
                }
                let _ = out.flush_lines();
            })?;
        Ok(Sink {
            tx,
            mode: options.mode,
            dropped: AtomicU64::new(0),
        })
    }

    /// Queues an event; in blocking mode waits for room.
    pub async fn process(&self, event: Event) {
        match self.mode {
            Mode::Blocking => {
                let _ = self.tx.send(event).await;
            }
            Mode::Batch => self.process_now(event),
        }
    }

    /// Queues an event from where nothing can wait (a response body being dropped): in
    /// blocking mode a full queue hands the event to a task that waits for room.
    pub fn process_now(&self, event: Event) {
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event)) if self.mode == Mode::Blocking => {
                let tx = self.tx.clone();
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move { tx.send(event).await });
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(dropped = n, "audit log queue full: events dropped");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

trait Output: Send {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()>;
    fn flush_lines(&mut self) -> io::Result<()>;
}

impl Output for io::Stdout {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.lock().write_all(line)
    }
    fn flush_lines(&mut self) -> io::Result<()> {
        self.flush()
    }
}

impl Output for RotatingFile {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.write(line)
    }
    fn flush_lines(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// lumberjack's rotating file.
pub struct RotatingFile {
    path: PathBuf,
    file: BufWriter<File>,
    size: u64,
    max_size: u64,
    max_age: Duration,
    max_backups: usize,
}

/// lumberjack's timestamp in backup names (UTC, milliseconds).
const STAMP: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]-[minute]-[second].[subsecond digits:3]"
);

fn backup_stamp(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(STAMP)
        .unwrap_or_default()
}

fn parse_stamp(s: &str) -> Option<SystemTime> {
    let t = time::PrimitiveDateTime::parse(s, STAMP).ok()?;
    Some(t.assume_utc().into())
}

/// `NAME` and `.EXT` of a log file name, as Go's `filepath.Ext` splits it.
fn split_name(path: &Path) -> (String, String) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rfind('.') {
        Some(i) => (name[..i].to_string(), name[i..].to_string()),
        None => (name, String::new()),
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl RotatingFile {
    pub fn open(
        path: &Path,
        max_size: u64,
        max_age: Duration,
        max_backups: usize,
    ) -> io::Result<RotatingFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        let this = RotatingFile {
            path: path.to_path_buf(),
            file: BufWriter::new(file),
            size,
            max_size,
            max_age,
            max_backups,
        };
        this.mill();
        Ok(this)
    }

    pub fn write(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64;
        if len > self.max_size {
            return Err(io::Error::other(format!(
                "write length {len} exceeds maximum file size {}",
                self.max_size
            )));
        }
        if self.size + len > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += len;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let (prefix, ext) = split_name(&self.path);
        let dir = self.path.parent().unwrap_or(Path::new(""));
        // Two rotations within a millisecond would share a name; the later one moves on by a
        // millisecond rather than overwrite the earlier backup.
        let mut at = SystemTime::now();
        let mut backup = dir.join(format!("{prefix}-{}{ext}", backup_stamp(at)));
        while backup.exists() {
            at += Duration::from_millis(1);
            backup = dir.join(format!("{prefix}-{}{ext}", backup_stamp(at)));
        }
        std::fs::rename(&self.path, &backup)?;
        self.file = BufWriter::new(open_append(&self.path)?);
        self.size = 0;
        self.mill();
        Ok(())
    }

    /// The rotated files of this log, newest first.
    fn backups(&self) -> Vec<(SystemTime, PathBuf)> {
        let (prefix, ext) = split_name(&self.path);
        let prefix = format!("{prefix}-");
        let dir = match self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(d) => d.to_path_buf(),
            None => PathBuf::from("."),
        };
        let mut found: Vec<(SystemTime, PathBuf)> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let stamp = name.strip_prefix(&prefix)?.strip_suffix(ext.as_str())?;
                Some((parse_stamp(stamp)?, entry.path()))
            })
            .collect();
        found.sort_by_key(|b| std::cmp::Reverse(b.0));
        found
    }

    /// Removes the backups past `max_backups` and older than `max_age`.
    fn mill(&self) {
        let cutoff = SystemTime::now().checked_sub(self.max_age);
        for (i, (at, path)) in self.backups().into_iter().enumerate() {
            let too_many = self.max_backups > 0 && i >= self.max_backups;
            let too_old = !self.max_age.is_zero() && cutoff.is_some_and(|c| at < c);
            if (too_many || too_old)
                && let Err(err) = std::fs::remove_file(&path)
            {
                tracing::warn!(%err, path = %path.display(), "removing an old audit log");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(dir: &Path) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| {
                let text = std::fs::read_to_string(e.path()).unwrap();
                (e.file_name().to_string_lossy().into_owned(), text.len())
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_full_file_is_renamed_with_a_timestamp_and_old_backups_go() {
        let dir = std::env::temp_dir().join(format!("vkube-audit-rotate-{}", uuid::Uuid::new_v4()));
        let path = dir.join("audit.log");
        let mut log = RotatingFile::open(&path, 100, Duration::ZERO, 2).unwrap();
        let line = [b'x'; 39];
        for _ in 0..5 {
            // Two lines fit in 100 bytes, the third rotates.
            log.write(&line).unwrap();
            log.write(&line).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        log.file.flush().unwrap();
        let files = lines(&dir);
        assert_eq!(files.len(), 3, "the log and two backups: {files:?}");
        assert_eq!(files.last().unwrap(), &("audit.log".to_string(), 78));
        for (name, len) in &files[..2] {
            assert_eq!(*len, 78, "{name}");
            let stamp = name
                .strip_prefix("audit-")
                .and_then(|s| s.strip_suffix(".log"))
                .unwrap();
            assert!(parse_stamp(stamp).is_some(), "{name}");
            assert_eq!(stamp.len(), "2006-01-02T15-04-05.000".len());
        }
        let err = log.write(&[b'y'; 101]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "write length 101 exceeds maximum file size 100"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn backups_older_than_max_age_are_removed_on_open() {
        let dir = std::env::temp_dir().join(format!("vkube-audit-age-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let old = SystemTime::now() - Duration::from_secs(3 * 24 * 3600);
        let recent = SystemTime::now() - Duration::from_secs(3600);
        for t in [old, recent] {
            std::fs::write(dir.join(format!("audit-{}.log", backup_stamp(t))), "x\n").unwrap();
        }
        std::fs::write(dir.join("unrelated-2020-01-01T00-00-00.000.log"), "x\n").unwrap();
        let log = RotatingFile::open(
            &dir.join("audit.log"),
            MEGABYTE,
            Duration::from_secs(2 * 24 * 3600),
            0,
        )
        .unwrap();
        let names: Vec<String> = lines(&dir).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            vec![
                format!("audit-{}.log", backup_stamp(recent)),
                "audit.log".to_string(),
                "unrelated-2020-01-01T00-00-00.000.log".to_string()
            ]
        );
        assert_eq!(log.backups().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn modes_are_upstreams() {
        assert_eq!("blocking".parse::<Mode>(), Ok(Mode::Blocking));
        assert_eq!("blocking-strict".parse::<Mode>(), Ok(Mode::Blocking));
        assert_eq!("batch".parse::<Mode>(), Ok(Mode::Batch));
        assert!("async".parse::<Mode>().is_err());
    }
}
