//! Resolves a URL (plus storage options) to a zarrs storage.
//!
//! Readers only ever see a [`Store`]; adding a scheme means adding a branch here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use zarrs::storage::{ReadableListableStorage, StoreKey, StorePrefix};

use crate::errors::{Error, Result};

/// Options that shape how a store is reached (object storage keys, later).
pub type StorageOptions = BTreeMap<String, String>;

/// An opened store: the storage and the URL it was opened from.
pub struct Store {
    url: String,
    options: StorageOptions,
    storage: ReadableListableStorage,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store rooted at `url`.
    pub fn open(url: &str, options: StorageOptions) -> Result<Arc<Self>> {
        let storage = match url.split_once("://") {
            None => open_local(url, url)?,
            Some(("file", path)) => open_local(url, path)?,
            Some(_) => {
                return Err(Error::UnsupportedUrl {
                    url: url.to_string(),
                })
            }
        };
        Ok(Arc::new(Self {
            url: url.to_string(),
            options,
            storage,
        }))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn options(&self) -> &StorageOptions {
        &self.options
    }

    pub fn storage(&self) -> &ReadableListableStorage {
        &self.storage
    }

    /// Reads a whole key; `None` when it does not exist.
    pub fn get(&self, key: &str) -> Result<Option<zarrs::storage::Bytes>> {
        let store_key = self.key(key)?;
        self.storage.get(&store_key).map_err(|e| Error::Storage {
            url: self.url.clone(),
            key: key.to_string(),
            reason: e.to_string(),
        })
    }

    /// Names of the child prefixes directly below `prefix` ("" is the root).
    pub fn child_names(&self, prefix: &str) -> Result<Vec<String>> {
        let store_prefix =
            StorePrefix::new(prefix).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let listing = self
            .storage
            .list_dir(&store_prefix)
            .map_err(|e| Error::Storage {
                url: self.url.clone(),
                key: prefix.to_string(),
                reason: e.to_string(),
            })?;
        Ok(listing
            .prefixes()
            .iter()
            .filter_map(|p| {
                let name = p.as_str().strip_prefix(prefix)?.trim_end_matches('/');
                (!name.is_empty()).then(|| name.to_string())
            })
            .collect())
    }

    fn key(&self, key: &str) -> Result<StoreKey> {
        StoreKey::new(key)
            .map_err(|e| Error::InvalidArgument(format!("invalid key in store {}: {e}", self.url)))
    }
}

fn open_local(url: &str, path: &str) -> Result<ReadableListableStorage> {
    let path = PathBuf::from(path);
    if !path.is_dir() {
        return Err(Error::StoreNotFound {
            url: url.to_string(),
        });
    }
    // Confined: no key, symlink or `..` reads outside the store's directory (paths.rs).
    let store = crate::paths::ConfinedStore::new(&path).map_err(|e| Error::Storage {
        url: url.to_string(),
        key: String::new(),
        reason: e.to_string(),
    })?;
    Ok(Arc::new(store))
}

/// Joins a node path ("" is the root) and a key below it.
pub fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}/{name}")
    }
}
