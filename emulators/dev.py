"""`make dev`: the whole local platform on loopback, read from the manifests.

Starts the broker (eventing/), one process per Knative Service (the launcher, with
``K_SINK`` from the SinkBindings), and the gateway on one port (default 8080) that routes
to them as the cluster's ingress would; prints the routes a user can curl and streams every
process's log lines prefixed with its Service name. Edited manifests re-route the gateway
and the broker without a restart. Ctrl-C or SIGTERM stops everything cleanly.

    python -m emulators.dev [--port 8080] [--seed N]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import signal
import sys
from pathlib import Path

import uvloop
from aiohttp import web

from emulators.broker import Broker, Topology, local_resolver, sink_bindings
from emulators.gateway import Gateway
from emulators.launcher import Launcher, emit, free_port
from emulators.manifests import REPO_ROOT, Resource, load_kustomization, watch
from emulators.routing import RouteTable


class Platform:
    """Where everything listens, and how to read the manifests."""

    def __init__(
        self, knative: Path, eventing: Path, host: str, port: int, seed: int | None
    ) -> None:
        self.knative, self.eventing = knative, eventing
        self.gateway_url = f"http://{host}:{port}"
        self.broker_port = free_port(host)
        self.broker_url = f"http://{host}:{self.broker_port}"
        self.resolve = local_resolver(self.gateway_url, self.broker_url)
        self.rng = random.Random(seed)

    def resources(self) -> list[Resource]:
        eventing = (
            load_kustomization(self.eventing)
            if (self.eventing / "kustomization.yaml").is_file()
            else []
        )
        return load_kustomization(self.knative) + eventing


async def serve(platform: Platform, launcher: Launcher, host: str, port: int) -> None:
    upstreams = {r.spec.revision: r.url for r in launcher.revisions.values()}
    broker = Broker(lambda: Topology.build(platform.resources(), platform.resolve))
    gateway = Gateway(
        lambda: RouteTable.build(platform.resources(), upstreams, platform.rng),
        platform.gateway_url,
        next((f"{platform.broker_url}/{key}" for key in broker.topology.brokers), None),
    )
    gateway_app, broker_app = gateway.app(), broker.app()
    gateway_app.cleanup_ctx.append(
        watch([platform.knative, platform.eventing], [gateway.reload, broker.reload])
    )
    runners = [
        web.AppRunner(gateway_app, access_log=None),
        web.AppRunner(broker_app, access_log=None),
    ]
    for runner, bind_port in zip(runners, (port, platform.broker_port), strict=True):
        await runner.setup()
        await web.TCPSite(runner, host, bind_port).start()
    missing = await asyncio.to_thread(launcher.wait_ready, 180.0)
    emit(f"\ngateway http://{host}:{port}  (routes as JSON: curl {host}:{port}/_routes)")
    for key in broker.topology.brokers:
        emit(f"broker  {platform.broker_url}/{key}  ({len(broker.topology.triggers)} triggers)")
    emit("")
    for entry in gateway.describe()["services"]:
        name = entry["name"]
        state = "NOT READY" if name in missing else "ready"
        emit(f"  {name:<18} curl {entry['url']}/health   [{state}]  Host: {entry['host']}")
    emit("\nCtrl-C stops everything.")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    emit("stopping...")
    for runner in runners:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the local platform")
    parser.add_argument("--knative", type=Path, default=REPO_ROOT / "knative")
    parser.add_argument("--eventing", type=Path, default=REPO_ROOT / "eventing")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--seed", type=int, default=None, help="seed traffic splits")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s platform | %(message)s")
    platform = Platform(args.knative, args.eventing, args.host, args.port, args.seed)
    sinks = sink_bindings(platform.resources(), platform.resolve)
    # Services calling others by their Knative URL (*.svc.cluster.local) reach them through
    # the gateway, as through knative-local-gateway in a cluster (functions/core/client.py).
    env = {**os.environ, "CLUSTER_LOCAL_GATEWAY": platform.gateway_url}
    launcher = Launcher(args.knative, env, sinks=sinks)
    launcher.start()
    try:
        uvloop.run(serve(platform, launcher, args.host, args.port))
    finally:
        launcher.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
