"""Progress bars and stage logs for fastzarr's long operations.

- `Progress`: a ``tqdm.auto`` bar (a terminal bar, or a widget in Jupyter) over a call's steps
  (read passes, arrays) whose postfix shows bytes and chunks per second; a no-op when off.
  ``progress=None`` means on when stderr is a terminal or the code runs in a Jupyter kernel,
  and tqdm is installed (it is optional: ``pip install tqdm``).
- `Stages`: per-stage wall time and resident memory (RSS), logged at each stage boundary on
  ``logging.getLogger("fastzarr")`` at DEBUG level.
- `configure_from_env`: ``FASTZARR_LOG=debug`` (or ``info``, ``warning``) attaches a stderr handler
  to that logger, so the stage logs show without any code.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import time
from types import TracebackType
from typing import Any

from fastzarr.report import current_rss_bytes, format_size

__all__ = ["Progress", "Stages", "configure_from_env", "log_stage", "logger", "progress_enabled"]

logger = logging.getLogger("fastzarr")


def _in_notebook() -> bool:
    """Whether this code runs in a Jupyter kernel (where tqdm.auto draws a widget)."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()
    except AttributeError:  # pragma: no cover - a partial IPython
        return False
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def _tqdm() -> Any:
    """``tqdm.auto.tqdm`` (a widget in Jupyter), or None when tqdm is not installed.

    In a notebook without ipywidgets, tqdm.auto would warn and fall back to the text bar: use
    the text bar directly."""
    try:
        if _in_notebook() and importlib.util.find_spec("ipywidgets") is None:
            from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]  # noqa: PLC0415
        else:
            from tqdm.auto import tqdm  # type: ignore[import-untyped,unused-ignore]  # noqa: PLC0415
    except ImportError:
        return None
    return tqdm


def progress_enabled(progress: bool | None) -> bool:
    """Resolves ``progress=``: True/False as given (True needs tqdm), None = interactive and tqdm there."""
    if progress is None:
        interactive = sys.stderr is not None and (sys.stderr.isatty() or _in_notebook())
        return interactive and _tqdm() is not None
    if progress and _tqdm() is None:
        raise ImportError("progress=True needs tqdm: pip install tqdm")
    return bool(progress)


class Progress:
    """A bar over ``total`` steps with bytes/s and chunks/s in its postfix (nothing when disabled)."""

    def __init__(self, progress: bool | None, *, total: int, desc: str, unit: str) -> None:
        self._bar: Any = None
        if progress_enabled(progress):
            self._bar = _tqdm()(total=total, desc=desc, unit=unit, leave=True, dynamic_ncols=True)
        self._start = time.perf_counter()
        self.bytes = 0
        self.chunks = 0

    def update(self, steps: int = 1, *, nbytes: int = 0, chunks: int = 0) -> None:
        """Advances by ``steps`` after ``nbytes`` more bytes decoded from ``chunks`` more chunks."""
        self.bytes += nbytes
        self.chunks += chunks
        if self._bar is None:
            return
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        self._bar.set_postfix_str(
            f"{format_size(self.bytes)} at {format_size(self.bytes / elapsed)}/s, "
            f"{self.chunks} chunks at {self.chunks / elapsed:.0f}/s",
            refresh=False,
        )
        self._bar.update(steps)

    def close(self) -> None:
        """Closes the bar (idempotent)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def log_stage(operation: str, stage: str, seconds: float, **details: Any) -> None:
    """Logs one finished stage at DEBUG: ``operation: stage 0.123 s, rss 180.3 MiB, key value``."""
    if logger.isEnabledFor(logging.DEBUG):
        extra = "".join(f", {k} {v}" for k, v in details.items())
        rss = format_size(current_rss_bytes())
        logger.debug("%s: %s %.3f s, rss %s%s", operation, stage, seconds, rss, extra)


class Stages:
    """Times consecutive stages of one operation and logs each with the RSS at its end.

    >>> stages = Stages("extract_points")
    >>> ...                       # open the stores
    >>> stages.done("metadata")   # logs "extract_points: metadata 0.012 s, rss 180.3 MiB"
    """

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.seconds: dict[str, float] = {}
        self._start = self._last = time.perf_counter()
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s: start, rss %s", operation, format_size(current_rss_bytes()))

    def done(self, stage: str, **details: Any) -> float:
        """Ends ``stage`` now; returns (and records) its seconds."""
        now = time.perf_counter()
        seconds = now - self._last
        self._last = now
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
        log_stage(self.operation, stage, seconds, **details)
        return seconds

    def total(self) -> float:
        """Seconds since the operation started; logs the total."""
        seconds = time.perf_counter() - self._start
        log_stage(self.operation, "total", seconds)
        return seconds


_HANDLER_NAME = "fastzarr-env"


def configure_from_env() -> None:
    """Applies ``FASTZARR_LOG`` (debug, info, warning, error): level and a stderr handler, once."""
    level_name = os.environ.get("FASTZARR_LOG", "").strip().upper()
    if not level_name:
        return
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        logger.warning("FASTZARR_LOG=%s is not a logging level (use debug, info, warning)", level_name)
        return
    logger.setLevel(level)
    if not any(h.get_name() == _HANDLER_NAME for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
