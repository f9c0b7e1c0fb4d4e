//! numcodecs' `delta` filter: stores the first element, then differences; decoding is a
//! running sum in the array's dtype (wrapping for integers, like numpy).

use std::borrow::Cow;
use std::num::NonZeroU64;
use std::sync::Arc;

use zarrs::array::{ArrayBytes, ArrayBytesRaw, BytesRepresentation, DataType, FillValue};
use zarrs_codec::{
    ArrayCodecTraits, ArrayToArrayCodecTraits, BytesToBytesCodecTraits, CodecError,
    CodecMetadataOptions, CodecOptions, CodecTraits, PartialDecoderCapability,
    PartialEncoderCapability, RecommendedConcurrency,
};
use zarrs_metadata::v2::MetadataV2;
use zarrs_metadata::v3::MetadataV3;
use zarrs_metadata::Configuration;
use zarrs_plugin::{ExtensionName, PluginCreateError, ZarrVersion};

pub const ID: &str = "delta";
pub const V3_NAME: &str = "numcodecs.delta";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    UInt,
    Float,
}

#[derive(Debug, Clone)]
pub struct DeltaCodec {
    dtype: String,
    kind: Kind,
    size: usize,
    little_endian: bool,
}

impl DeltaCodec {
    pub fn from_metadata(metadata: &MetadataV2) -> Result<Self, PluginCreateError> {
        let configuration = metadata.configuration();
        let dtype = configuration
            .get("dtype")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| PluginCreateError::Other("delta: missing 'dtype'".into()))?;
        check_astype(configuration, dtype)?;
        Self::for_dtype(dtype.to_string())
    }

    fn for_dtype(dtype: String) -> Result<Self, PluginCreateError> {
        let unsupported = || PluginCreateError::Other(format!("delta: unsupported dtype {dtype}"));
        if !dtype.is_char_boundary(1) {
            return Err(unsupported());
        }
        let (order, rest) = dtype.split_at(1);
        let kind = match rest.chars().next() {
            Some('i') => Kind::Int,
            Some('u') => Kind::UInt,
            Some('f') => Kind::Float,
            _ => return Err(unsupported()),
        };
        let size: usize = rest[1..].parse().map_err(|_| unsupported())?;
        if !matches!(
            (kind, size),
            (Kind::Int | Kind::UInt, 1 | 2 | 4 | 8) | (Kind::Float, 4 | 8)
        ) {
            return Err(unsupported());
        }
        let little_endian = match order {
            "<" => true,
            ">" => false,
            "|" | "=" => cfg!(target_endian = "little"),
            _ => return Err(unsupported()),
        };
        Ok(Self {
            dtype,
            kind,
            size,
            little_endian,
        })
    }

    fn transform(&self, bytes: &[u8], encode: bool) -> Result<Vec<u8>, CodecError> {
        if !bytes.len().is_multiple_of(self.size) {
            return Err(CodecError::Other(format!(
                "delta: {} bytes is not a whole number of {} elements",
                bytes.len(),
                self.dtype
            )));
        }
        let mut out = bytes.to_vec();
        macro_rules! run {
            ($t:ty, $add:expr, $sub:expr) => {{
                let n = std::mem::size_of::<$t>();
                let read = |chunk: &[u8]| -> $t {
                    let array = chunk.try_into().expect("element size");
                    if self.little_endian {
                        <$t>::from_le_bytes(array)
                    } else {
                        <$t>::from_be_bytes(array)
                    }
                };
                let write = |value: $t| {
                    if self.little_endian {
                        value.to_le_bytes()
                    } else {
                        value.to_be_bytes()
                    }
                };
                let mut previous: Option<$t> = None;
                for (i, chunk) in bytes.chunks_exact(n).enumerate() {
                    let value = read(chunk);
                    let result = match previous {
                        None => value,
                        Some(p) => {
                            if encode {
                                $sub(value, p)
                            } else {
                                $add(value, p)
                            }
                        }
                    };
                    previous = Some(if encode { value } else { result });
                    out[i * n..(i + 1) * n].copy_from_slice(&write(result));
                }
            }};
        }
        match (self.kind, self.size) {
            (Kind::Int, 1) => run!(i8, i8::wrapping_add, i8::wrapping_sub),
            (Kind::Int, 2) => run!(i16, i16::wrapping_add, i16::wrapping_sub),
            (Kind::Int, 4) => run!(i32, i32::wrapping_add, i32::wrapping_sub),
            (Kind::Int, 8) => run!(i64, i64::wrapping_add, i64::wrapping_sub),
            (Kind::UInt, 1) => run!(u8, u8::wrapping_add, u8::wrapping_sub),
            (Kind::UInt, 2) => run!(u16, u16::wrapping_add, u16::wrapping_sub),
            (Kind::UInt, 4) => run!(u32, u32::wrapping_add, u32::wrapping_sub),
            (Kind::UInt, 8) => run!(u64, u64::wrapping_add, u64::wrapping_sub),
            (Kind::Float, 4) => run!(f32, |a: f32, b: f32| a + b, |a: f32, b: f32| a - b),
            (Kind::Float, 8) => run!(f64, |a: f64, b: f64| a + b, |a: f64, b: f64| a - b),
            _ => unreachable!("validated in from_metadata"),
        }
        Ok(out)
    }
}

/// numcodecs' `astype` other than `dtype` changes the stored type: not supported.
fn check_astype(
    configuration: &serde_json::Map<String, serde_json::Value>,
    dtype: &str,
) -> Result<(), PluginCreateError> {
    let astype = configuration
        .get("astype")
        .and_then(serde_json::Value::as_str)
        .unwrap_or(dtype);
    if astype != dtype {
        return Err(PluginCreateError::Other(format!(
            "delta with astype {astype} different from dtype {dtype} is not supported"
        )));
    }
    Ok(())
}

/// numpy's type code (`i4`) of a zarrs data type delta works on.
fn type_code(data_type: &DataType) -> Option<&'static str> {
    let code = match data_type.name(ZarrVersion::V3)?.as_ref() {
        "int8" => "i1",
        "int16" => "i2",
        "int32" => "i4",
        "int64" => "i8",
        "uint8" => "u1",
        "uint16" => "u2",
        "uint32" => "u4",
        "uint64" => "u8",
        "float32" => "f4",
        "float64" => "f8",
        _ => return None,
    };
    Some(code)
}

/// zarr-python 3's `numcodecs.delta`: an array-to-array codec working on native elements
/// (the `bytes` codec after it sets the stored byte order), so `dtype`'s byte order is
/// irrelevant; without a `dtype` it uses the array's.
#[derive(Debug, Clone)]
pub struct DeltaArrayCodec {
    configuration: serde_json::Map<String, serde_json::Value>,
    /// numpy's type code (`i4`) of the configuration's `dtype`, if any.
    code: Option<String>,
}

impl DeltaArrayCodec {
    pub fn from_metadata(metadata: &MetadataV3) -> Result<Self, PluginCreateError> {
        let configuration: serde_json::Map<_, _> =
            metadata.configuration().cloned().unwrap_or_default().into();
        let code = match configuration.get("dtype") {
            None | Some(serde_json::Value::Null) => None,
            Some(value) => {
                let dtype = value
                    .as_str()
                    .ok_or_else(|| PluginCreateError::Other(format!("delta: dtype {value}")))?;
                check_astype(&configuration, dtype)?;
                let code = dtype.trim_start_matches(['<', '>', '|', '=']).to_string();
                // Validated now, so a bad dtype is refused when the array is opened.
                DeltaCodec::for_dtype(format!("={code}"))?;
                Some(code)
            }
        };
        Ok(Self {
            configuration,
            code,
        })
    }

    /// The native-endian delta codec for the array's data type.
    fn native(&self, data_type: &DataType) -> Result<DeltaCodec, CodecError> {
        let unsupported = || CodecError::UnsupportedDataType(data_type.clone(), ID.to_string());
        let code = type_code(data_type).ok_or_else(unsupported)?;
        if self.code.as_deref().is_some_and(|c| c != code) {
            return Err(unsupported());
        }
        DeltaCodec::for_dtype(format!("={code}")).map_err(|_| unsupported())
    }
}

impl ExtensionName for DeltaArrayCodec {
    fn name(&self, version: ZarrVersion) -> Option<Cow<'static, str>> {
        match version {
            ZarrVersion::V2 => Some(Cow::Borrowed(ID)),
            ZarrVersion::V3 => Some(Cow::Borrowed(V3_NAME)),
        }
    }
}

impl CodecTraits for DeltaArrayCodec {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn configuration(
        &self,
        _version: ZarrVersion,
        _options: &CodecMetadataOptions,
    ) -> Option<Configuration> {
        Some(Configuration::from(self.configuration.clone()))
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

impl ArrayCodecTraits for DeltaArrayCodec {
    fn recommended_concurrency(
        &self,
        _shape: &[NonZeroU64],
        _data_type: &DataType,
    ) -> Result<RecommendedConcurrency, CodecError> {
        Ok(RecommendedConcurrency::new_maximum(1))
    }
}

impl ArrayToArrayCodecTraits for DeltaArrayCodec {
    fn into_dyn(self: Arc<Self>) -> Arc<dyn ArrayToArrayCodecTraits> {
        self
    }

    fn encoded_data_type(&self, decoded_data_type: &DataType) -> Result<DataType, CodecError> {
        self.native(decoded_data_type)?;
        Ok(decoded_data_type.clone())
    }

    fn encode<'a>(
        &self,
        bytes: ArrayBytes<'a>,
        _shape: &[NonZeroU64],
        data_type: &DataType,
        _fill_value: &FillValue,
        _options: &CodecOptions,
    ) -> Result<ArrayBytes<'a>, CodecError> {
        let delta = self.native(data_type)?;
        Ok(ArrayBytes::from(
            delta.transform(&bytes.into_fixed()?, true)?,
        ))
    }

    fn decode<'a>(
        &self,
        bytes: ArrayBytes<'a>,
        _shape: &[NonZeroU64],
        data_type: &DataType,
        _fill_value: &FillValue,
        _options: &CodecOptions,
    ) -> Result<ArrayBytes<'a>, CodecError> {
        let delta = self.native(data_type)?;
        Ok(ArrayBytes::from(
            delta.transform(&bytes.into_fixed()?, false)?,
        ))
    }
}

impl ExtensionName for DeltaCodec {
    fn name(&self, version: ZarrVersion) -> Option<Cow<'static, str>> {
        match version {
            ZarrVersion::V2 => Some(Cow::Borrowed(ID)),
            ZarrVersion::V3 => Some(Cow::Borrowed(V3_NAME)),
        }
    }
}

impl CodecTraits for DeltaCodec {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn configuration(
        &self,
        _version: ZarrVersion,
        _options: &CodecMetadataOptions,
    ) -> Option<Configuration> {
        let mut map = serde_json::Map::new();
        map.insert("dtype".into(), self.dtype.clone().into());
        map.insert("astype".into(), self.dtype.clone().into());
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

impl BytesToBytesCodecTraits for DeltaCodec {
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
        *decoded
    }

    fn encode<'a>(
        &self,
        decoded: ArrayBytesRaw<'a>,
        _options: &CodecOptions,
    ) -> Result<ArrayBytesRaw<'a>, CodecError> {
        self.transform(&decoded, true).map(Cow::Owned)
    }

    fn decode<'a>(
        &self,
        encoded: ArrayBytesRaw<'a>,
        decoded_representation: &BytesRepresentation,
        _options: &CodecOptions,
    ) -> Result<ArrayBytesRaw<'a>, CodecError> {
        super::check_decoded_len("delta", encoded.len(), decoded_representation)?;
        self.transform(&encoded, false).map(Cow::Owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(dtype: &str) -> DeltaCodec {
        let json = format!(r#"{{"id": "delta", "dtype": "{dtype}", "astype": "{dtype}"}}"#);
        let metadata: MetadataV2 = serde_json::from_str(&json).unwrap();
        DeltaCodec::from_metadata(&metadata).unwrap()
    }

    #[test]
    fn matches_numcodecs_for_ints_with_wrapping() {
        let values: Vec<i16> = vec![5, -3, 32767, -32768, 0, 12];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
        let c = codec(">i2");
        let encoded = c.transform(&bytes, true).unwrap();
        let first = i16::from_be_bytes([encoded[0], encoded[1]]);
        let second = i16::from_be_bytes([encoded[2], encoded[3]]);
        assert_eq!((first, second), (5, -8));
        assert_eq!(c.transform(&encoded, false).unwrap(), bytes);
    }

    #[test]
    fn rejects_other_astype_and_ragged_input() {
        let metadata: MetadataV2 =
            serde_json::from_str(r#"{"id": "delta", "dtype": "<i8", "astype": "<i2"}"#).unwrap();
        assert!(DeltaCodec::from_metadata(&metadata).is_err());
        assert!(codec("<f8").transform(&[0u8; 7], false).is_err());
    }
}
