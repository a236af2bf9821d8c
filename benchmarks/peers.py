"""Speed and exactness against the sandbox: this project vs the naive loop vs dlt.

Three scenarios, each peer run in its own process against a sandbox served from this one:

- ``cpu``: 100k executions, 0 ms latency (CPU-bound);
- ``latency``: 20k executions, 20 ms per request (latency-bound);
- ``inserts``: 20k executions, 20 ms per request, 3 new executions at the head per request.

Peers: ``project`` (``load_executions`` at the default concurrency), ``project-c1``
(``concurrency=1``), ``naive`` (the loop the vendor's docs suggest: sequential
``requests.get``, ``json``, ``pd.DataFrame``, ``pd.to_datetime(utc=True)``), and ``dlt``
(``rest_api`` source with its offset paginator into DuckDB) when dlt is installed.

    .venv/bin/python benchmarks/peers.py                   # all scenarios, 3 runs each
    .venv/bin/python benchmarks/peers.py --scenarios latency --repeat 5
    .venv/bin/python benchmarks/peers.py --scenarios latency --peers project-c2 project-c4 \
        project-c8 project-c16 project-c32 naive       # how the default concurrency was chosen
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

PAGE_SIZE = 100
TIMESTAMPS = ("started_at", "ended_at", "created_at", "updated_at", "deleted_at")
# The sandbox sends every timestamp in the vendor docs' form (``...Z``); ``cpu-mixed`` mixes
# every form the loader accepts in every page (the tests' torture data) for comparison.
SCENARIOS: dict[str, dict[str, Any]] = {
    "cpu": {"rows": 100_000, "latency_ms": 0, "inserts_per_request": 0},
    "latency": {"rows": 20_000, "latency_ms": 20, "inserts_per_request": 0},
    "inserts": {"rows": 20_000, "latency_ms": 20, "inserts_per_request": 3},
    "cpu-mixed": {"rows": 100_000, "latency_ms": 0, "inserts_per_request": 0, "mixed": True},
}
DEFAULT_SCENARIOS = ["cpu", "latency", "inserts"]


# -- the peers, each run in a child process -----------------------------------------------


def run_project(base_url: str, key: str, slug: str, concurrency: int | None) -> list[str]:
    from eachlabs_loader import load_executions

    kwargs = {} if concurrency is None else {"concurrency": concurrency}
    frame = load_executions(slug, base_url=base_url, api_key=key, **kwargs)
    result = frame.attrs["eachlabs"]  # what the scan chose:
    _MODE.update(concurrency=result.concurrency, overlap=result.overlap)
    return frame["execution_id"].tolist()


_MODE: dict[str, Any] = {}


def run_naive(base_url: str, key: str, slug: str) -> list[str]:
    """The vendor docs' loop, as a user would write it."""
    import pandas as pd
    import requests

    rows: list[dict[str, Any]] = []
    offset = 0
    while True:
        response = requests.get(
            f"{base_url}/workflows/{slug}/executions",
            params={"offset": offset, "limit": PAGE_SIZE},
            headers={"X-API-Key": key},
            timeout=30,
        )
        response.raise_for_status()
        page = response.json()["executions"]
        rows.extend(page)
        if len(page) < PAGE_SIZE:
            break
        offset += PAGE_SIZE
    frame = pd.DataFrame(rows)
    for column in TIMESTAMPS:
        if column in frame:
            # Plain utc=True raises on the mixed forms the API sends; ISO8601 is the least fix.
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    return frame["execution_id"].tolist()


def run_dlt(base_url: str, key: str, slug: str) -> list[str]:
    import dlt
    import duckdb
    from dlt.sources.rest_api import rest_api_source

    workdir = tempfile.mkdtemp(prefix="eachlabs-dlt-")
    source = rest_api_source(
        {
            "client": {"base_url": base_url + "/", "headers": {"X-API-Key": key}},
            "resources": [
                {
                    "name": "executions",
                    "endpoint": {
                        "path": f"workflows/{slug}/executions",
                        "data_selector": "executions",
                        "paginator": {
                            "type": "offset",
                            "limit": PAGE_SIZE,
                            "offset_param": "offset",
                            "limit_param": "limit",
                            "total_path": "total_count",
                        },
                    },
                }
            ],
        }
    )
    database = os.path.join(workdir, "dlt.duckdb")
    pipeline = dlt.pipeline(
        pipeline_name="eachlabs_bench",
        destination=dlt.destinations.duckdb(database),
        dataset_name="bench",
        pipelines_dir=os.path.join(workdir, "pipelines"),
    )
    pipeline.run(source)
    with duckdb.connect(database) as con:
        return [r[0] for r in con.execute("select execution_id from bench.executions").fetchall()]


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not ``ru_maxrss``: Linux carries that
    over from the parent across exec, so a child would report its parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(peer: str, base_url: str, key: str, slug: str, ids_file: str) -> None:
    # Import everything a peer needs before the clock starts.
    import pandas  # noqa: F401
    import requests  # noqa: F401

    import eachlabs_loader  # noqa: F401

    if peer == "dlt":
        import dlt  # noqa: F401
    started = time.perf_counter()
    if peer == "project":
        ids = run_project(base_url, key, slug, None)
    elif peer.startswith("project-c"):
        ids = run_project(base_url, key, slug, int(peer.removeprefix("project-c")))
    elif peer == "naive":
        ids = run_naive(base_url, key, slug)
    else:
        ids = run_dlt(base_url, key, slug)
    seconds = time.perf_counter() - started
    with open(ids_file, "w") as handle:
        handle.write("\n".join(ids))
    peak_mb = peak_rss_mb()
    print(json.dumps({"seconds": seconds, "rows": len(ids), "peak_rss_mb": peak_mb, **_MODE}))


# -- the parent: sandbox, runs, table --------------------------------------------------------


def measure(peer: str, scenario: dict[str, Any], sandbox: Any) -> dict[str, Any]:
    slug = sandbox.workflows[0].slug
    before = set(sandbox.expected_ids(slug))
    with tempfile.NamedTemporaryFile("r", suffix=".ids") as ids_file:
        completed = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                peer,
                sandbox.base_url,
                sandbox.api_key,
                slug,
                ids_file.name,
            ],
            capture_output=True,
            text=True,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"{peer} failed:\n{completed.stderr[-2000:]}")
        result = json.loads(completed.stdout.strip().splitlines()[-1])
        ids = ids_file.read().split()
    result["missing"] = len(before - set(ids))
    result["duplicates"] = len(ids) - len(set(ids))
    result["requests"] = len(sandbox.requests)
    return result


def warm_pages(sandbox: Any, rows: int) -> None:
    """Every page any peer may ask for, encoded by the sandbox once before the clock starts.

    Sequential peers ask for offsets 0, 100, 200...; the project's checked scans also for
    90, 180, 270... (pages overlapping by 10) or 90, 190, 290... (a second page timed before
    going on sequentially). The sandbox caches encoded pages: without this, a peer whose
    offsets the warm-up run did not use would pay the sandbox's JSON encoding in its time.
    """
    import requests

    url = f"{sandbox.base_url}/workflows/{sandbox.workflows[0].slug}/executions"
    with requests.Session() as session:
        for start, step in ((0, PAGE_SIZE), (90, PAGE_SIZE), (90, 90)):
            for offset in range(start, rows + 1, step):
                session.get(
                    url,
                    params={"offset": offset, "limit": PAGE_SIZE},
                    headers={"X-API-Key": sandbox.api_key},
                    timeout=30,
                ).raise_for_status()


def run_scenario(
    name: str, peers: list[str], repeat: int, settle_s: float = 2.0
) -> list[dict[str, Any]]:
    from eachlabs_loader.config import DEFAULT_CONCURRENCY
    from eachlabs_loader.sandbox import Sandbox

    scenario = dict(SCENARIOS[name])
    knobs = {"timestamp_variety": scenario.pop("mixed", False), "workflows": 1}
    static = scenario["inserts_per_request"] == 0
    shared = Sandbox(rows=scenario["rows"], latency_ms=0, **knobs).start() if static else None
    if shared is not None:
        measure("project-c1", scenario, shared)  # warm the sandbox's caches, untimed
        warm_pages(shared, scenario["rows"])
        shared.latency_ms = scenario["latency_ms"]
    rows_out = []
    runs: dict[str, list[dict[str, Any]]] = {peer: [] for peer in peers}
    try:
        # Round robin, so that whatever drifts (the machine, the sandbox's own state after a
        # peer that opens a connection per request) weighs on every peer alike.
        for _ in range(repeat):
            for peer in peers:
                sandbox = shared or Sandbox(**knobs, **scenario).start()
                sandbox.clear_requests()
                try:
                    runs[peer].append(measure(peer, scenario, sandbox))
                finally:
                    if sandbox is not shared:
                        sandbox.stop()
                last = runs[peer][-1]
                mode = (
                    f"  (concurrency {last['concurrency']}, overlap {last['overlap']})"
                    if "concurrency" in last
                    else ""
                )
                print(f"  {name:8} {peer:11} {last['seconds']:7.2f}s{mode}", file=sys.stderr)
                time.sleep(settle_s)  # let the machine reclaim a heavy peer's memory (dlt: 3 GB)
        for peer in peers:
            seconds = statistics.median(r["seconds"] for r in runs[peer])
            concurrency = (
                int(peer.removeprefix("project-c"))
                if peer.startswith("project-c")
                else DEFAULT_CONCURRENCY
                if peer == "project"
                else 1
            )
            pages = math.ceil(scenario["rows"] / PAGE_SIZE)
            rows_out.append(
                {
                    "scenario": name,
                    "peer": peer,
                    "seconds": seconds,
                    "rows_per_s": scenario["rows"] / seconds,
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in runs[peer]),
                    "missing": max(r["missing"] for r in runs[peer]),
                    "duplicates": max(r["duplicates"] for r in runs[peer]),
                    "requests": statistics.median(r["requests"] for r in runs[peer]),
                    "bound_s": math.ceil(pages / concurrency) * scenario["latency_ms"] / 1000,
                }
            )
    finally:
        if shared is not None:
            shared.stop()
    return rows_out


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        "| scenario | peer | median wall (s) | rows/s | x naive (speed) | bound (s) | x bound "
        "| requests | peak RSS (MB) | missing | duplicates |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    naive = {r["scenario"]: r["seconds"] for r in rows if r["peer"] == "naive"}
    for r in rows:
        ratio = naive[r["scenario"]] / r["seconds"] if r["scenario"] in naive else float("nan")
        bound = r["bound_s"]
        vs_bound = f"{r['seconds'] / bound:.2f}" if bound else "-"
        print(
            f"| {r['scenario']} | {r['peer']} | {r['seconds']:.2f} | {r['rows_per_s']:,.0f} "
            f"| {ratio:.1f} | {bound:.2f} | {vs_bound} | {r['requests']:,.0f} "
            f"| {r['peak_rss_mb']:,.0f} | {r['missing']:,} | {r['duplicates']:,} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenarios", nargs="+", default=DEFAULT_SCENARIOS, choices=SCENARIOS)
    parser.add_argument("--peers", nargs="+", default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between runs")
    parser.add_argument("--child", nargs=5, metavar=("PEER", "URL", "KEY", "SLUG", "IDS"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    peers = args.peers or ["project", "project-c1", "naive"] + (
        ["dlt"] if importlib.util.find_spec("dlt") else []
    )
    if importlib.util.find_spec("dlt") is None:
        print(
            "(dlt is not installed: pip install 'dlt[duckdb]' to compare with it)", file=sys.stderr
        )
    rows = [
        r for name in args.scenarios for r in run_scenario(name, peers, args.repeat, args.settle)
    ]
    print_table(rows)


if __name__ == "__main__":
    main()
