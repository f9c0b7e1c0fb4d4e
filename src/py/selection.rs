//! Python index objects (ints, slices, Ellipsis, tuples of them) to [`AxisIndex`].

use pyo3::prelude::*;
use pyo3::types::{PyEllipsis, PySlice, PyTuple};

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
    index_int(item).map(AxisIndex::Int)
}

/// Parses a `__getitem__` key (or `read`'s `selection`).
pub fn parse(key: &Bound<'_, PyAny>) -> Result<Vec<AxisIndex>> {
    if let Ok(tuple) = key.cast::<PyTuple>() {
        return tuple.iter().map(|item| axis_index(&item)).collect();
    }
    axis_index(key).map(|index| vec![index])
}
