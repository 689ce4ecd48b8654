"""An at-least-once ETL worker: a file in, a transform, SQLite out, each row written once.

Extract: the worker reads ``orders.jsonl`` and puts every line into a spool, so the file can
be rotated or deleted as soon as that returns. Transform and load: the spool's worker hands
batches to a sink that turns each order into a row (total computed, currency normalised) and
writes the batch to SQLite in one transaction.

Delivery is at least once: a batch written but not yet acknowledged when something fails is
written again. Here the sink fails on purpose once, *after* committing its first batch (as a
crash between the commit and the acknowledgement would): the batch comes back. The rows stay
right because the write is an idempotent upsert keyed by the record id, which is stable across
retries and restarts (``INSERT ... ON CONFLICT(record_id) DO UPDATE``).

At the end the script checks that the table holds exactly one row per input line.

    python examples/etl_worker.py
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import spoolkit
from spoolkit.errors import TransientError

LINES = 1000


def write_input(path: str) -> None:
    """A file of orders, one JSON object per line, as an upstream system would drop it."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(LINES):
            order = {"order": i, "qty": 1 + i % 5, "unit_price": f"{3 + i % 7}.50", "cur": "eur"}
            f.write(json.dumps(order) + "\n")


def extract(path: str, spool: spoolkit.Spool) -> int:
    """Put every line of the file into the spool; the file is no longer needed after this."""
    with open(path, encoding="utf-8") as f:
        orders = [json.loads(line) for line in f if line.strip()]
    spool.put_many(orders)
    return len(orders)


def transform(record: spoolkit.Record) -> tuple[Any, ...]:
    """One order to one row: the record id (the idempotency key) and the computed fields."""
    o = record.item
    total = round(o["qty"] * float(o["unit_price"]), 2)
    return (record.id, o["order"], o["qty"], total, o["cur"].upper())


class SqliteSink:
    """Upserts each batch into ``orders`` in one transaction; fails once after a commit."""

    def __init__(self, db: str) -> None:
        self.db = db
        self.batches = 0
        self.rows_written = 0
        self.fail_once_after_commit = True

    def open(self) -> None:
        with sqlite3.connect(self.db) as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS orders (record_id TEXT PRIMARY KEY, "
                "order_no INTEGER, qty INTEGER, total REAL, currency TEXT)"
            )

    def write(self, batch: Sequence[spoolkit.Record]) -> None:
        rows = [transform(r) for r in batch]
        conn = sqlite3.connect(self.db)
        try:
            with conn:  # one transaction: all rows of the batch or none
                conn.executemany(
                    "INSERT INTO orders VALUES (?, ?, ?, ?, ?) ON CONFLICT(record_id) DO UPDATE "
                    "SET order_no=excluded.order_no, qty=excluded.qty, total=excluded.total, "
                    "currency=excluded.currency",
                    rows,
                )
        finally:
            conn.close()
        self.batches += 1
        self.rows_written += len(rows)
        if self.fail_once_after_commit:
            self.fail_once_after_commit = False
            raise TransientError("simulated crash after commit, before the acknowledgement")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "orders.jsonl")
        db = os.path.join(tmp, "warehouse.db")
        write_input(source)

        sink = SqliteSink(db)
        spool = spoolkit.Spool(
            os.path.join(tmp, "spool"),
            sink,
            workers=1,  # SQLite takes one writer at a time
            batch_size=200,
            serializer="json",
            retry=spoolkit.RetryPolicy(initial_wait=0.05, jitter=0),
        )
        spool.start()
        n = extract(source, spool)
        os.unlink(source)  # safe: every line is on disk in the spool
        done = spool.flush(timeout=60)
        spool.stop()

        with sqlite3.connect(db) as conn:
            rows, distinct, total = conn.execute(
                "SELECT COUNT(*), COUNT(DISTINCT order_no), ROUND(SUM(total), 2) FROM orders"
            ).fetchone()
        conn.close()

    print(f"extracted {n} lines; the sink wrote {sink.rows_written} rows in {sink.batches} batches")
    print(f"table: {rows} rows, {distinct} distinct orders, revenue {total}")
    if not done or rows != LINES or distinct != LINES:
        print(f"FAILED: expected {LINES} rows", file=sys.stderr)
        return 1
    print("ok: one row per order, although one batch was written twice")
    return 0


if __name__ == "__main__":
    sys.exit(main())
