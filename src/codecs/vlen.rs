//! numcodecs' `vlen-utf8` and `vlen-bytes` (the v3 codecs of zarr-python's `string` and
//! `variable_length_bytes`, and the v2 filters of `|O` arrays), decoded with every length
//! checked against the bytes that hold it.
//!
//! The encoding is a little-endian u32 count of elements, then for each element its
//! u32 length and its bytes. zarrs' own decoder indexes past the end of a chunk whose
//! lengths are damaged (a panic); this one refuses it, and refuses invalid UTF-8 in a
//! string chunk, so that both are a `CorruptChunkError` naming the chunk.

use std::borrow::Cow;
use std::num::NonZeroU64;
use std::sync::Arc;

use zarrs::array::{
    ArrayBytes, ArrayBytesOffsets, ArrayBytesRaw, BytesRepresentation, DataType, FillValue,
};
use zarrs_codec::Codec;
use zarrs_codec::{
    ArrayCodecTraits, ArrayToBytesCodecTraits, CodecError, CodecMetadataOptions, CodecOptions,
    CodecTraits, PartialDecoderCapability, PartialEncoderCapability, RecommendedConcurrency,
};
use zarrs_metadata::Configuration;
use zarrs_plugin::{ExtensionName, PluginCreateError, ZarrVersion};

pub const UTF8: &str = "vlen-utf8";
pub const BYTES: &str = "vlen-bytes";

/// The most bytes one chunk of strings may decode to. The compressors before this codec
/// know no decoded size, and a damaged or hostile stream (a few kB of zstd can state
/// gigabytes) must stop somewhere; 1 GiB is far above any chunk zarr-python writes.
const MAX_CHUNK_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlenCodec {
    /// `vlen-utf8`: every element must be valid UTF-8.
    utf8: bool,
}

impl VlenCodec {
    pub fn new(name: &str) -> Option<Self> {
        match name {
            UTF8 => Some(Self { utf8: true }),
            BYTES => Some(Self { utf8: false }),
            _ => None,
        }
    }

    fn codec_name(self) -> &'static str {
        if self.utf8 {
            UTF8
        } else {
            BYTES
        }
    }
}

/// The codec named `name` (a v2 id or a v3 name: both are spelled alike).
pub fn create(name: &str) -> Result<Codec, PluginCreateError> {
    let codec = VlenCodec::new(name).ok_or_else(|| PluginCreateError::Other(name.to_string()))?;
    Ok(Codec::ArrayToBytes(Arc::new(codec)))
}

/// The elements of an encoded chunk as one buffer and `count + 1` offsets into it.
pub fn split(encoded: &[u8], count: u64, utf8: bool) -> Result<(Vec<u8>, Vec<usize>), String> {
    let u32_at = |at: usize| -> Option<usize> {
        let bytes = encoded.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?) as usize)
    };
    let stated = u32_at(0)
        .ok_or_else(|| format!("{} bytes are too few for the element count", encoded.len()))?;
    if stated as u64 != count {
        return Err(format!(
            "the chunk states {stated} elements, it holds {count}"
        ));
    }
    // Each element takes at least its 4-byte length: checked before anything is reserved.
    let lengths = count
        .checked_mul(4)
        .and_then(|n| n.checked_add(4))
        .filter(|&n| n <= encoded.len() as u64)
        .ok_or_else(|| {
            format!(
                "{} bytes cannot hold the lengths of {count} elements",
                encoded.len()
            )
        })?;
    let count = count as usize;
    let mut data = Vec::with_capacity(encoded.len() - lengths as usize);
    let mut offsets = Vec::with_capacity(count + 1);
    let mut at = 4usize;
    for element in 0..count {
        let len =
            u32_at(at).ok_or_else(|| format!("the length of element {element} is cut off"))?;
        at += 4;
        let end = at
            .checked_add(len)
            .filter(|&end| end <= encoded.len())
            .ok_or_else(|| {
                format!(
                    "element {element} of {len} bytes runs past the end of the chunk ({} bytes)",
                    encoded.len()
                )
            })?;
        offsets.push(data.len());
        data.extend_from_slice(&encoded[at..end]);
        at = end;
    }
    offsets.push(data.len());
    if utf8 {
        // Valid as a whole and split only between characters: every element is valid. One
        // pass over the buffer, not one call per (often short) element.
        let text = std::str::from_utf8(&data).map_err(|e| {
            let element = offsets.partition_point(|&o| o <= e.valid_up_to()) - 1;
            format!("element {element} is not valid UTF-8: {e}")
        })?;
        if let Some(element) = offsets.iter().position(|&o| !text.is_char_boundary(o)) {
            return Err(format!(
                "element {element} is not valid UTF-8: it starts inside a character"
            ));
        }
    }
    if at != encoded.len() {
        return Err(format!(
            "{} bytes follow the last element",
            encoded.len() - at
        ));
    }
    Ok((data, offsets))
}

impl ExtensionName for VlenCodec {
    fn name(&self, _version: ZarrVersion) -> Option<Cow<'static, str>> {
        Some(Cow::Borrowed(self.codec_name()))
    }
}

impl CodecTraits for VlenCodec {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn configuration(
        &self,
        _version: ZarrVersion,
        _options: &CodecMetadataOptions,
    ) -> Option<Configuration> {
        Some(Configuration::default())
    }

    fn partial_decoder_capability(&self) -> PartialDecoderCapability {
        // The offsets of element k depend on every element before it.
        PartialDecoderCapability {
            partial_read: false,
            partial_decode: false,
        }
    }

    fn partial_encoder_capability(&self) -> PartialEncoderCapability {
        PartialEncoderCapability {
            partial_encode: false,
        }
    }
}

impl ArrayCodecTraits for VlenCodec {
    fn recommended_concurrency(
        &self,
        _shape: &[NonZeroU64],
        _data_type: &DataType,
    ) -> Result<RecommendedConcurrency, CodecError> {
        Ok(RecommendedConcurrency::new_maximum(1))
    }
}

impl ArrayToBytesCodecTraits for VlenCodec {
    fn into_dyn(self: Arc<Self>) -> Arc<dyn ArrayToBytesCodecTraits> {
        self
    }

    fn encoded_representation(
        &self,
        _shape: &[NonZeroU64],
        _data_type: &DataType,
        _fill_value: &FillValue,
    ) -> Result<BytesRepresentation, CodecError> {
        Ok(BytesRepresentation::BoundedSize(MAX_CHUNK_BYTES))
    }

    fn encode<'a>(
        &self,
        bytes: ArrayBytes<'a>,
        shape: &[NonZeroU64],
        data_type: &DataType,
        _fill_value: &FillValue,
        _options: &CodecOptions,
    ) -> Result<ArrayBytesRaw<'a>, CodecError> {
        let count: u64 = shape.iter().map(|d| d.get()).product();
        bytes.validate(count, data_type)?;
        let (data, offsets) = bytes.into_variable()?.into_parts();
        let u32_of = |n: usize| {
            u32::try_from(n).map_err(|_| {
                CodecError::Other(format!(
                    "{}: {n} is more than a u32 holds",
                    self.codec_name()
                ))
            })
        };
        let mut out = Vec::with_capacity(4 * offsets.len() + data.len());
        out.extend_from_slice(&u32_of(offsets.len() - 1)?.to_le_bytes());
        for pair in offsets.windows(2) {
            out.extend_from_slice(&u32_of(pair[1] - pair[0])?.to_le_bytes());
            out.extend_from_slice(&data[pair[0]..pair[1]]);
        }
        Ok(Cow::Owned(out))
    }

    fn decode<'a>(
        &self,
        bytes: ArrayBytesRaw<'a>,
        shape: &[NonZeroU64],
        _data_type: &DataType,
        _fill_value: &FillValue,
        _options: &CodecOptions,
    ) -> Result<ArrayBytes<'a>, CodecError> {
        let count = shape
            .iter()
            .try_fold(1u64, |acc, d| acc.checked_mul(d.get()))
            .ok_or_else(|| {
                CodecError::Other(format!("{}: too many elements", self.codec_name()))
            })?;
        let (data, offsets) = split(&bytes, count, self.utf8)
            .map_err(|reason| CodecError::Other(format!("{}: {reason}", self.codec_name())))?;
        let offsets =
            ArrayBytesOffsets::new(offsets).map_err(|e| CodecError::Other(e.to_string()))?;
        ArrayBytes::new_vlen(data, offsets).map_err(|e| CodecError::Other(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(elements: &[&[u8]]) -> Vec<u8> {
        let mut out = (elements.len() as u32).to_le_bytes().to_vec();
        for e in elements {
            out.extend_from_slice(&(e.len() as u32).to_le_bytes());
            out.extend_from_slice(e);
        }
        out
    }

    #[test]
    fn splits_what_numcodecs_writes() {
        let encoded = encode(&[b"a", "bé".as_bytes(), b"", b"dddd"]);
        let (data, offsets) = split(&encoded, 4, true).unwrap();
        assert_eq!(data, "abédddd".as_bytes());
        assert_eq!(offsets, vec![0, 1, 4, 4, 8]);
    }

    #[test]
    fn refuses_damaged_chunks() {
        let good = encode(&[b"ab", b"c"]);
        assert!(split(&good, 3, false)
            .unwrap_err()
            .contains("states 2 elements"));
        let mut long = good.clone();
        long[4] = 0xff; // the first length runs past the end
        assert!(split(&long, 2, false)
            .unwrap_err()
            .contains("runs past the end"));
        let mut huge = good.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(split(&huge, 2, false).is_err());
        assert!(split(&good[..9], 2, false)
            .unwrap_err()
            .contains("cannot hold"));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(split(&trailing, 2, false)
            .unwrap_err()
            .contains("follow the last"));
        // A count of 2^32 - 1 elements in 12 bytes is refused before anything is reserved.
        assert!(split(
            &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0],
            u64::from(u32::MAX),
            false
        )
        .unwrap_err()
        .contains("cannot hold"));
        let invalid = encode(&[b"\xff\xfe"]);
        assert!(split(&invalid, 1, true).unwrap_err().contains("UTF-8"));
        // "é" cut in two: the whole buffer is valid, its elements are not.
        let cut = encode(&[b"a\xc3", b"\xa9"]);
        assert!(split(&cut, 2, true)
            .unwrap_err()
            .contains("element 1 is not valid UTF-8"));
        let second = encode(&[b"ok", b"\xff"]);
        assert!(split(&second, 2, true)
            .unwrap_err()
            .contains("element 1 is not valid UTF-8"));
        assert!(split(&invalid, 1, false).is_ok());
        assert!(split(&[1, 0], 1, false).unwrap_err().contains("too few"));
    }
}
