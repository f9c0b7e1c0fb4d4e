"""``fastzarr.to_features``: a dataset flattened into a feature matrix for scikit-learn or torch."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

__all__ = ["to_features"]


def plain_label(value: Any) -> Any:
    """A numpy scalar label as a plain Python value where that stays readable."""
    if isinstance(value, np.generic) and value.dtype.kind not in "mM":
        return value.item()
    return value


def _feature_labels(da: xr.DataArray, dims: Sequence[Hashable]) -> list[list[str]]:
    """Per feature dim, a readable label per position: the coordinate value, or the position."""
    labels = []
    for d in dims:
        if d in da.coords and da.coords[d].dims == (d,):
            values = da.coords[d].values
            labels.append([f"{d}={plain_label(v)}" for v in values])
        else:
            labels.append([f"{d}={i}" for i in range(da.sizes[d])])
    return labels


def to_features(
    ds: xr.Dataset, sample_dims: Sequence[Hashable] | Hashable = ("file_id",)
) -> tuple[npt.NDArray[np.float64], list[str]]:
    """Flattens a dataset into ``(X, names)``: one row per sample, one column per feature.

    Rows run over ``sample_dims`` (stacked in C order); every data variable contributes one column
    per position of its other dims, named like ``var0003`` or ``var0003[step=5,point=1]`` (a dim's
    coordinate value where it has one, else the position). ``X`` is float64, ready for
    scikit-learn or torch. A data variable lacking a sample dim, or not numeric, raises ValueError.
    """
    if isinstance(sample_dims, str) or not isinstance(sample_dims, Sequence):
        sample_dims = (sample_dims,)
    sample_dims = tuple(sample_dims)
    for d in sample_dims:
        if d not in ds.dims:
            raise ValueError(f"sample dim {d!r} is not a dimension of the dataset")
    n_samples = int(np.prod([ds.sizes[d] for d in sample_dims], dtype=np.int64))
    columns: list[npt.NDArray[np.float64]] = []
    names: list[str] = []
    for name, da in ds.data_vars.items():
        absent = [d for d in sample_dims if d not in da.dims]
        if absent:
            raise ValueError(f"variable {name!r} lacks sample dims {absent}")
        if da.dtype.kind not in "biuf":
            raise ValueError(f"variable {name!r} has non-numeric dtype {da.dtype}")
        feature_dims = [d for d in da.dims if d not in sample_dims]
        values = np.asarray(da.transpose(*sample_dims, *feature_dims).values, dtype=np.float64)
        columns.append(values.reshape(n_samples, -1))
        if not feature_dims:
            names.append(str(name))
            continue
        labels = _feature_labels(da, feature_dims)
        for idx in np.ndindex(*(len(lab) for lab in labels)):
            names.append(f"{name}[{','.join(lab[i] for lab, i in zip(labels, idx, strict=True))}]")
    X = np.concatenate(columns, axis=1) if columns else np.empty((n_samples, 0), dtype=np.float64)  # noqa: N806
    return X, names
