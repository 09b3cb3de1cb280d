"""Processes and ports on loopback, as the launcher, the tests and the bench use them: ports
that are free and stay free until their server binds them, and one way to stop a process
group.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 10000


def _below_ephemeral() -> range:
    """Ports under the kernel's ephemeral range. A port picked there is never the local port
    of an outgoing connection (every keep-alive client on loopback holds one), which could
    take a port picked from the ephemeral range before its server binds it."""
    try:
        first = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return range(0)
    return range(LOWEST_PORT, first) if first > LOWEST_PORT + 1000 else range(0)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports free now: each socket stays bound until all are picked, so no
    port is handed out twice. Taken under the ephemeral range where the kernel says where that
    is, else wherever the kernel picks."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    candidates = random.sample(_below_ephemeral(), min(len(_below_ephemeral()), 50 * count))
    with contextlib.ExitStack() as stack:
        bound: list[socket.socket] = []
        for port in [*candidates, *[0] * count]:
            if len(bound) == count:
                break
            s = stack.enter_context(socket.socket(family))
            try:
                s.bind((host, port))
            except OSError:
                continue
            bound.append(s)
        return [int(s.getsockname()[1]) for s in bound]


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    """A socket listening on a free port, held from now on: no later pick can take its port."""
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, free_port(host)))
    s.listen(1024)
    return s


def stop_group(process: subprocess.Popen[Any], grace: float) -> int:
    """Stop a process started in a session of its own, and everything in its group: SIGTERM,
    SIGKILL after ``grace`` seconds, then SIGKILL to whatever outlived the leader (a worker
    or a child server would keep its port). The leader's exit status."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    return process.returncode


def spawn(
    command: list[str], env: Mapping[str, str], cwd: Path, stderr: int = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    """``command`` in a session of its own (``stop_group`` stops its whole tree), with ``env``
    over this process's environment, its output discarded (``stderr`` may be a pipe)."""
    return subprocess.Popen(
        command,
        env={**os.environ, **env},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,
    )
