"""Attach a SpoolHandler to the root logger, in front of a sink that keeps failing: nothing is lost.

The application logs 200 records at INFO. They go to the root logger, whose SpoolHandler puts
each one on disk and returns; a worker hands them to the sink in batches. The sink fails about
a third of its writes; the spool retries them. spoolkit's own warnings about those retries
reach the root logger too, and the console shows them, but the handler keeps them out of the
spool (a failing sink must not feed records about itself back into it).

At the end the script checks that every record reached the sink exactly once.

    python examples/logging_handler.py
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile

import spoolkit
from spoolkit.testing import FlakySink

RECORDS = 200


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        sink = FlakySink(fail_rate=0.3, seed=7)  # fails ~30% of write() calls
        spool = spoolkit.Spool(
            os.path.join(tmp, "spool"),
            sink,
            workers=1,
            batch_size=20,
            batch_interval=0.05,
            retry=spoolkit.RetryPolicy(max_attempts=50, initial_wait=0.01, multiplier=1, jitter=0),
        )

        console = logging.StreamHandler(sys.stdout)
        console.setLevel(logging.WARNING)  # spoolkit's retry warnings; app INFO logs stay quiet
        console.setFormatter(logging.Formatter("console: %(levelname)s %(name)s %(message)s"))
        root = logging.getLogger()
        root.setLevel(logging.INFO)
        root.addHandler(console)
        handler = spoolkit.SpoolHandler(spool)  # a ready spool: we start and stop it ourselves
        root.addHandler(handler)

        log = logging.getLogger("shop")
        with spool:  # starts the workers; stops them (after draining) on exit
            for i in range(RECORDS):
                log.info("order %d placed", i, extra={"order_id": i, "total": 9.99})
            delivered_in_time = spool.flush(timeout=60)

        items = [r.item for r in sink.records]
        ids = sorted(item["extra"]["order_id"] for item in items)
        print(f"logged {RECORDS} records; the sink failed {sink.failures} of {sink.calls} writes")
        print(f"delivered {len(items)} records, loggers: {sorted({i['logger'] for i in items})}")
        print(f"spoolkit's own records kept out of the spool: {handler.skipped}")
        print("first record:", items[0] if items else None)
        root.removeHandler(handler)
        if delivered_in_time and ids == list(range(RECORDS)):
            print("nothing lost, nothing duplicated")
            return 0
        print("records are missing or duplicated!")
        return 1


if __name__ == "__main__":
    sys.exit(main())
