"""A program whose ``multiprocessing`` pool workers log through a SpoolHandler.

Usage: python tests/apps/mp_children.py METHOD SPOOL URL TASKS COUNT

METHOD is ``fork`` (the pool's workers inherit the parent's handler) or ``spawn`` (each
worker makes its own ``SpoolHandler`` on the same path in the pool's initializer). The parent
makes its handler, logs COUNT records (``parent-<i>``), and runs TASKS tasks on a pool of 3
workers; task ``t`` logs COUNT records (``t<t>-<i>``) and returns its pid. Pool workers end with
``os._exit`` (no atexit): what they leave undelivered waits in lanes nobody holds, for the
parent to adopt. The parent prints the worker pids as a JSON list, then waits for stdin to
close and exits normally.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys

import spoolkit

log = logging.getLogger("mp")


def setup(spool: str, url: str) -> None:
    """Attach a SpoolHandler for ``spool`` to the ``mp`` logger."""
    log.addHandler(spoolkit.SpoolHandler(spool, sink=url))
    log.setLevel(logging.INFO)
    log.propagate = False


def task(t: int, count: int) -> int:
    """Log ``count`` records for task ``t``; the worker's pid."""
    for i in range(count):
        log.info("task %d record %d", t, i, extra={"rid": f"t{t}-{i}"})
    return os.getpid()


def main() -> None:
    """Run the pool, wait for it, then for stdin to close."""
    method, spool, url, tasks, count = (
        sys.argv[1],
        sys.argv[2],
        sys.argv[3],
        *map(int, sys.argv[4:6]),
    )
    setup(spool, url)
    context = multiprocessing.get_context(method)
    init = (setup, (spool, url)) if method == "spawn" else (None, ())
    with context.Pool(3, initializer=init[0], initargs=init[1]) as pool:
        results = pool.starmap_async(task, [(t, count) for t in range(tasks)])
        for i in range(count):
            log.info("parent record %d", i, extra={"rid": f"parent-{i}"})
        pids = sorted(set(results.get(120)))
        pool.close()
        pool.join()
    print(json.dumps(pids), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
