"""What a client of the public gateway must not be able to do, tried against the whole local
platform (`make dev`, real processes on loopback), each attack a bounded handful of requests.

The reproductions of issue 16: before visibility, a forged dead letter or a forged
``inference.requested`` posted through the public gateway changed another client's job;
before the gateway's read deadlines, slowloris connections stayed open until the fd limit.
"""

from __future__ import annotations

import base64
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from functions.core import events
from tests.e2e.conftest import HEADER_TIMEOUT

pytestmark = pytest.mark.e2e
JSON = {"Content-Type": "application/json"}


def routes(platform: str) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in httpx.get(f"{platform}/_routes").json()["services"]}


def cluster_local(platform: str) -> list[str]:
    return sorted(n for n, s in routes(platform).items() if s["visibility"] == "cluster-local")


def test_the_internal_services_are_cluster_local(platform: str) -> None:
    assert {"async-worker", "ab-router", "iris-rf", "iris-svc", "iris-setosa"} <= set(
        cluster_local(platform)
    )


def test_no_cluster_local_service_answers_on_the_public_port(platform: str) -> None:
    for name in cluster_local(platform):
        for path, host in (
            (f"/{name}/health", None),
            ("/health", f"{name}.ml-serving.example.com"),
            ("/health", f"{name}.ml-serving.svc.cluster.local"),
        ):
            headers = {"Host": host} if host else {}
            answer = httpx.get(platform + path, headers=headers)
            assert answer.status_code == 404, (name, path, host)
            assert answer.headers["content-type"] == "application/problem+json"
        assert httpx.get(f"{routes(platform)[name]['url']}/health").status_code == 200


def accepted_job(platform: str) -> str:
    answer = httpx.get(f"{platform}/sync-async/predict/test", timeout=30)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["job_id"])


def forged(kind: str, job_id: str) -> tuple[dict[str, str], bytes]:
    if kind == "dead-letter":
        data: dict[str, Any] = {"job_id": job_id, "image_data": base64.b64encode(b"x").decode()}
        event = events.make(events.INFERENCE_REQUESTED, "/attacker", data)
        event["knativeerrorcode"] = "500"
    else:
        data = {"job_id": job_id, "image_data": base64.b64encode(b"honeycomb").decode()}
        event = events.make(events.INFERENCE_REQUESTED, "/attacker", data)
    return events.to_binary(event)


@pytest.mark.parametrize(("kind", "path"), [("dead-letter", "/dead-letter"), ("request", "/")])
def test_a_forged_event_for_another_clients_job_is_refused(
    platform: str, kind: str, path: str
) -> None:
    job_id = accepted_job(platform)
    headers, body = forged(kind, job_id)
    for via in (f"{platform}/async-worker{path}", platform + path):
        host = {} if via.startswith(f"{platform}/async-worker") else {
            "Host": "async-worker.ml-serving.example.com"
        }  # fmt: skip
        answer = httpx.post(via, content=body, headers=headers | host)
        assert answer.status_code == 404, answer.text
    deadline = time.monotonic() + 60
    while (state := job(platform, job_id))["status"] == "pending":
        assert time.monotonic() < deadline, "the job did not end"
        time.sleep(0.2)
    assert state["status"] == "done", state  # the real worker's answer, not the forged one
    assert state["prediction"] != "honeycomb"
    assert "reason" not in state


def job(platform: str, job_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{platform}/sync-async/job/{job_id}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json()[job_id])


def test_a_variant_is_not_reached_around_its_route(platform: str) -> None:
    """The A/B variants answer through the ab-test route only (which marks how it chose
    them; the edge drops a client's own X-AB-Assignment: tests/e2e/test_gateway.py)."""
    body = orjson.dumps({"data": [[5.1, 3.5, 1.4, 0.2]]})
    assert httpx.post(f"{platform}/ab-test/predict", content=body, headers=JSON).status_code == 200
    for variant in ("iris-rf", "iris-svc", "ab-router"):
        answer = httpx.post(f"{platform}/{variant}/predict", content=body, headers=JSON)
        assert answer.status_code == 404, variant


def test_slowloris_connections_are_cut_off_on_both_listeners(platform: str) -> None:
    local = urlsplit(routes(platform)["async-worker"]["url"])
    public = urlsplit(platform)
    conns = [
        socket.create_connection((url.hostname or "", url.port or 80), timeout=5)
        for url in (public, local)
        for _ in range(20)
    ]
    try:
        for conn in conns:
            conn.sendall(b"GET /iris/health HTTP/1.1\r\nHost: x\r\nX-Slow: a")  # never ends
        time.sleep(HEADER_TIMEOUT + 2)
        for conn in conns:
            conn.settimeout(1)
            answer = conn.recv(65536)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:60]
            assert b"application/problem+json" in answer
            assert conn.recv(65536) == b""  # and closed
    finally:
        for conn in conns:
            conn.close()
