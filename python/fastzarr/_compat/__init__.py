"""The only modules that touch xarray's and dask's private names (one module per library).

Each function here uses a private name while :data:`fastzarr._compat.xarray.USE_INTERNALS` is
true and the name exists, and falls back to public API otherwise, so that an xarray release
that renames an internal degrades speed, not correctness. ``tests/test_compat.py`` runs the
public fallbacks; ``tests/test_compat_fence.py`` fails when a fenced name is used elsewhere."""
