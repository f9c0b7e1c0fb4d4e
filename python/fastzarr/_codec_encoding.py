"""The codec encodings of a stored array, as xarray's zarr engine reports them.

xarray's ``ZarrStore.open_store_variable`` puts zarr-python's codec objects in each variable's
encoding (``compressors``, ``filters`` and, in Zarr v3, ``serializer``), and ``Dataset.to_zarr``
writes them back. fastzarr reads the same metadata JSON itself, so it builds those objects from
that JSON with zarr-python's own metadata classes: the objects are the ones zarr-python builds
when it opens the array, equal to the engine's (numcodecs codecs in v2, ``zarr.codecs`` in v3,
with the data-type-dependent defaults zarr-python fills in, e.g. blosc's ``typesize``).

zarr-python is not a dependency of fastzarr: it is imported here only when an encoding is asked
for, and where it is not installed (or cannot parse the metadata, or is older than 3.0) these
keys are simply left out of the encoding. Nothing is lost for reading; writing the Dataset back
with ``to_zarr`` needs zarr-python anyway, and then the keys are there.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Mapping
from typing import Any

__all__ = ["codec_encoding"]

_CACHE_SIZE = 1024
"""Distinct codec layouts remembered: a store of thousands of arrays repeats a few, and zarr-python
takes ~0.1-0.2 ms to parse each array's metadata."""

_V2_KEYS = ("dtype", "compressor", "filters", "order")


def _v2_metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a v2 ``.zarray`` that decide its codecs, as a metadata document zarr-python
    accepts (without attributes and fill value, which do not change the codecs)."""
    chunks = list(meta.get("chunks") or ())
    filters = meta.get("filters")
    return {
        "zarr_format": 2,
        "shape": chunks,
        "chunks": chunks,
        # An empty filter list means no filters; zarr-python would warn about it.
        **{key: meta.get(key) for key in _V2_KEYS},
        "filters": filters or None,
        "fill_value": None,
    }


def _spelled_out(codecs: Any) -> Any:
    """Codecs as zarr-python reads them: ``{"name": ...}`` objects. fastzarr's metadata writes
    a codec without configuration as its bare name (``"bytes"``), which the v3 spec allows and
    zarr-python refuses; the codecs inside a sharding codec likewise."""
    if not isinstance(codecs, list):
        return codecs
    return [_spelled_out_codec(codec) for codec in codecs]


def _spelled_out_codec(codec: Any) -> Any:
    if isinstance(codec, str):
        return {"name": codec}
    if isinstance(codec, Mapping) and isinstance(codec.get("configuration"), Mapping):
        configuration = dict(codec["configuration"])
        for key in ("codecs", "index_codecs"):
            if key in configuration:
                configuration[key] = _spelled_out(configuration[key])
        return {**codec, "configuration": configuration}
    return codec


def _v3_metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a v3 ``zarr.json`` that decide its codecs. The array's shape is replaced by
    one chunk's where the grid is regular: only the number of dimensions matters to the codecs,
    and same-chunked arrays of any length then share one parse."""
    grid = meta.get("chunk_grid")
    shape = meta.get("shape")
    if isinstance(grid, Mapping) and grid.get("name") == "regular":
        shape = (grid.get("configuration") or {}).get("chunk_shape", shape)
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": shape,
        "data_type": meta.get("data_type"),
        "chunk_grid": grid,
        "chunk_key_encoding": meta.get("chunk_key_encoding"),
        "fill_value": meta.get("fill_value"),
        "codecs": _spelled_out(meta.get("codecs")),
    }


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _parse(text: str) -> tuple[tuple[str, Any], ...] | None:
    """The codec entries of the metadata document ``text``, or None where zarr-python is missing
    or does not accept it. Cached: the codec objects are immutable, so arrays share them."""
    try:
        from zarr.core.metadata import ArrayV2Metadata, ArrayV3Metadata  # noqa: PLC0415 - optional
    except ImportError:
        return None
    document = json.loads(text)
    try:
        # zarr-python warns about what it reads but would rather not write (numcodecs codecs in
        # v3, say); fastzarr reads those arrays, and a warning per layout here would be noise.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if document["zarr_format"] == 2:
                v2 = ArrayV2Metadata.from_dict(document)
                # As zarr-python's Array.compressors / .filters report them.
                compressors = () if v2.compressor is None else (v2.compressor,)
                return (("compressors", compressors), ("filters", tuple(v2.filters or ())))
            v3 = ArrayV3Metadata.from_dict(document)
    except Exception:  # any refusal only means no codec keys
        return None
    # zarr-python's Array.compressors / .filters / .serializer: the codecs inside a lone
    # sharding codec (its inner chunks are the array's chunks), by the kind of codec.
    from zarr.abc.codec import ArrayArrayCodec, ArrayBytesCodec, BytesBytesCodec  # noqa: PLC0415

    codecs = v3.inner_codecs
    serializer = next((c for c in codecs if isinstance(c, ArrayBytesCodec)), None)
    return (
        ("compressors", tuple(c for c in codecs if isinstance(c, BytesBytesCodec))),
        ("filters", tuple(c for c in codecs if isinstance(c, ArrayArrayCodec))),
        ("serializer", serializer),
    )


def codec_encoding(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``compressors`` and ``filters`` (and ``serializer`` for Zarr v3) of an array whose stored
    metadata JSON is ``meta``, as xarray's zarr engine puts them in the variable's encoding;
    empty where zarr-python is not installed or cannot parse the metadata."""
    document = _v2_metadata(meta) if meta.get("zarr_format") == 2 else _v3_metadata(meta)
    try:
        text = json.dumps(document, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return {}
    parsed = _parse(text)
    return {} if parsed is None else dict(parsed)
