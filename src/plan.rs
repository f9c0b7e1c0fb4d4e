//! Turns a selection into work: which chunks are touched, which region of each chunk
//! is wanted, and where in the output each element goes.
//!
//! Pure arithmetic on shapes, no I/O, so that it can be tested exhaustively.

use std::collections::BTreeMap;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::errors::{Error, Result};

/// One axis of a selection, before it is bounded by the shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AxisIndex {
    /// An integer; negative counts from the end. Drops the axis from the output.
    Int(i64),
    /// A slice `start:stop:step` with Python's defaults and negative-index rules.
    Slice {
        start: Option<i64>,
        stop: Option<i64>,
        step: Option<i64>,
    },
    /// `...`: as many full slices as needed.
    Ellipsis,
    /// Integer indices (any order, repeats allowed, negative from the end): outer indexing.
    Array(Vec<i64>),
    /// A boolean mask as long as the axis: selects where it is true.
    Mask(Vec<bool>),
}

/// The indices one axis selects, in output order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// `first, first + step, ...` (`count` of them); `step` may be negative.
    Progression { first: u64, step: i64, count: u64 },
    /// Any indices.
    List(Arc<[u64]>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AxisSelection {
    pub pick: Pick,
    /// `false` for an integer index: the axis is dropped from the output.
    pub keep: bool,
}

impl AxisSelection {
    pub fn full(len: u64) -> Self {
        Self {
            pick: Pick::Progression {
                first: 0,
                step: 1,
                count: len,
            },
            keep: true,
        }
    }

    pub fn count(&self) -> u64 {
        match &self.pick {
            Pick::Progression { count, .. } => *count,
            Pick::List(indices) => indices.len() as u64,
        }
    }

    /// The array index of output position `position`.
    pub fn index(&self, position: u64) -> u64 {
        match &self.pick {
            Pick::Progression { first, step, .. } => progression_index(*first, *step, position),
            Pick::List(indices) => indices[position as usize],
        }
    }
}

fn progression_index(first: u64, step: i64, position: u64) -> u64 {
    if step > 0 {
        first + position * step as u64
    } else {
        first - position * step.unsigned_abs()
    }
}

/// A selection bounded by an array's shape: one [`AxisSelection`] per axis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub axes: Vec<AxisSelection>,
}

impl Selection {
    /// Bounds `indices` by `shape`. Integer arrays index their axis independently
    /// (outer indexing, like zarr's `oindex`).
    pub fn new(indices: &[AxisIndex], shape: &[u64]) -> Result<Self> {
        let ellipses = indices
            .iter()
            .filter(|i| matches!(i, AxisIndex::Ellipsis))
            .count();
        if ellipses > 1 {
            return Err(Error::OutOfBounds(
                "an index can only have a single ellipsis ('...')".into(),
            ));
        }
        let explicit = indices.len() - ellipses;
        if explicit > shape.len() {
            return Err(Error::OutOfBounds(format!(
                "too many indices for array: array is {}-dimensional, but {explicit} were indexed",
                shape.len()
            )));
        }
        let mut axes = Vec::with_capacity(shape.len());
        let mut dim = 0;
        for index in indices {
            if let AxisIndex::Ellipsis = index {
                let fill = shape.len() - explicit;
                axes.extend(
                    shape[dim..dim + fill]
                        .iter()
                        .map(|&len| AxisSelection::full(len)),
                );
                dim += fill;
                continue;
            }
            axes.push(bound_axis(index, shape[dim], dim)?);
            dim += 1;
        }
        axes.extend(shape[dim..].iter().map(|&len| AxisSelection::full(len)));
        Ok(Self { axes })
    }

    /// The selection of every element.
    pub fn all(shape: &[u64]) -> Self {
        Self {
            axes: shape.iter().map(|&len| AxisSelection::full(len)).collect(),
        }
    }

    /// The output shape with every axis kept (integer-indexed axes have length 1).
    pub fn full_shape(&self) -> Vec<u64> {
        self.axes.iter().map(AxisSelection::count).collect()
    }

    /// The shape numpy gives the result (integer-indexed axes dropped).
    pub fn output_shape(&self) -> Vec<u64> {
        self.axes
            .iter()
            .filter(|a| a.keep)
            .map(AxisSelection::count)
            .collect()
    }

    pub fn num_elements(&self) -> u64 {
        self.axes.iter().map(AxisSelection::count).product()
    }

    /// An upper bound on the chunks of shape `chunk_shape` this selection touches (each
    /// axis: no more chunks than indices, nor than the span of its indices covers).
    pub fn max_chunks(&self, chunk_shape: &[u64]) -> u128 {
        self.axes
            .iter()
            .zip(chunk_shape)
            .map(|(axis, &chunk)| {
                let spanned = match &axis.pick {
                    Pick::Progression { step, count, .. } if *count > 0 => {
                        let span = u128::from(step.unsigned_abs()) * u128::from(count - 1) + 1;
                        span.div_ceil(u128::from(chunk.max(1))) + 1
                    }
                    Pick::Progression { .. } => 0,
                    Pick::List(_) => u128::MAX,
                };
                spanned.min(u128::from(axis.count()))
            })
            .fold(1u128, u128::saturating_mul)
    }
}

/// Resolves `i` (negative: from the end) on an axis of `len`; computed in `i128` so that
/// neither an axis of 2^63 or more elements nor `i64::MIN` wraps.
fn resolve_int(i: i64, len: u64, dim: usize) -> Result<u64> {
    let resolved = if i < 0 {
        i128::from(i) + i128::from(len)
    } else {
        i128::from(i)
    };
    match u64::try_from(resolved) {
        Ok(index) if index < len => Ok(index),
        _ => Err(Error::OutOfBounds(format!(
            "index {i} is out of bounds for axis {dim} with size {len}"
        ))),
    }
}

/// Python's `slice(start, stop, step).indices(len)` and the number of indices it yields,
/// in `i128`: with `i64` a step near 2^63 (or an axis of 2^63 elements or more) wrapped and
/// selected nothing.
fn bound_slice(start: Option<i64>, stop: Option<i64>, step: i64, len: u64) -> Pick {
    let (step, len) = (i128::from(step), i128::from(len));
    let clamp = |value: Option<i64>, default: i128, lower: i128, upper: i128| match value {
        None => default,
        Some(v) if v < 0 => (i128::from(v) + len).max(lower),
        Some(v) => i128::from(v).min(upper),
    };
    let (start, stop) = if step > 0 {
        (clamp(start, 0, 0, len), clamp(stop, len, 0, len))
    } else {
        (
            clamp(start, len - 1, -1, len - 1),
            clamp(stop, -1, -1, len - 1),
        )
    };
    let count = if step > 0 && stop > start {
        (stop - start + step - 1) / step
    } else if step < 0 && start > stop {
        (start - stop - step - 1) / -step
    } else {
        0
    };
    // In range: 0 <= start < len <= u64::MAX when anything is selected, and count <= len.
    let as_u64 = |v: i128| u64::try_from(v).expect("bounded by the axis length");
    Pick::Progression {
        first: if count > 0 { as_u64(start) } else { 0 },
        step: i64::try_from(step).expect("an i64 step"),
        count: as_u64(count),
    }
}

fn bound_axis(index: &AxisIndex, len: u64, dim: usize) -> Result<AxisSelection> {
    match index {
        AxisIndex::Int(i) => Ok(AxisSelection {
            pick: Pick::Progression {
                first: resolve_int(*i, len, dim)?,
                step: 1,
                count: 1,
            },
            keep: false,
        }),
        AxisIndex::Array(indices) => {
            let resolved: Result<Vec<u64>> =
                indices.iter().map(|&i| resolve_int(i, len, dim)).collect();
            Ok(AxisSelection {
                pick: Pick::List(resolved?.into()),
                keep: true,
            })
        }
        AxisIndex::Mask(mask) => {
            if mask.len() as u64 != len {
                return Err(Error::OutOfBounds(format!(
                    "boolean index of length {} does not match axis {dim} of size {len}",
                    mask.len()
                )));
            }
            let selected: Vec<u64> = (0..len).filter(|&i| mask[i as usize]).collect();
            Ok(AxisSelection {
                pick: Pick::List(selected.into()),
                keep: true,
            })
        }
        AxisIndex::Slice { start, stop, step } => {
            let step = step.unwrap_or(1);
            if step == 0 {
                return Err(Error::InvalidArgument("slice step cannot be zero".into()));
            }
            Ok(AxisSelection {
                pick: bound_slice(*start, *stop, step, len),
                keep: true,
            })
        }
        AxisIndex::Ellipsis => unreachable!("ellipsis is expanded by the caller"),
    }
}

/// Points on some axes (`coords[k][p]` is point `p`'s index on `axes[k]`), read like
/// xarray's vectorized selection: one output axis of points replaces the point axes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointSet {
    pub axes: Vec<usize>,
    pub coords: Vec<Vec<u64>>,
    /// Where the points go along the output's point axis when other requests share that output
    /// (`None`: point `p` at `p`, the axis as long as the points).
    pub rows: Option<PointRows>,
}

/// The smallest value that `values` holds more than once.
pub fn first_repeated(mut values: Vec<u64>) -> Option<u64> {
    values.sort_unstable();
    values
        .windows(2)
        .find_map(|w| (w[0] == w[1]).then_some(w[0]))
}

/// The rows of a point axis that a request fills in an output shared with other requests: point
/// `p` goes to row `row[p]` of an axis of `extent` rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointRows {
    pub row: Vec<u64>,
    pub extent: u64,
}

impl PointSet {
    /// Bounds the points by `shape`: same number of points on every axis, in bounds.
    pub fn new(axes: Vec<usize>, coords: Vec<Vec<i64>>, shape: &[u64]) -> Result<Self> {
        if axes.is_empty() || axes.len() != coords.len() {
            return Err(Error::InvalidArgument(
                "points need at least one axis, each with indices".into(),
            ));
        }
        let count = coords[0].len();
        let mut seen = vec![false; shape.len()];
        let mut bounded = Vec::with_capacity(axes.len());
        for (&axis, indices) in axes.iter().zip(&coords) {
            if axis >= shape.len() || std::mem::replace(&mut seen[axis], true) {
                return Err(Error::OutOfBounds(format!(
                    "point axis {axis} is repeated or not an axis of a {}-dimensional array",
                    shape.len()
                )));
            }
            if indices.len() != count {
                return Err(Error::InvalidArgument(format!(
                    "every point axis needs one index per point: {count} and {}",
                    indices.len()
                )));
            }
            let resolved: Result<Vec<u64>> = indices
                .iter()
                .map(|&i| resolve_int(i, shape[axis], axis))
                .collect();
            bounded.push(resolved?);
        }
        Ok(Self {
            axes,
            coords: bounded,
            rows: None,
        })
    }

    /// The points placed at `rows` of a point axis of `extent` rows: one row per point, each
    /// in bounds and none twice (two points writing one row would race).
    pub fn with_rows(mut self, rows: &[i64], extent: u64) -> Result<Self> {
        if rows.len() != self.len() {
            return Err(Error::InvalidArgument(format!(
                "one output row per point: {} points and {} rows",
                self.len(),
                rows.len()
            )));
        }
        let mut row = Vec::with_capacity(rows.len());
        for &r in rows {
            let r = u64::try_from(r)
                .ok()
                .filter(|&r| r < extent)
                .ok_or_else(|| {
                    Error::OutOfBounds(format!("output row {r} is not in 0..{extent}"))
                })?;
            row.push(r);
        }
        if let Some(twice) = first_repeated(row.clone()) {
            return Err(Error::InvalidArgument(format!(
                "output row {twice} is given to two points"
            )));
        }
        self.rows = Some(PointRows { row, extent });
        Ok(self)
    }

    pub fn len(&self) -> usize {
        self.coords[0].len()
    }

    /// The length of the output's point axis.
    pub fn extent(&self) -> u64 {
        self.rows.as_ref().map_or(self.len() as u64, |r| r.extent)
    }

    /// The row of the output's point axis where point `p` goes.
    pub fn row(&self, p: usize) -> u64 {
        self.rows.as_ref().map_or(p as u64, |r| r.row[p])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The selection of point `p`: `selection` with a single index on each point axis.
    pub fn selection_of(&self, selection: &Selection, p: usize) -> Selection {
        let mut axes = selection.axes.clone();
        for (k, &axis) in self.axes.iter().enumerate() {
            axes[axis] = AxisSelection {
                pick: Pick::Progression {
                    first: self.coords[k][p],
                    step: 1,
                    count: 1,
                },
                keep: false,
            };
        }
        Selection { axes }
    }

    /// The output shape: the kept axes of `selection`, with one axis of points where the
    /// first point axis was; and per array axis, its element stride in that output (0 for
    /// axes that hold one index), plus the stride between points.
    pub fn layout(&self, selection: &Selection) -> (Vec<u64>, Vec<u64>, u64) {
        let first = *self.axes.iter().min().expect("at least one point axis");
        // Output axes: Some(array axis) or None for the point axis.
        let mut output_axes: Vec<Option<usize>> = Vec::new();
        for (d, axis) in selection.axes.iter().enumerate() {
            if d == first {
                output_axes.push(None);
            } else if axis.keep && !self.axes.contains(&d) {
                output_axes.push(Some(d));
            }
        }
        let shape: Vec<u64> = output_axes
            .iter()
            .map(|a| a.map_or(self.extent(), |d| selection.axes[d].count()))
            .collect();
        let mut output_strides = vec![1u64; shape.len()];
        for k in (0..shape.len().saturating_sub(1)).rev() {
            output_strides[k] = output_strides[k + 1] * shape[k + 1];
        }
        let mut strides = vec![0u64; selection.axes.len()];
        let mut point_stride = 0;
        for (k, axis) in output_axes.iter().enumerate() {
            match axis {
                Some(d) => strides[*d] = output_strides[k],
                None => point_stride = output_strides[k],
            }
        }
        (shape, strides, point_stride)
    }
}

/// Where one axis of a chunk's decoded region goes in the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Output positions `out_start..out_start + len`; output `k` is region index
    /// `anchor + k * step`, where the anchor is the region's first (or, stepping
    /// backwards, last) index.
    Run { out_start: u64, len: u64, step: i64 },
    /// `(output position, region index)` pairs, from integer-array selections.
    Pairs(Vec<(u64, u64)>),
}

impl Placement {
    /// Calls `f` with every `(output position, region index)` of this axis, in order.
    pub fn for_each_pair(&self, region_len: u64, mut f: impl FnMut(u64, u64)) {
        match self {
            Placement::Run {
                out_start,
                len,
                step,
            } => {
                let anchor = if *step > 0 { 0 } else { region_len - 1 };
                for k in 0..*len {
                    f(out_start + k, progression_index(anchor, *step, k));
                }
            }
            Placement::Pairs(pairs) => {
                for &(o, r) in pairs {
                    f(o, r);
                }
            }
        }
    }

    /// Every `(output position, region index)` of this axis.
    pub fn pairs(&self, region_len: u64) -> Vec<(u64, u64)> {
        let mut pairs = Vec::new();
        self.for_each_pair(region_len, |o, r| pairs.push((o, r)));
        pairs
    }
}

/// One chunk's part of a request: decode `region` of the chunk and place its
/// selected elements in the output (in the full-rank output shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkPart {
    pub chunk: Dims,
    /// Region of the chunk to decode, in chunk-local coordinates.
    pub region_start: Dims,
    pub region_shape: Dims,
    pub placements: SmallVec<[Placement; INLINE_DIMS]>,
}

/// Axes held inline by a [`ChunkPart`]: a 100-point read has a million parts, and four
/// heap vectors each were most of the cost of making, reading and freeing them.
pub const INLINE_DIMS: usize = 5;
/// Per-axis numbers of a [`ChunkPart`].
pub type Dims = SmallVec<[u64; INLINE_DIMS]>;

impl ChunkPart {
    /// The output box, when the decoded region maps onto it element for element, in order.
    pub fn direct_output(&self) -> Option<(Vec<u64>, Vec<u64>)> {
        let mut start = Vec::with_capacity(self.placements.len());
        let mut shape = Vec::with_capacity(self.placements.len());
        for placement in &self.placements {
            match placement {
                Placement::Run {
                    out_start,
                    len,
                    step,
                } if *step == 1 || *len == 1 => {
                    start.push(*out_start);
                    shape.push(*len);
                }
                _ => return None,
            }
        }
        Some((start, shape))
    }
}

/// One axis's share of one chunk.
#[derive(Debug, Clone)]
struct AxisPart {
    chunk: u64,
    region_start: u64,
    region_len: u64,
    placement: Placement,
}

/// Output positions `[lo, hi)` of a progression whose indices fall in `[start, end)`.
fn progression_positions(first: u64, step: i64, count: u64, start: u64, end: u64) -> (u64, u64) {
    let stride = step.unsigned_abs();
    let (lo, hi) = if step > 0 {
        let lo = start.saturating_sub(first).div_ceil(stride);
        let hi = if end > first {
            (end - first).div_ceil(stride)
        } else {
            0
        };
        (lo, hi)
    } else {
        let lo = if first >= end {
            (first - end) / stride + 1
        } else {
            0
        };
        let hi = if first >= start {
            (first - start) / stride + 1
        } else {
            0
        };
        (lo, hi)
    };
    (lo.min(count), hi.min(count))
}

fn axis_parts(axis: &AxisSelection, chunk_len: u64) -> Vec<AxisPart> {
    if axis.count() == 0 {
        return Vec::new();
    }
    match &axis.pick {
        Pick::Progression { first, step, count } => {
            let last = progression_index(*first, *step, count - 1);
            let (lo_index, hi_index) = ((*first).min(last), (*first).max(last) + 1);
            let mut parts = Vec::new();
            let mut chunk = lo_index / chunk_len;
            while chunk <= (hi_index - 1) / chunk_len {
                let start = chunk * chunk_len;
                let (lo, hi) =
                    progression_positions(*first, *step, *count, start, start + chunk_len);
                if hi > lo {
                    let a = progression_index(*first, *step, lo) - start;
                    let b = progression_index(*first, *step, hi - 1) - start;
                    parts.push(AxisPart {
                        chunk,
                        region_start: a.min(b),
                        region_len: a.abs_diff(b) + 1,
                        placement: Placement::Run {
                            out_start: lo,
                            len: hi - lo,
                            step: *step,
                        },
                    });
                    chunk += 1;
                } else {
                    // Jump straight to the chunk holding the next selected index above this
                    // chunk (stepping chunk by chunk, a large step over a long axis took
                    // as many turns as the axis has chunks).
                    let next = if *step > 0 {
                        progression_index(*first, *step, lo.min(count - 1))
                    } else {
                        progression_index(*first, *step, lo.saturating_sub(1))
                    };
                    chunk = (next / chunk_len).max(chunk + 1);
                }
            }
            parts
        }
        Pick::List(indices) => {
            let mut by_chunk: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
            for (position, &index) in indices.iter().enumerate() {
                by_chunk
                    .entry(index / chunk_len)
                    .or_default()
                    .push((position as u64, index % chunk_len));
            }
            by_chunk
                .into_iter()
                .map(|(chunk, mut pairs)| {
                    let lo = pairs.iter().map(|p| p.1).min().unwrap_or(0);
                    let hi = pairs.iter().map(|p| p.1).max().unwrap_or(0);
                    for pair in &mut pairs {
                        pair.1 -= lo;
                    }
                    AxisPart {
                        chunk,
                        region_start: lo,
                        region_len: hi - lo + 1,
                        placement: Placement::Pairs(pairs),
                    }
                })
                .collect()
        }
    }
}

/// Every chunk part of `selection` on an array with regular `chunk_shape`.
pub fn chunk_parts(selection: &Selection, chunk_shape: &[u64]) -> Vec<ChunkPart> {
    let per_axis: Vec<Vec<AxisPart>> = selection
        .axes
        .iter()
        .zip(chunk_shape)
        .map(|(axis, &len)| axis_parts(axis, len))
        .collect();
    if per_axis.iter().any(Vec::is_empty) {
        return Vec::new();
    }
    let total: usize = per_axis.iter().map(Vec::len).product();
    let mut parts = Vec::with_capacity(total);
    let mut counter = vec![0usize; per_axis.len()];
    loop {
        let axes = counter
            .iter()
            .enumerate()
            .map(|(dim, &c)| &per_axis[dim][c]);
        parts.push(ChunkPart {
            chunk: axes.clone().map(|a| a.chunk).collect(),
            region_start: axes.clone().map(|a| a.region_start).collect(),
            region_shape: axes.clone().map(|a| a.region_len).collect(),
            placements: axes.map(|a| a.placement.clone()).collect(),
        });
        // Advance the odometer, last axis fastest (C order).
        let mut dim = counter.len();
        loop {
            if dim == 0 {
                return parts;
            }
            dim -= 1;
            counter[dim] += 1;
            if counter[dim] < per_axis[dim].len() {
                break;
            }
            counter[dim] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(start: Option<i64>, stop: Option<i64>, step: Option<i64>) -> AxisIndex {
        AxisIndex::Slice { start, stop, step }
    }

    /// The indices Python's `range(*slice(start, stop, step).indices(len))` yields.
    fn python_range(
        start: Option<i64>,
        stop: Option<i64>,
        step: Option<i64>,
        len: i64,
    ) -> Vec<u64> {
        let step = step.unwrap_or(1);
        let norm = |v: i64, lo: i64, hi: i64| if v < 0 { (v + len).max(lo) } else { v.min(hi) };
        let (s, e) = if step > 0 {
            (
                start.map_or(0, |v| norm(v, 0, len)),
                stop.map_or(len, |v| norm(v, 0, len)),
            )
        } else {
            (
                start.map_or(len - 1, |v| norm(v, -1, len - 1)),
                stop.map_or(-1, |v| norm(v, -1, len - 1)),
            )
        };
        let mut out = Vec::new();
        let mut i = s;
        while (step > 0 && i < e) || (step < 0 && i > e) {
            out.push(i as u64);
            i += step;
        }
        out
    }

    #[test]
    fn slices_match_python() {
        let values = [
            None,
            Some(-12),
            Some(-5),
            Some(-1),
            Some(0),
            Some(1),
            Some(3),
            Some(7),
            Some(12),
        ];
        for len in [0i64, 1, 7, 10] {
            for start in values {
                for stop in values {
                    for step in [
                        None,
                        Some(1),
                        Some(2),
                        Some(3),
                        Some(-1),
                        Some(-2),
                        Some(-4),
                    ] {
                        let sel =
                            Selection::new(&[slice(start, stop, step)], &[len as u64]).unwrap();
                        let axis = &sel.axes[0];
                        let got: Vec<u64> = (0..axis.count()).map(|p| axis.index(p)).collect();
                        assert_eq!(
                            got,
                            python_range(start, stop, step, len),
                            "{start:?}:{stop:?}:{step:?} len {len}"
                        );
                    }
                }
            }
        }
    }

    /// Checks that the parts place every selected element exactly once, from the right index.
    fn check_cover(sel: &Selection, chunks: &[u64]) {
        let full = sel.full_shape();
        let mut seen = vec![0u32; full.iter().product::<u64>() as usize];
        for part in chunk_parts(sel, chunks) {
            let pairs: Vec<Vec<(u64, u64)>> = part
                .placements
                .iter()
                .zip(&part.region_shape)
                .map(|(p, &len)| p.pairs(len))
                .collect();
            for &(o0, r0) in &pairs[0] {
                for &(o1, r1) in &pairs[1] {
                    seen[(o0 * full[1] + o1) as usize] += 1;
                    for (d, (o, r)) in [(o0, r0), (o1, r1)].into_iter().enumerate() {
                        assert!(r < part.region_shape[d]);
                        let index = part.chunk[d] * chunks[d] + part.region_start[d] + r;
                        assert_eq!(index, sel.axes[d].index(o), "axis {d} output {o}");
                    }
                }
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "{sel:?}");
    }

    #[test]
    fn parts_cover_every_selected_element_once() {
        let shape = [23u64, 17];
        let chunks = [5u64, 4];
        for step0 in [1i64, 2, 3, 7, -1, -3] {
            for step1 in [1i64, 4, 6, -2] {
                let sel = Selection::new(
                    &[
                        slice(Some(1), None, Some(step0)),
                        slice(None, Some(-2), Some(step1)),
                    ],
                    &shape,
                )
                .unwrap();
                check_cover(&sel, &chunks);
            }
        }
        let lists = Selection::new(
            &[
                AxisIndex::Array(vec![22, 0, 4, 5, 5, -1]),
                AxisIndex::Array(vec![3, 16, 8]),
            ],
            &shape,
        )
        .unwrap();
        check_cover(&lists, &chunks);
        let mixed = Selection::new(
            &[
                AxisIndex::Array(vec![7, 2, 19]),
                slice(None, None, Some(-3)),
            ],
            &shape,
        )
        .unwrap();
        check_cover(&mixed, &chunks);
    }

    #[test]
    fn errors() {
        assert!(matches!(
            Selection::new(&[AxisIndex::Int(5)], &[5]),
            Err(Error::OutOfBounds(_))
        ));
        assert!(matches!(
            Selection::new(&[AxisIndex::Int(-6)], &[5]),
            Err(Error::OutOfBounds(_))
        ));
        assert!(Selection::new(&[AxisIndex::Int(-5)], &[5]).is_ok());
        assert!(Selection::new(&[AxisIndex::Int(0), AxisIndex::Int(0)], &[5]).is_err());
        assert!(Selection::new(&[AxisIndex::Ellipsis, AxisIndex::Ellipsis], &[5]).is_err());
        assert!(matches!(
            Selection::new(&[slice(None, None, Some(0))], &[5]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            Selection::new(&[AxisIndex::Array(vec![0, 5])], &[5]),
            Err(Error::OutOfBounds(_))
        ));
        assert!(matches!(
            Selection::new(&[AxisIndex::Mask(vec![true, false])], &[5]),
            Err(Error::OutOfBounds(_))
        ));
        let mask = Selection::new(&[AxisIndex::Mask(vec![false, true, true])], &[3]).unwrap();
        assert_eq!(mask.axes[0].pick, Pick::List(vec![1, 2].into()));
    }

    #[test]
    fn point_layout_replaces_point_axes_with_one_axis() {
        let shape = [4u64, 6, 10, 12];
        let sel = Selection::new(&[AxisIndex::Int(1)], &shape).unwrap();
        let points =
            PointSet::new(vec![2, 3], vec![vec![0, 9, -1], vec![5, 5, 0]], &shape).unwrap();
        let (out, strides, point_stride) = points.layout(&sel);
        assert_eq!(out, vec![6, 3]);
        assert_eq!((strides, point_stride), (vec![0, 3, 0, 0], 1));
        let p2 = points.selection_of(&sel, 2);
        assert_eq!(p2.axes[2].index(0), 9);
        assert!(PointSet::new(vec![2, 2], vec![vec![0], vec![0]], &shape).is_err());
        assert!(PointSet::new(vec![2, 3], vec![vec![0, 1], vec![0]], &shape).is_err());
        assert!(PointSet::new(vec![2], vec![vec![10]], &shape).is_err());
        // Placed at rows of a longer shared point axis: its length sets the strides.
        let placed = points.clone().with_rows(&[4, 0, 2], 5).unwrap();
        assert_eq!(placed.layout(&sel).0, vec![6, 5]);
        assert_eq!((placed.row(0), placed.row(2), placed.extent()), (4, 2, 5));
        assert!(points.clone().with_rows(&[0, 0, 1], 5).is_err());
        assert!(points.clone().with_rows(&[0, 5, 1], 5).is_err());
        assert!(points.clone().with_rows(&[0, -1, 1], 5).is_err());
        assert!(points.with_rows(&[0, 1], 5).is_err());
    }

    #[test]
    fn huge_steps_and_axes_do_not_wrap() {
        let progression = |index: AxisIndex, len: u64| {
            Selection::new(&[index], &[len]).unwrap().axes[0]
                .pick
                .clone()
        };
        let one = |first: u64, step: i64| Pick::Progression {
            first,
            step,
            count: 1,
        };
        assert_eq!(
            progression(slice(Some(0), Some(10), Some(i64::MAX)), 20),
            one(0, i64::MAX)
        );
        assert_eq!(
            progression(slice(None, None, Some(i64::MIN)), 20),
            one(19, i64::MIN)
        );
        assert_eq!(
            progression(slice(None, None, Some(-i64::MAX)), 20),
            one(19, -i64::MAX)
        );
        // An axis of more than 2^63 elements, from its end.
        let len = u64::MAX - 1;
        assert_eq!(progression(AxisIndex::Int(-1), len), {
            let mut pick = one(len - 1, 1);
            if let Pick::Progression { step, .. } = &mut pick {
                *step = 1;
            }
            pick
        });
        assert_eq!(
            progression(slice(Some(-3), None, None), len),
            Pick::Progression {
                first: len - 3,
                step: 1,
                count: 3
            }
        );
        assert_eq!(
            progression(slice(None, None, Some(i64::MIN)), len),
            Pick::Progression {
                first: len - 1,
                step: i64::MIN,
                count: 2
            }
        );
        assert!(Selection::new(&[AxisIndex::Int(i64::MIN)], &[len]).is_ok());
        assert!(Selection::new(&[AxisIndex::Int(i64::MIN)], &[20]).is_err());
    }

    #[test]
    fn zero_dimensional_is_one_part() {
        let sel = Selection::new(&[AxisIndex::Ellipsis], &[]).unwrap();
        assert_eq!(chunk_parts(&sel, &[]).len(), 1);
    }

    #[test]
    fn large_steps_skip_untouched_chunks() {
        let sel = Selection::new(&[slice(None, None, Some(100))], &[1000]).unwrap();
        assert_eq!(chunk_parts(&sel, &[10]).len(), 10);
    }

    #[test]
    fn large_negative_steps_skip_untouched_chunks() {
        let sel = Selection::new(&[slice(None, None, Some(-100))], &[1000]).unwrap();
        let parts = chunk_parts(&sel, &[10]);
        assert_eq!(parts.len(), 10);
        check_cover(
            &Selection::new(
                &[slice(None, None, Some(-7)), slice(None, None, Some(-5))],
                &[23, 17],
            )
            .unwrap(),
            &[5, 4],
        );
        let sel = Selection::new(&[slice(None, None, Some(i64::MIN))], &[u64::MAX - 1]).unwrap();
        assert_eq!(chunk_parts(&sel, &[2]).len(), 2);
    }

    #[test]
    fn repeated_indices_share_one_chunk_part() {
        let sel = Selection::new(&[AxisIndex::Array(vec![3, 1, 3, 2])], &[10]).unwrap();
        let parts = chunk_parts(&sel, &[5]);
        assert_eq!(parts.len(), 1);
        assert_eq!((parts[0].region_start[0], parts[0].region_shape[0]), (1, 3));
    }
}
