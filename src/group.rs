//! The group model: a group's members (from consolidated metadata or listed from the store),
//! member arrays built in batches, and the errors that say what a store holds instead.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use zarrs::metadata::ArrayMetadata;

use crate::array::ArrayHandle;
use crate::errors::{Error, Result};
use crate::metadata::{read_node, GroupNode, Node};
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
            (None, Some(_)) => read_node(&self.store, &join(&self.path, &name))?,
        };
        let path = join(&self.path, &name);
        Ok(match node {
            Node::Array(metadata) => Member::Array(Arc::new(ArrayHandle::new(
                self.store.clone(),
                &path,
                *metadata,
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
        let wanted: Vec<(&String, &ArrayMetadata)> = {
            let built = self.built.try_lock().ok();
            let is_built = |n: &str| built.as_ref().is_some_and(|b| b.contains_key(n));
            self.members
                .range::<str, _>((std::ops::Bound::Included(name), std::ops::Bound::Unbounded))
                .filter_map(|(n, node)| match node {
                    Node::Array(metadata) if n == name || !is_built(n) => Some((n, &**metadata)),
                    _ => None,
                })
                .take(ARRAYS_PER_BUILD)
                .collect()
        };
        let mut handles: Vec<(&String, Result<ArrayHandle>)> = crate::runtime::install(|| {
            Ok(wanted
                .into_par_iter()
                .map(|(n, metadata)| {
                    let path = join(&self.path, n);
                    (
                        n,
                        ArrayHandle::new(self.store.clone(), &path, metadata.clone()),
                    )
                })
                .collect())
        })?;
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
                let node = read_node(store, &join(path, &name));
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
