"""The gateway's upstream client against real servers on loopback: keep-alive reuse, the
shapes an answer may take, and an idle connection the server closed."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from multidict import CIMultiDict

from emulators.upstream import Upstreams


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def app() -> web.Application:
    async def echo(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.path == "/chunked":
            response = web.StreamResponse(headers={"X-Seen": request.headers.get("X-In", "")})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for part in (b"a" * 10, b"b" * 5):
                await response.write(part)
            await response.write_eof()
            return response
        headers = [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
        text = f"{request.method} {request.path_qs} {body.decode()}"
        return web.Response(text=text, headers=CIMultiDict(headers))

    application = web.Application()
    application.router.add_route("*", "/{tail:.*}", echo)
    return application


def test_answers_and_keep_alive() -> None:
    async def run() -> None:
        runner, url = await serve(app())
        upstreams = Upstreams()
        try:
            answer = await upstreams.request(url, "POST", "/a%2Fb?x=1", [], b"hi")
            assert (answer.status, bytes(answer.body)) == (200, b"POST /a%2Fb?x=1 hi")
            assert [v for k, v in answer.headers if k == "Set-Cookie"] == ["a=1", "b=2"]
            chunked = await upstreams.request(url, "GET", "/chunked", [("X-In", "v")], b"")
            assert bytes(chunked.body) == b"a" * 10 + b"b" * 5
            assert ("X-Seen", "v") in chunked.headers
            assert len(upstreams._idle[url]) == 1  # both went over one connection
            head = await upstreams.request(url, "HEAD", "/", [], b"")
            assert (head.status, bytes(head.body)) == (200, b"")
            assert upstreams._idle[url] == []  # a HEAD answer's end is unknowable: closed
            await asyncio.sleep(0.5)  # past the server's keep-alive: it closes the idle one
            again = await upstreams.request(url, "GET", "/late", [], b"")
            assert bytes(again.body) == b"GET /late "
        finally:
            upstreams.close()
            await runner.cleanup()

    asyncio.run(run())


def test_an_interim_answer_is_skipped_and_a_refusal_raises() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def run() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        upstreams = Upstreams()
        answer = await upstreams.request(url, "POST", "/", [], b"")
        assert (answer.status, bytes(answer.body)) == (201, b"ok")
        assert url not in upstreams._idle or not upstreams._idle[url]  # Connection: close
        server.close()
        await server.wait_closed()
        with pytest.raises(ConnectionRefusedError):
            await upstreams.request(url, "GET", "/", [], b"")

    asyncio.run(run())


def test_a_timeout_spends_the_connection() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1)
        return web.Response()

    async def run() -> None:
        application = web.Application()
        application.router.add_get("/", slow)
        runner, url = await serve(application)
        upstreams = Upstreams()
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await upstreams.request(url, "GET", "/", [], b"")
            assert not upstreams._idle.get(url)
        finally:
            upstreams.close()
            await runner.cleanup()

    asyncio.run(run())
