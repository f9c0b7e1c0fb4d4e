"""Patch grids: the windows of fixed size cut along dimensions, shared by `BatchGenerator` and
`Loader` (xbatcher's rules: a window that would run past the end is left out)."""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Mapping
from typing import TypeAlias

Selector: TypeAlias = dict[Hashable, slice]
"""One patch, as ``isel`` slices."""


def windows(*, dim_size: int, slice_size: int, overlap: int = 0) -> list[slice]:
    """The windows of ``slice_size`` along one dimension, ``overlap`` shared by neighbours; a
    window that would run past the end is left out (xbatcher's rule)."""
    if overlap >= slice_size:
        raise ValueError(
            "input overlap must be less than the input sample length, but "
            f"the input sample length is {slice_size} and the overlap is {overlap}"
        )
    stride = slice_size - overlap
    return [slice(start, start + slice_size) for start in range(0, dim_size - slice_size + 1, stride)]


def patch_selectors(
    sizes: Mapping[Hashable, int], dims: Mapping[Hashable, int], overlap: Mapping[Hashable, int]
) -> list[Selector]:
    """Every patch, as ``isel`` slices, the last dimension varying fastest."""
    per_dim = []
    for dim, slice_size in dims.items():
        dim_size = sizes[dim]
        if slice_size > dim_size:
            raise ValueError(
                "input sample length must be less than or equal to the "
                f"dimension length, but the sample length of {slice_size} "
                f"is greater than the dimension length of {dim_size} "
                f"for {dim}"
            )
        per_dim.append(windows(dim_size=dim_size, slice_size=slice_size, overlap=overlap.get(dim, 0)))
    return [dict(zip(dims, combination, strict=True)) for combination in itertools.product(*per_dim)]
