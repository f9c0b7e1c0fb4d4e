//! fastzarr's Rust core: reads Zarr arrays into numpy, decoding chunks in parallel.
//!
//! This file only registers the Python module; the work lives in the modules below. Without
//! the `python` feature (`cargo test --no-default-features`, the fuzz targets) the crate is
//! the core alone, with no Python types and no libpython.

pub mod array;
pub mod block_tables;
pub mod blosc;
pub mod codecs;
pub mod errors;
pub mod fetch;
pub mod fork;
pub mod group;
pub mod host_limit;
pub mod inventory;
pub mod limits;
pub mod metadata;
pub mod object_config;
pub mod paths;
pub mod plan;
pub mod prefixed;
#[cfg(feature = "python")]
pub mod py;
pub mod read;
pub mod read_ahead;
pub mod runtime;
pub mod shard_index;
pub mod stats;
pub mod store;
pub mod strings;
pub mod write;
pub mod zeroed;

#[cfg(feature = "python")]
use pyo3::prelude::*;

// Safe without the GIL (it matters only to a free-threaded build, `make wheel-free-threaded`):
// every Python class is frozen (immutable after construction), the module's shared state is
// behind Rust's locks and atomics (the pools, the runtime, the remembered block tables, the
// settings) or PyO3's `PyOnceLock`, and the work runs with the GIL released on a GIL build too
// (tests/test_threads.py calls it from many threads at once). `make check-free-threaded`
// compiles and links it for CPython 3.14t; no free-threaded interpreter has run its tests.
#[cfg(feature = "python")]
#[pymodule(gil_used = false)]
mod _core {
    use super::{Bound, PyModule, PyModuleMethods, PyResult};
    use crate::py::errors;

    #[pymodule_export]
    use crate::py::aio::{open_array_async, read_many_async};
    #[pymodule_export]
    use crate::py::array::{_reopen_array, open_array, OuterIndexer, PyArray, VectorIndexer};
    #[pymodule_export]
    use crate::py::errors::{
        CorruptChunkError, FastzarrError, MetadataError, StoreChangedError, UnsupportedCodecError,
    };
    #[pymodule_export]
    use crate::py::functions::{
        _block_tables, _forget_block_tables, _host_answers, _plan_reads, _read_points_into,
        _remember_block_tables, get_io_concurrency, get_num_threads, get_partial_decoding,
        read_many, set_io_concurrency, set_num_threads, set_partial_decoding,
    };
    #[pymodule_export]
    use crate::py::group::{_read_ahead_tables, _reopen_group, open_group, open_groups, PyGroup};
    #[pymodule_export]
    use crate::py::guard::{_busy_count, _debug_panic};
    #[pymodule_export]
    use crate::py::inspect::_chunk_inventory;
    #[pymodule_export]
    use crate::py::stats::PyReadStats;
    #[pymodule_export]
    use crate::py::write::{
        _checksum_files, _exchange, _store_listing, _sync_dirs, _tree_listing, _verify_chunks,
        _write_files, _write_regions,
    };

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        crate::codecs::register();
        let py = m.py();
        m.add("StoreNotFoundError", errors::store_not_found_error(py)?)?;
        m.add("SelectionError", errors::selection_error(py)?)?;
        m.add("TimeoutError", errors::timeout_error(py)?)?;
        m.add("MemoryBudgetError", errors::memory_budget_error(py)?)?;
        m.add("InvalidPathError", errors::invalid_path_error(py)?)?;
        m.add("MemberNotFoundError", errors::member_not_found_error(py)?)?;
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        Ok(())
    }
}
