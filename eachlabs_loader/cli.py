"""The ``eachlabs-loader`` command: argument parsing, output and exit codes only.

Subcommands: ``demo`` (what ``make demo`` runs) and ``sandbox`` (serve the fake API).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TextIO

import pandas as pd

from .errors import (
    APIError,
    AuthenticationError,
    EachlabsError,
    InvalidRequestError,
    WorkflowNotFoundError,
)
from .lake import read_executions
from .loader import load_executions
from .sandbox import Sandbox

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_API = 5

DEMO_ROWS = 5_000


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args, sys.stdout))
    except EachlabsError as exc:
        print(f"eachlabs-loader: error: {exc}", file=sys.stderr)
        return exit_code_for(exc)


def exit_code_for(exc: EachlabsError) -> int:
    """2 bad input, 3 authentication, 4 not found, 5 API or network failure after retries."""
    if isinstance(exc, InvalidRequestError):
        return EXIT_USAGE
    if isinstance(exc, AuthenticationError):
        return EXIT_AUTH
    if isinstance(exc, WorkflowNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(exc, APIError):
        return EXIT_API
    return EXIT_API


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eachlabs-loader",
        description="Load Eachlabs workflow executions.",
        epilog="exit codes: 0 ok, 2 usage or invalid input, 3 authentication, "
        "4 workflow not found, 5 API or network failure after retries",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="load a workflow from the built-in sandbox API")
    demo.add_argument("--rows", type=int, default=DEMO_ROWS, help="executions in the demo workflow")
    demo.add_argument("--out", default="demo-lake", help="where to write the Parquet lake")
    demo.set_defaults(run=_run_demo)
    sandbox = commands.add_parser("sandbox", help="serve the fake API in the foreground")
    sandbox.add_argument("--port", type=int, default=8765)
    sandbox.add_argument("--rows", type=int, default=1000, help="executions per workflow")
    sandbox.add_argument("--latency-ms", type=float, default=0.0)
    sandbox.add_argument("--seed", type=int, default=0)
    sandbox.add_argument(
        "--uniform-timestamps",
        action="store_true",
        help="send every timestamp as ...Z (the docs' form) instead of mixing the forms",
    )
    sandbox.set_defaults(run=_run_sandbox)
    return parser


def _run_demo(args: argparse.Namespace, out: TextIO) -> int:
    with Sandbox(rows=args.rows, latency_ms=2) as sandbox:
        workflow = sandbox.workflows[0]
        result = load_executions(
            workflow.slug, base_url=sandbox.base_url, api_key=sandbox.api_key, output=args.out
        )
    frame = read_executions(args.out, workflow_id=workflow.id)
    print(f"workflow   {workflow.name} ({workflow.slug}, {workflow.id})", file=out)
    print(
        f"loaded     {len(frame):,} executions in {result.requests} requests "
        f"({result.rows_fetched:,} rows incl. page overlaps, concurrency {result.concurrency}), "
        f"{result.elapsed_s:.2f}s",
        file=out,
    )
    print(
        f"lake       {args.out}: {result.rows_written:,} rows written "
        f"({result.rows_inserted:,} new, {result.rows_updated:,} updated), "
        f"{result.files_written} files",
        file=out,
    )
    print(summarize(frame), file=out)
    return EXIT_OK


def summarize(frame: pd.DataFrame) -> str:
    """A few lines a person can read: status counts and the time span covered."""
    if frame.empty:
        return "no executions"
    counts = frame["status"].value_counts()
    lines = ["status     " + ", ".join(f"{s} {n:,}" for s, n in counts.items())]
    lines.append(f"created    {frame['created_at'].min()} .. {frame['created_at'].max()}")
    durations = (frame["ended_at"] - frame["started_at"]).dropna()
    if not durations.empty:
        lines.append(f"duration   median {durations.median()}, p95 {durations.quantile(0.95)}")
    return "\n".join(lines)


def _run_sandbox(args: argparse.Namespace, out: TextIO) -> int:
    sandbox = Sandbox(
        rows=args.rows,
        latency_ms=args.latency_ms,
        seed=args.seed,
        port=args.port,
        timestamp_variety=not args.uniform_timestamps,
    )
    with sandbox:
        print(f"sandbox API at {sandbox.base_url}  (also under {sandbox.origin}/v1)", file=out)
        print(f"API key: {sandbox.api_key}", file=out)
        for workflow in sandbox.workflows:
            print(f"  workflow {workflow.slug}  {workflow.id}  {args.rows} executions", file=out)
        print("Ctrl-C to stop", file=out, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
