"""The gateway over real HTTP: real backends on loopback, manifests written to tmp_path."""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from emulators.gateway import Gateway
from emulators.launcher import Launcher
from emulators.manifests import REPO_ROOT, load_kustomization, watch
from emulators.routing import RouteTable
from tests.helpers import AppThread, script_server
from tests.unit.emulators.test_routing import within_bounds

pytestmark = pytest.mark.e2e
GATEWAY_HOST = "knative-local-gateway.istio-system.svc.cluster.local"


class RunningGateway(AppThread):
    """The gateway over ``folder``'s manifests, on a free port in a thread of its own."""

    def __init__(self, folder: Path, upstreams: dict[str, str], seed: int = 1) -> None:
        rng = random.Random(seed)
        self.gateway = Gateway(
            lambda: RouteTable.build(load_kustomization(folder), upstreams, rng), "http://127.0.0.1"
        )
        app = self.gateway.app()
        app.cleanup_ctx.append(watch([folder], [self.gateway.reload], poll=0.1))
        super().__init__(self.gateway.runner(app, access_log=None))
        self.gateway.public_url = self.url


def write_manifests(folder: Path, docs: list[dict[str, object]]) -> None:
    """One file per document plus a kustomization listing them (namespace ns)."""
    names = []
    for doc in docs:
        name = f"{doc['kind']}-{doc['metadata']['name']}.yaml".lower()  # type: ignore[index]
        (folder / name).write_text(yaml.safe_dump(doc))
        names.append(name)
    (folder / "kustomization.yaml").write_text(
        yaml.safe_dump({"namespace": "ns", "resources": names})
    )


def ksvc(name: str, concurrency: int = 0, timeout: int = 30) -> dict[str, object]:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "spec": {
                    "containerConcurrency": concurrency,
                    "timeoutSeconds": timeout,
                    "containers": [{"image": "x"}],
                }
            }
        },
    }


def virtual(name: str, http: list[dict[str, object]]) -> dict[str, object]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name},
        "spec": {"hosts": [f"{name}.ns.example.com"], "http": http},
    }


def to(service: str, weight: int) -> dict[str, object]:
    return {
        "destination": {"host": GATEWAY_HOST},
        "headers": {"request": {"set": {"Host": f"{service}.ns.svc.cluster.local"}}},
        "weight": weight,
    }


@pytest.fixture(scope="module")
def echo() -> Iterator[str]:
    with script_server("echo_server.py") as url:
        yield url


@pytest.fixture
def gateway_to_echo(tmp_path: Path, echo: str) -> Iterator[tuple[RunningGateway, Path]]:
    upstreams = {"slow-00001": echo, "tight-00001": echo, "other-00001": echo}
    write_manifests(
        tmp_path, [ksvc("slow", timeout=1), ksvc("tight", concurrency=1), ksvc("other")]
    )
    running = RunningGateway(tmp_path, upstreams)
    yield running, tmp_path
    running.stop()


def test_ids_and_trace_context_are_passed_through(
    gateway_to_echo: tuple[RunningGateway, Path],
) -> None:
    gw, _ = gateway_to_echo
    sent = httpx.get(
        f"{gw.url}/other/x/y?q=1", headers={"X-Request-Id": "req-7", "traceparent": "00-abc-def-01"}
    ).json()
    assert sent["path"] == "/x/y"
    assert sent["headers"]["x-request-id"] == "req-7"
    assert sent["headers"]["traceparent"] == "00-abc-def-01"
    made = httpx.get(f"{gw.url}/other/", headers={"Host": "other.ns.example.com"})
    assert made.json()["headers"]["x-request-id"]


def test_slow_backend_gets_504(gateway_to_echo: tuple[RunningGateway, Path]) -> None:
    gw, _ = gateway_to_echo
    started = time.monotonic()
    response = httpx.get(f"{gw.url}/slow/?sleep=3", timeout=10)
    assert response.status_code == 504
    assert response.headers["content-type"] == "application/problem+json"
    assert time.monotonic() - started < 2.5
    assert httpx.get(f"{gw.url}/slow/?sleep=0").status_code == 200


def test_concurrency_overflow_gets_503(gateway_to_echo: tuple[RunningGateway, Path]) -> None:
    gw, _ = gateway_to_echo
    # containerConcurrency 1: one in flight, ten queued, the rest refused as Knative's queue-proxy does.
    with ThreadPoolExecutor(16) as pool:
        statuses = list(
            pool.map(
                lambda _: httpx.get(f"{gw.url}/tight/?sleep=0.5", timeout=30).status_code, range(16)
            )
        )
    assert statuses.count(503) >= 1
    assert statuses.count(200) >= 2


def test_unknown_route_is_a_404_problem(gateway_to_echo: tuple[RunningGateway, Path]) -> None:
    gw, _ = gateway_to_echo
    response = httpx.get(f"{gw.url}/nope/x")
    assert response.status_code == 404
    assert response.json()["status"] == 404


def test_routes_listing(gateway_to_echo: tuple[RunningGateway, Path], echo: str) -> None:
    gw, _ = gateway_to_echo
    routes = httpx.get(f"{gw.url}/_routes").json()
    other = next(s for s in routes["services"] if s["name"] == "other")
    assert other["url"] == f"{gw.url}/other"
    assert other["host"] == "other.ns.example.com"
    assert other["traffic"] == [
        {
            "revision": "other-00001",
            "tag": None,
            "percent": 100,
            "latest_revision": True,
            "upstream": echo,
        }
    ]
    assert set(routes["broker"]) == {"url"}


def test_faults_from_a_virtual_service(gateway_to_echo: tuple[RunningGateway, Path]) -> None:
    gw, folder = gateway_to_echo
    http = [
        {
            "name": "broken",
            "match": [{"headers": {"x-fault": {"exact": "abort"}}}],
            "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 100}}},
            "route": [to("other", 100)],
        },
        {
            "name": "slowed",
            "fault": {"delay": {"fixedDelay": "400ms", "percentage": {"value": 100}}},
            "route": [to("other", 100)],
        },
    ]
    write_manifests(folder, [ksvc("other"), virtual("faulty", http)])

    def reloaded() -> bool:
        return "faulty" in {s["name"] for s in httpx.get(f"{gw.url}/_routes").json()["services"]}

    deadline = time.monotonic() + 10
    while not reloaded():
        assert time.monotonic() < deadline, "the gateway did not re-read the manifests"
        time.sleep(0.05)
    assert httpx.get(f"{gw.url}/faulty/x", headers={"x-fault": "abort"}).status_code == 503
    started = time.monotonic()
    assert httpx.get(f"{gw.url}/faulty/x").status_code == 200
    assert time.monotonic() - started >= 0.4


@pytest.fixture(scope="module")
def iris_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Two real predictor processes (SVC and random forest) started by the launcher."""
    folder = tmp_path_factory.mktemp("pair")
    docs = []
    for name, model in (("iris-a", "iris-svc"), ("iris-b", "iris-rf")):
        doc = yaml.safe_load((REPO_ROOT / "knative" / "services" / "iris.yaml").read_text())
        doc["metadata"]["name"] = name
        env = doc["spec"]["template"]["spec"]["containers"][0]["env"]
        for entry in env:
            if entry["name"] == "MODEL_NAME":
                entry["value"] = model
        docs.append(doc)
    write_manifests(folder, docs)
    launcher = Launcher(folder, dict(os.environ))
    launcher.start()
    try:
        assert launcher.wait_ready(90) == []
        yield {r.spec.revision: r.url for r in launcher.revisions.values()}
    finally:
        launcher.stop()


def test_weighted_split_and_manifest_changes_through_real_predictors(
    tmp_path: Path, iris_pair: dict[str, str]
) -> None:
    write_manifests(
        tmp_path,
        [
            ksvc("iris-a"),
            ksvc("iris-b"),
            virtual("ab", [{"route": [to("iris-a", 60), to("iris-b", 40)]}]),
        ],
    )
    gw = RunningGateway(tmp_path, iris_pair)
    try:
        with httpx.Client(base_url=gw.url) as client:
            models = Counter(client.get("/ab/predict/test").json()["model"] for _ in range(2000))
            assert within_bounds(models["iris-svc"], 2000, 0.6), models
            write_manifests(
                tmp_path,
                [
                    ksvc("iris-a"),
                    ksvc("iris-b"),
                    virtual("ab", [{"route": [to("iris-a", 0), to("iris-b", 100)]}]),
                ],
            )
            deadline = time.monotonic() + 10
            while client.get("/ab/predict/test").json()["model"] != "iris-rf" or any(
                client.get("/ab/predict/test").json()["model"] != "iris-rf" for _ in range(20)
            ):
                assert time.monotonic() < deadline, "the new weights never applied"
    finally:
        gw.stop()


def private(name: str) -> dict[str, object]:
    doc = ksvc(name)
    doc["metadata"] = {
        "name": name,
        "labels": {"networking.knative.dev/visibility": "cluster-local"},
    }
    return doc


@pytest.fixture
def two_listeners(tmp_path: Path, echo: str) -> Iterator[tuple[str, str]]:
    """The public and the cluster-local listener of one gateway, as `make dev` runs them."""
    upstreams = {"open-00001": echo, "private-00001": echo}
    on_ingress = virtual("edge", [{"route": [to("private", 100)]}])
    on_ingress["spec"]["gateways"] = ["knative-serving/knative-ingress-gateway"]  # type: ignore[index]
    mesh_only = virtual("inside", [{"route": [to("open", 100)]}])
    write_manifests(tmp_path, [ksvc("open"), private("private"), on_ingress, mesh_only])
    gateway = Gateway(lambda: RouteTable.build(load_kustomization(tmp_path), upstreams), "x")
    served = AppThread(  # one loop, as in dev
        gateway.runner(gateway.app(), access_log=None),
        None,
        gateway.runner(gateway.app(public=True), access_log=None),
    )
    local, public = served.urls
    gateway.public_url, gateway.local_url = public, local
    yield public, local
    served.stop()


@pytest.mark.parametrize(
    ("path", "host"),
    [("/private/health", None), ("/", "private.ns.example.com"),
     ("/", "private.ns.svc.cluster.local"), ("/inside/", None)],
)  # fmt: skip
def test_the_public_listener_refuses_what_is_cluster_local(
    two_listeners: tuple[str, str], path: str, host: str | None
) -> None:
    public, local = two_listeners
    headers = {"Host": host} if host else {}
    refused = httpx.get(public + path, headers=headers)
    unknown = httpx.get(f"{public}/nothing-by-that-name/")
    assert refused.status_code == 404  # as Knative's ingress answers: as if it did not exist
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["title"] == unknown.json()["title"]
    assert httpx.get(local + path, headers=headers).status_code == 200


def test_a_route_on_the_ingress_still_reaches_a_cluster_local_service(
    two_listeners: tuple[str, str],
) -> None:
    public, _ = two_listeners
    assert httpx.get(f"{public}/edge/x").json()["path"] == "/x"
    assert httpx.get(f"{public}/open/x").json()["path"] == "/x"


def test_platform_headers_from_a_client_are_dropped_at_the_edge_only(
    two_listeners: tuple[str, str],
) -> None:
    public, local = two_listeners
    forged = {"X-AB-Assignment": "sticky"}
    assert "x-ab-assignment" not in httpx.get(f"{public}/open/", headers=forged).json()["headers"]
    assert "x-ab-assignment" not in httpx.get(f"{public}/edge/", headers=forged).json()["headers"]
    inside = httpx.get(f"{local}/open/", headers=forged).json()["headers"]
    assert inside["x-ab-assignment"] == "sticky"  # the platform's own Services may set it


def test_routes_list_every_service_with_its_visibility(two_listeners: tuple[str, str]) -> None:
    public, local = two_listeners
    routes = httpx.get(f"{public}/_routes").json()
    by_name = {s["name"]: s for s in routes["services"]}
    assert set(by_name) == {"open", "private", "edge", "inside"}
    assert (by_name["private"]["visibility"], by_name["private"]["url"]) == (
        "cluster-local",
        f"{local}/private",
    )
    assert by_name["private"]["traffic"][0]["upstream"]
    assert (by_name["open"]["visibility"], by_name["open"]["url"]) == ("public", f"{public}/open")
    assert by_name["inside"]["visibility"] == "mesh"
    assert routes["cluster_local_gateway"]["url"] == local
