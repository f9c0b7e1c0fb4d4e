//! Blosc (v1) buffers, read by fastzarr itself where it can do better than C-Blosc's whole-
//! buffer decode: only the blocks a selection needs (`ranges`), zstd blocks with one context
//! per thread (`zstd`), and the byte unshuffle (`unshuffle`).
//!
//! The header layout, defined once here: 16 bytes, then (unless the buffer is stored as-is)
//! one little-endian `u32` start offset per block, then the blocks.
//!
//! | byte  | field |
//! |-------|-------|
//! | 0     | format version (2 for C-Blosc 1) |
//! | 1     | the compressor's block format version (1) |
//! | 2     | flags (`FLAG_*`; the compressor in bits 5-7) |
//! | 3     | type size |
//! | 4-7   | decoded size (`nbytes`) |
//! | 8-11  | block size |
//! | 12-15 | encoded size (`cbytes`) |

pub mod ranges;
pub mod unshuffle;
pub mod zstd;

/// The header's length in bytes.
pub const HEADER_LEN: usize = 16;
/// Flag: byte shuffle before compressing.
pub const FLAG_SHUFFLE: u8 = 0x01;
/// Flag: the data follows the header uncompressed (no block offsets).
pub const FLAG_MEMCPYED: u8 = 0x02;
/// Flag: bit shuffle before compressing.
pub const FLAG_BITSHUFFLE: u8 = 0x04;
/// Flag set only by formats C-Blosc 1 does not decode.
pub const FLAG_FUTURE: u8 = 0x08;
/// Flag: blocks are compressed whole, not split into one stream per byte of the type.
pub const FLAG_DONT_SPLIT: u8 = 0x10;
/// The one format version C-Blosc 1 decodes (byte 0).
pub const VERSION_FORMAT: u8 = 2;
/// The version every compressor's block format has in C-Blosc 1 (byte 1).
pub const CODEC_VERSION_FORMAT: u8 = 1;
