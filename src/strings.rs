//! Reads of arrays whose elements vary in length (zarr-python's `string` and
//! `variable_length_bytes`, v2 `|O` with `vlen-utf8`/`vlen-bytes`).
//!
//! Their chunks cannot be decoded into a numpy buffer in place, so a read collects the
//! selected elements into one byte buffer with offsets, in output order; `py/strings.rs`
//! turns that into numpy objects. Chunks are still fetched concurrently and decoded in
//! parallel, each once however many selected elements or points fall in it, and every
//! length is checked (codecs/vlen.rs).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rayon::prelude::*;
use zarrs::array::CodecOptions;
use zarrs_codec::ArrayToBytesCodecTraits;

use crate::array::ArrayHandle;
use crate::errors::{Error, Result};
use crate::plan::{chunk_parts, ChunkPart, Dims, PointSet, Selection};
use crate::runtime::Cancel;
use crate::stats::{ReadCounters, ReadStats};

/// The selected elements, in output (C) order: element `i` is
/// `data[offsets[i]..offsets[i + 1]]`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Elements {
    pub data: Vec<u8>,
    pub offsets: Vec<usize>,
}

impl Elements {
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> &[u8] {
        &self.data[self.offsets[i]..self.offsets[i + 1]]
    }
}

/// One chunk part of the read and where its elements go: output position
/// `base + sum(out[d] * strides[d])`.
struct Placed {
    part: ChunkPart,
    base: u64,
    strides: Vec<u64>,
}

/// Reads `selection` (or `points` within it) of a variable-length `array`.
pub fn read(
    array: &ArrayHandle,
    selection: &Selection,
    points: Option<&PointSet>,
    cancel: &Cancel,
) -> Result<(Elements, ReadStats)> {
    array.store().check_unchanged(array.path())?;
    let (count, by_chunk) = placements(array, selection, points);
    let counters = ReadCounters::default();
    let chunks: Vec<(&Dims, &Vec<Placed>)> = by_chunk.iter().collect();
    let keys: Vec<String> = chunks.iter().map(|(c, _)| array.chunk_key(c)).collect();
    let fetched = fetch_all(array, &keys, cancel, &counters)?;
    let decoded: Vec<(Vec<u8>, Vec<usize>)> = crate::runtime::install(|| {
        chunks
            .par_iter()
            .zip(&keys)
            .zip(fetched)
            .map(|(((chunk, _), key), bytes)| {
                cancel.check()?;
                decode(array, chunk, key, bytes, &counters)
            })
            .collect()
    })?;
    // Lengths first, so the output buffer is allocated once at its size.
    let mut lengths = vec![0usize; count];
    let mut sources: Vec<(u32, usize)> = vec![(0, 0); count];
    for (slot, ((_, placed), (_, offsets))) in chunks.iter().zip(&decoded).enumerate() {
        for_each_element(array, placed, |out, element| {
            lengths[out] = offsets[element + 1] - offsets[element];
            sources[out] = (slot as u32, element);
        });
    }
    let total = lengths
        .iter()
        .try_fold(0usize, |acc, &n| acc.checked_add(n))
        .ok_or_else(|| Error::Allocation {
            what: format!("the strings of array '{}'", array.path()),
            bytes: u128::MAX,
        })?;
    let mut data = Vec::new();
    data.try_reserve_exact(total)
        .map_err(|_| Error::Allocation {
            what: format!(
                "the strings of array '{}' in store {}",
                array.path(),
                array.store().url()
            ),
            bytes: total as u128,
        })?;
    let mut offsets = Vec::with_capacity(count + 1);
    for &(slot, element) in &sources {
        let (bytes, chunk_offsets) = &decoded[slot as usize];
        offsets.push(data.len());
        data.extend_from_slice(&bytes[chunk_offsets[element]..chunk_offsets[element + 1]]);
    }
    offsets.push(data.len());
    Ok((Elements { data, offsets }, counters.snapshot()))
}

/// The output size and every chunk part, grouped by chunk so that each is decoded once.
fn placements(
    array: &ArrayHandle,
    selection: &Selection,
    points: Option<&PointSet>,
) -> (usize, BTreeMap<Dims, Vec<Placed>>) {
    let mut by_chunk: BTreeMap<Dims, Vec<Placed>> = BTreeMap::new();
    let mut add = |selection: &Selection, base: u64, strides: &[u64]| {
        for part in chunk_parts(selection, array.chunk_shape()) {
            by_chunk
                .entry(part.chunk.clone())
                .or_default()
                .push(Placed {
                    part,
                    base,
                    strides: strides.to_vec(),
                });
        }
    };
    match points {
        None => {
            let shape = selection.full_shape();
            add(selection, 0, &c_strides(&shape));
            (selection.num_elements() as usize, by_chunk)
        }
        Some(points) => {
            let (shape, strides, point_stride) = points.layout(selection);
            for p in 0..points.len() {
                add(
                    &points.selection_of(selection, p),
                    points.row(p) * point_stride,
                    &strides,
                );
            }
            (shape.iter().product::<u64>() as usize, by_chunk)
        }
    }
}

fn c_strides(shape: &[u64]) -> Vec<u64> {
    let mut strides = vec![1u64; shape.len()];
    for k in (0..shape.len().saturating_sub(1)).rev() {
        strides[k] = strides[k + 1] * shape[k + 1];
    }
    strides
}

/// Calls `f(output position, element of the chunk)` for every element `placed` selects.
fn for_each_element(array: &ArrayHandle, placed: &[Placed], mut f: impl FnMut(usize, usize)) {
    let chunk_strides = c_strides(array.chunk_shape());
    for Placed {
        part,
        base,
        strides,
    } in placed
    {
        let axes: Vec<Vec<(u64, u64)>> = part
            .placements
            .iter()
            .zip(&part.region_shape)
            .zip(&part.region_start)
            .zip(&chunk_strides)
            .zip(strides)
            .map(|((((placement, &len), &start), &chunk_stride), &stride)| {
                placement
                    .pairs(len)
                    .into_iter()
                    .map(|(out, region)| (out * stride, (start + region) * chunk_stride))
                    .collect()
            })
            .collect();
        if axes.iter().any(Vec::is_empty) {
            continue;
        }
        // An odometer over the axes, last fastest.
        let mut counter = vec![0usize; axes.len()];
        'elements: loop {
            let (out, element) = counter
                .iter()
                .zip(&axes)
                .fold((*base, 0u64), |(o, e), (&c, axis)| {
                    (o + axis[c].0, e + axis[c].1)
                });
            f(out as usize, element as usize);
            let mut dim = axes.len();
            loop {
                if dim == 0 {
                    break 'elements;
                }
                dim -= 1;
                counter[dim] += 1;
                if counter[dim] < axes[dim].len() {
                    continue 'elements;
                }
                counter[dim] = 0;
            }
        }
    }
}

/// Every chunk, concurrently: local ones on the pool, remote ones on the I/O runtime
/// (aborted if the read stops early).
fn fetch_all(
    array: &ArrayHandle,
    keys: &[String],
    cancel: &Cancel,
    counters: &ReadCounters,
) -> Result<Vec<Option<Bytes>>> {
    let store = array.store();
    if !store.is_remote() {
        return crate::runtime::install(|| {
            keys.par_iter()
                .map(|key| {
                    cancel.check()?;
                    let started = Instant::now();
                    let bytes = store.get(key)?;
                    counters.fetched(started, bytes.as_ref().map(Bytes::len), 1);
                    Ok(bytes)
                })
                .collect()
        });
    }
    let (runtime, _) = crate::runtime::io()?;
    let mut tasks: Vec<_> = keys
        .iter()
        .map(|key| {
            let store = store.clone();
            let key = key.clone();
            runtime.spawn(async move {
                let started = Instant::now();
                store.get_async(&key).await.map(|b| (b, started))
            })
        })
        .collect();
    let mut fetched = Vec::with_capacity(tasks.len());
    let result = (|| {
        for task in &mut tasks {
            let joined = loop {
                cancel.check()?;
                let waited = crate::runtime::block_on(async {
                    tokio::time::timeout(Duration::from_millis(20), &mut *task).await
                })?;
                if let Ok(joined) = waited {
                    break joined;
                }
            };
            let (bytes, started) =
                joined.map_err(|e| Error::Panic(format!("a fetch task failed: {e}")))??;
            counters.fetched(started, bytes.as_ref().map(Bytes::len), 1);
            fetched.push(bytes);
        }
        Ok(())
    })();
    for task in &tasks {
        task.abort();
    }
    result.map(|()| fetched)
}

/// A chunk's elements and their offsets: decoded, or the fill value for a missing chunk.
fn decode(
    array: &ArrayHandle,
    chunk: &[u64],
    key: &str,
    bytes: Option<Bytes>,
    counters: &ReadCounters,
) -> Result<(Vec<u8>, Vec<usize>)> {
    let zarray = array.zarrs();
    let corrupt = |reason: String| array.corrupt_chunk(key, reason);
    let shape = zarray
        .chunk_shape(chunk)
        .map_err(|e| corrupt(e.to_string()))?;
    let count = shape.iter().map(|n| n.get() as usize).product::<usize>();
    let Some(bytes) = bytes else {
        let fill = array.fill_value_bytes();
        let offsets = (0..=count).map(|i| i * fill.len()).collect();
        return Ok((fill.repeat(count), offsets));
    };
    if let Some(layout) = array.shard_layout() {
        layout.check_shard(&bytes).map_err(&corrupt)?;
    }
    let started = Instant::now();
    let decoded = zarray
        .codecs()
        .decode(
            Cow::Borrowed(&bytes),
            &shape,
            zarray.data_type(),
            zarray.fill_value(),
            &CodecOptions::default(),
        )
        .map_err(|e| corrupt(e.to_string()))?;
    let (data, offsets) = decoded
        .into_variable()
        .map_err(|e| corrupt(e.to_string()))?
        .into_parts();
    let (data, offsets): (Vec<u8>, Vec<usize>) = (data.into_owned(), offsets.to_vec());
    // The sharding codec assembles inner chunks itself: its offsets are checked here too.
    let valid = offsets.len() == count + 1
        && offsets.first() == Some(&0)
        && offsets.last() == Some(&data.len())
        && offsets.windows(2).all(|w| w[0] <= w[1]);
    if !valid {
        return Err(corrupt(format!(
            "decoded to {} offsets over {} bytes, not {} elements",
            offsets.len(),
            data.len(),
            count
        )));
    }
    counters.decoded(started, data.len() as u64, false);
    Ok((data, offsets))
}
