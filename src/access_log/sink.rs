//! Where access-log lines go: one destination for the whole process,
//! standard output or a file opened for appending, set by [`configure`] and
//! reopened by [`reopen`].
//!
//! Each line is formatted into a buffer owned by the writing thread and
//! handed to the destination in one `write_all`, so lines from different
//! workers never interleave: a file is opened with `O_APPEND`, and standard
//! output is written under its lock. The destination is read under a
//! read lock, which only [`configure`] and [`reopen`] ever wait on as
//! writers, and only for the time it takes to swap an open file in.
//!
//! Until [`configure`] is called nothing is written: a program that embeds
//! [`crate::run`] decides where its access log goes.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use crate::config::{LogConfig, LogFormat};

/// The destination and the format of its lines.
#[derive(Debug)]
struct Sink {
    format: LogFormat,
    out: Out,
}

#[derive(Debug)]
enum Out {
    /// `log.access_log = false`.
    Off,
    Stdout,
    /// `path` is kept to open it again on [`reopen`].
    File {
        path: PathBuf,
        file: File,
    },
}

static SINK: RwLock<Option<Sink>> = RwLock::new(None);

/// A thread's line buffer grows to its longest line; one above this is
/// given back after it is written.
const KEPT_BUFFER: usize = 16 * 1024;

thread_local! {
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Sets the destination and format from `settings` (`access_log`,
/// `access_log_path`, `format`), replacing the current ones. Call at start
/// and again on each config reload; the path may change. On failure the
/// current destination stays, and the error names the path.
pub fn configure(settings: &LogConfig) -> io::Result<()> {
    let out = match (&settings.access_log, &settings.access_log_path) {
        (false, _) => Out::Off,
        (true, None) => Out::Stdout,
        (true, Some(path)) => Out::File {
            path: path.clone(),
            file: open(path)?,
        },
    };
    let sink = Sink {
        format: settings.format,
        out,
    };
    *SINK.write().unwrap_or_else(PoisonError::into_inner) = Some(sink);
    Ok(())
}

/// Opens the access log file again at the same path, so that after
/// logrotate renamed it new lines go to a new file there, while lines
/// already written stay in the renamed one. Nothing to do for standard
/// output. On failure the current file stays open and the error names the
/// path. The process calls this on SIGUSR1 (and on SIGHUP, as part of a
/// reload).
pub fn reopen() -> io::Result<()> {
    let path = match &*SINK.read().unwrap_or_else(PoisonError::into_inner) {
        Some(Sink {
            out: Out::File { path, .. },
            ..
        }) => path.clone(),
        _ => return Ok(()),
    };
    // Opened before taking the lock, so writers never wait on the disk.
    let reopened = open(&path)?;
    let mut sink = SINK.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(Sink {
        out: Out::File {
            path: current,
            file,
        },
        ..
    }) = &mut *sink
    {
        // A `configure` in between wins.
        if *current == path {
            *file = reopened;
        }
    }
    Ok(())
}

/// Writes one line, formatted by `line` into an empty buffer in the
/// configured format (without the final newline). Nothing is formatted
/// when the access log is off or not configured.
pub(super) fn emit(line: impl FnOnce(LogFormat, &mut Vec<u8>)) {
    let sink = SINK.read().unwrap_or_else(PoisonError::into_inner);
    let Some(sink) = &*sink else { return };
    if matches!(sink.out, Out::Off) {
        return;
    }
    LINE.with_borrow_mut(|buffer| {
        buffer.clear();
        line(sink.format, buffer);
        buffer.push(b'\n');
        // A line that cannot be written is lost: the request it describes
        // has been served, and there is nowhere better to say so.
        let _ = match &sink.out {
            Out::Off => Ok(()),
            Out::Stdout => io::stdout().lock().write_all(buffer),
            Out::File { file, .. } => (&*file).write_all(buffer),
        };
        if buffer.capacity() > KEPT_BUFFER {
            *buffer = Vec::new();
        }
    });
}

/// The file at `path` for appending, created readable by owner and group
/// only if it does not exist.
fn open(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
    options.open(path).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("cannot open the access log {}: {error}", path.display()),
        )
    })
}
