"""A pytest plugin for running xarray's own zarr backend tests through fastzarr.

With ``--route-to-fastzarr``, every read-only open of a local Zarr store that xarray's zarr
engine would serve (``xr.open_dataset`` / ``open_dataarray`` / ``open_zarr`` /
``open_mfdataset`` / ``open_datatree`` / ``open_groups``, with ``engine="zarr"`` or the engine
guessed from a ``.zarr`` path) is served by ``engine="fastzarr"`` instead; writes, opens in
another mode and stores that are not local directories stay with xarray's engine. Without the
flag nothing is routed: the same tests then give the baseline.

The plugin also supplies what xarray's test suite gets from xarray's repository (its root
``conftest.py`` and ``pytest-asyncio``), which the wheel does not ship: the ``skip_if_param``
marker and the running of ``@pytest.mark.asyncio`` coroutine tests.

``--outcomes-json PATH`` writes one record per test: its outcome and how many opens were
routed to fastzarr while it ran.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastzarr.xarray_backend import FastzarrBackendEntrypoint
from xarray.backends import plugins
from xarray.backends.zarr import ZarrBackendEntrypoint

#: Opens routed to fastzarr since the current test started.
_routed: list[str] = []

#: The fastzarr engine's arguments passed on as the zarr engine was given them (the store
#: goes as a path; storage_options and use_zarr_fill_value_as_mask are handled below).
_PASSED = tuple(
    name
    for name in FastzarrBackendEntrypoint.open_dataset_parameters or ()
    if name not in ("filename_or_obj", "storage_options", "use_zarr_fill_value_as_mask")
)


def local_store_path(filename_or_obj: Any) -> str | None:
    """The directory of a local Zarr store (a path, or zarr-python's ``LocalStore``), else None.

    A path that does not exist yet is a local store too (opening it must fail as xarray's
    engine fails); URLs other than ``file://``, in-memory and wrapped stores and regular files
    are not."""
    if isinstance(filename_or_obj, str | os.PathLike):
        text = os.fspath(filename_or_obj)
        if isinstance(text, bytes):
            return None
        if text.startswith("file://"):
            text = text.removeprefix("file://")
        elif "://" in text or "::" in text:
            return None
        return None if os.path.isfile(text) else text
    try:
        from zarr.storage import LocalStore  # noqa: PLC0415 - zarr is optional for the plugin
    except ImportError:  # pragma: no cover - the suite needs zarr
        return None
    if type(filename_or_obj) is LocalStore:
        return str(filename_or_obj.root)
    return None


def _routable(method: Any, filename_or_obj: Any, options: dict[str, Any]) -> str | None:
    """The local store path when an open with ``options`` only reads, else None.

    Arguments xarray's zarr engine does not take (``method`` is its entrypoint's) raise
    ``TypeError`` as they do there."""
    inspect.signature(method).bind(None, filename_or_obj, **options)
    if options.get("mode", "r") not in ("r", None) or options.get("store") is not None:
        return None
    return local_store_path(filename_or_obj)


def _fastzarr_options(options: dict[str, Any]) -> dict[str, Any]:
    """The zarr engine's keyword arguments as the fastzarr engine takes them.

    ``use_zarr_fill_value_as_mask`` is left to its default, as xarray's zarr engine leaves it
    (``ZarrBackendEntrypoint.open_dataset`` opens its store with ``None`` whatever it is
    given); ``cache_members`` (zarr-python's metadata cache) has no counterpart.
    """
    taken = {k: options[k] for k in _PASSED if k in options}
    if options.get("storage_options"):
        taken["storage_options"] = options["storage_options"]
    return taken


class RoutingZarrBackendEntrypoint(ZarrBackendEntrypoint):
    """xarray's zarr engine, its read-only opens of local stores served by fastzarr's."""

    def open_dataset(self, filename_or_obj: Any, **options: Any) -> Any:  # type: ignore[override]
        """fastzarr's Dataset for a read-only open of a local store, else xarray's zarr engine's."""
        path = _routable(ZarrBackendEntrypoint.open_dataset, filename_or_obj, options)
        if path is None:
            return super().open_dataset(filename_or_obj, **options)
        _routed.append(f"open_dataset {path}")
        return FastzarrBackendEntrypoint().open_dataset(path, **_fastzarr_options(options))

    def open_groups_as_dict(self, filename_or_obj: Any, **options: Any) -> Any:  # type: ignore[override]
        """fastzarr's groups for a read-only open of a local store, else xarray's zarr engine's."""
        path = _routable(ZarrBackendEntrypoint.open_groups_as_dict, filename_or_obj, options)
        if path is None:
            return super().open_groups_as_dict(filename_or_obj, **options)
        _routed.append(f"open_groups {path}")
        return FastzarrBackendEntrypoint().open_groups_as_dict(path, **_fastzarr_options(options))

    def open_datatree(self, filename_or_obj: Any, **options: Any) -> Any:  # type: ignore[override]
        """fastzarr's DataTree for a read-only open of a local store, else xarray's zarr engine's."""
        path = _routable(ZarrBackendEntrypoint.open_datatree, filename_or_obj, options)
        if path is None:
            return super().open_datatree(filename_or_obj, **options)
        _routed.append(f"open_datatree {path}")
        return FastzarrBackendEntrypoint().open_datatree(path, **_fastzarr_options(options))


def _routing_get_backend(original: Any) -> Any:
    """``plugins.get_backend``, giving the routing entrypoint where xarray's zarr engine is asked for."""
    zarr_parameters = original("zarr").open_dataset_parameters

    def get_backend(engine: Any) -> Any:
        if engine == "zarr" or engine is ZarrBackendEntrypoint:
            backend = RoutingZarrBackendEntrypoint()
            backend.open_dataset_parameters = zarr_parameters
            return backend
        return original(engine)

    return get_backend


# --------------------------------------------------------------------------------------------
# pytest hooks


def pytest_addoption(parser: pytest.Parser) -> None:
    """The plugin's options."""
    group = parser.getgroup("xarray-routing")
    group.addoption(
        "--route-to-fastzarr",
        action="store_true",
        help="serve xarray's read-only opens of local Zarr stores with engine='fastzarr'",
    )
    group.addoption("--outcomes-json", default=None, help="write each test's outcome here (JSON)")


def pytest_configure(config: pytest.Config) -> None:
    """Registers the markers xarray's tests use and installs the routing when asked."""
    config.addinivalue_line("markers", "skip_if_param(**params, reason, condition=True): skip one variant")
    config.addinivalue_line("markers", "asyncio: a coroutine test, run in a fresh event loop")
    config.stash[_OUTCOMES] = {}
    if config.getoption("--route-to-fastzarr"):
        original = plugins.get_backend
        config.stash[_ORIGINAL] = original
        plugins.get_backend = _routing_get_backend(original)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Restores xarray and writes the outcomes."""
    original = config.stash.get(_ORIGINAL, None)
    if original is not None:
        plugins.get_backend = original
    target = config.getoption("--outcomes-json")
    if target:
        Path(target).write_text(json.dumps(config.stash[_OUTCOMES], indent=0, sort_keys=True))


_OUTCOMES = pytest.StashKey[dict[str, dict[str, Any]]]()
_ORIGINAL = pytest.StashKey[Any]()


def _skip_if_param(item: pytest.Item) -> Iterator[str]:
    """Reasons of the ``skip_if_param`` marks whose parameters match ``item``'s."""
    callspec = getattr(item, "callspec", None)
    params: dict[str, Any] = callspec.params if callspec is not None else {}
    for mark in item.iter_markers("skip_if_param"):
        wanted = {k: v for k, v in mark.kwargs.items() if k not in ("reason", "condition")}
        if not mark.kwargs.get("condition", True):
            continue
        if all(k in params and _param_matches(params[k], v) for k, v in wanted.items()):
            yield str(mark.kwargs.get("reason", "skip_if_param"))


def _param_matches(value: Any, wanted: Any) -> bool:
    """A fixture parameter against a ``skip_if_param`` value (a class's name matches the class)."""
    if value == wanted:
        return True
    return isinstance(value, type) and value.__name__ == wanted


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skips the variants ``skip_if_param`` names; starts counting routed opens."""
    _routed.clear()
    for reason in _skip_if_param(item):
        pytest.skip(reason)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Runs a coroutine test marked ``asyncio`` to completion in a new event loop."""
    function = pyfuncitem.obj
    if not inspect.iscoroutinefunction(function) or pyfuncitem.get_closest_marker("asyncio") is None:
        return None
    names = pyfuncitem._fixtureinfo.argnames
    arguments = {name: pyfuncitem.funcargs[name] for name in names}
    asyncio.run(function(**arguments))
    return True


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Records each test's outcome (a failure in setup or teardown counts as failed)."""
    outcomes: dict[str, dict[str, Any]] = _config.stash[_OUTCOMES]
    record = outcomes.setdefault(report.nodeid, {"outcome": "passed", "routed": 0})
    if report.failed:
        record["outcome"] = "failed"
    elif hasattr(report, "wasxfail"):
        record["outcome"] = "xfailed" if report.skipped else "xpassed"
    elif report.skipped and record["outcome"] == "passed":
        record["outcome"] = "skipped"
    record["routed"] = max(record["routed"], len(_routed))


_config: Any = None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Keeps the config for the report hook (which is not given it)."""
    global _config  # noqa: PLW0603 - one session per process
    _config = session.config


def read_outcomes(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The records ``--outcomes-json`` wrote."""
    loaded: dict[str, dict[str, Any]] = json.loads(Path(path).read_text())
    return loaded
