"""dask's private names: the dask side of :func:`fastzarr.load`, which plans the Zarr reads of
dask graphs, then runs the rest.

Imported only when a variable to load is a dask array. Without dask's internals (or with
``fastzarr._compat.USE_INTERNALS`` off), :func:`make_plan` gives ``None`` and the arrays are
computed by dask itself (:func:`compute`). xarray builds dask-backed variables with
``dask.array.from_array`` over its lazy wrapper chain: every block is a ``getter(chain, index)``
task. Each such task whose chain ends in a Zarr array is planned like a lazily indexed variable;
after the one ``read_many`` pass its value replaces the task, and a small synchronous executor
runs what is left of the graph (later selections, arithmetic, concatenation), all cheap numpy
work. This relies on dask's task-spec graph classes (``dask._task_spec``: ``Task``, ``DataNode``,
``TaskRef``, ``Alias``), stable since dask 2025.1; a task this module does not recognise simply
runs as dask would run it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import xarray as xr
from dask.base import compute as dask_compute

from fastzarr._compat import internals

try:
    from dask._task_spec import Alias, DataNode, Task, TaskRef, convert_legacy_graph
    from dask.array.core import getter, getter_inline, getter_nofancy
    from dask.blockwise import Blockwise
    from dask.highlevelgraph import MaterializedLayer
except ImportError:  # a dask release that moved them: dask computes everything itself
    _AVAILABLE = False
    _GETTERS: tuple[Any, ...] = ()
else:
    _AVAILABLE = True
    _GETTERS = (getter, getter_nofancy, getter_inline)

__all__ = ["DaskPlan", "compute", "make_plan", "zarr_read_sources"]

_MAX_DEPTH = 64

# (source chain, function of the chain, the shape when the function reads all of the chain) ->
# a planned evaluation, or None if it reads no Zarr array
PlanChain = Callable[..., Any]


def _flatten(keys: Any) -> Iterator[Any]:
    if isinstance(keys, list):
        for k in keys:
            yield from _flatten(k)
    else:
        yield keys


class _GetterGroup:
    """The getter tasks reading one chain with the same function and extra arguments."""

    __slots__ = ("evaluations", "func", "kwargs", "rest", "source", "tasks")

    def __init__(
        self, source: Any, func: Callable[..., Any], rest: list[Any], kwargs: dict[str, Any]
    ) -> None:
        self.source = source
        self.func = func
        self.rest = rest
        self.kwargs = kwargs
        self.tasks: dict[Any, Any] = {}  # task key -> block index
        # (evaluation, {task key: index into the evaluation's value})
        self.evaluations: list[tuple[Any, dict[Any, Any]]] = []

    def reader(self, index: Any) -> Callable[[Any], Any]:
        func, rest, kwargs = self.func, self.rest, self.kwargs

        def run(chain: Any) -> Any:
            return np.asarray(func(chain, index, *rest, **kwargs))

        return run

    def plan(self, plan_chain: PlanChain) -> list[Any]:
        """One evaluation for the box the blocks tile (the usual case: a whole variable, or a
        slice of it), else one per block."""
        box = _tiled_box(list(self.tasks.values()))
        if box is not None:
            evaluation = plan_chain(self.source, self.reader(box))
            if evaluation is not None:
                offsets = [s.start for s in box]
                within = {
                    key: tuple(slice(s.start - o, s.stop - o) for s, o in zip(index, offsets, strict=True))
                    for key, index in self.tasks.items()
                }
                self.evaluations = [(evaluation, within)]
        else:
            for key, index in self.tasks.items():
                evaluation = plan_chain(self.source, self.reader(index))
                if evaluation is not None:
                    self.evaluations.append((evaluation, {key: ...}))
        return [evaluation for evaluation, _ in self.evaluations]

    def values(self) -> Iterator[tuple[Any, Any]]:
        for evaluation, within in self.evaluations:
            for key, index in within.items():
                yield key, evaluation.value[index]


def _tiled_box(indices: list[Any]) -> tuple[slice, ...] | None:
    """The box that block indices (tuples of unit-step slices) tile exactly as a full grid."""
    boxes = set()
    for index in indices:
        if not isinstance(index, tuple) or not all(
            isinstance(s, slice)
            and s.step in (None, 1)
            and isinstance(s.start, int)
            and isinstance(s.stop, int)
            and 0 <= s.start <= s.stop
            for s in index
        ):
            return None
        boxes.add(tuple((s.start, s.stop) for s in index))
    if not boxes or len({len(b) for b in boxes}) != 1:
        return None
    ndim = len(next(iter(boxes)))
    cells = 1
    for d in range(ndim):
        intervals = sorted({b[d] for b in boxes})
        if any(a[1] != b[0] for a, b in itertools.pairwise(intervals)):
            return None
        cells *= len(intervals)
    if cells != len(boxes):
        return None
    return tuple(slice(min(b[d][0] for b in boxes), max(b[d][1] for b in boxes)) for d in range(ndim))


# Tasks of one variable's graph past which it is refused: dask lists every key of a layer to
# cull it (tens of bytes each), so a graph built from metadata (a stored array of 10^10 chunks
# opened with ``chunks={}``) would exhaust memory before reading anything.
MAX_GRAPH_TASKS = 10_000_000


def _check_graph_size(high_level: Any, source: str | None) -> None:
    """Raises ``MemoryBudgetError`` for a graph too large to list; ``len`` of a layer does not
    build its keys."""
    from fastzarr import MemoryBudgetError  # noqa: PLC0415 - this module is imported by fastzarr
    from fastzarr._redact import redact_url  # noqa: PLC0415

    tasks = sum(len(layer) for layer in high_level.layers.values())
    if tasks > MAX_GRAPH_TASKS:
        where = f" of {redact_url(str(source))}" if source else ""
        raise MemoryBudgetError(
            f"the dask graph of a variable{where} has {tasks:,} tasks (at most {MAX_GRAPH_TASKS:,} "
            "can be planned): open it with larger chunks, e.g. chunks=None or chunks={dim: size}"
        )


class DaskPlan:
    """The dask-backed variables to load: their graphs, with Zarr-reading getters planned."""

    def __init__(self, plan_chain: PlanChain, mappable: Callable[[Any], bool]) -> None:
        self._plan_chain = plan_chain
        self._mappable = mappable
        self._mappable_ids: dict[int, bool] = {}
        self.graph: dict[Any, Any] = {}
        self.arrays: list[tuple[xr.Variable, Any]] = []
        self._groups: dict[tuple[Any, ...], _GetterGroup] = {}
        self._planned: set[Any] = set()
        # untouched from_array variables, each read whole by one evaluation
        self.whole: list[tuple[xr.Variable, Any]] = []

    def add(self, variable: xr.Variable, array: Any, store: str | None = None) -> bool:
        """Groups ``array``'s getters by chain; ``False`` (nothing kept) if none reads Zarr.
        ``store`` (the dataset's) names it in errors."""
        if self._add_whole(variable, array):
            return True
        high_level = array.__dask_graph__()
        _check_graph_size(high_level, variable.encoding.get("source", store))
        graph = dict(high_level.cull(set(_flatten(array.__dask_keys__()))))
        shared = False  # a getter already planned for another variable
        found = []
        for key, node in graph.items():
            if key in self._planned:
                shared = True
                continue
            getter_task = self._parse_getter(node, graph)
            if getter_task is not None:
                found.append((key, getter_task))
        if not found and not shared:
            return False
        for key, (source, func, index, rest, kwargs) in found:
            group_key = (id(source), func, *map(id, rest), *((k, id(v)) for k, v in sorted(kwargs.items())))
            group = self._groups.get(group_key)
            if group is None:
                group = self._groups[group_key] = _GetterGroup(source, func, rest, kwargs)
            group.tasks[key] = index
            self._planned.add(key)
        self.graph.update(graph)
        self.arrays.append((variable, array))
        return True

    def _add_whole(self, variable: xr.Variable, array: Any) -> bool:
        """An untouched ``from_array`` over a Zarr chain (what ``chunks=`` gives before any
        operation) is one read of the whole chain: its graph is neither materialized nor run,
        which for thousands of small variables cost far more than reading them."""
        source = _from_array_source(array)
        if source is None:
            return False
        if id(source) not in self._mappable_ids:
            self._mappable_ids[id(source)] = self._mappable(source)
        if not self._mappable_ids[id(source)]:
            return False
        whole = tuple(slice(0, n) for n in array.shape)
        evaluation = self._plan_chain(source, lambda chain: np.asarray(chain[whole]), array.shape)
        if evaluation is None:
            return False
        self.whole.append((variable, evaluation))
        return True

    def _parse_getter(self, node: Any, graph: dict[Any, Any]) -> tuple[Any, ...] | None:
        """(chain, getter, index, extra args, kwargs) of a ``getter`` task reading Zarr, or None."""
        if not isinstance(node, Task) or node.func not in _GETTERS or len(node.args) < 2:
            return None
        resolved = [_resolve(a, graph) for a in node.args]
        resolved_kw = {k: _resolve(v, graph) for k, v in node.kwargs.items()}
        if not all(ok for ok, _ in resolved) or not all(ok for ok, _ in resolved_kw.values()):
            return None
        source, index, *rest = (value for _, value in resolved)
        if id(source) not in self._mappable_ids:
            self._mappable_ids[id(source)] = self._mappable(source)
        if not self._mappable_ids[id(source)]:
            return None
        kwargs = {k: value for k, (_, value) in resolved_kw.items()}
        return source, node.func, index, rest, kwargs

    def evaluations(self) -> list[Any]:
        """Plans the evaluations of every group of getters (call once)."""
        planned = [e for group in self._groups.values() for e in group.plan(self._plan_chain)]
        return [e for _, e in self.whole] + planned

    def finish(self) -> list[tuple[xr.Variable, Any]]:
        """Runs the graphs with the getters' values in place: (variable, numpy) pairs."""
        out = [(variable, evaluation.value) for variable, evaluation in self.whole]
        if not self.arrays:
            return out
        graph = dict(self.graph)
        for group in self._groups.values():
            for key, value in group.values():
                graph[key] = DataNode(key, value)
        outputs = [array.__dask_keys__() for _, array in self.arrays]
        cache = _execute(graph, set(_flatten(outputs)))
        for (variable, array), keys in zip(self.arrays, outputs, strict=True):
            finalize, extra = array.__dask_postcompute__()
            out.append((variable, finalize(_nested(keys, cache), *extra)))
        return out


def _from_array_source(array: Any) -> Any:
    """The source chain of a dask array that is exactly ``dask.array.from_array(source)``
    read by a plain ``getter`` (two layers: the source, and one getter task per block covering
    the whole array), else ``None``."""
    layers = getattr(array.dask, "layers", None)
    if layers is None or len(layers) != 2:
        return None
    layer = layers.get(array.name)
    original = layers.get("original-" + array.name)
    if not isinstance(layer, Blockwise) or not isinstance(original, MaterializedLayer):
        return None
    task = layer.task
    if (
        len(original) != 1
        or layer.output_blocks is not None  # culled to some blocks
        or not isinstance(task, Task)
        or task.func not in _GETTERS
        or len(task.args) != 2
        or task.kwargs
        or len(layer.indices) != 2
    ):
        return None
    (source_ref, source_index), (slices_name, _) = layer.indices
    if (
        not isinstance(source_ref, TaskRef)
        or source_index is not None
        or source_ref.key not in original
        or slices_name not in layer.io_deps
    ):
        return None
    source = original[source_ref.key]
    return source.value if isinstance(source, DataNode) else source


def _nested(keys: Any, cache: dict[Any, Any]) -> Any:
    if isinstance(keys, list):
        return [_nested(k, cache) for k in keys]
    return cache[keys]


def _execute(graph: dict[Any, Any], outputs: set[Any]) -> dict[Any, Any]:
    """Runs the tasks ``outputs`` need, depth first, freeing each intermediate result once its
    last dependent has run (dask's synchronous scheduler spends more time ordering the tasks
    than running these few cheap ones)."""
    nodes = convert_legacy_graph(graph)
    needed: set[Any] = set()
    stack = list(outputs)
    while stack:
        key = stack.pop()
        if key not in needed:
            needed.add(key)
            stack.extend(nodes[key].dependencies)
    waiting = dict.fromkeys(needed, 0)
    for key in needed:
        for dependency in nodes[key].dependencies:
            waiting[dependency] += 1
    cache: dict[Any, Any] = {}
    for output in outputs:
        stack = [output]
        while stack:
            key = stack[-1]
            if key in cache:
                stack.pop()
                continue
            missing = [d for d in nodes[key].dependencies if d not in cache]
            if missing:
                stack.extend(missing)
                continue
            node = nodes[key]
            cache[key] = node(cache)
            stack.pop()
            for dependency in node.dependencies:
                waiting[dependency] -= 1
                if waiting[dependency] == 0 and dependency not in outputs:
                    del cache[dependency]
    return cache


def _resolve(arg: Any, graph: dict[Any, Any]) -> tuple[bool, Any]:
    """The constant a task argument stands for: ``(True, value)``, or ``(False, None)`` when it
    is computed by another task."""
    for _ in range(_MAX_DEPTH):
        if isinstance(arg, DataNode):
            return True, arg.value
        if isinstance(arg, TaskRef):
            arg = graph.get(arg.key)
        elif isinstance(arg, Alias):
            arg = graph.get(arg.target)
        elif isinstance(arg, Task) or arg is None or _is_legacy_task(arg):
            return False, None
        else:
            return True, arg
    return False, None


def _is_legacy_task(value: Any) -> bool:
    return isinstance(value, tuple) and bool(value) and callable(value[0])


def compute(arrays: list[Any]) -> tuple[Any, ...]:
    """``dask.compute`` with the user's scheduler, for graphs whose Zarr reads are not planned."""
    run: Any = dask_compute
    result: tuple[Any, ...] = run(*arrays)
    return result


def make_plan(plan_chain: PlanChain, mappable: Callable[[Any], bool]) -> DaskPlan | None:
    """A plan for dask-backed variables, or ``None`` without dask's internals."""
    return DaskPlan(plan_chain, mappable) if internals() and _AVAILABLE else None


def zarr_read_sources(data: Any) -> list[Any] | None:
    """The source chain of every Zarr-reading ``getter`` task of the dask array ``data``
    (its culled graph), or ``None`` without dask's internals."""
    if not (internals() and _AVAILABLE):
        return None
    keys = set(_flatten(data.__dask_keys__()))
    graph = dict(data.__dask_graph__().cull(keys))
    sources = []
    for node in graph.values():
        if isinstance(node, Task) and node.func in _GETTERS and node.args:
            ok, source = _resolve(node.args[0], graph)
            if ok:
                sources.append(source)
    return sources
