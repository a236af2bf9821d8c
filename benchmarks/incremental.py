"""Full load vs incremental run: requests and wall time after 1% new executions.

A workflow of N executions behind the sandbox with simulated latency. Scenario: a full load
into a fresh lake; then 1% new executions arrive and some running ones finish; then
(a) a full load again (what a job without state does every hour) and (b) an incremental
run, each into its own copy of the lake. Both lakes are compared with each other, row for
row, and with the API's ids. A second history, where open executions are spread through
all of it (never-finishing "zombies"), shows the run choosing the concurrent full scan when
its state says the oldest open execution lies too deep for a sequential read to pay.

    .venv/bin/python benchmarks/incremental.py --rows 100000 --latency-ms 20
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from eachlabs_loader import load_executions, read_executions
from eachlabs_loader.sandbox import Sandbox


def run(rows: int, latency_ms: float, open_window: int | None) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="eachlabs-bench-incremental-"))
    try:
        with Sandbox(workflows=1, rows=rows, latency_ms=latency_ms, open_window=open_window) as sb:
            slug = sb.workflows[0].slug
            kw = {"base_url": sb.base_url, "api_key": sb.api_key, "progress": False}
            first = load_executions(slug, output=work / "full", **kw)
            shutil.copytree(work / "full", work / "incremental")
            new = rows // 100
            sb.finish(slug, 20)
            sb.insert(slug, new)

            sb.clear_requests()
            started = time.perf_counter()
            full = load_executions(slug, output=work / "full", **kw)
            full_s = time.perf_counter() - started
            full_requests = len(sb.requests)

            sb.clear_requests()
            started = time.perf_counter()
            inc = load_executions(slug, output=work / "incremental", incremental=True, **kw)
            inc_s = time.perf_counter() - started
            inc_requests = len(sb.requests)

            a, b = read_executions(work / "full"), read_executions(work / "incremental")
            pd.testing.assert_frame_equal(a, b)
            assert set(a["execution_id"]) == set(sb.expected_ids(slug))
            assert inc.incremental == (open_window is not None)
        return {
            "history": "open runs only at the head" if open_window else "open runs everywhere",
            "first load s": first.elapsed_s,
            "full requests": full_requests,
            "full s": full_s,
            "full rows written": full.rows_written,
            "incremental requests": inc_requests,
            "incremental s": inc_s,
            "incremental rows written": inc.rows_written,
            "incremental run read": "the head" if inc.incremental else "all (chose full scan)",
            "requests ratio": full_requests / inc_requests,
            "speed-up": full_s / inc_s,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--open-window", type=int, default=500)
    args = parser.parse_args()
    results = [
        run(args.rows, args.latency_ms, args.open_window),
        run(args.rows, args.latency_ms, None),
    ]
    columns = list(results[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for result in results:
        cells = [
            f"{v:,.2f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)
            for v in result.values()
        ]
        print("| " + " | ".join(cells) + " |")
    print(
        f"\n{args.rows:,} executions, {args.latency_ms:g} ms latency per request, then "
        f"{args.rows // 100:,} new and 20 finished; default concurrency; dataset of the "
        "incremental run == dataset of the full load (checked row for row)."
    )


if __name__ == "__main__":
    main()
