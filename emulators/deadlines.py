"""Read deadlines for the gateway's listeners: slow clients (slowloris) are cut off.

aiohttp's server bounds an idle kept-alive connection (``keepalive_timeout``) but has no
deadline on reading a request head: a client that sends one header byte every few seconds
holds its connection (and a file descriptor) for as long as it likes. ``runner`` builds an
``AppRunner`` whose connections are ``HeaderDeadline`` protocols: from the moment a
connection opens, or the first byte of a next request arrives, the whole head must be in
within ``ReadTimeouts.headers`` seconds, else the connection is answered a 408 problem+json
(when part of a head came; a connection that sent nothing is just closed, as there is no
request to answer) and closed. The body's deadline is the application's (the gateway reads
the body under ``ReadTimeouts.body``), since aiohttp reads a body only when a handler asks.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from functions.core.errors import PROBLEM_CONTENT_TYPE, RequestTimeout, problem_body

MAX_HEADER_TIMEOUT = 60.0  # the bound: no client holds a head open longer


@dataclass(frozen=True)
class ReadTimeouts:
    """Seconds a client has for a request head, for its body, and idle between requests."""

    headers: float = 10.0
    body: float = 30.0
    idle: float = 75.0  # a kept-alive connection with no request (aiohttp's keepalive_timeout)

    def __post_init__(self) -> None:
        if not 0 < self.headers <= MAX_HEADER_TIMEOUT:
            raise ValueError(f"header timeout {self.headers:g}s is not in (0, 60]")
        if self.body <= 0 or self.idle <= 0:
            raise ValueError("body and idle timeouts must be positive")


class HeaderDeadline(RequestHandler):
    """aiohttp's protocol with a deadline on each request head."""

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._partial_head = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        parsed = self._request_count
        super().data_received(data)
        if self._request_count > parsed:  # a whole head came: the body's deadline is the app's
            self._disarm()
        elif data and not self._request_in_progress and not self._messages:  # a head is under way
            self._partial_head = True
            if self._head_timer is None:
                self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _waiting_for_head(self) -> bool:
        # start() awaits this future between requests, as aiohttp's keep-alive check reads it
        # (data can come before start() first awaits it: data_received does not ask this).
        return self._waiter is not None and not self._waiter.done()

    def _arm(self) -> None:
        self._head_timer = self._loop.call_later(self._header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer, self._partial_head = None, False

    def _expire(self) -> None:
        self._head_timer = None
        if not self._waiting_for_head():  # a request is being handled: not a head's business
            return
        if self._partial_head and self.transport is not None and not self.transport.is_closing():
            self.transport.write(_timeout_answer(self._header_timeout))
        self.force_close()  # flushes what was written, then closes


def _timeout_answer(seconds: float) -> bytes:
    error = RequestTimeout(f"the request head did not arrive within {seconds:g}s")
    body = orjson.dumps(problem_body(error, str(uuid.uuid4())))
    head = (
        f"HTTP/1.1 {error.status} Request Timeout\r\n"
        f"Content-Type: {PROBLEM_CONTENT_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class _DeadlineServer(web.Server):
    """aiohttp's low-level server, making ``HeaderDeadline`` protocols."""

    def __init__(self, header_timeout: float, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout

    def __call__(self) -> RequestHandler:
        return HeaderDeadline(
            self, loop=self._loop, header_timeout=self.header_timeout, **self._kwargs
        )


class DeadlineRunner(web.AppRunner):
    """An ``AppRunner`` whose connections have ``timeouts``' header and idle deadlines."""

    def __init__(self, app: web.Application, timeouts: ReadTimeouts, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=timeouts.idle, **kwargs)
        self.timeouts = timeouts

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # the app's start-up, and its own server
        return _DeadlineServer(
            self.timeouts.headers,
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **made._kwargs,
        )
