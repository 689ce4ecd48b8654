"""Hide credentials in URLs, DSNs and messages before they reach a repr, a log or an error.

Sinks describe themselves (``repr``, ``SinkError.sink``, error messages) only through these
helpers, so a password in ``postgresql://app:s3cret@db/app`` or a token in
``https://api.example.com/ingest?token=abc`` never shows up in a log line or a traceback.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from typing import TypeVar
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit, urlunsplit

__all__ = [
    "MASK",
    "basic_auth_secrets",
    "carry_secrets",
    "error_repr",
    "is_sensitive_key",
    "redact_exception_text",
    "redact_text",
    "redact_url",
    "secrets_in_header",
    "secrets_in_url",
    "spellings",
]

MASK = "***"
_CARRIED = "_spoolkit_secrets"  # attribute naming the secrets an error's chain may hold

# Parts of query/conninfo keys that mark the value as a secret. Matching is by substring on the
# lower-cased key with "-" read as "_": a false positive only hides a harmless value.
_SENSITIVE_PARTS = (
    "pass",  # password, passwd, sslpassword
    "pwd",
    "token",
    "secret",
    "key",  # key, api_key, apikey, access_key, sslkey
    "auth",
    "signature",
    "sig",
    "credential",
    "session",
    "cookie",
)

_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
# libpq "key=value" conninfo: value is a single-quoted string (with \' escapes) or a bare word.
_CONNINFO_PAIR = re.compile(
    r"(?P<key>[A-Za-z_][A-Za-z0-9_\-]*)\s*=\s*(?P<value>'(?:\\.|[^'\\])*'|\S+)"
)


def is_sensitive_key(key: str) -> bool:
    """Tell whether a query or conninfo key names a secret (password, token, api_key...).

    Args:
        key: the parameter name.

    Returns:
        True when its value must be hidden.
    """
    norm = key.lower().replace("-", "_")
    return any(part in norm for part in _SENSITIVE_PARTS)


def redact_url(url: str) -> str:
    """Return ``url`` with its password and secret query values replaced by ``***``.

    The user name is kept (it helps to tell connections apart); the password in the userinfo
    and the value of every sensitive query key (see :func:`is_sensitive_key`) are masked. The
    rest of the text is left exactly as given. A libpq ``key=value`` string (no ``://``) has
    its sensitive values masked the same way. This function never raises.

    Args:
        url: a URL or DSN, possibly holding credentials.

    Returns:
        The same URL with credentials masked.
    """
    if "://" not in url:
        return _redact_conninfo(url) if "=" in url else url
    try:
        parts = urlsplit(url)
    except ValueError:
        return _redact_userinfo_fallback(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{MASK}@{hostport}"
    query = _redact_query(parts.query)
    fragment = _redact_query(parts.fragment) if "=" in parts.fragment else parts.fragment
    out = urlunsplit((parts.scheme, netloc, parts.path, query, fragment))
    head = f"{parts.scheme}://"
    if url.startswith(head) and not out.startswith(head):  # urlunsplit drops the "//" of an
        out = head + out[len(parts.scheme) + 1 :]  # empty host unless it knows the scheme
    return out


def secrets_in_url(url: str) -> list[str]:
    """List the secret values ``url`` holds, in every form they may be sent or echoed in.

    That is the password of the userinfo, ``user:password`` and its base64 basic-auth form
    (what an HTTP client sends as ``Authorization: Basic ...``), and the value of every
    sensitive query key (``?token=``). Raw and percent-decoded spellings are both listed;
    :func:`redact_text` adds the other spellings (see :func:`spellings`).

    Args:
        url: a URL or libpq conninfo string.

    Returns:
        The secrets, longest first, without empty strings.
    """
    found: set[str] = set()
    if "://" in url:
        try:
            parts = urlsplit(url)
        except ValueError:
            return []
        userinfo = parts.netloc.rpartition("@")[0]
        if ":" in userinfo:
            user, password = userinfo.split(":", 1)
            found.add(password)
            if password:
                found.update(basic_auth_secrets(unquote(user), unquote(password)))
                found.add(userinfo)
        for pair in parts.query.split("&"):
            key, sep, value = pair.partition("=")
            if sep and is_sensitive_key(unquote(key)):
                found.update((value, unquote_plus(value)))
    else:
        for m in _CONNINFO_PAIR.finditer(url):
            if is_sensitive_key(m.group("key")):
                value = m.group("value")
                found.add(value)
                if value.startswith("'"):
                    found.add(value[1:-1].replace("\\'", "'").replace("\\\\", "\\"))
    found |= {unquote(s) for s in found}
    return sorted((s for s in found if s), key=len, reverse=True)


def basic_auth_secrets(user: str, password: str) -> list[str]:
    """The forms a basic-auth credential takes on the wire: ``user:password`` and its base64.

    The base64 text is listed padded and unpadded, for UTF-8 and Latin-1 (HTTP clients differ),
    so a server that echoes ``Authorization: Basic dXNlcjpw...`` back is masked too.

    Args:
        user: the user name (decoded).
        password: the password (decoded).

    Returns:
        The secrets (the password itself is not among them: list it separately).
    """
    pair = f"{user}:{password}"
    found = {pair}
    for codec in ("utf-8", "latin-1"):
        try:
            raw = pair.encode(codec)
        except UnicodeEncodeError:
            continue
        for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
            text = encoded.decode("ascii")
            found.update((text, text.rstrip("=")))
    return sorted(found, key=len, reverse=True)


def secrets_in_header(name: str, value: str) -> list[str]:
    """The secrets a request header holds, if its name marks it as one.

    ``Authorization``, ``Cookie`` and every header :func:`is_sensitive_key` flags
    (``X-Api-Key``) are secret. For ``Authorization: <scheme> <credentials>`` the credentials
    alone are listed too, and for ``Basic`` the decoded ``user:password`` and the password.

    Args:
        name: the header name.
        value: its value.

    Returns:
        The secrets, or ``[]`` for a harmless header.
    """
    if not value or not (is_sensitive_key(name) or name.lower() == "cookie"):
        return []
    found = {value}
    scheme, _, credentials = value.strip().partition(" ")
    credentials = credentials.strip()
    if credentials:
        found.add(credentials)
        if scheme.lower() == "basic":
            try:
                pair = base64.b64decode(credentials, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                pair = ""
            user, sep, password = pair.partition(":")
            if sep and password:
                found.update((password, *basic_auth_secrets(user, password)))
    return sorted(found, key=len, reverse=True)


def spellings(secret: str) -> set[str]:
    """The ways ``secret`` can appear in text: raw, percent-encoded or decoded, and as it
    shows inside a ``repr`` or a JSON string (backslashes and quotes escaped)."""
    found = {secret, unquote(secret), unquote_plus(secret), quote(secret, safe="")}
    found.add(quote_plus(secret, safe=""))
    for form in tuple(found):
        found.add(repr(form)[1:-1])
        found.add(json.dumps(form)[1:-1])
    return {s for s in found if s}


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask credentials in free text such as a driver's error message.

    Every URL in ``text`` goes through :func:`redact_url`, then every value of ``secrets`` is
    replaced by ``***`` wherever it appears, in each of its :func:`spellings` (raw,
    percent-encoded, decoded, escaped as in a ``repr``). Longer values are masked first, so a
    secret that contains another is hidden whole.

    Args:
        text: the message.
        secrets: values known to be secret (a password, a header value).

    Returns:
        The message with credentials masked.
    """
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    forms: set[str] = set()
    for secret in secrets:
        if secret:
            forms |= spellings(secret)
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, MASK)
    return text


E = TypeVar("E", bound=BaseException)


def carry_secrets(error: E, secrets: Iterable[str]) -> E:
    """Attach ``secrets`` to ``error`` so text about its chain can be redacted later.

    A sink raises its mapped error ``from`` the driver's exception, whose message was not
    redacted; a formatted traceback of the chain (a dead letter's ``error.traceback``) shows
    it. :func:`redact_exception_text` masks every secret carried anywhere in the chain.

    Args:
        error: the error about to be raised.
        secrets: the values to hide (passwords, tokens, header values).

    Returns:
        ``error`` itself.
    """
    values = tuple(s for s in secrets if s)
    if values:
        setattr(error, _CARRIED, values)
    return error


def redact_exception_text(error: BaseException, text: str) -> str:
    """Mask in ``text`` the URLs with credentials and the secrets ``error``'s chain carries.

    Args:
        error: the exception the text describes; its ``__cause__``, ``__context__``,
            ``last_error`` and ``cause`` are searched too.
        text: its message or formatted traceback.

    Returns:
        The text with credentials masked.
    """
    secrets: list[str] = []
    seen: set[int] = set()
    todo: list[object] = [error]
    while todo:
        exc = todo.pop()
        if not isinstance(exc, BaseException) or id(exc) in seen:
            continue
        seen.add(id(exc))
        secrets.extend(getattr(exc, _CARRIED, ()))
        # RetryExhausted.last_error and PartialFailure.cause are chained by attribute
        todo += [exc.__cause__, exc.__context__, getattr(exc, "last_error", None)]
        todo.append(getattr(exc, "cause", None))
    return redact_text(text, secrets)


def error_repr(error: BaseException) -> str:
    """``repr(error)`` with credentials masked, for logs and ``Spool.stats().last_error``."""
    return redact_exception_text(error, repr(error))


def _redact_query(query: str) -> str:
    if not query:
        return query
    out = []
    for pair in query.split("&"):
        key, sep, _value = pair.partition("=")
        if sep and is_sensitive_key(unquote(key)):
            out.append(f"{key}={MASK}")
        else:
            out.append(pair)
    return "&".join(out)


def _redact_conninfo(dsn: str) -> str:
    def mask(m: re.Match[str]) -> str:
        if is_sensitive_key(m.group("key")):
            return f"{m.group('key')}={MASK}"
        return m.group(0)

    return _CONNINFO_PAIR.sub(mask, dsn)


def _redact_userinfo_fallback(url: str) -> str:
    """Mask ``user:password@`` in a URL that ``urlsplit`` rejected."""
    return re.sub(r"(://[^/@:\s]*):[^@/\s]*@", rf"\1:{MASK}@", url)
