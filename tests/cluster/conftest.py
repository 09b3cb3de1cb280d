"""The cluster tier: the Services of knative/ as a real Knative cluster runs them.

    make deploy && make test-cluster        # = pytest -m cluster tests/cluster

The kube context comes from KUBECONFIG or ~/.kube/config (in a pod, the service account).
Each Service's URL is its ``status.url``, found with the ``kubernetes`` client once the
Service is Ready. Where no cluster is reachable (no kubeconfig, or an API server that does
not answer within 2 s) or Knative is not installed, every test here is skipped with the
reason; so is a plain ``pytest`` run when nothing is deployed, while ``-m cluster`` fails then.

Environment: CLUSTER_NAMESPACE (default: knative/'s namespace); CLUSTER_GATEWAY, the base URL
of the ingress (e.g. http://127.0.0.1 under ``minikube tunnel``) to send each request to,
with the route's host as the Host header, when the route's domain does not resolve.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from emulators.manifests import REPO_ROOT, ServiceSpec, knative_services, load_kustomization

SERVICES = knative_services(load_kustomization(REPO_ROOT / "knative"))
KSVC = {"group": "serving.knative.dev", "version": "v1", "plural": "services"}
API_TIMEOUT = 2.0  # seconds the API server has to answer before the tier is skipped
READY_TIMEOUT = 90.0  # seconds a Service has to become Ready (pytest's timeout is 120)
REQUEST_TIMEOUT = 60.0  # a scale-from-zero request waits for a pod and a model load


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder is in the ``cluster`` tier, whatever file it is in."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.cluster)


@dataclass
class Cluster:
    """Knative Services of one namespace, reached through their routes."""

    api: Any  # kubernetes.client.CustomObjectsApi
    namespace: str
    gateway: str | None
    _routes: dict[str, httpx.Client] = field(default_factory=dict)

    def route(self, name: str) -> httpx.Client:
        """An HTTP client for the Service's route, once the Service is Ready."""
        if name not in self._routes:
            url = self._wait_ready(name)
            if self.gateway:  # the ingress, told which route by the Host header
                client = httpx.Client(base_url=self.gateway, headers={"Host": urlsplit(url).netloc})
            else:
                client = httpx.Client(base_url=url)
            client.timeout = httpx.Timeout(REQUEST_TIMEOUT)
            self._routes[name] = client
        return self._routes[name]

    def url(self, name: str) -> str:
        """The Service's URL (``status.url``) once it is Ready."""
        return self._wait_ready(name)

    def _wait_ready(self, name: str) -> str:
        deadline, reason = time.monotonic() + READY_TIMEOUT, "not found"
        while time.monotonic() < deadline:
            status = self._status(name)
            conditions: list[dict[str, str]] = status.get("conditions", [])
            ready = next((c for c in conditions if c["type"] == "Ready"), {})
            if ready.get("status") == "True" and status.get("url"):
                return str(status["url"])
            reason = ready.get("message") or ready.get("reason") or reason
            time.sleep(1.0)
        pytest.fail(f"ksvc {self.namespace}/{name} not Ready after {READY_TIMEOUT:.0f}s: {reason}")

    def _status(self, name: str) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            ksvc = self.api.get_namespaced_custom_object(
                **KSVC, namespace=self.namespace, name=name, _request_timeout=10
            )
        except ApiException as e:
            if e.status == 404:
                return {}
            raise
        status: dict[str, Any] = ksvc.get("status", {})
        return status

    def deployed(self) -> set[str]:
        """The names of the Knative Services in the namespace."""
        found = self.api.list_namespaced_custom_object(
            **KSVC, namespace=self.namespace, _request_timeout=10
        )
        return {item["metadata"]["name"] for item in found.get("items", [])}

    def close(self) -> None:
        for client in self._routes.values():
            client.close()


def _connect() -> tuple[Any, str]:
    """A CustomObjectsApi for the current kube context, or a skip saying why there is none."""
    kubernetes = pytest.importorskip("kubernetes", reason="pip install kubernetes (dev extra)")
    from kubernetes.config.config_exception import ConfigException

    configuration = kubernetes.client.Configuration()
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):  # running inside a pod
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        else:
            kubernetes.config.load_kube_config(client_configuration=configuration)
    except (ConfigException, OSError) as e:
        pytest.skip(f"no cluster: no usable kubeconfig (KUBECONFIG or ~/.kube/config): {e}")
    configuration.retries = False  # one try: an absent API server is a skip, not a wait
    api_client = kubernetes.client.ApiClient(configuration)
    try:
        # the raw answer: whether the server answers, not what its version looks like
        kubernetes.client.VersionApi(api_client).get_code(
            _request_timeout=API_TIMEOUT, _preload_content=False
        )
    except Exception as e:  # refused, timed out, TLS, 401: whatever it is, no cluster to test
        pytest.skip(f"no cluster: the API server {configuration.host} did not answer: {e}")
    return kubernetes.client.CustomObjectsApi(api_client), configuration.host


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    api, host = _connect()
    from kubernetes.client.exceptions import ApiException  # installed: _connect did not skip

    namespace = os.environ.get("CLUSTER_NAMESPACE") or SERVICES[0].namespace
    knative = Cluster(api, namespace, os.environ.get("CLUSTER_GATEWAY") or None)
    try:
        deployed = knative.deployed()
    except ApiException as e:
        if e.status == 404:
            pytest.skip(f"Knative Serving is not installed in the cluster at {host}")
        raise
    if not deployed & {spec.name for spec in SERVICES}:
        message = f"none of knative/'s Services is deployed in namespace {namespace}"
        if "cluster" in (request.config.option.markexpr or ""):
            pytest.fail(f"{message}: run `make deploy` first")
        pytest.skip(f"{message} (make deploy; make test-cluster)")
    yield knative
    knative.close()


def service_id(spec: ServiceSpec) -> str:
    return spec.name
