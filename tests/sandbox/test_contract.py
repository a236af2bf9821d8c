"""The sandbox matches shared/eachlabs-api.md point by point (raw HTTP, not our client)."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
import requests

from eachlabs_loader.sandbox import Sandbox

REQUIRED = {"execution_id", "flow_id", "flow_name", "version_id", "status", "created_at"}


def get(sandbox: Sandbox, workflow: str, *, prefix: str = "/api/v1", headers=None, **params):
    headers = {"X-API-Key": sandbox.api_key} if headers is None else headers
    url = f"{sandbox.origin}{prefix}/workflows/{workflow}/executions"
    return requests.get(url, params=params, headers=headers, timeout=5)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": "sandbox"}],
)
def test_missing_or_wrong_key_is_401_with_the_documented_body(sandbox, headers):
    response = get(sandbox, sandbox.workflows[0].slug, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "Invalid or missing API key"}


@pytest.mark.parametrize("scheme", ["X-API-Key", "Authorization"])
@pytest.mark.parametrize("prefix", ["/api/v1", "/v1"])
def test_either_auth_header_and_either_host_prefix(sandbox, scheme, prefix):
    value = sandbox.api_key if scheme == "X-API-Key" else f"Bearer {sandbox.api_key}"
    response = get(sandbox, sandbox.workflows[0].slug, prefix=prefix, headers={scheme: value})
    assert response.status_code == 200
    assert len(response.json()["executions"]) == 50  # the API's default limit


def test_unknown_paths_and_workflows_are_404(sandbox):
    assert get(sandbox, "nope").json() == {"error": "workflow not found", "code": "NOT_FOUND"}
    assert get(sandbox, "nope").status_code == 404
    response = requests.get(
        sandbox.origin + "/api/v2/workflows/x/executions",
        headers={"X-API-Key": sandbox.api_key},
        timeout=5,
    )
    assert response.status_code == 404


def test_malformed_bulk_id_is_400_with_the_documented_body(sandbox):
    response = get(sandbox, sandbox.workflows[0].slug, bulk_id="not-a-uuid")
    assert response.status_code == 400
    assert response.json() == {"error": "invalid bulk_id format"}


@pytest.mark.parametrize("limit", ["0", "101", "x"])
def test_limit_outside_1_to_100_is_400(sandbox, limit):
    assert get(sandbox, sandbox.workflows[0].slug, limit=limit).status_code == 400


def test_workflow_found_by_uuid_or_slug(sandbox):
    workflow = sandbox.workflows[2]
    by_id = get(sandbox, workflow.id, limit=10).json()
    by_slug = get(sandbox, workflow.slug, limit=10).json()
    assert by_id == by_slug
    assert {row["flow_id"] for row in by_id["executions"]} == {workflow.id}


@pytest.mark.parametrize(
    ("variant", "offset", "expect"),
    [
        ("offset", 0, {"offset": 100}),
        ("offset", 200, {"offset": 250}),
        ("limit", 0, {"limit": 100}),
        ("next_offset", 0, {"offset": 100}),
        ("next_offset", 200, {}),
    ],
)
def test_response_variants(make_sandbox, variant, offset, expect):
    sandbox = make_sandbox(rows=250, variant=variant)
    body = get(sandbox, sandbox.workflows[0].slug, offset=offset, limit=100).json()
    hints = {k: v for k, v in body.items() if k in ("offset", "limit")}
    assert hints == expect
    assert body["total_count"] == 250


def test_page_size_can_be_capped_by_the_host(make_sandbox):
    sandbox = make_sandbox(rows=250, variant="limit", max_page_size=40)
    body = get(sandbox, sandbox.workflows[0].slug, limit=100).json()
    assert len(body["executions"]) == 40 and body["limit"] == 40


def test_lying_hints(make_sandbox):
    sandbox = make_sandbox(rows=250, lying_hints=True)
    body = get(sandbox, sandbox.workflows[0].slug, offset=200, limit=100).json()
    assert (body["offset"], body["limit"], body["total_count"]) == (0, 200, 1250)
    assert len(body["executions"]) == 50


def test_total_count_can_be_capped(make_sandbox):
    sandbox = make_sandbox(rows=250, total_count_cap=100)
    body = get(sandbox, sandbox.workflows[0].slug, offset=200, limit=100).json()
    assert body["total_count"] == 100 and len(body["executions"]) == 50


def test_rows_are_newest_first_and_carry_the_documented_fields(make_sandbox):
    sandbox = make_sandbox(rows=300, timestamp_variety=False)
    rows = get(sandbox, sandbox.workflows[0].slug, limit=100).json()["executions"]
    rows += get(sandbox, sandbox.workflows[0].slug, offset=100, limit=100).json()["executions"]
    created = [when(r["created_at"]) for r in rows]
    assert created == sorted(created, reverse=True)
    assert all(row.keys() >= REQUIRED for row in rows)
    assert len({r["execution_id"] for r in rows}) == 200
    queued = [r for r in rows if r["status"] == "queued"]
    running = [r for r in rows if r["status"] == "running"]
    assert queued and all("started_at" not in r for r in queued)
    assert running and all(r.get("ended_at") is None for r in running)
    assert any("ended_at" in r for r in running) and any("ended_at" not in r for r in running)
    assert {type(r["cost"]) for r in rows} == {float, dict}


def test_step_results_shape_varies_per_workflow(sandbox):
    shapes = set()
    for workflow in sandbox.workflows[:2]:
        rows = get(sandbox, workflow.slug, limit=5).json()["executions"]
        shapes |= {type(r["step_results"]) for r in rows}
    assert shapes == {dict, list}


def test_timestamps_mix_the_forms_a_real_service_sends(sandbox):
    rows = get(sandbox, sandbox.workflows[0].slug, limit=100).json()["executions"]
    texts = [r["created_at"] for r in rows]
    assert any(t.endswith("Z") and "." not in t for t in texts)
    assert any(len(t.split(".")[-1].rstrip("Z")) == 9 for t in texts if "." in t)
    assert any("+02:00" in t for t in texts)
    assert any(" " in t for t in texts)
    assert any(not t.endswith("Z") and "+" not in t and "-" not in t[10:] for t in texts)


def test_same_seed_same_data_other_seed_other_data(make_sandbox):
    one, two, other = make_sandbox(seed=7), make_sandbox(seed=7), make_sandbox(seed=8)
    page = [get(s, s.workflows[0].slug, limit=20).json() for s in (one, two, other)]
    assert page[0] == page[1]
    assert page[0]["executions"][0]["execution_id"] != page[2]["executions"][0]["execution_id"]


def test_head_inserts_shift_every_offset(make_sandbox):
    sandbox = make_sandbox(rows=100, inserts_per_request=3)
    slug = sandbox.workflows[0].slug
    first = get(sandbox, slug, limit=10).json()
    second = get(sandbox, slug, limit=10).json()
    assert second["total_count"] == first["total_count"] + 3
    assert second["executions"][3] == first["executions"][0]


def test_bulk_filter_serves_only_that_bulk(sandbox):
    slug = sandbox.workflows[0].slug
    all_rows = get(sandbox, slug, limit=100).json()["executions"]
    all_rows += get(sandbox, slug, offset=100, limit=100).json()["executions"]
    bulk = next(r["bulk_id"] for r in all_rows if "bulk_id" in r)
    body = get(sandbox, slug, bulk_id=bulk, limit=100).json()
    expected = [r["execution_id"] for r in all_rows if r.get("bulk_id") == bulk]
    assert [r["execution_id"] for r in body["executions"]] == expected
    assert body["total_count"] == len(expected)


def test_status_fault_fires_n_times_at_chosen_offsets_with_retry_after(sandbox):
    slug = sandbox.workflows[0].slug
    sandbox.add_fault("status", status=429, retry_after="3", offsets={50}, times=2)
    assert get(sandbox, slug, offset=0).status_code == 200
    first = get(sandbox, slug, offset=50)
    assert first.status_code == 429 and first.headers["Retry-After"] == "3"
    assert first.json() == {"error": "too many requests"}
    assert get(sandbox, slug, offset=50).status_code == 429
    assert get(sandbox, slug, offset=50).status_code == 200


def test_fault_limited_to_one_workflow(sandbox):
    sandbox.add_fault("status", status=500, workflow=sandbox.workflows[1].id, times=None)
    assert get(sandbox, sandbox.workflows[0].slug).status_code == 200
    assert get(sandbox, sandbox.workflows[1].slug).status_code == 500


def test_html_and_truncated_and_dropped_responses(sandbox):
    slug = sandbox.workflows[0].slug
    sandbox.add_fault("html", status=502, times=1)
    response = get(sandbox, slug)
    assert response.status_code == 502 and response.text.startswith("<html>")
    sandbox.add_fault("truncated", times=1)
    with pytest.raises(ValueError):
        get(sandbox, slug).json()
    sandbox.add_fault("drop", times=1)
    with pytest.raises(requests.ConnectionError):
        get(sandbox, slug)


def test_latency_is_added_and_every_request_is_logged(make_sandbox):
    sandbox = make_sandbox(rows=10, latency_ms=100)
    started = time.monotonic()
    get(sandbox, sandbox.workflows[0].slug, limit=5, offset=2)
    assert time.monotonic() - started >= 0.1
    (record,) = sandbox.requests
    assert record.query == {"limit": "5", "offset": "2"}
    assert record.status == 200 and record.offset == 2 and record.limit == 5
    assert record.headers["X-API-Key"] == sandbox.api_key
    assert record.latency_s == 0.1


def test_a_long_tail_slows_its_share_of_requests_reproducibly(make_sandbox):
    def served(seed):
        sandbox = make_sandbox(rows=10, seed=seed, tail_share=0.25, tail_latency_ms=30)
        for _ in range(40):
            get(sandbox, sandbox.workflows[0].slug, limit=1)
        return [r.latency_s for r in sandbox.requests]

    latencies = served(3)
    assert set(latencies) == {0.0, 0.03}
    assert 4 <= latencies.count(0.03) <= 16  # a quarter of 40, give or take
    assert served(3) == latencies


def test_the_sandbox_imports_nothing_from_the_loader():
    import ast
    import pathlib

    import eachlabs_loader.sandbox as package

    for path in pathlib.Path(package.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1, f"{path.name} reaches outside the sandbox package"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                assert not any(n.startswith("eachlabs_loader") for n in names), path.name


def test_random_faults_strike_at_the_given_rate_reproducibly(make_sandbox):
    outcomes = []
    for _ in range(2):
        sandbox = make_sandbox(rows=50, random_faults=0.3, seed=5)
        for _ in range(60):
            try:
                outcomes.append(get(sandbox, sandbox.workflows[0].slug, limit=5).status_code)
            except requests.ConnectionError:
                outcomes.append(-1)
    first, second = outcomes[:60], outcomes[60:]
    assert first == second
    failed = sum(1 for code in first if code != 200)  # garbled 200s come on top of these
    assert 6 <= failed <= 30


WORKFLOW_FIELDS = {
    "workflow_id", "slug", "name", "categories", "tags", "status", "trigger_count",
    "clone_count", "is_public", "production", "node_based", "created_at", "updated_at",
}  # fmt: skip


def test_workflows_list_pages_newest_first_with_the_next_offset_while_full(make_sandbox):
    sandbox = make_sandbox(workflows=5, rows=3)
    url, headers = f"{sandbox.origin}/api/v1/workflows", {"X-API-Key": sandbox.api_key}
    first = requests.get(url, params={"limit": 2}, headers=headers, timeout=5).json()
    last = requests.get(url, params={"offset": 4, "limit": 2}, headers=headers, timeout=5).json()
    assert first["offset"] == 2 and first["total_count"] == 5 and "offset" not in last
    rows = first["workflows"] + last["workflows"]
    assert all(set(r) == WORKFLOW_FIELDS for r in rows)
    created = [when(r["created_at"]) for r in rows]
    assert created == sorted(created, reverse=True)
    assert {r["workflow_id"] for r in rows} <= {w.id for w in sandbox.workflows}
    default = requests.get(url, headers=headers, timeout=5).json()  # limit defaults to 50
    assert len(default["workflows"]) == 5 and "offset" not in default
    assert requests.get(url, params={"limit": 101}, headers=headers, timeout=5).status_code == 400
    assert requests.get(url, timeout=5).status_code == 401


def test_open_window_keeps_old_executions_finished_and_deleted_workflows_404(make_sandbox):
    sandbox = make_sandbox(
        workflows=2, rows=2_000, open_window=100, workflow_status={"video-upscaler": "deleted"}
    )
    rows = sandbox.rows(sandbox.workflows[0].slug)
    assert all(r["status"] in ("completed", "failed", "cancelled") for r in rows[100:])
    assert any(r["status"] in ("running", "queued") for r in rows[:100])
    sandbox.insert(sandbox.workflows[0].slug, 300)  # the window does not move with inserts
    assert sandbox.rows(sandbox.workflows[0].slug)[300:] == rows
    assert get(sandbox, "video-upscaler").status_code == 404


def test_every_error_answer_carries_a_request_id(sandbox):
    sandbox.add_fault("status", status=503, times=1)
    url = f"{sandbox.base_url}/workflows/{sandbox.workflows[0].slug}/executions"
    failed = requests.get(url, headers={"X-API-Key": sandbox.api_key}, timeout=5)
    unauthorized = requests.get(url, timeout=5)
    fine = requests.get(url, headers={"X-API-Key": sandbox.api_key}, timeout=5)
    ids = [failed.headers.get("X-Request-Id"), unauthorized.headers.get("X-Request-Id")]
    assert all(ids) and ids[0] != ids[1]
    assert [r.request_id for r in sandbox.requests] == [*ids, None]
    assert "X-Request-Id" not in fine.headers
