"""Every Knative Service of knative/services, as a container of the one image: started with
the manifest's env plus what Knative injects (``PORT``, ``K_SERVICE``, ``K_REVISION``,
``K_CONFIGURATION``, and ``K_SINK`` where a SinkBinding selects it), as the image's non-root
user; ready on the manifest's readiness probe; answering for real; stopped by SIGTERM with
exit status 0.

A predictor's ``/predict/test`` must give what the same model gives in this process (the
labels exactly, the numbers to 1e-5), so the image serves the artifacts the cards pin; and
its prediction-log event must reach ``K_SINK``, a real CloudEvents sink on loopback (which the
container reaches where it shares the host's network, as here; elsewhere ``K_SINK`` is the
cluster's broker address and that check is left to the cluster tier)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from emulators.broker import sink_bindings
from emulators.container import DOCKERFILE, Engine
from emulators.manifests import REPO_ROOT, ServiceSpec, knative_services, load_kustomization
from functions.core.events import PREDICTION_LOGGED
from tests.helpers import PREDICT_SOURCE, free_port, function_client, script_server, wait_for
from tests.manifests.test_dockerfile import copy_sources, files_under, in_context

RESOURCES = [
    *load_kustomization(REPO_ROOT / "knative"),
    *load_kustomization(REPO_ROOT / "eventing"),
]
SERVICES = knative_services(RESOURCES)
CLUSTER_BROKER = "http://broker-ingress.knative-eventing.svc.cluster.local/{namespace}/{name}"
KNATIVE_PORT = 8080  # the containerPort every Service declares
READY_TIMEOUT = 90.0  # a cold container: the engine's start, granian's workers, the model


def service_id(spec: ServiceSpec) -> str:
    return spec.name


class Running:
    """One container of the image, serving one Service's revision on a loopback port."""

    def __init__(self, engine: Engine, image: str, spec: ServiceSpec, sink: str) -> None:
        self.engine, self.spec = engine, spec
        port = free_port()
        # On the host's network the container must listen on a port of its own, on loopback.
        inside = port if engine.host_network else KNATIVE_PORT
        env = {**spec.env, **spec.injected_env(inside)}
        if engine.host_network:
            env["HOST"] = "127.0.0.1"
        resolve = (
            (lambda ref: sink)
            if engine.host_network
            else (lambda ref: CLUSTER_BROKER.format(**ref))
        )
        self.sink = sink_bindings(RESOURCES, resolve).get(spec.name)
        if self.sink:
            env["K_SINK"] = self.sink
        self.id = engine.start(image, env, publish=(port, inside))
        self.url = f"http://127.0.0.1:{port}"

    def wait_ready(self) -> None:
        def ready() -> bool | None:
            try:
                answer = httpx.get(self.url + self.spec.readiness_path, timeout=2.0)
            except httpx.TransportError:
                answer = None
            if answer is not None and answer.status_code == 200:
                return True
            assert self.engine.state(self.id) == "running", self.logs()
            return None

        try:
            wait_for(ready, READY_TIMEOUT, f"{self.spec.name} on {self.spec.readiness_path}")
        except TimeoutError as e:
            raise AssertionError(f"{e}\n{self.logs()}") from e

    def logs(self) -> str:
        return f"--- log of {self.spec.name}:\n{self.engine.logs(self.id)}"


@pytest.fixture(scope="session")
def sink() -> Iterator[str]:
    """A real CloudEvents sink on loopback (tests/event_sink.py), standing in for the broker."""
    with script_server("event_sink.py") as url:
        yield url + "/broker"


def delivered(sink: str, job_id: str) -> list[dict[str, Any]]:
    """The CloudEvent attributes of every delivery to the sink about ``job_id``, whether the
    event came in binary mode (``ce-`` headers) or structured mode (a JSON envelope)."""
    found = []
    for attempt in httpx.get(sink.rsplit("/", 1)[0] + "/_events", timeout=5.0).json():
        headers = attempt["headers"]
        if headers.get("content-type", "").startswith("application/cloudevents+json"):
            attributes = json.loads(attempt["data"])
        else:
            attributes = {k[3:]: v for k, v in headers.items() if k.startswith("ce-")}
        if attributes.get("jobid") == job_id:
            found.append(attributes)
    return found


@pytest.fixture
def running(
    request: pytest.FixtureRequest, engine: Engine, image: str, sink: str
) -> Iterator[Running]:
    container = Running(engine, image, request.param, sink)
    try:
        yield container
    finally:
        engine.stop(container.id)


def close_to(ours: Any, theirs: Any, path: str = "") -> list[str]:
    """Where two JSON answers differ: numbers beyond 1e-5, anything else at all."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        if ours.keys() != theirs.keys():
            return [f"{path}: keys {sorted(ours)} != {sorted(theirs)}"]
        return [d for k in ours for d in close_to(ours[k], theirs[k], f"{path}.{k}")]
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        return [d for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) for d in close_to(a, b, f"{path}[{i}]")]  # fmt: skip
    numbers = (int, float)
    if isinstance(ours, numbers) and isinstance(theirs, numbers) and not isinstance(ours, bool):
        return [] if abs(ours - theirs) <= 1e-5 else [f"{path}: {ours} != {theirs}"]
    return [] if ours == theirs else [f"{path}: {ours!r} != {theirs!r}"]


def in_process(spec: ServiceSpec, path: str) -> dict[str, Any]:
    """The same request to the same model, served by this process."""
    with function_client("predict", PREDICT_SOURCE, **spec.env) as client:
        answer = client.get(path)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.get_json()
    return body


@pytest.mark.parametrize("running", SERVICES, ids=service_id, indirect=True)
def test_the_service_is_ready_answers_and_stops_cleanly(running: Running) -> None:
    spec = running.spec
    running.wait_ready()
    if spec.env.get("FUNCTION_TARGET") == "predict":
        job_id = f"image-tier-{spec.name}-{uuid.uuid4().hex[:8]}"
        answer = httpx.get(
            running.url + "/predict/test", headers={"X-Request-Id": job_id}, timeout=30.0
        )
        assert answer.status_code == 200, answer.text + running.logs()
        ours = {k: v for k, v in answer.json().items() if k != "job_id"}
        theirs = {k: v for k, v in in_process(spec, "/predict/test").items() if k != "job_id"}
        assert close_to(ours, theirs) == [], running.logs()
        if (sink := running.sink) and running.engine.host_network:
            [event] = wait_for(lambda: delivered(sink, job_id) or None, 30.0, "its log event")
            assert event["type"] == PREDICTION_LOGGED
            assert event["source"] == f"/functions/{spec.name}", event
    else:
        answer = httpx.get(running.url + "/openapi.json", timeout=30.0)
        assert answer.status_code == 200, answer.text + running.logs()
        assert answer.json()["openapi"].startswith("3.")
    bad = httpx.post(running.url + "/no/such/path", content=b"{", timeout=30.0)
    assert bad.status_code in (400, 404, 405), bad.text
    assert bad.headers["content-type"].startswith("application/problem+json"), bad.text
    assert running.engine.state(running.id) == "running"
    log = running.engine.logs(running.id)
    assert "telemetry" not in log.lower(), running.logs()
    log = running.logs()
    assert running.engine.stop(running.id) == 0, log


def test_the_image_runs_as_the_numeric_non_root_user_it_declares(
    engine: Engine, image: str
) -> None:
    declared = [
        ln.split()[1] for ln in DOCKERFILE.read_text().splitlines() if ln.startswith("USER ")
    ]
    assert engine.inspect(image, "{{.Config.User}}") == declared[-1]
    uid = engine.run_once(image, "python", "-c", "import os; print(os.getuid(), os.getgid())")
    assert uid.split() == declared[-1].split(":")


def test_the_image_holds_exactly_what_the_build_context_lets_in(engine: Engine, image: str) -> None:
    """The real build (buildah here) sends what BuildKit's reading of .dockerignore sends."""
    runtime_sources = [s for s in copy_sources() if s != "pyproject.toml"]  # the builder's only
    expected = sorted(f for source in runtime_sources for f in files_under(source) if in_context(f))
    listing = (
        "import json, pathlib; root = pathlib.Path('/app'); print(json.dumps(sorted("
        "str(p.relative_to(root)) for p in root.rglob('*') if p.is_file() and '__pycache__' not in p.parts)))"
    )
    assert json.loads(engine.run_once(image, "python", "-c", listing)) == expected
