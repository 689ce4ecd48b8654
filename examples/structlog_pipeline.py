"""A structlog pipeline that prints to the console and spools every event at the same time.

``SpoolProcessor`` sits after the processors that shape the event (level, UTC timestamp,
exception text) and before the console renderer: each event is put on disk, then rendered.
The spool's sink appends JSON lines to a file, as a shipper to a log service would.

    python examples/structlog_pipeline.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Sequence

import structlog

import spoolkit


class JsonLinesFile:
    """A sink that appends each record's event as one JSON line."""

    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, batch: Sequence[spoolkit.Record]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(r.item, sort_keys=True) + "\n" for r in batch)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "events.jsonl")
        with spoolkit.Spool(os.path.join(tmp, "spool"), JsonLinesFile(out), workers=1) as spool:
            structlog.configure(
                processors=[
                    structlog.contextvars.merge_contextvars,
                    structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.format_exc_info,
                    spoolkit.SpoolProcessor(spool),  # drop=True would skip the console
                    structlog.dev.ConsoleRenderer(colors=False),
                ],
                logger_factory=structlog.PrintLoggerFactory(sys.stdout),
            )
            structlog.contextvars.bind_contextvars(request_id="req-42")
            log = structlog.get_logger().bind(job="nightly-import")
            log.info("import_started", source="s3://bucket/2024-05-01.csv")
            for n in range(3):
                log.info("batch_loaded", batch=n, rows=1000)
            try:
                int("not a number")
            except ValueError:
                log.exception("row_rejected", row=3117)
            log.info("import_finished")
            spool.flush(timeout=30)

        with open(out, encoding="utf-8") as f:
            events = [json.loads(line) for line in f]
        print(f"\n{len(events)} events in {os.path.basename(out)}; the error event as spooled:")
        error = next(e for e in events if e["level"] == "error")
        print(json.dumps(error, indent=2, sort_keys=True))
        ok = len(events) == 6 and all(e["request_id"] == "req-42" for e in events)
        ok = ok and "ValueError" in error["exception"]
        print("every event reached the spool's sink" if ok else "events are missing!")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
