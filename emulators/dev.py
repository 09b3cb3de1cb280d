"""`make dev`: the whole local platform on loopback, read from the manifests.

Starts one process per Knative Service (the launcher), then the gateway on one port
(default 8080) that routes to them as the cluster's ingress would, prints the routes a user
can curl, and streams every process's log lines prefixed with its Service name. Ctrl-C or
SIGTERM stops everything cleanly.

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

from emulators.gateway import Gateway
from emulators.launcher import Launcher, emit
from emulators.manifests import REPO_ROOT, load_kustomization
from emulators.routing import RouteTable


def table_builder(knative: Path, upstreams: dict[str, str], seed: int | None) -> RouteTable:
    return RouteTable.build(load_kustomization(knative), upstreams, random.Random(seed))


async def serve(launcher: Launcher, knative: Path, host: str, port: int, seed: int | None) -> None:
    upstreams = {r.spec.revision: r.url for r in launcher.revisions.values()}
    gateway = Gateway(
        lambda: table_builder(knative, upstreams, seed), [knative], f"http://{host}:{port}"
    )
    runner = web.AppRunner(gateway.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    missing = await asyncio.to_thread(launcher.wait_ready, 180.0)
    emit(f"\ngateway http://{host}:{port}  (routes as JSON: curl {host}:{port}/_routes)\n")
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
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the local platform")
    parser.add_argument("--knative", type=Path, default=REPO_ROOT / "knative")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--seed", type=int, default=None, help="seed traffic splits")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s gateway | %(message)s")
    launcher = Launcher(args.knative, dict(os.environ))
    launcher.start()
    try:
        uvloop.run(serve(launcher, args.knative, args.host, args.port, args.seed))
    finally:
        launcher.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
