//! Decodes every chunk part of many requests in one parallel pass, each straight into
//! its place in a caller-owned output buffer.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::mpsc::{channel, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use unsafe_cell_slice::UnsafeCellSlice;
use zarrs::array::{
    copy_fill_value_into, ArrayBytesDecodeIntoTarget, ArrayBytesFixedDisjointView,
    ArrayPartialDecoderTraits, ArraySubset, ArrayToBytesCodecTraits, BytesRepresentation,
    ChunkShape, CodecError, CodecOptions, StoragePartialDecoder,
};
use zarrs::storage::{ReadableStorage, ReadableStorageTraits};

use bytes::Bytes;

use crate::array::ArrayHandle;
use crate::blosc::ranges::{decode_into, decode_ranges, region_byte_ranges, BlockReader};
use crate::errors::{Error, Result};
use crate::fetch::{fetch, FetchOutcome, FetchPlan, Fetched};
use crate::plan::{chunk_parts, ChunkPart, Placement, PointSet, Selection};
use crate::runtime::Cancel;
use crate::shard_index::{CheckedShardInput, ShardLayout};
use crate::stats::{ReadCounters, ReadStats};

/// A writable, C-contiguous output buffer owned by someone else (a numpy array).
pub struct OutputBuffer {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the buffer is only written through disjoint views (one per chunk part), and
// its owner keeps it alive and unaliased for the duration of `read_many`.
#[allow(unsafe_code)]
unsafe impl Send for OutputBuffer {}
// SAFETY: as above; shared references only hand out disjoint regions.
#[allow(unsafe_code)]
unsafe impl Sync for OutputBuffer {}

impl OutputBuffer {
    /// # Safety
    /// `ptr` must point to `len` writable bytes that stay valid, and are not read or
    /// written by anyone else, until every read using this buffer has returned.
    #[allow(unsafe_code)]
    pub unsafe fn new(ptr: *mut u8, len: usize) -> Self {
        Self { ptr, len }
    }

    /// The addresses the buffer spans: where it starts, and one past its end.
    pub fn span(&self) -> (usize, usize) {
        let start = self.ptr as usize;
        (start, start + self.len)
    }

    /// No buffer: for a request that is planned, not read (see [`plan_reads`]).
    pub fn none() -> Self {
        Self {
            ptr: std::ptr::null_mut(),
            len: 0,
        }
    }

    #[allow(unsafe_code)]
    fn cells(&self) -> UnsafeCellSlice<'_, u8> {
        // SAFETY: guaranteed by the contract of `OutputBuffer::new`; an empty buffer may
        // have a dangling pointer, which `from_raw_parts_mut` forbids, hence the branch.
        let bytes: &mut [u8] = if self.len == 0 {
            &mut []
        } else {
            unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
        };
        UnsafeCellSlice::new(bytes)
    }
}

/// One array's selection and where its result goes.
pub struct ReadRequest<'a> {
    pub array: &'a ArrayHandle,
    pub selection: Selection,
    /// Points on some axes (a vectorized selection), or `None` for an outer selection.
    pub points: Option<PointSet>,
    pub output: OutputBuffer,
}

impl ReadRequest<'_> {
    /// Elements of the result.
    pub fn num_elements(&self) -> u64 {
        match &self.points {
            None => self.selection.num_elements(),
            Some(points) => points.layout(&self.selection).0.iter().product(),
        }
    }

    fn check(&self) -> Result<()> {
        self.array.store().check_unchanged(self.array.path())?;
        let expected = u128::from(self.num_elements()) * self.array.dtype().itemsize as u128;
        if expected != self.output.len as u128 {
            return Err(Error::InvalidOutput(format!(
                "output holds {} bytes, the selection needs {expected}",
                self.output.len
            )));
        }
        Ok(())
    }

    /// The request's whole selection and where its elements go (a request without points).
    fn outer_target(&self, request: usize) -> Target {
        let full_shape = self.selection.full_shape();
        Target {
            request,
            strides: strides(&full_shape).into(),
            base: 0,
            full_shape: Some(full_shape),
        }
    }
}

/// Where the elements of one selection go in a request's output.
struct Target {
    request: usize,
    /// Per array axis, the element stride of its output positions (shared by all the
    /// points of a request).
    strides: Arc<[u64]>,
    /// Element offset of output position zero.
    base: u64,
    /// `Some` when the output is the selection's own C-order full-rank shape, so that a
    /// box of it can be written as a view.
    full_shape: Option<Vec<u64>>,
}

/// Every part, of any request, that reads one chunk of one array: the chunk is fetched
/// and decoded once however many requests (points, selections) need it.
struct ChunkJob<'a> {
    array: &'a ArrayHandle,
    chunk: Vec<u64>,
    parts: Parts,
}

fn chunk_jobs<'a>(requests: &[ReadRequest<'a>]) -> (Vec<ChunkJob<'a>>, Vec<Target>) {
    // Worked out request by request in parallel (a 100-point read of thousands of variables
    // has a million parts), then put together by chunk.
    let per_request: Vec<RequestParts> = requests
        .par_iter()
        .enumerate()
        .map(|(i, request)| request_parts(i, request))
        .collect();
    let mut jobs: Vec<ChunkJob<'a>> = Vec::new();
    let mut index: HashMap<(*const ArrayHandle, Vec<u64>), usize> = HashMap::new();
    let mut targets = Vec::new();
    for (request, parts) in requests.iter().zip(per_request) {
        let offset = targets.len();
        targets.extend(parts.targets);
        for (chunk, mut chunk_parts) in parts.chunks {
            for (t, _) in &mut chunk_parts {
                *t += offset;
            }
            match index.entry((std::ptr::from_ref(request.array), chunk)) {
                std::collections::hash_map::Entry::Occupied(job) => {
                    jobs[*job.get()].parts.append(&mut chunk_parts);
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    let chunk = slot.key().1.clone();
                    slot.insert(jobs.len());
                    jobs.push(ChunkJob {
                        array: request.array,
                        chunk,
                        parts: chunk_parts,
                    });
                }
            }
        }
    }
    (jobs, targets)
}

/// The `(target, part)` pairs of one chunk.
type Parts = Vec<(usize, ChunkPart)>;

/// One request's targets (numbered from 0) and its chunk parts, by chunk.
#[derive(Default)]
struct RequestParts {
    targets: Vec<Target>,
    chunks: Vec<(Vec<u64>, Parts)>,
    index: HashMap<Vec<u64>, usize>,
}

impl RequestParts {
    /// The slot of `chunk`, added if new.
    fn find(&mut self, chunk: &[u64]) -> usize {
        if let Some(&slot) = self.index.get(chunk) {
            return slot;
        }
        self.chunks.push((chunk.to_vec(), Vec::new()));
        self.index.insert(chunk.to_vec(), self.chunks.len() - 1);
        self.chunks.len() - 1
    }
}

fn request_parts(index: usize, request: &ReadRequest<'_>) -> RequestParts {
    let mut parts = RequestParts::default();
    match &request.points {
        None => {
            parts.targets.push(request.outer_target(index));
            for part in chunk_parts(&request.selection, request.array.chunk_shape()) {
                let slot = parts.find(&part.chunk);
                parts.chunks[slot].1.push((0, part));
            }
        }
        Some(points) => point_parts(index, request, points, &mut parts),
    }
    parts
}

/// Adds one target per point and its chunk parts. Points differ only on the point axes, so
/// the parts are worked out once (for point 0) and each point's are copies with its own
/// indices there; the jobs are found once per chunk of the point axes. (Working out every
/// point's selection and finding its jobs one by one took half of a 100-point read of 3,000
/// small variables, on one thread, before any decoding.)
fn point_parts(
    request_index: usize,
    request: &ReadRequest<'_>,
    points: &PointSet,
    parts: &mut RequestParts,
) {
    if points.is_empty() {
        return;
    }
    let (_, axis_strides, point_stride) = points.layout(&request.selection);
    let strides: Arc<[u64]> = axis_strides.into();
    let chunk_shape = request.array.chunk_shape();
    let template = chunk_parts(&points.selection_of(&request.selection, 0), chunk_shape);
    let point_chunk = |p: usize| -> Vec<u64> {
        points
            .axes
            .iter()
            .zip(&points.coords)
            .map(|(&axis, coords)| coords[p] / chunk_shape[axis])
            .collect()
    };
    let mut groups = std::collections::BTreeMap::<Vec<u64>, Vec<usize>>::new();
    for p in 0..points.len() {
        groups.entry(point_chunk(p)).or_default().push(p);
    }
    for (chunk_on_point_axes, members) in groups {
        // The template's parts moved to this chunk of the point axes, and their jobs.
        let moved: Vec<(ChunkPart, usize)> = template
            .iter()
            .map(|part| {
                let mut part = part.clone();
                for (&axis, &c) in points.axes.iter().zip(&chunk_on_point_axes) {
                    part.chunk[axis] = c;
                }
                let job = parts.find(&part.chunk);
                (part, job)
            })
            .collect();
        for p in members {
            let t = parts.targets.len();
            parts.targets.push(Target {
                request: request_index,
                strides: Arc::clone(&strides),
                base: points.row(p) * point_stride,
                full_shape: None,
            });
            for (part, job) in &moved {
                let mut part = part.clone();
                for (&axis, coords) in points.axes.iter().zip(&points.coords) {
                    part.region_start[axis] = coords[p] % chunk_shape[axis];
                }
                parts.chunks[*job].1.push((t, part));
            }
        }
    }
}

/// What reading some requests would cost, worked out from their arrays' metadata alone: nothing
/// is fetched. Requests and bytes are those of the fetch plans a read would follow; where they
/// depend on what a chunk's header says, they are the most the read can make or move.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadPlan {
    /// Chunks (or shards) the selections touch.
    pub chunks: u64,
    /// Of those, chunks fetched in part: block by block, or a shard's index and inner chunks.
    pub partial_fetches: u64,
    /// Requests that need nothing read first: whole chunks, blosc headers, shard indexes.
    pub first_requests: u64,
    /// Requests made once a header or shard index has been read: blosc blocks (one per run of
    /// neighbouring blocks, at the smallest block size the codec settings allow), inner chunks.
    pub then_requests: u64,
    /// Bytes decoded: whole chunks, the blocks of partial ones, the inner chunks of shards.
    pub bytes_decoded: u64,
    /// Bytes fetched, counting each chunk, block or inner chunk at its decoded size (what the
    /// codecs save is not known before it is read), with the blosc headers and shard indexes.
    pub bytes_fetched: u64,
    /// Of the partial fetches, chunks whose blosc header and block table are remembered: their
    /// blocks are asked for at once (counted in `first_requests`), at their compressed size.
    pub tables_remembered: u64,
    /// Of `first_requests`, those of the chunks whose tables are remembered: without the
    /// tables, each of those chunks would make one request more first, and these after it.
    pub remembered_requests: u64,
}

/// The plan of reading `requests` (see [`ReadPlan`]).
pub fn plan_reads(requests: &[ReadRequest<'_>]) -> ReadPlan {
    let (jobs, _) = chunk_jobs(requests);
    let mut plan = ReadPlan::default();
    for job in &jobs {
        let itemsize = job.array.dtype().itemsize as u64;
        let chunk_bytes = job.array.chunk_shape().iter().product::<u64>() * itemsize;
        plan.chunks += 1;
        match crate::fetch::plan(job.array, &job.chunk, &job.parts) {
            FetchPlan::Whole | FetchPlan::WholeBlosc { .. } => {
                plan.first_requests += 1;
                plan.bytes_decoded += chunk_bytes;
                plan.bytes_fetched += chunk_bytes;
            }
            FetchPlan::BloscBlocks { ranges, .. } => {
                let key = job.array.chunk_key(&job.chunk);
                let store = job.array.store();
                let known =
                    crate::fetch::remembered_spans(store, &key, chunk_bytes as usize, &ranges);
                if let Some((spans, decoded)) = known {
                    plan.partial_fetches += 1;
                    plan.tables_remembered += 1;
                    plan.first_requests += spans.len() as u64;
                    plan.remembered_requests += spans.len() as u64;
                    plan.bytes_fetched += spans.iter().map(|(s, e)| e - s).sum::<u64>();
                    plan.bytes_decoded += decoded;
                    continue;
                }
                let block = job.array.blosc_block().max(1);
                let blocks = crate::blosc::ranges::blocks_touched(&ranges, block);
                let runs = blocks.windows(2).filter(|w| w[1] != w[0] + 1).count() + 1;
                let table =
                    crate::blosc::HEADER_LEN as u64 + 4 * chunk_bytes.div_ceil(block as u64);
                let decoded = (blocks.len() as u64 * block as u64).min(chunk_bytes);
                plan.partial_fetches += 1;
                plan.first_requests += 1;
                plan.then_requests += runs as u64;
                plan.bytes_decoded += decoded;
                plan.bytes_fetched += table + decoded;
            }
            FetchPlan::ShardParts => {
                // The inner chunks under each part, each read by its own range request.
                let inner_shape = job.array.inner_chunk_shape().unwrap_or_default();
                let inner_bytes = inner_shape.iter().product::<u64>() * itemsize;
                let inner_chunks: u64 = job
                    .parts
                    .iter()
                    .map(|(_, p)| {
                        let axes = p.region_start.iter().zip(&p.region_shape).zip(&inner_shape);
                        axes.map(|((&start, &len), &n)| {
                            let n = n.max(1);
                            (start + len).div_ceil(n) - start / n
                        })
                        .product::<u64>()
                    })
                    .sum();
                let index = job.array.shard_layout().map_or(0, ShardLayout::index_bytes);
                plan.partial_fetches += 1;
                plan.first_requests += 1;
                plan.then_requests += inner_chunks;
                plan.bytes_decoded += inner_chunks * inner_bytes;
                plan.bytes_fetched += index + inner_chunks * inner_bytes;
            }
        }
    }
    plan
}

/// Reads every request; all chunks of all requests share one parallel pass. `cancel`
/// is checked before each chunk.
///
/// Chunks of local stores are fetched by the decode task that needs them. Chunks of
/// remote stores are all requested at once on the I/O runtime (at most
/// `io_concurrency` in flight), and each is decoded as soon as it arrives.
pub fn read_many(requests: &[ReadRequest<'_>], cancel: &Cancel) -> Result<ReadStats> {
    for request in requests {
        request.check()?;
    }
    crate::runtime::install(|| {
        let (jobs, targets) = chunk_jobs(requests);
        let plans: Vec<FetchPlan> = jobs
            .par_iter()
            .map(|job| crate::fetch::plan(job.array, &job.chunk, &job.parts))
            .collect();
        // Chunks are the unit of parallelism; a codec gets inner threads only when
        // there are fewer chunks than threads (one huge chunk, say).
        let inner = (rayon::current_num_threads() / jobs.len().max(1)).max(1);
        let options = CodecOptions::default().with_concurrent_target(inner);
        let counters = ReadCounters::default();
        let context = JobContext {
            requests,
            targets: &targets,
            options: &options,
            counters: &counters,
        };
        if jobs.iter().any(|job| job.array.store().is_remote()) {
            read_pipelined(&jobs, &plans, &context, cancel)?;
        } else {
            jobs.par_iter()
                .zip(&plans)
                .with_min_len(jobs_per_task(&jobs))
                .try_for_each(|(job, plan)| {
                    cancel.check()?;
                    let started = Instant::now();
                    let key = job.array.chunk_key(&job.chunk);
                    let outcome =
                        futures::executor::block_on(fetch(job.array.store(), key.as_str(), plan))?;
                    cancel.scope(|| run_job(job, outcome, started, &context))
                })?;
        }
        let stats = counters.snapshot();
        // A million small parts (a 100-point read) are freed faster on every thread.
        jobs.into_par_iter().with_min_len(256).for_each(drop);
        Ok(stats)
    })
}

/// How many local chunk jobs one pool task takes: enough that each task decodes about
/// [`MIN_TASK_BYTES`], so a read of a few small chunks is not split across threads whose
/// wake-up costs more than the work (a 4 kB variable read took twice as long on two
/// threads as on one).
fn jobs_per_task(jobs: &[ChunkJob<'_>]) -> usize {
    let decoded: u64 = jobs
        .iter()
        .map(|job| {
            let elements: u64 = job.array.chunk_shape().iter().product();
            elements.saturating_mul(job.array.dtype().itemsize as u64)
        })
        .sum();
    let mean = decoded / (jobs.len().max(1) as u64);
    usize::try_from(MIN_TASK_BYTES / mean.max(1))
        .unwrap_or(usize::MAX)
        .max(1)
}

/// Decoded bytes below which splitting work across threads does not pay.
const MIN_TASK_BYTES: u64 = 256 * 1024;

/// Sends every fetch to the I/O runtime, and decodes each chunk on the pool as it
/// arrives; the calling pool thread decodes too while it waits.
fn read_pipelined(
    jobs: &[ChunkJob<'_>],
    plans: &[FetchPlan],
    context: &JobContext<'_, '_>,
    cancel: &Cancel,
) -> Result<()> {
    let (runtime, _) = crate::runtime::io()?;
    let (sender, receiver) = channel::<(usize, Instant, Result<FetchOutcome>)>();
    let tasks: Vec<_> = jobs
        .iter()
        .zip(plans)
        .enumerate()
        .map(|(i, (job, plan))| {
            let store = job.array.store().clone();
            let key = job.array.chunk_key(&job.chunk);
            let plan = plan.clone();
            let sender = sender.clone();
            runtime.spawn(async move {
                let started = Instant::now();
                let outcome = fetch(&store, &key, &plan).await;
                // The receiver is gone only when the read already failed.
                let _ = sender.send((i, started, outcome));
            })
        })
        .collect();
    drop(sender);
    // Dropped on every way out, so that no request outlives the read.
    let _abort = AbortOnDrop(tasks);
    let failed: Mutex<Option<Error>> = Mutex::new(None);
    let fail = |err: Error| {
        let mut slot = failed.lock().unwrap_or_else(PoisonError::into_inner);
        slot.get_or_insert(err);
    };
    rayon::in_place_scope(|scope| {
        let mut remaining = jobs.len();
        while remaining > 0 {
            if let Err(err) = cancel.check() {
                fail(err);
                return;
            }
            if failed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some()
            {
                return;
            }
            let message = match receiver.try_recv() {
                Ok(message) => message,
                Err(TryRecvError::Disconnected) => {
                    fail(Error::Panic("a fetch task ended without a result".into()));
                    return;
                }
                Err(TryRecvError::Empty) => {
                    // Decode what has arrived while waiting for the rest.
                    if let Some(rayon::Yield::Executed) = rayon::yield_now() {
                        continue;
                    }
                    match receiver.recv_timeout(Duration::from_millis(2)) {
                        Ok(message) => message,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => {
                            fail(Error::Panic("a fetch task ended without a result".into()));
                            return;
                        }
                    }
                }
            };
            remaining -= 1;
            let (i, started, outcome) = message;
            let job = &jobs[i];
            let fail = &fail;
            scope.spawn(move |_| {
                if cancel.check().is_err() {
                    return;
                }
                let done = outcome.and_then(|o| cancel.scope(|| run_job(job, o, started, context)));
                if let Err(err) = done {
                    fail(err);
                }
            });
        }
    });
    match failed.into_inner().unwrap_or_else(PoisonError::into_inner) {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Aborts the fetch tasks still running when a read ends early.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// What every job of one pass shares.
struct JobContext<'a, 'r> {
    requests: &'a [ReadRequest<'r>],
    targets: &'a [Target],
    options: &'a CodecOptions,
    counters: &'a ReadCounters,
}

impl JobContext<'_, '_> {
    fn output_of(&self, target: &Target) -> UnsafeCellSlice<'_, u8> {
        self.requests[target.request].output.cells()
    }
}

fn run_job(
    job: &ChunkJob<'_>,
    outcome: FetchOutcome,
    started: Instant,
    context: &JobContext<'_, '_>,
) -> Result<()> {
    let array = job.array;
    let key = array.chunk_key(&job.chunk);
    let corrupt = |e: CodecError| array.corrupt_chunk(&key, e.to_string());
    let counters = context.counters;
    let fetched = match outcome.fetched {
        Fetched::Deferred => match decode_shard_parts(job, context, started) {
            // A server that ignores range requests: read the shard whole instead.
            Err(ShardReadError::Codec(e)) if array.store().note_ranges_refused(&e.to_string()) => {
                let bytes = array.store().get(&key)?;
                counters.fetched(started, bytes.as_ref().map(Bytes::len), 1);
                bytes.map_or(Fetched::Missing, Fetched::Whole)
            }
            result => {
                return result.map_err(|e| match e {
                    ShardReadError::Codec(e) => corrupt(e),
                    ShardReadError::Other(e) => e,
                })
            }
        },
        other => other,
    };
    let encoded = match fetched {
        Fetched::Deferred => {
            return Err(Error::Panic(format!(
                "shard '{key}' was deferred twice (a bug in fastzarr)"
            )));
        }
        Fetched::Missing => None,
        Fetched::Whole(bytes) => {
            if let Some(layout) = array.shard_layout() {
                layout
                    .check_shard(&bytes)
                    .map_err(|reason| corrupt(CodecError::Other(reason)))?;
            }
            check_decodable(job)?;
            Some(bytes)
        }
        Fetched::Sparse(buffer) => {
            counters.fetched(started, Some(outcome.bytes as usize), outcome.requests);
            crate::blosc::ranges::check_compressor(&buffer, array.blosc_compressor())
                .map_err(|e| corrupt(CodecError::Other(e)))?;
            if scatter_blosc_blocks(job, &buffer, context).map_err(corrupt)? {
                return Ok(());
            }
            // Not readable block by block after all (a ragged tail): fetch it whole.
            check_decodable(job)?;
            let started = Instant::now();
            let whole = array.store().get(key.as_str())?;
            counters.fetched(started, whole.as_ref().map(Bytes::len), 1);
            return decode_job(job, whole, context, &corrupt);
        }
    };
    counters.fetched(
        started,
        encoded.as_ref().map(|_| outcome.bytes as usize),
        outcome.requests,
    );
    decode_job(job, encoded, context, &corrupt)
}

/// Refuses, before it is decoded, a stored chunk whose decoded size (from the metadata)
/// cannot be allocated: decoding may hold the whole chunk in a buffer (ours or the codec's),
/// and a failed allocation would abort the process.
fn check_decodable(job: &ChunkJob<'_>) -> Result<()> {
    let array = job.array;
    let elements = array.chunk_shape().iter().product::<u64>();
    let bytes = u128::from(elements) * array.dtype().itemsize as u128;
    if crate::limits::can_allocate(u64::try_from(bytes).unwrap_or(u64::MAX)) {
        return Ok(());
    }
    Err(Error::Allocation {
        what: format!(
            "decoding chunk '{}' of array '{}' in store {}",
            array.chunk_key(&job.chunk).as_str(),
            array.path(),
            array.store().url()
        ),
        bytes,
    })
}

enum ShardReadError {
    Codec(CodecError),
    Other(Error),
}

impl From<CodecError> for ShardReadError {
    fn from(err: CodecError) -> Self {
        ShardReadError::Codec(err)
    }
}

/// zarrs' partial decoder of one shard; its index and every byte range it reads are checked
/// first when fastzarr knows the index's layout.
/// The decoder and, where fastzarr knows the index's layout, its checked input (which counts
/// the byte ranges read).
type ShardDecoder = (
    Arc<dyn ArrayPartialDecoderTraits>,
    Option<Arc<CheckedShardInput>>,
);

/// The index entries (C order of the inner chunk grid) of the inner chunks under `parts` of
/// the shard of `shard_shape`; empty when there are too many to list.
fn inner_chunks_under(
    shard_shape: &[u64],
    inner_shape: &[u64],
    parts: &[(usize, ChunkPart)],
) -> Vec<u64> {
    const MAX: usize = 65_536;
    if inner_shape.len() != shard_shape.len() || inner_shape.contains(&0) {
        return Vec::new();
    }
    let grid: Vec<u64> = shard_shape
        .iter()
        .zip(inner_shape)
        .map(|(&s, &n)| s.div_ceil(n))
        .collect();
    let mut wanted = Vec::new();
    for (_, part) in parts {
        // Each axis's first and last inner chunk under the part.
        let axes: Option<Vec<(u64, u64)>> = part
            .region_start
            .iter()
            .zip(&part.region_shape)
            .zip(inner_shape)
            .map(|((&start, &len), &n)| (len > 0).then(|| (start / n, (start + len - 1) / n)))
            .collect();
        let Some(axes) = axes else { continue };
        let mut at: Vec<u64> = axes.iter().map(|a| a.0).collect();
        'boxes: loop {
            wanted.push(at.iter().zip(&grid).fold(0u64, |acc, (&i, &g)| acc * g + i));
            if wanted.len() > MAX {
                return Vec::new();
            }
            // The next inner chunk of the box, last axis fastest.
            for axis in (0..at.len()).rev() {
                if at[axis] < axes[axis].1 {
                    at[axis] += 1;
                    continue 'boxes;
                }
                at[axis] = axes[axis].0;
            }
            break;
        }
    }
    wanted.sort_unstable();
    wanted.dedup();
    wanted
}

fn shard_decoder(
    array: &ArrayHandle,
    chunk: &[u64],
    parts: &[(usize, ChunkPart)],
    options: &CodecOptions,
) -> std::result::Result<ShardDecoder, zarrs::array::ArrayError> {
    let zarray = array.zarrs();
    let Some(layout) = array.shard_layout() else {
        return Ok((zarray.partial_decoder_opt(chunk, options)?, None));
    };
    // The store's own key: zarrs' may be relative to a view of the store (`__`-prefixed names).
    let key = zarrs::storage::StoreKey::new(array.chunk_key(chunk))
        .map_err(|e| zarrs::array::ArrayError::StorageError(e.into()))?;
    let storage: ReadableStorage = array.store().storage().clone();
    // A local file's size costs a stat; a remote object's would cost a round trip, and
    // without it each range is still bounded by what an inner chunk can take.
    let shard_len = if array.store().is_remote() {
        None
    } else {
        storage.size_key(&key)?
    };
    let shard_shape: Vec<u64> = zarray.chunk_shape(chunk)?.iter().map(|n| n.get()).collect();
    let wanted = array
        .inner_chunk_shape()
        .map(|inner| inner_chunks_under(&shard_shape, &inner, parts))
        .unwrap_or_default();
    let input = Arc::new(CheckedShardInput::new(
        Arc::new(StoragePartialDecoder::new(storage, key)),
        layout.clone(),
        shard_len,
        wanted,
    ));
    let decoder = zarray.codecs().partial_decoder(
        input.clone(),
        &zarray.chunk_shape(chunk)?,
        zarray.data_type(),
        zarray.fill_value(),
        options,
    )?;
    Ok((decoder, Some(input)))
}

/// Reads each part of a shard through zarrs' sharding partial decoder: the shard index
/// once, then only the inner chunks under the part, by byte ranges of the store.
fn decode_shard_parts(
    job: &ChunkJob<'_>,
    context: &JobContext<'_, '_>,
    started: Instant,
) -> std::result::Result<(), ShardReadError> {
    let array = job.array;
    let itemsize = array.dtype().itemsize;
    let (decoder, input) =
        shard_decoder(array, &job.chunk, &job.parts, context.options).map_err(|e| match e {
            zarrs::array::ArrayError::CodecError(e) => ShardReadError::Codec(e),
            other => ShardReadError::Other(
                array
                    .store()
                    .storage_error(array.chunk_key(&job.chunk).as_str(), other),
            ),
        })?;
    context.counters.fetched(started, Some(0), 0);
    let decode_started = Instant::now();
    let mut decoded_bytes = 0;
    for (t, part) in &job.parts {
        let shape = &part.region_shape;
        let mut region = vec![0u8; shape.iter().product::<u64>() as usize * itemsize];
        {
            let cells = UnsafeCellSlice::new(region.as_mut_slice());
            // SAFETY: the only view of `region`.
            #[allow(unsafe_code)]
            let mut view = unsafe {
                ArrayBytesFixedDisjointView::new(
                    cells,
                    itemsize,
                    shape,
                    ArraySubset::new_with_shape(shape.to_vec()),
                )
            }
            .map_err(|e| CodecError::Other(e.to_string()))?;
            let subset =
                ArraySubset::new_with_start_shape(part.region_start.to_vec(), shape.to_vec())
                    .map_err(|e| CodecError::Other(e.to_string()))?;
            decoder.partial_decode_into(
                &subset,
                ArrayBytesDecodeIntoTarget::Fixed(&mut view),
                context.options,
            )?;
        }
        decoded_bytes += region.len() as u64;
        let offset = vec![0; shape.len()];
        let decoded = DecodedRegion {
            bytes: &region,
            shape,
            offset: &offset,
        };
        let target = &context.targets[*t];
        scatter(&decoded, part, context.output_of(target), target, itemsize);
    }
    if let Some(input) = input {
        let (requests, bytes) = input.read_so_far();
        context.counters.read_more(requests, bytes);
    }
    context
        .counters
        .decoded(decode_started, decoded_bytes, true);
    Ok(())
}

/// Decodes a whole fetched chunk (or the fill value) into every part's place.
fn decode_job(
    job: &ChunkJob<'_>,
    encoded: Option<Bytes>,
    context: &JobContext<'_, '_>,
    corrupt: &dyn Fn(CodecError) -> Error,
) -> Result<()> {
    let array = job.array;
    let counters = context.counters;
    let itemsize = array.dtype().itemsize;
    if let (true, Some(encoded)) = (array.plain_blosc(), encoded.as_deref()) {
        // Checked before either of fastzarr's blosc paths (whole or block by block) decodes.
        crate::blosc::ranges::check_compressor(encoded, array.blosc_compressor())
            .map_err(|e| corrupt(CodecError::Other(e)))?;
    }
    if let [(t, part)] = job.parts.as_slice() {
        let target = &context.targets[*t];
        if let (Some(full_shape), Some((out_start, out_shape))) =
            (&target.full_shape, part.direct_output())
        {
            if let (true, Some(encoded)) = (array.plain_blosc(), encoded.as_deref()) {
                let output = OutputSpan {
                    buffer: &context.requests[target.request].output,
                    shape: full_shape,
                    start: &out_start,
                    box_shape: &out_shape,
                };
                if blosc_whole_chunk_into(job, part, encoded, &output, counters).map_err(corrupt)? {
                    return Ok(());
                }
            }
            let out_subset = ArraySubset::new_with_start_shape(out_start, out_shape)
                .map_err(|e| Error::Panic(e.to_string()))?;
            // SAFETY: chunk parts of one request place disjoint sets of output elements
            // (plan.rs tests this), and each output buffer belongs to exactly one request.
            #[allow(unsafe_code)]
            let mut out_view = unsafe {
                ArrayBytesFixedDisjointView::new(
                    context.output_of(target),
                    itemsize,
                    full_shape,
                    out_subset,
                )
            }
            .map_err(|e| Error::Panic(e.to_string()))?;
            let view = ArrayBytesDecodeIntoTarget::Fixed(&mut out_view);
            let region = ChunkRegion {
                chunk: &job.chunk,
                start: &part.region_start,
                shape: &part.region_shape,
            };
            return decode_region(
                array,
                &region,
                encoded.as_deref(),
                view,
                context.options,
                counters,
            )
            .map_err(corrupt);
        }
    }
    // A few parts of one blosc chunk (points, say): each reads only its blocks. Many parts
    // (a hundred points in every chunk) share one decoded span instead: per part, finding
    // and copying out its blocks' bytes cost more than decoding them.
    let few =
        (2..=MAX_PARTS_BY_BLOCKS).contains(&job.parts.len()) && crate::runtime::partial_decoding();
    if let (true, true, Some(encoded)) = (array.plain_blosc(), few, encoded.as_deref()) {
        if scatter_blosc_blocks(job, encoded, context).map_err(corrupt)? {
            return Ok(());
        }
    }
    // Several parts, strided or integer-array selections: decode the region all the
    // parts span once, then place each selected element.
    let span = decode_span(job, encoded.as_deref(), context.options, counters).map_err(corrupt)?;
    let ndim = job.chunk.len();
    for (t, part) in &job.parts {
        // One chunk may feed thousands of parts (the same selection asked for many times),
        // each copy faulting in fresh output pages: stop between them when told to.
        if crate::runtime::decode_cancelled() {
            return Err(Error::Cancelled);
        }
        let offset: Vec<u64> = (0..ndim)
            .map(|d| part.region_start[d] - span.start[d])
            .collect();
        let decoded = DecodedRegion {
            bytes: &span.bytes,
            shape: &span.shape,
            offset: &offset,
        };
        let target = &context.targets[*t];
        scatter(&decoded, part, context.output_of(target), target, itemsize);
    }
    Ok(())
}

/// Parts of one blosc chunk above which they are placed from one decoded span.
const MAX_PARTS_BY_BLOCKS: usize = 16;

/// A box of one request's output.
struct OutputSpan<'a> {
    buffer: &'a OutputBuffer,
    shape: &'a [u64],
    start: &'a [u64],
    box_shape: &'a [u64],
}

impl OutputSpan<'_> {
    /// The byte range of the box when it is one contiguous run of the C-order output.
    fn contiguous_bytes(&self, itemsize: usize) -> Option<std::ops::Range<usize>> {
        let ndim = self.shape.len();
        let first_wide = (0..ndim).find(|&d| self.box_shape[d] != 1).unwrap_or(ndim);
        let full_after = (first_wide + 1..ndim)
            .all(|d| self.start[d] == 0 && self.box_shape[d] == self.shape[d]);
        if !full_after {
            return None;
        }
        let element: u64 = (0..ndim)
            .map(|d| self.start[d] * strides(self.shape)[d])
            .sum();
        let len: u64 = self.box_shape.iter().product();
        let begin = element as usize * itemsize;
        Some(begin..begin + len as usize * itemsize)
    }
}

/// Decodes a whole plain-blosc chunk straight into its contiguous place in the output,
/// with no intermediate buffer. `false` when the part is not a whole chunk or its place
/// is not contiguous.
fn blosc_whole_chunk_into(
    job: &ChunkJob<'_>,
    part: &ChunkPart,
    encoded: &[u8],
    output: &OutputSpan<'_>,
    counters: &ReadCounters,
) -> std::result::Result<bool, CodecError> {
    let array = job.array;
    let itemsize = array.dtype().itemsize;
    let chunk_shape = array
        .zarrs()
        .chunk_shape(&job.chunk)
        .map_err(|e| CodecError::Other(e.to_string()))?;
    let whole = part.region_start.iter().all(|&s| s == 0)
        && part
            .region_shape
            .iter()
            .zip(&chunk_shape)
            .all(|(&r, c)| r == c.get());
    let Some(range) = output.contiguous_bytes(itemsize).filter(|_| whole) else {
        return Ok(false);
    };
    let started = Instant::now();
    let len = range.len() as u64;
    let cells = output.buffer.cells();
    // SAFETY: the range lies inside this request's output (the box is inside its shape),
    // and no other part writes it: parts of one request place disjoint elements.
    #[allow(unsafe_code)]
    let dest = unsafe { cells.index_mut(range) };
    decode_into(encoded, dest).map_err(CodecError::Other)?;
    counters.decoded(started, len, false);
    Ok(true)
}

/// Places every part of a blosc chunk from the blocks that hold it, each block decoded
/// once for all parts. `false` when the chunk cannot be read block by block.
fn scatter_blosc_blocks(
    job: &ChunkJob<'_>,
    encoded: &[u8],
    context: &JobContext<'_, '_>,
) -> std::result::Result<bool, CodecError> {
    let started = Instant::now();
    let array = job.array;
    let itemsize = array.dtype().itemsize;
    let chunk_shape: Vec<u64> = array
        .zarrs()
        .chunk_shape(&job.chunk)
        .map_err(|e| CodecError::Other(e.to_string()))?
        .iter()
        .map(|n| n.get())
        .collect();
    let chunk_bytes = chunk_shape.iter().product::<u64>() as usize * itemsize;
    let Some(mut reader) = BlockReader::new(encoded, chunk_bytes).map_err(CodecError::Other)?
    else {
        return Ok(false);
    };
    for (i, part) in &job.parts {
        let ranges = region_byte_ranges(
            &chunk_shape,
            &part.region_start,
            &part.region_shape,
            itemsize,
        );
        let bytes = reader.read(&ranges).map_err(CodecError::Other)?;
        let offset = vec![0; part.region_shape.len()];
        let region = DecodedRegion {
            bytes: &bytes,
            shape: &part.region_shape,
            offset: &offset,
        };
        let target = &context.targets[*i];
        scatter(&region, part, context.output_of(target), target, itemsize);
    }
    let blocks = reader.counts();
    context.counters.blocks(blocks.decoded, blocks.total);
    context
        .counters
        .decoded(started, blocks.decoded_bytes, true);
    Ok(true)
}

/// Decodes the smallest region of the job's chunk that holds every part's region.
fn decode_span(
    job: &ChunkJob<'_>,
    encoded: Option<&[u8]>,
    options: &CodecOptions,
    counters: &ReadCounters,
) -> std::result::Result<Span, CodecError> {
    let ndim = job.chunk.len();
    let start: Vec<u64> = (0..ndim)
        .map(|d| {
            job.parts
                .iter()
                .map(|(_, p)| p.region_start[d])
                .min()
                .unwrap_or(0)
        })
        .collect();
    let shape: Vec<u64> = (0..ndim)
        .map(|d| {
            let end = job
                .parts
                .iter()
                .map(|(_, p)| p.region_start[d] + p.region_shape[d])
                .max()
                .unwrap_or(0);
            end - start[d]
        })
        .collect();
    let itemsize = job.array.dtype().itemsize;
    let mut region = vec![0u8; shape.iter().product::<u64>() as usize * itemsize];
    let whole = start.iter().all(|&s| s == 0)
        && job
            .array
            .zarrs()
            .chunk_shape(&job.chunk)
            .is_ok_and(|chunk| shape.iter().zip(&chunk).all(|(&n, c)| n == c.get()));
    if let (true, true, Some(encoded)) = (job.array.plain_blosc(), whole, encoded) {
        // A whole plain-blosc chunk: blosc's own decoder, straight into the span, as a whole
        // chunk read decodes it into its output.
        let started = Instant::now();
        decode_into(encoded, &mut region).map_err(CodecError::Other)?;
        counters.decoded(started, region.len() as u64, false);
        return Ok(Span {
            bytes: region,
            start,
            shape,
        });
    }
    {
        let cells = UnsafeCellSlice::new(region.as_mut_slice());
        let whole = ArraySubset::new_with_shape(shape.clone());
        // SAFETY: the only view of `region`.
        #[allow(unsafe_code)]
        let mut view = unsafe { ArrayBytesFixedDisjointView::new(cells, itemsize, &shape, whole) }
            .map_err(|e| CodecError::Other(e.to_string()))?;
        let target = ArrayBytesDecodeIntoTarget::Fixed(&mut view);
        let region = ChunkRegion {
            chunk: &job.chunk,
            start: &start,
            shape: &shape,
        };
        decode_region(job.array, &region, encoded, target, options, counters)?;
    }
    Ok(Span {
        bytes: region,
        start,
        shape,
    })
}

/// A decoded region of a chunk: `shape` elements from chunk-local `start`.
struct Span {
    bytes: Vec<u8>,
    start: Vec<u64>,
    shape: Vec<u64>,
}

/// A decoded block of a chunk, and where a part's region starts inside it.
struct DecodedRegion<'a> {
    bytes: &'a [u8],
    shape: &'a [u64],
    offset: &'a [u64],
}

/// C-order element strides of `shape`.
fn strides(shape: &[u64]) -> Vec<u64> {
    let mut strides = vec![1u64; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

/// Copies each selected element of a decoded region to its output position.
fn scatter(
    region: &DecodedRegion<'_>,
    part: &ChunkPart,
    output: UnsafeCellSlice<'_, u8>,
    target: &Target,
    itemsize: usize,
) {
    let region_strides = strides(region.shape);
    let run = contiguous_tail(part, &target.strides, &region_strides, region.offset);
    let placement = Scatter {
        region,
        part,
        output,
        out_strides: &target.strides,
        region_strides,
        itemsize,
        run_axis: run.first_axis,
        run_bytes: run.elements as usize * itemsize,
        run_starts: (run.out_start, run.region_start),
    };
    placement.axis(0, target.base, 0);
}

/// The trailing axes of a part that are one contiguous run of elements in both the output
/// and the decoded region, and where the run starts.
struct Run {
    first_axis: usize,
    elements: u64,
    /// The run's first output and region elements, relative to the bases the axes above reach.
    out_start: u64,
    region_start: u64,
}

/// The trailing axes of `part` whose elements follow on in both the output and the decoded
/// region (unit steps, strides equal to the run below): a point's whole field is then one
/// copy, not one per element.
fn contiguous_tail(
    part: &ChunkPart,
    out_strides: &[u64],
    region_strides: &[u64],
    region_offset: &[u64],
) -> Run {
    let mut run = Run {
        first_axis: part.placements.len(),
        elements: 1,
        out_start: 0,
        region_start: 0,
    };
    while run.first_axis > 0 && run.elements > 0 {
        let axis = run.first_axis - 1;
        let Placement::Run {
            out_start,
            len,
            step,
        } = &part.placements[axis]
        else {
            break;
        };
        let follows_on =
            *step == 1 && out_strides[axis] == run.elements && region_strides[axis] == run.elements;
        if *len > 1 && !follows_on {
            break;
        }
        // The first element: a progression's anchor is its region's last index when it steps back.
        let anchor = if *step > 0 {
            0
        } else {
            part.region_shape[axis] - 1
        };
        run.out_start += out_start * out_strides[axis];
        run.region_start += (anchor + region_offset[axis]) * region_strides[axis];
        run.elements *= len;
        run.first_axis = axis;
    }
    run
}

/// One part's elements being placed, axis after axis (no per-part allocation but the
/// region's strides: a point read places a million parts of a few elements each), down to
/// `run_axis`, from where they are one contiguous run of `run_bytes`.
struct Scatter<'a, 'r> {
    region: &'a DecodedRegion<'r>,
    part: &'a ChunkPart,
    output: UnsafeCellSlice<'a, u8>,
    out_strides: &'a [u64],
    region_strides: Vec<u64>,
    itemsize: usize,
    run_axis: usize,
    run_bytes: usize,
    /// The run's first output and region elements, relative to the bases reaching `run_axis`.
    run_starts: (u64, u64),
}

impl Scatter<'_, '_> {
    /// Places every element below `axis`, from output element `out_base` and region
    /// element `region_base`.
    fn axis(&self, axis: usize, out_base: u64, region_base: u64) {
        if axis == self.run_axis {
            let from = (region_base + self.run_starts.1) as usize * self.itemsize;
            let to = (out_base + self.run_starts.0) as usize * self.itemsize;
            // SAFETY: `to..to + run_bytes` is inside the output (positions come from the
            // selection's shape), and no other chunk part writes these elements: parts of one
            // request place disjoint elements, and each output belongs to one request (or to
            // requests given disjoint rows of it, checked when they were made).
            #[allow(unsafe_code)]
            let elements = unsafe { self.output.index_mut(to..to + self.run_bytes) };
            elements.copy_from_slice(&self.region.bytes[from..from + self.run_bytes]);
            return;
        }
        let offset = self.region.offset[axis];
        let (out_stride, region_stride) = (self.out_strides[axis], self.region_strides[axis]);
        self.part.placements[axis].for_each_pair(self.part.region_shape[axis], |o, r| {
            self.axis(
                axis + 1,
                out_base + o * out_stride,
                region_base + (r + offset) * region_stride,
            );
        });
    }
}

/// A region of one chunk, in chunk-local coordinates.
struct ChunkRegion<'a> {
    chunk: &'a [u64],
    start: &'a [u64],
    shape: &'a [u64],
}

/// Decodes `region` (or writes the fill value if the chunk is missing) into `target`.
fn decode_region(
    array: &ArrayHandle,
    region: &ChunkRegion<'_>,
    encoded: Option<&[u8]>,
    target: ArrayBytesDecodeIntoTarget<'_>,
    options: &CodecOptions,
    counters: &ReadCounters,
) -> std::result::Result<(), CodecError> {
    let zarray = array.zarrs();
    let Some(encoded) = encoded else {
        return copy_fill_value_into(zarray.data_type(), zarray.fill_value(), target);
    };
    let started = Instant::now();
    let chunk_shape = zarray
        .chunk_shape(region.chunk)
        .map_err(|e| CodecError::Other(e.to_string()))?;
    let chunk_shape_u64: Vec<u64> = chunk_shape.iter().map(|n| n.get()).collect();
    let itemsize = array.dtype().itemsize;
    let chunk_bytes = chunk_shape_u64.iter().product::<u64>() * itemsize as u64;
    let whole_chunk = region.start.iter().all(|&s| s == 0) && region.shape == chunk_shape_u64;
    if whole_chunk {
        zarray.codecs().decode_into(
            Cow::Borrowed(encoded),
            &chunk_shape,
            zarray.data_type(),
            zarray.fill_value(),
            target,
            options,
        )?;
        counters.decoded(started, chunk_bytes, false);
        return Ok(());
    }
    let blockwise = array.plain_blosc() && crate::runtime::partial_decoding();
    if array.checksummed() || (array.plain_blosc() && !blockwise) {
        // zarrs' partial decoders skip checksums, and blosc blocks carry none: verify the
        // whole chunk, then cut.
        if let ArrayBytesDecodeIntoTarget::Fixed(view) = target {
            let whole = decode_whole(array, &chunk_shape, chunk_bytes as usize, encoded, options)?;
            let ranges = region_byte_ranges(&chunk_shape_u64, region.start, region.shape, itemsize);
            let mut bytes =
                Vec::with_capacity(region.shape.iter().product::<u64>() as usize * itemsize);
            for (start, len) in ranges {
                bytes.extend_from_slice(&whole[start..start + len]);
            }
            view.copy_from_slice(&bytes)?;
            counters.decoded(started, chunk_bytes, true);
            return Ok(());
        }
    }
    if blockwise {
        if let ArrayBytesDecodeIntoTarget::Fixed(view) = target {
            let ranges = region_byte_ranges(&chunk_shape_u64, region.start, region.shape, itemsize);
            let decoded =
                decode_ranges(encoded, chunk_bytes as usize, &ranges).map_err(CodecError::Other)?;
            if let Some((bytes, blocks)) = decoded {
                view.copy_from_slice(&bytes)?;
                counters.blocks(blocks.decoded, blocks.total);
                counters.decoded(started, blocks.decoded_bytes, true);
            } else {
                let target = ArrayBytesDecodeIntoTarget::Fixed(view);
                decode_partially(array, chunk_shape, region, encoded, target, options)?;
                counters.decoded(started, chunk_bytes, true);
            }
            return Ok(());
        }
    }
    decode_partially(array, chunk_shape, region, encoded, target, options)?;
    counters.decoded(started, chunk_bytes, true);
    Ok(())
}

/// Decodes a whole chunk into a new buffer.
fn decode_whole(
    array: &ArrayHandle,
    chunk_shape: &ChunkShape,
    chunk_bytes: usize,
    encoded: &[u8],
    options: &CodecOptions,
) -> std::result::Result<Vec<u8>, CodecError> {
    let zarray = array.zarrs();
    let itemsize = array.dtype().itemsize;
    let shape: Vec<u64> = chunk_shape.iter().map(|n| n.get()).collect();
    let mut whole = vec![0u8; chunk_bytes];
    {
        let cells = UnsafeCellSlice::new(whole.as_mut_slice());
        // SAFETY: the only view of `whole`.
        #[allow(unsafe_code)]
        let mut view = unsafe {
            ArrayBytesFixedDisjointView::new(
                cells,
                itemsize,
                &shape,
                ArraySubset::new_with_shape(shape.clone()),
            )
        }
        .map_err(|e| CodecError::Other(e.to_string()))?;
        zarray.codecs().decode_into(
            Cow::Borrowed(encoded),
            chunk_shape,
            zarray.data_type(),
            zarray.fill_value(),
            ArrayBytesDecodeIntoTarget::Fixed(&mut view),
            options,
        )?;
    }
    Ok(whole)
}

/// A region of a chunk through zarrs' partial decoders (which decode whole-chunk codecs whole).
/// They read only the bytes they need, so a chunk whose encoding has a fixed size
/// (uncompressed) is first checked to have exactly that size.
fn decode_partially(
    array: &ArrayHandle,
    chunk_shape: ChunkShape,
    region: &ChunkRegion<'_>,
    encoded: &[u8],
    target: ArrayBytesDecodeIntoTarget<'_>,
    options: &CodecOptions,
) -> std::result::Result<(), CodecError> {
    let zarray = array.zarrs();
    let representation = zarray.codecs().encoded_representation(
        &chunk_shape,
        zarray.data_type(),
        zarray.fill_value(),
    )?;
    if let BytesRepresentation::FixedSize(size) = representation {
        if encoded.len() as u64 != size {
            return Err(CodecError::Other(format!(
                "the chunk has {} bytes, its encoding has exactly {size}",
                encoded.len()
            )));
        }
    }
    let region = ArraySubset::new_with_start_shape(region.start.to_vec(), region.shape.to_vec())
        .map_err(|e| CodecError::Other(e.to_string()))?;
    let input: Arc<Cow<'static, [u8]>> = Arc::new(Cow::Owned(encoded.to_vec()));
    zarray
        .codecs()
        .partial_decoder(
            input,
            &chunk_shape,
            zarray.data_type(),
            zarray.fill_value(),
            options,
        )?
        .partial_decode_into(&region, target, options)
}

#[cfg(test)]
mod tests {
    use super::inner_chunks_under;
    use crate::plan::ChunkPart;

    fn part(start: &[u64], shape: &[u64]) -> (usize, ChunkPart) {
        (
            0,
            ChunkPart {
                chunk: start.iter().map(|_| 0).collect(),
                region_start: start.iter().copied().collect(),
                region_shape: shape.iter().copied().collect(),
                placements: smallvec::SmallVec::new(),
            },
        )
    }

    #[test]
    fn inner_chunks_under_boxes_in_index_order() {
        // A 4 x 6 grid of 16 x 16 inner chunks.
        let wanted = inner_chunks_under(&[64, 96], &[16, 16], &[part(&[0, 0], &[32, 48])]);
        assert_eq!(wanted, vec![0, 1, 2, 6, 7, 8]);
        // Two boxes sharing a chunk; an empty one adds nothing; a partial last chunk counts.
        let parts = [
            part(&[40, 90], &[1, 6]),
            part(&[40, 80], &[20, 2]),
            part(&[3, 3], &[0, 5]),
        ];
        assert_eq!(
            inner_chunks_under(&[64, 96], &[16, 16], &parts),
            vec![17, 23]
        );
        assert!(inner_chunks_under(&[64], &[16, 16], &parts).is_empty());
    }
}
