"""The fan-out proxy through the local gateway: real predictor processes started by the
launcher from manifests written to tmp_path, the proxy reaching them by their Knative URLs.

Besides the project's ``fanout`` (verbatim), the manifests add a fourth predictor and a
proxy listing it (a manifest change, no code), and a proxy whose versicolor backend sits
behind an Istio VirtualService with ``fault.delay`` past the proxy's deadline.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from emulators.manifests import REPO_ROOT
from tests.helpers import LocalPlatform

pytestmark = pytest.mark.e2e
SERVICES = REPO_ROOT / "knative" / "services"
SPECIES = ("setosa", "versicolor", "virginica")
TYPICAL = {
    "setosa": [5.1, 3.5, 1.4, 0.2],
    "versicolor": [5.9, 3.0, 4.2, 1.5],
    "virginica": [6.7, 3.0, 5.2, 2.3],
}
DELAYED = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "versicolor-delayed"},
    "spec": {
        "hosts": ["versicolor-delayed.ml-serving.svc.cluster.local"],
        "http": [
            {
                "fault": {"delay": {"fixedDelay": "3s", "percentage": {"value": 100}}},
                "route": [
                    {"destination": {"host": "iris-versicolor.ml-serving.svc.cluster.local"}}
                ],
            }
        ],
    },
}


def service(file: str, name: str | None = None, **env: str) -> dict[str, Any]:
    """A Service manifest of the project, renamed and with env values replaced or added."""
    doc: dict[str, Any] = yaml.safe_load((SERVICES / file).read_text())
    doc = copy.deepcopy(doc)
    if name:
        doc["metadata"]["name"] = name
    container = doc["spec"]["template"]["spec"]["containers"][0]
    values = {e["name"]: e["value"] for e in container["env"]} | env
    container["env"] = [{"name": k, "value": v} for k, v in values.items()]
    return doc


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    folder = tmp_path_factory.mktemp("fanout")
    fanout = service("fanout.yaml")
    backends = next(
        e["value"] for e in fanout["spec"]["template"]["spec"]["containers"][0]["env"]
        if e["name"] == "BACKENDS"
    )  # fmt: skip
    docs = [
        *(service(f"iris-{s}.yaml", WORKERS="1") for s in SPECIES),
        service("iris-setosa.yaml", "iris-setosa-copy", WORKERS="1"),
        fanout,
        service(
            "fanout.yaml",
            "fanout-four",
            BACKENDS=backends + ",extra=http://iris-setosa-copy.ml-serving.svc.cluster.local",
        ),
        service(
            "fanout.yaml",
            "fanout-slow",
            BACKENDS=backends.replace("iris-versicolor.", "versicolor-delayed."),
            BACKEND_TIMEOUT="0.5",
        ),
        DELAYED,
    ]
    names = []
    for doc in docs:
        names.append(f"{doc['kind']}-{doc['metadata']['name']}.yaml".lower())
        (folder / names[-1]).write_text(yaml.safe_dump(doc))
    (folder / "kustomization.yaml").write_text(
        yaml.safe_dump({"namespace": "ml-serving", "resources": names})
    )
    running = LocalPlatform(folder, None, {"LOG_LEVEL": "WARNING"})
    yield running
    running.stop()


def post(url: str, rows: list[list[float]], **headers: str) -> httpx.Response:
    return httpx.post(url, json={"data": rows}, headers=headers, timeout=10)


def test_labels_of_the_three_species(platform: LocalPlatform) -> None:
    for species, row in TYPICAL.items():
        response = post(f"{platform.url}/fanout/predict/label", [row], **{"X-Request-Id": "t-1"})
        assert response.status_code == 200
        assert response.headers["X-Answered"] == "3/3"
        body = response.json()
        assert body["job_id"] == "t-1"
        assert body["prediction"]["label"] == species
        assert body["prediction"]["proba"] > 0.9
    rows = post(f"{platform.url}/fanout/predict/label", list(TYPICAL.values())).json()
    assert [r["label"] for r in rows["prediction"]] == list(SPECIES)


def test_each_backends_prediction_and_health(platform: LocalPlatform) -> None:
    body = post(f"{platform.url}/fanout/predict", [TYPICAL["setosa"]]).json()
    assert set(body) == {"job_id", *SPECIES}
    assert body["setosa"]["prediction"][0] > 0.9 > body["virginica"]["prediction"][0]
    health = httpx.get(f"{platform.url}/fanout/health/all").json()
    assert {k: v for k, v in health.items() if k != "job_id"} == {
        s: {"health": "ok"} for s in SPECIES
    }


def test_a_fourth_backend_from_the_manifests_alone_is_called(platform: LocalPlatform) -> None:
    response = httpx.get(f"{platform.url}/fanout-four/predict/get/test")
    assert response.headers["X-Answered"] == "4/4"
    body = response.json()
    assert body["extra"] == body["setosa"]  # the same card behind another Service
    assert set(httpx.get(f"{platform.url}/fanout-four/metadata").json()["prediction_sample"]) == {
        *SPECIES,
        "extra",
    }


def test_a_backend_delayed_past_the_deadline_is_a_timeout_and_the_answer_is_on_time(
    platform: LocalPlatform,
) -> None:
    started = time.monotonic()
    response = post(f"{platform.url}/fanout-slow/predict/label", [TYPICAL["versicolor"]])
    took = time.monotonic() - started
    assert response.status_code == 200
    assert took < 1.5, took  # the 0.5 s deadline (plus a margin), not the 3 s delay
    assert response.headers["X-Answered"] == "2/3"
    body = response.json()
    assert body["errors"] == {
        "versicolor": {"status": 504, "reason": "timeout", "detail": "no answer within 0.5s"}
    }
    assert body["prediction"]["label"] in {"setosa", "virginica"}  # decided among the rest


def test_stopped_backends_give_partial_answers_then_503(platform: LocalPlatform) -> None:
    """Last in the module: it stops backends for good."""
    platform.launcher.revisions["iris-virginica"].stop()
    row = [TYPICAL["virginica"]]
    response = post(f"{platform.url}/fanout/predict", row)
    assert response.status_code == 200
    assert response.headers["X-Answered"] == "2/3"
    body = response.json()
    assert set(body) == {"job_id", "setosa", "versicolor", "errors"}
    assert body["errors"]["virginica"]["status"] == 503
    label = post(f"{platform.url}/fanout/predict/label", row).json()
    best = max(("setosa", "versicolor"), key=lambda s: body[s]["prediction"][0])
    assert label["prediction"] == {"proba": body[best]["prediction"][0], "label": best}
    assert set(label["errors"]) == {"virginica"}
    for name in ("iris-setosa", "iris-versicolor"):
        platform.launcher.revisions[name].stop()
    response = post(
        f"{platform.url}/fanout/predict", [TYPICAL["setosa"]], **{"X-Request-Id": "down-1"}
    )
    assert response.status_code == 503
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.headers["X-Answered"] == "0/3"
    problem = response.json()
    assert problem["instance"] == "down-1"
    assert [e["backend"] for e in problem["errors"]] == list(SPECIES)
    assert all(e["status"] == 503 and e["detail"] for e in problem["errors"])
