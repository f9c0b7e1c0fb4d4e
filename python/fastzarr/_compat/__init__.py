"""The only modules that touch xarray's and dask's private names (one module per library).

Each function here uses a private name while :data:`USE_INTERNALS` is true and the name exists,
and falls back to public API otherwise, so that an xarray or dask release that renames an
internal degrades speed, not correctness. ``tests/test_compat.py`` runs the
public fallbacks; ``tests/test_compat_fence.py`` fails when a fenced name is used elsewhere."""

USE_INTERNALS = True
"""Use xarray's and dask's private fast paths where they exist (tests turn this off to run the
fallbacks)."""


def internals() -> bool:
    """Whether the private fast paths are in use (read at each call, so tests can switch)."""
    return USE_INTERNALS
