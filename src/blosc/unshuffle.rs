//! Blosc's byte unshuffle, with an AVX2 path for 4-byte types chosen at run time.
//!
//! blosc-src compiles C-Blosc's AVX2 shuffle only when the whole crate targets AVX2, which a
//! portable wheel cannot, so C-Blosc falls back to SSE2. Float32 data is what fastzarr reads
//! most; its unshuffle was 7 % of a single-thread full load. Other type sizes, and machines
//! without AVX2, keep C-Blosc's routine.

extern "C" {
    /// C-Blosc's byte unshuffle (SSE2 or generic), linked from blosc-src's static library.
    fn blosc_internal_unshuffle(
        bytesoftype: usize,
        blocksize: usize,
        src: *const u8,
        dest: *const u8,
    );
}

/// Undoes blosc's byte shuffle of one block: `src` holds `typesize` planes of
/// `src.len() / typesize` bytes (byte `k` of every element in plane `k`), then the
/// `src.len() % typesize` trailing bytes as they were; `dest` gets the elements back.
///
/// # Panics
/// If `src` and `dest` differ in length or `typesize` is 0.
pub fn unshuffle(typesize: usize, src: &[u8], dest: &mut [u8]) {
    assert_eq!(src.len(), dest.len(), "unshuffle buffers differ in length");
    assert!(typesize > 0, "unshuffle of a zero-byte type");
    #[cfg(target_arch = "x86_64")]
    if typesize == 4 && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked just above).
        #[allow(unsafe_code)]
        unsafe {
            unshuffle4_avx2(src, dest);
        }
        return;
    }
    // SAFETY: both buffers hold `src.len()` bytes; the routine reads that many from `src`
    // and writes that many to `dest` (its trailing partial element included).
    #[allow(unsafe_code)]
    unsafe {
        blosc_internal_unshuffle(typesize, src.len(), src.as_ptr(), dest.as_mut_ptr());
    }
}

/// The 4-byte unshuffle, 32 elements (one 32-byte load per plane) per step.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
// The casts feed only loadu/storeu, which take unaligned addresses.
#[allow(clippy::cast_ptr_alignment)]
unsafe fn unshuffle4_avx2(src: &[u8], dest: &mut [u8]) {
    use std::arch::x86_64::{
        __m256i, _mm256_loadu_si256, _mm256_permute2x128_si256, _mm256_storeu_si256,
        _mm256_unpackhi_epi16, _mm256_unpackhi_epi8, _mm256_unpacklo_epi16, _mm256_unpacklo_epi8,
    };
    let elements = src.len() / 4;
    let vectorized = elements - elements % 32;
    let plane = |k: usize, i: usize| src[k * elements + i..].as_ptr().cast::<__m256i>();
    for i in (0..vectorized).step_by(32) {
        // SAFETY: plane k's bytes i..i + 32 lie inside `src` (i + 32 <= elements), and
        // dest's bytes 4i..4i + 128 inside `dest` (4 * elements <= dest.len()); loads and
        // stores are unaligned.
        unsafe {
            let a = _mm256_loadu_si256(plane(0, i));
            let b = _mm256_loadu_si256(plane(1, i));
            let c = _mm256_loadu_si256(plane(2, i));
            let d = _mm256_loadu_si256(plane(3, i));
            // Per 128-bit lane: ab_lo = a0 b0 .. a7 b7 | a16 b16 .. a23 b23, and so on.
            let ab_lo = _mm256_unpacklo_epi8(a, b);
            let ab_hi = _mm256_unpackhi_epi8(a, b);
            let cd_lo = _mm256_unpacklo_epi8(c, d);
            let cd_hi = _mm256_unpackhi_epi8(c, d);
            // Whole elements: e0_3 holds elements 0-3 | 16-19, e4_7 4-7 | 20-23, ...
            let e0 = _mm256_unpacklo_epi16(ab_lo, cd_lo);
            let e4 = _mm256_unpackhi_epi16(ab_lo, cd_lo);
            let e8 = _mm256_unpacklo_epi16(ab_hi, cd_hi);
            let e12 = _mm256_unpackhi_epi16(ab_hi, cd_hi);
            let out = dest[4 * i..].as_mut_ptr().cast::<__m256i>();
            _mm256_storeu_si256(out, _mm256_permute2x128_si256::<0x20>(e0, e4));
            _mm256_storeu_si256(out.add(1), _mm256_permute2x128_si256::<0x20>(e8, e12));
            _mm256_storeu_si256(out.add(2), _mm256_permute2x128_si256::<0x31>(e0, e4));
            _mm256_storeu_si256(out.add(3), _mm256_permute2x128_si256::<0x31>(e8, e12));
        }
    }
    for i in vectorized..elements {
        for k in 0..4 {
            dest[4 * i + k] = src[k * elements + i];
        }
    }
    let tail = 4 * elements;
    dest[tail..].copy_from_slice(&src[tail..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(typesize: usize, src: &[u8]) -> Vec<u8> {
        let elements = src.len() / typesize;
        let mut out = src.to_vec();
        for i in 0..elements {
            for k in 0..typesize {
                out[i * typesize + k] = src[k * elements + i];
            }
        }
        out
    }

    #[test]
    fn matches_the_plain_definition() {
        for typesize in [1, 2, 3, 4, 8, 16] {
            for len in [0, 1, 3, 4, 5, 127, 128, 129, 130, 131, 1000, 4096, 65_539] {
                let src: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
                let mut dest = vec![0xAA; len];
                unshuffle(typesize, &src, &mut dest);
                assert!(
                    dest == reference(typesize, &src),
                    "typesize {typesize} len {len}"
                );
            }
        }
    }
}
