//! numcodecs codecs as the Zarr ecosystem writes them.
//!
//! zarr-python 3 names numcodecs' codecs `numcodecs.<id>` in v3 metadata, with numcodecs'
//! own configuration, often empty (`{}`: numcodecs' defaults). Those become the v2 codec of
//! the same id. numcodecs also accepts compression levels outside the range zarrs' codecs
//! take (zlib's -1, zstd's 100) and `Shuffle(elementsize=0)` (a copy): a level only matters
//! when writing, so configurations are brought into range before the codec is built.

use serde_json::{Map, Value};
use zarrs_codec::Codec;
use zarrs_metadata::v2::MetadataV2;
use zarrs_metadata::v3::MetadataV3;
use zarrs_plugin::PluginCreateError;

use super::delta;

/// The v3 names zarr-python 3 writes for numcodecs' codecs, read here as their v2 codec
/// (`numcodecs.fixedscaleoffset` has its own plugin, `numcodecs.delta` a v3 form).
pub const V3_NAMES: [&str; 11] = [
    "numcodecs.bz2",
    "numcodecs.zlib",
    "numcodecs.gzip",
    "numcodecs.zstd",
    "numcodecs.blosc",
    "numcodecs.lz4",
    "numcodecs.delta",
    "numcodecs.shuffle",
    "numcodecs.crc32",
    "numcodecs.adler32",
    "numcodecs.fletcher32",
];

/// Fills in numcodecs' defaults for what zarrs' configurations require and clamps levels
/// into zarrs' ranges (decoding never depends on the level).
fn normalise(id: &str, configuration: &mut Map<String, Value>) {
    let mut clamp = |key: &str, default: i64, low: i64, high: i64| {
        let value = configuration
            .get(key)
            .and_then(Value::as_i64)
            .unwrap_or(default);
        configuration.insert(key.to_string(), value.clamp(low, high).into());
    };
    match id {
        "zlib" | "gzip" => clamp("level", 1, 0, 9),
        "bz2" => clamp("level", 1, 1, 9),
        "zstd" => clamp("level", 0, -131_072, 22),
        "blosc" => {
            clamp("clevel", 5, 0, 9);
            // Decoding reads the shuffle from each chunk's header: any valid mode does.
            clamp("shuffle", 1, -1, 2);
            clamp("blocksize", 0, 0, i64::MAX);
            configuration
                .entry("cname")
                .or_insert_with(|| Value::from("lz4"));
        }
        // numcodecs copies the buffer unchanged for element sizes 0 and 1.
        "shuffle" => clamp("elementsize", 4, 1, i64::MAX),
        _ => {}
    }
}

fn v2_metadata(
    id: &str,
    configuration: Map<String, Value>,
) -> Result<MetadataV2, PluginCreateError> {
    let mut object = configuration;
    object.insert("id".to_string(), id.into());
    serde_json::from_value(Value::Object(object))
        .map_err(|e| PluginCreateError::Other(format!("{id}: {e}")))
}

/// Brings the configurations of a v2 array's compressor and filters into range, in its
/// metadata document (zarrs builds v2 blosc without the codec registry).
pub fn normalise_v2_metadata(metadata: &mut Value) {
    let Value::Object(metadata) = metadata else {
        return;
    };
    let mut codecs: Vec<&mut Value> = Vec::new();
    for (key, value) in metadata.iter_mut() {
        match (key.as_str(), value) {
            ("filters", Value::Array(filters)) => codecs.extend(filters.iter_mut()),
            ("compressor", compressor) => codecs.push(compressor),
            _ => {}
        }
    }
    for codec in codecs {
        if let Value::Object(configuration) = codec {
            if let Some(id) = configuration.get("id").and_then(Value::as_str) {
                let id = id.to_string();
                normalise(&id, configuration);
            }
        }
    }
}

/// A `numcodecs.<id>` codec of zarr-python 3.
pub fn create_v3(metadata: &MetadataV3) -> Result<Codec, PluginCreateError> {
    let name = metadata.name();
    let id = name.strip_prefix("numcodecs.").unwrap_or(name);
    if id == delta::ID {
        // An array-to-array codec in v3, unlike the v2 filter.
        return Ok(Codec::ArrayToArray(std::sync::Arc::new(
            delta::DeltaArrayCodec::from_metadata(metadata)?,
        )));
    }
    let mut configuration: Map<String, Value> =
        metadata.configuration().cloned().unwrap_or_default().into();
    normalise(id, &mut configuration);
    if id == "blosc" {
        // zarrs builds blosc from v3 metadata only. The shuffle and type size matter only
        // when writing: each chunk's header says how it was shuffled.
        let blosc = serde_json::json!({
            "name": "blosc",
            "configuration": {
                "cname": configuration.get("cname"),
                "clevel": configuration.get("clevel"),
                "shuffle": "noshuffle",
                "blocksize": configuration.get("blocksize"),
            },
        });
        let blosc: MetadataV3 = serde_json::from_value(blosc)
            .map_err(|e| PluginCreateError::Other(format!("{name}: {e}")))?;
        return Codec::from_metadata(&blosc);
    }
    // Through the registries, where fastzarr's v2 plugins bound what zarrs decodes.
    Codec::from_metadata(&v2_metadata(id, configuration)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalised(id: &str, json: Value) -> Value {
        let Value::Object(mut map) = json else {
            unreachable!()
        };
        normalise(id, &mut map);
        Value::Object(map)
    }

    #[test]
    fn levels_are_clamped_and_defaults_filled() {
        use serde_json::json;
        assert_eq!(
            normalised("zlib", json!({"level": -1})),
            json!({"level": 0})
        );
        assert_eq!(normalised("gzip", json!({})), json!({"level": 1}));
        assert_eq!(
            normalised("zstd", json!({"level": 100})),
            json!({"level": 22})
        );
        assert_eq!(
            normalised("bz2", json!({"level": 100})),
            json!({"level": 9})
        );
        assert_eq!(
            normalised("shuffle", json!({"elementsize": 0})),
            json!({"elementsize": 1})
        );
        assert_eq!(
            normalised("blosc", json!({})),
            json!({"clevel": 5, "shuffle": 1, "blocksize": 0, "cname": "lz4"})
        );
    }
}
