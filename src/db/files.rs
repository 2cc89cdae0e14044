//! Files that hold account data (the database with its password hashes, its WAL and shared
//! memory, backups, the lock and the token secret) are readable by the server's user only:
//! directories agora creates are 0700 and files 0600. SQLite creates the WAL and `-shm` files
//! with the permissions of the database file, so creating that file 0600 covers them.

use std::{fs, io, path::Path};

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

/// Creates `dir` (and missing parents) with mode 0700. An existing directory is left as it is
/// (it may be shared, like the current directory), with a warning when others can read it.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    if dir.is_dir() {
        #[cfg(unix)]
        if fs::metadata(dir)?.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %dir.display(),
                "the data directory is accessible to other users; agora's own files in it are 0600"
            );
        }
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir)
}

/// Options that create a file with mode 0600.
pub fn private_file() -> fs::OpenOptions {
    let mut options = fs::OpenOptions::new();
    #[cfg(unix)]
    options.mode(0o600);
    options
}

/// Creates the database file at `path` with mode 0600 when it is missing, and takes away
/// other users' access to it, its WAL and its shared-memory file when they exist (databases
/// created by an older agora were 0644).
pub fn make_db_private(path: &Path) -> io::Result<()> {
    private_file()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    #[cfg(unix)]
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        match fs::metadata(file) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                fs::set_permissions(file, fs::Permissions::from_mode(0o600))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
