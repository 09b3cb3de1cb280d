"""The whole local platform (`make dev`) as real processes on loopback, once per session."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator

import httpx
import pytest

from emulators.manifests import REPO_ROOT, knative_services, load_kustomization
from tests.helpers import free_port, script_server, server, wait_for

# Every Knative Service the platform runs, read from the manifests: each answers /health.
SERVICES = [s.name for s in knative_services(load_kustomization(REPO_ROOT / "knative"))]
# The session platform's API token (make dev takes API_TOKEN from the environment), and the
# header that sends it.
API_TOKEN = secrets.token_urlsafe(32)
BEARER = {"Authorization": f"Bearer {API_TOKEN}"}
HEADER_TIMEOUT = 5.0  # the session platform's gateway deadline for a request head


@pytest.fixture(scope="module")
def sink() -> Iterator[str]:
    """A CloudEvents sink of the module's own (tests/event_sink.py): it records every attempt
    to deliver to it, ``GET /_events`` lists them."""
    with script_server("event_sink.py") as url:
        yield url


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m emulators.dev` on a free port; yields the gateway URL once every Service is ready."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "emulators.dev", f"--port={port}", "--seed=1"]
    command.append(f"--header-timeout={HEADER_TIMEOUT:g}")  # test_attacks' slowloris waits it
    state = tmp_path_factory.mktemp("platform")  # stores and outboxes of this session only
    env = {
        "LOG_STORE_URL": f"sqlite:///{state / 'log.sqlite3'}",
        "OUTBOX_DIR": str(state / "outbox"),
        "DEAD_LETTER_DIR": str(state / "dead-letters"),
        "JOB_STORE_URL": f"sqlite://{state / 'jobs.sqlite3'}",
        "API_TOKEN": API_TOKEN,
    }
    with server(command, env, f"{url}/_routes"):
        # Each where it is served: a cluster-local Service on the cluster-local listener.
        routes = {s["name"]: s["url"] for s in httpx.get(f"{url}/_routes").json()["services"]}
        for name in SERVICES:
            wait_for(
                lambda name=name: (
                    # one request is enough: the activator holds it until the Service is ready
                    True
                    if httpx.get(f"{routes[name]}/health", timeout=120).status_code == 200
                    else None
                ),
                120,
                f"{name} behind the gateway",
            )
        yield url
