"""A process with a Spool on a shared path, for the multi-process tests.

Usage: python tests/apps/spool_proc.py SPOOL URL [options]

Opens ``Spool(SPOOL, HttpSink(URL), serializer="json")`` and starts it, prints
``open <lanes held, JSON>``, then (with ``--wait-go``) waits for a line on stdin, puts
``--count`` records ``{"src": NAME, "n": i}`` and prints ``done``. With ``--progress FILE`` it
appends ``NAME-i`` to FILE (one ``write``, no buffering: it survives a kill -9 of this process)
after each put returned. With ``--hold`` it then waits for stdin to close; with ``--flush S``
it waits up to S seconds for everything to be delivered and exits 1 if that did not happen.
It ends with a normal interpreter exit (no ``stop()``): the exit hook stops the spool.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import spoolkit
from spoolkit.sinks import HttpSink


def main() -> int:
    """Run as the options say; the exit status."""
    parser = argparse.ArgumentParser()
    parser.add_argument("spool")
    parser.add_argument("url")
    parser.add_argument("--name", default=f"p{os.getpid()}")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--no-consume", dest="consume", action="store_false")
    parser.add_argument("--progress")
    parser.add_argument("--wait-go", action="store_true")
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--flush", type=float)
    args = parser.parse_args()

    spool = spoolkit.Spool(args.spool, HttpSink(args.url), serializer="json", consume=args.consume)
    spool.start()
    print("open", json.dumps(spool.lanes_held()), flush=True)
    if args.wait_go:
        sys.stdin.readline()
    progress = (
        os.open(args.progress, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if args.progress
        else None
    )
    for i in range(args.count):
        spool.put({"src": args.name, "n": i})
        if progress is not None:
            os.write(progress, f"{args.name}-{i}\n".encode())
    print("done", flush=True)
    if args.hold:
        sys.stdin.read()
    if args.flush is not None and not spool.flush(timeout=args.flush):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
