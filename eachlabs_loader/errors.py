"""The exception tree: every error the loader raises derives from ``EachlabsError``.

This module imports nothing from the package, so every other module can use it::

    EachlabsError                          root: ``except EachlabsError`` catches all of ours
    ├── InvalidRequestError (+ValueError)  bad input or setting, raised before any request
    │   └── BadRequestError (+APIError)    HTTP 400: the API refused what was sent
    ├── AuthenticationError                401, 403, a proxy's 407, or no API key at all
    ├── WorkflowNotFoundError              404: unknown workflow id or slug
    ├── StorageError                       the dataset cannot be read or written (names the path)
    ├── SchemaMismatchError                an existing dataset file stores an incompatible type
    └── APIError                           the API failed us: an error status, or retries ran out
        ├── RateLimitError                 429; ``retry_after`` in seconds or None      [retryable]
        ├── ServerError                    500/502/503/504, HTML gateway pages          [retryable]
        ├── TransportError                 timeout, refused or dropped connection       [retryable]
        │   ├── InvalidResponseError       a 200 whose body is not the expected JSON    [retryable]
        │   └── TLSError                   a certificate or TLS-protocol failure: permanent
        └── PaginationError                the server keeps serving rows already seen

Whether to retry is the class attribute ``retryable``: the retry policy reads nothing else.
When retries run out the last error is raised as is, so ``except APIError`` catches
"the API or the network failed after retries". An error the API answered carries the
``X-Request-Id`` it sent (``request_id``), to quote to the vendor's support.
"""

from __future__ import annotations

from typing import Any


class EachlabsError(Exception):
    """Base class of every error raised by eachlabs_loader.

    The message already names the workflow, offset and HTTP status where they are known;
    the attributes repeat them for code that handles errors.
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        workflow_id: str | None = None,
        offset: int | None = None,
        status_code: int | None = None,
        api_message: str | None = None,
        code: str | None = None,
        details: Any = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.workflow_id = workflow_id
        self.offset = offset
        self.status_code = status_code
        self.api_message = api_message
        self.code = code
        self.details = details
        self.request_id = request_id


class InvalidRequestError(EachlabsError, ValueError):
    """Bad input or settings, checked before any request (``BadRequestError``: an HTTP 400)."""


class AuthenticationError(EachlabsError):
    """The API key is missing, invalid (401) or not allowed to see the workflow (403), or a
    proxy refused its credentials (407)."""


class WorkflowNotFoundError(EachlabsError):
    """HTTP 404: the workflow id or slug does not exist for this key."""


class StorageError(EachlabsError):
    """The output cannot be read or written: its message names the path and the reason.

    ``corrupt``: the file is there but is not what it should be (truncated, not Parquet),
    as opposed to a file system that failed (permissions, a full disk, a network error).
    """

    def __init__(
        self, message: str, *, path: str | None = None, corrupt: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.path = path
        self.corrupt = corrupt


class SchemaMismatchError(EachlabsError):
    """An existing dataset file stores a column with a type this package does not write."""


class APIError(EachlabsError):
    """The API answered with an unexpected error status, or a retryable failure persisted."""


class BadRequestError(APIError, InvalidRequestError):
    """HTTP 400: the API refused a request that was sent (an ``InvalidRequestError`` too)."""


class RateLimitError(APIError):
    """HTTP 429: an account concurrency cap; ``retry_after`` is the server's hint in seconds."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(APIError):
    """HTTP 500/502/503/504: server or gateway trouble, usually transient."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class TransportError(APIError):
    """The exchange failed below HTTP semantics: timeout, refused or dropped connection."""

    retryable = True


class InvalidResponseError(TransportError):
    """A success status whose body is not the expected JSON (HTML, truncated, wrong shape)."""


class TLSError(TransportError):
    """The server's certificate cannot be trusted, or TLS itself failed: retrying cannot help."""

    retryable = False


class PaginationError(APIError):
    """Paging cannot make progress: the server keeps returning full pages of rows already seen."""


def describe_location(workflow_id: str | None, offset: int | None) -> str:
    """``workflow 'x' at offset 200``: the prefix every request-level message starts with."""
    parts = []
    if workflow_id is not None:
        parts.append(f"workflow {workflow_id!r}")
    if offset is not None:
        parts.append(f"at offset {offset}")
    return " ".join(parts) or "request"


class EachlabsWarning(UserWarning):
    """Base class of the warnings eachlabs_loader emits about the data it loads."""


class UnparseableTimestampWarning(EachlabsWarning):
    """Some timestamp values could not be parsed and became NaT."""
