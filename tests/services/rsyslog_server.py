"""A throwaway rsyslogd on a loopback port that writes every message it receives to a file.

rsyslogd runs in the foreground (``-n``) with its own config (``-f``), pid file (``-i``) and
work directory, all in a private temp directory: no system-wide state is read or written. The
config loads ``imtcp`` only (no ``/dev/log``, no kernel log) and writes one JSON object per
message received over TCP (``option.jsonf``; rsyslog's own messages go to another ruleset)
holding the raw message and the fields rsyslog parsed from it, so a test can check both what
went over the wire and how a real syslog server understood it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from tests.services._common import RunAs, find_binary, free_port, launch, missing

_CONFIG = """\
global(
  workDirectory="{base}"
  maxMessageSize="256k"
  parser.escapeControlCharactersOnReceive="off"
  parser.dropTrailingLFOnReception="off"
)
module(load="imtcp" maxSessions="200")
input(type="imtcp" address="127.0.0.1" port="{port}" supportOctetCountedFraming="on"
      ruleset="capture")
template(name="capture" type="list" option.jsonf="on") {{
  property(outname="raw" name="rawmsg" format="jsonf")
  property(outname="pri" name="pri" format="jsonf")
  property(outname="facility" name="syslogfacility" format="jsonf")
  property(outname="severity" name="syslogseverity" format="jsonf")
  property(outname="protocol_version" name="protocol-version" format="jsonf")
  property(outname="timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app_name" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="structured_data" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}}
ruleset(name="capture") {{
  action(type="omfile" file="{base}/messages.jsonl" template="capture" flushOnTXEnd="on")
}}
"""


@dataclass
class RsyslogServer:
    """One rsyslogd. ``start()``/``stop()`` may be called again (same port, same file)."""

    binary: str
    base: Path
    user: RunAs
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"syslog+tcp://127.0.0.1:{self.port}"

    @property
    def output(self) -> Path:
        return self.base / "messages.jsonl"

    def start(self, timeout: float = 20.0) -> None:
        """Start rsyslogd and return once its TCP input accepts connections."""
        config = self.base / "rsyslog.conf"
        config.write_text(_CONFIG.format(base=self.base, port=self.port))
        self.user.own(config)
        with (self.base / "rsyslogd.log").open("ab") as log:
            proc = subprocess.Popen(
                self.user.argv(
                    self.binary, "-n", "-f", str(config), "-i", str(self.base / "rsyslogd.pid")
                ),
                cwd=self.base,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.proc = proc
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"rsyslogd exited at start:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError as exc:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"rsyslogd not listening in {timeout}s:\n{self.log()}"
                    ) from exc
                time.sleep(0.02)  # polling a port that is not open yet, not synchronisation

    def log(self) -> str:
        path = self.base / "rsyslogd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def messages(self) -> list[dict[str, Any]]:
        """Every message written so far, oldest first (a last, partial line is left out)."""
        if not self.output.exists():
            return []
        text = self.output.read_text(encoding="utf-8", errors="surrogateescape")
        return [json.loads(line) for line in text.split("\n")[:-1] if line]

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """The messages once ``predicate(messages)`` holds; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.messages()
            if predicate(found):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"rsyslog wrote {len(found)} message(s), condition unmet after {timeout}s; "
                    f"last: {found[-1:]}\n{self.log()}"
                )
            time.sleep(0.02)  # polling the output file with a deadline

    def clear(self) -> None:
        """Forget the messages written so far (the file is truncated in place)."""
        if self.output.exists():
            with self.output.open("r+b") as f:
                f.truncate(0)

    def stop(self) -> None:
        """Stop rsyslogd (SIGTERM, then SIGKILL after 10 s) and wait for it to exit."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def find_rsyslogd() -> str | None:
    return find_binary("rsyslogd", "/usr/sbin/rsyslogd", "/usr/local/sbin/rsyslogd")


def start_rsyslog() -> RsyslogServer:
    """Start an independent rsyslogd; skip or fail (CI=true) when it is not installed."""
    binary = find_rsyslogd()
    if binary is None:
        missing("rsyslogd")
    return launch("spoolkit-rsyslog-", partial(RsyslogServer, binary), RsyslogServer.start)
