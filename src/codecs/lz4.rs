//! numcodecs' `lz4`: a 4-byte little-endian decoded length, then one LZ4 block.

use std::borrow::Cow;
use std::sync::Arc;

use zarrs::array::{ArrayBytesRaw, BytesRepresentation};
use zarrs_codec::{
    BytesToBytesCodecTraits, CodecError, CodecMetadataOptions, CodecOptions, CodecTraits,
    PartialDecoderCapability, PartialEncoderCapability, RecommendedConcurrency,
};
use zarrs_metadata::v2::MetadataV2;
use zarrs_metadata::Configuration;
use zarrs_plugin::{ExtensionName, ZarrVersion};

pub const ID: &str = "lz4";

#[derive(Debug, Clone)]
pub struct Lz4Codec {
    acceleration: i64,
}

impl Lz4Codec {
    pub fn from_metadata(metadata: &MetadataV2) -> Self {
        let acceleration = metadata
            .configuration()
            .get("acceleration")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(1);
        Self { acceleration }
    }
}

impl ExtensionName for Lz4Codec {
    fn name(&self, version: ZarrVersion) -> Option<Cow<'static, str>> {
        match version {
            ZarrVersion::V2 => Some(Cow::Borrowed(ID)),
            ZarrVersion::V3 => Some(Cow::Borrowed("numcodecs.lz4")),
        }
    }
}

impl CodecTraits for Lz4Codec {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn configuration(
        &self,
        _version: ZarrVersion,
        _options: &CodecMetadataOptions,
    ) -> Option<Configuration> {
        let mut map = serde_json::Map::new();
        map.insert("acceleration".into(), self.acceleration.into());
        Some(Configuration::from(map))
    }

    fn partial_decoder_capability(&self) -> PartialDecoderCapability {
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

impl BytesToBytesCodecTraits for Lz4Codec {
    fn into_dyn(self: Arc<Self>) -> Arc<dyn BytesToBytesCodecTraits> {
        self
    }

    fn recommended_concurrency(
        &self,
        _decoded: &BytesRepresentation,
    ) -> Result<RecommendedConcurrency, CodecError> {
        Ok(RecommendedConcurrency::new_maximum(1))
    }

    fn encoded_representation(&self, decoded: &BytesRepresentation) -> BytesRepresentation {
        match decoded {
            BytesRepresentation::FixedSize(size) | BytesRepresentation::BoundedSize(size) => {
                BytesRepresentation::BoundedSize(
                    4 + lz4_flex::block::get_maximum_output_size(*size as usize) as u64,
                )
            }
            BytesRepresentation::UnboundedSize => BytesRepresentation::UnboundedSize,
        }
    }

    fn encode<'a>(
        &self,
        decoded: ArrayBytesRaw<'a>,
        _options: &CodecOptions,
    ) -> Result<ArrayBytesRaw<'a>, CodecError> {
        Ok(Cow::Owned(lz4_flex::block::compress_prepend_size(&decoded)))
    }

    fn decode<'a>(
        &self,
        encoded: ArrayBytesRaw<'a>,
        decoded_representation: &BytesRepresentation,
        _options: &CodecOptions,
    ) -> Result<ArrayBytesRaw<'a>, CodecError> {
        let Some(header) = encoded.get(..4) else {
            return Err(CodecError::Other(format!(
                "lz4: {} bytes is too short for its header",
                encoded.len()
            )));
        };
        let declared = u64::from(u32::from_le_bytes(header.try_into().expect("4 bytes")));
        // The header is not trusted: a lying size must not become a huge allocation.
        let allowed = match decoded_representation {
            BytesRepresentation::FixedSize(size) | BytesRepresentation::BoundedSize(size) => *size,
            BytesRepresentation::UnboundedSize => declared,
        };
        if declared > allowed {
            return Err(CodecError::Other(format!(
                "lz4: header declares {declared} decoded bytes, the chunk holds at most {allowed}"
            )));
        }
        let decoded = lz4_flex::block::decompress(&encoded[4..], declared as usize)
            .map_err(|e| CodecError::Other(format!("lz4: {e}")))?;
        super::check_decoded_len("lz4", decoded.len(), decoded_representation)?;
        Ok(Cow::Owned(decoded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_lying_header() {
        let codec = Lz4Codec { acceleration: 1 };
        let data: Vec<u8> = (0..4000u32).flat_map(|i| (i % 7).to_le_bytes()).collect();
        let options = CodecOptions::default();
        let encoded = codec
            .encode(Cow::Borrowed(&data), &options)
            .unwrap()
            .into_owned();
        let size = BytesRepresentation::FixedSize(data.len() as u64);
        let decoded = codec
            .decode(Cow::Borrowed(&encoded), &size, &options)
            .unwrap();
        assert_eq!(decoded.as_ref(), data.as_slice());
        let mut lying = encoded.clone();
        lying[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(codec.decode(Cow::Owned(lying), &size, &options).is_err());
        assert!(codec
            .decode(Cow::Borrowed(&encoded[..10]), &size, &options)
            .is_err());
    }
}
