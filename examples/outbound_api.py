"""Durable outbound API calls: webhooks that survive an API outage, with ``@spool.deferred``.

The application notifies a partner API of each new order. Calling ``notify(...)`` does not
call the API: it stores the call on disk (fsynced) and returns a handle at once, so the order
code never waits on, or fails because of, the partner. Workers make the real HTTP calls in the
background, retrying with backoff.

The partner API here is a local HTTP server that is down for its first requests (503). The
calls are retried until it is back; each carries an ``Idempotency-Key`` (the order id), which
is how the API recognises a call it already took if one is ever sent twice (at least once).

At the end the script checks that the API received every order, and prints the tally.

    python examples/outbound_api.py
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

import spoolkit

ORDERS = 50
DOWN_FOR = 12  # the partner API answers 503 to its first requests


class PartnerApi(BaseHTTPRequestHandler):
    """A webhook receiver that is down at first, then keeps what it receives by key."""

    lock = threading.Lock()
    requests = 0
    received: dict[str, Any] = {}  # noqa: RUF012 - shared state of this toy server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.lock:
            PartnerApi.requests += 1
            down = PartnerApi.requests <= DOWN_FOR
            if not down:
                self.received.setdefault(self.headers["Idempotency-Key"], json.loads(body))
        self.send_response(503 if down else 204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the console for the script's own output."""


def main() -> int:
    # spoolkit reports each retry on the "spoolkit" logger; show the start of each line
    logging.basicConfig(format="  spoolkit: %(message).90s")
    server = ThreadingHTTPServer(("127.0.0.1", 0), PartnerApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks/orders"

    with tempfile.TemporaryDirectory() as tmp:
        # No sink: this spool only carries deferred calls.
        spool = spoolkit.Spool(
            f"{tmp}/webhooks",
            None,
            workers=2,
            retry=spoolkit.RetryPolicy(
                max_attempts=30, initial_wait=0.05, max_wait=0.5, jitter=0.05
            ),
        )

        @spool.deferred(name="partner.notify_order")
        def notify_order(order_id: int, total: float) -> None:
            response = httpx.post(
                url,
                json={"order": order_id, "total": total},
                headers={"Idempotency-Key": f"order-{order_id}"},
                timeout=5,
            )
            response.raise_for_status()  # a 503 raises: the call is retried later

        spool.start()
        handles = [notify_order(i, round(i * 9.99, 2)) for i in range(ORDERS)]
        print(f"stored {len(handles)} calls; the first is {handles[0].name} id={handles[0].id}")

        delivered = spool.flush(timeout=60)
        stats = spool.stats()
        spool.stop()
    server.shutdown()
    server.server_close()

    got = len(PartnerApi.received)
    print(
        f"partner API: {PartnerApi.requests} requests, {got} orders received; "
        f"retried {stats.retried}, dead-lettered {stats.dead_lettered}"
    )
    if not delivered or got != ORDERS:
        print(f"FAILED: expected {ORDERS} orders", file=sys.stderr)
        return 1
    print("ok: every order reached the partner API, despite its outage")
    return 0


if __name__ == "__main__":
    sys.exit(main())
