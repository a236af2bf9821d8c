"""The Delta table against the hive Parquet lake: a full load, then a re-run after 1 % changed.

For each size, one sandbox (in this process, 0 ms latency) serves both formats the same
rows; untimed loads first fill its page cache, so neither format pays the sandbox's row
generation or JSON encoding. Each load runs in its own process, so its peak RSS (VmHWM) is its own:

1. a full load into an empty hive lake, and into an empty Delta table;
2. 1 % of the rows change (new executions at the head, the open ones finish), then an
   incremental re-run into each, as a scheduled job would run it.

    .venv-bench/bin/python benchmarks/delta.py --rows 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

from lake_memory import peak_rss_mb  # the script's own directory is on sys.path

from eachlabs_loader.sandbox import Sandbox, data, server

FORMATS = ("parquet", "delta")


def child(fmt: str, base_url: str, key: str, slug: str, out: str, incremental: str) -> None:
    from eachlabs_loader import load_executions

    started = time.monotonic()
    result = load_executions(
        slug,
        base_url=base_url,
        api_key=key,
        output=out,
        table_format=fmt,
        incremental=incremental == "1",
        progress=False,
    )
    seconds = time.monotonic() - started
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_mb": peak_rss_mb(),
                "written": result.rows_written,
                "requests": result.requests,
                "incremental": result.incremental,
                "fallbacks": result.fallbacks,
            }
        ),
        flush=True,
    )


def data_files(root: str) -> int:
    return sum(
        name.endswith(".parquet") and "_delta_log" not in path
        for path, _, names in os.walk(root)
        for name in names
    )


def run(fmt: str, sandbox: Sandbox, slug: str, out: str, *, incremental: bool) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", fmt, sandbox.base_url, sandbox.api_key, slug]
    command += [out, "1" if incremental else "0"]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    measured: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    return measured


def warm_up(sandbox: Sandbox, slug: str) -> None:
    """Two untimed loads: the first pays the sandbox's row generation (slow answers also
    steer the scan's overlap, so its offsets differ), the second caches the pages a load
    at full speed asks for (BENCHMARKS.md: without it the first timed run paid 2.4x)."""
    for _ in range(2):
        warm = tempfile.mkdtemp(prefix="eachlabs-bench-warm-")
        run("parquet", sandbox, slug, warm, incremental=False)
        shutil.rmtree(warm)


def measure(rows: int) -> list[tuple[str, str, dict[str, float], int]]:
    found = []
    server.BYTES_CACHE_SIZE = 8 * 1024**3  # every page of the run stays encoded
    # The sandbox spaces executions 2 minutes apart on average from its epoch (denser by day,
    # sparser at night and at weekends; the 10 days cover that): start early enough that
    # a million of them end in the past (the loader caps a future high-water mark at now,
    # so a history reaching into the future would make every incremental run read deep).
    data.EPOCH = datetime.now(timezone.utc) - timedelta(minutes=2 * rows + 10 * 24 * 60)
    with Sandbox(rows=rows, workflows=1, open_window=max(100, rows // 200)) as sandbox:
        slug = sandbox.workflows[0].slug
        roots = {fmt: tempfile.mkdtemp(prefix=f"eachlabs-bench-{fmt}-") for fmt in FORMATS}
        try:
            warm_up(sandbox, slug)
            for fmt in FORMATS:
                result = run(fmt, sandbox, slug, roots[fmt], incremental=True)
                found.append(("full load", fmt, result, data_files(roots[fmt])))
            sandbox.finish(slug)  # the open ones: the newest 0.5 %
            sandbox.insert(slug, rows // 200)  # and 0.5 % new
            warm_up(sandbox, slug)  # the new pages, encoded
            for fmt in FORMATS:
                result = run(fmt, sandbox, slug, roots[fmt], incremental=True)
                if not result["incremental"]:
                    print(f"({fmt}: a full load instead of incremental: {result['fallbacks']})")
                found.append(("1 % changed, incremental", fmt, result, data_files(roots[fmt])))
        finally:
            for root in roots.values():
                shutil.rmtree(root, ignore_errors=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--child", nargs=6, metavar=("FMT", "URL", "KEY", "SLUG", "OUT", "INC"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    print(
        "| rows | run | format | wall time (s) | peak RSS (MB) | rows written | requests ", end=""
    )
    print("| files |")
    print("|---:|---|---|---:|---:|---:|---:|---:|")
    for rows in args.rows:
        for run_name, fmt, result, files in measure(rows):
            print(
                f"| {rows:,} | {run_name} | {fmt} | {result['seconds']:.2f} "
                f"| {result['peak_rss_mb']:,.0f} | {int(result['written']):,} "
                f"| {int(result['requests']):,} | {files:,} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
