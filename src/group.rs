//! The group model: a group's members (from consolidated metadata or listed from the store),
//! member arrays built in batches, and the errors that say what a store holds instead.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use zarrs::metadata::ArrayMetadata;

use crate::array::ArrayHandle;
use crate::errors::{Error, Result};
use crate::metadata::{read_member_node, read_node, GroupNode, Node};
use crate::store::{join, StorageOptions, Store};

/// What a group holds; shared, so that a member can be opened on another thread.
pub struct GroupState {
    pub store: Arc<Store>,
    pub path: String,
    pub node: GroupNode,
    /// Immediate members, sorted by name.
    pub members: BTreeMap<String, Node>,
    /// Immediate member arrays built so far. Building one must run on the decode pool (see
    /// `ArrayHandle::new`), and the hand-over costs more than the building: a miss builds the
    /// next [`ARRAYS_PER_BUILD`] members too, in one pass, so a loop over thousands of
    /// variables pays it once per batch. Never waited on (`try_lock`), so a child forked
    /// while another thread held it cannot hang here.
    built: Mutex<HashMap<String, Arc<ArrayHandle>>>,
}

/// Member arrays built together on a miss: the one asked for and those after it by name.
const ARRAYS_PER_BUILD: usize = 256;

/// A member of a group.
pub enum Member {
    Array(Arc<ArrayHandle>),
    Group(GroupState),
}

impl GroupState {
    /// The group at `path` of `store`, described by `node`: its members from the consolidated
    /// metadata, or listed from the store.
    pub fn open(store: Arc<Store>, path: &str, node: GroupNode) -> Result<Self> {
        let members = match &node.consolidated {
            Some(entries) => entries
                .iter()
                .filter(|(name, _)| !name.contains('/'))
                .map(|(name, node)| (name.clone(), node.clone()))
                .collect(),
            None => list_members(&store, path)?,
        };
        Ok(Self {
            store,
            path: path.to_string(),
            node,
            members,
            built: Mutex::new(HashMap::new()),
        })
    }

    /// The member at `name` (which may be nested: "a/b").
    pub fn member(&self, name: &str) -> Result<Member> {
        let not_found = || Error::NodeNotFound {
            url: self.store.url().to_string(),
            path: join(&self.path, name),
            members: Vec::new(),
        };
        let name = crate::metadata::checked_member_path(name).ok_or_else(not_found)?;
        if let Some(Node::Array(_)) = self.members.get(&name) {
            // Built (or built now, with its neighbours) without copying its metadata first.
            return Ok(Member::Array(self.member_array(&name)?));
        }
        let node = match (&self.node.consolidated, name.split_once('/')) {
            (Some(entries), _) => entries.get(&name).cloned().ok_or_else(not_found)?,
            (None, None) => self.members.get(&name).cloned().ok_or_else(not_found)?,
            (None, Some(_)) => read_member_node(&self.store, &join(&self.path, &name))?,
        };
        let path = join(&self.path, &name);
        Ok(match node {
            Node::Array(metadata) => Member::Array(Arc::new(ArrayHandle::new(
                self.store.clone(),
                &path,
                metadata,
            )?)),
            Node::Group(mut group) => {
                if group.consolidated.is_none() {
                    group.consolidated = self.node.consolidated_below(&name);
                }
                Member::Group(GroupState::open(self.store.clone(), &path, group)?)
            }
        })
    }

    /// The immediate member array `name`, built with up to [`ARRAYS_PER_BUILD`] - 1 of the
    /// arrays after it that are not built yet. Only `name`'s own failure is an error: a
    /// sibling that fails is left unbuilt, to fail when it is asked for.
    fn member_array(&self, name: &str) -> Result<Arc<ArrayHandle>> {
        if let Ok(built) = self.built.try_lock() {
            if let Some(handle) = built.get(name) {
                return Ok(handle.clone());
            }
        }
        let wanted: Vec<(&String, &Arc<ArrayMetadata>)> = {
            let built = self.built.try_lock().ok();
            let is_built = |n: &str| built.as_ref().is_some_and(|b| b.contains_key(n));
            self.members
                .range::<str, _>((std::ops::Bound::Included(name), std::ops::Bound::Unbounded))
                .filter_map(|(n, node)| match node {
                    Node::Array(metadata) if n == name || !is_built(n) => Some((n, metadata)),
                    _ => None,
                })
                .take(ARRAYS_PER_BUILD)
                .collect()
        };
        let arrays: Vec<(String, Arc<ArrayMetadata>)> = wanted
            .iter()
            .map(|(n, metadata)| (join(&self.path, n), Arc::clone(metadata)))
            .collect();
        let mut handles: Vec<(&String, Result<ArrayHandle>)> = wanted
            .iter()
            .map(|(n, _)| *n)
            .zip(ArrayHandle::new_many(&self.store, arrays)?)
            .collect();
        if handles.first().map(|(n, _)| n.as_str()) != Some(name) {
            return Err(Error::NodeNotFound {
                url: self.store.url().to_string(),
                path: join(&self.path, name),
                members: Vec::new(),
            });
        }
        let first = Arc::new(handles.remove(0).1?);
        if let Ok(mut built) = self.built.try_lock() {
            built.insert(name.to_string(), first.clone());
            for (n, handle) in handles {
                if let Ok(handle) = handle {
                    built.insert(n.clone(), Arc::new(handle));
                }
            }
        }
        Ok(first)
    }
}

/// Opens the store at `url`. A local path that does not exist but lies inside a Zarr store
/// (`batch.zarr/t2m`, a misspelt array opened by its directory) is reported as a node
/// missing from that store, with the members it does have.
pub fn open_store(url: &str, options: &StorageOptions) -> Result<Arc<Store>> {
    Store::open(url, options.clone()).map_err(|err| match err {
        Error::StoreNotFound { .. } => missing_inside_store(url, options).unwrap_or(err),
        other => other,
    })
}

/// The error for the missing local path `url` when its nearest existing directory is a
/// Zarr group (the members it has) or array (which has none); `None` otherwise.
fn missing_inside_store(url: &str, options: &StorageOptions) -> Option<Error> {
    let local = match url.split_once("://") {
        None => url,
        Some(("file", path)) => path,
        Some(_) => return None,
    };
    let mut dir = std::path::Path::new(local);
    let mut names = Vec::new();
    loop {
        names.push(dir.file_name()?.to_string_lossy().into_owned());
        dir = dir.parent()?;
        if dir.as_os_str().is_empty() || dir.is_dir() {
            break;
        }
    }
    // `dir` is a leading slice of `local`, itself the tail of `url`.
    let kept = url.len() - local.len() + dir.as_os_str().len();
    let store_url = if dir.as_os_str().is_empty() {
        "."
    } else {
        &url[..kept]
    };
    let store = Store::open(store_url, options.clone()).ok()?;
    names.reverse();
    match read_node(&store, "") {
        Ok(Node::Group(_)) => {
            let path = crate::metadata::checked_member_path(&names.join("/"))?;
            Some(node_not_found(&store, &path))
        }
        Ok(Node::Array(_)) => Some(Error::InsideArray {
            url: store_url.to_string(),
            path: names.join("/"),
        }),
        Err(_) => None,
    }
}

/// `err`, when it is a node missing from `store`, with the members of its would-be group; for
/// a remote store with nothing at its root, with the group or array a parent URL holds.
pub fn with_members(store: &Store, options: &StorageOptions, err: Error) -> Error {
    match err {
        Error::NodeNotFound { path, .. } if !path.is_empty() => node_not_found(store, &path),
        Error::NodeNotFound { .. } => missing_below_parent(store.url(), options).unwrap_or(err),
        other => other,
    }
}

/// Parent URLs tried for a remote `store/var` URL with nothing at it (each costs a few requests).
const PARENT_LEVELS: usize = 3;

/// The error for the remote URL `url`, which holds no Zarr node, when one of its nearest parent
/// URLs holds one: a group (missing member, with the members it has) or an array (which has no
/// members). `None` for local URLs (see `missing_inside_store`), URLs with a query, or when no
/// parent within `PARENT_LEVELS` holds a node.
fn missing_below_parent(url: &str, options: &StorageOptions) -> Option<Error> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme == "file" || rest.contains(['?', '#']) {
        return None;
    }
    let authority = scheme.len() + 3 + rest.find('/')?;
    let mut base = url.trim_end_matches('/');
    let mut names = Vec::new();
    for _ in 0..PARENT_LEVELS {
        let (parent, name) = base.rsplit_once('/')?;
        if parent.len() <= authority || name.is_empty() {
            return None;
        }
        names.push(name);
        let store = Store::open(parent, options.clone()).ok()?;
        match read_node(&store, "") {
            Ok(Node::Group(_)) => {
                names.reverse();
                let path = crate::metadata::checked_member_path(&names.join("/"))?;
                return Some(node_not_found(&store, &path));
            }
            Ok(Node::Array(_)) => {
                names.reverse();
                return Some(Error::InsideArray {
                    url: parent.to_string(),
                    path: names.join("/"),
                });
            }
            Err(Error::NodeNotFound { .. }) => base = parent,
            Err(_) => return None,
        }
    }
    None
}

/// The error for no node at `path` in `store`, listing the members of the group that would
/// hold it, closest to its name first.
fn node_not_found(store: &Store, path: &str) -> Error {
    let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
    let members: Vec<String> = match read_node(store, parent) {
        Ok(Node::Group(group)) => match &group.consolidated {
            Some(entries) => entries
                .keys()
                .filter(|n| !n.contains('/'))
                .cloned()
                .collect(),
            None => list_members(store, parent)
                .map(BTreeMap::into_keys)
                .map(Iterator::collect)
                .unwrap_or_default(),
        },
        _ => Vec::new(),
    };
    Error::NodeNotFound {
        url: store.url().to_string(),
        path: path.to_string(),
        members: crate::errors::closest_first(name, members),
    }
}

/// Members of an unconsolidated group: every child prefix that holds Zarr metadata.
fn list_members(store: &Store, path: &str) -> Result<BTreeMap<String, Node>> {
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    };
    let names = store.child_names(&prefix)?;
    let nodes: Vec<(String, Result<Node>)> = crate::runtime::install(|| {
        Ok(names
            .into_par_iter()
            .map(|name| {
                let node = read_member_node(store, &join(path, &name));
                (name, node)
            })
            .collect())
    })?;
    let mut members = BTreeMap::new();
    for (name, node) in nodes {
        match node {
            Ok(node) => {
                members.insert(name, node);
            }
            Err(Error::NodeNotFound { .. }) => {} // a directory that is not a Zarr node
            Err(other) => return Err(other),
        }
    }
    Ok(members)
}

/// Opens the group at `path` of the store at `url`; `use_consolidated`: `None` uses
/// consolidated metadata when present, `Some(false)` ignores it, `Some(true)` requires it.
pub fn open(
    url: &str,
    options: &StorageOptions,
    path: &str,
    use_consolidated: Option<bool>,
) -> Result<GroupState> {
    let store = open_store(url, options)?;
    match read_node(&store, path).map_err(|err| with_members(&store, options, err))? {
        Node::Group(mut node) => {
            match (use_consolidated, node.consolidated.is_some()) {
                (Some(false), _) => node.consolidated = None,
                (Some(true), false) => {
                    return Err(Error::Metadata {
                        url: store.url().to_string(),
                        file: crate::store::join(
                            path,
                            if node.zarr_format == 2 {
                                ".zmetadata"
                            } else {
                                "zarr.json"
                            },
                        ),
                        reason: "no consolidated metadata, and use_consolidated=True requires it"
                            .into(),
                    })
                }
                _ => {}
            }
            GroupState::open(store, path, node)
        }
        Node::Array(_) => Err(Error::WrongNodeType {
            url: store.url().to_string(),
            path: path.to_string(),
            found: "an array",
            expected: "a group",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A v2 store of int32 arrays `a`, `b` (one layout, other attributes), `c` (another
    /// layout) and `d`, `e` (one layout zarrs refuses); `.zmetadata` consolidates them when
    /// `consolidated`. Each chunk of `a`, `b` and `c` holds the array's own numbers.
    fn write_store(dir: &std::path::Path, consolidated: bool) {
        let array = |dtype: &str, compressor: serde_json::Value| {
            json!({"zarr_format": 2, "shape": [4], "chunks": [2], "dtype": dtype,
                   "compressor": compressor, "fill_value": 0, "order": "C", "filters": null})
        };
        let unknown = json!({"id": "no-such-codec"});
        let arrays = [
            ("a", array("<i4", json!(null)), json!({"units": "K"})),
            ("b", array("<i4", json!(null)), json!({"units": "m"})),
            ("c", array("<i8", json!(null)), json!({})),
            ("d", array("<i4", unknown.clone()), json!({"n": 1})),
            ("e", array("<i4", unknown), json!({"n": 2})),
        ];
        let mut entries = serde_json::Map::new();
        entries.insert(".zgroup".into(), json!({"zarr_format": 2}));
        std::fs::write(dir.join(".zgroup"), r#"{"zarr_format": 2}"#).unwrap();
        for (i, (name, meta, attrs)) in arrays.iter().enumerate() {
            let path = dir.join(name);
            std::fs::create_dir_all(&path).unwrap();
            std::fs::write(path.join(".zarray"), meta.to_string()).unwrap();
            std::fs::write(path.join(".zattrs"), attrs.to_string()).unwrap();
            let itemsize = if *name == "c" { 8 } else { 4 };
            for chunk in 0..2u8 {
                let bytes: Vec<u8> = (0..2 * itemsize)
                    .map(|k| {
                        if k % itemsize == 0 {
                            (i as u8) * 10 + chunk
                        } else {
                            0
                        }
                    })
                    .collect();
                std::fs::write(path.join(chunk.to_string()), bytes).unwrap();
            }
            entries.insert(format!("{name}/.zarray"), meta.clone());
            entries.insert(format!("{name}/.zattrs"), attrs.clone());
        }
        if consolidated {
            let document = json!({"zarr_consolidated_format": 1, "metadata": entries});
            std::fs::write(dir.join(".zmetadata"), document.to_string()).unwrap();
        }
    }

    fn array(group: &GroupState, name: &str) -> Result<Arc<ArrayHandle>> {
        match group.member(name)? {
            Member::Array(handle) => Ok(handle),
            Member::Group(_) => panic!("{name} is a group"),
        }
    }

    #[test]
    fn arrays_of_one_layout_share_it_and_keep_their_own_chunks_and_attributes() {
        for consolidated in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            write_store(dir.path(), consolidated);
            let url = dir.path().to_str().unwrap();
            let group = open(url, &StorageOptions::new(), "", None).unwrap();
            let (a, b, c) = (
                array(&group, "a").unwrap(),
                array(&group, "b").unwrap(),
                array(&group, "c").unwrap(),
            );
            assert_eq!(a.layout_key(), b.layout_key());
            assert_ne!(a.layout_key(), c.layout_key());
            assert!(a.shares_layout_with(&b));
            assert!(!a.shares_layout_with(&c));
            assert_eq!(a.attributes()["units"], "K");
            assert_eq!(b.attributes()["units"], "m");
            assert_eq!(b.metadata_json()["attributes"]["units"], "m");
            // Each array's chunks, read through zarrs and keyed in the store, are its own.
            for (i, handle) in [&a, &b, &c].into_iter().enumerate() {
                assert_eq!(handle.chunk_key(&[1]), format!("{}/1", handle.path()));
                let chunk = handle
                    .zarrs()
                    .retrieve_encoded_chunk(&[1])
                    .unwrap()
                    .unwrap();
                assert_eq!(chunk[0], (i as u8) * 10 + 1, "{}", handle.path());
            }
            // Opened alone, an array is what it is opened among its siblings.
            let Node::Array(metadata) = read_node(&group.store, "b").unwrap() else {
                panic!("b is an array")
            };
            let alone = ArrayHandle::new(group.store.clone(), "b", metadata).unwrap();
            assert_eq!(alone.metadata_json(), b.metadata_json());
            assert_eq!(alone.layout_key(), b.layout_key());
        }
    }

    #[test]
    fn a_layout_that_fails_fails_for_each_array_under_its_own_name() {
        let dir = tempfile::tempdir().unwrap();
        write_store(dir.path(), true);
        let group = open(
            dir.path().to_str().unwrap(),
            &StorageOptions::new(),
            "",
            None,
        )
        .unwrap();
        for name in ["e", "d"] {
            match array(&group, name) {
                Err(Error::UnsupportedCodec { path, .. }) => assert_eq!(path, name),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert!(array(&group, "a").is_ok());
    }
}
