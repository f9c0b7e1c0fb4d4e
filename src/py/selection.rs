//! Python index objects (ints, slices, Ellipsis, tuples of them) to [`AxisIndex`].

use pyo3::prelude::*;
use pyo3::types::{PyEllipsis, PyList, PySlice, PyTuple};

use crate::errors::{Error, Result};
use crate::plan::AxisIndex;

fn optional_int(value: &Bound<'_, PyAny>) -> Result<Option<i64>> {
    if value.is_none() {
        return Ok(None);
    }
    index_int(value).map(Some)
}

fn index_int(value: &Bound<'_, PyAny>) -> Result<i64> {
    // `__index__` accepts Python and numpy integers but not floats or bools-as-floats.
    let index = value
        .call_method0("__index__")
        .map_err(|_| Error::InvalidSelection(invalid(value)))?;
    index
        .extract::<i64>()
        .map_err(|_| Error::InvalidSelection(format!("index {index} does not fit in 64 bits")))
}

fn invalid(value: &Bound<'_, PyAny>) -> String {
    let type_name = value
        .get_type()
        .name()
        .map_or_else(|_| "?".to_string(), |n| n.to_string());
    format!("only integers, slices (`:`) and ellipsis (`...`) are valid indices, not {type_name}")
}

/// A list or 1-D numpy array of integers (or booleans, as a mask) as indices.
fn integer_array(item: &Bound<'_, PyAny>) -> Result<Option<AxisIndex>> {
    let is_sequence = item.is_instance_of::<PyList>() || item.hasattr("__array__")?;
    if !is_sequence {
        return Ok(None);
    }
    let numpy = item.py().import("numpy")?;
    let array = numpy.getattr("asarray")?.call1((item,))?;
    let kind: String = array.getattr("dtype")?.getattr("kind")?.extract()?;
    let ndim: usize = array.getattr("ndim")?.extract()?;
    if ndim == 0 {
        return match kind.as_str() {
            "i" | "u" => Ok(Some(AxisIndex::Int(index_int(&array)?))),
            _ => Err(Error::InvalidSelection(invalid(item))),
        };
    }
    if ndim != 1 {
        return Err(Error::OutOfBounds(format!(
            "integer array indices must be 1-dimensional, got {ndim} dimensions"
        )));
    }
    match kind.as_str() {
        "b" => {
            return Ok(Some(AxisIndex::Mask(
                array.call_method0("tolist")?.extract()?,
            )))
        }
        "i" | "u" => {}
        // An empty list has a float dtype in numpy: it selects nothing.
        "f" if array.len()? == 0 => {}
        _ => return Err(Error::InvalidSelection(invalid(item))),
    }
    let indices: Vec<i64> = array
        .call_method1("astype", ("int64",))?
        .call_method0("tolist")?
        .extract()?;
    Ok(Some(AxisIndex::Array(indices)))
}

fn axis_index(item: &Bound<'_, PyAny>) -> Result<AxisIndex> {
    if item.is_instance_of::<PyEllipsis>() {
        return Ok(AxisIndex::Ellipsis);
    }
    if let Ok(slice) = item.cast::<PySlice>() {
        return Ok(AxisIndex::Slice {
            start: optional_int(
                &slice
                    .getattr("start")
                    .map_err(|e| Error::InvalidSelection(e.to_string()))?,
            )?,
            stop: optional_int(
                &slice
                    .getattr("stop")
                    .map_err(|e| Error::InvalidSelection(e.to_string()))?,
            )?,
            step: optional_int(
                &slice
                    .getattr("step")
                    .map_err(|e| Error::InvalidSelection(e.to_string()))?,
            )?,
        });
    }
    if item.is_instance_of::<pyo3::types::PyBool>() {
        return Err(Error::InvalidSelection(invalid(item)));
    }
    if let Some(array) = integer_array(item)? {
        return Ok(array);
    }
    index_int(item).map(AxisIndex::Int)
}

/// Whether `key` is one boolean array of more than one dimension: a mask over several axes,
/// which numpy (and zarr-python) read as a selection of points.
pub fn is_multidimensional_mask(key: &Bound<'_, PyAny>) -> Result<bool> {
    let is_sequence = key.is_instance_of::<PyList>() || key.hasattr("__array__")?;
    if !is_sequence {
        return Ok(false);
    }
    let array = key
        .py()
        .import("numpy")?
        .getattr("asarray")?
        .call1((key,))?;
    let kind: String = array.getattr("dtype")?.getattr("kind")?.extract()?;
    let ndim: usize = array.getattr("ndim")?.extract()?;
    Ok(kind == "b" && ndim > 1)
}

/// Parses a key with outer semantics: each integer array indexes its own axis
/// (`read`, `read_many`, `oindex`).
pub fn parse_outer(key: &Bound<'_, PyAny>) -> Result<Vec<AxisIndex>> {
    if let Ok(tuple) = key.cast::<PyTuple>() {
        return tuple.iter().map(|item| axis_index(&item)).collect();
    }
    axis_index(key).map(|index| vec![index])
}

/// Parses a `__getitem__` key. With one integer array, numpy's result equals outer
/// indexing when the integers and the array stand next to each other; otherwise numpy
/// broadcasts arrays together or moves their axis first, so such keys are refused.
pub fn parse_numpy(key: &Bound<'_, PyAny>) -> Result<Vec<AxisIndex>> {
    let indices = parse_outer(key)?;
    let advanced: Vec<usize> = indices
        .iter()
        .enumerate()
        .filter(|(_, i)| {
            matches!(
                i,
                AxisIndex::Int(_) | AxisIndex::Array(_) | AxisIndex::Mask(_)
            )
        })
        .map(|(position, _)| position)
        .collect();
    let arrays = indices
        .iter()
        .filter(|i| matches!(i, AxisIndex::Array(_) | AxisIndex::Mask(_)))
        .count();
    let adjacent = advanced.windows(2).all(|pair| pair[1] == pair[0] + 1);
    if arrays > 1 || (arrays == 1 && !adjacent) {
        return Err(Error::OutOfBounds(
            "numpy would broadcast these integer-array indices together or move their axis first; \
             use `array.oindex[...]` for outer indexing (each array indexes its own axis)"
                .into(),
        ));
    }
    Ok(indices)
}
