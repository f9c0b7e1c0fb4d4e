//! What an array holds in its store: how many chunk objects exist and how many bytes they take.
//!
//! `fastzarr.inspect` compares this with the chunk grid to report missing chunks and the
//! stored (compressed) size. One listing of the array's prefix, not one request per chunk.

use zarrs::storage::{StoreKey, StorePrefix};

use crate::errors::{Error, Result};
use crate::store::Store;

/// Files that hold metadata rather than chunks.
const METADATA_NAMES: [&str; 5] = [".zarray", ".zattrs", ".zgroup", ".zmetadata", "zarr.json"];

/// The stored chunk objects of one array (shards, for sharded arrays).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Inventory {
    /// Chunk objects present.
    pub chunks: u64,
    /// Their total size in bytes, as stored (compressed).
    pub bytes: u64,
}

/// Whether `key` names a metadata document rather than a chunk.
pub fn is_metadata_key(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key);
    METADATA_NAMES.contains(&name)
}

/// Lists the chunk objects stored below the array at `path` ("" = the store root).
pub fn inventory(store: &Store, path: &str) -> Result<Inventory> {
    let prefix_text = if path.is_empty() {
        String::new()
    } else {
        format!("{}/", path.trim_end_matches('/'))
    };
    let storage_error = |e: &dyn std::fmt::Display| Error::Storage {
        url: store.url().to_string(),
        key: prefix_text.clone(),
        reason: e.to_string(),
    };
    let prefix = StorePrefix::new(prefix_text.as_str())
        .map_err(|e| Error::InvalidPath(format!("invalid array path '{path}': {e}")))?;
    let storage = store.storage();
    let keys = storage
        .list_prefix(&prefix)
        .map_err(|e| storage_error(&e))?;
    let total = storage
        .size_prefix(&prefix)
        .map_err(|e| storage_error(&e))?;
    let mut metadata_bytes = 0;
    let mut chunks = 0;
    for key in &keys {
        if is_metadata_key(key.as_str()) {
            metadata_bytes += size_of_key(store, key)?;
        } else {
            chunks += 1;
        }
    }
    Ok(Inventory {
        chunks,
        bytes: total.saturating_sub(metadata_bytes),
    })
}

fn size_of_key(store: &Store, key: &StoreKey) -> Result<u64> {
    let size = store.storage().size_key(key).map_err(|e| Error::Storage {
        url: store.url().to_string(),
        key: key.as_str().to_string(),
        reason: e.to_string(),
    })?;
    Ok(size.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StorageOptions;

    #[test]
    fn metadata_keys_are_not_chunks() {
        assert!(is_metadata_key("temp/.zarray"));
        assert!(is_metadata_key("zarr.json"));
        assert!(is_metadata_key("a/b/.zattrs"));
        assert!(!is_metadata_key("temp/0.0.0"));
        assert!(!is_metadata_key("temp/c/0/1"));
        assert!(!is_metadata_key("temp/zarr.json.bak"));
    }

    #[test]
    fn counts_chunks_and_bytes_below_the_array_only() {
        let dir = tempfile::tempdir().unwrap();
        let write = |rel: &str, len: usize| {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, vec![7u8; len]).unwrap();
        };
        write("t/.zarray", 100);
        write("t/.zattrs", 10);
        write("t/0.0", 40);
        write("t/0.1", 2);
        write("t/1/0", 5); // nested separator
        write("tt/0.0", 1000); // a sibling whose name starts alike
        let store = Store::open(dir.path().to_str().unwrap(), StorageOptions::new()).unwrap();
        assert_eq!(
            inventory(&store, "t").unwrap(),
            Inventory {
                chunks: 3,
                bytes: 47
            }
        );
        assert_eq!(
            inventory(&store, "tt").unwrap(),
            Inventory {
                chunks: 1,
                bytes: 1000
            }
        );
        assert_eq!(inventory(&store, "absent").unwrap(), Inventory::default());
    }
}
