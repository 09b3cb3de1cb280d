"""Condition-based routing and the online A/B test, through the local gateway with real
processes (the whole `make dev` platform), as declared in knative/routes/."""

from __future__ import annotations

import base64
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import BEARER
from tests.helpers import sample_bytes, wait_for
from tests.unit.emulators.test_routing import within_bounds

pytestmark = pytest.mark.e2e
CAT_CLASSES = {"tiger cat", "Egyptian cat", "tabby", "Persian cat", "Siamese cat"}


def image(name: str) -> dict[str, str]:
    return {"image_data": base64.b64encode(sample_bytes(name)).decode()}


@pytest.mark.parametrize(
    ("photo", "headers", "model", "check"),
    [
        ("cat.png", {}, "efficientnet-lite0", lambda label: label in CAT_CLASSES),
        ("cat.png", {"target": "mountain"}, "plant", lambda label: label == "background"),
        (
            "cat.png",
            {"TARGET": "mountain"},
            "plant",
            lambda label: label == "background",
        ),  # names: any case
        (
            "cat.png",
            {"target": "Mountain"},
            "efficientnet-lite0",
            lambda label: label in CAT_CLASSES,
        ),  # values: exact
        ("flower.jpg", {"target": "mountain"}, "plant", lambda label: label not in ("background",)),
        ("flower.jpg", {}, "efficientnet-lite0", lambda label: label != "background"),
    ],
)
def test_condition_route(
    platform: str, photo: str, headers: dict[str, str], model: str, check: object
) -> None:
    response = httpx.post(
        f"{platform}/condition/predict", json=image(photo), headers=headers, timeout=30
    )
    assert response.status_code == 200
    assert response.headers["X-Model"] == model
    assert check(response.json()["prediction"])  # type: ignore[operator]


def test_condition_route_by_host_and_per_route_endpoints(platform: str) -> None:
    host = {"Host": "condition.ml-serving.example.com"}
    plant_labels = httpx.get(f"{platform}/label", headers={**host, "target": "mountain"}).json()
    imagenet_labels = httpx.get(f"{platform}/label", headers=host).json()
    assert plant_labels[0] == "background"
    assert len(imagenet_labels) == 1000
    test = httpx.get(f"{platform}/condition/predict/test", headers={"target": "mountain"}).json()
    assert test["model"] == "plant"
    assert test["prediction"] != "background"  # the plant sample is the flower photo
    bad = httpx.post(
        f"{platform}/condition/predict", json={"image_data": "%%%"}, headers={"target": "mountain"}
    )
    assert bad.status_code == 422
    assert bad.headers["Content-Type"] == "application/problem+json"


def test_ab_split_follows_the_declared_weights(platform: str) -> None:
    with httpx.Client(base_url=platform) as client:
        modes = Counter(client.get("/ab-test/predict/test").json()["mode"] for _ in range(2000))
    assert set(modes) == {"svc", "rf"}
    assert within_bounds(modes["svc"], 2000, 0.6), modes


def test_sticky_users_never_switch_and_share_by_weight(platform: str) -> None:
    seen: dict[str, set[str]] = {}
    with httpx.Client(base_url=platform) as client:
        for user in ("alice", "bob", "carol"):
            for _ in range(200):
                response = client.get("/ab-test/predict/test", headers={"X-User-Id": user})
                assert response.status_code == 200
                seen.setdefault(user, set()).add(response.json()["mode"])
        assert all(len(modes) == 1 for modes in seen.values()), seen
        first = Counter(
            client.get("/ab-test/predict/test", headers={"X-User-Id": f"user-{i}"}).json()["mode"]
            for i in range(400)
        )
    assert within_bounds(first["svc"], 400, 0.6), first


@pytest.mark.parametrize("variant", ["svc", "rf"])
def test_a_forced_variant_is_always_reached(platform: str, variant: str) -> None:
    with httpx.Client(base_url=platform) as client:
        modes = {
            client.get("/ab-test/predict/test", headers={"X-Variant": variant}).json()["mode"]
            for _ in range(50)
        }
    assert modes == {variant}


def test_forced_and_sticky_requests_are_marked_in_the_log(platform: str) -> None:
    with httpx.Client(base_url=platform) as client:
        client.get("/ab-test/predict/test", headers={"X-Variant": "rf", "X-Request-Id": "forced-1"})
        client.get(
            "/ab-test/predict/test", headers={"X-User-Id": "dora", "X-Request-Id": "sticky-1"}
        )
        client.get(
            "/ab-test/predict/test",
            headers={"X-Request-Id": "split-1", "X-AB-Assignment": "forced"},
        )
        # A variant called directly (on the cluster-local listener), not through the route:
        # was logged as split A/B traffic.
        routes = {s["name"]: s["url"] for s in client.get("/_routes").json()["services"]}
        direct = httpx.get(
            f"{routes['iris-rf']}/predict/test", headers={"X-Request-Id": "direct-1"}
        )
        assert direct.status_code == 200

        def assignment(job: str) -> str | None:
            logs = client.get("/prediction-log/logs", params={"job_id": job}, headers=BEARER)
            records = logs.json()["records"]
            return records[0]["assignment"] if records else None

        # The log is eventually consistent: a delivery the broker had to retry (a busy log
        # Service) arrives after its backoff, 1 + 2 + 4 + ... seconds.
        marked = (
            ("forced-1", "forced"), ("sticky-1", "sticky"), ("split-1", "split"),
            ("direct-1", "direct"),
        )  # fmt: skip
        for job, expected in marked:
            assert wait_for(lambda job=job: assignment(job), 90, f"{job} in the log") == expected
        report = client.get(
            "/prediction-log/ab-report", params={"route": "ab-test"}, headers=BEARER
        )
        assert report.json()["direct"] >= 1


@pytest.mark.parametrize(
    ("method", "path", "body", "services"),
    [
        (
            "POST",
            "/fanout/predict",
            {"data": [[5.1, 3.5, 1.4, 0.2]]},
            {"fanout", "iris-setosa", "iris-versicolor", "iris-virginica"},
        ),
        ("GET", "/sync-async/predict/test", None, {"sync-async", "imagenet", "async-worker"}),
    ],
)
def test_a_request_through_a_proxy_makes_one_record_per_hop(
    platform: str, method: str, path: str, body: Any, services: set[str]
) -> None:
    rid = f"hops-{uuid.uuid4()}"
    response = httpx.request(
        method, f"{platform}{path}", json=body, headers={"X-Request-Id": rid}, timeout=30
    )
    assert response.status_code == 200

    def hops() -> set[str] | None:
        logs = httpx.get(f"{platform}/prediction-log/logs", params={"job_id": rid}, headers=BEARER)
        found = logs.json()["records"]
        seen = {r["service"] for r in found}
        return seen if seen >= services else None

    assert wait_for(hops, 90, f"a record per hop of {path}") == services


def test_the_log_ingest_is_cluster_local_and_the_broker_still_delivers_to_it(
    platform: str,
) -> None:
    """No one outside writes the log: the public port has no prediction-log-ingest, nor does
    prediction-log take events; the broker's delivery (a record per prediction) reaches it."""
    routes = {s["name"]: s for s in httpx.get(f"{platform}/_routes").json()["services"]}
    assert routes["prediction-log-ingest"]["visibility"] == "cluster-local"
    assert httpx.post(f"{platform}/prediction-log-ingest/", json={}).status_code == 404
    assert httpx.get(f"{platform}/prediction-log-ingest/health").status_code == 404
    assert httpx.post(f"{platform}/prediction-log/", json={}).status_code == 404
    rid = f"ingest-{uuid.uuid4()}"
    httpx.get(f"{platform}/iris/predict/test", headers={"X-Request-Id": rid})

    def stored() -> bool | None:
        logs = httpx.get(f"{platform}/prediction-log/logs", params={"job_id": rid}, headers=BEARER)
        return True if logs.json()["records"] else None

    assert wait_for(stored, 90, f"{rid} in the log")
