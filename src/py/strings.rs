//! numpy results of variable-length arrays: `StringDType` for strings, object arrays of
//! `bytes` for bytes (as zarr-python reads them).

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};

use crate::array::{ArrayHandle, Variable};
use crate::errors::{Error, Result};
use crate::plan::{PointSet, Selection};
use crate::runtime::Cancel;
use crate::stats::ReadStats;
use crate::strings::Elements;

/// A request of `read_many` on a variable-length array: read after the fixed-size ones,
/// its result put at `index` of the results.
pub struct StringRequest {
    pub index: usize,
    pub handle: Arc<ArrayHandle>,
    pub selection: Selection,
    pub points: Option<PointSet>,
    pub shape: Vec<u64>,
}

/// Reads every string request (on the pool, without the GIL).
pub fn read_all(requests: &[StringRequest], cancel: &Cancel) -> Result<(Vec<Elements>, ReadStats)> {
    let mut stats = ReadStats::default();
    let mut read = Vec::with_capacity(requests.len());
    for request in requests {
        let (elements, pass) = crate::strings::read(
            &request.handle,
            &request.selection,
            request.points.as_ref(),
            cancel,
        )?;
        stats = stats.plus(pass);
        read.push(elements);
    }
    Ok((read, stats))
}

/// Puts each request's numpy result into `results`.
pub fn fill<'py>(
    py: Python<'py>,
    results: &Bound<'py, PyList>,
    requests: &[StringRequest],
    read: &[Elements],
) -> Result<()> {
    for (request, elements) in requests.iter().zip(read) {
        let array = to_numpy(py, &request.handle, elements, &request.shape)?;
        results.set_item(request.index, array)?;
    }
    Ok(())
}

/// The numpy array of `elements` in `shape`.
pub fn to_numpy<'py>(
    py: Python<'py>,
    handle: &ArrayHandle,
    elements: &Elements,
    shape: &[u64],
) -> Result<Bound<'py, PyAny>> {
    let kind = handle.dtype().variable();
    let mut items: Vec<Py<PyAny>> = Vec::with_capacity(elements.len());
    for i in 0..elements.len() {
        let bytes = elements.get(i);
        items.push(match kind {
            // Checked by the codec, or a fill value from the metadata's JSON; Python checks
            // it once more as it decodes.
            Some(Variable::Utf8) => PyString::from_bytes(py, bytes)
                .map_err(|e| Error::Metadata {
                    url: handle.store().url().to_string(),
                    file: handle.path().to_string(),
                    reason: format!("a string that is not UTF-8: {e}"),
                })?
                .into_any()
                .unbind(),
            _ => PyBytes::new(py, bytes).into_any().unbind(),
        });
    }
    // An object array that takes the references over (no list in between); numpy converts
    // objects to StringDType faster than it fills one from a list.
    let objects = numpy::PyArray1::from_vec(py, items).into_any();
    let flat = match kind {
        Some(Variable::Utf8) => {
            let dtype = crate::py::output::numpy_dtype(py, handle.dtype())?;
            objects.call_method1("astype", (dtype,))?
        }
        _ => objects,
    };
    Ok(flat.call_method1("reshape", (shape.to_vec(),))?)
}
