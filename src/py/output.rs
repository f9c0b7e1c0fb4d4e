//! numpy output arrays: allocated once, filled in place by the decode threads.

use numpy::npyffi::NPY_ARRAY_WRITEABLE;
use numpy::{PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;

use crate::array::{ArrayHandle, NumpyDtype};
use crate::errors::{Error, Result};
use crate::read::OutputBuffer;

/// The numpy dtype object for `dtype`.
pub fn numpy_dtype<'py>(py: Python<'py>, dtype: &NumpyDtype) -> Result<Bound<'py, PyAny>> {
    Ok(py
        .import("numpy")?
        .getattr("dtype")?
        .call1((dtype.descr.as_str(),))?)
}

/// `numpy.empty`: its pages are first touched by the threads that decode into them.
/// An output numpy cannot allocate is a `MemoryBudgetError` naming `array`.
pub fn allocate<'py>(
    py: Python<'py>,
    array: &ArrayHandle,
    shape: &[u64],
) -> Result<Bound<'py, PyAny>> {
    let dtype = array.dtype();
    let numpy = py.import("numpy")?;
    let descr = numpy_dtype(py, dtype)?;
    numpy
        .getattr("empty")?
        .call1((shape.to_vec(), descr))
        .map_err(|err| {
            if err.is_instance_of::<pyo3::exceptions::PyMemoryError>(py) {
                let elements = shape.iter().map(|&n| u128::from(n)).product::<u128>();
                Error::Allocation {
                    what: format!(
                        "a result of shape {shape:?} from array '{}' in store {}",
                        array.path(),
                        array.store().url()
                    ),
                    bytes: elements.saturating_mul(dtype.itemsize as u128),
                }
            } else {
                Error::from(err)
            }
        })
}

/// Checks that `array` can take a result of `dtype` and `shape`, and returns its buffer.
pub fn writable_buffer(
    array: &Bound<'_, PyAny>,
    dtype: &NumpyDtype,
    shape: &[u64],
) -> Result<OutputBuffer> {
    let untyped = array.cast::<PyUntypedArray>().map_err(|_| {
        Error::InvalidOutput(format!("expected a numpy array, got {}", array.get_type()))
    })?;
    let expected = numpy_dtype(array.py(), dtype)?;
    if !untyped.dtype().is_equiv_to(&expected.cast_into()?) {
        return Err(Error::InvalidOutput(format!(
            "dtype {} does not match the array's {}",
            untyped.dtype(),
            dtype.descr
        )));
    }
    let actual: Vec<u64> = untyped.shape().iter().map(|&n| n as u64).collect();
    if actual != shape {
        return Err(Error::InvalidOutput(format!(
            "shape {actual:?} does not match the selection's {shape:?}"
        )));
    }
    if !untyped.is_c_contiguous() {
        return Err(Error::InvalidOutput(
            "the array must be C-contiguous".into(),
        ));
    }
    let len = untyped.len() * dtype.itemsize;
    // SAFETY: `untyped` is a live numpy array (checked by the cast above), so its
    // object header can be read; we read the flags and the data pointer only.
    #[allow(unsafe_code)]
    let (flags, data) = unsafe {
        let raw = untyped.as_array_ptr();
        ((*raw).fields.flags, (*raw).fields.data.cast::<u8>())
    };
    if flags & NPY_ARRAY_WRITEABLE == 0 {
        return Err(Error::InvalidOutput("the array is read-only".into()));
    }
    // SAFETY: a C-contiguous, writeable array of `len` bytes; the caller keeps the
    // Python object alive until the read that uses the buffer returns.
    #[allow(unsafe_code)]
    Ok(unsafe { OutputBuffer::new(data, len) })
}
