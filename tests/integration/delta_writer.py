"""A Delta load in its own process, for the concurrent-writer tests.

Usage: python delta_writer.py TABLE_URI BASE_URL WORKFLOW [WORKFLOW ...]
The key comes from EACHLABS_API_KEY. Waits until the file named by $START_AT (a UNIX time)
says go, so that several writers start together; prints the result's counts as JSON.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from eachlabs_loader import load_executions


def main() -> None:
    uri, base_url, workflows = sys.argv[1], sys.argv[2], sys.argv[3:]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    start_at = float(os.environ.get("START_AT", "0"))
    time.sleep(max(0.0, start_at - time.time()))
    result = load_executions(
        workflows, base_url=base_url, output=uri, table_format="delta", progress=False
    )
    print(
        json.dumps(
            {
                "inserted": result.rows_inserted,
                "updated": result.rows_updated,
                "version": result.table_version,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
