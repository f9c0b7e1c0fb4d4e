//! An opened array: its store, its path, the zarrs array and what Python needs to know
//! about it (numpy dtype, chunk shape, a readable codec description).

use std::sync::{Arc, OnceLock};

use rayon::prelude::*;
use serde_json::Value;
use zarrs::array::{Array, ArrayCreateError};
use zarrs::metadata::ArrayMetadata;
use zarrs::storage::ReadableStorageTraits;

use crate::errors::{Error, Result};
use crate::metadata::Attributes;
use crate::shard_index::ShardLayout;
use crate::store::Store;

pub type ZarrsArray = Array<dyn ReadableStorageTraits>;

pub struct ArrayHandle {
    store: Arc<Store>,
    path: String,
    array: ZarrsArray,
    /// What the array shares with every array whose metadata differs from its own only in
    /// the attributes.
    common: Arc<Common>,
    /// The metadata as stored, with the array's attributes.
    metadata: Arc<ArrayMetadata>,
    /// `metadata` as JSON (for descriptions and fingerprints), made when first asked for: a
    /// wide store opens thousands of arrays and describes few of them.
    metadata_json: OnceLock<Value>,
    /// The array's path and `/`, when zarrs opened it at the root of a view of the store
    /// from the array (its chunk keys are then relative to the array).
    key_prefix: Option<String>,
}

/// What follows from an array's metadata, attributes aside: worked out once for the
/// thousands of arrays of a wide store that share a few layouts.
// Four independent facts about the codecs, not a state machine.
#[allow(clippy::struct_excessive_bools)]
struct Common {
    dtype: NumpyDtype,
    chunk_shape: Vec<u64>,
    /// Chunks are C-order native elements compressed by blosc alone, so any part of
    /// a chunk can be decoded block by block.
    plain_blosc: bool,
    /// Decoding a chunk may need blosc's scratch (one block, at most the chunk's size).
    blosc_compressed: bool,
    /// The smallest blosc block the chunks can have (see [`smallest_blosc_block`]).
    blosc_block: usize,
    /// The compressor format blosc chunks must name in their header (from the codec's cname).
    blosc_compressor: Option<u8>,
    /// A checksum codec guards the chunks: a partial decode must not skip its check.
    checksummed: bool,
    /// Sharded, with no checksum on the inner chunks: a part of a shard can be read by
    /// reading its index and only the inner chunks under the part.
    partial_shards: bool,
    /// How the shards keep their index, when it is one fastzarr checks before zarrs reads it.
    shard_layout: Option<ShardLayout>,
    /// The fill value of a v2 `vlen-bytes` array, which zarrs, reading `|O` as strings,
    /// would take as text rather than as base64.
    bytes_fill: Option<Vec<u8>>,
    /// The metadata as JSON without the attributes: equal for arrays of one layout.
    key: String,
}

impl std::fmt::Debug for ArrayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrayHandle")
            .field("store", &self.store)
            .field("path", &self.path)
            .field("dtype", &self.common.dtype)
            .finish_non_exhaustive()
    }
}

/// numpy's largest element size (an `int` in its C structures).
const MAX_ITEMSIZE: usize = i32::MAX as usize;

/// A numpy dtype string in native byte order (fastzarr always returns native arrays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumpyDtype {
    pub descr: String,
    pub itemsize: usize,
}

/// The elements of variable length: strings read into numpy's `StringDType`, bytes into an
/// object array of `bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variable {
    Utf8,
    Bytes,
}

/// numpy's `StringDType` (`"T"`), 16 bytes an element.
const STRING_DTYPE: &str = "T";
const OBJECT_DTYPE: &str = "|O";

impl NumpyDtype {
    /// Strings or bytes of variable length, whose chunks go through `strings.rs`.
    pub fn variable(&self) -> Option<Variable> {
        match self.descr.as_str() {
            STRING_DTYPE => Some(Variable::Utf8),
            OBJECT_DTYPE => Some(Variable::Bytes),
            _ => None,
        }
    }

    fn of_variable(kind: Variable) -> Self {
        match kind {
            Variable::Utf8 => Self {
                descr: STRING_DTYPE.to_string(),
                itemsize: 16,
            },
            Variable::Bytes => Self {
                descr: OBJECT_DTYPE.to_string(),
                itemsize: std::mem::size_of::<usize>(),
            },
        }
    }
}

impl ArrayHandle {
    /// Builds the array at `path` of `store` from metadata already read.
    pub fn new(store: Arc<Store>, path: &str, metadata: Arc<ArrayMetadata>) -> Result<Self> {
        Self::build(store, path, metadata, false)
    }

    /// The arrays `arrays` of one store, built on the pool. An array whose metadata differs
    /// from that of an array before it only in the attributes shares that array's layout
    /// and codecs: zarrs' array is then a copy of the other's over a view of the store from
    /// the array, not built again (building is most of opening a wide store's arrays).
    pub fn new_many(
        store: &Arc<Store>,
        arrays: Vec<(String, Arc<ArrayMetadata>)>,
    ) -> Result<Vec<Result<Self>>> {
        /// Layouts looked for among the last ones met: a store of thousands of distinct
        /// layouts must not compare each array with all of them.
        const RECENT_LAYOUTS: usize = 16;
        // Each array is built alone or (`like`) made from the first array of its layout.
        let mut like: Vec<Option<usize>> = Vec::with_capacity(arrays.len());
        let mut layouts: Vec<usize> = Vec::new();
        for (i, (path, metadata)) in arrays.iter().enumerate() {
            if !is_plain_path(path) {
                like.push(None); // not openable at a view of the store: built alone
                continue;
            }
            let found = layouts
                .iter()
                .rev()
                .take(RECENT_LAYOUTS)
                .copied()
                .find(|&f| same_but_attributes(&arrays[f].1, metadata));
            if found.is_none() {
                layouts.push(i);
            }
            like.push(found);
        }
        crate::runtime::install(|| {
            let mut slots: Vec<Option<(String, Arc<ArrayMetadata>)>> =
                arrays.into_iter().map(Some).collect();
            let alone: Vec<(usize, (String, Arc<ArrayMetadata>))> = (0..slots.len())
                .filter(|&i| like[i].is_none())
                .filter_map(|i| Some((i, slots[i].take()?)))
                .collect();
            let mut built: Vec<Option<Result<Self>>> =
                std::iter::repeat_with(|| None).take(slots.len()).collect();
            let made: Vec<(usize, Result<Self>)> = alone
                .into_par_iter()
                .map(|(i, (path, metadata))| (i, Self::build(store.clone(), &path, metadata, true)))
                .collect();
            for (i, result) in made {
                built[i] = Some(result);
            }
            let others: Vec<(usize, usize, (String, Arc<ArrayMetadata>))> = slots
                .iter_mut()
                .enumerate()
                .filter_map(|(i, slot)| Some((i, like[i]?, slot.take()?)))
                .collect();
            let firsts = &built;
            let made: Vec<(usize, Result<Self>)> = others
                .into_par_iter()
                .map(|(i, first, (path, metadata))| {
                    let result = match &firsts[first] {
                        Some(Ok(first)) if first.key_prefix.is_some() => {
                            Ok(first.sibling(store.clone(), &path, metadata))
                        }
                        // A first array that failed is reported under its own name: this one
                        // is built alone, to fail (or not) under its own.
                        _ => Self::build(store.clone(), &path, metadata, true),
                    };
                    (i, result)
                })
                .collect();
            for (i, result) in made {
                built[i] = Some(result);
            }
            Ok(built
                .into_iter()
                .map(|b| b.unwrap_or_else(|| Err(Error::Panic("array not built".to_string()))))
                .collect())
        })
    }

    /// An array of `store` at `path` whose metadata is this array's but for the attributes.
    fn sibling(&self, store: Arc<Store>, path: &str, metadata: Arc<ArrayMetadata>) -> Self {
        let view = crate::prefixed::PrefixedStorage::new(store.storage().clone(), path);
        let array = self
            .array
            .with_storage(Arc::new(view) as Arc<dyn ReadableStorageTraits>);
        Self {
            store,
            path: path.to_string(),
            array,
            common: self.common.clone(),
            metadata,
            metadata_json: OnceLock::new(),
            key_prefix: Some(format!("{path}/")),
        }
    }

    /// Builds the array; `at_view`: open it at the root of a view of the store from the
    /// array (see `new_many`), where its path allows.
    // One sequence of checks on untrusted metadata, each error naming the same file: split,
    // it would only pass that context around.
    #[allow(clippy::too_many_lines)]
    fn build(
        store: Arc<Store>,
        path: &str,
        metadata: Arc<ArrayMetadata>,
        at_view: bool,
    ) -> Result<Self> {
        let metadata_json = serde_json::to_value(&*metadata).unwrap_or(Value::Null);
        let metadata_file = metadata_file(path, &metadata);
        let unsupported_dtype = |dtype: String| {
            let (url, path) = store.locate(path);
            Error::UnsupportedDataType { url, path, dtype }
        };
        let dtype = numpy_dtype(&metadata_json).map_err(unsupported_dtype)?;
        // Checked before the fill value is built: zarrs holds one element of it, and a v2
        // `fill_value: null` is spelled out as a base64 string of zeros first.
        if dtype.itemsize > MAX_ITEMSIZE {
            return Err(Error::Metadata {
                url: store.url().to_string(),
                file: metadata_file,
                reason: format!(
                    "elements of {} bytes are larger than numpy's largest ({MAX_ITEMSIZE})",
                    dtype.itemsize
                ),
            });
        }
        if !crate::limits::can_allocate(dtype.itemsize as u64 * 4) {
            return Err(Error::Allocation {
                what: format!("the fill value of array '{path}' in store {}", store.url()),
                bytes: dtype.itemsize as u128 * 4,
            });
        }
        let mut bytes_fill = None;
        // The stored document keeps its `fill_value: null`; zarrs gets the zero spelled out.
        let zarrs_metadata = match &*metadata {
            ArrayMetadata::V2(_) => {
                let mut patched = metadata_json.clone();
                if dtype.variable() == Some(Variable::Bytes) {
                    bytes_fill = Some(base64_fill(&patched).map_err(|reason| Error::Metadata {
                        url: store.url().to_string(),
                        file: crate::store::join(path, ".zarray"),
                        reason,
                    })?);
                    patched["fill_value"] = Value::String(String::new());
                }
                stand_in_data_type(&mut patched).map_err(|reason| Error::Metadata {
                    url: store.url().to_string(),
                    file: crate::store::join(path, ".zarray"),
                    reason,
                })?;
                crate::metadata::default_null_fill_value(&mut patched);
                // numcodecs levels zarrs' codecs refuse (zlib's -1) still decode.
                crate::codecs::spellings::normalise_v2_metadata(&mut patched);
                integral_fill_value(&mut patched);
                if patched == metadata_json {
                    // Most arrays need no patch: parsing the document again would be a
                    // quarter of building the array.
                    (*metadata).clone()
                } else {
                    ArrayMetadata::V2(serde_json::from_value(patched).map_err(|e| {
                        Error::Metadata {
                            url: store.url().to_string(),
                            file: crate::store::join(path, ".zarray"),
                            reason: e.to_string(),
                        }
                    })?)
                }
            }
            ArrayMetadata::V3(_)
                if has_float_fill_for_integers(&metadata_json)
                    || needs_stand_in(&metadata_json) =>
            {
                let mut patched = metadata_json.clone();
                stand_in_data_type(&mut patched).map_err(|reason| Error::Metadata {
                    url: store.url().to_string(),
                    file: crate::store::join(path, "zarr.json"),
                    reason,
                })?;
                integral_fill_value(&mut patched);
                ArrayMetadata::V3(
                    serde_json::from_value(patched).map_err(|e| Error::Metadata {
                        url: store.url().to_string(),
                        file: crate::store::join(path, "zarr.json"),
                        reason: e.to_string(),
                    })?,
                )
            }
            ArrayMetadata::V3(_) => (*metadata).clone(),
        };
        let mut node_path = format!("/{path}");
        let mut storage: Arc<dyn ReadableStorageTraits> = store.storage().clone();
        let mut key_prefix = None;
        if (at_view || !zarrs::node::NodePath::validate(&node_path)) && is_plain_path(path) {
            // A name zarrs refuses (`__xarray_dataarray_variable__`): zarrs opens the array
            // at the root of a view of the store from the array (prefixed.rs).
            let view = crate::prefixed::PrefixedStorage::new(storage, path);
            key_prefix = Some(format!("{path}/"));
            storage = Arc::new(view);
            node_path = "/".to_string();
        }
        // Inside the pool: zarrs asks rayon for a thread count while building an array, which
        // from any other thread would start rayon's global pool (fork-unsafe, rayon#708).
        let built = crate::runtime::install(|| {
            Ok(Array::new_with_metadata(
                storage,
                &node_path,
                zarrs_metadata,
            ))
        })?;
        let array = built.map_err(|e| match e {
            ArrayCreateError::DataTypeCreateError(err) => unsupported_dtype(err.to_string()),
            ArrayCreateError::CodecsCreateError(err) => {
                let (url, path) = store.locate(path);
                Error::UnsupportedCodec {
                    url,
                    path,
                    reason: err.to_string(),
                }
            }
            ArrayCreateError::UnsupportedZarrV2Array(reason) => {
                let (url, path) = store.locate(path);
                Error::UnsupportedCodec { url, path, reason }
            }
            other => Error::Metadata {
                url: store.url().to_string(),
                file: metadata_file.clone(),
                reason: other.to_string(),
            },
        })?;
        let stored_size = array.data_type().fixed_size();
        if dtype.variable().is_some() && stored_size.is_some()
            || dtype.variable().is_none() && stored_size != Some(dtype.itemsize)
        {
            return Err(unsupported_dtype(format!(
                "{} (stored element size {:?} differs from numpy's {})",
                dtype.descr,
                array.data_type().fixed_size(),
                dtype.itemsize
            )));
        }
        let chunk_shape = regular_chunk_shape(&metadata_json).ok_or_else(|| Error::Metadata {
            url: store.url().to_string(),
            file: metadata_file.clone(),
            reason: "only regular chunk grids are supported".to_string(),
        })?;
        crate::limits::check_sizes(array.shape(), &chunk_shape, dtype.itemsize).map_err(
            |reason| Error::Metadata {
                url: store.url().to_string(),
                file: metadata_file.clone(),
                reason,
            },
        )?;
        // Inner chunks of strings have no size to bound their index entries by.
        let bounding_size = match dtype.variable() {
            Some(_) => usize::MAX,
            None => dtype.itemsize,
        };
        let shard_layout = ShardLayout::from_metadata(&metadata_json, &chunk_shape, bounding_size)
            .map_err(|reason| Error::Metadata {
                url: store.url().to_string(),
                file: metadata_file.clone(),
                reason,
            })?;
        let common = Common {
            plain_blosc: dtype.variable().is_none() && is_plain_blosc(&metadata_json, &dtype),
            blosc_compressed: has_blosc(&metadata_json),
            blosc_block: smallest_blosc_block(&metadata_json),
            blosc_compressor: blosc_config(&metadata_json)
                .and_then(|c| c.get("cname"))
                .and_then(Value::as_str)
                .and_then(crate::blosc::ranges::compressor_format),
            checksummed: has_checksum(&metadata_json),
            partial_shards: has_partial_shards(&metadata_json),
            shard_layout,
            bytes_fill,
            dtype,
            chunk_shape,
            key: layout_key(&metadata_json),
        };
        Ok(Self {
            store,
            path: path.to_string(),
            array,
            common: Arc::new(common),
            metadata,
            metadata_json: OnceLock::from(metadata_json),
            key_prefix,
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The error for the chunk at store key `key` that could not be decoded, naming the
    /// array and key as its store knows them (see [`Store::locate`]).
    pub fn corrupt_chunk(&self, key: &str, reason: String) -> Error {
        let (url, path) = self.store.locate(&self.path);
        Error::CorruptChunk {
            url,
            path,
            key: self.store.locate(key).1,
            reason,
        }
    }

    pub fn zarrs(&self) -> &ZarrsArray {
        &self.array
    }

    /// The store key of a chunk (`zarrs().chunk_key` may be relative to the array).
    pub fn chunk_key(&self, chunk: &[u64]) -> String {
        let key = self.array.chunk_key(chunk);
        match &self.key_prefix {
            Some(prefix) => format!("{prefix}{}", key.as_str()),
            None => key.as_str().to_string(),
        }
    }

    pub fn shape(&self) -> &[u64] {
        self.array.shape()
    }

    pub fn dtype(&self) -> &NumpyDtype {
        &self.common.dtype
    }

    /// The shape of the stored chunks (of the shards, for sharded arrays).
    pub fn chunk_shape(&self) -> &[u64] {
        &self.common.chunk_shape
    }

    /// The shape of the inner chunks of a sharded array, like zarr-python's `chunks`.
    pub fn inner_chunk_shape(&self) -> Option<Vec<u64>> {
        let codecs = self.metadata_json().get("codecs")?.as_array()?;
        let sharding = codecs
            .iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some("sharding_indexed"))?;
        json_u64s(sharding.get("configuration")?.get("chunk_shape")?)
    }

    pub fn zarr_format(&self) -> u8 {
        match &*self.metadata {
            ArrayMetadata::V2(_) => 2,
            ArrayMetadata::V3(_) => 3,
        }
    }

    pub fn attributes(&self) -> &Attributes {
        match &*self.metadata {
            ArrayMetadata::V2(m) => &m.attributes,
            ArrayMetadata::V3(m) => &m.attributes,
        }
    }

    /// Dimension names: v3 `dimension_names`, else v2's `_ARRAY_DIMENSIONS` attribute.
    pub fn dimension_names(&self) -> Option<Vec<Option<String>>> {
        let from_json = |v: &Value| {
            v.as_array().map(|names| {
                names
                    .iter()
                    .map(|n| n.as_str().map(ToString::to_string))
                    .collect()
            })
        };
        match &*self.metadata {
            ArrayMetadata::V3(m) => m.dimension_names.as_ref().map(|names| {
                names
                    .iter()
                    .map(|n| n.as_ref().map(ToString::to_string))
                    .collect()
            }),
            ArrayMetadata::V2(m) => m.attributes.get("_ARRAY_DIMENSIONS").and_then(from_json),
        }
    }

    /// The fill value as native-endian bytes of the numpy dtype.
    pub fn fill_value_bytes(&self) -> &[u8] {
        match &self.common.bytes_fill {
            Some(fill) => fill,
            None => self.array.fill_value().as_ne_bytes(),
        }
    }

    pub fn nbytes(&self) -> u128 {
        self.shape()
            .iter()
            .map(|&d| u128::from(d))
            .product::<u128>()
            * self.common.dtype.itemsize as u128
    }

    pub fn plain_blosc(&self) -> bool {
        self.common.plain_blosc
    }

    /// The compressor format blosc chunks of this array must name in their header.
    pub fn blosc_compressor(&self) -> Option<u8> {
        self.common.blosc_compressor
    }

    /// The smallest blosc block (decoded bytes) a chunk of this array can have; a chunk
    /// smaller than that is one block.
    pub fn blosc_block(&self) -> usize {
        self.common.blosc_block
    }

    /// Whether decoding a chunk may need blosc's scratch (one block, at most the chunk's size).
    pub fn blosc_compressed(&self) -> bool {
        self.common.blosc_compressed
    }

    pub fn checksummed(&self) -> bool {
        self.common.checksummed
    }

    pub fn partial_shards(&self) -> bool {
        self.common.partial_shards
    }

    pub fn shard_layout(&self) -> Option<&ShardLayout> {
        self.common.shard_layout.as_ref()
    }

    pub fn metadata_json(&self) -> &Value {
        self.metadata_json
            .get_or_init(|| serde_json::to_value(&*self.metadata).unwrap_or(Value::Null))
    }

    /// Whether this array was made from `other` (or both from a third), not built again.
    #[cfg(test)]
    pub fn shares_layout_with(&self, other: &ArrayHandle) -> bool {
        Arc::ptr_eq(&self.common, &other.common)
    }

    /// The metadata as JSON without the attributes: equal for arrays that differ only in them.
    pub fn layout_key(&self) -> &str {
        &self.common.key
    }

    /// A readable description of the codec pipeline, e.g. `blosc(cname=zstd, clevel=3, shuffle=1)`.
    pub fn codecs_description(&self) -> String {
        let describe = |codec: &Value| -> String {
            let name = codec_name(codec).unwrap_or("?");
            let settings: Vec<String> = match codec.get("configuration").unwrap_or(codec) {
                Value::Object(map) => map
                    .iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "id" | "name"))
                    .map(|(k, v)| format!("{k}={}", v.to_string().trim_matches('"')))
                    .collect(),
                _ => Vec::new(),
            };
            if settings.is_empty() {
                name.to_string()
            } else {
                format!("{name}({})", settings.join(", "))
            }
        };
        let list: Vec<String> = chunk_codecs(self.metadata_json())
            .into_iter()
            .map(describe)
            .collect();
        if list.is_empty() {
            "none".to_string()
        } else {
            list.join(" -> ")
        }
    }
}

/// `a.f == b.f` for each field `f` named.
macro_rules! same_fields {
    ($a:expr, $b:expr; $($field:ident),+) => { true $(&& $a.$field == $b.$field)+ };
}

/// Whether two arrays' metadata differ at most in their attributes.
fn same_but_attributes(a: &ArrayMetadata, b: &ArrayMetadata) -> bool {
    match (a, b) {
        (ArrayMetadata::V2(a), ArrayMetadata::V2(b)) => same_fields!(a, b;
            shape, chunks, dtype, compressor, fill_value, order, filters, dimension_separator),
        (ArrayMetadata::V3(a), ArrayMetadata::V3(b)) => same_fields!(a, b;
            shape, data_type, chunk_grid, chunk_key_encoding, fill_value, codecs,
            storage_transformers, dimension_names, additional_fields),
        _ => false,
    }
}

/// The metadata document without its attributes, as compact JSON (keys in stored order).
fn layout_key(metadata: &Value) -> String {
    match metadata {
        Value::Object(map) => {
            let mut parts = String::from("{");
            for (key, value) in map.iter().filter(|(k, _)| k.as_str() != "attributes") {
                if parts.len() > 1 {
                    parts.push(',');
                }
                parts.push_str(&Value::String(key.clone()).to_string());
                parts.push(':');
                parts.push_str(&value.to_string());
            }
            parts.push('}');
            parts
        }
        other => other.to_string(),
    }
}

/// A codec's name: v3 writes a codec without configuration as a plain string.
fn codec_name(codec: &Value) -> Option<&str> {
    match codec {
        Value::String(name) => Some(name),
        _ => codec
            .get("id")
            .or_else(|| codec.get("name"))
            .and_then(Value::as_str),
    }
}

/// The chunk codecs of an array's metadata (v2 filters and compressor, or v3 codecs).
fn chunk_codecs(metadata: &Value) -> Vec<&Value> {
    if let Some(codecs) = metadata.get("codecs").and_then(Value::as_array) {
        return codecs.iter().collect();
    }
    let mut codecs: Vec<&Value> = metadata
        .get("filters")
        .and_then(Value::as_array)
        .map(|f| f.iter().collect())
        .unwrap_or_default();
    codecs.extend(metadata.get("compressor").filter(|c| !c.is_null()));
    codecs
}

/// Whether blosc compresses the chunks (or the inner chunks of shards): decoding one then
/// needs an unshuffle block of scratch besides the chunk.
fn has_blosc(metadata: &Value) -> bool {
    chunk_codecs(metadata).into_iter().any(|codec| {
        codec_name(codec).is_some_and(|name| name == "blosc")
            || codec.get("configuration").is_some_and(has_blosc)
    })
}

/// Whether a checksum codec guards the chunks (or the inner chunks of shards).
fn has_checksum(metadata: &Value) -> bool {
    chunk_codecs(metadata).into_iter().any(|codec| {
        let checksum = codec_name(codec).is_some_and(|name| {
            matches!(
                name.trim_start_matches("numcodecs."),
                "crc32c" | "crc32" | "adler32" | "fletcher32"
            )
        });
        checksum || codec.get("configuration").is_some_and(has_checksum)
    })
}

/// Whether the array is sharded (alone in its codec list) with unchecksummed inner chunks,
/// so that zarrs' sharding partial decoder may read parts of a shard: it checks the
/// index's checksum, and decodes each inner chunk it reads whole.
fn has_partial_shards(metadata: &Value) -> bool {
    let Some([sharding]) = metadata
        .get("codecs")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    else {
        return false;
    };
    if codec_name(sharding) != Some("sharding_indexed") {
        return false;
    }
    let inner = sharding
        .get("configuration")
        .and_then(|c| c.get("codecs"))
        .and_then(Value::as_array);
    inner.is_some_and(|codecs| {
        !codecs
            .iter()
            .any(|c| has_checksum(&serde_json::json!({ "codecs": [c] })))
    })
}

/// The blosc codec's configuration (v2 `compressor`, v3 `blosc` codec), if any.
fn blosc_config(metadata: &Value) -> Option<&Value> {
    metadata
        .get("compressor")
        .filter(|c| !c.is_null())
        .or_else(|| {
            metadata
                .get("codecs")
                .and_then(Value::as_array)
                .and_then(|codecs| codecs.iter().find(|c| codec_name(c) == Some("blosc")))
                .and_then(|c| c.get("configuration"))
        })
}

/// The smallest block C-Blosc 1.21 picks for the array's blosc settings: the codec's
/// `blocksize` when it forces one, else the smallest automatic block for the compressor and
/// level over every type size and shuffle (measured with numcodecs on a 1M-element buffer;
/// a chunk smaller than the block is one block). Used only to guess, before any byte is read,
/// whether a point read will want most of a chunk's blocks, or save enough to be worth a
/// second round trip.
fn smallest_blosc_block(metadata: &Value) -> usize {
    /// KiB by level 0-9.
    const ZSTD: [usize; 10] = [16, 32, 64, 128, 256, 256, 512, 512, 512, 1024];
    const ZLIB_LZ4HC: [usize; 10] = [16, 64, 64, 128, 256, 256, 256, 256, 256, 256];
    const LZ4_BLOSCLZ: [usize; 10] = [8, 64, 64, 64, 128, 128, 256, 256, 256, 256];
    /// Any other compressor: the least of the above.
    const OTHER: [usize; 10] = [8, 32, 64, 64, 128, 128, 256, 256, 256, 256];
    let config = blosc_config(metadata);
    let number = |key: &str| config.and_then(|c| c.get(key)).and_then(Value::as_u64);
    if let Some(forced) = number("blocksize").filter(|&b| b > 0) {
        return usize::try_from(forced).unwrap_or(usize::MAX);
    }
    let table = match config.and_then(|c| c.get("cname")).and_then(Value::as_str) {
        Some("zstd") => ZSTD,
        Some("zlib" | "lz4hc") => ZLIB_LZ4HC,
        Some("lz4" | "blosclz") => LZ4_BLOSCLZ,
        _ => OTHER,
    };
    let level = usize::try_from(number("clevel").unwrap_or(0).min(9)).unwrap_or(0);
    table[level] * 1024
}

/// Whether decoded chunks are the blosc output itself: C order, native byte order, no
/// other codec (v2: blosc compressor, no filters; v3: `bytes` then `blosc`).
fn is_plain_blosc(metadata: &Value, dtype: &NumpyDtype) -> bool {
    let name = |codec: &Value| codec_name(codec).map(ToString::to_string);
    if let Some(compressor) = metadata.get("compressor") {
        let no_filters = metadata
            .get("filters")
            .is_none_or(|f| f.is_null() || f.as_array().is_some_and(Vec::is_empty));
        let native = metadata
            .get("dtype")
            .and_then(Value::as_str)
            .is_some_and(|d| d.starts_with(['|', native_order()]));
        return no_filters
            && native
            && metadata.get("order").and_then(Value::as_str) == Some("C")
            && name(compressor).as_deref() == Some("blosc");
    }
    let Some(codecs) = metadata.get("codecs").and_then(Value::as_array) else {
        return false;
    };
    let little = cfg!(target_endian = "little");
    match codecs.as_slice() {
        [bytes, blosc] => {
            let endian = bytes
                .get("configuration")
                .and_then(|c| c.get("endian"))
                .and_then(Value::as_str);
            let native = dtype.itemsize == 1
                || endian.is_none()
                || endian == Some(if little { "little" } else { "big" });
            name(bytes).as_deref() == Some("bytes")
                && native
                && name(blosc).as_deref() == Some("blosc")
        }
        _ => false,
    }
}

/// Whether an integer array's fill value is written as a float (`3.0`), which zarr-python
/// reads as the integer and zarrs refuses.
fn has_float_fill_for_integers(metadata: &Value) -> bool {
    let integer_type = match metadata.get("dtype").or_else(|| metadata.get("data_type")) {
        Some(Value::String(name)) => {
            name.starts_with("int")
                || name.starts_with("uint")
                || matches!(name.get(1..2), Some("i" | "u")) && name.len() <= 3
        }
        _ => false,
    };
    integer_type && metadata.get("fill_value").is_some_and(Value::is_f64)
}

/// Whether the array's data type is one zarrs does not know but reads as a stand-in.
fn needs_stand_in(metadata: &Value) -> bool {
    let v3_name = metadata
        .get("data_type")
        .and_then(|t| t.get("name").or(Some(t)))
        .and_then(Value::as_str);
    let v2_kind = metadata
        .get("dtype")
        .and_then(Value::as_str)
        .and_then(|d| d.get(1..2));
    v3_name == Some("null_terminated_bytes") || matches!(v2_kind, Some("M" | "m" | "S"))
}

/// Data types zarrs lacks, given to it as the fixed-size type holding the same bytes (the
/// numpy dtype of the output stays the real one): v2 datetime64/timedelta64 as 8-byte
/// integers of the same byte order (`"NaT"` as their minimum), fixed bytes (`|S5`, v3
/// `null_terminated_bytes`) as raw bytes, their base64 fill value padded with zeros as numpy
/// pads `b""` to the item size.
fn stand_in_data_type(metadata: &mut Value) -> std::result::Result<(), String> {
    if !needs_stand_in(metadata) {
        return Ok(());
    }
    let (size, v3) = if let Some(dtype) = metadata.get("dtype").and_then(Value::as_str) {
        let (order, rest) = dtype.split_at(1);
        if rest.starts_with(['M', 'm']) {
            metadata["dtype"] = Value::from(format!("{order}i8"));
            if metadata.get("fill_value").and_then(Value::as_str) == Some("NaT") {
                metadata["fill_value"] = Value::from(i64::MIN);
            }
            return Ok(());
        }
        let size: usize = rest[1..]
            .parse()
            .map_err(|_| format!("bad dtype {dtype}"))?;
        metadata["dtype"] = Value::from(format!("|V{size}"));
        (size, false)
    } else {
        let size = metadata
            .pointer("/data_type/configuration/length_bytes")
            .and_then(Value::as_u64)
            .ok_or("null_terminated_bytes without length_bytes")? as usize;
        metadata["data_type"] = Value::from(format!("r{}", size * 8));
        (size, true)
    };
    let fill = match metadata.get("fill_value") {
        Some(Value::String(text)) => {
            use base64::Engine;
            let mut bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| format!("fill_value {text:?} is not base64: {e}"))?;
            if bytes.len() > size {
                return Err(format!("fill_value {text:?} holds more than {size} bytes"));
            }
            bytes.resize(size, 0);
            Value::from(bytes)
        }
        Some(Value::Null) | None if !v3 => return Ok(()), // v2's null: zeros, as for |V
        Some(Value::Array(bytes)) if bytes.len() == size => return Ok(()),
        other => return Err(format!("fill_value {other:?} is not base64 bytes")),
    };
    metadata["fill_value"] = fill;
    Ok(())
}

/// An integral float fill value of an integer array spelled as the integer (others are left
/// for zarrs to refuse).
fn integral_fill_value(metadata: &mut Value) {
    if !has_float_fill_for_integers(metadata) {
        return;
    }
    let Some(value) = metadata.get("fill_value").and_then(Value::as_f64) else {
        return;
    };
    // Exactly representable as i64 or u64: -2^63 <= value < 2^64.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let integer = if value.fract() != 0.0 || !value.is_finite() {
        return;
    } else if (-9_223_372_036_854_775_808.0..0.0).contains(&value) {
        Value::from(value as i64)
    } else if (0.0..18_446_744_073_709_551_616.0).contains(&value) {
        Value::from(value as u64)
    } else {
        return;
    };
    metadata["fill_value"] = integer;
}

/// A path of non-empty names none of which is `.`-only (zarrs may still refuse it as a node
/// path, for a name beginning with `__`).
fn is_plain_path(path: &str) -> bool {
    !path.is_empty()
        && path
            .split('/')
            .all(|name| !name.is_empty() && !name.chars().all(|c| c == '.'))
}

fn metadata_file(path: &str, metadata: &ArrayMetadata) -> String {
    let name = match metadata {
        ArrayMetadata::V2(_) => ".zarray",
        ArrayMetadata::V3(_) => "zarr.json",
    };
    crate::store::join(path, name)
}

fn json_u64s(value: &Value) -> Option<Vec<u64>> {
    value.as_array()?.iter().map(Value::as_u64).collect()
}

fn regular_chunk_shape(metadata: &Value) -> Option<Vec<u64>> {
    if let Some(chunks) = metadata.get("chunks") {
        return json_u64s(chunks);
    }
    let grid = metadata.get("chunk_grid")?;
    if grid.get("name").and_then(Value::as_str) != Some("regular") {
        return None;
    }
    json_u64s(grid.get("configuration")?.get("chunk_shape")?)
}

const fn native_order() -> char {
    if cfg!(target_endian = "little") {
        '<'
    } else {
        '>'
    }
}

/// The numpy dtype (native byte order) of an array from its stored metadata.
fn numpy_dtype(metadata: &Value) -> std::result::Result<NumpyDtype, String> {
    if let Some(dtype) = metadata.get("dtype") {
        let Some(text) = dtype.as_str() else {
            return Err(format!("structured dtype {dtype} is not supported"));
        };
        if text == OBJECT_DTYPE {
            return object_dtype_v2(metadata);
        }
        return numpy_dtype_v2(text).ok_or_else(|| text.to_string());
    }
    let data_type = metadata.get("data_type").ok_or("no data_type")?;
    let (name, configuration) = match data_type {
        Value::String(name) => (name.as_str(), None),
        Value::Object(map) => (
            map.get("name").and_then(Value::as_str).unwrap_or_default(),
            map.get("configuration"),
        ),
        _ => return Err(data_type.to_string()),
    };
    let order = native_order();
    let simple = |code: &str, size: usize| NumpyDtype {
        descr: if size == 1 {
            format!("|{code}")
        } else {
            format!("{order}{code}")
        },
        itemsize: size,
    };
    let dtype = match name {
        "bool" => simple("b1", 1),
        "int8" => simple("i1", 1),
        "int16" => simple("i2", 2),
        "int32" => simple("i4", 4),
        "int64" => simple("i8", 8),
        "uint8" => simple("u1", 1),
        "uint16" => simple("u2", 2),
        "uint32" => simple("u4", 4),
        "uint64" => simple("u8", 8),
        "float16" => simple("f2", 2),
        "float32" => simple("f4", 4),
        "float64" => simple("f8", 8),
        "complex64" => simple("c8", 8),
        "complex128" => simple("c16", 16),
        "string" => NumpyDtype::of_variable(Variable::Utf8),
        "variable_length_bytes" | "bytes" => NumpyDtype::of_variable(Variable::Bytes),
        "fixed_length_utf32" => {
            let bytes = configuration
                .and_then(|c| c.get("length_bytes"))
                .and_then(Value::as_u64)
                .ok_or("fixed_length_utf32 without length_bytes")? as usize;
            NumpyDtype {
                descr: format!("{order}U{}", bytes / 4),
                itemsize: bytes,
            }
        }
        "numpy.datetime64" | "numpy.timedelta64" => {
            let unit = configuration
                .and_then(|c| c.get("unit"))
                .and_then(Value::as_str)
                .filter(|unit| TIME_UNITS.contains(unit))
                .ok_or_else(|| format!("{name} without a known unit"))?;
            let scale = configuration
                .and_then(|c| c.get("scale_factor"))
                .map_or(Some(1), Value::as_u64)
                .filter(|&n| (1..=i64::MAX as u64).contains(&n))
                .ok_or_else(|| {
                    format!("{name} with a scale_factor that is not a positive integer")
                })?;
            let code = if name == "numpy.datetime64" { 'M' } else { 'm' };
            let scale = if scale == 1 {
                String::new()
            } else {
                scale.to_string()
            };
            NumpyDtype {
                descr: format!("{order}{code}8[{scale}{unit}]"),
                itemsize: 8,
            }
        }
        "null_terminated_bytes" => {
            let bytes = configuration
                .and_then(|c| c.get("length_bytes"))
                .and_then(Value::as_u64)
                .filter(|&n| n > 0)
                .ok_or("null_terminated_bytes without a positive length_bytes")?
                as usize;
            NumpyDtype {
                descr: format!("|S{bytes}"),
                itemsize: bytes,
            }
        }
        raw if raw.starts_with('r') => {
            let bits: usize = raw[1..].parse().map_err(|_| raw.to_string())?;
            NumpyDtype {
                descr: format!("|V{}", bits / 8),
                itemsize: bits / 8,
            }
        }
        other => return Err(other.to_string()),
    };
    Ok(dtype)
}

/// The bytes of a v2 `vlen-bytes` fill value: base64, as zarr-python writes it (null: empty).
fn base64_fill(metadata: &Value) -> std::result::Result<Vec<u8>, String> {
    use base64::Engine;
    match metadata.get("fill_value") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("fill_value {text:?} is not base64: {e}")),
        Some(other) => Err(format!(
            "fill_value {other} of a bytes array is not base64 text"
        )),
    }
}

/// A v2 object array: what its object codec (the first filter) makes of the elements.
fn object_dtype_v2(metadata: &Value) -> std::result::Result<NumpyDtype, String> {
    let object_codec = metadata
        .get("filters")
        .and_then(Value::as_array)
        .and_then(|filters| filters.first())
        .and_then(|f| f.get("id"))
        .and_then(Value::as_str);
    match object_codec {
        Some(crate::codecs::vlen::UTF8) => Ok(NumpyDtype::of_variable(Variable::Utf8)),
        Some(crate::codecs::vlen::BYTES) => Ok(NumpyDtype::of_variable(Variable::Bytes)),
        Some(other) => Err(format!("|O with object codec {other}")),
        None => Err("|O without an object codec".to_string()),
    }
}

/// numpy's datetime64 and timedelta64 units.
const TIME_UNITS: [&str; 13] = [
    "Y", "M", "W", "D", "h", "m", "s", "ms", "us", "μs", "ns", "ps", "fs",
];

/// `8[10s]` or `8[ns]` of `<M8[10s]`: a unit numpy knows, with an optional multiplier.
fn is_time_unit(spec: &str) -> bool {
    let Some(unit) = spec
        .strip_prefix("8[")
        .and_then(|rest| rest.strip_suffix(']'))
    else {
        return false;
    };
    let name = unit.trim_start_matches(|c: char| c.is_ascii_digit());
    let multiplier = &unit[..unit.len() - name.len()];
    (TIME_UNITS.contains(&name) || name == "as")
        && (multiplier.is_empty() || multiplier.parse::<u32>().is_ok_and(|n| n > 0))
}

fn numpy_dtype_v2(text: &str) -> Option<NumpyDtype> {
    let mut chars = text.chars();
    let order = chars.next()?;
    if !matches!(order, '<' | '>' | '|' | '=') {
        return None;
    }
    let rest = chars.as_str();
    let kind = rest.chars().next()?;
    if matches!(kind, 'M' | 'm') {
        // datetime64 / timedelta64: 8-byte integers counting the unit.
        return is_time_unit(&rest[1..]).then(|| NumpyDtype {
            descr: format!("{}{rest}", native_order()),
            itemsize: 8,
        });
    }
    let size: usize = rest[1..].parse().ok()?;
    let (itemsize, byte_order_matters) = match kind {
        'b' | 'i' | 'u' | 'f' | 'c' => (size, size > 1),
        'U' => (size * 4, true),
        'V' => (size, false),
        'S' if size > 0 => (size, false),
        _ => return None,
    };
    let prefix = if byte_order_matters {
        native_order()
    } else {
        '|'
    };
    Some(NumpyDtype {
        descr: format!("{prefix}{rest}"),
        itemsize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_blosc_block_follows_level_and_forced_sizes() {
        let v2 = |compressor: Value| serde_json::json!({ "compressor": compressor });
        let blosc = |clevel: u64, blocksize: u64| serde_json::json!({"id": "blosc", "cname": "zstd", "clevel": clevel, "shuffle": 1, "blocksize": blocksize});
        assert_eq!(smallest_blosc_block(&v2(blosc(3, 0))), 128 * 1024);
        assert_eq!(smallest_blosc_block(&v2(blosc(1, 0))), 32 * 1024);
        assert_eq!(smallest_blosc_block(&v2(blosc(9, 0))), 1024 * 1024);
        assert_eq!(smallest_blosc_block(&v2(blosc(5, 16384))), 16384);
        let lz4 = serde_json::json!({"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0});
        assert_eq!(smallest_blosc_block(&v2(lz4)), 128 * 1024);
        let other = serde_json::json!({"id": "blosc", "cname": "snappy", "clevel": 1, "shuffle": 1, "blocksize": 0});
        assert_eq!(smallest_blosc_block(&v2(other)), 32 * 1024);
        let v3 = serde_json::json!({"codecs": [
            {"name": "bytes", "configuration": {"endian": "little"}},
            {"name": "blosc", "configuration": {"cname": "lz4", "clevel": 0, "shuffle": "shuffle", "typesize": 4, "blocksize": 0}},
        ]});
        assert_eq!(smallest_blosc_block(&v3), 8 * 1024);
    }
    use serde_json::json;

    #[test]
    fn v2_dtypes_become_native() {
        assert_eq!(numpy_dtype_v2(">f4").unwrap().descr, "<f4");
        assert_eq!(numpy_dtype_v2("|b1").unwrap().descr, "|b1");
        assert_eq!(numpy_dtype_v2("<U5").unwrap().itemsize, 20);
        assert!(numpy_dtype_v2("|O").is_none());
        assert_eq!(numpy_dtype_v2(">M8[ns]").unwrap().descr, "<M8[ns]");
        assert_eq!(numpy_dtype_v2("<m8[10s]").unwrap().itemsize, 8);
        assert!(numpy_dtype_v2("<M8[lightyears]").is_none());
        assert!(numpy_dtype_v2("<M8[0s]").is_none());
        assert!(numpy_dtype_v2("<M4[s]").is_none());
        assert_eq!(numpy_dtype_v2("|S5").unwrap().descr, "|S5");
        assert!(numpy_dtype_v2("|S0").is_none());
    }

    #[test]
    fn stand_ins_hold_the_same_bytes() {
        let mut v2 = json!({"dtype": ">M8[ns]", "fill_value": "NaT"});
        stand_in_data_type(&mut v2).unwrap();
        assert_eq!(v2, json!({"dtype": ">i8", "fill_value": i64::MIN}));
        let mut v2 = json!({"dtype": "|S4", "fill_value": "YWI="});
        stand_in_data_type(&mut v2).unwrap();
        assert_eq!(v2, json!({"dtype": "|V4", "fill_value": [97, 98, 0, 0]}));
        let mut v3 = json!({"data_type": {"name": "null_terminated_bytes", "configuration": {"length_bytes": 2}}, "fill_value": ""});
        stand_in_data_type(&mut v3).unwrap();
        assert_eq!(v3, json!({"data_type": "r16", "fill_value": [0, 0]}));
        let mut too_long = json!({"dtype": "|S1", "fill_value": "YWI="});
        assert!(stand_in_data_type(&mut too_long).is_err());
        let mut plain = json!({"dtype": "<f8", "fill_value": 0.0});
        stand_in_data_type(&mut plain).unwrap();
        assert_eq!(plain, json!({"dtype": "<f8", "fill_value": 0.0}));
    }

    #[test]
    fn v3_dtypes() {
        let meta = json!({"data_type": "complex128"});
        assert_eq!(numpy_dtype(&meta).unwrap().itemsize, 16);
        let meta = json!({"data_type": {"name": "fixed_length_utf32", "configuration": {"length_bytes": 12}}});
        assert_eq!(numpy_dtype(&meta).unwrap().descr, "<U3");
        let string = numpy_dtype(&json!({"data_type": "string"})).unwrap();
        assert_eq!(string.variable(), Some(Variable::Utf8));
        let bytes = numpy_dtype(&json!({"data_type": "variable_length_bytes"})).unwrap();
        assert_eq!(bytes.variable(), Some(Variable::Bytes));
        let v2 = json!({"dtype": "|O", "filters": [{"id": "vlen-utf8"}]});
        assert_eq!(numpy_dtype(&v2).unwrap().variable(), Some(Variable::Utf8));
        assert!(
            numpy_dtype(&json!({"dtype": "|O", "filters": [{"id": "pickle"}]}))
                .unwrap_err()
                .contains("pickle")
        );
        let meta = json!({"data_type": {"name": "numpy.datetime64", "configuration": {"unit": "s", "scale_factor": 10}}});
        assert_eq!(numpy_dtype(&meta).unwrap().descr, "<M8[10s]");
        let meta = json!({"data_type": {"name": "numpy.timedelta64", "configuration": {"unit": "ns", "scale_factor": 1}}});
        assert_eq!(numpy_dtype(&meta).unwrap().descr, "<m8[ns]");
        let meta =
            json!({"data_type": {"name": "numpy.datetime64", "configuration": {"unit": "parsec"}}});
        assert!(numpy_dtype(&meta).is_err());
        let meta = json!({"data_type": {"name": "null_terminated_bytes", "configuration": {"length_bytes": 7}}});
        assert_eq!(numpy_dtype(&meta).unwrap().descr, "|S7");
    }
}
