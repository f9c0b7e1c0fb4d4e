"""Sizes given by users: ``max_memory``, ``max_size``, ``--max-memory`` and the like.

One grammar for every Python entry point (`parse_size`):

- an int, or a float with no fractional part: bytes (``2048``, ``2048.0``);
- a string of a number, optionally a unit: ``"2048"``, ``"2GB"``, ``"512 MB"``, ``"1.5 GB"``;
  decimal units are powers of 1000 (``B``, ``kB``, ``MB``, ``GB``, ``TB``), binary ones powers of
  1024 (``KiB``, ``MiB``, ``GiB``, ``TiB``); the unit's letters may be in any case
  (``"2gb"`` is ``"2GB"``);
- a percentage of the memory available now: ``"20%"`` (more than 0, at most 100).

Anything else raises one `ValueError`, with one message.
"""

from __future__ import annotations

import math
import os
import re

__all__ = ["available_memory", "parse_size"]

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*|%)\s*")
_HINT = 'give bytes as an int, or a string like "2GB", "512 MiB" or "20%"'


def available_memory() -> int:
    """Bytes of memory available to new allocations now (psutil's figure when installed)."""
    try:
        import psutil  # type: ignore[import-untyped,unused-ignore]  # noqa: PLC0415

        return int(psutil.virtual_memory().available)
    except ImportError:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def parse_size(value: int | float | str | None, *, name: str = "max_memory") -> int | None:
    """Positive bytes from ``value`` (``None`` stays ``None``), in the grammar above.

    ``name`` is the argument's, as the user spelled it (``"max_size"``, ``"--max-memory"``): the
    error names it. Raises ValueError for anything that is not a positive size.
    """
    if value is None:
        return None
    size = _bytes(value)
    if size is None or size <= 0:
        raise ValueError(f"invalid {name} {value!r}: {_HINT}")
    return size


def _bytes(value: object) -> int | None:
    """The bytes ``value`` means, or None when it is not in the grammar."""
    # bool is an int to Python but never a size a user meant.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    return _text_bytes(value) if isinstance(value, str) else None


def _text_bytes(text: str) -> int | None:
    """The bytes a size string means, or None when it is not in the grammar."""
    match = _SIZE.fullmatch(text)
    unit = match.group(2).upper() if match else None
    if match is None or (unit != "%" and unit not in _UNITS):
        return None
    number = float(match.group(1))
    if unit == "%":
        return int(available_memory() * number / 100) if 0 < number <= 100 else None
    factor = _UNITS[unit]
    # A fraction of a byte is a typo, not a size.
    return int(number * factor) if factor > 1 or number.is_integer() else None
