"""Progress: a tqdm bar counting rows against ``total_count``, for people who wait.

``tqdm.auto`` renders as a widget in notebooks and as text in terminals. The bar is on by
default only where someone watches (a terminal on stderr, or a Jupyter kernel) and shows
counts, retries and waits — never a URL or a key.
"""

from __future__ import annotations

import sys
import threading
from types import TracebackType
from typing import Any

from tqdm.auto import tqdm


def is_interactive() -> bool:
    """A terminal on stderr, or a running IPython/Jupyter kernel."""
    if "ipykernel" in sys.modules:
        try:
            from IPython import get_ipython

            if get_ipython() is not None:
                return True
        except ImportError:  # pragma: no cover - ipykernel without IPython is not a thing
            pass
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class Progress:
    """One bar for one call: rows loaded of the executions announced so far.

    Args:
        enabled: True, False, or None for "only if interactive".
        description: the label in front of the bar.
    """

    def __init__(self, enabled: bool | None, description: str = "executions") -> None:
        self.enabled = is_interactive() if enabled is None else bool(enabled)
        self._lock = threading.Lock()
        self._retries = 0
        self._bar: Any = (
            tqdm(total=0, unit=" rows", desc=description, file=sys.stderr, leave=True)
            if self.enabled
            else None
        )

    def announce(self, rows: int | None) -> None:
        """A workflow's first page said ``rows`` executions exist: extend the total."""
        if self._bar is not None and rows:
            with self._lock:
                self._bar.total += rows
                self._bar.refresh()

    def advance(self, rows: int) -> None:
        if self._bar is not None and rows:
            with self._lock:
                self._bar.update(rows)

    def note_retry(self, exc: BaseException, wait_s: float) -> None:
        """Show that a request is being retried and for how long the load waits."""
        if self._bar is not None:
            with self._lock:
                self._retries += 1
                status = getattr(exc, "status_code", None)
                reason = f"HTTP {status}" if status else type(exc).__name__
                self._bar.set_postfix_str(
                    f"retries={self._retries}, waiting {wait_s:.1f}s after {reason}"
                )

    def close(self) -> None:
        if self._bar is not None:
            with self._lock:
                self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
