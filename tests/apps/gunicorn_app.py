"""A WSGI app for gunicorn whose module makes a SpoolHandler at import (in the master with
``--preload``, before the workers fork) and logs one record per request.

Environment: ``SPOOLKIT_TEST_SPOOL`` (the spool directory), ``SPOOLKIT_TEST_SINK`` (the
collector's URL) and, optionally, ``SPOOLKIT_TEST_CLOSE_TIMEOUT`` (the handler's
``close_timeout``; the library's default otherwise) and ``SPOOLKIT_TEST_PRODUCER_ONLY=1`` (a
producer-only handler, ``consume=False``: a separate ``spoolkit ship`` delivers). The
request id is the query string; the answer is ``<request id> <pid>``.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
from collections.abc import Callable, Iterable
from typing import Any

import spoolkit

# Every thread's Python stack to stderr on this signal (gunicorn's workers reset USR1 and USR2):
# what a test sends a worker that does not end, before it kills it.
DUMP_SIGNAL = signal.SIGRTMIN + 3
faulthandler.register(DUMP_SIGNAL, all_threads=True)

_options: dict[str, Any] = {}
if "SPOOLKIT_TEST_CLOSE_TIMEOUT" in os.environ:
    _options["close_timeout"] = float(os.environ["SPOOLKIT_TEST_CLOSE_TIMEOUT"])
if os.environ.get("SPOOLKIT_TEST_PRODUCER_ONLY") == "1":
    _options["spool_options"] = {"consume": False}
handler = spoolkit.SpoolHandler(
    os.environ["SPOOLKIT_TEST_SPOOL"], sink=os.environ["SPOOLKIT_TEST_SINK"], **_options
)
log = logging.getLogger("tests.apps.gunicorn_app")
log.addHandler(handler)
log.setLevel(logging.INFO)
log.propagate = False
log.info("app loaded", extra={"rid": "import"})


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Log the request id (the query string), then answer ``<request id> <pid>``."""
    rid = environ.get("QUERY_STRING", "")
    log.info("request %s", rid, extra={"rid": rid})
    body = f"{rid} {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
