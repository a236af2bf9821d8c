"""Concurrent paging over real HTTP: same rows as sequential, exact under inserts, polite
under rate limits."""

from __future__ import annotations

import pytest

from eachlabs_loader import LoadResult, load_executions


def load(sandbox, workflow_id, **kwargs):
    return load_executions(
        workflow_id, base_url=sandbox.base_url, api_key=sandbox.api_key, **kwargs
    )


# A latency above parallel.MIN_ROUND_TRIP_S keeps the pool on: a faster API is paged
# sequentially.
LATENCY_MS = 6


@pytest.mark.parametrize("rows", [0, 1, 99, 100, 101, 500])
@pytest.mark.parametrize("page_size", [7, 100])
@pytest.mark.parametrize("variant", ["offset", "limit"])
def test_concurrency_gives_the_rows_of_a_sequential_scan(make_sandbox, rows, page_size, variant):
    sandbox = make_sandbox(rows=rows, workflows=1, variant=variant, latency_ms=LATENCY_MS)
    slug = sandbox.workflows[0].slug
    sequential = load(sandbox, slug, page_size=page_size, concurrency=1)
    for concurrency in (2, 8):
        concurrent = load(sandbox, slug, page_size=page_size, concurrency=concurrency)
        assert concurrent["execution_id"].tolist() == sequential["execution_id"].tolist()
        assert concurrent.equals(sequential)
        assert concurrent.attrs["eachlabs"].pages_refetched == 0


def test_requests_really_run_in_parallel(make_sandbox):
    sandbox = make_sandbox(rows=2_000, workflows=1, latency_ms=50)
    load(sandbox, sandbox.workflows[0].slug, concurrency=8)
    times = sorted(r.time for r in sandbox.requests)
    overlapping = max(sum(1 for t in times if s <= t < s + 0.05) for s in times)
    assert overlapping >= 4  # several requests arrived within one latency period


@pytest.mark.parametrize("concurrency", [2, 4, 8, 16])
@pytest.mark.parametrize("inserts", [1, 3, 7])
def test_inserts_while_paging_every_execution_exactly_once(make_sandbox, concurrency, inserts):
    sandbox = make_sandbox(
        rows=3_000, workflows=1, inserts_per_request=inserts, latency_ms=LATENCY_MS
    )
    slug = sandbox.workflows[0].slug
    before = set(sandbox.expected_ids(slug))
    frame = load(sandbox, slug, concurrency=concurrency)
    after = set(sandbox.expected_ids(slug))
    ids = frame["execution_id"]
    assert ids.is_unique
    assert before <= set(ids), f"{len(before - set(ids))} executions missing"
    assert set(ids) <= after
    result: LoadResult = frame.attrs["eachlabs"]
    assert result.concurrency == concurrency
    assert result.total_count_start >= 3_000 and result.total_count_end > result.total_count_start
    assert result.rows_returned == len(frame)


def test_lake_mode_is_exact_under_inserts_too(make_sandbox, tmp_path):
    sandbox = make_sandbox(rows=3_000, workflows=1, inserts_per_request=3, latency_ms=LATENCY_MS)
    slug = sandbox.workflows[0].slug
    before = set(sandbox.expected_ids(slug))
    result = load(sandbox, slug, output=tmp_path, concurrency=8)
    import pyarrow.dataset as pads

    ids = pads.dataset(tmp_path, format="parquet", partitioning="hive").to_table()["execution_id"]
    assert len(ids) == len(set(ids.to_pylist())) == result.rows_inserted
    assert before <= set(ids.to_pylist())
    assert result.total_count_end > result.total_count_start


def test_a_fast_api_is_paged_sequentially_whatever_the_concurrency(make_sandbox, monkeypatch):
    from eachlabs_loader import parallel

    # What counts as "fast" is set high, so a cold first request cannot make this flaky.
    monkeypatch.setattr(parallel, "MIN_ROUND_TRIP_S", 1.0)
    sandbox = make_sandbox(rows=2_000, workflows=1, latency_ms=0)
    frame = load(sandbox, sandbox.workflows[0].slug, concurrency=8)
    assert frame["execution_id"].tolist() == sandbox.expected_ids(sandbox.workflows[0].slug)
    assert frame.attrs["eachlabs"].concurrency == 1
    assert [r.offset for r in sandbox.requests] == list(range(0, 2_001, 100))


def test_a_429_storm_shrinks_the_pool_and_still_completes(make_sandbox, caplog):
    sandbox = make_sandbox(rows=3_000, workflows=1, latency_ms=LATENCY_MS)
    slug = sandbox.workflows[0].slug
    for page in range(1, 13):  # a burst of 429s on the concurrent pages (stride 90)
        sandbox.add_fault("status", status=429, retry_after="0.2", offsets={90 * page}, times=1)
    with caplog.at_level("WARNING", logger="eachlabs_loader"):
        frame = load(sandbox, slug, concurrency=8)
    assert frame["execution_id"].tolist() == sandbox.expected_ids(slug)
    result = frame.attrs["eachlabs"]
    assert result.lowest_concurrency < 8
    assert result.retries >= 12
    messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("concurrency 8 -> 4" in m for m in messages)
    assert any(m.startswith("retry ") for m in messages)


def test_a_429_storm_with_bodies_that_do_not_decode_completes(make_sandbox):
    """Threads send their next request before decoding; a body that does not decode is
    retried by the consumer, so no thread ever waits for a slot while holding one, even
    when 429s have shrunk the pool to a slot or two."""
    sandbox = make_sandbox(rows=3_000, workflows=1, latency_ms=LATENCY_MS)
    slug = sandbox.workflows[0].slug
    for page in range(1, 9):
        sandbox.add_fault("status", status=429, retry_after="0.1", offsets={90 * page}, times=2)
    for page in range(9, 15):
        sandbox.add_fault("truncated", offsets={90 * page}, times=1)
    frame = load(sandbox, slug, concurrency=8)
    assert frame["execution_id"].tolist() == sandbox.expected_ids(slug)
    result = frame.attrs["eachlabs"]
    assert result.lowest_concurrency <= 2
    assert result.retries >= 16 + 6


def test_retry_after_pauses_the_whole_pool(make_sandbox):
    sandbox = make_sandbox(rows=3_000, workflows=1, latency_ms=20)
    slug = sandbox.workflows[0].slug
    sandbox.add_fault("status", status=429, retry_after="1", offsets={900}, times=1)
    load(sandbox, slug, concurrency=8)
    log = sorted(sandbox.requests, key=lambda r: r.time)
    limited = next(r for r in log if r.status == 429)
    # Requests already in flight may land just after the 429 (0.11 s on a loaded machine);
    # nothing new is sent in the pause.
    during = [r for r in log if limited.time + 0.25 < r.time < limited.time + 0.95]
    assert during == [], [(round(r.time - limited.time, 3), r.query, r.status) for r in during]
    assert any(r.time >= limited.time + 0.95 for r in log)


@pytest.mark.parametrize("concurrency", [1, 8])
@pytest.mark.parametrize(
    "knobs",
    [
        {"lying_hints": True, "inserts_per_request": 3},
        {"total_count_cap": 500, "max_page_size": 20, "variant": "next_offset"},
        {
            "total_count_cap": 500,
            "max_page_size": 20,
            "variant": "offset",
            "inserts_per_request": 3,
        },
        {"max_page_size": 10, "inserts_per_request": 1},
        {"max_page_size": 12},
    ],
    ids=[
        "lying+inserts",
        "cap+small-host-pages",
        "cap+small-pages+inserts",
        "host-10+inserts",
        "host-12",
    ],
)
def test_hostile_hints_and_host_page_sizes_stay_exact(make_sandbox, concurrency, knobs):
    sandbox = make_sandbox(rows=2_000, workflows=1, latency_ms=LATENCY_MS, **knobs)
    slug = sandbox.workflows[0].slug
    before = set(sandbox.expected_ids(slug))
    frame = load(
        sandbox, slug, concurrency=concurrency, page_size=50 if "lying_hints" in knobs else 100
    )
    ids = frame["execution_id"]
    assert ids.is_unique
    assert before <= set(ids) <= set(sandbox.expected_ids(slug))
    host = knobs.get("max_page_size")
    if host and not knobs.get("inserts_per_request"):
        assert len(sandbox.requests) <= 1.3 * 2_000 / host + 5  # no request storm
