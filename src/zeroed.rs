//! A zero-filled byte buffer whose pages cost nothing until they are written.
//!
//! A chunk read block by block is held at its full compressed length (block offsets are
//! absolute) although only the header, the block table and a few blocks are ever filled.
//! `vec![0; n]` clears all of it: glibc's calloc clears memory it reuses from the heap, and
//! after the first large free its mmap threshold rises so every later buffer is reused. For
//! a point read from 4 MB chunks that memset took a third of the read. Anonymous pages
//! come from the kernel already zero, and only the pages touched are ever backed.

use std::ops::{Deref, DerefMut};

/// Below this size a plain vector is cheaper than a mapping.
const MAP_FROM: usize = 256 * 1024;

/// `len` zero bytes, writable.
pub struct ZeroedBuffer(Storage);

enum Storage {
    Heap(Vec<u8>),
    #[cfg(unix)]
    Mapped(Mapping),
}

impl ZeroedBuffer {
    pub fn new(len: usize) -> Self {
        #[cfg(unix)]
        if len >= MAP_FROM {
            if let Some(mapping) = Mapping::new(len) {
                return Self(Storage::Mapped(mapping));
            }
        }
        Self(Storage::Heap(vec![0u8; len]))
    }
}

/// `len` zero bytes as a vector, or `None` when the allocator has no room (never an abort).
/// The zeroing is calloc's: large buffers come from fresh pages and cost no memset.
#[allow(unsafe_code)]
pub fn try_zeroed_vec(len: usize) -> Option<Vec<u8>> {
    if len == 0 {
        return Some(Vec::new());
    }
    let layout = std::alloc::Layout::array::<u8>(len).ok()?;
    // SAFETY: `layout` has a non-zero size (checked above).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        return None;
    }
    // SAFETY: `ptr` was allocated by the global allocator with the layout of a `[u8]` of
    // `len` bytes (size `len`, align 1), as a `Box<[u8]>` of that length is, and its `len`
    // bytes are initialised (zero); nothing else owns it.
    let boxed = unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) };
    Some(boxed.into_vec())
}

impl From<Vec<u8>> for ZeroedBuffer {
    /// A buffer already filled (nothing left to zero).
    fn from(vec: Vec<u8>) -> Self {
        Self(Storage::Heap(vec))
    }
}

impl Deref for ZeroedBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Storage::Heap(vec) => vec,
            #[cfg(unix)]
            Storage::Mapped(mapping) => mapping.as_slice(),
        }
    }
}

impl DerefMut for ZeroedBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.0 {
            Storage::Heap(vec) => vec,
            #[cfg(unix)]
            Storage::Mapped(mapping) => mapping.as_mut_slice(),
        }
    }
}

impl std::fmt::Debug for ZeroedBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ZeroedBuffer({} bytes)", self.len())
    }
}

/// A private anonymous mapping of `len` bytes, unmapped on drop.
#[cfg(unix)]
struct Mapping {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned memory like a Vec's; nothing else refers to it.
#[cfg(unix)]
#[allow(unsafe_code)]
unsafe impl Send for Mapping {}
// SAFETY: shared access is read-only through `&self`.
#[cfg(unix)]
#[allow(unsafe_code)]
unsafe impl Sync for Mapping {}

#[cfg(unix)]
#[allow(unsafe_code)]
impl Mapping {
    /// `None` when the kernel refuses (the caller falls back to the heap).
    fn new(len: usize) -> Option<Self> {
        // SAFETY: a fresh private anonymous mapping aliases nothing; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        std::ptr::NonNull::new(ptr.cast::<u8>()).map(|ptr| Self { ptr, len })
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` readable bytes (zero until written) live at `ptr` until drop.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

#[cfg(unix)]
#[allow(unsafe_code)]
impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; no slice outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_vectors_are_zero_and_refuse_impossible_sizes() {
        for len in [0, 1, 4096, 5 << 20] {
            let vec = try_zeroed_vec(len).unwrap();
            assert!(vec.len() == len && vec.iter().all(|&b| b == 0), "len {len}");
        }
        assert!(try_zeroed_vec(usize::MAX / 2).is_none());
    }

    #[test]
    fn small_and_large_buffers_are_zero_and_writable() {
        for len in [0, 1, 4096, MAP_FROM - 1, MAP_FROM, 3 * MAP_FROM + 17] {
            let mut buffer = ZeroedBuffer::new(len);
            assert_eq!(buffer.len(), len);
            assert!(buffer.iter().all(|&b| b == 0), "len {len}");
            if len > 1 {
                buffer[len - 1] = 7;
                buffer[0] = 9;
                assert_eq!((buffer[0], buffer[len - 1]), (9, 7));
            }
        }
    }
}
