"""Outbound HTTP: the one client every function uses to call another Service or an event sink.

Keep-alive HTTP/1.1 connections, pooled per (scheme, host, port) and reused last-in first-out,
with the request written in one ``sendall`` and the answer parsed by httptools (llhttp, as
uvicorn uses). A proxy pays one outbound call per hop on every request, under one GIL: httpx
spent ~0.6 ms of CPU per call here and ``http.client`` ~0.2 ms, most of it building headers
and parsing the answer's through the ``email`` package (``make bench``, docs/fanout.md).

Every call has a deadline for the whole exchange. A connection the server closed while idle
is dropped before reuse (as httpcore does); one that fails before any byte of the answer is
retried once on a new connection, since the server closed it between the check and the send.

Knative URLs (``http://<svc>.<ns>.svc.cluster.local``) are the same in every manifest; where
no cluster DNS resolves them (the local platform), ``cluster_local_gateway`` names the
ingress that routes by Host header, as ``knative-local-gateway`` does in a cluster: such calls
are sent there with their original Host.

``Client.call`` is the form proxies use: it forwards the request id (``X-Request-Id``, so
one ``job_id`` ties every hop together) and the W3C trace context, and turns failures into
the domain's problems (504 on a timeout, 503 when the Service cannot be reached).
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httptools
import orjson
from werkzeug.datastructures import Headers

from functions.core.errors import GatewayTimeout, ServiceUnavailable
from functions.core.http import REQUEST_ID_HEADER

PROPAGATED = ("traceparent", "tracestate")
CLUSTER_LOCAL_SUFFIXES = (".svc.cluster.local", ".svc")

Key = tuple[str, str, int]  # (scheme, host, port) connected to


class BadReply(ConnectionError):
    """The server's bytes were not an HTTP/1.1 response (or it closed mid-answer)."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    reason: str
    headers: dict[str, str]  # names in lower case; repeated fields joined by ", "
    body: bytes

    def json(self) -> Any:
        """The body as JSON (``orjson.JSONDecodeError``, a ``ValueError``, if it is not)."""
        return orjson.loads(self.body)


@dataclass(frozen=True, slots=True)
class _Target:
    key: Key
    host: str  # the Host header: the URL's own, also when sent through the gateway
    path: str


@dataclass(slots=True)
class _ReplyParser:
    """httptools' callbacks for one response."""

    head_only: bool
    reason: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    body: list[bytes] = field(default_factory=list)
    headers_done: bool = False
    complete: bool = False
    keep_alive: bool = False
    parser: Any = None

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def ends_at_close(self) -> bool:
        """A body with neither a length nor chunks ends where the connection does."""
        framed = "content-length" in self.headers or "transfer-encoding" in self.headers
        self.complete = self.headers_done and not framed
        return self.complete

    def on_headers_complete(self) -> None:
        self.headers_done = True
        if self.head_only:  # a HEAD answer has no body, whatever its Content-Length says
            self.complete, self.keep_alive = True, self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        # Asked here: once the callback has returned, llhttp has reset what it knew.
        self.complete, self.keep_alive = True, self.parser.should_keep_alive()


_clients: weakref.WeakSet[Client] = weakref.WeakSet()


class Client:
    """Thread-safe; at most ``max_idle`` idle connections kept per (scheme, host, port)."""

    def __init__(self, max_idle: int = 64, cluster_local_gateway: str | None = None) -> None:
        self.max_idle = max_idle
        self._gateway = urlsplit(cluster_local_gateway) if cluster_local_gateway else None
        self._idle: dict[Key, list[socket.socket]] = {}
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None
        self._targets: dict[str, _Target] = {}
        _clients.add(self)

    def request(
        self,
        method: str,
        url: str,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        json: Any = None,
    ) -> Reply:
        """One exchange within ``timeout`` seconds: ``TimeoutError`` past it, another
        ``OSError`` (``BadReply`` included) when the server cannot be reached or answered
        no HTTP. ``json``, if given, is the body. Header values must not hold CR or LF
        (``ValueError``)."""
        if json is not None:
            headers = {**(headers or {}), "Content-Type": "application/json"}
            body = orjson.dumps(json)
        target = self._target(url)
        message = _message(method, target, headers or {}, body)
        head_only, deadline = method == "HEAD", time.monotonic() + timeout
        sock = self._take(target.key)
        if sock is not None:
            try:
                return self._exchange(sock, target.key, message, head_only, deadline, reused=True)
            except _Stale:
                pass  # the server closed it between the check and the send: once more, anew
        sock = self._connect(target.key, _left(deadline))
        return self._exchange(sock, target.key, message, head_only, deadline, reused=False)

    def call(
        self,
        method: str,
        url: str,
        rid: str,
        *,
        seconds: float,
        incoming: Headers | Mapping[str, str] | None = None,
        json: Any = None,
    ) -> Reply:
        """A call made on behalf of request ``rid``: its id and trace context forwarded, a
        JSON body if given; a timeout is a 504 problem, an unreachable Service a 503."""
        headers = forwarded_headers(rid, incoming)
        try:
            return self.request(method, url, timeout=seconds, headers=headers, json=json)
        except TimeoutError as e:
            raise GatewayTimeout(f"{url} did not answer within {seconds:g}s") from e
        except OSError as e:
            raise ServiceUnavailable(f"{url} is unreachable: {type(e).__name__}") from e

    def close(self) -> None:
        with self._lock:
            idle = [s for socks in self._idle.values() for s in socks]
            self._idle.clear()
        for sock in idle:
            sock.close()

    # -- connections ---------------------------------------------------------------------

    def _target(self, url: str) -> _Target:
        if (known := self._targets.get(url)) is not None:
            return known
        if len(self._targets) >= 1024:  # a proxy forwarding any path: keep the cache bounded
            self._targets.clear()
        self._targets[url] = found = self._resolve(url)
        return found

    def _resolve(self, url: str) -> _Target:
        parts = urlsplit(url)
        via = parts
        if self._gateway is not None and (parts.hostname or "").endswith(CLUSTER_LOCAL_SUFFIXES):
            via = self._gateway
        scheme = via.scheme or "http"
        if scheme not in ("http", "https"):
            raise ValueError(f"{url}: not an http(s) URL")
        port = via.port or (443 if scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return _Target((scheme, via.hostname or "", port), parts.netloc, path)

    def _connect(self, key: Key, timeout: float) -> socket.socket:
        scheme, host, port = key
        sock = socket.create_connection((host, port), timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            sock = self._tls.wrap_socket(sock, server_hostname=host)
        return sock

    def _take(self, key: Key) -> socket.socket | None:
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                sock = idle.pop()
            if not _closed_by_peer(sock):
                return sock
            sock.close()

    def _give(self, key: Key, sock: socket.socket) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.max_idle:
                idle.append(sock)
                return
        sock.close()

    def _exchange(
        self,
        sock: socket.socket,
        key: Key,
        message: bytes,
        head_only: bool,
        deadline: float,
        *,
        reused: bool,
    ) -> Reply:
        answer = _ReplyParser(head_only)
        answer.parser = httptools.HttpResponseParser(answer)
        received = False
        try:
            sock.settimeout(_left(deadline))
            sock.sendall(message)
            while not answer.complete:
                sock.settimeout(_left(deadline))
                data = sock.recv(65536)
                if not data:
                    if answer.ends_at_close():
                        break
                    raise BadReply("the server closed the connection before answering")
                received = True
                answer.parser.feed_data(data)
        except TimeoutError:
            sock.close()
            raise
        except (OSError, httptools.HttpParserError) as e:
            sock.close()
            if reused and not received:
                raise _Stale from e
            if isinstance(e, OSError):
                raise
            raise BadReply(f"not an HTTP answer: {e}") from e
        if answer.keep_alive:
            self._give(key, sock)
        else:
            sock.close()
        return Reply(
            answer.parser.get_status_code(),
            answer.reason.decode("latin-1"),
            answer.headers,
            b"".join(answer.body),
        )


class _Stale(Exception):
    """A kept connection failed before any byte of the answer: worth one retry on a new one."""


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("no answer before the deadline")
    return left


def _message(method: str, target: _Target, headers: Mapping[str, str], body: bytes | None) -> bytes:
    lines = [f"{method} {target.path} HTTP/1.1\r\nHost: {target.host}\r\n"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} holds a line break")
        lines.append(f"{name}: {value}\r\n")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}\r\n")
    lines.append("\r\n")
    head = "".join(lines).encode("latin-1", "replace")
    return head + body if body else head


def _closed_by_peer(sock: socket.socket) -> bool:
    """An idle keep-alive socket that is readable has been closed (or sent garbage)."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def _forget_inherited() -> None:
    """A forked child must not share its parent's connections: it drops its copies."""
    for client in list(_clients):
        with client._lock:
            idle, client._idle = client._idle, {}
        for socks in idle.values():
            for sock in socks:
                sock.close()


os.register_at_fork(after_in_child=_forget_inherited)


def trace_context(incoming: Headers | Mapping[str, str]) -> dict[str, str]:
    """The W3C trace context in ``incoming``, unchanged, named in lower case.

    Header names are case-insensitive, and a server hands them over in any case (werkzeug's
    ``dict(request.headers)`` has ``Traceparent``), so they are matched regardless of case."""
    return {name: v for k, v in incoming.items() if (name := k.lower()) in PROPAGATED and v}


def forwarded_headers(
    rid: str, incoming: Headers | Mapping[str, str] | None = None
) -> dict[str, str]:
    """Headers for a call made on behalf of request ``rid`` (and its incoming trace context):
    every proxy builds its outbound headers here."""
    headers = {REQUEST_ID_HEADER: rid}
    if incoming:
        headers.update(trace_context(incoming))
    return headers
