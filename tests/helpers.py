"""Helpers the tests share: built model paths, in-process apps, processes on loopback."""

from __future__ import annotations

import asyncio
import http.client
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
import yaml
from aiohttp import web
from flask.testing import FlaskClient

from emulators.processes import free_port, spawn, stop_group
from functions.core import serve
from functions.core.settings import REPO_ROOT

if TYPE_CHECKING:
    from emulators.autoscaler import AutoscalerConfig

MODEL_DIR = REPO_ROOT / "build" / "models"
SAMPLES = MODEL_DIR / "samples"
PREDICT_SOURCE = str(REPO_ROOT / "functions" / "predict" / "main.py")
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Served = web.Application | web.AppRunner


@contextmanager
def function_client(
    target: str, source: str | Path, *, direct: bool = False, **env: str
) -> Iterator[FlaskClient]:
    """A test client of the real app functions-framework builds for ``target`` in ``source``
    (absolute, or relative to the repository), its service built and warm.

    ``env`` is set for the build and the service's first use (the target's ``warm()``: settings are read
    there); the environment, ``sys.path`` and ``sys.modules["main"]``, which create_app
    changes, are restored right after. Leaving closes what the service opened. ``direct``:
    requests reach the function as the production server hands them over
    (``core.serve.direct``), past Flask's routing."""
    import functions_framework

    with restoring_environment():
        os.environ.update(env)
        app = functions_framework.create_app(target, str(REPO_ROOT / source))  # type: ignore[no-untyped-call]
        module = sys.modules["main"]
        getattr(module, target).warm()  # the target's own, as core.serve calls it
    if direct:
        app.wsgi_app = serve.direct(app, getattr(module, target))
    try:
        yield app.test_client()
    finally:
        close_service(module)


@contextmanager
def restoring_environment() -> Iterator[None]:
    """Undo on leaving what was changed of ``os.environ``, ``sys.path`` and
    ``sys.modules["main"]`` (functions-framework's create_app changes all three)."""
    environ, path, main = dict(os.environ), list(sys.path), sys.modules.get("main")
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(environ)
        sys.path[:] = path
        if main is None:
            sys.modules.pop("main", None)
        else:
            sys.modules["main"] = main


def close_service(module: ModuleType) -> None:
    """Close what a function's service opened: its ``close()`` where it has one, else its
    store."""
    service = module.service()  # built by warm(): the cached one
    if hasattr(service, "close"):
        service.close()
    elif hasattr(service, "store"):
        service.store.close()


def sample_bytes(name: str) -> bytes:
    """A test photo shipped by scikit-image / scikit-learn, copied there by `make models`."""
    return (SAMPLES / name).read_bytes()


def wait_for(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.05) -> T:
    """Poll ``check`` until it returns a value, or fail naming ``what`` (no bare sleeps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result is not None:
            return result
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def poll_until(check: Callable[[], bool], seconds: float, what: str, every: float = 0.05) -> None:
    """``wait_for`` a condition; one that still fails after ``seconds`` is a failed assertion
    whose message is ``what``."""
    try:
        wait_for(lambda: True if check() else None, seconds, what, every)
    except TimeoutError:
        raise AssertionError(what) from None


def ready(url: str) -> Callable[[], bool | None]:
    def check() -> bool | None:
        try:
            return True if httpx.get(url, timeout=1.0).status_code == 200 else None
        except httpx.TransportError:
            return None

    return check


@contextmanager
def server(
    command: list[str], env: Mapping[str, str], ready_url: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` until ``ready_url`` answers 200; stop it by its pid afterwards."""
    process = spawn(command, env, REPO_ROOT, stderr=subprocess.PIPE)
    try:
        try:
            wait_for(ready(ready_url), 60, f"{ready_url} ({' '.join(command)})")
        except TimeoutError:
            process.kill()
            raise AssertionError(process.communicate()[1].decode()[-2000:]) from None
        yield process
    finally:
        stop_group(process, 15)
        if process.stderr:
            process.stderr.close()


@contextmanager
def script_server(script: str) -> Iterator[str]:
    """One of the tests' own small servers (``tests/<script>``: it takes its port and answers
    ``/ready``) on a free loopback port; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with server([sys.executable, str(REPO_ROOT / "tests" / script), str(port)], {}, f"{url}/ready"):
        yield url


def run_module(
    module: str,
    *args: str,
    cwd: Path = REPO_ROOT,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` run to its end, its output captured as text; its exit status
    is the caller's to check. ``env`` replaces this process's environment when given."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def catch_all(handler: Handler) -> web.Application:
    """An aiohttp application that answers every method and path with ``handler``."""
    app = web.Application()
    app.router.add_route("*", r"/{tail:[\s\S]*}", handler)
    return app


def copy_kustomization(source: Path, folder: Path, files: Sequence[str], namespace: str) -> Path:
    """``folder``: a kustomization of ``files`` (paths under ``source``, copied to the same
    paths under ``folder``) in ``namespace``, for a platform over a few of the manifests."""
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / name, folder / name)
    (folder / "kustomization.yaml").write_text(
        yaml.safe_dump({"namespace": namespace, "resources": list(files)})
    )
    return folder


class AppThread:
    """aiohttp applications served on free loopback ports from one thread (one event loop) of
    their own: ``url`` is the first's, ``urls`` every one's. Each is an application, or the
    runner that serves one its own way (``Gateway.runner``: the gateway's read deadlines)."""

    def __init__(self, app: Served, port: int | None = None, *more: Served) -> None:
        self.port = port or free_port()
        ports = [self.port, *(free_port() for _ in more)]
        self.urls = [f"http://127.0.0.1:{p}" for p in ports]
        self.url = self.urls[0]
        self.loop = asyncio.new_event_loop()
        self._runners = [
            a if isinstance(a, web.AppRunner) else web.AppRunner(a, access_log=None)
            for a in (app, *more)
        ]
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            for runner, listen in zip(self._runners, ports, strict=True):
                self.loop.run_until_complete(runner.setup())
                self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", listen).start())
            started.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert started.wait(10), "the app did not start"

    def stop(self) -> None:
        for runner in reversed(self._runners):
            asyncio.run_coroutine_threadsafe(runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class LocalPlatform:
    """What `make dev` runs (broker, one process per Service, gateway), assembled in-process
    over the manifests in ``knative`` and ``eventing`` (None: no events) so a test can kill
    single processes."""

    def __init__(
        self,
        knative: Path,
        eventing: Path | None,
        env: Mapping[str, str],
        time_scale: float = 0.2,
        progress_deadline: float = 120.0,
        require_ready: Sequence[str] | None = None,
        autoscaler: AutoscalerConfig | None = None,
        watch_manifests: bool = False,
    ) -> None:
        """``time_scale`` shrinks the broker's backoffs (not its delivery timeouts);
        ``progress_deadline`` bounds how long the gateway holds a request for a revision that
        is not ready; ``require_ready`` names the Services it waits for (None: all);
        ``autoscaler`` is config-autoscaler's (None: Knative's defaults);
        ``watch_manifests``: follow edits of the manifests as `make dev` does (the same watch
        reloads the launcher, the gateway and the broker)."""
        from emulators.activator import Activator
        from emulators.autoscaler import AutoscalerConfig
        from emulators.broker import Broker, Topology, local_resolver, sink_bindings
        from emulators.gateway import Gateway
        from emulators.launcher import Launcher, service_env
        from emulators.manifests import load_kustomization, watch
        from emulators.oidc import Issuer, subscriber_env
        from emulators.routing import RouteTable

        gateway_port, broker_port, issuer_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{gateway_port}"
        resolve = local_resolver(self.url, f"http://127.0.0.1:{broker_port}")

        def resources() -> list[Any]:
            return load_kustomization(knative) + (load_kustomization(eventing) if eventing else [])

        # The broker signs every delivery, and its subscribers check (emulators/oidc.py).
        self.issuer = Issuer(f"http://127.0.0.1:{issuer_port}")
        self.issuer_thread = AppThread(self.issuer.app(), port=issuer_port)
        self.events = Broker(
            lambda: Topology.build(resources(), resolve),
            time_scale=time_scale,
            issuer=self.issuer,
        )
        self.broker = AppThread(self.events.app(), port=broker_port)

        def services() -> dict[str, dict[str, str]]:
            sinks = sink_bindings(resources(), resolve)
            return service_env(sinks, subscriber_env(self.issuer, resources()))

        self.launcher = Launcher(
            knative,
            {**os.environ, "CLUSTER_LOCAL_GATEWAY": self.url, **env},
            backoff=(0.2, 2.0),
            service_env=services,
            autoscaler=autoscaler or AutoscalerConfig(),
        )
        self.launcher.start()
        gateway = Gateway(
            lambda: RouteTable.build(resources(), {}, latest_ready=self.launcher.latest_ready),
            self.url,
            activator=Activator(self.launcher.status, progress_deadline),
        )
        app = gateway.app()
        if watch_manifests:
            folders = [knative, *([eventing] if eventing else [])]
            reloads = [self.launcher.reload, gateway.reload, self.events.reload]
            app.cleanup_ctx.append(watch(folders, reloads, poll=0.2))
        self.gateway = AppThread(gateway.runner(app, access_log=None), gateway_port)
        missing = self.launcher.wait_ready(120, names=require_ready)
        if missing:
            self.stop()
            raise AssertionError(f"not ready: {missing}")

    def stop(self) -> None:
        self.launcher.stop()
        self.gateway.stop()
        self.broker.stop()
        self.issuer_thread.stop()


def refusing(url: str) -> Callable[[], bool | None]:
    """For ``wait_for``: True once ``url``'s host and port refuse connections (or reset one
    caught in the backlog of a listener being closed, or drop the handshake: on loopback a
    connect times out only when the listener's backlog is full and nobody accepts from it)."""
    parts = urlsplit(url)

    def check() -> bool | None:
        try:
            socket.create_connection((parts.hostname or "", parts.port or 80), timeout=1).close()
        except (ConnectionRefusedError, ConnectionResetError, TimeoutError):
            return True
        return None

    return check


class HeldRequest:
    """An HTTP/1.1 request provably in flight: its head goes with ``Expect: 100-continue`` and
    the server's ``100 Continue`` is awaited (the server is handling it), while its body waits
    for ``finish()``, which sends it and returns the response. A context manager: leaving it
    closes the connection."""

    def __init__(
        self, url: str, method: str, path: str, body: bytes, headers: Mapping[str, str]
    ) -> None:
        parts = urlsplit(url)
        self._sock = socket.create_connection((parts.hostname or "", parts.port or 80), 30)
        head = {
            "Host": parts.netloc,
            "Connection": "close",
            "Expect": "100-continue",
            "Content-Length": str(len(body)),
            **headers,
        }
        lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items())]
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):  # nothing follows until the body is sent
            chunk = self._sock.recv(1)
            assert chunk, f"{url} closed the connection before 100 Continue"
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100"), interim
        self._body = body

    def finish(self) -> tuple[int, bytes]:
        """Send the body; the status and body of the response."""
        self._sock.sendall(self._body)
        response = http.client.HTTPResponse(self._sock)
        try:
            response.begin()
            return response.status, response.read()
        finally:
            response.close()

    def __enter__(self) -> HeldRequest:
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()


class CountingHandler(BaseHTTPRequestHandler):
    """A quiet HTTP/1.1 (keep-alive) handler that counts the connections it was given and
    records every request; subclasses answer with ``answer``."""

    protocol_version = "HTTP/1.1"
    connections = 0
    seen: list[tuple[str, str, dict[str, str], bytes]] = []

    def setup(self) -> None:
        super().setup()
        type(self).connections += 1

    def read_request(self) -> bytes:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append((self.command, self.path, dict(self.headers), body))
        return body

    def answer(self, status: int, body: bytes = b"", headers: Mapping[str, str] = {}) -> None:
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def http_server(handler: type[CountingHandler]) -> Iterator[str]:
    """A stdlib HTTP server with ``handler`` (its counts reset) on a free loopback port,
    served from threads; yields its base URL."""
    handler.connections, handler.seen = 0, []
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """A database of its own on the machine's PostgreSQL (127.0.0.1:5432, trust auth),
    dropped after; the test is skipped where no PostgreSQL answers. Yields its URL."""
    admin = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
    try:
        conn = psycopg.connect(admin, autocommit=True)
    except psycopg.OperationalError as e:
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432: {e}")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with conn:
        conn.execute(f"CREATE DATABASE {name}")
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
