//! Turns a selection into work: which chunks are touched, which region of each chunk
//! is wanted, and where in the output it goes.
//!
//! Pure arithmetic on shapes, no I/O, so that it can be tested exhaustively.

use crate::errors::{Error, Result};

/// One axis of a numpy basic-indexing selection, before it is bounded by the shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

/// The indices one axis selects: `first, first + step, ...` (`count` of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AxisSelection {
    pub first: u64,
    pub step: i64,
    pub count: u64,
    /// `false` for an integer index: the axis is dropped from the output.
    pub keep: bool,
}

impl AxisSelection {
    pub fn full(len: u64) -> Self {
        Self {
            first: 0,
            step: 1,
            count: len,
            keep: true,
        }
    }

    fn index(&self, position: u64) -> u64 {
        if self.step > 0 {
            self.first + position * self.step as u64
        } else {
            self.first - position * self.step.unsigned_abs()
        }
    }

    /// Output positions `[lo, hi)` whose indices fall in `[start, end)`.
    fn positions_within(&self, start: u64, end: u64) -> (u64, u64) {
        if self.count == 0 || start >= end {
            return (0, 0);
        }
        let stride = self.step.unsigned_abs();
        let (lo, hi) = if self.step > 0 {
            let lo = start.saturating_sub(self.first).div_ceil(stride);
            let hi = if end > self.first {
                (end - self.first).div_ceil(stride)
            } else {
                0
            };
            (lo, hi)
        } else {
            let lo = if self.first >= end {
                (self.first - end) / stride + 1
            } else {
                0
            };
            let hi = if self.first >= start {
                (self.first - start) / stride + 1
            } else {
                0
            };
            (lo, hi)
        };
        (
            lo.min(self.count),
            hi.min(self.count).max(lo.min(self.count)),
        )
    }

    /// The smallest and one-past-largest index selected.
    fn bounds(&self) -> (u64, u64) {
        let last = self.index(self.count - 1);
        (self.first.min(last), self.first.max(last) + 1)
    }
}

/// A selection bounded by an array's shape: one [`AxisSelection`] per axis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub axes: Vec<AxisSelection>,
}

impl Selection {
    /// Bounds `indices` (numpy basic indexing) by `shape`.
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
            axes.push(bound_axis(*index, shape[dim], dim)?);
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
        self.axes.iter().map(|a| a.count).collect()
    }

    /// The shape numpy gives the result (integer-indexed axes dropped).
    pub fn output_shape(&self) -> Vec<u64> {
        self.axes
            .iter()
            .filter(|a| a.keep)
            .map(|a| a.count)
            .collect()
    }

    pub fn num_elements(&self) -> u64 {
        self.axes.iter().map(|a| a.count).product()
    }
}

fn bound_axis(index: AxisIndex, len: u64, dim: usize) -> Result<AxisSelection> {
    let ilen = len as i64;
    match index {
        AxisIndex::Int(i) => {
            let resolved = if i < 0 { i + ilen } else { i };
            if !(0..ilen).contains(&resolved) {
                return Err(Error::OutOfBounds(format!(
                    "index {i} is out of bounds for axis {dim} with size {len}"
                )));
            }
            Ok(AxisSelection {
                first: resolved as u64,
                step: 1,
                count: 1,
                keep: false,
            })
        }
        AxisIndex::Slice { start, stop, step } => {
            let step = step.unwrap_or(1);
            if step == 0 {
                return Err(Error::InvalidArgument("slice step cannot be zero".into()));
            }
            // Python's slice.indices(len), then the number of elements it yields.
            let clamp = |value: Option<i64>, default: i64, lower: i64, upper: i64| match value {
                None => default,
                Some(v) if v < 0 => (v + ilen).max(lower),
                Some(v) => v.min(upper),
            };
            let (start, stop) = if step > 0 {
                (clamp(start, 0, 0, ilen), clamp(stop, ilen, 0, ilen))
            } else {
                (
                    clamp(start, ilen - 1, -1, ilen - 1),
                    clamp(stop, -1, -1, ilen - 1),
                )
            };
            let count = if step > 0 && stop > start {
                (stop - start + step - 1) / step
            } else if step < 0 && start > stop {
                (start - stop - step - 1) / -step
            } else {
                0
            };
            Ok(AxisSelection {
                first: if count > 0 { start as u64 } else { 0 },
                step,
                count: count as u64,
                keep: true,
            })
        }
        AxisIndex::Ellipsis => unreachable!("ellipsis is expanded by the caller"),
    }
}

/// One chunk's part of a request: decode `region` of the chunk, place it at
/// `out_start..out_start+out_shape` of the output (in the full-rank output shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkPart {
    pub chunk: Vec<u64>,
    /// Region of the chunk to decode, in chunk-local coordinates.
    pub region_start: Vec<u64>,
    pub region_shape: Vec<u64>,
    pub out_start: Vec<u64>,
    pub out_shape: Vec<u64>,
    /// Per axis, the step between consecutive output elements inside `region`
    /// (negative when the selection runs backwards).
    pub steps: Vec<i64>,
}

impl ChunkPart {
    /// Whether the decoded region maps onto the output element for element, in order.
    pub fn is_direct(&self) -> bool {
        self.steps
            .iter()
            .zip(&self.out_shape)
            .all(|(&s, &n)| s == 1 || n == 1)
    }

    pub fn covers_chunk(&self, chunk_shape: &[u64]) -> bool {
        self.region_start.iter().all(|&s| s == 0) && self.region_shape == chunk_shape
    }
}

/// Per axis: the chunks the selection touches and, for each, `(chunk index, lo, hi)` output positions.
fn axis_chunks(axis: &AxisSelection, chunk_len: u64) -> Vec<(u64, u64, u64)> {
    if axis.count == 0 {
        return Vec::new();
    }
    let (lo_index, hi_index) = axis.bounds();
    let first_chunk = lo_index / chunk_len;
    let last_chunk = (hi_index - 1) / chunk_len;
    let mut touched = Vec::new();
    let mut chunk = first_chunk;
    while chunk <= last_chunk {
        let start = chunk * chunk_len;
        let (lo, hi) = axis.positions_within(start, start + chunk_len);
        if hi > lo {
            touched.push((chunk, lo.min(hi), hi));
            chunk += 1;
        } else {
            // Skip straight to the chunk holding the next selected index.
            let next_index = if axis.step > 0 {
                let skipped = (start + chunk_len)
                    .saturating_sub(axis.first)
                    .div_ceil(axis.step as u64);
                axis.index(skipped.min(axis.count - 1))
            } else {
                start + chunk_len
            };
            chunk = (next_index / chunk_len).max(chunk + 1);
        }
    }
    if axis.step < 0 {
        touched.reverse();
    }
    touched
}

/// Every chunk part of `selection` on an array with regular `chunk_shape`.
pub fn chunk_parts(selection: &Selection, chunk_shape: &[u64]) -> Vec<ChunkPart> {
    let per_axis: Vec<Vec<(u64, u64, u64)>> = selection
        .axes
        .iter()
        .zip(chunk_shape)
        .map(|(axis, &len)| axis_chunks(axis, len))
        .collect();
    if per_axis.iter().any(Vec::is_empty) {
        return Vec::new();
    }
    let total: usize = per_axis.iter().map(Vec::len).product();
    let mut parts = Vec::with_capacity(total);
    let mut counter = vec![0usize; per_axis.len()];
    loop {
        let mut part = ChunkPart {
            chunk: Vec::with_capacity(counter.len()),
            region_start: Vec::with_capacity(counter.len()),
            region_shape: Vec::with_capacity(counter.len()),
            out_start: Vec::with_capacity(counter.len()),
            out_shape: Vec::with_capacity(counter.len()),
            steps: Vec::with_capacity(counter.len()),
        };
        for (dim, &c) in counter.iter().enumerate() {
            let (chunk, lo, hi) = per_axis[dim][c];
            let axis = &selection.axes[dim];
            let chunk_start = chunk * chunk_shape[dim];
            let a = axis.index(lo) - chunk_start;
            let b = axis.index(hi - 1) - chunk_start;
            part.chunk.push(chunk);
            part.region_start.push(a.min(b));
            part.region_shape.push(a.max(b) - a.min(b) + 1);
            part.out_start.push(lo);
            part.out_shape.push(hi - lo);
            part.steps.push(axis.step);
        }
        parts.push(part);
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
                        let axis = sel.axes[0];
                        let got: Vec<u64> = (0..axis.count).map(|p| axis.index(p)).collect();
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
                let sel = if step0 < 0 {
                    Selection::new(
                        &[
                            slice(None, None, Some(step0)),
                            slice(None, None, Some(step1)),
                        ],
                        &shape,
                    )
                    .unwrap()
                } else {
                    sel
                };
                let full = sel.full_shape();
                let mut seen = vec![0u32; (full[0] * full[1]) as usize];
                for part in chunk_parts(&sel, &chunks) {
                    for i in 0..part.out_shape[0] {
                        for j in 0..part.out_shape[1] {
                            let o = [part.out_start[0] + i, part.out_start[1] + j];
                            seen[(o[0] * full[1] + o[1]) as usize] += 1;
                            // The element decoded for this output position is the one selected.
                            for d in 0..2 {
                                let expected = sel.axes[d].index(o[d]);
                                let stride = part.steps[d];
                                let k = [i, j][d] as i64;
                                let anchor = if stride > 0 {
                                    part.region_start[d] as i64
                                } else {
                                    (part.region_start[d] + part.region_shape[d] - 1) as i64
                                };
                                let local = anchor + k * stride;
                                assert_eq!(part.chunk[d] * chunks[d] + local as u64, expected);
                            }
                        }
                    }
                }
                assert!(seen.iter().all(|&n| n == 1), "steps {step0} {step1}");
            }
        }
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
    }

    #[test]
    fn zero_dimensional_is_one_part() {
        let sel = Selection::new(&[AxisIndex::Ellipsis], &[]).unwrap();
        assert_eq!(chunk_parts(&sel, &[]).len(), 1);
    }

    #[test]
    fn large_steps_skip_untouched_chunks() {
        let sel = Selection::new(&[slice(None, None, Some(100))], &[1000]).unwrap();
        let parts = chunk_parts(&sel, &[10]);
        assert_eq!(parts.len(), 10);
    }
}
