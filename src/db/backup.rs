//! Online backups, their verification and restoring one, plus the data-directory lock that
//! keeps two servers (or a restore and a server) off one database.

use std::{
    fs::File,
    path::{Path, PathBuf},
    time::Duration,
};

use rusqlite::{Connection, OpenFlags};
use time::OffsetDateTime;

use super::migrations::SCHEMA_VERSION;

/// Why a backup, check or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The destination exists already.
    #[error("{0} exists already; choose a new path")]
    Exists(String),
    /// The data directory is in use by a running server.
    #[error("a running agora server holds {0}; stop it first")]
    InUse(String),
    /// The copy is damaged or not an agora database.
    #[error("{path} failed its check: {why}")]
    Damaged {
        /// The file.
        path: String,
        /// What the check said.
        why: String,
    },
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// SQLite failed.
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BackupError + 'a {
    move |source| BackupError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// What a backup produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// The copy.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Copies the database in `db_file` to `dest` while it is in use: `VACUUM INTO` reads one
/// consistent snapshot (committed transactions only, the WAL included) without blocking
/// writers, and writes a compact copy. The copy is then checked with `integrity_check`; a copy
/// that fails it is deleted.
pub fn backup(db_file: &Path, dest: &Path) -> Result<Backup, BackupError> {
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        super::files::create_private_dir(dir).map_err(io("cannot create", dir))?;
    }
    // An empty 0600 file first (VACUUM INTO fills an empty file), so the copy of the password
    // hashes is never readable by others, not even for a moment.
    match super::files::private_file()
        .write(true)
        .create_new(true)
        .open(dest)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(BackupError::Exists(dest.display().to_string()))
        }
        Err(e) => return Err(io("cannot create", dest)(e)),
    }
    if let Err(e) = copy_into(db_file, dest).and_then(|()| verify(dest)) {
        let _ = std::fs::remove_file(dest);
        return Err(e);
    }
    let bytes = std::fs::metadata(dest)
        .map_err(io("cannot read", dest))?
        .len();
    Ok(Backup {
        path: dest.to_path_buf(),
        bytes,
    })
}

fn copy_into(db_file: &Path, dest: &Path) -> Result<(), BackupError> {
    // Not a pooled reader: those are `query_only`, which refuses VACUUM INTO.
    let conn = Connection::open_with_flags(db_file, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let target = dest.to_str().ok_or_else(|| BackupError::Damaged {
        path: dest.display().to_string(),
        why: "the path is not UTF-8".into(),
    })?;
    conn.execute("VACUUM INTO ?1", [target])?;
    Ok(())
}

/// Checks that `path` is an intact agora database this binary can open: `integrity_check`
/// says ok and its schema is not newer than this agora's.
pub fn verify(path: &Path) -> Result<(), BackupError> {
    let damaged = |why: String| BackupError::Damaged {
        path: path.display().to_string(),
        why,
    };
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| damaged(e.to_string()))?;
    let problems: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| damaged(e.to_string()))?;
    if problems != ["ok"] {
        return Err(damaged(problems.join("; ")));
    }
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if !(1..=SCHEMA_VERSION).contains(&version) {
        return Err(damaged(format!(
            "schema version {version}; this agora reads 1 to {SCHEMA_VERSION}"
        )));
    }
    Ok(())
}

/// Replaces the database in `data_dir` with the backup at `from`, after checking it. Refuses
/// while a server holds the directory. The replaced database (and its WAL) is kept beside it
/// as `agora.db.replaced-<time>`.
pub fn restore(from: &Path, data_dir: &Path) -> Result<PathBuf, BackupError> {
    verify(from)?;
    let _lock = DataDirLock::acquire(data_dir)?;
    let db_file = data_dir.join("agora.db");
    let staging = data_dir.join("agora.db.restoring");
    std::fs::copy(from, &staging).map_err(io("cannot copy to", &staging))?;
    File::open(&staging)
        .and_then(|f| f.sync_all())
        .map_err(io("cannot sync", &staging))?;
    let stamp = OffsetDateTime::now_utc().unix_timestamp();
    let kept = data_dir.join(format!("agora.db.replaced-{stamp}"));
    for suffix in ["", "-wal", "-shm"] {
        let old = data_dir.join(format!("agora.db{suffix}"));
        if old.exists() {
            let aside = PathBuf::from(format!("{}{suffix}", kept.display()));
            std::fs::rename(&old, &aside).map_err(io("cannot move aside", &old))?;
        }
    }
    std::fs::rename(&staging, &db_file).map_err(io("cannot move into place", &db_file))?;
    File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(io("cannot sync", data_dir))?;
    Ok(kept)
}

/// An exclusive lock on `<data-dir>/agora.lock`, held for as long as this value lives.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock, or says who holds it.
    pub fn acquire(data_dir: &Path) -> Result<Self, BackupError> {
        super::files::create_private_dir(data_dir).map_err(io("cannot create", data_dir))?;
        let path = data_dir.join("agora.lock");
        let file = super::files::private_file()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("cannot open", &path))?;
        match file.try_lock() {
            Ok(()) => Ok(DataDirLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(BackupError::InUse(data_dir.display().to_string()))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(io("cannot lock", &path)(e)),
        }
    }
}

/// Deletes the oldest `agora-*.db` backups in `dir` beyond the newest `keep`; returns how many.
pub fn prune(dir: &Path, keep: usize) -> Result<usize, BackupError> {
    let mut backups: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io("cannot list", dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("agora-") && n.ends_with(".db"))
        })
        .collect();
    // Names carry a sortable UTC time stamp.
    backups.sort();
    let excess = backups.len().saturating_sub(keep);
    for old in &backups[..excess] {
        std::fs::remove_file(old).map_err(io("cannot delete", old))?;
    }
    Ok(excess)
}

/// `agora-<UTC time>.db`, sortable by name.
pub fn file_name(now: OffsetDateTime) -> String {
    format!(
        "agora-{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z.db",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        assert!(matches!(
            DataDirLock::acquire(dir.path()),
            Err(BackupError::InUse(_))
        ));
        drop(first);
        assert!(DataDirLock::acquire(dir.path()).is_ok());
    }

    #[test]
    fn garbage_is_not_a_backup_and_old_backups_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, b"not a database at all, just text").unwrap();
        assert!(matches!(verify(&junk), Err(BackupError::Damaged { .. })));
        for n in 1..=5 {
            std::fs::write(
                dir.path().join(format!("agora-2026010{n}T000000.000Z.db")),
                b"x",
            )
            .unwrap();
        }
        assert_eq!(prune(dir.path(), 2).unwrap(), 3);
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("agora-"))
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "agora-20260104T000000.000Z.db",
                "agora-20260105T000000.000Z.db"
            ]
        );
        assert!(
            file_name(time::macros::datetime!(2026-11-24 05:06:07.089 UTC))
                .eq("agora-20261124T050607.089Z.db")
        );
    }
}
