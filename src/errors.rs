//! Error types of every layer: plain Rust, free of Python, so that `cargo test` and the fuzz
//! targets need no interpreter. `py/errors.rs` maps them onto the Python exception tree.
//!
//! Messages name the store, the array and the chunk key so that a user reading a
//! traceback from a 44-store job knows which file to look at.

/// The result type of everything in the crate that can fail.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A node of a store in messages: `'a/b' in store URL`, or `the root of store URL` rather
/// than an empty name.
fn node_in(path: &str, url: &str) -> String {
    if path.is_empty() {
        format!("the root of store {url}")
    } else {
        format!("'{path}' in store {url}")
    }
}

/// An array of a store in messages: `array 'a/b' of store URL`, or `the array at the root
/// of store URL`.
pub(crate) fn array_in(path: &str, url: &str) -> String {
    if path.is_empty() {
        format!("the array at the root of store {url}")
    } else {
        format!("array '{path}' of store {url}")
    }
}

/// A group of a store in messages: `group 'a/b' of store URL`, or `the root group of store URL`.
fn group_in(path: &str, url: &str) -> String {
    if path.is_empty() {
        format!("the root group of store {url}")
    } else {
        format!("group '{path}' of store {url}")
    }
}

/// Names listed in a "not found" message: enough to spot a typo, not a screenful.
const LISTED_NAMES: usize = 12;

/// `; the group holds, closest first: a, b, ... (N more)`, or nothing for no names.
fn listing(names: &[String]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let shown = &names[..names.len().min(LISTED_NAMES)];
    let more = names.len() - shown.len();
    let tail = if more > 0 {
        format!(", ... ({more} more)")
    } else {
        String::new()
    };
    format!(
        "; the group holds, closest first: {}{tail}",
        shown.join(", ")
    )
}

/// `names` ordered by their likeness to `wanted`, most alike first (ties by name). Likeness is
/// difflib's ratio over the longest common subsequence, case ignored: a misspelling or a part
/// of a name (`t2m` for `t2m_mean`) ranks above a name merely as short.
pub fn closest_first(wanted: &str, names: impl IntoIterator<Item = String>) -> Vec<String> {
    let wanted: Vec<char> = wanted.to_lowercase().chars().collect();
    let mut scored: Vec<(f64, String)> = names
        .into_iter()
        .map(|name| {
            let other: Vec<char> = name.to_lowercase().chars().collect();
            let total = wanted.len() + other.len();
            let ratio = if total == 0 {
                1.0
            } else {
                2.0 * common_subsequence(&wanted, &other) as f64 / total as f64
            };
            (ratio, name)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, name)| name).collect()
}

fn common_subsequence(a: &[char], b: &[char]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for &x in a {
        let mut diagonal = 0;
        for (j, &y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if x == y {
                diagonal + 1
            } else {
                above.max(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("store not found: {url} does not exist")]
    StoreNotFound { url: String },

    /// `members`: those of the group that would hold the node, closest to its name first
    /// (empty when there is no such group, or when not worth listing).
    #[error(
        "no Zarr array or group at {} (looked for zarr.json, .zarray, .zgroup){}",
        node_in(path, url),
        listing(members)
    )]
    NodeNotFound {
        url: String,
        path: String,
        members: Vec<String>,
    },

    /// A path below an array's directory: `path` relative to the array at `url`.
    #[error("no Zarr array or group at '{path}' under {url}: {url} is a Zarr array, which holds chunks, not members")]
    InsideArray { url: String, path: String },

    #[error("{url} is a file, not a Zarr store (a store is a directory holding zarr.json, .zgroup or .zarray)")]
    NotAStore { url: String },

    #[error("{} is {found}, not {expected}", capitalised(&node_in(path, url)))]
    WrongNodeType {
        url: String,
        path: String,
        found: &'static str,
        expected: &'static str,
    },

    #[error("URL scheme of {url} is not supported (supported: local paths, file://, memory://, s3://, gs://, az://, abfs://, http://, https://)")]
    UnsupportedUrl { url: String },

    #[error("invalid metadata in {file} of store {url}: {reason}")]
    Metadata {
        url: String,
        file: String,
        reason: String,
    },

    #[error("unsupported codec in {}: {reason}", array_in(path, url))]
    UnsupportedCodec {
        url: String,
        path: String,
        reason: String,
    },

    #[error("unsupported data type in {}: {dtype}", array_in(path, url))]
    UnsupportedDataType {
        url: String,
        path: String,
        dtype: String,
    },

    #[error("corrupt chunk '{key}' of {}: {reason}", array_in(path, url))]
    CorruptChunk {
        url: String,
        path: String,
        key: String,
        reason: String,
    },

    #[error("store {url} was replaced or deleted after it was opened (while reading '{key}'): open it again to read the new store")]
    StoreChanged { url: String, key: String },

    #[error("could not read '{key}' from store {url}: {reason}")]
    Storage {
        url: String,
        key: String,
        reason: String,
    },

    #[error("{0}")]
    OutOfBounds(String),

    #[error("{0}")]
    InvalidSelection(String),

    #[error("invalid output buffer: {0}")]
    InvalidOutput(String),

    #[error("{0}")]
    InvalidArgument(String),

    /// A path argument that cannot name a place inside the store (`..`, absolute, ...).
    #[error("{0}")]
    InvalidPath(String),

    /// A name looked up in a group (`group[name]`) that is not one of its members.
    #[error(
        "'{name}' is not a member of {}{}",
        group_in(path, url),
        listing(members)
    )]
    MemberNotFound {
        url: String,
        path: String,
        name: String,
        /// The group's members, closest to `name` first.
        members: Vec<String>,
    },

    #[error("internal error (a bug in fastzarr, please report it): {0}")]
    Panic(String),

    #[error("request for '{key}' from store {url} timed out: {reason}")]
    RequestTimeout {
        url: String,
        key: String,
        reason: String,
    },

    #[error("timed out after {0} s")]
    Timeout(f64),

    #[error("this read needs {} ({detail}), more than max_memory={}", crate::limits::human_bytes(*needed), crate::limits::human_bytes(u128::from(*budget)))]
    MemoryBudget {
        needed: u128,
        budget: u64,
        detail: String,
    },

    /// A buffer whose size the metadata gives could not be allocated (the process's
    /// address space or memory limit): refused before the allocation could abort.
    #[error("{what} needs {}, more than can be allocated", crate::limits::human_bytes(*bytes))]
    Allocation { what: String, bytes: u128 },

    #[error("cancelled")]
    Cancelled,

    /// An error of the calling layer (a Python exception raised by a callback, Ctrl-C),
    /// carried through the core unchanged and handed back to that layer.
    #[error("{0}")]
    Host(HostError),
}

/// An error value of the calling layer, opaque to the core: `py/errors.rs` puts a `PyErr`
/// in and takes it out again, so the core needs no Python types.
pub struct HostError {
    pub error: Box<dyn std::any::Any + Send + Sync>,
    pub message: String,
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::fmt::Debug for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("HostError").field(&self.message).finish()
    }
}

impl Error {
    /// Turns a caught panic payload into an error instead of unwinding into Python.
    pub fn from_panic(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(ToString::to_string)
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        Error::Panic(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_names_come_first() {
        let names = ["var0001", "t2m_mean", "2t", "T2M", "lat"].map(String::from);
        assert_eq!(
            closest_first("t2m", names),
            ["T2M", "t2m_mean", "2t", "lat", "var0001"]
        );
        assert!(closest_first("x", Vec::new()).is_empty());
    }

    #[test]
    fn listing_is_bounded() {
        let names: Vec<String> = (0..20).map(|i| format!("v{i:02}")).collect();
        let text = listing(&names);
        assert!(text.contains("v11") && !text.contains("v12"));
        assert!(text.ends_with("... (8 more)"));
        assert_eq!(listing(&[]), "");
    }
}
