//! File-system helpers with the safety rules wa-ctl relies on: private
//! directories that nobody else can write, and files replaced atomically.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A directory wa-ctl cannot use.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("cannot create {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} exists and is not a directory")]
    NotADirectory { path: PathBuf },
    #[error(
        "refusing to use {path}: it is writable by other users (mode {mode:04o}); run `chmod 700 {path}`"
    )]
    WorldWritable { path: PathBuf, mode: u32 },
    #[error("refusing to use {path}: it is owned by uid {owner}, not by this user (uid {uid})")]
    ForeignOwner { path: PathBuf, owner: u32, uid: u32 },
}

/// Creates `path` (and missing parents) with mode 0700, or checks that an
/// existing directory is owned by this user and not writable by others.
pub fn ensure_private_dir(path: &Path) -> Result<(), DirError> {
    match fs::metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|source| DirError::Create {
                    path: path.to_path_buf(),
                    source,
                })?;
        }
        Err(source) => {
            return Err(DirError::Create {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    let meta = fs::metadata(path).map_err(|source| DirError::Create {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(DirError::NotADirectory {
            path: path.to_path_buf(),
        });
    }
    let uid = nix::unistd::geteuid().as_raw();
    // Root may use directories owned by others (e.g. a dedicated service
    // user's), but nobody may use one that others can write into: they could
    // plant a lock, a socket or a session there.
    if meta.uid() != uid && uid != 0 {
        return Err(DirError::ForeignOwner {
            path: path.to_path_buf(),
            owner: meta.uid(),
            uid,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(DirError::WorldWritable {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Replaces `path` with `contents` atomically: a temporary file in the same
/// directory, fsync, rename, fsync of the directory. A reader sees the old
/// file or the new one, never a torn one, even after a crash.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        // O_NOFOLLOW: the directory may be a worker's (a hold is written
        // into the session directory); a planted symlink is not followed.
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The sibling [`replace_file`] writes before it swaps it with `path`.
pub fn next_file(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.next"))
}

/// Replaces `path` with `contents` atomically and cheaply, without fsync,
/// for a file rewritten often that need not survive a crash (the status
/// record). The contents are written in place into a sibling,
/// `.<name>.next`, which is then swapped with `path` in one
/// `renameat2(RENAME_EXCHANGE)`: a reader sees the old file or the new one,
/// never a torn one, and no inode is created or freed per write (creating
/// one costs about half a millisecond on ext4). Where the file system
/// cannot exchange, a plain rename does.
pub fn replace_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    let next = next_file(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&next)?;
    file.write_all(contents)?;
    file.set_len(contents.len() as u64)?;
    drop(file);
    match renameat2(
        AT_FDCWD,
        &next,
        AT_FDCWD,
        path,
        RenameFlags::RENAME_EXCHANGE,
    ) {
        Ok(()) => Ok(()),
        // No `path` yet, or a file system without exchange.
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::EINVAL) => fs::rename(&next, path),
        Err(e) => Err(e.into()),
    }
}

/// FNV-1a, 64 bits: a fixed function, the same in every process and
/// version. For identities (which session lock byte, which configuration
/// text), never for security.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_private_and_refuses_shared() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("a/b");
        ensure_private_dir(&d).unwrap();
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            ensure_private_dir(&d),
            Err(DirError::WorldWritable { .. })
        ));
        let f = tmp.path().join("file");
        fs::write(&f, "").unwrap();
        assert!(matches!(
            ensure_private_dir(&f),
            Err(DirError::NotADirectory { .. })
        ));
    }

    #[test]
    fn replace_file_swaps_two_inodes() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("status.json");
        replace_file(&p, b"first, longer", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"first, longer");
        replace_file(&p, b"second", 0o600).unwrap();
        assert_eq!(
            fs::read(&p).unwrap(),
            b"second",
            "no tail of the longer one"
        );
        let a = fs::metadata(&p).unwrap().ino();
        replace_file(&p, b"third", 0o600).unwrap();
        replace_file(&p, b"fourth", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"fourth");
        assert_eq!(
            fs::metadata(&p).unwrap().ino(),
            a,
            "the same two inodes take turns"
        );
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn atomic_write_replaces() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("s.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }
}
