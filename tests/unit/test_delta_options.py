"""What the Delta table asks of delta-rs beyond its own reading of the environment."""

from __future__ import annotations

import pytest

from eachlabs_loader.delta import _match_predicate, _states_in, storage_options


@pytest.fixture(autouse=True)
def _no_aws(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ALLOW_HTTP", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)


def test_an_http_endpoint_is_allowed_because_the_user_named_it(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert storage_options("s3://bucket/table") == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": "eu-west-1",
    }
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://s3.example.com")
    assert storage_options("s3://bucket/table") == {
        "AWS_ENDPOINT_URL": "https://s3.example.com",
        "AWS_REGION": "eu-west-1",
    }


def test_an_explicit_setting_wins_and_other_stores_get_nothing(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("AWS_ALLOW_HTTP", "false")
    assert "AWS_ALLOW_HTTP" not in storage_options("s3://bucket/table")
    assert storage_options("gs://bucket/table") == {}
    assert storage_options("/data/table") == {}


def test_the_merge_reads_only_the_partitions_staged():
    root = "/scratch"
    files = [
        f"{root}/workflow_id=a/date=2025-01-02/executions.parquet",
        f"{root}/workflow_id=a/date=2025-01-05/executions.parquet",
        f"{root}/workflow_id=b/date=2025-01-05/executions.parquet",
        f"{root}/workflow_id=it%27s/date=__HIVE_DEFAULT_PARTITION__/executions.parquet",
    ]
    predicate = _match_predicate(root, files, {"workflow_id=b"})
    assert predicate.startswith("t.execution_id = s.execution_id AND (")
    assert (
        "(t.workflow_id = 'a' AND (t.created_at IS NULL OR t.date IN "
        "(DATE '2025-01-02', DATE '2025-01-05')))" in predicate
    )
    assert "(t.workflow_id = 'b') OR" in predicate  # rows without created_at: searched whole
    assert "(t.workflow_id = 'it''s')" in predicate  # undated rows too


def test_an_append_carries_its_workflows_states_and_the_last_commit_every_state():
    states = {"a": "A", "b b": "B", "c": "C"}
    assert _states_in(states, {"workflow_id=a", "workflow_id=b%20b"}, everything=False) == {
        "a": "A",
        "b b": "B",
    }
    assert _states_in(states, {"workflow_id=a"}, everything=True) == states
