"""Credentials in URLs (schedcore/urlsecrets.py)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from schedcore.urlsecrets import credential_in, is_credential_name, redact


@pytest.mark.parametrize(
    "name",
    [
        "key",
        "api_key",
        "apiKey",
        "APIKEY",
        "access_token",
        "token",
        "X-Amz-Signature",
        "AWSAccessKeyId",
        "sig",
        "client_secret",
        "password",
        "passwd",
        "pwd",
        "auth",
        "session_id",
        "jwt",
        "Credential",
    ],
)
def test_credential_names(name: str) -> None:
    assert is_credential_name(name)


@pytest.mark.parametrize("name", ["page", "q", "design", "monkeys", "limit", "sort", "id", "keyword"])
def test_ordinary_names(name: str) -> None:
    assert not is_credential_name(name)


def test_where_a_url_carries_a_credential() -> None:
    assert "user name or password" in (credential_in(urlsplit("https://u:p@h/")) or "")
    assert "user name or password" in (credential_in(urlsplit("https://u@h/")) or "")
    assert "'token'" in (credential_in(urlsplit("https://h/?%74oken=x")) or "")
    assert credential_in(urlsplit("https://h/p?page=2&q=token#token=x")) is None


def test_redact_keeps_everything_but_the_credentials() -> None:
    assert redact("https://u:hunter2@h:8443/p?page=2&api_key=hunter2&q=a+b") == (
        "https://[secret]@h:8443/p?page=2&api_key=[secret]&q=a+b"
    )
    assert redact("https://h/p?page=2") == "https://h/p?page=2"
    assert redact("http://[::1") == "[secret]"
