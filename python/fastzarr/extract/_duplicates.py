"""Repeated ``concat_dim`` labels across sources: which rows to keep, whether the repeats hold
the same values, and the message that lists them.

Batch stores written by reruns often repeat a label, and ``xr.concat`` would keep every copy
without a word; extract_points drops, refuses or keeps them by policy, and says whether the
values it dropped differed from those it kept.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

from fastzarr.extract._assembly import decode
from fastzarr.features import plain_label
from fastzarr.report import DuplicateRecord


def concat_labels(part: xr.Dataset, concat_dim: Hashable, *, decoded: bool) -> Any:
    """The part's ``concat_dim`` labels as users see them (decoded, e.g. datetimes), or None."""
    if concat_dim not in part.indexes:
        return None
    if decoded:
        return part.indexes[concat_dim]
    return decode(xr.Dataset(coords={concat_dim: part.variables[concat_dim]})).indexes[concat_dim]


def _equal_rows(a: npt.NDArray[Any], b: npt.NDArray[Any], axis: int) -> npt.NDArray[np.bool_]:
    """Per row along ``axis``: whether ``a`` and ``b`` hold the same values, NaN equal to NaN."""
    eq = np.asarray(a == b)
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        eq = eq | (np.isnan(a) & np.isnan(b))
    elif a.dtype.kind in "mM" and b.dtype.kind in "mM":
        eq = eq | (np.isnat(a) & np.isnat(b))
    moved = np.moveaxis(eq, axis, 0).reshape(eq.shape[axis], -1)
    return np.asarray(moved.all(axis=1))


def _compare_repeats(
    parts: list[xr.Dataset],
    names: list[str],
    concat_dim: Hashable,
    repeats: list[tuple[int, int, int, int, Any]],
) -> npt.NDArray[np.bool_]:
    """Per repeat (source, row, kept source, kept row, label): whether every variable's row matches."""
    identical = np.ones(len(repeats), dtype=bool)
    pairs: dict[tuple[int, int], list[int]] = {}
    for k, (i, _, j, _, _) in enumerate(repeats):
        pairs.setdefault((i, j), []).append(k)
    for (i, j), ks in pairs.items():
        rows_i = [repeats[k][1] for k in ks]
        rows_j = [repeats[k][3] for k in ks]
        for n in names:
            if n not in parts[i].variables or n not in parts[j].variables:
                continue
            va, vb = parts[i].variables[n], parts[j].variables[n]
            if concat_dim not in va.dims or va.dims != vb.dims or va.shape[1:] != vb.shape[1:]:
                if va.dims != vb.dims:
                    identical[ks] = False
                continue
            axis = va.dims.index(concat_dim)
            a = np.take(np.asarray(va.values), rows_i, axis=axis)
            b = np.take(np.asarray(vb.values), rows_j, axis=axis)
            if a.shape != b.shape:
                identical[ks] = False
                continue
            identical[ks] &= _equal_rows(a, b, axis)
    return identical


def find_duplicates(
    parts: list[xr.Dataset], labels: list[Any], names: list[str], concat_dim: Hashable, sources: list[str]
) -> tuple[list[list[int]], list[DuplicateRecord]]:
    """Rows to keep per source (first occurrence of each label) and the repeated labels found;
    ``labels`` are each part's decoded ``concat_dim`` index (None where it has none)."""
    seen: dict[Any, tuple[int, int]] = {}
    keep: list[list[int]] = []
    repeats: list[tuple[int, int, int, int, Any]] = []  # (source, row, kept source, kept row, label)
    for i, (part, index) in enumerate(zip(parts, labels, strict=True)):
        rows: list[int] = []
        if index is not None:
            for row, label in enumerate(index):
                key = label.to_datetime64() if hasattr(label, "to_datetime64") else label
                if key in seen:
                    repeats.append((i, row, *seen[key], key))
                else:
                    seen[key] = (i, row)
                    rows.append(row)
        else:
            rows = list(range(part.sizes.get(concat_dim, 1)))
        keep.append(rows)
    identical = _compare_repeats(parts, names, concat_dim, repeats)
    records = [
        DuplicateRecord(plain_label(label), sources[i], bool(identical[k]))
        for k, (i, _, _, _, label) in enumerate(repeats)
    ]
    return keep, records


def duplicate_message(records: Sequence[DuplicateRecord], concat_dim: Hashable, action: str) -> str:
    """A readable list of repeated labels for warnings and errors."""
    conflicting = sum(not r.identical for r in records)
    lines = [
        f"{len(records)} repeated {concat_dim!r} labels {action} ({conflicting} with CONFLICTING values):"
    ]
    for r in records[:50]:
        lines.append(f"  {r.label!r} from {r.source}: {'identical' if r.identical else 'CONFLICTING'}")
    if len(records) > 50:
        lines.append(f"  ... and {len(records) - 50} more")
    return "\n".join(lines)
