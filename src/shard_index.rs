//! Checks a shard's index before zarrs uses it.
//!
//! zarrs trusts the `(offset, length)` pairs of a shard index (their checksum only proves
//! they were written so): an offset near 2^64 wrapped its arithmetic into a panic, a length
//! near 2^64 made the store allocate that many bytes, and an entry reaching past the shard
//! read whatever bytes were there. Every entry is checked here against the shard's size and
//! what one inner chunk can take, and the index itself against the shard's size, so a lying
//! index is a corrupt chunk.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use serde_json::Value;
use zarrs::array::{ArrayBytesRaw, BytesPartialDecoderTraits, CodecError, CodecOptions};
use zarrs::storage::byte_range::{ByteRange, ByteRangeIterator};
use zarrs::storage::StorageError;

/// The bytes of one index entry: offset and length, both `u64`.
const ENTRY_BYTES: u64 = 16;
/// Bytes of a `crc32c` checksum after the index.
const CHECKSUM_BYTES: u64 = 4;
/// The `(offset, length)` of an inner chunk that is not stored.
const MISSING: u64 = u64::MAX;

/// Where and how a sharded array's shards keep their index (from its metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLayout {
    /// Inner chunks per shard: entries of the index.
    entries: u64,
    /// The encoded index with its checksum.
    index_bytes: u64,
    at_end: bool,
    little_endian: bool,
    /// The most bytes one encoded inner chunk can plausibly take: its decoded size, with
    /// room for any codec's worst-case growth and headers.
    max_inner_bytes: u64,
}

impl ShardLayout {
    /// The layout of an array whose last codec is `sharding_indexed` with a plain index
    /// (`bytes`, optionally then `crc32c`); `Ok(None)` for any other array (zarrs checks
    /// those itself). An index too large to address is an error.
    pub fn from_metadata(
        metadata: &Value,
        shard_shape: &[u64],
        itemsize: usize,
    ) -> Result<Option<Self>, String> {
        let Some(config) = metadata
            .get("codecs")
            .and_then(Value::as_array)
            .and_then(|codecs| codecs.last())
            .filter(|c| c.get("name").and_then(Value::as_str) == Some("sharding_indexed"))
            .and_then(|c| c.get("configuration"))
        else {
            return Ok(None);
        };
        let Some(inner_shape) = config
            .get("chunk_shape")
            .and_then(Value::as_array)
            .and_then(|s| s.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>())
        else {
            return Ok(None);
        };
        let Some(little_endian) = index_endianness(config.get("index_codecs")) else {
            return Ok(None);
        };
        let checksum = config
            .get("index_codecs")
            .and_then(Value::as_array)
            .is_some_and(|codecs| codecs.len() == 2);
        if inner_shape.len() != shard_shape.len() || inner_shape.contains(&0) {
            return Ok(None); // zarrs refuses these when it builds the array
        }
        let entries = shard_shape
            .iter()
            .zip(&inner_shape)
            .try_fold(1u64, |acc, (&shard, &inner)| {
                acc.checked_mul(shard.div_ceil(inner))
            });
        let index_bytes = entries
            .and_then(|n| n.checked_mul(ENTRY_BYTES))
            .and_then(|n| n.checked_add(if checksum { CHECKSUM_BYTES } else { 0 }));
        let (Some(entries), Some(index_bytes)) = (entries, index_bytes) else {
            return Err(format!(
                "the index of a shard of {shard_shape:?} in inner chunks of {inner_shape:?} is larger than 2^64 bytes"
            ));
        };
        let inner_bytes = inner_shape
            .iter()
            .try_fold(itemsize as u64, |acc, &n| acc.checked_mul(n))
            .unwrap_or(u64::MAX);
        Ok(Some(Self {
            entries,
            index_bytes,
            at_end: config.get("index_location").and_then(Value::as_str) != Some("start"),
            little_endian,
            max_inner_bytes: inner_bytes.saturating_mul(8).saturating_add(64 * 1024),
        }))
    }

    /// The byte range of the index in a shard, as zarrs asks for it.
    fn index_range(&self) -> ByteRange {
        if self.at_end {
            ByteRange::Suffix(self.index_bytes)
        } else {
            ByteRange::FromStart(0, Some(self.index_bytes))
        }
    }

    /// Checks a whole shard held in memory: its index, and every entry within it.
    /// Bytes of the encoded index, checksum included.
    pub fn index_bytes(&self) -> u64 {
        self.index_bytes
    }

    pub fn check_shard(&self, shard: &[u8]) -> Result<(), String> {
        let len = shard.len() as u64;
        if len < self.index_bytes {
            return Err(self.too_short(len));
        }
        let index = if self.at_end {
            &shard[(len - self.index_bytes) as usize..]
        } else {
            &shard[..self.index_bytes as usize]
        };
        self.check_index(index, Some(len))
    }

    fn too_short(&self, len: u64) -> String {
        format!(
            "the shard has {len} bytes, fewer than its index of {} entries ({} bytes)",
            self.entries, self.index_bytes
        )
    }

    /// Checks every `(offset, length)` of an encoded `index` (with its checksum, which zarrs
    /// verifies): each stored inner chunk lies inside the shard's data (`shard_len` bytes in
    /// all, when known) and is no longer than an inner chunk can be.
    fn check_index(&self, index: &[u8], shard_len: Option<u64>) -> Result<(), String> {
        if index.len() as u64 != self.index_bytes {
            return Err(format!(
                "the shard index has {} bytes, not {}",
                index.len(),
                self.index_bytes
            ));
        }
        let (data_start, data_end) = match (shard_len, self.at_end) {
            (Some(len), true) => (0, len - self.index_bytes),
            (Some(len), false) => (self.index_bytes, len),
            (None, _) => (0, u64::MAX),
        };
        for (i, (offset, length)) in self.entries_of(index).enumerate() {
            if offset == MISSING && length == MISSING {
                continue;
            }
            if length > self.max_inner_bytes {
                return Err(format!(
                    "shard index entry {i} gives an inner chunk {length} bytes, more than one can take ({})",
                    self.max_inner_bytes
                ));
            }
            let end = offset.checked_add(length);
            if offset < data_start || end.is_none_or(|end| end > data_end) {
                return Err(format!(
                    "shard index entry {i} places an inner chunk at bytes {offset}..{offset}+{length}, outside the shard's data{}",
                    shard_len.map_or(String::new(), |len| format!(" ({len} bytes with the index)"))
                ));
            }
        }
        Ok(())
    }

    /// The `(offset, length)` of every inner chunk in an encoded `index`, in index order.
    fn entries_of<'a>(&self, index: &'a [u8]) -> impl Iterator<Item = (u64, u64)> + 'a {
        let little = self.little_endian;
        let number = move |bytes: &[u8]| {
            let bytes: [u8; 8] = bytes.try_into().expect("8-byte slice");
            if little {
                u64::from_le_bytes(bytes)
            } else {
                u64::from_be_bytes(bytes)
            }
        };
        index
            .chunks_exact(ENTRY_BYTES as usize)
            .take(usize::try_from(self.entries).unwrap_or(usize::MAX))
            .map(move |entry| (number(&entry[..8]), number(&entry[8..])))
    }

    /// Checks a byte range zarrs asks of a shard of `shard_len` bytes (when known): no
    /// longer than the index or an inner chunk, and inside the shard.
    fn check_range(&self, range: &ByteRange, shard_len: Option<u64>) -> Result<(), String> {
        if *range == self.index_range() {
            return match shard_len {
                Some(len) if len < self.index_bytes => Err(self.too_short(len)),
                _ => Ok(()),
            };
        }
        let (offset, length) = match *range {
            ByteRange::FromStart(offset, Some(length)) => (offset, length),
            ByteRange::FromStart(offset, None) => match shard_len {
                Some(len) => (offset, len.saturating_sub(offset)),
                None => return Ok(()),
            },
            ByteRange::Suffix(length) => {
                (shard_len.unwrap_or(length).saturating_sub(length), length)
            }
        };
        let inside = offset
            .checked_add(length)
            .is_some_and(|end| shard_len.is_none_or(|len| end <= len));
        if length > self.max_inner_bytes || !inside {
            return Err(format!(
                "bytes {offset}..{offset}+{length} of the shard are not an inner chunk of it"
            ));
        }
        Ok(())
    }
}

/// `Some(little endian?)` for an index encoded by `bytes` alone or `bytes` then `crc32c`.
fn index_endianness(codecs: Option<&Value>) -> Option<bool> {
    let name = |c: &Value| match c {
        Value::String(name) => Some(name.clone()),
        _ => c.get("name").and_then(Value::as_str).map(str::to_string),
    };
    let codecs = codecs?.as_array()?;
    let (bytes, rest) = codecs.split_first()?;
    let plain = name(bytes).as_deref() == Some("bytes")
        && match rest {
            [] => true,
            [checksum] => name(checksum).as_deref() == Some("crc32c"),
            _ => false,
        };
    if !plain {
        return None;
    }
    let endian = bytes
        .get("configuration")
        .and_then(|c| c.get("endian"))
        .and_then(Value::as_str);
    Some(endian != Some("big"))
}

/// The store's bytes of one shard, as zarrs' sharding partial decoder reads them, with
/// every range checked before it is read and the index checked before zarrs decodes it.
pub struct CheckedShardInput {
    input: Arc<dyn BytesPartialDecoderTraits>,
    layout: ShardLayout,
    /// The shard's size, when it costs nothing to know (a local file).
    shard_len: Option<u64>,
    /// Byte ranges read and bytes they held, for the read's statistics.
    ranges_read: AtomicU64,
    bytes_read: AtomicU64,
    /// The index entries of the inner chunks the read will ask for, when known: once the index
    /// is read, their bytes are fetched at once, neighbours coalesced (see [`COALESCE_GAP`]).
    wanted: Vec<u64>,
    /// Spans of the shard fetched ahead: `(start, bytes)`.
    fetched: Mutex<Vec<(u64, Bytes)>>,
}

/// Inner chunks of a shard closer than this are fetched by one request (zarr-python's
/// `sharding_coalesce_max_gap_bytes` plays the same part); a remote partial read of a blosc
/// chunk is taken for a saving of the same size.
pub const COALESCE_GAP: u64 = 256 * 1024;
/// The most bytes one coalesced request of a shard asks for.
const COALESCE_MAX: u64 = 64 << 20;

/// `ranges` (`(start, end)`, sorted by start) merged where the gap between two is at most
/// `COALESCE_GAP` and the merged one stays within `COALESCE_MAX`.
fn coalesce(ranges: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for &(start, end) in ranges {
        match merged.last_mut() {
            Some(last)
                if start <= last.1.saturating_add(COALESCE_GAP)
                    && end.max(last.1) - last.0 <= COALESCE_MAX =>
            {
                last.1 = last.1.max(end);
            }
            _ => merged.push((start, end)),
        }
    }
    merged
}

impl CheckedShardInput {
    /// `wanted`: the index entries (C order of the inner chunk grid) of the inner chunks the
    /// read will ask for, to fetch them together; empty to fetch each when asked.
    pub fn new(
        input: Arc<dyn BytesPartialDecoderTraits>,
        layout: ShardLayout,
        shard_len: Option<u64>,
        wanted: Vec<u64>,
    ) -> Self {
        Self {
            input,
            layout,
            shard_len,
            ranges_read: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            wanted,
            fetched: Mutex::new(Vec::new()),
        }
    }

    /// Fetches the wanted inner chunks of a checked `index` at once, coalesced, when that
    /// takes fewer requests than one each.
    fn fetch_wanted(&self, index: &[u8], options: &CodecOptions) -> Result<(), CodecError> {
        if self.wanted.len() < 2 {
            return Ok(());
        }
        let entries: Vec<(u64, u64)> = self.layout.entries_of(index).collect();
        let mut spans: Vec<(u64, u64)> = self
            .wanted
            .iter()
            .filter_map(|&i| entries.get(usize::try_from(i).ok()?).copied())
            .filter(|&(offset, length)| !(offset == MISSING && length == MISSING))
            .map(|(offset, length)| (offset, offset + length))
            .collect();
        spans.sort_unstable();
        spans.dedup();
        let merged = coalesce(&spans);
        if merged.len() >= spans.len() {
            return Ok(()); // nothing to gain: each is asked for when zarrs wants it
        }
        let ranges = merged
            .iter()
            .map(|&(start, end)| ByteRange::FromStart(start, Some(end - start)));
        let Some(parts) = self.input.partial_decode_many(Box::new(ranges), options)? else {
            return Ok(());
        };
        self.ranges_read
            .fetch_add(merged.len() as u64, Ordering::Relaxed);
        let mut fetched = self.fetched.lock().unwrap_or_else(PoisonError::into_inner);
        for (&(start, end), part) in merged.iter().zip(parts) {
            if part.len() as u64 != end - start {
                return Err(CodecError::Other(format!(
                    "bytes {start}..{end} of the shard came back as {} bytes",
                    part.len()
                )));
            }
            self.bytes_read
                .fetch_add(part.len() as u64, Ordering::Relaxed);
            fetched.push((start, Bytes::from(part.into_owned())));
        }
        Ok(())
    }

    /// `range` from the spans fetched ahead, if one holds all of it.
    fn prefetched(&self, range: &ByteRange) -> Option<Vec<u8>> {
        let ByteRange::FromStart(offset, Some(length)) = *range else {
            return None;
        };
        let fetched = self.fetched.lock().unwrap_or_else(PoisonError::into_inner);
        fetched.iter().find_map(|(start, bytes)| {
            let from = usize::try_from(offset.checked_sub(*start)?).ok()?;
            let to = from.checked_add(usize::try_from(length).ok()?)?;
            bytes.get(from..to).map(<[u8]>::to_vec)
        })
    }

    /// The byte ranges read so far (each one request to a remote store) and their bytes.
    pub fn read_so_far(&self) -> (u64, u64) {
        (
            self.ranges_read.load(Ordering::Relaxed),
            self.bytes_read.load(Ordering::Relaxed),
        )
    }
}

impl BytesPartialDecoderTraits for CheckedShardInput {
    fn exists(&self) -> Result<bool, StorageError> {
        self.input.exists()
    }

    fn size_held(&self) -> usize {
        self.input.size_held()
    }

    fn partial_decode_many(
        &self,
        decoded_regions: ByteRangeIterator,
        options: &CodecOptions,
    ) -> Result<Option<Vec<ArrayBytesRaw<'_>>>, CodecError> {
        let ranges: Vec<ByteRange> = decoded_regions.collect();
        for range in &ranges {
            self.layout
                .check_range(range, self.shard_len)
                .map_err(CodecError::Other)?;
        }
        let ahead: Option<Vec<Vec<u8>>> = ranges.iter().map(|r| self.prefetched(r)).collect();
        if let Some(parts) = ahead {
            return Ok(Some(parts.into_iter().map(Cow::Owned).collect()));
        }
        self.ranges_read
            .fetch_add(ranges.len() as u64, Ordering::Relaxed);
        let Some(parts) = self
            .input
            .partial_decode_many(Box::new(ranges.clone().into_iter()), options)?
        else {
            return Ok(None);
        };
        let bytes: usize = parts.iter().map(|p| p.len()).sum();
        self.bytes_read.fetch_add(bytes as u64, Ordering::Relaxed);
        if let ([range], [index]) = (ranges.as_slice(), parts.as_slice()) {
            if *range == self.layout.index_range() {
                self.layout
                    .check_index(index, self.shard_len)
                    .map_err(CodecError::Other)?;
                self.fetch_wanted(index, options)?;
            }
        }
        Ok(Some(
            parts
                .into_iter()
                .map(|part| Cow::Owned(part.into_owned()))
                .collect(),
        ))
    }

    fn supports_partial_decode(&self) -> bool {
        self.input.supports_partial_decode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_merges_within_the_gap_and_the_size() {
        let gap = COALESCE_GAP;
        assert_eq!(
            coalesce(&[(0, 10), (10, 20), (20 + gap, 40 + gap)]),
            vec![(0, 40 + gap)]
        );
        assert_eq!(
            coalesce(&[(0, 10), (11 + gap, 20 + gap)]),
            vec![(0, 10), (11 + gap, 20 + gap)]
        );
        let big = COALESCE_MAX - 5;
        assert_eq!(
            coalesce(&[(0, big), (big, big + 10)]),
            vec![(0, big), (big, big + 10)]
        );
        assert!(coalesce(&[]).is_empty());
    }

    fn layout(at_end: bool) -> ShardLayout {
        let metadata = serde_json::json!({"codecs": [{"name": "sharding_indexed", "configuration": {
            "chunk_shape": [2, 2],
            "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
            "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
            "index_location": if at_end { "end" } else { "start" },
        }}]});
        ShardLayout::from_metadata(&metadata, &[4, 4], 4)
            .unwrap()
            .unwrap()
    }

    fn index(entries: &[(u64, u64)]) -> Vec<u8> {
        let mut bytes: Vec<u8> = entries
            .iter()
            .flat_map(|(o, l)| o.to_le_bytes().into_iter().chain(l.to_le_bytes()))
            .collect();
        bytes.extend([0; 4]);
        bytes
    }

    #[test]
    fn layout_follows_the_metadata() {
        let end = layout(true);
        assert_eq!((end.entries, end.index_bytes), (4, 68));
        assert_eq!(end.index_range(), ByteRange::Suffix(68));
        assert_eq!(
            layout(false).index_range(),
            ByteRange::FromStart(0, Some(68))
        );
        let huge = serde_json::json!({"codecs": [{"name": "sharding_indexed", "configuration": {
            "chunk_shape": [1, 1], "codecs": [], "index_codecs": [{"name": "bytes"}]}}]});
        assert!(ShardLayout::from_metadata(&huge, &[1 << 32, 1 << 32], 4).is_err());
        let other = serde_json::json!({"codecs": [{"name": "bytes"}]});
        assert_eq!(ShardLayout::from_metadata(&other, &[4], 4), Ok(None));
    }

    #[test]
    fn lying_entries_are_refused() {
        let layout = layout(true);
        let good = [(0, 16), (16, 16), (MISSING, MISSING), (32, 10)];
        let shard_len = 42 + 68;
        assert!(layout.check_index(&index(&good), Some(shard_len)).is_ok());
        assert!(layout.check_index(&index(&good), None).is_ok());
        for bad in [
            (u64::MAX - 15, 16),
            (0, u64::MAX - 15),
            (u64::MAX - 15, u64::MAX - 15),
            (40, 16),
            (0, 1 << 20),
            (MISSING, 0),
        ] {
            let mut entries = good;
            entries[1] = bad;
            let result = layout.check_index(&index(&entries), Some(shard_len));
            assert!(result.is_err(), "{bad:?}");
        }
        // Unknown length: overflow and implausible lengths are still refused.
        let mut entries = good;
        entries[0] = (u64::MAX - 15, 16);
        assert!(layout.check_index(&index(&entries), None).is_err());
        entries[0] = (0, u64::MAX - 15);
        assert!(layout.check_index(&index(&entries), None).is_err());
        // An index at the start: data begins after it.
        let start = super::tests::layout(false);
        assert!(start.check_index(&index(&good), Some(shard_len)).is_err());
        let shifted = good.map(|(o, l)| if o == MISSING { (o, l) } else { (o + 68, l) });
        assert!(start.check_index(&index(&shifted), Some(shard_len)).is_ok());
    }

    #[test]
    fn a_shard_shorter_than_its_index_is_refused() {
        let layout = layout(true);
        assert!(layout
            .check_shard(&[0; 64])
            .unwrap_err()
            .contains("fewer than"));
        assert!(layout
            .check_range(&ByteRange::Suffix(68), Some(64))
            .is_err());
        assert!(layout.check_range(&ByteRange::Suffix(68), Some(68)).is_ok());
        assert!(layout
            .check_range(&ByteRange::FromStart(u64::MAX - 1, Some(16)), None)
            .is_err());
        assert!(layout
            .check_range(&ByteRange::FromStart(0, Some(1 << 40)), None)
            .is_err());
        assert!(layout
            .check_range(&ByteRange::FromStart(100, Some(16)), Some(110))
            .is_err());
        assert!(layout
            .check_range(&ByteRange::FromStart(16, Some(16)), Some(110))
            .is_ok());
    }
}
