//! `fastzarr.Array`: a cheap, picklable handle on one Zarr array.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::array::ArrayHandle;
use crate::errors::Result;
use crate::limits::Footprint;
use crate::metadata::{read_node, Node};
use crate::plan::{AxisIndex, Selection};
use crate::py::{detach_cancellable, json_to_py, output, selection, storage_options};
use crate::read::{read_many, ReadRequest};
use crate::store::StorageOptions;

#[pyclass(name = "Array", module = "fastzarr", frozen)]
pub struct PyArray {
    pub handle: Arc<ArrayHandle>,
}

/// Opens the array at `path` ("" = the root) of the store at `url`.
pub fn open(url: &str, options: StorageOptions, path: &str) -> Result<ArrayHandle> {
    let store = crate::group::open_store(url, &options)?;
    match read_node(&store, path)
        .map_err(|err| crate::group::with_members(&store, &options, err))?
    {
        Node::Array(metadata) => ArrayHandle::new(store, path, metadata),
        Node::Group(_) => Err(crate::errors::Error::WrongNodeType {
            url: store.url().to_string(),
            path: path.to_string(),
            found: "a group",
            expected: "an array",
        }),
    }
}

impl PyArray {
    /// Reads `key` into a new array, or into `out` when given.
    fn read_into<'py>(
        &self,
        py: Python<'py>,
        indices: &[AxisIndex],
        out: Option<Bound<'py, PyAny>>,
        timeout: Option<f64>,
        max_memory: Option<u64>,
    ) -> Result<Bound<'py, PyAny>> {
        crate::py::guard::catch(|| self.read_into_unguarded(py, indices, out, timeout, max_memory))
    }

    fn read_into_unguarded<'py>(
        &self,
        py: Python<'py>,
        indices: &[AxisIndex],
        out: Option<Bound<'py, PyAny>>,
        timeout: Option<f64>,
        max_memory: Option<u64>,
    ) -> Result<Bound<'py, PyAny>> {
        let handle = &self.handle;
        let selection = Selection::new(indices, handle.shape())?;
        let output_shape = selection.output_shape();
        let mut footprint = Footprint::new(crate::runtime::num_threads()?);
        let allocated = if out.is_some() {
            0
        } else {
            selection.num_elements()
        };
        crate::py::add_to_footprint(&mut footprint, handle, &selection, allocated);
        footprint.check(max_memory)?;
        if handle.dtype().variable().is_some() {
            let (elements, _) = detach_cancellable(py, timeout, |cancel| {
                crate::strings::read(handle, &selection, None, cancel)
            })?;
            let result = crate::py::strings::to_numpy(py, handle, &elements, &output_shape)?;
            return match out {
                Some(out) => {
                    out.set_item(py.Ellipsis(), result)?;
                    Ok(out)
                }
                None => Ok(result),
            };
        }
        let (result, buffer) = if let Some(out) = out {
            let buffer = output::writable_buffer(&out, handle.dtype(), &output_shape)?;
            (out, buffer)
        } else {
            let full = output::allocate(py, handle, &selection.full_shape())?;
            let buffer = output::writable_buffer(&full, handle.dtype(), &selection.full_shape())?;
            (full.call_method1("reshape", (output_shape,))?, buffer)
        };
        let request = ReadRequest {
            array: handle,
            selection,
            points: None,
            output: buffer,
        };
        detach_cancellable(py, timeout, |cancel| {
            read_many(std::slice::from_ref(&request), cancel)
        })?;
        Ok(result)
    }
}

#[pymethods]
impl PyArray {
    /// Numpy basic indexing: ints, slices (any step), `...`; returns a new numpy array.
    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> Result<Bound<'py, PyAny>> {
        if selection::is_multidimensional_mask(key)? {
            return coordinates(py, "mask_selection", self, key);
        }
        let indices = selection::parse_numpy(key)?;
        self.read_into(py, &indices, None, None, None)
    }

    /// Reads `selection` (default: everything; integer arrays index their own axis),
    /// into `out` if given (C-contiguous, same dtype), within `timeout` seconds if given.
    /// `max_memory` (bytes or "2GB") refuses, before allocating, a read whose output and
    /// decode buffers would need more (`MemoryBudgetError`).
    #[pyo3(signature = (selection = None, *, out = None, timeout = None, max_memory = None))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        selection: Option<&Bound<'py, PyAny>>,
        out: Option<Bound<'py, PyAny>>,
        timeout: Option<f64>,
        max_memory: Option<&Bound<'py, PyAny>>,
    ) -> Result<Bound<'py, PyAny>> {
        let max_memory = crate::py::max_memory(max_memory)?;
        let indices = match selection {
            Some(key) => {
                if max_memory.is_some() {
                    let mut footprint = Footprint::new(crate::runtime::num_threads()?);
                    crate::py::precheck_key(&mut footprint, &self.handle, key, out.is_none())?;
                    footprint.check(max_memory)?;
                }
                selection::parse_outer(key)?
            }
            None => vec![AxisIndex::Ellipsis],
        };
        self.read_into(py, &indices, out, timeout, max_memory)
    }

    /// `Array.read` as an awaitable: the event loop stays free while the pool reads.
    #[pyo3(signature = (selection = None, *, timeout = None, max_memory = None))]
    fn read_async<'py>(
        &self,
        py: Python<'py>,
        selection: Option<&Bound<'py, PyAny>>,
        timeout: Option<f64>,
        max_memory: Option<&Bound<'py, PyAny>>,
    ) -> Result<Bound<'py, PyAny>> {
        crate::py::aio::read_async(self, py, selection, timeout, max_memory)
    }

    /// Coordinate selection like zarr-python's: `array.vindex[[0, 5], [3, 1]]` reads the
    /// points (0, 3) and (5, 1); `array.vindex[mask]` the true elements of a boolean mask.
    #[getter]
    fn vindex(&self) -> VectorIndexer {
        VectorIndexer {
            array: PyArray {
                handle: self.handle.clone(),
            },
        }
    }

    /// Outer indexing: `array.oindex[[0, 5], :, [3, 1]]` indexes each axis independently.
    #[getter]
    fn oindex(&self) -> OuterIndexer {
        OuterIndexer {
            array: PyArray {
                handle: self.handle.clone(),
            },
        }
    }

    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyTuple>> {
        Ok(PyTuple::new(py, self.handle.shape())?)
    }

    #[getter]
    fn ndim(&self) -> usize {
        self.handle.shape().len()
    }

    #[getter]
    fn size(&self) -> u64 {
        self.handle.shape().iter().product()
    }

    #[getter]
    fn dtype<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyAny>> {
        output::numpy_dtype(py, self.handle.dtype())
    }

    /// The chunk shape (the inner chunks of a sharded array, as zarr-python says).
    #[getter]
    fn chunks<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyTuple>> {
        let chunks = self
            .handle
            .inner_chunk_shape()
            .unwrap_or_else(|| self.handle.chunk_shape().to_vec());
        Ok(PyTuple::new(py, chunks)?)
    }

    /// The shard shape of a sharded array, else None.
    #[getter]
    fn shards<'py>(&self, py: Python<'py>) -> Result<Option<Bound<'py, PyTuple>>> {
        match self.handle.inner_chunk_shape() {
            Some(_) => Ok(Some(PyTuple::new(py, self.handle.chunk_shape())?)),
            None => Ok(None),
        }
    }

    /// The fill value as a numpy scalar; None for a v2 `fill_value: null` (like zarr-python;
    /// missing chunks then read as zeros).
    #[getter]
    fn fill_value<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyAny>> {
        let metadata = self.handle.metadata_json();
        if metadata
            .get("zarr_format")
            .and_then(serde_json::Value::as_u64)
            == Some(2)
            && metadata
                .get("fill_value")
                .is_some_and(serde_json::Value::is_null)
        {
            return Ok(py.None().into_bound(py));
        }
        match self.handle.dtype().variable() {
            Some(crate::array::Variable::Utf8) => {
                let text = String::from_utf8_lossy(self.handle.fill_value_bytes());
                return Ok(pyo3::types::PyString::new(py, &text).into_any());
            }
            Some(crate::array::Variable::Bytes) => {
                return Ok(
                    pyo3::types::PyBytes::new(py, self.handle.fill_value_bytes()).into_any(),
                );
            }
            None => {}
        }
        let numpy = py.import("numpy")?;
        let bytes = pyo3::types::PyBytes::new(py, self.handle.fill_value_bytes());
        let dtype = output::numpy_dtype(py, self.handle.dtype())?;
        Ok(numpy
            .getattr("frombuffer")?
            .call1((bytes, dtype))?
            .get_item(0)?)
    }

    #[getter]
    fn attrs<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyDict>> {
        crate::py::map_to_py(py, self.handle.attributes())
    }

    #[getter]
    fn dimension_names(&self) -> Option<Vec<Option<String>>> {
        self.handle.dimension_names()
    }

    #[getter]
    fn nbytes(&self) -> u128 {
        self.handle.nbytes()
    }

    /// The path of the array inside its store ("" when the store is the array).
    #[getter]
    fn path(&self) -> &str {
        self.handle.path()
    }

    /// The URL of the store the array lives in, as given.
    #[getter]
    fn url(&self) -> &str {
        self.handle.store().raw_url()
    }

    #[getter]
    fn zarr_format(&self) -> u8 {
        self.handle.zarr_format()
    }

    /// The codec pipeline, e.g. `blosc(cname=zstd, clevel=3, shuffle=1)`.
    #[getter]
    fn codecs(&self) -> String {
        self.handle.codecs_description()
    }

    /// The metadata document as stored (`.zarray` + attributes, or `zarr.json`).
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyAny>> {
        json_to_py(py, self.handle.metadata_json())
    }

    fn __len__(&self) -> Result<usize> {
        self.handle
            .shape()
            .first()
            .map(|&n| n as usize)
            .ok_or_else(|| pyo3::exceptions::PyTypeError::new_err("len() of unsized object").into())
    }

    fn __repr__(&self) -> String {
        let h = &self.handle;
        let name = if h.path().is_empty() { "/" } else { h.path() };
        format!(
            "<fastzarr.Array '{name}' shape={} dtype={} chunks={} codecs={} zarr_format={} store='{}'>",
            py_tuple(h.shape()),
            h.dtype().descr,
            py_tuple(h.chunk_shape()),
            h.codecs_description(),
            h.zarr_format(),
            h.store().url()
        )
    }

    /// Pickles as (URL, storage options, path): the other side reopens the array.
    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> Result<(Bound<'py, PyAny>, (String, StorageOptions, String))> {
        let reopen = py.import("fastzarr._core")?.getattr("_reopen_array")?;
        let h = &self.handle;
        Ok((
            reopen,
            (
                h.store().raw_url().to_string(),
                h.store().options().clone(),
                h.path().to_string(),
            ),
        ))
    }
}

/// `array.oindex`: each integer array in the key indexes its own axis (zarr's `oindex`).
#[pyclass(name = "OuterIndexer", module = "fastzarr", frozen)]
pub struct OuterIndexer {
    array: PyArray,
}

#[pymethods]
impl OuterIndexer {
    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> Result<Bound<'py, PyAny>> {
        let indices = selection::parse_outer(key)?;
        self.array.read_into(py, &indices, None, None, None)
    }
}

/// `array.vindex`: integer arrays, one per axis, broadcast together into points (zarr's
/// `vindex`), or a boolean mask of the array's shape.
#[pyclass(name = "VectorIndexer", module = "fastzarr", frozen)]
pub struct VectorIndexer {
    array: PyArray,
}

#[pymethods]
impl VectorIndexer {
    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> Result<Bound<'py, PyAny>> {
        coordinates(py, "vindex", &self.array, key)
    }
}

/// Point selections group their points by chunk and read them with `read_many`
/// (`fastzarr._coordinates`).
fn coordinates<'py>(
    py: Python<'py>,
    function: &str,
    array: &PyArray,
    key: &Bound<'py, PyAny>,
) -> Result<Bound<'py, PyAny>> {
    let array = Bound::new(
        py,
        PyArray {
            handle: array.handle.clone(),
        },
    )?;
    Ok(py
        .import("fastzarr._coordinates")?
        .getattr(function)?
        .call1((array, key))?)
}

/// `(1, 2)`, `(1,)` or `()`, as Python writes a tuple.
fn py_tuple(values: &[u64]) -> String {
    let items: Vec<String> = values.iter().map(ToString::to_string).collect();
    match items.len() {
        1 => format!("({},)", items[0]),
        _ => format!("({})", items.join(", ")),
    }
}

/// Unpickling entry point.
#[pyfunction]
pub fn _reopen_array(
    py: Python<'_>,
    url: String,
    options: StorageOptions,
    path: String,
) -> Result<PyArray> {
    let handle = crate::py::guard::detach(py, || open(&url, options, &path))?;
    Ok(PyArray {
        handle: Arc::new(handle),
    })
}

/// Opens a Zarr array (v2 or v3) at `url`; `path` names an array inside the store.
/// `timeout` (seconds) bounds the open (`fastzarr.TimeoutError`).
#[pyfunction]
#[pyo3(signature = (url, *, storage_options = None, path = "", timeout = None))]
pub fn open_array(
    py: Python<'_>,
    url: &Bound<'_, PyAny>,
    storage_options: Option<&Bound<'_, PyDict>>,
    path: &str,
    timeout: Option<f64>,
) -> Result<PyArray> {
    crate::py::guard::catch(|| {
        let url = crate::py::url_string(url)?;
        let options = storage_options::extract(storage_options)?;
        let path = crate::py::member_path(path)?;
        let handle = crate::py::detach_abandonable(
            py,
            timeout,
            crate::py::is_remote_url(&url),
            move || open(&url, options, &path),
        )?;
        Ok(PyArray {
            handle: Arc::new(handle),
        })
    })
}
