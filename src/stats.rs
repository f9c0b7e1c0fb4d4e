//! What a read did: chunks, bytes, blosc blocks, and where the time went.
//!
//! Counted from every decode thread with relaxed atomics (they are only read after
//! the pass ends), so counting costs nothing measurable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

#[derive(Debug, Default)]
pub struct ReadCounters {
    chunks: AtomicU64,
    chunks_missing: AtomicU64,
    chunks_partial: AtomicU64,
    bytes_read: AtomicU64,
    requests: AtomicU64,
    bytes_decoded: AtomicU64,
    blocks_decoded: AtomicU64,
    blocks_total: AtomicU64,
    fetch_ns: AtomicU64,
    decode_ns: AtomicU64,
}

/// A snapshot of [`ReadCounters`] after a read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReadStats {
    /// Chunks the selections touched (each fetched once).
    pub chunks: u64,
    /// Of those, chunks absent from the store (read as the fill value).
    pub chunks_missing: u64,
    /// Chunks of which only a region was decoded.
    pub chunks_partial: u64,
    /// Encoded bytes fetched from the store.
    pub bytes_read: u64,
    /// Requests made to the stores for chunk data (a partial blosc read makes several).
    pub requests: u64,
    /// Bytes produced by decoding (whole chunks, or the blosc blocks decoded).
    pub bytes_decoded: u64,
    /// Blosc blocks decoded in partially decoded chunks, and how many those chunks hold.
    pub blocks_decoded: u64,
    pub blocks_total: u64,
    /// Seconds spent fetching and decoding, summed over threads.
    pub fetch_seconds: f64,
    pub decode_seconds: f64,
}

impl ReadStats {
    /// The counts of two passes together.
    #[must_use]
    pub fn plus(self, other: ReadStats) -> ReadStats {
        ReadStats {
            chunks: self.chunks + other.chunks,
            chunks_missing: self.chunks_missing + other.chunks_missing,
            chunks_partial: self.chunks_partial + other.chunks_partial,
            bytes_read: self.bytes_read + other.bytes_read,
            requests: self.requests + other.requests,
            bytes_decoded: self.bytes_decoded + other.bytes_decoded,
            blocks_decoded: self.blocks_decoded + other.blocks_decoded,
            blocks_total: self.blocks_total + other.blocks_total,
            fetch_seconds: self.fetch_seconds + other.fetch_seconds,
            decode_seconds: self.decode_seconds + other.decode_seconds,
        }
    }
}

fn add(counter: &AtomicU64, value: u64) {
    counter.fetch_add(value, Ordering::Relaxed);
}

fn nanos_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl ReadCounters {
    pub fn fetched(&self, started: Instant, bytes: Option<usize>, requests: u64) {
        add(&self.chunks, 1);
        add(&self.requests, requests);
        add(&self.fetch_ns, nanos_since(started));
        match bytes {
            Some(n) => add(&self.bytes_read, n as u64),
            None => add(&self.chunks_missing, 1),
        }
    }

    /// Requests and bytes read after a chunk's fetch was counted (a shard read part by part).
    pub fn read_more(&self, requests: u64, bytes: u64) {
        add(&self.requests, requests);
        add(&self.bytes_read, bytes);
    }

    pub fn decoded(&self, started: Instant, bytes: u64, partial: bool) {
        add(&self.decode_ns, nanos_since(started));
        add(&self.bytes_decoded, bytes);
        if partial {
            add(&self.chunks_partial, 1);
        }
    }

    pub fn blocks(&self, decoded: usize, total: usize) {
        add(&self.blocks_decoded, decoded as u64);
        add(&self.blocks_total, total as u64);
    }

    pub fn snapshot(&self) -> ReadStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ReadStats {
            chunks: get(&self.chunks),
            chunks_missing: get(&self.chunks_missing),
            chunks_partial: get(&self.chunks_partial),
            bytes_read: get(&self.bytes_read),
            requests: get(&self.requests),
            bytes_decoded: get(&self.bytes_decoded),
            blocks_decoded: get(&self.blocks_decoded),
            blocks_total: get(&self.blocks_total),
            fetch_seconds: get(&self.fetch_ns) as f64 / 1e9,
            decode_seconds: get(&self.decode_ns) as f64 / 1e9,
        }
    }
}
