"""`make dev`: the whole local platform on loopback, read from the manifests.

Starts the broker (eventing/), one process per Knative Service (the launcher, with
``K_SINK`` from the SinkBindings), and the gateway on one port (default 8080) that routes
to them as the cluster's ingress would; prints the routes a user can curl and streams every
process's log lines prefixed with its Service name. Edited manifests take effect without a
restart: the broker and the gateway re-route, and the launcher starts a new Service, the next
revision of a changed one, and drains what no traffic points at (docs/serving.md).

Calls inside the platform (a Service calling another by its Knative URL, the broker
delivering to a Service) go through a second, cluster-local listener of the gateway, as
through ``knative-local-gateway`` in a cluster. That split is what lets Ctrl-C or SIGTERM
stop everything without losing work: the public port stops accepting and what is in flight
finishes (its inner calls still flow); then the broker stops accepting and delivers every
event it accepted (retries included); then each Service gets SIGTERM and drains; each wait
is bounded by ``--grace`` seconds. Events a Service's outbox could not hand over by then
stay in its spool on disk and go out on the next start.

The gateway listens before the Services are up: a request that comes before its Service is
ready, or while the launcher restarts a crashed one, is held by the activator (up to
``--progress-deadline``), as Knative's activator holds it, not refused.

    python -m emulators.dev [--port 8080] [--seed N] [--grace 10] [--max-event-bytes N]
                            [--progress-deadline 120s] [--stable-window 60s]
                            [--scale-to-zero-grace-period 30s] [--max-scale-limit N]
                            [--header-timeout 10] [--body-timeout 30]

Both gateway listeners cut off a slow client (``emulators.deadlines``): a request head must
arrive within ``--header-timeout`` seconds (at most 60), its body within ``--body-timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import random
import re
import secrets
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop
from aiohttp import web

from emulators.activator import DEFAULT_PROGRESS_DEADLINE, Activator
from emulators.autoscaler import AutoscalerConfig
from emulators.broker import Broker, Topology, local_resolver, sink_bindings
from emulators.deadlines import MAX_HEADER_TIMEOUT, ReadTimeouts
from emulators.durations import go_seconds
from emulators.gateway import Gateway
from emulators.launcher import Launcher, emit, service_env
from emulators.manifests import REPO_ROOT, Resource, load_kustomization, watch
from emulators.oidc import Issuer, subscriber_env
from emulators.processes import listening_socket
from emulators.routing import RouteTable
from functions.core.logging import quiet_per_call_loggers

logger = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Platform:
    """Where everything listens, and how to read the manifests."""

    def __init__(
        self, knative: Path, eventing: Path, host: str, port: int, seed: int | None
    ) -> None:
        self.knative, self.eventing = knative, eventing
        self.gateway_url = f"http://{host}:{port}"
        # The inner listeners are bound now and held: the Services' ports, picked next, and
        # anything else on the machine cannot take theirs before they serve.
        self.local_socket, self.broker_socket = listening_socket(host), listening_socket(host)
        self.issuer_socket = listening_socket(host)
        self.local_port = self.local_socket.getsockname()[1]
        self.local_gateway_url = f"http://{host}:{self.local_port}"
        self.broker_port = self.broker_socket.getsockname()[1]
        self.broker_url = f"http://{host}:{self.broker_port}"
        self.resolve = local_resolver(self.local_gateway_url, self.broker_url)
        # The delivery tokens' issuer, on a listener of its own (emulators/oidc.py).
        self.issuer = Issuer(f"http://{host}:{self.issuer_socket.getsockname()[1]}")
        self.rng = random.Random(seed)

    def resources(self) -> list[Resource]:
        eventing = (
            load_kustomization(self.eventing)
            if (self.eventing / "kustomization.yaml").is_file()
            else []
        )
        return load_kustomization(self.knative) + eventing


class InFlight:
    """The gateway's requests in flight, for a graceful stop to wait on; while it drains, each
    answer closes its connection, so a kept-alive client cannot slip new requests in."""

    def __init__(self) -> None:
        self.count, self.draining = 0, False
        self._idle = asyncio.Event()
        self._idle.set()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.count += 1
        self._idle.clear()
        try:
            response = await handler(request)
        finally:
            self.count -= 1
            if not self.count:
                self._idle.set()
        if self.draining:
            response.force_close()
        return response

    async def drain(self, seconds: float) -> bool:
        """Wait until nothing is in flight; False when something still was after ``seconds``."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), seconds)
        except TimeoutError:
            return False
        return True


async def serve(
    platform: Platform,
    launcher: Launcher,
    host: str,
    port: int,
    grace: float,
    token: str,
    max_event_bytes: int,
    progress_deadline: float,
    timeouts: ReadTimeouts,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    broker = Broker(
        lambda: Topology.build(platform.resources(), platform.resolve),
        grace=grace,
        max_event_bytes=max_event_bytes,
        issuer=platform.issuer,
    )
    gateway = Gateway(
        lambda: RouteTable.build(platform.resources(), {}, platform.rng, launcher.latest_ready),
        platform.gateway_url,
        next((f"{platform.broker_url}/{key}" for key in broker.topology.brokers), None),
        local_url=platform.local_gateway_url,
        # requests that come before a Service is ready (its start, a restart) are held
        activator=Activator(launcher.status, progress_deadline),
        timeouts=timeouts,
        issuer_url=platform.issuer.url,
    )
    in_flight = InFlight()
    # Two listeners, as a cluster's two ingresses: the public one refuses cluster-local
    # Services; the Services' own calls go to the cluster-local one, which serves them all.
    public_app, local_app, broker_app = gateway.app(public=True), gateway.app(), broker.app()
    for app in (public_app, local_app):
        app.middlewares.insert(0, in_flight.middleware)  # outermost: every answer
    local_app.cleanup_ctx.append(
        # the launcher first: a new Service's revision exists once its route does
        watch(
            [platform.knative, platform.eventing],
            [launcher.reload, gateway.reload, broker.reload],
        )
    )
    public_runner, local_runner = (
        gateway.runner(app, access_log=None, shutdown_timeout=grace)
        for app in (public_app, local_app)
    )
    broker_runner, issuer_runner = (
        web.AppRunner(app, access_log=None, shutdown_timeout=grace)
        for app in (broker_app, platform.issuer.app())
    )
    for runner in (public_runner, local_runner, broker_runner, issuer_runner):
        await runner.setup()
    public = web.TCPSite(public_runner, host, port)
    for site in (
        public,
        web.SockSite(local_runner, platform.local_socket),
        web.SockSite(broker_runner, platform.broker_socket),
        web.SockSite(issuer_runner, platform.issuer_socket),
    ):
        await site.start()
    launcher.start()
    try:
        missing = await _until_ready(launcher, stop, 180.0)
        if not stop.is_set():
            _banner(platform, gateway, broker, missing, host, port, token)
        await stop.wait()
        emit("stopping...")
        await public.stop()
        if not await in_flight.drain(grace):
            logger.warning("stopping: requests still in flight after %gs", grace)
        await broker_runner.cleanup()  # closes the ingress, then delivers what it accepted
    finally:
        await asyncio.to_thread(launcher.stop)  # SIGTERM: each Service drains
    await public_runner.cleanup()
    await local_runner.cleanup()
    await issuer_runner.cleanup()  # last: the broker's deliveries drained are checked with it


async def _until_ready(launcher: Launcher, stop: asyncio.Event, seconds: float) -> list[str]:
    """The Services not ready within ``seconds``, or when asked to stop before."""
    deadline = time.monotonic() + seconds
    while (missing := launcher.wait_ready(0)) and not stop.is_set():
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    return missing


def _banner(
    platform: Platform,
    gateway: Gateway,
    broker: Broker,
    missing: list[str],
    host: str,
    port: int,
    token: str,
) -> None:
    emit(f"\ngateway http://{host}:{port}  (routes as JSON: curl {host}:{port}/_routes)")
    for key in broker.topology.brokers:
        emit(f"broker  {platform.broker_url}/{key}  ({len(broker.topology.triggers)} triggers)")
    emit(f"issuer  {platform.issuer.url}  (every delivery signed; subscribers check it)")
    emit("")
    for entry in gateway.describe()["services"]:
        name = entry["name"]
        state = "NOT READY" if name in missing else "ready"
        private = "  (cluster-local)" if entry.get("visibility") == "cluster-local" else ""
        emit(f"  {name:<18} curl {entry['url']}/health   [{state}]  Host: {entry['host']}{private}")
    # The bearer token of the tokened routes (the prediction log's queries), on a line of
    # its own: curl -H "Authorization: Bearer $API_TOKEN" ...
    emit(f"\nAPI token: {token}")
    emit("\nCtrl-C stops everything.")


def port_taken(host: str, port: int) -> str | None:
    """One line saying the public port is taken and the way out, or None when it is free.
    Checked before anything starts, so the user is not left with a traceback and Services."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds it
        try:
            probe.bind((host, port))
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                return f"make dev: cannot listen on {host}:{port}: {e.strerror}"
            return (
                f"make dev: port {port} on {host} is in use (another make dev?): stop what "
                f"holds it (ss -ltnp 'sport = :{port}') or use another, make dev PORT={port + 1}"
            )
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the local platform")
    parser.add_argument("--knative", type=Path, default=REPO_ROOT / "knative")
    parser.add_argument("--eventing", type=Path, default=REPO_ROOT / "eventing")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--seed", type=int, default=None, help="seed traffic splits")
    parser.add_argument(
        "--grace", type=float, default=10.0, help="seconds each stage of a stop waits for work"
    )
    parser.add_argument(
        "--max-event-bytes",
        type=int,
        default=4 * 1024 * 1024,
        help="the broker answers 413 for a larger event",
    )
    parser.add_argument(
        "--progress-deadline",
        type=_seconds(),
        default=DEFAULT_PROGRESS_DEADLINE,
        metavar="DURATION",
        help="how long a request waits for a Service's first ready replica (120s, 2m)",
    )
    parser.add_argument(
        "--stable-window",
        type=_seconds(),
        default=AutoscalerConfig.stable_window,
        metavar="DURATION",
        help="the autoscaler's window: concurrency averaged over it; idle for it, a min-scale 0 "
        "Service goes to zero after the grace period (config-autoscaler stable-window, 60s)",
    )
    parser.add_argument(
        "--scale-to-zero-grace-period",
        type=_seconds(zero=True),
        default=AutoscalerConfig.scale_to_zero_grace_period,
        metavar="DURATION",
        help="after the stable window, before an idle Service stops (30s)",
    )
    parser.add_argument(
        "--max-scale-limit",
        type=int,
        default=0,
        metavar="N",
        help="cap every Service's max-scale (config-autoscaler max-scale-limit; 0: none)",
    )
    parser.add_argument(
        "--header-timeout",
        type=_seconds(MAX_HEADER_TIMEOUT),
        default=ReadTimeouts.headers,
        help=f"seconds a client has to send a request head (at most {MAX_HEADER_TIMEOUT:g})",
    )
    parser.add_argument(
        "--body-timeout",
        type=_seconds(),
        default=ReadTimeouts.body,
        help="seconds a client has to send a request body, once its head came",
    )
    args = parser.parse_args(argv)
    timeouts = ReadTimeouts(headers=args.header_timeout, body=args.body_timeout)
    if taken := port_taken(args.host, args.port):
        sys.stderr.write(taken + "\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s platform | %(message)s")
    quiet_per_call_loggers(logging.INFO)  # the launcher's readiness probes
    platform = Platform(args.knative, args.eventing, args.host, args.port, args.seed)
    # Services calling others by their Knative URL (*.svc.cluster.local) reach them through
    # the cluster-local gateway, as in a cluster (functions/core/client.py).
    # Each Service's server says only what went wrong: the launcher prints when it is ready.
    env = {"SERVER_LOG_LEVEL": "warning", **os.environ}
    env["CLUSTER_LOCAL_GATEWAY"] = platform.local_gateway_url
    # What a cluster reads from the Secret prediction-log-token: the caller's API_TOKEN, or
    # one made for this run. Every Service gets it; those with tokened routes read it.
    env["API_TOKEN"] = env.get("API_TOKEN") or secrets.token_urlsafe(32)
    scaling = AutoscalerConfig(
        stable_window=args.stable_window,
        scale_to_zero_grace_period=args.scale_to_zero_grace_period,
        max_scale_limit=args.max_scale_limit,
    )

    def services() -> dict[str, dict[str, str]]:
        """K_SINK from the SinkBindings; the Services the broker delivers to check each
        delivery's token (EVENT_AUTH=oidc). Asked again for each new revision."""
        resources = platform.resources()
        sinks = sink_bindings(resources, platform.resolve)
        return service_env(sinks, subscriber_env(platform.issuer, resources))

    launcher = Launcher(args.knative, env, service_env=services, autoscaler=scaling)
    uvloop.run(
        serve(
            platform,
            launcher,
            args.host,
            args.port,
            args.grace,
            env["API_TOKEN"],
            args.max_event_bytes,
            args.progress_deadline,
            timeouts,
        )
    )
    return 0


def _seconds(most: float | None = None, zero: bool = False) -> Callable[[str], float]:
    """An argparse type: seconds (``30``) or a duration as Knative writes them (``10s``,
    ``1m``); over 0 (or 0 too, with ``zero``), at most ``most`` where given."""

    def parse(text: str) -> float:
        try:
            value = float(text) if _PLAIN.fullmatch(text) else go_seconds(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not seconds or a duration (10s, 1m): {text!r}"
            ) from None
        if not (value >= 0 if zero else value > 0) or value > (most or float("inf")):
            bound = f" and at most {most:g}" if most else ""
            raise argparse.ArgumentTypeError(
                f"{text}: must be {'0 or ' if zero else ''}over 0{bound}"
            )
        return value

    return parse


_PLAIN = re.compile(r"\d+(\.\d*)?|\.\d+")


if __name__ == "__main__":
    sys.exit(main())
