"""Every route a user curls, on a real Knative cluster: the loopback flows, through Knative.

Data-driven from knative/, so a new Service is covered by adding its manifest: every public
Service answers its readiness path through its route (a cluster-local one is Ready with a
cluster-local URL), and every predictor (FUNCTION_SOURCE is the
predict function) answers /health, /predict/test with its card's sample, and a malformed
body with a 400 problem, staying healthy after it.
"""

from __future__ import annotations

import pytest

from emulators.manifests import ServiceSpec
from tests.cluster.conftest import SERVICES, Cluster, service_id

PUBLIC = [s for s in SERVICES if not s.cluster_local]
PREDICTORS = [s for s in PUBLIC if s.env.get("FUNCTION_SOURCE") == "functions/predict/main.py"]


@pytest.mark.parametrize("spec", PUBLIC, ids=service_id)
def test_service_is_ready_and_its_route_answers(cluster: Cluster, spec: ServiceSpec) -> None:
    response = cluster.route(spec.name).get(spec.readiness_path)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("spec", [s for s in SERVICES if s.cluster_local], ids=service_id)
def test_a_cluster_local_service_is_ready_with_a_cluster_local_url(
    cluster: Cluster, spec: ServiceSpec
) -> None:
    """Knative gives it no external route: its URL is the cluster's own
    (``networking.knative.dev/visibility: cluster-local``)."""
    assert cluster.url(spec.name).endswith(".svc.cluster.local")


@pytest.mark.parametrize("spec", PREDICTORS, ids=service_id)
def test_health(cluster: Cluster, spec: ServiceSpec) -> None:
    response = cluster.route(spec.name).get("/health")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["health"] == "ok"
    # Istio's gateway sets X-Request-Id at the edge; the function answers with that id
    assert body["job_id"] == response.headers["X-Request-Id"]


@pytest.mark.parametrize("spec", PREDICTORS, ids=service_id)
def test_predict_test_answers_with_the_card_sample(cluster: Cluster, spec: ServiceSpec) -> None:
    response = cluster.route(spec.name).get("/predict/test")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == spec.env["MODEL_NAME"]
    assert "prediction" in body
    if "OUTLIER_MODEL" in spec.env:
        assert isinstance(body["is_outlier"], bool)


@pytest.mark.parametrize("spec", PREDICTORS, ids=service_id)
def test_bad_input_is_a_problem_and_the_service_stays_healthy(
    cluster: Cluster, spec: ServiceSpec
) -> None:
    route = cluster.route(spec.name)
    response = route.post("/predict", content=b"{", headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == 400
    assert route.get("/health").status_code == 200
