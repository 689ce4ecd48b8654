"""A program that makes a SpoolHandler, then ``os.fork()``s children that log through it.

Usage: python tests/apps/fork_children.py SPOOL URL COUNT CHILDREN OUTDIR

The parent makes ``SpoolHandler(SPOOL, sink=URL)`` on the ``forked`` logger and logs one
record, then forks CHILDREN children. Child ``c`` sends its stderr to ``OUTDIR/child-c.err``,
logs COUNT records (``extra={"rid": "c<c>-<i>"}``) and ends with ``sys.exit(0)``: a normal
exit (atexit, ``logging.shutdown``), never ``close()``. The parent logs COUNT records
(``p-<i>``) meanwhile, waits for its children, prints their exit statuses as a JSON list, then
waits for stdin to close and exits normally.
"""

from __future__ import annotations

import json
import logging
import os
import sys

import spoolkit


def main() -> None:
    """Fork, log, wait."""
    spool, url, count, children, outdir = sys.argv[1:6]
    log = logging.getLogger("forked")
    log.addHandler(spoolkit.SpoolHandler(spool, sink=url))
    log.setLevel(logging.INFO)
    log.propagate = False
    log.info("before the fork", extra={"rid": "p-before"})
    pids = []
    for c in range(int(children)):
        pid = os.fork()
        if pid == 0:
            err = os.open(os.path.join(outdir, f"child-{c}.err"), os.O_WRONLY | os.O_CREAT, 0o600)
            os.dup2(err, 2)
            for i in range(int(count)):
                log.info("child %d record %d", c, i, extra={"rid": f"c{c}-{i}"})
            sys.exit(0)
        pids.append(pid)
    for i in range(int(count)):
        log.info("parent record %d", i, extra={"rid": f"p-{i}"})
    statuses = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    print(json.dumps(statuses), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
