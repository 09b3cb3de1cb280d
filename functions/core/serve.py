"""Serve a function the way production does: granian (Rust HTTP, WSGI) with N workers.

    python -m functions.core.serve --target predict --source functions/predict/main.py

This is the container's entry point and what the local launcher runs. It honours Knative's
``PORT``; ``WORKERS`` and ``THREADS`` size the server (one blocking thread per worker is
the best tail for CPU-bound models, measured in ``make bench``). Each worker builds the
functions-framework app and warms its model *before* it accepts connections, so no request
pays for loading. With several workers, Prometheus runs in multiprocess mode over a shared
directory so ``/metrics`` counts every worker.

A worker that dies after it warmed is respawned alone while its siblings keep serving; one
that dies before (a model that does not load) ends the server at once, with a non-zero
status, so the kubelet (or the launcher) restarts it with backoff and the log says why. A
worker says it warmed by creating a file named by its pid in ``SERVE_READY_DIR``
(``_WarmRespawn``).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import granian.log
from granian.constants import Interfaces
from granian.log import LogLevels
from granian.server import MPServer  # what granian.Granian is on a GIL build: worker processes

from functions.core.settings import EventSettings, build_settings

READY_DIR = "SERVE_READY_DIR"  # where each worker marks itself warm (set by main)


def app_factory() -> Any:
    """Called by granian in every worker: the function's WSGI app, its model already warm."""
    _keep_early_signals()
    import functions_framework

    target = os.environ["FUNCTION_TARGET"]
    app = functions_framework.create_app(target, os.environ["FUNCTION_SOURCE"])  # type: ignore[no-untyped-call]
    module = sys.modules["main"]
    function = getattr(module, target)
    # The target's own warm-up (core.entry attaches it): one main.py may serve several targets.
    if (warm := getattr(function, "warm", None)) is not None:
        warm()
    # Everything built so far (the framework, the model: ~60k objects) lives as long as the
    # worker. Frozen, the collector no longer walks it: a full collection, which came about
    # once per 20k requests, stalled every request of the worker for ~30 ms.
    gc.collect()
    gc.freeze()
    if ready := os.environ.get(READY_DIR):
        (Path(ready) / str(os.getpid())).touch()  # from now on, a death of ours is respawned
    return direct(app, function)


def _keep_early_signals() -> None:
    """granian installs a worker's SIGTERM/SIGINT handler only after this factory returns;
    until then the worker runs the handler it inherited from the main process, which stops
    nothing, so a signal landing while the model loads was lost and the worker killed only
    after ``workers_kill_timeout``. Record such a signal and, once granian's handler is in
    place, send it again until the worker exits (one that lands before granian's serve loop
    waits on it is missed too), so the worker stops gracefully as soon as it can."""
    signals = (signal.SIGTERM, signal.SIGINT)
    received: list[int] = []

    def record(signum: int, frame: object) -> None:
        received.append(signum)

    inherited = [signal.signal(sig, record) for sig in signals]
    # One that came since the fork went to the inherited handler: granian's main-process
    # handler marks it on its (copied) server object.
    if any(getattr(getattr(h, "__self__", None), "interrupt_signal", False) for h in inherited):
        received.append(signal.SIGTERM)

    def redeliver() -> None:
        while any(signal.getsignal(sig) is record for sig in signals):
            time.sleep(0.05)
        while received:
            os.kill(os.getpid(), received[0])
            time.sleep(0.5)

    threading.Thread(target=redeliver, name="early-signals", daemon=True).start()


def direct(app: Any, function: Any) -> Any:
    """A WSGI app that hands each request straight to the function.

    functions-framework routes every path of an HTTP function to it through Flask's URL map,
    request context and response hooks; our functions do their own routing and errors and
    return a ``Response``, so that layer only costs time (~75 us of an iris prediction's
    ~230 us in process). ``app`` (the framework's own) still builds any other return value,
    so a function behaves here exactly as under the ``functions-framework`` command. (An
    unread request body needs no draining: granian reads it off the connection itself.)
    """
    from flask import Request, Response

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        result = function(request)
        if not isinstance(result, Response):
            with app.app_context():
                result = app.make_response(result)
        return result(environ, start_response)

    return wsgi


def _metrics_dir(processes: int) -> None:
    """A fresh multiprocess directory (stale files would count dead workers' samples)."""
    if processes < 2 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return
    path = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="metrics-"))
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


def _outbox_sender(settings: EventSettings) -> subprocess.Popen[bytes]:
    """One process sends the outbox every worker writes, so sending never competes with
    requests for a worker's GIL (see core.outbox)."""
    os.environ["OUTBOX_SENDER"] = "process"
    command = [sys.executable, "-m", "functions.core.outbox"]  # configured by the same env
    # Closing its stdin stops it (or our exit). A session of its own: a signal to our process
    # group (Ctrl-C) would kill it if it came while it still imports, before it ignores them.
    return subprocess.Popen(command, stdin=subprocess.PIPE, start_new_session=True)


class _DeliberateThreads(logging.Filter):
    """Drops granian's start-up warning about more threads than cores: THREADS is set per
    Service on purpose (a proxy's threads mostly wait on other Services)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Configuration allows spawning up to")


# granian's own logging configuration, with that filter on its console handler.
_HANDLERS: dict[str, dict[str, Any]] = granian.log.LOGGING_CONFIG["handlers"]  # type: ignore[assignment]
_GRANIAN_LOG = {
    "filters": {"deliberate_threads": {"()": _DeliberateThreads}},
    "handlers": {
        name: {**handler, "filters": ["deliberate_threads"]} for name, handler in _HANDLERS.items()
    },
}


class _WarmRespawn(MPServer):
    """granian, respawning a failed worker only if it had warmed.

    granian's serve loop reads ``respawn_failed_workers`` when a worker exited unexpectedly,
    the dead ones' indices in ``interrupt_children`` and still in ``wrks``; answered here at
    that moment, so no warm-up can race the decision. (granian's own guard still ends the
    server when a respawned worker dies within 5.5 s.)"""

    def __init__(self, *args: Any, ready_dir: Path, **kwargs: Any) -> None:
        self._ready_dir = ready_dir
        super().__init__(*args, **kwargs)

    @property
    def respawn_failed_workers(self) -> bool:
        return all(
            (self._ready_dir / str(self.wrks[idx].inner.pid)).exists()
            for idx in self.interrupt_children
        )

    @respawn_failed_workers.setter
    def respawn_failed_workers(self, value: bool) -> None:
        pass  # granian's __init__ sets it; the answer is always the one above


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default=os.environ.get("FUNCTION_TARGET"))
    parser.add_argument("--source", default=os.environ.get("FUNCTION_SOURCE"))
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "1")))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", "1")))
    parser.add_argument(  # the server's own lines (start, workers, stop); make dev: warning
        "--server-log-level",
        choices=[level.value for level in LogLevels],
        default=os.environ.get("SERVER_LOG_LEVEL", "info").lower(),
    )
    args = parser.parse_args(argv)
    if not args.target or not args.source:
        parser.error("--target and --source (or FUNCTION_TARGET and FUNCTION_SOURCE) are required")
    os.environ["FUNCTION_TARGET"] = args.target
    os.environ["FUNCTION_SOURCE"] = str(Path(args.source).resolve())
    settings = build_settings(EventSettings)
    _metrics_dir(args.workers + settings.publishes)
    sender = _outbox_sender(settings) if settings.publishes else None
    ready_dir = Path(tempfile.mkdtemp(prefix="serve-ready-"))
    os.environ[READY_DIR] = str(ready_dir)
    try:
        _serve(args, ready_dir)
    finally:
        shutil.rmtree(ready_dir, ignore_errors=True)
        if sender is not None:  # after the workers: drain what they spooled, then stop
            assert sender.stdin is not None
            sender.stdin.close()
            sender.wait(30)


def _serve(args: argparse.Namespace, ready_dir: Path) -> None:
    _WarmRespawn(
        "functions.core.serve:app_factory",
        ready_dir=ready_dir,
        address=args.host,
        port=args.port,
        interface=Interfaces.WSGI,
        workers=args.workers,
        blocking_threads=args.threads,
        factory=True,
        log_access=False,
        log_level=LogLevels(args.server_log_level),
        log_dictconfig=_GRANIAN_LOG,
        websockets=False,  # WSGI has none; left on, granian says so at every start
        workers_kill_timeout=30,  # SIGTERM: let in-flight requests finish, then stop
    ).serve()


if __name__ == "__main__":
    main()
