"""The ``eachlabs-loader`` command: argument parsing, logging set-up, output and exit codes.

eachlabs-loader executions WORKFLOW [WORKFLOW ...] | --all [--out PATH_OR_URI] [--format delta]
                           [--incremental]
eachlabs-loader maintain --out TABLE_URI [--no-compact] [--no-vacuum] [--retention DURATION]
eachlabs-loader workflows [--out FILE] [--format csv|jsonl]
eachlabs-loader sandbox [--port N] [--rows N] [--latency-ms N] [--seed N]
eachlabs-loader demo
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TextIO

import pandas as pd

from .config import DEFAULT_CONCURRENCY, DEFAULT_MAX_RETRIES, DEFAULT_PAGE_SIZE
from .delta import maintain_table
from .errors import (
    AuthenticationError,
    EachlabsError,
    InvalidRequestError,
    WorkflowNotFoundError,
)
from .incremental import DEFAULT_LOOKBACK
from .loader import load_executions
from .output import TABLE_FORMATS, read_executions
from .result import LoadResult
from .sandbox import Sandbox
from .sinks import FlatFormat, check_writable_file, write_flat
from .workflows import ALL_WORKFLOWS, load_workflows

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_API = 5

DEMO_ROWS = 5_000
EXIT_CODES_HELP = """exit codes:
  0  every workflow loaded
  2  usage error or invalid input: found before any request, or refused by the API
     (HTTP 400, named in the message)
  3  authentication failed (missing or rejected key, or a proxy's credentials)
  4  workflow not found
  5  API, network or TLS failure (after retries where they can help), or an output
     that cannot be read or written
With --on-error skip, the other workflows are still loaded and written; the exit code is
then that of the first failure.

The API key comes from EACHLABS_API_KEY or --api-key-file, never the command line."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = _parser().parse_args(argv)
    _configure_logging(getattr(args, "verbose", 0) - getattr(args, "quiet", 0))
    try:
        return int(args.run(args))
    except EachlabsError as exc:
        print(f"eachlabs-loader: error: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    except BrokenPipeError:
        # The reader of our stdout went away (`| head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def exit_code_for(exc: BaseException) -> int:
    """2 bad input (ours or the API's 400), 3 authentication, 4 not found, 5 the rest: the
    API, the network or the output failed."""
    if isinstance(exc, InvalidRequestError):
        return EXIT_USAGE
    if isinstance(exc, AuthenticationError):
        return EXIT_AUTH
    if isinstance(exc, WorkflowNotFoundError):
        return EXIT_NOT_FOUND
    return EXIT_API  # APIError and the rest: the API or the network failed after retries


def _configure_logging(verbosity: int) -> None:
    """-q errors only, default warnings, -v one INFO line per load, -vv debug (urllib3 too)."""
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(
        max(-1, min(verbosity, 2)), logging.DEBUG
    )
    logging.basicConfig(
        level=logging.WARNING if level > logging.DEBUG else logging.DEBUG,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("eachlabs_loader").setLevel(level)
    logging.getLogger().setLevel(level if level <= logging.DEBUG else logging.WARNING)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eachlabs-loader",
        description="Load Eachlabs workflow executions into Parquet, CSV or JSON Lines.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _executions_parser(commands)
    _maintain_parser(commands)
    _workflows_parser(commands)
    _sandbox_parsers(commands)
    return parser


if TYPE_CHECKING:
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]


def _workflows_parser(commands: Commands) -> None:
    workflows = commands.add_parser(
        "workflows",
        help="list the organisation's workflows",
        description="List the workflows the key can see. Without --out, JSON Lines to stdout.",
    )
    workflows.add_argument("--out", metavar="FILE", help="a .csv or .jsonl file")
    workflows.add_argument("--format", choices=("csv", "jsonl"))
    workflows.add_argument(
        "--base-url", metavar="URL", help="default: $EACHLABS_BASE_URL or the API"
    )
    workflows.add_argument("--api-key-file", metavar="PATH", help="read the key from this file")
    workflows.add_argument("-v", "--verbose", action="count", default=0)
    workflows.add_argument("-q", "--quiet", action="count", default=0)
    workflows.set_defaults(run=_run_workflows)


def _sandbox_parsers(commands: Commands) -> None:
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
        "--open-window",
        type=int,
        metavar="N",
        help="only the newest N executions may still be running (as on a real service)",
    )
    sandbox.add_argument(
        "--uniform-timestamps",
        action="store_true",
        help="send every timestamp as ...Z (the docs' form) instead of mixing the forms",
    )
    sandbox.set_defaults(run=_run_sandbox)


def _executions_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "executions",
        help="load the executions of one or more workflows",
        description="Load executions. Without --out, JSON Lines go to stdout.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("workflows", nargs="*", metavar="WORKFLOW", help="workflow UUID or slug")
    parser.add_argument(
        "--all",
        action="store_true",
        help="every active or archived workflow of the organisation (instead of WORKFLOW)",
    )
    parser.add_argument("--bulk-id", help="only executions of this bulk trigger (a UUID)")
    parser.add_argument(
        "--out",
        metavar="PATH_OR_URI",
        help="a directory or URI (s3://...) for the Parquet lake or the Delta table, or a "
        ".csv/.jsonl file",
    )
    parser.add_argument(
        "--format",
        choices=("parquet", "delta", "csv", "jsonl"),
        help="parquet: the hive lake (default for a directory or URI); delta: a Delta table "
        "(needs the delta extra); csv or jsonl: else from the file name; jsonl to stdout",
    )
    parser.add_argument("--page-size", type=int, default=DEFAULT_PAGE_SIZE, metavar="N")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, metavar="N")
    parser.add_argument("--max-retries", type=int, default=DEFAULT_MAX_RETRIES, metavar="N")
    parser.add_argument("--timeout", type=float, metavar="S", help="seconds per request")
    parser.add_argument("--base-url", metavar="URL", help="default: $EACHLABS_BASE_URL or the API")
    parser.add_argument("--api-key-file", metavar="PATH", help="read the key from this file")
    _run_options(parser)
    parser.set_defaults(run=_run_executions)


def _run_options(parser: argparse.ArgumentParser) -> None:
    """How an ``executions`` run goes: failures, incremental reads, what it shows."""
    parser.add_argument(
        "--on-error",
        choices=("fail", "skip"),
        default="fail",
        help="with several workflows: stop at the first failure (default) or load the others",
    )
    parser.add_argument(
        "--incremental",
        action="store_true",
        help="lake or Delta table: read just what changed since the last load into --out "
        "(falls back to a full load, with a warning, when that is not safe)",
    )
    parser.add_argument(
        "--full-refresh", action="store_true", help="with --incremental: load everything anyway"
    )
    parser.add_argument(
        "--lookback",
        type=_duration,
        metavar="DURATION",
        help="with --incremental: re-read executions created this long before the newest "
        "one known (seconds, or 30m, 2h, 1d; default 1h)",
    )
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="errors only")


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> timedelta:
    match = _DURATION_RE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 3600, 90s, 30m, 2h, 1d)")
    try:
        return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    except OverflowError:
        raise argparse.ArgumentTypeError(f"duration too long: {text!r}") from None


def _flat_format(out: str | None) -> FlatFormat | None:
    """csv or jsonl from a file name (None: stdout, so jsonl); None for other names."""
    lower = (out or ".jsonl").lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    return None


def _output_format(args: argparse.Namespace) -> str:
    if args.format:
        if args.format in TABLE_FORMATS and not args.out:
            raise InvalidRequestError(f"--format {args.format} needs --out (a directory or URI)")
        return str(args.format)
    return _flat_format(args.out) or "parquet"


def _api_key(args: argparse.Namespace) -> str | None:
    if not args.api_key_file:
        return None
    problem = None
    try:
        with open(args.api_key_file, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as exc:
        problem = exc.strerror or exc.__class__.__name__
    except UnicodeDecodeError:
        problem = "not UTF-8 text"  # the error's own text would hold the key's bytes
    raise InvalidRequestError(f"cannot read --api-key-file: {problem}")


def _run_executions(args: argparse.Namespace) -> int:
    fmt = _output_format(args)
    if args.all == bool(args.workflows):
        raise InvalidRequestError("name the workflows to load, or --all (not both)")
    if args.incremental and fmt not in TABLE_FORMATS:
        raise InvalidRequestError(
            "--incremental needs a Parquet lake or a Delta table: --out DIRECTORY_OR_URI"
        )
    if (args.full_refresh or args.lookback is not None) and not args.incremental:
        raise InvalidRequestError("--full-refresh and --lookback only apply with --incremental")
    if fmt not in TABLE_FORMATS and args.out:
        check_writable_file(args.out)
    result = _load(args, fmt)
    if not args.quiet:  # the summary goes where the data does not
        summary = _summary(result, args.out or "stdout", fmt)
        print(summary, file=sys.stdout if args.out else sys.stderr)
    if result.errors:
        return exit_code_for(next(iter(result.errors.values())))
    return EXIT_OK


def _load(args: argparse.Namespace, fmt: str) -> LoadResult:
    """The load the arguments ask for: into the lake, or a frame written as ``fmt``."""
    workflows = ALL_WORKFLOWS if args.all else args.workflows
    common: dict[str, Any] = {
        "api_key": _api_key(args),
        "base_url": args.base_url,
        "page_size": args.page_size,
        "max_retries": args.max_retries,
        "concurrency": args.concurrency,
        "progress": False if args.no_progress else None,
        "on_error": "skip" if args.on_error == "skip" else "raise",
    }
    if args.timeout is not None:
        common["timeout"] = args.timeout
    if fmt in TABLE_FORMATS:
        written: LoadResult = load_executions(
            workflows,
            args.bulk_id,
            output=args.out,
            table_format="delta" if fmt == "delta" else "parquet",
            incremental=args.incremental,
            full_refresh=args.full_refresh,
            lookback=DEFAULT_LOOKBACK if args.lookback is None else args.lookback,
            **common,
        )
        return written
    frame = load_executions(workflows, args.bulk_id, **common)
    write_flat(frame, args.out or sys.stdout, "csv" if fmt == "csv" else "jsonl")
    result: LoadResult = frame.attrs["eachlabs"]
    return result


def _summary(result: LoadResult, where: str, fmt: str) -> str:
    table = fmt in TABLE_FORMATS
    rows = result.rows_written if table else result.rows_returned
    line = (
        f"eachlabs-loader: {rows:,} executions "
        f"{'written' if table else 'exported'} to {where} ({fmt})"
    )
    if table:
        line += (
            f": {result.rows_inserted:,} new, {result.rows_updated:,} updated, "
            f"{result.files_written} files"
        )
    if result.table_version is not None:
        line += f", version {result.table_version}"
    line += f"; {result.requests:,} requests, {result.retries} retries, {result.elapsed_s:.2f}s"
    if result.incremental:
        line += "; incremental"
    elif result.fallbacks:
        line += f"; full load instead of incremental for {', '.join(sorted(result.fallbacks))}"
    if result.failed:
        line += f"; FAILED: {', '.join(sorted(result.failed))}"
    return line


def _maintain_parser(commands: Commands) -> None:
    maintain = commands.add_parser(
        "maintain",
        help="compact a Delta table's small files and remove unreferenced ones",
        description="Compact each partition's small files (optimize), then delete the files "
        "no version within the retention needs (vacuum). Time travel reaches back only as "
        "far as the retention.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    maintain.add_argument("--out", required=True, metavar="TABLE_URI", help="the Delta table")
    maintain.add_argument("--no-compact", action="store_true", help="skip the compaction")
    maintain.add_argument("--no-vacuum", action="store_true", help="skip the vacuum")
    maintain.add_argument(
        "--retention",
        type=_duration,
        metavar="DURATION",
        help="keep replaced files this long (default: the table's own, 7 days)",
    )
    maintain.add_argument("-v", "--verbose", action="count", default=0)
    maintain.add_argument("-q", "--quiet", action="count", default=0)
    maintain.set_defaults(run=_run_maintain)


def _run_maintain(args: argparse.Namespace) -> int:
    done = maintain_table(
        args.out,
        compact=not args.no_compact,
        vacuum=not args.no_vacuum,
        retention=args.retention,
    )
    if not args.quiet:
        print(
            f"eachlabs-loader: {args.out}: {done.files_removed} files compacted into "
            f"{done.files_added}, {done.files_vacuumed} unreferenced files removed; "
            f"version {done.version}"
        )
    return EXIT_OK


def _run_workflows(args: argparse.Namespace) -> int:
    fmt: FlatFormat | None = args.format or _flat_format(args.out)
    if fmt is None:
        raise InvalidRequestError(f"--out {args.out!r}: name a .csv or .jsonl file, or --format")
    if args.out:
        check_writable_file(args.out)
    frame = load_workflows(api_key=_api_key(args), base_url=args.base_url)
    write_flat(frame, args.out or sys.stdout, fmt)
    if args.out and not args.quiet:
        print(f"eachlabs-loader: {len(frame):,} workflows written to {args.out} ({fmt})")
    return EXIT_OK


def _run_demo(args: argparse.Namespace) -> int:
    with Sandbox(rows=args.rows, latency_ms=2) as sandbox:
        workflow = sandbox.workflows[0]
        result = load_executions(
            workflow.slug,
            base_url=sandbox.base_url,
            api_key=sandbox.api_key,
            output=args.out,
            progress=False,
        )
    frame = read_executions(args.out, workflow_id=workflow.id)
    out = sys.stdout
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


def _run_sandbox(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    sandbox = Sandbox(
        rows=args.rows,
        latency_ms=args.latency_ms,
        seed=args.seed,
        port=args.port,
        timestamp_variety=not args.uniform_timestamps,
        open_window=args.open_window,
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
