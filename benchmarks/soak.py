"""Soak: a million executions through random faults and live inserts into a Parquet lake,
then the dataset checked id by id. Not part of ``make test`` (it takes minutes).

    .venv/bin/python benchmarks/soak.py --rows 1000000 --fault-rate 0.02 --inserts 3

Checks: no execution_id twice; every execution that existed when the load started is in the
lake; nothing in the lake that the API never served.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time

import pyarrow.dataset as pads

from eachlabs_loader import load_executions
from eachlabs_loader.sandbox import Sandbox


def peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--fault-rate", type=float, default=0.02)
    parser.add_argument("--inserts", type=int, default=3, help="new executions per request")
    parser.add_argument("--latency-ms", type=float, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=20261129)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    root = tempfile.mkdtemp(prefix="eachlabs-soak-")
    sandbox = Sandbox(
        workflows=1,
        rows=args.rows,
        seed=args.seed,
        latency_ms=args.latency_ms,
        inserts_per_request=args.inserts,
        random_faults=args.fault_rate,
    ).start()
    try:
        slug = sandbox.workflows[0].slug
        before = set(sandbox.expected_ids(slug))
        started = time.monotonic()
        result = load_executions(
            slug,
            base_url=sandbox.base_url,
            api_key=sandbox.api_key,
            output=root,
            concurrency=args.concurrency,
            max_retries=10,
            progress=False,
        )
        wall = time.monotonic() - started
        after = set(sandbox.expected_ids(slug))
        ids = (
            pads.dataset(root, format="parquet", partitioning="hive")
            .to_table(columns=["execution_id"])["execution_id"]
            .to_pylist()
        )
        faults = sum(1 for r in sandbox.requests if r.fault)
        unique = set(ids)
        print(f"rows at start        {len(before):,}")
        inserted = len(after) - len(before)
        print(f"rows at end          {len(after):,} (inserted while loading: {inserted:,})")
        print(f"rows in the lake     {len(ids):,}")
        print(f"duplicates           {len(ids) - len(unique):,}")
        print(f"missing (from start) {len(before - unique):,}")
        print(f"never served         {len(unique - after):,}")
        print(f"requests             {result.requests:,} ({faults:,} answered with a fault)")
        print(f"retries              {result.retries:,}")
        refetched, gaps = result.pages_refetched, result.gaps_repaired
        print(f"pages re-fetched     {refetched:,} ({gaps:,} gaps repaired)")
        print(f"files written        {result.files_written:,}")
        print(f"wall time            {wall:,.1f}s")
        print(f"peak RSS (both)      {peak_rss_mb():,.0f} MB (loader and sandbox in one process)")
        ok = len(ids) == len(unique) and before <= unique <= after
        print("RESULT               " + ("exact" if ok else "NOT EXACT"))
        raise SystemExit(0 if ok else 1)
    finally:
        sandbox.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
