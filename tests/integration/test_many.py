"""Several workflows in one call: one DataFrame or one dataset, one concurrency limit."""

from __future__ import annotations

import pyarrow.dataset as pads
import pytest

from eachlabs_loader import WorkflowNotFoundError, load_executions


def load(sandbox, workflow_ids, **kwargs):
    return load_executions(
        workflow_ids, base_url=sandbox.base_url, api_key=sandbox.api_key, **kwargs
    )


def test_one_frame_for_several_workflows(sandbox):
    slugs = [w.slug for w in sandbox.workflows]
    frame = load(sandbox, slugs)
    expected = {i for slug in slugs for i in sandbox.expected_ids(slug)}
    assert set(frame["execution_id"]) == expected and frame["execution_id"].is_unique
    assert set(frame["flow_id"]) == {w.id for w in sandbox.workflows}
    result = frame.attrs["eachlabs"]
    assert set(result.workflows) == set(slugs) and result.failed == {}
    assert result.rows_returned == len(expected) == 750
    assert result.requests == len(sandbox.requests)


def test_one_dataset_for_several_workflows(sandbox, tmp_path):
    slugs = [w.slug for w in sandbox.workflows]
    result = load(sandbox, slugs, output=tmp_path)
    table = pads.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    assert set(table["workflow_id"].to_pylist()) == {w.id for w in sandbox.workflows}
    assert table.num_rows == result.rows_inserted == 750
    again = load(sandbox, slugs, output=tmp_path)
    assert again.rows_written == 0 and again.files_written == 0


def test_the_concurrency_limit_is_shared(make_sandbox):
    sandbox = make_sandbox(rows=600, workflows=3, latency_ms=30)
    load(sandbox, [w.slug for w in sandbox.workflows], concurrency=4)
    spans = [(r.time, r.finished) for r in sandbox.requests]
    in_flight = max(sum(1 for s, f in spans if s <= t < f) for t, _ in spans)
    assert 2 <= in_flight <= 4  # several workflows at once, never more than 4 requests


def test_a_failing_workflow_raises_by_default_naming_it(sandbox):
    with pytest.raises(WorkflowNotFoundError, match="'ghost-workflow'"):
        load(sandbox, [sandbox.workflows[0].slug, "ghost-workflow"])


def test_on_error_skip_returns_the_others_and_says_which_failed(sandbox, tmp_path):
    good = [sandbox.workflows[0].slug, sandbox.workflows[2].slug]
    frame = load(sandbox, [good[0], "ghost-workflow", good[1]], on_error="skip")
    assert set(frame["execution_id"]) == set(sandbox.expected_ids(good[0])) | set(
        sandbox.expected_ids(good[1])
    )
    result = frame.attrs["eachlabs"]
    assert list(result.failed) == ["ghost-workflow"]
    assert "HTTP 404" in result.failed["ghost-workflow"]
    assert isinstance(result.errors["ghost-workflow"], WorkflowNotFoundError)
    assert "FAILED" in repr(result)
    lake = load(sandbox, [good[0], "ghost-workflow"], on_error="skip", output=tmp_path)
    assert lake.rows_inserted == 250 and list(lake.failed) == ["ghost-workflow"]


def test_skip_leaves_out_the_rows_a_failed_workflow_sent_before_it_failed(make_sandbox):
    sandbox = make_sandbox(rows=300, workflows=3)
    bad = sandbox.workflows[1]
    # Its first page goes through, every later one is refused (HTTP 400: not retried).
    sandbox.add_fault("status", status=400, workflow=bad.slug, skip=1, times=None)
    frame = load(sandbox, [w.slug for w in sandbox.workflows], on_error="skip")
    good = [sandbox.workflows[0], sandbox.workflows[2]]
    assert set(frame["flow_id"]) == {w.id for w in good}
    assert set(frame["execution_id"]) == {i for w in good for i in sandbox.expected_ids(w.id)}
    result = frame.attrs["eachlabs"]
    assert result.rows_returned == 600 and list(result.failed) == [bad.slug]
    assert next(r.status for r in sandbox.requests if r.workflow == bad.slug) == 200


def test_a_single_workflow_raises_its_failure_whatever_on_error_says(sandbox):
    with pytest.raises(WorkflowNotFoundError, match="'ghost-workflow'"):
        load(sandbox, ["ghost-workflow"], on_error="skip")
