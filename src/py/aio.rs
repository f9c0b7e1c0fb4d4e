//! The async twins: `open_array_async`, `Array.read_async`, `read_many_async`.
//!
//! Python awaitables come from pyo3-async-runtimes, driven by fastzarr's own tokio
//! runtime (`runtime::io`, rebuilt after a fork) rather than one the library would start
//! itself. The work still runs on the decode pool: an awaitable only waits for it, so
//! the event loop (Jupyter's, say) stays free, and many reads can be in flight at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use pyo3_async_runtimes::generic::{self, ContextExt, JoinError, Runtime};
use pyo3_async_runtimes::TaskLocals;

use crate::errors::{Error, Result};
use crate::py::array::{open, PyArray};
use crate::py::functions::{prepare_requests, read_prepared as run_prepared, Prepared};
use crate::py::strings::StringRequest;
use crate::py::timeout_duration;
use crate::py::{selection, storage_options};
use crate::runtime::Cancel;

/// pyo3-async-runtimes' view of fastzarr's tokio runtime.
struct FastzarrRuntime;

/// A task's join error.
pub struct TaskError(tokio::task::JoinError);

impl JoinError for TaskError {
    fn is_panic(&self) -> bool {
        self.0.is_panic()
    }
    fn into_panic(self) -> Box<dyn std::any::Any + Send + 'static> {
        self.0.into_panic()
    }
}

fn io_runtime() -> Arc<tokio::runtime::Runtime> {
    crate::runtime::io()
        .expect("fastzarr's I/O runtime could not start")
        .0
}

impl Runtime for FastzarrRuntime {
    type JoinError = TaskError;
    type JoinHandle = Pin<Box<dyn Future<Output = std::result::Result<(), TaskError>> + Send>>;

    fn spawn<F>(fut: F) -> Self::JoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = io_runtime().spawn(fut);
        Box::pin(async move { handle.await.map_err(TaskError) })
    }

    fn spawn_blocking<F>(f: F) -> Self::JoinHandle
    where
        F: FnOnce() + Send + 'static,
    {
        let handle = io_runtime().spawn_blocking(f);
        Box::pin(async move { handle.await.map_err(TaskError) })
    }
}

tokio::task_local! {
    static TASK_LOCALS: std::cell::OnceCell<TaskLocals>;
}

impl ContextExt for FastzarrRuntime {
    fn scope<F, R>(locals: TaskLocals, fut: F) -> Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        let cell = std::cell::OnceCell::new();
        let _ = cell.set(locals);
        Box::pin(TASK_LOCALS.scope(cell, fut))
    }

    fn get_task_locals() -> Option<TaskLocals> {
        TASK_LOCALS
            .try_with(|c| c.get().cloned())
            .unwrap_or_default()
    }
}

/// Runs `work` on the decode pool and waits for it without blocking a thread. On the
/// deadline, or when the awaiting task is cancelled, the work is told to stop.
async fn on_pool<R: Send + 'static>(
    timeout: Option<Duration>,
    work: impl FnOnce(&Cancel) -> Result<R> + Send + 'static,
) -> Result<R> {
    struct StopOnDrop(Arc<Cancel>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.set();
        }
    }
    let pool = crate::runtime::pool()?;
    let cancel = Arc::new(Cancel::default());
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let worker_cancel = cancel.clone();
    pool.spawn(move || {
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&worker_cancel)))
                .unwrap_or_else(|payload| Err(Error::from_panic(payload.as_ref())));
        let _ = sender.send(outcome);
    });
    let _stop = StopOnDrop(cancel.clone());
    let finished = async {
        receiver
            .await
            .unwrap_or_else(|_| Err(Error::Panic("the read ended without a result".into())))
    };
    match timeout {
        None => finished.await,
        Some(limit) => match tokio::time::timeout(limit, finished).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::Timeout(limit.as_secs_f64())),
        },
    }
}

fn into_py<T>(
    py: Python<'_>,
    future: impl Future<Output = Result<T>> + Send + 'static,
) -> PyResult<Bound<'_, PyAny>>
where
    T: for<'py> IntoPyObject<'py> + Send + 'static,
{
    generic::future_into_py::<FastzarrRuntime, _, T>(py, async move {
        future.await.map_err(PyErr::from)
    })
}

/// Opens a Zarr array without blocking the event loop; `await` it for a `fastzarr.Array`.
#[pyfunction]
#[pyo3(signature = (url, *, storage_options = None, path = ""))]
pub fn open_array_async<'py>(
    py: Python<'py>,
    url: &Bound<'py, PyAny>,
    storage_options: Option<&Bound<'py, PyDict>>,
    path: &str,
) -> Result<Bound<'py, PyAny>> {
    let url = crate::py::url_string(url)?;
    let options = storage_options::extract(storage_options)?;
    let path = crate::py::member_path(path)?;
    Ok(into_py(py, async move {
        let handle = on_pool(None, move |_| open(&url, options, &path)).await?;
        Ok(PyArray {
            handle: Arc::new(handle),
        })
    })?)
}

/// Reads prepared requests on the pool; the awaitable yields their numpy results (the list
/// of them, or with `single` its only item).
fn read_prepared(
    py: Python<'_>,
    prepared: Vec<Prepared>,
    strings: Vec<StringRequest>,
    results: Py<PyList>,
    single: bool,
    timeout: Option<f64>,
) -> Result<Bound<'_, PyAny>> {
    let timeout = timeout_duration(timeout)?;
    Ok(into_py(py, async move {
        let (strings, read) = on_pool(timeout, move |cancel| {
            run_prepared(prepared, cancel)?;
            let (read, _) = crate::py::strings::read_all(&strings, cancel)?;
            Ok((strings, read))
        })
        .await?;
        Python::attach(|py| -> Result<Py<PyAny>> {
            let results = results.into_bound(py);
            crate::py::strings::fill(py, &results, &strings, &read)?;
            Ok(if single {
                results.get_item(0)?.unbind()
            } else {
                results.into_any().unbind()
            })
        })
    })?)
}

/// `await array.read_async(selection, timeout=...)`: `Array.read` without blocking the loop.
pub fn read_async<'py>(
    array: &PyArray,
    py: Python<'py>,
    selection: Option<&Bound<'py, PyAny>>,
    timeout: Option<f64>,
    max_memory: Option<&Bound<'py, PyAny>>,
) -> Result<Bound<'py, PyAny>> {
    crate::py::guard::catch(|| {
        let key = match selection {
            Some(key) => key.clone(),
            None => py.Ellipsis().into_bound(py),
        };
        let _ = selection::parse_outer(&key)?;
        let array = PyArray {
            handle: array.handle.clone(),
        };
        let item = pyo3::types::PyTuple::new(py, [Bound::new(py, array)?.into_any(), key])?;
        let max_memory = crate::py::max_memory(max_memory)?;
        let (prepared, strings, results) = prepare_requests(py, &[item.into_any()], max_memory)?;
        read_prepared(py, prepared, strings, results.unbind(), true, timeout)
    })
}

/// `await fastzarr.read_many_async(requests, timeout=..., max_memory=...)`: `read_many`
/// without blocking the loop.
#[pyfunction]
#[pyo3(signature = (requests, *, timeout = None, max_memory = None))]
pub fn read_many_async<'py>(
    py: Python<'py>,
    requests: Vec<Bound<'py, PyAny>>,
    timeout: Option<f64>,
    max_memory: Option<&Bound<'py, PyAny>>,
) -> Result<Bound<'py, PyAny>> {
    crate::py::guard::catch(|| {
        let max_memory = crate::py::max_memory(max_memory)?;
        let (prepared, strings, results) = prepare_requests(py, &requests, max_memory)?;
        read_prepared(py, prepared, strings, results.unbind(), false, timeout)
    })
}
