//! The `PyO3` layer: argument extraction, then one `py.detach` around the Rust work.

pub mod aio;
pub mod array;
pub mod errors;
pub mod functions;
pub mod group;
pub mod guard;
pub mod inspect;
pub mod output;
pub mod selection;
pub mod stats;
pub mod strings;
pub mod write;

use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::errors::{Error, Result};

/// A `timeout=` argument: a positive number of seconds, or `None` for no limit.
pub fn timeout_duration(timeout: Option<f64>) -> Result<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_finite() && t > 0.0 => Ok(Some(Duration::from_secs_f64(t))),
        Some(t) => Err(Error::InvalidArgument(format!(
            "timeout must be a positive number of seconds, not {t}"
        ))),
    }
}

/// Python's signal check from a thread without the GIL: `Err` after Ctrl-C.
fn interrupted() -> Result<()> {
    // The method path does not satisfy `attach`'s higher-ranked lifetime, the closure does.
    #[allow(clippy::redundant_closure_for_method_calls)]
    Python::attach(|py| py.check_signals()).map_err(Error::from)
}

/// Runs `work` with the GIL released on fastzarr's pool, stopping it on Ctrl-C
/// (`KeyboardInterrupt` within tens of milliseconds) or after `timeout` seconds.
pub fn detach_cancellable<R: Send>(
    py: Python<'_>,
    timeout: Option<f64>,
    work: impl FnOnce(&crate::runtime::Cancel) -> Result<R> + Send,
) -> Result<R> {
    let timeout = timeout_duration(timeout)?;
    let outcome = guard::detach(py, || {
        crate::runtime::run_cancellable(timeout, interrupted, work)
    });
    emit_warnings(py)?;
    outcome
}

/// Emits, as Python `UserWarning`s, what reads on other threads queued (`store::take_warnings`).
fn emit_warnings(py: Python<'_>) -> Result<()> {
    for message in crate::store::take_warnings() {
        let message = std::ffi::CString::new(message.replace('\0', " "))
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        PyErr::warn(
            py,
            &py.get_type::<pyo3::exceptions::PyUserWarning>(),
            &message,
            1,
        )?;
    }
    Ok(())
}

/// How often a caller waiting on abandonable work checks Ctrl-C and its deadline.
const ABANDON_POLL: Duration = Duration::from_millis(20);

/// Runs `work`, which changes nothing the caller can see (opening metadata), with the GIL
/// released. With a `timeout`, or when it goes over the network (`remote`), it runs on a
/// thread of its own while the caller polls Ctrl-C and the deadline, and on either the
/// caller returns at once: the abandoned work ends by itself (every store request has its
/// own timeout) and its result is dropped. Local work without a timeout runs on the
/// calling thread.
pub fn detach_abandonable<R: Send + 'static>(
    py: Python<'_>,
    timeout: Option<f64>,
    remote: bool,
    work: impl FnOnce() -> Result<R> + Send + 'static,
) -> Result<R> {
    let limit = timeout_duration(timeout)?;
    if limit.is_none() && !remote {
        return guard::detach(py, work);
    }
    let (sender, receiver) = std::sync::mpsc::channel();
    crate::runtime::spawn_detached("fastzarr-open", move || {
        // The receiver is gone only when the caller gave up.
        let _ = sender.send(guard::catch(work));
    })?;
    guard::detach(py, move || {
        let deadline = limit.map(|l| Instant::now() + l);
        loop {
            match receiver.recv_timeout(ABANDON_POLL) {
                Ok(outcome) => return outcome,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::Panic("the open ended without a result".into()))
                }
                Err(RecvTimeoutError::Timeout) => {
                    interrupted()?;
                    if let (Some(deadline), Some(limit)) = (deadline, limit) {
                        if Instant::now() >= deadline {
                            return Err(Error::Timeout(limit.as_secs_f64()));
                        }
                    }
                }
            }
        }
    })
}

/// `max_memory` as given, parsed by fastzarr's one size parser (`fastzarr._sizes.parse_size`:
/// bytes, "2GB", "512 MiB", "20%" of available memory), so that every entry point takes the
/// same sizes and refuses the rest with the same message; `None` for no bound.
pub fn max_memory(value: Option<&Bound<'_, PyAny>>) -> Result<Option<u64>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    let parsed = value
        .py()
        .import("fastzarr._sizes")?
        .getattr("parse_size")?
        .call1((value,))?;
    Ok(parsed.extract::<Option<u64>>()?)
}

/// Refuses a read whose key alone (its outputs, allocated unless `out` is given, and its
/// index lists) needs more than `budget`, before the key's index lists are built: a mask of
/// 10^8 elements is checked in O(1) memory rather than after 800 MB of indices.
pub fn precheck_key(
    footprint: &mut crate::limits::Footprint,
    handle: &crate::array::ArrayHandle,
    key: &Bound<'_, PyAny>,
    allocates_output: bool,
) -> Result<()> {
    if let Some(size) = selection::key_size(key, handle.shape())? {
        let elements = u64::try_from(size.elements).unwrap_or(u64::MAX);
        footprint.add(
            if allocates_output { elements } else { 0 },
            0,
            handle.dtype().itemsize,
            0,
        );
        footprint.add_index_lists(size.listed);
    }
    Ok(())
}

/// The memory a read of `selection` from `handle` needs, added to `footprint`:
/// `output_elements` newly allocated outputs plus the chunks it decodes.
pub fn add_to_footprint(
    footprint: &mut crate::limits::Footprint,
    handle: &crate::array::ArrayHandle,
    selection: &crate::plan::Selection,
    output_elements: u64,
) {
    let chunk_shape = handle
        .inner_chunk_shape()
        .unwrap_or_else(|| handle.chunk_shape().to_vec());
    let chunk_elements = chunk_shape
        .iter()
        .try_fold(1u64, |acc, &n| acc.checked_mul(n))
        .unwrap_or(u64::MAX);
    let chunks = if selection.num_elements() == 0 {
        0
    } else {
        selection.max_chunks(&chunk_shape)
    };
    let listed: u128 = selection
        .axes
        .iter()
        .filter(|axis| matches!(axis.pick, crate::plan::Pick::List(_)))
        .map(|axis| u128::from(axis.count()))
        .sum();
    footprint.add_index_lists(listed);
    footprint.add(
        output_elements,
        chunk_elements,
        handle.dtype().itemsize,
        chunks,
    );
    if chunks > 0 && handle.blosc_compressed() {
        footprint.add_decode_scratch(u128::from(chunk_elements) * handle.dtype().itemsize as u128);
    }
}

/// JSON to Python objects, through the json module so that every value type round-trips.
pub fn json_to_py<'py>(py: Python<'py>, value: &serde_json::Value) -> Result<Bound<'py, PyAny>> {
    use pyo3::types::PyList;
    use serde_json::Value;
    // Built directly: a round trip through json.loads cost ~20 us an array, most of describing
    // the arrays of a store of thousands.
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => pyo3::types::PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                pyo3::types::PyInt::new(py, u).into_any()
            } else if let Some(i) = n.as_i64() {
                pyo3::types::PyInt::new(py, i).into_any()
            } else if n.is_f64() {
                pyo3::types::PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any()
            } else {
                // An integer beyond 64 bits (serde_json's arbitrary precision): exact, as json.loads.
                py.get_type::<pyo3::types::PyInt>()
                    .call1((n.to_string(),))?
            }
        }
        Value::String(s) => pyo3::types::PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => map_to_py(py, map)?.into_any(),
    })
}

/// A JSON object to a Python dict (see [`json_to_py`]).
pub fn map_to_py<'py>(
    py: Python<'py>,
    map: &serde_json::Map<String, serde_json::Value>,
) -> Result<Bound<'py, pyo3::types::PyDict>> {
    let dict = pyo3::types::PyDict::new(py);
    for (k, v) in map {
        dict.set_item(k, json_to_py(py, v)?)?;
    }
    Ok(dict)
}

/// Whether `url` names a store read over the network (anything but a path or `file://`).
pub fn is_remote_url(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, _)| scheme != "file" && scheme != "memory")
}

/// A URL string from a `str` or any `os.PathLike`.
pub fn url_string(url: &Bound<'_, PyAny>) -> Result<String> {
    let fspath = url.py().import("os")?.getattr("fspath")?;
    Ok(fspath.call1((url,))?.extract::<String>()?)
}

/// A member path as given by a user: "" for the root, else checked to stay inside the store.
pub fn member_path(path: &str) -> Result<String> {
    if path.trim_matches('/').is_empty() {
        return Ok(String::new());
    }
    crate::metadata::checked_member_path(path)
        .ok_or_else(|| Error::InvalidPath(format!("'{path}' is not a valid path inside a store")))
}

pub mod storage_options {
    //! `storage_options` dicts: string keys, scalar values kept as strings.

    use pyo3::prelude::*;
    use pyo3::types::{PyBool, PyDict};

    use crate::errors::{Error, Result};
    use crate::store::StorageOptions;

    pub fn extract(options: Option<&Bound<'_, PyDict>>) -> Result<StorageOptions> {
        let mut extracted = StorageOptions::new();
        let Some(options) = options else {
            return Ok(extracted);
        };
        for (key, value) in options.iter() {
            let key: String = key.extract().map_err(|_| {
                Error::InvalidArgument("storage_options keys must be strings".into())
            })?;
            let text = if value.is_instance_of::<PyBool>() {
                value.extract::<bool>()?.to_string()
            } else {
                value.str()?.to_string()
            };
            extracted.insert(key, text);
        }
        Ok(extracted)
    }
}
