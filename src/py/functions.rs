//! Module-level functions: `read_many` and the thread settings.

use std::time::Instant;

use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use crate::errors::Result;
use crate::plan::Selection;
use crate::py::array::PyArray;
use crate::py::stats::PyReadStats;
use crate::py::{detach_cancellable, output, selection};
use crate::read::{read_many as read_requests, ReadRequest};

/// Reads many `(array, selection)` pairs in ONE parallel pass over all their chunks;
/// with `return_stats=True` also returns what the pass did. `timeout` (seconds) bounds
/// the whole pass; Ctrl-C stops it.
#[pyfunction]
#[pyo3(signature = (requests, *, return_stats = false, timeout = None))]
pub fn read_many<'py>(
    py: Python<'py>,
    requests: Vec<(PyRef<'py, PyArray>, Bound<'py, PyAny>)>,
    return_stats: bool,
    timeout: Option<f64>,
) -> Result<Bound<'py, PyAny>> {
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
    let started = Instant::now();
    let stats = detach_cancellable(py, timeout, |cancel| read_requests(&reads, cancel))?;
    let results = PyList::new(py, results)?.into_any();
    if !return_stats {
        return Ok(results);
    }
    let bytes_out = reads
        .iter()
        .map(|r| r.selection.num_elements() * r.array.dtype().itemsize as u64)
        .sum();
    let stats = PyReadStats {
        stats,
        bytes_out,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    Ok(PyTuple::new(py, [results, Bound::new(py, stats)?.into_any()])?.into_any())
}

/// Sets the number of threads fastzarr decodes with (default: `FASTZARR_NUM_THREADS` or all cores).
#[pyfunction]
pub fn set_num_threads(n: usize) -> Result<()> {
    crate::runtime::set_num_threads(n)
}

/// The number of threads fastzarr decodes with.
#[pyfunction]
pub fn get_num_threads() -> Result<usize> {
    crate::runtime::num_threads()
}
