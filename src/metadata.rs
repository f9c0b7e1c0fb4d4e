//! Reads node metadata ourselves: v3 `zarr.json`, v2 `.zarray`/`.zgroup`/`.zattrs`,
//! and consolidated metadata of both versions.
//!
//! zarrs 0.23 does not read v2 `.zmetadata`; reading it here means a group of
//! thousands of arrays opens from one file instead of thousands.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use rayon::prelude::*;
use serde_json::{Map, Value};
use zarrs::metadata::v2::ArrayMetadataV2;
use zarrs::metadata::v3::ArrayMetadataV3;
use zarrs::metadata::ArrayMetadata;

use crate::errors::{Error, Result};
use crate::store::{join, Store};

pub type Attributes = Map<String, Value>;

/// What lives at one path of a store.
#[derive(Debug, Clone)]
pub enum Node {
    /// Shared: a group's members and the arrays opened from them hold one copy.
    Array(Arc<ArrayMetadata>),
    Group(GroupNode),
}

impl Node {
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Array(_) => "array",
            Node::Group(_) => "group",
        }
    }
}

#[derive(Debug, Clone)]
pub struct GroupNode {
    pub zarr_format: u8,
    pub attributes: Attributes,
    /// Every node below the group keyed by its path relative to the group ("a", "a/b"),
    /// when the store has consolidated metadata.
    pub consolidated: Option<Arc<BTreeMap<String, Node>>>,
}

impl GroupNode {
    /// The consolidated entries of member `name`, rebased so that they are relative to it.
    pub fn consolidated_below(&self, name: &str) -> Option<Arc<BTreeMap<String, Node>>> {
        let entries = self.consolidated.as_ref()?;
        let prefix = format!("{name}/");
        let below = entries
            .iter()
            .filter_map(|(path, node)| {
                Some((path.strip_prefix(&prefix)?.to_string(), node.clone()))
            })
            .collect();
        Some(Arc::new(below))
    }
}

struct Reader<'a> {
    store: &'a Store,
    /// Documents fetched ahead (a missing one as `None`), so that a remote v2 node costs one
    /// round trip for its four possible documents instead of one per document. A failed
    /// fetch is an error only if the document turns out to be needed.
    fetched: RefCell<BTreeMap<String, Result<Option<bytes::Bytes>>>>,
}

impl Reader<'_> {
    fn metadata_error(&self, file: &str, reason: impl ToString) -> Error {
        store_metadata_error(self.store, file, reason)
    }

    fn json(&self, key: &str) -> Result<Option<Value>> {
        match self.bytes(key)? {
            Some(bytes) => self.parse(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn bytes(&self, key: &str) -> Result<Option<bytes::Bytes>> {
        let prefetched = self.fetched.borrow_mut().remove(key);
        match prefetched {
            Some(fetched) => fetched,
            None => self.store.get(key),
        }
    }

    fn parse(&self, key: &str, bytes: &[u8]) -> Result<Value> {
        serde_json::from_slice(bytes)
            .map_err(|e| self.metadata_error(key, format!("not valid JSON: {e}")))
    }

    fn object(&self, file: &str, value: Value) -> Result<Attributes> {
        match value {
            Value::Object(map) => Ok(map),
            other => {
                Err(self.metadata_error(file, format!("expected a JSON object, found {other}")))
            }
        }
    }

    /// Fetches `keys` at once (remote stores only: a local read is cheaper than a thread hop).
    fn prefetch(&self, keys: &[String]) -> Result<()> {
        if !self.store.is_remote() {
            return Ok(());
        }
        let store = self.store;
        let reads = keys.iter().map(|key| store.get_async(key));
        let documents = crate::runtime::block_on(futures::future::join_all(reads))?;
        let mut fetched = self.fetched.borrow_mut();
        for (key, document) in keys.iter().zip(documents) {
            fetched.insert(key.clone(), document);
        }
        Ok(())
    }

    /// The node at `path`. `opened`: the node a caller opens, whose format is not known yet:
    /// remotely, both formats' documents are then asked for in one round trip (a v2 store opens
    /// in one round instead of two, for four small requests more to a v3 one). A group's
    /// members are read v3 first, as their format is their group's.
    fn node(&self, path: &str, opened: bool) -> Result<Node> {
        if opened {
            let keys = ["zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata"]
                .map(|name| join(path, name));
            self.prefetch(&keys)?;
        }
        let v3_key = join(path, "zarr.json");
        if let Some(value) = self.json(&v3_key)? {
            return self.v3_node(&v3_key, value, true);
        }
        if !opened {
            let v2_keys =
                [".zarray", ".zgroup", ".zattrs", ".zmetadata"].map(|name| join(path, name));
            self.prefetch(&v2_keys)?;
        }
        let v2_array_key = join(path, ".zarray");
        if let Some(value) = self.json(&v2_array_key)? {
            let attributes = self.v2_attributes(path)?;
            return self.v2_array(&v2_array_key, value, attributes);
        }
        let v2_group_key = join(path, ".zgroup");
        if let Some(value) = self.json(&v2_group_key)? {
            self.check_v2_group(&v2_group_key, &value)?;
            let consolidated_key = join(path, ".zmetadata");
            let consolidated = match self.bytes(&consolidated_key)? {
                Some(bytes) => Some(Arc::new(
                    if let Some(entries) = v2_consolidated_quickly(self.store, &bytes) {
                        entries
                    } else {
                        let value = self.parse(&consolidated_key, &bytes)?;
                        self.v2_consolidated(&consolidated_key, value)?
                    },
                )),
                None => None,
            };
            return Ok(Node::Group(GroupNode {
                zarr_format: 2,
                attributes: self.v2_attributes(path)?,
                consolidated,
            }));
        }
        Err(Error::NodeNotFound {
            url: self.store.url().to_string(),
            path: path.to_string(),
            members: Vec::new(),
        })
    }

    fn v2_attributes(&self, path: &str) -> Result<Attributes> {
        let key = join(path, ".zattrs");
        match self.json(&key)? {
            Some(value) => self.object(&key, value),
            None => Ok(Attributes::new()),
        }
    }

    fn v2_array(&self, file: &str, value: Value, attributes: Attributes) -> Result<Node> {
        v2_array(self.store, file, value, attributes)
    }

    fn check_v2_group(&self, file: &str, value: &Value) -> Result<()> {
        check_v2_group(self.store, file, value)
    }

    /// Parses a v3 `zarr.json`; `top` allows inline consolidated metadata (only at the opened node).
    fn v3_node(&self, file: &str, value: Value, top: bool) -> Result<Node> {
        let mut object = self.object(file, value)?;
        match object.get("zarr_format").and_then(Value::as_u64) {
            Some(3) => {}
            other => {
                return Err(
                    self.metadata_error(file, format!("zarr_format must be 3, found {other:?}"))
                )
            }
        }
        self.check_extension_fields(file, &object)?;
        match object.get("node_type").and_then(Value::as_str) {
            Some("array") => {
                let metadata: ArrayMetadataV3 = serde_json::from_value(Value::Object(object))
                    .map_err(|e| self.metadata_error(file, e))?;
                Ok(Node::Array(Arc::new(ArrayMetadata::V3(metadata))))
            }
            Some("group") => {
                let attributes = match object.remove("attributes") {
                    Some(value) => self.object(file, value)?,
                    None => Attributes::new(),
                };
                let consolidated = match object.remove("consolidated_metadata") {
                    Some(value) if top && !value.is_null() => {
                        Some(Arc::new(self.v3_consolidated(file, value)?))
                    }
                    _ => None,
                };
                Ok(Node::Group(GroupNode {
                    zarr_format: 3,
                    attributes,
                    consolidated,
                }))
            }
            other => Err(self.metadata_error(
                file,
                format!("node_type must be 'array' or 'group', found {other:?}"),
            )),
        }
    }

    /// Refuses a v3 document with a field fastzarr does not know unless the field says it
    /// may be ignored (`{"must_understand": false}`), as the v3 specification requires: the
    /// field may change what the stored bytes mean.
    fn check_extension_fields(&self, file: &str, object: &Attributes) -> Result<()> {
        let known: &[&str] = match object.get("node_type").and_then(Value::as_str) {
            Some("array") => &V3_ARRAY_FIELDS,
            Some("group") => &V3_GROUP_FIELDS,
            _ => return Ok(()),
        };
        let ignorable =
            |value: &Value| value.get("must_understand").and_then(Value::as_bool) == Some(false);
        match object
            .iter()
            .find(|(name, value)| !known.contains(&name.as_str()) && !ignorable(value))
        {
            Some((name, _)) => Err(self.metadata_error(
                file,
                format!(
                    "unknown field '{name}' must be understood (it is not an object with \
                     \"must_understand\": false), and fastzarr does not know it"
                ),
            )),
            None => Ok(()),
        }
    }

    fn v3_consolidated(&self, file: &str, value: Value) -> Result<BTreeMap<String, Node>> {
        let mut object = self.object(file, value)?;
        let Some(metadata) = object.remove("metadata") else {
            return Err(self.metadata_error(file, "consolidated_metadata has no 'metadata'"));
        };
        let mut entries = BTreeMap::new();
        for (path, node) in self.object(file, metadata)? {
            let path = checked_member_path(&path).ok_or_else(|| {
                self.metadata_error(
                    file,
                    format!("consolidated entry '{path}' is not a relative member path"),
                )
            })?;
            let node_file = format!("{file} (consolidated entry '{path}')");
            entries.insert(path.clone(), self.v3_node(&node_file, node, false)?);
        }
        Ok(entries)
    }

    fn v2_consolidated(&self, file: &str, value: Value) -> Result<BTreeMap<String, Node>> {
        let mut object = self.object(file, value)?;
        let Some(metadata) = object.remove("metadata") else {
            return Err(self.metadata_error(file, "no 'metadata' object"));
        };
        let mut documents = self.object(file, metadata)?;
        // Only reached when the quick parse (`v2_consolidated_quickly`) found something wrong:
        // one entry after the other, so that the first problem in the document is named.
        let mut entries = BTreeMap::new();
        let keys: Vec<String> = documents.keys().cloned().collect();
        for key in keys {
            let (parent, name) = key.rsplit_once('/').unwrap_or(("", key.as_str()));
            if parent.is_empty() || !matches!(name, ".zarray" | ".zgroup") {
                continue; // the group's own documents, or .zattrs handled with their node
            }
            let path = checked_member_path(parent).ok_or_else(|| {
                self.metadata_error(
                    file,
                    format!("consolidated key '{key}' is not a relative member path"),
                )
            })?;
            let entry_file = format!("{file} (key '{key}')");
            let attributes = match documents.remove(&format!("{path}/.zattrs")) {
                Some(value) => self.object(&format!("{file} (key '{path}/.zattrs')"), value)?,
                None => Attributes::new(),
            };
            let document = documents.remove(&key).unwrap_or(Value::Null);
            let node = if name == ".zarray" {
                self.v2_array(&entry_file, document, attributes)?
            } else {
                self.check_v2_group(&entry_file, &document)?;
                Node::Group(GroupNode {
                    zarr_format: 2,
                    attributes,
                    consolidated: None,
                })
            };
            entries.insert(path, node);
        }
        Ok(entries)
    }
}

/// The members of a v2 `.zmetadata` document, parsed on every thread of the pool: each
/// entry is only delimited first, then parsed on its own. `None` when anything in the document
/// is not as expected: the caller then parses it the slow way, which says what is wrong.
fn v2_consolidated_quickly(store: &Store, bytes: &[u8]) -> Option<BTreeMap<String, Node>> {
    use serde_json::value::RawValue;
    let top: BTreeMap<String, &RawValue> = serde_json::from_slice(bytes).ok()?;
    let documents: BTreeMap<String, &RawValue> =
        serde_json::from_str(top.get("metadata")?.get()).ok()?;
    let mut found: Vec<(String, &RawValue, Option<&RawValue>, bool)> = Vec::new();
    for (key, document) in &documents {
        let (parent, name) = key.rsplit_once('/').unwrap_or(("", key.as_str()));
        if parent.is_empty() || !matches!(name, ".zarray" | ".zgroup") {
            continue;
        }
        let path = checked_member_path(parent)?;
        let attributes = documents.get(&format!("{path}/.zattrs")).copied();
        found.push((path, document, attributes, name == ".zarray"));
    }
    let nodes: Vec<Option<(String, Node)>> = crate::runtime::install(|| {
        Ok(found
            .into_par_iter()
            .map(|(path, document, attributes, is_array)| {
                let attributes: Attributes = match attributes {
                    Some(raw) => serde_json::from_str(raw.get()).ok()?,
                    None => Attributes::new(),
                };
                let node = if is_array {
                    let mut metadata: ArrayMetadataV2 =
                        serde_json::from_str(document.get()).ok()?;
                    metadata.attributes = attributes;
                    Node::Array(Arc::new(ArrayMetadata::V2(metadata)))
                } else {
                    let group: Value = serde_json::from_str(document.get()).ok()?;
                    check_v2_group(store, "", &group).ok()?;
                    Node::Group(GroupNode {
                        zarr_format: 2,
                        attributes,
                        consolidated: None,
                    })
                };
                Some((path, node))
            })
            .collect())
    })
    .ok()?;
    nodes.into_iter().collect()
}

fn store_metadata_error(store: &Store, file: &str, reason: impl ToString) -> Error {
    Error::Metadata {
        url: store.url().to_string(),
        file: file.to_string(),
        reason: reason.to_string(),
    }
}

/// A v2 array node from its `.zarray` document and its attributes.
fn v2_array(store: &Store, file: &str, value: Value, attributes: Attributes) -> Result<Node> {
    let mut metadata: ArrayMetadataV2 =
        serde_json::from_value(value).map_err(|e| store_metadata_error(store, file, e))?;
    metadata.attributes = attributes;
    Ok(Node::Array(Arc::new(ArrayMetadata::V2(metadata))))
}

fn check_v2_group(store: &Store, file: &str, value: &Value) -> Result<()> {
    match value.get("zarr_format").and_then(Value::as_u64) {
        Some(2) => Ok(()),
        other => Err(store_metadata_error(
            store,
            file,
            format!("zarr_format must be 2, found {other:?}"),
        )),
    }
}

/// The fields of a v3 array document (the core specification's).
const V3_ARRAY_FIELDS: [&str; 11] = [
    "zarr_format",
    "node_type",
    "shape",
    "data_type",
    "chunk_grid",
    "chunk_key_encoding",
    "fill_value",
    "codecs",
    "attributes",
    "storage_transformers",
    "dimension_names",
];

/// The fields of a v3 group document, with zarr-python's consolidated metadata.
const V3_GROUP_FIELDS: [&str; 4] = [
    "zarr_format",
    "node_type",
    "attributes",
    "consolidated_metadata",
];

/// zarr-python reads a v2 `fill_value: null` as zeros; zarrs accepts null only for
/// numbers and bools, so spell out the zero of complex, unicode and raw dtypes.
pub fn default_null_fill_value(value: &mut Value) {
    if !value.get("fill_value").is_some_and(Value::is_null) {
        return;
    }
    let Some(dtype) = value.get("dtype").and_then(Value::as_str) else {
        return;
    };
    let kind_and_size = dtype
        .get(1..2)
        .zip(dtype.get(2..).and_then(|n| n.parse::<usize>().ok()));
    let zero = match kind_and_size {
        Some(("c", _)) => serde_json::json!([0.0, 0.0]),
        Some(("U", _)) => Value::String(String::new()),
        Some(("V", size)) => Value::String(base64_zeros(size)),
        _ => return,
    };
    value["fill_value"] = zero;
}

/// Base64 of `size` zero bytes.
fn base64_zeros(size: usize) -> String {
    let mut text = "A".repeat(size.div_ceil(3) * 4);
    let padding = (3 - size % 3) % 3;
    text.replace_range(text.len() - padding.., &"=".repeat(padding));
    text
}

/// Accepts "a" or "a/b"; refuses anything that could leave the store ("..", absolute, backslashes, NUL).
pub fn checked_member_path(path: &str) -> Option<String> {
    let trimmed = path.trim_matches('/');
    let valid = !trimmed.is_empty()
        && !path.starts_with('/')
        && !trimmed.contains(['\\', '\0'])
        && trimmed
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    valid.then(|| trimmed.to_string())
}

/// Reads the metadata of the node at `path` ("" is the store root), opened by a caller.
pub fn read_node(store: &Store, path: &str) -> Result<Node> {
    Reader {
        store,
        fetched: RefCell::new(BTreeMap::new()),
    }
    .node(path, true)
}

/// Reads the metadata of the member at `path` of a group read before (see `Reader::node`).
pub fn read_member_node(store: &Store, path: &str) -> Result<Node> {
    Reader {
        store,
        fetched: RefCell::new(BTreeMap::new()),
    }
    .node(path, false)
}

#[cfg(test)]
mod tests {
    use super::checked_member_path;
    use serde_json::json;

    #[test]
    fn consolidated_metadata_parses_alike_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            super::Store::open(dir.path().to_str().unwrap(), super::BTreeMap::default()).unwrap();
        let reader = super::Reader {
            store: &store,
            fetched: std::cell::RefCell::new(super::BTreeMap::new()),
        };
        let array = json!({"zarr_format": 2, "shape": [3], "chunks": [2], "dtype": "<f4",
                           "compressor": {"id": "zlib", "level": 1}, "fill_value": "NaN",
                           "order": "C", "filters": null});
        let document = json!({"zarr_consolidated_format": 1, "metadata": {
            ".zgroup": {"zarr_format": 2},
            "t/.zarray": array,
            "t/.zattrs": {"_ARRAY_DIMENSIONS": ["x"], "units": "K"},
            "sub/.zgroup": {"zarr_format": 2},
            "sub/.zattrs": {"title": "below"},
            "sub/u/.zarray": array,
        }});
        let bytes = serde_json::to_vec(&document).unwrap();
        let quick = super::v2_consolidated_quickly(&store, &bytes).unwrap();
        let slow = reader.v2_consolidated("z", document).unwrap();
        assert_eq!(format!("{quick:?}"), format!("{slow:?}"));
        assert_eq!(quick.len(), 3);
        // Anything unexpected is left to the slow parse, which names what is wrong.
        for bad in [
            json!({"metadata": {"t/.zarray": {"zarr_format": 2, "shape": "three"}}}),
            json!({"metadata": {"t/.zarray": array, "t/.zattrs": [1]}}),
            json!({"metadata": {"../t/.zarray": array}}),
            json!({"metadata": {"g/.zgroup": {"zarr_format": 3}}}),
            json!({"metadata": [1]}),
            json!({"no metadata": {}}),
        ] {
            let bytes = serde_json::to_vec(&bad).unwrap();
            assert!(
                super::v2_consolidated_quickly(&store, &bytes).is_none(),
                "{bad}"
            );
            assert!(reader.v2_consolidated("z", bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn base64_of_zeros() {
        assert_eq!(super::base64_zeros(4), "AAAAAA==");
        assert_eq!(super::base64_zeros(3), "AAAA");
        assert_eq!(super::base64_zeros(5), "AAAAAAA=");
    }

    #[test]
    fn member_paths_cannot_escape() {
        assert_eq!(checked_member_path("a/b").as_deref(), Some("a/b"));
        for bad in [
            "", "/", "../x", "a/../b", "/etc", "a\\b", "a\0", "a//b", ".",
        ] {
            assert_eq!(checked_member_path(bad), None, "{bad:?}");
        }
    }
}
