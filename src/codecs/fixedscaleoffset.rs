//! numcodecs' `fixedscaleoffset` filter, computed exactly as numcodecs computes it with numpy.
//!
//! Decoding is `(encoded / scale) + offset` cast to `dtype`. numpy does that arithmetic in
//! float64 when the stored `astype` is an integer type, and in the stored float type itself
//! when `astype` is a float (a float32 array divided by a Python float stays float32).
//! Encoding is `round_half_even((value - offset) * scale)` cast to `astype`, in float64 for
//! integer `dtype`s and in `dtype` for float ones. zarrs' own codec holds offset and scale as
//! float32 and passes integers through float32, so values differ from numcodecs'
//! (273.15 reads back as 273.14999); this one replaces it, for v2 and v3 alike.
//!
//! It works on native-endian elements (an array-to-array codec, as zarr-python 3 writes it):
//! the `bytes` codec before it has already put the elements in native order. In v2 that
//! codec takes its byte order from `dtype`, so an `astype` stored in the other byte order is
//! swapped once more here.

use std::borrow::Cow;
use std::num::NonZeroU64;
use std::sync::Arc;

use zarrs::array::{data_type, ArrayBytes, DataType, FillValue};
use zarrs_codec::{
    ArrayCodecTraits, ArrayToArrayCodecTraits, CodecError, CodecMetadataOptions, CodecOptions,
    CodecTraits, PartialDecoderCapability, PartialEncoderCapability, RecommendedConcurrency,
};
use zarrs_metadata::v2::MetadataV2;
use zarrs_metadata::v3::MetadataV3;
use zarrs_metadata::Configuration;
use zarrs_plugin::{ExtensionName, PluginCreateError, ZarrVersion};

pub const ID: &str = "fixedscaleoffset";
pub const V3_NAME: &str = "numcodecs.fixedscaleoffset";

/// The element types numcodecs' codec is used with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elem {
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F32,
    F64,
}

impl Elem {
    const ALL: [Elem; 10] = [
        Elem::I8,
        Elem::I16,
        Elem::I32,
        Elem::I64,
        Elem::U8,
        Elem::U16,
        Elem::U32,
        Elem::U64,
        Elem::F32,
        Elem::F64,
    ];

    fn size(self) -> usize {
        match self {
            Elem::I8 | Elem::U8 => 1,
            Elem::I16 | Elem::U16 => 2,
            Elem::I32 | Elem::U32 | Elem::F32 => 4,
            Elem::I64 | Elem::U64 | Elem::F64 => 8,
        }
    }

    fn data_type(self) -> DataType {
        match self {
            Elem::I8 => data_type::int8(),
            Elem::I16 => data_type::int16(),
            Elem::I32 => data_type::int32(),
            Elem::I64 => data_type::int64(),
            Elem::U8 => data_type::uint8(),
            Elem::U16 => data_type::uint16(),
            Elem::U32 => data_type::uint32(),
            Elem::U64 => data_type::uint64(),
            Elem::F32 => data_type::float32(),
            Elem::F64 => data_type::float64(),
        }
    }

    fn of(data_type: &DataType) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.data_type() == *data_type)
    }
}

/// A numpy dtype string as numcodecs stores it (`<f8`, `|u1`, `u1`, `>i2`) or a v3 data
/// type name (`float64`): its element type and whether its bytes are stored little-endian.
fn parse_dtype(text: &str) -> Option<(Elem, bool)> {
    let native_little = cfg!(target_endian = "little");
    let by_name = match text {
        "int8" => Some(Elem::I8),
        "int16" => Some(Elem::I16),
        "int32" => Some(Elem::I32),
        "int64" => Some(Elem::I64),
        "uint8" => Some(Elem::U8),
        "uint16" => Some(Elem::U16),
        "uint32" => Some(Elem::U32),
        "uint64" => Some(Elem::U64),
        "float32" => Some(Elem::F32),
        "float64" => Some(Elem::F64),
        _ => None,
    };
    if let Some(elem) = by_name {
        return Some((elem, native_little));
    }
    let (little, code) = match text.as_bytes().first()? {
        b'<' => (true, &text[1..]),
        b'>' => (false, &text[1..]),
        b'|' | b'=' => (native_little, &text[1..]),
        _ => (native_little, text),
    };
    let elem = match code {
        "i1" => Elem::I8,
        "i2" => Elem::I16,
        "i4" => Elem::I32,
        "i8" => Elem::I64,
        "u1" => Elem::U8,
        "u2" => Elem::U16,
        "u4" => Elem::U32,
        "u8" => Elem::U64,
        "f4" => Elem::F32,
        "f8" => Elem::F64,
        _ => return None,
    };
    Some((elem, little))
}

/// Native-endian element access and the casts numpy makes between them and floats.
trait Element: Copy {
    const SIZE: usize;
    fn read(bytes: &[u8]) -> Self;
    fn write(self, bytes: &mut [u8]);
    fn to_f64(self) -> f64;
    fn to_f32(self) -> f32;
    /// numpy's `astype` from float64: truncation toward zero for integers (saturating where
    /// numpy's result is undefined: NaN and out-of-range values), rounding for floats.
    fn from_f64(value: f64) -> Self;
    fn from_f32(value: f32) -> Self;
}

macro_rules! element {
    ($t:ty) => {
        impl Element for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline]
            fn read(bytes: &[u8]) -> Self {
                <$t>::from_ne_bytes(bytes.try_into().expect("element size"))
            }
            #[inline]
            fn write(self, bytes: &mut [u8]) {
                bytes.copy_from_slice(&self.to_ne_bytes());
            }
            #[inline]
            #[allow(clippy::cast_precision_loss, clippy::cast_lossless)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            #[allow(
                clippy::cast_precision_loss,
                clippy::cast_possible_truncation,
                clippy::cast_lossless
            )]
            fn to_f32(self) -> f32 {
                self as f32
            }
            #[inline]
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_lossless
            )]
            fn from_f64(value: f64) -> Self {
                value as $t
            }
            #[inline]
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_lossless
            )]
            fn from_f32(value: f32) -> Self {
                value as $t
            }
        }
    };
}

element!(i8);
element!(i16);
element!(i32);
element!(i64);
element!(u8);
element!(u16);
element!(u32);
element!(u64);
element!(f32);
element!(f64);

/// The float type numpy computes in: `f32` or `f64`.
trait Intermediate: Copy {
    fn from_element<E: Element>(value: E) -> Self;
    fn into_element<E: Element>(self) -> E;
    fn from_f64(value: f64) -> Self;
    fn decode(self, scale: Self, offset: Self) -> Self;
    fn encode(self, scale: Self, offset: Self) -> Self;
}

impl Intermediate for f64 {
    #[inline]
    fn from_element<E: Element>(value: E) -> Self {
        value.to_f64()
    }
    #[inline]
    fn into_element<E: Element>(self) -> E {
        E::from_f64(self)
    }
    fn from_f64(value: f64) -> Self {
        value
    }
    #[inline]
    fn decode(self, scale: Self, offset: Self) -> Self {
        self / scale + offset
    }
    #[inline]
    fn encode(self, scale: Self, offset: Self) -> Self {
        ((self - offset) * scale).round_ties_even()
    }
}

impl Intermediate for f32 {
    #[inline]
    fn from_element<E: Element>(value: E) -> Self {
        value.to_f32()
    }
    #[inline]
    fn into_element<E: Element>(self) -> E {
        E::from_f32(self)
    }
    #[allow(clippy::cast_possible_truncation)]
    fn from_f64(value: f64) -> Self {
        value as f32
    }
    #[inline]
    fn decode(self, scale: Self, offset: Self) -> Self {
        self / scale + offset
    }
    #[inline]
    fn encode(self, scale: Self, offset: Self) -> Self {
        ((self - offset) * scale).round_ties_even()
    }
}

/// Maps every element of `src` (type `S`) through `T` into `dst` (type `D`).
fn map<S: Element, D: Element, T: Intermediate>(
    src: &[u8],
    dst: &mut [u8],
    scale: f64,
    offset: f64,
    decode: bool,
) {
    let (scale, offset) = (T::from_f64(scale), T::from_f64(offset));
    for (s, d) in src.chunks_exact(S::SIZE).zip(dst.chunks_exact_mut(D::SIZE)) {
        let value = T::from_element(S::read(s));
        let value = if decode {
            value.decode(scale, offset)
        } else {
            value.encode(scale, offset)
        };
        value.into_element::<D>().write(d);
    }
}

macro_rules! with_elem {
    ($elem:expr, $t:ident => $body:expr) => {
        match $elem {
            Elem::I8 => {
                type $t = i8;
                $body
            }
            Elem::I16 => {
                type $t = i16;
                $body
            }
            Elem::I32 => {
                type $t = i32;
                $body
            }
            Elem::I64 => {
                type $t = i64;
                $body
            }
            Elem::U8 => {
                type $t = u8;
                $body
            }
            Elem::U16 => {
                type $t = u16;
                $body
            }
            Elem::U32 => {
                type $t = u32;
                $body
            }
            Elem::U64 => {
                type $t = u64;
                $body
            }
            Elem::F32 => {
                type $t = f32;
                $body
            }
            Elem::F64 => {
                type $t = f64;
                $body
            }
        }
    };
}

/// Converts native elements of type `from` into `to` the way numpy does: through float32
/// when `float32` is the type numpy computes in, else through float64.
fn convert(
    src: &[u8],
    from: Elem,
    to: Elem,
    float32: bool,
    scale: f64,
    offset: f64,
    decode: bool,
) -> Vec<u8> {
    let mut dst = vec![0u8; src.len() / from.size() * to.size()];
    with_elem!(from, S => with_elem!(to, D => if float32 {
        map::<S, D, f32>(src, &mut dst, scale, offset, decode);
    } else {
        map::<S, D, f64>(src, &mut dst, scale, offset, decode);
    }));
    dst
}

#[derive(Debug, Clone)]
pub struct FixedScaleOffsetCodec {
    /// The configuration as stored, reported back unchanged.
    configuration: serde_json::Map<String, serde_json::Value>,
    offset: f64,
    scale: f64,
    /// The decoded type, when the configuration names one (a v3 `{}` takes the array's).
    dtype: Option<Elem>,
    /// The stored type, when it differs from the decoded one.
    astype: Option<Elem>,
    /// v2 only: the stored elements are in the byte order opposite to `dtype`'s.
    swap: bool,
}

impl FixedScaleOffsetCodec {
    fn new(
        configuration: &serde_json::Map<String, serde_json::Value>,
        version: ZarrVersion,
    ) -> Result<Self, PluginCreateError> {
        let number = |key: &str, default: f64| match configuration.get(key) {
            None | Some(serde_json::Value::Null) => Ok(default),
            Some(value) => value.as_f64().ok_or_else(|| {
                PluginCreateError::Other(format!("{ID}: '{key}' is not a number: {value}"))
            }),
        };
        let dtype_of = |key: &str| -> Result<Option<(Elem, bool)>, PluginCreateError> {
            match configuration.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(value) => value
                    .as_str()
                    .and_then(parse_dtype)
                    .map(Some)
                    .ok_or_else(|| {
                        PluginCreateError::Other(format!("{ID}: unsupported {key} {value}"))
                    }),
            }
        };
        let scale = number("scale", 1.0)?;
        let offset = number("offset", 0.0)?;
        let dtype = dtype_of("dtype")?;
        let astype = dtype_of("astype")?.or(dtype);
        let swap = match (version, dtype, astype) {
            (ZarrVersion::V2, Some((d, d_little)), Some((a, a_little))) => {
                // zarrs' bytes codec uses the array dtype's order (native for one-byte dtypes).
                let bytes_little = if d.size() > 1 {
                    d_little
                } else {
                    cfg!(target_endian = "little")
                };
                a.size() > 1 && a_little != bytes_little
            }
            _ => false,
        };
        Ok(Self {
            configuration: configuration.clone(),
            offset,
            scale,
            dtype: dtype.map(|(e, _)| e),
            astype: astype.map(|(e, _)| e),
            swap,
        })
    }

    pub fn from_metadata_v2(metadata: &MetadataV2) -> Result<Self, PluginCreateError> {
        Self::new(metadata.configuration(), ZarrVersion::V2)
    }

    pub fn from_metadata_v3(metadata: &MetadataV3) -> Result<Self, PluginCreateError> {
        let configuration = metadata.configuration().cloned().unwrap_or_default();
        Self::new(&configuration, ZarrVersion::V3)
    }

    /// The decoded element type, checked against the array's data type.
    fn decoded(&self, data_type: &DataType) -> Result<Elem, CodecError> {
        let elem = Elem::of(data_type).filter(|e| self.dtype.is_none_or(|d| d == *e));
        elem.ok_or_else(|| CodecError::UnsupportedDataType(data_type.clone(), ID.to_string()))
    }

    fn encoded(&self, decoded: Elem) -> Elem {
        self.astype.unwrap_or(decoded)
    }
}

impl ExtensionName for FixedScaleOffsetCodec {
    fn name(&self, version: ZarrVersion) -> Option<Cow<'static, str>> {
        match version {
            ZarrVersion::V2 => Some(Cow::Borrowed(ID)),
            ZarrVersion::V3 => Some(Cow::Borrowed(V3_NAME)),
        }
    }
}

impl CodecTraits for FixedScaleOffsetCodec {
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
        // Element-wise: zarrs' default array-to-array partial decoder decodes any part.
        PartialDecoderCapability {
            partial_read: true,
            partial_decode: true,
        }
    }

    fn partial_encoder_capability(&self) -> PartialEncoderCapability {
        PartialEncoderCapability {
            partial_encode: false,
        }
    }
}

impl ArrayCodecTraits for FixedScaleOffsetCodec {
    fn recommended_concurrency(
        &self,
        _shape: &[NonZeroU64],
        _data_type: &DataType,
    ) -> Result<RecommendedConcurrency, CodecError> {
        Ok(RecommendedConcurrency::new_maximum(1))
    }
}

impl ArrayToArrayCodecTraits for FixedScaleOffsetCodec {
    fn into_dyn(self: Arc<Self>) -> Arc<dyn ArrayToArrayCodecTraits> {
        self
    }

    fn encoded_data_type(&self, decoded_data_type: &DataType) -> Result<DataType, CodecError> {
        Ok(self.encoded(self.decoded(decoded_data_type)?).data_type())
    }

    fn encode<'a>(
        &self,
        bytes: ArrayBytes<'a>,
        _shape: &[NonZeroU64],
        data_type: &DataType,
        _fill_value: &FillValue,
        _options: &CodecOptions,
    ) -> Result<ArrayBytes<'a>, CodecError> {
        let decoded = self.decoded(data_type)?;
        let encoded = self.encoded(decoded);
        let bytes = bytes.into_fixed()?;
        let mut out = convert(
            &bytes,
            decoded,
            encoded,
            decoded == Elem::F32,
            self.scale,
            self.offset,
            false,
        );
        if self.swap {
            swap_elements(&mut out, encoded.size());
        }
        Ok(ArrayBytes::from(out))
    }

    fn decode<'a>(
        &self,
        bytes: ArrayBytes<'a>,
        _shape: &[NonZeroU64],
        data_type: &DataType,
        _fill_value: &FillValue,
        _options: &CodecOptions,
    ) -> Result<ArrayBytes<'a>, CodecError> {
        let decoded = self.decoded(data_type)?;
        let encoded = self.encoded(decoded);
        let mut bytes = bytes.into_fixed()?;
        if !bytes.len().is_multiple_of(encoded.size()) {
            return Err(CodecError::Other(format!(
                "{ID}: {} bytes is not a whole number of {encoded:?} elements",
                bytes.len()
            )));
        }
        if self.swap {
            swap_elements(bytes.to_mut(), encoded.size());
        }
        let out = convert(
            &bytes,
            encoded,
            decoded,
            encoded == Elem::F32,
            self.scale,
            self.offset,
            true,
        );
        Ok(ArrayBytes::from(out))
    }
}

/// Reverses the bytes of each `size`-byte element.
fn swap_elements(bytes: &mut [u8], size: usize) {
    for element in bytes.chunks_exact_mut(size) {
        element.reverse();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(json: &str) -> FixedScaleOffsetCodec {
        let metadata: MetadataV2 = serde_json::from_str(json).unwrap();
        FixedScaleOffsetCodec::from_metadata_v2(&metadata).unwrap()
    }

    fn decode_f64(codec: &FixedScaleOffsetCodec, encoded: &[u8]) -> Vec<f64> {
        let shape = [NonZeroU64::new((encoded.len() / 2) as u64).unwrap()];
        let out = codec
            .decode(
                ArrayBytes::from(encoded.to_vec()),
                &shape,
                &data_type::float64(),
                &FillValue::from(0.0f64),
                &CodecOptions::default(),
            )
            .unwrap();
        out.into_fixed()
            .unwrap()
            .chunks_exact(8)
            .map(f64::read)
            .collect()
    }

    #[test]
    fn decodes_in_float64_like_numcodecs() {
        let c = codec(
            r#"{"id": "fixedscaleoffset", "offset": 273.15, "scale": 100, "dtype": "<f8", "astype": "<i2"}"#,
        );
        let encoded: Vec<u8> = [0i16, 705].iter().flat_map(|v| v.to_ne_bytes()).collect();
        assert_eq!(
            decode_f64(&c, &encoded),
            vec![273.15, 705.0 / 100.0 + 273.15]
        );
    }

    #[test]
    fn float32_astype_computes_in_float32() {
        let c = codec(
            r#"{"id": "fixedscaleoffset", "offset": 0.1, "scale": 3, "dtype": "<f8", "astype": "<f4"}"#,
        );
        let encoded = 1.0f32.to_ne_bytes().to_vec();
        let shape = [NonZeroU64::new(1).unwrap()];
        let out = c
            .decode(
                ArrayBytes::from(encoded),
                &shape,
                &data_type::float64(),
                &FillValue::from(0.0f64),
                &CodecOptions::default(),
            )
            .unwrap();
        let value = f64::read(&out.into_fixed().unwrap());
        assert_eq!(
            value.to_bits(),
            f64::from(1.0f32 / 3.0f32 + 0.1f32).to_bits()
        );
    }

    #[test]
    fn encodes_with_round_half_even_and_swaps_other_byte_order() {
        let c = codec(
            r#"{"id": "fixedscaleoffset", "offset": 0, "scale": 1, "dtype": "<f8", "astype": ">i2"}"#,
        );
        assert!(c.swap);
        let values: Vec<u8> = [0.5f64, 1.5, -2.5]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let shape = [NonZeroU64::new(3).unwrap()];
        let encoded = c
            .encode(
                ArrayBytes::from(values),
                &shape,
                &data_type::float64(),
                &FillValue::from(0.0f64),
                &CodecOptions::default(),
            )
            .unwrap()
            .into_fixed()
            .unwrap()
            .into_owned();
        let expected: Vec<u8> = [0i16, 2, -2].iter().flat_map(|v| v.to_be_bytes()).collect();
        assert_eq!(encoded, expected);
        assert_eq!(decode_f64(&c, &encoded), vec![0.0, 2.0, -2.0]);
    }

    #[test]
    fn accepts_one_byte_astype_and_refuses_other_types() {
        let c = codec(
            r#"{"id": "fixedscaleoffset", "offset": 1000, "scale": 10, "dtype": "f8", "astype": "u1"}"#,
        );
        assert_eq!(c.astype, Some(Elem::U8));
        let metadata: MetadataV2 = serde_json::from_str(
            r#"{"id": "fixedscaleoffset", "offset": 0, "scale": 1, "dtype": "<c8"}"#,
        )
        .unwrap();
        assert!(FixedScaleOffsetCodec::from_metadata_v2(&metadata).is_err());
    }
}
