"""The lake on object storage: a real S3 API on loopback (moto's server mode)."""

from __future__ import annotations

import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pytest
from moto.server import ThreadedMotoServer

from eachlabs_loader import StorageError, load_executions, read_executions
from eachlabs_loader.dataset import METADATA_FILE

CREDENTIALS = {"access_key": "testing", "secret_key": "testing", "region": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"{host}:{port}"
    server.stop()


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
