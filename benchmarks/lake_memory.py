"""Peak memory of loading N sandbox executions into the Parquet lake.

Compares, in the same run and against the same sandbox, the streaming writer
(``load_executions(..., output=DIR)``) with the obvious alternative: load the whole
DataFrame, then ``write_executions`` it. Each load runs in its own process, so its peak RSS
(``ru_maxrss``) is its own; the sandbox runs in a third process.

    .venv/bin/python benchmarks/lake_memory.py --rows 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not ``ru_maxrss``: Linux carries that
    over from the parent across exec, so a child would report its parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(mode: str, base_url: str, key: str, slug: str, out: str) -> None:
    from eachlabs_loader import load_executions, write_executions

    started = time.monotonic()
    if mode == "streaming":
        result = load_executions(slug, base_url=base_url, api_key=key, output=out)
        rows = result.rows_written
    else:
        frame = load_executions(slug, base_url=base_url, api_key=key)
        rows = write_executions(frame, out).rows_written
    peak_mb = peak_rss_mb()
    print(json.dumps({"rows": rows, "seconds": time.monotonic() - started, "peak_rss_mb": peak_mb}))


def start_sandbox(rows: int) -> tuple[subprocess.Popen[str], str, str, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "eachlabs_loader", "sandbox", "--port", "0", "--rows", str(rows)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    base_url = process.stdout.readline().split()[3]
    key = process.stdout.readline().split(": ", 1)[1].strip()
    slug = process.stdout.readline().split()[1]
    return process, base_url, key, slug


def measure(rows: int, mode: str) -> dict[str, float]:
    sandbox, base_url, key, slug = start_sandbox(rows)
    out = tempfile.mkdtemp(prefix="eachlabs-bench-")
    try:
        completed = subprocess.run(
            [sys.executable, __file__, "--child", mode, base_url, key, slug, out],
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(completed.stdout.strip().splitlines()[-1])
    finally:
        sandbox.terminate()
        sandbox.wait()
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument(
        "--modes", nargs="+", default=["streaming", "dataframe-then-write"], help="what to measure"
    )
    parser.add_argument("--child", nargs=5, metavar=("MODE", "URL", "KEY", "SLUG", "OUT"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    print("| rows | mode | peak RSS (MB) | wall time (s) | rows written |")
    print("|---:|---|---:|---:|---:|")
    for rows in args.rows:
        for mode in args.modes:
            result = measure(rows, mode)
            print(
                f"| {rows:,} | {mode} | {result['peak_rss_mb']:,.0f} | {result['seconds']:,.1f} "
                f"| {result['rows']:,} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
