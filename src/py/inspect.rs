//! `_chunk_inventory`: the stored chunk count and bytes of an array, for `fastzarr.inspect`.

use pyo3::prelude::*;

use crate::errors::Result;
use crate::inventory::inventory;
use crate::py::array::PyArray;

/// `(chunk objects stored, their total bytes)` for `array`, from one listing of its prefix.
#[pyfunction]
pub fn _chunk_inventory(py: Python<'_>, array: &Bound<'_, PyArray>) -> Result<(u64, u64)> {
    let handle = array.get().handle.clone();
    let found = py.detach(move || inventory(handle.store(), handle.path()))?;
    Ok((found.chunks, found.bytes))
}
