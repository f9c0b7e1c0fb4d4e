"""Warn (once per process) when the process forks while fastzarr is working in another thread.

fastzarr itself survives a fork: the child builds fresh thread pools on first use. But a child
forked in the middle of a read gets none of the parent's running threads, and any library lock
held by them at that instant (the allocator's, a file system client's) stays held in the child
forever. The ``forkserver`` and ``spawn`` start methods avoid this; this warning says when the
risk was taken.
"""

from __future__ import annotations

import os
import warnings

from fastzarr import _core

_warned = False


def _before_fork() -> None:
    global _warned  # noqa: PLW0603 - one flag for the whole process, by design
    if _warned:
        return
    busy = _core._busy_count()
    if busy:
        _warned = True
        warnings.warn(
            f"fastzarr: the process forks while {busy} fastzarr call(s) run in other threads; the "
            "child starts fresh fastzarr thread pools, but locks held by the running threads stay "
            "held in the child. Prefer the 'forkserver' or 'spawn' multiprocessing start method.",
            RuntimeWarning,
            stacklevel=2,
        )


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork)
