"""Settings precedence and validation: pure, driven by a dict env."""

from __future__ import annotations

import pytest

from eachlabs_loader import AuthenticationError, InvalidRequestError, resolve_settings
from eachlabs_loader.config import (
    DEFAULT_BASE_URL,
    normalize_bulk_id,
    validate_base_url,
    validate_timeout,
    validate_workflow_id,
)

ENV = {"EACHLABS_API_KEY": "env-key", "EACHLABS_BASE_URL": "https://env.example/api/v1"}


@pytest.mark.parametrize(
    ("args", "env", "expected_key", "expected_url"),
    [
        ({}, ENV, "env-key", "https://env.example/api/v1"),
        ({"api_key": "arg-key"}, ENV, "arg-key", "https://env.example/api/v1"),
        ({"base_url": "https://arg.example/v1"}, ENV, "env-key", "https://arg.example/v1"),
        ({"api_key": "k"}, {}, "k", DEFAULT_BASE_URL),
        ({"api_key": "k"}, {"EACHLABS_BASE_URL": ""}, "k", DEFAULT_BASE_URL),
    ],
)
def test_argument_beats_environment_beats_default(args, env, expected_key, expected_url):
    settings = resolve_settings(**args, env=env)
    assert settings.api_key == expected_key
    assert settings.base_url == expected_url


@pytest.mark.parametrize("env", [{}, {"EACHLABS_API_KEY": ""}, {"EACHLABS_API_KEY": "   "}])
def test_missing_key_names_the_environment_variable(env):
    with pytest.raises(AuthenticationError, match="EACHLABS_API_KEY"):
        resolve_settings(env=env)


def test_settings_repr_masks_the_key():
    settings = resolve_settings("sk-very-secret-123", env={})
    assert "sk-very-secret-123" not in repr(settings)
    assert "***" in repr(settings)


def test_key_with_control_characters_is_refused_without_echo():
    with pytest.raises(InvalidRequestError) as info:
        resolve_settings("sk-secret\r\nX-Evil: 1", env={})
    assert "sk-secret" not in str(info.value)


@pytest.mark.parametrize("page_size", [0, 101, -1, "50", 50.0, True, None])
def test_page_size_out_of_range_or_not_int(page_size):
    with pytest.raises(InvalidRequestError, match="page_size"):
        resolve_settings("k", page_size=page_size, env={})


@pytest.mark.parametrize("page_size", [1, 50, 100])
def test_page_size_in_range(page_size):
    assert resolve_settings("k", page_size=page_size, env={}).page_size == page_size


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.eachlabs.ai/v1/", "https://api.eachlabs.ai/v1"),
        ("https://workflows.eachlabs.run/api/v1", "https://workflows.eachlabs.run/api/v1"),
        ("http://127.0.0.1:8080/api/v1", "http://127.0.0.1:8080/api/v1"),
        ("http://localhost:1/v1//", "http://localhost:1/v1"),
        ("http://[::1]:9/v1", "http://[::1]:9/v1"),
    ],
)
def test_base_url_accepted_and_trailing_slash_dropped(url, expected):
    assert validate_base_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "workflows.eachlabs.run/api/v1",
        "ftp://example.com/v1",
        "https://example.com/v1?x=1",
        "https://example.com/v1#frag",
        "https:///v1",
        "",
        "https://example.com:99999/v1",
    ],
)
def test_base_url_rejected(url):
    with pytest.raises(InvalidRequestError):
        validate_base_url(url)


def test_base_url_with_credentials_is_rejected_without_echo():
    with pytest.raises(InvalidRequestError) as info:
        validate_base_url("https://user:hunter2@example.com/v1")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    ["https://example.com/v1?api_key=sk-secret-1", "https://example.com:99999/v1?k=sk-secret-1"],
)
def test_rejected_base_url_is_not_echoed_with_its_query(url):
    with pytest.raises(InvalidRequestError) as info:
        validate_base_url(url)
    assert "sk-secret-1" not in str(info.value)


def test_plain_http_to_remote_host_needs_opt_in():
    with pytest.raises(InvalidRequestError, match="allow_insecure"):
        validate_base_url("http://api.example.com/v1")
    assert validate_base_url("http://api.example.com/v1", allow_insecure=True).startswith("http://")


@pytest.mark.parametrize(
    ("timeout", "expected"), [(5, (5.0, 5.0)), (2.5, (2.5, 2.5)), ((3, 30), (3.0, 30.0))]
)
def test_timeout_forms(timeout, expected):
    assert validate_timeout(timeout) == expected


@pytest.mark.parametrize("timeout", [0, -1, (1, 0), (1,), "5", None, float("inf"), True])
def test_timeout_rejected(timeout):
    with pytest.raises(InvalidRequestError, match="timeout"):
        validate_timeout(timeout)


@pytest.mark.parametrize(
    "workflow_id", ["", "   ", ".", "..", "a\x00b", "a\nb", "x" * 257, 42, None]
)
def test_workflow_id_rejected(workflow_id):
    with pytest.raises(InvalidRequestError, match="workflow_id"):
        validate_workflow_id(workflow_id)


@pytest.mark.parametrize("workflow_id", ["my-flow", "a/b", "a..b", "%2F", "naïve flow", "x" * 256])
def test_workflow_id_accepted(workflow_id):
    assert validate_workflow_id(workflow_id) == workflow_id


def test_bulk_id_is_canonical_lower_case_uuid():
    upper = "123E4567-E89B-12D3-A456-426614174000"
    assert normalize_bulk_id(upper) == upper.lower()
    assert normalize_bulk_id(None) is None


@pytest.mark.parametrize(
    "bulk_id",
    ["nope", "123e4567e89b12d3a456426614174000", "{123e4567-e89b-12d3-a456-426614174000}", 5, ""],
)
def test_bulk_id_malformed(bulk_id):
    with pytest.raises(InvalidRequestError, match="bulk_id"):
        normalize_bulk_id(bulk_id)


def test_invalid_request_error_is_a_value_error():
    with pytest.raises(ValueError):
        validate_workflow_id("")


@pytest.mark.parametrize(
    ("env", "base_url", "expected"),
    [
        (
            {"HTTPS_PROXY": "http://proxy:3128"},
            "https://api.eachlabs.ai/v1",
            {"https": "http://proxy:3128"},
        ),
        (
            {"https_proxy": "http://p:1", "http_proxy": "http://q:2"},
            "https://a.io/v1",
            {"https": "http://p:1", "http": "http://q:2"},
        ),
        (
            {"ALL_PROXY": "http://s:1080"},
            "https://a.io/v1",
            {"https": "http://s:1080", "http": "http://s:1080"},
        ),
        ({"HTTPS_PROXY": "p:1"}, "https://a.io/v1", {"https": "http://p:1"}),
        ({"HTTPS_PROXY": "http://p:1", "https_proxy": ""}, "https://a.io/v1", {}),
        (
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.com,.eachlabs.ai"},
            "https://api.eachlabs.ai/v1",
            {},
        ),
        ({"HTTPS_PROXY": "http://p:1", "no_proxy": "*"}, "https://a.io/v1", {}),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"}, "https://10.1.2.3/v1", {}),
        ({"HTTPS_PROXY": "http://p:1"}, "http://127.0.0.1:9/v1", {}),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "2001:db8::5"}, "https://[2001:db8::5]/v1", {}),
        (
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "[2001:db8::5]"},
            "https://[2001:db8::5]:8443/v1",
            {},
        ),
        (
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "2001:db8::/32"},
            "https://[2001:db8::9]/v1",
            {},
        ),
        (
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "2001:db8::5"},
            "https://[2001:db8::6]/v1",
            {"https": "http://p:1"},
        ),
        (
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "a.io:8080"},
            "https://b.a.io:8080/v1",
            {},
        ),
    ],
)
def test_proxies_are_read_once_from_the_usual_variables(env, base_url, expected):
    settings = resolve_settings("k", base_url, env=env)
    assert dict(settings.proxies) == expected
    assert "p:1" not in repr(settings) and "proxy:3128" not in repr(settings)


@pytest.mark.parametrize("proxy", ["socks5://s:1080", "http://", "http://p:notaport", "ftp://p:1"])
def test_a_proxy_that_cannot_be_used_is_refused_without_echoing_credentials(proxy):
    with pytest.raises(InvalidRequestError, match="proxy") as info:
        resolve_settings(
            "k", "https://a.io/v1", env={"HTTPS_PROXY": proxy.replace("//", "//u:pw@")}
        )
    assert "pw" not in str(info.value)


@pytest.mark.parametrize("name", ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"])
def test_ca_bundle_comes_from_the_usual_variables_as_a_file_or_a_directory(name, tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    assert resolve_settings("k", env={name: str(bundle)}).ca_bundle == str(bundle)
    assert resolve_settings("k", env={name: str(tmp_path)}).ca_bundle == str(tmp_path)
    assert resolve_settings("k", env={}).ca_bundle is None


def test_the_first_ca_variable_wins_and_a_missing_bundle_is_refused_at_once(tmp_path):
    first, second = tmp_path / "a.pem", tmp_path / "b.pem"
    first.write_text("")
    second.write_text("")
    env = {"CURL_CA_BUNDLE": str(second), "REQUESTS_CA_BUNDLE": str(first)}
    assert resolve_settings("k", env=env).ca_bundle == str(first)
    with pytest.raises(InvalidRequestError, match=r"SSL_CERT_FILE=.*no such file"):
        resolve_settings("k", env={"SSL_CERT_FILE": str(tmp_path / "missing.pem")})


@pytest.mark.parametrize(
    "base_url",
    [
        "https://api.eachlabs.ai/api v1",
        "https://api.eachlabs.ai/api\tv1",
        "https://api.eachlabs.ai/v1\r\n",
        "https://api.eachlabs.ai/v1\n",
        "https://api.eachlabs.ai/v\x001",
        "https://api.eachlabs.ai/v1\x7f",
        " https://api.eachlabs.ai/v1",
        "https://user:secret@api.eachlabs.ai/ v1",
    ],
)
def test_a_base_url_with_a_space_or_a_control_character_is_refused(base_url):
    with pytest.raises(InvalidRequestError, match="spaces or control characters") as info:
        resolve_settings("k", base_url, env={})
    assert "secret" not in str(info.value)


@pytest.mark.parametrize(
    "proxy",
    ["http://alice:1234#secret@proxy.example:3128", "http://alice:p/ss-secret@proxy.example:1",
     "http://alice:pa?ss-secret@proxy.example:1", "http://alice:p%E2%82%ACss-secret@proxy.example:1",
     "http://alice:p%0Ass-secret@proxy.example:1"],
)  # fmt: skip
def test_a_proxy_url_that_would_misplace_or_garble_credentials_is_refused_quietly(proxy):
    with pytest.raises(InvalidRequestError, match="proxy") as info:
        resolve_settings("k", "https://a.io/v1", env={"HTTPS_PROXY": proxy})
    assert "secret" not in str(info.value) and "1234" not in str(info.value)
    assert info.value.__context__ is None or "secret" not in str(info.value.__context__)
