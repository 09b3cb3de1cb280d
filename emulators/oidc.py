"""The issuer of the local broker's delivery tokens: Knative Eventing's OIDC, locally.

On a cluster with ``authentication-oidc`` on, the broker asks the Kubernetes API server for a
token of the Trigger's OIDC service account with the subscriber's audience, and sends it as
``Authorization: Bearer``; subscribers check it against the API server's service-account
issuer (``/.well-known/openid-configuration``, ``/openid/v1/jwks``). ``Issuer`` plays that
issuer for the local broker: its own ES256 key (made per run, never written down), a
``kid``, short-lived tokens (``iss``, ``sub``, ``aud``, ``iat``, ``exp``), and both documents
served on a listener of its own (``app``), so subscribers run the same check locally as on a
cluster. Its own, as the API server is not the broker: a broker that stops accepting events
still delivers those it took, and their subscribers must still reach the keys.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Mapping
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from emulators.manifests import KNATIVE_SERVICE, Resource
from functions.core.event_auth import DISCOVERY_PATH, knative_audience

JWKS_PATH = "/openid/v1/jwks"  # where the Kubernetes API server serves its keys
TRIGGER_GROUP = "eventing.knative.dev"


def trigger_subject(namespace: str, trigger: str) -> str:
    """The ``sub`` of a Trigger's deliveries: its OIDC service account, which Knative names
    ``<trigger>-oidc-<group>-<kind>`` (kmeta.ChildName; it hashes names past 63 characters,
    which this does not)."""
    return f"system:serviceaccount:{namespace}:{trigger}-oidc-{TRIGGER_GROUP}-trigger".lower()


def destination_audience(destination: Mapping[str, Any]) -> str | None:
    """The audience of a Knative Destination: its ``audience:``, else the one its ``ref``
    would announce (``<group>/<kind>/<namespace>/<name>``); a bare ``uri`` has none, and
    gets no token, as on a cluster. (A Knative Service announces none on a cluster either:
    the Triggers name theirs, which tests/manifests checks.)"""
    if audience := destination.get("audience"):
        return str(audience)
    ref = destination.get("ref")
    if ref is None:
        return None
    return knative_audience(ref["apiVersion"], ref["kind"], ref["namespace"], ref["name"])


class Issuer:
    """Mints delivery tokens under one ES256 key and serves its discovery document and
    JWKS (``app``). ``url`` is the ``iss`` of every token, where it is served."""

    def __init__(self, url: str, lifetime: float = 300.0) -> None:
        self.url, self.lifetime = url.rstrip("/"), lifetime
        self._key = ec.generate_private_key(ec.SECP256R1())
        public = self._key.public_key()
        der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # As the API server names its keys: the SHA-256 of the public key, base64url.
        self.kid = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")
        self._jwk = {**ECAlgorithm.to_jwk(public, as_dict=True), "kid": self.kid}
        self._jwk.update(use="sig", alg="ES256")

    def token(self, audience: str, subject: str, now: float | None = None, **claims: Any) -> str:
        """A token for ``audience`` as ``subject``, valid ``lifetime`` seconds from ``now``;
        ``claims`` are added or replace the standard ones."""
        issued = int(time.time() if now is None else now)
        payload = {
            "iss": self.url,
            "sub": subject,
            "aud": audience,
            "iat": issued,
            "nbf": issued,
            "exp": issued + int(self.lifetime),
            **claims,
        }
        return jwt.encode(payload, self._key, algorithm="ES256", headers={"kid": self.kid})

    def discovery(self) -> dict[str, Any]:
        """The OpenID discovery document, as the API server's service-account issuer has it."""
        return {
            "issuer": self.url,
            "jwks_uri": self.url + JWKS_PATH,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self._jwk]}

    def app(self) -> web.Application:
        """The two documents at the API server's paths, for the listener at ``url``."""

        async def discovery(request: web.Request) -> web.Response:
            return web.json_response(self.discovery())

        async def jwks(request: web.Request) -> web.Response:
            return web.json_response(self.jwks(), content_type="application/jwk-set+json")

        app = web.Application()
        app.router.add_get(DISCOVERY_PATH, discovery)
        app.router.add_get(JWKS_PATH, jwks)
        return app


def delivered_to(resources: list[Resource]) -> dict[str, str]:
    """Name -> namespace of each Knative Service a Trigger or Broker delivers to: the
    Triggers' subscribers and the dead-letter sinks, by ``ref``."""
    found: dict[str, str] = {}
    for r in resources:
        if r.key[1] not in ("Trigger", "Broker") or not r.key[0].startswith(TRIGGER_GROUP):
            continue
        namespace = r.doc["metadata"].get("namespace", "default")
        spec = r.doc.get("spec", {})
        for destination in (spec.get("subscriber"), spec.get("delivery", {}).get("deadLetterSink")):
            ref = (destination or {}).get("ref") or {}
            if (ref.get("apiVersion"), ref.get("kind")) == KNATIVE_SERVICE:
                found[ref["name"]] = ref.get("namespace", namespace)
    return found


def subscriber_env(issuer: Issuer, resources: list[Resource]) -> dict[str, dict[str, str]]:
    """The env the local platform gives each Service the broker delivers to: verification
    on, against this issuer, and the namespace its default audience needs (a pod reads it
    from its service-account mount)."""
    return {
        name: {
            "EVENT_AUTH": "oidc",
            "EVENT_ISSUER": issuer.url,
            "EVENT_JWKS_URL": issuer.url + JWKS_PATH,
            "POD_NAMESPACE": namespace,
        }
        for name, namespace in delivered_to(resources).items()
    }
