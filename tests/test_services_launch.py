"""The test servers' start-up: a port taken between choosing and binding it is tried again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services._common import RunAs, launch


@dataclass
class _Fake:
    base: Path
    user: RunAs


def test_a_boot_that_lost_its_port_is_tried_again_on_a_new_server() -> None:
    """eaddrinuse at boot: a new server (new directory, new ports) boots; the first directory
    is removed."""
    booted: list[_Fake] = []

    def boot(server: _Fake) -> None:
        booted.append(server)
        if len(booted) == 1:
            raise RuntimeError("listen_error ... eaddrinuse (address already in use)")

    server = launch("spoolkit-fake-", _Fake, boot)
    try:
        assert server is booted[1]
        assert not booted[0].base.exists()
    finally:
        server.base.rmdir()


def test_any_other_boot_failure_is_raised_at_once() -> None:
    """A failure that is not a taken port is not retried."""
    calls: list[_Fake] = []

    def boot(server: _Fake) -> None:
        calls.append(server)
        raise RuntimeError("bad config")

    with pytest.raises(RuntimeError, match="bad config"):
        launch("spoolkit-fake-", _Fake, boot)
    assert len(calls) == 1
