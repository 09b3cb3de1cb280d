"""Launcher: one server process per Knative Service revision, as the cluster would run it.

Each process is the container's entry point (``python -m functions.core.serve``) with the
Service's env from the manifest plus what Knative injects (``PORT``, ``K_SERVICE``,
``K_REVISION``, ``K_CONFIGURATION``). The launcher waits on each readiness probe, streams
every log line prefixed with the Service name, restarts a process that dies with
exponential backoff (as the kubelet restarts a crashed container), and stops them all
cleanly on Ctrl-C or SIGTERM.

    python -m emulators.launcher [--first-port 8081]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx

from emulators.manifests import REPO_ROOT, ServiceSpec, knative_services, load_kustomization
from emulators.processes import free_ports

_print_lock = threading.Lock()


def emit(line: str, stream: IO[str] | None = None) -> None:
    with _print_lock:
        print(line, file=stream or sys.stdout, flush=True)


class Revision:
    """A supervised server process for one Knative Service revision."""

    def __init__(
        self,
        spec: ServiceSpec,
        port: int,
        env: Mapping[str, str],
        host: str = "127.0.0.1",
        backoff: tuple[float, float] = (1.0, 30.0),
    ) -> None:
        self.spec, self.port, self.host = spec, port, host
        self.url = f"http://{host}:{port}"
        self.restarts = 0
        self._env = {
            **env,
            **spec.env,
            **spec.injected_env(port),
            "HOST": host,
            "PYTHONUNBUFFERED": "1",
        }
        self._backoff = backoff
        self._process: subprocess.Popen[str] | None = None
        self._stopping = threading.Event()
        self._starting = threading.Lock()  # stop() sees the process started, or none starts
        self._ready = threading.Event()
        self.reason = "not started"  # why it is not ready, for the activator's 503
        self._thread = threading.Thread(target=self._supervise, name=spec.name, daemon=True)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> None:
        self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def annotations(self) -> Mapping[str, str]:
        return self.spec.annotations

    @property
    def stopped(self) -> bool:
        """Stopped for good: it will not become ready again."""
        return self._stopping.is_set()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the server drains in-flight requests), then SIGKILL after ``timeout``."""
        with self._starting:
            self._stopping.set()
            self._ready.clear()
            self.reason = "stopped"
            process = self._process
        if process and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._thread.join(timeout)

    def _supervise(self) -> None:
        delay = self._backoff[0]
        while True:
            started = time.monotonic()
            with self._starting:
                if self._stopping.is_set():
                    return
                self.reason = "starting"
                self._process = process = subprocess.Popen(
                    [sys.executable, "-m", "functions.core.serve"],
                    env=self._env,
                    cwd=REPO_ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    start_new_session=True,  # Ctrl-C reaches the launcher, which stops us in order
                )
            with process:
                threading.Thread(target=self._probe, args=(process, started), daemon=True).start()
                reader = threading.Thread(target=self._pump, args=(process,), daemon=True)
                reader.start()
                code = process.wait()
                self._ready.clear()  # at once: the activator holds what comes next
                # A container's processes die with it: workers orphaned by a killed server
                # would keep the port and the log pipe.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                reader.join()
            if self._stopping.is_set():
                return
            self.restarts += 1
            if time.monotonic() - started > 60:
                delay = self._backoff[0]  # it ran a while: a fresh crash, not a crash loop
            self.reason = f"exited with {code}; restart #{self.restarts} in {delay:.1f}s"
            emit(f"{self.spec.name:>16} ! {self.reason}")
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, self._backoff[1])

    def _pump(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            emit(f"{self.spec.name:>16} | {line.rstrip()}")

    def _probe(self, process: subprocess.Popen[str], started: float) -> None:
        url = self.url + self.spec.readiness_path
        with httpx.Client(timeout=1.0) as client:
            while process.poll() is None and not self._stopping.is_set():
                try:
                    if client.get(url).status_code == 200:
                        self.reason = "ready"
                        self._ready.set()
                        took = time.monotonic() - started
                        emit(f"{self.spec.name:>16} * ready at {self.url} in {took:.1f}s")
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)


class Launcher:
    """Every Knative Service of a kustomization, each as a supervised ``Revision``."""

    def __init__(
        self,
        knative_dir: Path,
        env: Mapping[str, str],
        first_port: int = 0,
        host: str = "127.0.0.1",
        backoff: tuple[float, float] = (1.0, 30.0),
        sinks: Mapping[str, str] | None = None,
    ) -> None:
        """``sinks`` maps Service names to the ``K_SINK`` their SinkBindings give them."""
        sinks = sinks or {}
        specs = knative_services(load_kustomization(knative_dir))
        ports = [first_port + i for i in range(len(specs))] if first_port else None
        ports = ports or free_ports(len(specs), host)
        self.revisions = {
            spec.name: Revision(
                spec,
                ports[i],
                {**env, **({"K_SINK": sinks[spec.name]} if spec.name in sinks else {})},
                host,
                backoff,
            )
            for i, spec in enumerate(specs)
        }
        self._by_revision = {r.spec.revision: r for r in self.revisions.values()}

    def start(self) -> None:
        for revision in self.revisions.values():
            revision.start()

    def status(self, revision: str) -> Revision | None:
        """The process of a revision (``<service>-00001``), None where none runs here."""
        return self._by_revision.get(revision)

    def wait_ready(
        self,
        timeout: float,
        stop: threading.Event | None = None,
        names: Sequence[str] | None = None,
    ) -> list[str]:
        """Names of the revisions (of ``names``, None: all) not ready within ``timeout``
        seconds, or once ``stop`` is set (a SIGTERM must not wait for Services that may never
        become ready)."""
        stop = stop or threading.Event()
        deadline = time.monotonic() + timeout
        wanted = {n: self.revisions[n] for n in names} if names is not None else self.revisions
        while True:
            missing = [n for n, r in wanted.items() if not r.wait_ready(0)]
            if not missing or time.monotonic() >= deadline or stop.wait(0.1):
                return missing

    def stop(self) -> None:
        threads = [threading.Thread(target=r.stop) for r in self.revisions.values()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run every Knative Service locally")
    parser.add_argument("--knative", type=Path, default=REPO_ROOT / "knative")
    parser.add_argument("--first-port", type=int, default=8081)
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    launcher = Launcher(args.knative, dict(os.environ), args.first_port)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    launcher.start()
    missing = launcher.wait_ready(args.ready_timeout, stop)
    emit("")
    for name, revision in launcher.revisions.items():
        state = "NOT READY" if name in missing else "ready"
        emit(f"  {name:<18} {revision.url:<26} {state}   e.g. curl {revision.url}/health")
    emit("\nCtrl-C stops everything.")
    stop.wait()
    emit("stopping...")
    launcher.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
