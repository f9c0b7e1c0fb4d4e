//! numcodecs' `crc32` checksum: zlib's CRC-32 of the payload as 4 little-endian bytes,
//! before the payload (numcodecs' default) or after it (`location: "end"`).

use std::borrow::Cow;
use std::sync::Arc;

use zarrs::array::{ArrayBytesRaw, BytesRepresentation};
use zarrs_codec::{
    BytesToBytesCodecTraits, CodecError, CodecMetadataOptions, CodecOptions, CodecTraits,
    PartialDecoderCapability, PartialEncoderCapability, RecommendedConcurrency,
};
use zarrs_metadata::v2::MetadataV2;
use zarrs_metadata::Configuration;
use zarrs_plugin::{ExtensionName, PluginCreateError, ZarrVersion};

pub const ID: &str = "crc32";

#[derive(Debug, Clone)]
pub struct Crc32Codec {
    at_end: bool,
}

impl Crc32Codec {
    pub fn from_metadata(metadata: &MetadataV2) -> Result<Self, PluginCreateError> {
        let at_end = match metadata.configuration().get("location") {
            None | Some(serde_json::Value::Null) => false,
            Some(location) => match location.as_str() {
                Some("start") => false,
                Some("end") => true,
                _ => {
                    return Err(PluginCreateError::Other(format!(
                        "{ID}: invalid location {location}"
                    )))
                }
            },
        };
        Ok(Self { at_end })
    }

    /// The payload of `encoded`, once its checksum is verified.
    fn verified<'a>(&self, encoded: &'a [u8]) -> Result<&'a [u8], CodecError> {
        if encoded.len() < 4 {
            return Err(CodecError::Other(format!(
                "{ID}: {} bytes cannot hold a checksum",
                encoded.len()
            )));
        }
        let (stored, payload) = if self.at_end {
            let (payload, stored) = encoded.split_at(encoded.len() - 4);
            (stored, payload)
        } else {
            encoded.split_at(4)
        };
        let stored = u32::from_le_bytes(stored.try_into().expect("4 bytes"));
        let computed = crc32fast::hash(payload);
        if stored != computed {
            return Err(CodecError::Other(format!(
                "{ID}: stored checksum {stored:#010x} differs from the computed {computed:#010x}"
            )));
        }
        Ok(payload)
    }
}

impl ExtensionName for Crc32Codec {
    fn name(&self, version: ZarrVersion) -> Option<Cow<'static, str>> {
        match version {
            ZarrVersion::V2 => Some(Cow::Borrowed(ID)),
            ZarrVersion::V3 => Some(Cow::Borrowed("numcodecs.crc32")),
        }
    }
}

impl CodecTraits for Crc32Codec {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn configuration(
        &self,
        _version: ZarrVersion,
        _options: &CodecMetadataOptions,
    ) -> Option<Configuration> {
        let mut map = serde_json::Map::new();
        map.insert(
            "location".into(),
            if self.at_end { "end" } else { "start" }.into(),
        );
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

impl BytesToBytesCodecTraits for Crc32Codec {
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
            BytesRepresentation::FixedSize(size) => BytesRepresentation::FixedSize(size + 4),
            BytesRepresentation::BoundedSize(size) => BytesRepresentation::BoundedSize(size + 4),
            BytesRepresentation::UnboundedSize => BytesRepresentation::UnboundedSize,
        }
    }

    fn encode<'a>(
        &self,
        decoded: ArrayBytesRaw<'a>,
        _options: &CodecOptions,
    ) -> Result<ArrayBytesRaw<'a>, CodecError> {
        let checksum = crc32fast::hash(&decoded).to_le_bytes();
        let mut out = Vec::with_capacity(decoded.len() + 4);
        if self.at_end {
            out.extend_from_slice(&decoded);
            out.extend_from_slice(&checksum);
        } else {
            out.extend_from_slice(&checksum);
            out.extend_from_slice(&decoded);
        }
        Ok(Cow::Owned(out))
    }

    fn decode<'a>(
        &self,
        encoded: ArrayBytesRaw<'a>,
        _decoded_representation: &BytesRepresentation,
        _options: &CodecOptions,
    ) -> Result<ArrayBytesRaw<'a>, CodecError> {
        Ok(Cow::Owned(self.verified(&encoded)?.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(location: &str) -> Crc32Codec {
        let json = format!(r#"{{"id": "crc32", "location": "{location}"}}"#);
        Crc32Codec::from_metadata(&serde_json::from_str(&json).unwrap()).unwrap()
    }

    #[test]
    fn round_trips_and_refuses_a_changed_payload() {
        for location in ["start", "end"] {
            let c = codec(location);
            let encoded = c
                .encode(Cow::Borrowed(b"zarr"), &CodecOptions::default())
                .unwrap()
                .into_owned();
            assert_eq!(c.verified(&encoded).unwrap(), b"zarr");
            let mut changed = encoded.clone();
            let at = if location == "start" { 4 } else { 0 };
            changed[at] ^= 1;
            assert!(c.verified(&changed).is_err());
            assert!(c.verified(&encoded[..3]).is_err());
        }
        // zlib.crc32(b"zarr") as numcodecs stores it, in front of the payload.
        let crc = crc32fast::hash(b"zarr").to_le_bytes();
        let stored = [&crc[..], b"zarr"].concat();
        assert_eq!(codec("start").verified(&stored).unwrap(), b"zarr");
    }
}
