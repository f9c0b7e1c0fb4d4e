//! A store seen from one of its arrays: keys are relative to the array's path.
//!
//! zarrs refuses node paths with a component beginning with `__` (the v3 specification
//! reserves the prefix), yet zarr-python and xarray write such arrays: every unnamed
//! `DataArray.to_zarr()` makes `__xarray_dataarray_variable__`. Such an array is opened by
//! zarrs at the root of this view, and its chunk keys are prefixed back (see
//! `ArrayHandle::chunk_key`).

use std::sync::Arc;

use zarrs::storage::{
    byte_range::ByteRangeIterator, MaybeBytesIterator, ReadableStorageTraits, StorageError,
    StoreKey,
};

pub struct PrefixedStorage {
    inner: Arc<dyn ReadableStorageTraits>,
    /// The array's path followed by `/`.
    prefix: String,
}

impl PrefixedStorage {
    pub fn new(inner: Arc<dyn ReadableStorageTraits>, path: &str) -> Self {
        Self {
            inner,
            prefix: format!("{path}/"),
        }
    }

    /// The key of the whole store for `key`, relative to the array.
    pub fn full_key(&self, key: &StoreKey) -> Result<StoreKey, StorageError> {
        Ok(StoreKey::new(format!("{}{}", self.prefix, key.as_str()))?)
    }
}

impl ReadableStorageTraits for PrefixedStorage {
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        self.inner
            .get_partial_many(&self.full_key(key)?, byte_ranges)
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        self.inner.size_key(&self.full_key(key)?)
    }

    fn supports_get_partial(&self) -> bool {
        self.inner.supports_get_partial()
    }
}
