"""A page request over an in-memory list, shaped like ``transport.Request`` (no sockets).

With ``eager``, it is served when it is sent, as a server would serve it, and read later;
otherwise when its answer is first asked for (so a request dropped unread costs nothing,
and tests can count the pages a scan reads). ``log`` records every step.
"""

from __future__ import annotations

from collections.abc import Callable

from eachlabs_loader import Page


class ServedRequest:
    def __init__(
        self,
        fetch_page: Callable[[int], Page],
        offset: int,
        log: list[str],
        fail: int = 0,
        eager: bool = False,
    ) -> None:
        self.offset, self.log, self.fail, self.eager = offset, log, fail, eager
        self._fetch_page = fetch_page
        self.page: Page | None = None
        self.sent = False

    def send(self, *, early: bool = False) -> ServedRequest:
        if not self.sent:
            self.sent = True
            self.log.append(f"send {self.offset}")
            if self.eager:
                self.page = self._fetch_page(self.offset)
        return self

    def wait(self) -> bool:
        self.log.append(f"wait {self.offset}")
        if self.sent and self.page is None:
            self.page = self._fetch_page(self.offset)
        return self.page is not None

    def parsed(self) -> Page | None:
        if not self.wait() or self.fail:  # an answer that turns out unusable: result() retries
            return None
        self.log.append(f"parsed {self.offset}")
        return self.page

    def result(self) -> Page:
        if self.page is None:
            self.log.append(f"fetch {self.offset}")
            self.page = self._fetch_page(self.offset)
        while self.fail:  # answers that turn out unusable once parsed: retried
            self.fail -= 1
            self.page = self._fetch_page(self.offset)
            self.log.append(f"retry {self.offset}")
        self.log.append(f"read {self.offset}")
        return self.page

    def cancel(self) -> None:
        self.log.append(f"cancel {self.offset}")


def requests_from(
    fetch_page: Callable[[int], Page],
    log: list[str] | None = None,
    fail_at: int | None = None,
    eager: bool = False,
) -> Callable[[int], ServedRequest]:
    """A scan's ``request_page`` over a ``fetch_page(offset) -> Page`` function."""
    steps: list[str] = [] if log is None else log

    def request_page(offset: int) -> ServedRequest:
        fail = 1 if offset == fail_at else 0
        return ServedRequest(fetch_page, offset, steps, fail=fail, eager=eager)

    return request_page
