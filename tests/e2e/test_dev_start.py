"""What ``make dev`` says when it cannot start: a port already in use is one line that names
the port and the way out, at once, before any Service is started (no traceback)."""

from __future__ import annotations

import socket
import time

import pytest

from tests.helpers import run_module

pytestmark = pytest.mark.e2e


def test_a_port_in_use_is_one_line_naming_it_and_the_way_out() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        started = time.monotonic()
        result = run_module("emulators.dev", "--port", str(port), timeout=60)
    assert result.returncode == 2
    assert time.monotonic() - started < 10  # nothing was started: no wait on any Service
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert f"port {port} on 127.0.0.1 is in use" in line
    assert f"make dev PORT={port + 1}" in line
