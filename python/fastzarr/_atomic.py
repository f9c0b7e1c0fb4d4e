"""Publishing a store atomically, and the locks and leftovers around it: shared by the writer,
appending, the cache and rewriting.

A store is written into a temporary sibling directory (locked for as long as its writer runs),
then published by one rename, or by an atomic exchange with the store it replaces. Leftovers of
writers that died are swept by the next writer beside them."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from fastzarr import _core

STORE_MARKERS = ("zarr.json", ".zgroup", ".zarray", ".zmetadata")
"""The files that make a directory a Zarr store."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sibling(target: Path, kind: str) -> Path:
    """A new hidden name beside ``target`` for a ``kind`` of temporary ("tmp", "old"), unique
    to this process and call: ``.NAME.fastzarr-KIND-PID-RANDOM``."""
    return target.parent / f".{target.name}.fastzarr-{kind}-{os.getpid()}-{secrets.token_hex(4)}"


_LOCK_SUFFIX = ".lock"


def _lock_of(tmp: Path) -> Path:
    """The lock file of a temporary store: beside it, so that it is never part of what is published."""
    return tmp.with_name(tmp.name + _LOCK_SUFFIX)


def try_flock(fd: int) -> bool | None:
    """Takes an exclusive lock on ``fd`` without waiting: True when taken, False when another
    process holds it, None where locks cannot be taken (a filesystem without locks, a platform
    with neither ``fcntl`` nor ``msvcrt``).

    POSIX: an ``flock`` on the whole file. Windows: ``msvcrt.locking`` on the file's first byte
    (the lock files are empty, and a byte past the end can still be locked). Either lock belongs to
    this open file, so a second open in the same process conflicts like another process, and the
    system drops it when the process dies. Release it with `unlock` before closing ``fd``."""
    if sys.platform == "win32":
        import msvcrt  # noqa: PLC0415 (Windows only: the module must import on POSIX)

        # msvcrt.locking locks from the current position: the first byte is what all lock.
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError as exc:
            # The C runtime reports a byte locked through another handle as EACCES (EDEADLOCK
            # from the blocking modes); anything else means locks cannot be taken here.
            return False if exc.errno in (errno.EACCES, errno.EDEADLK) else None
        return True
    try:
        import fcntl  # noqa: PLC0415 (POSIX only: the module must import on Windows)
    except ImportError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


def unlock(fd: int) -> None:
    """Releases the lock `try_flock` may have taken on ``fd``; call it just before closing ``fd``.

    Closing ``fd`` releases an ``flock``, so on POSIX nothing is done. Windows releases a byte
    lock left to the close only when the system gets round to it, which can keep the next process
    out for a while; it is released here at once. A lock that was not taken is left alone."""
    if sys.platform == "win32":
        import msvcrt  # noqa: PLC0415 (Windows only: the module must import on POSIX)

        with contextlib.suppress(OSError):  # not locked through this fd: nothing to release
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


#: Whether a file can be deleted while it is open (POSIX); Windows refuses it.
DELETE_OPEN_FILES = os.name != "nt"


def release(fd: int, lock: Path | None = None) -> None:
    """Unlocks and closes the lock file ``fd``, deleting it (``lock``) too. Where open files can be
    deleted, it is deleted while still locked, so that no one can take it meanwhile; elsewhere
    (Windows) after closing it, and left for a later sweep (see `_remove_orphan_lock`) if someone
    has opened it by then."""
    if lock is not None and DELETE_OPEN_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
    unlock(fd)
    os.close(fd)
    if lock is not None and not DELETE_OPEN_FILES:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            os.unlink(lock)


@contextlib.contextmanager
def temp_store(target: Path) -> Iterator[Path]:
    """A new temporary sibling directory of ``target``, locked for as long as its writer runs.

    The lock (see `try_flock`: an ``flock`` on POSIX, a lock on its first byte on Windows, of a
    file beside the directory) is what tells other writers sweeping leftovers that this one is
    alive: a process id says nothing about a writer in another PID namespace or on another host
    sharing the directory. The system drops the lock when the writer dies, so a crashed writer's
    leftover is swept. Where locks cannot be taken, the writer's process id in the name is all
    the sweepers have. The caller publishes or deletes the directory."""
    while True:
        tmp = sibling(target, "tmp")
        lock = _lock_of(tmp)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        # A sweeper may have taken the fresh file for an orphan (it holds the lock while it
        # deletes the file): then the file protects nothing, and a new name is tried.
        if try_flock(fd) is not False:
            with contextlib.suppress(FileNotFoundError):
                if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                    break
        unlock(fd)
        os.close(fd)
    try:
        tmp.mkdir()
        yield tmp
    finally:
        release(fd, lock)


@contextlib.contextmanager
def _claim(entry: os.DirEntry[str], lock: Path) -> Iterator[bool]:
    """Whether the writer of a leftover is gone: its lock can be taken (and is held while the
    caller deletes the leftover, so no writer can take the lock file meanwhile), or it has no
    lock file (the old store of a finished replace). Where locks cannot be taken, its writer's
    process id decides; a lock file that cannot be opened (another user's) keeps the leftover.
    A claimed leftover's lock file is deleted with the claim (see `release`)."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        yield True
        return
    except OSError:
        yield False
        return
    taken: bool | None = False
    try:
        taken = try_flock(fd)
        if taken is None:
            parts = entry.name.removesuffix(_LOCK_SUFFIX).split("-")
            taken = len(parts) >= 3 and parts[-2].isdigit() and not _pid_alive(int(parts[-2]))
        yield taken
    finally:
        release(fd, lock if taken else None)


def remove_leftovers(target: Path) -> None:
    """Deletes temporary siblings of ``target`` left by writers that died: those whose lock no one
    holds. The old store of an interrupted two-rename replace is kept while ``target`` is missing:
    it is then the only copy."""
    prefix = f".{target.name}.fastzarr-"
    entries: list[os.DirEntry[str]] = []
    with contextlib.suppress(FileNotFoundError):
        entries = [e for e in os.scandir(target.parent) if e.name.startswith(prefix)]
    names = {e.name for e in entries}
    for entry in entries:
        kind = entry.name[len(prefix) :].split("-")[0]
        if entry.name.endswith(_LOCK_SUFFIX):
            _remove_orphan_lock(entry, names)
        elif kind == "tmp" or (kind == "old" and target.exists()):
            lock = Path(entry.path + _LOCK_SUFFIX)
            with _claim(entry, lock) as dead:
                if dead:
                    shutil.rmtree(entry.path, ignore_errors=True)


def _remove_orphan_lock(entry: os.DirEntry[str], names: set[str]) -> None:
    """Deletes a lock file whose temporary store is gone and that no one holds (a writer that
    finds its fresh lock file deleted before it locked it starts over: see `temp_store`)."""
    if entry.name.removesuffix(_LOCK_SUFFIX) in names or not ("-tmp-" in entry.name or "-old-" in entry.name):
        return
    with _claim(entry, Path(entry.path)):
        pass  # a claimed lock file is deleted with the claim


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


FORCE_TWO_RENAMES = False
"""Replace by two renames even where the filesystem can exchange (tests of that fallback)."""


def exchange(a: Path, b: Path) -> bool:
    """Atomically swaps two paths (Linux ``renameat2(RENAME_EXCHANGE)``, in the core); False
    where the platform or the filesystem cannot."""
    return _core._exchange(a, b)


def _is_store_or_empty(path: Path) -> bool:
    return not any(path.iterdir()) or any((path / m).exists() for m in STORE_MARKERS)


def publish(tmp: Path, target: Path, mode: str, fsync: bool = True) -> None:
    """Moves the finished ``tmp`` to ``target``: a plain rename, or an exchange with the old store;
    with ``fsync``, the parent directory is synced so that the new name survives a crash."""
    if not target.exists():
        try:
            os.rename(tmp, target)
        except OSError:
            if mode == "w-" or not target.exists():
                raise
        else:
            if fsync:
                fsync_dir(target.parent)
            return
    if mode == "w-":
        raise FileExistsError(f"{target} already exists (mode='w-'); use mode='w' to replace it")
    if not target.is_dir() or not _is_store_or_empty(target):
        raise FileExistsError(f"{target} exists and is not a Zarr store: refusing to replace it")
    if not FORCE_TWO_RENAMES and exchange(tmp, target):
        old = tmp  # after the exchange, tmp's name holds the old store
    else:
        # Between the renames there is no store at target: an opener that finds none but sees
        # this "old" sibling waits for the second rename (the Rust core's local open).
        old = sibling(target, "old")
        os.rename(target, old)
        os.rename(tmp, target)
    if fsync:
        fsync_dir(target.parent)
    discard(old, target)


def discard(path: Path, target: Path) -> None:
    """Deletes the replaced store ``path`` (a sibling of ``target``) in a background thread: on
    some filesystems every ``rmdir`` costs milliseconds, and the new store is already in place.
    It is first renamed to a new "old" sibling whose lock the thread holds while it deletes, so
    the next write beside it (in this process or another) leaves it alone rather than deleting it
    a second time; if the process ends first, the lock dies with it and the leftover is removed
    by the next write next to it."""
    doomed = sibling(target, "old")
    lock = _lock_of(doomed)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    held: int | None = fd
    try:
        try_flock(fd)
        os.rename(path, doomed)
    except OSError:  # deleted where it is, unlocked: a sweeper may help, which is only slower
        doomed = path
        release(fd, lock)
        held = None

    def delete() -> None:
        try:
            shutil.rmtree(doomed, ignore_errors=True)
        finally:
            if held is not None:
                release(held, lock)

    threading.Thread(target=delete, name="fastzarr-discard").start()


@contextlib.contextmanager
def exclusive_lock(
    path: Path, *, expired: Callable[[], bool], timed_out: Callable[[], Exception], mode: int = 0o644
) -> Iterator[None]:
    """Holds an exclusive lock on the file ``path`` (created if missing, and kept: deleting a lock
    file races with its next user). Waits while another process holds it until ``expired()``,
    then raises ``timed_out()``. The kernel releases the lock when the process dies, so a killed
    holder blocks no one. The lock is `try_flock`'s: an ``flock`` on POSIX, a lock on the file's
    first byte on Windows. Where files cannot be locked (a filesystem without locks, a platform
    with neither), the lock is not taken. ``mode``: the permissions of a new lock file."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
    try:
        while try_flock(fd) is False:
            if expired():
                raise timed_out()
            time.sleep(0.02)
        yield
    finally:
        unlock(fd)
        os.close(fd)
