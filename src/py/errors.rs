//! The mapping of the core's errors onto Python's exception tree, and back: a Python
//! exception raised inside a call (a callback, Ctrl-C) crosses the core as `Error::Host`.

use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use pyo3::{create_exception, PyErr};

use crate::errors::{Error, HostError};

create_exception!(
    fastzarr,
    FastzarrError,
    PyException,
    "Base class of every fastzarr error."
);
create_exception!(
    fastzarr,
    MetadataError,
    FastzarrError,
    "Array or group metadata is missing a field, malformed or inconsistent."
);
create_exception!(
    fastzarr,
    UnsupportedCodecError,
    FastzarrError,
    "A codec or data type that fastzarr cannot decode."
);
create_exception!(
    fastzarr,
    StoreChangedError,
    FastzarrError,
    "The store was replaced (or deleted) after it was opened: its old handle reads nothing more."
);
create_exception!(
    fastzarr,
    CorruptChunkError,
    FastzarrError,
    "A stored chunk could not be decoded: truncated, garbage or lying headers."
);

impl From<PyErr> for Error {
    fn from(err: PyErr) -> Self {
        let message = err.to_string();
        Error::Host(HostError {
            error: Box::new(err),
            message,
        })
    }
}

impl From<pyo3::CastIntoError<'_>> for Error {
    fn from(err: pyo3::CastIntoError<'_>) -> Self {
        PyErr::from(err).into()
    }
}

/// The Python exception a `Host` error carries (every host error of this crate is one).
pub fn host_pyerr(host: HostError) -> PyErr {
    match host.error.downcast::<PyErr>() {
        Ok(err) => *err,
        Err(_) => FastzarrError::new_err(host.message),
    }
}

/// Builds `fastzarr.<name>` deriving from both `FastzarrError` and a builtin, so that
/// `except FileNotFoundError` and `except fastzarr.FastzarrError` both catch it.
fn dual_base_type(
    py: Python<'_>,
    name: &str,
    builtin: &Bound<'_, PyType>,
    doc: &str,
) -> PyResult<Py<PyType>> {
    let bases = PyTuple::new(
        py,
        [
            py.get_type::<FastzarrError>().into_any(),
            builtin.clone().into_any(),
        ],
    )?;
    let namespace = PyDict::new(py);
    namespace.set_item("__module__", "fastzarr")?;
    namespace.set_item("__doc__", doc)?;
    if builtin.is(py.get_type::<pyo3::exceptions::PyKeyError>()) {
        // KeyError's str() is the repr of its key, the message in quotes; these carry a
        // sentence, shown as such.
        let plain = py
            .get_type::<pyo3::exceptions::PyBaseException>()
            .getattr("__str__")?;
        namespace.set_item("__str__", plain)?;
    }
    let created = py.get_type::<PyType>().call1((name, bases, namespace))?;
    Ok(created.cast_into::<PyType>()?.unbind())
}

macro_rules! dual_exception {
    ($fn_name:ident, $py_name:literal, $builtin:ty, $doc:literal) => {
        pub fn $fn_name(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
            static TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
            TYPE.get_or_try_init(py, || {
                dual_base_type(py, $py_name, &py.get_type::<$builtin>(), $doc)
            })
            .map(|t| t.bind(py))
        }
    };
}

dual_exception!(
    store_not_found_error,
    "StoreNotFoundError",
    pyo3::exceptions::PyFileNotFoundError,
    "The store, or the array or group inside it, does not exist."
);
dual_exception!(
    selection_error,
    "SelectionError",
    pyo3::exceptions::PyIndexError,
    "A selection that is out of bounds of the array."
);
dual_exception!(
    memory_budget_error,
    "MemoryBudgetError",
    pyo3::exceptions::PyMemoryError,
    "A read would need more memory than its max_memory budget, or than can be allocated (nothing was allocated)."
);
dual_exception!(
    timeout_error,
    "TimeoutError",
    pyo3::exceptions::PyTimeoutError,
    "An operation took longer than its timeout."
);

dual_exception!(
    invalid_path_error,
    "InvalidPathError",
    pyo3::exceptions::PyValueError,
    "A path argument that does not name a place inside the store (`..`, absolute, empty parts)."
);
dual_exception!(
    member_not_found_error,
    "MemberNotFoundError",
    pyo3::exceptions::PyKeyError,
    "A name looked up in a group that is not one of its members (or a group path not in a store)."
);

fn raise_dual(
    make: for<'py> fn(Python<'py>) -> PyResult<&'py Bound<'py, PyType>>,
    message: String,
) -> PyErr {
    Python::attach(|py| match make(py) {
        Ok(ty) => PyErr::from_type(ty.clone(), message),
        Err(err) => err,
    })
}

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        let message = err.to_string();
        match err {
            Error::Host(host) => host_pyerr(host),
            Error::StoreNotFound { .. }
            | Error::NodeNotFound { .. }
            | Error::InsideArray { .. }
            | Error::NotAStore { .. } => raise_dual(store_not_found_error, message),
            Error::OutOfBounds(_) => raise_dual(selection_error, message),
            Error::Timeout(_) | Error::RequestTimeout { .. } => raise_dual(timeout_error, message),
            Error::MemoryBudget { .. } | Error::Allocation { .. } => {
                raise_dual(memory_budget_error, message)
            }
            Error::InvalidPath(_) => raise_dual(invalid_path_error, message),
            Error::MemberNotFound { .. } => raise_dual(member_not_found_error, message),
            Error::InvalidSelection(_) => PyTypeError::new_err(message),
            Error::InvalidOutput(_) | Error::InvalidArgument(_) => PyValueError::new_err(message),
            Error::Metadata { .. } | Error::WrongNodeType { .. } => MetadataError::new_err(message),
            Error::UnsupportedCodec { .. } | Error::UnsupportedDataType { .. } => {
                UnsupportedCodecError::new_err(message)
            }
            Error::CorruptChunk { .. } => CorruptChunkError::new_err(message),
            Error::StoreChanged { .. } => StoreChangedError::new_err(message),
            Error::UnsupportedUrl { .. }
            | Error::Storage { .. }
            | Error::Panic(_)
            | Error::Cancelled => FastzarrError::new_err(message),
        }
    }
}
