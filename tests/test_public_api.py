"""The public contract: exported names and the exact signature of the front door."""

from __future__ import annotations

import inspect

import eachlabs_loader
from eachlabs_loader import errors


def test_all_lists_exactly_the_public_names():
    public = {name for name in vars(eachlabs_loader) if not name.startswith("_")}
    modules = {n for n in public if inspect.ismodule(getattr(eachlabs_loader, n))}
    assert set(eachlabs_loader.__all__) == (public - modules) | {"__version__"}


def test_load_executions_signature_is_the_contract():
    params = inspect.signature(eachlabs_loader.load_executions).parameters
    names = list(params)
    assert names[:2] == ["workflow_id", "bulk_id"]
    assert params["bulk_id"].default is None
    contract = [
        "api_key",
        "base_url",
        "page_size",
        "max_retries",
        "timeout",
        "concurrency",
        "output",
        "progress",
    ]
    assert names[2 : 2 + len(contract)] == contract
    for name in contract:
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["page_size"].default == 100
    assert params["api_key"].default is None and params["base_url"].default is None
    assert params["output"].default is None


def test_error_tree():
    assert issubclass(errors.InvalidRequestError, ValueError)
    for name in ("InvalidRequestError", "AuthenticationError", "WorkflowNotFoundError", "APIError"):
        assert issubclass(getattr(eachlabs_loader, name), eachlabs_loader.EachlabsError)
    for name in ("RateLimitError", "ServerError", "TransportError", "PaginationError"):
        assert issubclass(getattr(eachlabs_loader, name), eachlabs_loader.APIError)
    retryable = {
        c.__name__
        for c in vars(errors).values()
        if isinstance(c, type) and getattr(c, "retryable", False)
    }
    assert retryable == {"RateLimitError", "ServerError", "TransportError", "InvalidResponseError"}


def test_the_version_is_written_once_in_pyproject():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parent.parent
    pyproject = (root / "pyproject.toml").read_text()
    versions = re.findall(r'^version = "([^"]+)"$', pyproject, flags=re.MULTILINE)
    assert len(versions) == 1
    version = versions[0]
    assert eachlabs_loader.__version__ == version
    package_sources = (root / "eachlabs_loader").rglob("*.py")
    assert not [p for p in package_sources if f'"{version}"' in p.read_text()]
    assert f"## [{version}]" in (root / "CHANGELOG.md").read_text()
