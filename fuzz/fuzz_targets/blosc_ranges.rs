//! The blosc block decoder (`src/blosc/ranges.rs`) on arbitrary bytes: whole-buffer decode into
//! a destination of the expected size, and byte-range reads block by block. Input layout:
//! 4 bytes expected decoded size (mod 1 MiB), 1 byte number of ranges, 8 bytes per range
//! (start, len as u32, mod the size), then the blosc buffer.
#![no_main]

use fastzarr::blosc::ranges::{decode_into, decode_ranges, BlockReader};
use libfuzzer_sys::fuzz_target;

fn u32_at(data: &[u8], at: usize) -> usize {
    u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let expected = u32_at(data, 0) % (1 << 20);
    let nranges = usize::from(data[4] % 8);
    let mut at = 5;
    let mut ranges = Vec::new();
    for _ in 0..nranges {
        if data.len() < at + 8 {
            return;
        }
        let start = u32_at(data, at) % (expected + 1);
        let len = u32_at(data, at + 4) % (expected - start + 1);
        ranges.push((start, len));
        at += 8;
    }
    let buffer = &data[at..];
    let mut dest = vec![0u8; expected];
    let _ = decode_into(buffer, &mut dest);
    if let Ok(Some((bytes, _))) = decode_ranges(buffer, expected, &ranges) {
        assert_eq!(bytes.len(), ranges.iter().map(|r| r.1).sum::<usize>());
    }
    if let Ok(Some(mut reader)) = BlockReader::new(buffer, expected) {
        for range in &ranges {
            let _ = reader.read(std::slice::from_ref(range));
        }
    }
});
