"""How to turn 100k executions of JSON into columns: the measurements behind ``codec``.

Pages of 100 sandbox executions (compact JSON, as the sandbox sends it; every timestamp in
the docs' ``...Z`` form), decoded in this process, no network. Each line is the best of
``--repeat`` runs.

    .venv/bin/python benchmarks/decode.py
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from eachlabs_loader.codec import NULL, PageDecoder
from eachlabs_loader.pagination import ColumnBuffer
from eachlabs_loader.sandbox.data import make_execution, make_workflow
from eachlabs_loader.schema import normalize_columns, normalize_executions

TIMESTAMPS = ("started_at", "ended_at", "created_at", "updated_at", "deleted_at")


def pages(rows: int) -> list[bytes]:
    workflow = make_workflow(0, 1)
    executions = [make_execution(0, workflow, k, timestamp_variety=False) for k in range(rows)]
    return [
        json.dumps(
            {"executions": executions[i : i + 100], "total_count": rows}, separators=(",", ":")
        ).encode()
        for i in range(0, rows, 100)
    ]


def best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def naive_frame(bodies: list[bytes], loads: Callable[[bytes], Any]) -> pd.DataFrame:
    rows = [row for body in bodies for row in loads(body)["executions"]]
    frame = pd.DataFrame(rows)
    for column in TIMESTAMPS:
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    return frame


def project_frame(bodies: list[bytes]) -> pd.DataFrame:
    decoder, buffer = PageDecoder(), ColumnBuffer(fill=NULL)
    for i, body in enumerate(bodies):
        buffer.extend(decoder.decode(body, offset=i * 100, limit=100).columns)
    return normalize_columns(buffer.columns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    bodies = pages(args.rows)
    decoder = PageDecoder()
    candidates: dict[str, Callable[[], Any]] = {
        "json.loads -> dicts": lambda: [json.loads(b) for b in bodies],
        "msgspec generic -> dicts": lambda: [__import__("msgspec").json.decode(b) for b in bodies],
        "msgspec typed, raw nested (codec)": lambda: [
            decoder.decode(b, offset=0, limit=100) for b in bodies
        ],
        "naive: json + pd.DataFrame + to_datetime": lambda: naive_frame(bodies, json.loads),
        "dicts -> normalize_executions (contract)": lambda: normalize_executions(
            [r for b in bodies for r in json.loads(b)["executions"]]
        ),
        "codec + normalize_columns (contract)": lambda: project_frame(bodies),
    }
    if importlib.util.find_spec("orjson"):
        import orjson

        candidates["orjson.loads -> dicts"] = lambda: [orjson.loads(b) for b in bodies]
    print(f"| decoding {args.rows:,} executions | seconds | µs per row |")
    print("|---|---:|---:|")
    for name, fn in candidates.items():
        seconds = best(fn, args.repeat)
        print(f"| {name} | {seconds:.3f} | {seconds / args.rows * 1e6:.1f} |", flush=True)


if __name__ == "__main__":
    main()
