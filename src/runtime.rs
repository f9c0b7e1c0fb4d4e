//! The one place that owns fastzarr's threads.
//!
//! zarrs and rayon would otherwise start rayon's global pool, whose threads do not
//! survive `fork()`: a forked child that touches it waits forever (rayon#708). We own
//! the pool, remember which process built it, and build a fresh one in a forked child.
//! zarrs asks rayon for its thread count whenever it builds codec options (array
//! construction included), which outside a pool starts the global one: every zarrs call
//! therefore runs inside ours (`install`).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::errors::{Error, Result};
use crate::host_limit::HostLimit;

const THREADS_ENV: &str = "FASTZARR_NUM_THREADS";

pub(crate) struct OwnedPool {
    pid: u32,
    pool: Arc<rayon::ThreadPool>,
}

pub(crate) static POOL: Mutex<Option<OwnedPool>> = Mutex::new(None);
/// Thread count asked for by `set_num_threads`; 0 means "not set".
static REQUESTED_THREADS: AtomicUsize = AtomicUsize::new(0);

/// [`default_threads`] as found by this process: `pid << 32 | threads`, 0 before the first
/// look. Finding it reads the environment and cgroup files (`available_parallelism`), which
/// cost more than a small read itself; a forked child (another pid) looks again, since its
/// CPU affinity or limits may differ.
static DEFAULT_THREADS: AtomicU64 = AtomicU64::new(0);

/// Starts `work` on a named thread of its own, detached: for work a caller may abandon (an
/// open it stops waiting for on Ctrl-C or a timeout; the work ends by itself).
pub fn spawn_detached(name: &str, work: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(work)
        .map(drop)
        .map_err(|e| Error::InvalidArgument(format!("could not start a thread: {e}")))
}

/// `work` on every item of `items`, each on a thread of its own, the results in order: for
/// work that waits (disks, servers) rather than computes, which the decode pool's threads
/// must not be kept from. The threads end before this returns; one that panicked gives an
/// [`Error::Panic`].
pub fn on_own_threads<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(&T) -> Result<R> + Sync,
) -> Vec<Result<R>> {
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .iter()
            .map(|item| scope.spawn(move || work(item)))
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|payload| Err(Error::from_panic(payload.as_ref())))
            })
            .collect()
    })
}

/// Threads to use when nobody said: `FASTZARR_NUM_THREADS`, else the cores this process may
/// use; read once per process.
fn default_threads() -> Result<usize> {
    let pid = u64::from(std::process::id());
    let cached = DEFAULT_THREADS.load(Ordering::Relaxed);
    if cached != 0 && cached >> 32 == pid {
        return Ok((cached & u64::from(u32::MAX)) as usize);
    }
    let threads = find_default_threads()?;
    let stored = u64::try_from(threads).map_or(u64::from(u32::MAX), |n| n.min(u64::from(u32::MAX)));
    DEFAULT_THREADS.store(pid << 32 | stored, Ordering::Relaxed);
    Ok(threads)
}

fn find_default_threads() -> Result<usize> {
    match std::env::var(THREADS_ENV) {
        Ok(value) => value
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{THREADS_ENV} must be a positive integer, not {value:?}"
                ))
            }),
        Err(_) => Ok(std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)),
    }
}

/// The number of decode threads fastzarr uses.
pub fn num_threads() -> Result<usize> {
    match REQUESTED_THREADS.load(Ordering::Relaxed) {
        0 => default_threads(),
        n => Ok(n),
    }
}

/// Sets the number of decode threads; the pool is rebuilt on its next use.
pub fn set_num_threads(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::InvalidArgument(
            "the number of threads must be at least 1".into(),
        ));
    }
    REQUESTED_THREADS.store(n, Ordering::Relaxed);
    Ok(())
}

/// The decode pool of this process, built (or rebuilt after a fork or resize) on demand.
pub fn pool() -> Result<Arc<rayon::ThreadPool>> {
    crate::fork::install_handlers();
    let pid = std::process::id();
    let threads = num_threads()?;
    let mut guard = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(owned) = guard.as_ref() {
        if owned.pid == pid && owned.pool.current_num_threads() == threads {
            return Ok(owned.pool.clone());
        }
    }
    if let Some(stale) = guard.take() {
        if stale.pid != pid {
            // The pool's threads were not copied into this forked child: dropping it
            // would signal threads that do not exist, so it is leaked on purpose.
            std::mem::forget(stale);
        }
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("fastzarr-decode-{i}"))
        .build()
        .map_err(|e| {
            Error::InvalidArgument(format!("could not start {threads} decode threads: {e}"))
        })?;
    let pool = Arc::new(pool);
    *guard = Some(OwnedPool {
        pid,
        pool: pool.clone(),
    });
    Ok(pool)
}

/// Runs `work` inside fastzarr's pool, with panics turned into [`Error::Panic`].
///
/// Every zarrs call goes through here so that rayon's global pool is never started.
pub fn install<R: Send>(work: impl FnOnce() -> Result<R> + Send) -> Result<R> {
    let pool = pool()?;
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.install(work)))
        .unwrap_or_else(|payload| Err(Error::from_panic(payload.as_ref())))
}

/// Requests in flight at once at most, over every object store, unless `set_io_concurrency`
/// said: each host's adaptive limit (`host_limit`) starts at `host_limit::START` under it.
const DEFAULT_IO_CONCURRENCY: usize = 512;
/// 0 until set or first asked for.
static IO_CONCURRENCY: AtomicUsize = AtomicUsize::new(0);

/// `DEFAULT_IO_CONCURRENCY`, or half the open files allowed where that is fewer: each request
/// in flight holds a connection.
fn default_io_concurrency() -> usize {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given, which lives across the call.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) };
        if rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY {
            let half = usize::try_from(limit.rlim_cur / 2).unwrap_or(usize::MAX);
            return DEFAULT_IO_CONCURRENCY.min(half).max(16);
        }
    }
    DEFAULT_IO_CONCURRENCY
}

pub(crate) struct OwnedTokio {
    pid: u32,
    runtime: Arc<tokio::runtime::Runtime>,
    /// Bounds the requests in flight; rebuilt when the bound changes.
    permits: Arc<tokio::sync::Semaphore>,
    permits_size: usize,
    /// The in-flight limit of each host this process reads from.
    hosts: std::collections::HashMap<String, Arc<HostLimit>>,
}

pub(crate) static TOKIO: Mutex<Option<OwnedTokio>> = Mutex::new(None);

/// Whether blosc chunks may be decoded block by block (and fetched by byte range): 0 not yet
/// decided, 1 yes, 2 no. Blosc blocks carry no checksum, so a damaged block a read skips goes
/// unnoticed by that read; switching this off makes every read decode (and fetch) whole
/// chunks, as zarr-python does, at the cost of what block-by-block reading saves.
static PARTIAL_DECODING: AtomicU8 = AtomicU8::new(0);
const PARTIAL_DECODING_ENV: &str = "FASTZARR_PARTIAL_DECODING";

/// Whether reads may decode blosc chunks block by block: `set_partial_decoding`, else
/// `FASTZARR_PARTIAL_DECODING` (`0`, `false`, `no` or `off` switch it off), else yes.
pub fn partial_decoding() -> bool {
    match PARTIAL_DECODING.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let on = std::env::var(PARTIAL_DECODING_ENV).map_or(true, |v| {
                !matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "0" | "false" | "no" | "off"
                )
            });
            // A concurrent `set_partial_decoding` wins over the environment.
            let _ = PARTIAL_DECODING.compare_exchange(
                0,
                if on { 1 } else { 2 },
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            PARTIAL_DECODING.load(Ordering::Relaxed) == 1
        }
    }
}

/// Allows or forbids block-by-block decoding of blosc chunks for reads started afterwards.
pub fn set_partial_decoding(enabled: bool) {
    PARTIAL_DECODING.store(if enabled { 1 } else { 2 }, Ordering::Relaxed);
}

/// The number of object-store requests fastzarr keeps in flight at most.
pub fn io_concurrency() -> usize {
    match IO_CONCURRENCY.load(Ordering::Relaxed) {
        0 => {
            // A concurrent `set_io_concurrency` wins over the default.
            let _ = IO_CONCURRENCY.compare_exchange(
                0,
                default_io_concurrency(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            IO_CONCURRENCY.load(Ordering::Relaxed)
        }
        n => n,
    }
}

/// The adaptive in-flight limit of `host` (see [`crate::host_limit`]), in this process.
pub fn host_limit(host: &str) -> Result<Arc<HostLimit>> {
    io()?;
    let mut guard = TOKIO.lock().unwrap_or_else(PoisonError::into_inner);
    let owned = guard
        .as_mut()
        .ok_or_else(|| Error::Panic("the I/O runtime is gone".into()))?;
    // Asked once per HTTP request: the host's name is copied only the first time.
    if let Some(limit) = owned.hosts.get(host) {
        return Ok(limit.clone());
    }
    let limit = Arc::new(HostLimit::new(io_concurrency()));
    owned.hosts.insert(host.to_string(), limit.clone());
    Ok(limit)
}

/// Each host this process has sent requests to, with what it answered (see
/// [`HostLimit::answers`]).
pub fn host_answers() -> Vec<(String, crate::host_limit::Answers)> {
    let guard = TOKIO.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(owned) = guard
        .as_ref()
        .filter(|owned| owned.pid == std::process::id())
    else {
        return Vec::new();
    };
    owned
        .hosts
        .iter()
        .map(|(host, limit)| (host.clone(), limit.answers()))
        .collect()
}

/// Sets the bound on requests in flight; requests started afterwards obey it.
pub fn set_io_concurrency(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::InvalidArgument(
            "the number of requests in flight must be at least 1".into(),
        ));
    }
    IO_CONCURRENCY.store(n, Ordering::Relaxed);
    Ok(())
}

/// The I/O runtime of this process and its request permits, built (or rebuilt after a
/// fork) on demand. Like rayon's, tokio's threads do not survive `fork()` (tokio#4301).
pub fn io() -> Result<(Arc<tokio::runtime::Runtime>, Arc<tokio::sync::Semaphore>)> {
    crate::fork::install_handlers();
    let pid = std::process::id();
    let size = io_concurrency();
    let mut guard = TOKIO.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(owned) = guard.as_mut() {
        if owned.pid == pid {
            if owned.permits_size != size {
                owned.permits = Arc::new(tokio::sync::Semaphore::new(size));
                owned.permits_size = size;
            }
            return Ok((owned.runtime.clone(), owned.permits.clone()));
        }
    }
    if let Some(stale) = guard.take() {
        // Its worker threads were not copied into this forked child: dropping the
        // runtime would wait for them forever, so it is leaked on purpose.
        std::mem::forget(stale);
    }
    let threads = num_threads()?.clamp(1, 4);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("fastzarr-io")
        .enable_all()
        .build()
        .map_err(|e| Error::InvalidArgument(format!("could not start the I/O runtime: {e}")))?;
    let owned = OwnedTokio {
        pid,
        runtime: Arc::new(runtime),
        permits: Arc::new(tokio::sync::Semaphore::new(size)),
        permits_size: size,
        hosts: std::collections::HashMap::new(),
    };
    let handles = (owned.runtime.clone(), owned.permits.clone());
    *guard = Some(owned);
    Ok(handles)
}

/// Runs a future to completion on the I/O runtime from a thread that is not one of its
/// own (a decode thread, or a Python thread with the GIL released).
pub fn block_on<F>(future: F) -> Result<F::Output>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    let (runtime, _) = io()?;
    if tokio::runtime::Handle::try_current().is_ok() {
        // Inside a runtime (an async caller's thread): blocking here would panic, so the
        // future runs on a scoped plain thread that waits for it.
        return std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(future))
                .join()
                .map_err(|payload| Error::from_panic(payload.as_ref()))
        });
    }
    Ok(runtime.block_on(future))
}

/// zarrs' bridge from its sync API to `object_store`'s async one, on our runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct BlockOn;

impl zarrs_storage::storage_adapter::async_to_sync::AsyncToSyncBlockOn for BlockOn {
    fn block_on<F: core::future::Future>(&self, future: F) -> F::Output {
        let (runtime, _) = io().expect("the I/O runtime starts");
        runtime.block_on(future)
    }
}

/// How often a waiting caller checks for Ctrl-C and its deadline.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Set when the caller gave up (Ctrl-C, timeout): work checks it between chunks and stops,
/// and slow codecs check it between steps of one chunk (see [`Cancel::scope`]).
#[derive(Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

thread_local! {
    /// The flag of the read whose chunk this thread is decoding: codecs are called by zarrs,
    /// which has no way to pass it down.
    static DECODING_FOR: std::cell::RefCell<Option<Arc<AtomicBool>>> =
        const { std::cell::RefCell::new(None) };
}

impl Cancel {
    pub fn check(&self) -> Result<()> {
        if self.0.load(Ordering::Relaxed) {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }

    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Runs `work` (one chunk's decoding) with this flag visible to [`decode_cancelled`] on
    /// the current thread. Scopes nest: a pool thread that picks up another read's chunk
    /// while waiting gets that read's flag, and its own back after.
    pub fn scope<R>(&self, work: impl FnOnce() -> R) -> R {
        struct Restore(Option<Arc<AtomicBool>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let previous = self.0.take();
                DECODING_FOR.with(|slot| *slot.borrow_mut() = previous);
            }
        }
        let previous = DECODING_FOR.with(|slot| slot.replace(Some(Arc::clone(&self.0))));
        let _restore = Restore(previous);
        work()
    }
}

/// Whether the read this thread is decoding a chunk for was told to stop (false outside a
/// [`Cancel::scope`]). Cheap: a thread-local and an atomic load.
pub fn decode_cancelled() -> bool {
    DECODING_FOR.with(|slot| {
        slot.borrow()
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::Relaxed))
    })
}

/// Runs `work` on fastzarr's pool while the calling thread waits, polling `interrupted`
/// (Python's signal check) and the deadline every few milliseconds. On either, the work
/// is told to stop, and its end is awaited, so nothing keeps writing after we return.
pub fn run_cancellable<R: Send>(
    timeout: Option<Duration>,
    interrupted: impl Fn() -> Result<()>,
    work: impl FnOnce(&Cancel) -> Result<R> + Send,
) -> Result<R> {
    let pool = pool()?;
    let deadline = timeout.map(|t| Instant::now() + t);
    let cancel = Cancel::default();
    let (sender, receiver) = channel();
    let mut stopped_by: Option<Error> = None;
    let outcome = pool.in_place_scope(|scope| {
        let cancel = &cancel;
        scope.spawn(move |_| {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(cancel)))
                .unwrap_or_else(|payload| Err(Error::from_panic(payload.as_ref())));
            // The receiver outlives the scope; a failed send cannot happen.
            let _ = sender.send(outcome);
        });
        loop {
            match receiver.recv_timeout(POLL_INTERVAL) {
                Ok(outcome) => return Some(outcome),
                Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) if stopped_by.is_none() => {
                    if let Err(err) = interrupted() {
                        stopped_by = Some(err);
                    } else if let (Some(deadline), Some(timeout)) = (deadline, timeout) {
                        if Instant::now() >= deadline {
                            stopped_by = Some(Error::Timeout(timeout.as_secs_f64()));
                        }
                    }
                    if stopped_by.is_some() {
                        cancel.set();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    });
    match (stopped_by, outcome) {
        (Some(reason), _) => Err(reason),
        (None, Some(outcome)) => outcome,
        (None, None) => Err(Error::Panic(
            "the decode task ended without a result".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_runs_on_owned_pool_and_catches_panics() {
        let name = install(|| Ok(std::thread::current().name().map(ToString::to_string))).unwrap();
        assert!(name.unwrap().starts_with("fastzarr-decode-"));
        let err = install::<()>(|| panic!("boom")).unwrap_err();
        assert!(matches!(err, Error::Panic(ref m) if m == "boom"), "{err}");
    }

    #[test]
    fn cancellable_work_stops_on_timeout_and_on_interrupt() {
        let slow = |cancel: &Cancel| -> Result<()> {
            loop {
                cancel.check()?;
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        let started = Instant::now();
        let err = run_cancellable(Some(Duration::from_millis(50)), || Ok(()), slow).unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        let err = run_cancellable(
            None,
            || Err(Error::InvalidArgument("interrupted".into())),
            slow,
        )
        .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert_eq!(run_cancellable(None, || Ok(()), |_| Ok(7)).unwrap(), 7);
    }

    #[test]
    fn decoding_sees_the_flag_of_its_own_read_only() {
        assert!(!decode_cancelled());
        let (outer, inner) = (Cancel::default(), Cancel::default());
        outer.set();
        outer.scope(|| {
            assert!(decode_cancelled());
            inner.scope(|| assert!(!decode_cancelled()));
            assert!(decode_cancelled());
        });
        assert!(!decode_cancelled());
    }

    #[test]
    fn zero_threads_is_rejected() {
        assert!(set_num_threads(0).is_err());
        assert!(set_io_concurrency(0).is_err());
    }

    #[test]
    fn block_on_runs_on_the_io_runtime_from_anywhere() {
        assert_eq!(block_on(async { 3 }).unwrap(), 3);
        let (runtime, _) = io().unwrap();
        // From inside the runtime too (an async caller), without panicking.
        let inner = runtime.block_on(async { block_on(async { 4 }).unwrap() });
        assert_eq!(inner, 4);
    }
}
