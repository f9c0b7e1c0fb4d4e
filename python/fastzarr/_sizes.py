"""Sizes given by users: ``max_memory``, ``max_size`` and the like.

Accepted: a positive int (bytes); a number with a decimal unit (``"512 MB"``, ``"2GB"``: powers of
1000) or a binary one (``"2GiB"``: powers of 1024); a percentage of the memory available now
(``"20%"``).
"""

from __future__ import annotations

import os
import re

__all__ = ["parse_size"]

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*|%)\s*")


def available_memory() -> int:
    """Bytes of memory available to new allocations now (psutil's figure when installed)."""
    try:
        import psutil  # type: ignore[import-untyped,unused-ignore]  # noqa: PLC0415

        return int(psutil.virtual_memory().available)
    except ImportError:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def parse_size(value: int | str | None, *, name: str = "max_memory") -> int | None:
    """Bytes from ``value`` (``None`` stays ``None``); ``name`` is the argument's, for the error."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"{name} must be bytes or a size like '2GB', '2GiB' or '20%', not {value!r}")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.fullmatch(value)
        unit = match.group(2).upper() if match else None
        if match is None or (unit != "%" and unit not in _UNITS):
            raise ValueError(f"{name} must be bytes or a size like '2GB', '2GiB' or '20%', not {value!r}")
        number = float(match.group(1))
        if unit == "%":
            if not 0 < number <= 100:
                raise ValueError(f"{name} percentage must be in (0, 100], not {value!r}")
            size = int(available_memory() * number / 100)
        else:
            size = int(number * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"{name} must be positive, not {value!r}")
    return size
