"""Credential redaction for URLs, DSNs and messages (spoolkit._internal.redact)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from spoolkit._internal.redact import (
    MASK,
    carry_secrets,
    error_repr,
    is_sensitive_key,
    redact_text,
    redact_url,
    secrets_in_header,
    secrets_in_url,
)


def test_password_in_userinfo_is_masked_and_user_kept() -> None:
    """The password of user:password@host is replaced; the user name stays."""
    assert redact_url("postgresql://app:s3cret@db:5432/app") == "postgresql://app:***@db:5432/app"


def test_url_without_credentials_is_unchanged() -> None:
    """A URL holding no secret comes back byte for byte."""
    url = "https://logs.example.com:8443/ingest/v1?format=ndjson&a=1&b=%20x#frag"
    assert redact_url(url) == url


@pytest.mark.parametrize("url", ["jsonl:///var/log/app.jsonl", "stdout://", "file:///x?y=1"])
def test_url_with_an_empty_host_keeps_its_slashes(url: str) -> None:
    """A URL with an empty host (jsonl:///path) comes back unchanged, still a URL."""
    assert redact_url(url) == url


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "PASSWORD",
        "passwd",
        "token",
        "access_token",
        "api_key",
        "apikey",
        "api-key",
        "X-Api-Key",
        "key",
        "secret",
        "client_secret",
        "auth",
        "sig",
        "sslpassword",
    ],
)
def test_sensitive_query_values_are_masked(key: str) -> None:
    """Each sensitive query key has its value masked; other parameters keep theirs."""
    url = f"https://h/p?format=json&{key}=TOPSECRET&n=5"
    assert redact_url(url) == f"https://h/p?format=json&{key}={MASK}&n=5"


@pytest.mark.parametrize("key", ["format", "table", "stream", "max_bytes", "keep", "timeout"])
def test_ordinary_keys_are_not_sensitive(key: str) -> None:
    """Sink option names are not mistaken for secrets."""
    assert not is_sensitive_key(key)


def test_libpq_conninfo_password_is_masked() -> None:
    """A key=value DSN has password values masked, quoted or not."""
    dsn = "host=db user=app password='p w\\'d' dbname=app sslpassword=xyz"
    out = redact_url(dsn)
    assert out == f"host=db user=app password={MASK} dbname=app sslpassword={MASK}"


def test_malformed_url_is_still_masked_and_does_not_raise() -> None:
    """A URL urlsplit rejects (bad IPv6 literal) still has its password hidden."""
    out = redact_url("http://u:hunter22@[::1/path")
    assert "hunter22" not in out
    assert MASK in out


def test_secrets_in_url_lists_raw_and_decoded_spellings() -> None:
    """secrets_in_url returns the password, user:password and its base64 basic-auth form, and
    secret query values, raw and decoded; nothing that is not secret."""
    found = secrets_in_url("redis://u:p%40ss@h/0?token=abc&stream=s")
    basic = base64.b64encode(b"u:p@ss").decode()
    assert {"p%40ss", "p@ss", "abc", "u:p@ss", basic} <= set(found)
    assert not {"u", "h", "s", "stream", "0"} & set(found)


def test_redact_text_masks_embedded_urls_and_known_secrets() -> None:
    """URLs inside a message and listed secret values are masked."""
    text = "failed to reach postgresql://u:pw1@h/db with header Bearer tok-123"
    out = redact_text(text, ["tok-123"])
    assert out == f"failed to reach postgresql://u:{MASK}@h/db with header Bearer {MASK}"


@given(
    password=st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=6, max_size=30
    )
)
def test_no_password_survives_redaction(password: str) -> None:
    """Whatever the password, neither its raw nor its encoded form is left in the output."""
    encoded = quote(password, safe="")
    url = f"https://user:{encoded}@example.com/path?token={encoded}&q=1"
    assume(encoded not in "https://user:@example.com/path?token=&q=1")
    out = redact_url(url)
    assert encoded not in out
    assert out == f"https://user:{MASK}@example.com/path?token={MASK}&q=1"


@pytest.mark.parametrize(
    "shown",
    [
        lambda s: s,
        lambda s: quote(s, safe=""),
        lambda s: repr(s)[1:-1],
        lambda s: json.dumps(s)[1:-1],
    ],
    ids=["raw", "percent-encoded", "repr-escaped", "json-escaped"],
)
def test_redact_text_masks_every_spelling_of_a_secret(shown: Callable[[str], str]) -> None:
    """A secret is masked raw, percent-encoded, and escaped as in a repr or a JSON string."""
    secret = "pw'with\\back\"slash é"  # noqa: S105 - a planted credential
    assert redact_text(f"driver said: {shown(secret)}!", [secret]) == f"driver said: {MASK}!"


def test_error_repr_masks_a_carried_secret_that_repr_escapes() -> None:
    """stats().last_error (error_repr) hides a carried secret that repr() shows escaped."""
    secret = "back\\slash-pw"  # noqa: S105 - a planted credential
    error = carry_secrets(ValueError(f"auth failed for {secret}"), [secret])
    assert "slash-pw" not in error_repr(error)


@pytest.mark.parametrize(
    "value",
    [f"Basic {base64.b64encode(b'svc:pa55-word').decode()}", "Bearer pa55-word"],
    ids=["basic", "bearer"],
)
def test_secrets_in_header_lists_the_credentials_alone_and_decoded(value: str) -> None:
    """An Authorization header yields its value, its credentials and, for Basic, the password."""
    found = secrets_in_header("Authorization", value)
    assert value in found
    assert value.split(" ", 1)[1] in found
    assert "pa55-word" in found
    assert value.startswith("Bearer") or "svc:pa55-word" in found
    assert secrets_in_header("Accept", "application/json") == []
