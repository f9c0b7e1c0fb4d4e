//! Selection planning (`plan.rs`): arbitrary shapes, chunk shapes, indices and points.
//! Every chunk part must lie inside its chunk, and parts must place every selected
//! element exactly once.
#![no_main]

use fastzarr::plan::{chunk_parts, AxisIndex, PointSet, Selection};
use libfuzzer_sys::fuzz_target;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        *first
    }
    fn small(&mut self) -> i64 {
        i64::from(self.byte() as i8)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    let ndim = usize::from(input.byte() % 4);
    let shape: Vec<u64> = (0..ndim).map(|_| u64::from(input.byte() % 24)).collect();
    let chunks: Vec<u64> = (0..ndim).map(|_| u64::from(input.byte() % 9).max(1)).collect();
    let nindices = usize::from(input.byte() % 5);
    let mut indices = Vec::new();
    for _ in 0..nindices {
        let index = match input.byte() % 5 {
            0 => AxisIndex::Int(input.small()),
            1 => {
                let flags = input.byte();
                let (start, stop, step) = (input.small(), input.small(), input.small());
                AxisIndex::Slice {
                    start: (flags & 1 != 0).then_some(start),
                    stop: (flags & 2 != 0).then_some(stop),
                    step: (flags & 4 != 0).then_some(step),
                }
            }
            2 => AxisIndex::Ellipsis,
            3 => AxisIndex::Array((0..input.byte() % 6).map(|_| input.small()).collect()),
            _ => AxisIndex::Mask((0..input.byte() % 24).map(|_| input.byte() & 1 == 1).collect()),
        };
        indices.push(index);
    }
    let Ok(selection) = Selection::new(&indices, &shape) else {
        return;
    };
    let total = selection.num_elements();
    let parts = chunk_parts(&selection, &chunks);
    let mut placed = 0u64;
    for part in &parts {
        for d in 0..ndim {
            assert!(part.region_start[d] + part.region_shape[d] <= chunks[d]);
        }
        placed += part.placements.iter().zip(&part.region_shape).map(|(p, &len)| p.pairs(len).len() as u64).product::<u64>();
    }
    assert_eq!(placed, total, "{shape:?} {chunks:?} {indices:?}");
    // Points on the first axes.
    if ndim > 0 {
        let naxes = usize::from(input.byte()) % ndim + 1;
        let npoints = usize::from(input.byte() % 6);
        let axes: Vec<usize> = (0..naxes).collect();
        let coords: Vec<Vec<i64>> = (0..naxes).map(|_| (0..npoints).map(|_| input.small()).collect()).collect();
        if let Ok(points) = PointSet::new(axes, coords, &shape) {
            let (layout, _, _) = points.layout(&selection);
            let _ = layout;
            for p in 0..points.len() {
                let one = points.selection_of(&selection, p);
                let _ = chunk_parts(&one, &chunks);
            }
        }
    }
});
