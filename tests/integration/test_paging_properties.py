"""Paging, property-based: whatever the list, the hints and the faults, every id exactly once."""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from eachlabs_loader import EachlabsClient, RetryPolicy, fetch_executions, resolve_settings
from eachlabs_loader.sandbox import Sandbox

TRANSIENT = ["status", "drop", "truncated", "html", "empty", "missing_id", "extra_rows", "total"]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    rows=st.integers(min_value=0, max_value=300),
    page_size=st.integers(min_value=1, max_value=100),
    variant=st.sampled_from(["offset", "limit", "next_offset"]),
    cap=st.none() | st.integers(min_value=0, max_value=300),
    server_page=st.none() | st.integers(min_value=1, max_value=100),
    lying=st.booleans(),
    fault=st.none() | st.sampled_from(TRANSIENT),
    fault_after=st.integers(min_value=0, max_value=20),
    concurrency=st.sampled_from([1, 4]),
)
def test_every_execution_exactly_once(
    rows, page_size, variant, cap, server_page, lying, fault, fault_after, concurrency
):
    # A host paging in smaller steps than asked must say so (its `limit`) or its count must
    # say more rows exist: with neither, a short page is indistinguishable from the end of the
    # list. Lying hints never give the true `limit` (their count always says "more"); a
    # capped count, or the "total" fault that spoils the count of one page, takes it away.
    smaller = server_page is not None and server_page < page_size
    true_limit = variant == "limit" and not lying
    no_count = fault == "total" or (cap is not None and cap < rows and not lying)
    assume(not (smaller and not true_limit and no_count))
    assume(rows // page_size <= 120)  # keep each example quick
    with Sandbox(
        rows=rows,
        workflows=1,
        variant=variant,
        total_count_cap=cap,
        max_page_size=server_page,
        lying_hints=lying,
        latency_ms=6 if concurrency > 1 else 0,
    ) as sandbox:
        if fault is not None:
            extra = {"body": -1} if fault == "total" else {}
            sandbox.add_fault(fault, times=1, skip=fault_after, **extra)
        settings_ = resolve_settings(
            sandbox.api_key, sandbox.base_url, page_size=page_size, concurrency=concurrency
        )
        policy = RetryPolicy(max_retries=3, sleep=lambda seconds: None)
        with EachlabsClient(settings_, retry_policy=policy) as client:
            frame = fetch_executions(client, sandbox.workflows[0].slug)
        expected = sandbox.expected_ids(sandbox.workflows[0].slug)
    assert frame["execution_id"].is_unique
    assert set(frame["execution_id"]) == set(expected)
