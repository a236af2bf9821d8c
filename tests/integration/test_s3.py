"""The lake and the Delta table on object storage: a real S3 API on loopback (moto's server)."""

from __future__ import annotations

import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pytest

from eachlabs_loader import StorageError, load_executions, read_executions
from eachlabs_loader.dataset import METADATA_FILE

CREDENTIALS = {"access_key": "testing", "secret_key": "testing", "region": "us-east-1"}


@pytest.fixture
def s3(s3_endpoint, monkeypatch, request):
    """A fresh bucket, and the standard AWS variables pointing at the loopback server."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{s3_endpoint}")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    filesystem = pafs.S3FileSystem(
        endpoint_override=s3_endpoint, scheme="http", allow_bucket_creation=True, **CREDENTIALS
    )
    bucket = request.node.name.lower().replace("_", "-")[:50].strip("-[]")
    bucket = "".join(c if c.isalnum() or c == "-" else "-" for c in bucket)
    filesystem.create_dir(bucket)
    return filesystem, bucket


def objects(filesystem, prefix):
    """Path -> mtime of every object but the state files (each load rewrites its own)."""
    infos = filesystem.get_file_info(pafs.FileSelector(prefix, recursive=True))
    return {
        i.path: i.mtime for i in infos if i.type == pafs.FileType.File and "/_state/" not in i.path
    }


def test_load_into_s3_from_environment_credentials_and_rerun_idempotently(make_sandbox, s3):
    filesystem, bucket = s3
    sandbox = make_sandbox(rows=2000, workflows=1)
    slug = sandbox.workflows[0].slug
    uri = f"s3://{bucket}/lake"
    first = load_executions(slug, base_url=sandbox.base_url, api_key=sandbox.api_key, output=uri)
    assert first.rows_written == 2000 and first.files_written >= 2
    stored = objects(filesystem, f"{bucket}/lake")
    data = [p for p in stored if p.endswith(".parquet")]
    assert len(data) == first.files_written
    assert f"{bucket}/lake/{METADATA_FILE}" in stored
    assert all(f"/workflow_id={sandbox.workflows[0].id}/date=" in p for p in data)
    assert not [p for p in stored if ".tmp-" in p]
    state = f"{bucket}/lake/_state/{sandbox.workflows[0].id}.json"
    assert filesystem.get_file_info(state).type == pafs.FileType.File

    again = load_executions(slug, base_url=sandbox.base_url, api_key=sandbox.api_key, output=uri)
    assert (again.rows_written, again.files_written) == (0, 0)
    assert objects(filesystem, f"{bucket}/lake") == stored

    sandbox.finish(slug, 5)
    sandbox.insert(slug, 7)
    third = load_executions(slug, base_url=sandbox.base_url, api_key=sandbox.api_key, output=uri)
    assert (third.rows_inserted, third.rows_updated) == (7, 5)
    table = pads.dataset(
        f"{bucket}/lake", filesystem=filesystem, format="parquet", partitioning="hive"
    ).to_table()
    ids = table["execution_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 2007
    assert set(ids) == set(sandbox.expected_ids(slug))


def test_explicit_filesystem_argument(make_sandbox, s3, monkeypatch):
    filesystem, bucket = s3
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # only the explicit filesystem knows the endpoint
    sandbox = make_sandbox(rows=300, workflows=1)
    slug = sandbox.workflows[0].slug
    result = load_executions(
        slug,
        base_url=sandbox.base_url,
        api_key=sandbox.api_key,
        output=f"{bucket}/explicit",
        filesystem=filesystem,
    )
    assert result.rows_written == 300
    back = read_executions(f"{bucket}/explicit", filesystem=filesystem)
    assert sorted(back["execution_id"]) == sorted(sandbox.expected_ids(slug))


def test_missing_bucket_fails_before_any_request(sandbox, s3):
    with pytest.raises(StorageError, match="does not exist"):
        load_executions(
            sandbox.workflows[0].slug,
            base_url=sandbox.base_url,
            api_key=sandbox.api_key,
            output="s3://no-such-bucket-here/lake",
        )
    assert sandbox.requests == []


def test_incremental_runs_on_s3(make_sandbox, s3):
    filesystem, bucket = s3
    sandbox = make_sandbox(rows=1500, workflows=1, open_window=100)
    slug = sandbox.workflows[0].slug
    uri = f"s3://{bucket}/lake"
    kwargs = {"base_url": sandbox.base_url, "api_key": sandbox.api_key, "output": uri}
    load_executions(slug, **kwargs)
    sandbox.finish(slug, 3)
    sandbox.insert(slug, 12)
    sandbox.clear_requests()
    result = load_executions(slug, incremental=True, **kwargs)
    assert result.incremental and (result.rows_inserted, result.rows_updated) == (12, 3)
    assert len(sandbox.requests) <= 3
    stored = read_executions(uri, filesystem=filesystem)
    assert sorted(stored["execution_id"]) == sorted(sandbox.expected_ids(slug))


def test_a_delta_table_on_s3_loads_reruns_and_merges_changes(make_sandbox, s3):
    filesystem, bucket = s3
    # Open executions only near the head: deep ones would make a full load the faster way
    # whenever the first round trip is slow (a loaded machine), and the run not incremental.
    sandbox = make_sandbox(rows=2000, workflows=1, open_window=100)
    slug = sandbox.workflows[0].slug
    uri = f"s3://{bucket}/table"
    keys = {"base_url": sandbox.base_url, "api_key": sandbox.api_key, "table_format": "delta"}
    first = load_executions(slug, output=uri, **keys)  # AWS_ENDPOINT_URL is http://: allowed
    assert (first.rows_inserted, first.table_version) == (2000, 1)
    stored = objects(filesystem, f"{bucket}/table")
    assert any("/_delta_log/00000000000000000001.json" in p for p in stored)

    again = load_executions(slug, output=uri, incremental=True, **keys)
    assert (again.rows_written, again.table_version) == (0, 1)
    sandbox.finish(slug, 5)
    sandbox.insert(slug, 7)
    third = load_executions(slug, output=uri, incremental=True, **keys)
    assert (third.rows_inserted, third.rows_updated, third.table_version) == (7, 5, 2)
    assert third.incremental, third.fallbacks
    frame = read_executions(uri)
    assert sorted(frame["execution_id"]) == sorted(sandbox.expected_ids(slug))


def test_delta_writer_processes_on_s3_at_the_same_moment_both_land(make_sandbox, s3):
    from test_delta import run_writers

    _, bucket = s3
    sandbox = make_sandbox(rows=2000, workflows=2, latency_ms=5)
    a, b = (w.slug for w in sandbox.workflows)
    uri = f"s3://{bucket}/table"
    keys = {"base_url": sandbox.base_url, "api_key": sandbox.api_key, "table_format": "delta"}
    load_executions([a, b], output=uri, **keys)
    sandbox.insert(a, 11)
    sandbox.insert(b, 13)
    results, _ = run_writers(uri, sandbox, [[a], [b], [a, b]])
    assert sum(r["inserted"] for r in results) == 24
    frame = read_executions(uri)
    assert frame["execution_id"].is_unique
    assert set(frame["execution_id"]) == set(sandbox.expected_ids(a)) | set(sandbox.expected_ids(b))
