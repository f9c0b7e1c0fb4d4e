//! numcodecs codecs common in v2 data that zarrs lacks, registered with zarrs at start-up.

pub mod bounded;
mod delta;
mod lz4;

use std::sync::{Arc, Once};

use zarrs_codec::{
    register_codec_v2, register_codec_v3, Codec, CodecRuntimePluginV2, CodecRuntimePluginV3,
};

/// Registers fastzarr's codecs with zarrs (once per process).
pub fn register() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
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
