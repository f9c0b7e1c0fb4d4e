//! numcodecs codecs common in v2 data that zarrs lacks, registered with zarrs at start-up.

mod delta;
mod lz4;

use std::sync::{Arc, Once};

use zarrs_codec::{register_codec_v2, Codec, CodecRuntimePluginV2};

/// Registers fastzarr's codecs with zarrs (once per process).
pub fn register() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
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
