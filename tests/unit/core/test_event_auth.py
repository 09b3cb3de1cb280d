"""The subscriber's check of a delivery's token, against a real issuer (the local broker's,
``emulators.oidc.Issuer``) served on a loopback port: what passes, and every forgery that
must not."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator

import orjson
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from flask import Request, Response
from werkzeug.test import EnvironBuilder

from emulators.oidc import JWKS_PATH, Issuer
from emulators.processes import free_port
from functions.core.errors import FunctionError, ServiceUnavailable, Unauthorized
from functions.core.event_auth import EventVerifier, knative_audience, verifier_for
from functions.core.http import HttpApp, Route
from functions.core.settings import EventAuthSettings, SettingsError, build_settings
from tests.helpers import AppThread

AUDIENCE = "serving.knative.dev/service/ml-serving/async-worker"
SUBJECT = "system:serviceaccount:ml-serving:async-worker-oidc-eventing.knative.dev-trigger"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Issuer, str]]:
    """An issuer and the URL its documents are served at (a port of its own)."""
    port = free_port()
    issuer = Issuer(f"http://127.0.0.1:{port}")
    thread = AppThread(issuer.app(), port=port)
    yield issuer, thread.url
    thread.stop()


@pytest.fixture
def issuer(served: tuple[Issuer, str]) -> Issuer:
    return served[0]


@pytest.fixture
def verifier(issuer: Issuer) -> EventVerifier:
    return EventVerifier(issuer.url, AUDIENCE, issuer.url + JWKS_PATH, leeway=5)


def bearer(token: str) -> str:
    return f"Bearer {token}"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def refused(verifier: EventVerifier, authorization: str | None) -> Unauthorized:
    with pytest.raises(Unauthorized) as caught:
        verifier.verify(authorization)
    assert caught.value.headers["WWW-Authenticate"].startswith("Bearer")
    return caught.value


def test_the_knative_audience_format() -> None:
    assert knative_audience("serving.knative.dev/v1", "Service", "ml-serving", "Async-Worker") == (
        "serving.knative.dev/service/ml-serving/async-worker"
    )
    assert knative_audience("eventing.knative.dev/v1", "Broker", "ns", "default") == (
        "eventing.knative.dev/broker/ns/default"
    )


def test_a_token_the_issuer_signed_for_this_audience_passes(
    issuer: Issuer, verifier: EventVerifier
) -> None:
    claims = verifier.verify(bearer(issuer.token(AUDIENCE, SUBJECT)))
    assert (claims["iss"], claims["aud"], claims["sub"]) == (issuer.url, AUDIENCE, SUBJECT)
    assert claims["exp"] - claims["iat"] == issuer.lifetime
    assert verifier.verify(f"bearer  {issuer.token(AUDIENCE, SUBJECT)}")["sub"] == SUBJECT


def test_the_keys_come_from_the_issuers_discovery_document(issuer: Issuer) -> None:
    found = EventVerifier(issuer.url, AUDIENCE)  # no JWKS URL: discovered
    assert found.verify(bearer(issuer.token(AUDIENCE, SUBJECT)))["aud"] == AUDIENCE


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer   ", "Basic abc", "abc"])
def test_no_bearer_token_is_401(verifier: EventVerifier, authorization: str | None) -> None:
    assert refused(verifier, authorization).headers["WWW-Authenticate"] == "Bearer"


def test_an_expired_token_is_401_and_one_within_the_leeway_passes(
    issuer: Issuer, verifier: EventVerifier
) -> None:
    stale = time.time() - issuer.lifetime - 60
    assert "expired" in refused(verifier, bearer(issuer.token(AUDIENCE, SUBJECT, stale))).detail
    just = time.time() - issuer.lifetime - 2  # 2 s past exp, within the 5 s leeway
    assert verifier.verify(bearer(issuer.token(AUDIENCE, SUBJECT, just)))["sub"] == SUBJECT


def test_a_token_for_another_audience_is_401(issuer: Issuer, verifier: EventVerifier) -> None:
    """The worker's token replayed to the ingest, or the other way round."""
    other = "serving.knative.dev/service/ml-serving/prediction-log-ingest"
    assert "audience" in refused(verifier, bearer(issuer.token(other, SUBJECT))).detail.lower()


def test_a_token_naming_another_issuer_is_401(issuer: Issuer, verifier: EventVerifier) -> None:
    token = issuer.token(AUDIENCE, SUBJECT, iss="https://elsewhere.example")
    assert "issuer" in refused(verifier, bearer(token)).detail.lower()


def test_a_token_missing_a_required_claim_is_401(issuer: Issuer, verifier: EventVerifier) -> None:
    assert "sub" in refused(verifier, bearer(issuer.token(AUDIENCE, SUBJECT, sub=None))).detail


def test_a_self_signed_token_with_an_unknown_kid_is_401(
    issuer: Issuer, verifier: EventVerifier
) -> None:
    forger = Issuer(issuer.url)  # the same iss and aud, a key of its own
    assert "signing key" in refused(verifier, bearer(forger.token(AUDIENCE, SUBJECT))).detail


def test_a_self_signed_token_claiming_the_issuers_kid_is_401(
    issuer: Issuer, verifier: EventVerifier
) -> None:
    forger = Issuer(issuer.url)
    forger.kid = issuer.kid
    assert "signature" in refused(verifier, bearer(forger.token(AUDIENCE, SUBJECT))).detail.lower()


def unsigned(issuer: Issuer, alg: str, sign: bytes | None) -> str:
    header = b64(orjson.dumps({"alg": alg, "typ": "JWT", "kid": issuer.kid}))
    now = int(time.time())
    claims = {"iss": issuer.url, "sub": SUBJECT, "aud": AUDIENCE, "iat": now, "exp": now + 60}
    signing_input = f"{header}.{b64(orjson.dumps(claims))}"
    if sign is None:
        return signing_input + "."
    return signing_input + "." + b64(hmac.digest(sign, signing_input.encode(), hashlib.sha256))


@pytest.mark.parametrize("alg", ["none", "None", ""])
def test_alg_none_is_401(issuer: Issuer, verifier: EventVerifier, alg: str) -> None:
    refused(verifier, bearer(unsigned(issuer, alg, None)))


def test_hs256_signed_with_the_public_key_is_401(issuer: Issuer, verifier: EventVerifier) -> None:
    """The classic confusion: the public key (known to all) used as an HMAC secret."""
    jwk = issuer.jwks()["keys"][0]
    from jwt.algorithms import ECAlgorithm

    public = ECAlgorithm.from_jwk(jwk).public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert "alg" in refused(verifier, bearer(unsigned(issuer, "HS256", public))).detail


def test_a_tampered_payload_is_401(issuer: Issuer, verifier: EventVerifier) -> None:
    header, _, signature = issuer.token("someone-else", SUBJECT).split(".")
    now = int(time.time())
    claims = {"iss": issuer.url, "sub": SUBJECT, "aud": AUDIENCE, "iat": now, "exp": now + 60}
    forged = f"{header}.{b64(orjson.dumps(claims))}.{signature}"
    assert "signature" in refused(verifier, bearer(forged)).detail.lower()


@pytest.mark.parametrize("token", ["abc", "a.b.c", "...", "eyJhbGciOiJFUzI1NiJ9.e30"])
def test_garbage_is_401(verifier: EventVerifier, token: str) -> None:
    refused(verifier, bearer(token))


def test_the_jwks_unreachable_is_503_with_retry_after(issuer: Issuer) -> None:
    """The broker retries a 503, so an issuer outage loses no event."""
    nowhere = f"http://127.0.0.1:{free_port()}"
    for verifier in (
        EventVerifier(issuer.url, AUDIENCE, nowhere + JWKS_PATH),
        EventVerifier(nowhere, AUDIENCE),  # the discovery document unreachable
    ):
        with pytest.raises(ServiceUnavailable) as caught:
            verifier.verify(bearer(issuer.token(AUDIENCE, SUBJECT)))
        assert caught.value.headers["Retry-After"] == "5"


def test_a_jwks_answering_500_is_503(issuer: Issuer) -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500)

    app = web.Application()
    app.router.add_get(JWKS_PATH, broken)
    thread = AppThread(app)
    try:
        verifier = EventVerifier(issuer.url, AUDIENCE, thread.url + JWKS_PATH)
        with pytest.raises(ServiceUnavailable):
            verifier.verify(bearer(issuer.token(AUDIENCE, SUBJECT)))
    finally:
        thread.stop()


# -- the settings, and a route declared auth="event" ---------------------------------------


def test_event_auth_is_off_by_default_and_oidc_needs_an_issuer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("K_SERVICE", "async-worker")
    monkeypatch.setenv("POD_NAMESPACE", "ml-serving")
    settings = build_settings(EventAuthSettings)
    assert verifier_for(settings) is None
    assert settings.audience == AUDIENCE
    monkeypatch.setenv("EVENT_AUTH", "oidc")
    with pytest.raises(SettingsError, match="EVENT_ISSUER"):
        build_settings(EventAuthSettings)
    monkeypatch.setenv("EVENT_ISSUER", "http://issuer")
    monkeypatch.setenv("EVENT_AUDIENCE", "explicit")
    verifier = verifier_for(build_settings(EventAuthSettings))
    assert verifier is not None
    assert (verifier.issuer, verifier.audience) == ("http://issuer", "explicit")


def take(request: Request, rid: str) -> Response:
    return Response(status=202)


def health(request: Request, rid: str) -> Response:
    return Response(status=200)


def subscriber(verifier: EventVerifier | None) -> HttpApp:
    return HttpApp(
        "subscriber",
        [Route("/", "POST", take, auth="event"), Route("/health", "GET", health)],
        verify_event=verifier.verify if verifier else None,
    )


def post(app: HttpApp, path: str = "/", **headers: str) -> Response:
    method = "GET" if path != "/" else "POST"
    environ = EnvironBuilder(path=path, method=method, headers=list(headers.items()))
    return app(Request(environ.get_environ()))


def test_an_event_route_answers_401_problem_json_without_a_good_token(
    issuer: Issuer, verifier: EventVerifier
) -> None:
    app = subscriber(verifier)
    answer = post(app)
    assert answer.status_code == 401
    assert answer.mimetype == "application/problem+json"
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert orjson.loads(answer.get_data())["status"] == 401
    assert post(app, Authorization=bearer(issuer.token("other", SUBJECT))).status_code == 401
    assert post(app, Authorization=bearer(issuer.token(AUDIENCE, SUBJECT))).status_code == 202
    assert post(app, "/health").status_code == 200  # a public route needs none
    assert post(subscriber(None)).status_code == 202  # event auth off: anyone inside


def test_one_handler_has_one_auth() -> None:
    with pytest.raises(ValueError, match="take"):
        HttpApp("mixed", [Route("/a", "POST", take, auth="event"), Route("/b", "GET", take)])


def test_an_unexpected_verifier_error_is_a_500_not_a_pass() -> None:
    def broken(authorization: str | None) -> object:
        raise FunctionError("boom")

    app = HttpApp("s", [Route("/", "POST", take, auth="event")], verify_event=broken)
    assert post(app, Authorization="Bearer x").status_code == 500
