"""The locks of fastzarr._atomic: taken and refused between processes, absent without a locking
module, and the Windows branch's handling of msvcrt (against a stand-in: Windows is not here)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
from fastzarr import _atomic
from fastzarr._atomic import exclusive_lock, temp_store, try_flock, unlock

TRY_LOCK = textwrap.dedent(
    """
    import os, sys
    from fastzarr._atomic import try_flock, unlock
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
    print(try_flock(fd), flush=True)
    sys.stdin.read()  # holds whatever it took until the test closes stdin
    unlock(fd)
    os.close(fd)
    """
)


@pytest.fixture
def lock_file(tmp_path: Path) -> Path:
    return tmp_path / "x.lock"


def other_process(path: Path) -> tuple[subprocess.Popen[str], str]:
    """A process that tries the lock on ``path`` through its own fd; its answer, and the process
    (holding the lock if it took it) until its stdin is closed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", TRY_LOCK, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def finish(proc: subprocess.Popen[str]) -> None:
    proc.communicate(timeout=60)
    assert proc.returncode == 0


def test_try_flock_between_two_processes(lock_file: Path) -> None:
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        assert try_flock(fd) is True
        proc, answer = other_process(lock_file)
        finish(proc)
        assert answer == "False"  # this process holds it
    finally:
        unlock(fd)
        os.close(fd)
    proc, answer = other_process(lock_file)
    try:
        assert answer == "True"  # released by unlock and close
        fd = os.open(lock_file, os.O_RDWR)
        try:
            assert try_flock(fd) is False  # now the other process holds it
        finally:
            unlock(fd)
            os.close(fd)
    finally:
        finish(proc)
    fd = os.open(lock_file, os.O_RDWR)
    try:
        assert try_flock(fd) is True  # the other process has ended
    finally:
        unlock(fd)
        os.close(fd)


def test_exclusive_lock_waits_for_another_process(lock_file: Path) -> None:
    proc, answer = other_process(lock_file)
    try:
        assert answer == "True"
        timed_out = RuntimeError("timed out")
        with (
            pytest.raises(RuntimeError, match="timed out"),
            exclusive_lock(lock_file, expired=lambda: True, timed_out=lambda: timed_out),
        ):
            pass
    finally:
        finish(proc)
    with exclusive_lock(lock_file, expired=lambda: True, timed_out=lambda: RuntimeError("timed out")):
        proc, answer = other_process(lock_file)
        finish(proc)
        assert answer == "False"


def test_without_a_locking_module_nothing_is_locked(
    lock_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither fcntl nor msvcrt (a platform with neither): the module imports, no lock is taken,
    and the users of the locks carry on unlocked."""
    script = (
        "import sys\n"
        "sys.modules['fcntl'] = sys.modules['msvcrt'] = None\n"
        "import os\n"
        "from fastzarr._atomic import try_flock, unlock\n"
        f"fd = os.open({str(lock_file)!r}, os.O_RDWR | os.O_CREAT)\n"
        "print(try_flock(fd)); unlock(fd); os.close(fd)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"

    monkeypatch.setitem(sys.modules, "fcntl", None)

    def never() -> Exception:
        return RuntimeError("a lock that is not taken is never waited for")

    with (
        exclusive_lock(lock_file, expired=lambda: True, timed_out=never),
        exclusive_lock(lock_file, expired=lambda: True, timed_out=never),
        temp_store(tmp_path / "s.zarr") as tmp,
    ):
        assert tmp.is_dir()


class StandInMsvcrt(types.ModuleType):
    """msvcrt.locking as the Windows branch uses it: records each call with the fd's position,
    and raises ``errors`` in turn."""

    LK_UNLCK, LK_LOCK, LK_NBLCK, LK_RLCK, LK_NBRLCK = 0, 1, 2, 3, 4

    def __init__(self) -> None:
        super().__init__("msvcrt")
        self.calls: list[tuple[int, int, int]] = []  # (mode, nbytes, position)
        self.errors: list[OSError | None] = []

    def locking(self, fd: int, mode: int, nbytes: int) -> None:
        self.calls.append((mode, nbytes, os.lseek(fd, 0, os.SEEK_CUR)))
        error = self.errors.pop(0) if self.errors else None
        if error is not None:
            raise error


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch) -> StandInMsvcrt:
    msvcrt = StandInMsvcrt()
    monkeypatch.setitem(sys.modules, "msvcrt", msvcrt)
    monkeypatch.setattr(_atomic.sys, "platform", "win32")
    return msvcrt


def test_windows_branch_locks_the_first_byte(lock_file: Path, windows: StandInMsvcrt) -> None:
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"abc")  # the fd's position is no longer the first byte
        windows.errors = [
            None,
            OSError(errno.EACCES, "locked"),
            OSError(errno.EDEADLK, "locked"),
            OSError(errno.EBADF, "bad"),
        ]
        assert [try_flock(fd) for _ in range(4)] == [True, False, False, None]
        assert windows.calls == [(StandInMsvcrt.LK_NBLCK, 1, 0)] * 4
        windows.calls.clear()
        os.write(fd, b"d")
        windows.errors = [None, OSError(errno.EACCES, "not locked")]
        unlock(fd)
        unlock(fd)  # a lock that was not taken: nothing raised
        assert windows.calls == [(StandInMsvcrt.LK_UNLCK, 1, 0)] * 2
    finally:
        os.close(fd)


def test_windows_branch_unlocks_before_closing(lock_file: Path, windows: StandInMsvcrt) -> None:
    with exclusive_lock(lock_file, expired=lambda: False, timed_out=RuntimeError):
        assert windows.calls == [(StandInMsvcrt.LK_NBLCK, 1, 0)]
    # the position is read from the fd, so the unlock came while the fd was still open
    assert windows.calls == [(StandInMsvcrt.LK_NBLCK, 1, 0), (StandInMsvcrt.LK_UNLCK, 1, 0)]


@pytest.fixture
def open_files_undeletable(monkeypatch: pytest.MonkeyPatch) -> None:
    """``os.unlink`` refuses a file this process has open, as Windows does (seen through
    /proc/self/fd, so Linux only)."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to see which files are open")
    real_unlink = os.unlink

    def unlink(path: str | os.PathLike[str], *, dir_fd: int | None = None) -> None:
        if dir_fd is None:
            target = os.path.realpath(path)
            for fd in os.listdir("/proc/self/fd"):
                try:
                    held = os.readlink(f"/proc/self/fd/{fd}")
                except OSError:
                    continue
                if held == target:
                    raise PermissionError(errno.EACCES, "the file is open", str(path))
        real_unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "unlink", unlink)


def test_lock_files_are_deleted_after_closing_where_open_files_cannot_be(
    tmp_path: Path, open_files_undeletable: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "store.zarr"
    # Deleting the lock file while it is still open and locked (the POSIX order) fails here.
    with pytest.raises(PermissionError), temp_store(target):
        pass
    for leftover in tmp_path.iterdir():  # what that failure left
        os.rmdir(leftover) if leftover.is_dir() else os.remove(leftover)
    monkeypatch.setattr(_atomic, "DELETE_OPEN_FILES", False)
    with temp_store(target) as tmp:
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([tmp.name, tmp.name + ".lock"])
        tmp.rmdir()
    assert list(tmp_path.iterdir()) == []
    # A dead writer's leftover (its lock file held by no one) and an orphan lock file are swept.
    dead = _atomic.sibling(target, "tmp")
    dead.mkdir()
    Path(str(dead) + ".lock").touch()
    orphan = Path(str(_atomic.sibling(target, "tmp")) + ".lock")
    orphan.touch()
    _atomic.remove_leftovers(target)
    assert list(tmp_path.iterdir()) == []
