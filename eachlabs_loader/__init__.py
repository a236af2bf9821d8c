"""eachlabs_loader: Eachlabs workflow executions into pandas, exactly once and typed.

The front door is ``load_executions``; ``EachlabsClient`` reuses connections and pages lazily.
Which module may import which is the import contract in ``pyproject.toml``
(``[tool.importlinter]``), checked by ``make test``.
"""

from importlib import metadata as _metadata

from .config import DEFAULT_BASE_URL, Settings, resolve_settings
from .delta import MaintenanceResult, maintain_table
from .errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    EachlabsError,
    EachlabsWarning,
    InvalidRequestError,
    InvalidResponseError,
    PaginationError,
    RateLimitError,
    SchemaMismatchError,
    ServerError,
    StorageError,
    TLSError,
    TransportError,
    UnparseableTimestampWarning,
    WorkflowNotFoundError,
)
from .loader import fetch_executions, load_executions
from .output import read_executions, write_executions
from .pagination import Page
from .result import LoadResult
from .retry import RetryPolicy
from .schema import COLUMNS, CORE_COLUMNS, normalize_executions
from .transport import EachlabsClient, Request
from .workflows import ALL_WORKFLOWS, WORKFLOW_COLUMNS, load_workflows

__version__: str
"""This package's version, read from its installed metadata (written once, in pyproject.toml)."""
try:
    # Written once, in pyproject.toml; a source tree used without installing has no metadata.
    __version__ = _metadata.version("eachlabs-loader")
except _metadata.PackageNotFoundError:  # pragma: no cover - only outside an install
    __version__ = "0+unknown"

__all__ = [
    "ALL_WORKFLOWS",
    "COLUMNS",
    "CORE_COLUMNS",
    "DEFAULT_BASE_URL",
    "WORKFLOW_COLUMNS",
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "EachlabsClient",
    "EachlabsError",
    "EachlabsWarning",
    "InvalidRequestError",
    "InvalidResponseError",
    "LoadResult",
    "MaintenanceResult",
    "Page",
    "PaginationError",
    "RateLimitError",
    "Request",
    "RetryPolicy",
    "SchemaMismatchError",
    "ServerError",
    "Settings",
    "StorageError",
    "TLSError",
    "TransportError",
    "UnparseableTimestampWarning",
    "WorkflowNotFoundError",
    "__version__",
    "fetch_executions",
    "load_executions",
    "load_workflows",
    "maintain_table",
    "normalize_executions",
    "read_executions",
    "resolve_settings",
    "write_executions",
]
