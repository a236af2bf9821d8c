"""Many scans into one consumer: arrival order, failures, closing early, batched rows."""

from __future__ import annotations

import threading
import time

import pytest

from eachlabs_loader import ServerError
from eachlabs_loader.pipeline import Finished, PageFeed, Piece, RowBatch, inline_events


def pages_of(source, count=3, delay_s=0.0):
    for n in range(count):
        time.sleep(delay_s)
        yield {"execution_id": [f"{source}-{n}"], "status": ["completed"]}


def test_every_piece_comes_before_its_sources_finish_and_each_source_finishes_once():
    feed = PageFeed(iter("abcde"), lambda s: pages_of(s, delay_s=0.001), workers=3)
    try:
        events = list(feed.events())
    finally:
        feed.close()
    for source in "abcde":
        mine = [e for e in events if e.source == source]
        assert [type(e) for e in mine] == [Piece, Piece, Piece, Finished]
        assert [e.columns["execution_id"][0] for e in mine[:3]] == [
            f"{source}-{n}" for n in range(3)
        ]
    assert all(e.error is None for e in events if isinstance(e, Finished))


def test_a_failing_scan_is_its_own_finished_event_and_the_others_go_on():
    def scan(source):
        yield from pages_of(source, count=1)
        if source == "bad":
            raise ServerError("HTTP 503", status_code=503)
        yield from pages_of(source, count=1)

    feed = PageFeed(iter(["ok", "bad", "fine"]), scan, workers=2)
    try:
        finished = {e.source: e.error for e in feed.events() if isinstance(e, Finished)}
    finally:
        feed.close()
    assert finished["ok"] is None and finished["fine"] is None
    assert isinstance(finished["bad"], ServerError)


def test_a_failing_listing_ends_the_feed_with_its_error():
    def listing():
        yield "first"
        raise ServerError("the workflows list failed", status_code=500)

    feed = PageFeed(listing(), lambda s: pages_of(s, delay_s=0.01), workers=2)
    try:
        with pytest.raises(ServerError, match="workflows list"):
            list(feed.events())
    finally:
        feed.close()


def test_scans_start_while_the_listing_is_still_going():
    listed_last = threading.Event()
    started = []

    def listing():
        yield "early"
        assert listed_last.wait(5), "the first scan never started"
        yield "late"

    def scan(source):
        started.append(source)
        if source == "early":
            listed_last.set()
        yield from pages_of(source, count=1)

    feed = PageFeed(listing(), scan, workers=2)
    try:
        list(feed.events())
    finally:
        feed.close()
    assert started == ["early", "late"]


def test_closing_early_stops_scans_blocked_on_a_full_queue():
    started, stopped = [], []

    def endless(source):
        started.append(source)
        try:
            n = 0
            while True:
                n += 1
                yield {"execution_id": [f"{source}-{n}"]}
        finally:
            stopped.append(source)  # its requests would be dropped here

    feed = PageFeed(iter("xy"), endless, workers=2, max_queued=4)
    events = feed.events()
    while {e.source for e in [next(events)]} != {"y"}:
        pass  # until both scans run (and wait on the full queue)
    closing = time.monotonic()
    feed.close()
    assert time.monotonic() - closing < 5
    assert sorted(stopped) == sorted(started) == ["x", "y"]


def test_the_queue_bounds_what_scans_run_ahead():
    produced = []

    def scan(source):
        for n in range(100):
            produced.append(n)
            yield {"execution_id": [f"{source}-{n}"]}

    feed = PageFeed(iter(["only"]), scan, workers=1, max_queued=5)
    events = feed.events()
    next(events)
    time.sleep(0.2)
    assert len(produced) <= 7  # the queue's 5, the one taken, the one waiting to go in
    feed.close()


def test_inline_events_turn_an_error_into_the_sources_finished_event():
    def scan(source):
        yield from pages_of(source, count=2)
        raise ServerError("gone", status_code=502)

    events = list(inline_events("w", scan))
    assert [type(e) for e in events] == [Piece, Piece, Finished]
    assert isinstance(events[-1].error, ServerError)


def test_a_batch_keeps_each_sources_rows_together_in_order_and_says_where():
    batch = RowBatch()
    batch.add("a", {"execution_id": ["a1", "a2"], "status": ["running", "completed"]})
    batch.add("b", {"execution_id": ["b1"], "extra": [{"k": 1}]})
    batch.add("a", {"execution_id": ["a3"], "created_at": ["2025-01-01T00:00:00Z"]})
    assert len(batch) == 4
    table, ranges = batch.take()
    assert table["execution_id"].to_pylist() == ["a1", "a2", "a3", "b1"]
    assert ranges == [("a", 0, 3), ("b", 3, 4)]
    assert table["extra"].to_pylist() == [None, None, None, '{"k":1}']
    assert table["status"].to_pylist() == ["running", "completed", None, None]
    assert len(batch) == 0 and batch.take()[1] == []


def test_a_batch_counts_the_timestamps_it_could_not_read_and_fills_the_bulk():
    batch = RowBatch(bulk_id="b0000000-0000-4000-8000-000000000001")
    batch.add("a", {"execution_id": ["x", "y"], "created_at": ["not a time", "2025-01-01"]})
    table, _ = batch.take()
    assert batch.unparseable == {"created_at": 1}
    assert set(table["bulk_id"].to_pylist()) == {"b0000000-0000-4000-8000-000000000001"}


def test_an_unexpected_error_in_a_scan_fails_the_whole_feed():
    def scan(source):
        yield from pages_of(source, count=1)
        if source == "buggy":
            raise KeyError("a bug of ours, not the API's")

    feed = PageFeed(iter(["buggy", "other"]), scan, workers=2)
    seen = []
    try:
        with pytest.raises(KeyError):
            for event in feed.events():
                seen.append(event)
    finally:
        feed.close()
    assert not any(isinstance(e, Finished) and e.source == "buggy" for e in seen)
