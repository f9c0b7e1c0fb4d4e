//! Resolves a URL (plus storage options) to a store: local files through zarrs'
//! filesystem store, everything else (s3, gs, az, http, memory) through `object_store`.
//!
//! Readers only ever see a [`Store`]; its reads are whole keys or byte ranges of a key,
//! and a remote read runs on fastzarr's tokio runtime with a bounded number of requests
//! in flight (`runtime::io`). Credentials live in the options and the object store,
//! never in what [`Store`] shows: errors and reprs use a redacted URL.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore};
use zarrs::storage::{ReadableListableStorage, StoreKey, StorePrefix};

use crate::errors::{Error, Result};
use crate::object_config::{build_object_store, redact_url};

/// Options that shape how a store is reached (`object_store` configuration keys).
pub type StorageOptions = BTreeMap<String, String>;

enum Backend {
    /// The same confined store as `storage`, for reads zarrs' interface makes costly.
    Local(Arc<crate::paths::ConfinedStore>),
    /// An object store rooted at the store's prefix.
    Object(Arc<dyn ObjectStore>),
}

/// An opened store: the storage and the URL it was opened from.
pub struct Store {
    /// The URL as given (it may hold secrets): only for reopening the store.
    raw_url: String,
    /// The URL with any user info and query (where tokens hide) blanked out.
    url: String,
    options: StorageOptions,
    /// Values of the options that are secrets, scrubbed from error messages.
    secrets: Vec<String>,
    storage: ReadableListableStorage,
    backend: Backend,
    /// Set when the server answered a range request with the whole object (an HTTP server
    /// without `Range` support): reads of this store then ask for whole objects.
    ranges_unsupported: std::sync::atomic::AtomicBool,
    /// For a local store opened at a node inside a larger store (`batch.zarr/t2m`): the URL
    /// of that store and the node's path in it, so that errors name the array as its store
    /// knows it. Looked up on the first error only.
    enclosing: std::sync::OnceLock<Option<(String, String)>>,
}

/// A byte range of an object and what its response said of the whole object.
#[derive(Debug)]
pub struct RangeRead {
    pub bytes: Bytes,
    /// The object's whole size.
    pub size: u64,
    /// The object's `ETag`, where the server sent one.
    pub e_tag: Option<String>,
}

/// The answer to a range read (`Store::get_range_read`).
#[derive(Debug)]
pub enum Ranged {
    Read(RangeRead),
    Missing,
    /// The object no longer has the `ETag` the read asked for.
    Changed,
}

/// Warnings raised by reads on threads without the GIL, for the caller's thread to emit.
static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The warnings queued since the last call (emitted as Python warnings when a read returns).
pub fn take_warnings() -> Vec<String> {
    std::mem::take(&mut *WARNINGS.lock().unwrap_or_else(PoisonError::into_inner))
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The `memory://` stores of this process, by name.
pub(crate) type MemoryStores = BTreeMap<String, Arc<dyn ObjectStore>>;
pub(crate) static MEMORY_STORES: Mutex<MemoryStores> = Mutex::new(BTreeMap::new());

/// `memory://NAME/...` stores live as long as the process, shared by every opener.
fn memory_store(name: &str) -> Arc<dyn ObjectStore> {
    crate::fork::install_handlers();
    let mut stores = MEMORY_STORES.lock().unwrap_or_else(PoisonError::into_inner);
    stores
        .entry(name.to_string())
        .or_insert_with(|| Arc::new(object_store::memory::InMemory::new()))
        .clone()
}

impl Store {
    /// Opens the store rooted at `url`.
    pub fn open(url: &str, options: StorageOptions) -> Result<Arc<Self>> {
        let display_url = redact_url(url);
        let (storage, backend, mut secrets) = match url.split_once("://") {
            None => local(open_local(&display_url, url)?),
            Some(("file", path)) => local(open_local(&display_url, path)?),
            Some(("memory", rest)) => {
                let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                let store = prefixed(memory_store(name), prefix);
                (object_storage(&store), Backend::Object(store), Vec::new())
            }
            Some(_) => {
                let remote = build_object_store(url, &display_url, &options)?;
                let store = prefixed(remote.store, &remote.prefix);
                (
                    object_storage(&store),
                    Backend::Object(store),
                    remote.secrets,
                )
            }
        };
        secrets.extend(url_secrets(url));
        // Longest first, so that a secret containing another is blanked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Ok(Arc::new(Self {
            raw_url: url.to_string(),
            url: display_url,
            options,
            secrets,
            storage,
            backend,
            ranges_unsupported: std::sync::atomic::AtomicBool::new(false),
            enclosing: std::sync::OnceLock::new(),
        }))
    }

    /// The URL as shown in errors and reprs (secrets blanked out).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The store URL and node path that name the node at `path` in messages: those of the
    /// enclosing store when this one was opened at a node inside it.
    pub fn locate(&self, path: &str) -> (String, String) {
        let enclosing = self.enclosing.get_or_init(|| match &self.backend {
            Backend::Local(store) => enclosing_store(&self.url, store.root()),
            Backend::Object(_) => None,
        });
        match enclosing {
            Some((url, prefix)) if path.is_empty() => (url.clone(), prefix.clone()),
            Some((url, prefix)) => (url.clone(), join(prefix, path)),
            None => (self.url.clone(), path.to_string()),
        }
    }

    /// The URL as given, to reopen the store elsewhere (pickling).
    pub fn raw_url(&self) -> &str {
        &self.raw_url
    }

    pub fn options(&self) -> &StorageOptions {
        &self.options
    }

    /// zarrs' view of the store (object stores through `AsyncToSyncStorageAdapter`).
    pub fn storage(&self) -> &ReadableListableStorage {
        &self.storage
    }

    /// Whether reads go over the network (and so are worth overlapping with decoding).
    pub fn is_remote(&self) -> bool {
        matches!(self.backend, Backend::Object(_))
    }

    /// An error reading `key`, with secrets scrubbed from the reason.
    pub fn storage_error(&self, key: &str, reason: impl std::fmt::Display) -> Error {
        let reason = self.scrub(reason);
        if is_timeout(&reason) {
            return Error::RequestTimeout {
                url: self.url.clone(),
                key: key.to_string(),
                reason,
            };
        }
        Error::Storage {
            url: self.url.clone(),
            key: key.to_string(),
            reason,
        }
    }

    /// `reason` with the URL's user info and query, and every secret, blanked out.
    fn scrub(&self, reason: impl std::fmt::Display) -> String {
        let mut reason = reason.to_string();
        if self.raw_url != self.url {
            reason = reason.replace(&self.raw_url, &self.url);
        }
        for secret in &self.secrets {
            reason = reason.replace(secret.as_str(), "***");
        }
        reason
    }

    /// `Err(StoreChanged)` when a local store's directory was replaced or deleted after it
    /// was opened: its held-open root now reads a deleted directory (old values, then none).
    /// One `stat`: checked once per read call and whenever a key is missing.
    pub fn check_unchanged(&self, key: &str) -> Result<()> {
        match &self.backend {
            Backend::Local(local) if local.replaced() => Err(Error::StoreChanged {
                url: self.url.clone(),
                key: key.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// `found`, unless it is `None` because the store was replaced: a chunk missing from a
    /// directory being deleted is not a chunk never written (whose value is the fill value).
    fn unless_replaced<T>(&self, key: &str, found: Option<T>) -> Result<Option<T>> {
        if found.is_none() {
            self.check_unchanged(key)?;
        }
        Ok(found)
    }

    /// Reads a whole key; `None` when it does not exist. Blocks the calling thread.
    pub fn get(&self, key: &str) -> Result<Option<Bytes>> {
        match &self.backend {
            Backend::Local(_) => {
                let store_key = self.key(key)?;
                let found = self
                    .storage
                    .get(&store_key)
                    .map_err(|e| self.storage_error(key, e))?;
                self.unless_replaced(key, found)
            }
            Backend::Object(_) => crate::runtime::block_on(self.get_async(key))?,
        }
    }

    /// Reads a whole key without blocking a thread (local files are read in place).
    pub async fn get_async(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.get_tagged_async(key).await?.map(|(bytes, _)| bytes))
    }

    /// Reads a whole key and its `ETag` (remote stores whose server sends one).
    pub async fn get_tagged_async(&self, key: &str) -> Result<Option<(Bytes, Option<String>)>> {
        let Backend::Object(store) = &self.backend else {
            return Ok(self.get(key)?.map(|bytes| (bytes, None)));
        };
        let location = ObjectPath::from(key);
        self.request(key, || async {
            let result = store
                .get_opts(&location, GetOptions::default())
                .await
                .map_err(Failed::Request)?;
            let expected = result.meta.size;
            let e_tag = result.meta.e_tag.clone();
            let retried = e_tag.is_some();
            let bytes = result
                .bytes()
                .await
                .map_err(|error| Failed::Body { error, retried })?;
            check_length(bytes.len() as u64, expected)?;
            Ok((bytes, e_tag))
        })
        .await
    }

    /// Whether this store's server ignores range requests (so partial reads fetch whole objects).
    pub fn ranges_unsupported(&self) -> bool {
        self.ranges_unsupported
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads `range` of a key and the key's whole size; `None` when the key does not exist.
    ///
    /// From a server that cannot serve ranges (it answers with the whole object), the whole
    /// object is fetched once by a plain GET: all of it when `range` starts at 0 (the caller
    /// then has the whole key, `bytes.len() == size`), else `range` of it. The first time, a
    /// warning says so: every partial read of the store now costs whole objects.
    pub async fn get_range_async(
        &self,
        key: &str,
        range: Range<u64>,
    ) -> Result<Option<(Bytes, u64)>> {
        Ok(match self.get_range_read(key, range, None).await? {
            Ranged::Read(read) => Some((read.bytes, read.size)),
            // Only a read that names an `ETag` can find the object changed.
            Ranged::Missing | Ranged::Changed => None,
        })
    }

    /// Reads `range` of a key with what the response says of the whole object (its size and
    /// `ETag`). With `if_match`, only from the object that has that `ETag`: `Ranged::Changed` when
    /// it has another now (`If-Match` refused, or a response naming another `ETag` or none,
    /// from a server that ignores `If-Match`).
    pub async fn get_range_read(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Ranged> {
        let wanted = range.end - range.start;
        // A read without an `ETag` (a local file, a whole object): it cannot vouch for one.
        let untagged = |found: Option<(Bytes, u64)>| match found {
            Some(_) if if_match.is_some() => Ranged::Changed,
            Some((bytes, size)) => Ranged::Read(RangeRead {
                bytes,
                size,
                e_tag: None,
            }),
            None => Ranged::Missing,
        };
        let store = match &self.backend {
            Backend::Local(local) => {
                self.key(key)?;
                let found = local
                    .read_range(key, range)
                    .map_err(|e| self.storage_error(key, e))?;
                return Ok(untagged(self.unless_replaced(key, found)?));
            }
            Backend::Object(store) => store,
        };
        if self.ranges_unsupported() {
            return Ok(untagged(self.get_range_of_whole(key, range).await?));
        }
        let location = ObjectPath::from(key);
        let ranged = self
            .request(key, || async {
                let options = GetOptions {
                    range: Some(GetRange::Bounded(range.clone())),
                    if_match: if_match.map(str::to_string),
                    ..GetOptions::default()
                };
                let result = match store.get_opts(&location, options).await {
                    Ok(result) => result,
                    Err(object_store::Error::Precondition { .. }) => return Ok(None),
                    Err(err) => return Err(Failed::Request(err)),
                };
                let size = result.meta.size;
                if result.range.start != range.start {
                    return Err(Failed::Request(object_store::Error::Generic {
                        store: "fastzarr",
                        source: format!(
                            "asked for bytes from {}, the response starts at {}",
                            range.start, result.range.start
                        )
                        .into(),
                    }));
                }
                let e_tag = result.meta.e_tag.clone();
                if if_match.is_some() && e_tag.as_deref() != if_match {
                    return Ok(None);
                }
                let retried = e_tag.is_some();
                let bytes = result
                    .bytes()
                    .await
                    .map_err(|error| Failed::Body { error, retried })?;
                check_length(
                    bytes.len() as u64,
                    wanted.min(size.saturating_sub(range.start)),
                )?;
                Ok(Some(RangeRead { bytes, size, e_tag }))
            })
            .await;
        match ranged {
            Ok(Some(Some(read))) => Ok(Ranged::Read(read)),
            Ok(Some(None)) => Ok(Ranged::Changed),
            Ok(None) => Ok(Ranged::Missing),
            Err(Error::Storage { reason, .. }) if self.note_ranges_refused(&reason) => {
                Ok(untagged(self.get_range_of_whole(key, range).await?))
            }
            Err(err) => Err(err),
        }
    }

    /// Whether `reason` (a failed request's) says the server refused a range request; if so,
    /// partial reads of this store fetch whole objects from now on, and a warning says so once.
    pub fn note_ranges_refused(&self, reason: &str) -> bool {
        if !NOT_PARTIAL.iter().any(|text| reason.contains(text)) {
            return false;
        }
        if !self
            .ranges_unsupported
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            WARNINGS
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(format!(
                    "the server of {} does not serve byte ranges: partial reads of it \
                     fetch whole objects",
                    self.url
                ));
        }
        true
    }

    /// `range` of a key (all of it from a `range` starting at 0), by one whole-object GET.
    async fn get_range_of_whole(
        &self,
        key: &str,
        range: Range<u64>,
    ) -> Result<Option<(Bytes, u64)>> {
        let Some(bytes) = self.get_async(key).await? else {
            return Ok(None);
        };
        let size = bytes.len() as u64;
        if range.start == 0 {
            return Ok(Some((bytes, size)));
        }
        let start = usize::try_from(range.start.min(size)).unwrap_or(bytes.len());
        let end = usize::try_from(range.end.clamp(range.start.min(size), size)).unwrap_or(start);
        Ok(Some((bytes.slice(start..end), size)))
    }

    /// Runs one request under a permit of the in-flight bound. A response whose body broke off
    /// or came short is asked for again (twice at most), unless `object_store` already did: it
    /// resumes the bodies of responses that carry an `ETag`. Not found is `None`.
    async fn request<T, F, Fut>(&self, key: &str, attempt: F) -> Result<Option<T>>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, Failed>>,
    {
        const ATTEMPTS: usize = 3;
        let (_, permits) = crate::runtime::io()?;
        let mut last = None;
        let mut tries = String::new();
        for attempt_number in 1..=ATTEMPTS {
            let outcome = {
                let _permit = permits
                    .acquire()
                    .await
                    .map_err(|e| Error::Panic(e.to_string()))?;
                attempt().await
            };
            match outcome {
                Ok(value) => return Ok(Some(value)),
                Err(Failed::Request(object_store::Error::NotFound { .. })) => return Ok(None),
                Err(Failed::Request(err)) => return Err(self.storage_error(key, error_chain(&err))),
                Err(Failed::Body { error, retried }) => {
                    last = Some(error);
                    if retried {
                        tries = "after the store client's own retries".into();
                        break;
                    }
                    tries = format!("{attempt_number} tries");
                }
            }
        }
        let reason = last.map_or_else(String::new, |e| error_chain(&e));
        if crate::inventory::is_metadata_key(key) {
            return Err(self.storage_error(key, reason));
        }
        // A chunk whose every response broke off is unreadable data, like a truncated file.
        let reason = self.scrub(format!("every response was cut short ({tries}): {reason}"));
        let (url, path) = self.locate(array_of_chunk_key(key));
        Err(Error::CorruptChunk {
            url,
            path,
            key: self.locate(key).1,
            reason,
        })
    }

    /// Every object of an object store as `key \t size \t last modified \t ETag \n` lines,
    /// sorted: the raw material of a remote source's fingerprint (any object rewritten
    /// changes its line). `None` for a local store (`write::tree_listing` covers those).
    pub fn object_listing(&self) -> Result<Option<Vec<u8>>> {
        let Backend::Object(store) = &self.backend else {
            return Ok(None);
        };
        let mut lines: Vec<String> = crate::runtime::block_on(async {
            use futures::TryStreamExt;
            let (_, permits) = crate::runtime::io()?;
            let _permit = permits
                .acquire()
                .await
                .map_err(|e| Error::Panic(e.to_string()))?;
            store
                .list(None)
                .map_ok(|meta| {
                    format!(
                        "{}\t{}\t{}\t{}\n",
                        meta.location,
                        meta.size,
                        meta.last_modified.timestamp_nanos_opt().unwrap_or_default(),
                        meta.e_tag.unwrap_or_default()
                    )
                })
                .try_collect()
                .await
                .map_err(|e| self.storage_error("", error_chain(&e)))
        })??;
        lines.sort_unstable();
        Ok(Some(lines.concat().into_bytes()))
    }

    /// Names of the child prefixes directly below `prefix` ("" is the root).
    pub fn child_names(&self, prefix: &str) -> Result<Vec<String>> {
        let names: Vec<String> = match &self.backend {
            Backend::Local(_) => {
                let store_prefix =
                    StorePrefix::new(prefix).map_err(|e| Error::InvalidArgument(e.to_string()))?;
                let listing = self
                    .storage
                    .list_dir(&store_prefix)
                    .map_err(|e| self.storage_error(prefix, e))?;
                listing
                    .prefixes()
                    .iter()
                    .map(|p| p.as_str().to_string())
                    .collect()
            }
            Backend::Object(store) => {
                let location = ObjectPath::from(prefix.trim_end_matches('/'));
                let listing = crate::runtime::block_on(async {
                    let (_, permits) = crate::runtime::io()?;
                    let _permit = permits
                        .acquire()
                        .await
                        .map_err(|e| Error::Panic(e.to_string()))?;
                    let location = (!prefix.is_empty()).then_some(&location);
                    store
                        .list_with_delimiter(location)
                        .await
                        .map_err(|e| self.storage_error(prefix, error_chain(&e)))
                })??;
                listing
                    .common_prefixes
                    .iter()
                    .map(|p| format!("{p}/"))
                    .collect()
            }
        };
        Ok(names
            .iter()
            .filter_map(|p| {
                let name = p.strip_prefix(prefix)?.trim_end_matches('/');
                (!name.is_empty()).then(|| name.to_string())
            })
            .collect())
    }

    fn key(&self, key: &str) -> Result<StoreKey> {
        StoreKey::new(key)
            .map_err(|e| Error::InvalidArgument(format!("invalid key in store {}: {e}", self.url)))
    }
}

/// What `object_store` says when a server answers a range request with the whole object (its
/// HTTP store, and the client of the cloud stores).
const NOT_PARTIAL: [&str; 2] = ["Range request not supported", "non-partial response"];

/// Why a request failed: before its response (`object_store` has retried what it retries),
/// or while its body was read.
enum Failed {
    Request(object_store::Error),
    /// The body broke off or came short or long; `retried`: `object_store` already asked
    /// again for the rest (it does for responses that carry an `ETag`).
    Body {
        error: object_store::Error,
        retried: bool,
    },
}

/// A response body shorter (or longer) than promised is worth asking again for: no layer
/// below checks it.
fn check_length(got: u64, expected: u64) -> std::result::Result<(), Failed> {
    if got == expected {
        Ok(())
    } else {
        Err(Failed::Body {
            error: object_store::Error::Generic {
                store: "fastzarr",
                source: format!("response body cut short: {got} of {expected} bytes").into(),
            },
            retried: false,
        })
    }
}

fn is_timeout(reason: &str) -> bool {
    let text = reason.to_ascii_lowercase();
    text.contains("timed out") || text.contains("deadline has elapsed")
}

/// An error and its sources, each once: `object_store`'s top-level message often hides
/// the cause ("operation timed out") in its source chain.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// Parts of a URL that may be secrets: its user info and its query, as written and as
/// decoded (either may end up in a message).
pub(crate) fn url_secrets(url: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    if let Some((_, rest)) = url.split_once("://") {
        // As written: the URL may not parse, and messages may quote it raw.
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if let Some((user_info, _)) = authority.rsplit_once('@') {
            secrets.push(user_info.to_string());
            if let Some((_, password)) = user_info.split_once(':') {
                secrets.push(password.to_string());
            }
        }
        if let Some((_, query)) = rest.split_once('?') {
            secrets.push(query.to_string());
            secrets.extend(
                query
                    .split('&')
                    .filter_map(|pair| pair.split_once('=').map(|(_, v)| v.to_string())),
            );
        }
    }
    if let Ok(parsed) = url::Url::parse(url) {
        secrets.push(parsed.username().to_string());
        secrets.extend(parsed.password().map(ToString::to_string));
        secrets.extend(parsed.query_pairs().map(|(_, v)| v.into_owned()));
    }
    secrets.retain(|s| s.len() >= 3);
    secrets.sort();
    secrets.dedup();
    secrets
}

fn prefixed(store: Arc<dyn ObjectStore>, prefix: &str) -> Arc<dyn ObjectStore> {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        store
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(
            store,
            ObjectPath::from(prefix),
        ))
    }
}

/// zarrs' sync storage over an object store, blocking on fastzarr's runtime.
fn object_storage(store: &Arc<dyn ObjectStore>) -> ReadableListableStorage {
    let asynchronous = Arc::new(zarrs_object_store::AsyncObjectStore::new(store.clone()));
    Arc::new(
        zarrs_storage::storage_adapter::async_to_sync::AsyncToSyncStorageAdapter::new(
            asynchronous,
            crate::runtime::BlockOn,
        ),
    )
}

fn local(
    store: Arc<crate::paths::ConfinedStore>,
) -> (ReadableListableStorage, Backend, Vec<String>) {
    (store.clone(), Backend::Local(store), Vec::new())
}

fn open_local(display_url: &str, path: &str) -> Result<Arc<crate::paths::ConfinedStore>> {
    let path = PathBuf::from(path);
    if path.is_file() {
        return Err(Error::NotAStore {
            url: display_url.to_string(),
        });
    }
    if !path.is_dir() && !reappears_after_replace(&path) {
        return Err(Error::StoreNotFound {
            url: display_url.to_string(),
        });
    }
    // Confined: no key, symlink or `..` reads outside the store's directory (paths.rs).
    let store = crate::paths::ConfinedStore::new(&path).map_err(|e| Error::Storage {
        url: display_url.to_string(),
        key: String::new(),
        reason: e.to_string(),
    })?;
    Ok(Arc::new(store))
}

/// How long an open that finds no store waits for a replace in progress to finish.
const REPLACE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Whether a missing store at `path` shows up within [`REPLACE_WAIT`] because a writer is
/// replacing it by two renames (where the filesystem cannot exchange two directories, on NFS
/// say): its old store is then a sibling `.NAME.fastzarr-old-*` and the new one is renamed to
/// `path` a moment later. Without such a sibling the store is simply not there: no wait.
fn reappears_after_replace(path: &std::path::Path) -> bool {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return false;
    };
    let parent = if parent.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        parent
    };
    let prefix = format!(".{}.fastzarr-old-", name.to_string_lossy());
    let replacing = || {
        std::fs::read_dir(parent).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        })
    };
    let started = std::time::Instant::now();
    while replacing() && started.elapsed() < REPLACE_WAIT {
        std::thread::sleep(std::time::Duration::from_millis(2));
        if path.is_dir() {
            return true;
        }
    }
    path.is_dir()
}

/// Whether the directory holds Zarr group metadata.
fn is_group_dir(dir: &std::path::Path) -> bool {
    [".zgroup", ".zmetadata"]
        .iter()
        .any(|name| dir.join(name).is_file())
        || std::fs::read(dir.join("zarr.json")).is_ok_and(|bytes| {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .is_ok_and(|value| value["node_type"] == "group")
        })
}

/// The enclosing store of a local store whose `root` is a node inside other Zarr groups:
/// the topmost of the unbroken line of groups above it, as `(URL, path of root in it)`. The
/// URL drops as many trailing parts of `url` as levels were climbed, or is the directory's
/// own path when `url` cannot be cut that way (`..`, `.` at its end).
fn enclosing_store(url: &str, root: &std::path::Path) -> Option<(String, String)> {
    let mut names = Vec::new();
    let mut top = root;
    while let (Some(parent), Some(name)) = (top.parent(), top.file_name()) {
        if !is_group_dir(parent) {
            break;
        }
        names.push(name.to_string_lossy().into_owned());
        top = parent;
    }
    if names.is_empty() {
        return None;
    }
    names.reverse();
    let mut cut = url.trim_end_matches('/');
    for name in names.iter().rev() {
        cut = match cut.rsplit_once('/') {
            Some((rest, last)) if last == name && !rest.is_empty() => rest,
            _ => "",
        };
    }
    let shown = if cut.is_empty() || cut.ends_with(':') {
        top.display().to_string()
    } else {
        cut.to_string()
    };
    Some((shown, names.join("/")))
}

/// The array a chunk key belongs to: what precedes `/c/` (v3 default keys) or the last `/`.
fn array_of_chunk_key(key: &str) -> &str {
    if let Some((array, _)) = key.split_once("/c/") {
        return array;
    }
    key.strip_prefix("c/").map_or_else(
        || key.rsplit_once('/').map_or("", |(array, _)| array),
        |_| "",
    )
}

/// Joins a node path ("" is the root) and a key below it.
pub fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enclosing_store_of_a_node_opened_by_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let store = root.join("b.zarr");
        std::fs::create_dir_all(store.join("grp/var")).unwrap();
        std::fs::write(store.join(".zgroup"), r#"{"zarr_format": 2}"#).unwrap();
        std::fs::write(store.join("grp/zarr.json"), r#"{"node_type": "group"}"#).unwrap();
        let shown = store.display().to_string();

        let var = store.join("grp/var");
        let url = format!("file://{}/", var.display());
        assert_eq!(
            enclosing_store(&url, &var),
            Some((format!("file://{shown}"), "grp/var".to_string()))
        );
        // A URL that cannot be cut part by part names the directory itself.
        let dotted = format!("{}/.", var.display());
        assert_eq!(
            enclosing_store(&dotted, &var),
            Some((shown.clone(), "grp/var".to_string()))
        );
        // The store itself, and a directory outside any store, have none.
        assert_eq!(enclosing_store(&shown, &store), None);
        assert_eq!(enclosing_store(&root.display().to_string(), &root), None);
    }
}
