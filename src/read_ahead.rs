//! Block tables read ahead: a point read's first round of requests, made while the point's
//! position is still being worked out.
//!
//! Reading a point from a remote blosc chunk takes two dependent requests: the chunk's header
//! and block table, then the block that holds the point. Which chunks a point's series touches
//! is known from the metadata alone where every point dimension lies whole in one chunk (a
//! field per chunk, as weather archives store them): all of them. Their tables can then be
//! read while the coordinates that place the point are read, and the read itself asks for the
//! blocks alone (see [`crate::block_tables`]): one round trip less.

use std::sync::Arc;

use crate::array::ArrayHandle;
use crate::errors::Result;
use crate::group::{GroupState, Member};
use crate::metadata::Node;

/// The most chunks whose tables one call reads ahead: well within what `block_tables` keeps
/// (about 30,000 tables), so that reading ahead never drops tables it has just read. A larger
/// read pays its extra round trip once among many.
pub const MAX_CHUNKS: usize = 16_384;

/// The member arrays of `group` among `names` (every member array when `None`) whose
/// dimensions include each of `point_dims`, each held whole by one chunk: a point read reads
/// every chunk of them.
pub fn whole_along(
    group: &GroupState,
    names: Option<&[String]>,
    point_dims: &[String],
) -> Vec<Arc<ArrayHandle>> {
    if point_dims.is_empty() {
        return Vec::new();
    }
    let candidates: Vec<&String> = match names {
        Some(names) => names.iter().collect(),
        None => group
            .members
            .iter()
            .filter(|(_, node)| matches!(node, Node::Array(_)))
            .map(|(name, _)| name)
            .collect(),
    };
    candidates
        .into_iter()
        .filter_map(|name| match group.member(name) {
            Ok(Member::Array(handle)) => Some(handle),
            _ => None, // not an array, or one that fails to open: the read will say why
        })
        .filter(|handle| {
            let Some(dims) = handle.dimension_names() else {
                return false;
            };
            let (shape, chunks) = (handle.shape(), handle.chunk_shape());
            if dims.len() != shape.len() || chunks.len() != shape.len() {
                return false; // metadata that does not agree with itself: left to the read
            }
            point_dims.iter().all(|wanted| {
                dims.iter()
                    .position(|d| d.as_deref() == Some(wanted.as_str()))
                    .is_some_and(|axis| chunks[axis] >= shape[axis])
            })
        })
        .collect()
}

/// Chunks of `array` along each axis.
fn chunk_counts(array: &ArrayHandle) -> Vec<u64> {
    array
        .shape()
        .iter()
        .zip(array.chunk_shape())
        .map(|(&n, &c)| n.div_ceil(c.max(1)))
        .collect()
}

/// Reads ahead the tables of every chunk of `arrays` that a point read would read block by
/// block ([`crate::fetch::read_ahead_table`]), all at once, unless there are more than
/// [`MAX_CHUNKS`]. Returns the requests made and the bytes fetched. A failed request is left
/// for the read itself to make again and report, with the store, array and chunk.
pub fn read_ahead_tables(arrays: &[Arc<ArrayHandle>]) -> Result<(u64, u64)> {
    let counts: Vec<Vec<u64>> = arrays.iter().map(|a| chunk_counts(a)).collect();
    let total = counts.iter().try_fold(0u64, |sum, per_axis| {
        let chunks = per_axis.iter().try_fold(1u64, |n, &c| n.checked_mul(c))?;
        sum.checked_add(chunks)
    });
    if !total.is_some_and(|n| n > 0 && n <= MAX_CHUNKS as u64) {
        return Ok((0, 0));
    }
    let jobs: Vec<(&ArrayHandle, Vec<u64>)> = arrays
        .iter()
        .zip(&counts)
        .flat_map(|(a, per_axis)| {
            crate::write::grid_indices(per_axis)
                .into_iter()
                .map(move |c| (a.as_ref(), c))
        })
        .collect();
    let done = crate::runtime::block_on(futures::future::join_all(
        jobs.iter()
            .map(|(array, chunk)| crate::fetch::read_ahead_table(array, chunk)),
    ))?;
    Ok(done
        .into_iter()
        .flatten()
        .fold((0, 0), |(r, b), (requests, bytes)| {
            (r + requests, b + bytes)
        }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A v2 group of (step, lat, lon) arrays: `field` one whole lat x lon field per chunk,
    /// `tiles` cut along lat, `flat` without lat, `named` without dimension names.
    fn group(dir: &std::path::Path) -> GroupState {
        std::fs::write(dir.join(".zgroup"), r#"{"zarr_format": 2}"#).unwrap();
        let arrays = [
            (
                "field",
                [3, 8, 16],
                [1, 8, 16],
                Some(["step", "lat", "lon"]),
            ),
            (
                "tiles",
                [3, 8, 16],
                [1, 4, 16],
                Some(["step", "lat", "lon"]),
            ),
            ("flat", [3, 8, 16], [1, 8, 16], Some(["step", "x", "lon"])),
            ("named", [3, 8, 16], [1, 8, 16], None),
        ];
        for (name, shape, chunks, dims) in arrays {
            let path = dir.join(name);
            std::fs::create_dir_all(&path).unwrap();
            let meta = json!({"zarr_format": 2, "shape": shape, "chunks": chunks, "dtype": "<f4",
                              "compressor": null, "fill_value": 0, "order": "C", "filters": null});
            std::fs::write(path.join(".zarray"), meta.to_string()).unwrap();
            let attrs = dims.map_or(json!({}), |d| json!({"_ARRAY_DIMENSIONS": d}));
            std::fs::write(path.join(".zattrs"), attrs.to_string()).unwrap();
        }
        let url = dir.display().to_string();
        crate::group::open(&url, &crate::store::StorageOptions::default(), "", None).unwrap()
    }

    fn names(arrays: &[Arc<ArrayHandle>]) -> Vec<&str> {
        arrays.iter().map(|a| a.path()).collect()
    }

    #[test]
    fn only_arrays_held_whole_along_every_point_dim_are_read_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let group = group(dir.path());
        let dims = |d: &[&str]| d.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(
            names(&whole_along(&group, None, &dims(&["lat", "lon"]))),
            ["field"]
        );
        // Along lon alone, `flat` lies whole too, and `tiles` (cut along lat only).
        assert_eq!(
            names(&whole_along(&group, None, &dims(&["lon"]))),
            ["field", "flat", "tiles"]
        );
        let wanted = dims(&["tiles", "field", "missing"]);
        assert_eq!(
            names(&whole_along(&group, Some(&wanted), &dims(&["lon"]))),
            ["tiles", "field"]
        );
        assert!(whole_along(&group, None, &[]).is_empty());
        // A local store: nothing is read ahead, nothing fails.
        let arrays = whole_along(&group, None, &dims(&["lat", "lon"]));
        assert_eq!(read_ahead_tables(&arrays).unwrap(), (0, 0));
    }
}
