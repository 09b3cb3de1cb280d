"""Keep-alive HTTP/1.1 connections to the backends over the stdlib's ``http.client``.

A fan-out pays one client call per backend on every request, under one GIL: ``httpx``
spends about 0.6 ms of CPU per call here, ``http.client`` about 0.2 ms (``make bench``
and docs/fanout.md). Connections are kept per (host, port), reused last-in first-out, and
dropped when the server has closed them (checked before reuse, as httpcore does). Calls to
cluster-local hosts go to ``CLUSTER_LOCAL_GATEWAY`` with their Host header, as
``functions.core.client`` does for httpx.
"""

from __future__ import annotations

import http.client
import select
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from functions.core.client import CLUSTER_LOCAL_SUFFIXES

Connection = http.client.HTTPConnection


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    content_type: str
    body: bytes


class ConnectionPool:
    """Thread-safe; at most ``size`` idle connections kept per (scheme, host, port)."""

    def __init__(self, size: int = 64, cluster_local_gateway: str | None = None) -> None:
        self.size = size
        self._gateway = urlsplit(cluster_local_gateway) if cluster_local_gateway else None
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self._lock = threading.Lock()

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
    ) -> Reply:
        """One exchange; ``OSError`` (``TimeoutError`` included) or ``HTTPException`` on failure."""
        parts = urlsplit(url)
        via = parts
        if self._gateway is not None and (parts.hostname or "").endswith(CLUSTER_LOCAL_SUFFIXES):
            via = self._gateway
        scheme = via.scheme or "http"
        key = (scheme, via.hostname or "", via.port or (443 if scheme == "https" else 80))
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        all_headers = {**headers, "Host": parts.netloc}
        if body is not None:
            all_headers["Content-Type"] = "application/json"
        conn = self._take(key) or self._connect(key, timeout)
        try:
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            conn.request(method, path, body=body, headers=all_headers)
            response = conn.getresponse()
            data = response.read()
        except BaseException:
            conn.close()
            raise
        if response.will_close:
            conn.close()
        else:
            self._give(key, conn)
        content_type = response.getheader("Content-Type", "")
        return Reply(response.status, response.reason, content_type, data)

    def close(self) -> None:
        with self._lock:
            idle = [c for conns in self._idle.values() for c in conns]
            self._idle.clear()
        for conn in idle:
            conn.close()

    def _connect(self, key: tuple[str, str, int], timeout: float) -> Connection:
        scheme, host, port = key
        cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        return cls(host, port, timeout=timeout)

    def _take(self, key: tuple[str, str, int]) -> Connection | None:
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                conn = idle.pop()
            if conn.sock is not None and not _closed_by_peer(conn):
                return conn
            conn.close()

    def _give(self, key: tuple[str, str, int], conn: Connection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.size:
                idle.append(conn)
                return
        conn.close()


def _closed_by_peer(conn: Connection) -> bool:
    """An idle keep-alive socket that is readable has been closed (or sent garbage)."""
    assert conn.sock is not None
    readable, _, _ = select.select([conn.sock], [], [], 0)
    return bool(readable)
