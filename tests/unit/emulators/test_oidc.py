"""The local broker's token issuer and how it reads audiences and identities off the
manifests, as Knative Eventing's ``authentication-oidc`` does."""

from __future__ import annotations

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from emulators.broker import Topology
from emulators.manifests import REPO_ROOT, load_kustomization
from emulators.oidc import (
    JWKS_PATH,
    Issuer,
    delivered_to,
    destination_audience,
    subscriber_env,
    trigger_subject,
)

RESOURCES = load_kustomization(REPO_ROOT / "knative") + load_kustomization(REPO_ROOT / "eventing")


def test_a_token_carries_the_claims_and_the_kid_of_the_served_key() -> None:
    issuer = Issuer("http://issuer.test/")
    token = issuer.token("aud-1", "system:serviceaccount:ns:sa", now=1_000_000)
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": issuer.kid, "typ": "JWT"}
    (key,) = issuer.jwks()["keys"]
    assert (key["kid"], key["alg"], key["use"], key["crv"]) == (issuer.kid, "ES256", "sig", "P-256")
    assert "d" not in key  # the public half only
    public = ECAlgorithm.from_jwk(key)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    claims = jwt.decode(
        token, public, algorithms=["ES256"], audience="aud-1",
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )  # fmt: skip
    assert claims == {
        "iss": "http://issuer.test",
        "sub": "system:serviceaccount:ns:sa",
        "aud": "aud-1",
        "iat": 1_000_000,
        "nbf": 1_000_000,
        "exp": 1_000_300,
    }


def test_the_discovery_document_points_at_the_jwks() -> None:
    issuer = Issuer("http://127.0.0.1:1")
    assert issuer.discovery()["issuer"] == "http://127.0.0.1:1"
    assert issuer.discovery()["jwks_uri"] == "http://127.0.0.1:1" + JWKS_PATH
    assert Issuer(issuer.url).kid != issuer.kid  # a key per run


def test_a_triggers_identity_is_its_oidc_service_account() -> None:
    assert trigger_subject("ml-serving", "async-worker") == (
        "system:serviceaccount:ml-serving:async-worker-oidc-eventing.knative.dev-trigger"
    )


def test_a_destinations_audience_is_its_own_else_its_refs_else_none() -> None:
    ref = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "a", "namespace": "n"}
    assert destination_audience({"ref": ref}) == "serving.knative.dev/service/n/a"
    assert destination_audience({"ref": ref, "audience": "mine"}) == "mine"
    assert destination_audience({"uri": "http://x/", "audience": "mine"}) == "mine"
    assert destination_audience({"uri": "http://x/"}) is None


def test_the_brokers_topology_has_each_destinations_audience_and_identity() -> None:
    triggers = {t.name: t for t in Topology.build(RESOURCES, str).triggers}
    log, worker = triggers["prediction-log"], triggers["async-worker"]
    assert log.audience == "serving.knative.dev/service/ml-serving/prediction-log-ingest"
    assert log.delivery.dead_letter_audience == (
        "serving.knative.dev/service/ml-serving/prediction-log-dead-letter"
    )
    assert (
        worker.audience
        == worker.delivery.dead_letter_audience
        == ("serving.knative.dev/service/ml-serving/async-worker")
    )
    assert worker.subject == trigger_subject("ml-serving", "async-worker")


def test_the_platform_turns_verification_on_for_each_service_the_broker_delivers_to() -> None:
    assert delivered_to(RESOURCES) == dict.fromkeys(
        ["prediction-log-ingest", "prediction-log-dead-letter", "async-worker"], "ml-serving"
    )
    issuer = Issuer("http://127.0.0.1:9")
    env = subscriber_env(issuer, RESOURCES)["async-worker"]
    assert env == {
        "EVENT_AUTH": "oidc",
        "EVENT_ISSUER": "http://127.0.0.1:9",
        "EVENT_JWKS_URL": "http://127.0.0.1:9/openid/v1/jwks",
        "POD_NAMESPACE": "ml-serving",
    }


def test_a_services_platform_env_joins_its_sink_and_its_event_auth() -> None:
    from emulators.launcher import service_env

    issuer = Issuer("http://127.0.0.1:9")
    merged = service_env({"async-worker": "http://broker"}, subscriber_env(issuer, RESOURCES))
    assert merged["async-worker"]["K_SINK"] == "http://broker"
    assert merged["async-worker"]["EVENT_AUTH"] == "oidc"
    assert "K_SINK" not in merged["prediction-log-ingest"]
