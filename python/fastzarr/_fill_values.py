"""Fill values in xarray's ``_FillValue`` attribute of Zarr stores, as xarray writes and reads
them: floats as the base64 of a little-endian double (so NaN and infinities survive JSON),
complex numbers as two of those, bytes as base64, others as JSON numbers, booleans or strings.

fastzarr's own implementation of the convention, so that reading and writing it does not depend
on xarray's private ``FillValueCoder``; ``tests/test_compat.py`` checks that both agree."""

from __future__ import annotations

import base64
import struct
from typing import Any

import numpy as np


def _b64_double(value: float | np.floating[Any]) -> str:
    return base64.standard_b64encode(struct.pack("<d", float(value))).decode()


def _double_b64(value: Any) -> float:
    if not isinstance(value, str | bytes):
        raise TypeError(f"a float fill value is stored as base64 text, not {type(value).__name__}")
    return float(struct.unpack("<d", base64.standard_b64decode(value))[0])


def encode_fill_value(value: Any, dtype: np.dtype[Any]) -> Any:
    """``value`` as the JSON-ready ``_FillValue`` attribute for an array of ``dtype``."""
    kind = np.dtype(dtype).kind
    if kind == "S":
        if not isinstance(value, bytes):
            raise TypeError(f"the fill value of a {dtype} array must be bytes, not {type(value).__name__}")
        return base64.standard_b64encode(value).decode()
    if kind == "b":
        return bool(value)
    if kind in "iuf" and not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"the fill value of a {dtype} array must be a number, not {type(value).__name__}")
    if kind in "iu":
        return int(value)
    if kind == "f":
        return _b64_double(value)
    if kind == "c":
        if not isinstance(value, complex | np.complexfloating):
            raise TypeError(f"the fill value of a {dtype} array must be complex, not {type(value).__name__}")
        return [_b64_double(float(value.real)), _b64_double(float(value.imag))]
    if kind == "U":
        return str(value)
    raise ValueError(f"no fill value encoding for dtype {dtype}")


def decode_fill_value(value: Any, dtype: str | np.dtype[Any]) -> Any:
    """The fill value an array of ``dtype`` (numpy's, or Zarr v3's "string"/"bytes") stores as
    the ``_FillValue`` attribute ``value``."""
    if isinstance(dtype, str) and dtype == "string":
        return str(value)
    if isinstance(dtype, str) and dtype == "bytes":
        if not isinstance(value, str | bytes):
            raise TypeError(f"a bytes fill value is stored as base64 text, not {type(value).__name__}")
        return base64.standard_b64decode(value)
    kind = np.dtype(dtype).kind
    if kind == "f":
        return _double_b64(value)
    if kind == "c":
        if not (isinstance(value, list | tuple) and len(value) == 2):
            raise TypeError(f"a complex fill value is stored as two base64 texts, not {value!r}")
        return complex(_double_b64(value[0]), _double_b64(value[1]))
    if kind == "b":
        return bool(value)
    if kind in "iu":
        if not isinstance(value, int | float | np.integer | np.floating):
            raise TypeError(f"an integer fill value is stored as a number, not {type(value).__name__}")
        return int(value)
    raise ValueError(f"no fill value decoding for dtype {dtype}")
