"""The ``fastzarr`` command: inspect, extract, rewrite and cache from the shell.

Exit status: 0 on success, 1 on an error (one line on stderr; ``--debug`` adds the traceback
and fastzarr's stage logs), 2 on a usage error (argparse's message), 130 on Ctrl-C.

Adding a subcommand is one function: decorate it with `subcommand`; it receives the
subparsers, creates its parser with `add_parser` and sets ``run`` to a handler that takes the
parsed arguments and returns the exit status::

    @subcommand
    def _hello(sub: Subparsers) -> None:
        parser = add_parser(sub, "hello", "say hello")
        parser.add_argument("name")
        parser.set_defaults(run=lambda args: print(f"hello {args.name}") or 0)
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import fastzarr
from fastzarr._progress import logger

if TYPE_CHECKING:
    import xarray as xr

    from fastzarr.report import Report

__all__ = ["add_parser", "build_parser", "main", "subcommand"]

Subparsers = Any
"""``argparse``'s subparsers action (its class is private)."""
Add = TypeVar("Add", bound=Callable[[Subparsers], None])

_SUBCOMMANDS: list[Callable[[Subparsers], None]] = []


class UserError(Exception):
    """A mistake in the command's input that deserves a one-line message and exit status 1."""


def subcommand(add: Add) -> Add:
    """Registers a function that adds one subcommand's parser (in the order registered)."""
    _SUBCOMMANDS.append(add)
    return add


def add_parser(sub: Subparsers, name: str, help_text: str, description: str | None = None) -> Any:
    """A subcommand parser with the options every subcommand takes (``--debug``)."""
    parser = sub.add_parser(name, help=help_text, description=description or help_text)
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks and stage logs"
    )
    parser.set_defaults(parser=parser)
    return parser


def _add_progress(parser: Any) -> None:
    """``--progress/--no-progress`` (default: on in a terminal)."""
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="a progress bar"
    )


def _add_storage_options(parser: Any, help_text: str) -> None:
    """Repeatable ``--storage-option KEY=VALUE``, collected in ``args.storage_options``."""
    parser.add_argument(
        "--storage-option",
        dest="storage_options",
        type=_key_values,
        action="append",
        metavar="KEY=VALUE",
        help=help_text,
    )


def _key_values(text: str) -> dict[str, str]:
    """``"a=1,b=x"`` -> ``{"a": "1", "b": "x"}``; argparse turns the ValueError into a usage error."""
    out: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise argparse.ArgumentTypeError(f"expected NAME=VALUE[,NAME=VALUE...], got {text!r}")
        out[key.strip()] = value.strip()
    return out


def _label(value: str) -> Any:
    """A coordinate label from the command line: a number where it reads as one, else the text."""
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def _storage_options(pairs: Sequence[dict[str, str]] | None) -> dict[str, Any] | None:
    if not pairs:
        return None
    merged: dict[str, Any] = {}
    for p in pairs:
        merged.update(p)
    return merged


_SIZE_HELP = (  # argparse formats help with %: "%%" prints one
    "bytes, a size like 2GB (powers of 1000) or 2GiB (of 1024), or a share of the memory "
    "available now like 20%%"
)


def _size_option(args: argparse.Namespace, text: str | None) -> int | None:
    """``--max-memory`` in bytes (see `fastzarr._sizes`); a size not in the grammar is a usage error."""
    from fastzarr._sizes import parse_size  # noqa: PLC0415

    parser: argparse.ArgumentParser = args.parser
    try:
        return parse_size(text, name="--max-memory")
    except ValueError as exc:
        parser.error(str(exc))


# --- inspect ---------------------------------------------------------------------------------


def _print_report(report: Report, *, as_json: bool) -> None:
    """A report on stdout: readable text, or JSON (``--json``) for machines."""
    if as_json:
        json.dump(report.as_dict(), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print(report)


@subcommand
def _inspect(sub: Subparsers) -> None:
    parser = add_parser(
        sub,
        "inspect",
        "describe a store: arrays, chunks, codecs, sizes, read costs, decode speed, advice",
    )
    parser.add_argument("url", metavar="URL", help="a Zarr store, group or array (path or URL)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--sample", type=int, default=32, metavar="N", help="chunks per layout to time (0: none)"
    )
    _add_storage_options(parser, "a storage option (repeatable)")
    _add_progress(parser)

    def run(args: argparse.Namespace) -> int:
        if args.sample < 0:
            args.parser.error("--sample must be 0 or more")
        report = fastzarr.inspect(
            args.url,
            storage_options=_storage_options(args.storage_options),
            sample=args.sample,
            progress=args.progress,
        )
        _print_report(report, as_json=args.json)
        return 0

    parser.set_defaults(run=run)


# --- extract ---------------------------------------------------------------------------------

_FORMATS = {".zarr": "zarr", ".nc": "netcdf", ".nc4": "netcdf", ".csv": "csv", ".parquet": "parquet"}


def _output_format(path: str, given: str | None) -> str:
    if given is not None:
        return given
    suffix = Path(path.rstrip("/")).suffix.lower()
    if suffix not in _FORMATS:
        raise UserError(
            f"cannot tell the output format from {path!r}: use a suffix ({', '.join(_FORMATS)}) or --format"
        )
    return _FORMATS[suffix]


def _need(modules: Sequence[str], what: str) -> None:
    """Raises UserError unless one of ``modules`` is importable."""
    if not any(importlib.util.find_spec(m) is not None for m in modules):
        raise UserError(f"{what} needs {' or '.join(modules)}: pip install {modules[0]}")


def _write(ds: xr.Dataset, out: str, fmt: str, overwrite: bool) -> None:
    """Writes the extraction result; refuses to replace an existing output unless asked."""
    if os.path.exists(out) and not overwrite:
        raise UserError(f"{out} exists (use --overwrite to replace it)")
    ds = ds.copy()
    for var in ds.variables.values():
        var.encoding = {}  # the source's chunking and codecs do not fit the extracted shape
    if fmt == "zarr":
        _need(["zarr"], "writing Zarr")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zarr-python's notes on v3 specs and consolidation
            ds.to_zarr(out, mode="w")
    elif fmt == "netcdf":
        _need(["netCDF4", "h5netcdf", "scipy"], "writing NetCDF")
        ds.to_netcdf(out)
    elif fmt == "csv":
        ds.to_dataframe().to_csv(out)
    else:
        _need(["pyarrow", "fastparquet"], "writing Parquet")
        ds.to_dataframe().to_parquet(out)


@subcommand
def _extract(sub: Subparsers) -> None:
    parser = add_parser(
        sub,
        "extract",
        "extract points from one or many Zarr stores into a Zarr, NetCDF, CSV or Parquet file",
        description=(
            "Extract points from one or many Zarr stores (concatenated along --concat-dim), "
            "reading only the chunks that hold them. One --point selects a single location; "
            "several select locations along a new 'point' dimension."
        ),
    )
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="Zarr stores (paths or URLs)")
    parser.add_argument(
        "--point",
        dest="points",
        type=_key_values,
        action="append",
        required=True,
        metavar="DIM=LABEL,...",
        help="a point, e.g. lat=52.5,lon=13.4 (repeatable)",
    )
    parser.add_argument("-o", "--output", metavar="OUT", help="the file to write (required unless --dry-run)")
    parser.add_argument("--format", choices=sorted(set(_FORMATS.values())), help="default: from OUT's suffix")
    parser.add_argument(
        "--variables", action="append", metavar="NAME[,NAME...]", help="variables to extract (default: all)"
    )
    parser.add_argument("--method", choices=["nearest", "exact"], default="nearest", help="label matching")
    parser.add_argument("--tolerance", type=float, help="largest distance allowed with nearest")
    parser.add_argument(
        "--duplicates", choices=["drop", "raise", "keep"], default="drop", help="repeated concat labels"
    )
    parser.add_argument("--concat-dim", default="file_id", help="the dimension sources are joined along")
    parser.add_argument("--max-memory", metavar="SIZE|PCT%", help=f"memory for one read pass, {_SIZE_HELP}")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--report", action="store_true", help="print what was read to stderr")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="open the metadata only; print the chunks, requests, bytes and estimated time it takes",
    )
    _add_progress(parser)

    def run(args: argparse.Namespace) -> int:
        keys = [tuple(p) for p in args.points]
        if len(set(keys)) > 1:
            args.parser.error("every --point must name the same dimensions")
        points: dict[Hashable, Any] = {k: [_label(p[k]) for p in args.points] for k in keys[0]}
        if len(args.points) == 1:
            points = {k: v[0] for k, v in points.items()}
        variables = None
        if args.variables:
            variables = [v.strip() for group in args.variables for v in group.split(",") if v.strip()]
        max_memory = _size_option(args, args.max_memory)
        extract = functools.partial(
            fastzarr.extract_points,
            args.sources,
            points=points,
            method=None if args.method == "exact" else "nearest",
            tolerance=args.tolerance,
            variables=variables,
            concat_dim=args.concat_dim,
        )
        if args.dry_run:
            print(extract(dry_run=True))
            return 0
        if args.output is None:
            args.parser.error("the following arguments are required: -o/--output (or --dry-run)")
        fmt = _output_format(args.output, args.format)
        if os.path.exists(args.output) and not args.overwrite:
            raise UserError(f"{args.output} exists (use --overwrite to replace it)")
        result = extract(
            duplicates=args.duplicates, max_memory=max_memory, progress=args.progress, return_report=True
        )
        assert isinstance(result, tuple)
        ds, report = result
        _write(ds, args.output, fmt, args.overwrite)
        if args.report:
            print(report, file=sys.stderr)
        sizes = ", ".join(f"{d}={n}" for d, n in ds.sizes.items())
        print(f"wrote {args.output} ({fmt}): {len(ds.data_vars)} variables, {sizes or 'scalars'}")
        return 0

    parser.set_defaults(run=run)


# --- rewrite ---------------------------------------------------------------------------------


def _chunk_sizes(pairs: Sequence[dict[str, str]] | None) -> dict[Hashable, int] | None:
    """``--chunks step=-1,lat=32`` (repeatable) -> ``{"step": -1, "lat": 32}``."""
    if not pairs:
        return None
    out: dict[Hashable, int] = {}
    for pair in pairs:
        for dim, size in pair.items():
            try:
                out[dim] = int(size)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"--chunks {dim}={size}: a chunk length is an integer (-1: the whole dimension)"
                ) from None
    return out


@subcommand
def _rewrite(sub: Subparsers) -> None:
    parser = add_parser(
        sub,
        "rewrite",
        "re-encode and re-chunk a Zarr store into a new one (verified, atomic)",
        description=(
            "Re-encode and re-chunk the Zarr store SRC into DST, keeping every variable, coordinate, "
            "attribute and CF encoding: xr.open_zarr(DST) reads what xr.open_zarr(SRC) reads. "
            "DST appears only once fully written and verified."
        ),
    )
    parser.add_argument("src", metavar="SRC", help="the store to read (path or URL)")
    parser.add_argument("dst", metavar="DST", help="the local store to write")
    parser.add_argument(
        "--codec", default="blosc:zstd:3:shuffle", help="blosc:CNAME:LEVEL:SHUFFLE, zstd:N, gzip:N or none"
    )
    parser.add_argument(
        "--chunks",
        type=_key_values,
        action="append",
        metavar="DIM=SIZE,...",
        help="chunk length per dimension, -1 for the whole dimension (repeatable); others keep SRC's",
    )
    parser.add_argument("--zarr-format", type=int, choices=[2, 3], default=3, help="DST's Zarr format")
    parser.add_argument(
        "--variables", action="append", metavar="NAME[,NAME...]", help="data variables to keep (default: all)"
    )
    parser.add_argument(
        "--max-memory", metavar="SIZE|PCT%", help=f"memory for the data held at once, {_SIZE_HELP}"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace DST if it is a Zarr store")
    _add_storage_options(parser, "a storage option for SRC (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_progress(parser)

    def run(args: argparse.Namespace) -> int:
        try:
            chunks = _chunk_sizes(args.chunks)
        except argparse.ArgumentTypeError as exc:
            args.parser.error(str(exc))
        max_memory = _size_option(args, args.max_memory)
        variables = None
        if args.variables:
            variables = [v.strip() for group in args.variables for v in group.split(",") if v.strip()]
        if os.path.exists(args.dst) and not args.overwrite:
            raise UserError(f"{args.dst} exists (use --overwrite to replace it)")
        report = fastzarr.rewrite(
            args.src,
            args.dst,
            codec=args.codec,
            chunks=chunks,
            zarr_format=args.zarr_format,
            variables=variables,
            max_memory=max_memory,
            storage_options=_storage_options(args.storage_options),
            progress=args.progress,
            mode="w" if args.overwrite else "w-",
        )
        _print_report(report, as_json=args.json)
        return 0

    parser.set_defaults(run=run)


# --- cache -----------------------------------------------------------------------------------


def _open_cache(args: argparse.Namespace) -> fastzarr.Cache:
    """The cache at ``--root``, else ``$FASTZARR_CACHE_DIR`` or the platform's cache directory."""
    return fastzarr.Cache(getattr(args, "root", None))


def _entries(count: int) -> str:
    return f"{count} entry" if count == 1 else f"{count} entries"


def _cache_ls(args: argparse.Namespace) -> int:
    from fastzarr._cache_root import resolve_root  # noqa: PLC0415
    from fastzarr.report import format_size  # noqa: PLC0415

    root = resolve_root(getattr(args, "root", None))
    # Listing only looks: a cache that was never filled is listed empty, not created.
    cache = _open_cache(args) if root.is_dir() else None
    entries = cache.entries() if cache is not None else []
    if args.json:
        rows = [
            {
                "key": e.key,
                "path": str(e.path),
                "source": e.source,
                "size": e.size,
                "created": e.created,
                "last_used": e.last_used,
                "params": e.params,
                "nan_fraction": e.nan_fraction,
            }
            for e in entries
        ]
        json.dump({"root": str(root), "entries": rows}, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return 0
    table = [["KEY", "SOURCE", "SIZE", "CREATED"]]
    table += [[e.key[:12], e.source or "-", format_size(e.size), e.created[:19]] for e in entries]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    if entries:
        for r in table:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    total = format_size(sum(e.size for e in entries))
    print(f"{len(entries)} entries, {total}, in {root} (least recently used first)")
    return 0


def _cache_verify(args: argparse.Namespace) -> int:
    cache = _open_cache(args)
    count = len(cache.entries())
    problems = cache.verify()
    for key, problem in problems.items():
        print(f"invalid {key}: {problem}")
    if problems:
        raise UserError(
            f"{len(problems)} of {count} cache entries are invalid (moved aside; "
            f"'fastzarr cache prune' deletes them): {', '.join(problems)}"
        )
    print(f"{count} entries valid in {cache.root}")
    return 0


def _cache_prune(args: argparse.Namespace) -> int:
    cache = _open_cache(args)
    removed = cache.prune()  # entries set aside as invalid before are among them
    for key in removed:
        print(f"removed {key}")
    print(f"removed {_entries(len(removed))}; {len(cache.entries())} left in {cache.root}")
    return 0


def _cache_clear(args: argparse.Namespace) -> int:
    cache = _open_cache(args)
    count = len(cache.entries())
    cache.clear()
    print(f"cleared {count} entries from {cache.root}")
    return 0


@subcommand
def _cache(sub: Subparsers) -> None:
    parser = add_parser(
        sub,
        "cache",
        "list, verify, prune or clear fastzarr's on-disk cache of extraction results",
        description=(
            "Manage the cache that extract_points(cache=fastzarr.Cache(...)) fills. The cache lives "
            "in --root, else $FASTZARR_CACHE_DIR, else the platform's user cache directory."
        ),
    )
    from fastzarr._cache_root import default_root  # noqa: PLC0415 - light: no xarray

    # argparse formats help with %: a path holding one must not break --help.
    root_help = (
        f"the cache directory (default: {default_root()}: $FASTZARR_CACHE_DIR when set, else the "
        "user cache directory)"
    ).replace("%", "%%")
    root = argparse.ArgumentParser(add_help=False)
    for accepts_root in (
        parser,
        root,
    ):  # before or after the action: cache --root DIR ls, cache ls --root DIR
        accepts_root.add_argument(
            "--root",
            metavar="DIR",
            default=argparse.SUPPRESS,
            help=root_help,
        )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    helps = {
        "ls": ("list the entries: key, source, size, created", _cache_ls),
        "verify": ("check every entry's checksums; exit 1 naming the invalid ones", _cache_verify),
        "prune": ("delete invalid entries, leftovers and entries beyond the size limit", _cache_prune),
        "clear": ("delete every entry", _cache_clear),
    }
    for name, (help_text, run) in helps.items():
        action = actions.add_parser(name, help=help_text, description=help_text, parents=[root])
        action.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks and stage logs"
        )
        if name == "ls":
            action.add_argument("--json", action="store_true", help="print the entries as JSON")
        action.set_defaults(run=run, parser=action)


# --- entry point -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``fastzarr`` parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="fastzarr",
        description=(
            "Fast, trustworthy Zarr reads: inspect stores, extract points, rewrite stores, manage the cache."
        ),
    )
    parser.add_argument("--version", action="version", version=f"fastzarr {fastzarr.__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and stage logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def _message(exc: BaseException) -> str:
    """The error as printed: fastzarr's own messages whole (a DuplicateError's lists every label
    and store, and that list is the point), others' first line only."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    lines = text.strip().splitlines() or [type(exc).__name__]
    if isinstance(exc, fastzarr.FastzarrError | UserError):
        lines = ["\n".join(lines)]
    more = f" (and {len(lines) - 1} more lines)" if len(lines) > 1 else ""
    name = "" if isinstance(exc, UserError) else f"{type(exc).__name__}: "
    return f"{name}{lines[0]}{more}"


def _show_warning(  # noqa: PLR0917 - warnings.showwarning's signature
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Warnings as ``fastzarr: warning: ...`` lines instead of Python's source-location format."""
    print(f"fastzarr: warning: {category.__name__}: {message}", file=file or sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.debug:
        logger.setLevel(logging.DEBUG)
        if not logger.handlers:
            logger.addHandler(logging.StreamHandler())
    warnings.showwarning = _show_warning
    try:
        status: int = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here rather than as a traceback at exit
    except BrokenPipeError:
        # The reader left (``fastzarr cache ls | head -1``): nothing more to say to it, and
        # Python's own flush at exit must not find the pipe again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command a pipe stopped
    except KeyboardInterrupt:
        print("fastzarr: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        message = _message(exc)
        if not (args.debug or isinstance(exc, UserError)):
            # after a message of many lines, on a line of its own: not read as part of the last
            message += (
                "\nfastzarr: --debug shows the traceback"
                if "\n" in message
                else " (--debug shows the traceback)"
            )
        print(f"fastzarr: error: {message}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":  # pragma: no cover - python -m fastzarr.cli
    sys.exit(main())
