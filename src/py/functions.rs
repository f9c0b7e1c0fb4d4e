//! Module-level functions: `read_many` and the thread settings.

use std::time::Instant;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::errors::{Error, Result};
use crate::plan::{AxisIndex, PointSet, Selection};
use crate::py::array::PyArray;
use crate::py::stats::PyReadStats;
use crate::py::{detach_cancellable, output, selection};
use crate::read::{read_many as read_requests, ReadRequest};

/// One request: `(array, selection)`, or `(array, selection, points)` where `points`
/// maps axes to equally long integer arrays (a vectorized selection on those axes).
type RequestItem<'py> = (
    PyRef<'py, PyArray>,
    Bound<'py, PyAny>,
    Option<Bound<'py, PyDict>>,
);

fn type_error(message: &str) -> Error {
    Error::Python(pyo3::exceptions::PyTypeError::new_err(message.to_string()))
}

fn request_item<'py>(item: &Bound<'py, PyAny>) -> Result<RequestItem<'py>> {
    let array = |value: Bound<'py, PyAny>| -> Result<PyRef<'py, PyArray>> {
        value
            .extract::<PyRef<'py, PyArray>>()
            .map_err(|_| type_error("the first item of a request must be a fastzarr.Array"))
    };
    let tuple = item.cast::<PyTuple>().map_err(|_| {
        type_error("each request is (array, selection) or (array, selection, points)")
    })?;
    match tuple.len() {
        2 => Ok((array(tuple.get_item(0)?)?, tuple.get_item(1)?, None)),
        3 => {
            let points = tuple.get_item(2)?;
            let points = if points.is_none() {
                None
            } else {
                Some(points.cast_into::<PyDict>()?)
            };
            Ok((array(tuple.get_item(0)?)?, tuple.get_item(1)?, points))
        }
        n => Err(Error::InvalidArgument(format!(
            "a request has 2 or 3 items, not {n}"
        ))),
    }
}

fn point_set(points: &Bound<'_, PyDict>, shape: &[u64]) -> Result<PointSet> {
    let mut axes = Vec::new();
    let mut coords = Vec::new();
    for (axis, indices) in points.iter() {
        let axis: i64 = axis.extract()?;
        let resolved = if axis < 0 {
            axis + shape.len() as i64
        } else {
            axis
        };
        axes.push(
            usize::try_from(resolved).map_err(|_| Error::OutOfBounds(format!("no axis {axis}")))?,
        );
        let key = PyTuple::new(points.py(), [indices])?.into_any();
        match selection::parse_outer(&key)?.pop() {
            Some(AxisIndex::Array(values)) => coords.push(values),
            Some(AxisIndex::Int(value)) => coords.push(vec![value]),
            _ => {
                return Err(Error::InvalidSelection(
                    "points must be integer arrays".into(),
                ))
            }
        }
    }
    PointSet::new(axes, coords, shape)
}

/// Reads many `(array, selection)` pairs in ONE parallel pass over all their chunks;
/// a third item, `{axis: indices, ...}`, reads points on those axes (one output axis of
/// points where the first point axis was). With `return_stats=True` also returns what
/// the pass did. `timeout` (seconds) bounds the whole pass; Ctrl-C stops it.
#[pyfunction]
#[pyo3(signature = (requests, *, return_stats = false, timeout = None))]
pub fn read_many<'py>(
    py: Python<'py>,
    requests: Vec<Bound<'py, PyAny>>,
    return_stats: bool,
    timeout: Option<f64>,
) -> Result<Bound<'py, PyAny>> {
    crate::py::guard::catch(|| read_many_unguarded(py, requests, return_stats, timeout))
}

fn read_many_unguarded<'py>(
    py: Python<'py>,
    requests: Vec<Bound<'py, PyAny>>,
    return_stats: bool,
    timeout: Option<f64>,
) -> Result<Bound<'py, PyAny>> {
    let items: Vec<RequestItem<'py>> = requests.iter().map(request_item).collect::<Result<_>>()?;
    let handles: Vec<_> = items
        .iter()
        .map(|(array, _, _)| array.handle.clone())
        .collect();
    let mut results = Vec::with_capacity(items.len());
    let mut reads = Vec::with_capacity(items.len());
    for ((_, key, points), handle) in items.iter().zip(&handles) {
        let selection = Selection::new(&selection::parse_outer(key)?, handle.shape())?;
        let points = points
            .as_ref()
            .map(|p| point_set(p, handle.shape()))
            .transpose()?;
        let (alloc_shape, result_shape) = match &points {
            None => (selection.full_shape(), selection.output_shape()),
            Some(points) => {
                let shape = points.layout(&selection).0;
                (shape.clone(), shape)
            }
        };
        let full = output::allocate(py, handle.dtype(), &alloc_shape)?;
        let output = output::writable_buffer(&full, handle.dtype(), &alloc_shape)?;
        results.push(full.call_method1("reshape", (result_shape,))?);
        reads.push(ReadRequest {
            array: handle,
            selection,
            points,
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
        .map(|r| r.num_elements() * r.array.dtype().itemsize as u64)
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
