"""A real redis-server on a free loopback port, for the job store's tests: stopped, killed,
frozen and restarted by its pid."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest

from tests.helpers import free_port, wait_for

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


NO_PERSISTENCE = ("--save", "", "--appendonly", "no")


class RedisServer:
    """One redis-server, by default without persistence (a restart comes back empty), on the
    same port across restarts; ``args`` replace the persistence arguments."""

    def __init__(self, args: Sequence[str] = NO_PERSISTENCE) -> None:
        if not shutil.which(REDIS_SERVER):
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.args = list(args)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        import redis

        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        try:
            wait_for(lambda: _pong(client), 10, "redis-server to answer PING")
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL by pid: connections are refused from then on."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def restart(self) -> None:
        """Killed and started again on the same port (without persistence: empty)."""
        self.kill()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: connections are taken and commands wait (a client times out), and run
        once ``thaw`` sends SIGCONT."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            self.thaw()
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@contextmanager
def redis_server() -> Iterator[str]:
    """``redis://127.0.0.1:<port>/0`` of a fresh server without persistence."""
    with running_redis() as server:
        yield server.url


@contextmanager
def running_redis(args: Sequence[str] = NO_PERSISTENCE) -> Iterator[RedisServer]:
    server = RedisServer(args)
    try:
        yield server
    finally:
        server.stop()


def _pong(client: object) -> bool | None:
    import redis

    try:
        return True if client.ping() else None  # type: ignore[attr-defined]
    except redis.ConnectionError:
        return None
