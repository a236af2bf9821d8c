"""The README and the docs site: every example runs, the site builds, the reference is whole.

Examples are collected with Sybil (a maintained library that parses code blocks out of
Markdown and evaluates them in one namespace per document, in order), one test per
document, so a page's examples build on each other as a reader runs them. Each document gets
a fresh working directory, a sandbox API behind ``EACHLABS_BASE_URL`` and
``EACHLABS_API_KEY`` (three workflows, the first with about a week of history: the examples
are written for the real API and run unchanged) and moto's S3 server behind the standard
AWS variables (its buckets ``analytics``, ``bucket`` and ``bkt`` exist).

- ``python`` blocks run. One preceded by ``<!-- compile only: REASON -->`` needs what the
  suite cannot start (Airflow, Dagster, a Spark session): it is compiled, not run.
- ``sh`` blocks: each ``eachlabs-loader ...`` command runs (in a shell, so pipes to standard
  tools work) and must exit 0, or with the code its comment announces (``# exit code 4``);
  ``eachlabs-loader sandbox`` must print its URL, and is then stopped (on a free port,
  whatever ``--port`` says). Other lines (``pip install``, ``make``, ``export``) set up a
  machine: ``make test`` itself is what runs them.
- ``sql`` blocks starting with ``-- DuckDB`` run in DuckDB (the delta extension loaded from
  its wheel, in place of the block's ``INSTALL``/``LOAD``); other engines' SQL (Trino,
  Spark) is shown, not run.
- Docstring examples (``>>>``) in the package run as doctests.
"""

from __future__ import annotations

import doctest
import importlib
import logging
import os
import pathlib
import pkgutil
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pyarrow.fs as pafs
import pytest
from sybil import Example, Sybil
from sybil.parsers.markdown import CodeBlockParser

import eachlabs_loader
from eachlabs_loader.sandbox import Sandbox

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BUCKETS = ("analytics", "bucket", "bkt")
COMPILE_ONLY = re.compile(r"<!-- compile only: [^>]+ -->\s*$")
BIN = pathlib.Path(sys.executable).parent


def _compile_only(example: Example) -> bool:
    before = example.document.text[: example.start].rstrip("\n")
    return bool(COMPILE_ONLY.search(before.rsplit("\n", 1)[-1]))


def _python(example: Example) -> None:
    code = compile(example.parsed, f"{example.path}:{example.line}", "exec")
    if not _compile_only(example):
        exec(code, example.namespace)


def _commands(block: str) -> Iterator[tuple[str, int]]:
    """Logical lines (backslash continuations joined), comments and blank lines dropped,
    each with the exit code its comment announces (``# exit code 4``), else 0."""
    for line in block.replace("\\\n", " ").splitlines():
        command, _, comment = line.partition("  #")
        expected = re.search(r"exit code (\d+)", comment)
        if command.strip() and not command.lstrip().startswith("#"):
            yield command.strip(), int(expected.group(1)) if expected else 0


def _shell(example: Example) -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    for command, expected in _commands(example.parsed):
        if re.match(r"(\S*/)?eachlabs-loader sandbox\b", command):
            _serve_once(command, env)
        elif re.match(r"(\S*/)?eachlabs-loader |python -m eachlabs_loader ", command):
            command = command.replace(".venv/bin/", "")
            done = subprocess.run(
                ["bash", "-o", "pipefail", "-c", command],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == expected, (
                f"{example.path}:{example.line}: {command!r} exited {done.returncode}:\n"
                f"{done.stderr[-2000:]}"
            )


def _serve_once(command: str, env: dict[str, str]) -> None:
    argv = shlex.split(re.sub(r"--port \d+", "--port 0", command))  # a free port
    argv[0] = str(BIN / "eachlabs-loader")
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True) as server:
        try:
            assert server.stdout is not None
            assert "http://127.0.0.1:" in server.stdout.readline()
        finally:
            server.terminate()


def _sql(example: Example) -> None:
    if not example.parsed.lstrip().startswith("-- DuckDB"):
        return
    import duckdb

    code = re.sub(r"--[^\n]*", "", example.parsed)
    statements = [s for s in code.split(";") if s.strip()]
    with duckdb.connect() as connection:
        connection.execute(f"LOAD '{example.namespace['duckdb_delta_extension']}'")
        for statement in statements:
            if not re.match(r"\s*(INSTALL|LOAD)\b", statement, re.IGNORECASE):
                assert connection.execute(statement).fetchall(), statement


SYBIL = Sybil(
    parsers=[
        CodeBlockParser(language="python", evaluator=_python),
        CodeBlockParser(language="sh", evaluator=_shell),
        CodeBlockParser(language="sql", evaluator=_sql),
    ]
)


@pytest.fixture
def reader_machine(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, s3_endpoint: str
) -> Iterator[Sandbox]:
    """What a reader of the docs has: an API (the sandbox), object storage, a working dir.
    What a page changes in logging is undone, so later tests see the defaults."""
    root, ours = logging.getLogger(), logging.getLogger("eachlabs_loader")
    saved = (root.level, list(root.handlers), ours.level)
    rows = {"text-to-image-generator": 5_000, "video-upscaler": 600, "product-photo-studio": 300}
    # As on a real service, runs end within minutes: only the newest executions are open.
    with Sandbox(workflows=3, rows=rows, seed=7, open_window=20) as sandbox:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("EACHLABS_BASE_URL", sandbox.base_url)
        monkeypatch.setenv("EACHLABS_API_KEY", sandbox.api_key)
        s3 = {"access_key": "testing", "secret_key": "testing", "region": "us-east-1"}
        for name, value in {
            "AWS_ACCESS_KEY_ID": s3["access_key"],
            "AWS_SECRET_ACCESS_KEY": s3["secret_key"],
            "AWS_DEFAULT_REGION": s3["region"],
            "AWS_ENDPOINT_URL": f"http://{s3_endpoint}",
            "AWS_EC2_METADATA_DISABLED": "true",
            "MINIO_ENDPOINT": s3_endpoint,
            "MINIO_ACCESS_KEY": s3["access_key"],
            "MINIO_SECRET_KEY": s3["secret_key"],
        }.items():
            monkeypatch.setenv(name, value)
        filesystem = pafs.S3FileSystem(
            endpoint_override=s3_endpoint,
            scheme="http",
            allow_bucket_creation=True,
            allow_bucket_deletion=True,
            **s3,
        )
        for bucket in BUCKETS:  # empty, whatever the page before wrote
            if filesystem.get_file_info(bucket).type != pafs.FileType.NotFound:
                filesystem.delete_dir(bucket)
            filesystem.create_dir(bucket)
        yield sandbox
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    ours.setLevel(saved[2])


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_runs(
    path: pathlib.Path, reader_machine: Sandbox, duckdb_delta_extension: str
) -> None:
    document = SYBIL.parse(path)
    document.namespace["duckdb_delta_extension"] = duckdb_delta_extension
    examples = list(document)
    assert examples or path.name in {"benchmarks.md", "changelog.md", "reference.md"}, (
        f"{path}: no examples"
    )
    for example in examples:
        example.evaluate()
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close("all")


def _modules() -> list[Any]:
    found = pkgutil.walk_packages(eachlabs_loader.__path__, "eachlabs_loader.")
    names = [m.name for m in found if not m.name.endswith("__main__")]  # those run on import
    return [importlib.import_module(name) for name in ["eachlabs_loader", *names]]


def test_docstring_examples_run() -> None:
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner()
    tests = [t for module in _modules() for t in finder.find(module) if t.examples]
    assert len(tests) >= 3
    for test in tests:
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


def test_the_site_builds_strictly_with_every_public_name_documented(
    tmp_path: pathlib.Path,
) -> None:
    site = tmp_path / "site"
    done = subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reference = (site / "reference" / "index.html").read_text()
    anchors = set(re.findall(r'id="eachlabs_loader\.([A-Za-z_]+)"', reference))
    assert set(eachlabs_loader.__all__) <= anchors
    for name in eachlabs_loader.__all__:
        if not isinstance(getattr(eachlabs_loader, name), (str, tuple)):
            assert (getattr(eachlabs_loader, name).__doc__ or "").strip(), name


def test_the_readme_is_short_and_its_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme):
        assert (ROOT / target).exists(), target
