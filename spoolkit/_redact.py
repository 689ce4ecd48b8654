"""Hide credentials in URLs, DSNs and messages before they reach a repr, a log or an error.

Sinks describe themselves (``repr``, ``SinkError.sink``, error messages) only through these
helpers, so a password in ``postgresql://app:s3cret@db/app`` or a token in
``https://api.example.com/ingest?token=abc`` never shows up in a log line or a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = [
    "MASK",
    "carry_secrets",
    "error_repr",
    "is_sensitive_key",
    "redact_exception_text",
    "redact_text",
    "redact_url",
    "secrets_in_url",
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
    """List the secret values ``url`` holds: its password and sensitive query values.

    Both the raw and the percent-decoded spellings are listed, so :func:`redact_text` can hide
    them in driver messages that echo either.

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
            found.add(userinfo.split(":", 1)[1])
        for pair in parts.query.split("&"):
            key, sep, value = pair.partition("=")
            if sep and is_sensitive_key(unquote(key)):
                found.add(value)
    else:
        for m in _CONNINFO_PAIR.finditer(url):
            if is_sensitive_key(m.group("key")):
                value = m.group("value")
                found.add(value)
                if value.startswith("'"):
                    found.add(value[1:-1].replace("\\'", "'").replace("\\\\", "\\"))
    found |= {unquote(s) for s in found}
    return sorted((s for s in found if s), key=len, reverse=True)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask credentials in free text such as a driver's error message.

    Every URL in ``text`` goes through :func:`redact_url`, then every value of ``secrets`` is
    replaced by ``***`` wherever it appears.

    Args:
        text: the message.
        secrets: values known to be secret (a password, a header value).

    Returns:
        The message with credentials masked.
    """
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
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
