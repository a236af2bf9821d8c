"""The organisation's workflows: ``load_workflows`` and whole-organisation exports."""

from __future__ import annotations

import pandas as pd
import pytest

from eachlabs_loader import (
    ALL_WORKFLOWS,
    AuthenticationError,
    InvalidRequestError,
    load_executions,
    load_workflows,
    read_executions,
)


@pytest.fixture
def org(make_sandbox):
    return make_sandbox(
        workflows=5,
        rows={
            "text-to-image-generator": 400,
            "video-upscaler": 0,
            "product-photo-studio": 250,
            "voice-over-pipeline": 120,
            "avatar-animator": 90,
        },
        open_window=50,
        workflow_status={"voice-over-pipeline": "archived", "avatar-animator": "deleted"},
    )


def kwargs(api, **more):
    return {"base_url": api.base_url, "api_key": api.api_key, **more}


def test_load_workflows_pages_and_types_every_workflow(org):
    frame = load_workflows(page_size=2, **kwargs(org))
    workflow_requests = [r for r in org.requests if r.path.startswith("/api/v1/workflows?")]
    assert [(r.offset, r.limit) for r in workflow_requests] == [(0, 2), (2, 2), (4, 2)]
    expected = org.workflow_rows()
    assert frame["workflow_id"].tolist() == [w["workflow_id"] for w in expected]
    assert frame["status"].tolist() == [w["status"] for w in expected]
    assert str(frame["created_at"].dtype) == "datetime64[us, UTC]"
    assert (
        str(frame["trigger_count"].dtype) == "Int64" and str(frame["is_public"].dtype) == "boolean"
    )
    assert frame["trigger_count"].tolist() == [w["trigger_count"] for w in expected]
    assert frame["tags"].iloc[0].startswith("[")  # lists arrive as JSON text
    assert frame.loc[0, "created_at"] == pd.Timestamp(expected[0]["created_at"])


def test_load_workflows_retries_and_reports_auth(org):
    org.add_fault("status", status=503, workflow="workflows", offsets={2}, retry_after="0")
    assert len(load_workflows(page_size=2, **kwargs(org))) == 5
    assert sum(r.status == 503 for r in org.requests) == 1
    with pytest.raises(AuthenticationError):
        load_workflows(base_url=org.base_url, api_key="wrong-key-123")


def test_all_workflows_exports_every_active_and_archived_workflow(org, tmp_path):
    root = tmp_path / "lake"
    result = load_executions(ALL_WORKFLOWS, output=root, progress=False, **kwargs(org))
    exported = [w for w in org.workflows if w.slug != "avatar-animator"]
    assert set(result.workflows) == {w.id for w in exported}
    deleted = org.workflow("avatar-animator")
    assert not any(deleted.id in r.path for r in org.requests)
    stored = read_executions(root)
    expected = {i for w in exported for i in org.expected_ids(w.id)}
    assert set(stored["execution_id"]) == expected and stored["execution_id"].is_unique
    explicit = load_executions([w.slug for w in exported], progress=False, **kwargs(org))
    pd.testing.assert_frame_equal(
        stored.sort_values("execution_id").reset_index(drop=True),
        explicit.sort_values("execution_id").reset_index(drop=True)[stored.columns],
    )

    # Whole-organisation runs are incremental too.
    org.insert("text-to-image-generator", 30)
    org.finish("product-photo-studio", 2)
    org.clear_requests()
    again = load_executions(
        ALL_WORKFLOWS, output=root, incremental=True, progress=False, **kwargs(org)
    )
    assert again.incremental and again.rows_inserted == 30 and again.rows_updated == 2
    assert again.requests <= 1 + 4 * 2  # the list, then a page or two per workflow


def test_all_workflows_into_a_dataframe(org):
    frame = load_executions(ALL_WORKFLOWS, progress=False, **kwargs(org))
    assert len(frame) == 400 + 250 + 120
    assert frame.attrs["eachlabs"].rows_returned == len(frame)


def test_an_organisation_without_workflows(make_sandbox, tmp_path):
    empty = make_sandbox(workflows=0)
    assert load_workflows(**kwargs(empty)).empty
    assert load_executions(ALL_WORKFLOWS, progress=False, **kwargs(empty)).empty
    result = load_executions(ALL_WORKFLOWS, output=tmp_path / "lake", **kwargs(empty))
    assert result.rows_written == 0 and result.workflows == {}


def test_all_workflows_stands_alone(org):
    with pytest.raises(InvalidRequestError, match="ALL_WORKFLOWS"):
        load_executions([ALL_WORKFLOWS, "x"], **kwargs(org))
    assert org.requests == [] and repr(ALL_WORKFLOWS) == "ALL_WORKFLOWS"


def test_a_workflow_listed_with_an_unusable_id_is_skipped_with_a_warning(org, monkeypatch, caplog):
    listed = org.workflow_rows()
    active = next(row for row in listed if row["status"] == "active")
    monkeypatch.setattr(org, "workflow_rows", lambda: [{**active, "workflow_id": ".."}, *listed])
    with caplog.at_level("WARNING", logger="eachlabs_loader"):
        frame = load_executions(ALL_WORKFLOWS, progress=False, **kwargs(org))
    assert len(frame) == 400 + 250 + 120 and "unusable id" in caplog.text
    assert not any(r.path.startswith("/api/v1/executions") for r in org.requests)


def test_a_workflows_list_failing_part_way_writes_nothing(make_sandbox, tmp_path):
    api = make_sandbox(workflows=4, rows=30)
    api.add_fault("status", status=403, workflow="workflows", offsets={2}, times=None)
    with pytest.raises(AuthenticationError):  # listed one workflow at a time: 2 loads started
        load_executions(ALL_WORKFLOWS, output=tmp_path, **kwargs(api, page_size=1))
    assert any(r.workflow for r in api.requests)  # executions were being loaded meanwhile
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
