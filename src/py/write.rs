//! Bindings of the write path: encode numpy regions into chunk files, verify them, sync.
//!
//! These are private (`_`-prefixed) building blocks of `fastzarr.to_zarr` and the cache;
//! the Python layer writes metadata and decides where and when to rename.

use std::path::PathBuf;

use numpy::{PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::{Error, Result};
use crate::py::{detach_cancellable, url_string};
use crate::write::{self, ChunkRecord, WriteRegion};

/// `(array path, chunk key, stored size, CRC-32C)` as Python sees a chunk record.
type RecordTuple = (String, String, u64, u32);

/// The bytes of a C-contiguous numpy array, borrowed while `array` is alive.
fn contiguous_bytes<'a>(array: &'a Bound<'_, PyAny>) -> Result<(&'a [u8], Vec<u64>)> {
    let untyped = array.cast::<PyUntypedArray>().map_err(|_| {
        Error::InvalidArgument(format!("expected a numpy array, got {}", array.get_type()))
    })?;
    if !untyped.is_c_contiguous() {
        return Err(Error::InvalidArgument(
            "the array to write must be C-contiguous".into(),
        ));
    }
    let shape: Vec<u64> = untyped.shape().iter().map(|&n| n as u64).collect();
    let len = untyped.len() * untyped.dtype().itemsize();
    if len == 0 {
        return Ok((&[], shape));
    }
    // SAFETY: `untyped` is a live numpy array (checked by the cast above); we read its
    // data pointer only.
    #[allow(unsafe_code)]
    let data = unsafe {
        (*untyped.as_array_ptr())
            .fields
            .data
            .cast::<u8>()
            .cast_const()
    };
    // SAFETY: a C-contiguous array of `len` bytes at `data`, kept alive by `array`, which
    // the caller holds for the slice's lifetime `'a`. It is only read.
    #[allow(unsafe_code)]
    let bytes = unsafe { std::slice::from_raw_parts(data, len) };
    Ok((bytes, shape))
}

/// One region to write, as Python gives it: `(array path, metadata JSON, data, start)`.
type RegionItem<'py> = (String, String, Bound<'py, PyAny>, Vec<u64>);

/// Encodes the regions `(array_path, metadata, data, start)` into chunk files of the store
/// directory `store` in one parallel pass with the GIL released: `data` is C-contiguous,
/// native byte order, the array's dtype, and starts at `start` of the array at `array_path`,
/// whose metadata is the JSON `metadata` (parsed once per array, however many regions it has).
/// With `fsync=True` each file's writeback starts at once, unless the pass is large enough for
/// `_sync_dirs` to sync the whole filesystem (which then makes them durable). Returns, per
/// region, one `(array, key, size, crc32c)` per chunk written.
#[pyfunction]
#[pyo3(signature = (store, regions, *, fsync = true, timeout = None))]
pub fn _write_regions(
    py: Python<'_>,
    store: &Bound<'_, PyAny>,
    regions: Vec<RegionItem<'_>>,
    fsync: bool,
    timeout: Option<f64>,
) -> Result<Vec<Vec<RecordTuple>>> {
    let store_dir = PathBuf::from(url_string(store)?);
    let borrowed = regions
        .iter()
        .map(|(_, _, data, _)| contiguous_bytes(data))
        .collect::<Result<Vec<_>>>()?;
    let regions: Vec<WriteRegion<'_>> = regions
        .iter()
        .zip(&borrowed)
        .map(
            |((array_path, metadata, _, start), (bytes, shape))| WriteRegion {
                store_dir: &store_dir,
                array_path,
                metadata,
                start,
                shape,
                data: bytes,
                fsync,
            },
        )
        .collect();
    let records = detach_cancellable(py, timeout, |cancel| write::write_regions(&regions, cancel))?;
    Ok(records
        .into_iter()
        .map(|region| {
            region
                .into_iter()
                .map(|r| (r.array, r.key, r.size, r.crc32c))
                .collect()
        })
        .collect())
}

/// Writes the small files `(key, bytes)` (metadata documents) below the store directory
/// `store` in parallel, with the GIL released; keys are relative paths inside the store. With
/// `fsync=True` each file's writeback starts at once, as `_write_regions` does.
#[pyfunction]
#[pyo3(signature = (store, files, *, fsync = true, timeout = None))]
pub fn _write_files(
    py: Python<'_>,
    store: &Bound<'_, PyAny>,
    files: Vec<(String, Vec<u8>)>,
    fsync: bool,
    timeout: Option<f64>,
) -> Result<()> {
    let store_dir = PathBuf::from(url_string(store)?);
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(key, bytes)| (key.as_str(), bytes.as_slice()))
        .collect();
    detach_cancellable(py, timeout, |cancel| {
        write::write_files(&store_dir, &files, fsync, cancel)
    })
}

/// Re-reads every chunk of `records` (`(array, key, size, crc32c)`) below the store
/// directory `store`, in parallel; raises `CorruptChunkError` naming the store, array and
/// chunk of a missing file, a wrong size or a wrong checksum. Returns the bytes checked.
#[pyfunction]
#[pyo3(signature = (store, records, *, timeout = None))]
pub fn _verify_chunks(
    py: Python<'_>,
    store: &Bound<'_, PyAny>,
    records: Vec<RecordTuple>,
    timeout: Option<f64>,
) -> Result<u64> {
    let store_dir = PathBuf::from(url_string(store)?);
    let records: Vec<ChunkRecord> = records
        .into_iter()
        .map(|(array, key, size, crc32c)| ChunkRecord {
            array,
            key,
            size,
            crc32c,
        })
        .collect();
    detach_cancellable(py, timeout, |cancel| {
        write::verify_chunks(&store_dir, &records, cancel)
    })
}

/// Atomically swaps the paths `a` and `b`; `False` where the platform or the filesystem
/// cannot (Linux `renameat2(RENAME_EXCHANGE)`).
#[pyfunction]
pub fn _exchange(py: Python<'_>, a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> Result<bool> {
    let a = PathBuf::from(url_string(a)?);
    let b = PathBuf::from(url_string(b)?);
    crate::py::guard::detach(py, || write::exchange(&a, &b))
}

/// fsyncs every file and directory below (and including) `path`: what makes the chunks
/// `_write_region(fsync=True)` wrote durable.
#[pyfunction]
pub fn _sync_dirs(py: Python<'_>, path: &Bound<'_, PyAny>) -> Result<()> {
    let root = PathBuf::from(url_string(path)?);
    crate::py::guard::detach(py, || write::sync_tree(&root))
}

/// Every file below `path` as `relative path \t size \t mtime_ns \n` lines, sorted: the raw
/// material of a source fingerprint.
#[pyfunction]
pub fn _tree_listing<'py>(
    py: Python<'py>,
    path: &Bound<'py, PyAny>,
) -> Result<Bound<'py, PyBytes>> {
    let root = PathBuf::from(url_string(path)?);
    let listing = crate::py::guard::detach(py, || write::tree_listing(&root))?;
    Ok(PyBytes::new(py, &listing))
}

/// Every object of the object store at `url` as sorted `key \t size \t mtime \t ETag` lines
/// (the fingerprint of a remote cache source); `None` for a local store.
#[pyfunction]
#[pyo3(signature = (url, storage_options = None))]
pub fn _store_listing<'py>(
    py: Python<'py>,
    url: &Bound<'py, PyAny>,
    storage_options: Option<&Bound<'py, pyo3::types::PyDict>>,
) -> Result<Option<Bound<'py, PyBytes>>> {
    crate::py::guard::catch(|| {
        let url = url_string(url)?;
        let options = crate::py::storage_options::extract(storage_options)?;
        let listing = crate::py::guard::detach(py, || {
            crate::store::Store::open(&url, options)?.object_listing()
        })?;
        Ok(listing.map(|bytes| PyBytes::new(py, &bytes)))
    })
}

/// `(array, key, size, crc32c)` records of existing files below `store` (e.g. metadata files),
/// to be checked later by `_verify_chunks`.
#[pyfunction]
pub fn _checksum_files(
    py: Python<'_>,
    store: &Bound<'_, PyAny>,
    keys: Vec<String>,
) -> Result<Vec<RecordTuple>> {
    let store_dir = PathBuf::from(url_string(store)?);
    let records = crate::py::guard::detach(py, || write::checksum_files(&store_dir, &keys))?;
    Ok(records
        .into_iter()
        .map(|r| (r.array, r.key, r.size, r.crc32c))
        .collect())
}
