"""The sandbox: a real HTTP server on loopback imitating the Eachlabs list-executions API.

Use it from tests, notebooks and the command line (``eachlabs-loader sandbox``)::

    from eachlabs_loader.sandbox import Sandbox
    with Sandbox(rows=500, latency_ms=20) as sandbox:
        df = load_executions(sandbox.workflows[0].slug,
                             base_url=sandbox.base_url, api_key=sandbox.api_key)

Imports only the standard library: it is an independent implementation of the API.
"""

from .data import Workflow
from .faults import Fault
from .server import DEMO_API_KEY, RequestRecord, Sandbox

__all__ = ["DEMO_API_KEY", "Fault", "RequestRecord", "Sandbox", "Workflow"]
