//! Keeps every read of a local store inside its root directory.
//!
//! Keys reach the filesystem from metadata we do not control (consolidated entries,
//! member names) and from users (array paths). [`checked_key`] refuses any key that
//! could name a file elsewhere (`..`, absolute, backslashes, NUL, empty parts), and
//! [`ConfinedStore`] also refuses a key whose file resolves, through symlinks, to a
//! place outside the root: a store is what lies below its directory, nothing more.

use std::path::{Path, PathBuf};

use zarrs::storage::{
    byte_range::ByteRangeIterator, ListableStorageTraits, MaybeBytes, MaybeBytesIterator,
    ReadableStorageTraits, StorageError, StoreKey, StoreKeys, StoreKeysPrefixes, StorePrefix,
};
use zarrs_filesystem::FilesystemStore;

/// `key` if it names something below the root: relative, `/`-separated parts that are
/// neither empty, `.` nor `..`, with no backslash or NUL anywhere.
pub fn checked_key(key: &str) -> Option<&str> {
    let valid = !key.is_empty()
        && !key.contains(['\\', '\0'])
        && key
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    valid.then_some(key)
}

/// A filesystem store that reads only files inside its root.
#[derive(Debug)]
pub struct ConfinedStore {
    inner: FilesystemStore,
    /// The root with every symlink resolved.
    root: PathBuf,
    /// The root, held open: files are opened relative to it, the kernel keeping the lookup
    /// below it (`openat2` with `RESOLVE_BENEATH`); `None` where that is not available.
    #[cfg(target_os = "linux")]
    root_fd: Option<std::os::fd::OwnedFd>,
    /// Device and inode of the root when it was opened: a writer that replaces the store
    /// (`fastzarr.to_zarr(mode="w")`, a rewrite, an append) renames another directory to its
    /// path, and the held root then reads a deleted directory whose chunks vanish one by one.
    #[cfg(unix)]
    identity: Option<(u64, u64)>,
}

/// Device and inode of the directory at `path`; `None` when nothing is there.
#[cfg(unix)]
fn identity_of(path: &Path) -> std::io::Result<Option<(u64, u64)>> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(meta) => Ok(Some((meta.dev(), meta.ino()))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

impl ConfinedStore {
    pub fn new(path: &Path) -> Result<Self, StorageError> {
        let root = path.canonicalize()?;
        let inner = FilesystemStore::new(&root).map_err(|e| StorageError::Other(e.to_string()))?;
        #[cfg(target_os = "linux")]
        let root_fd = {
            use rustix::fs::{Mode, OFlags};
            let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
            rustix::fs::open(&root, flags, Mode::empty()).ok()
        };
        #[cfg(unix)]
        let identity = identity_of(&root)?;
        Ok(Self {
            inner,
            root,
            #[cfg(target_os = "linux")]
            root_fd,
            #[cfg(unix)]
            identity,
        })
    }

    /// The root directory, symlinks resolved.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the root's path no longer names the directory opened: replaced by another
    /// one, or deleted. Costs one `stat` of the root path.
    pub fn replaced(&self) -> bool {
        #[cfg(unix)]
        {
            match identity_of(&self.root) {
                Ok(now) => now != self.identity,
                // Unreadable now (permissions changed, say): not evidence of a replacement,
                // and the read itself will report what is wrong.
                Err(_) => false,
            }
        }
        #[cfg(not(unix))]
        {
            !self.root.is_dir()
        }
    }

    /// The file at `key`, opened for reading if it lies inside the root; `None` when missing.
    ///
    /// On Linux one `openat2` below the held-open root does the confinement: a point read
    /// from thousands of small chunks spent a quarter of its time in the lstat per path part
    /// that [`Self::check`] needs. Anything `openat2` refuses or cannot do (a symlink, which
    /// may still stay inside; an old kernel; a seccomp filter) takes the portable path.
    fn open_confined(&self, key: &str) -> Result<Option<std::fs::File>, StorageError> {
        #[cfg(target_os = "linux")]
        if let (Some(dir), Some(key)) = (&self.root_fd, checked_key(key)) {
            use rustix::fs::{Mode, OFlags, ResolveFlags};
            let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
            let flags = OFlags::RDONLY | OFlags::CLOEXEC;
            match rustix::fs::openat2(dir, key, flags, Mode::empty(), resolve) {
                Ok(fd) => return Ok(Some(std::fs::File::from(fd))),
                Err(rustix::io::Errno::NOENT) => return Ok(None),
                Err(_) => {}
            }
        }
        self.check(key)?;
        match std::fs::File::open(self.root.join(key)) {
            Ok(file) => Ok(Some(file)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Refuses a key outside the root: by its spelling, or because its file (or a
    /// directory on the way) is a symlink to somewhere else.
    fn check(&self, key: &str) -> Result<(), StorageError> {
        if key.is_empty() {
            return Ok(());
        }
        if checked_key(key).is_none() {
            return Err(StorageError::Other(format!(
                "'{key}' is not a key inside the store"
            )));
        }
        // The root is already resolved, so only the parts below it can be symlinks: one
        // lstat per part is far cheaper than resolving the whole path on every chunk read
        // (realpath reads every component of the absolute path).
        let mut path = self.root.clone();
        for part in key.split('/') {
            path.push(part);
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_symlink() => return self.check_resolved(key),
                Ok(_) => {}
                // Missing (a chunk never written, say): nothing is read.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    /// `range` of the file at `key` (clipped to its end) and the file's size; `None` when
    /// there is no such file. One open, one fstat and one read: zarrs' size-then-read pair
    /// checks the key and stats the file twice, which on a point read from thousands of
    /// chunks cost more than decoding their blocks.
    pub fn read_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Option<(bytes::Bytes, u64)>, StorageError> {
        use std::io::{Read, Seek, SeekFrom};
        let Some(file) = self.open_confined(key)? else {
            return Ok(None);
        };
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Ok(None);
        }
        let size = meta.len();
        let start = range.start.min(size);
        let end = range.end.clamp(start, size);
        let len = usize::try_from(end - start).map_err(|e| StorageError::Other(e.to_string()))?;
        // read_to_end fills spare capacity without clearing it first (vec![0; len] would).
        let mut bytes = Vec::with_capacity(len);
        let mut file = file;
        file.seek(SeekFrom::Start(start))?;
        file.take(end - start).read_to_end(&mut bytes)?;
        if bytes.len() != len {
            return Err(StorageError::Other(format!(
                "'{key}' shrank while it was read ({} of {len} bytes)",
                bytes.len()
            )));
        }
        Ok(Some((bytes.into(), size)))
    }

    /// An error when `key` is missing because the store was replaced or deleted: its chunks
    /// are not "never written, so fill value" (zarrs' partial shard reads come this way).
    fn refuse_if_replaced(&self, key: &str) -> Result<(), StorageError> {
        if self.replaced() {
            return Err(StorageError::Other(format!(
                "'{key}' vanished: {} was replaced or deleted after it was opened",
                self.root.display()
            )));
        }
        Ok(())
    }

    /// The slow path for a key with a symlink on the way: where does it really lead?
    fn check_resolved(&self, key: &str) -> Result<(), StorageError> {
        match self.root.join(key).canonicalize() {
            Ok(resolved) if resolved.starts_with(&self.root) => Ok(()),
            Ok(resolved) => Err(StorageError::Other(format!(
                "'{key}' is a symlink to {}, outside the store {}",
                resolved.display(),
                self.root.display()
            ))),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

impl ReadableStorageTraits for ConfinedStore {
    fn get(&self, key: &StoreKey) -> Result<MaybeBytes, StorageError> {
        Ok(self
            .read_range(key.as_str(), 0..u64::MAX)?
            .map(|(bytes, _)| bytes))
    }

    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        self.check(key.as_str())?;
        let parts = self.inner.get_partial_many(key, byte_ranges)?;
        if parts.is_none() {
            self.refuse_if_replaced(key.as_str())?;
        }
        Ok(parts)
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        self.check(key.as_str())?;
        let size = self.inner.size_key(key)?;
        if size.is_none() {
            self.refuse_if_replaced(key.as_str())?;
        }
        Ok(size)
    }

    fn supports_get_partial(&self) -> bool {
        self.inner.supports_get_partial()
    }
}

impl ListableStorageTraits for ConfinedStore {
    fn list(&self) -> Result<StoreKeys, StorageError> {
        self.inner.list()
    }

    fn list_prefix(&self, prefix: &StorePrefix) -> Result<StoreKeys, StorageError> {
        self.check(prefix.as_str().trim_end_matches('/'))?;
        self.inner.list_prefix(prefix)
    }

    fn list_dir(&self, prefix: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
        self.check(prefix.as_str().trim_end_matches('/'))?;
        self.inner.list_dir(prefix)
    }

    fn size_prefix(&self, prefix: &StorePrefix) -> Result<u64, StorageError> {
        self.check(prefix.as_str().trim_end_matches('/'))?;
        self.inner.size_prefix(prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_leave_the_root_are_refused() {
        for good in ["zarr.json", "a/b/c/0.0", "c/1/2", ".zarray", "a/.zattrs"] {
            assert_eq!(checked_key(good), Some(good));
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a\\..\\x",
            "a\0b",
            "a//b",
            "./a",
            "a/",
        ] {
            assert_eq!(checked_key(bad), None, "{bad:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_out_of_the_root_are_refused_inside_ones_kept() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"secret").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("data"), b"data").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("leak"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("dir")).unwrap();
        std::os::unix::fs::symlink(root.path().join("data"), root.path().join("alias")).unwrap();
        std::fs::create_dir(root.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("../data", root.path().join("sub/relative")).unwrap();
        // Relative, and leading out of the root to the secret.
        let outside_name = outside.path().file_name().unwrap().to_str().unwrap();
        let up = format!("../../{outside_name}/secret");
        std::os::unix::fs::symlink(up, root.path().join("sub/up")).unwrap();
        let store = ConfinedStore::new(root.path()).unwrap();
        let get = |key: &str| store.get(&StoreKey::new(key).unwrap());
        assert_eq!(get("data").unwrap().unwrap().as_ref(), b"data");
        assert_eq!(get("alias").unwrap().unwrap().as_ref(), b"data");
        assert_eq!(get("sub/relative").unwrap().unwrap().as_ref(), b"data");
        let range = |key: &str| store.read_range(key, 1..3);
        assert_eq!(range("sub/relative").unwrap().unwrap().0.as_ref(), b"at");
        assert!(get("missing").unwrap().is_none());
        assert!(range("missing").unwrap().is_none());
        for bad in ["leak", "dir/secret", "../secret", "sub/up"] {
            assert!(range(bad).is_err(), "{bad}");
            let err = get(bad).unwrap_err().to_string();
            assert!(
                err.contains("outside") || err.contains("not a key"),
                "{bad}: {err}"
            );
        }
    }
}
