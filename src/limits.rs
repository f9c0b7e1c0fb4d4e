//! Sizes from metadata are untrusted numbers: an array whose element count, or whose
//! chunks' byte size, does not fit the integers the read path computes with is refused
//! when it is opened, with the field named, rather than overflowing later. A read whose
//! outputs and decode buffers would exceed the caller's `max_memory` is refused before
//! anything is allocated.

use crate::errors::Error;

/// The largest decoded chunk: decoding allocates it whole, and slices index it with `usize`.
pub const MAX_CHUNK_BYTES: u64 = isize::MAX as u64;

/// Checks `shape`, the (regular) `chunk_shape` and the element size; the error names the field.
pub fn check_sizes(shape: &[u64], chunk_shape: &[u64], itemsize: usize) -> Result<(), String> {
    if chunk_shape.len() != shape.len() {
        return Err(format!(
            "chunk shape {chunk_shape:?} has {} dimensions, shape {shape:?} has {}",
            chunk_shape.len(),
            shape.len()
        ));
    }
    if chunk_shape.contains(&0) {
        return Err(format!(
            "chunk shape {chunk_shape:?} has a zero-length dimension"
        ));
    }
    // The read path computes chunk bounds `chunk * chunk_len` up to the end of the last
    // (partial) chunk: a dimension of 2^63 or more elements must keep them within u64.
    if let Some((&len, &chunk)) = shape
        .iter()
        .zip(chunk_shape)
        .find(|(&len, &chunk)| len.div_ceil(chunk).checked_mul(chunk).is_none())
    {
        return Err(format!(
            "a dimension of {len} elements in chunks of {chunk} ends beyond 2^64 elements"
        ));
    }
    if checked_product(shape).is_none() {
        return Err(format!("shape {shape:?} has more than 2^64 elements"));
    }
    let chunk_bytes = checked_product(chunk_shape).and_then(|n| n.checked_mul(itemsize as u64));
    match chunk_bytes {
        Some(bytes) if bytes <= MAX_CHUNK_BYTES => Ok(()),
        _ => Err(format!(
            "chunk shape {chunk_shape:?} of {itemsize}-byte elements is larger than {MAX_CHUNK_BYTES} bytes"
        )),
    }
}

fn checked_product(values: &[u64]) -> Option<u64> {
    values.iter().try_fold(1u64, |acc, &v| acc.checked_mul(v))
}

/// The memory a read needs at most: the outputs fastzarr allocates, plus one decoded
/// chunk in flight on each decode thread (a chunk is decoded whole before its part is
/// copied out) with its decode scratch, never more chunks than the read touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    pub output_bytes: u128,
    /// The selection's integer and mask index lists, kept as `u64`s while reading.
    pub index_bytes: u128,
    pub largest_chunk_bytes: u128,
    /// The largest scratch one chunk's decoding needs besides the decoded chunk (blosc's
    /// unshuffle block, which its header check bounds by the chunk's size).
    pub largest_scratch_bytes: u128,
    pub chunks: u128,
    pub threads: u128,
}

impl Footprint {
    pub fn new(threads: usize) -> Self {
        Self {
            output_bytes: 0,
            index_bytes: 0,
            largest_chunk_bytes: 0,
            largest_scratch_bytes: 0,
            chunks: 0,
            threads: threads as u128,
        }
    }

    /// Adds one request: `output_elements` newly allocated output elements of `itemsize`
    /// bytes, read from at most `chunks` chunks of `chunk_elements` elements.
    pub fn add(
        &mut self,
        output_elements: u64,
        chunk_elements: u64,
        itemsize: usize,
        chunks: u128,
    ) {
        self.output_bytes += u128::from(output_elements) * itemsize as u128;
        if chunks > 0 {
            self.largest_chunk_bytes = self
                .largest_chunk_bytes
                .max(u128::from(chunk_elements) * itemsize as u128);
        }
        self.chunks = self.chunks.saturating_add(chunks);
    }

    /// Counts `bytes` of decode scratch for each chunk in flight (see the field).
    pub fn add_decode_scratch(&mut self, bytes: u128) {
        self.largest_scratch_bytes = self.largest_scratch_bytes.max(bytes);
    }

    /// Adds `indices` listed indices (an integer array or a mask's selected positions).
    pub fn add_index_lists(&mut self, indices: u128) {
        self.index_bytes = self
            .index_bytes
            .saturating_add(indices.saturating_mul(INDEX_BYTES));
    }

    pub fn chunks_in_flight(&self) -> u128 {
        self.chunks.min(self.threads)
    }

    pub fn total(&self) -> u128 {
        let per_chunk = self
            .largest_chunk_bytes
            .saturating_add(self.largest_scratch_bytes);
        self.output_bytes
            .saturating_add(self.index_bytes)
            .saturating_add(per_chunk.saturating_mul(self.chunks_in_flight()))
    }

    /// Refuses the read, before anything is allocated, when it needs more than `budget`.
    pub fn check(&self, budget: Option<u64>) -> Result<(), Error> {
        match budget {
            Some(budget) if self.total() > u128::from(budget) => Err(Error::MemoryBudget {
                needed: self.total(),
                budget,
                detail: format!(
                    "outputs {}{} + up to {} decoded chunk(s) of {}{} in flight",
                    human_bytes(self.output_bytes),
                    if self.index_bytes > 0 {
                        format!(" + index lists {}", human_bytes(self.index_bytes))
                    } else {
                        String::new()
                    },
                    self.chunks_in_flight(),
                    human_bytes(self.largest_chunk_bytes),
                    if self.largest_scratch_bytes > 0 {
                        format!(
                            " with {} of decode scratch each",
                            human_bytes(self.largest_scratch_bytes)
                        )
                    } else {
                        String::new()
                    }
                ),
            }),
            _ => Ok(()),
        }
    }
}

/// Buffers from this size on are reserved fallibly before they are allocated.
const PROBE_FROM: u64 = 64 << 20;

/// Whether `bytes` can be allocated now. A failed allocation aborts the process, so a large
/// buffer whose size comes from metadata (a decoded chunk) is first reserved fallibly and
/// freed: one mapping and unmapping, nothing touched.
pub fn can_allocate(bytes: u64) -> bool {
    if bytes < PROBE_FROM {
        return true;
    }
    let Ok(bytes) = usize::try_from(bytes) else {
        return false;
    };
    Vec::<u8>::new().try_reserve_exact(bytes).is_ok()
}

/// Bytes one listed index takes while reading (a `u64`).
const INDEX_BYTES: u128 = 8;

/// Bytes for people: "1.5 GB" (decimal units, as `max_memory="2GB"` means).
pub fn human_bytes(bytes: u128) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::{check_sizes, Footprint};

    #[test]
    fn footprint_counts_outputs_and_chunks_in_flight() {
        let mut footprint = Footprint::new(4);
        footprint.add(1000, 100, 8, 10);
        footprint.add(10, 500, 4, 1);
        assert_eq!(footprint.output_bytes, 8040);
        assert_eq!(footprint.largest_chunk_bytes, 2000);
        assert_eq!(footprint.total(), 8040 + 4 * 2000);
        assert!(footprint.check(None).is_ok());
        assert!(footprint.check(Some(16_040)).is_ok());
        let message = footprint.check(Some(16_039)).unwrap_err().to_string();
        assert!(
            message.contains("16.0 kB") && message.contains("4 decoded chunk"),
            "{message}"
        );
        // Decode scratch is counted once per chunk in flight.
        let mut scratched = footprint;
        scratched.add_decode_scratch(500);
        assert_eq!(scratched.total(), 8040 + 4 * 2500);
        assert!(scratched
            .check(Some(18_039))
            .unwrap_err()
            .to_string()
            .contains("decode scratch"));
        // Fewer chunks than threads: only those are in flight.
        let mut small = Footprint::new(16);
        small.add(0, 1000, 8, 2);
        assert_eq!(small.total(), 16_000);
        // u64::MAX elements of 8 bytes do not overflow the arithmetic.
        footprint.add(u64::MAX, u64::MAX, 8, u128::MAX);
        assert!(footprint.check(Some(u64::MAX)).is_err());
    }

    #[test]
    fn impossible_allocations_are_detected() {
        assert!(super::can_allocate(1 << 20));
        // Beyond what a Vec can hold. (Sizes below that depend on the machine: with memory
        // overcommitted, even exabytes may be reserved; tests/test_hostile_input.py checks
        // the refusals under an address-space limit.)
        assert!(!super::can_allocate(u64::MAX));
    }

    #[test]
    fn overflowing_sizes_are_refused() {
        assert!(check_sizes(&[4, 6], &[2, 3], 8).is_ok());
        assert!(check_sizes(&[], &[], 8).is_ok());
        assert!(check_sizes(&[u64::MAX], &[1], 8).is_ok());
        assert!(check_sizes(&[4, 6], &[2], 8)
            .unwrap_err()
            .contains("dimensions"));
        assert!(check_sizes(&[4, 6], &[2, 0], 8)
            .unwrap_err()
            .contains("zero"));
        assert!(check_sizes(&[1 << 62, 1 << 62], &[1, 1], 8)
            .unwrap_err()
            .contains("2^64"));
        assert!(check_sizes(&[1 << 40, 1 << 40], &[1 << 40, 1 << 40], 1).is_err());
        assert!(check_sizes(&[u64::MAX], &[1 << 62], 8).is_err());
        assert!(check_sizes(&[u64::MAX - 1], &[2], 8).is_ok());
        assert!(check_sizes(&[u64::MAX], &[2], 8)
            .unwrap_err()
            .contains("beyond 2^64"));
    }
}
