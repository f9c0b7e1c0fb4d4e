//! Process-wide locks held across `fork()`, so that a child never inherits one locked.
//!
//! `fork()` copies only the thread that calls it. A lock that another thread held at that
//! instant stays locked in the child, and the child's first fastzarr call would wait on it
//! forever. So every process-wide mutex fastzarr owns is taken by the forking thread just
//! before the fork (their holders keep them for microseconds and never wait on Python) and
//! released just after it, in the parent and in the child (`pthread_atfork`).

use std::cell::RefCell;
use std::sync::{MutexGuard, Once, PoisonError};

use crate::block_tables::{Tables, TABLES};
use crate::runtime::{OwnedPool, OwnedTokio, POOL, TOKIO};
use crate::store::{MemoryStores, MEMORY_STORES};

/// The guards the forking thread holds while `fork()` runs. Taken in this field order,
/// released in reverse; no code path holds two of these locks at once, so the order
/// cannot deadlock with one.
struct Held {
    _memory: MutexGuard<'static, MemoryStores>,
    _tables: MutexGuard<'static, Option<Tables>>,
    _tokio: MutexGuard<'static, Option<OwnedTokio>>,
    _pool: MutexGuard<'static, Option<OwnedPool>>,
}

#[cfg(unix)]
thread_local! {
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

#[cfg(unix)]
extern "C" fn before_fork() {
    let held = Held {
        _memory: MEMORY_STORES.lock().unwrap_or_else(PoisonError::into_inner),
        _tables: TABLES.lock().unwrap_or_else(PoisonError::into_inner),
        _tokio: TOKIO.lock().unwrap_or_else(PoisonError::into_inner),
        _pool: POOL.lock().unwrap_or_else(PoisonError::into_inner),
    };
    HELD.with(|slot| *slot.borrow_mut() = Some(held));
}

/// Runs in the parent and in the child, on the thread that forked.
#[cfg(unix)]
extern "C" fn after_fork() {
    HELD.with(|slot| drop(slot.borrow_mut().take()));
}

/// Installs the fork handlers, once per process; called before any of the locks is used.
#[cfg(unix)]
#[allow(unsafe_code)]
pub fn install_handlers() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        // SAFETY: the handlers are plain `extern "C"` functions that live as long as the
        // process; they only lock and unlock Rust mutexes and touch a thread-local.
        let rc =
            unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork), Some(after_fork)) };
        // pthread_atfork fails only for lack of memory; without the handlers fastzarr
        // still works, with the (small) risk this module exists to remove.
        debug_assert_eq!(rc, 0, "pthread_atfork failed");
    });
}

/// No `fork()` without unix: nothing to guard.
#[cfg(not(unix))]
pub fn install_handlers() {}

#[cfg(all(test, unix))]
#[allow(unsafe_code)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A child forked while another thread holds the decode pool's lock can still use it:
    /// the fork waits for the lock, so the child's copy is never held by a vanished thread.
    #[test]
    fn child_forked_while_pool_lock_is_held_does_not_wait_forever() {
        install_handlers();
        crate::runtime::pool().unwrap();
        let holder = std::thread::spawn(|| {
            let _guard = POOL.lock().unwrap();
            std::thread::sleep(Duration::from_millis(200));
        });
        std::thread::sleep(Duration::from_millis(50));
        // SAFETY: the child only calls async-signal-tolerant Rust code and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = crate::runtime::install(|| Ok(7)).is_ok_and(|v| v == 7);
            unsafe { libc::_exit(i32::from(!ok)) };
        }
        holder.join().unwrap();
        let mut status = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            // SAFETY: waits on our own child without blocking.
            let done = unsafe { libc::waitpid(pid, &raw mut status, libc::WNOHANG) };
            if done == pid {
                break;
            }
            if std::time::Instant::now() > deadline {
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("the forked child hung on a lock held at fork time");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{status}"
        );
    }
}
