//! Partial blosc decoding: decode only the blosc blocks that hold the wanted bytes.
//!
//! A blosc (v1) buffer is a 16-byte header, a table of block start offsets, then the
//! compressed blocks. A point read from a 4 MB chunk needs one ~64–256 KB block, not
//! the whole chunk. zarrs 0.23's blosc partial decoder is switched off, so this is ours.
//! Every header field and offset is checked before C-Blosc sees the buffer: a lying
//! header is an error, never an out-of-bounds read.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::ffi::c_void;

use super::{CODEC_VERSION_FORMAT, FLAG_FUTURE, FLAG_MEMCPYED, HEADER_LEN, VERSION_FORMAT};
/// Compressor formats (flags bits 5-7): blosclz, lz4 (and lz4hc), snappy, zlib, zstd.
const MAX_CODEC_FORMAT: u8 = 4;
/// C-Blosc 1's largest buffer and block (it computes with 32-bit signed sizes, and
/// `blosc_getitem` needs three blocks of scratch).
const MAX_BUFFERSIZE: usize = i32::MAX as usize - HEADER_LEN;
const MAX_BLOCKSIZE: usize = (i32::MAX as usize - 255 * 4) / 3;

/// The compressor format C-Blosc writes in a header's flags (bits 5-7) for a codec's `cname`.
pub fn compressor_format(cname: &str) -> Option<u8> {
    match cname {
        "blosclz" => Some(0),
        "lz4" | "lz4hc" => Some(1),
        "snappy" => Some(2),
        "zlib" => Some(3),
        "zstd" => Some(4),
        _ => None,
    }
}

/// Refuses a buffer whose header names another compressor than the array's codec
/// (`expected`, from [`compressor_format`]): its blocks would go to the wrong decompressor,
/// where one block can come out whole while the chunk as a whole fails.
pub fn check_compressor(buffer: &[u8], expected: Option<u8>) -> Result<(), String> {
    let (Some(expected), Some(&flags)) = (expected, buffer.get(2)) else {
        return Ok(());
    };
    if flags & FLAG_MEMCPYED == 0 && flags >> 5 != expected {
        return Err(format!(
            "blosc: the header names compressor format {}, the array's codec {expected}",
            flags >> 5
        ));
    }
    Ok(())
}

/// The validated header of a blosc v1 buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BloscHeader {
    pub flags: u8,
    pub typesize: usize,
    /// Decoded size.
    pub nbytes: usize,
    pub blocksize: usize,
    /// Compressed size, header included.
    pub cbytes: usize,
}

fn u32_at(buffer: &[u8], at: usize) -> usize {
    u32::from_le_bytes(buffer[at..at + 4].try_into().expect("4 bytes")) as usize
}

impl BloscHeader {
    /// Parses and checks the header of `buffer` against the decoded size the chunk must have.
    ///
    /// Whole-chunk and block-by-block decoding both start here, so that they accept exactly
    /// the same buffers: every check either path of C-Blosc 1 makes on the header
    /// (`blosc_decompress` and `blosc_getitem` differ: the latter ignores the flags from
    /// later formats) is made here for both, before any byte is decoded.
    pub fn parse(buffer: &[u8], expected_nbytes: usize) -> Result<Self, String> {
        Self::parse_prefix(buffer, buffer.len(), expected_nbytes)
    }

    /// [`Self::parse`] from the first bytes of a buffer of `total` bytes (the rest not read yet).
    pub fn parse_prefix(
        buffer: &[u8],
        total: usize,
        expected_nbytes: usize,
    ) -> Result<Self, String> {
        if buffer.len() < HEADER_LEN {
            return Err(format!(
                "blosc: {} bytes is shorter than the header",
                buffer.len()
            ));
        }
        let header = Self {
            flags: buffer[2],
            typesize: buffer[3] as usize,
            nbytes: u32_at(buffer, 4),
            blocksize: u32_at(buffer, 8),
            cbytes: u32_at(buffer, 12),
        };
        if buffer[0] != VERSION_FORMAT {
            return Err(format!("blosc: unsupported format version {}", buffer[0]));
        }
        if header.flags & FLAG_FUTURE != 0 {
            return Err(format!(
                "blosc: flags {:#04x} are from a later format",
                header.flags
            ));
        }
        if !header.memcpyed() {
            let codec = header.flags >> 5;
            if codec > MAX_CODEC_FORMAT || buffer[1] != CODEC_VERSION_FORMAT {
                return Err(format!(
                    "blosc: unknown compressor format {codec} version {}",
                    buffer[1]
                ));
            }
        }
        if header.nbytes != expected_nbytes {
            return Err(format!(
                "blosc: header says {} decoded bytes, the chunk holds {expected_nbytes}",
                header.nbytes
            ));
        }
        if header.cbytes != total {
            return Err(format!(
                "blosc: header says {} compressed bytes, the chunk has {total}",
                header.cbytes
            ));
        }
        if header.nbytes > MAX_BUFFERSIZE || header.cbytes > MAX_BUFFERSIZE + HEADER_LEN {
            return Err(format!(
                "blosc: {} decoded bytes in {} is larger than blosc buffers can be",
                header.nbytes, header.cbytes
            ));
        }
        if header.typesize == 0 || (header.nbytes > 0 && header.blocksize == 0) {
            return Err("blosc: zero typesize or blocksize".into());
        }
        // A block is never larger than the buffer: this bounds every decode scratch by
        // what the chunk holds.
        if header.nbytes > 0
            && (header.blocksize > header.nbytes || header.blocksize > MAX_BLOCKSIZE)
        {
            return Err(format!(
                "blosc: blocksize {} is larger than the {} decoded bytes",
                header.blocksize, header.nbytes
            ));
        }
        Ok(header)
    }

    pub fn memcpyed(&self) -> bool {
        self.flags & FLAG_MEMCPYED != 0
    }

    pub fn nblocks(&self) -> usize {
        self.nbytes.div_ceil(self.blocksize.max(1))
    }

    /// Checks the block offset table: every block starts after the table and before the end.
    fn check_block_starts(&self, buffer: &[u8]) -> Result<(), String> {
        if self.memcpyed() {
            return if HEADER_LEN + self.nbytes == self.cbytes {
                Ok(())
            } else {
                Err("blosc: stored uncompressed, but the sizes disagree".into())
            };
        }
        let table_end = HEADER_LEN + 4 * self.nblocks();
        if table_end > self.cbytes {
            return Err(format!(
                "blosc: {} blocks do not fit in {} bytes",
                self.nblocks(),
                self.cbytes
            ));
        }
        for block in 0..self.nblocks() {
            let start = u32_at(buffer, HEADER_LEN + 4 * block);
            if start < table_end || start >= self.cbytes {
                return Err(format!(
                    "blosc: block {block} starts at {start}, outside {table_end}..{}",
                    self.cbytes
                ));
            }
        }
        Ok(())
    }
}

/// What a partial decode did, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockCounts {
    pub decoded: usize,
    pub total: usize,
    /// Bytes the decoded blocks hold.
    pub decoded_bytes: u64,
}

/// Decodes block `block` of a checked buffer.
fn decode_block(buffer: &[u8], header: &BloscHeader, block: usize) -> Result<Vec<u8>, String> {
    let start = block * header.blocksize;
    let len = header.blocksize.min(header.nbytes - start);
    if header.memcpyed() {
        return Ok(buffer[HEADER_LEN + start..HEADER_LEN + start + len].to_vec());
    }
    let mut out = vec![0u8; len];
    if crate::blosc::zstd::decode_block_into(buffer, header, block, &mut out)? {
        return Ok(out);
    }
    let first_item = i32::try_from(start / header.typesize).map_err(|e| e.to_string())?;
    let items = i32::try_from(len / header.typesize).map_err(|e| e.to_string())?;
    // SAFETY: the header and the block table were checked against the buffer's real
    // length (`cbytes == buffer.len()`, every block start inside it), C-Blosc checks each
    // block's split sizes against `cbytes`, and `out` holds exactly `items * typesize`
    // bytes (the block length is a multiple of the typesize, checked by the caller).
    #[allow(unsafe_code)]
    let written = unsafe {
        blosc_src::blosc_getitem(
            buffer.as_ptr().cast::<c_void>(),
            first_item,
            items,
            out.as_mut_ptr().cast::<c_void>(),
        )
    };
    if usize::try_from(written).ok() != Some(len) {
        return Err(format!("blosc: block {block} failed to decode ({written})"));
    }
    Ok(out)
}

/// Reads byte ranges of one blosc buffer's decoded bytes, decoding each block at most once.
pub struct BlockReader<'a> {
    buffer: &'a [u8],
    header: BloscHeader,
    blocks: BTreeMap<usize, Vec<u8>>,
}

impl<'a> BlockReader<'a> {
    /// Checks `buffer`; `None` when partial decoding does not apply (a ragged tail that
    /// C-Blosc decodes only as a whole), and the caller decodes the whole chunk.
    pub fn new(buffer: &'a [u8], expected_nbytes: usize) -> Result<Option<Self>, String> {
        let header = BloscHeader::parse(buffer, expected_nbytes)?;
        header.check_block_starts(buffer)?;
        // Items that straddle blocks: C-Blosc's block-by-block reader would leave part of a
        // block unwritten, its whole-buffer decoder decides. Whichever it is, the chunk is
        // then decoded whole, so that both paths give the same answer.
        if header.nbytes % header.typesize != 0 || header.blocksize % header.typesize != 0 {
            return Ok(None);
        }
        Ok(Some(Self {
            buffer,
            header,
            blocks: BTreeMap::new(),
        }))
    }

    /// The given byte ranges of the decoded buffer, concatenated in order.
    pub fn read(&mut self, ranges: &[(usize, usize)]) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(ranges.iter().map(|r| r.1).sum());
        for &(start, len) in ranges {
            if start + len > self.header.nbytes {
                return Err(format!(
                    "blosc: range {start}+{len} beyond {} decoded bytes",
                    self.header.nbytes
                ));
            }
            let mut at = start;
            while at < start + len {
                let block = at / self.header.blocksize;
                let decoded = match self.blocks.entry(block) {
                    Entry::Occupied(entry) => entry.into_mut(),
                    Entry::Vacant(entry) => {
                        entry.insert(decode_block(self.buffer, &self.header, block)?)
                    }
                };
                let offset = at - block * self.header.blocksize;
                let take = (start + len - at).min(decoded.len() - offset);
                out.extend_from_slice(&decoded[offset..offset + take]);
                at += take;
            }
        }
        Ok(out)
    }

    /// Blocks decoded so far, of how many, and the bytes they hold.
    pub fn counts(&self) -> BlockCounts {
        BlockCounts {
            decoded: self.blocks.len(),
            total: self.header.nblocks(),
            decoded_bytes: self.blocks.values().map(|b| b.len() as u64).sum(),
        }
    }
}

/// Decodes the given byte ranges of the decoded buffer, concatenated in order, touching
/// only the blocks that hold them (see [`BlockReader`]).
pub fn decode_ranges(
    buffer: &[u8],
    expected_nbytes: usize,
    ranges: &[(usize, usize)],
) -> Result<Option<(Vec<u8>, BlockCounts)>, String> {
    let Some(mut reader) = BlockReader::new(buffer, expected_nbytes)? else {
        return Ok(None);
    };
    let bytes = reader.read(ranges)?;
    Ok(Some((bytes, reader.counts())))
}

/// Decodes a whole blosc buffer straight into `dest`, which must be its decoded size.
pub fn decode_into(buffer: &[u8], dest: &mut [u8]) -> Result<(), String> {
    let header = BloscHeader::parse(buffer, dest.len())?;
    header.check_block_starts(buffer)?;
    if header.memcpyed() {
        dest.copy_from_slice(&buffer[HEADER_LEN..]);
        return Ok(());
    }
    if crate::blosc::zstd::decode_into(buffer, &header, dest)? {
        return Ok(());
    }
    // SAFETY: the header was checked against the buffer's real length and `dest`'s
    // length (`nbytes == dest.len()`), and every block start lies inside the buffer;
    // C-Blosc writes at most `destsize` bytes.
    #[allow(unsafe_code)]
    let written = unsafe {
        blosc_src::blosc_decompress_ctx(
            buffer.as_ptr().cast::<c_void>(),
            dest.as_mut_ptr().cast::<c_void>(),
            dest.len(),
            1,
        )
    };
    if usize::try_from(written).ok() == Some(dest.len()) {
        Ok(())
    } else {
        Err(format!("blosc: decompression failed ({written})"))
    }
}

/// The indices of the blocks of `blocksize` decoded bytes that hold `(start, len)` byte
/// ranges, sorted, each once.
pub fn blocks_touched(ranges: &[(usize, usize)], blocksize: usize) -> Vec<usize> {
    let mut blocks: Vec<usize> = ranges
        .iter()
        .filter(|r| r.1 > 0)
        .flat_map(|&(start, len)| start / blocksize..=(start + len - 1) / blocksize)
        .collect();
    blocks.sort_unstable();
    blocks.dedup();
    blocks
}

/// The byte ranges of a C-order region of a chunk, merged where they touch.
pub fn region_byte_ranges(
    chunk_shape: &[u64],
    start: &[u64],
    shape: &[u64],
    itemsize: usize,
) -> Vec<(usize, usize)> {
    let ndim = chunk_shape.len();
    if ndim == 0 {
        return vec![(0, itemsize)];
    }
    let mut strides = vec![1u64; ndim];
    for d in (0..ndim - 1).rev() {
        strides[d] = strides[d + 1] * chunk_shape[d + 1];
    }
    let run = shape[ndim - 1] as usize * itemsize;
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let mut counter = vec![0u64; ndim - 1];
    loop {
        let element: u64 = (0..ndim)
            .map(|d| (start[d] + counter.get(d).copied().unwrap_or(0)) * strides[d])
            .sum();
        let begin = element as usize * itemsize;
        match ranges.last_mut() {
            Some(last) if last.0 + last.1 == begin => last.1 += run,
            _ => ranges.push((begin, run)),
        }
        let mut d = ndim - 1;
        loop {
            if d == 0 {
                return ranges;
            }
            d -= 1;
            counter[d] += 1;
            if counter[d] < shape[d] {
                break;
            }
            counter[d] = 0;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn compress(data: &[u8], typesize: usize, blocksize: usize, shuffle: i32) -> Vec<u8> {
        compress_with(data, typesize, blocksize, shuffle, 5, c"zstd")
    }

    /// Compresses `data` with C-Blosc (one thread), for tests of the decoders.
    pub(crate) fn compress_with(
        data: &[u8],
        typesize: usize,
        blocksize: usize,
        shuffle: i32,
        clevel: i32,
        cname: &std::ffi::CStr,
    ) -> Vec<u8> {
        let mut out = vec![0u8; data.len() + 16];
        // SAFETY: `out` has room for the worst case (`nbytes + BLOSC_MAX_OVERHEAD`).
        #[allow(unsafe_code)]
        let n = unsafe {
            blosc_src::blosc_compress_ctx(
                clevel,
                shuffle,
                typesize,
                data.len(),
                data.as_ptr().cast(),
                out.as_mut_ptr().cast(),
                out.len(),
                cname.as_ptr(),
                blocksize,
                1,
            )
        };
        assert!(n > 0);
        out.truncate(n as usize);
        out
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n as u32)
            .flat_map(|i| ((i * 7919) % 1000).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_block_boundary_matches_full_decode() {
        let full = data(10_000); // 40,000 bytes, 4-byte items
        for shuffle in [0, 1, 2] {
            let buffer = compress(&full, 4, 4096, shuffle);
            let header = BloscHeader::parse(&buffer, full.len()).unwrap();
            assert_eq!(header.blocksize, 4096);
            let boundaries: Vec<usize> = (0..=header.nblocks())
                .map(|b| (b * 4096).min(full.len()))
                .collect();
            for &edge in &boundaries {
                for (start, len) in [
                    (edge.saturating_sub(8), 16),
                    (edge.saturating_sub(4), 4),
                    (edge, 4),
                ] {
                    let len = len.min(full.len() - start.min(full.len()));
                    if len == 0 {
                        continue;
                    }
                    let (got, counts) = decode_ranges(&buffer, full.len(), &[(start, len)])
                        .unwrap()
                        .unwrap();
                    assert_eq!(
                        got,
                        &full[start..start + len],
                        "shuffle {shuffle} range {start}+{len}"
                    );
                    assert!(counts.decoded <= 2 && counts.total == header.nblocks());
                }
            }
        }
    }

    #[test]
    fn whole_decode_into_matches_and_checks_sizes() {
        let full = data(3000);
        let buffer = compress(&full, 4, 2048, 1);
        let mut dest = vec![0u8; full.len()];
        decode_into(&buffer, &mut dest).unwrap();
        assert_eq!(dest, full);
        let mut short = vec![0u8; full.len() - 4];
        assert!(decode_into(&buffer, &mut short).is_err());
    }

    #[test]
    fn lying_headers_are_errors() {
        let full = data(5000);
        let buffer = compress(&full, 4, 4096, 1);
        assert!(decode_ranges(&buffer, full.len() + 4, &[(0, 4)]).is_err());
        assert!(decode_ranges(&buffer[..buffer.len() - 1], full.len(), &[(0, 4)]).is_err());
        let mut bad_start = buffer.clone();
        bad_start[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_ranges(&bad_start, full.len(), &[(0, 4)]).is_err());
        let mut bad_blocksize = buffer.clone();
        bad_blocksize[8..12].copy_from_slice(&1u32.to_le_bytes());
        assert!(decode_ranges(&bad_blocksize, full.len(), &[(0, 4)]).is_err());
        assert!(decode_ranges(&buffer[..10], full.len(), &[(0, 4)]).is_err());
        assert!(decode_ranges(&buffer, full.len(), &[(full.len() - 2, 4)]).is_err());
    }

    #[test]
    fn whole_and_block_decoding_refuse_the_same_headers() {
        let full = data(20_000);
        let buffer = compress(&full, 4, 16384, 1);
        let damaged = |at: usize, bytes: &[u8]| {
            let mut bad = buffer.clone();
            bad[at..at + bytes.len()].copy_from_slice(bytes);
            bad
        };
        let flags = buffer[2];
        for bad in [
            damaged(8, &0xFFFF_FFF0u32.to_le_bytes()), // blocksize beyond the buffer
            damaged(8, &(full.len() as u32 + 4).to_le_bytes()),
            damaged(2, &[flags | FLAG_FUTURE]),
            damaged(0, &[1]),                         // format version 1
            damaged(1, &[2]),                         // compressor format version 2
            damaged(2, &[(flags & 0x1f) | (6 << 5)]), // compressor 6
        ] {
            let mut dest = vec![0u8; full.len()];
            assert!(decode_into(&bad, &mut dest).is_err());
            assert!(BlockReader::new(&bad, full.len()).is_err());
        }
        // Blocks that are not whole items: not read block by block (C-Blosc's item reader
        // would leave bytes unwritten), left to the whole decoder, which finds the lie.
        let items: Vec<u8> = (0..15_000u32).map(|i| (i % 7) as u8).collect();
        let odd = compress(&items, 3, 3999, 0);
        assert_eq!(odd[8..12], 3999u32.to_le_bytes());
        let mut lying = odd.clone();
        lying[8..12].copy_from_slice(&4000u32.to_le_bytes());
        assert!(BlockReader::new(&lying, items.len()).unwrap().is_none());
        assert!(decode_into(&lying, &mut vec![0u8; items.len()]).is_err());
        assert!(BlockReader::new(&odd, items.len()).unwrap().is_some());
    }

    #[test]
    fn region_ranges_merge_contiguous_rows() {
        assert_eq!(
            region_byte_ranges(&[4, 5], &[1, 0], &[2, 5], 4),
            vec![(20, 40)]
        );
        assert_eq!(
            region_byte_ranges(&[4, 5], &[1, 2], &[2, 1], 4),
            vec![(28, 4), (48, 4)]
        );
        assert_eq!(region_byte_ranges(&[], &[], &[], 8), vec![(0, 8)]);
    }
}
