//! numcodecs codecs common in v2 data that zarrs lacks, registered with zarrs at start-up.

pub mod bounded;
mod checksum32;
mod delta;
mod fixedscaleoffset;
mod lz4;
pub mod spellings;
pub mod vlen;

use std::sync::{Arc, Once};

use zarrs::array::BytesRepresentation;
use zarrs_codec::{
    register_codec_v2, register_codec_v3, Codec, CodecError, CodecRuntimePluginV2,
    CodecRuntimePluginV3,
};

/// Registers fastzarr's codecs with zarrs (once per process).
pub fn register() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        // First, so that they come before zarrs' codecs of the same names: zarr-python 3's
        // `numcodecs.*` spellings.
        register_codec_v3(CodecRuntimePluginV3::new(
            |name| spellings::V3_NAMES.contains(&name),
            spellings::create_v3,
        ));
        // Strings and bytes, every length checked (zarrs' decoder panics on damaged ones).
        register_codec_v2(CodecRuntimePluginV2::new(
            |id| vlen::VlenCodec::new(id).is_some(),
            |metadata| vlen::create(metadata.id()),
        ));
        register_codec_v3(CodecRuntimePluginV3::new(
            |name| vlen::VlenCodec::new(name).is_some(),
            |metadata| vlen::create(metadata.name()),
        ));
        // zarrs' compressors, with decoders bounded by the chunk's size (bounded.rs).
        register_codec_v2(CodecRuntimePluginV2::new(
            |id| bounded::V2_IDS.contains(&id),
            bounded::create_v2,
        ));
        register_codec_v3(CodecRuntimePluginV3::new(
            |name| bounded::V3_NAMES.contains(&name),
            bounded::create_v3,
        ));
        register_codec_v2(CodecRuntimePluginV2::new(
            |id| id == lz4::ID,
            |metadata| {
                Ok(Codec::BytesToBytes(Arc::new(lz4::Lz4Codec::from_metadata(
                    metadata,
                ))))
            },
        ));
        // numcodecs' arithmetic exactly (zarrs' own codec computes in float32).
        register_codec_v2(CodecRuntimePluginV2::new(
            |id| id == fixedscaleoffset::ID,
            |metadata| {
                Ok(Codec::ArrayToArray(Arc::new(
                    fixedscaleoffset::FixedScaleOffsetCodec::from_metadata_v2(metadata)?,
                )))
            },
        ));
        register_codec_v3(CodecRuntimePluginV3::new(
            |name| name == fixedscaleoffset::V3_NAME,
            |metadata| {
                Ok(Codec::ArrayToArray(Arc::new(
                    fixedscaleoffset::FixedScaleOffsetCodec::from_metadata_v3(metadata)?,
                )))
            },
        ));
        register_codec_v2(CodecRuntimePluginV2::new(
            |id| id == checksum32::ID,
            |metadata| {
                Ok(Codec::BytesToBytes(Arc::new(
                    checksum32::Crc32Codec::from_metadata(metadata)?,
                )))
            },
        ));
        register_codec_v2(CodecRuntimePluginV2::new(
            |id| id == delta::ID,
            |metadata| {
                Ok(Codec::BytesToBytes(Arc::new(
                    delta::DeltaCodec::from_metadata(metadata)?,
                )))
            },
        ));
    });
}

/// Checks that a decoder produced exactly the bytes a fixed-size chunk holds.
///
/// zarrs' partial decoders read only the byte ranges they need from a decoded buffer, so a
/// stream that decodes to too few bytes would otherwise yield values from past its end (or
/// a fill) for points and boxes, and one that decodes to too many would be cut silently.
pub fn check_decoded_len(
    codec: &str,
    decoded: usize,
    representation: &BytesRepresentation,
) -> Result<(), CodecError> {
    match representation {
        BytesRepresentation::FixedSize(size) if decoded as u64 != *size => Err(CodecError::Other(
            format!("{codec}: the chunk decodes to {decoded} bytes, it holds {size}"),
        )),
        BytesRepresentation::BoundedSize(size) if decoded as u64 > *size => Err(CodecError::Other(
            format!("{codec}: the chunk decodes to {decoded} bytes, it holds at most {size}"),
        )),
        _ => Ok(()),
    }
}
