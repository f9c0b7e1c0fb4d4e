//! The `PyO3` layer: argument extraction, then one `py.detach` around the Rust work.

pub mod aio;
pub mod array;
pub mod functions;
pub mod group;
pub mod guard;
pub mod inspect;
pub mod output;
pub mod selection;
pub mod stats;
pub mod write;

use pyo3::prelude::*;

use crate::errors::{Error, Result};

/// Runs `work` with the GIL released on fastzarr's pool, stopping it on Ctrl-C
/// (`KeyboardInterrupt` within tens of milliseconds) or after `timeout` seconds.
pub fn detach_cancellable<R: Send>(
    py: Python<'_>,
    timeout: Option<f64>,
    work: impl FnOnce(&crate::runtime::Cancel) -> Result<R> + Send,
) -> Result<R> {
    let timeout = match timeout {
        None => None,
        Some(t) if t.is_finite() && t > 0.0 => Some(std::time::Duration::from_secs_f64(t)),
        Some(t) => {
            return Err(Error::InvalidArgument(format!(
                "timeout must be a positive number of seconds, not {t}"
            )))
        }
    };
    // The method path does not satisfy `attach`'s higher-ranked lifetime, the closure does.
    #[allow(clippy::redundant_closure_for_method_calls)]
    let interrupted = || Python::attach(|py| py.check_signals()).map_err(Error::Python);
    guard::detach(py, || {
        crate::runtime::run_cancellable(timeout, interrupted, work)
    })
}

/// JSON to Python objects, through the json module so that every value type round-trips.
pub fn json_to_py<'py>(py: Python<'py>, value: &serde_json::Value) -> Result<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| Error::Panic(e.to_string()))?;
    Ok(py.import("json")?.getattr("loads")?.call1((text,))?)
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
    crate::metadata::checked_member_path(path).ok_or_else(|| {
        Error::InvalidArgument(format!("'{path}' is not a valid path inside a store"))
    })
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
