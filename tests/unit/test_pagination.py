"""Paging arithmetic and stop rules, against an in-memory list (no sockets)."""

from __future__ import annotations

import pytest
from fakes import requests_from

from eachlabs_loader import InvalidResponseError, Page, PaginationError
from eachlabs_loader.pagination import (
    MAX_STALE_PAGES,
    is_last_page,
    next_offset,
    parse_executions_page,
)
from eachlabs_loader.sequential import iter_pages


class LiveList:
    """A newest-first list that can grow at the head between requests."""

    def __init__(
        self,
        n: int,
        *,
        inserts_per_request: int = 0,
        reported_total: int | None = None,
        server_page_size: int | None = None,
        report_limit: bool = False,
    ):
        self.n = n
        self.inserts = inserts_per_request
        self.reported_total = reported_total
        self.server_page_size = server_page_size
        self.report_limit = report_limit
        self.offsets: list[int] = []

    def fetch(self, limit: int):
        def fetch_page(offset: int) -> Page:
            self.offsets.append(offset)
            self.n += self.inserts
            served = min(limit, self.server_page_size or limit)
            top = self.n - 1 - offset
            ids = [f"e{k}" for k in range(top, max(top - served, -1), -1)]
            total = self.n if self.reported_total is None else self.reported_total
            applied = served if self.report_limit else None
            return Page.from_rows(offset, limit, [{"execution_id": i} for i in ids], total, applied)

        return fetch_page


def collect(pages) -> list[str]:
    return [row["execution_id"] for page in pages for row in page.rows]


def test_next_offset_is_offset_sent_plus_rows_received():
    assert next_offset(0, 100) == 100
    assert next_offset(250, 37) == 287


@pytest.mark.parametrize(
    ("rows", "limit", "last"), [(0, 10, True), (9, 10, True), (10, 10, False), (12, 10, False)]
)
def test_short_or_empty_page_is_last(rows, limit, last):
    assert is_last_page(rows, limit) is last


@pytest.mark.parametrize("n", [0, 1, 9, 10, 11, 25])
def test_every_row_once_and_one_request_per_page(n):
    source = LiveList(n)
    ids = collect(iter_pages(requests_from(source.fetch(10)), limit=10))
    assert ids == [f"e{k}" for k in range(n - 1, -1, -1)]
    assert source.offsets == list(range(0, n // 10 * 10 + 1, 10))


def test_total_count_does_not_end_the_scan_when_capped():
    source = LiveList(35, reported_total=20)
    ids = collect(iter_pages(requests_from(source.fetch(10)), limit=10))
    assert len(ids) == 35


def test_head_inserts_give_duplicates_never_holes():
    source = LiveList(50, inserts_per_request=3)
    ids = collect(iter_pages(requests_from(source.fetch(10)), limit=10))
    assert {f"e{k}" for k in range(50)} <= set(ids)
    assert len(ids) > len(set(ids))  # the shift repeats rows: de-duplication is needed


def test_more_rows_than_limit_advance_by_rows_received():
    pages = iter(
        [
            Page.from_rows(
                0, 2, [{"execution_id": "a"}, {"execution_id": "b"}, {"execution_id": "c"}], None
            ),
            Page.from_rows(3, 2, [{"execution_id": "d"}], None),
        ]
    )
    offsets: list[int] = []

    def fetch(offset: int) -> Page:
        offsets.append(offset)
        return next(pages)

    assert collect(iter_pages(requests_from(fetch), limit=2)) == ["a", "b", "c", "d"]
    assert offsets == [0, 3]


def test_a_server_repeating_full_pages_raises_instead_of_looping():
    calls: list[int] = []

    def same_page(offset: int) -> Page:
        calls.append(offset)
        return Page.from_rows(offset, 2, [{"execution_id": "a"}, {"execution_id": "b"}], 2)

    with pytest.raises(PaginationError, match="workflow 'wf' at offset") as info:
        collect(iter_pages(requests_from(same_page), limit=2, workflow_id="wf"))
    assert len(calls) == MAX_STALE_PAGES + 1
    assert info.value.workflow_id == "wf"


def test_parse_accepts_both_response_variants():
    row = {"execution_id": "x"}
    seed = parse_executions_page(
        {"executions": [row], "offset": 1, "total_count": 9}, offset=0, limit=5
    )
    vendor = parse_executions_page(
        {"executions": [row], "limit": 5, "total_count": 9}, offset=0, limit=5
    )
    assert seed == Page.from_rows(0, 5, [row], 9)
    assert vendor == Page.from_rows(0, 5, [row], 9, applied_limit=5)


def test_parse_treats_null_executions_as_empty_and_drops_bad_totals():
    assert parse_executions_page({"executions": None}, offset=0, limit=5).rows == []
    for total in (-1, "12", None, True, 1.5):
        page = parse_executions_page({"executions": [], "total_count": total}, offset=0, limit=5)
        assert page.total_count is None


@pytest.mark.parametrize(
    "body",
    [
        [],
        "html",
        {"data": []},
        {"executions": {"a": 1}},
        {"executions": [1]},
        {"executions": [{"flow_id": "f"}]},
        {"executions": [{"execution_id": ""}]},
        {"executions": [{"execution_id": 7}]},
    ],
)
def test_parse_rejects_wrong_shapes(body):
    with pytest.raises(InvalidResponseError):
        parse_executions_page(body, offset=0, limit=5)


def test_a_server_with_smaller_pages_is_read_to_the_end_via_its_limit():
    source = LiveList(95, server_page_size=30, report_limit=True, reported_total=None)
    assert collect(iter_pages(requests_from(source.fetch(100)), limit=100)) == [
        f"e{k}" for k in range(94, -1, -1)
    ]
    assert source.offsets == [0, 30, 60, 90]


def test_a_server_with_smaller_pages_is_read_to_the_end_via_its_total():
    source = LiveList(95, server_page_size=30)
    assert len(collect(iter_pages(requests_from(source.fetch(100)), limit=100))) == 95
    assert source.offsets == [0, 30, 60, 90]


def test_an_inflated_total_costs_one_request_and_no_rows():
    source = LiveList(25, reported_total=1000)
    assert len(collect(iter_pages(requests_from(source.fetch(10)), limit=10))) == 25
    assert source.offsets == [0, 10, 20, 25]


def test_a_short_page_agreeing_with_every_hint_ends_the_scan():
    source = LiveList(25, server_page_size=None, report_limit=True)
    collect(iter_pages(requests_from(source.fetch(10)), limit=10))
    assert source.offsets == [0, 10, 20]


def test_an_inflated_total_buys_one_request_and_a_page_of_nothing_new_ends_the_scan():
    calls: list[int] = []

    def same_short_page(offset: int) -> Page:
        calls.append(offset)
        return Page.from_rows(offset, 10, [{"execution_id": "a"}], 100)

    assert collect(iter_pages(requests_from(same_short_page), limit=10)) == ["a", "a"]
    assert calls == [0, 1]


def test_a_short_page_followed_by_more_teaches_the_host_page_size():
    """A host serving 20 rows per page, with a total_count capped at 50 and no `limit`."""
    source = LiveList(230, server_page_size=20, reported_total=50)
    assert collect(iter_pages(requests_from(source.fetch(100)), limit=100)) == [
        f"e{k}" for k in range(229, -1, -1)
    ]
    assert source.offsets == list(range(0, 240, 20))


def test_at_the_tail_inserts_and_an_inflated_total_do_not_stall():
    source = LiveList(95, inserts_per_request=3, reported_total=10_000)
    ids = collect(iter_pages(requests_from(source.fetch(10)), limit=10))
    assert {f"e{k}" for k in range(95)} <= set(ids)


# -- sending ahead: requests go out early, still one at a time and strictly in order -----------


def sending_ahead(live: LiveList, limit: int, fail_at: int | None = None):
    log: list[str] = []
    request_page = requests_from(live.fetch(limit), log, fail_at=fail_at, eager=True)
    return iter_pages(request_page, limit=limit), log


def test_the_page_after_next_is_asked_for_once_this_answer_is_in_before_it_is_decoded():
    live = LiveList(35)
    pages, log = sending_ahead(live, 10)
    assert collect(pages) == [f"e{k}" for k in range(34, -1, -1)]
    assert log == [
        "fetch 0", "read 0", "send 10",            # page 0 in hand, page 10 on its way
        "wait 10", "send 20", "read 10",           # 10 arrived: 20 guessed before decoding
        "wait 20", "send 30", "read 20",
        "wait 30", "read 30",                      # 40 is past total_count: no guess
    ]  # fmt: skip
    assert live.offsets == [0, 10, 20, 30]  # one request at a time, in order


def test_a_wrong_guess_is_dropped_and_the_right_page_fetched():
    live = LiveList(35, reported_total=1_000)  # a count that says more rows exist
    pages, log = sending_ahead(live, 10)
    assert collect(pages) == [f"e{k}" for k in range(34, -1, -1)]
    assert log[-7:] == [
        "wait 30", "send 40", "read 30",  # 30 came short (5 rows): 40 was a wrong guess
        "cancel 40", "send 35",           # dropped unread; the next page starts at 35
        "wait 35", "read 35",             # empty: the end
    ]  # fmt: skip


def test_a_retry_keeps_the_guess_and_stopping_early_drops_what_is_on_its_way():
    live = LiveList(50)
    pages, log = sending_ahead(live, 10, fail_at=20)
    assert collect(pages) == [f"e{k}" for k in range(49, -1, -1)]
    assert log[log.index("wait 20") :][:6] == [
        "wait 20", "send 30",   # the answer for 20 is in: 30 guessed
        "retry 20", "read 20",  # 20's body turns out unusable: retried, the guess still good
        "wait 30", "send 40",   # and read, with no request sent twice
    ]  # fmt: skip
    assert live.offsets == [0, 10, 20, 30, 20, 40, 50]  # 50: the empty end
    live = LiveList(50)
    pages, log = sending_ahead(live, 10)
    next(pages)
    pages.close()
    assert log == ["fetch 0", "read 0", "send 10", "cancel 10"]
