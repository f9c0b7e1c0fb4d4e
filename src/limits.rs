//! Sizes from metadata are untrusted numbers: an array whose element count, or whose
//! chunks' byte size, does not fit the integers the read path computes with is refused
//! when it is opened, with the field named, rather than overflowing later.

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

#[cfg(test)]
mod tests {
    use super::check_sizes;

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
    }
}
