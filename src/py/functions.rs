//! Module-level functions: `read_many` and the thread settings.

use std::sync::Arc;
use std::time::Instant;

use numpy::PyUntypedArrayMethods;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::array::ArrayHandle;
use crate::errors::{Error, Result};
use crate::plan::{first_repeated, AxisIndex, PointSet, Selection};
use crate::py::array::PyArray;
use crate::py::stats::PyReadStats;
use crate::py::strings::StringRequest;
use crate::py::{detach_cancellable, output, selection};
use crate::read::{read_many as read_requests, OutputBuffer, ReadRequest};
use crate::runtime::Cancel;
use crate::stats::ReadStats;

/// One request: `(array, selection)`, or `(array, selection, points)` where `points`
/// maps axes to equally long integer arrays (a vectorized selection on those axes).
type RequestItem<'py> = (
    PyRef<'py, PyArray>,
    Bound<'py, PyAny>,
    Option<Bound<'py, PyDict>>,
);

fn type_error(message: &str) -> Error {
    pyo3::exceptions::PyTypeError::new_err(message.to_string()).into()
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

/// `err`, when it says that request `index` does not fit its array (indices, bounds, point
/// axes), prefixed with the request and the array: among many requests over many stores, the
/// bare reason leaves one guessing which.
fn about_request(py: Python<'_>, err: Error, index: usize, handle: &ArrayHandle) -> Error {
    let (url, path) = handle.store().locate(handle.path());
    let about = |message: String| {
        format!(
            "request {index} (on {}): {message}",
            crate::errors::array_in(&path, &url)
        )
    };
    match err {
        Error::OutOfBounds(message) => Error::OutOfBounds(about(message)),
        Error::InvalidSelection(message) => Error::InvalidSelection(about(message)),
        Error::InvalidArgument(message) => Error::InvalidArgument(about(message)),
        Error::Host(host) => {
            let err = crate::py::errors::host_pyerr(host);
            let message = about(err.value(py).to_string());
            PyErr::from_type(err.get_type(py), message).into()
        }
        other => other,
    }
}

/// The array, selection and points of request number `index`; an error names the request.
fn parse_request<'py>(
    py: Python<'py>,
    index: usize,
    array: &PyRef<'py, PyArray>,
    key: &Bound<'py, PyAny>,
    points: Option<&Bound<'py, PyDict>>,
) -> Result<(Arc<ArrayHandle>, Selection, Option<PointSet>)> {
    let handle = array.handle.clone();
    let parse = || -> Result<_> {
        let selection = Selection::new(&selection::parse_outer(key)?, handle.shape())?;
        let points = points.map(|p| point_set(p, handle.shape())).transpose()?;
        Ok((selection, points))
    };
    let (selection, points) = parse().map_err(|err| about_request(py, err, index, &handle))?;
    Ok((handle, selection, points))
}

/// One parsed request whose output is already allocated: what a read needs, owned.
pub struct Prepared {
    handle: Arc<ArrayHandle>,
    selection: Selection,
    points: Option<PointSet>,
    output: OutputBuffer,
}

/// Reads prepared requests in one pass.
pub fn read_prepared(prepared: Vec<Prepared>, cancel: &Cancel) -> Result<ReadStats> {
    let mut handles = Vec::with_capacity(prepared.len());
    let mut rest = Vec::with_capacity(prepared.len());
    for p in prepared {
        handles.push(p.handle);
        rest.push((p.selection, p.points, p.output));
    }
    let reads: Vec<ReadRequest<'_>> = handles
        .iter()
        .zip(rest)
        .map(|(array, (selection, points, output))| ReadRequest {
            array,
            selection,
            points,
            output,
        })
        .collect();
    read_requests(&reads, cancel)
}

/// Parses `requests` and allocates their outputs; returns them, the requests on arrays of
/// variable-length elements (whose results are made once read), and the list of results.
/// A read that would need more than `max_memory` bytes is refused before any allocation.
pub fn prepare_requests<'py>(
    py: Python<'py>,
    requests: &[Bound<'py, PyAny>],
    max_memory: Option<u64>,
) -> Result<(Vec<Prepared>, Vec<StringRequest>, Bound<'py, PyList>)> {
    let items: Vec<RequestItem<'py>> = requests.iter().map(request_item).collect::<Result<_>>()?;
    if max_memory.is_some() {
        let mut footprint = crate::limits::Footprint::new(crate::runtime::num_threads()?);
        for (index, (array, key, points)) in items.iter().enumerate() {
            if points.is_none() {
                crate::py::precheck_key(&mut footprint, &array.handle, key, true)
                    .map_err(|err| about_request(py, err, index, &array.handle))?;
            }
        }
        footprint.check(max_memory)?;
    }
    let mut parsed = Vec::with_capacity(items.len());
    let mut footprint = crate::limits::Footprint::new(crate::runtime::num_threads()?);
    for (index, (array, key, points)) in items.iter().enumerate() {
        let (handle, selection, points) = parse_request(py, index, array, key, points.as_ref())?;
        let (alloc_shape, result_shape) = match &points {
            None => (selection.full_shape(), selection.output_shape()),
            Some(points) => {
                let shape = points.layout(&selection).0;
                (shape.clone(), shape)
            }
        };
        let elements = alloc_shape
            .iter()
            .try_fold(1u64, |acc, &n| acc.checked_mul(n))
            .unwrap_or(u64::MAX);
        crate::py::add_to_footprint(&mut footprint, &handle, &selection, elements);
        parsed.push((handle, selection, points, alloc_shape, result_shape));
    }
    footprint.check(max_memory)?;
    let mut results = Vec::with_capacity(parsed.len());
    let mut prepared = Vec::with_capacity(parsed.len());
    let mut strings = Vec::new();
    for (index, (handle, selection, points, alloc_shape, result_shape)) in
        parsed.into_iter().enumerate()
    {
        if handle.dtype().variable().is_some() {
            results.push(py.None().into_bound(py));
            strings.push(StringRequest {
                index,
                handle,
                selection,
                points,
                shape: result_shape,
            });
            continue;
        }
        let full = output::allocate(py, &handle, &alloc_shape)?;
        let output = output::writable_buffer(&full, handle.dtype(), &alloc_shape)?;
        results.push(full.call_method1("reshape", (result_shape,))?);
        prepared.push(Prepared {
            handle,
            selection,
            points,
            output,
        });
    }
    Ok((prepared, strings, PyList::new(py, results)?))
}

/// What reading `requests` (as `read_many` takes them) would cost, from metadata alone: a dict
/// of `chunks`, `partial_fetches`, `first_requests`, `then_requests`, `bytes_decoded` and
/// `bytes_fetched` (see `read::ReadPlan`). Nothing is fetched or allocated.
#[pyfunction]
pub fn _plan_reads<'py>(
    py: Python<'py>,
    requests: Vec<Bound<'py, PyAny>>,
) -> Result<Bound<'py, PyDict>> {
    let items: Vec<RequestItem<'py>> = requests.iter().map(request_item).collect::<Result<_>>()?;
    let mut parsed = Vec::with_capacity(items.len());
    for (index, (array, key, points)) in items.iter().enumerate() {
        parsed.push(parse_request(py, index, array, key, points.as_ref())?);
    }
    let (handles, selections): (Vec<_>, Vec<_>) =
        parsed.into_iter().map(|(h, s, p)| (h, (s, p))).unzip();
    let plan = py.detach(|| {
        let reads: Vec<ReadRequest<'_>> = handles
            .iter()
            .zip(selections)
            .map(|(array, (selection, points))| ReadRequest {
                array,
                selection,
                points,
                output: OutputBuffer::none(),
            })
            .collect();
        crate::runtime::install(|| Ok(crate::read::plan_reads(&reads)))
    })?;
    let out = PyDict::new(py);
    out.set_item("chunks", plan.chunks)?;
    out.set_item("partial_fetches", plan.partial_fetches)?;
    out.set_item("first_requests", plan.first_requests)?;
    out.set_item("then_requests", plan.then_requests)?;
    out.set_item("bytes_decoded", plan.bytes_decoded)?;
    out.set_item("bytes_fetched", plan.bytes_fetched)?;
    out.set_item("tables_remembered", plan.tables_remembered)?;
    out.set_item("remembered_requests", plan.remembered_requests)?;
    Ok(out)
}

/// Reads many `(array, selection)` pairs in ONE parallel pass over all their chunks;
/// a third item, `{axis: indices, ...}`, reads points on those axes (one output axis of
/// points where the first point axis was). With `return_stats=True` also returns what
/// the pass did. `timeout` (seconds) bounds the whole pass; Ctrl-C stops it.
/// `max_memory` (bytes or "2GB") refuses, before allocating, a pass whose outputs and
/// decode buffers would need more (`MemoryBudgetError`).
#[pyfunction]
#[pyo3(signature = (requests, *, return_stats = false, timeout = None, max_memory = None))]
pub fn read_many<'py>(
    py: Python<'py>,
    requests: Vec<Bound<'py, PyAny>>,
    return_stats: bool,
    timeout: Option<f64>,
    max_memory: Option<&Bound<'py, PyAny>>,
) -> Result<Bound<'py, PyAny>> {
    crate::py::guard::catch(|| {
        let max_memory = crate::py::max_memory(max_memory)?;
        read_many_unguarded(py, requests, return_stats, timeout, max_memory)
    })
}

fn read_many_unguarded<'py>(
    py: Python<'py>,
    requests: Vec<Bound<'py, PyAny>>,
    return_stats: bool,
    timeout: Option<f64>,
    max_memory: Option<u64>,
) -> Result<Bound<'py, PyAny>> {
    let (prepared, strings, results) = prepare_requests(py, &requests, max_memory)?;
    let mut bytes_out: u64 = prepared
        .iter()
        .map(|p| {
            let elements: u64 = match &p.points {
                None => p.selection.num_elements(),
                Some(points) => points.layout(&p.selection).0.iter().product(),
            };
            elements * p.handle.dtype().itemsize as u64
        })
        .sum();
    let started = Instant::now();
    let (stats, read) = detach_cancellable(py, timeout, |cancel| {
        let stats = read_prepared(prepared, cancel)?;
        let (read, string_stats) = crate::py::strings::read_all(&strings, cancel)?;
        Ok((stats.plus(string_stats), read))
    })?;
    crate::py::strings::fill(py, &results, &strings, &read)?;
    bytes_out += read.iter().map(|e| e.data.len() as u64).sum::<u64>();
    let results = results.into_any();
    if !return_stats {
        return Ok(results);
    }
    let stats = PyReadStats {
        stats,
        bytes_out,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    Ok(PyTuple::new(py, [results, Bound::new(py, stats)?.into_any()])?.into_any())
}

/// One request of `_read_points_into`: `(array, selection, points, out, rows)`.
struct IntoRequest<'py> {
    array: PyRef<'py, PyArray>,
    key: Bound<'py, PyAny>,
    points: Bound<'py, PyDict>,
    out: Bound<'py, PyAny>,
    rows: Bound<'py, PyAny>,
}

fn into_request<'py>(item: &Bound<'py, PyAny>) -> Result<IntoRequest<'py>> {
    let shape_error = || type_error("each request is (array, selection, points, out, rows)");
    let tuple = item.cast::<PyTuple>().map_err(|_| shape_error())?;
    if tuple.len() != 5 {
        return Err(shape_error());
    }
    Ok(IntoRequest {
        array: tuple
            .get_item(0)?
            .extract::<PyRef<'py, PyArray>>()
            .map_err(|_| type_error("the first item of a request must be a fastzarr.Array"))?,
        key: tuple.get_item(1)?,
        points: tuple
            .get_item(2)?
            .cast_into::<PyDict>()
            .map_err(|_| type_error("the points of a request are a dict {axis: indices}"))?,
        out: tuple.get_item(3)?,
        rows: tuple.get_item(4)?,
    })
}

/// The output position of the point axis: after the kept axes before the first point axis.
fn point_axis_position(points: &PointSet, selection: &Selection) -> usize {
    let first = *points.axes.iter().min().expect("at least one point axis");
    (0..first)
        .filter(|&d| selection.axes[d].keep && !points.axes.contains(&d))
        .count()
}

/// Parses one request of `_read_points_into`: its points placed at `rows` of the point axis of
/// `out`, which must have the dtype and the shape (but for that axis) of the points' result.
fn prepare_into(py: Python<'_>, index: usize, request: &IntoRequest<'_>) -> Result<Prepared> {
    let (handle, selection, points) = parse_request(
        py,
        index,
        &request.array,
        &request.key,
        Some(&request.points),
    )?;
    let points = points.expect("points were given");
    let about = |err: Error| about_request(py, err, index, &handle);
    if handle.dtype().variable().is_some() {
        return Err(about(Error::InvalidArgument(
            "variable-length elements cannot be read into an output".into(),
        )));
    }
    let out_shape: Vec<u64> = request
        .out
        .cast::<numpy::PyUntypedArray>()
        .map_err(|_| about(Error::InvalidOutput("out must be a numpy array".into())))?
        .shape()
        .iter()
        .map(|&n| n as u64)
        .collect();
    let axis = point_axis_position(&points, &selection);
    let extent = *out_shape.get(axis).ok_or_else(|| {
        about(Error::InvalidOutput(format!(
            "out has {} dimensions, the points' result more",
            out_shape.len()
        )))
    })?;
    let parsed = selection::parse_outer(&PyTuple::new(py, [&request.rows])?.into_any())
        .map_err(about)?
        .pop();
    let Some(AxisIndex::Array(rows)) = parsed else {
        return Err(about(Error::InvalidSelection(
            "rows must be an integer array".into(),
        )));
    };
    let points = points.with_rows(&rows, extent).map_err(about)?;
    let shape = points.layout(&selection).0;
    let output = output::writable_buffer(&request.out, handle.dtype(), &shape).map_err(about)?;
    Ok(Prepared {
        handle,
        selection,
        points: Some(points),
        output,
    })
}

/// Requests whose outputs overlap must share one output (same memory, same shape) and fill
/// different rows of it: otherwise two decode threads could write the same bytes.
fn check_disjoint(prepared: &[Prepared]) -> Result<()> {
    let mut by_span: Vec<(usize, usize, usize)> = prepared
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let (start, end) = p.output.span();
            (start, end, k)
        })
        .filter(|(start, end, _)| start < end)
        .collect();
    by_span.sort_unstable();
    let mut k = 0;
    while k < by_span.len() {
        // One run of requests whose outputs overlap one another.
        let mut end = by_span[k].1;
        let mut run = k + 1;
        while run < by_span.len() && by_span[run].0 < end {
            end = end.max(by_span[run].1);
            run += 1;
        }
        let members = &by_span[k..run];
        let first = &prepared[members[0].2];
        let layout = |p: &Prepared| {
            p.points
                .as_ref()
                .map(|points| points.layout(&p.selection).0)
        };
        let mut rows: Vec<u64> = Vec::new();
        for &(start, stop, index) in members {
            let p = &prepared[index];
            if (start, stop) != first.output.span() || layout(p) != layout(first) {
                return Err(Error::InvalidOutput(format!(
                    "requests {} and {index} write to overlapping outputs that are not one output",
                    members[0].2
                )));
            }
            if let Some(points) = &p.points {
                rows.extend(points.rows.iter().flat_map(|r| r.row.iter().copied()));
            }
        }
        // One request's rows were checked when it was made; several sharing an output, here.
        let shared = members.len() > 1;
        if let Some(twice) = first_repeated(rows).filter(|_| shared) {
            return Err(Error::InvalidArgument(format!(
                "output row {twice} is given to two points of requests sharing one output"
            )));
        }
        k = run;
    }
    Ok(())
}

/// Reads points into outputs the caller allocated, in ONE parallel pass over all their chunks:
/// each request is `(array, selection, points, out, rows)`, point `p` going to row `rows[p]` of
/// `out`'s point axis. Requests may share one `out` (the samples of several stores, say) when
/// their rows differ. Returns what the pass did; `timeout` and `max_memory` as in `read_many`
/// (the outputs are the caller's, so only the decoding counts against `max_memory`).
#[pyfunction]
#[pyo3(signature = (requests, *, timeout = None, max_memory = None))]
pub fn _read_points_into<'py>(
    py: Python<'py>,
    requests: Vec<Bound<'py, PyAny>>,
    timeout: Option<f64>,
    max_memory: Option<&Bound<'py, PyAny>>,
) -> Result<PyReadStats> {
    crate::py::guard::catch(|| {
        let max_memory = crate::py::max_memory(max_memory)?;
        let items: Vec<IntoRequest<'py>> =
            requests.iter().map(into_request).collect::<Result<_>>()?;
        let prepared: Vec<Prepared> = items
            .iter()
            .enumerate()
            .map(|(index, item)| prepare_into(py, index, item))
            .collect::<Result<_>>()?;
        check_disjoint(&prepared)?;
        let mut footprint = crate::limits::Footprint::new(crate::runtime::num_threads()?);
        for p in &prepared {
            crate::py::add_to_footprint(&mut footprint, &p.handle, &p.selection, 0);
        }
        footprint.check(max_memory)?;
        let bytes_out = prepared.iter().map(bytes_written).sum();
        let started = Instant::now();
        let stats = detach_cancellable(py, timeout, |cancel| read_prepared(prepared, cancel))?;
        Ok(PyReadStats {
            stats,
            bytes_out,
            wall_seconds: started.elapsed().as_secs_f64(),
        })
    })
}

/// The bytes a prepared request of points writes into its output: its rows of it.
fn bytes_written(p: &Prepared) -> u64 {
    let Some(points) = &p.points else { return 0 };
    let output: u64 = points.layout(&p.selection).0.iter().product();
    output / points.extent().max(1) * points.len() as u64 * p.handle.dtype().itemsize as u64
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

/// Sets how many object-store requests fastzarr keeps in flight at most, over every host (default
/// 512, or half the open-file limit if lower); each host's adaptive limit stays under it.
#[pyfunction]
pub fn set_io_concurrency(n: usize) -> Result<()> {
    crate::runtime::set_io_concurrency(n)
}

/// How many object-store requests fastzarr keeps in flight at most.
#[pyfunction]
pub fn get_io_concurrency() -> usize {
    crate::runtime::io_concurrency()
}

/// Allows or forbids decoding blosc chunks block by block for the reads started afterwards
/// (default: allowed, unless `FASTZARR_PARTIAL_DECODING=0`). Forbidden, every read decodes
/// and fetches whole chunks, so damage anywhere in a chunk is found by every read of it.
#[pyfunction]
pub fn set_partial_decoding(enabled: bool) {
    crate::runtime::set_partial_decoding(enabled);
}

/// Whether reads may decode blosc chunks block by block.
#[pyfunction]
pub fn get_partial_decoding() -> bool {
    crate::runtime::partial_decoding()
}

/// The blosc block tables remembered for the store at `url`, as bytes for
/// `_remember_block_tables`.
#[pyfunction]
pub fn _block_tables<'py>(py: Python<'py>, url: &str) -> Bound<'py, pyo3::types::PyBytes> {
    let shown = crate::object_config::redact_url(url);
    pyo3::types::PyBytes::new(py, &crate::block_tables::export(&shown))
}

/// Remembers the block tables of `tables` (from `_block_tables`) for the store at `url`; how
/// many. Each is still checked against its object's `ETag` when it is used.
#[pyfunction]
pub fn _remember_block_tables(url: &str, tables: &[u8]) -> Result<usize> {
    let shown = crate::object_config::redact_url(url);
    crate::block_tables::import(&shown, tables)
        .map_err(|e| Error::InvalidArgument(format!("block tables of {shown}: {}", e.0)))
}

/// Forgets every remembered block table; returns how many there were.
#[pyfunction]
pub fn _forget_block_tables() -> usize {
    let count = crate::block_tables::len();
    crate::block_tables::clear();
    count
}

/// Each host (scheme, host and port; for S3-like URLs the bucket) this process sent HTTP
/// requests to: the requests it answered and their seconds to an answer's head, all told.
#[pyfunction]
pub fn _host_answers() -> std::collections::HashMap<String, (u64, f64)> {
    crate::runtime::host_answers()
        .into_iter()
        .map(|(host, answers)| (host, (answers.count, answers.seconds)))
        .collect()
}
