//! `fastzarr.Group`: a read-only mapping of member arrays and groups.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::errors::{Error, Result};
use crate::group::{GroupState, Member};
use crate::metadata::{read_node, Node};
use crate::py::array::PyArray;
use crate::py::{json_to_py, storage_options};
use crate::store::{join, StorageOptions};

/// What a pickled group reopens from: URL, storage options, path, consolidated.
type ReopenArgs = (String, StorageOptions, String, bool);

#[pyclass(name = "Group", module = "fastzarr", frozen)]
pub struct PyGroup {
    state: Arc<GroupState>,
    /// Seconds each member access may take (metadata reads), from `open_group(timeout=)`.
    timeout: Option<f64>,
}

impl std::ops::Deref for PyGroup {
    type Target = GroupState;

    fn deref(&self) -> &GroupState {
        &self.state
    }
}

impl PyGroup {
    pub fn new(state: GroupState, timeout: Option<f64>) -> Self {
        Self {
            state: Arc::new(state),
            timeout,
        }
    }

    fn member_object<'py>(&self, py: Python<'py>, name: &str) -> Result<Bound<'py, PyAny>> {
        let state = self.state.clone();
        let name = name.to_string();
        let member =
            crate::py::detach_abandonable(py, self.timeout, self.store.is_remote(), move || {
                state.member(&name)
            })?;
        Ok(match member {
            // A member group inherits the timeout of its parent's member accesses.
            Member::Array(handle) => Bound::new(py, PyArray { handle })?.into_any(),
            Member::Group(group) => Bound::new(py, PyGroup::new(group, self.timeout))?.into_any(),
        })
    }

    /// A member missing from the store, as the error that lists the group's members.
    fn member_error(&self, name: &str, err: Error) -> Error {
        match err {
            Error::NodeNotFound { url, .. } => Error::MemberNotFound {
                url,
                path: self.state.path.clone(),
                name: name.to_string(),
                members: crate::errors::closest_first(name, self.members.keys().cloned()),
            },
            other => other,
        }
    }
}

#[pymethods]
impl PyGroup {
    fn __getitem__<'py>(&self, py: Python<'py>, name: &str) -> Result<Bound<'py, PyAny>> {
        self.member_object(py, name)
            .map_err(|err| self.member_error(name, err))
    }

    /// The member arrays `names` (default: every one) in one call, opened with the GIL released:
    /// `{name: (array, layout, attributes, dimension_names)}`, where `layout` is the array's
    /// metadata document without its attributes as compact JSON (equal layouts, equal data
    /// type, chunks, codecs and fill value). A member that cannot be opened maps to its
    /// exception, not raised: one bad array does not hide the others.
    #[pyo3(signature = (names = None))]
    fn describe<'py>(
        &self,
        py: Python<'py>,
        names: Option<Vec<String>>,
    ) -> Result<Bound<'py, PyDict>> {
        let names = names.unwrap_or_else(|| self.array_keys());
        let state = self.state.clone();
        let opened = crate::py::detach_abandonable(py, self.timeout, self.store.is_remote(), {
            move || {
                let members = names
                    .into_iter()
                    .map(|name| {
                        let described = state.member(&name).and_then(|member| match member {
                            Member::Array(handle) => Ok(handle),
                            Member::Group(_) => Err(Error::InvalidArgument(format!(
                                "'{name}' is a group, not an array"
                            ))),
                        });
                        (name, described)
                    })
                    .collect::<Vec<_>>();
                Ok(members)
            }
        })?;
        let described = PyDict::new(py);
        // One Python string per layout: thousands of arrays share a few.
        let mut layouts: std::collections::HashMap<String, Bound<'py, pyo3::types::PyString>> =
            std::collections::HashMap::new();
        for (name, member) in opened {
            let value = match member {
                Ok(handle) => {
                    let key = handle.layout_key();
                    let layout = if let Some(layout) = layouts.get(key) {
                        layout.clone()
                    } else {
                        let layout = pyo3::types::PyString::new(py, key);
                        layouts.insert(key.to_string(), layout.clone());
                        layout
                    };
                    let attributes = crate::py::map_to_py(py, handle.attributes())?;
                    let dimension_names = handle.dimension_names();
                    let array = Bound::new(py, PyArray { handle })?;
                    (array, layout, attributes, dimension_names)
                        .into_pyobject(py)?
                        .into_any()
                }
                Err(err) => {
                    let err = pyo3::PyErr::from(self.member_error(&name, err));
                    err.value(py).clone().into_any()
                }
            };
            described.set_item(name, value)?;
        }
        Ok(described)
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

/// Opens a group (see `crate::group::open`) whose member accesses take at most `timeout`.
pub fn open(
    url: &str,
    options: StorageOptions,
    path: &str,
    use_consolidated: Option<bool>,
    timeout: Option<f64>,
) -> Result<PyGroup> {
    let state = crate::group::open(url, &options, path, use_consolidated)?;
    Ok(PyGroup::new(state, timeout))
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
                let opened: Vec<Result<PyGroup>> = crate::runtime::on_own_threads(batch, |url| {
                    crate::py::guard::catch(|| open(url, options.clone(), "", None, timeout))
                });
                for group in opened {
                    groups.push(group?);
                }
            }
            Ok(groups)
        })
    })
}

/// Reads ahead, for a point read along `point_dims`, the blosc block tables of every chunk of
/// the arrays `names` (default: every array) of `groups` that lie whole in one chunk along each
/// point dim, all at once, so that the read then asks for the blocks alone. Meant to run beside
/// the reading of the coordinates that place the point. Returns the requests made and the bytes
/// fetched; a failed request is left for the read to make again and report.
#[pyfunction]
#[pyo3(signature = (groups, point_dims, names = None, *, timeout = None))]
pub fn _read_ahead_tables(
    py: Python<'_>,
    groups: Vec<PyRef<'_, PyGroup>>,
    point_dims: Vec<String>,
    names: Option<Vec<String>>,
    timeout: Option<f64>,
) -> Result<(u64, u64)> {
    let states: Vec<Arc<GroupState>> = groups.iter().map(|g| g.state.clone()).collect();
    if !states.iter().any(|s| s.store.is_remote()) {
        return Ok((0, 0));
    }
    crate::py::detach_abandonable(py, timeout, true, move || {
        let arrays: Vec<_> = states
            .iter()
            .flat_map(|state| crate::read_ahead::whole_along(state, names.as_deref(), &point_dims))
            .collect();
        crate::read_ahead::read_ahead_tables(&arrays)
    })
}
