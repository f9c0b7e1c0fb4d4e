//! `fastzarr.Group`: a read-only mapping of member arrays and groups.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use rayon::prelude::*;

use crate::array::ArrayHandle;
use crate::errors::{Error, Result};
use crate::metadata::{read_node, GroupNode, Node};
use crate::py::array::PyArray;
use crate::py::{json_to_py, storage_options};
use crate::store::{join, StorageOptions, Store};
use zarrs::metadata::ArrayMetadata;

/// What a pickled group reopens from: URL, storage options, path, consolidated.
type ReopenArgs = (String, StorageOptions, String, bool);

#[pyclass(name = "Group", module = "fastzarr", frozen)]
pub struct PyGroup {
    state: Arc<GroupState>,
    /// Seconds each member access may take (metadata reads), from `open_group(timeout=)`.
    timeout: Option<f64>,
}

/// What a group holds; shared, so that a member can be opened on another thread.
pub struct GroupState {
    store: Arc<Store>,
    path: String,
    node: GroupNode,
    /// Immediate members, sorted by name.
    members: BTreeMap<String, Node>,
    /// Immediate member arrays built so far. Building one must run on the decode pool (see
    /// `ArrayHandle::new`), and the hand-over costs more than the building: a miss builds the
    /// next [`ARRAYS_PER_BUILD`] members too, in one pass, so a loop over thousands of
    /// variables pays it once per batch. Never waited on (`try_lock`), so a child forked
    /// while another thread held it cannot hang here.
    built: Mutex<HashMap<String, Arc<ArrayHandle>>>,
}

/// Member arrays built together on a miss: the one asked for and those after it by name.
const ARRAYS_PER_BUILD: usize = 256;

impl std::ops::Deref for PyGroup {
    type Target = GroupState;

    fn deref(&self) -> &GroupState {
        &self.state
    }
}

enum Member {
    Array(PyArray),
    Group(PyGroup),
}

impl PyGroup {
    pub fn open(
        store: Arc<Store>,
        path: &str,
        node: GroupNode,
        timeout: Option<f64>,
    ) -> Result<Self> {
        let members = match &node.consolidated {
            Some(entries) => entries
                .iter()
                .filter(|(name, _)| !name.contains('/'))
                .map(|(name, node)| (name.clone(), node.clone()))
                .collect(),
            None => list_members(&store, path)?,
        };
        Ok(Self {
            state: Arc::new(GroupState {
                store,
                path: path.to_string(),
                node,
                members,
                built: Mutex::new(HashMap::new()),
            }),
            timeout,
        })
    }

    fn member_object<'py>(&self, py: Python<'py>, name: &str) -> Result<Bound<'py, PyAny>> {
        let state = self.state.clone();
        let name = name.to_string();
        let timeout = self.timeout;
        let member =
            crate::py::detach_abandonable(py, timeout, self.store.is_remote(), move || {
                state.member(&name, timeout)
            })?;
        Ok(match member {
            Member::Array(array) => Bound::new(py, array)?.into_any(),
            Member::Group(group) => Bound::new(py, group)?.into_any(),
        })
    }
}

impl GroupState {
    /// The member at `name` (which may be nested: "a/b"); a member group inherits `timeout`.
    fn member(&self, name: &str, timeout: Option<f64>) -> Result<Member> {
        let not_found = || Error::NodeNotFound {
            url: self.store.url().to_string(),
            path: join(&self.path, name),
            members: Vec::new(),
        };
        let name = crate::metadata::checked_member_path(name).ok_or_else(not_found)?;
        if let Some(Node::Array(_)) = self.members.get(&name) {
            // Built (or built now, with its neighbours) without copying its metadata first.
            return Ok(Member::Array(PyArray {
                handle: self.member_array(&name)?,
            }));
        }
        let node = match (&self.node.consolidated, name.split_once('/')) {
            (Some(entries), _) => entries.get(&name).cloned().ok_or_else(not_found)?,
            (None, None) => self.members.get(&name).cloned().ok_or_else(not_found)?,
            (None, Some(_)) => read_node(&self.store, &join(&self.path, &name))?,
        };
        let path = join(&self.path, &name);
        Ok(match node {
            Node::Array(metadata) => Member::Array(PyArray {
                handle: Arc::new(ArrayHandle::new(self.store.clone(), &path, *metadata)?),
            }),
            Node::Group(mut group) => {
                if group.consolidated.is_none() {
                    group.consolidated = self.node.consolidated_below(&name);
                }
                Member::Group(PyGroup::open(self.store.clone(), &path, group, timeout)?)
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
pub(crate) fn open_store(url: &str, options: &StorageOptions) -> Result<Arc<Store>> {
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
pub(crate) fn with_members(store: &Store, options: &StorageOptions, err: Error) -> Error {
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

#[pymethods]
impl PyGroup {
    fn __getitem__<'py>(&self, py: Python<'py>, name: &str) -> Result<Bound<'py, PyAny>> {
        self.member_object(py, name).map_err(|err| match err {
            Error::NodeNotFound { url, .. } => Error::MemberNotFound {
                url,
                path: self.state.path.clone(),
                name: name.to_string(),
                members: crate::errors::closest_first(name, self.members.keys().cloned()),
            },
            other => other,
        })
    }

    fn __contains__(&self, name: &str) -> bool {
        match (
            &self.node.consolidated,
            crate::metadata::checked_member_path(name),
        ) {
            (_, None) => false,
            (Some(entries), Some(path)) => entries.contains_key(&path),
            (None, Some(path)) => {
                self.members.contains_key(&path)
                    || (path.contains('/')
                        && read_node(&self.store, &join(&self.path, &path)).is_ok())
            }
        }
    }

    fn __len__(&self) -> usize {
        self.members.len()
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyAny>> {
        Ok(PyList::new(py, self.members.keys())?
            .as_any()
            .try_iter()?
            .into_any())
    }

    fn keys(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    fn values<'py>(&self, py: Python<'py>) -> Result<Vec<Bound<'py, PyAny>>> {
        self.members
            .keys()
            .map(|name| self.member_object(py, name))
            .collect()
    }

    fn items<'py>(&self, py: Python<'py>) -> Result<Vec<(String, Bound<'py, PyAny>)>> {
        self.members
            .keys()
            .map(|name| Ok((name.clone(), self.member_object(py, name)?)))
            .collect()
    }

    #[pyo3(signature = (name, default = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        default: Option<Bound<'py, PyAny>>,
    ) -> Result<Bound<'py, PyAny>> {
        match self.member_object(py, name) {
            Err(Error::NodeNotFound { .. }) => {
                Ok(default.unwrap_or_else(|| py.None().into_bound(py)))
            }
            other => other,
        }
    }

    /// Names of the member arrays.
    fn array_keys(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|(_, n)| matches!(n, Node::Array(_)))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Names of the member groups.
    fn group_keys(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|(_, n)| matches!(n, Node::Group(_)))
            .map(|(k, _)| k.clone())
            .collect()
    }

    #[getter]
    fn attrs<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyDict>> {
        Ok(
            json_to_py(py, &serde_json::Value::Object(self.node.attributes.clone()))?
                .cast_into()?,
        )
    }

    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    /// The URL of the store, as given.
    #[getter]
    fn url(&self) -> &str {
        self.store.raw_url()
    }

    #[getter]
    fn zarr_format(&self) -> u8 {
        self.node.zarr_format
    }

    /// Whether the members came from consolidated metadata (one read for the whole tree).
    #[getter]
    fn consolidated(&self) -> bool {
        self.node.consolidated.is_some()
    }

    fn __repr__(&self) -> String {
        let name = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        let shown: Vec<String> = self.members.keys().take(8).cloned().collect();
        let more = self.members.len().saturating_sub(shown.len());
        let tail = if more > 0 {
            format!(", ... {more} more")
        } else {
            String::new()
        };
        format!(
            "<fastzarr.Group '{name}' members=[{}{tail}] zarr_format={} consolidated={} store='{}'>",
            shown.join(", "),
            self.node.zarr_format,
            if self.node.consolidated.is_some() { "True" } else { "False" },
            self.store.url()
        )
    }

    fn __reduce__<'py>(&self, py: Python<'py>) -> Result<(Bound<'py, PyAny>, ReopenArgs)> {
        let reopen = py.import("fastzarr._core")?.getattr("_reopen_group")?;
        Ok((
            reopen,
            (
                self.store.raw_url().to_string(),
                self.store.options().clone(),
                self.path.clone(),
                self.node.consolidated.is_some(),
            ),
        ))
    }
}

/// Opens a group; `use_consolidated`: `None` uses consolidated metadata when present,
/// `Some(false)` ignores it, `Some(true)` requires it.
pub fn open(
    url: &str,
    options: StorageOptions,
    path: &str,
    use_consolidated: Option<bool>,
    timeout: Option<f64>,
) -> Result<PyGroup> {
    let store = open_store(url, &options)?;
    match read_node(&store, path).map_err(|err| with_members(&store, &options, err))? {
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
            PyGroup::open(store, path, node, timeout)
        }
        Node::Array(_) => Err(Error::WrongNodeType {
            url: store.url().to_string(),
            path: path.to_string(),
            found: "an array",
            expected: "a group",
        }),
    }
}

/// Unpickling entry point.
#[pyfunction]
pub fn _reopen_group(
    py: Python<'_>,
    url: String,
    options: StorageOptions,
    path: String,
    use_consolidated: Option<bool>,
) -> Result<PyGroup> {
    crate::py::guard::detach(py, || open(&url, options, &path, use_consolidated, None))
}

/// Opens a Zarr group (v2 or v3, consolidated or not) at `url`. `timeout` (seconds)
/// bounds the open and, later, each access to a member (`fastzarr.TimeoutError`).
#[pyfunction]
#[pyo3(signature = (url, *, storage_options = None, path = "", use_consolidated = None, timeout = None))]
pub fn open_group(
    py: Python<'_>,
    url: &Bound<'_, PyAny>,
    storage_options: Option<&Bound<'_, PyDict>>,
    path: &str,
    use_consolidated: Option<bool>,
    timeout: Option<f64>,
) -> Result<PyGroup> {
    crate::py::guard::catch(|| {
        let url = crate::py::url_string(url)?;
        let options = storage_options::extract(storage_options)?;
        let path = crate::py::member_path(path)?;
        let remote = crate::py::is_remote_url(&url);
        crate::py::detach_abandonable(py, timeout, remote, move || {
            open(&url, options, &path, use_consolidated, timeout)
        })
    })
}

/// Opens several groups at once (`open_group` on each, their metadata requests overlapped):
/// over object storage each open waits on a few round trips, so a list of batch stores opens
/// in the time of one. Errors name the first source, in order, that failed.
#[pyfunction]
#[pyo3(signature = (urls, *, storage_options = None, timeout = None))]
pub fn open_groups(
    py: Python<'_>,
    urls: Vec<Bound<'_, PyAny>>,
    storage_options: Option<&Bound<'_, PyDict>>,
    timeout: Option<f64>,
) -> Result<Vec<PyGroup>> {
    /// Opens running at once; each holds a thread blocked on its requests.
    const AT_ONCE: usize = 16;
    crate::py::guard::catch(|| {
        let urls = urls
            .iter()
            .map(crate::py::url_string)
            .collect::<Result<Vec<_>>>()?;
        let options = storage_options::extract(storage_options)?;
        let remote = urls.iter().any(|url| crate::py::is_remote_url(url));
        crate::py::detach_abandonable(py, timeout, remote, move || {
            let mut groups = Vec::with_capacity(urls.len());
            for batch in urls.chunks(AT_ONCE) {
                let opened: Vec<Result<PyGroup>> = std::thread::scope(|scope| {
                    let handles: Vec<_> = batch
                        .iter()
                        .map(|url| {
                            let options = options.clone();
                            scope.spawn(move || {
                                crate::py::guard::catch(|| open(url, options, "", None, timeout))
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|handle| {
                            handle
                                .join()
                                .map_err(|payload| Error::from_panic(payload.as_ref()))?
                        })
                        .collect()
                });
                for group in opened {
                    groups.push(group?);
                }
            }
            Ok(groups)
        })
    })
}
