"""The gateway's client to the Services: HTTP/1.1 keep-alive connections per upstream, each
request written in one go and its answer parsed by httptools (llhttp, as uvicorn's).

This is the whole CPU cost of a gateway hop besides aiohttp's server side: aiohttp's
``ClientSession`` spent ~3x as much per request building its request and response objects,
which made the hop miss its budget (``make bench``: "gateway hop"). Answers are read whole,
as the gateway forwards them: no streaming, no upgrades.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import httptools


@dataclass
class Answer:
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    keep_alive: bool = False


class _Connection(asyncio.Protocol):
    """One connection to an upstream; one request at a time on it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.received = False  # any byte of the current answer yet?
        self._waiter: asyncio.Future[Answer] | None = None
        self._answer = Answer()
        self._parser = httptools.HttpResponseParser(self)
        self._head_only = False

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ConnectionError("the upstream switched protocols"))
        except httptools.HttpParserError as e:
            self._fail(ConnectionError(f"unparseable answer: {e}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(ConnectionError(f"the upstream closed the connection ({exc or 'EOF'})"))

    # -- httptools callbacks ------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        # surrogateescape: bytes that are not UTF-8 go back out as they came (as aiohttp's)
        self._answer.headers.append(
            (name.decode("latin-1"), value.decode("utf-8", "surrogateescape"))
        )

    def on_headers_complete(self) -> None:
        self._answer.status = self._parser.get_status_code()
        if self._head_only:  # an answer to HEAD has no body, whatever its Content-Length
            self._done(keep_alive=False)

    def on_body(self, body: bytes) -> None:
        self._answer.body += body

    def on_message_complete(self) -> None:
        if 100 <= self._answer.status < 200:  # an interim answer: the final one follows
            self._answer = Answer()
            return
        self._done(keep_alive=self._parser.should_keep_alive())

    # -- requests -----------------------------------------------------------------------

    def _done(self, keep_alive: bool) -> None:
        self._answer.keep_alive = keep_alive
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(self._answer)

    def _fail(self, error: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)

    async def request(self, message: bytes, head_only: bool) -> Answer:
        assert self.transport is not None
        self._answer, self._head_only, self.received = Answer(), head_only, False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(message)
        return await self._waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.lost = True


async def _exchange(connection: _Connection, message: bytes, head_only: bool) -> Answer:
    try:
        return await connection.request(message, head_only)
    except BaseException:  # refused, timed out or cancelled mid-answer: the connection is spent
        connection.close()
        raise


class Upstreams:
    """Idle keep-alive connections per upstream (``http://host:port``), reused LIFO."""

    def __init__(self) -> None:
        self._idle: dict[str, list[_Connection]] = {}

    async def request(
        self,
        upstream: str,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> Answer:
        """``method target`` (path and query, as they go on the wire) on ``upstream``; raises
        OSError when it cannot be reached (the caller bounds it with ``asyncio.timeout``)."""
        parts = urlsplit(upstream)
        lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
        lines += [f"{name}: {value}" for name, value in headers]
        lines.append(f"Content-Length: {len(body)}")
        message = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body
        head_only = method == "HEAD"
        connection, reused = await self._connection(upstream, parts.hostname, parts.port)
        try:
            answer = await _exchange(connection, message, head_only)
        except ConnectionError:
            if not (reused and not connection.received):
                raise
            # The upstream had closed the idle connection as we reused it: nothing of the
            # request was answered, so it goes once more, on a new connection.
            connection, _ = await self._connection(upstream, parts.hostname, parts.port, True)
            answer = await _exchange(connection, message, head_only)
        if answer.keep_alive and not connection.lost:
            self._idle.setdefault(upstream, []).append(connection)
        else:
            connection.close()
        return answer

    async def _connection(
        self, upstream: str, host: str | None, port: int | None, fresh: bool = False
    ) -> tuple[_Connection, bool]:
        idle = self._idle.get(upstream, [])
        while idle and not fresh:
            connection = idle.pop()
            if not connection.lost:
                return connection, True
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(_Connection, host or "", port or 80)
        return connection, False

    def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
