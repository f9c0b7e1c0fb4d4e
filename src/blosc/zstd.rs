//! Whole-buffer decoding of zstd-compressed blosc (v1) chunks with one zstd context per thread.
//!
//! C-Blosc 1 decompresses every split of every block with `ZSTD_decompress`, which creates
//! and frees a decompression context each time (an allocation and CPU-feature probing per
//! call). With typesize-4 data that is four contexts per block: on small chunks this costs
//! more than the decompression itself. Here each pool thread keeps one context and one
//! scratch buffer; the byte unshuffle is `crate::blosc::unshuffle` (AVX2 for 4-byte types).
//! Buffers this module does not handle (other compressors, bit-shuffle, flags from later
//! formats) go back to C-Blosc, which then decodes them exactly as before.

use std::cell::RefCell;

use zstd::zstd_safe::DCtx;

use crate::blosc::ranges::BloscHeader;

use super::{
    FLAG_BITSHUFFLE, FLAG_DONT_SPLIT, FLAG_FUTURE, FLAG_MEMCPYED, FLAG_SHUFFLE, HEADER_LEN,
};
const ZSTD_FORMAT: u8 = 4;
/// C-Blosc's limits for splitting a block into one stream per byte of the type.
const MAX_SPLITS: usize = 16;
const MIN_BUFFERSIZE: usize = 128;
/// The largest unshuffle scratch a thread keeps between chunks: C-Blosc 1 never picks a
/// block above 1 MiB itself (only a forced `blocksize` makes larger ones), so this covers
/// every block of ordinary data. A larger scratch is freed once its chunk is decoded.
const MAX_KEPT_SCRATCH: usize = 4 << 20;

struct Scratch {
    dctx: DCtx<'static>,
    shuffled: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

fn read_i32(buffer: &[u8], at: usize) -> Result<i64, String> {
    let bytes = buffer
        .get(at..at + 4)
        .ok_or_else(|| format!("blosc: split size at {at} lies past the end"))?;
    Ok(i64::from(i32::from_le_bytes(
        bytes.try_into().expect("4 bytes"),
    )))
}

/// Decodes a checked blosc buffer into `dest` if it is zstd-compressed with byte or no
/// shuffle; returns `Ok(false)` (nothing written) for buffers C-Blosc should decode.
///
/// `header` must come from `BloscHeader::parse(buffer, dest.len())` with the block table
/// checked: every block start lies between the table and the end of the buffer.
pub fn decode_into(buffer: &[u8], header: &BloscHeader, dest: &mut [u8]) -> Result<bool, String> {
    if !handles(header) || header.nbytes != dest.len() {
        return Ok(false);
    }
    with_scratch(|scratch| {
        for (block, out) in dest.chunks_mut(header.blocksize).enumerate() {
            decode_block(buffer, header, block, out, scratch)?;
        }
        Ok(())
    })?;
    Ok(true)
}

/// Decodes block `block` of a checked blosc buffer into `out` (exactly that block's decoded
/// length) if this module handles the buffer; `Ok(false)` otherwise.
pub fn decode_block_into(
    buffer: &[u8],
    header: &BloscHeader,
    block: usize,
    out: &mut [u8],
) -> Result<bool, String> {
    if !handles(header) {
        return Ok(false);
    }
    let start = block * header.blocksize;
    if start >= header.nbytes || out.len() != header.blocksize.min(header.nbytes - start) {
        return Err(format!("blosc: block {block} is outside the buffer"));
    }
    with_scratch(|scratch| decode_block(buffer, header, block, out, scratch))?;
    Ok(true)
}

/// zstd-compressed, byte- or not shuffled, not stored raw, no flags from later formats.
fn handles(header: &BloscHeader) -> bool {
    let flags = header.flags;
    flags >> 5 == ZSTD_FORMAT
        && flags & (FLAG_MEMCPYED | FLAG_BITSHUFFLE | FLAG_FUTURE) == 0
        && header.nbytes > 0
}

fn with_scratch<T>(f: impl FnOnce(&mut Scratch) -> Result<T, String>) -> Result<T, String> {
    SCRATCH.with(|cell| {
        let mut slot = cell.borrow_mut();
        let scratch = slot.get_or_insert_with(|| Scratch {
            dctx: DCtx::create(),
            shuffled: Vec::new(),
        });
        let outcome = f(scratch);
        if scratch.shuffled.capacity() > MAX_KEPT_SCRATCH {
            scratch.shuffled = Vec::new();
        }
        outcome
    })
}

/// Grows the unshuffle scratch to `len` bytes: a block's decoded length, which the checked
/// header bounds by the chunk's own size (never the header's blocksize alone).
fn reserve_shuffled(scratch: &mut Scratch, len: usize) -> Result<(), String> {
    if scratch.shuffled.len() < len {
        let more = len - scratch.shuffled.len();
        scratch
            .shuffled
            .try_reserve_exact(more)
            .map_err(|_| format!("blosc: cannot allocate {len} bytes of scratch"))?;
        scratch.shuffled.resize(len, 0);
    }
    Ok(())
}

/// Decodes one block into `out`: its decoded length (the block size, or less for the last).
fn decode_block(
    buffer: &[u8],
    header: &BloscHeader,
    block: usize,
    out: &mut [u8],
    scratch: &mut Scratch,
) -> Result<(), String> {
    let typesize = header.typesize;
    let doshuffle = flags_shuffle(header.flags) && typesize > 1;
    let dont_split = header.flags & FLAG_DONT_SPLIT != 0;
    {
        let bsize = out.len();
        if doshuffle {
            reserve_shuffled(scratch, bsize)?;
        }
        let leftover = bsize < header.blocksize;
        let nsplits = if !dont_split
            && typesize <= MAX_SPLITS
            && bsize / typesize >= MIN_BUFFERSIZE
            && !leftover
        {
            typesize
        } else {
            1
        };
        let neblock = bsize / nsplits;
        if neblock * nsplits != bsize {
            return Err(format!(
                "blosc: block {block} of {bsize} bytes does not split into {nsplits} streams"
            ));
        }
        let start = read_i32(buffer, HEADER_LEN + 4 * block)?;
        let mut offset = usize::try_from(start)
            .map_err(|_| format!("blosc: block {block} starts at {start}"))?;
        let target: &mut [u8] = if doshuffle {
            &mut scratch.shuffled[..bsize]
        } else {
            out
        };
        for split in target.chunks_mut(neblock).take(nsplits) {
            let cbytes = read_i32(buffer, offset)?;
            offset += 4;
            let cbytes = usize::try_from(cbytes)
                .ok()
                .filter(|&n| n <= buffer.len() - offset)
                .ok_or_else(|| {
                    format!("blosc: block {block} has a split of {cbytes} bytes at {offset}, past the end")
                })?;
            let src = &buffer[offset..offset + cbytes];
            if cbytes == neblock {
                split.copy_from_slice(src);
            } else {
                let written = scratch.dctx.decompress(split, src).map_err(|code| {
                    format!(
                        "blosc: zstd error in block {block}: {}",
                        zstd::zstd_safe::get_error_name(code)
                    )
                })?;
                if written != neblock {
                    return Err(format!(
                        "blosc: block {block} decoded to {written} bytes, expected {neblock}"
                    ));
                }
            }
            offset += cbytes;
        }
        if doshuffle {
            crate::blosc::unshuffle::unshuffle(typesize, &scratch.shuffled[..bsize], out);
        }
    }
    Ok(())
}

fn flags_shuffle(flags: u8) -> bool {
    flags & FLAG_SHUFFLE != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(
        data: &[u8],
        typesize: usize,
        blocksize: usize,
        shuffle: i32,
        cname: &std::ffi::CStr,
    ) -> Vec<u8> {
        crate::blosc::ranges::tests::compress_with(data, typesize, blocksize, shuffle, 3, cname)
    }

    fn data(n: usize, seed: u32) -> Vec<u8> {
        (0..n as u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) >> (i % 13)) as u8 & 0x3f)
            .collect()
    }

    fn decode(encoded: &[u8], n: usize) -> Result<(bool, Vec<u8>), String> {
        let header = BloscHeader::parse(encoded, n)?;
        let mut out = vec![0u8; n];
        let handled = decode_into(encoded, &header, &mut out)?;
        Ok((handled, out))
    }

    #[test]
    fn matches_the_input_for_every_layout() {
        // typesizes with and without splits, leftover blocks, tiny and large blocks.
        for typesize in [1, 2, 3, 4, 8, 16, 17] {
            for shuffle in [0, 1] {
                for (n_items, blocksize) in [
                    (1, 0),
                    (50, 0),
                    (1000, 256),
                    (4099, 0),
                    (70_001, 4096),
                    (300_000, 0),
                ] {
                    let original = data(n_items * typesize, typesize as u32);
                    let encoded = compress(&original, typesize, blocksize, shuffle, c"zstd");
                    if encoded[2] & FLAG_MEMCPYED != 0 {
                        continue; // stored uncompressed: C-Blosc's copy path
                    }
                    let (handled, out) = decode(&encoded, original.len()).unwrap();
                    assert!(handled, "typesize {typesize} shuffle {shuffle} n {n_items}");
                    assert!(
                        out == original,
                        "typesize {typesize} shuffle {shuffle} n {n_items}"
                    );
                }
            }
        }
    }

    #[test]
    fn single_blocks_match_the_input() {
        let original = data(70_001 * 4, 9);
        let encoded = compress(&original, 4, 4096, 1, c"zstd");
        let header = BloscHeader::parse(&encoded, original.len()).unwrap();
        for block in 0..header.nblocks() {
            let start = block * header.blocksize;
            let len = header.blocksize.min(header.nbytes - start);
            let mut out = vec![0u8; len];
            assert!(decode_block_into(&encoded, &header, block, &mut out).unwrap());
            assert!(out == original[start..start + len], "block {block}");
        }
        let mut out = vec![0u8; 10];
        assert!(decode_block_into(&encoded, &header, header.nblocks(), &mut out).is_err());
    }

    #[test]
    fn other_compressors_and_bitshuffle_go_to_c_blosc() {
        let original = data(40_000, 1);
        let lz4 = compress(&original, 4, 0, 1, c"lz4");
        assert!(!decode(&lz4, original.len()).unwrap().0);
        let bitshuffled = compress(&original, 4, 0, 2, c"zstd");
        assert!(!decode(&bitshuffled, original.len()).unwrap().0);
    }

    #[test]
    fn scratch_follows_real_blocks_and_large_ones_are_not_kept() {
        // A forced 8 MiB block (larger than any C-Blosc picks itself): decoded, then freed.
        let original = data(16 << 20, 4);
        let encoded = compress(&original, 4, 8 << 20, 1, c"zstd");
        let (handled, out) = decode(&encoded, original.len()).unwrap();
        assert!(handled && out == original);
        let kept = SCRATCH.with(|cell| cell.borrow().as_ref().map(|s| s.shuffled.capacity()));
        assert!(kept.unwrap_or(0) <= MAX_KEPT_SCRATCH, "{kept:?}");
        // Ordinary blocks are kept for the next chunk.
        let small = data(1 << 20, 5);
        let encoded = compress(&small, 4, 64 * 1024, 1, c"zstd");
        assert!(decode(&encoded, small.len()).unwrap().0);
        let kept = SCRATCH.with(|cell| cell.borrow().as_ref().map(|s| s.shuffled.capacity()));
        assert!(
            kept.is_some_and(|n| (64 * 1024..=MAX_KEPT_SCRATCH).contains(&n)),
            "{kept:?}"
        );
    }

    #[test]
    fn lying_split_sizes_are_errors() {
        let original = data(40_000, 2);
        let encoded = compress(&original, 4, 0, 1, c"zstd");
        let first_block = u32::from_le_bytes(encoded[16..20].try_into().unwrap()) as usize;
        for lie in [-1i32, i32::MAX, (encoded.len() as i32) - 3] {
            let mut bad = encoded.clone();
            bad[first_block..first_block + 4].copy_from_slice(&lie.to_le_bytes());
            assert!(decode(&bad, original.len()).is_err(), "split size {lie}");
        }
        // A stream that decodes to more than its share of the block is refused, not written past.
        let mut garbage = encoded.clone();
        let len = garbage.len();
        garbage[first_block + 8..len].fill(0x55);
        assert!(decode(&garbage, original.len()).is_err());
    }
}
