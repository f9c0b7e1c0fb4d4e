//! Keeps Rust panics out of Python.
//!
//! `PyO3` turns a panic that reaches an entry point into `pyo3_runtime.PanicException`,
//! a `BaseException` that `except Exception` (and so every retry loop, dask worker and
//! notebook cell handler) lets through. Entry points run their work through [`catch`]
//! (or [`detach`]) instead, and a panic becomes `FastzarrError("internal error ...")`.
//! Panics inside rayon tasks travel back to the task's caller (rayon re-raises them
//! where the parallel call joins), so catching at the entry point covers them too.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::prelude::*;
use rayon::prelude::*;

use crate::errors::{Error, Result};

/// Runs `work`, turning a panic into [`Error::Panic`].
pub fn catch<R>(work: impl FnOnce() -> Result<R>) -> Result<R> {
    // Unwind safety: after a panic nothing `work` touched is used again except through
    // the error (shared state is behind mutexes whose poisoning we tolerate).
    catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|payload| Err(Error::from_panic(&*payload)))
}

/// Calls running without the GIL right now (low 32 bits) and the process that counted
/// them (high 32 bits): a forked child inherits a count of threads it does not have, and
/// starts again from zero. Lock-free, so that a fork can never copy it locked.
static BUSY: AtomicU64 = AtomicU64::new(0);

/// Applies `change` to this process's count.
fn update_busy(change: impl Fn(u32) -> u32) {
    let pid = std::process::id();
    let _ = BUSY.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |packed| {
        let count = if (packed >> 32) as u32 == pid {
            packed as u32
        } else {
            0
        };
        Some((u64::from(pid) << 32) | u64::from(change(count)))
    });
}

fn busy_count() -> u32 {
    let packed = BUSY.load(Ordering::SeqCst);
    if (packed >> 32) as u32 == std::process::id() {
        packed as u32
    } else {
        0
    }
}

struct Busy;

impl Busy {
    fn enter() -> Self {
        update_busy(|n| n.saturating_add(1));
        Busy
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        update_busy(|n| n.saturating_sub(1));
    }
}

/// `py.detach(work)` with panics turned into [`Error::Panic`]; counted as busy meanwhile.
pub fn detach<R: Send>(py: Python<'_>, work: impl FnOnce() -> Result<R> + Send) -> Result<R> {
    py.detach(|| {
        let _busy = Busy::enter();
        catch(work)
    })
}

/// How many fastzarr calls are working without the GIL (in other threads, when asked
/// from Python): a fork now copies none of their threads into the child.
#[pyfunction]
pub fn _busy_count() -> u32 {
    busy_count()
}

/// Internal test hook: panics on purpose at `place` ("python": the calling thread with
/// the GIL held; "detached": the calling thread without it; "pool": inside a parallel
/// task on fastzarr's pool), to check that the panic reaches Python as `FastzarrError`.
#[pyfunction]
pub fn _debug_panic(py: Python<'_>, place: &str) -> Result<()> {
    match place {
        "python" => catch(|| panic!("debug panic on the calling thread")),
        "detached" => detach(py, || panic!("debug panic without the GIL")),
        "pool" => crate::py::detach_cancellable(py, None, |_| {
            (0..64_u32).into_par_iter().try_for_each(|i| {
                assert!(i != 37, "debug panic in a pool task");
                Ok(())
            })
        }),
        other => Err(Error::InvalidArgument(format!(
            "place must be 'python', 'detached' or 'pool', not {other:?}"
        ))),
    }
}
