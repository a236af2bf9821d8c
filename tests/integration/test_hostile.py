"""Hostile input: a clear, typed error before any request, or correct handling where valid.

The sandbox's request log proves what was (not) sent.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from eachlabs_loader import (
    AuthenticationError,
    InvalidRequestError,
    WorkflowNotFoundError,
    load_executions,
)

REJECTED = {
    "workflow id empty": {"workflow_id": ""},
    "workflow id blank": {"workflow_id": "   "},
    "workflow id ..": {"workflow_id": ".."},
    "workflow id .": {"workflow_id": "."},
    "workflow id with NUL": {"workflow_id": "wf\x00x"},
    "workflow id with newline": {"workflow_id": "wf\nGET /admin"},
    "workflow id with DEL": {"workflow_id": "wf\x7f"},
    "workflow id 257 chars": {"workflow_id": "w" * 257},
    "workflow id not a string": {"workflow_id": 12345},
    "workflow id None": {"workflow_id": None},
    "bulk_id malformed": {"bulk_id": "not-a-uuid"},
    "bulk_id without dashes": {"bulk_id": "123e4567e89b12d3a456426614174000"},
    "bulk_id with braces": {"bulk_id": "{123e4567-e89b-12d3-a456-426614174000}"},
    "bulk_id a number": {"bulk_id": 7},
    "page_size 0": {"page_size": 0},
    "page_size 101": {"page_size": 101},
    "page_size -1": {"page_size": -1},
    "page_size a string": {"page_size": "50"},
    "page_size a float": {"page_size": 50.0},
    "page_size True": {"page_size": True},
    "base_url without scheme": {"base_url": "workflows.eachlabs.run/api/v1"},
    "base_url with a query": {"base_url": "https://workflows.eachlabs.run/api/v1?x=1"},
    "base_url with credentials": {"base_url": "https://user:pw@workflows.eachlabs.run/api/v1"},
    "base_url ftp": {"base_url": "ftp://workflows.eachlabs.run/api/v1"},
    "base_url plain http remote": {"base_url": "http://workflows.eachlabs.run/api/v1"},
    "timeout 0": {"timeout": 0},
    "timeout negative": {"timeout": -1},
    "timeout pair with 0": {"timeout": (5, 0)},
    "max_retries negative": {"max_retries": -1},
    "concurrency 0": {"concurrency": 0},
}


@pytest.mark.parametrize("case", REJECTED)
def test_rejected_before_any_request(sandbox, case):
    args = {
        "workflow_id": sandbox.workflows[0].slug,
        "api_key": sandbox.api_key,
        "base_url": sandbox.base_url,
    }
    args.update(REJECTED[case])
    with pytest.raises(InvalidRequestError):
        load_executions(**args)
    assert sandbox.requests == []


def test_a_missing_key_is_an_authentication_error_before_any_request(sandbox):
    with pytest.raises(AuthenticationError, match="EACHLABS_API_KEY"):
        load_executions(sandbox.workflows[0].slug, base_url=sandbox.base_url)
    assert sandbox.requests == []


@pytest.mark.parametrize(
    "workflow_id",
    ["a/b", "../../etc/passwd", "%2F%2E%2E", "with space", "ünïcødé-流程", "x" * 256, "a?b=c#d"],
)
def test_odd_but_valid_workflow_ids_travel_as_one_encoded_segment(sandbox, workflow_id):
    with pytest.raises(WorkflowNotFoundError):
        load_executions(workflow_id, base_url=sandbox.base_url, api_key=sandbox.api_key)
    (request,) = sandbox.requests
    assert (
        request.path.split("?")[0] == f"/api/v1/workflows/{quote(workflow_id, safe='')}/executions"
    )
    assert request.workflow == workflow_id


def test_bulk_id_in_upper_case_is_sent_canonical(sandbox):
    bulk = "B0000000-0000-4000-8000-000000000001"
    frame = load_executions(
        sandbox.workflows[0].slug, bulk, base_url=sandbox.base_url, api_key=sandbox.api_key
    )
    assert {r.query["bulk_id"] for r in sandbox.requests} == {bulk.lower()}
    assert len(frame) == 20 and set(frame["bulk_id"]) == {bulk.lower()}


@pytest.mark.parametrize("suffix", ["/", "//"])
def test_base_url_with_trailing_slashes(sandbox, suffix):
    frame = load_executions(
        sandbox.workflows[0].slug, base_url=sandbox.base_url + suffix, api_key=sandbox.api_key
    )
    assert len(frame) == 250
    assert all(r.path.startswith("/api/v1/workflows/") for r in sandbox.requests)
