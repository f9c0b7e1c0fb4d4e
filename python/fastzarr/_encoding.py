"""CF encoding and Zarr metadata for `fastzarr.to_zarr`: xarray's own encoders, Zarr v2/v3 JSON.

Kept apart from the writer (files, renames, verification) so each file holds one idea.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from fastzarr._compat import xarray as compat_xr
from fastzarr._fill_values import encode_fill_value

__all__ = ["Codec", "Variable", "encode"]

_SHUFFLES = {
    "noshuffle": "noshuffle",
    "shuffle": "shuffle",
    "byteshuffle": "shuffle",
    "bitshuffle": "bitshuffle",
}
_V2_SHUFFLES = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}
_AUTO_CHUNK_BYTES = 4 * 2**20


@dataclass(frozen=True)
class Codec:
    """A parsed codec string: ``"blosc:zstd:3:shuffle"``, ``"zstd:3"``, ``"gzip:5"`` or ``"none"``."""

    name: str
    cname: str = "zstd"
    level: int = 3
    shuffle: str = "shuffle"

    @classmethod
    def parse(cls, text: str) -> Codec:
        name, *args = text.split(":")
        try:
            if name == "none" and not args:
                return cls("none")
            if name == "blosc" and len(args) <= 3:
                shuffle = _SHUFFLES[args[2]] if len(args) > 2 else "shuffle"
                return cls(
                    "blosc", args[0] if args else "zstd", int(args[1]) if len(args) > 1 else 5, shuffle
                )
            if name in ("zstd", "gzip") and len(args) <= 1:
                return cls(name, level=int(args[0]) if args else (3 if name == "zstd" else 5))
        except (KeyError, ValueError):
            pass
        raise ValueError(
            f"codec must look like 'blosc:zstd:3:shuffle', 'zstd:3', 'gzip:5' or 'none', not {text!r}"
        )

    def v3(self, dtype: np.dtype[Any]) -> list[dict[str, Any]]:
        """The v3 codec list (bytes codec first) for arrays of ``dtype``."""
        serializer: dict[str, Any] = {"name": "bytes"}
        if dtype.itemsize > 1 or dtype.kind == "U":
            serializer["configuration"] = {"endian": "little"}
        if self.name == "none":
            return [serializer]
        if self.name == "blosc":
            config = {
                "cname": self.cname,
                "clevel": self.level,
                "shuffle": self.shuffle,
                "typesize": dtype.itemsize,
                "blocksize": 0,
            }
            return [serializer, {"name": "blosc", "configuration": config}]
        if self.name == "zstd":
            return [serializer, {"name": "zstd", "configuration": {"level": self.level, "checksum": False}}]
        return [serializer, {"name": "gzip", "configuration": {"level": self.level}}]

    def v2(self) -> dict[str, Any] | None:
        """The v2 ``compressor``."""
        if self.name == "none":
            return None
        if self.name == "blosc":
            return {
                "id": "blosc",
                "cname": self.cname,
                "clevel": self.level,
                "shuffle": _V2_SHUFFLES[self.shuffle],
                "blocksize": 0,
            }
        return {"id": self.name, "level": self.level}


def _json_float(value: Any) -> Any:
    v = float(value)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return v


_JSON_SCALARS: dict[str, Callable[[Any], Any]] = {"b": bool, "i": int, "u": int, "U": str, "f": _json_float}


def json_fill(value: Any, dtype: np.dtype[Any], zarr_format: int) -> Any:
    """A fill value as Zarr metadata JSON spells it (the same in both formats for these types)."""
    del zarr_format
    if dtype.kind == "c":
        return [_json_float(np.real(value)), _json_float(np.imag(value))]
    if dtype.kind not in _JSON_SCALARS:
        raise TypeError(f"no fill value for dtype {dtype}")
    return _JSON_SCALARS[dtype.kind](value)


def _v3_data_type(dtype: np.dtype[Any]) -> Any:
    if dtype.kind == "U":
        return {"name": "fixed_length_utf32", "configuration": {"length_bytes": dtype.itemsize}}
    names = {"b": "bool", "i": "int", "u": "uint", "f": "float", "c": "complex"}
    if dtype.kind not in names:
        raise TypeError(f"dtype {dtype} cannot be written")
    return "bool" if dtype.kind == "b" else f"{names[dtype.kind]}{dtype.itemsize * 8}"


def _v2_dtype(dtype: np.dtype[Any]) -> str:
    if dtype.itemsize == 1 and dtype.kind != "U":
        return "|" + dtype.str[1:]
    return "<" + dtype.str[1:]


@dataclass
class Variable:
    """One encoded variable, ready to write."""

    name: str
    data: Any  # numpy, dask, or a lazy xarray array
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    dims: tuple[str, ...]
    chunks: tuple[int, ...]
    attrs: dict[str, Any]
    fill_value: Any
    metadata: dict[str, Any] = field(default_factory=dict)
    rust_metadata: str = ""

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _attr_value(value: Any) -> Any:
    """An attribute value as JSON (numpy arrays and scalars become lists and numbers), as xarray does."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _auto_chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunks of at most ~4 MB: the whole array if it fits, else leading axes halved."""
    chunks = [max(n, 1) for n in shape]
    axis = 0
    while math.prod(chunks) * itemsize > _AUTO_CHUNK_BYTES and any(c > 1 for c in chunks):
        if chunks[axis] > 1:
            chunks[axis] = math.ceil(chunks[axis] / 2)
        axis = (axis + 1) % len(chunks)
        if all(c == 1 for c in chunks[:axis]) and chunks[axis] == 1:
            axis = next(i for i, c in enumerate(chunks) if c > 1)
    return tuple(chunks)


def _chunks_for(
    var: xr.Variable, chunks: Mapping[Hashable, int] | int | None, encoded: Mapping[str, Any]
) -> tuple[int, ...]:
    """The chunk shape: ``chunks`` (per dim, or one int for all), the variable's encoding, its
    uniform dask chunks, or an automatic choice."""
    if var.ndim == 0:
        return ()
    itemsize = var.dtype.itemsize
    if chunks is not None:
        if isinstance(chunks, int):
            asked = dict.fromkeys(var.dims, chunks)
        else:
            asked = {d: chunks[d] for d in var.dims if d in chunks}
        base = _chunks_for(var, None, encoded) if len(asked) < var.ndim else var.shape
        return tuple(
            max(1, min(int(asked.get(d, c)), max(n, 1))) if asked.get(d, c) != -1 else max(n, 1)
            for d, c, n in zip(var.dims, base, var.shape, strict=True)
        )
    enc = encoded.get("chunks")
    if isinstance(enc, tuple | list) and len(enc) == var.ndim and all(isinstance(c, int) for c in enc):
        return tuple(max(1, min(int(c), max(n, 1))) for c, n in zip(enc, var.shape, strict=True))
    if var.chunks is not None:
        first = tuple(int(c[0]) if c else 1 for c in var.chunks)
        uniform = all(all(x == c[0] for x in c[:-1]) and (not c or c[-1] <= c[0]) for c in var.chunks)
        if uniform:
            return tuple(max(1, f) for f in first)
    return _auto_chunks(var.shape, itemsize)


def _to_fixed_size(var: xr.Variable, name: str) -> xr.Variable:
    """Variable-length strings become fixed-width unicode (fastzarr writes fixed-size types)."""
    kind = var.dtype.kind
    if kind in "OT":
        values = np.asarray(var.values)
        try:
            fixed = values.astype(str) if values.size else values.astype("U1")
        except (TypeError, ValueError) as exc:
            raise TypeError(f"variable {name!r} has dtype {var.dtype}, which fastzarr cannot write") from exc
        return xr.Variable(var.dims, fixed, var.attrs, var.encoding)
    if kind == "S":
        return xr.Variable(var.dims, np.char.decode(np.asarray(var.values), "utf-8"), var.attrs, var.encoding)
    if kind not in "biufcU":
        raise TypeError(f"variable {name!r} has dtype {var.dtype}, which fastzarr cannot write")
    return var


def encode(
    ds: xr.Dataset, *, zarr_format: int, codec: Codec, chunks: Mapping[Hashable, int] | int | None
) -> tuple[list[Variable], dict[str, Any]]:
    """CF-encodes ``ds`` the way ``Dataset.to_zarr`` does and builds every array's metadata."""
    variables, attrs = compat_xr.encode_dataset_coordinates(ds)
    out = []
    for name, original in variables.items():
        if not isinstance(name, str):
            raise TypeError(f"variable names must be strings, not {name!r}")
        var = compat_xr.encode_zarr_variable(original, name=name, zarr_format=zarr_format)
        var = _to_fixed_size(var, name)
        dtype = var.dtype.newbyteorder("=") if var.dtype.itemsize > 1 else var.dtype
        var_attrs = {k: _attr_value(v) for k, v in var.attrs.items()}
        fill_value: Any = var.encoding.get("fill_value")
        if "_FillValue" in var_attrs:
            fv = var_attrs.pop("_FillValue")
            if fv is not None:
                if zarr_format == 2:
                    fill_value = fv
                else:
                    var_attrs["_FillValue"] = encode_fill_value(fv, dtype)
        if fill_value is None and zarr_format == 3:
            # xarray's defaults: NaN for floats (pydata/xarray#10646), else Zarr's zero values
            fill_value = np.nan if dtype.kind == "f" else {"b": False, "U": ""}.get(dtype.kind, 0)
        out.append(
            Variable(
                name=name,
                data=var.data,
                dtype=dtype,
                shape=tuple(var.shape),
                dims=tuple(str(d) for d in var.dims),
                chunks=_chunks_for(var, chunks, original.encoding),
                attrs=var_attrs,
                fill_value=fill_value,
            )
        )
    for v in out:
        _build_metadata(v, zarr_format, codec)
    group_attrs = {str(k): _attr_value(v) for k, v in attrs.items()}
    return out, group_attrs


def _build_metadata(v: Variable, zarr_format: int, codec: Codec) -> None:
    """Fills in ``v.metadata`` (what goes in the store) and ``v.rust_metadata`` (what the encoder reads)."""
    chunks = list(v.chunks) if v.shape else []
    shape = list(v.shape)
    # A zero-length axis still needs a non-zero chunk length.
    chunks = [max(1, c) for c in chunks]
    if zarr_format == 3:
        v.metadata = {
            "shape": shape,
            "data_type": _v3_data_type(v.dtype),
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": json_fill(v.fill_value, v.dtype, 3),
            "codecs": codec.v3(v.dtype),
            "attributes": v.attrs,
            "dimension_names": list(v.dims),
            "zarr_format": 3,
            "node_type": "array",
            "storage_transformers": [],
        }
        v.rust_metadata = json.dumps(v.metadata, allow_nan=False)
    else:
        v.metadata = {
            "zarr_format": 2,
            "shape": shape,
            "chunks": chunks,
            "dtype": _v2_dtype(v.dtype),
            "compressor": codec.v2(),
            "fill_value": None if v.fill_value is None else json_fill(v.fill_value, v.dtype, 2),
            "order": "C",
            "filters": None,
            "dimension_separator": ".",
        }
        # The encoder pads edge chunks with the fill value; a null one pads with zeros.
        padding = v.metadata["fill_value"]
        if padding is None:
            padding = json_fill(np.zeros((), v.dtype)[()], v.dtype, 2)
        v.rust_metadata = json.dumps({**v.metadata, "fill_value": padding}, allow_nan=False)
