//! Fetching one chunk: the whole key, or — for a blosc chunk needed only in part — its
//! header and block table by one small range request, then only the compressed blocks
//! that hold the wanted bytes (neighbours coalesced into one request).
//!
//! The partial result is a buffer of the chunk's full compressed length in which only
//! the fetched bytes are real; `blosc::ranges::BlockReader` reads it, and it decodes only
//! the blocks that were fetched. Anything unexpected in the header falls back to
//! fetching the whole chunk, whose decoding then reports the corruption properly.

use bytes::Bytes;

use crate::array::ArrayHandle;
use crate::block_tables;
use crate::blosc::ranges::{region_byte_ranges, BloscHeader};
use crate::errors::Result;
use crate::plan::ChunkPart;
use crate::store::{Ranged, Store};
use crate::zeroed::ZeroedBuffer;

use crate::blosc::HEADER_LEN;
/// Blocks whose compressed spans are closer than this are fetched by one request.
const COALESCE_GAP: u64 = 16 * 1024;
/// When the wanted blocks are more than this share of the chunk, fetch the rest whole.
const WHOLE_SHARE: f64 = 0.5;

/// How a chunk is fetched.
#[derive(Debug, Clone)]
pub enum FetchPlan {
    Whole,
    /// A remote plain-blosc chunk of `chunk_bytes` decoded bytes, fetched whole; its header and
    /// block table are remembered (see [`block_tables`]) so that a later partial read of it
    /// asks for its blocks at once.
    WholeBlosc {
        chunk_bytes: usize,
    },
    /// A plain-blosc chunk of `chunk_bytes` decoded bytes, of which only `ranges`
    /// (`(start, len)` in decoded bytes) are wanted.
    BloscBlocks {
        chunk_bytes: usize,
        ranges: Vec<(usize, usize)>,
    },
    /// A shard needed only in part: nothing is fetched up front; the decode task reads
    /// the shard index and then only the inner chunks it needs (zarrs' sharding partial
    /// decoder over byte-range reads of the store).
    ShardParts,
}

/// How to fetch the chunk `chunk` of `array` of which `parts` are wanted: whole chunks are
/// fetched whole; a plain-blosc chunk needed only in part (points, a small box) is fetched
/// block by block, and a shard needed in a few small boxes part by part.
pub fn plan(array: &ArrayHandle, chunk: &[u64], parts: &[(usize, ChunkPart)]) -> FetchPlan {
    /// Beyond this many byte runs, working out blocks costs more than it saves.
    const MAX_RANGES: usize = 65_536;
    /// Each part of a shard read in place is one round of range requests.
    const MAX_SHARD_PARTS: usize = 16;
    let Ok(chunk_shape) = array.zarrs().chunk_shape(chunk) else {
        return FetchPlan::Whole;
    };
    let chunk_shape: Vec<u64> = chunk_shape.iter().map(|n| n.get()).collect();
    if array.partial_shards() {
        if array.store().ranges_unsupported() {
            return FetchPlan::Whole;
        }
        // A shard of which every part is a small box of inner chunks: read only those.
        let elements: u64 = chunk_shape.iter().product();
        let wanted: u64 = parts
            .iter()
            .map(|(_, p)| p.region_shape.iter().product::<u64>())
            .sum();
        return if parts.len() <= MAX_SHARD_PARTS && wanted * 2 <= elements {
            FetchPlan::ShardParts
        } else {
            FetchPlan::Whole
        };
    }
    if !array.plain_blosc() || !crate::runtime::partial_decoding() {
        return FetchPlan::Whole;
    }
    let itemsize = array.dtype().itemsize;
    let chunk_bytes = chunk_shape.iter().product::<u64>() as usize * itemsize;
    if chunk_bytes <= array.blosc_block() {
        // One blosc block at most: there is nothing to skip.
        return FetchPlan::Whole;
    }
    let mut ranges = Vec::new();
    for (_, part) in parts {
        ranges.extend(region_byte_ranges(
            &chunk_shape,
            &part.region_start,
            &part.region_shape,
            itemsize,
        ));
        if ranges.len() > MAX_RANGES {
            return FetchPlan::Whole;
        }
    }
    let wanted: usize = ranges.iter().map(|r| r.1).sum();
    if wanted * 2 > chunk_bytes {
        return FetchPlan::Whole;
    }
    // Locally a second read costs nothing and decoding block by block wastes no output.
    if array.store().is_remote() && !worth_a_round_trip(array, chunk, chunk_bytes, &ranges) {
        return FetchPlan::WholeBlosc { chunk_bytes };
    }
    FetchPlan::BloscBlocks {
        chunk_bytes,
        ranges,
    }
}

/// Whether reading `ranges` of a remote chunk block by block beats reading it whole. With its
/// table remembered, always: the blocks alone, at once. Otherwise the header and table come
/// first, a round trip more: worth it only where that saves more than what a request moves in
/// about one round trip while hundreds share the machine's bandwidth (256 KiB: 256 requests
/// in flight on 10 Gbit/s get ~5 MB/s each, so 50 ms), and not when most blocks are wanted
/// anyway.
fn worth_a_round_trip(
    array: &ArrayHandle,
    chunk: &[u64],
    chunk_bytes: usize,
    ranges: &[(usize, usize)],
) -> bool {
    let key = array.chunk_key(chunk);
    if remembered_spans(array.store(), &key, chunk_bytes, ranges).is_some() {
        return true;
    }
    let block = array.blosc_block().max(1);
    let touched = crate::blosc::ranges::blocks_touched(ranges, block).len();
    let saved = chunk_bytes.saturating_sub(touched * block);
    saved >= REMOTE_MIN_SAVING && !most_blocks_wanted(ranges, block, chunk_bytes)
}

/// The fewest decoded bytes a partial read of a remote chunk must save to be worth its extra
/// round trip (see [`worth_a_round_trip`]).
const REMOTE_MIN_SAVING: usize = 256 * 1024;

/// Whether `ranges` of a chunk would touch most of its blocks even if its blocks were as
/// small as `block` bytes: then reading block by block only adds a round trip (a point's
/// series spread over every block of a chunk, as in batch stores), and a remote chunk is
/// read whole.
fn most_blocks_wanted(ranges: &[(usize, usize)], block: usize, chunk_bytes: usize) -> bool {
    let block = block.clamp(1, chunk_bytes.max(1));
    let blocks = chunk_bytes.div_ceil(block);
    if blocks <= 1 {
        return ranges.iter().any(|r| r.1 > 0); // one block, needed whatever is wanted
    }
    crate::blosc::ranges::blocks_touched(ranges, block).len() * 2 > blocks
}

/// A fetched chunk.
#[derive(Debug)]
pub enum Fetched {
    Missing,
    Whole(Bytes),
    /// The chunk's compressed length, real only in the header, the block table and the
    /// blocks the plan needs: for `BlockReader` alone.
    Sparse(ZeroedBuffer),
    /// Not fetched yet: read by the decode task, range by range (`FetchPlan::ShardParts`).
    Deferred,
}

/// A fetched chunk and what fetching it cost.
#[derive(Debug)]
pub struct FetchOutcome {
    pub fetched: Fetched,
    pub bytes: u64,
    pub requests: u64,
}

impl FetchOutcome {
    fn whole(bytes: Option<Bytes>, requests: u64, earlier: u64) -> Self {
        let len = bytes.as_ref().map_or(0, |b| b.len() as u64);
        Self {
            fetched: bytes.map_or(Fetched::Missing, Fetched::Whole),
            bytes: earlier + len,
            requests,
        }
    }
}

/// Fetches `key` of `store` as `plan` says.
pub async fn fetch(store: &Store, key: &str, plan: &FetchPlan) -> Result<FetchOutcome> {
    match plan {
        FetchPlan::Whole => Ok(FetchOutcome::whole(store.get_async(key).await?, 1, 0)),
        FetchPlan::WholeBlosc { chunk_bytes } => {
            let found = store.get_tagged_async(key).await?;
            if let Some((bytes, Some(e_tag))) = &found {
                remember_table(store, key, bytes, *chunk_bytes, e_tag);
            }
            Ok(FetchOutcome::whole(found.map(|(bytes, _)| bytes), 1, 0))
        }
        FetchPlan::BloscBlocks {
            chunk_bytes,
            ranges,
        } => fetch_blosc_blocks(store, key, *chunk_bytes, ranges).await,
        FetchPlan::ShardParts => Ok(FetchOutcome {
            fetched: Fetched::Deferred,
            bytes: 0,
            requests: 0,
        }),
    }
}

fn u32_at(buffer: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(
        buffer[at..at + 4].try_into().expect("4 bytes"),
    ))
}

/// A chunk's header and block table, read or remembered.
struct Head {
    /// The chunk's first bytes: at least the header and the block table.
    bytes: Vec<u8>,
    /// The chunk's whole compressed length.
    size: usize,
    header: BloscHeader,
    table_end: usize,
    /// The object's `ETag`, where it has a strong one: later requests of this read ask for that
    /// object only (`If-Match`), so that blocks never come from another version of the chunk.
    e_tag: Option<String>,
}

/// The header and table of `bytes` (a chunk's first bytes, of `size` in all), when the
/// chunk is one to read block by block.
fn parse_head(
    bytes: Vec<u8>,
    size: usize,
    chunk_bytes: usize,
    e_tag: Option<String>,
) -> Option<Head> {
    let header = match BloscHeader::parse_prefix(&bytes, size, chunk_bytes) {
        Ok(header) if header.blocksize > 0 && header.typesize > 0 => header,
        _ => return None,
    };
    let table_end = table_end(&header);
    (table_end <= size).then_some(Head {
        bytes,
        size,
        header,
        table_end,
        e_tag,
    })
}

/// Remembers the header and block table of `bytes`, a whole blosc chunk with `e_tag`, when
/// it is one to read block by block.
fn remember_table(store: &Store, key: &str, bytes: &[u8], chunk_bytes: usize, e_tag: &str) {
    let Some(e_tag) = strong(Some(e_tag.to_string())) else {
        return;
    };
    let Ok(header) = BloscHeader::parse(bytes, chunk_bytes) else {
        return;
    };
    let table_end = table_end(&header);
    if header.nblocks() < 2 || table_end > bytes.len() {
        return; // one block: nothing to read in part
    }
    block_tables::remember(
        store.url(),
        key,
        block_tables::Remembered {
            head: bytes[..table_end].to_vec(),
            size: bytes.len() as u64,
            e_tag,
        },
    );
}

/// Remembers `head` (read from the object `key` of `store`) when it has an `ETag` to check it by.
fn remember_head(store: &Store, key: &str, head: &Head) {
    if let Some(e_tag) = &head.e_tag {
        block_tables::remember(
            store.url(),
            key,
            block_tables::Remembered {
                head: head.bytes[..head.table_end].to_vec(),
                size: head.size as u64,
                e_tag: e_tag.clone(),
            },
        );
    }
}

/// Reads and remembers the blosc header and block table of the chunk `chunk` of `array`, if a
/// read of one element of it would read it block by block (a remote plain-blosc chunk, large
/// enough, see [`plan`]) and none is remembered yet: the first of a point read's two dependent
/// requests, made before the point's position in the chunk is known. Returns the requests made
/// and the bytes they fetched.
pub async fn read_ahead_table(array: &ArrayHandle, chunk: &[u64]) -> Result<(u64, u64)> {
    let store = array.store();
    if !store.is_remote() || store.ranges_unsupported() {
        return Ok((0, 0));
    }
    let ndim = chunk.len();
    let one = ChunkPart {
        chunk: chunk.iter().copied().collect(),
        region_start: std::iter::repeat_n(0, ndim).collect(),
        region_shape: std::iter::repeat_n(1, ndim).collect(),
        placements: smallvec::SmallVec::default(),
    };
    let FetchPlan::BloscBlocks { chunk_bytes, .. } = plan(array, chunk, &[(0, one)]) else {
        return Ok((0, 0));
    };
    let key = array.chunk_key(chunk);
    if recalled_head(store, &key, chunk_bytes).is_some() {
        return Ok((0, 0));
    }
    Ok(match fetch_head(store, &key, chunk_bytes).await? {
        FirstRead::Done(outcome) => (outcome.requests, outcome.bytes),
        FirstRead::Table(head, cost) => {
            remember_head(store, &key, &head);
            (cost.requests, cost.bytes)
        }
    })
}

/// Where a chunk's block table ends: right after the header for a chunk stored uncompressed.
fn table_end(header: &BloscHeader) -> usize {
    if header.memcpyed() {
        HEADER_LEN
    } else {
        HEADER_LEN + 4 * header.nblocks()
    }
}

/// The remembered header and table of the chunk `key`, if any (remote stores serving ranges).
fn recalled_head(store: &Store, key: &str, chunk_bytes: usize) -> Option<Head> {
    if !store.is_remote() || store.ranges_unsupported() {
        return None;
    }
    let known = block_tables::recall(store.url(), key)?;
    let size = usize::try_from(known.size).ok()?;
    parse_head(
        known.head.clone(),
        size,
        chunk_bytes,
        Some(known.e_tag.clone()),
    )
}

/// A strong `ETag`, the only kind `If-Match` compares.
fn strong(e_tag: Option<String>) -> Option<String> {
    e_tag.filter(|tag| !tag.starts_with("W/"))
}

/// What the first requests of a partial read learnt: the chunk, or its header and table.
enum FirstRead {
    Done(FetchOutcome),
    Table(Head, Cost),
}

/// Requests made and bytes fetched so far.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    requests: u64,
    bytes: u64,
}

impl Cost {
    fn add(self, requests: u64, bytes: u64) -> Self {
        Self {
            requests: self.requests + requests,
            bytes: self.bytes + bytes,
        }
    }

    /// The chunk read whole after what this cost.
    async fn then_whole(self, store: &Store, key: &str) -> Result<FetchOutcome> {
        let bytes = store.get_async(key).await?;
        Ok(FetchOutcome::whole(bytes, self.requests + 1, self.bytes))
    }
}

/// Fetches the header and block table (one request, two if the table is long); the whole
/// chunk instead when it is small or its header is not one to read block by block.
async fn fetch_head(store: &Store, key: &str, chunk_bytes: usize) -> Result<FirstRead> {
    // The block table has 4 bytes a block; blocks are rarely under 8 KiB.
    let head_len = (HEADER_LEN + 4 * chunk_bytes.div_ceil(8192)).clamp(256, 64 * 1024) as u64;
    let first = match store.get_range_read(key, 0..head_len, None).await? {
        Ranged::Read(read) => read,
        Ranged::Missing | Ranged::Changed => {
            return Ok(FirstRead::Done(FetchOutcome::whole(None, 1, 0)));
        }
    };
    let cost = Cost::default().add(1, first.bytes.len() as u64);
    if cost.bytes >= first.size {
        // The first request already held the whole chunk.
        return Ok(FirstRead::Done(FetchOutcome::whole(
            Some(first.bytes),
            1,
            0,
        )));
    }
    let Ok(size) = usize::try_from(first.size) else {
        return Ok(FirstRead::Done(cost.then_whole(store, key).await?));
    };
    let e_tag = strong(first.e_tag);
    let Some(mut head) = parse_head(first.bytes.to_vec(), size, chunk_bytes, e_tag) else {
        return Ok(FirstRead::Done(cost.then_whole(store, key).await?));
    };
    if head.table_end <= head.bytes.len() {
        return Ok(FirstRead::Table(head, cost));
    }
    let rest = store
        .get_range_read(
            key,
            head.bytes.len() as u64..head.table_end as u64,
            head.e_tag.as_deref(),
        )
        .await?;
    match rest {
        Ranged::Read(rest) => {
            head.bytes.extend_from_slice(&rest.bytes);
            Ok(FirstRead::Table(head, cost.add(1, rest.bytes.len() as u64)))
        }
        Ranged::Missing => Ok(FirstRead::Done(FetchOutcome::whole(None, 2, cost.bytes))),
        Ranged::Changed => Ok(FirstRead::Done(
            cost.add(1, 0).then_whole(store, key).await?,
        )),
    }
}

/// The compressed byte spans of the blocks holding `ranges`, coalesced; `None` when the
/// block table points outside the chunk.
fn block_spans(head: &Head, ranges: &[(usize, usize)]) -> Option<Vec<(u64, u64)>> {
    let Head {
        bytes,
        size,
        header,
        table_end,
        ..
    } = head;
    let size = *size as u64;
    let mut wanted = crate::blosc::ranges::blocks_touched(ranges, header.blocksize);
    wanted.retain(|&b| b < header.nblocks());
    let mut spans: Vec<(u64, u64)> = if header.memcpyed() {
        wanted
            .iter()
            .map(|&b| {
                let start = (HEADER_LEN + b * header.blocksize) as u64;
                let len = header.blocksize.min(header.nbytes - b * header.blocksize) as u64;
                (start, start + len)
            })
            .collect()
    } else {
        let starts: Vec<u64> = (0..header.nblocks())
            .map(|b| u32_at(bytes, HEADER_LEN + 4 * b))
            .collect();
        if starts.iter().any(|&s| s < *table_end as u64 || s >= size) {
            return None;
        }
        // Blocks may be stored out of order (multithreaded compression): a block ends
        // where the next stored block starts.
        let mut sorted = starts.clone();
        sorted.sort_unstable();
        wanted
            .iter()
            .map(|&b| {
                let start = starts[b];
                let end = sorted.iter().find(|&&s| s > start).copied().unwrap_or(size);
                (start, end)
            })
            .collect()
    };
    spans.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start <= last.1 + COALESCE_GAP => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    let body = size - *table_end as u64;
    let needed: u64 = merged.iter().map(|(s, e)| e - s).sum();
    if needed as f64 > WHOLE_SHARE * body as f64 {
        merged = vec![(*table_end as u64, size)];
    }
    Some(merged)
}

/// The byte spans a read of `ranges` of the chunk `key` would fetch, and the bytes it would
/// decode, if its header and block table are remembered (see [`block_tables`]): then these
/// spans are its only requests.
pub fn remembered_spans(
    store: &Store,
    key: &str,
    chunk_bytes: usize,
    ranges: &[(usize, usize)],
) -> Option<(Vec<(u64, u64)>, u64)> {
    let head = recalled_head(store, key, chunk_bytes)?;
    let blocks = crate::blosc::ranges::blocks_touched(ranges, head.header.blocksize);
    let decoded = (blocks.len() * head.header.blocksize).min(chunk_bytes) as u64;
    Some((block_spans(&head, ranges)?, decoded))
}

/// What reading a chunk's blocks came to.
enum Blocks {
    Done(FetchOutcome),
    /// The object is no longer the one the head was read from; what was spent finding out.
    Changed(Cost),
}

async fn fetch_blosc_blocks(
    store: &Store,
    key: &str,
    chunk_bytes: usize,
    ranges: &[(usize, usize)],
) -> Result<FetchOutcome> {
    let remembering = store.is_remote() && !store.ranges_unsupported();
    let mut spent = Cost::default();
    if let Some(head) = recalled_head(store, key, chunk_bytes) {
        match fetch_blocks(store, key, head, Cost::default(), ranges).await? {
            Blocks::Done(outcome) => return Ok(outcome),
            Blocks::Changed(cost) => spent = cost,
        }
        block_tables::forget(store.url(), key);
    }
    let (head, cost) = match fetch_head(store, key, chunk_bytes).await? {
        FirstRead::Done(outcome) => return Ok(spent.plus(outcome)),
        FirstRead::Table(head, cost) => (head, cost),
    };
    if remembering {
        remember_head(store, key, &head);
    }
    match fetch_blocks(store, key, head, cost, ranges).await? {
        Blocks::Done(outcome) => Ok(spent.plus(outcome)),
        Blocks::Changed(cost) => {
            // Rewritten between the head and the blocks: read as a whole chunk would be.
            block_tables::forget(store.url(), key);
            Ok(spent.plus(cost.then_whole(store, key).await?))
        }
    }
}

impl Cost {
    /// `outcome` with this cost (of requests made before it) added.
    fn plus(self, mut outcome: FetchOutcome) -> FetchOutcome {
        outcome.requests += self.requests;
        outcome.bytes += self.bytes;
        outcome
    }
}

/// Fetches the blocks of `head`'s chunk that hold `ranges` (`cost`: what reading the head
/// took); from the object with the head's `ETag` only, where it has one.
async fn fetch_blocks(
    store: &Store,
    key: &str,
    head: Head,
    cost: Cost,
    ranges: &[(usize, usize)],
) -> Result<Blocks> {
    let if_match = head.e_tag.as_deref();
    let size = head.size;
    let Some(spans) = block_spans(&head, ranges) else {
        // A lying block table: the whole chunk, whose decoding reports it.
        return Ok(Blocks::Done(cost.then_whole(store, key).await?));
    };
    let read = |start: u64, end: u64| store.get_range_read(key, start..end, if_match);
    let head_len = head.bytes.len() as u64;
    if let [(start, _)] = spans[..] {
        if start <= head_len {
            // Everything after the head: one read appended to it, no buffer to clear.
            let rest = match read(head_len, size as u64).await? {
                Ranged::Read(rest) => rest,
                Ranged::Missing => {
                    return Ok(Blocks::Done(FetchOutcome::whole(
                        None,
                        cost.requests + 1,
                        cost.bytes,
                    )));
                }
                Ranged::Changed => return Ok(Blocks::Changed(cost.add(1, 0))),
            };
            let cost = cost.add(1, rest.bytes.len() as u64);
            if rest.size != size as u64 {
                return Ok(Blocks::Changed(cost));
            }
            let mut buffer = head.bytes;
            buffer.reserve_exact(rest.bytes.len());
            buffer.extend_from_slice(&rest.bytes);
            if buffer.len() != size {
                return Ok(Blocks::Changed(cost));
            }
            return Ok(Blocks::Done(FetchOutcome {
                fetched: Fetched::Sparse(buffer.into()),
                bytes: cost.bytes,
                requests: cost.requests,
            }));
        }
    }
    // A few blocks of a large chunk: a buffer of the chunk's length, zero but where read.
    let mut buffer = ZeroedBuffer::new(size);
    buffer[..head.bytes.len()].copy_from_slice(&head.bytes);
    let parts =
        futures::future::try_join_all(spans.iter().map(|&(start, end)| read(start, end))).await?;
    let mut cost = cost;
    let mut changed = false;
    for (&(start, _), part) in spans.iter().zip(parts) {
        cost = cost.add(1, 0);
        let part = match part {
            Ranged::Read(part) => part,
            // Deleted between requests: read it as missing, as a whole read would.
            Ranged::Missing => {
                return Ok(Blocks::Done(FetchOutcome::whole(
                    None,
                    cost.requests,
                    cost.bytes,
                )));
            }
            Ranged::Changed => {
                changed = true;
                continue;
            }
        };
        cost = cost.add(0, part.bytes.len() as u64);
        let start = start as usize;
        let end = start + part.bytes.len();
        if end > size || part.size != size as u64 {
            changed = true;
            continue;
        }
        buffer[start..end].copy_from_slice(&part.bytes);
    }
    if changed {
        return Ok(Blocks::Changed(cost));
    }
    Ok(Blocks::Done(FetchOutcome {
        fetched: Fetched::Sparse(buffer),
        bytes: cost.bytes,
        requests: cost.requests,
    }))
}

#[cfg(test)]
mod tests {
    use super::most_blocks_wanted;

    #[test]
    fn a_series_spread_over_every_block_is_read_whole() {
        let chunk = 24 * 96 * 128 * 4; // a batch chunk: 24 steps of a 96 x 128 float32 field
        let series: Vec<(usize, usize)> = (0..24).map(|s| (s * 96 * 128 * 4 + 4000, 4)).collect();
        assert!(most_blocks_wanted(&series, 32 * 1024, chunk));
        assert!(!most_blocks_wanted(&series[..3], 32 * 1024, chunk));
        // One point of a 4 MB field: one block of many.
        assert!(!most_blocks_wanted(&[(2_000_000, 4)], 64 * 1024, 4_153_000));
        // A chunk of one block is wanted whole; an empty request wants nothing.
        assert!(most_blocks_wanted(&[(0, 4)], 128 * 1024, 64 * 1024));
        assert!(!most_blocks_wanted(&[], 32 * 1024, chunk));
    }
}
