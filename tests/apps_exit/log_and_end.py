"""A script that logs through a dictConfig'd SpoolHandler on the root logger and just ends.

Usage: python tests/apps_exit/log_and_end.py SPOOL SINK_URL COUNT CLOSE_TIMEOUT

Logs ``record 0`` .. ``record <COUNT-1>`` (logger ``app``, INFO), prints ``LOGGED`` and ends
normally: no ``close()``, no ``logging.shutdown()`` of its own.
"""

from __future__ import annotations

import logging
import logging.config
import sys


def main() -> None:
    """Configure, log, end."""
    path, url, count, close_timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "spool": {
                    "class": "spoolkit.SpoolHandler",
                    "spool_or_path": path,
                    "sink": url,
                    "close_timeout": float(close_timeout),
                }
            },
            "root": {"level": "INFO", "handlers": ["spool"]},
        }
    )
    log = logging.getLogger("app")
    for i in range(count):
        log.info("record %d", i)
    print("LOGGED", flush=True)


if __name__ == "__main__":
    main()
