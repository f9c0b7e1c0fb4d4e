//! Whole-chunk compressors that never decode more than the chunk can hold.
//!
//! zarrs' zstd decoder sizes its output from the frame header (attacker-controlled: a
//! 20-byte chunk can claim a terabyte), and its gzip, zlib and bz2 decoders read to the
//! end however large the stream inflates (a 1 MB "bomb" inflates to 1 GB); blosc sizes
//! its buffer from its header. Each is wrapped here: the output is limited to the size
//! the metadata gives the decoded bytes, and a stream that would go past it is a corrupt
//! chunk, found before anything larger than the chunk is allocated.

use std::borrow::Cow;
use std::io::Read;
use std::sync::Arc;

use zarrs::array::codec::{BloscCodec, Bz2Codec, GzipCodec, ZlibCodec, ZstdCodec};
use zarrs::array::{ArrayBytesRaw, BytesRepresentation};
use zarrs_codec::{
    BytesToBytesCodecTraits, Codec, CodecError, CodecMetadataOptions, CodecOptions, CodecPluginV2,
    CodecPluginV3, CodecTraits, PartialDecoderCapability, PartialEncoderCapability,
    RecommendedConcurrency,
};
use zarrs_metadata::v2::MetadataV2;
use zarrs_metadata::v3::MetadataV3;
use zarrs_metadata::Configuration;
use zarrs_plugin::{ExtensionName, PluginCreateError, ZarrVersion};

/// v2 ids (numcodecs) of the compressors wrapped here.
pub const V2_IDS: [&str; 5] = ["zstd", "gzip", "zlib", "bz2", "blosc"];
/// v3 names of the compressors wrapped here.
pub const V3_NAMES: [&str; 5] = ["zstd", "gzip", "blosc", "numcodecs.zlib", "numcodecs.bz2"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Zstd,
    Gzip,
    Zlib,
    Bz2,
    Blosc,
}

impl Kind {
    fn of(codec: &dyn BytesToBytesCodecTraits) -> Option<Self> {
        let any = codec.as_any();
        if any.is::<ZstdCodec>() {
            Some(Kind::Zstd)
        } else if any.is::<GzipCodec>() {
            Some(Kind::Gzip)
        } else if any.is::<ZlibCodec>() {
            Some(Kind::Zlib)
        } else if any.is::<Bz2Codec>() {
            Some(Kind::Bz2)
        } else if any.is::<BloscCodec>() {
            Some(Kind::Blosc)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Zstd => "zstd",
            Kind::Gzip => "gzip",
            Kind::Zlib => "zlib",
            Kind::Bz2 => "bz2",
            Kind::Blosc => "blosc",
        }
    }
}

/// zarrs' codec, with a decoder whose output is limited to the chunk's decoded size.
#[derive(Debug)]
pub struct Bounded {
    kind: Kind,
    inner: Arc<dyn BytesToBytesCodecTraits>,
    /// Blosc: the compressor format the codec's `cname` says chunks are written with.
    blosc_compressor: Option<u8>,
}

/// Wraps a codec zarrs built, when it is one of the compressors this module bounds;
/// `configuration` is the codec's (its `cname` names blosc's compressor).
fn wrap(codec: Codec, configuration: Option<&serde_json::Map<String, serde_json::Value>>) -> Codec {
    let blosc_compressor = configuration
        .and_then(|c| c.get("cname"))
        .and_then(serde_json::Value::as_str)
        .and_then(crate::blosc::ranges::compressor_format);
    match codec {
        Codec::BytesToBytes(inner) => match Kind::of(inner.as_ref()) {
            Some(kind) => Codec::BytesToBytes(Arc::new(Bounded {
                kind,
                inner,
                blosc_compressor,
            })),
            None => Codec::BytesToBytes(inner),
        },
        other => other,
    }
}

/// zarrs' own (compile-time registered) codec for v2 `metadata`.
fn zarrs_codec_v2(metadata: &MetadataV2) -> Result<Codec, PluginCreateError> {
    let plugin = inventory::iter::<CodecPluginV2>
        .into_iter()
        .find(|plugin| plugin.match_name(metadata.id()))
        .ok_or_else(|| PluginCreateError::from(format!("no codec {}", metadata.id())))?;
    plugin.create(metadata)
}

/// zarrs' own codec for v2 `metadata`, bounded.
pub fn create_v2(metadata: &MetadataV2) -> Result<Codec, PluginCreateError> {
    Ok(wrap(
        zarrs_codec_v2(metadata)?,
        Some(metadata.configuration()),
    ))
}

/// zarrs' own (compile-time registered) codec for v3 `metadata`.
fn zarrs_codec_v3(metadata: &MetadataV3) -> Result<Codec, PluginCreateError> {
    let plugin = inventory::iter::<CodecPluginV3>
        .into_iter()
        .find(|plugin| plugin.match_name(metadata.name()))
        .ok_or_else(|| PluginCreateError::from(format!("no codec {}", metadata.name())))?;
    plugin.create(metadata)
}

/// zarrs' own codec for v3 `metadata`, bounded.
pub fn create_v3(metadata: &MetadataV3) -> Result<Codec, PluginCreateError> {
    Ok(wrap(
        zarrs_codec_v3(metadata)?,
        metadata.configuration().map(|c| &**c),
    ))
}

fn corrupt(kind: Kind, reason: impl std::fmt::Display) -> CodecError {
    CodecError::Other(format!("{}: {reason}", kind.name()))
}

/// `len` zero bytes, or an error (never an abort) when the memory is not there.
fn allocate(kind: Kind, len: u64) -> Result<Vec<u8>, CodecError> {
    let len = usize::try_from(len).map_err(|_| corrupt(kind, "chunk too large"))?;
    crate::zeroed::try_zeroed_vec(len)
        .ok_or_else(|| corrupt(kind, format!("cannot allocate {len} bytes to decode into")))
}

/// Output produced between two looks at the read's cancel flag. bz2 decodes ~10-40 MB/s,
/// gzip and zlib ~300 MB/s, zstd ~1 GB/s: a step costs a few milliseconds at most, so a
/// Ctrl-C during one big chunk stops it within the 100 ms people notice.
const STEP: usize = 256 * 1024;

/// Decoded size above which a zstd frame is streamed in steps (so it can be cancelled)
/// rather than decoded in one call (faster by a copy, and ~15 ms at this size).
const ZSTD_ONE_CALL_MAX: u64 = 16 << 20;

/// Reads `reader` to its end into at most `limit` bytes: one byte more is an error. Reads
/// in steps of [`STEP`], and stops between steps when the read is cancelled.
fn read_bounded(kind: Kind, mut reader: impl Read, limit: u64) -> Result<Vec<u8>, CodecError> {
    let capacity = usize::try_from(limit).map_err(|_| corrupt(kind, "chunk too large"))?;
    let mut out = allocate(kind, limit)?;
    let mut filled = 0;
    while filled < capacity {
        if crate::runtime::decode_cancelled() {
            return Err(corrupt(kind, "decoding stopped: the read was cancelled"));
        }
        let end = capacity.min(filled + STEP);
        match reader.read(&mut out[filled..end]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(corrupt(kind, e)),
        }
    }
    out.truncate(filled);
    // Reading on checks the stream's end (gzip's CRC, say) and that nothing is left.
    let mut probe = [0u8; 1];
    loop {
        return match reader.read(&mut probe) {
            Ok(0) => Ok(out),
            Ok(_) => Err(corrupt(
                kind,
                format!("the chunk decodes to more than the {limit} bytes it can hold"),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => Err(corrupt(kind, e)),
        };
    }
}

/// The decoded size blosc's header declares (bytes 4..8), if there is a header.
fn blosc_declared_size(encoded: &[u8]) -> Option<u64> {
    let bytes: [u8; 4] = encoded.get(4..8)?.try_into().ok()?;
    Some(u64::from(u32::from_le_bytes(bytes)))
}

impl Bounded {
    fn decode_limited(&self, encoded: &[u8], limit: u64) -> Result<Option<Vec<u8>>, CodecError> {
        let kind = self.kind;
        let decoded = match kind {
            Kind::Zstd => {
                // Frames that state their size (zarr-python's always do) and fit decode in
                // one call; the rest, and large ones, stream into the limit in steps.
                if zstd::bulk::Decompressor::upper_bound(encoded)
                    .is_some_and(|bound| bound as u64 <= limit.min(ZSTD_ONE_CALL_MAX))
                {
                    return Ok(None);
                }
                let decoder = zstd::stream::read::Decoder::with_buffer(encoded)
                    .map_err(|e| corrupt(kind, e))?;
                read_bounded(kind, decoder, limit)?
            }
            Kind::Gzip => read_bounded(kind, flate2::read::GzDecoder::new(encoded), limit)?,
            Kind::Zlib => read_bounded(kind, flate2::read::ZlibDecoder::new(encoded), limit)?,
            Kind::Bz2 => read_bounded(kind, bzip2::read::BzDecoder::new(encoded), limit)?,
            Kind::Blosc => {
                crate::blosc::ranges::check_compressor(encoded, self.blosc_compressor)
                    .map_err(CodecError::Other)?;
                let declared = blosc_declared_size(encoded)
                    .ok_or_else(|| corrupt(kind, "too short for a blosc header"))?;
                if declared > limit {
                    return Err(corrupt(
                        kind,
                        format!(
                            "the header declares {declared} decoded bytes, the chunk holds {limit}"
                        ),
                    ));
                }
                // The same checked decoder as block-by-block reads use (blosc/ranges.rs),
                // so that a chunk is accepted or refused alike however it is read.
                let mut out = allocate(kind, declared)?;
                crate::blosc::ranges::decode_into(encoded, &mut out).map_err(CodecError::Other)?;
                out
            }
        };
        Ok(Some(decoded))
    }
}

impl ExtensionName for Bounded {
    fn name(&self, version: ZarrVersion) -> Option<Cow<'static, str>> {
        self.inner.name(version)
    }
}

impl CodecTraits for Bounded {
    // The inner codec's identity, so that zarrs sees the codec it built.
    fn as_any(&self) -> &dyn std::any::Any {
        self.inner.as_any()
    }

    fn configuration(
        &self,
        version: ZarrVersion,
        options: &CodecMetadataOptions,
    ) -> Option<Configuration> {
        self.inner.configuration(version, options)
    }

    // Partial decodes go through `decode` below (the whole chunk, bounded).
    fn partial_decoder_capability(&self) -> PartialDecoderCapability {
        PartialDecoderCapability {
            partial_read: false,
            partial_decode: false,
        }
    }

    fn partial_encoder_capability(&self) -> PartialEncoderCapability {
        self.inner.partial_encoder_capability()
    }
}

impl BytesToBytesCodecTraits for Bounded {
    fn into_dyn(self: Arc<Self>) -> Arc<dyn BytesToBytesCodecTraits> {
        self
    }

    fn recommended_concurrency(
        &self,
        decoded: &BytesRepresentation,
    ) -> Result<RecommendedConcurrency, CodecError> {
        self.inner.recommended_concurrency(decoded)
    }

    fn encoded_representation(&self, decoded: &BytesRepresentation) -> BytesRepresentation {
        self.inner.encoded_representation(decoded)
    }

    fn encode<'a>(
        &self,
        decoded: ArrayBytesRaw<'a>,
        options: &CodecOptions,
    ) -> Result<ArrayBytesRaw<'a>, CodecError> {
        self.inner.encode(decoded, options)
    }

    fn decode<'a>(
        &self,
        encoded: ArrayBytesRaw<'a>,
        decoded_representation: &BytesRepresentation,
        options: &CodecOptions,
    ) -> Result<ArrayBytesRaw<'a>, CodecError> {
        let limit = match decoded_representation {
            BytesRepresentation::FixedSize(size) | BytesRepresentation::BoundedSize(size) => *size,
            BytesRepresentation::UnboundedSize => {
                return self.inner.decode(encoded, decoded_representation, options)
            }
        };
        let decoded = match self.decode_limited(&encoded, limit)? {
            Some(decoded) => Cow::Owned(decoded),
            None => self
                .inner
                .decode(encoded, decoded_representation, options)?,
        };
        super::check_decoded_len(self.kind.name(), decoded.len(), decoded_representation)?;
        Ok(decoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(kind: Kind) -> Bounded {
        // zarrs builds blosc from v3 metadata only (v2 arrays are converted first).
        let created = if kind == Kind::Blosc {
            let metadata: MetadataV3 = serde_json::from_value(serde_json::json!({
                "name": "blosc",
                "configuration": {"cname": "lz4", "clevel": 5, "shuffle": "shuffle", "typesize": 1, "blocksize": 0}
            }))
            .unwrap();
            zarrs_codec_v3(&metadata)
        } else {
            let metadata: MetadataV2 =
                serde_json::from_value(serde_json::json!({"id": kind.name(), "level": 1})).unwrap();
            zarrs_codec_v2(&metadata)
        };
        match created.unwrap_or_else(|e| panic!("{kind:?}: {e}")) {
            Codec::BytesToBytes(codec) => Bounded {
                kind: Kind::of(codec.as_ref()).unwrap(),
                inner: codec,
                blosc_compressor: None,
            },
            _ => unreachable!(),
        }
    }

    #[test]
    fn bombs_are_refused_and_honest_chunks_decode() {
        let zeros = vec![0u8; 1 << 20];
        let options = CodecOptions::default();
        for kind in [Kind::Zstd, Kind::Gzip, Kind::Zlib, Kind::Bz2, Kind::Blosc] {
            let codec = codec(kind);
            let encoded = codec
                .encode(Cow::Borrowed(&zeros), &options)
                .unwrap()
                .into_owned();
            // Honest: the chunk holds all of it.
            let fits = BytesRepresentation::FixedSize(zeros.len() as u64);
            let decoded = codec
                .decode(Cow::Borrowed(&encoded), &fits, &options)
                .unwrap();
            assert_eq!(decoded.len(), zeros.len(), "{kind:?}");
            // A bomb: the chunk holds 1 KiB but the stream inflates to 1 MiB.
            let small = BytesRepresentation::FixedSize(1024);
            let err = codec
                .decode(Cow::Borrowed(&encoded), &small, &options)
                .unwrap_err();
            assert!(err.to_string().contains(kind.name()), "{kind:?}: {err}");
        }
    }

    #[test]
    fn zstd_frame_claiming_a_huge_size_is_refused() {
        let codec = codec(Kind::Zstd);
        let options = CodecOptions::default();
        let mut encoded = codec
            .encode(Cow::Borrowed(&[7u8; 64]), &options)
            .unwrap()
            .into_owned();
        // Rewrite the frame header: 8-byte content size field claiming 2^40 bytes.
        let bomb: Vec<u8> = [
            &encoded[..4],
            &[0xE0],
            &(1u64 << 40).to_le_bytes(),
            &encoded[6..],
        ]
        .concat();
        let fits = BytesRepresentation::FixedSize(64);
        assert!(codec.decode(Cow::Owned(bomb), &fits, &options).is_err());
        encoded.truncate(encoded.len() / 2);
        assert!(codec.decode(Cow::Owned(encoded), &fits, &options).is_err());
    }
}
