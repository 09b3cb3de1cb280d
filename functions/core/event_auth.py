"""Who sent this event: the subscriber's half of Knative Eventing's OIDC delivery.

With ``authentication-oidc`` on, the broker puts ``Authorization: Bearer <JWT>`` on every
delivery: a token of the Trigger's OIDC service account, issued by the Kubernetes API
server's service-account issuer (locally, the broker's own, ``emulators/oidc.py``), whose
``aud`` is the subscriber's audience (Knative's ``<group>/<kind>/<namespace>/<name>``).
``EventVerifier`` checks it with PyJWT: the signature against the issuer's JWKS (keys
cached, the ``kid`` picking one), asymmetric algorithms only, ``exp`` with a small leeway,
``iss`` and ``aud``. A wrong or missing token is a 401 (the broker does not retry it); an
issuer that cannot be reached is a 503 with ``Retry-After``, which the broker retries, so
no event is lost to a JWKS outage.
"""

from __future__ import annotations

import json
import ssl
import threading
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.error import URLError

import jwt
from jwt import PyJWKClient, PyJWKClientConnectionError

from functions.core.errors import ServiceUnavailable, Unauthorized

if TYPE_CHECKING:
    from functions.core.settings import EventAuthSettings

# Asymmetric only: an HS256 token "signed" with the public key, or alg none, never passes.
ALGORITHMS = ("ES256", "RS256")
REQUIRED_CLAIMS = ("iss", "sub", "aud", "iat", "exp")
DISCOVERY_PATH = "/.well-known/openid-configuration"
RETRY_AFTER = "5"


def knative_audience(api_version: str, kind: str, namespace: str, name: str) -> str:
    """Knative Eventing's audience of a resource: ``<group>/<kind>/<namespace>/<name>``,
    lower case (``serving.knative.dev/service/ml-serving/async-worker``)."""
    group = api_version.rpartition("/")[0]
    return f"{group}/{kind}/{namespace}/{name}".lower()


class EventVerifier:
    """Checks the bearer token of an event delivery; ``verify`` returns its claims."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        jwks_url: str | None = None,
        *,
        leeway: float = 30.0,
        ca_file: Path | None = None,
        timeout: float = 5.0,
    ) -> None:
        """``jwks_url`` None: the ``jwks_uri`` of the issuer's discovery document, read on
        first use (the issuer need not be up when the Service starts). ``leeway``: the
        seconds of clock skew forgiven on ``exp`` and ``iat``."""
        self.issuer, self.audience, self.leeway, self.timeout = issuer, audience, leeway, timeout
        self._ssl = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
        self._jwks_url = jwks_url
        self._client: PyJWKClient | None = None
        self._lock = threading.Lock()

    def verify(self, authorization: str | None) -> dict[str, Any]:
        """The claims of the token in ``authorization`` (the header's value): 401 unless it
        is a bearer token the issuer signed for this audience and still valid; 503 with
        ``Retry-After`` when the issuer's keys cannot be fetched."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _refused("this event subscriber needs Authorization: Bearer <token>", "")
        try:
            key = self._keys().get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=list(ALGORITHMS),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except PyJWKClientConnectionError as e:
            raise _unavailable(f"the issuer's keys cannot be fetched: {e}") from e
        except jwt.PyJWTError as e:
            raise _refused(f"the event's token is not valid here: {e}", "invalid_token") from e
        return claims

    def _keys(self) -> PyJWKClient:
        with self._lock:
            if self._client is None:
                url = self._jwks_url or self._discover()
                # cache_keys: a kid seen once needs no second look-up; an unknown kid refetches
                # the set at most once per cooldown, so forged kids cannot flood the issuer.
                self._client = PyJWKClient(
                    url, cache_keys=True, timeout=self.timeout, ssl_context=self._ssl
                )
            return self._client

    def _discover(self) -> str:
        """The ``jwks_uri`` of the issuer's OpenID discovery document."""
        url = self.issuer.rstrip("/") + DISCOVERY_PATH
        try:
            opener = urllib.request.build_opener(
                *([urllib.request.HTTPSHandler(context=self._ssl)] if self._ssl else [])
            )
            with opener.open(url, timeout=self.timeout) as answer:
                document: Mapping[str, Any] = json.load(answer)
        except (URLError, TimeoutError, ValueError) as e:
            raise _unavailable(f"the issuer's discovery document {url}: {e}") from e
        if document.get("issuer") != self.issuer or not document.get("jwks_uri"):
            raise _unavailable(f"{url} names another issuer or no jwks_uri")
        return str(document["jwks_uri"])


def _refused(detail: str, error: str) -> Unauthorized:
    challenge = f'Bearer error="{error}"' if error else "Bearer"
    return Unauthorized(detail, headers={"WWW-Authenticate": challenge})


def _unavailable(detail: str) -> ServiceUnavailable:
    return ServiceUnavailable(detail, headers={"Retry-After": RETRY_AFTER})


def verifier_for(settings: EventAuthSettings) -> EventVerifier | None:
    """The settings' verifier, or None when ``EVENT_AUTH=off``."""
    if settings.event_auth == "off" or settings.event_issuer is None:
        return None
    return EventVerifier(
        settings.event_issuer,
        settings.audience,
        settings.event_jwks_url,
        ca_file=settings.event_ca_file,
    )
