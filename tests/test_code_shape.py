"""The shape the code keeps: short functions, one door per library, no protocol code of ours."""

from __future__ import annotations

import ast
import pathlib
import re

import eachlabs_loader

PACKAGE = pathlib.Path(eachlabs_loader.__file__).parent
MAX_LINES = 40
MAX_LONG_FUNCTIONS = 3


def modules() -> list[pathlib.Path]:
    return [p for p in PACKAGE.rglob("*.py") if "sandbox" not in p.relative_to(PACKAGE).parts]


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function, its docstring apart (argument-parser tables count in full)."""
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    if docstring and isinstance(first.value.value, str):
        lines -= first.end_lineno - first.lineno + 1
    return lines


def test_functions_are_short_enough_to_read_at_once():
    long = sorted(
        (body_lines(node), f"{path.name}:{node.lineno} {node.name}")
        for path in modules()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and body_lines(node) > MAX_LINES
    )
    assert len(long) <= MAX_LONG_FUNCTIONS, long


def importers(library: str) -> set[str]:
    pattern = rf"^\s*(import|from) {re.escape(library)}(\s|\.|$)"
    return {p.name for p in modules() if re.search(pattern, p.read_text(), re.M)}


def test_each_library_enters_through_one_door():
    doors = {
        "requests": {"wire.py"},
        "urllib3": {"wire.py"},
        "ssl": {"wire.py"},
        "socket": set(),
        "zlib": set(),
        "tenacity": {"retry.py"},
        "msgspec": {"codec.py"},
        "tqdm": {"progress.py"},
        "pyarrow.fs": {"storage.py"},
        "pyarrow.dataset": {"storage.py"},
    }
    assert {library: importers(library) for library in doors} == doors


def test_no_http_framing_or_decoding_code_of_our_own():
    code = {p.name: p.read_text() for p in modules()}
    for needle in ("decompressobj(", "wrap_socket(", "Transfer-Encoding", "HTTP/1.1 "):
        assert [name for name, text in code.items() if needle in text] == [], needle


def test_nothing_is_released_by_the_garbage_collector():
    assert [p.name for p in modules() if re.search(r"def __del__\b", p.read_text())] == []
