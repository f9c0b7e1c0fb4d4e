//! `fastzarr.ReadStats`: what a `read_many` pass did.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::stats::ReadStats;

#[pyclass(name = "ReadStats", module = "fastzarr", frozen)]
pub struct PyReadStats {
    pub stats: ReadStats,
    /// Bytes of the numpy arrays returned.
    pub bytes_out: u64,
    pub wall_seconds: f64,
}

#[pymethods]
impl PyReadStats {
    /// Chunks the selections touched; each was fetched once.
    #[getter]
    fn chunks(&self) -> u64 {
        self.stats.chunks
    }
    /// Touched chunks absent from the store (read as the fill value).
    #[getter]
    fn chunks_missing(&self) -> u64 {
        self.stats.chunks_missing
    }
    /// Chunks of which only a region was decoded.
    #[getter]
    fn chunks_partial(&self) -> u64 {
        self.stats.chunks_partial
    }
    /// Encoded bytes fetched from the stores.
    #[getter]
    fn bytes_read(&self) -> u64 {
        self.stats.bytes_read
    }
    /// Requests made to the stores for chunk data (a partial blosc read makes several).
    #[getter]
    fn requests(&self) -> u64 {
        self.stats.requests
    }
    /// Bytes the codecs produced (whole chunks, or only the blosc blocks needed).
    #[getter]
    fn bytes_decoded(&self) -> u64 {
        self.stats.bytes_decoded
    }
    /// Bytes of the arrays returned.
    #[getter]
    fn bytes_out(&self) -> u64 {
        self.bytes_out
    }
    /// Blosc blocks decoded in partially decoded chunks.
    #[getter]
    fn blocks_decoded(&self) -> u64 {
        self.stats.blocks_decoded
    }
    /// Blosc blocks those partially decoded chunks hold in all.
    #[getter]
    fn blocks_total(&self) -> u64 {
        self.stats.blocks_total
    }
    /// Seconds spent fetching, summed over threads.
    #[getter]
    fn fetch_seconds(&self) -> f64 {
        self.stats.fetch_seconds
    }
    /// Seconds spent decoding, summed over threads.
    #[getter]
    fn decode_seconds(&self) -> f64 {
        self.stats.decode_seconds
    }
    /// Seconds the whole pass took.
    #[getter]
    fn wall_seconds(&self) -> f64 {
        self.wall_seconds
    }

    fn as_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        let s = &self.stats;
        for (key, value) in [
            ("chunks", s.chunks),
            ("chunks_missing", s.chunks_missing),
            ("chunks_partial", s.chunks_partial),
            ("bytes_read", s.bytes_read),
            ("requests", s.requests),
            ("bytes_decoded", s.bytes_decoded),
            ("bytes_out", self.bytes_out),
            ("blocks_decoded", s.blocks_decoded),
            ("blocks_total", s.blocks_total),
        ] {
            dict.set_item(key, value)?;
        }
        for (key, value) in [
            ("fetch_seconds", s.fetch_seconds),
            ("decode_seconds", s.decode_seconds),
            ("wall_seconds", self.wall_seconds),
        ] {
            dict.set_item(key, value)?;
        }
        Ok(dict)
    }

    fn __repr__(&self) -> String {
        let s = &self.stats;
        format!(
            "ReadStats(chunks={} (missing {}, partial {}), read {:.3} MB in {} requests, decoded {:.3} MB, returned {:.3} MB, \
             blosc blocks {}/{}, fetch {:.3} s, decode {:.3} s, wall {:.3} s)",
            s.chunks,
            s.chunks_missing,
            s.chunks_partial,
            s.bytes_read as f64 / 1e6,
            s.requests,
            s.bytes_decoded as f64 / 1e6,
            self.bytes_out as f64 / 1e6,
            s.blocks_decoded,
            s.blocks_total,
            s.fetch_seconds,
            s.decode_seconds,
            self.wall_seconds
        )
    }
}
