"""Every example in README.md runs as written, and shows what it claims.

The README's ```python blocks run in order in one namespace, in a temporary working directory:
the first makes the sample data (``make_batches``) that the others read, and ``url`` names that
data over HTTP, served here by a local ``http.server`` on 127.0.0.1. A statement whose line ends
in ``# -> TEXT`` claims its value (``repr``) or, for ``print(...)``, what it prints; ``...`` in
TEXT stands for anything. The commands of ```bash blocks that call the ``fastzarr`` command run
too (as ``python -m fastzarr`` from this interpreter), in document order with the python blocks,
and must exit 0. A python block whose first line starts with ``# needs network`` (the S3 example)
runs separately, against moto's S3 server on 127.0.0.1; ``make``/``pip``/``git`` lines and text
blocks are not run: the test lists what it does not run and compares the list with the one
below, so nothing escapes silently.
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import os
import re
import socket
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastzarr as fz
import numpy as np
import pytest
import xarray as xr

from tests.conftest import http_server

README = Path(__file__).resolve().parent.parent / "README.md"
SHELL = {"bash", "sh", "shell", "console"}
NETWORK = "# needs network"
URL_ADDRESS = "127.0.0.1:8000"  # where the README's `url` points; the test's server replaces it
CLAIM = re.compile(r"#\s*->\s*(.*?)\s*$")

# What the test does not run. Shell lines (comments removed) and the first line of text blocks.
NOT_RUN = [
    "git clone <repository URL> fastzarr && cd fastzarr",
    'pip install ".[testing]"',
    "make demo",
    "make test",
    "text: advice: 4 arrays (var0000 ... var0003): each chunk holds 24 whole 96x128 fields"
    " (1.1 MiB): a point",
]
NETWORK_BLOCKS = 1  # the S3 example
# The only warnings the examples may raise: the sample batches repeat file_ids on purpose.
EXPECTED_WARNINGS = {"DuplicateWarning"}


@dataclass
class Block:
    lang: str
    line: int  # line number of the block's first line of code in README.md
    text: str


def readme_blocks() -> list[Block]:
    blocks = []
    lines = README.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = re.fullmatch(r"```(\w*)\s*", lines[i])
        if match is None:
            i += 1
            continue
        end = lines.index("```", i + 1)
        blocks.append(Block(match.group(1), i + 2, "\n".join(lines[i + 1 : end]) + "\n"))
        i = end + 1
    return blocks


def shell_commands(block: Block) -> list[str]:
    """The block's commands: continuation lines joined, comment-only lines and prompts dropped."""
    commands: list[str] = []
    pending = ""
    for raw in block.text.splitlines():
        line = raw.removeprefix("$ ") if block.lang == "console" else raw
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        commands.append(pending + line.strip())
        pending = ""
    assert not pending, f"README.md:{block.line}: a command ends in a line continuation"
    return commands


def without_comment(command: str) -> str:
    return re.sub(r"\s+#.*$", "", command).strip()


def runs_cli(command: str) -> bool:
    return re.match(r"(fastzarr|python3? -m fastzarr)(\s|$)", command) is not None


def matches(claimed: str, shown: str) -> bool:
    pattern = ".*?".join(re.escape(part) for part in claimed.split("..."))
    return re.fullmatch(pattern, shown, re.DOTALL) is not None


class Claims(ast.NodeTransformer):
    """Turns each expression statement whose last line claims ``# -> TEXT`` into a checked call."""

    def __init__(self, lines: list[str], first_line: int) -> None:
        self.lines = lines
        self.first_line = first_line
        self.found: set[int] = set()

    def visit_Expr(self, node: ast.Expr) -> ast.AST:
        assert node.end_lineno is not None
        match = CLAIM.search(self.lines[node.end_lineno - 1])
        if match is None:
            return node
        self.found.add(node.end_lineno)
        call = ast.Call(
            ast.Name("__readme_check__", ast.Load()),
            [
                ast.Lambda(ast.arguments([], [], None, [], [], None, []), node.value),
                ast.Constant(match.group(1)),
                ast.Constant(self.first_line + node.end_lineno - 1),
            ],
            [],
        )
        return ast.copy_location(ast.Expr(call), node)


def check(thunk: Callable[[], Any], claimed: str, line: int) -> None:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        value = thunk()
    sys.stdout.write(printed.getvalue())
    shown = printed.getvalue().rstrip("\n") if value is None else repr(value)
    assert matches(claimed, shown), f"README.md:{line} claims {claimed!r}, but shows {shown!r}"


def run_python(block: Block, namespace: dict[str, Any], address: str) -> int:
    """Runs one block; returns how many claims it checked."""
    source = block.text.replace(URL_ADDRESS, address)
    lines = source.splitlines()
    tree = ast.parse(source)
    claims = Claims(lines, block.line)
    tree = ast.fix_missing_locations(claims.visit(tree))
    claimed_lines = {n for n, text in enumerate(lines, 1) if CLAIM.search(text)}
    assert claims.found == claimed_lines, (
        f"README.md:{block.line}: '# ->' on lines that end no expression statement: "
        f"{sorted(block.line + n - 1 for n in claimed_lines - claims.found)}"
    )
    ast.increment_lineno(tree, block.line - 1)  # tracebacks name README.md's own lines
    exec(compile(tree, str(README), "exec"), namespace)
    return len(claims.found)


def run_shell(command: str, line: int, cwd: Path) -> None:
    package_root = str(Path(fz.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    env.pop("FASTZARR_LOG", None)
    env["FASTZARR_CACHE_DIR"] = str(cwd / "default-cache")
    env["README_PYTHON"] = sys.executable
    prelude = 'fastzarr() { "$README_PYTHON" -m fastzarr "$@"; }\npython() { "$README_PYTHON" "$@"; }\n'
    done = subprocess.run(
        ["bash", "-c", prelude + command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, (
        f"README.md:{line}: `{command}` exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    )


def is_network(block: Block) -> bool:
    return block.lang == "python" and block.text.startswith(NETWORK)


def test_readme_examples_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FASTZARR_CACHE_DIR", str(tmp_path / "default-cache"))
    monkeypatch.delenv("FASTZARR_LOG", raising=False)
    blocks = readme_blocks()
    first = next(b for b in blocks if b.lang == "python")
    assert "make_batches(" in first.text  # the first example makes the data the others read
    assert URL_ADDRESS in first.text  # and names it over HTTP as `url`
    namespace: dict[str, Any] = {"__name__": "readme", "__readme_check__": check}
    not_run: list[str] = []
    ran_python = ran_shell = claims = 0
    tested = []
    threads = fz.get_num_threads()
    try:
        with http_server(tmp_path) as address, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for block in blocks:
                if block.lang == "python":
                    if not is_network(block):
                        claims += run_python(block, namespace, address)
                        ran_python += 1
                elif block.lang in SHELL:
                    for command in shell_commands(block):
                        if runs_cli(command):
                            run_shell(command, block.line, tmp_path)
                            ran_shell += 1
                        else:
                            not_run.append(without_comment(command))
                else:
                    not_run.append(f"{block.lang or 'text'}: {block.text.splitlines()[0]}")
            # The README's pytest examples take `fastzarr_batches`: stores like its own sample.
            for name, function in list(namespace.items()):
                if name.startswith("test_") and callable(function):
                    function(fastzarr_batches=namespace["sources"])
                    tested.append(name)
    finally:
        fz.set_num_threads(threads)
    assert not_run == NOT_RUN
    assert sorted({w.category.__name__ for w in caught} - EXPECTED_WARNINGS) == [], [
        str(w.message) for w in caught
    ]
    assert ran_python >= 10
    assert ran_shell >= 5
    assert claims >= 10
    assert tested == ["test_training_rows", "test_reads_like_xarray"]


def test_network_examples_are_few_and_marked() -> None:
    network = [b for b in readme_blocks() if is_network(b)]
    assert len(network) == NETWORK_BLOCKS
    assert all("s3://" in b.text or "https://" in b.text for b in network)


@pytest.mark.parametrize(
    "block", [b for b in readme_blocks() if is_network(b)], ids=lambda b: f"line{b.line}"
)
def test_network_example(block: Block, tmp_path: Path) -> None:
    """The S3 example, run against moto's S3 server on 127.0.0.1 holding the store it names."""
    import boto3  # noqa: PLC0415 - test dependencies (moto's server), imported where used
    from moto import server as moto_server  # noqa: PLC0415

    assert "s3://bucket/era5.zarr" in block.text
    store = tmp_path / "era5.zarr"
    t2m = np.arange(4 * 3 * 5, dtype="f4").reshape(4, 3, 5)
    xr.Dataset({"t2m": (("time", "lat", "lon"), t2m)}).to_zarr(store, zarr_format=2, consolidated=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        # A public bucket, as open datasets are: the example reads it unsigned.
        client.create_bucket(Bucket="bucket", ACL="public-read")
        for path in sorted(store.rglob("*")):
            if path.is_file():
                key = path.relative_to(tmp_path).as_posix()
                client.put_object(Bucket="bucket", Key=key, Body=path.read_bytes(), ACL="public-read")
        assert "http://127.0.0.1:9000" in block.text
        namespace: dict[str, Any] = {"fz": fz}
        code = compile(block.text.replace("http://127.0.0.1:9000", endpoint), str(README), "exec")
        exec(code, namespace)
        np.testing.assert_array_equal(namespace["arr"][...], t2m)
        expected = xr.Dataset({"t2m": (("time", "lat", "lon"), t2m)})
        xr.testing.assert_equal(namespace["ds"].load(), expected)
    finally:
        server.stop()
