"""The concurrent scan against an in-memory live list (threads, no sockets)."""

from __future__ import annotations

import itertools
import random
import threading
import time

import pytest
from fakes import requests_from

from eachlabs_loader import Page, PaginationError
from eachlabs_loader.overlap import MOVEMENT_MARGIN, Overlap
from eachlabs_loader.parallel import ConcurrentScan


class LiveList:
    """Newest first; ``inserts`` new rows arrive at the head before each request is served.

    ``jitter_s`` delays each answer randomly, so pages come back out of order.
    """

    def __init__(self, n: int, *, inserts: int = 0, jitter_s: float = 0.0, seed: int = 0):
        self.n, self.inserts, self.jitter_s = n, inserts, jitter_s
        self.initial = {f"e{k}" for k in range(n)}
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.requests = 0

    def fetch(self, limit: int):
        def fetch_page(offset: int) -> Page:
            with self.lock:
                self.requests += 1
                delay = self.rng.uniform(0, self.jitter_s)
            time.sleep(delay)
            with self.lock:
                self.n += self.inserts
                top = self.n - 1 - offset
                ids = [f"e{k}" for k in range(top, max(top - limit, -1), -1)]
                total = self.n
            return Page.from_rows(offset, limit, [{"execution_id": i} for i in ids], total)

        return fetch_page


def ids_of(scan) -> list[str]:
    return [i for page in scan for i in page.ids]


@pytest.mark.parametrize("n", [0, 1, 19, 20, 21, 137, 1000])
@pytest.mark.parametrize("concurrency", [1, 2, 8])
def test_a_still_list_is_read_whole(n, concurrency):
    source = LiveList(n)
    scan = ConcurrentScan(
        requests_from(source.fetch(20)), limit=20, concurrency=concurrency, min_round_trip_s=0
    )
    assert set(ids_of(scan)) == source.initial
    assert scan.stats.pages_refetched == 0


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("concurrency", "inserts"), [(4, 1), (8, 3), (16, 3), (8, 10)])
def test_inserts_while_paging_lose_nothing(seed, concurrency, inserts):
    source = LiveList(2000, inserts=inserts, jitter_s=0.003, seed=seed)
    scan = ConcurrentScan(
        requests_from(source.fetch(50)), limit=50, concurrency=concurrency, min_round_trip_s=0
    )
    seen = ids_of(scan)
    assert source.initial <= set(seen)
    assert scan.stats.total_count_start < scan.stats.total_count_end


class ChurningList:
    """Newest first; before each request is served, ``inserts`` rows arrive at the head and
    ``deletes`` rows anywhere are deleted (rows move down and up between pages)."""

    def __init__(self, n: int, *, inserts: int, deletes: int, seed: int = 0):
        self.rows = [f"e{k}" for k in range(n - 1, -1, -1)]
        self.initial, self.deleted = set(self.rows), set()
        self.inserts, self.deletes, self.next_id = inserts, deletes, n
        self.lock = threading.Lock()
        self.rng = random.Random(seed)

    def fetch(self, limit: int):
        def fetch_page(offset: int) -> Page:
            with self.lock:
                delay = self.rng.uniform(0, 0.003)
            time.sleep(delay)
            with self.lock:
                first, self.next_id = self.next_id, self.next_id + self.inserts
                self.rows[:0] = [f"e{k}" for k in range(self.next_id - 1, first - 1, -1)]
                for _ in range(min(self.deletes, len(self.rows))):
                    self.deleted.add(self.rows.pop(self.rng.randrange(len(self.rows))))
                ids, total = self.rows[offset : offset + limit], len(self.rows)
            return Page.from_rows(offset, limit, [{"execution_id": i} for i in ids], total)

        return fetch_page


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("inserts", "deletes"), [(0, 2), (3, 3), (3, 1), (1, 4)])
def test_deletions_while_paging_lose_no_row_that_stayed(seed, inserts, deletes):
    # Deletions move rows up, so totals understate the inserts and a bridge's first page can
    # land past the hole: the bridge steps back. Every row there from start to end is read.
    source = ChurningList(1500, inserts=inserts, deletes=deletes, seed=seed)
    scan = ConcurrentScan(
        requests_from(source.fetch(50)), limit=50, concurrency=8, min_round_trip_s=0
    )
    seen = set(ids_of(scan))
    assert source.initial - source.deleted <= seen
    assert scan.stats.gaps_repaired > 0


def test_a_hole_found_far_behind_the_pool_is_bridged_down_not_walked_up_to_the_head():
    # A busy consumer finds a hole while the pool, far ahead, has grown the list by more
    # than the answers counted so far show: the bridge's first page lands above the hole.
    # It is aimed again by its own total (one request more), instead of stepping back page
    # by page up to the head and re-reading everything from there.
    source = LiveList(2000)
    fetch = source.fetch(50)
    offsets: list[int] = []

    def logged(offset: int) -> Page:
        offsets.append(offset)
        return fetch(offset)

    scan = ConcurrentScan(requests_from(logged), limit=50, concurrency=8, min_round_trip_s=0)
    prev = scan._count(fetch(500))  # e1499..e1450; the last total counted: 2,000
    source.n += 300  # inserts no counted answer has shown yet
    target = fetch(860)  # e1439..e1390: ten rows (e1449..e1440) between the two
    bridged = [i for page in scan._bridge(prev, target) for i in page.ids]
    assert {f"e{k}" for k in range(1440, 1450)} <= set(bridged)
    assert len(offsets) == 2 and min(offsets) > prev.offset


@pytest.mark.parametrize("cap", [500, 2100])
def test_a_capped_count_cannot_aim_a_bridge_which_steps_back_and_closes_the_hole(cap):
    # Capped totals cannot place a page: at 500 they never move; at 2,100 they show 100 of
    # the 300 new rows, so an aim down falls short and the next page steps back. Either way
    # the bridge goes up only once it has stepped back (to the head at worst), never to and
    # fro until it gives up.
    source = LiveList(2000)
    fetch = source.fetch(50)
    offsets: list[int] = []

    def capped(offset: int) -> Page:
        offsets.append(offset)
        page = fetch(offset)
        return Page(page.offset, page.limit, page.columns, min(cap, source.n))

    scan = ConcurrentScan(requests_from(capped), limit=50, concurrency=8, min_round_trip_s=0)
    prev = scan._count(capped(500))
    source.n += 300
    target = capped(860)
    del offsets[:]
    bridged = [i for page in scan._bridge(prev, target) for i in page.ids]
    assert {f"e{k}" for k in range(1440, 1450)} <= set(bridged)
    back = next(n for n in range(1, len(offsets)) if offsets[n] < offsets[n - 1])
    head = offsets.index(0)
    assert offsets[back - 1 : head + 1] == sorted(offsets[back - 1 : head + 1], reverse=True)


def test_without_the_check_the_same_scan_loses_rows():
    """The scenario is real: trusting the planned offsets drops rows."""
    lost = 0
    for seed in range(5):
        source = LiveList(2000, inserts=30, jitter_s=0.003, seed=seed)
        fetch = source.fetch(50)
        first = fetch(0)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            pages = list(pool.map(fetch, range(50, first.total_count + 200, 50)))
        seen = set(first.ids).union(*(p.ids for p in pages))
        lost += len(source.initial - seen)
    assert lost > 0


def test_repairs_are_counted():
    source = LiveList(2000, inserts=10, jitter_s=0.003, seed=1)
    scan = ConcurrentScan(
        requests_from(source.fetch(50)), limit=50, concurrency=8, min_round_trip_s=0
    )
    ids_of(scan)
    assert scan.stats.gaps_repaired > 0 and scan.stats.pages_refetched >= scan.stats.gaps_repaired
    assert scan.stats.pages == source.requests


def test_a_server_repeating_one_page_ends_in_an_error():
    def same(offset: int) -> Page:
        return Page.from_rows(offset, 10, [{"execution_id": f"e{k}"} for k in range(10)], None)

    with pytest.raises(PaginationError):
        ids_of(ConcurrentScan(requests_from(same), limit=10, concurrency=4, min_round_trip_s=0))


def test_a_fast_api_is_paged_sequentially():
    source = LiveList(500)
    scan = ConcurrentScan(
        requests_from(source.fetch(50)), limit=50, concurrency=8, min_round_trip_s=10.0
    )
    assert set(ids_of(scan)) == source.initial
    assert scan.effective_concurrency == 1
    assert source.requests == 11  # no overlap: plain offsets 0, 50, ... 500


@pytest.mark.parametrize("slow_requests, pooled", [(1, False), (10**6, True)])
def test_a_slow_first_request_alone_does_not_switch_the_pool_on(slow_requests, pooled):
    # The first request also pays for the connection and the client's warm-up: the scan
    # times a second one before choosing threads over plain sequential paging.
    source = LiveList(1_000)
    fetch = source.fetch(50)
    calls = []

    def timed(offset: int) -> Page:
        calls.append(offset)
        if len(calls) <= slow_requests:
            time.sleep(0.02)
        return fetch(offset)

    scan = ConcurrentScan(requests_from(timed), limit=50, concurrency=8, min_round_trip_s=0.01)
    ids = ids_of(scan)
    assert set(ids) == {f"e{k}" for k in range(1_000)}
    assert (scan.effective_concurrency == 8) is pooled
    if not pooled:  # the probe overlapped page 1; after it, plain pages one by one
        assert calls[:3] == [0, 45, 95] and calls == sorted(calls)


def test_linked_pages_never_ask_ahead_even_for_pages_too_small_to_overlap():
    from fakes import requests_from

    source = LiveList(50)
    log: list[str] = []
    scan = ConcurrentScan(requests_from(source.fetch(5), log, eager=True), limit=5, concurrency=4)
    pages = scan.linked_pages()
    next(pages), next(pages)
    pages.close()
    assert source.requests == 2  # the first page (sent as it is asked for) and the second
    assert [step for step in log if step.startswith("send")] == ["send 0"]


def counted(total: int | None) -> Page:
    return Page.from_rows(0, 100, [{"execution_id": "e"}], total)


def test_the_overlap_follows_the_movement_the_answers_show():
    overlap = Overlap(100, concurrency=2)
    assert overlap.rows == 10  # cautious until answers show how the list moves
    for total in (500, 500, 500):
        overlap.observe(counted(total))
    assert (overlap.rows, overlap.stride) == (1, 99)  # standing still: one shared row
    for total in (504, 508, 512, 516):  # 4 new executions between answers
        overlap.observe(counted(total))
    assert overlap.rows == 1 + MOVEMENT_MARGIN * 4
    for total in (516, 516, 516, 516):
        overlap.observe(counted(total))
    assert overlap.rows == 1  # still again
    overlap.widen()  # a hole the counts did not explain
    assert overlap.rows == 10
    assert overlap.widest == 1 + MOVEMENT_MARGIN * 4  # the widest it has been


def test_the_overlap_is_cautious_without_counts_bounded_and_fixed_when_asked():
    uncounted = Overlap(100, concurrency=1)
    for total in (None, None, None):
        uncounted.observe(counted(total))
    assert uncounted.rows == 10
    racing = Overlap(100, concurrency=1)
    for total in (0, 500, 1000):
        racing.observe(counted(total))
    assert racing.rows == 50  # at most half a page, so pages still move on
    fixed = Overlap(100, concurrency=1, fixed=3)
    for total in (0, 500, 1000):
        fixed.observe(counted(total))
    assert fixed.rows == 3


def test_a_still_list_is_planned_with_one_shared_row():
    source, fixed = LiveList(20_000), LiveList(20_000)
    scan = ConcurrentScan(
        requests_from(source.fetch(100)), limit=100, concurrency=8, min_round_trip_s=0
    )
    assert set(ids_of(scan)) == source.initial
    fixed_scan = ConcurrentScan(
        requests_from(fixed.fetch(100)), limit=100, concurrency=8, overlap=10, min_round_trip_s=0
    )
    ids_of(fixed_scan)
    assert scan.overlap == 1 and scan.stats.overlap == 10  # 10 until the list showed still
    assert fixed.requests == 1 + 222  # page 0, then every 90 rows
    assert source.requests <= 1 + 16 + (20_000 - 17 * 90) // 99 + 2


def test_a_moving_list_is_planned_with_a_wider_overlap():
    source = LiveList(5_000, inserts=3, jitter_s=0.002, seed=0)
    scan = ConcurrentScan(
        requests_from(source.fetch(100)), limit=100, concurrency=8, min_round_trip_s=0
    )
    assert source.initial <= set(ids_of(scan))
    assert scan.overlap >= 1 + 2 * 3  # 3 new executions between any two answers


def test_a_thread_sends_its_next_request_before_it_decodes_its_answer():
    """A slot goes straight back on the wire: decoding (under the interpreter's lock)
    overlaps the next round trip instead of idling the slot."""
    source = LiveList(2000)
    events: list[tuple[str, str, int]] = []  # (thread, step, offset)
    lock = threading.Lock()
    served = requests_from(source.fetch(100), eager=True)

    class Traced:
        def __init__(self, offset: int) -> None:
            self.offset, self.inner = offset, served(offset)

        def step(self, name: str) -> None:
            with lock:
                events.append((threading.current_thread().name, name, self.offset))

        def send(self, *, early: bool = False):
            self.step("send")
            self.inner.send(early=early)
            return self

        def wait(self) -> bool:
            return self.inner.wait()

        def parsed(self):
            self.step("parsed")
            return self.inner.parsed()

        def result(self):
            self.step("result")
            return self.inner.result()

        def cancel(self) -> None:
            self.inner.cancel()

    scan = ConcurrentScan(Traced, limit=100, concurrency=4, min_round_trip_s=0)
    assert set(ids_of(scan)) == source.initial
    pooled = [e for e in events if e[0].startswith("eachlabs-page")]
    assert pooled and all(step != "result" for _, step, _ in pooled)  # decoded, never retried
    # Per thread: send a, send b, parsed a, send c, parsed b... A decode comes right after
    # the thread's next send, except when nothing was queued (at the end: once per thread).
    at_once = 0  # decodes right after the thread's own send: nothing else was queued
    for thread in {name for name, _, _ in pooled}:
        steps = [(step, offset) for name, step, offset in pooled if name == thread]
        at_once += sum(1 for a, b in itertools.pairwise(steps) if a == ("send", b[1]))
    assert at_once <= 4, pooled


def test_an_answer_that_does_not_decode_is_retried_by_the_consumer():
    source = LiveList(1000)
    log: list[str] = []
    scan = ConcurrentScan(
        requests_from(source.fetch(100), log, fail_at=450, eager=True),
        limit=100,
        concurrency=4,
        overlap=10,
        min_round_trip_s=0,
    )
    assert set(ids_of(scan)) == source.initial
    assert "retry 450" in log and "parsed 450" not in log
