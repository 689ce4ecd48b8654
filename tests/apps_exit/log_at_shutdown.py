"""A script that logs while the interpreter shuts down.

Usage: python tests/apps_exit/log_at_shutdown.py SPOOL SINK_URL

- an ``atexit`` hook registered before ``logging`` is imported logs after
  ``logging.shutdown()`` closed the SpoolHandler;
- an ``atexit`` hook registered after the handler was configured logs before that;
- a daemon thread logs in a loop until the process is gone.

The main thread logs ``main done``, prints ``DONE`` and ends normally.
"""

from __future__ import annotations

import atexit


def too_late() -> None:
    """Runs after logging.shutdown (atexit runs hooks last-registered first)."""
    import logging  # already imported by then: this hook was registered first

    logging.getLogger("app").error("after shutdown")


atexit.register(too_late)

import logging  # noqa: E402 - after the hook above, on purpose
import logging.config  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402


def main() -> None:
    """Configure, start the chatter, register the hook, log, end."""
    path, url = sys.argv[1], sys.argv[2]
    logging.config.dictConfig(
        {
            "version": 1,
            "handlers": {
                "spool": {"class": "spoolkit.SpoolHandler", "spool_or_path": path, "sink": url}
            },
            "root": {"level": "INFO", "handlers": ["spool"]},
        }
    )
    atexit.register(lambda: logging.getLogger("app").warning("from atexit"))
    started = threading.Event()

    def chatter() -> None:
        n = 0
        while True:
            logging.getLogger("app.thread").info("from thread %d", n)
            n += 1
            if n == 50:
                started.set()
            time.sleep(0.001)

    threading.Thread(target=chatter, daemon=True).start()
    assert started.wait(60)
    logging.getLogger("app").info("main done")
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
