"""A real redis-server on a free loopback port, for the job store's tests (stopped by pid)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.helpers import free_port, wait_for

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@contextmanager
def redis_server() -> Iterator[str]:
    """``redis://127.0.0.1:<port>/0`` of a fresh server without persistence."""
    if not shutil.which(REDIS_SERVER):
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    import redis

    port = free_port()
    process = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        try:
            wait_for(lambda: _pong(client), 10, "redis-server to answer PING")
        finally:
            client.close()
        yield url
    finally:
        process.terminate()
        process.wait(10)


def _pong(client: object) -> bool | None:
    import redis

    try:
        return True if client.ping() else None  # type: ignore[attr-defined]
    except redis.ConnectionError:
        return None
