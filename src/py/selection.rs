//! Python index objects (ints, slices, Ellipsis, tuples of them) to [`AxisIndex`].

use numpy::{PyArray1, PyArrayMethods};
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
        // Copied from numpy's buffer: through a list of Python objects, a mask of 10^8
        // elements took 1.7 GB and seconds.
        "b" => {
            let mask = array.cast_into::<PyArray1<bool>>()?;
            return Ok(Some(AxisIndex::Mask(mask.readonly().as_array().to_vec())));
        }
        "i" | "u" => {}
        // An empty list has a float dtype in numpy: it selects nothing.
        "f" if array.len()? == 0 => {}
        _ => return Err(Error::InvalidSelection(invalid(item))),
    }
    let indices = array
        .call_method1("astype", ("int64",))?
        .cast_into::<PyArray1<i64>>()?;
    Ok(Some(AxisIndex::Array(
        indices.readonly().as_array().to_vec(),
    )))
}

/// What a key asks for, counted without building its index lists: the elements it selects
/// and the integer or mask indices it lists (each kept as a number while reading).
#[derive(Debug, Clone, Copy, Default)]
pub struct KeySize {
    pub elements: u128,
    pub listed: u128,
}

/// Counts what `key` (outer semantics) selects on an array of `shape`, in O(1) memory, so
/// that `max_memory` refuses a read before its index lists exist. `None` when the key is
/// not one to count (parsing it then says what is wrong).
pub fn key_size(key: &Bound<'_, PyAny>, shape: &[u64]) -> Result<Option<KeySize>> {
    let items: Vec<Bound<'_, PyAny>> = match key.cast::<PyTuple>() {
        Ok(tuple) => tuple.iter().collect(),
        Err(_) => vec![key.clone()],
    };
    let ellipses = items
        .iter()
        .filter(|i| i.is_instance_of::<PyEllipsis>())
        .count();
    if ellipses > 1 || items.len() - ellipses > shape.len() {
        return Ok(None);
    }
    let mut size = KeySize {
        elements: 1,
        listed: 0,
    };
    let mut dim = 0;
    for item in &items {
        if item.is_instance_of::<PyEllipsis>() {
            let fill = shape.len() - (items.len() - 1);
            for &len in &shape[dim..dim + fill] {
                size.elements = size.elements.saturating_mul(u128::from(len));
            }
            dim += fill;
            continue;
        }
        let Some(count) = axis_count(item, shape[dim], &mut size.listed)? else {
            return Ok(None);
        };
        size.elements = size.elements.saturating_mul(count);
        dim += 1;
    }
    for &len in &shape[dim..] {
        size.elements = size.elements.saturating_mul(u128::from(len));
    }
    Ok(Some(size))
}

/// The number of indices `item` selects on an axis of `len`; arrays add theirs to `listed`.
fn axis_count(item: &Bound<'_, PyAny>, len: u64, listed: &mut u128) -> Result<Option<u128>> {
    let is_sequence = item.is_instance_of::<PyList>() || item.hasattr("__array__")?;
    if is_sequence {
        let numpy = item.py().import("numpy")?;
        let array = numpy.getattr("asarray")?.call1((item,))?;
        let kind: String = array.getattr("dtype")?.getattr("kind")?.extract()?;
        let ndim: usize = array.getattr("ndim")?.extract()?;
        if ndim != 1 {
            return Ok((ndim == 0).then_some(1));
        }
        let count: u128 = if kind == "b" {
            numpy
                .getattr("count_nonzero")?
                .call1((&array,))?
                .extract()?
        } else {
            array.len()? as u128
        };
        *listed = listed.saturating_add(count);
        return Ok(Some(count));
    }
    match axis_index(item) {
        Ok(index @ (AxisIndex::Int(_) | AxisIndex::Slice { .. })) => {
            Ok(crate::plan::Selection::new(&[index], &[len])
                .ok()
                .map(|s| u128::from(s.num_elements())))
        }
        _ => Ok(None),
    }
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
