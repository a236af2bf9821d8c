"""Speed and exactness against the sandbox: this project vs the naive loop vs dlt.

Each peer runs in its own process against a sandbox served from this one. Scenarios:

- ``cpu``: 100k executions of one workflow, 0 ms latency (CPU-bound);
- ``cpu-mixed``: the same with every timestamp form the loader accepts on every page;
- ``latency``: 20k executions, 20 ms per request (latency-bound);
- ``inserts``: 20k executions, 20 ms per request, 3 new executions at the head per request;
- ``long-tail``: 20k executions, 20 ms per request but 5 % of requests at 200 ms;
- ``org``: a whole organisation, 200 workflows of 50 executions, 20 ms, into a DataFrame;
- ``org-lake``: the same into the hive lake (``project``) and a Delta table (``project-delta``);
- ``lake-100k``, ``lake-1m``: one workflow into the hive lake at 0 ms, against the naive
  loop writing one single Parquet file (only the newest 0.5 % of executions still open).

Peers (see ``peer_loops``): ``project`` (``load_executions`` at the default concurrency),
``project-cN`` (``concurrency=N``), ``naive`` (the loop the vendor's docs suggest), and
``dlt`` (``rest_api`` into DuckDB; parent/child resources for the organisation) when dlt is
installed. *bound* is the physical bound ``ceil(requests / C) x latency`` (for ``long-tail``:
the latencies the sandbox actually served in that run, ``max(sum / C, longest)``).

    .venv-bench/bin/python benchmarks/peers.py                   # the default scenarios
    .venv-bench/bin/python benchmarks/peers.py --scenarios org org-lake long-tail lake-1m
    .venv-bench/bin/python benchmarks/peers.py --scenarios latency --peers project-c2 \\
        project-c4 project-c8 project-c16 naive   # how the default concurrency was chosen
    .venv-bench/bin/python benchmarks/peers.py --code /tmp/before ...   # an earlier commit's
                                                                        # package in the peers
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

PAGE_SIZE = 100


@dataclass(frozen=True)
class Scenario:
    rows: int
    latency_ms: float = 0.0
    workflows: int = 1
    inserts_per_request: int = 0
    mixed: bool = False
    tail_share: float = 0.0
    tail_latency_ms: float = 0.0
    kind: str = "one"  # one | org | org-lake | lake
    peers: tuple[str, ...] = ("project", "project-c1", "naive", "dlt")
    sandbox: dict[str, Any] = field(default_factory=dict)

    def knobs(self) -> dict[str, Any]:
        return {
            "workflows": self.workflows,
            "rows": self.rows,
            "inserts_per_request": self.inserts_per_request,
            "timestamp_variety": self.mixed,
            "tail_share": self.tail_share,
            "tail_latency_ms": self.tail_latency_ms,
            **self.sandbox,
        }

    def requests_needed(self) -> int:
        """Requests a load cannot do without: the workflows list, then each one's pages."""
        pages = self.workflows * max(1, math.ceil(self.rows / PAGE_SIZE))
        listing = math.ceil(self.workflows / PAGE_SIZE) if self.kind.startswith("org") else 0
        return pages + listing


LAKE_PEERS = ("project", "naive")
SCENARIOS: dict[str, Scenario] = {
    "cpu": Scenario(100_000),
    "cpu-mixed": Scenario(100_000, mixed=True),
    "latency": Scenario(20_000, 20),
    "inserts": Scenario(20_000, 20, inserts_per_request=3),
    "long-tail": Scenario(
        20_000, 20, tail_share=0.05, tail_latency_ms=200, peers=("project", "naive")
    ),
    "org": Scenario(50, 20, workflows=200, kind="org", peers=("project", "naive", "dlt")),
    "org-lake": Scenario(
        50, 20, workflows=200, kind="org-lake", peers=("project", "project-delta", "naive")
    ),
    # A realistic history: only the newest 0.5 % may still be running (as in delta.py); with
    # open executions everywhere, the state of a million rows tracks 110,000 of them.
    "lake-100k": Scenario(100_000, kind="lake", peers=LAKE_PEERS, sandbox={"open_window": 500}),
    "lake-1m": Scenario(
        1_000_000,
        kind="lake",
        peers=LAKE_PEERS,
        sandbox={"cache_bytes": 3 << 30, "open_window": 5000},
    ),
}
DEFAULT_SCENARIOS = ["cpu", "latency", "inserts"]
LOAD_OF = {  # (scenario kind, peer) -> the load in peer_loops
    ("one", "project"): "project",
    ("one", "naive"): "naive",
    ("one", "dlt"): "dlt",
    ("org", "project"): "project-org",
    ("org", "naive"): "naive-org",
    ("org", "dlt"): "dlt-org",
    ("org-lake", "project"): "project-org-lake",
    ("org-lake", "project-delta"): "project-org-delta",
    ("org-lake", "naive"): "naive-org-lake",
    ("lake", "project"): "project-lake",
    ("lake", "naive"): "naive-file",
}


def load_for(kind: str, peer: str) -> tuple[str, int | None]:
    """The ``peer_loops`` load a peer runs in a scenario, and its concurrency (None: default)."""
    if peer.startswith("project-c"):
        base = LOAD_OF[(kind, "project")]
        return base, int(peer.removeprefix("project-c"))
    return LOAD_OF[(kind, peer)], None


def _applies(kind: str, peer: str) -> bool:
    base = "project" if peer.startswith("project-c") else peer
    return (kind, base) in LOAD_OF


# -- the child: one load, timed ---------------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not ``ru_maxrss``: Linux carries that
    over from the parent across exec, so a child would report its parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(load: str, concurrency: str, base_url: str, key: str, slug: str, ids_file: str) -> None:
    # Import everything a peer needs before the clock starts.
    import pandas  # noqa: F401
    import peer_loops  # this script's directory is on sys.path
    import pyarrow.parquet  # noqa: F401
    import requests  # noqa: F401

    import eachlabs_loader  # noqa: F401

    if load.startswith("dlt"):
        import dlt  # noqa: F401
    if load.endswith("delta"):
        import deltalake  # noqa: F401
    workdir = tempfile.mkdtemp(prefix="eachlabs-bench-")
    job = peer_loops.Job(
        base_url, key, slug, workdir, None if concurrency == "-" else int(concurrency)
    )
    try:
        started = time.perf_counter()
        outcome = peer_loops.LOADS[load](job)
        seconds = time.perf_counter() - started
        peak_mb = peak_rss_mb()
        ids = outcome() if callable(outcome) else outcome
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    with open(ids_file, "w") as handle:
        handle.write("\n".join(ids))
    result = {"seconds": seconds, "rows": len(ids), "peak_rss_mb": peak_mb, **peer_loops._MODE}
    print(json.dumps(result))


# -- the parent: sandbox, runs, table -----------------------------------------------------------


def expected_ids(sandbox: Any) -> set[str]:
    return {i for w in sandbox.workflows for i in sandbox.expected_ids(w.id)}


def measure(
    peer: str, scenario: Scenario, sandbox: Any, code: str | None, before: set[str] | None = None
) -> dict[str, Any]:
    load, concurrency = load_for(scenario.kind, peer)
    before = expected_ids(sandbox) if before is None else before
    env = dict(os.environ)
    if code is not None:  # the package under test from another checkout (an earlier commit)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (code, env.get("PYTHONPATH")) if p)
    sandbox.clear_requests()
    with tempfile.NamedTemporaryFile("r", suffix=".ids") as ids_file:
        command = [sys.executable, __file__, "--child", load, str(concurrency or "-")]
        command += [sandbox.base_url, sandbox.api_key, sandbox.workflows[0].slug, ids_file.name]
        completed = subprocess.run(command, capture_output=True, text=True, env=env)
        if completed.returncode != 0:
            raise RuntimeError(f"{peer} failed:\n{completed.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
        ids = ids_file.read().split()
    served = [r.latency_s for r in sandbox.requests]
    slots = 1 if not peer.startswith("project") else concurrency or _default_concurrency()
    result.update(
        missing=len(before - set(ids)),
        duplicates=len(ids) - len(set(ids)),
        requests=len(served),
        bound_s=_bound(scenario, served, slots),
    )
    return result


def _default_concurrency() -> int:
    from eachlabs_loader.config import DEFAULT_CONCURRENCY

    return DEFAULT_CONCURRENCY


def _bound(scenario: Scenario, served: list[float], slots: int) -> float:
    """``ceil(requests / C) x latency``; with a long tail, what the served latencies allow."""
    if scenario.tail_share:
        return max(sum(served) / slots, max(served, default=0.0))
    return math.ceil(scenario.requests_needed() / slots) * scenario.latency_ms / 1000


def warm_up(sandbox: Any, scenario: Scenario, code: str | None) -> set[str]:
    """An untimed load, then every page any peer may ask for, so the sandbox's row
    generation and JSON encoding stay out of every peer's time.

    Sequential peers ask for offsets 0, 100, 200...; the project's checked scans also for
    90, 180, 270... (pages overlapping by 10) or 90, 190, 290... (a second page timed before
    going on sequentially). Pages are cached by the sandbox once encoded. Returns the ids
    the sandbox serves (computed once: a million rows take a while to generate).
    """
    import requests

    before = expected_ids(sandbox)
    first = "project" if scenario.kind != "one" else "project-c1"
    measure(first, scenario, sandbox, code, before)
    alignments = ((0, PAGE_SIZE),) if scenario.rows > 100_000 else ((0, 100), (90, 100), (90, 90))
    with requests.Session() as session:
        for workflow in sandbox.workflows:
            url = f"{sandbox.base_url}/workflows/{workflow.id}/executions"
            for start, step in alignments:
                for offset in range(start, scenario.rows + 1, step):
                    session.get(
                        url,
                        params={"offset": offset, "limit": PAGE_SIZE},
                        headers={"X-API-Key": sandbox.api_key},
                        timeout=30,
                    ).raise_for_status()
    return before


def run_scenario(
    name: str, peers: list[str], repeat: int, settle_s: float, code: str | None
) -> list[dict[str, Any]]:
    from eachlabs_loader.sandbox import Sandbox

    scenario = SCENARIOS[name]
    static = scenario.inserts_per_request == 0
    shared = Sandbox(**scenario.knobs()).start() if static else None
    before = None
    if shared is not None:
        before = warm_up(shared, scenario, code)
        shared.latency_ms = scenario.latency_ms
    runs: dict[str, list[dict[str, Any]]] = {peer: [] for peer in peers}
    try:
        # Round robin, so that whatever drifts (the machine, the sandbox's own state after a
        # peer that opens a connection per request) weighs on every peer alike.
        for _ in range(repeat):
            for peer in peers:
                sandbox = shared or Sandbox(latency_ms=scenario.latency_ms, **scenario.knobs())
                sandbox.start()
                try:
                    runs[peer].append(measure(peer, scenario, sandbox, code, before))
                finally:
                    if sandbox is not shared:
                        sandbox.stop()
                _print_run(name, peer, runs[peer][-1])
                time.sleep(settle_s)  # let the machine reclaim a heavy peer's memory (dlt: 3 GB)
    finally:
        if shared is not None:
            shared.stop()
    return [_summary(name, scenario, peer, runs[peer]) for peer in peers]


def _print_run(name: str, peer: str, run: dict[str, Any]) -> None:
    mode = (
        f"  (concurrency {run['concurrency']}, overlap {run['overlap']})"
        if "concurrency" in run
        else ""
    )
    bound = f", x bound {run['seconds'] / run['bound_s']:.2f}" if run["bound_s"] else ""
    print(
        f"  {name:9} {peer:13} {run['seconds']:7.2f}s{bound}, {run['requests']} requests, "
        f"{run['peak_rss_mb']:.0f} MB{mode}",
        file=sys.stderr,
    )


def _summary(
    name: str, scenario: Scenario, peer: str, runs: list[dict[str, Any]]
) -> dict[str, Any]:
    def median(key: str) -> Any:
        return statistics.median(r[key] for r in runs)

    modes = sorted({(r["concurrency"], r["overlap"]) for r in runs if "concurrency" in r})
    return {
        "scenario": name,
        "peer": peer,
        "seconds": median("seconds"),
        "rows_per_s": scenario.rows * scenario.workflows / median("seconds"),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "missing": max(r["missing"] for r in runs),
        "duplicates": max(r["duplicates"] for r in runs),
        "requests": median("requests"),
        "bound_s": median("bound_s"),
        "x_bound": statistics.median(r["seconds"] / r["bound_s"] for r in runs)
        if all(r["bound_s"] for r in runs)
        else None,
        "modes": ", ".join(f"{c}/{o}" for c, o in modes) or "-",
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        "| scenario | peer | median wall (s) | rows/s | x naive (speed) | bound (s) | x bound "
        "| requests | concurrency/overlap | peak RSS (MB) | missing | duplicates |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    naive = {r["scenario"]: r["seconds"] for r in rows if r["peer"] == "naive"}
    for r in rows:
        ratio = naive[r["scenario"]] / r["seconds"] if r["scenario"] in naive else float("nan")
        bound = f"{r['bound_s']:.2f}" if r["bound_s"] else "-"
        vs_bound = f"{r['x_bound']:.2f}" if r["x_bound"] else "-"
        print(
            f"| {r['scenario']} | {r['peer']} | {r['seconds']:.2f} | {r['rows_per_s']:,.0f} "
            f"| {ratio:.1f} | {bound} | {vs_bound} | {r['requests']:,.0f} | {r['modes']} "
            f"| {r['peak_rss_mb']:,.0f} | {r['missing']:,} | {r['duplicates']:,} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenarios", nargs="+", default=DEFAULT_SCENARIOS, choices=SCENARIOS)
    parser.add_argument("--peers", nargs="+", default=None, help="default: each scenario's")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between runs")
    parser.add_argument("--code", default=None, help="a checkout whose package the peers load")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    has_dlt = importlib.util.find_spec("dlt") is not None
    if not has_dlt:
        print(
            "(dlt is not installed: pip install 'dlt[duckdb]' to compare with it)", file=sys.stderr
        )
    rows = []
    for name in args.scenarios:
        kind = SCENARIOS[name].kind
        peers = [p for p in args.peers if _applies(kind, p)] if args.peers else None
        peers = peers or [p for p in SCENARIOS[name].peers if has_dlt or p != "dlt"]
        rows += run_scenario(name, peers, args.repeat, args.settle, args.code)
    print_table(rows)


if __name__ == "__main__":
    main()
