"""How close can a client get to ``ceil(pages / C) x RTT`` on this machine? The floor under
the concurrent scan, measured with the same HTTP stack and the same sandbox.

One workflow of 20k executions, 20 ms per request, 8 requests in flight, 200 pages of 100;
the sandbox serves from this process (every page encoded before the clock starts), each
client runs in a child process, one after another, ``--repeat`` rounds:

- ``pool``: 8 threads, each sending a request and decoding its page (``EachlabsClient``:
  urllib3, the retry policy, ``codec``), pages at the plain offsets, nothing else;
- ``select``: one thread keeping 8 requests in flight on the wire's connections, reading
  whichever answer is in first (``selectors`` on the connections' sockets) and sending the
  next request before decoding; nothing else;
- ``project``: ``load_executions`` (overlapping, checked pages, normalised to a DataFrame).

    .venv-bench/bin/python benchmarks/floor.py --repeat 5
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

ROWS, PAGE, CONCURRENCY, LATENCY_MS = 20_000, 100, 8, 20


def pool(url: str, key: str, slug: str) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from eachlabs_loader import EachlabsClient, resolve_settings

    with EachlabsClient(resolve_settings(key, url)) as client:
        query = client.query(slug)
        with ThreadPoolExecutor(CONCURRENCY) as threads:
            pages = threads.map(
                lambda offset: client.request_page(query, offset).result(), range(0, ROWS, PAGE)
            )
            return sum(len(page) for page in pages)


def select(url: str, key: str, slug: str) -> int:
    import selectors

    from eachlabs_loader import EachlabsClient, resolve_settings
    from eachlabs_loader.codec import PageDecoder

    with EachlabsClient(resolve_settings(key, url)) as client:
        query = client.query(slug)
        target, headers = client.executions_url(query), client.headers()
        decoder, waiting = PageDecoder(), selectors.DefaultSelector()
        offsets, in_flight, rows = list(range(0, ROWS, PAGE)), 0, 0

        def send(offset: int) -> None:
            url = f"{target}?offset={offset}&limit={PAGE}"
            connection = client.wire.send(url, headers, client.settings.timeout)
            waiting.register(connection.sock, selectors.EVENT_READ, (connection, offset))

        while offsets and in_flight < CONCURRENCY:
            send(offsets.pop(0))
            in_flight += 1
        while in_flight:
            for ready, _ in waiting.select():
                connection, offset = ready.data
                waiting.unregister(ready.fileobj)
                reply = client.wire.receive(connection, target)
                in_flight -= 1
                if offsets:  # the next request goes out before this page is decoded
                    send(offsets.pop(0))
                    in_flight += 1
                rows += len(decoder.decode(reply.body, offset=offset, limit=PAGE))
        return rows


def project(url: str, key: str, slug: str) -> int:
    from eachlabs_loader import load_executions

    return len(load_executions(slug, base_url=url, api_key=key, progress=False))


CLIENTS = {"pool": pool, "select": select, "project": project}


def child(name: str, url: str, key: str, slug: str) -> None:
    import eachlabs_loader  # noqa: F401  (imports before the clock)

    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    rows = CLIENTS[name](url, key, slug)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    print(json.dumps({"seconds": seconds, "cpu_s": cpu, "rows": rows}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    import requests

    from eachlabs_loader.sandbox import Sandbox

    with Sandbox(workflows=1, rows=ROWS, timestamp_variety=False) as sandbox:
        slug = sandbox.workflows[0].slug
        url = f"{sandbox.base_url}/workflows/{slug}/executions"
        with requests.Session() as session:  # every page any client asks for, encoded once
            for start, step in ((0, PAGE), (90, 90), (90, 99), (0, 99)):
                for offset in range(start, ROWS + 1, step):
                    session.get(
                        url,
                        params={"offset": offset, "limit": PAGE},
                        headers={"X-API-Key": sandbox.api_key},
                        timeout=30,
                    )
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "project",
                sandbox.base_url,
                sandbox.api_key,
                slug,
            ],
            capture_output=True,
            check=True,
        )  # warm-up
        sandbox.latency_ms = LATENCY_MS
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CLIENTS}
        for _ in range(args.repeat):
            for name in CLIENTS:
                done = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        name,
                        sandbox.base_url,
                        sandbox.api_key,
                        slug,
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"  {name:8} {runs[name][-1]['seconds']:.3f}s", file=sys.stderr)
    bound = math.ceil(ROWS / PAGE / CONCURRENCY) * LATENCY_MS / 1000
    print(f"| client | median wall (s) | range (s) | x bound ({bound:.2f} s) | CPU (s) |")
    print("|---|---:|---:|---:|---:|")
    for name, measured in runs.items():
        seconds = [r["seconds"] for r in measured]
        median = statistics.median(seconds)
        cpu = statistics.median(r["cpu_s"] for r in measured)
        print(
            f"| {name} | {median:.3f} | {min(seconds):.3f}-{max(seconds):.3f} "
            f"| {median / bound:.2f} | {cpu:.2f} |"
        )


if __name__ == "__main__":
    main()
