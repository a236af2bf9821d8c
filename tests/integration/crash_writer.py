"""A lake writer run in a subprocess, so a test can SIGKILL it mid-write.

Usage: python crash_writer.py ROOT ROWS SEED [--changed] [--delta]
Prints one "wrote ..." line per data file as it is committed (DEBUG log of eachlabs_loader);
with --delta, a Delta table: "committing ..." as its commits begin, "copied ..." per file
appended.
"""

from __future__ import annotations

import logging
import sys

from eachlabs_loader import load_executions
from eachlabs_loader.sandbox import Sandbox


def main() -> None:
    root, rows, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("eachlabs_loader")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    with Sandbox(rows=rows, workflows=1, seed=seed) as sandbox:
        slug = sandbox.workflows[0].slug
        if "--changed" in sys.argv:
            sandbox.finish(slug)
            sandbox.insert(slug, 500)
        print("ready", flush=True)
        load_executions(
            slug,
            base_url=sandbox.base_url,
            api_key=sandbox.api_key,
            output=root,
            table_format="delta" if "--delta" in sys.argv else "parquet",
        )
    print("done", flush=True)


if __name__ == "__main__":
    main()
