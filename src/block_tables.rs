//! The blosc headers and block tables of remote chunks, remembered once read.
//!
//! Reading part of a remote blosc chunk takes two dependent requests: its header and block
//! table, then the blocks that hold the wanted bytes. A point's series read again (the next
//! training run, the next feature of the same archive) needs the same tables, so each is kept
//! here with the `ETag` and size of the object it came from. A later read asks for the blocks
//! alone, from the object only if it still has that `ETag` (`If-Match`; the response's own `ETag`
//! is compared too, for servers that ignore the header), and forgets the table otherwise.
//! Tables of objects without an `ETag` are not kept: nothing could tell that they went stale.
//!
//! The tables live as long as the process, within a byte budget (oldest dropped first), and
//! can be exported and imported (`export`, `import`) so that a validated cache carries them to
//! the next process.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

/// The most table bytes kept at once: about 30,000 tables of 2 kB.
const BUDGET: usize = 64 << 20;

/// One chunk's header and block table, and the object they were read from.
#[derive(Debug, PartialEq, Eq)]
pub struct Remembered {
    /// The chunk's first bytes: the blosc header and the block table.
    pub head: Vec<u8>,
    /// The object's whole size.
    pub size: u64,
    /// The object's `ETag` when the head was read.
    pub e_tag: String,
}

/// Where a chunk lives: its store's URL (as shown, without secrets) and its key.
type Location = (String, String);

#[derive(Default)]
pub(crate) struct Tables {
    entries: HashMap<Location, Arc<Remembered>>,
    /// Insertion order, for dropping the oldest; may name entries already replaced.
    order: VecDeque<Location>,
    bytes: usize,
}

pub(crate) static TABLES: Mutex<Option<Tables>> = Mutex::new(None);

fn cost(location: &Location, entry: &Remembered) -> usize {
    location.0.len() + location.1.len() + entry.head.len() + entry.e_tag.len() + 64
}

/// The table remembered for `key` of the store at `url`.
pub fn recall(url: &str, key: &str) -> Option<Arc<Remembered>> {
    let guard = TABLES.lock().unwrap_or_else(PoisonError::into_inner);
    let tables = guard.as_ref()?;
    tables
        .entries
        .get(&(url.to_string(), key.to_string()))
        .cloned()
}

/// Remembers `entry` for `key` of the store at `url`, replacing what was there.
pub fn remember(url: &str, key: &str, entry: Remembered) {
    crate::fork::install_handlers();
    let location = (url.to_string(), key.to_string());
    let added = cost(&location, &entry);
    if added > BUDGET {
        return;
    }
    let mut guard = TABLES.lock().unwrap_or_else(PoisonError::into_inner);
    let tables = guard.get_or_insert_with(Tables::default);
    if let Some(old) = tables.entries.insert(location.clone(), Arc::new(entry)) {
        tables.bytes -= cost(&location, &old);
    }
    tables.order.push_back(location);
    tables.bytes += added;
    while tables.bytes > BUDGET {
        let Some(oldest) = tables.order.pop_front() else {
            break;
        };
        // An older mention of a key replaced since stays in the order; its entry is the
        // newer one, dropped with it (the newest mention is still queued behind).
        if let Some(old) = tables.entries.remove(&oldest) {
            tables.bytes -= cost(&oldest, &old);
        }
    }
    if tables.order.len() > 2 * tables.entries.len() + 1024 {
        let entries = &tables.entries;
        let mut seen = std::collections::HashSet::new();
        // Keep each location's last mention only.
        let kept: Vec<Location> = tables
            .order
            .iter()
            .rev()
            .filter(|l| entries.contains_key(*l) && seen.insert((*l).clone()))
            .cloned()
            .collect();
        tables.order = kept.into_iter().rev().collect();
    }
}

/// Forgets the table of `key` of the store at `url` (its object changed).
pub fn forget(url: &str, key: &str) {
    let mut guard = TABLES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(tables) = guard.as_mut() {
        let location = (url.to_string(), key.to_string());
        if let Some(old) = tables.entries.remove(&location) {
            tables.bytes -= cost(&location, &old);
        }
    }
}

/// Forgets every table.
pub fn clear() {
    *TABLES.lock().unwrap_or_else(PoisonError::into_inner) = None;
}

/// How many tables are remembered.
pub fn len() -> usize {
    let guard = TABLES.lock().unwrap_or_else(PoisonError::into_inner);
    guard.as_ref().map_or(0, |t| t.entries.len())
}

/// The format of an export: a magic, then per table the lengths and bytes of the key, the
/// `ETag` and the head, and the object's size (little-endian).
const MAGIC: &[u8; 8] = b"FZBT\x00\x00\x00\x01";

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// The tables remembered for the store at `url`, as bytes for `import`.
pub fn export(url: &str) -> Vec<u8> {
    let guard = TABLES.lock().unwrap_or_else(PoisonError::into_inner);
    let mut out = MAGIC.to_vec();
    let Some(tables) = guard.as_ref() else {
        return out;
    };
    let mut mine: Vec<(&String, &Arc<Remembered>)> = tables
        .entries
        .iter()
        .filter(|((u, _), _)| u == url)
        .map(|((_, key), entry)| (key, entry))
        .collect();
    mine.sort_unstable_by_key(|(key, _)| *key);
    for (key, entry) in mine {
        put(&mut out, key.as_bytes());
        put(&mut out, entry.e_tag.as_bytes());
        put(&mut out, &entry.head);
        out.extend_from_slice(&entry.size.to_le_bytes());
    }
    out
}

/// Why an export could not be imported.
#[derive(Debug, PartialEq, Eq)]
pub struct BadExport(pub &'static str);

/// Remembers the tables of `bytes` (made by `export`) for the store at `url`; how many.
/// Nothing is remembered from bytes that are not a whole, well-formed export.
pub fn import(url: &str, bytes: &[u8]) -> Result<usize, BadExport> {
    struct Reader<'a>(&'a [u8]);
    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8], BadExport> {
            if n > self.0.len() {
                return Err(BadExport("cut short"));
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(head)
        }
        fn number(&mut self) -> Result<u64, BadExport> {
            let bytes = self.take(8)?;
            Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
        }
        fn field(&mut self) -> Result<&'a [u8], BadExport> {
            let len = usize::try_from(self.number()?).map_err(|_| BadExport("length too large"))?;
            self.take(len)
        }
    }
    let mut reader = Reader(bytes);
    if reader.take(MAGIC.len())? != MAGIC {
        return Err(BadExport("not an export of block tables"));
    }
    let mut found = Vec::new();
    while !reader.0.is_empty() {
        let key = std::str::from_utf8(reader.field()?).map_err(|_| BadExport("key not UTF-8"))?;
        let e_tag =
            std::str::from_utf8(reader.field()?).map_err(|_| BadExport("ETag not UTF-8"))?;
        let head = reader.field()?;
        let size = reader.number()?;
        if e_tag.is_empty() || head.len() as u64 > size {
            return Err(BadExport(
                "a table larger than its object, or without an ETag",
            ));
        }
        found.push((
            key.to_string(),
            Remembered {
                head: head.to_vec(),
                size,
                e_tag: e_tag.to_string(),
            },
        ));
    }
    let count = found.len();
    for (key, entry) in found {
        remember(url, &key, entry);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8) -> Remembered {
        Remembered {
            head: vec![n; 32],
            size: 1000,
            e_tag: format!("\"{n}\""),
        }
    }

    // One test, since the tables are process-wide.
    #[test]
    fn remember_recall_forget_export_import() {
        let url = "https://example.test/tables.zarr";
        remember(url, "t/0.0", entry(1));
        remember(url, "t/0.1", entry(2));
        remember(url, "t/0.1", entry(3));
        assert_eq!(recall(url, "t/0.1").as_deref(), Some(&entry(3)));
        assert!(recall("https://example.test/other.zarr", "t/0.1").is_none());

        let exported = export(url);
        forget(url, "t/0.0");
        assert!(recall(url, "t/0.0").is_none());
        assert_eq!(import(url, &exported), Ok(2));
        assert_eq!(recall(url, "t/0.0").as_deref(), Some(&entry(1)));

        // A damaged export remembers nothing.
        forget(url, "t/0.0");
        assert!(import(url, &exported[..exported.len() - 3]).is_err());
        assert!(import(url, b"not an export").is_err());
        assert!(recall(url, "t/0.0").is_none());
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(import(url, &huge).is_err());

        // The budget drops the oldest tables first.
        for i in 0..(BUDGET / 4096 + 10) {
            remember(
                url,
                &format!("big/{i}"),
                Remembered {
                    head: vec![0; 4000],
                    size: 8000,
                    e_tag: "\"e\"".into(),
                },
            );
        }
        assert!(recall(url, "big/0").is_none());
        assert!(recall(url, &format!("big/{}", BUDGET / 4096 + 9)).is_some());
        let guard = TABLES.lock().unwrap();
        assert!(guard.as_ref().unwrap().bytes <= BUDGET);
        drop(guard);
        clear();
        assert_eq!(len(), 0);
    }
}
