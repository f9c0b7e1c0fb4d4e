//! Module-level functions: `read_many` and the thread settings.

use pyo3::prelude::*;

use crate::errors::Result;
use crate::plan::Selection;
use crate::py::array::PyArray;
use crate::py::{output, selection};
use crate::read::{read_many as read_requests, ReadRequest};

/// Reads many `(array, selection)` pairs in ONE parallel pass over all their chunks.
#[pyfunction]
pub fn read_many<'py>(
    py: Python<'py>,
    requests: Vec<(PyRef<'py, PyArray>, Bound<'py, PyAny>)>,
) -> Result<Vec<Bound<'py, PyAny>>> {
    let handles: Vec<_> = requests
        .iter()
        .map(|(array, _)| array.handle.clone())
        .collect();
    let mut results = Vec::with_capacity(requests.len());
    let mut reads = Vec::with_capacity(requests.len());
    for ((_, key), handle) in requests.iter().zip(&handles) {
        let selection = Selection::new(&selection::parse_outer(key)?, handle.shape())?;
        let full_shape = selection.full_shape();
        let full = output::allocate(py, handle.dtype(), &full_shape)?;
        let output = output::writable_buffer(&full, handle.dtype(), &full_shape)?;
        results.push(full.call_method1("reshape", (selection.output_shape(),))?);
        reads.push(ReadRequest {
            array: handle,
            selection,
            output,
        });
    }
    py.detach(|| read_requests(&reads))?;
    Ok(results)
}

/// Sets the number of threads fastzarr decodes with (default: `FASTZARR_NUM_THREADS` or all cores).
#[pyfunction]
pub fn set_num_threads(n: usize) -> Result<()> {
    crate::runtime::set_num_threads(n)
}

/// The number of threads fastzarr decodes with.
#[pyfunction]
pub fn get_num_threads() -> usize {
    crate::runtime::num_threads()
}
