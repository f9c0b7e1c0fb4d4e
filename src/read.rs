//! Decodes every chunk part of many requests in one parallel pass, each straight into
//! its place in a caller-owned output buffer.

use std::borrow::Cow;
use std::sync::Arc;

use rayon::prelude::*;
use unsafe_cell_slice::UnsafeCellSlice;
use zarrs::array::{
    copy_fill_value_into, ArrayBytesDecodeIntoTarget, ArrayBytesFixedDisjointView, ArraySubset,
    ArrayToBytesCodecTraits, CodecError, CodecOptions,
};

use crate::array::ArrayHandle;
use crate::errors::{Error, Result};
use crate::plan::{chunk_parts, ChunkPart, Selection};

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
    pub output: OutputBuffer,
}

impl ReadRequest<'_> {
    fn check(&self) -> Result<()> {
        let expected =
            u128::from(self.selection.num_elements()) * self.array.dtype().itemsize as u128;
        if expected != self.output.len as u128 {
            return Err(Error::InvalidOutput(format!(
                "output holds {} bytes, the selection needs {expected}",
                self.output.len
            )));
        }
        Ok(())
    }
}

/// Reads every request; all chunk parts of all requests share one parallel pass.
pub fn read_many(requests: &[ReadRequest<'_>]) -> Result<()> {
    for request in requests {
        request.check()?;
    }
    let full_shapes: Vec<Vec<u64>> = requests.iter().map(|r| r.selection.full_shape()).collect();
    let tasks: Vec<(usize, ChunkPart)> = requests
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            chunk_parts(&r.selection, r.array.chunk_shape())
                .into_iter()
                .map(move |part| (i, part))
        })
        .collect();
    crate::runtime::install(|| {
        // Chunks are the unit of parallelism; a codec gets inner threads only when
        // there are fewer chunks than threads (one huge chunk, say).
        let inner = (rayon::current_num_threads() / tasks.len().max(1)).max(1);
        let options = CodecOptions::default().with_concurrent_target(inner);
        tasks.par_iter().try_for_each(|(i, part)| {
            let request = &requests[*i];
            decode_part(
                request.array,
                part,
                request.output.cells(),
                &full_shapes[*i],
                &options,
            )
        })
    })
}

fn decode_part(
    array: &ArrayHandle,
    part: &ChunkPart,
    output: UnsafeCellSlice<'_, u8>,
    output_shape: &[u64],
    options: &CodecOptions,
) -> Result<()> {
    let zarray = array.zarrs();
    let key = zarray.chunk_key(&part.chunk);
    let corrupt = |reason: String| Error::CorruptChunk {
        url: array.store().url().to_string(),
        path: array.path().to_string(),
        key: key.as_str().to_string(),
        reason,
    };
    let encoded = array
        .store()
        .storage()
        .get(&key)
        .map_err(|e| Error::Storage {
            url: array.store().url().to_string(),
            key: key.as_str().to_string(),
            reason: e.to_string(),
        })?;
    let itemsize = array.dtype().itemsize;
    if let Some((out_start, out_shape)) = part.direct_output() {
        let out_subset = ArraySubset::new_with_start_shape(out_start, out_shape)
            .map_err(|e| Error::Panic(e.to_string()))?;
        // SAFETY: chunk parts of one request place disjoint sets of output elements
        // (plan.rs tests this), and each output buffer belongs to exactly one request.
        #[allow(unsafe_code)]
        let mut out_view =
            unsafe { ArrayBytesFixedDisjointView::new(output, itemsize, output_shape, out_subset) }
                .map_err(|e| Error::Panic(e.to_string()))?;
        let target = ArrayBytesDecodeIntoTarget::Fixed(&mut out_view);
        return decode_region(array, part, encoded.as_deref(), target, options)
            .map_err(|e| corrupt(e.to_string()));
    }
    // Strided or integer-array selections: decode the region the part spans, then
    // place each selected element.
    let region_len = part.region_shape.iter().product::<u64>() as usize * itemsize;
    let mut region = vec![0u8; region_len];
    {
        let cells = UnsafeCellSlice::new(region.as_mut_slice());
        let whole = ArraySubset::new_with_shape(part.region_shape.clone());
        // SAFETY: the only view of `region`.
        #[allow(unsafe_code)]
        let mut region_view =
            unsafe { ArrayBytesFixedDisjointView::new(cells, itemsize, &part.region_shape, whole) }
                .map_err(|e| Error::Panic(e.to_string()))?;
        let target = ArrayBytesDecodeIntoTarget::Fixed(&mut region_view);
        decode_region(array, part, encoded.as_deref(), target, options)
            .map_err(|e| corrupt(e.to_string()))?;
    }
    scatter(&region, part, output, output_shape, itemsize);
    Ok(())
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
    region: &[u8],
    part: &ChunkPart,
    output: UnsafeCellSlice<'_, u8>,
    output_shape: &[u64],
    itemsize: usize,
) {
    let pairs: Vec<Vec<(u64, u64)>> = part
        .placements
        .iter()
        .zip(&part.region_shape)
        .map(|(placement, &len)| placement.pairs(len))
        .collect();
    let (out_strides, region_strides) = (strides(output_shape), strides(&part.region_shape));
    let Some((last, outer)) = pairs.split_last() else {
        return; // 0-d parts are always direct
    };
    let mut counter = vec![0usize; outer.len()];
    loop {
        let mut out_base = 0;
        let mut region_base = 0;
        for (d, &c) in counter.iter().enumerate() {
            let (o, r) = outer[d][c];
            out_base += o * out_strides[d];
            region_base += r * region_strides[d];
        }
        for &(o, r) in last {
            let from = (region_base + r) as usize * itemsize;
            let to = (out_base + o) as usize * itemsize;
            // SAFETY: `to` is inside the output (positions come from the selection's
            // shape), and no other chunk part writes this element (see `decode_part`).
            #[allow(unsafe_code)]
            let target = unsafe { output.index_mut(to..to + itemsize) };
            target.copy_from_slice(&region[from..from + itemsize]);
        }
        let mut d = outer.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            counter[d] += 1;
            if counter[d] < outer[d].len() {
                break;
            }
            counter[d] = 0;
        }
    }
}

/// Decodes `part.region` of the chunk (or writes the fill value if it is missing) into `target`.
fn decode_region(
    array: &ArrayHandle,
    part: &ChunkPart,
    encoded: Option<&[u8]>,
    target: ArrayBytesDecodeIntoTarget<'_>,
    options: &CodecOptions,
) -> std::result::Result<(), CodecError> {
    let zarray = array.zarrs();
    let Some(encoded) = encoded else {
        return copy_fill_value_into(zarray.data_type(), zarray.fill_value(), target);
    };
    let chunk_shape = zarray
        .chunk_shape(&part.chunk)
        .map_err(|e| CodecError::Other(e.to_string()))?;
    let chunk_shape_u64: Vec<u64> = chunk_shape.iter().map(|n| n.get()).collect();
    if part.covers_chunk(&chunk_shape_u64) {
        return zarray.codecs().decode_into(
            Cow::Borrowed(encoded),
            &chunk_shape,
            zarray.data_type(),
            zarray.fill_value(),
            target,
            options,
        );
    }
    let region =
        ArraySubset::new_with_start_shape(part.region_start.clone(), part.region_shape.clone())
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
