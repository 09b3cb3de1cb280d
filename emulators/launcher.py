"""Launcher: the replicas of each Knative Service revision, as the cluster would run its pods.

A ``Revision`` has as many ``Replica`` processes as its autoscaler wants (``autoscaler.Kpa``,
ticked here every two seconds, at once when the activator asks for a revision at zero); the
launcher's own command runs one per revision, never scaled. Each process is the container's entry point (``python -m functions.core.serve``) with the
Service's env from the manifest plus what Knative injects (``PORT``, ``K_SERVICE``,
``K_REVISION``, ``K_CONFIGURATION``) and what the rest of the platform gives that Service
(``service_env``: ``K_SINK`` from a SinkBinding, the event-auth settings of a subscriber).
The launcher waits on each readiness probe, streams every log line prefixed with the Service
name, restarts a process that dies with exponential backoff (as the kubelet restarts a
crashed container), and stops them all cleanly on Ctrl-C or SIGTERM.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import IO

import httpx

from emulators.autoscaler import TICK, AutoscalerConfig, Kpa, Scaling
from emulators.manifests import REPO_ROOT, ServiceSpec, knative_services, load_kustomization
from emulators.processes import free_port
from emulators.revisions import revision_name, routed

_print_lock = threading.Lock()


def emit(line: str, stream: IO[str] | None = None) -> None:
    with _print_lock:
        print(line, file=stream or sys.stdout, flush=True)


class Replica:
    """A supervised server process of one Knative Service revision (a pod): restarted when it
    dies, counting the requests in flight at it as queue-proxy does, for the autoscaler."""

    def __init__(
        self,
        spec: ServiceSpec,
        port: int,
        env: Mapping[str, str],
        host: str = "127.0.0.1",
        backoff: tuple[float, float] = (1.0, 30.0),
        platform_env: Mapping[str, str] | None = None,
    ) -> None:
        """``platform_env`` wins over the manifest's, as a SinkBinding's K_SINK does."""
        self.spec, self.port, self.host = spec, port, host
        self.url = f"http://{host}:{port}"
        self.restarts = 0
        self._env = {
            **env,
            **spec.env,
            **(platform_env or {}),
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
        self._exited = ""
        self.retiring = False  # scaled in: takes no new request, drains, then stops
        self.ready_after: float | None = None  # seconds from its start to its first ready
        self.in_flight = 0
        self._area, self._since = 0.0, time.monotonic()  # in-flight x seconds since a sample
        self._counting = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, name=spec.name, daemon=True)

    def begin(self) -> None:
        """A request reached this replica (the gateway calls it and ``end``)."""
        with self._counting:
            now = time.monotonic()
            self._area += self.in_flight * (now - self._since)
            self._since, self.in_flight = now, self.in_flight + 1

    def end(self) -> None:
        with self._counting:
            now = time.monotonic()
            self._area += self.in_flight * (now - self._since)
            self._since, self.in_flight = now, self.in_flight - 1

    def busy(self) -> float:
        """In-flight request-seconds since the last call: the autoscaler's sample."""
        with self._counting:
            now = time.monotonic()
            area, self._area = self._area + self.in_flight * (now - self._since), 0.0
            self._since = now
            return area

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
                self.reason = (
                    f"starting again (restart #{self.restarts}; it {self._exited})"
                    if self.restarts
                    else "starting"
                )
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
            self._exited = f"exited with {code}"
            self.reason = f"{self._exited}; restart #{self.restarts} in {delay:.1f}s"
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
                        took = time.monotonic() - started
                        if self.ready_after is None:
                            self.ready_after = took
                        self._ready.set()
                        emit(f"{self.spec.name:>16} * ready at {self.url} in {took:.1f}s")
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)


class Revision:
    """One Knative Service revision: its replicas, as many as its autoscaler wants (``scale``),
    each a ``Replica`` on a port of its own. What the activator and the gateway read of it:
    ``ready`` (a replica takes requests), ``pick`` (the least loaded one), ``held``."""

    def __init__(
        self,
        spec: ServiceSpec,
        env: Mapping[str, str],
        host: str = "127.0.0.1",
        backoff: tuple[float, float] = (1.0, 30.0),
        scaling: Scaling | None = None,
        first_port: int | None = None,
        platform_env: Mapping[str, str] | None = None,
        woken_any: threading.Event | None = None,
    ) -> None:
        """``scaling`` None: one replica, always (the launcher's own command);
        ``platform_env`` wins over the manifest's, as a SinkBinding's K_SINK does;
        ``woken_any`` is set with ``woken``, for the autoscaler's loop to wait on."""
        self.spec, self.host = spec, host
        self.scaling = scaling
        self.kpa = Kpa(scaling, time.monotonic()) if scaling else None
        self.held = 0  # requests the activator holds for it now
        self.queued = 0  # requests waiting at the gateway's breaker for it
        self.woken = threading.Event()  # set by the activator: decide now (scale from zero)
        self._woken_any = woken_any
        self._cold: Replica | None = None  # the last replica started from zero
        self.cold_starts = 0
        self._sampled = time.monotonic()
        self._env, self._backoff, self._first_port = env, backoff, first_port
        self._platform_env = platform_env
        self._replicas: list[Replica] = []
        self._lock = threading.Lock()
        self._stopped = False
        self._restarts_of_gone = 0
        self._was_ready = False  # of replicas gone: one became ready once
        self.draining = False  # no traffic left on it: it finishes what it has, then stops

    # -- what the activator and the gateway read ---------------------------------------------

    @property
    def annotations(self) -> Mapping[str, str]:
        return self.spec.annotations

    @property
    def live(self) -> list[Replica]:
        """Its replicas that are not retiring: starting or ready."""
        return [r for r in self._replicas if not r.retiring]

    @property
    def serving(self) -> list[Replica]:
        return [r for r in self.live if r.ready]

    @property
    def ready(self) -> bool:
        return any(r.ready for r in self.live)

    @property
    def stopped(self) -> bool:
        return self._stopped

    @property
    def was_ready(self) -> bool:
        """A replica of it became ready once: Knative's Ready revision (even at zero since)."""
        return self._was_ready or any(r.ready_after is not None for r in self._replicas)

    @property
    def reason(self) -> str:
        if self._stopped:
            return "stopped"
        live = self.live
        return live[0].reason if live else "scaled to zero"

    def pick(self) -> Replica | None:
        """The ready replica with the fewest requests in flight (None: none is ready)."""
        serving = self.serving
        return min(serving, key=lambda r: r.in_flight) if serving else None

    def wake(self) -> None:
        self.woken.set()
        if self._woken_any is not None:
            self._woken_any.set()

    # -- the legacy single-process view (the launcher's command, tests that kill one) ---------

    @property
    def first(self) -> Replica | None:
        live = self.live
        return live[0] if live else None

    @property
    def pid(self) -> int | None:
        return self.first.pid if self.first else None

    @property
    def url(self) -> str | None:
        return self.first.url if self.first else None

    @property
    def restarts(self) -> int:
        return self._restarts_of_gone + sum(r.restarts for r in self._replicas)

    @property
    def replicas(self) -> int:
        """Ready replicas (not retiring)."""
        return len(self.serving)

    @property
    def replica_urls(self) -> list[str]:
        return [r.url for r in self.live]

    @property
    def in_flight(self) -> int:
        return sum(r.in_flight for r in self._replicas)

    @property
    def cold_start(self) -> float | None:
        """Seconds from the last start from zero replicas to its first ready replica."""
        return self._cold.ready_after if self._cold else None

    @property
    def desired(self) -> int:
        return len(self.live)

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.ready:
            if self._stopped or time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    # -- scaling ------------------------------------------------------------------------------

    def start(self) -> None:
        initial = self.scaling.initial_scale if self.scaling else 1
        self.scale(initial, "initial-scale")

    def scale(self, count: int, why: str) -> None:
        """Start replicas up to ``count``, or drain and stop the extra ones (newest first)."""
        with self._lock:
            if self._stopped:
                return
            live = self.live
            if count == len(live):
                return
            if why != "initial-scale":  # the first start is not worth a line
                emit(f"{self.spec.name:>16} ~ {len(live)} -> {count} replicas: {why}")
            for i in range(count - len(live)):
                port = self._first_port if self._first_port and not self._replicas else None
                replica = Replica(
                    self.spec,
                    port or free_port(self.host),
                    self._env,
                    self.host,
                    self._backoff,
                    self._platform_env,
                )
                self._replicas.append(replica)
                if not live and i == 0:
                    self._cold = replica
                    self.cold_starts += 1
                replica.start()
            for replica in live[count:][::-1]:
                replica.retiring = True
                threading.Thread(target=self._retire, args=(replica,), daemon=True).start()

    def _retire(self, replica: Replica) -> None:
        """Let what it holds finish (up to ``timeoutSeconds``), then SIGTERM it, as Knative
        takes a pod out of the endpoints before stopping it."""
        deadline = time.monotonic() + self.spec.timeout_seconds
        while replica.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        replica.stop()
        with self._lock:
            if replica in self._replicas:
                self._replicas.remove(replica)
                self._restarts_of_gone += replica.restarts
                self._was_ready = self._was_ready or replica.ready_after is not None

    def tick(self, now: float, sample: bool = True) -> None:
        """One autoscaler decision; ``sample``: first take the concurrency seen since the last
        sample (a tick); else (the activator's poke) decide on what was seen."""
        if self.kpa is None or self._stopped:
            return
        if sample:
            elapsed, self._sampled = max(now - self._sampled, 1e-3), now
            busy = sum(r.busy() for r in list(self._replicas))
            # queued and held count as concurrency, as queue-proxy and the activator report
            self.kpa.observe(now, busy / elapsed + self.held + self.queued)
        woken = self.woken.is_set()
        self.woken.clear()
        wanted = self.kpa.desired(now, self.replicas, wanted_now=woken and self.held > 0)
        self.scale(wanted, self.kpa.reason)

    def drain(self, quiet: float = 1.0) -> None:
        """Stop once nothing was in flight, held or queued at it for ``quiet`` seconds (what
        the gateway routed to it before its traffic moved finishes first), at most
        ``timeoutSeconds`` after that, as Knative takes an unrouted revision's pods away."""
        deadline = time.monotonic() + quiet + self.spec.timeout_seconds
        calm_since: float | None = None
        while not self._stopped and (now := time.monotonic()) < deadline:
            if self.in_flight or self.held or self.queued:
                calm_since = None
            elif now - (calm_since := calm_since or now) >= quiet:
                break
            time.sleep(0.05)
        self.stop()

    def stop(self, timeout: float = 15.0) -> None:
        with self._lock:
            self._stopped = True
            replicas = list(self._replicas)
        threads = [threading.Thread(target=r.stop, args=(timeout,)) for r in replicas]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def service_env(
    sinks: Mapping[str, str], *more: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[str, str]]:
    """One ``service_env``: each Service's ``K_SINK`` (``sinks``) and the env in ``more``."""
    merged: dict[str, dict[str, str]] = {name: {"K_SINK": url} for name, url in sinks.items()}
    for part in more:
        for name, env in part.items():
            merged.setdefault(name, {}).update(env)
    return merged


ServiceEnv = Mapping[str, Mapping[str, str]]


class Launcher:
    """Every Knative Service of a kustomization, each as its supervised ``Revision`` s: the
    latest one per Service (``revisions``), and those traffic still points at
    (``all_revisions``, by revision name). ``reload`` follows the manifests as a cluster
    follows ``kubectl apply``: a new Service starts, a changed template makes the next
    revision, and a revision no traffic points at any more (a removed Service's too) drains
    and stops."""

    def __init__(
        self,
        knative_dir: Path,
        env: Mapping[str, str],
        first_port: int = 0,
        host: str = "127.0.0.1",
        backoff: tuple[float, float] = (1.0, 30.0),
        service_env: ServiceEnv | Callable[[], ServiceEnv] | None = None,
        autoscaler: AutoscalerConfig | None = None,
    ) -> None:
        """``service_env`` maps Service names to what the platform gives them beyond the
        manifest (``K_SINK``, event auth): it wins over the manifest's env; a callable is
        asked again for each new revision (the manifests it reads may have changed).
        ``autoscaler`` None: one replica per revision, never scaled (nothing holds requests
        for a revision at zero without the gateway's activator)."""
        self._dir, self._env, self._host, self._backoff = knative_dir, env, host, backoff
        self._autoscaler_config = autoscaler
        if service_env is None or isinstance(service_env, Mapping):
            fixed: ServiceEnv = service_env or {}
            self._service_env: Callable[[], ServiceEnv] = lambda: fixed
        else:
            self._service_env = service_env
        self.revisions: dict[str, Revision] = {}  # Service name -> its latest revision
        self.all_revisions: dict[str, Revision] = {}  # revision name -> every one running
        self._history: dict[str, list[Revision]] = {}  # per Service, oldest first, not draining
        self._specs: dict[str, ServiceSpec] = {}  # each Service as its manifest says now
        self._generation: dict[str, int] = {}
        self._latest_ready: dict[str, str] = {}  # what the log last said of each
        self._lock = threading.RLock()
        self._started = False
        self._woken = threading.Event()  # the activator woke some revision
        platform = self._service_env()
        for i, spec in enumerate(knative_services(load_kustomization(knative_dir))):
            self._create(spec, platform, first_port + i if first_port else None, "")
        self._stopping = threading.Event()
        self._autoscaler = threading.Thread(target=self._autoscale, name="autoscaler", daemon=True)

    def _create(self, spec: ServiceSpec, platform: ServiceEnv, port: int | None, why: str) -> None:
        """The next revision of ``spec``'s Service, started if the launcher runs."""
        generation = self._generation.get(spec.name, 0) + 1
        named = spec.revision if spec.named else None
        name, generation = revision_name(spec.name, generation, named, self.all_revisions)
        if name in self.all_revisions:  # Knative refuses a changed template under a used name
            emit(f"{spec.name:>16} ! its template changed but still names {name}: not applied")
            return
        self._generation[spec.name] = generation
        revision = Revision(
            replace(spec, revision=name),
            self._env,
            self._host,
            self._backoff,
            Scaling.of(spec.annotations, spec.container_concurrency, self._autoscaler_config)
            if self._autoscaler_config
            else None,
            port,
            platform.get(spec.name),
            self._woken,
        )
        self.revisions[spec.name] = self.all_revisions[name] = revision
        self._history.setdefault(spec.name, []).append(revision)
        self._specs[spec.name] = spec
        if why:
            emit(f"{spec.name:>16} + revision {name}: {why}")
        if self._started:
            revision.start()

    def start(self) -> None:
        with self._lock:
            self._started = True
            for revision in self.all_revisions.values():
                revision.start()
        self._autoscaler.start()

    def reload(self) -> None:
        """Act on the manifests as they are now (``manifests.watch`` calls it)."""
        specs = {s.name: s for s in knative_services(load_kustomization(self._dir))}
        platform = self._service_env()
        with self._lock:
            for name, spec in specs.items():
                current = self.revisions.get(name)
                if current is None:
                    self._create(spec, platform, None, "a new Service")
                elif current.spec.template_hash != spec.template_hash:
                    why = f"its template changed (from {current.spec.revision})"
                    self._create(spec, platform, None, why)
                else:
                    self._specs[name] = spec  # its traffic block may have changed
            for name in [n for n in self.revisions if n not in specs]:
                del self.revisions[name], self._specs[name], self._generation[name]
                self._latest_ready.pop(name, None)  # added again, it starts over at 00001
                for revision in self._history.pop(name):
                    self._drain(revision, "its Service was removed")
        self._collect()

    def latest_ready(self, service: str) -> str | None:
        """Where ``service``'s ``latestRevision`` traffic goes: its newest revision that
        became ready (Knative's ``latestReadyRevisionName``), else, while none has, its newest
        (the activator holds requests for it); None for a Service that does not run here."""
        history = list(self._history.get(service, ()))
        for revision in reversed(history):
            if revision.was_ready:
                return revision.spec.revision
        return history[-1].spec.revision if history else None

    def _collect(self) -> None:
        """Drain each revision, but the latest, that no traffic target points at now."""
        with self._lock:
            for name, history in self._history.items():
                ready = next((r.spec.revision for r in history[::-1] if r.was_ready), None)
                if ready and self._latest_ready.setdefault(name, ready) != ready:
                    emit(f"{name:>16} > latestRevision traffic now goes to {ready}: it is ready")
                    self._latest_ready[name] = ready
                keep = routed(self._specs[name].traffic, ready, history[-1].spec.revision)
                for revision in history[:-1]:
                    if revision.spec.revision not in keep:
                        self._drain(revision, "no traffic points at it")

    def _drain(self, revision: Revision, why: str) -> None:
        name = revision.spec.revision
        history = self._history.get(revision.spec.name, [])
        if revision in history:
            history.remove(revision)
        revision.draining = True
        emit(f"{revision.spec.name:>16} - revision {name} drains: {why}")

        def drain() -> None:
            revision.drain()
            with self._lock:
                if self.all_revisions.get(name) is revision:
                    del self.all_revisions[name]
            emit(f"{revision.spec.name:>16} - revision {name} stopped")

        threading.Thread(target=drain, name=f"drain {name}", daemon=True).start()

    def _autoscale(self) -> None:
        """Every revision's decision each ``TICK``, and at once for one the activator woke;
        and the revisions left without traffic drained."""
        next_tick = time.monotonic() + TICK
        while not self._stopping.is_set():
            self._woken.wait(max(next_tick - time.monotonic(), 0))
            self._woken.clear()
            now = time.monotonic()
            due = now >= next_tick
            for revision in list(self.all_revisions.values()):
                if due or revision.woken.is_set():
                    revision.tick(now, sample=due)
            if due:
                next_tick = now + TICK
                self._collect()

    def status(self, revision: str) -> Revision | None:
        """A revision by its name (``<service>-00001``), None where none runs here."""
        return self.all_revisions.get(revision)

    def wait_ready(
        self,
        timeout: float,
        stop: threading.Event | None = None,
        names: Sequence[str] | None = None,
    ) -> list[str]:
        """Names of the Services (of ``names``, None: all) whose latest revision is not
        ready within ``timeout`` seconds, or once ``stop`` is set (a SIGTERM must not wait for
        Services that may never become ready)."""
        stop = stop or threading.Event()
        deadline = time.monotonic() + timeout
        while True:
            latest = dict(self.revisions)
            wanted = {n: latest[n] for n in names} if names is not None else latest
            missing = [n for n, r in wanted.items() if not r.wait_ready(0)]
            if not missing or time.monotonic() >= deadline or stop.wait(0.1):
                return missing

    def stop(self) -> None:
        self._stopping.set()
        self._woken.set()
        with self._lock:
            revisions = list(self.all_revisions.values())
        threads = [threading.Thread(target=r.stop) for r in revisions]
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
        url = revision.url or ""
        emit(f"  {name:<18} {url:<26} {state}   e.g. curl {url}/health")
    emit("\nCtrl-C stops everything.")
    stop.wait()
    emit("stopping...")
    launcher.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
