//! `_chunk_inventory`: the stored chunk count and bytes of arrays, for `fastzarr.inspect`.

use pyo3::prelude::*;
use rayon::prelude::*;

use crate::errors::Result;
use crate::inventory::inventory;
use crate::py::array::PyArray;
use crate::py::detach_cancellable;

/// `(chunk objects stored, their total bytes)` for each array, from one listing of each
/// array's prefix; the arrays are listed in parallel (object stores answer slowly, one by one).
#[pyfunction]
#[pyo3(signature = (arrays, *, timeout = None))]
pub fn _chunk_inventory(
    py: Python<'_>,
    arrays: Vec<PyRef<'_, PyArray>>,
    timeout: Option<f64>,
) -> Result<Vec<(u64, u64)>> {
    let handles: Vec<_> = arrays.into_iter().map(|a| a.handle.clone()).collect();
    detach_cancellable(py, timeout, |cancel| {
        handles
            .par_iter()
            .map(|h| {
                cancel.check()?;
                let found = inventory(h.store(), h.path())?;
                Ok((found.chunks, found.bytes))
            })
            .collect()
    })
}
