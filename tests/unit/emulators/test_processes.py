"""emulators.processes: the ports the launcher, the tests and the bench pick (distinct, free,
and outside the kernel's ephemeral range, where no outgoing connection can take one before
its server binds it), and the one way they stop a process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emulators.processes import EPHEMERAL_RANGE, free_ports, stop_group
from tests.helpers import wait_for


def ephemeral() -> range:
    low, high = (int(n) for n in EPHEMERAL_RANGE.read_text().split())
    return range(low, high + 1)


def test_ports_are_distinct_free_and_below_the_ephemeral_range() -> None:
    if not EPHEMERAL_RANGE.is_file():
        pytest.skip("no /proc ephemeral range on this kernel: the kernel picks the ports")
    ports = free_ports(40)
    assert len(set(ports)) == 40
    assert not [p for p in ports if p in ephemeral()]
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def in_its_own_session(code: str, ready: Path) -> subprocess.Popen[bytes]:
    """``code`` in a session of its own, once it has written ``ready`` (its handlers set)."""
    process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    wait_for(lambda: True if ready.exists() else None, 10, f"{ready.name} from the process")
    return process


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize(
    ("handler", "status"),
    [("lambda *a: sys.exit(3)", 3), ("signal.SIG_IGN", -signal.SIGKILL)],
    ids=["stops-on-sigterm", "ignores-sigterm"],
)
def test_the_leader_s_status_and_sigkill_after_the_grace(
    tmp_path: Path, handler: str, status: int
) -> None:
    ready = tmp_path / "ready"
    process = in_its_own_session(
        f"import signal, sys, time\nsignal.signal(signal.SIGTERM, {handler})\n"
        f"open({str(ready)!r}, 'w').close()\ntime.sleep(30)",
        ready,
    )
    started = time.monotonic()
    assert stop_group(process, 0.5) == status
    assert time.monotonic() - started < 5


def test_what_outlives_the_leader_in_its_group_is_killed(tmp_path: Path) -> None:
    ready = tmp_path / "child.pid"
    process = in_its_own_session(
        "import signal, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(30)'])\n"
        "time.sleep(0.3)\n"  # the child's handler: set once it runs
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        f"open({str(ready)!r}, 'w').write(str(child.pid))\nsignal.pause()",
        ready,
    )
    child = int(ready.read_text())
    assert stop_group(process, 5) == 0
    wait_for(lambda: True if not alive(child) else None, 5, "the child to be killed")
